//! The fork-sensitive and `unsafe` corner of the supervisor: forking, signal dispositions
//! and descriptors received from the kernel. Every caller is single-threaded (the spawner
//! and the supervisors have no other threads), which is what makes forking safe.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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

/// `clone3`'s flag for a child born in the cgroup v2 directory `clone_args.cgroup` names
/// (Linux 5.7; libc's own constant is an overflowing `c_int`).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// As [`clone_sibling`], with the child born in the cgroup v2 directory `cgroup`
/// (`clone3` with `CLONE_INTO_CGROUP`): nothing migrates, so nothing waits for the
/// kernel's global `cgroup_threadgroup_rwsem`. ENOSYS, E2BIG or EINVAL: a kernel (or a
/// seccomp filter around podbay) without it.
pub fn clone_sibling_into(cgroup: BorrowedFd) -> Result<ForkResult, Errno> {
    let args = libc::clone_args {
        flags: libc::CLONE_PARENT as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        // With CLONE_PARENT the child gets the caller's exit signal; clone3 wants 0 here.
        exit_signal: 0,
        // No stack: the child continues on a copy of the caller's, as with fork.
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // SAFETY: as clone_sibling (single-threaded callers, the child on a copy of the
    // caller's stack); the kernel reads `args` during the call only.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match Errno::result(ret)? {
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: nix::unistd::Pid::from_raw(pid as i32) }),
    }
}
