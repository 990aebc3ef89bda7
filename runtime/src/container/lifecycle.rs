//! StartContainer, StopContainer, RemoveContainer, and how exits reach the records: a
//! task per running container waits on its pidfd, then asks the pod's supervisor what
//! became of it (exit code, signal, finish time, recorded by the supervisor when it
//! reaped the process, also while the daemon was away).

use std::sync::Arc;
use std::time::Duration;

use podbay_proto::shim::v1::{SignalContainerRequest, StartContainerRequest, request, response};
use tracing::{info, warn};

use super::create::destroy_runtime_state;
use super::{Container, ContainerRecord, ContainerState, Error, ExitReason};
use crate::Runtime;
use crate::ids::{Lookup, SandboxId};
use crate::layout::PodLayout;
use crate::supervisor::{self, Proc};

impl Runtime {
    /// Finds a container by full id or unique id prefix.
    pub(crate) fn container(&self, id: &str) -> Result<Arc<Container>, Error> {
        let map = self.inner.containers.read().expect("containers lock");
        crate::ids::resolve(&map, id).map_err(|e| match e {
            Lookup::NotFound => Error::NotFound { id: id.into() },
            Lookup::Ambiguous => Error::Ambiguous { prefix: id.into() },
        })
    }

    fn pod_of(&self, rec: &ContainerRecord) -> Option<PodLayout> {
        self.get(&rec.sandbox_id).map(|s| PodLayout::from_dir(&s.snapshot().pod_dir))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Error> {
        let c = self.container(id)?;
        let runtime = self.clone();
        tokio::spawn(async move {
            let _op = c.op.lock().await;
            let rec = c.snapshot();
            if !rec.state.can_start() {
                return Err(Error::State { id: rec.id, state: rec.state, what: "cannot start" });
            }
            let pod = runtime
                .pod_of(&rec)
                .ok_or(Error::SandboxNotReady { id: rec.sandbox_id.clone() })?;
            let req =
                request::Kind::StartContainer(StartContainerRequest { id: rec.id.to_string() });
            let started_at = match supervisor::call(&pod, req).await {
                Ok(response::Kind::StartContainer(r)) => r.started_at,
                Ok(_) => 0,
                Err(supervisor::Error::Refused(message)) => {
                    // A container that cannot start is over: record why (containerd does).
                    let rec = c.update(|r| {
                        r.state = ContainerState::Exited;
                        r.reason = Some(ExitReason::Error);
                        r.exit_code = 128;
                        r.message = message.clone();
                        r.finished_at = crate::now_ns();
                    });
                    runtime.persist_container(&rec).await?;
                    return Err(Error::Supervisor { id: rec.id, message });
                }
                Err(e) => return Err(e.into()),
            };
            let rec = c.update(|r| {
                r.state = ContainerState::Running;
                r.started_at = started_at;
            });
            runtime.persist_container(&rec).await?;
            runtime.watch_container(c.clone());
            Ok(())
        })
        .await
        .expect("StartContainer task panicked")
    }

    /// Waits for a running container's process to exit and records how it ended.
    pub(crate) fn watch_container(&self, c: Arc<Container>) {
        let rec = c.snapshot();
        let Some(proc) = rec.init.and_then(Proc::open) else {
            // Already gone: learn how it ended now.
            let runtime = self.clone();
            tokio::spawn(async move { runtime.refresh_pod(&rec.sandbox_id).await });
            return;
        };
        let runtime = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            proc.exited().await;
            let Some(inner) = runtime.upgrade() else { return };
            Runtime { inner }.refresh_pod(&rec.sandbox_id).await;
        });
    }

    /// Asks a pod's supervisor for its containers' states and records the exits. When the
    /// supervisor is gone, containers that were running are recorded as exited.
    pub(crate) async fn refresh_pod(&self, sandbox: &SandboxId) {
        let containers = self.containers_of(sandbox);
        let pod = self.get(sandbox).map(|s| PodLayout::from_dir(&s.snapshot().pod_dir));
        let states = match &pod {
            Some(pod) => supervisor::container_states(pod).await.ok(),
            None => None,
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
                Some(Some(_)) => continue,
                // The supervisor does not know it, or is gone: so is the process.
                _ => {
                    if rec.init.and_then(Proc::open).is_some() {
                        continue;
                    }
                    c.update(|r| {
                        r.state = ContainerState::Exited;
                        r.exit_code = 255;
                        r.finished_at = crate::now_ns();
                        r.reason = Some(ExitReason::Error);
                        r.message = "the pod's supervisor is gone; exit status unknown".into();
                    })
                }
            };
            info!(container.id = %updated.id, code = updated.exit_code, "container exited");
            if let Err(e) = self.persist_container(&updated).await {
                warn!(container.id = %updated.id, error = %e, "record container exit");
            }
        }
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout`. Idempotent.
    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let c = self.container(id)?;
        let runtime = self.clone();
        tokio::spawn(async move {
            let _op = c.op.lock().await;
            runtime.stop_container_locked(&c, timeout).await
        })
        .await
        .expect("StopContainer task panicked")
    }

    async fn stop_container_locked(&self, c: &Container, timeout: Duration) -> Result<(), Error> {
        let rec = c.snapshot();
        if !rec.state.may_run() {
            return Ok(());
        }
        let proc = rec.init.and_then(Proc::open);
        if let (Some(pod), Some(proc)) = (self.pod_of(&rec), proc.as_ref()) {
            let signal = |sig: i32, all: bool| {
                request::Kind::SignalContainer(SignalContainerRequest {
                    id: rec.id.to_string(),
                    signal: sig,
                    all,
                })
            };
            let graceful = !timeout.is_zero() && rec.state == ContainerState::Running;
            let exited = graceful
                && supervisor::call(&pod, signal(rec.stop_signal, false)).await.is_ok()
                && proc.wait_exit(timeout).await;
            if !exited {
                // In a PID namespace of its own, the kernel kills every process of the
                // container with its init; otherwise every process of its cgroup is
                // killed (libcontainer's kill-all, which freezes the cgroup first).
                let all = !matches!(rec.spec.security.pid_mode, super::PidMode::Container);
                if let Err(e) = supervisor::call(&pod, signal(libc::SIGKILL, all)).await {
                    warn!(container.id = %rec.id, error = %e, "SIGKILL through the supervisor");
                    let _ = proc.signal(rustix::process::Signal::KILL);
                }
                proc.wait_exit(Duration::from_secs(10)).await;
            }
        } else if let Some(proc) = proc.as_ref() {
            let _ = proc.signal(rustix::process::Signal::KILL);
            proc.wait_exit(Duration::from_secs(10)).await;
        }
        self.refresh_pod(&rec.sandbox_id).await;
        let rec = c.snapshot();
        if rec.state == ContainerState::Created {
            // Never started: it ends here.
            let rec = c.update(|r| {
                r.state = ContainerState::Exited;
                r.exit_code = 137;
                r.finished_at = crate::now_ns();
                r.reason = Some(ExitReason::Error);
            });
            self.persist_container(&rec).await?;
        }
        Ok(())
    }

    /// Removes a container: stops it, deletes its cgroup, state, rootfs and record.
    /// Idempotent: an unknown container counts as removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let runtime = self.clone();
        tokio::spawn(async move { runtime.remove_container_resolved(c).await })
            .await
            .expect("RemoveContainer task panicked")
    }

    pub(crate) async fn remove_container_resolved(&self, c: Arc<Container>) -> Result<(), Error> {
        let _op = c.op.lock().await;
        let rec = c.snapshot();
        if !self.inner.containers.read().expect("containers lock").contains_key(&rec.id) {
            return Ok(());
        }
        self.stop_container_locked(&c, Duration::ZERO).await?;
        let pod = self
            .get(&rec.sandbox_id)
            .map(|s| PodLayout::from_dir(&s.snapshot().pod_dir))
            .unwrap_or_else(|| self.inner.layout.pod(&rec.sandbox_id));
        destroy_runtime_state(&pod, &rec.id, &rec.cgroup, rec.init).await?;
        self.unmount_rootfs(rec.id.as_str()).await?;
        let doomed = rec.clone();
        self.blocking(move |rt| rt.inner.store.delete_container(&doomed)).await?;
        self.inner.containers.write().expect("containers lock").remove(&rec.id);
        Ok(())
    }

    /// Every container of a sandbox.
    pub(crate) fn containers_of(&self, sandbox: &SandboxId) -> Vec<Arc<Container>> {
        self.inner
            .containers
            .read()
            .expect("containers lock")
            .values()
            .filter(|c| c.record.lock().expect("container record lock").sandbox_id == *sandbox)
            .cloned()
            .collect()
    }

    /// StopPodSandbox: every container of the pod is killed (as containerd does, with
    /// no grace period: kubelet stops them gracefully before).
    pub(crate) async fn stop_pod_containers(&self, sandbox: &SandboxId) {
        for c in self.containers_of(sandbox) {
            let _op = c.op.lock().await;
            if let Err(e) = self.stop_container_locked(&c, Duration::ZERO).await {
                warn!(container.id = %c.snapshot().id, error = %e, "stop container of a stopping pod");
            }
        }
    }

    /// RemovePodSandbox: every container of the pod is removed, then the pod's cgroup.
    pub(crate) async fn remove_pod_containers(
        &self,
        sandbox: &crate::sandbox::SandboxRecord,
    ) -> Result<(), Error> {
        for c in self.containers_of(&sandbox.id) {
            self.remove_container_resolved(c).await?;
        }
        if sandbox.spec.cgroup_parent.as_deref().is_none_or(str::is_empty) {
            let cgroup = super::create::pod_cgroup(sandbox);
            tokio::task::spawn_blocking(move || {
                super::create::remove_cgroup(&cgroup)
                    .map_err(|reason| Error::Cgroup { cgroup: cgroup.clone(), reason })
            })
            .await
            .expect("cgroup task panicked")?;
            remove_default_parent();
        }
        Ok(())
    }

    /// Loads container records at start; containers of live pods are refreshed and
    /// watched, the others are recorded as exited.
    pub(crate) async fn recover_containers(&self) -> Result<(), Error> {
        let records = self.blocking(|rt| rt.inner.store.containers()).await?;
        let mut pods = std::collections::BTreeSet::new();
        for rec in records {
            pods.insert(rec.sandbox_id.clone());
            let c = Arc::new(Container::new(rec.clone()));
            self.inner.containers.write().expect("containers lock").insert(rec.id.clone(), c);
        }
        for pod in pods {
            self.refresh_pod(&pod).await;
            for c in self.containers_of(&pod) {
                if c.snapshot().state == ContainerState::Running {
                    self.watch_container(c);
                }
            }
        }
        Ok(())
    }
}

/// Removes podbay's default cgroup parent where no pod uses it any more (rmdir of a
/// cgroup with children fails at once, so a parent in use stays).
fn remove_default_parent() {
    let _parent = super::create::CGROUP_PARENT_LOCK.lock().expect("cgroup parent lock");
    for dir in super::create::cgroup_dirs(super::create::DEFAULT_CGROUP_PARENT) {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Completed for exit 0; OOMKilled when the cgroup saw an OOM kill; Error otherwise.
fn exit_reason(code: i32, cgroup: &str) -> ExitReason {
    if super::stats::oom_kills(cgroup) > 0 {
        ExitReason::OomKilled
    } else if code == 0 {
        ExitReason::Completed
    } else {
        ExitReason::Error
    }
}
