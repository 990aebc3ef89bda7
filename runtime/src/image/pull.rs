//! PullImage: resolve a reference through the configured endpoints, pick the node's
//! platform from an index, then store the image (shared with import): config, layers in
//! parallel (each blob downloaded and each layer unpacked once, however many pulls want
//! it), and the record committed last. Concurrent pulls of one image share one flight.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use oci_client::Reference;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::registry::{self, Endpoint, Failure, Protocol};
use super::{
    Credentials, Error, ImageRecord, Images, LayerRecord, chain_ids, digest_name, name_of,
    normalize, records, sha256_hex, sha256_of,
};

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Layer downloads at a time per pull (containerd's default).
const PARALLEL_DOWNLOADS: usize = 3;

/// A blob to store: what the manifest says about it.
#[derive(Debug, Clone)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl BlobRef {
    fn of(d: &Descriptor) -> Self {
        Self {
            digest: d.digest().to_string(),
            size: d.size(),
            media_type: d.media_type().to_string(),
        }
    }
}

/// Where a blob's bytes come from.
pub enum Body {
    Stream(BoxStream<'static, std::io::Result<Bytes>>),
    File(PathBuf),
}

/// Something that can hand out an image's blobs: a registry endpoint or an archive.
pub(crate) trait Source: Sync {
    fn fetch(&self, blob: &BlobRef) -> impl Future<Output = Result<Body, String>> + Send;
}

/// Progress of one pull, per layer (for `podbay pull` on a terminal).
#[derive(Debug, Default)]
pub struct Progress {
    layers: Mutex<Vec<LayerProgress>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    pub digest: String,
    pub total: u64,
    pub done: u64,
    /// waiting, downloading, unpacking, done, exists
    pub state: &'static str,
}

impl Progress {
    pub fn snapshot(&self) -> Vec<LayerProgress> {
        self.layers.lock().unwrap().clone()
    }

    fn set(&self, digest: &str, f: impl FnOnce(&mut LayerProgress)) {
        if let Some(l) = self.layers.lock().unwrap().iter_mut().find(|l| l.digest == digest) {
            f(l);
        }
    }
}

type Outcome = Result<ImageRecord, Arc<Error>>;

#[derive(Clone)]
struct Flight {
    cell: Arc<tokio::sync::OnceCell<Outcome>>,
    progress: Arc<Progress>,
}

/// What pulls from registries did, for `/metrics` (coalesced pulls count once).
#[derive(Clone)]
pub struct PullMetrics {
    /// By result: `success` or `failure`.
    pub pulls: Family<PullLabels, Counter>,
    /// Layer bytes fetched (layers the store already had are not fetched).
    pub bytes: Counter,
    pub seconds: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullLabels {
    pub result: &'static str,
}

impl Default for PullMetrics {
    fn default() -> Self {
        Self {
            pulls: Family::default(),
            bytes: Counter::default(),
            seconds: crate::steps::latency_histogram(),
        }
    }
}

impl PullMetrics {
    fn record(&self, outcome: &Outcome, progress: &Progress, took: std::time::Duration) {
        let result = if outcome.is_ok() { "success" } else { "failure" };
        self.pulls.get_or_create(&PullLabels { result }).inc();
        let layers = progress.snapshot();
        self.bytes.inc_by(layers.iter().filter(|l| l.state != "exists").map(|l| l.done).sum());
        self.seconds.observe(took.as_secs_f64());
    }
}

/// Pulls in flight, by image name and credentials.
#[derive(Default)]
pub(crate) struct Flights(Mutex<HashMap<String, Flight>>);

impl Images {
    /// Pulls an image (coalesced with a pull of the same image already under way) and
    /// returns its record. The pull runs in its own task: a caller that goes away (kubelet
    /// timing out) does not leave it half done.
    pub async fn pull(
        &self,
        reference: &str,
        creds: Option<Credentials>,
    ) -> Result<ImageRecord, Error> {
        let images = self.clone();
        let reference = reference.to_owned();
        tokio::spawn(async move { images.pull_coalesced(&reference, creds).await })
            .await
            .expect("pull task panicked")
    }

    async fn pull_coalesced(
        &self,
        reference: &str,
        creds: Option<Credentials>,
    ) -> Result<ImageRecord, Error> {
        let r = normalize(reference)?;
        let mut h = std::hash::DefaultHasher::new();
        creds.hash(&mut h);
        let key = format!("{}\0{:x}", name_of(&r), h.finish());
        let flights = &self.inner.pulls.0;
        let flight = flights
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_insert_with(|| Flight { cell: Default::default(), progress: Default::default() })
            .clone();
        let outcome = flight
            .cell
            .get_or_init(|| async {
                let started = std::time::Instant::now();
                let outcome =
                    self.pull_once(&r, creds.as_ref(), &flight.progress).await.map_err(Arc::new);
                self.inner.pull_metrics.record(&outcome, &flight.progress, started.elapsed());
                outcome
            })
            .await
            .clone();
        let mut map = flights.lock().unwrap();
        if map.get(&key).is_some_and(|f| Arc::ptr_eq(&f.cell, &flight.cell)) {
            map.remove(&key);
        }
        outcome.map_err(Error::Shared)
    }

    /// Pull counts, bytes and durations (handles onto the same counts).
    pub fn pull_metrics(&self) -> PullMetrics {
        self.inner.pull_metrics.clone()
    }

    /// The progress of a pull of `reference` under way, if there is one.
    pub fn pull_progress(&self, reference: &str) -> Option<Arc<Progress>> {
        let name = name_of(&normalize(reference).ok()?);
        let map = self.inner.pulls.0.lock().unwrap();
        map.iter()
            .find(|(k, _)| k.split('\0').next() == Some(name.as_str()))
            .map(|(_, f)| f.progress.clone())
    }

    async fn pull_once(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        let started = std::time::Instant::now();
        let image = name_of(r);
        let endpoints = self.inner.registries.endpoints(r.registry());
        let mut failures = Vec::new();
        let mut details = Vec::new();
        for ep in &endpoints {
            let resolved = match self.resolve_at(ep, r, creds, &image).await {
                Ok(res) => res,
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Failed(f, msg)) => {
                    debug!(image.ref = %image, endpoint = %ep.describe(), error = %msg, "endpoint failed");
                    failures.push(f);
                    details.push(format!("{}: {msg}", ep.describe()));
                    continue;
                }
            };
            let (tags, digests) = match r.digest() {
                Some(d) => (vec![], vec![digest_name(r, d)]),
                None => (vec![image.clone()], vec![digest_name(r, &resolved.top_digest)]),
            };
            let source = RegistrySource { client: resolved.client, reference: resolved.reference };
            let rec = self
                .store_image(
                    &image,
                    &source,
                    resolved.manifest,
                    resolved.index,
                    tags,
                    digests,
                    progress,
                )
                .await?;
            info!(image.ref = %image, id = %rec.id, endpoint = %ep.describe(), elapsed_ms = started.elapsed().as_millis() as u64, "image pulled");
            return Ok(rec);
        }
        let failure = registry::worst(&failures);
        Err(Error::Registry {
            image,
            failure,
            detail: format!("{}: {}", failure.describe(), details.join("; ")),
        })
    }

    /// Fetches the manifest (and the index it is chosen from) from one endpoint.
    async fn resolve_at(
        &self,
        ep: &Endpoint,
        r: &Reference,
        creds: Option<&Credentials>,
        image: &str,
    ) -> Result<Resolved, Attempt> {
        let reference = match r.digest() {
            Some(d) => Reference::with_digest(ep.host.clone(), r.repository().into(), d.into()),
            None => Reference::with_tag(
                ep.host.clone(),
                r.repository().into(),
                r.tag().unwrap_or("latest").into(),
            ),
        };
        let auth = registry::auth(ep, creds);
        let mut http = ep.protocol == Protocol::Http;
        loop {
            let client = registry::client(ep, http);
            match client.pull_manifest_raw(&reference, &auth, MANIFEST_TYPES).await {
                Ok((bytes, _)) => {
                    return self
                        .resolve_manifest(client, reference, auth, bytes.to_vec(), image)
                        .await;
                }
                Err(e) => {
                    let failure = Failure::of(&e);
                    if failure == Failure::Unreachable
                        && ep.protocol == Protocol::HttpsThenHttp
                        && !http
                    {
                        debug!(host = %ep.host, error = %crate::error::chain(&e), "no TLS on a loopback registry; trying plain HTTP");
                        http = true;
                        continue;
                    }
                    return Err(Attempt::Failed(failure, crate::error::chain(&e)));
                }
            }
        }
    }

    async fn resolve_manifest(
        &self,
        client: oci_client::Client,
        reference: Reference,
        auth: oci_client::secrets::RegistryAuth,
        bytes: Vec<u8>,
        image: &str,
    ) -> Result<Resolved, Attempt> {
        let digest = sha256_of(&bytes);
        if let Some(want) = reference.digest()
            && want != digest
        {
            return Err(Attempt::Fatal(Error::BadBlob {
                image: image.into(),
                digest: want.into(),
                reason: format!("the registry sent a manifest with digest {digest}"),
            }));
        }
        let top_digest = digest.clone();
        if !is_index(&bytes) {
            return Ok(Resolved {
                client,
                reference,
                manifest: (bytes, digest),
                index: None,
                top_digest,
            });
        }
        let index = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| Attempt::Fatal(invalid(image, format!("index: {e}"))))?;
        let chosen = select_platform(&index).map_err(|available| {
            Attempt::Fatal(Error::Platform {
                image: image.into(),
                platform: node_platform().to_string(),
                available,
            })
        })?;
        let child = BlobRef::of(chosen);
        let by_digest = Reference::with_digest(
            reference.registry().into(),
            reference.repository().into(),
            child.digest.clone(),
        );
        let (m, _) = client
            .pull_manifest_raw(&by_digest, &auth, MANIFEST_TYPES)
            .await
            .map_err(|e| Attempt::Failed(Failure::of(&e), crate::error::chain(&e)))?;
        let m = m.to_vec();
        check(image, &child, m.len() as u64, &sha256_of(&m)).map_err(Attempt::Fatal)?;
        Ok(Resolved {
            client,
            reference,
            manifest: (m, child.digest),
            index: Some((bytes, digest)),
            top_digest,
        })
    }

    /// Stores an image whose manifest is in hand; the blobs come from `source`. Shared by
    /// pull and import. Nothing is visible until the record commits; when storing fails,
    /// the blobs and layers it had already stored are collected again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_image<S: Source>(
        &self,
        image: &str,
        source: &S,
        manifest: (Vec<u8>, String),
        index: Option<(Vec<u8>, String)>,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        let stored = self
            .store_committed(image, source, manifest, index, repo_tags, repo_digests, progress)
            .await;
        match stored {
            Ok((rec, gone)) => {
                if !gone.is_empty() {
                    debug!(images = ?gone, "images left without names removed");
                    self.collect_garbage().await?;
                }
                Ok(rec)
            }
            Err(e) => {
                if let Err(gc) = self.collect_garbage().await {
                    tracing::warn!(image.ref = %image, error = %gc, "collecting after a failed pull");
                }
                Err(e)
            }
        }
    }

    /// Stores and commits under the shared GC lock; returns the record and the ids of
    /// images left without names.
    #[allow(clippy::too_many_arguments)]
    async fn store_committed<S: Source>(
        &self,
        image: &str,
        source: &S,
        manifest: (Vec<u8>, String),
        index: Option<(Vec<u8>, String)>,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
        progress: &Progress,
    ) -> Result<(ImageRecord, Vec<String>), Error> {
        let _gc = self.inner.gc.read().await;
        let _changes = self.usage_changes();
        let (mbytes, mdigest) = manifest;
        let m = parse_manifest(image, &mbytes)?;
        let config = BlobRef::of(m.config());
        self.ensure_blob(image, source, &config, None).await?;
        let config_path = self.blob_path(&config.digest)?;
        let config_json =
            tokio::fs::read(&config_path).await.map_err(Error::io("read", &config_path))?;
        let cfg = ImageConfiguration::from_reader(&config_json[..])
            .map_err(|e| invalid(image, format!("config: {e}")))?;
        let layers = layer_records(image, &m, &cfg)?;
        self.check_sizes(image, &layers)?;
        let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            self.inner.limits.max_image_bytes,
        ));
        *progress.layers.lock().unwrap() = layers
            .iter()
            .map(|l| LayerProgress {
                digest: l.digest.clone(),
                total: l.size,
                done: 0,
                state: "waiting",
            })
            .collect();
        let jobs: Vec<_> =
            layers.iter().map(|l| self.ensure_layer(image, source, l, progress, &budget)).collect();
        let results: Vec<Result<(), Error>> =
            futures_util::stream::iter(jobs).buffer_unordered(PARALLEL_DOWNLOADS).collect().await;
        results.into_iter().collect::<Result<(), Error>>()?;
        self.put_blob(&mdigest, &mbytes).await?;
        if let Some((ibytes, idigest)) = &index {
            self.put_blob(idigest, ibytes).await?;
        }
        let rec = ImageRecord {
            id: config.digest.clone(),
            repo_tags,
            repo_digests,
            manifest: mdigest,
            manifest_size: mbytes.len() as u64,
            index: index.map(|(_, d)| d),
            config_size: config.size,
            layers,
            user: cfg.config().as_ref().and_then(|c| c.user().clone()).unwrap_or_default(),
            created: crate::clock::now_ns(),
        };
        let gone = self.commit(rec.clone()).await?;
        Ok((rec, gone))
    }

    /// Refuses, before anything is downloaded, an image whose manifest already declares
    /// more than the bounds allow (compressed sizes, which the uncompressed ones exceed).
    fn check_sizes(&self, image: &str, layers: &[LayerRecord]) -> Result<(), Error> {
        let limits = self.inner.limits;
        let too_large = |what: String, size, key, limit| Error::TooLarge {
            image: image.to_owned(),
            what,
            size,
            key,
            limit,
        };
        if let Some(l) = layers.iter().find(|l| l.size > limits.max_layer_bytes) {
            let what = format!("layer {}", l.digest);
            return Err(too_large(what, l.size, "image.max_layer_bytes", limits.max_layer_bytes));
        }
        let total: u64 = layers.iter().map(|l| l.size).sum();
        if total > limits.max_image_bytes {
            let what = "the layers".to_owned();
            return Err(too_large(what, total, "image.max_image_bytes", limits.max_image_bytes));
        }
        Ok(())
    }

    /// Makes the image visible: everything its record names reaches the disk before the
    /// record does. Returns the ids of images left without names.
    async fn commit(&self, rec: ImageRecord) -> Result<Vec<String>, Error> {
        let images_dir = self.inner.layout.images_dir();
        self.blocking(move |img| {
            let dir = std::fs::File::open(&images_dir).map_err(Error::io("open", &images_dir))?;
            rustix::fs::syncfs(&dir).map_err(|e| Error::io("sync", &images_dir)(e.into()))?;
            records::put_image(&img.inner.store, &rec).map_err(Error::from)
        })
        .await
    }

    /// Makes sure layer `l` is unpacked under its chain id (downloading its blob first).
    async fn ensure_layer<S: Source>(
        &self,
        image: &str,
        source: &S,
        l: &LayerRecord,
        progress: &Progress,
        budget: &std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<(), Error> {
        let _key = self.inner.keys.lock(&format!("layer:{}", l.chain_id)).await;
        let dest = self.layer_path(&l.chain_id);
        if dest.is_dir() {
            progress.set(&l.digest, |p| {
                p.state = "exists";
                p.done = p.total;
            });
            return Ok(());
        }
        let blob =
            BlobRef { digest: l.digest.clone(), size: l.size, media_type: l.media_type.clone() };
        self.ensure_blob(image, source, &blob, Some(progress)).await?;
        progress.set(&l.digest, |p| p.state = "unpacking");
        let _slot = self.inner.unpack_slots.acquire().await.expect("semaphore open");
        let blob_path = self.blob_path(&l.digest)?;
        let tmp = self.temp_path(&format!("layer-{}", &l.chain_id[7..]));
        let (image_s, l2, tmp2) = (image.to_owned(), l.clone(), tmp.clone());
        let limits = self.inner.limits;
        let bounds = super::unpack::Bounds {
            max_layer_bytes: limits.max_layer_bytes,
            max_entries: limits.max_layer_entries,
            image_budget: budget.clone(),
            max_image_bytes: limits.max_image_bytes,
            min_free_bytes: limits.min_free_bytes,
        };
        let started = std::time::Instant::now();
        let result = self
            .blocking(move |_| -> Result<(), Error> {
                std::fs::create_dir(&tmp2).map_err(Error::io("create", &tmp2))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&tmp2, std::fs::Permissions::from_mode(0o755))
                    .map_err(Error::io("chmod", &tmp2))?;
                let out =
                    super::unpack::unpack_layer(&blob_path, &tmp2, &bounds).map_err(|source| {
                        Error::Unpack { image: image_s.clone(), digest: l2.digest.clone(), source }
                    })?;
                if out.diff_id != l2.diff_id {
                    return Err(Error::BadBlob {
                        image: image_s,
                        digest: l2.digest.clone(),
                        reason: format!(
                            "uncompressed digest {} is not the config's diff id {}",
                            out.diff_id, l2.diff_id
                        ),
                    });
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dest).map_err(Error::io("rename", &dest))?;
        debug!(image.ref = %image, layer = %l.chain_id, ms = started.elapsed().as_millis() as u64, "layer unpacked");
        progress.set(&l.digest, |p| p.state = "done");
        Ok(())
    }

    /// Makes sure a blob is in the store: fetched to a temp file, checked against its
    /// digest and declared size, fsynced, renamed in.
    pub(crate) async fn ensure_blob<S: Source>(
        &self,
        image: &str,
        source: &S,
        blob: &BlobRef,
        progress: Option<&Progress>,
    ) -> Result<(), Error> {
        let dest = self.blob_path(&blob.digest)?;
        let _key = self.inner.keys.lock(&format!("blob:{}", blob.digest)).await;
        if dest.is_file() {
            return Ok(());
        }
        let bad = |reason: String| Error::BadBlob {
            image: image.into(),
            digest: blob.digest.clone(),
            reason,
        };
        let body = source.fetch(blob).await.map_err(|e| bad(format!("fetch: {e}")))?;
        let tmp = self.temp_path(&format!("blob-{}", &blob.digest[7..]));
        let writer = BlobWriter::create(&tmp).map_err(Error::io("create", &tmp))?;
        let result = match body {
            Body::File(path) => {
                let limit = blob.size;
                tokio::task::spawn_blocking(move || writer.copy_from(&path, limit))
                    .await
                    .expect("blob copy panicked")
            }
            Body::Stream(stream) => self.write_stream(writer, stream, blob, progress).await,
        };
        let checked = result
            .map_err(|e| bad(e.to_string()))
            .and_then(|(size, digest)| check(image, blob, size, &digest));
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &dest).map_err(Error::io("rename", &dest))?;
        Ok(())
    }

    /// Streams into a blocking writer thread (hashing and writing off the async workers).
    async fn write_stream(
        &self,
        writer: BlobWriter,
        mut stream: BoxStream<'static, std::io::Result<Bytes>>,
        blob: &BlobRef,
        progress: Option<&Progress>,
    ) -> std::io::Result<(u64, String)> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(32);
        let limit = blob.size;
        let task = tokio::task::spawn_blocking(move || writer.write_chunks(rx, limit));
        if let Some(p) = progress {
            p.set(&blob.digest, |l| l.state = "downloading");
        }
        let mut err = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    let n = c.len() as u64;
                    if tx.send(c).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    if let Some(p) = progress {
                        p.set(&blob.digest, |l| l.done += n);
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = task.await.expect("blob writer panicked");
        match err {
            Some(e) => Err(e),
            None => written,
        }
    }

    /// Writes small content (a manifest) into the store if it is not there yet.
    async fn put_blob(&self, digest: &str, data: &[u8]) -> Result<(), Error> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.temp_path(&format!("blob-{}", &digest[7..]));
        let data = data.to_vec();
        self.blocking(move |_| {
            let mut f = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
            f.write_all(&data).and_then(|()| f.sync_all()).map_err(Error::io("write", &tmp))?;
            std::fs::rename(&tmp, &dest).map_err(Error::io("rename", &dest))
        })
        .await
    }

    /// A fresh path in the store's temp dir.
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let mut r = [0u8; 4];
        getrandom::fill(&mut r).expect("random");
        self.inner.layout.image_tmp_dir().join(format!("{what}.{:08x}", u32::from_le_bytes(r)))
    }
}

struct Resolved {
    client: oci_client::Client,
    reference: Reference,
    manifest: (Vec<u8>, String),
    index: Option<(Vec<u8>, String)>,
    /// What the reference resolved to first (the index when there is one).
    top_digest: String,
}

enum Attempt {
    /// This endpoint failed; the next may do better.
    Failed(Failure, String),
    /// The image itself is wrong; no endpoint will do better.
    Fatal(Error),
}

/// Blobs from the endpoint that resolved the manifest; the client holds the token it got.
struct RegistrySource {
    client: oci_client::Client,
    reference: Reference,
}

impl Source for RegistrySource {
    async fn fetch(&self, blob: &BlobRef) -> Result<Body, String> {
        let s = self
            .client
            .pull_blob_stream(&self.reference, blob.digest.as_str())
            .await
            .map_err(|e| crate::error::chain(&e))?;
        Ok(Body::Stream(s.stream))
    }
}

/// A temp file being filled with a blob, hashing as it goes.
struct BlobWriter {
    file: std::fs::File,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self { file: std::fs::File::create(path)?, hasher: Sha256::new(), size: 0 })
    }

    fn add(&mut self, chunk: &[u8], limit: u64) -> std::io::Result<()> {
        self.size += chunk.len() as u64;
        if self.size > limit {
            return Err(std::io::Error::other(format!("more than the declared {limit} bytes")));
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk)
    }

    fn finish(self) -> std::io::Result<(u64, String)> {
        self.file.sync_all()?;
        Ok((self.size, super::digest_string(self.hasher)))
    }

    fn write_chunks(
        mut self,
        rx: std::sync::mpsc::Receiver<Bytes>,
        limit: u64,
    ) -> std::io::Result<(u64, String)> {
        for chunk in rx {
            self.add(&chunk, limit)?;
        }
        self.finish()
    }

    fn copy_from(mut self, path: &Path, limit: u64) -> std::io::Result<(u64, String)> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.add(&buf[..n], limit)?;
        }
        self.finish()
    }
}

/// A blob is used only when its size and digest are what its descriptor says.
fn check(image: &str, blob: &BlobRef, size: u64, digest: &str) -> Result<(), Error> {
    let bad = |reason| Error::BadBlob { image: image.into(), digest: blob.digest.clone(), reason };
    if size != blob.size {
        return Err(bad(format!("{size} bytes, but the descriptor says {}", blob.size)));
    }
    if digest != blob.digest {
        return Err(bad(format!("content has digest {digest}")));
    }
    Ok(())
}

fn invalid(image: &str, what: String) -> Error {
    Error::Invalid { image: image.into(), what }
}

/// An index (manifest list) rather than a manifest, by media type or shape.
/// The layers of a manifest with the diff ids its config lists and their chain ids.
fn layer_records(
    image: &str,
    m: &ImageManifest,
    cfg: &ImageConfiguration,
) -> Result<Vec<LayerRecord>, Error> {
    let diff_ids = cfg.rootfs().diff_ids();
    if diff_ids.len() != m.layers().len() {
        let what =
            format!("the config lists {} diff ids for {} layers", diff_ids.len(), m.layers().len());
        return Err(invalid(image, what));
    }
    let chains = chain_ids(diff_ids);
    Ok(m.layers()
        .iter()
        .zip(diff_ids.iter().zip(&chains))
        .map(|(d, (diff, chain))| LayerRecord {
            digest: d.digest().to_string(),
            media_type: d.media_type().to_string(),
            size: d.size(),
            diff_id: diff.clone(),
            chain_id: chain.clone(),
        })
        .collect())
}

pub(crate) fn is_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| {
        p.media_type.ends_with("image.index.v1+json")
            || p.media_type.ends_with("manifest.list.v2+json")
            || (p.media_type.is_empty() && p.manifests.is_some())
    })
}

pub(crate) fn parse_manifest(image: &str, bytes: &[u8]) -> Result<ImageManifest, Error> {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
    }
    match serde_json::from_slice::<Version>(bytes) {
        Ok(v) if v.schema_version == 2 => {}
        Ok(v) => {
            return Err(invalid(
                image,
                format!("manifest schema version {} is not supported (only 2)", v.schema_version),
            ));
        }
        Err(e) => return Err(invalid(image, format!("manifest: {e}"))),
    }
    let m =
        ImageManifest::from_reader(bytes).map_err(|e| invalid(image, format!("manifest: {e}")))?;
    for d in m.layers().iter().chain([m.config()]) {
        if sha256_hex(d.digest().as_ref()).is_none() {
            return Err(invalid(image, format!("digest {} is not sha256:<64 hex>", d.digest())));
        }
    }
    Ok(m)
}

/// The node's platform as OCI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
    pub variant: Option<&'static str>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

pub fn node_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform { os: "linux", arch, variant }
}

/// The index entry for the node's platform: same OS and architecture, the same variant
/// preferred, then one without a variant, then any. Err lists what the index has.
pub fn select_platform(index: &ImageIndex) -> Result<&Descriptor, String> {
    select_for(index, node_platform())
}

fn select_for(index: &ImageIndex, want: Platform) -> Result<&Descriptor, String> {
    let fits = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == want.os && p.architecture().to_string() == want.arch
        })
    };
    let variant = |d: &Descriptor| d.platform().as_ref().and_then(|p| p.variant().clone());
    let candidates: Vec<&Descriptor> = index.manifests().iter().filter(fits).collect();
    let best = candidates
        .iter()
        .find(|d| variant(d).as_deref() == want.variant)
        .or_else(|| candidates.iter().find(|d| variant(d).is_none()))
        .or_else(|| candidates.first());
    best.copied().ok_or_else(|| {
        let have: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| match p.variant() {
                Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
                None => format!("{}/{}", p.os(), p.architecture()),
            })
            .collect();
        if have.is_empty() { "no platforms".into() } else { have.join(", ") }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = (*v).into();
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", format!("{i}").repeat(64)),
                    "size": 100 + i,
                    "platform": p,
                })
            })
            .collect();
        let v = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        ImageIndex::from_reader(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn platform_selection() {
        let amd64 = Platform { os: "linux", arch: "amd64", variant: None };
        let arm64 = Platform { os: "linux", arch: "arm64", variant: Some("v8") };
        let i = index(&[
            ("linux", "arm64", Some("v8")),
            ("linux", "amd64", None),
            ("unknown", "unknown", None),
        ]);
        assert_eq!(select_for(&i, amd64).unwrap().size(), 101);
        assert_eq!(select_for(&i, arm64).unwrap().size(), 100);
        let arm = Platform { os: "linux", arch: "arm", variant: Some("v7") };
        let i2 = index(&[("linux", "arm", Some("v6")), ("linux", "arm", Some("v7"))]);
        assert_eq!(select_for(&i2, arm).unwrap().size(), 101);
        let only_arm = index(&[("linux", "arm64", Some("v8")), ("windows", "amd64", None)]);
        let err = select_for(&only_arm, amd64).unwrap_err();
        assert_eq!(err, "linux/arm64/v8, windows/amd64");
    }

    #[test]
    fn indexes_and_manifests_are_told_apart() {
        assert!(is_index(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#));
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#));
        assert!(
            parse_manifest("x", br#"{"schemaVersion":1,"fsLayers":[]}"#)
                .unwrap_err()
                .to_string()
                .contains("schema version 1")
        );
    }
}
