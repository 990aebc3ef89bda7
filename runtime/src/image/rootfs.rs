//! A container's root filesystem: an overlayfs of its image's layers (lowest last in
//! `lowerdir`) with a writable upper dir of its own. The layers are recorded against the
//! container before the mount, so removing the image never takes them from under it.

use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};

use super::{Error, ImageRecord, Images, RootfsRecord, records};
use crate::layout::ContainerLayout;

/// A rootfs for a pod with its own user namespace: the layers are shown through the
/// namespace's maps (idmapped), and the upper dir belongs to the pod's root.
#[derive(Debug, Clone)]
pub struct RootfsUserns {
    /// The pinned user namespace.
    pub ns: PathBuf,
    /// The node's uid and gid for the pod's root.
    pub root_uid: u32,
    pub root_gid: u32,
}

/// What [`Images::mount_image`] found and made.
pub struct MountedImage {
    pub record: ImageRecord,
    /// The name the image was found by, if any.
    pub name: Option<String>,
    pub rootfs: PathBuf,
    /// The image's config blob.
    pub config: Vec<u8>,
}

impl Images {
    /// Mounts the rootfs of `container` from `image` and returns the mountpoint.
    pub async fn mount_rootfs(
        &self,
        container: &str,
        image: &str,
        userns: Option<RootfsUserns>,
    ) -> Result<PathBuf, Error> {
        let mounted = self.mount_image(container, image, userns).await?;
        mounted.map(|m| m.rootfs).ok_or_else(|| Error::NotFound(image.to_owned()))
    }

    /// A container's image and rootfs in one go: finds the image as `find` does, reads its
    /// config blob and mounts the rootfs, all in one task on the blocking pool under the
    /// collector's lock (four hops to the pool before, the image looked up twice). None:
    /// there is no such image, and nothing was made; an error leaves nothing either.
    pub async fn mount_image(
        &self,
        container: &str,
        spec: &str,
        userns: Option<RootfsUserns>,
    ) -> Result<Option<MountedImage>, Error> {
        check_id(container)?;
        let _gc = self.inner.gc.read().await;
        let (container, spec) = (container.to_owned(), spec.to_owned());
        self.blocking(move |img| {
            let Some((record, name)) = img.find_blocking(&spec)? else { return Ok(None) };
            let config = img.read_config(&record.id)?;
            let rootfs = img.mount_blocking(container, &record, userns)?;
            Ok(Some(MountedImage { record, name, rootfs, config }))
        })
        .await
    }

    /// The rootfs's record, then its overlay; a failed mount takes both away again.
    fn mount_blocking(
        &self,
        container: String,
        rec: &ImageRecord,
        userns: Option<RootfsUserns>,
    ) -> Result<PathBuf, Error> {
        let mut lowers: Vec<PathBuf> =
            rec.layers.iter().rev().map(|l| self.layer_path(&l.chain_id)).collect();
        let record = RootfsRecord {
            image: rec.id.clone(),
            chain_ids: rec.layers.iter().map(|l| l.chain_id.clone()).collect(),
        };
        let dirs = self.inner.layout.container(&container);
        if records::has_rootfs(&self.inner.store, &container)? {
            return Err(Error::Rootfs { container, reason: "already has a rootfs".into() });
        }
        records::put_rootfs(&self.inner.store, &container, &record)?;
        // Not through a user namespace's maps: its entries are the node's root's.
        if userns.is_none()
            && let Some(dir) = self
                .inner
                .mountpoints
                .get_or_init(|| mountpoints(&self.inner.layout.mountpoints_dir()))
        {
            lowers.push(dir.clone());
        }
        let mounted = mount_overlay(&container, &dirs, &lowers, userns.as_ref());
        if userns.is_some() {
            detach_idmapped(&dirs);
        }
        if let Err(e) = mounted {
            let _ = std::fs::remove_dir_all(dirs.dir());
            let _ = records::delete_rootfs(&self.inner.store, &container);
            return Err(e);
        }
        Ok(dirs.rootfs())
    }

    /// Every container that has a rootfs: a record, or a directory (a create interrupted
    /// before its record was written leaves only the directory).
    pub async fn rootfs_owners(&self) -> Result<Vec<String>, Error> {
        self.blocking(|img| {
            let mut owners: Vec<String> =
                records::rootfs_records(&img.inner.store)?.into_iter().map(|(c, _)| c).collect();
            let dir = img.inner.layout.containers_dir();
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                owners.push(e.file_name().to_string_lossy().into_owned());
            }
            owners.sort();
            owners.dedup();
            Ok(owners)
        })
        .await
    }

    /// Unmounts and deletes a container's rootfs; layers no image needs any more are
    /// collected. Idempotent.
    pub async fn unmount_rootfs(&self, container: &str) -> Result<(), Error> {
        check_id(container)?;
        let container = container.to_owned();
        let image_gone = self
            .blocking(move |img| -> Result<bool, Error> {
                let dirs = img.inner.layout.container(&container);
                detach_idmapped(&dirs);
                match nix::mount::umount2(&dirs.rootfs(), MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                    Err(e) => {
                        return Err(Error::Rootfs { container, reason: format!("unmount: {e}") });
                    }
                }
                match std::fs::remove_dir_all(dirs.dir()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", dirs.dir())(e)),
                }
                let rec = records::rootfs_records(&img.inner.store)?
                    .into_iter()
                    .find(|(c, _)| *c == container);
                records::delete_rootfs(&img.inner.store, &container)?;
                Ok(match rec {
                    Some((_, r)) => records::image(&img.inner.store, &r.image)?.is_none(),
                    None => false,
                })
            })
            .await?;
        if image_gone {
            self.collect_garbage().await?;
        }
        Ok(())
    }
}

/// The mount points the spec's mounts need, below every image's layers (overlayfs shows
/// an entry of the lowest layer only where no layer above has that name, and a directory
/// with the attributes of the highest layer that has it): `/proc`, `/dev`, `/sys` and
/// `/etc` (0755) and `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` (empty, 0644),
/// all root's. Without it the init makes those an image lacks in the container's upper
/// dir, and each such write to the overlay (a new directory, or a file whose directory
/// is copied up first) cost 0.1–0.25 ms here. Made where missing, so a crash halfway
/// leaves nothing that is not completed at the next mount; `None` (not used) when an
/// entry is not what it must be, which the log says.
pub(super) fn mountpoints(dir: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    const DIRS: [&str; 5] = ["", "proc", "dev", "sys", "etc"];
    const FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];
    let me = nix::unistd::geteuid().as_raw();
    let made = (|| -> std::io::Result<bool> {
        for d in DIRS {
            let path = dir.join(d);
            match std::fs::DirBuilder::new().mode(0o755).create(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if !meta.is_dir() || meta.uid() != me {
                return Ok(false);
            }
            if meta.mode() & 0o7777 != 0o755 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        for f in FILES {
            let path = dir.join(f);
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match created {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            let meta = std::fs::symlink_metadata(&path)?;
            if !meta.is_file() || meta.uid() != me || meta.len() != 0 {
                return Ok(false);
            }
            if meta.mode() & 0o7777 != 0o644 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            }
        }
        Ok(true)
    })();
    match made {
        Ok(true) => Some(dir.to_owned()),
        Ok(false) => {
            tracing::warn!(dir = %dir.display(), "mount point layer not as made; not used");
            None
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "mount point layer: {e}; not used");
            None
        }
    }
}

/// The container's dir (root's alone; for a pod with its own user namespace, its root's
/// group may pass through to the rootfs), its upper, work and rootfs dirs, then the
/// overlay. With a user namespace the layers are idmapped clones, attached only until
/// the overlay holds them (the caller detaches them).
fn mount_overlay(
    container: &str,
    dirs: &ContainerLayout,
    lowers: &[PathBuf],
    userns: Option<&RootfsUserns>,
) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = dirs.dir();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io("create", dir)(e));
        }
        _ => {}
    }
    let mode = match userns {
        Some(u) => {
            std::os::unix::fs::chown(dir, None, Some(u.root_gid))
                .map_err(Error::io("chown", dir))?;
            0o710
        }
        None => 0o700,
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("set the mode of", dir))?;
    for d in [dirs.upper(), dirs.work(), dirs.rootfs()] {
        std::fs::create_dir_all(&d).map_err(Error::io("create", &d))?;
    }
    let lowers = match userns {
        None => lowers.to_vec(),
        Some(u) => {
            let upper = dirs.upper();
            std::os::unix::fs::chown(&upper, Some(u.root_uid), Some(u.root_gid))
                .map_err(Error::io("chown", &upper))?;
            let idmapped = dirs.idmapped();
            std::fs::create_dir(&idmapped).map_err(Error::io("create", &idmapped))?;
            let mut out = Vec::with_capacity(lowers.len());
            for layer in lowers {
                // Named by the start of the layer's name, so the overlay's `lowerdir` in
                // mountinfo still says which layers it holds (image GC reads it; the
                // clones themselves are detached once the overlay holds them). Short,
                // so as many layers fit the mount's options as without idmapping.
                let at = idmapped.join(super::idmapped_name(layer));
                std::fs::create_dir(&at).map_err(Error::io("create", &at))?;
                crate::mount_attr::attach_idmapped(layer, &at, &u.ns, false).map_err(|e| {
                    Error::Rootfs {
                        container: container.to_owned(),
                        reason: format!("idmap layer {}: {e}", layer.display()),
                    }
                })?;
                out.push(at);
            }
            out
        }
    };
    let lower: Vec<String> = lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dirs.upper().display(),
        dirs.work().display()
    );
    if data.len() >= 4096 || lower.iter().any(|l| l.contains([',', ':'])) {
        return Err(Error::Rootfs {
            container: container.to_owned(),
            reason: format!("{} layers do not fit one overlay mount", lower.len()),
        });
    }
    nix::mount::mount(
        Some("overlay"),
        &dirs.rootfs(),
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| Error::Rootfs {
        container: container.to_owned(),
        reason: format!("mount overlay: {e}"),
    })
}

/// Detaches and removes the idmapped clones in the container's dir (the overlay, or the
/// container, holds its own references). Best effort: what is left is retried at remove.
pub fn detach_idmapped(dirs: &ContainerLayout) {
    let dir = dirs.idmapped();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let _ = nix::mount::umount2(&e.path(), MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(e.path()).or_else(|_| std::fs::remove_file(e.path()));
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Container ids name a directory: no separators, no dot names.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && id != "."
        && id != "..";
    if ok { Ok(()) } else { Err(Error::InvalidId(id.into())) }
}
