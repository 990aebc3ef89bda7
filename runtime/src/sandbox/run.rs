//! RunPodSandbox: set up the pod's dir and files, lease the pod an IP (and its hostPorts),
//! start its supervisor (which creates the pod's eth0 with its veth peer on the node, the
//! address, the route and `lo` up), pin its namespaces, mount its /dev/shm, then attach
//! the veth to the bridge and add the hostPort map elements while its record is committed
//! together with the lease. Every step registers its undo before the next one starts; a
//! failure runs the undos in reverse and returns the cause (and any undo failure). The
//! work runs in its own task, so a caller that goes away (kubelet's timeout, a dropped
//! connection) neither cancels it half-way nor skips undos; kubelet's retry then gets the
//! finished sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use podbay_netplug::pod::PodInterface;
use tracing::{Instrument, debug, info_span};

use super::{
    Error, NamespaceMode, PodMetadata, Sandbox, SandboxRecord, SandboxSpec, SandboxState,
    Sandboxes, files, mounts,
};
use crate::ids::SandboxId;
use crate::layout::{NsKind, PodLayout};
use crate::network::{Attachment, Grant};
use crate::steps::StepTimer;
use crate::supervisor::{Identity, Launched, SpawnRequest, kill_and_wait};
use crate::undo::Undo;

/// How to undo a step of a RunPodSandbox in progress.
enum UndoStep {
    RemoveDir(PathBuf),
    Kill(Identity),
    Unmount(PathBuf),
    /// Give back the IP lease and hostPorts (after the supervisor, and with it the pod's
    /// namespace and veth, is gone).
    Release(Grant),
    RemovePorts(Vec<podbay_netplug::PortMap>),
    /// Delete the committed record (and its lease).
    Record(Box<SandboxRecord>),
}

/// Which of the pod's namespaces are its own.
struct Owned {
    net: bool,
    ipc: bool,
    pid: bool,
    user: bool,
}

impl Sandboxes {
    /// Runs a pod sandbox and returns its id. A retry for the same pod attempt (same name,
    /// namespace, uid and attempt) while it runs returns the existing sandbox.
    pub async fn run(&self, mut spec: SandboxSpec) -> Result<SandboxId, Error> {
        if spec.namespaces.network == NamespaceMode::Node {
            // A hostNetwork pod shares the node's UTS namespace (kubelet sends it no
            // hostname): its hostname file and $HOSTNAME say the node's name as well.
            spec.hostname = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or(spec.hostname);
        }
        let sandboxes = self.clone();
        let arrived = Instant::now();
        tokio::spawn(async move { sandboxes.run_detached(spec, arrived).await })
            .await
            .expect("RunPodSandbox task panicked")
    }

    async fn run_detached(&self, spec: SandboxSpec, arrived: Instant) -> Result<SandboxId, Error> {
        let key = spec.metadata.name_key();
        let reservation = {
            let mut map = self.inner.reservations.lock().expect("reservations lock");
            map.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _held = reservation.lock().await;
            self.run_reserved(spec, arrived).await
        };
        drop(reservation);
        // The last request for this pod attempt removes the entry; one that cloned it
        // meanwhile holds a count and removes it when it is done.
        let mut map = self.inner.reservations.lock().expect("reservations lock");
        if map.get(&key).is_some_and(|r| Arc::strong_count(r) == 1) {
            map.remove(&key);
        }
        result
    }

    async fn run_reserved(&self, spec: SandboxSpec, arrived: Instant) -> Result<SandboxId, Error> {
        if let Some(existing) = self.find_by_name(&spec.metadata) {
            return if existing.state.is_ready() {
                Ok(existing.id)
            } else {
                Err(Error::NameTaken { name: spec.metadata.name_key(), id: existing.id })
            };
        }
        let id = SandboxId::generate();
        let span = info_span!("run_pod_sandbox", sandbox.id = %id, pod = %spec.metadata.name);
        let mut undo = Undo::default();
        match self.run_steps(&id, &spec, &mut undo, arrived).instrument(span).await {
            Ok(record) => {
                let sandbox = Arc::new(Sandbox::new(record));
                self.insert(sandbox.clone());
                self.watch(sandbox);
                Ok(id)
            }
            Err(cause) => Err(undo.unwind(cause, |step| self.undo(&id, step)).await),
        }
    }

    async fn undo(&self, id: &SandboxId, step: UndoStep) -> Result<(), Error> {
        match step {
            UndoStep::Release(grant) => {
                self.inner.network.release(id, grant.ip, &grant.ports);
                Ok(())
            }
            UndoStep::RemovePorts(ports) => Ok(self.inner.network.remove_ports(ports).await?),
            UndoStep::Unmount(path) => mounts::unmount(&path),
            UndoStep::Kill(id) => {
                kill_and_wait(id).await;
                Ok(())
            }
            UndoStep::RemoveDir(path) => mounts::remove_pod_dir(&path),
            UndoStep::Record(rec) => Ok(self.unpersist(*rec).await?),
        }
    }

    async fn run_steps(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        undo: &mut Undo<UndoStep>,
        arrived: Instant,
    ) -> Result<SandboxRecord, Error> {
        let fp = &self.inner.failpoints;
        let pod = self.inner.layout.pod(id);
        let own = Owned {
            net: spec.namespaces.network != NamespaceMode::Node,
            ipc: spec.namespaces.ipc != NamespaceMode::Node,
            pid: spec.namespaces.pid == NamespaceMode::Pod,
            user: spec.namespaces.user.is_some(),
        };
        // The first step is the wait for the task and for the pod attempt's reservation.
        let mut timer = StepTimer::since("run_pod_sandbox", arrived);
        timer.done("queue");

        fp.check("sandbox.run.dirs")?;
        create_dir(pod.dir())?;
        undo.push(UndoStep::RemoveDir(pod.dir().to_path_buf()));
        if !self.inner.settings.view_parents.is_empty() {
            mounts::bind_pod_dir(pod.dir())?;
        }
        create_dir(&pod.ns_dir())?;
        if let Some(userns) = &spec.namespaces.user {
            // Its containers join the pinned namespaces from inside its user namespace.
            open_to_pod_root(pod.dir(), userns)?;
            open_to_pod_root(&pod.ns_dir(), userns)?;
        }
        timer.done("dirs");

        fp.check("sandbox.run.files")?;
        files::write_pod_files(&pod, spec, &self.inner.settings.host_etc)?;
        timer.done("files");

        fp.check("sandbox.run.network")?;
        let lease = if own.net { Some(self.lease(id, spec, undo)?) } else { None };
        timer.done("network");

        fp.check("sandbox.run.spawn")?;
        let launched = self.spawn(id, spec, &pod, &own, lease.as_ref().map(|l| &l.1)).await?;
        undo.push(UndoStep::Kill(launched.supervisor));
        if let Some(init) = launched.pod_init {
            undo.push(UndoStep::Kill(init));
        }
        timer.done("spawn");

        fp.check("sandbox.run.pin")?;
        let namespaces = pin_namespaces(&pod, &own, &launched, undo)?;
        timer.done("pin");

        fp.check("sandbox.run.shm")?;
        let shm = if own.ipc {
            mounts::mount_shm(&pod.shm(), self.inner.settings.shm_size)?;
            undo.push(UndoStep::Unmount(pod.shm()));
            pod.shm()
        } else {
            PathBuf::from("/dev/shm")
        };
        timer.done("shm");

        // The record is committed while the veth is attached: the commit waits for the
        // disk, the attach for the kernel's bridge. A crash after the commit leaves a pod
        // whose supervisor lives and whose veth the restarted daemon attaches (again, with
        // its hairpin mode, `network::try_start`) and whose hostPorts it maps, as for
        // every live pod; a failed attach deletes the record again.
        let record = SandboxRecord {
            id: id.clone(),
            spec: spec.clone(),
            state: SandboxState::Ready,
            created_at: crate::clock::now_ns(),
            pod_dir: pod.dir().to_path_buf(),
            namespaces,
            shm,
            supervisor: Some(launched.supervisor),
            pod_init: launched.pod_init,
            network: lease.as_ref().map(|(grant, iface)| Attachment {
                ip: grant.ip,
                host_veth: iface.host_veth.clone(),
            }),
        };
        // Both run to the end (a commit left running could land after its undo).
        let mut stored = false;
        let (attached, committed) = tokio::join!(
            async {
                fp.check("sandbox.run.attach")?;
                if let Some((grant, iface)) = &lease {
                    self.attach(grant, iface).await?;
                }
                Ok::<_, Error>(())
            },
            async {
                fp.check("sandbox.run.commit")?;
                let t = Instant::now();
                self.persist(record.clone(), None).await?;
                stored = true;
                fp.check("sandbox.run.committed")?;
                Ok::<_, Error>(t.elapsed())
            }
        );
        // Only a stored record is deleted again: a delete is a write too, and one that
        // succeeds would report a failing database as healthy again.
        if stored {
            undo.push(UndoStep::Record(Box::new(record.clone())));
        }
        if let Some((grant, _)) = lease.as_ref().filter(|(grant, _)| !grant.ports.is_empty()) {
            // Whether or not their add got as far as the kernel.
            undo.push(UndoStep::RemovePorts(grant.port_maps()));
        }
        attached?;
        timer.alongside("commit", committed?);
        timer.done("attach");
        fp.check("sandbox.run.reply")?;
        timer.observe(&self.inner.steps);
        debug!(pid = launched.supervisor.pid, steps = %timer.summary(), "sandbox ready");
        Ok(record)
    }

    /// Leases the pod an IP and its hostPorts, and describes the eth0 its supervisor makes.
    fn lease(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        undo: &mut Undo<UndoStep>,
    ) -> Result<(Grant, PodInterface), Error> {
        let network = &self.inner.network;
        let node = network.node()?;
        let pod_name = format!("{}/{}", spec.metadata.namespace, spec.metadata.name);
        let subnet = &node.config().node_subnet;
        let grant = network.grant(subnet, id, &pod_name, &spec.port_mappings)?;
        undo.push(UndoStep::Release(grant.clone()));
        let iface = PodInterface {
            host_veth: podbay_netplug::pod::host_veth_name(id.as_str()),
            address: grant.ip,
            prefix_len: subnet.net().prefix_len(),
            gateway: node.config().gateway(),
            mtu: node.mtu(),
        };
        Ok((grant, iface))
    }

    async fn spawn(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        pod: &PodLayout,
        own: &Owned,
        interface: Option<&PodInterface>,
    ) -> Result<Launched, Error> {
        let request = SpawnRequest {
            id,
            pod,
            new_net: own.net,
            new_ipc: own.ipc,
            new_uts: own.net,
            new_pid: own.pid,
            hostname: &spec.hostname,
            sysctls: &spec.sysctls,
            interface,
            userns: spec.namespaces.user.as_ref(),
            view_parents: &self.inner.settings.view_parents,
        };
        Ok(self.inner.spawner.spawn(&request).await?)
    }

    /// Attaches the pod's veth to the bridge and maps its hostPorts.
    async fn attach(&self, grant: &Grant, iface: &PodInterface) -> Result<(), Error> {
        let network = &self.inner.network;
        network.node()?.attach(&iface.host_veth).await.map_err(crate::network::Error::from)?;
        if !grant.ports.is_empty() {
            network.add_ports(grant.port_maps()).await?;
        }
        Ok(())
    }

    /// The sandbox of this pod attempt, if there is one (fields compared, nothing formatted:
    /// every RunPodSandbox looks at every pod).
    fn find_by_name(&self, metadata: &PodMetadata) -> Option<SandboxRecord> {
        let map = self.inner.map.read().expect("sandboxes lock");
        map.values().find_map(|s| {
            let rec = s.record.lock().expect("sandbox record lock");
            (rec.spec.metadata == *metadata).then(|| rec.clone())
        })
    }
}

/// Pins the namespaces the pod owns under its dir.
fn pin_namespaces(
    pod: &PodLayout,
    own: &Owned,
    launched: &Launched,
    undo: &mut Undo<UndoStep>,
) -> Result<BTreeMap<NsKind, PathBuf>, Error> {
    let mut namespaces = BTreeMap::new();
    let supervisor = launched.supervisor.pid;
    let owned = [(own.net, NsKind::Net), (own.ipc, NsKind::Ipc), (own.net, NsKind::Uts)];
    for (kind, pid) in owned
        .into_iter()
        .filter(|(own, _)| *own)
        .map(|(_, kind)| (kind, supervisor))
        .chain(launched.pod_init.map(|init| (NsKind::Pid, init.pid)))
    {
        let path = pod.ns(kind);
        mounts::pin(pid, kind, &path)?;
        undo.push(UndoStep::Unmount(path.clone()));
        namespaces.insert(kind, path);
    }
    if own.user {
        let net = namespaces
            .get(&NsKind::Net)
            .ok_or(Error::Userns("needs the pod's own network namespace"))?;
        let path = pod.ns(NsKind::User);
        mounts::pin_owner(net, &path)?;
        undo.push(UndoStep::Unmount(path.clone()));
        namespaces.insert(NsKind::User, path);
    }
    Ok(namespaces)
}

/// A pod with its own user namespace: its root (the node's uid and gid for 0 in the pod)
/// may pass through the pod dir (mode 0710, that group) to the files and /dev/shm that
/// its containers bind-mount; nobody else may.
pub(crate) fn open_to_pod_root(dir: &Path, userns: &super::UsernsSpec) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let gid = userns.host_gid(0).ok_or(Error::Userns("container gid 0 is not mapped"))?;
    let err = |source| Error::CreateDir { path: dir.into(), source };
    std::os::unix::fs::chown(dir, None, Some(gid)).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710)).map_err(err)
}

/// A directory only root can enter: a pod's dir holds its /dev/shm, pinned namespaces and
/// its containers' libcontainer state.
fn create_dir(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let made = std::fs::DirBuilder::new().mode(0o700).create(path);
    made.map_err(|source| Error::CreateDir { path: path.into(), source })
}
