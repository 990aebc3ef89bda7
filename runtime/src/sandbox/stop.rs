//! StopPodSandbox: stop the supervisor (SIGTERM, SIGKILL after the grace period), unmount
//! /dev/shm and unpin the namespaces (the kernel then removes the pod's veth pair in the
//! background), detach the pod dir's own mount, remove the pod's hostPorts and free its IP
//! lease (as containerd does).
//! Idempotent. The runtime stops the pod's containers first, under the same lock.

use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tracing::{info, warn};

use super::{Error, Sandbox, SandboxRecord, SandboxState, Sandboxes, mounts};
use crate::failpoint::Failpoints;
use crate::supervisor::{Proc, kill_and_wait};

impl Sandboxes {
    /// Stops a sandbox whose lock ([`Sandbox::lock`]) the caller holds.
    pub async fn stop_locked(&self, sandbox: &Sandbox) -> Result<(), Error> {
        let rec = sandbox.snapshot();
        let fp = &self.inner.failpoints;
        let mut errors = teardown(&rec, self.inner.settings.stop_grace, fp).await;
        let mut released = None;
        if let Some(net) = &rec.network {
            match self.inner.network.teardown(&rec.id, net, &rec.spec.port_mappings).await {
                Ok(()) => released = Some(net.ip),
                Err(e) => errors.push(e.into()),
            }
        }
        let state = if errors.is_empty() { SandboxState::NotReady } else { SandboxState::Unknown };
        let updated = sandbox.update(|r| {
            r.state = state;
            if released.is_some() {
                r.network = None;
            }
        });
        if updated != rec {
            self.persist(updated, released).await?;
        }
        if errors.is_empty() { Ok(()) } else { Err(Error::Teardown { id: rec.id, errors }) }
    }

    /// Marks a sandbox NotReady when its supervisor exits on its own.
    pub(super) fn watch(&self, sandbox: Arc<Sandbox>) {
        let rec = sandbox.snapshot();
        let Some(proc) = rec.supervisor.and_then(Proc::open) else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            proc.exited().await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let sandboxes = Sandboxes { inner };
            let _op = sandbox.lock().await;
            if !sandboxes.contains(&rec.id) {
                return; // removed meanwhile
            }
            let mut was_ready = false;
            let updated = sandbox.update(|r| {
                was_ready = r.state == SandboxState::Ready;
                if was_ready {
                    r.state = SandboxState::NotReady;
                }
            });
            if !was_ready {
                return;
            }
            warn!(sandbox.id = %rec.id, pid = proc.identity().pid, "pod supervisor exited; sandbox not ready");
            if let Err(e) = sandboxes.persist(updated, None).await {
                warn!(sandbox.id = %rec.id, error = %e, "record supervisor exit");
            }
            let _ = sandboxes.inner.exits.send(rec.id.clone());
        });
    }
}

/// Ordered, best-effort teardown of a sandbox's processes and mounts. Keeps going past
/// failures and returns them all; things already gone count as done.
pub(super) async fn teardown(rec: &SandboxRecord, grace: Duration, fp: &Failpoints) -> Vec<Error> {
    let mut errors = Vec::new();
    if let Some(proc) = rec.supervisor.and_then(Proc::open) {
        info!(sandbox.id = %rec.id, pid = proc.identity().pid, "stopping pod supervisor");
        let stopped = match proc.signal(Signal::TERM) {
            Ok(()) => proc.wait_exit(grace).await,
            Err(e) => {
                errors.push(e.into());
                false
            }
        };
        if !stopped {
            if let Err(e) = proc.signal(Signal::KILL) {
                errors.push(e.into());
            }
            proc.wait_exit(Duration::from_secs(5)).await;
        }
    }
    if let Some(init) = rec.pod_init {
        kill_and_wait(init).await;
    }
    if rec.shm.starts_with(&rec.pod_dir)
        && let Err(e) = mounts::unmount(&rec.shm)
    {
        errors.push(e);
    }
    for path in rec.namespaces.values() {
        if let Err(e) = mounts::unmount(path) {
            errors.push(e);
        }
    }
    // A stopped pod holds no mount: its dir's own goes last (no container is made in it
    // again; RemovePodSandbox removes the dir).
    if let Err(e) = fp.check("sandbox.stop.unbind") {
        errors.push(e.into());
    } else if let Err(e) = mounts::unbind_pod_dir(&rec.pod_dir) {
        errors.push(e);
    }
    errors
}
