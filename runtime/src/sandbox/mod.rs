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

pub mod files;
pub mod mounts;
mod recover;
mod remove;
mod run;
mod status;
mod stop;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use status::{SandboxFilter, SandboxView};

use crate::ErrorKind;
use crate::failpoint::Injected;
use crate::ids::SandboxId;
use crate::layout::NsKind;
use crate::network::{PodNetwork, PortMapping};
use crate::supervisor::Identity;

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
}

impl Default for NamespaceSpec {
    fn default() -> Self {
        Self { network: NamespaceMode::Pod, ipc: NamespaceMode::Pod, pid: NamespaceMode::Pod }
    }
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
    pub network: Option<PodNetwork>,
}

/// A sandbox as the runtime holds it in memory.
pub(crate) struct Sandbox {
    pub(crate) record: std::sync::Mutex<SandboxRecord>,
    /// Serialises stop and remove of this sandbox.
    pub(crate) op: tokio::sync::Mutex<()>,
}

impl Sandbox {
    pub(crate) fn new(record: SandboxRecord) -> Self {
        Self { record: std::sync::Mutex::new(record), op: tokio::sync::Mutex::new(()) }
    }

    pub(crate) fn snapshot(&self) -> SandboxRecord {
        self.record.lock().expect("sandbox record lock").clone()
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
    #[error("unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("remove {path}: {source}")]
    RemoveDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Injected(#[from] Injected),
    #[error(transparent)]
    Network(#[from] crate::network::Error),
    #[error("remove the pod's containers: {0}")]
    Containers(Box<crate::container::Error>),
    #[error("{cause}; cleaning up also failed: {}", join(cleanup))]
    Undo { cause: Box<Error>, cleanup: Vec<Error> },
    #[error("teardown of sandbox {id}: {}", join(errors))]
    Teardown { id: SandboxId, errors: Vec<Error> },
}

fn join(errors: &[Error]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Ambiguous { .. } => ErrorKind::InvalidArgument,
            Error::NameTaken { .. } => ErrorKind::AlreadyExists,
            Error::Supervisor(e) => e.kind(),
            Error::Network(e) => e.kind(),
            Error::Containers(e) => e.kind(),
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
