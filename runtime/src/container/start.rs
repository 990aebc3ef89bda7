//! StartContainer: the pod's supervisor starts the created container (libcontainer's
//! start), and a task watches it until it exits.
//!
//! The call is answered as soon as the supervisor has started the process; the record's
//! commit (lazy: never fsynced, as the supervisor's word is the truth after a restart,
//! see `exits.rs`) and the exit watch follow under the container's lock, so the next call
//! on the container sees them done. Answering after them cost 0.2–0.35 ms per start.

use tracing::Instrument;

use super::{ContainerState, Containers, Error, ExitReason};
use crate::steps::StepTimer;
use crate::supervisor::{self, Client};

impl Containers {
    pub async fn start(&self, id: &str) -> Result<(), Error> {
        let arrived = std::time::Instant::now();
        let c = self.resolve(id)?;
        let containers = self.clone();
        let span = tracing::info_span!("start_container", container.id = %id);
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(
            async move {
                let _op = c.op.lock().await;
                let mut timer = StepTimer::since("start_container", arrived);
                timer.done("queue");
                let rec = c.snapshot();
                // The retry of a start a daemon crash interrupted (the process runs).
                if rec.state == ContainerState::Running
                    && c.start_interrupted.swap(false, std::sync::atomic::Ordering::Relaxed)
                {
                    return Ok(());
                }
                if !rec.state.can_start() {
                    return Err(Error::State {
                        id: rec.id,
                        state: rec.state,
                        what: "cannot start",
                    });
                }
                let fp = &containers.inner.failpoints;
                let pod = containers.pod_of(&rec.sandbox_id)?;
                fp.check("container.start.supervisor")?;
                let started_at = match Client::new(&pod).start_container(&rec.id).await {
                    Ok(at) => at,
                    Err(e @ supervisor::Error::Refused { .. }) => {
                        // A container that cannot start is over: record why (containerd does).
                        let rec = c.update(|r| {
                            r.state = ContainerState::Exited;
                            r.reason = Some(ExitReason::Error);
                            r.exit_code = 128;
                            r.message = e.to_string();
                            r.finished_at = crate::clock::now_ns();
                        });
                        containers.persist(&rec).await?;
                        return Err(Error::Supervisor { id: rec.id, source: e });
                    }
                    Err(e) => return Err(Error::Supervisor { id: rec.id, source: e }),
                };
                timer.done("supervisor");
                fp.check("container.start.commit")?;
                let rec = c.update(|r| {
                    r.state = ContainerState::Running;
                    r.started_at = started_at;
                });
                fp.check("container.start.reply")?;
                let _ = answer.send(());
                if let Err(e) = containers.persist_started(&rec).await {
                    // It runs: memory says so, and a restart learns it from the supervisor.
                    tracing::warn!(container.id = %rec.id, error = %e, "record a start");
                }
                timer.done("commit");
                containers.watch(c.clone());
                timer.done("watch");
                timer.observe(&containers.inner.steps);
                tracing::debug!(steps = %timer.summary(), "container started");
                Ok(())
            }
            .instrument(span),
        );
        if answered.await.is_ok() {
            return Ok(());
        }
        task.await.expect("StartContainer task panicked")
    }
}
