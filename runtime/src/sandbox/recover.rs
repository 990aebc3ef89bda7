//! Daemon start: bring memory in line with the database and the run dir.
//!
//! - A Ready record whose supervisor still runs (same pid and start time, pod dir present,
//!   socket answers) stays Ready and is watched again.
//! - A Ready record whose supervisor is gone (it died, or the node rebooted and the run dir
//!   is empty) becomes NotReady; its leftover mounts are released, and its network (the
//!   namespace and the veth went with the supervisor) is dropped from the record with
//!   its lease.
//! - A record that was not Ready (its supervisor exited, or it was stopped) has whatever
//!   a StopPodSandbox the daemon died in left released: a stopped pod holds no mount.
//! - A pod dir that no record explains (a crash between start and commit) is torn down:
//!   its supervisor is stopped, its mounts released, the dir removed.
//!
//! The runtime then frees every lease no live pod holds and brings the node network up.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::stop::teardown;
use super::{Error, Sandbox, SandboxRecord, SandboxState, Sandboxes, mounts, records};
use crate::layout::{NsKind, PodLayout};
use crate::supervisor::{Client, Proc, kill_and_wait};

impl Sandboxes {
    pub(crate) async fn recover(&self) -> Result<(), Error> {
        let store = self.inner.store.clone();
        let recs = tokio::task::spawn_blocking(move || records::all(&store))
            .await
            .expect("state store task panicked")?;
        let mut known = HashSet::new();
        for rec in recs {
            known.insert(rec.id.as_str().to_owned());
            // Pod dirs an older podbay made 0755 are root-only from now on.
            use std::os::unix::fs::PermissionsExt;
            match &rec.spec.namespaces.user {
                Some(userns) => {
                    let _ = super::run::open_to_pod_root(&rec.pod_dir, userns);
                }
                None => {
                    let mode = std::fs::Permissions::from_mode(0o700);
                    let _ = std::fs::set_permissions(&rec.pod_dir, mode);
                }
            }
            let live = rec.state == SandboxState::Ready && alive(&rec).await;
            let rec = self.settle(rec, live).await?;
            let sandbox = Arc::new(Sandbox::new(rec));
            self.insert(sandbox.clone());
            if live {
                self.watch(sandbox);
            }
        }
        self.remove_orphans(&known).await;
        Ok(())
    }

    /// A record whose supervisor is gone: torn down, NotReady, without its network.
    async fn settle(&self, mut rec: SandboxRecord, live: bool) -> Result<SandboxRecord, Error> {
        if live {
            return Ok(rec);
        }
        let was = rec.clone();
        let fp = &self.inner.failpoints;
        if rec.state == SandboxState::Ready {
            info!(sandbox.id = %rec.id, "supervisor gone; sandbox not ready");
            let errors = teardown(&rec, Duration::ZERO, fp).await;
            rec.state =
                if errors.is_empty() { SandboxState::NotReady } else { SandboxState::Unknown };
        } else {
            // Not ready already (its supervisor exited, or a StopPodSandbox ran): whatever
            // that stop had left when the daemon died goes now, so a stopped pod holds no
            // mount after a restart either.
            for e in teardown(&rec, Duration::ZERO, fp).await {
                warn!(sandbox.id = %rec.id, error = %e, "release a stopped pod's mounts");
            }
        }
        // Its namespace, and with it the veth, is gone: so is the lease.
        let released = rec.network.take().map(|n| n.ip);
        if rec != was {
            self.persist(rec.clone(), released).await?;
        }
        Ok(rec)
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

async fn alive(rec: &SandboxRecord) -> bool {
    let Some(id) = rec.supervisor else {
        return false;
    };
    if !rec.pod_dir.is_dir() || Proc::open(id).is_none() {
        return false;
    }
    let client = Client::new(&PodLayout::from_dir(&rec.pod_dir));
    matches!(client.ping().await, Ok(p) if p.sandbox_id == rec.id.as_str())
}

async fn remove_orphan(dir: &Path) -> Result<(), Error> {
    let pod = PodLayout::from_dir(dir);
    let client = Client::new(&pod);
    // A live orphan supervisor is asked to shut down (it kills its pod-init); one that does
    // not answer, or does not go, is killed.
    if let Ok(p) = client.ping().await {
        let proc = p.supervisor.and_then(Proc::open);
        let _ = client.shutdown().await;
        if let Some(proc) = proc
            && !proc.wait_exit(Duration::from_secs(2)).await
        {
            kill_and_wait(proc.identity()).await;
        }
        if let Some(init) = p.pod_init {
            kill_and_wait(init).await;
        }
    }
    mounts::unmount(&pod.shm())?;
    for kind in [NsKind::Net, NsKind::Ipc, NsKind::Uts, NsKind::Pid, NsKind::User] {
        mounts::unmount(&pod.ns(kind))?;
    }
    // Its cgroup, when podbay's default parent holds it (a kubelet parent is kubelet's).
    let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let cgroup = crate::cgroups::pod_cgroup(None, &name);
    if let Err(e) = tokio::task::spawn_blocking(move || crate::cgroups::remove_tree(&cgroup))
        .await
        .expect("cgroup task panicked")
    {
        warn!(dir = %dir.display(), error = %e, "cgroup of an orphan pod left");
    }
    mounts::remove_pod_dir(dir)
}
