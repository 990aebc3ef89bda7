//! Image metadata in the state database.
//!
//! Tables (values are JSON):
//! - `images`: image id (config digest) → [`ImageRecord`]
//! - `image_names`: a full name (`docker.io/library/busybox:latest`, or `…@sha256:…`) → id
//! - `rootfs`: container id → [`RootfsRecord`] (the layers a container's rootfs holds)
//!
//! An image lives while it has a name. A name moving to another image (a tag pulled again)
//! and the removal of a name change the records in one transaction.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::store::{Error, IndexTable, RecordTable, Store};

const IMAGES: RecordTable = TableDefinition::new("images");
const IMAGE_NAMES: IndexTable = TableDefinition::new("image_names");
const ROOTFS: RecordTable = TableDefinition::new("rootfs");

/// One image as the node has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest (`sha256:…`), which is the image id kubelet and crictl use.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The platform manifest's digest and size.
    pub manifest: String,
    pub manifest_size: u64,
    /// The index (manifest list) it was chosen from, when there was one.
    #[serde(default)]
    pub index: Option<String>,
    pub config_size: u64,
    pub layers: Vec<LayerRecord>,
    /// The config's USER (empty: root).
    #[serde(default)]
    pub user: String,
    /// When the image was stored (Unix nanoseconds).
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob's digest, media type and size.
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The uncompressed tar's digest, and the chain id naming the unpacked layer.
    pub diff_id: String,
    pub chain_id: String,
}

impl ImageRecord {
    /// Bytes the image takes in the registry's terms (manifest + config + compressed layers),
    /// as containerd reports it.
    pub fn size(&self) -> u64 {
        self.manifest_size + self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Every blob digest the image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        [self.manifest.as_str(), self.id.as_str()]
            .into_iter()
            .chain(self.index.as_deref())
            .chain(self.layers.iter().map(|l| l.digest.as_str()))
    }

    fn names(&self) -> impl Iterator<Item = &String> {
        self.repo_tags.iter().chain(&self.repo_digests)
    }

    fn drop_name(&mut self, name: &str) {
        self.repo_tags.retain(|n| n != name);
        self.repo_digests.retain(|n| n != name);
    }
}

/// The layers a container's rootfs is made of; they stay while the container does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootfsRecord {
    pub image: String,
    pub chain_ids: Vec<String>,
}

fn union(mut a: Vec<String>, b: &[String]) -> Vec<String> {
    for n in b {
        if !a.contains(n) {
            a.push(n.clone());
        }
    }
    a
}

/// Stores an image under its names: a name another image had moves here, and an image
/// left without names is deleted. Returns the ids of images deleted that way.
pub(crate) fn put_image(store: &Store, rec: &ImageRecord) -> Result<Vec<String>, Error> {
    store.write(|tx| {
        let mut gone = Vec::new();
        let mut merged = rec.clone();
        if let Some(old) = tx.get::<ImageRecord>(IMAGES, &rec.id)? {
            merged.repo_tags = union(old.repo_tags, &rec.repo_tags);
            merged.repo_digests = union(old.repo_digests, &rec.repo_digests);
        }
        for name in rec.names() {
            let Some(other) = tx.set(IMAGE_NAMES, name, &rec.id)?.filter(|o| *o != rec.id) else {
                continue;
            };
            let Some(mut old) = tx.get::<ImageRecord>(IMAGES, &other)? else { continue };
            old.drop_name(name);
            if old.names().next().is_none() {
                tx.remove(IMAGES, &other)?;
                gone.push(other);
            } else {
                tx.put(IMAGES, &other, &old)?;
            }
        }
        tx.put(IMAGES, &rec.id, &merged)?;
        Ok(gone)
    })
}

/// Removes one name; the image goes with it when no tag is left (as `docker rmi`), or
/// entirely when `name` is `None`. Returns whether the image record was deleted.
pub(crate) fn remove_image(store: &Store, id: &str, name: Option<&str>) -> Result<bool, Error> {
    store.write(|tx| {
        let Some(mut rec) = tx.get::<ImageRecord>(IMAGES, id)? else {
            return Ok(false);
        };
        let untag_only = name.is_some_and(|n| rec.repo_tags.iter().any(|t| t == n));
        if let (true, Some(n)) = (untag_only, name) {
            rec.drop_name(n);
            tx.unset(IMAGE_NAMES, n)?;
        }
        let deleted = !untag_only || rec.repo_tags.is_empty();
        if deleted {
            for n in rec.names() {
                tx.unset(IMAGE_NAMES, n)?;
            }
            tx.remove(IMAGES, id)?;
        } else {
            tx.put(IMAGES, id, &rec)?;
        }
        Ok(deleted)
    })
}

pub(crate) fn images(store: &Store) -> Result<Vec<ImageRecord>, Error> {
    store.read(|tx| Ok(tx.all(IMAGES)?.into_iter().map(|(_, r)| r).collect()))
}

pub(crate) fn image(store: &Store, id: &str) -> Result<Option<ImageRecord>, Error> {
    store.read(|tx| tx.get(IMAGES, id))
}

/// The image id a full name points at.
pub(crate) fn image_by_name(store: &Store, name: &str) -> Result<Option<String>, Error> {
    store.read(|tx| tx.lookup(IMAGE_NAMES, name))
}

/// Records a container's rootfs before its overlay is mounted, without an fsync: the
/// container's record, committed durably at the end of CreateContainer, makes it durable
/// with it; a crash before that loses it, and the container's directory alone then marks
/// the interrupted create for the sweep at start (`rootfs_owners`), as it does for a crash
/// before this commit.
pub(crate) fn put_rootfs(store: &Store, container: &str, rec: &RootfsRecord) -> Result<(), Error> {
    store.write_lazily(|tx| tx.put(ROOTFS, container, rec))
}

pub(crate) fn has_rootfs(store: &Store, container: &str) -> Result<bool, Error> {
    store.read(|tx| Ok(tx.get::<RootfsRecord>(ROOTFS, container)?.is_some()))
}

pub(crate) fn delete_rootfs(store: &Store, container: &str) -> Result<(), Error> {
    store.write(|tx| tx.remove(ROOTFS, container).map(drop))
}

pub(crate) fn rootfs_records(store: &Store) -> Result<Vec<(String, RootfsRecord)>, Error> {
    store.read(|tx| tx.all(ROOTFS))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: &str, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            manifest: format!("m-{id}"),
            manifest_size: 1,
            index: None,
            config_size: 2,
            layers: vec![],
            user: String::new(),
            created: 0,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_moved_tag_leaves_the_old_image_its_digest() {
        let (_d, s) = store();
        assert!(put_image(&s, &record("a", &["r:1"], &["r@a"])).unwrap().is_empty());
        assert!(put_image(&s, &record("b", &["r:1"], &["r@b"])).unwrap().is_empty());
        assert_eq!(image_by_name(&s, "r:1").unwrap().as_deref(), Some("b"));
        let a = image(&s, "a").unwrap().unwrap();
        assert!(a.repo_tags.is_empty());
        assert_eq!(a.repo_digests, vec!["r@a"]);
        // A tag-only image whose tag moves is gone.
        put_image(&s, &record("c", &["t:1"], &[])).unwrap();
        assert_eq!(put_image(&s, &record("b", &["t:1"], &[])).unwrap(), vec!["c"]);
        let b = image(&s, "b").unwrap().unwrap();
        assert_eq!(b.repo_tags, vec!["r:1", "t:1"]);
    }

    #[test]
    fn removing_the_last_tag_removes_the_image() {
        let (_d, s) = store();
        put_image(&s, &record("a", &["r:1", "r:2"], &["r@a"])).unwrap();
        assert!(!remove_image(&s, "a", Some("r:1")).unwrap());
        assert!(image_by_name(&s, "r:1").unwrap().is_none());
        assert!(remove_image(&s, "a", Some("r:2")).unwrap());
        assert!(image(&s, "a").unwrap().is_none());
        assert!(image_by_name(&s, "r@a").unwrap().is_none());
        // Unknown images: nothing to do.
        assert!(!remove_image(&s, "a", None).unwrap());
        put_image(&s, &record("b", &["x:1"], &["x@b"])).unwrap();
        assert!(remove_image(&s, "b", Some("x@b")).unwrap());
        assert!(images(&s).unwrap().is_empty());
    }
}
