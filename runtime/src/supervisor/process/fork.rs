//! The fork-sensitive and `unsafe` corner of the supervisor: forking, signal dispositions
//! and descriptors received from the kernel. Every caller is single-threaded (the spawner
//! and the supervisors have no other threads), which is what makes forking safe.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal, signal};
pub use nix::unistd::ForkResult;

/// Forks the calling process. The child must leave through [`exit_child`].
pub fn fork() -> Result<ForkResult, Errno> {
    // SAFETY: every caller is single-threaded (spawner, supervisor), so the child may run
    // any code; it leaves through exit_child and never returns into the parent's frames.
    unsafe { nix::unistd::fork() }
}

/// Ends a forked child without running the exit handlers or flushing the buffers it
/// inherited from its parent.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing of the parent's state is used.
    unsafe { libc::_exit(code) }
}

/// Sets SIGCHLD to be ignored (the kernel reaps children) or back to the default.
pub fn reap_children_automatically(on: bool) -> Result<(), Errno> {
    let handler = if on { SigHandler::SigIgn } else { SigHandler::SigDfl };
    // SAFETY: SIG_IGN and SIG_DFL install no handler code; the process is single-threaded.
    unsafe { signal(Signal::SIGCHLD, handler) }.map(drop)
}

/// Takes ownership of a descriptor the kernel just installed (SCM_RIGHTS).
pub fn received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed this descriptor for this process in the message just
    // received; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Closes every descriptor from `first` up, in a forked child that owns none of them any
/// more (the `OwnedFd`s it inherited belong to its parent's frames, which never run in it).
pub fn close_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range only closes descriptors; the child never uses the closed ones
    // again (it leaves through exit_child without dropping its parent's owners).
    Errno::result(unsafe { libc::close_range(first, u32::MAX, 0) }).map(drop)
}

/// Clones the calling process as a sibling (`CLONE_PARENT`): the child is a child of the
/// caller's parent, which reaps it, and gets the caller's exit signal. Like [`fork`]
/// otherwise; the child must leave through [`exit_child`] or `execve`.
pub fn clone_sibling() -> Result<ForkResult, Errno> {
    // SAFETY: as fork: every caller is single-threaded, and with no stack given clone
    // continues the child on a copy of the caller's. libc's fork bookkeeping (atfork
    // handlers, the cached thread id) is skipped as in libcontainer's own clone3 call;
    // the child uses no pthread state of the parent.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_PARENT as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match Errno::result(ret)? {
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: nix::unistd::Pid::from_raw(pid as i32) }),
    }
}
