//! Namespace pins and the pod's /dev/shm.
//!
//! A namespace stays alive while a bind mount of its nsfs file exists, so a pod's network
//! can be torn down even after its supervisor died. All of these are plain mount(2) calls
//! from the daemon: no process is started.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::Error;
use crate::layout::NsKind;

/// Bind-mounts `/proc/<pid>/ns/<kind>` onto `target` (an empty file it creates).
pub fn pin(pid: u32, kind: NsKind, target: &Path) -> Result<(), Error> {
    let source = PathBuf::from(format!("/proc/{pid}/ns/{}", kind.name()));
    let err = |source| Error::Pin { ns: kind.name(), path: target.into(), source };
    File::create(target).map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    if let Err(e) = mount(Some(&source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = std::fs::remove_file(target);
        return Err(err(e));
    }
    Ok(())
}

/// Pins the user namespace that owns the namespace pinned at `owned` (NS_GET_USERNS) onto
/// `target`: a pod's user namespace has no process of its own to take it from.
pub fn pin_owner(owned: &Path, target: &Path) -> Result<(), Error> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // linux/nsfs.h: _IO(0xb7, 0x1).
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let err = |source| Error::Pin { ns: NsKind::User.name(), path: target.into(), source };
    let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
    let ns = File::open(owned).map_err(|e| err(errno(e)))?;
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    if fd < 0 {
        return Err(err(Errno::last()));
    }
    // SAFETY: the kernel just installed `fd` for this process; nothing else owns it.
    let userns = unsafe { OwnedFd::from_raw_fd(fd) };
    let source = PathBuf::from(format!("/proc/self/fd/{}", userns.as_raw_fd()));
    File::create(target).map_err(|e| err(errno(e)))?;
    if let Err(e) = mount(Some(&source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = std::fs::remove_file(target);
        return Err(err(e));
    }
    Ok(())
}

/// Mounts the pod's /dev/shm: a tmpfs of `size` bytes, nosuid, nodev, noexec.
pub fn mount_shm(target: &Path, size: u64) -> Result<(), Error> {
    let err = |source| Error::MountShm { path: target.into(), source };
    std::fs::create_dir(target).map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let data = format!("mode=1777,size={size}");
    if let Err(e) = mount(Some("shm"), target, Some("tmpfs"), flags, Some(data.as_str())) {
        let _ = std::fs::remove_dir(target);
        return Err(err(e));
    }
    Ok(())
}

/// Makes a pod's dir a mount point of its own: a bind onto itself, private as the pods
/// dir is. A container's helper clones the pod's dir for its small mount table
/// (`crate::view`), and a clone of a dir inside the pods dir's mount walks every pod's
/// mounts to find the few below it (the kernel's `copy_tree`): 29 µs with one pod,
/// 178 µs with 250 here. A clone of the pod's own mount walks its own.
pub fn bind_pod_dir(dir: &Path) -> Result<(), Error> {
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|source| Error::BindPodDir { path: dir.into(), source })
}

/// Detaches a pod dir's own mount ([`bind_pod_dir`]), with anything still below it; the
/// dir stays. A dir that is no mount point of its own, or is gone, counts as done.
pub fn unbind_pod_dir(dir: &Path) -> Result<(), Error> {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::ENOENT) | Err(Errno::EINVAL) => Ok(()),
        Err(source) => Err(Error::Unmount { path: dir.into(), source }),
    }
}

/// Removes a pod's dir and everything in it, its own mount ([`bind_pod_dir`]) detached
/// first where it is one. A dir already gone counts as removed.
pub fn remove_pod_dir(dir: &Path) -> Result<(), Error> {
    unbind_pod_dir(dir)?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::RemoveDir { path: dir.into(), source: e })
        }
        _ => Ok(()),
    }
}

/// Detaches a mount and removes its mount point. A path that is already gone, or no
/// longer a mount point, counts as done.
pub fn unmount(target: &Path) -> Result<(), Error> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::ENOENT) | Err(Errno::EINVAL) => {}
        Err(source) => {
            return Err(Error::Unmount { path: target.into(), source });
        }
    }
    let removed =
        if target.is_dir() { std::fs::remove_dir(target) } else { std::fs::remove_file(target) };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::RemoveDir { path: target.into(), source: e })
        }
        _ => Ok(()),
    }
}
