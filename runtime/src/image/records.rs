//! Image metadata in the state database.
//!
//! Tables (values are JSON):
//! - `images`: image id (config digest) → [`ImageRecord`]
//! - `image_names`: a full name (`docker.io/library/busybox:latest`, or `…@sha256:…`) → id
//! - `rootfs`: container id → [`RootfsRecord`] (the layers a container's rootfs holds)
//!
//! An image lives while it has a name. A name moving to another image (a tag pulled again)
//! and the removal of a name change the records in one transaction.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::store::{Error, Store};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const IMAGE_NAMES: TableDefinition<&str, &str> = TableDefinition::new("image_names");
const ROOTFS: TableDefinition<&str, &[u8]> = TableDefinition::new("rootfs");

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

pub(crate) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), Error> {
    tx.open_table(IMAGES)?;
    tx.open_table(IMAGE_NAMES)?;
    tx.open_table(ROOTFS)?;
    Ok(())
}

fn union(mut a: Vec<String>, b: &[String]) -> Vec<String> {
    for n in b {
        if !a.contains(n) {
            a.push(n.clone());
        }
    }
    a
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(v).map_err(|source| Error::Decode { id: key.to_owned(), source })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("a record serialises")
}

impl Store {
    /// Stores an image under its names: a name another image had moves here, and an image
    /// left without names is deleted. Returns the ids of images deleted that way.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<Vec<String>, Error> {
        let tx = self.db().begin_write()?;
        let mut gone = Vec::new();
        {
            let mut images = tx.open_table(IMAGES)?;
            let mut names = tx.open_table(IMAGE_NAMES)?;
            let mut merged = rec.clone();
            if let Some(v) = images.get(rec.id.as_str())? {
                let old: ImageRecord = decode(&rec.id, v.value())?;
                merged.repo_tags = union(old.repo_tags, &rec.repo_tags);
                merged.repo_digests = union(old.repo_digests, &rec.repo_digests);
            }
            for name in rec.names() {
                let previous =
                    names.insert(name.as_str(), rec.id.as_str())?.map(|v| v.value().to_owned());
                let Some(other) = previous.filter(|o| *o != rec.id) else { continue };
                let Some(old) = images.get(other.as_str())?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let mut old: ImageRecord = decode(&other, &old)?;
                old.drop_name(name);
                if old.names().next().is_none() {
                    images.remove(other.as_str())?;
                    gone.push(other);
                } else {
                    images.insert(other.as_str(), encode(&old).as_slice())?;
                }
            }
            images.insert(rec.id.as_str(), encode(&merged).as_slice())?;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Removes one name; the image goes with it when no tag is left (as `docker rmi`), or
    /// entirely when `name` is `None`. Returns whether the image record was deleted.
    pub fn remove_image(&self, id: &str, name: Option<&str>) -> Result<bool, Error> {
        let tx = self.db().begin_write()?;
        let deleted;
        {
            let mut images = tx.open_table(IMAGES)?;
            let mut names = tx.open_table(IMAGE_NAMES)?;
            let Some(v) = images.get(id)?.map(|v| v.value().to_vec()) else {
                return Ok(false);
            };
            let mut rec: ImageRecord = decode(id, &v)?;
            let untag_only = name.is_some_and(|n| rec.repo_tags.iter().any(|t| t == n));
            if let (true, Some(n)) = (untag_only, name) {
                rec.drop_name(n);
                names.remove(n)?;
            }
            deleted = !untag_only || rec.repo_tags.is_empty();
            if deleted {
                for n in rec.names() {
                    names.remove(n.as_str())?;
                }
                images.remove(id)?;
            } else {
                images.insert(id, encode(&rec).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(deleted)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, Error> {
        let tx = self.db().begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(IMAGES)?.iter()? {
            let (k, v) = row?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn image(&self, id: &str) -> Result<Option<ImageRecord>, Error> {
        let tx = self.db().begin_read()?;
        let table = tx.open_table(IMAGES)?;
        table.get(id)?.map(|v| decode(id, v.value())).transpose()
    }

    /// The image id a full name points at.
    pub fn image_by_name(&self, name: &str) -> Result<Option<String>, Error> {
        let tx = self.db().begin_read()?;
        Ok(tx.open_table(IMAGE_NAMES)?.get(name)?.map(|v| v.value().to_owned()))
    }

    pub fn put_rootfs(&self, container: &str, rec: &RootfsRecord) -> Result<(), Error> {
        let tx = self.db().begin_write()?;
        tx.open_table(ROOTFS)?.insert(container, encode(rec).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub fn delete_rootfs(&self, container: &str) -> Result<(), Error> {
        let tx = self.db().begin_write()?;
        tx.open_table(ROOTFS)?.remove(container)?;
        tx.commit()?;
        Ok(())
    }

    pub fn rootfs_records(&self) -> Result<Vec<(String, RootfsRecord)>, Error> {
        let tx = self.db().begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(ROOTFS)?.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn image(id: &str, tags: &[&str], digests: &[&str]) -> ImageRecord {
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
        assert!(s.put_image(&image("a", &["r:1"], &["r@a"])).unwrap().is_empty());
        assert!(s.put_image(&image("b", &["r:1"], &["r@b"])).unwrap().is_empty());
        assert_eq!(s.image_by_name("r:1").unwrap().as_deref(), Some("b"));
        let a = s.image("a").unwrap().unwrap();
        assert!(a.repo_tags.is_empty());
        assert_eq!(a.repo_digests, vec!["r@a"]);
        // A tag-only image whose tag moves is gone.
        s.put_image(&image("c", &["t:1"], &[])).unwrap();
        assert_eq!(s.put_image(&image("b", &["t:1"], &[])).unwrap(), vec!["c"]);
        let b = s.image("b").unwrap().unwrap();
        assert_eq!(b.repo_tags, vec!["r:1", "t:1"]);
    }

    #[test]
    fn removing_the_last_tag_removes_the_image() {
        let (_d, s) = store();
        s.put_image(&image("a", &["r:1", "r:2"], &["r@a"])).unwrap();
        assert!(!s.remove_image("a", Some("r:1")).unwrap());
        assert!(s.image_by_name("r:1").unwrap().is_none());
        assert!(s.remove_image("a", Some("r:2")).unwrap());
        assert!(s.image("a").unwrap().is_none());
        assert!(s.image_by_name("r@a").unwrap().is_none());
        // Unknown images: nothing to do.
        assert!(!s.remove_image("a", None).unwrap());
        s.put_image(&image("b", &["x:1"], &["x@b"])).unwrap();
        assert!(s.remove_image("b", Some("x@b")).unwrap());
        assert!(s.images().unwrap().is_empty());
    }
}
