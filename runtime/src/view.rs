//! A small mount table for libcontainer's create and exec.
//!
//! Every pod adds mounts to the node's table: its namespace pins and `/dev/shm` under the
//! run dir's `pods/`, each container's rootfs overlay under the root's `containers/`
//! (five per one-container pod; 1266 entries with 250 pods here). libcontainer reads
//! `/proc/self/mountinfo` again and again while it makes a container (libcgroups' v1
//! manager once per controller, the rootfs code for its mounts), and the kernel formats
//! every entry each time: measured, CreateContainer went from 28 ms with 1 pod to 101 ms
//! with 250, most of it in `show_mountinfo`.
//!
//! So both directories are mount points of their own (a bind onto itself, made by the
//! daemon at start), and the short-lived child that runs libcontainer first moves
//! into a mount namespace of its own (a slave of the node's: nothing it does there reaches
//! the node), takes detached clones of the one pod dir and the one container dir it needs
//! (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`), detaches both directories (every other
//! pod's mounts go with them, in two calls) and puts the clones back where they were.
//! Files in the directories stay where they are (a bind onto itself shows the same
//! directory), so paths in the spec mean what they meant. What libcontainer then reads is
//! the fresh node's table plus a few entries, whatever the pod count.
//!
//! A container with a Bidirectional mount is made in the node's own namespace: its mounts
//! must propagate back to the node, which a slave namespace would stop.
//!
//! The `unshare` still copies the node's whole table first (1.8 ms with 250 pods here), and
//! the two detaches take it down again (0.9 ms). So where the node's mounts are all shared
//! (as on a systemd host, and kubelet makes its root dir rshared itself), the spawner makes
//! one *view namespace* when it starts ([`view_namespace`]): a slave copy of the node's
//! table without podbay's two directories' mounts. The node's later mounts (kubelet's
//! volumes, hostPath sources) reach it by propagation; podbay's own never do, because both
//! directories are private mounts. The child then clones its pod's and container's
//! directories in the node's namespace, enters the view namespace, unshares a copy of it
//! (the fresh node's size, whatever the pod count) and puts the clones in. On a node with
//! a mount that is not shared, a later mount under it would never reach a view namespace,
//! so there the child copies the node's table as above.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// The mount points in this process's mount namespace.
fn mount_points() -> io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(table.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| unescape(p).into()).collect())
}

/// Whether `dir` is a mount point in this process's mount namespace.
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    Ok(mount_points()?.iter().any(|p| p == dir))
}

/// Makes `dir` (absolute, existing) a mount point of its own unless it is one: a bind onto
/// itself. Refused while mounts are under it (pods of a podbay from before these mount
/// points: a bind would copy them, and their unmounting later would leave the copies
/// below), and where the kernel cannot clone mounts (`open_tree`, Linux 5.2), which
/// [`narrow`] needs.
pub fn ensure_mount_point(dir: &Path) -> io::Result<()> {
    drop(crate::mount_attr::clone_tree(dir, false)?);
    let points = mount_points()?;
    if points.iter().any(|p| p == dir) {
        return make_private(dir);
    }
    if let Some(under) = points.iter().find(|p| p.starts_with(dir)) {
        let what = format!("{} is mounted under it; made at a start without pods", under.display());
        return Err(io::Error::other(what));
    }
    nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    make_private(dir)
}

/// Makes the mount at `dir` private (not its submounts): what is mounted under it then
/// propagates to no other namespace, neither the node's peers nor a view namespace.
fn make_private(dir: &Path) -> io::Result<()> {
    nix::mount::mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)?;
    Ok(())
}

/// Undoes [`ensure_mount_point`] (if `dir` is a mount point; nothing may be under it).
pub fn release_mount_point(dir: &Path) -> io::Result<()> {
    if is_mount_point(dir)? {
        nix::mount::umount2(dir, MntFlags::empty())?;
    }
    Ok(())
}

/// mountinfo's escapes (`\040` for a space, octal) undone.
pub(crate) fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error of [`narrow`]'s step `what`, saying so.
fn failed<E: std::fmt::Display>(what: String) -> impl FnOnce(E) -> io::Error {
    move |e| io::Error::other(format!("narrow the mount table: {what}: {e}"))
}

/// One directory to narrow: `parent` (a mount point of [`ensure_mount_point`]'s) and the
/// one entry under it to keep with its mounts (none: keep nothing of it).
#[derive(Debug, Clone)]
pub struct Narrow {
    pub parent: PathBuf,
    pub keep: Option<PathBuf>,
}

/// Makes the view namespace (see the module's text) and returns it, or None when a mount
/// of the node's outside `parents` is not shared (later mounts under it would not reach
/// the view). Called by a single-threaded process, which is back in its own mount
/// namespace (and at `/`) when this returns, also after a failure.
pub fn view_namespace(parents: &[PathBuf]) -> io::Result<Option<OwnedFd>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    if !all_shared(&table, parents) {
        return Ok(None);
    }
    let node = File::open("/proc/self/ns/mnt")?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(failed("unshare".into()))?;
    let made = prepare_view(parents);
    let back = nix::sched::setns(node.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(failed("return to the node's mount namespace".into()));
    let _ = nix::unistd::chdir("/");
    back?;
    made.map(Some)
}

/// In the new namespace: every mount a slave of the node's, podbay's directories gone.
fn prepare_view(parents: &[PathBuf]) -> io::Result<OwnedFd> {
    let slave = MsFlags::MS_REC | MsFlags::MS_SLAVE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, slave, None::<&str>)
        .map_err(failed("make / a slave".into()))?;
    for p in parents {
        nix::mount::umount2(p, MntFlags::MNT_DETACH)
            .map_err(failed(format!("detach {}", p.display())))?;
    }
    Ok(File::open("/proc/self/ns/mnt")?.into())
}

/// Whether every mount of `table` (mountinfo) outside `parents` is shared: then every mount
/// the node makes later propagates to a slave copy of it.
fn all_shared(table: &str, parents: &[PathBuf]) -> bool {
    table.lines().all(|line| {
        mount_sharing(line)
            .is_some_and(|(point, shared)| shared || parents.iter().any(|p| point.starts_with(p)))
    })
}

/// A mountinfo line's mount point, and whether the mount is shared (a `shared:N` among its
/// optional fields).
pub fn mount_sharing(line: &str) -> Option<(PathBuf, bool)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let point = PathBuf::from(unescape(fields.get(4)?));
    let optional = fields.iter().skip(6).take_while(|f| **f != "-");
    Some((point, optional.into_iter().any(|f| f.starts_with("shared:"))))
}

/// Moves the calling process (single-threaded: a forked child) into a mount namespace of
/// its own in which each `parent` holds only its `keep` (see the module's text): a copy of
/// `view` (the view namespace) when given, else of the node's. Nothing is detached unless
/// every clone was made.
pub fn narrow(dirs: &[Narrow], view: Option<BorrowedFd<'_>>) -> io::Result<()> {
    if dirs.is_empty() {
        return Ok(());
    }
    if let Some(view) = view {
        let mut clones = Vec::new();
        for d in dirs {
            if let Some(keep) = &d.keep {
                clones.push((crate::mount_attr::clone_tree(keep, true)?, keep));
            }
        }
        // Not entered (it cannot fail but for a kernel without setns on mount
        // namespaces): the node's table is copied instead, below.
        if nix::sched::setns(view, CloneFlags::CLONE_NEWNS).is_ok() {
            // Never change the view itself: it is every container's starting point.
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(failed("unshare".into()))?;
            return put_back(clones);
        }
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(failed("unshare".into()))?;
    let slave = MsFlags::MS_REC | MsFlags::MS_SLAVE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, slave, None::<&str>)
        .map_err(failed("make / a slave".into()))?;
    let mut clones = Vec::new();
    for d in dirs {
        if let Some(keep) = &d.keep {
            match crate::mount_attr::clone_tree(keep, true) {
                Ok(fd) => clones.push((fd, keep)),
                // Nothing detached yet: libcontainer sees the whole table, as before.
                Err(_) => return Ok(()),
            }
        }
    }
    for d in dirs {
        nix::mount::umount2(&d.parent, MntFlags::MNT_DETACH)
            .map_err(failed(format!("detach {}", d.parent.display())))?;
    }
    put_back(clones)
}

/// Mounts each detached clone where it was taken from.
fn put_back(clones: Vec<(OwnedFd, &PathBuf)>) -> io::Result<()> {
    for (fd, keep) in clones {
        use rustix::mount::MoveMountFlags;
        let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
        rustix::mount::move_mount(fd, "", rustix::fs::CWD, keep, flags)
            .map_err(failed(format!("put back {}", keep.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/plain\04"), r"/plain\04");
        assert_eq!(unescape("/"), "/");
    }

    #[test]
    fn a_view_needs_every_mount_outside_podbays_dirs_shared() {
        let shared = "21 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
            22 21 0:5 / /run rw shared:2 master:7 - tmpfs tmpfs rw\n";
        let pods = "30 22 0:5 /podbay/pods /run/podbay/pods rw - tmpfs tmpfs rw\n\
            31 30 0:9 / /run/podbay/pods/p1/ns/net rw - nsfs nsfs rw\n";
        let parents = [PathBuf::from("/run/podbay/pods")];
        assert!(all_shared(shared, &parents));
        assert!(all_shared(&format!("{shared}{pods}"), &parents));
        assert!(!all_shared(&format!("{shared}{pods}"), &[]));
        let private = "23 21 0:6 / /data rw - ext4 /dev/vdb rw\n";
        assert!(!all_shared(&format!("{shared}{private}"), &parents));
        // A mount point named like a field is still a path.
        let tricky = "24 21 0:7 / /shared:3 rw - tmpfs tmpfs rw\n";
        assert!(!all_shared(&format!("{shared}{tricky}"), &parents));
    }
}
