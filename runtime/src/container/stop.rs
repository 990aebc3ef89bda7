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

    /// Sends the stop signal and waits up to `timeout` for the container to exit.
    ///
    /// A container with a PID namespace of its own runs its program as that namespace's
    /// init, and the kernel drops a signal an init has no handler for. A program stopped
    /// the instant it started (before it installed its handler) would then wait out the
    /// whole grace period. So while the init has no handler for the stop signal, podbay
    /// watches its caught-signal mask (`SigCgt` in /proc/PID/status) and sends the signal
    /// again once the handler is there: the stop stays graceful, and prompt. A program that
    /// never handles it waits the grace period, as with any runtime.
    async fn stop_gracefully(
        &self,
        client: &Client,
        rec: &super::ContainerRecord,
        proc: &Proc,
        timeout: Duration,
    ) -> bool {
        let pid = proc.identity().pid;
        let sig = rec.stop_signal;
        let own_pid_ns = matches!(rec.spec.security.pid_mode, PidMode::Container);
        let mut caught = !own_pid_ns || catches(pid, sig) != Some(false);
        if client.signal_container(&rec.id, sig, false).await.is_err() {
            return false;
        }
        if caught {
            return proc.wait_exit(timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if proc.wait_exit(Duration::from_millis(10)).await {
                return true;
            }
            if !caught && catches(pid, sig) == Some(true) {
                caught = true;
                if client.signal_container(&rec.id, sig, false).await.is_err() {
                    return false;
                }
            }
        }
        false
    }

    pub(super) async fn stop_locked(&self, c: &Container, timeout: Duration) -> Result<(), Error> {
        let rec = c.snapshot();
        if !rec.state.may_run() {
            return Ok(());
        }
        self.inner.failpoints.check("container.stop.signal")?;
        let proc = rec.init.and_then(Proc::open);
        match (self.pod_of(&rec.sandbox_id).ok(), proc.as_ref()) {
            (Some(pod), Some(proc)) => {
                let client = Client::new(&pod);
                let graceful = !timeout.is_zero() && rec.state == ContainerState::Running;
                let exited = graceful && self.stop_gracefully(&client, &rec, proc, timeout).await;
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
        self.inner.failpoints.check("container.stop.commit")?;
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

/// Whether a process has a handler for `sig` (its `SigCgt` mask); None when it is gone.
fn catches(pid: u32, sig: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim();
    let mask = u64::from_str_radix(mask, 16).ok()?;
    Some(sig > 0 && sig <= 64 && mask & (1 << (sig - 1)) != 0)
}
