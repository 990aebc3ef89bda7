//! RunPodSandbox: lease the pod an IP (and its hostPorts), start its supervisor (which
//! creates the pod's eth0 with its veth peer on the node, the address, the route and `lo`
//! up), pin its namespaces, attach the veth to the bridge, add the hostPort map elements,
//! set up its files and /dev/shm, then commit its record together with the lease. Every step registers
//! its undo before the next one starts; a failure runs the undos in reverse and returns the
//! cause (and any undo failure). The work runs in its own task, so a caller that goes away
//! (kubelet's timeout, a dropped connection) neither cancels it half-way nor skips undos;
//! kubelet's retry then gets the finished sandbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Instrument, debug, info_span};

use super::{
    Error, NamespaceMode, Sandbox, SandboxRecord, SandboxSpec, SandboxState, files, mounts,
};
use crate::Runtime;
use crate::ids::SandboxId;
use crate::layout::NsKind;
use crate::network::{Grant, PodNetwork};
use crate::steps::StepTimer;
use crate::supervisor::{Identity, Proc, SpawnRequest};

/// Undo actions of a RunPodSandbox in progress, run in reverse on failure.
#[derive(Default)]
struct Undo(Vec<UndoStep>);

enum UndoStep {
    RemoveDir(PathBuf),
    Kill(Identity),
    Unmount(PathBuf),
    /// Give back the IP lease and hostPorts (after the supervisor, and with it the pod's
    /// namespace and veth, is gone).
    Release(Grant),
    RemovePorts(Vec<podbay_netplug::PortMap>),
}

impl Undo {
    fn push(&mut self, step: UndoStep) {
        self.0.push(step);
    }

    /// Runs every undo, newest first, past failures; returns the failures.
    async fn run(self, runtime: &Runtime, id: &SandboxId) -> Vec<Error> {
        let mut errors = Vec::new();
        for step in self.0.into_iter().rev() {
            let result = match step {
                UndoStep::Release(grant) => {
                    runtime.inner.network.release(id, grant.ip, &grant.ports);
                    Ok(())
                }
                UndoStep::RemovePorts(ports) => runtime.remove_ports(ports).await,
                UndoStep::Unmount(path) => mounts::unmount(&path),
                UndoStep::Kill(id) => {
                    kill_and_wait(id).await;
                    Ok(())
                }
                UndoStep::RemoveDir(path) => match std::fs::remove_dir_all(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(Error::RemoveDir { path, source: e })
                    }
                    _ => Ok(()),
                },
            };
            if let Err(e) = result {
                errors.push(e);
            }
        }
        errors
    }
}

/// SIGKILLs a process (if it still is the one we started) and waits for it to exit.
pub(super) async fn kill_and_wait(id: Identity) {
    if let Some(proc) = Proc::open(id) {
        let _ = proc.signal(rustix::process::Signal::KILL);
        proc.wait_exit(Duration::from_secs(5)).await;
    }
}

impl Runtime {
    /// Runs a pod sandbox and returns its id. A retry for the same pod attempt (same name,
    /// namespace, uid and attempt) while it runs returns the existing sandbox.
    pub async fn run_sandbox(&self, spec: SandboxSpec) -> Result<SandboxId, Error> {
        let runtime = self.clone();
        tokio::spawn(async move { runtime.run_detached(spec).await })
            .await
            .expect("RunPodSandbox task panicked")
    }

    async fn run_detached(&self, spec: SandboxSpec) -> Result<SandboxId, Error> {
        let key = spec.metadata.name_key();
        let reservation = {
            let mut map = self.inner.reservations.lock().expect("reservations lock");
            map.entry(key.clone()).or_default().clone()
        };
        let result = {
            let _held = reservation.lock().await;
            self.run_reserved(spec).await
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

    async fn run_reserved(&self, spec: SandboxSpec) -> Result<SandboxId, Error> {
        if let Some(existing) = self.find_by_name(&spec.metadata.name_key()) {
            return if existing.state.is_ready() {
                Ok(existing.id)
            } else {
                Err(Error::NameTaken { name: spec.metadata.name_key(), id: existing.id })
            };
        }
        let id = SandboxId::generate();
        let span = info_span!("run_pod_sandbox", sandbox.id = %id, pod = %spec.metadata.name);
        let mut undo = Undo::default();
        match self.run_steps(&id, &spec, &mut undo).instrument(span).await {
            Ok(record) => {
                let sandbox = Arc::new(Sandbox::new(record));
                self.inner
                    .sandboxes
                    .write()
                    .expect("sandboxes lock")
                    .insert(id.clone(), sandbox.clone());
                self.watch(id.clone(), sandbox);
                Ok(id)
            }
            Err(cause) => {
                let cleanup = undo.run(self, &id).await;
                if cleanup.is_empty() {
                    Err(cause)
                } else {
                    Err(Error::Undo { cause: Box::new(cause), cleanup })
                }
            }
        }
    }

    async fn run_steps(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        undo: &mut Undo,
    ) -> Result<SandboxRecord, Error> {
        let fp = &self.inner.failpoints;
        let opts = &self.inner.opts;
        let pod = self.inner.layout.pod(id);
        let own_net = spec.namespaces.network != NamespaceMode::Node;
        let own_ipc = spec.namespaces.ipc != NamespaceMode::Node;
        let own_pid = spec.namespaces.pid == NamespaceMode::Pod;

        let mut timer = StepTimer::new();
        fp.check("sandbox.run.dirs")?;
        create_dir(pod.dir())?;
        undo.push(UndoStep::RemoveDir(pod.dir().to_path_buf()));
        create_dir(&pod.ns_dir())?;

        timer.done("dirs");
        fp.check("sandbox.run.files")?;
        files::write_pod_files(&pod, spec, &opts.host_etc)?;
        timer.done("files");

        fp.check("sandbox.run.network")?;
        let grant = if own_net {
            let node = self.inner.network.node()?;
            let pod_name = format!("{}/{}", spec.metadata.namespace, spec.metadata.name);
            let subnet = node.config().node_subnet;
            let grant = self.inner.network.grant(&subnet, id, &pod_name, &spec.port_mappings)?;
            undo.push(UndoStep::Release(grant.clone()));
            Some((node, grant))
        } else {
            None
        };
        let interface = grant.as_ref().map(|(node, g)| podbay_netplug::pod::PodInterface {
            host_veth: podbay_netplug::pod::host_veth_name(id.as_str()),
            address: g.ip,
            prefix_len: node.config().node_subnet.net().prefix_len(),
            gateway: node.config().gateway(),
            mtu: node.mtu(),
        });
        timer.done("network");

        fp.check("sandbox.run.spawn")?;
        let launched = self
            .inner
            .spawner
            .spawn(&SpawnRequest {
                id,
                pod: &pod,
                new_net: own_net,
                new_ipc: own_ipc,
                new_uts: own_net,
                new_pid: own_pid,
                hostname: &spec.hostname,
                sysctls: &spec.sysctls,
                interface: interface.as_ref(),
            })
            .await?;
        undo.push(UndoStep::Kill(launched.supervisor));
        if let Some(init) = launched.pod_init {
            undo.push(UndoStep::Kill(init));
        }
        timer.done("spawn");

        fp.check("sandbox.run.pin")?;
        let mut namespaces = std::collections::BTreeMap::new();
        let owned = [(own_net, NsKind::Net), (own_ipc, NsKind::Ipc), (own_net, NsKind::Uts)];
        for (kind, pid) in owned
            .into_iter()
            .filter(|(own, _)| *own)
            .map(|(_, kind)| (kind, launched.supervisor.pid))
            .chain(launched.pod_init.map(|init| (NsKind::Pid, init.pid)))
        {
            let path = pod.ns(kind);
            mounts::pin(pid, kind, &path)?;
            undo.push(UndoStep::Unmount(path.clone()));
            namespaces.insert(kind, path);
        }

        timer.done("pin");
        fp.check("sandbox.run.attach")?;
        let network = match (&grant, &interface) {
            (Some((node, g)), Some(iface)) => {
                node.attach(&iface.host_veth).await.map_err(crate::network::Error::from)?;
                if !g.ports.is_empty() {
                    let ports: Vec<_> = g.ports.iter().map(|p| p.to_port_map(g.ip)).collect();
                    undo.push(UndoStep::RemovePorts(ports.clone()));
                    self.add_ports(ports).await?;
                }
                Some(PodNetwork { ip: g.ip, host_veth: iface.host_veth.clone() })
            }
            _ => None,
        };
        timer.done("attach");

        fp.check("sandbox.run.shm")?;
        let shm = if own_ipc {
            mounts::mount_shm(&pod.shm(), opts.shm_size)?;
            undo.push(UndoStep::Unmount(pod.shm()));
            pod.shm()
        } else {
            PathBuf::from("/dev/shm")
        };

        timer.done("shm");
        fp.check("sandbox.run.commit")?;
        let record = SandboxRecord {
            id: id.clone(),
            spec: spec.clone(),
            state: SandboxState::Ready,
            created_at: now_ns(),
            pod_dir: pod.dir().to_path_buf(),
            namespaces,
            shm,
            supervisor: Some(launched.supervisor),
            pod_init: launched.pod_init,
            network,
        };
        self.persist(record.clone(), None).await?;
        timer.done("commit");
        fp.check("sandbox.run.reply")?;
        debug!(pid = launched.supervisor.pid, steps = %timer.summary(), "sandbox ready");
        Ok(record)
    }

    fn find_by_name(&self, key: &str) -> Option<SandboxRecord> {
        let map = self.inner.sandboxes.read().expect("sandboxes lock");
        map.values().find_map(|s| {
            let rec = s.record.lock().expect("sandbox record lock");
            (rec.spec.metadata.name_key() == key).then(|| rec.clone())
        })
    }
}

fn create_dir(path: &std::path::Path) -> Result<(), Error> {
    std::fs::create_dir(path).map_err(|source| Error::CreateDir { path: path.into(), source })
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
