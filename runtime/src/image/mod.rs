//! Images: pull from OCI registries, a content-addressed store, safe unpack, offline
//! import, and the rootfs of containers.
//!
//! ```text
//!   pull/import ──▶ blobs/sha256/<hex>   (verified: digest and size, then renamed in)
//!                      │ unpack (safe, whiteouts → overlayfs form, diff id checked)
//!                      ▼
//!                   layers/<chain id>/   (one dir per layer, renamed in when complete)
//!                      │ commit: image record + names, one transaction
//!                      ▼
//!                   visible in ListImages ──▶ mount_rootfs: overlay(layers…, upper)
//! ```
//! Nothing is visible before the commit; a crash before it leaves only files in `tmp/`
//! (emptied at start) or blobs and layers no record names (collected at start).
//!
//! [`Images`] owns the image store: its files under the root dir and its records in the
//! state database.

pub mod import;
pub mod pull;
pub mod records;
pub mod registry;
pub mod rootfs;
pub mod unpack;

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use oci_client::Reference;
use sha2::{Digest, Sha256};

pub use self::records::{ImageRecord, LayerRecord, RootfsRecord};
pub use self::registry::{Credentials, RegistryConfig};
use crate::ErrorKind;
use crate::layout::Layout;
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("pull {image}: {detail}")]
    Registry { image: String, failure: registry::Failure, detail: String },
    #[error(
        "image {image}: no manifest for platform {platform} in the index (it has: {available})"
    )]
    Platform { image: String, platform: String, available: String },
    #[error("image {image}: {what}")]
    Invalid { image: String, what: String },
    #[error("image {image}: blob {digest}: {reason}")]
    BadBlob { image: String, digest: String, reason: String },
    #[error("image {image}: layer {digest}: {source}")]
    Unpack { image: String, digest: String, source: unpack::Error },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("import {path}: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error("rootfs of container {container}: {reason}")]
    Rootfs { container: String, reason: String },
    /// The manifest already says the image is larger than a bound allows.
    #[error("image {image}: {what} of {size} bytes is more than {key} = {limit} bytes")]
    TooLarge { image: String, what: String, size: u64, key: &'static str, limit: u64 },
    #[error("invalid container id {0:?}: 1-128 of [A-Za-z0-9_.-], not . or ..")]
    InvalidId(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The outcome of a pull shared by callers that asked for it at the same time.
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidReference { .. } | Error::Import { .. } | Error::InvalidId(_) => {
                ErrorKind::InvalidArgument
            }
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Registry { failure, .. } => match failure {
                registry::Failure::Unreachable => ErrorKind::Unavailable,
                registry::Failure::Unauthorized => ErrorKind::Unauthenticated,
                registry::Failure::NotFound => ErrorKind::NotFound,
                registry::Failure::Other => ErrorKind::Unavailable,
            },
            Error::Platform { .. } => ErrorKind::NotFound,
            Error::Invalid { .. } | Error::BadBlob { .. } => ErrorKind::InvalidArgument,
            Error::Unpack { source, .. } if source.is_hostile() => ErrorKind::InvalidArgument,
            Error::Unpack { source, .. } if source.is_exhausted() => ErrorKind::ResourceExhausted,
            Error::Io { source, .. } if crate::error::is_no_space(source) => {
                ErrorKind::ResourceExhausted
            }
            Error::TooLarge { .. } => ErrorKind::ResourceExhausted,
            Error::Rootfs { .. } => ErrorKind::FailedPrecondition,
            Error::Unpack { .. } | Error::Io { .. } | Error::Store(_) => ErrorKind::Internal,
            Error::Shared(e) => e.kind(),
        }
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }
}

/// Parses and normalises a reference as kubelet and crictl expect:
/// `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize(reference: &str) -> Result<Reference, Error> {
    let invalid = |reason: String| Error::InvalidReference { reference: reference.into(), reason };
    if reference.trim() != reference || reference.is_empty() {
        return Err(invalid("empty or surrounded by spaces".into()));
    }
    let r = Reference::try_from(reference).map_err(|e| invalid(e.to_string()))?;
    if r.digest().is_some_and(|d| !d.starts_with("sha256:")) {
        return Err(invalid("only sha256 digests are supported".into()));
    }
    Ok(r)
}

/// The name an image is stored under for a reference: `repo@digest` when it has a
/// digest (the digest decides; a tag beside it is ignored), else `repo:tag`.
pub fn name_of(r: &Reference) -> String {
    match r.digest() {
        Some(d) => digest_name(r, d),
        None => format!("{}/{}:{}", r.registry(), r.repository(), r.tag().unwrap_or("latest")),
    }
}

pub fn digest_name(r: &Reference, digest: &str) -> String {
    format!("{}/{}@{}", r.registry(), r.repository(), digest)
}

/// The hex part of a `sha256:` digest, checked.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some(hex)
}

pub fn sha256_of(data: &[u8]) -> String {
    digest_string(Sha256::new_with_prefix(data))
}

/// `sha256:<hex>` of what a hasher has seen.
pub fn digest_string(h: Sha256) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h.finalize().iter() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// chain(L0) = diff(L0); chain(Ln) = sha256(chain(Ln-1) + " " + diff(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Per-key async locks: one download of a blob and one unpack of a layer at a time,
/// however many pulls want it.
#[derive(Default)]
pub(crate) struct KeyLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl KeyLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap();
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}

/// The node's images. Cheap to clone.
#[derive(Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

/// How large an image may make the store (see `unpack::Bounds`); every default is far
/// above any real image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_layer_bytes: u64,
    pub max_image_bytes: u64,
    pub max_layer_entries: u64,
    pub min_free_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: 64 << 30,
            max_image_bytes: 128 << 30,
            max_layer_entries: 4_000_000,
            min_free_bytes: 1 << 30,
        }
    }
}

struct Inner {
    store: Arc<Store>,
    layout: Layout,
    registries: RegistryConfig,
    limits: Limits,
    pulls: pull::Flights,
    pull_metrics: pull::PullMetrics,
    keys: KeyLocks,
    /// Pulls, imports and rootfs mounts hold it shared; garbage collection exclusively, so
    /// it never takes what a pull has stored but not yet committed.
    gc: tokio::sync::RwLock<()>,
    /// Unpacks at a time (they are CPU-bound).
    unpack_slots: tokio::sync::Semaphore,
    /// The last walk of the image store (ImageFsInfo): its generation, when, what.
    usage: tokio::sync::Mutex<Option<(u64, std::time::Instant, FsUsage)>>,
    /// Turns whenever the store's files may have changed (a pull or import ended, GC).
    usage_generation: std::sync::atomic::AtomicU64,
    /// The rootfs's lowest layer of mount points, made at the first mount; `None` when it
    /// could not be made as it must be ([`rootfs::mountpoints`]).
    mountpoints: std::sync::OnceLock<Option<PathBuf>>,
}

/// How long a walk of the image store answers ImageFsInfo while the store does not change
/// (containerd's CRI refreshes its figure every 10 s, its stats collect period).
const USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Marks the image store's usage stale when dropped (at the end of whatever wrote it).
pub(crate) struct UsageChanges<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for UsageChanges<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Images {
    pub(crate) fn new(
        store: Arc<Store>,
        layout: Layout,
        registries: RegistryConfig,
        limits: Limits,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let inner = Inner {
            store,
            layout,
            registries,
            limits,
            pulls: pull::Flights::default(),
            pull_metrics: pull::PullMetrics::default(),
            keys: KeyLocks::default(),
            gc: tokio::sync::RwLock::new(()),
            unpack_slots: tokio::sync::Semaphore::new(cores),
            usage: tokio::sync::Mutex::new(None),
            usage_generation: std::sync::atomic::AtomicU64::new(0),
            mountpoints: std::sync::OnceLock::new(),
        };
        Self { inner: Arc::new(inner) }
    }
}

/// Bytes and inodes the image store uses (CRI ImageFsInfo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

impl Images {
    /// Runs blocking work (database, file system) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Images) -> T + Send + 'static,
    ) -> T {
        let images = self.clone();
        tokio::task::spawn_blocking(move || f(&images)).await.expect("blocking task panicked")
    }

    /// Finds an image by id (`sha256:…`, bare hex, or a unique hex prefix of 4+), by full
    /// or short name (`busybox` is `docker.io/library/busybox:latest`), or by `name@digest`.
    /// Also returns the name it was found by, if any.
    pub async fn find(&self, spec: &str) -> Result<Option<(ImageRecord, Option<String>)>, Error> {
        let spec = spec.to_owned();
        self.blocking(move |img| img.find_blocking(&spec)).await
    }

    fn find_blocking(&self, spec: &str) -> Result<Option<(ImageRecord, Option<String>)>, Error> {
        let store = &self.inner.store;
        let bare = spec.strip_prefix("sha256:").unwrap_or(spec);
        let hex = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_hexdigit());
        if hex && bare.len() == 64 {
            return Ok(records::image(store, &format!("sha256:{bare}"))?.map(|r| (r, None)));
        }
        if let Ok(r) = normalize(spec) {
            let name = name_of(&r);
            if let Some(id) = records::image_by_name(store, &name)? {
                return Ok(records::image(store, &id)?.map(|r| (r, Some(name))));
            }
        }
        if hex && bare.len() >= 4 {
            let mut found =
                records::images(store)?.into_iter().filter(|i| i.id[7..].starts_with(bare));
            if let (Some(one), None) = (found.next(), found.next()) {
                return Ok(Some((one, None)));
            }
        }
        Ok(None)
    }

    /// Every image, optionally only those `filter` finds.
    pub async fn list(&self, filter: Option<&str>) -> Result<Vec<ImageRecord>, Error> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.find(f).await?.map(|(r, _)| r).into_iter().collect()),
            None => Ok(self.blocking(|img| records::images(&img.inner.store)).await?),
        }
    }

    /// Removes an image: by tag, that tag (and the image once no tag is left); by id or
    /// digest, the image with all its names. Layers a container's rootfs still uses stay
    /// until that container is removed. Unknown images are not an error.
    pub async fn remove(&self, spec: &str) -> Result<(), Error> {
        let Some((rec, name)) = self.find(spec).await? else {
            return Ok(());
        };
        let deleted = self
            .blocking(move |img| records::remove_image(&img.inner.store, &rec.id, name.as_deref()))
            .await?;
        if deleted {
            self.collect_garbage().await?;
        }
        Ok(())
    }

    /// Deletes every blob and unpacked layer that no image and no container rootfs needs.
    pub async fn collect_garbage(&self) -> Result<(), Error> {
        let _gc = self.inner.gc.write().await;
        let _changes = self.usage_changes();
        self.blocking(|img| img.collect_garbage_blocking()).await
    }

    fn collect_garbage_blocking(&self) -> Result<(), Error> {
        let store = &self.inner.store;
        let layout = &self.inner.layout;
        let images = records::images(store)?;
        let rootfs = records::rootfs_records(store)?;
        let keep_blobs: HashSet<&str> =
            images.iter().flat_map(|i| i.blobs()).filter_map(sha256_hex).collect();
        let mounted = mounted_layers(&layout.layers_dir(), &layout.containers_dir());
        let keep_layers: HashSet<&str> = images
            .iter()
            .flat_map(|i| i.layers.iter().map(|l| l.chain_id.as_str()))
            .chain(rootfs.iter().flat_map(|(_, r)| r.chain_ids.iter().map(String::as_str)))
            .filter_map(sha256_hex)
            .chain(mounted.layers.iter().map(String::as_str))
            .collect();
        for (name, path) in dir_entries(&layout.blobs_dir())? {
            if !keep_blobs.contains(name.as_str()) {
                tracing::debug!(blob = %name, "collecting unused blob");
                std::fs::remove_file(&path).map_err(Error::io("remove blob", &path))?;
            }
        }
        for (name, path) in dir_entries(&layout.layers_dir())? {
            let idmapped = mounted.idmapped.contains(idmapped_name(Path::new(&name)).as_str());
            if !keep_layers.contains(name.as_str()) && !idmapped {
                tracing::debug!(layer = %name, "collecting unused layer");
                // Out of sight first, so a crash mid-delete leaves no half layer behind.
                let doomed = layout.image_tmp_dir().join(format!("gc-{name}"));
                std::fs::rename(&path, &doomed).map_err(Error::io("move layer", &path))?;
                std::fs::remove_dir_all(&doomed).map_err(Error::io("remove layer", &doomed))?;
            }
        }
        Ok(())
    }

    /// Prepares the image store at start: dirs exist, leftovers of interrupted pulls go,
    /// and anything no record needs is collected.
    pub(crate) async fn open(&self) -> Result<(), Error> {
        let layout = self.inner.layout.clone();
        self.blocking(move |_| {
            let tmp = layout.image_tmp_dir();
            match std::fs::remove_dir_all(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("clean", &tmp)(e)),
            }
            for dir in [layout.blobs_dir(), layout.layers_dir(), tmp, layout.containers_dir()] {
                std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
            }
            // Layers and container rootfs keep their setuid files and device nodes (images
            // need them): the directories around them are the barrier, root only. The
            // containers dir may be passed through (0711) to a container's own dir, which
            // is root's (0700) or, for a pod with its own user namespace, also passable by
            // that pod's root group (0710), whose containers mount their rootfs from
            // inside it. A store an older podbay left more open is tightened here.
            use std::os::unix::fs::PermissionsExt;
            let restrict = |dir: &Path, mode: u32| {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(Error::io("restrict", dir))
            };
            restrict(&layout.images_dir(), 0o700)?;
            restrict(&layout.containers_dir(), 0o711)?;
            for e in std::fs::read_dir(layout.containers_dir()).into_iter().flatten().flatten() {
                let mode = e.metadata().map(|m| m.permissions().mode() & 0o7777).unwrap_or(0);
                if mode & 0o7067 != 0 {
                    restrict(&e.path(), 0o700)?;
                }
            }
            Ok(())
        })
        .await?;
        self.collect_garbage().await
    }

    /// Marks the store's usage stale once the returned guard is dropped.
    pub(crate) fn usage_changes(&self) -> UsageChanges<'_> {
        UsageChanges(&self.inner.usage_generation)
    }

    /// Bytes and inodes used under the image store: a walk of it, kept while nothing is
    /// pulled, imported or collected and for at most USAGE_TTL (kubelet polls this; a
    /// node's store can hold hundreds of thousands of files). One walk at a time.
    pub async fn fs_usage(&self) -> Result<FsUsage, Error> {
        let mut cached = self.inner.usage.lock().await;
        // Read before the walk: a change that ends during it leaves the result stale.
        let generation = self.inner.usage_generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some((g, at, usage)) = *cached
            && g == generation
            && at.elapsed() < USAGE_TTL
        {
            return Ok(usage);
        }
        let usage = self.walk_usage().await?;
        *cached = Some((generation, std::time::Instant::now(), usage));
        Ok(usage)
    }

    async fn walk_usage(&self) -> Result<FsUsage, Error> {
        let dir = self.inner.layout.images_dir();
        self.blocking(move |_| {
            let mut usage = FsUsage::default();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                let entries = std::fs::read_dir(&d).map_err(Error::io("read", &d))?;
                for e in entries {
                    let e = e.map_err(Error::io("read", &d))?;
                    let Ok(md) = e.path().symlink_metadata() else { continue };
                    use std::os::unix::fs::MetadataExt;
                    usage.bytes += md.blocks() * 512;
                    usage.inodes += 1;
                    if md.is_dir() {
                        stack.push(e.path());
                    }
                }
            }
            Ok(usage)
        })
        .await
    }

    /// The image's config JSON (verbose status, container specs).
    pub async fn config(&self, rec: &ImageRecord) -> Result<Vec<u8>, Error> {
        let id = rec.id.clone();
        self.blocking(move |img| img.read_config(&id)).await
    }

    /// The config blob of the image `id`, read here (a task on the blocking pool).
    fn read_config(&self, id: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(id)?;
        std::fs::read(&path).map_err(Error::io("read image config", &path))
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        let hex = sha256_hex(digest).ok_or_else(|| Error::Invalid {
            image: digest.into(),
            what: format!("digest {digest:?} is not sha256:<64 hex>"),
        })?;
        Ok(self.inner.layout.blob(hex))
    }

    fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.inner.layout.layer(sha256_hex(chain_id).unwrap_or(chain_id))
    }
}

/// What mounted overlays use as lower dirs: layers by the name of their directory, and the
/// idmapped clones of layers (pods with their own user namespace) by their dir's name
/// (`idmapped_name`). Such layers are never collected, whatever the records say (a record
/// lost to a damaged database must not take a running container's files).
#[derive(Debug, Default)]
struct Lowers {
    layers: HashSet<String>,
    idmapped: HashSet<String>,
}

fn mounted_layers(layers_dir: &Path, containers_dir: &Path) -> Lowers {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    overlay_lowers(&mountinfo, layers_dir, containers_dir)
}

/// The name of a layer's idmapped clone in a container's `idmapped/` dir: the first 16
/// characters of the layer dir's name (a sha256 in hex).
pub(crate) fn idmapped_name(layer: &Path) -> String {
    let name = layer.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.chars().take(16).collect()
}

/// The lower dirs of the overlays in `mountinfo`: below `layers_dir`, or idmapped clones
/// in a container's dir below `containers_dir`.
fn overlay_lowers(mountinfo: &str, layers_dir: &Path, containers_dir: &Path) -> Lowers {
    let prefix = format!("{}/", layers_dir.display());
    let containers = format!("{}/", containers_dir.display());
    let mut out = Lowers::default();
    for line in mountinfo.lines() {
        let Some((_, tail)) = line.split_once(" - ") else { continue };
        let mut fields = tail.split_whitespace();
        if fields.next() != Some("overlay") {
            continue;
        }
        let options = fields.nth(1).unwrap_or_default();
        for option in options.split(',') {
            let Some(lower) = option.strip_prefix("lowerdir=") else { continue };
            for dir in lower.split(':') {
                let dir = dir.trim_end_matches('/');
                if let Some(name) = dir.strip_prefix(&prefix) {
                    out.layers.insert(name.to_owned());
                } else if let Some(rest) = dir.strip_prefix(&containers)
                    && let Some((_, name)) = rest.split_once("/idmapped/")
                {
                    out.idmapped.insert(name.to_owned());
                }
            }
        }
    }
    out
}

fn dir_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(Error::io("read", dir))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_overlays_keep_their_lower_layers() {
        let info = "\
36 25 0:31 / /r/containers/c1/rootfs rw - overlay overlay rw,lowerdir=/r/layers/bbb:/r/layers/aaa,upperdir=/r/containers/c1/upper,workdir=/r/containers/c1/work
37 25 0:32 / /other rw - overlay overlay rw,lowerdir=/elsewhere/x,upperdir=/u,workdir=/w
38 25 0:33 / /r/layers/ccc rw - ext4 /dev/sda1 rw,lowerdir=/r/layers/ccc
39 25 0:34 / /r/containers/c2/rootfs rw - overlay overlay rw,lowerdir=/r/containers/c2/idmapped/0123456789abcdef:/r/containers/c2/idmapped/fedcba9876543210,upperdir=/r/containers/c2/upper,workdir=/r/containers/c2/work
";
        let got = overlay_lowers(info, Path::new("/r/layers"), Path::new("/r/containers"));
        let sorted = |set: HashSet<String>| {
            let mut v: Vec<String> = set.into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(sorted(got.layers), ["aaa", "bbb"]);
        assert_eq!(sorted(got.idmapped), ["0123456789abcdef", "fedcba9876543210"]);
        let layer =
            Path::new("/r/layers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        assert_eq!(idmapped_name(layer), "0123456789abcdef");
    }

    #[test]
    fn names_are_normalised() {
        let n = |s: &str| name_of(&normalize(s).unwrap());
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(n("127.0.0.1:5000/t/bb"), "127.0.0.1:5000/t/bb:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(n(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
        assert_eq!(n(&format!("busybox:1@{d}")), format!("docker.io/library/busybox@{d}"));
        assert!(normalize("Busybox").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("a b").is_err());
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn digests_are_checked() {
        assert!(sha256_hex(&format!("sha256:{}", "0".repeat(64))).is_some());
        assert!(sha256_hex("sha256:abc").is_none());
        assert!(sha256_hex(&format!("sha512:{}", "0".repeat(64))).is_none());
        assert!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
    }
}
