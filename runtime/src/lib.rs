//! podbay's runtime: pod sandboxes and their containers over a pod supervisor per pod,
//! images, the pod network as pods use it, with state in an embedded transactional
//! database. No gRPC here: the CRI edge (`cri-shim`) converts requests into the types of
//! this crate.
//!
//! The runtime is made of parts that each own their state and their errors:
//!
//! | part | owns |
//! |---|---|
//! | [`sandbox::Sandboxes`] | sandboxes in memory, their records, name reservations, the supervisor spawner |
//! | [`container::Containers`] | containers in memory, their records, name reservations |
//! | [`image::Images`] | image content, unpacked layers, container rootfs, image records |
//! | [`network::PodNetwork`] | the node network, IP leases and hostPorts in memory |
//! | [`store::Store`] | the database: tables and bytes, transactions |
//!
//! [`Runtime`] composes them: it opens them in order at start, and it carries the CRI
//! calls that span parts (StopPodSandbox stops the pod's containers before the pod).
//! Calls within one part go to the part itself (`runtime.containers().start(id)`).

mod cgroup_limits;
pub mod cgroups;
pub mod clock;
pub mod container;
pub mod error;
pub mod failpoint;
pub mod ids;
pub mod image;
pub mod layout;
pub mod mount_attr;
pub mod network;
pub mod sandbox;
pub mod steps;
pub mod store;
pub mod supervisor;
mod undo;
pub mod view;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::ErrorKind;
use nix::fcntl::{Flock, FlockArg};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::container::{ContainerSpec, Containers, PodStats};
use crate::failpoint::Failpoints;
use crate::ids::ContainerId;
use crate::image::Images;
use crate::layout::Layout;
use crate::network::{NetworkReport, PodNetwork};
use crate::sandbox::{SandboxRecord, Sandboxes};
use crate::store::Store;
use crate::supervisor::Spawner;

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
    /// How large an image may make the store.
    pub image_limits: image::Limits,
    /// Move a state database that cannot be read aside and start over, removing every
    /// pod and container found (`podbay serve --reset-state`).
    pub reset_state: bool,
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
    #[error(
        "the state database {} is missing, but {what} holds pods, containers or images: podbay \
         does not start empty over them. To start over, `podbay serve --reset-state` removes \
         every pod and container found.",
        .db.display()
    )]
    MissingDatabase { db: PathBuf, what: PathBuf },
    #[error("move {} aside: {source}", .path.display())]
    Reset { path: PathBuf, source: std::io::Error },
    #[error("open the image store: {0}")]
    Images(#[from] image::Error),
    #[error("recover sandboxes: {0}")]
    Sandboxes(#[from] sandbox::Error),
    #[error(transparent)]
    Supervisor(#[from] supervisor::Error),
    #[error("recover the pod network: {0}")]
    Network(#[from] network::Error),
    #[error("recover containers: {0}")]
    Containers(#[from] container::Error),
}

/// A CRI call that spans sandboxes and containers failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
    #[error("the pod's containers: {0}")]
    Containers(#[from] container::Error),
}

impl PodError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PodError::Sandbox(e) => e.kind(),
            PodError::Containers(e) => e.kind(),
        }
    }
}

/// The runtime: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    opts: RuntimeOptions,
    layout: Layout,
    store: Arc<Store>,
    network: PodNetwork,
    images: Images,
    sandboxes: Sandboxes,
    containers: Containers,
    steps: steps::StepHistograms,
    supervisor_exits: Counter,
    _lock: Flock<File>,
}

impl Runtime {
    /// Takes the root lock, opens the state database and recovers: image store, then
    /// sandboxes (reconnecting to live supervisors, marking dead ones NotReady, removing
    /// orphans), then the pod network with the live pods' leases, then containers.
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
        let store = Arc::new(open_store(&layout, opts.reset_state)?);
        let network = PodNetwork::new(opts.network.clone(), store.clone());
        let images =
            Images::new(store.clone(), layout.clone(), opts.registries.clone(), opts.image_limits);
        let views = view_mount_points(&layout);
        let settings = sandbox::Settings {
            stop_grace: opts.stop_grace,
            shm_size: opts.shm_size,
            host_etc: opts.host_etc.clone(),
            view_parents: match views {
                true => vec![layout.pods_dir(), layout.containers_dir()],
                false => Vec::new(),
            },
        };
        let (exits, mut exited) = tokio::sync::mpsc::unbounded_channel();
        let steps = steps::step_histograms();
        let sandboxes = Sandboxes::new(sandbox::Parts {
            store: store.clone(),
            network: network.clone(),
            spawner: Spawner::new(&opts.supervisor_exe)?,
            layout: layout.clone(),
            failpoints: failpoints.clone(),
            settings,
            exits,
            steps: steps.clone(),
        });
        sandboxes.warm_up().await?;
        let containers = Containers::new(
            store.clone(),
            images.clone(),
            layout.clone(),
            failpoints,
            steps.clone(),
            views,
        );
        if !containers.node().hugetlb {
            tracing::info!(
                "no hugetlb cgroup controller on this node: hugepage limits in container \
                 requests are dropped (as containerd does)"
            );
        }
        images.open().await?;
        sandboxes.recover().await?;
        let live = sandboxes.live_pods();
        let restored = network.clone();
        tokio::task::spawn_blocking(move || restored.restore(&live))
            .await
            .expect("lease recovery task panicked")?;
        let pods = sandboxes.clone();
        network.start(Arc::new(move || pods.live_pods())).await;
        containers.recover(&sandboxes.ready()).await?;
        // A supervisor that dies takes its pod's containers with it.
        let on_exit = containers.clone();
        let supervisor_exits = Counter::default();
        let counted = supervisor_exits.clone();
        tokio::spawn(async move {
            while let Some(sandbox) = exited.recv().await {
                counted.inc();
                on_exit.supervisor_gone(&sandbox).await;
            }
        });
        let inner = Inner {
            opts,
            layout,
            store,
            network,
            images,
            sandboxes,
            containers,
            steps,
            supervisor_exits,
            _lock: lock,
        };
        Ok(Runtime { inner: Arc::new(inner) })
    }

    /// At a clean shutdown with no pod and no container left: the pods and containers
    /// dirs stop being mount points of their own (see `view`), so a node without podbay's
    /// pods holds no mount of podbay's. With any left they stay (pods outlive the daemon).
    pub fn release_mount_points(&self) {
        let none = self.inner.sandboxes.list(&Default::default()).is_empty()
            && self.inner.containers.list(&Default::default()).is_empty();
        if !none {
            return;
        }
        for dir in [self.inner.layout.pods_dir(), self.inner.layout.containers_dir()] {
            if let Err(e) = view::release_mount_point(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "unmount");
            }
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.opts
    }

    pub fn sandboxes(&self) -> &Sandboxes {
        &self.inner.sandboxes
    }

    pub fn containers(&self) -> &Containers {
        &self.inner.containers
    }

    pub fn images(&self) -> &Images {
        &self.inner.images
    }

    pub fn network(&self) -> &PodNetwork {
        &self.inner.network
    }

    /// Registers what the runtime measures as it works (pod start steps, database commits,
    /// image pulls, supervisor exits) under `podbay_`; the daemon adds what it reads at
    /// scrape time.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let inner = &self.inner;
        registry.register(
            "pod_start_step_seconds",
            "Duration of each step of a successful RunPodSandbox or CreateContainer",
            inner.steps.clone(),
        );
        registry.register(
            "db_commit_seconds",
            "Duration of each state database commit",
            inner.store.commit_seconds(),
        );
        let pulls = inner.images.pull_metrics();
        registry.register("image_pulls", "Image pulls from registries by result", pulls.pulls);
        registry.register("image_pull_bytes", "Layer bytes fetched from registries", pulls.bytes);
        registry.register("image_pull_seconds", "Duration of image pulls", pulls.seconds);
        registry.register(
            "supervisor_exits",
            "Pod supervisors that exited without being stopped (their pod became NotReady)",
            inner.supervisor_exits.clone(),
        );
    }

    /// Whether the runtime can change state (CRI's RuntimeReady), or why not.
    pub fn health(&self) -> Result<(), String> {
        self.inner.store.health()
    }

    /// StopPodSandbox: the pod's containers, then the pod. Idempotent; runs in its own
    /// task, so a caller that goes away does not cut a teardown short.
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), PodError> {
        let Some(pod) = self.inner.sandboxes.find(id)? else { return Ok(()) };
        let rt = self.clone();
        tokio::spawn(async move {
            let _op = pod.lock().await;
            rt.inner.containers.stop_all_in(&pod.id()).await;
            Ok(rt.inner.sandboxes.stop_locked(&pod).await?)
        })
        .await
        .expect("StopPodSandbox task panicked")
    }

    /// RemovePodSandbox: stop if needed (teardown is idempotent and also catches what a
    /// NotReady record may still hold after a crash), remove the pod's containers and its
    /// cgroup, then the pod. Idempotent; runs in its own task.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), PodError> {
        let Some(pod) = self.inner.sandboxes.find(id)? else { return Ok(()) };
        let rt = self.clone();
        tokio::spawn(async move {
            let _op = pod.lock().await;
            let id = pod.id();
            if !rt.inner.sandboxes.contains(&id) {
                return Ok(()); // removed by a concurrent call
            }
            rt.inner.containers.stop_all_in(&id).await;
            rt.inner.sandboxes.stop_locked(&pod).await?;
            rt.inner.containers.remove_all_in(&pod.snapshot()).await?;
            Ok(rt.inner.sandboxes.remove_locked(&pod).await?)
        })
        .await
        .expect("RemovePodSandbox task panicked")
    }

    /// CreateContainer in the sandbox `sandbox` (a full id or a unique prefix).
    pub async fn create_container(
        &self,
        sandbox: &str,
        spec: ContainerSpec,
    ) -> Result<ContainerId, container::Error> {
        let record = match self.inner.sandboxes.resolve(sandbox) {
            Ok(s) => s.snapshot(),
            Err(sandbox::Error::Ambiguous { prefix }) => {
                let reason = format!("{prefix:?} is ambiguous");
                return Err(container::Error::invalid("pod_sandbox_id", reason));
            }
            Err(_) => return Err(container::Error::SandboxNotFound { id: sandbox.into() }),
        };
        self.inner.containers.create(record, spec).await
    }

    /// Stats of ready pods (all, or the one `id` names) and their running containers.
    pub async fn pod_stats(&self, id: Option<&str>) -> Result<Vec<PodStats>, container::Error> {
        let sandboxes = &self.inner.sandboxes;
        let pods: Vec<SandboxRecord> = match id {
            Some(id) => vec![
                sandboxes
                    .resolve(id)
                    .map_err(|_| container::Error::SandboxNotFound { id: id.into() })?
                    .snapshot(),
            ],
            None => sandboxes
                .list(&Default::default())
                .into_iter()
                .filter(|r| r.state.is_ready())
                .collect(),
        };
        Ok(self.inner.containers.pod_stats(pods).await)
    }

    /// The node network with the pods that hold a network now.
    pub async fn network_report(&self) -> NetworkReport {
        self.inner.network.report(&self.inner.sandboxes.live_pods()).await
    }
}

/// Makes the pods and containers dirs mount points of their own (see `view`); false,
/// logged, when that cannot be done (containers are then made in the node's mount table).
fn view_mount_points(layout: &Layout) -> bool {
    let made = [layout.pods_dir(), layout.containers_dir()].iter().try_for_each(|dir| {
        std::fs::create_dir_all(dir)?;
        view::ensure_mount_point(dir)
    });
    match made {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "no mount points for the pods and containers dirs: \
                containers are made with the node's whole mount table");
            false
        }
    }
}

/// Opens the state database. One that exists but cannot be read stops start-up, and so
/// does a missing one over a store that holds pods, containers or images: podbay never
/// starts empty over what it would then forget. With `reset`, an unreadable database is
/// moved aside (`state.redb.broken-<unix time>`) and start-up goes on empty; recovery then
/// removes every pod and container that no record explains, and GC every image.
fn open_store(layout: &Layout, reset: bool) -> Result<Store, OpenError> {
    let path = layout.database();
    if !path.exists() {
        let holders = [layout.pods_dir(), layout.containers_dir(), layout.layers_dir()];
        let held = holders
            .into_iter()
            .find(|d| std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some()));
        if let (Some(what), false) = (held, reset) {
            return Err(OpenError::MissingDatabase { db: path, what });
        }
        return Ok(Store::open(&path)?);
    }
    match Store::open(&path) {
        Err(store::Error::Unreadable { reason, .. }) if reset => {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = path.with_extension(format!("redb.broken-{ts}"));
            std::fs::rename(&path, &aside)
                .map_err(|source| OpenError::Reset { path: path.clone(), source })?;
            tracing::warn!(aside = %aside.display(), %reason, "state database moved aside; starting over");
            Ok(Store::open(&path)?)
        }
        other => Ok(other?),
    }
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
