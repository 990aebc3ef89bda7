//! StopPodSandbox: stop the supervisor (SIGTERM, SIGKILL after the grace period), unmount
//! /dev/shm and unpin the namespaces (the kernel then removes the pod's veth pair in the
//! background), remove the pod's hostPorts and free its IP lease (as containerd does).
//! Idempotent; an unknown sandbox counts as stopped.

use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tracing::{info, warn};

use super::run::kill_and_wait;
use super::{Error, Sandbox, SandboxRecord, SandboxState, mounts};
use crate::Runtime;
use crate::ids::SandboxId;
use crate::supervisor::Proc;

impl Runtime {
    /// Runs in its own task, so a caller that goes away does not cut a teardown short.
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), Error> {
        let sandbox = match self.resolve(id) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let runtime = self.clone();
        tokio::spawn(async move {
            let _op = sandbox.op.lock().await;
            runtime.stop_locked(&sandbox).await
        })
        .await
        .expect("StopPodSandbox task panicked")
    }

    /// Stops a sandbox whose `op` lock the caller holds.
    pub(super) async fn stop_locked(&self, sandbox: &Sandbox) -> Result<(), Error> {
        let rec = sandbox.snapshot();
        self.stop_pod_containers(&rec.id).await;
        let mut errors = teardown(&rec, self.inner.opts.stop_grace).await;
        let mut released = None;
        if let Some(net) = &rec.network {
            match self.teardown_network(&rec.id, net, &rec.spec.port_mappings).await {
                Ok(()) => released = Some(net.ip),
                Err(e) => errors.push(e),
            }
        }
        let state = if errors.is_empty() { SandboxState::NotReady } else { SandboxState::Unknown };
        let updated = {
            let mut r = sandbox.record.lock().expect("sandbox record lock");
            r.state = state;
            if released.is_some() {
                r.network = None;
            }
            r.clone()
        };
        if updated != rec {
            self.persist(updated, released).await?;
        }
        if errors.is_empty() { Ok(()) } else { Err(Error::Teardown { id: rec.id, errors }) }
    }

    /// Marks a sandbox NotReady when its supervisor exits on its own.
    pub(crate) fn watch(&self, id: SandboxId, sandbox: Arc<Sandbox>) {
        let supervisor = sandbox.record.lock().expect("sandbox record lock").supervisor;
        let Some(proc) = supervisor.and_then(Proc::open) else {
            return;
        };
        let runtime = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            proc.exited().await;
            let Some(inner) = runtime.upgrade() else {
                return;
            };
            let runtime = Runtime { inner };
            let _op = sandbox.op.lock().await;
            if runtime.get(&id).is_none() {
                return; // removed meanwhile
            }
            let updated = {
                let mut r = sandbox.record.lock().expect("sandbox record lock");
                if r.state != SandboxState::Ready {
                    return;
                }
                r.state = SandboxState::NotReady;
                r.clone()
            };
            warn!(sandbox.id = %id, pid = proc.identity().pid, "pod supervisor exited; sandbox not ready");
            if let Err(e) = runtime.persist(updated, None).await {
                warn!(sandbox.id = %id, error = %e, "record supervisor exit");
            }
        });
    }
}

/// Ordered, best-effort teardown of a sandbox's processes and mounts. Keeps going past
/// failures and returns them all; things already gone count as done.
pub(super) async fn teardown(rec: &SandboxRecord, grace: Duration) -> Vec<Error> {
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
    errors
}
