//! A pod with its own user namespace (CRI userns_options mode POD).
//!
//! The pod's network, IPC, UTS and PID namespaces must be owned by its user namespace:
//! that is what lets the pod's root mount /proc and /sys, set its hostname and configure
//! its own network, and what keeps it from doing so anywhere else. A namespace is owned
//! by the user namespace of the process that creates it, and a process that enters a user
//! namespace cannot leave it. The supervisor must stay in the node's user namespace (it
//! makes the veth's node end, and its containers' cgroups and mounts), so a short-lived
//! child creates them:
//!
//! 1. the child unshares a user namespace and tells the supervisor;
//! 2. the supervisor writes the child's uid_map and gid_map (as the node's root, any map
//!    kubelet chose is allowed) and tells the child;
//! 3. the child unshares the pod's other namespaces, now owned by the new user namespace,
//!    tells the supervisor, and waits;
//! 4. the supervisor opens them from `/proc/<child>/ns`, lets the child go and reaps it.
//!
//! The supervisor then joins the network, IPC and UTS namespaces (the node's root may
//! enter any namespace below it) and forks the pod's PID 1 into `pid_for_children`.

use std::fs::File;
use std::io::{Read, Write};

use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use podbay_proto::supervisor::v1::IdMapping;

use super::Failed;
use super::fork::{self, ForkResult};

/// The namespaces the helper made, open.
pub struct Made {
    pub net: Option<File>,
    pub ipc: Option<File>,
    pub uts: Option<File>,
    /// The new PID namespace, for the pod's PID 1 (`pid_for_children` of the helper).
    pub pid: Option<File>,
}

/// The text of a uid_map or gid_map.
pub fn map_text(ranges: &[IdMapping]) -> String {
    ranges.iter().map(|r| format!("{} {} {}\n", r.container_id, r.host_id, r.length)).collect()
}

/// Creates a user namespace with these maps and, owned by it, the namespaces in `flags`
/// (CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWPID).
pub fn make(flags: CloneFlags, uid_map: &str, gid_map: &str) -> Result<Made, Failed> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (from_child, child_w) = nix::unistd::pipe2(cloexec).map_err(Failed::sys("pipe"))?;
    let (child_r, to_child) = nix::unistd::pipe2(cloexec).map_err(Failed::sys("pipe"))?;
    let child = match fork::fork().map_err(Failed::sys("fork user namespace helper"))? {
        ForkResult::Child => {
            drop((from_child, to_child));
            fork::exit_child(helper(flags, File::from(child_w), File::from(child_r)))
        }
        ForkResult::Parent { child } => child,
    };
    drop((child_w, child_r));
    let (mut from_child, mut to_child) = (File::from(from_child), File::from(to_child));
    let made = drive(child, flags, uid_map, gid_map, &mut from_child, &mut to_child);
    // Closing the pipe releases the helper (or a helper stuck half-way); reap it either way.
    drop(to_child);
    if made.is_err() {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    }
    let _ = waitpid(child, None);
    made
}

fn drive(
    child: Pid,
    flags: CloneFlags,
    uid_map: &str,
    gid_map: &str,
    from_child: &mut File,
    to_child: &mut File,
) -> Result<Made, Failed> {
    let step = |from_child: &mut File, what: &'static str| {
        let mut b = [0u8; 1];
        match from_child.read(&mut b) {
            Ok(1) => Ok(()),
            _ => Err(Failed::Sys { what, source: nix::errno::Errno::ECHILD }),
        }
    };
    step(from_child, "user namespace helper: unshare the user namespace")?;
    for (file, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{child}/{file}");
        std::fs::write(&path, text).map_err(Failed::io("write", path))?;
    }
    to_child.write_all(b"m").map_err(Failed::io("signal", "the user namespace helper"))?;
    step(from_child, "user namespace helper: unshare the pod's namespaces")?;
    let open = |on: bool, name: &str| -> Result<Option<File>, Failed> {
        if !on {
            return Ok(None);
        }
        let path = format!("/proc/{child}/ns/{name}");
        File::open(&path).map(Some).map_err(Failed::io("open", path))
    };
    Ok(Made {
        net: open(flags.contains(CloneFlags::CLONE_NEWNET), "net")?,
        ipc: open(flags.contains(CloneFlags::CLONE_NEWIPC), "ipc")?,
        uts: open(flags.contains(CloneFlags::CLONE_NEWUTS), "uts")?,
        pid: open(flags.contains(CloneFlags::CLONE_NEWPID), "pid_for_children")?,
    })
}

/// The helper child: returns its exit code. Dies with the supervisor.
fn helper(flags: CloneFlags, mut to_parent: File, mut from_parent: File) -> i32 {
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = prctl::set_name(c"podbay-userns");
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        eprintln!("podbay-userns: unshare user namespace: {e}");
        return 1;
    }
    if to_parent.write_all(b"u").is_err() {
        return 1;
    }
    let mut b = [0u8; 1];
    if !matches!(from_parent.read(&mut b), Ok(1)) {
        return 1;
    }
    if let Err(e) = unshare(flags) {
        eprintln!("podbay-userns: unshare the pod's namespaces: {e}");
        return 1;
    }
    if to_parent.write_all(b"n").is_err() {
        return 1;
    }
    // Wait until the supervisor has opened the namespaces and closes the pipe.
    let _ = from_parent.read(&mut b);
    0
}
