//! The supervisor binary as the spawner runs it: never the file on disk itself.
//!
//! Every supervisor is a fork of the spawner, and every container's init (and every
//! ExecSync process) is a clone of a supervisor until it execs the container's own
//! program: until then its `/proc/self/exe` is the spawner's. If that were the on-disk
//! `podbay-supervisor`, a container whose entrypoint is `/proc/self/exe` would run the
//! host's binary inside the container and could keep a handle to it, to open it for
//! writing once no supervisor runs it any more (the CVE-2019-5736 class).
//!
//! So the daemon starts the spawner from a clone of the binary's mount that is attached
//! nowhere and read-only (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_RDONLY)`,
//! exec'd through `/proc/self/fd`): the kernel refuses every write through it (EROFS),
//! nothing is copied and nothing shows in any mount table. Where the kernel lacks those
//! calls (before 5.12), a sealed in-memory copy takes its place (a memfd with
//! `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`). Either is made once per
//! daemon and reused for every spawner it starts.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{MemfdFlags, SealFlags};

/// A handle on the binary that nothing can write through.
pub(crate) struct SealedExe {
    fd: OwnedFd,
    /// How it is sealed, for the log: `read-only mount` or `sealed memfd`.
    pub(crate) how: &'static str,
}

impl SealedExe {
    pub(crate) fn open(path: &Path) -> io::Result<SealedExe> {
        match read_only_clone(path) {
            Ok(fd) => Ok(SealedExe { fd, how: "read-only mount" }),
            Err(e) => {
                tracing::warn!(error = %e, "no read-only mount of the supervisor binary; using a sealed copy");
                Ok(SealedExe { fd: sealed_copy(path)?, how: "sealed memfd" })
            }
        }
    }

    /// The path to exec. A close-on-exec descriptor stays open until the new program is
    /// loaded, so the exec works while the descriptor never reaches the spawner.
    pub(crate) fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// A detached, read-only, nosuid, nodev bind mount of the file.
fn read_only_clone(path: &Path) -> io::Result<OwnedFd> {
    use crate::mount_attr::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
    let fd = mount_attr::clone_tree(path, false)?;
    mount_attr::set(&fd, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, None, false)?;
    Ok(fd)
}

/// An in-memory copy of the file, sealed against every change.
fn sealed_copy(path: &Path) -> io::Result<OwnedFd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let memfd = File::from(rustix::fs::memfd_create("podbay-supervisor", flags)?);
    io::copy(&mut File::open(path)?, &mut &memfd)?;
    let seals = SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    rustix::fs::fcntl_add_seals(memfd.as_fd(), seals)?;
    Ok(memfd.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_copy_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"#!/bin/true\n").unwrap();
        let fd = sealed_copy(&path).unwrap();
        let copy = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(copy, b"#!/bin/true\n");
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
        assert!(w.is_err(), "a sealed memfd took a write");
    }
}
