//! RemovePodSandbox: once stopped (and its containers removed, by the runtime), delete
//! the pod dir and the record. Idempotent.

use super::{Error, Sandbox, Sandboxes};

impl Sandboxes {
    /// Removes a stopped sandbox whose lock ([`Sandbox::lock`]) the caller holds.
    pub async fn remove_locked(&self, sandbox: &Sandbox) -> Result<(), Error> {
        let rec = sandbox.snapshot();
        super::mounts::remove_pod_dir(&rec.pod_dir)?;
        self.unpersist(rec.clone()).await?;
        self.inner.map.write().expect("sandboxes lock").remove(&rec.id);
        Ok(())
    }
}
