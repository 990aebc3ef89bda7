//! How exits reach the records: a task per running container waits on its pidfd, then asks
//! the pod's supervisor what became of it (exit code, signal, finish time, recorded by the
//! supervisor when it reaped the process, also while the daemon was away). At daemon
//! start every record is loaded and the containers of live pods are refreshed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use tracing::{info, warn};

use super::spec::SANDBOX_ANNOTATION;
use super::{Container, ContainerRecord, ContainerState, Containers, Error, ExitReason, records};
use crate::cgroups;
use crate::ids::SandboxId;
use crate::supervisor::{Client, Identity, Proc};

impl Containers {
    /// Waits for a running container's process to exit and records how it ended.
    pub(super) fn watch(&self, c: Arc<Container>) {
        let rec = c.snapshot();
        let Some(proc) = rec.init.and_then(Proc::open) else {
            // Already gone: learn how it ended now.
            let containers = self.clone();
            tokio::spawn(async move { containers.refresh_pod(&rec.sandbox_id).await });
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            proc.exited().await;
            let Some(inner) = weak.upgrade() else { return };
            Containers { inner }.refresh_pod(&rec.sandbox_id).await;
        });
    }

    /// Asks a pod's supervisor for its containers' states and records the exits. When the
    /// supervisor is gone, containers that were running are recorded as exited.
    pub(super) async fn refresh_pod(&self, sandbox: &SandboxId) {
        let containers = self.of_pod(sandbox);
        let states = match self.pod_of(sandbox) {
            Ok(pod) => Client::new(&pod).container_states().await.ok(),
            Err(_) => None,
        };
        for c in containers {
            let rec = c.snapshot();
            if !rec.state.may_run() {
                continue;
            }
            let state = states.as_ref().map(|s| s.iter().find(|s| s.id == rec.id.as_str()));
            let updated = match state {
                Some(Some(s)) if s.exited => c.update(|r| {
                    r.state = ContainerState::Exited;
                    r.exit_code = s.exit_code;
                    r.finished_at = s.finished_at;
                    r.reason = Some(exit_reason(s.exit_code, &r.cgroup));
                }),
                // Started while the daemon was away (a start it did not see through):
                // the supervisor's word is the truth.
                Some(Some(s)) if s.started_at != 0 && rec.state == ContainerState::Created => {
                    let updated = c.update(|r| {
                        r.state = ContainerState::Running;
                        r.started_at = s.started_at;
                    });
                    info!(container.id = %updated.id, "container found running");
                    c.start_interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) = self.persist(&updated).await {
                        warn!(container.id = %updated.id, error = %e, "record container start");
                    }
                    self.watch(c.clone());
                    continue;
                }
                Some(Some(_)) => continue,
                // The supervisor does not know it, or is gone: so is the process, and
                // nothing would reap what it left behind.
                _ => {
                    if rec.init.and_then(Proc::open).is_some() {
                        continue;
                    }
                    let cgroup = rec.cgroup.clone();
                    tokio::task::spawn_blocking(move || cgroups::kill_all(&cgroup))
                        .await
                        .expect("cgroup task panicked");
                    c.update(|r| {
                        r.state = ContainerState::Exited;
                        r.exit_code = 255;
                        r.finished_at = crate::clock::now_ns();
                        r.reason = Some(ExitReason::Error);
                        r.message = "the pod's supervisor is gone; exit status unknown".into();
                    })
                }
            };
            info!(container.id = %updated.id, code = updated.exit_code, "container exited");
            if let Err(e) = self.persist(&updated).await {
                warn!(container.id = %updated.id, error = %e, "record container exit");
            }
        }
    }

    /// The supervisor of `sandbox` died: every container of the pod that may still run is
    /// killed (whatever is left in its cgroup; its init got SIGKILL from the kernel when
    /// its parent died) and recorded as exited, saying why.
    pub async fn supervisor_gone(&self, sandbox: &SandboxId) {
        for c in self.of_pod(sandbox) {
            let _op = c.op.lock().await;
            let rec = c.snapshot();
            // Also for a container already recorded as exited: with PID mode POD or NODE
            // its other processes outlive its init.
            let cgroup = rec.cgroup.clone();
            let emptied = tokio::task::spawn_blocking(move || cgroups::kill_all(&cgroup))
                .await
                .expect("cgroup task panicked");
            if !emptied {
                warn!(container.id = %rec.id, cgroup = %rec.cgroup, "processes left in the container's cgroup");
            }
            if !rec.state.may_run() {
                continue;
            }
            if let Some(proc) = rec.init.and_then(Proc::open) {
                let _ = proc.signal(rustix::process::Signal::KILL);
                proc.wait_exit(std::time::Duration::from_secs(5)).await;
            }
            let updated = c.update(|r| {
                r.state = ContainerState::Exited;
                r.exit_code = 137;
                r.finished_at = crate::clock::now_ns();
                r.reason = Some(ExitReason::Error);
                r.message = "the pod's supervisor exited; the container was killed with it".into();
            });
            warn!(container.id = %updated.id, sandbox.id = %sandbox, "container killed: its pod's supervisor exited");
            if let Err(e) = self.persist(&updated).await {
                warn!(container.id = %updated.id, error = %e, "record container exit");
            }
        }
    }

    /// Removes what a container no record explains left behind: a create that a crash
    /// interrupted before its record was committed (its rootfs, its config.json naming its
    /// cgroup and pod, and from there its processes, cgroup and libcontainer state).
    async fn sweep_orphans(&self) -> Result<(), Error> {
        for id in self.inner.images.rootfs_owners().await? {
            if self.inner.map.read().expect("containers lock").contains_key(id.as_str()) {
                continue;
            }
            warn!(container.id = %id, "removing a container no record explains (an interrupted create)");
            let config = self.inner.layout.container(&id).config();
            let spec: Option<oci_spec::runtime::Spec> =
                std::fs::read(&config).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let cgroup = spec.as_ref().and_then(|s| s.linux().as_ref()?.cgroups_path().clone());
            let sandbox = spec
                .as_ref()
                .and_then(|s| s.annotations().as_ref()?.get(SANDBOX_ANNOTATION).cloned())
                .and_then(|s| SandboxId::parse(&s).ok());
            if let (Some(cgroup), Some(sandbox), Ok(cid)) =
                (cgroup, sandbox, crate::ids::ContainerId::parse(&id))
            {
                // First: the supervisor answers after a create still in flight (the
                // crash came while libcontainer worked), so its init is in the cgroup
                // before the cgroup is emptied.
                let pod = self.inner.layout.pod(&sandbox);
                if pod.dir().is_dir() {
                    let _ = Client::new(&pod).forget_container(&cid).await;
                }
                let cgroup = cgroup.to_string_lossy().into_owned();
                let removed = tokio::task::spawn_blocking({
                    let cgroup = cgroup.clone();
                    move || {
                        cgroups::kill_all(&cgroup);
                        cgroups::remove(&cgroup)
                    }
                })
                .await
                .expect("cgroup task panicked");
                if let Err(e) = removed {
                    warn!(container.id = %id, error = %e, "cgroup of an orphan container left");
                }
                let _ = std::fs::remove_dir_all(pod.containers().join(&id));
            }
            self.inner.images.unmount_rootfs(&id).await?;
        }
        Ok(())
    }

    /// A CreateContainer commits its record while libcontainer works, so a crash can leave
    /// one that names no init (also when the lazy commit of its start was lost). A live
    /// pod's supervisor decides: it made the container (its create is synchronous, so it
    /// answers after any create in flight) and the record gets the init it names, or it
    /// did not, and the record goes; the orphan sweep then removes the rest, as for a
    /// create interrupted before its commit. In a pod whose supervisor is gone the record
    /// stays, to be recorded as exited with the pod's other containers.
    async fn complete_creates(
        &self,
        recs: Vec<ContainerRecord>,
        live: &HashSet<SandboxId>,
    ) -> Vec<ContainerRecord> {
        let mut out = Vec::with_capacity(recs.len());
        let mut states = HashMap::new();
        for mut rec in recs {
            let pod = &rec.sandbox_id;
            if rec.init.is_some() || !live.contains(pod) {
                out.push(rec);
                continue;
            }
            if !states.contains_key(pod) {
                let known = match self.pod_of(pod) {
                    Ok(layout) => Client::new(&layout).container_states().await.ok(),
                    Err(_) => None,
                };
                states.insert(pod.clone(), known);
            }
            let Some(known) = &states[pod] else {
                out.push(rec);
                continue;
            };
            let init = known
                .iter()
                .find(|s| s.id == rec.id.as_str())
                .and_then(|s| Identity::from_proto(s.init));
            let store = self.inner.store.clone();
            let r = rec.clone();
            let done = match init {
                Some(init) => {
                    info!(container.id = %rec.id, pid = init.pid, "init of an interrupted create found");
                    rec.init = Some(init);
                    out.push(rec);
                    tokio::task::spawn_blocking(move || {
                        records::put(&store, &ContainerRecord { init: Some(init), ..r })
                    })
                }
                None => {
                    warn!(container.id = %r.id, "removing the record of an interrupted create");
                    tokio::task::spawn_blocking(move || records::delete(&store, &r))
                }
            };
            // Failed, the next start decides again.
            if let Err(e) = done.await.expect("state store task panicked") {
                warn!(error = %e, "record an interrupted create");
            }
        }
        out
    }

    /// Loads container records at start; containers of live pods (`live`) are refreshed
    /// and watched, those of every other pod are killed and recorded as exited; what no
    /// record explains is removed.
    pub(crate) async fn recover(&self, live: &HashSet<SandboxId>) -> Result<(), Error> {
        let store = self.inner.store.clone();
        let recs = tokio::task::spawn_blocking(move || records::all(&store))
            .await
            .expect("state store task panicked")?;
        let mut pods = BTreeSet::new();
        for rec in self.complete_creates(recs, live).await {
            pods.insert(rec.sandbox_id.clone());
            let c = Arc::new(self.container(rec.clone()));
            self.inner.map.write().expect("containers lock").insert(rec.id.clone(), c);
        }
        self.sweep_orphans().await?;
        for pod in pods {
            if !live.contains(&pod) {
                self.supervisor_gone(&pod).await;
                continue;
            }
            self.refresh_pod(&pod).await;
            for c in self.of_pod(&pod) {
                if c.snapshot().state == ContainerState::Running {
                    self.watch(c);
                }
            }
        }
        Ok(())
    }
}

/// Completed for exit 0; OOMKilled when the cgroup saw an OOM kill; Error otherwise.
fn exit_reason(code: i32, cgroup: &str) -> ExitReason {
    if cgroups::oom_kills(cgroup) > 0 {
        ExitReason::OomKilled
    } else if code == 0 {
        ExitReason::Completed
    } else {
        ExitReason::Error
    }
}
