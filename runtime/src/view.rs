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

use std::io;
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
        return Ok(());
    }
    if let Some(under) = points.iter().find(|p| p.starts_with(dir)) {
        let what = format!("{} is mounted under it; made at a start without pods", under.display());
        return Err(io::Error::other(what));
    }
    nix::mount::mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
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

/// Moves the calling process (single-threaded: a forked child) into a mount namespace of
/// its own in which each `parent` holds only its `keep` (see the module's text). Nothing
/// is detached unless every clone was made.
pub fn narrow(dirs: &[Narrow]) -> io::Result<()> {
    if dirs.is_empty() {
        return Ok(());
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
}
