//! ContainerStats, ListContainerStats and the container part of pod stats: CPU and memory
//! straight from the cgroup files, the writable layer's size from its upper dir.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ContainerFilter, ContainerRecord, ContainerState, Containers, Error};
use crate::cgroups::{self, Usage};
use crate::ids::{ContainerId, SandboxId};
use crate::sandbox::SandboxRecord;

#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub id: ContainerId,
    pub sandbox_id: SandboxId,
    pub name: String,
    pub attempt: u32,
    /// The image as the container's status names it.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    pub usage: Usage,
    /// The writable layer (the overlay's upper dir).
    pub writable_bytes: u64,
    pub writable_inodes: u64,
    /// The file system the writable layer is on, named as ImageFsInfo names it (the
    /// image store's directory), so kubelet can tell which one it fills.
    pub writable_fs: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct PodStats {
    pub sandbox_id: SandboxId,
    pub timestamp: i64,
    pub usage: Usage,
    /// The pod's eth0: bytes received and sent, and errors each way.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub containers: Vec<ContainerStats>,
}

impl Containers {
    pub async fn stats(&self, id: &str) -> Result<ContainerStats, Error> {
        let rec = self.resolve(id)?.snapshot();
        let containers = self.clone();
        Ok(tokio::task::spawn_blocking(move || containers.stats_of(&rec))
            .await
            .expect("stats task panicked"))
    }

    /// Stats of every container `filter` matches.
    pub async fn list_stats(&self, filter: &ContainerFilter) -> Vec<ContainerStats> {
        let recs = self.list(filter);
        let containers = self.clone();
        tokio::task::spawn_blocking(move || recs.iter().map(|r| containers.stats_of(r)).collect())
            .await
            .expect("stats task panicked")
    }

    /// Stats of pods and their running containers.
    pub async fn pod_stats(&self, pods: Vec<SandboxRecord>) -> Vec<PodStats> {
        let running =
            ContainerFilter { state: Some(ContainerState::Running), ..Default::default() };
        let ctrs = self.list(&running);
        let containers = self.clone();
        let collect = move || {
            pods.iter()
                .map(|p| {
                    let [rx_bytes, tx_bytes, rx_errors, tx_errors] =
                        p.supervisor.map_or([0; 4], |s| net_counters(s.pid));
                    let cgroup =
                        cgroups::pod_cgroup(p.spec.cgroup_parent.as_deref(), p.id.as_str());
                    PodStats {
                        sandbox_id: p.id.clone(),
                        timestamp: crate::clock::now_ns(),
                        usage: cgroups::usage(&cgroup),
                        rx_bytes,
                        tx_bytes,
                        rx_errors,
                        tx_errors,
                        containers: ctrs
                            .iter()
                            .filter(|c| c.sandbox_id == p.id)
                            .map(|c| containers.stats_of(c))
                            .collect(),
                    }
                })
                .collect()
        };
        tokio::task::spawn_blocking(collect).await.expect("stats task panicked")
    }

    fn stats_of(&self, rec: &ContainerRecord) -> ContainerStats {
        let (writable_bytes, writable_inodes) =
            disk_usage(&self.inner.layout.container(rec.id.as_str()).upper());
        ContainerStats {
            id: rec.id.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            name: rec.spec.metadata.name.clone(),
            attempt: rec.spec.metadata.attempt,
            image: rec.spec.image.clone(),
            labels: rec.spec.labels.clone(),
            annotations: rec.spec.annotations.clone(),
            timestamp: crate::clock::now_ns(),
            usage: if rec.state == ContainerState::Running {
                cgroups::usage(&rec.cgroup)
            } else {
                Default::default()
            },
            writable_bytes,
            writable_inodes,
            writable_fs: self.inner.layout.images_dir(),
        }
    }
}

/// Bytes and inodes under a directory, not crossing into other file systems.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![dir.to_path_buf()];
    let (mut bytes, mut inodes) = (0, 0);
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Bytes received and sent by eth0 in the network namespace of `pid`.
/// eth0's counters in the namespace of `pid`: bytes received and sent, errors received
/// and sent (/proc/net/dev: 8 receive columns, then 8 transmit columns).
fn net_counters(pid: u32) -> [u64; 4] {
    let Ok(dev) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else { return [0; 4] };
    dev.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() != "eth0" {
                return None;
            }
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            Some([*f.first()?, *f.get(8)?, *f.get(2)?, *f.get(10)?])
        })
        .unwrap_or([0; 4])
}
