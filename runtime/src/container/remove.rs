//! RemoveContainer: stop it, then delete its cgroup, libcontainer state, rootfs and
//! record. Idempotent: an unknown container counts as removed. RemovePodSandbox removes
//! every container of the pod, then the pod's cgroup.

use std::sync::Arc;
use std::time::Duration;

use super::create::destroy_runtime_state;
use super::{Container, Containers, Error, records};
use crate::cgroups;
use crate::sandbox::SandboxRecord;

impl Containers {
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        let c = match self.resolve(id) {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let containers = self.clone();
        tokio::spawn(async move { containers.remove_resolved(c).await })
            .await
            .expect("RemoveContainer task panicked")
    }

    async fn remove_resolved(&self, c: Arc<Container>) -> Result<(), Error> {
        let _op = c.op.lock().await;
        let rec = c.snapshot();
        if !self.contains(&rec.id) {
            return Ok(());
        }
        self.stop_locked(&c, Duration::ZERO).await?;
        let fp = &self.inner.failpoints;
        let pod = self.inner.layout.pod(&rec.sandbox_id);
        fp.check("container.remove.runtime")?;
        destroy_runtime_state(&pod, &rec.id, &rec.cgroup, rec.init).await?;
        fp.check("container.remove.rootfs")?;
        self.inner.images.unmount_rootfs(rec.id.as_str()).await?;
        fp.check("container.remove.commit")?;
        let (store, doomed) = (self.inner.store.clone(), rec.clone());
        tokio::task::spawn_blocking(move || records::delete(&store, &doomed))
            .await
            .expect("state store task panicked")?;
        self.inner.map.write().expect("containers lock").remove(&rec.id);
        c.emit(super::EventKind::Deleted, &c.snapshot());
        Ok(())
    }

    /// Every container of a pod being removed, then the pod's cgroup when podbay made it
    /// (and podbay's default parent once no pod uses it).
    pub async fn remove_all_in(&self, sandbox: &SandboxRecord) -> Result<(), Error> {
        for c in self.of_pod(&sandbox.id) {
            self.remove_resolved(c).await?;
        }
        // Whatever no record explains goes too: every container cgroup below the pod's
        // (and the pod's own, when podbay made it).
        let parent = sandbox.spec.cgroup_parent.clone().filter(|p| !p.is_empty());
        let pod = cgroups::pod_cgroup(parent.as_deref(), sandbox.id.as_str());
        tokio::task::spawn_blocking(move || match parent {
            None => {
                cgroups::remove_tree(&pod)?;
                cgroups::remove_default_parent();
                Ok(())
            }
            Some(_) => {
                cgroups::remove_children(&pod, |name| crate::ids::ContainerId::parse(name).is_ok())
            }
        })
        .await
        .expect("cgroup task panicked")?;
        Ok(())
    }
}
