//! StopContainer: the container's stop signal (the image's STOPSIGNAL, else SIGTERM) to its
//! init, then SIGKILL after the timeout. Idempotent. StopPodSandbox stops every container
//! of the pod with no grace period (kubelet stops them gracefully before, as with
//! containerd).

use std::time::Duration;

use rustix::process::Signal;
use tracing::warn;

use super::{Container, ContainerState, Containers, Error, ExitReason, PidMode};
use crate::ids::SandboxId;
use crate::supervisor::{Client, Proc};

impl Containers {
    /// Stops a container: its stop signal, then SIGKILL after `timeout`.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let c = self.resolve(id)?;
        let containers = self.clone();
        tokio::spawn(async move {
            let _op = c.op.lock().await;
            containers.stop_locked(&c, timeout).await
        })
        .await
        .expect("StopContainer task panicked")
    }

    /// Every container of a stopping pod is killed.
    pub async fn stop_all_in(&self, sandbox: &SandboxId) {
        for c in self.of_pod(sandbox) {
            let _op = c.op.lock().await;
            if let Err(e) = self.stop_locked(&c, Duration::ZERO).await {
                warn!(container.id = %c.snapshot().id, error = %e, "stop container of a stopping pod");
            }
        }
    }

    pub(super) async fn stop_locked(&self, c: &Container, timeout: Duration) -> Result<(), Error> {
        let rec = c.snapshot();
        if !rec.state.may_run() {
            return Ok(());
        }
        let proc = rec.init.and_then(Proc::open);
        match (self.pod_of(&rec.sandbox_id).ok(), proc.as_ref()) {
            (Some(pod), Some(proc)) => {
                let client = Client::new(&pod);
                let graceful = !timeout.is_zero() && rec.state == ContainerState::Running;
                let exited = graceful
                    && client.signal_container(&rec.id, rec.stop_signal, false).await.is_ok()
                    && proc.wait_exit(timeout).await;
                if !exited {
                    // In a PID namespace of its own, the kernel kills every process of the
                    // container with its init; otherwise every process of its cgroup is
                    // killed (libcontainer's kill-all, which freezes the cgroup first).
                    let all = !matches!(rec.spec.security.pid_mode, PidMode::Container);
                    if let Err(e) = client.signal_container(&rec.id, libc::SIGKILL, all).await {
                        warn!(container.id = %rec.id, error = %e, "SIGKILL through the supervisor");
                        let _ = proc.signal(Signal::KILL);
                    }
                    proc.wait_exit(Duration::from_secs(10)).await;
                }
            }
            (None, Some(proc)) => {
                let _ = proc.signal(Signal::KILL);
                proc.wait_exit(Duration::from_secs(10)).await;
            }
            (_, None) => {}
        }
        self.refresh_pod(&rec.sandbox_id).await;
        if c.snapshot().state == ContainerState::Created {
            // Never started: it ends here.
            let rec = c.update(|r| {
                r.state = ContainerState::Exited;
                r.exit_code = 137;
                r.finished_at = crate::clock::now_ns();
                r.reason = Some(ExitReason::Error);
            });
            self.persist(&rec).await?;
        }
        Ok(())
    }
}
