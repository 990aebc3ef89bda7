//! App containers in pods: the spec podbay runs, the record it keeps, the state machine.
//!
//! ```text
//!  create() ──▶ ┌─────────┐  start()  ┌─────────┐  the process exits,  ┌────────┐
//!               │ Created │ ────────▶ │ Running │ ───────────────────▶ │ Exited │
//!               └─────────┘           └─────────┘  or stop()           └───┬────┘
//!                    │ stop() (never started)                              │ remove()
//!                    └──────────────────────────────────────────────▶ Exited ──▶ (gone)
//!  Unknown: the pod's supervisor is gone and what became of the process is not known;
//!  stop() and remove() finish it.
//! ```
//! The pod's supervisor creates, starts and reaps the processes (libcontainer); the
//! daemon keeps the record in the state database and learns exits from the supervisor.
//!
//! [`Containers`] owns every container in memory and its record; it mounts rootfs through
//! the image part and reaches each pod's supervisor at the pod dir the layout names. It
//! reads sandbox records the runtime hands it, and never changes a sandbox.

mod create;
mod exec;
mod exits;
mod log;
mod node;
mod records;
mod remove;
pub mod seccomp;
pub mod spec;
mod start;
mod stats;
mod status;
mod stop;
mod update;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

pub use exec::ExecOutput;
pub use stats::{ContainerStats, PodStats};
pub use status::ContainerFilter;

use crate::ErrorKind;
use crate::failpoint::{Failpoints, Injected};
use crate::ids::{ContainerId, Lookup, SandboxId};
use crate::image::Images;
use crate::layout::{Layout, PodLayout};
use crate::steps::StepHistograms;
use crate::store::Store;
use crate::supervisor::Identity;
use crate::undo::WithCleanup;
use podbay_proto::supervisor::v1::NarrowView;

/// The container's identity as kubelet gives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

/// Mount propagation of a bind mount (CRI MountPropagation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountSpec {
    pub container_path: String,
    pub host_path: PathBuf,
    pub readonly: bool,
    /// Read-only all the way down (submounts too; the kernel's `mount_setattr` with
    /// `AT_RECURSIVE`). Without it only the top mount is read-only, as with containerd.
    #[serde(default)]
    pub recursive_read_only: bool,
    pub propagation: Propagation,
    /// The maps the mount is shown through (CRI uid_mappings/gid_mappings): idmapped with
    /// the pod's user namespace, which must have these maps.
    #[serde(default)]
    pub idmap: Option<crate::sandbox::UsernsSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSpec {
    pub container_path: String,
    pub host_path: PathBuf,
    pub permissions: String,
}

/// Resource limits (CRI LinuxContainerResources); zero means unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit: i64,
    pub memory_swap_limit: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// Page size (`2MB`, `1GB`) → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 files set as given (`pids.max`, …).
    pub unified: BTreeMap<String, String>,
}

/// Whose PID namespace a container uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PidMode {
    #[default]
    Container,
    Pod,
    Node,
    /// Another container's (CRI NamespaceMode TARGET).
    Target(ContainerId),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeccompProfile {
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A JSON profile on the node.
    Localhost(PathBuf),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Security {
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_username: String,
    pub supplemental_groups: Vec<u32>,
    /// SupplementalGroupsPolicy Strict: only the requested groups, not also those the
    /// image's /etc/group gives the user (Merge, the default).
    #[serde(default)]
    pub strict_supplemental_groups: bool,
    pub readonly_rootfs: bool,
    pub no_new_privs: bool,
    /// Empty: the defaults (none when privileged).
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: SeccompProfile,
    pub pid_mode: PidMode,
    /// The user namespace the request names (CRI userns_options); it must be the pod's.
    #[serde(default)]
    pub userns: UsernsRequest,
}

/// A container's userns_options: kubelet repeats the pod's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UsernsRequest {
    /// Not given: the pod's, whichever it is.
    #[default]
    Unset,
    /// Mode NODE: the pod must not have its own.
    Node,
    /// Mode POD with these maps: they must be the pod's.
    Pod(crate::sandbox::UsernsSpec),
}

impl UsernsRequest {
    /// Whether the request fits a pod with this user namespace.
    pub fn fits(&self, pod: Option<&crate::sandbox::UsernsSpec>) -> bool {
        match self {
            UsernsRequest::Unset => true,
            UsernsRequest::Node => pod.is_none(),
            UsernsRequest::Pod(maps) => pod == Some(maps),
        }
    }
}

/// Everything podbay needs to create a container, validated at the CRI edge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    pub metadata: ContainerMetadata,
    /// The image as the request names it.
    pub image: String,
    /// The image as the user wrote it in the pod spec (kubelet's `user_specified_image`),
    /// echoed back in the container's status.
    #[serde(default)]
    pub user_specified_image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<DeviceSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the sandbox's log directory.
    pub log_path: String,
    pub stdin: bool,
    /// CRI stdin_once: stdin closes when the first attach that used it detaches.
    #[serde(default)]
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: Resources,
    pub security: Security,
}

impl ContainerSpec {
    /// Whether a mount propagates back to the node (CRI Bidirectional).
    pub fn has_bidirectional_mount(&self) -> bool {
        self.mounts.iter().any(|m| m.propagation == Propagation::Bidirectional)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    pub fn can_start(self) -> bool {
        self == ContainerState::Created
    }

    /// Whether the container may still have processes.
    pub fn may_run(self) -> bool {
        self != ContainerState::Exited
    }
}

/// Why a container exited, as CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    Completed,
    Error,
    OomKilled,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OomKilled => "OOMKilled",
        }
    }
}

/// What podbay keeps about a container, in the state database.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    pub id: ContainerId,
    pub sandbox_id: SandboxId,
    pub spec: ContainerSpec,
    /// The image id (config digest) and the reference reported as image_ref.
    pub image_id: String,
    pub image_ref: String,
    pub state: ContainerState,
    /// Nanoseconds since the Unix epoch; 0 when not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: Option<ExitReason>,
    pub message: String,
    pub init: Option<Identity>,
    /// The full log path (sandbox log directory + the container's log path); empty: none.
    pub log_path: PathBuf,
    /// cgroupfs path of the container (`<pod cgroup>/<id>`).
    pub cgroup: String,
    /// Signal that stops it (the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: i32,
    /// The user the process runs as, resolved at create (none in records from before).
    #[serde(default)]
    pub user: Option<spec::User>,
    /// The oom_score_adj applied at create (see [`spec::applied_oom_score_adj`]).
    #[serde(default)]
    pub oom_score_adj: Option<i64>,
}

impl ContainerRecord {
    /// The key under which a container attempt is reserved in its pod.
    pub fn name_key(&self) -> String {
        name_key(&self.sandbox_id, &self.spec.metadata)
    }
}

pub fn name_key(sandbox: &SandboxId, m: &ContainerMetadata) -> String {
    format!("{}_{}_{}", m.name, sandbox, m.attempt)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {id} not found")]
    NotFound { id: String },
    #[error("container id prefix {prefix:?} matches more than one container")]
    Ambiguous { prefix: String },
    #[error("sandbox {id} not found")]
    SandboxNotFound { id: String },
    #[error("sandbox {id} is not ready")]
    SandboxNotReady { id: SandboxId },
    #[error("container name {name:?} (attempt {attempt}) is already used by {id} in this pod")]
    NameTaken { name: String, attempt: u32, id: ContainerId },
    #[error("container name {name:?} is being created in this pod by another request")]
    NameBusy { name: String },
    #[error("image {image:?} not found; pull it first")]
    ImageNotFound { image: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: {reason}")]
    Precondition { field: String, reason: String },
    #[error("container {id} is {state:?}; {what}")]
    State { id: ContainerId, state: ContainerState, what: &'static str },
    #[error("container {id}: {source}")]
    Supervisor { id: ContainerId, source: crate::supervisor::Error },
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::Error),
    #[error("save the OCI spec {path}: {source}")]
    SaveSpec { path: PathBuf, source: oci_spec::OciSpecError },
    #[error("exec in container {id} timed out after {timeout:?}")]
    ExecTimeout { id: ContainerId, timeout: std::time::Duration },
    #[error(transparent)]
    Injected(#[from] Injected),
    #[error("{cause}; cleaning up also failed: {}", crate::error::join(cleanup))]
    Undo { cause: Box<Error>, cleanup: Vec<Error> },
}

impl WithCleanup for Error {
    fn with_cleanup(cause: Self, cleanup: Vec<Self>) -> Self {
        Error::Undo { cause: Box::new(cause), cleanup }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. }
            | Error::SandboxNotFound { .. }
            | Error::ImageNotFound { .. } => ErrorKind::NotFound,
            Error::Ambiguous { .. } | Error::Invalid { .. } => ErrorKind::InvalidArgument,
            Error::NameTaken { .. } | Error::NameBusy { .. } => ErrorKind::AlreadyExists,
            Error::SandboxNotReady { .. } | Error::State { .. } | Error::Precondition { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::ExecTimeout { .. } => ErrorKind::DeadlineExceeded,
            Error::Supervisor { source, .. } => source.kind(),
            Error::Image(e) => e.kind(),
            Error::Store(e) => e.kind(),
            Error::Io { source, .. } => crate::error::io_kind(source),
            Error::SaveSpec { source: oci_spec::OciSpecError::Io(e), .. } => {
                crate::error::io_kind(e)
            }
            Error::Undo { cause, .. } => cause.kind(),
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Invalid { field: field.into(), reason: reason.to_string() }
    }

    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }

    /// A supervisor call about container `id` failed.
    pub(crate) fn supervisor(id: &ContainerId) -> impl FnOnce(crate::supervisor::Error) -> Self {
        let id = id.clone();
        move |source| Error::Supervisor { id, source }
    }
}

/// What happened to a container (the CRI's GetContainerEvents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// A container event: what, when (Unix nanoseconds) and the record right after it.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub kind: EventKind,
    pub at: i64,
    pub record: ContainerRecord,
}

/// Events waiting for a subscriber that has not read them; one that falls further behind
/// is told it lagged (and kubelet re-lists), so no pod operation ever waits for it.
const EVENT_BACKLOG: usize = 4096;

/// One container in memory: its record, and the lock that serialises start, stop and
/// remove.
pub struct Container {
    events: broadcast::Sender<ContainerEvent>,
    record: Mutex<ContainerRecord>,
    op: tokio::sync::Mutex<()>,
    /// Found running at daemon start although its record said Created: a StartContainer
    /// the crash interrupted, which kubelet will retry; that retry succeeds.
    start_interrupted: std::sync::atomic::AtomicBool,
}

impl Container {
    fn new(record: ContainerRecord, events: broadcast::Sender<ContainerEvent>) -> Self {
        Self {
            events,
            record: Mutex::new(record),
            op: tokio::sync::Mutex::new(()),
            start_interrupted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn snapshot(&self) -> ContainerRecord {
        self.record.lock().expect("container record lock").clone()
    }

    /// Changes the record; a change of state into Running or Exited is an event (sent
    /// under the record's lock, so one container's events are in order).
    fn update(&self, f: impl FnOnce(&mut ContainerRecord)) -> ContainerRecord {
        let mut rec = self.record.lock().expect("container record lock");
        let before = rec.state;
        f(&mut rec);
        let kind = match rec.state {
            s if s == before => None,
            ContainerState::Running => Some(EventKind::Started),
            ContainerState::Exited => Some(EventKind::Stopped),
            _ => None,
        };
        if let Some(kind) = kind {
            self.emit(kind, &rec);
        }
        rec.clone()
    }

    fn emit(&self, kind: EventKind, rec: &ContainerRecord) {
        let event = ContainerEvent { kind, at: crate::clock::now_ns(), record: rec.clone() };
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    fn sandbox_id(&self) -> SandboxId {
        self.record.lock().expect("container record lock").sandbox_id.clone()
    }
}

/// Every container of the node. Cheap to clone.
#[derive(Clone)]
pub struct Containers {
    inner: Arc<Inner>,
}

struct Inner {
    map: RwLock<HashMap<ContainerId, Arc<Container>>>,
    /// Container name keys with a CreateContainer in flight.
    creating: Mutex<HashSet<String>>,
    store: Arc<Store>,
    images: Images,
    layout: Layout,
    node: spec::NodeFacts,
    failpoints: Failpoints,
    /// Pods already told (at WARN) that an oom_score_adj was raised.
    oom_warned: Mutex<HashSet<SandboxId>>,
    events: broadcast::Sender<ContainerEvent>,
    steps: StepHistograms,
    /// Whether the pods and containers dirs are mount points of their own, so that
    /// libcontainer can run where they hold only what it needs (see `crate::view`).
    narrow_views: bool,
}

impl Containers {
    pub(crate) fn new(
        store: Arc<Store>,
        images: Images,
        layout: Layout,
        failpoints: Failpoints,
        steps: StepHistograms,
        narrow_views: bool,
    ) -> Self {
        let mut node = node::facts();
        node::shared_dirs(&layout, &mut node);
        let inner = Inner {
            map: RwLock::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            store,
            images,
            layout,
            node,
            failpoints,
            oom_warned: Mutex::new(HashSet::new()),
            events: broadcast::channel(EVENT_BACKLOG).0,
            steps,
            narrow_views,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The directories libcontainer's child narrows for a container of `pod` (see
    /// `crate::view`): the pod's dir and the container's stay. None without the mount
    /// points, and for a container with a Bidirectional mount (its mounts must reach the
    /// node).
    fn narrow_views(&self, pod: &SandboxId, id: &str, bidirectional: bool) -> Vec<NarrowView> {
        if !self.inner.narrow_views || bidirectional {
            return Vec::new();
        }
        let layout = &self.inner.layout;
        let view = |parent: PathBuf, keep: PathBuf| NarrowView {
            parent: parent.to_string_lossy().into_owned(),
            keep: keep.to_string_lossy().into_owned(),
        };
        vec![
            view(layout.pods_dir(), layout.pod(pod).dir().to_path_buf()),
            view(layout.containers_dir(), layout.container(id).dir().to_path_buf()),
        ]
    }

    /// Every container event from now on, in order per container.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.inner.events.subscribe()
    }

    fn container(&self, rec: ContainerRecord) -> Container {
        Container::new(rec, self.inner.events.clone())
    }

    /// What podbay found out about the node at start (capabilities, cgroups, devices).
    pub fn node(&self) -> &spec::NodeFacts {
        &self.inner.node
    }

    /// Finds a container by full id or unique id prefix.
    pub fn resolve(&self, id: &str) -> Result<Arc<Container>, Error> {
        let map = self.inner.map.read().expect("containers lock");
        crate::ids::resolve(&map, id).map_err(|e| match e {
            Lookup::NotFound => Error::NotFound { id: id.into() },
            Lookup::Ambiguous => Error::Ambiguous { prefix: id.into() },
        })
    }

    fn contains(&self, id: &ContainerId) -> bool {
        self.inner.map.read().expect("containers lock").contains_key(id)
    }

    /// Every container of a sandbox.
    fn of_pod(&self, sandbox: &SandboxId) -> Vec<Arc<Container>> {
        let map = self.inner.map.read().expect("containers lock");
        map.values().filter(|c| c.sandbox_id() == *sandbox).cloned().collect()
    }

    /// The pod dir of a container's sandbox (its supervisor's socket), while it exists.
    fn pod_of(&self, sandbox: &SandboxId) -> Result<PodLayout, Error> {
        let pod = self.inner.layout.pod(sandbox);
        match pod.dir().is_dir() {
            true => Ok(pod),
            false => Err(Error::SandboxNotReady { id: sandbox.clone() }),
        }
    }

    async fn persist(&self, rec: &ContainerRecord) -> Result<(), Error> {
        self.store_record(rec, records::put).await
    }

    /// Records a container's start without an fsync: after a crash that loses it, the
    /// record says Created, and recovery asks the supervisor, which knows the start and
    /// its time, and records Running again (`exits.rs`).
    async fn persist_started(&self, rec: &ContainerRecord) -> Result<(), Error> {
        self.store_record(rec, records::put_lazily).await
    }

    async fn store_record(
        &self,
        rec: &ContainerRecord,
        put: fn(&Store, &ContainerRecord) -> Result<(), crate::store::Error>,
    ) -> Result<(), Error> {
        let (store, rec) = (self.inner.store.clone(), rec.clone());
        tokio::task::spawn_blocking(move || put(&store, &rec))
            .await
            .expect("state store task panicked")
            .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_predicates() {
        assert!(ContainerState::Created.can_start());
        assert!(!ContainerState::Running.can_start());
        assert!(!ContainerState::Exited.may_run());
        assert!(ContainerState::Unknown.may_run());
    }
}
