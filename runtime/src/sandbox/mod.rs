//! Pod sandboxes: the spec podbay runs, the record it keeps, and the state machine.
//!
//! ```text
//!  run() ── every step done, record committed ──▶ ┌───────┐
//!                                                 │ Ready │
//!                                                 └───┬───┘
//!                       stop(), or the supervisor     │
//!                       exits on its own              ▼
//!  ┌─────────┐   stop() finishes the teardown   ┌──────────┐   remove()
//!  │ Unknown │ ───────────────────────────────▶ │ NotReady │ ──────────▶ (gone)
//!  └─────────┘                                  └──────────┘
//!       ▲  a teardown step failed (stop() or a failed run's undo); a later stop() retries
//! ```
//! Unknown is reported to CRI as NOTREADY. After a reboot (the run dir is empty) every
//! record is NotReady.
//!
//! [`Sandboxes`] owns every sandbox in memory and its record in the state database; it
//! uses the pod network ([`PodNetwork`]) for leases and hostPorts and the supervisor
//! spawner for the pod's processes. It knows nothing of containers: the runtime stops and
//! removes a pod's containers before it asks this part to stop or remove the pod.

pub mod files;
pub mod mounts;
mod records;
mod recover;
mod remove;
mod run;
mod status;
mod stop;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use status::SandboxFilter;

use crate::ErrorKind;
use crate::failpoint::{Failpoints, Injected};
use crate::ids::{Lookup, SandboxId};
use crate::layout::{Layout, NsKind};
use crate::network::{Attachment, LivePod, PodNetwork, PortMapping};
use crate::steps::StepHistograms;
use crate::store::{self, Store};
use crate::supervisor::{Identity, Spawner};
use crate::undo::WithCleanup;

/// The pod's identity as kubelet gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

impl PodMetadata {
    /// The key under which a pod attempt is reserved (containerd's sandbox name format).
    pub fn name_key(&self) -> String {
        format!("{}_{}_{}_{}", self.name, self.namespace, self.uid, self.attempt)
    }
}

/// Whose namespace a pod uses (CRI's NamespaceMode, without the CRI types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// The pod's own namespace, shared by its containers.
    Pod,
    /// Each container its own (PID only).
    Container,
    /// The node's namespace.
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceSpec {
    pub network: NamespaceMode,
    pub ipc: NamespaceMode,
    pub pid: NamespaceMode,
    /// The pod's own user namespace (CRI userns_options mode POD); none: the node's.
    #[serde(default)]
    pub user: Option<UsernsSpec>,
}

impl Default for NamespaceSpec {
    fn default() -> Self {
        Self {
            network: NamespaceMode::Pod,
            ipc: NamespaceMode::Pod,
            pid: NamespaceMode::Pod,
            user: None,
        }
    }
}

/// One range of a user namespace's uid or gid map: `length` ids from `container_id` in
/// the pod are `host_id`… on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// A pod's user namespace: the uid and gid maps kubelet chose for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsernsSpec {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl UsernsSpec {
    /// The node's uid for a uid in the pod.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        to_host(&self.uids, id)
    }

    /// The node's gid for a gid in the pod.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        to_host(&self.gids, id)
    }
}

fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(r.container_id)?;
        (offset < r.length).then(|| r.host_id + offset)
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsSpec {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Everything podbay needs to run a sandbox, validated at the CRI edge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxSpec {
    pub metadata: PodMetadata,
    pub hostname: String,
    pub log_directory: Option<PathBuf>,
    pub dns: Option<DnsSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub namespaces: NamespaceSpec,
    pub cgroup_parent: Option<String>,
    pub runtime_handler: String,
    /// hostPorts (CRI PortMapping).
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Namespaced sysctls, set in the pod's network and IPC namespaces (keys with dots).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
    Unknown,
}

impl SandboxState {
    /// Whether the sandbox can take new containers.
    pub fn is_ready(self) -> bool {
        self == SandboxState::Ready
    }

    /// Whether stop() has work to do (it is still safe, and a no-op, otherwise).
    pub fn needs_stop(self) -> bool {
        self != SandboxState::NotReady
    }
}

/// What podbay keeps about a sandbox, in the state database.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub spec: SandboxSpec,
    pub state: SandboxState,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    pub pod_dir: PathBuf,
    /// Namespaces the pod owns, pinned by bind mounts.
    pub namespaces: BTreeMap<NsKind, PathBuf>,
    /// The pod's /dev/shm: a tmpfs in the pod dir, or the node's for IPC NODE.
    pub shm: PathBuf,
    pub supervisor: Option<Identity>,
    /// PID 1 of the pod's PID namespace (PID mode POD).
    pub pod_init: Option<Identity>,
    /// The pod's IP lease and veth while it has them (not for hostNetwork pods, and gone
    /// once the sandbox is stopped).
    #[serde(default)]
    pub network: Option<Attachment>,
}

impl SandboxRecord {
    /// The pod as the pod network lists it, while it holds a network.
    fn live_pod(&self) -> Option<LivePod> {
        Some(LivePod {
            id: self.id.clone(),
            namespace: self.spec.metadata.namespace.clone(),
            name: self.spec.metadata.name.clone(),
            attachment: self.network.clone()?,
            ports: self.spec.port_mappings.clone(),
        })
    }
}

/// One sandbox in memory: its record, and the lock that serialises stop and remove.
pub struct Sandbox {
    record: Mutex<SandboxRecord>,
    op: tokio::sync::Mutex<()>,
}

impl Sandbox {
    fn new(record: SandboxRecord) -> Self {
        Self { record: Mutex::new(record), op: tokio::sync::Mutex::new(()) }
    }

    pub fn id(&self) -> SandboxId {
        self.record.lock().expect("sandbox record lock").id.clone()
    }

    pub fn snapshot(&self) -> SandboxRecord {
        self.record.lock().expect("sandbox record lock").clone()
    }

    /// Held while the sandbox is stopped or removed (and while its containers are).
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.op.lock().await
    }

    fn update(&self, f: impl FnOnce(&mut SandboxRecord)) -> SandboxRecord {
        let mut rec = self.record.lock().expect("sandbox record lock");
        f(&mut rec);
        rec.clone()
    }
}

/// What the sandboxes part needs from the daemon's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long StopPodSandbox waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Size of each pod's /dev/shm tmpfs, in bytes.
    pub shm_size: u64,
    /// Where the node's hosts and resolv.conf live (normally /etc).
    pub host_etc: PathBuf,
    /// The pods and containers dirs when they are mount points of their own (`crate::view`).
    pub view_parents: Vec<PathBuf>,
}

/// Every sandbox of the node. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxes {
    inner: Arc<Inner>,
}

struct Inner {
    map: RwLock<HashMap<SandboxId, Arc<Sandbox>>>,
    /// Pod name key → lock held while a RunPodSandbox for that pod attempt is in flight.
    reservations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    store: Arc<Store>,
    network: PodNetwork,
    spawner: Spawner,
    layout: Layout,
    failpoints: Failpoints,
    settings: Settings,
    /// Where a supervisor's unexpected exit is announced (the runtime kills what is left of
    /// the pod's containers).
    exits: tokio::sync::mpsc::UnboundedSender<SandboxId>,
    steps: StepHistograms,
}

/// What the sandboxes part is made of.
pub(crate) struct Parts {
    pub store: Arc<Store>,
    pub network: PodNetwork,
    pub spawner: Spawner,
    pub layout: Layout,
    pub failpoints: Failpoints,
    pub settings: Settings,
    pub exits: tokio::sync::mpsc::UnboundedSender<SandboxId>,
    pub steps: StepHistograms,
}

impl Sandboxes {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts { store, network, spawner, layout, failpoints, settings, exits, steps } = parts;
        let inner = Inner {
            map: RwLock::new(HashMap::new()),
            reservations: Mutex::new(HashMap::new()),
            store,
            network,
            spawner,
            layout,
            failpoints,
            settings,
            exits,
            steps,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Starts the supervisor spawner now, so the first pod does not pay for it.
    pub(crate) async fn warm_up(&self) -> Result<(), Error> {
        Ok(self.inner.spawner.warm_up().await?)
    }

    pub fn get(&self, id: &SandboxId) -> Option<Arc<Sandbox>> {
        self.inner.map.read().expect("sandboxes lock").get(id).cloned()
    }

    /// Finds a sandbox by full id or unique id prefix.
    pub fn resolve(&self, id: &str) -> Result<Arc<Sandbox>, Error> {
        let map = self.inner.map.read().expect("sandboxes lock");
        crate::ids::resolve(&map, id).map_err(|e| match e {
            Lookup::NotFound => Error::NotFound { id: id.into() },
            Lookup::Ambiguous => Error::Ambiguous { prefix: id.into() },
        })
    }

    /// Like [`Sandboxes::resolve`], with an unknown sandbox as `None` (stop and remove are
    /// idempotent).
    pub fn find(&self, id: &str) -> Result<Option<Arc<Sandbox>>, Error> {
        match self.resolve(id) {
            Ok(s) => Ok(Some(s)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the sandbox is still known (not removed meanwhile).
    pub fn contains(&self, id: &SandboxId) -> bool {
        self.inner.map.read().expect("sandboxes lock").contains_key(id)
    }

    /// The sandboxes whose supervisor runs.
    pub fn ready(&self) -> std::collections::HashSet<SandboxId> {
        let map = self.inner.map.read().expect("sandboxes lock");
        map.iter()
            .filter(|(_, s)| s.snapshot().state.is_ready())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every pod that holds a network now.
    pub fn live_pods(&self) -> Vec<LivePod> {
        let map = self.inner.map.read().expect("sandboxes lock");
        map.values()
            .filter_map(|s| s.record.lock().expect("sandbox record lock").live_pod())
            .collect()
    }

    fn insert(&self, sandbox: Arc<Sandbox>) {
        let id = sandbox.id();
        self.inner.map.write().expect("sandboxes lock").insert(id, sandbox);
    }

    /// Writes a record (and its lease; `released` is a lease it gives back) to the state
    /// database off the async worker threads.
    async fn persist(
        &self,
        rec: SandboxRecord,
        released: Option<std::net::Ipv4Addr>,
    ) -> Result<(), store::Error> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || records::put(&store, &rec, released))
            .await
            .expect("state store task panicked")
    }

    /// Deletes a record, its name and its lease from the state database off the async
    /// worker threads.
    async fn unpersist(&self, rec: SandboxRecord) -> Result<(), store::Error> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || records::delete(&store, &rec))
            .await
            .expect("state store task panicked")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox {id} not found")]
    NotFound { id: String },
    #[error("pod {name} already has sandbox {id}, which is not ready; remove it first")]
    NameTaken { name: String, id: SandboxId },
    #[error("sandbox id prefix {prefix:?} matches more than one sandbox")]
    Ambiguous { prefix: String },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("write {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Supervisor(#[from] crate::supervisor::Error),
    #[error("pin {ns} namespace at {path}: {source}")]
    Pin { ns: &'static str, path: PathBuf, source: nix::Error },
    #[error("mount pod /dev/shm at {path}: {source}")]
    MountShm { path: PathBuf, source: nix::Error },
    #[error("bind the pod dir {path} onto itself: {source}")]
    BindPodDir { path: PathBuf, source: nix::Error },
    #[error("unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("remove {path}: {source}")]
    RemoveDir { path: PathBuf, source: std::io::Error },
    #[error("namespace_options.userns_options: {0}")]
    Userns(&'static str),
    #[error(transparent)]
    Injected(#[from] Injected),
    #[error(transparent)]
    Network(#[from] crate::network::Error),
    #[error("{cause}; cleaning up also failed: {}", crate::error::join(cleanup))]
    Undo { cause: Box<Error>, cleanup: Vec<Error> },
    #[error("teardown of sandbox {id}: {}", crate::error::join(errors))]
    Teardown { id: SandboxId, errors: Vec<Error> },
}

impl WithCleanup for Error {
    fn with_cleanup(cause: Self, cleanup: Vec<Self>) -> Self {
        Error::Undo { cause: Box::new(cause), cleanup }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Ambiguous { .. } | Error::Userns(_) => ErrorKind::InvalidArgument,
            Error::NameTaken { .. } => ErrorKind::AlreadyExists,
            Error::Supervisor(e) => e.kind(),
            Error::Network(e) => e.kind(),
            Error::Store(e) => e.kind(),
            Error::CreateDir { source, .. }
            | Error::WriteFile { source, .. }
            | Error::RemoveDir { source, .. } => crate::error::io_kind(source),
            Error::Undo { cause, .. } => cause.kind(),
            _ => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record for store and filter tests.
    pub(crate) fn record(name: &str) -> SandboxRecord {
        SandboxRecord {
            id: SandboxId::generate(),
            spec: SandboxSpec {
                metadata: PodMetadata {
                    name: name.into(),
                    namespace: "default".into(),
                    uid: format!("uid-{name}"),
                    attempt: 0,
                },
                hostname: name.into(),
                log_directory: None,
                dns: None,
                labels: BTreeMap::from([("app".into(), name.into())]),
                annotations: BTreeMap::new(),
                namespaces: NamespaceSpec::default(),
                cgroup_parent: None,
                runtime_handler: String::new(),
                port_mappings: Vec::new(),
                sysctls: Default::default(),
            },
            state: SandboxState::Ready,
            created_at: 1,
            pod_dir: PathBuf::from("/nonexistent"),
            namespaces: BTreeMap::new(),
            shm: PathBuf::from("/dev/shm"),
            supervisor: None,
            pod_init: None,
            network: None,
        }
    }

    #[test]
    fn name_key_has_all_parts() {
        let r = record("web");
        assert_eq!(r.spec.metadata.name_key(), "web_default_uid-web_0");
    }

    #[test]
    fn state_predicates() {
        assert!(SandboxState::Ready.is_ready());
        assert!(!SandboxState::Unknown.is_ready());
        assert!(SandboxState::Unknown.needs_stop());
        assert!(!SandboxState::NotReady.needs_stop());
    }
}
