//! podbay's runtime: pod sandboxes (and, with later issues, containers and images) over
//! a pod supervisor per pod, with state in an embedded transactional database.
//!
//! No gRPC here: the CRI edge (`cri-shim`) converts requests into the types of this crate.

pub mod container;
pub mod failpoint;
pub mod ids;
pub mod image;
pub mod layout;
pub mod network;
pub mod sandbox;
mod steps;
pub mod store;
pub mod supervisor;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::failpoint::Failpoints;
use crate::ids::{ContainerId, SandboxId};
use crate::layout::Layout;
use crate::sandbox::{Sandbox, SandboxRecord};
use crate::store::Store;

/// What kind of failure an error is; the CRI edge maps this to a gRPC code in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

impl From<podbay_netplug::ErrorKind> for ErrorKind {
    fn from(k: podbay_netplug::ErrorKind) -> Self {
        match k {
            podbay_netplug::ErrorKind::NotFound => ErrorKind::NotFound,
            podbay_netplug::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            podbay_netplug::ErrorKind::ResourceExhausted => ErrorKind::ResourceExhausted,
            podbay_netplug::ErrorKind::Unavailable => ErrorKind::Unavailable,
            podbay_netplug::ErrorKind::Internal => ErrorKind::Internal,
        }
    }
}

/// Settings the runtime needs from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub root: PathBuf,
    pub run: PathBuf,
    /// The `podbay-supervisor` executable.
    pub supervisor_exe: PathBuf,
    /// How long StopPodSandbox waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
    /// Size of each pod's /dev/shm tmpfs, in bytes.
    pub shm_size: u64,
    /// Where the node's hosts and resolv.conf live (normally /etc).
    pub host_etc: PathBuf,
    /// The node's pod network.
    pub network: podbay_netplug::NetworkConfig,
    /// Registry mirrors, insecure registries and credentials.
    pub registries: image::RegistryConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("another podbay daemon (pid {pid}) already owns root {root}")]
    Locked { root: PathBuf, pid: String },
    #[error("lock {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("start the supervisor spawner: {0}")]
    Spawner(#[from] supervisor::Error),
    #[error("open the image store: {0}")]
    Images(#[from] image::Error),
    #[error("recover sandboxes: {0}")]
    Recover(#[from] sandbox::Error),
    #[error("recover containers: {0}")]
    RecoverContainers(#[from] container::Error),
}

/// The runtime: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) opts: RuntimeOptions,
    pub(crate) layout: Layout,
    pub(crate) store: Store,
    pub(crate) sandboxes: RwLock<HashMap<SandboxId, Arc<Sandbox>>>,
    /// Pod name key → lock held while a RunPodSandbox for that pod attempt is in flight.
    pub(crate) reservations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) failpoints: Failpoints,
    pub(crate) spawner: supervisor::Spawner,
    pub(crate) network: network::Network,
    pub(crate) images: image::Images,
    pub(crate) containers: RwLock<HashMap<ContainerId, Arc<container::Container>>>,
    /// Container name keys with a CreateContainer in flight.
    pub(crate) creating: Mutex<std::collections::HashSet<String>>,
    pub(crate) node_facts: std::sync::OnceLock<container::spec::NodeFacts>,
    _lock: Flock<File>,
}

impl Runtime {
    /// Takes the root lock, opens the state database and recovers every recorded sandbox
    /// (reconnecting to live supervisors, marking dead ones NotReady, removing orphans).
    pub async fn open(opts: RuntimeOptions, failpoints: Failpoints) -> Result<Runtime, OpenError> {
        let layout = Layout::new(&opts.root, &opts.run);
        // 0711, as containerd: others may traverse to what is meant for them (a pod's
        // resolv.conf), but not list pods or read the database.
        for dir in [layout.root().to_path_buf(), layout.run().to_path_buf(), layout.pods_dir()] {
            let err = |source| OpenError::CreateDir { path: dir.clone(), source };
            std::fs::create_dir_all(&dir).map_err(err)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(err)?;
        }
        let lock = lock_root(&layout)?;
        let store = Store::open(&layout.database())?;
        let spawner = supervisor::Spawner::new(&opts.supervisor_exe);
        spawner.warm_up().await?;
        let network = network::Network::new(opts.network.clone());
        let images = image::Images::new(opts.registries.clone());
        let runtime = Runtime {
            inner: Arc::new(Inner {
                network,
                images,
                containers: RwLock::new(HashMap::new()),
                creating: Mutex::new(Default::default()),
                node_facts: std::sync::OnceLock::new(),
                opts,
                layout,
                store,
                sandboxes: RwLock::new(HashMap::new()),
                reservations: Mutex::new(HashMap::new()),
                failpoints,
                spawner,
                _lock: lock,
            }),
        };
        let node = container::node_facts(&runtime.inner.node_facts);
        if !node.hugetlb {
            tracing::info!(
                "no hugetlb cgroup controller on this node: hugepage limits in container \
                 requests are dropped (as containerd does)"
            );
        }
        runtime.open_images().await?;
        runtime.recover().await?;
        runtime.recover_containers().await?;
        Ok(runtime)
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.opts
    }

    /// Writes a record (and its lease; `released` is a lease it gives back) to the state
    /// database off the async worker threads.
    pub(crate) async fn persist(
        &self,
        rec: SandboxRecord,
        released: Option<std::net::Ipv4Addr>,
    ) -> Result<(), store::Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.store.put_sandbox(&rec, released))
            .await
            .expect("state store task panicked")
    }

    /// Whether pods can get a network, or why not (CRI's NetworkReady condition).
    pub fn network_ready(&self) -> Result<(), String> {
        self.inner.network.node().map(drop).map_err(|e| e.to_string())
    }

    /// The node network, when ready (for `podbay net show`).
    pub fn network_node(&self) -> Option<Arc<podbay_netplug::Node>> {
        self.inner.network.node().ok()
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn lock_root(layout: &Layout) -> Result<Flock<File>, OpenError> {
    let path = layout.lock_file();
    let err = |source| OpenError::Lock { path: path.clone(), source };
    let file = File::options().create(true).truncate(false).read(true).write(true).open(&path);
    let file = file.map_err(err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0).map_err(err)?;
            writeln!(lock, "{}", std::process::id()).map_err(err)?;
            Ok(lock)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
            Err(OpenError::Locked { root: layout.root().into(), pid })
        }
        Err((_, e)) => Err(err(e.into())),
    }
}
