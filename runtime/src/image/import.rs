//! Offline import: an OCI image layout directory, an OCI archive (a tar of a layout), or a
//! `docker save` tar (gzip-compressed or not), keeping the names the archive carries.
//!
//! A tar is read once, front to back: each file goes into the store's temp dir (nothing is
//! written by the archive's own paths). Then every image is stored as a pull stores it,
//! each blob checked against its digest and size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageIndex;
use serde::Deserialize;

use super::pull::{BlobRef, Body, Progress, Source, is_index, select_platform};
use super::unpack::{Compression, clean_path};
use super::{Error, ImageRecord, Images, digest_name, name_of, normalize, sha256_hex, sha256_of};

/// The files of an archive: a directory, or a tar spooled into temp files.
struct Files {
    dir: Option<PathBuf>,
    spooled: HashMap<PathBuf, PathBuf>,
    /// Removed when the import ends.
    spool_dir: Option<PathBuf>,
}

impl Drop for Files {
    fn drop(&mut self) {
        if let Some(d) = &self.spool_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Files {
    fn path(&self, rel: &str) -> Option<PathBuf> {
        let rel = clean_path(Path::new(rel)).ok()?;
        match &self.dir {
            Some(d) => Some(d.join(rel)).filter(|p| p.is_file()),
            None => self.spooled.get(&rel).cloned(),
        }
    }

    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(rel)?).ok()
    }
}

struct ArchiveSource<'a> {
    files: &'a Files,
    /// docker save names blobs by path, not digest.
    by_digest: HashMap<String, String>,
}

impl Source for ArchiveSource<'_> {
    async fn fetch(&self, blob: &BlobRef) -> Result<Body, String> {
        let rel = match self.by_digest.get(&blob.digest) {
            Some(p) => p.clone(),
            None => format!("blobs/sha256/{}", sha256_hex(&blob.digest).unwrap_or_default()),
        };
        self.files.path(&rel).map(Body::File).ok_or_else(|| format!("{rel} is not in the archive"))
    }
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The archive's file name made into a repository name (`my image.tar` → `my-image`).
fn archive_stem(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    stem.trim_matches('-').to_owned()
}

const NAME_ANNOTATIONS: [&str; 2] =
    ["io.containerd.image.name", "org.opencontainers.image.ref.name"];

impl Images {
    /// Imports every named image in the archive at `path` (in its own task, so it always
    /// finishes or cleans up).
    pub async fn import(&self, path: &Path) -> Result<Vec<ImageRecord>, Error> {
        let images = self.clone();
        let path = path.to_path_buf();
        tokio::spawn(async move { images.import_detached(&path).await })
            .await
            .expect("import task panicked")
    }

    async fn import_detached(&self, path: &Path) -> Result<Vec<ImageRecord>, Error> {
        let fail = |reason: String| Error::Import { path: path.to_path_buf(), reason };
        let files = self.open_archive(path).await?;
        let out = if let Some(index) = files.read("index.json") {
            let index = ImageIndex::from_reader(&index[..])
                .map_err(|e| fail(format!("index.json: {e}")))?;
            let mut out = Vec::new();
            for entry in index.manifests() {
                if let Some(rec) = self.import_oci(path, &files, entry).await? {
                    out.push(rec);
                }
            }
            out
        } else if let Some(manifest) = files.read("manifest.json") {
            let entries: Vec<DockerEntry> = serde_json::from_slice(&manifest)
                .map_err(|e| fail(format!("manifest.json: {e}")))?;
            let mut out = Vec::new();
            for entry in entries {
                if let Some(rec) = self.import_docker(path, &files, entry).await? {
                    out.push(rec);
                }
            }
            out
        } else {
            return Err(fail(
                "neither an OCI layout (index.json) nor a docker save archive (manifest.json)"
                    .into(),
            ));
        };
        if out.is_empty() {
            return Err(fail("no named image in the archive".into()));
        }
        Ok(out)
    }

    /// The archive's files: a directory as it is, a tar spooled into the image store's
    /// temp dir.
    async fn open_archive(&self, path: &Path) -> Result<Files, Error> {
        let fail = |reason: String| Error::Import { path: path.to_path_buf(), reason };
        let md = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if md.is_dir() {
            return Ok(Files {
                dir: Some(path.to_path_buf()),
                spooled: HashMap::new(),
                spool_dir: None,
            });
        }
        let spool = self.temp_path("import");
        let (src, into) = (path.to_path_buf(), spool.clone());
        let spooled = self.blocking(move |_| spool_tar(&src, &into)).await;
        let mut files =
            Files { dir: None, spooled: HashMap::new(), spool_dir: Some(spool.clone()) };
        files.spooled = spooled.map_err(|e| match e {
            Spool::Bad(reason) => fail(reason),
            // A full disk is the node's, not the archive's fault.
            Spool::Write(source) => {
                Error::Io { what: "spool the archive into", path: spool, source }
            }
        })?;
        Ok(files)
    }

    /// One image of an OCI layout's index.json (skipped, with a warning, when it has no
    /// name). A bare tag names it `localhost/<archive name>:<tag>`.
    async fn import_oci(
        &self,
        path: &Path,
        files: &Files,
        entry: &oci_spec::image::Descriptor,
    ) -> Result<Option<ImageRecord>, Error> {
        let fail = |reason: String| Error::Import { path: path.to_path_buf(), reason };
        let annotations = entry.annotations().clone().unwrap_or_default();
        let Some(raw) = NAME_ANNOTATIONS.iter().find_map(|k| annotations.get(*k)) else {
            tracing::warn!(path = %path.display(), digest = %entry.digest(), "skipping an image without a name");
            return Ok(None);
        };
        let name = if raw.contains(['/', ':', '@']) {
            raw.clone()
        } else {
            let stem = archive_stem(path);
            format!("localhost/{}:{raw}", if stem.is_empty() { "import" } else { &stem })
        };
        let r = normalize(&name)?;
        let image = name_of(&r);
        let blob = BlobRef {
            digest: entry.digest().to_string(),
            size: entry.size(),
            media_type: entry.media_type().to_string(),
        };
        let bytes = self.archive_blob(&image, files, &blob)?;
        let (manifest, index) = if is_index(&bytes) {
            let idx = ImageIndex::from_reader(&bytes[..])
                .map_err(|e| fail(format!("index {}: {e}", blob.digest)))?;
            let child = select_platform(&idx).map_err(|available| Error::Platform {
                image: image.clone(),
                platform: super::pull::node_platform().to_string(),
                available,
            })?;
            let child = BlobRef {
                digest: child.digest().to_string(),
                size: child.size(),
                media_type: child.media_type().to_string(),
            };
            let m = self.archive_blob(&image, files, &child)?;
            ((m, child.digest), Some((bytes, blob.digest.clone())))
        } else {
            ((bytes, blob.digest.clone()), None)
        };
        let (tags, digests) = match r.digest() {
            Some(d) => (vec![], vec![digest_name(&r, d)]),
            None => (vec![image.clone()], vec![digest_name(&r, &blob.digest)]),
        };
        let source = ArchiveSource { files, by_digest: HashMap::new() };
        let progress = Progress::default();
        let rec = self.store_image(&image, &source, manifest, index, tags, digests, &progress);
        Ok(Some(rec.await?))
    }

    /// One image of a `docker save` archive's manifest.json, given a manifest made from
    /// its config and layer files (skipped, with a warning, when it has no name).
    async fn import_docker(
        &self,
        path: &Path,
        files: &Files,
        entry: DockerEntry,
    ) -> Result<Option<ImageRecord>, Error> {
        let fail = |reason: String| Error::Import { path: path.to_path_buf(), reason };
        let names: Vec<String> = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| normalize(t).map(|r| name_of(&r)))
            .collect::<Result<_, _>>()?;
        let Some(first) = names.first().cloned() else {
            tracing::warn!(path = %path.display(), config = %entry.config, "skipping an image without a name");
            return Ok(None);
        };
        let mut by_digest = HashMap::new();
        let mut describe = |rel: &str, media: &str| -> Result<serde_json::Value, Error> {
            let p = files.path(rel).ok_or_else(|| fail(format!("{rel} is not in the archive")))?;
            let (size, digest, gz) = hash_file(&p).map_err(|e| fail(format!("{rel}: {e}")))?;
            by_digest.insert(digest.clone(), rel.to_owned());
            let media = if gz { format!("{media}.gzip") } else { media.to_owned() };
            Ok(serde_json::json!({"mediaType": media, "size": size, "digest": digest}))
        };
        let config_type = "application/vnd.docker.container.image.v1+json";
        let config = describe(&entry.config, config_type)?;
        let config = serde_json::json!({"mediaType": config_type, "size": config["size"], "digest": config["digest"]});
        let layers = entry
            .layers
            .iter()
            .map(|l| describe(l, "application/vnd.docker.image.rootfs.diff.tar"))
            .collect::<Result<Vec<_>, _>>()?;
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config,
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&m).expect("json");
        let digest = sha256_of(&bytes);
        let source = ArchiveSource { files, by_digest };
        let progress = Progress::default();
        let rec =
            self.store_image(&first, &source, (bytes, digest), None, names, vec![], &progress);
        Ok(Some(rec.await?))
    }

    /// A small blob (manifest, index) from the archive, checked.
    fn archive_blob(&self, image: &str, files: &Files, blob: &BlobRef) -> Result<Vec<u8>, Error> {
        let bad = |reason: String| Error::BadBlob {
            image: image.into(),
            digest: blob.digest.clone(),
            reason,
        };
        let hex = sha256_hex(&blob.digest).ok_or_else(|| bad("not a sha256 digest".into()))?;
        let bytes = files
            .read(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| bad("not in the archive".into()))?;
        if bytes.len() as u64 != blob.size || sha256_of(&bytes) != blob.digest {
            return Err(bad(format!(
                "content has digest {} and {} bytes",
                sha256_of(&bytes),
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

/// Size, sha256 and whether it is gzip-compressed.
fn hash_file(path: &Path) -> std::io::Result<(u64, String, bool)> {
    use sha2::Digest;
    let mut f = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let gz = Compression::sniff(f.fill_buf()?) == Compression::Gzip;
    let mut h = sha2::Sha256::new();
    let mut size = 0;
    loop {
        let buf = f.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        h.update(buf);
        let n = buf.len();
        size += n as u64;
        f.consume(n);
    }
    Ok((size, super::digest_string(h), gz))
}

/// Copies every regular file of a tar into `spool` (as numbered files) and maps the
/// archive's paths to them; symlinks between archive files (docker save uses them for
/// repeated layers) are followed inside the archive only.
/// Why an archive could not be spooled: its content (InvalidArgument), or writing it out.
enum Spool {
    Bad(String),
    Write(std::io::Error),
}

impl From<String> for Spool {
    fn from(reason: String) -> Self {
        Spool::Bad(reason)
    }
}

fn spool_tar(tar_path: &Path, spool: &Path) -> Result<HashMap<PathBuf, PathBuf>, Spool> {
    std::fs::create_dir_all(spool).map_err(Spool::Write)?;
    let mut input =
        BufReader::with_capacity(256 * 1024, File::open(tar_path).map_err(|e| e.to_string())?);
    let reader: Box<dyn Read> =
        match Compression::sniff(input.fill_buf().map_err(|e| e.to_string())?) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => {
                Box::new(zstd::Decoder::with_buffer(input).map_err(|e| e.to_string())?)
            }
            Compression::None => Box::new(input),
        };
    let mut archive = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut links = Vec::new();
    for (n, entry) in archive.entries().map_err(|e| format!("not a tar: {e}"))?.enumerate() {
        let mut entry = entry.map_err(|e| format!("read the tar: {e}"))?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let Ok(rel) = clean_path(&raw) else {
            return Err(Spool::Bad(format!("entry {raw:?} leaves the archive")));
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = spool.join(n.to_string());
                let mut out = File::create(&dest).map_err(Spool::Write)?;
                std::io::copy(&mut entry, &mut out).map_err(
                    |e| match crate::error::is_no_space(&e) {
                        true => Spool::Write(e),
                        false => Spool::Bad(format!("read {raw:?}: {e}")),
                    },
                )?;
                files.insert(rel, dest);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                        rel.parent().map(Path::to_path_buf).unwrap_or_default().join(target)
                    } else {
                        target.into_owned()
                    };
                    links.push((rel, base));
                }
            }
            _ => {}
        }
    }
    for (rel, target) in links {
        // Normalise `a/../b` lexically; a target outside the archive is simply not found.
        let mut norm = PathBuf::new();
        for c in target.components() {
            match c {
                std::path::Component::ParentDir => {
                    norm.pop();
                }
                std::path::Component::Normal(p) => norm.push(p),
                _ => {}
            }
        }
        if let Some(real) = files.get(&norm).cloned() {
            files.insert(rel, real);
        }
    }
    Ok(files)
}
