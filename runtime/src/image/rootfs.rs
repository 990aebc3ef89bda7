//! A container's root filesystem: an overlayfs of its image's layers (lowest last in
//! `lowerdir`) with a writable upper dir of its own. The layers are recorded against the
//! container before the mount, so removing the image never takes them from under it.

use std::path::PathBuf;

use nix::mount::{MntFlags, MsFlags};

use super::{Error, Images, RootfsRecord, records};

impl Images {
    /// Mounts the rootfs of `container` from `image` and returns the mountpoint.
    pub async fn mount_rootfs(&self, container: &str, image: &str) -> Result<PathBuf, Error> {
        check_id(container)?;
        let _gc = self.inner.gc.read().await;
        let Some((rec, _)) = self.find(image).await? else {
            return Err(Error::NotFound(image.to_owned()));
        };
        let (container, lowers) = (
            container.to_owned(),
            rec.layers.iter().rev().map(|l| self.layer_path(&l.chain_id)).collect::<Vec<_>>(),
        );
        let record = RootfsRecord {
            image: rec.id.clone(),
            chain_ids: rec.layers.iter().map(|l| l.chain_id.clone()).collect(),
        };
        self.blocking(move |img| {
            let dirs = img.inner.layout.container(&container);
            if records::rootfs_records(&img.inner.store)?.iter().any(|(c, _)| *c == container) {
                return Err(Error::Rootfs { container, reason: "already has a rootfs".into() });
            }
            records::put_rootfs(&img.inner.store, &container, &record)?;
            let mounted = (|| {
                for d in [dirs.upper(), dirs.work(), dirs.rootfs()] {
                    std::fs::create_dir_all(&d).map_err(Error::io("create", &d))?;
                }
                let lower: Vec<String> =
                    lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                let data = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.join(":"),
                    dirs.upper().display(),
                    dirs.work().display()
                );
                if data.len() >= 4096 || lower.iter().any(|l| l.contains([',', ':'])) {
                    return Err(Error::Rootfs {
                        container: container.clone(),
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
                    container: container.clone(),
                    reason: format!("mount overlay: {e}"),
                })
            })();
            if let Err(e) = mounted {
                let _ = std::fs::remove_dir_all(dirs.dir());
                let _ = records::delete_rootfs(&img.inner.store, &container);
                return Err(e);
            }
            Ok(dirs.rootfs())
        })
        .await
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

/// Container ids name a directory: no separators, no dot names.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && id != "."
        && id != "..";
    if ok { Ok(()) } else { Err(Error::InvalidId(id.into())) }
}
