//! Daemon start: bring memory in line with the database and the run dir.
//!
//! - A Ready record whose supervisor still runs (same pid and start time, pod dir present,
//!   socket answers) stays Ready and is watched again.
//! - A Ready record whose supervisor is gone (it died, or the node rebooted and the run dir
//!   is empty) becomes NotReady; its leftover mounts are released.
//! - A pod dir that no record explains (a crash between start and commit) is torn down:
//!   its supervisor is stopped, its mounts released, the dir removed.
//! - Network: only Ready pods keep their IP lease; every other lease in the database is
//!   freed. The node network is then ensured with a firewall table holding exactly the
//!   live pods' hostPorts, and bridge ports no live pod explains are deleted.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::stop::teardown;
use super::{Error, Sandbox, SandboxRecord, SandboxState, mounts};
use crate::Runtime;
use crate::layout::{NsKind, PodLayout};
use crate::supervisor::{self, Proc};

impl Runtime {
    pub(crate) async fn recover(&self) -> Result<(), Error> {
        let records = {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.store.sandboxes())
                .await
                .expect("state store task panicked")?
        };
        let mut known = HashSet::new();
        let mut live = Vec::new();
        for mut rec in records {
            known.insert(rec.id.as_str().to_owned());
            let watch = rec.state == SandboxState::Ready && self.alive(&rec).await;
            let was = rec.clone();
            if rec.state == SandboxState::Ready && !watch {
                info!(sandbox.id = %rec.id, "supervisor gone; sandbox not ready");
                let errors = teardown(&rec, Duration::ZERO).await;
                rec.state =
                    if errors.is_empty() { SandboxState::NotReady } else { SandboxState::Unknown };
            }
            let mut released = None;
            if let Some(net) = &rec.network {
                if watch {
                    let pod = format!("{}/{}", rec.spec.metadata.namespace, rec.spec.metadata.name);
                    live.push((rec.id.clone(), pod, net.ip, rec.spec.port_mappings.clone()));
                } else {
                    // Its namespace, and with it the veth, is gone: so is the lease.
                    released = Some(net.ip);
                    rec.network = None;
                }
            }
            if rec != was {
                self.persist(rec.clone(), released).await?;
            }
            let id = rec.id.clone();
            let sandbox = Arc::new(Sandbox::new(rec));
            self.inner
                .sandboxes
                .write()
                .expect("sandboxes lock")
                .insert(id.clone(), sandbox.clone());
            if watch {
                self.watch(id, sandbox);
            }
        }
        self.remove_orphans(&known).await;
        self.free_stale_leases(live).await?;
        self.start_network().await;
        Ok(())
    }

    /// Frees every lease in the database that no live pod holds, and restores the
    /// allocator's state from the rest.
    async fn free_stale_leases(
        &self,
        live: Vec<(
            crate::ids::SandboxId,
            String,
            std::net::Ipv4Addr,
            Vec<crate::network::PortMapping>,
        )>,
    ) -> Result<(), Error> {
        let inner = self.inner.clone();
        let held: HashSet<_> =
            live.iter().map(|(id, _, ip, _)| (*ip, id.as_str().to_owned())).collect();
        let last = tokio::task::spawn_blocking(move || {
            let (leases, last) = inner.store.leases()?;
            let stale: Vec<_> =
                leases.into_iter().filter(|l| !held.contains(l)).map(|(ip, _)| ip).collect();
            if !stale.is_empty() {
                info!(count = stale.len(), "freeing IP leases no running pod holds");
                inner.store.delete_leases(&stale)?;
            }
            Ok::<_, crate::store::Error>(last)
        })
        .await
        .expect("state store task panicked")?;
        self.inner.network.restore(last, live);
        Ok(())
    }

    async fn alive(&self, rec: &SandboxRecord) -> bool {
        let Some(id) = rec.supervisor else {
            return false;
        };
        if !rec.pod_dir.is_dir() || Proc::open(id).is_none() {
            return false;
        }
        let pod = PodLayout::from_dir(&rec.pod_dir);
        matches!(supervisor::ping(&pod).await, Ok(p) if p.sandbox_id == rec.id.as_str())
    }

    /// Tears down pod dirs that no record explains.
    async fn remove_orphans(&self, known: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.inner.layout.pods_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            warn!(dir = %entry.path().display(), "removing pod dir no sandbox record explains");
            if let Err(e) = remove_orphan(&entry.path()).await {
                warn!(dir = %entry.path().display(), error = %e, "orphan pod dir left behind");
            }
        }
    }
}

async fn remove_orphan(dir: &Path) -> Result<(), Error> {
    let pod = PodLayout::from_dir(dir);
    // A live orphan supervisor is asked to shut down (it kills its pod-init); one that does
    // not answer, or does not go, is killed.
    if let Ok(p) = supervisor::ping(&pod).await {
        let proc = supervisor::ping_identity(&p).and_then(Proc::open);
        let _ = supervisor::shutdown(&pod).await;
        if let Some(proc) = proc
            && !proc.wait_exit(Duration::from_secs(2)).await
        {
            super::run::kill_and_wait(proc.identity()).await;
        }
        if let Some(init) = p.pod_init {
            let init = supervisor::Identity { pid: init.pid, start_time: init.start_time };
            super::run::kill_and_wait(init).await;
        }
    }
    mounts::unmount(&pod.shm())?;
    for kind in [NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Pid] {
        mounts::unmount(&pod.ns(kind))?;
    }
    std::fs::remove_dir_all(dir).map_err(|source| Error::RemoveDir { path: dir.into(), source })
}
