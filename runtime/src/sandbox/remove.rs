//! RemovePodSandbox: stop if needed, remove its containers and its cgroup, then delete
//! the pod dir and the record.
//! Idempotent; an unknown sandbox counts as removed.

use super::Error;
use crate::Runtime;

impl Runtime {
    /// Runs in its own task, so a caller that goes away does not cut a removal short.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), Error> {
        let sandbox = match self.resolve(id) {
            Ok(s) => s,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let runtime = self.clone();
        tokio::spawn(async move { runtime.remove_resolved(sandbox).await })
            .await
            .expect("RemovePodSandbox task panicked")
    }

    async fn remove_resolved(&self, sandbox: std::sync::Arc<super::Sandbox>) -> Result<(), Error> {
        let _op = sandbox.op.lock().await;
        if self.get(&sandbox.snapshot().id).is_none() {
            return Ok(()); // removed by a concurrent call
        }
        // Teardown is idempotent and cheap when already done, and it also catches
        // processes or mounts a NotReady record may still hold after a crash.
        self.stop_locked(&sandbox).await?;
        let rec = sandbox.snapshot();
        self.remove_pod_containers(&rec).await.map_err(|e| Error::Containers(Box::new(e)))?;
        match std::fs::remove_dir_all(&rec.pod_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::RemoveDir { path: rec.pod_dir.clone(), source: e });
            }
            _ => {}
        }
        let inner = self.inner.clone();
        let doomed = rec.clone();
        tokio::task::spawn_blocking(move || inner.store.delete_sandbox(&doomed))
            .await
            .expect("state store task panicked")?;
        self.inner.sandboxes.write().expect("sandboxes lock").remove(&rec.id);
        Ok(())
    }
}
