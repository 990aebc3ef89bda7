//! `mount_setattr(2)` on detached mounts (`open_tree(OPEN_TREE_CLONE)`): the read-only
//! clone the supervisor binary runs from, and idmapped mounts for pods with their own
//! user namespace.
//!
//! An idmapped mount shows every file's owner through a user namespace's maps: with the
//! pod's maps (0 in the pod is 100000 on the node), a file that is root's on disk is
//! 100000's through the mount, so it is the pod's root that owns it, and what the pod's
//! root creates is stored as root's. Image layers and requested bind mounts are shown to
//! the pod this way, without copying or chowning anything.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

/// linux/mount.h: the attributes set through `mount_setattr`.
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `mount_setattr(2)`'s argument (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached clone of the mount at `path` (with its submounts when `recursive`).
pub(crate) fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    Ok(rustix::mount::open_tree(CWD, path, flags)?)
}

/// Sets `attrs` on the detached mount `fd` (and its submounts when `recursive`); with a
/// user namespace, also its idmapping.
pub(crate) fn set(
    fd: &OwnedFd,
    attrs: u64,
    userns: Option<&File>,
    recursive: bool,
) -> io::Result<()> {
    let (idmap, userns_fd) = match userns {
        Some(ns) => (MOUNT_ATTR_IDMAP, ns.as_raw_fd() as u64),
        None => (0, 0),
    };
    let attr = MountAttr { attr_set: attrs | idmap, attr_clr: 0, propagation: 0, userns_fd };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from `attr`, which lives
    // across the call; the path is a NUL-terminated empty string with AT_EMPTY_PATH.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts an idmapped clone of `source` (recursively: a bind mount's submounts too) on
/// `target`, which must exist. `userns` is the pinned user namespace whose maps it shows.
pub fn attach_idmapped(
    source: &Path,
    target: &Path,
    userns: &Path,
    recursive: bool,
) -> io::Result<()> {
    let ns = File::open(userns)?;
    let fd = clone_tree(source, recursive)?;
    set(&fd, 0, Some(&ns), recursive)?;
    rustix::mount::move_mount(fd, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
    Ok(())
}
