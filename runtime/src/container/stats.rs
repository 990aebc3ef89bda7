//! ContainerStats, PodSandboxStats, UpdateContainerResources and ReopenContainerLog:
//! the daemon reads the cgroup files itself and writes limits through libcgroups (no process
//! is forked).

use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use podbay_proto::shim::v1::{ReopenLogRequest, request};

use super::{ContainerRecord, ContainerState, Error, Resources};
use crate::Runtime;
use crate::ids::{ContainerId, SandboxId};
use crate::layout::PodLayout;
use crate::supervisor;

#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub id: ContainerId,
    pub sandbox_id: SandboxId,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    pub usage: CgroupUsage,
    /// The writable layer (the overlay's upper dir).
    pub writable_bytes: u64,
    pub writable_inodes: u64,
}

/// CPU and memory of a cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupUsage {
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: u64,
    pub memory_usage: u64,
    /// Usage minus inactive file cache (what kubelet evicts on).
    pub working_set: u64,
}

#[derive(Debug, Clone)]
pub struct PodStats {
    pub sandbox_id: SandboxId,
    pub timestamp: i64,
    pub usage: CgroupUsage,
    /// The pod's eth0: bytes received and sent.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub containers: Vec<ContainerStats>,
}

fn manager(cgroup: &str) -> Result<libcgroups::common::AnyCgroupManager, String> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| e.to_string())
}

/// CPU and memory of a cgroup; zeros when it is gone. Read from the cgroup's files
/// directly: a libcgroups manager would re-read mountinfo for every controller, and
/// kubelet asks for every container's stats every few seconds.
pub fn usage(cgroup: &str) -> CgroupUsage {
    let cg = cgroup.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let number = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let stat = |text: Option<String>, key: &str| {
        text.and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        })
    };
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(cg);
        let memory_usage = number(read(dir.join("memory.current"))).unwrap_or(0);
        let inactive = stat(read(dir.join("memory.stat")), "inactive_file").unwrap_or(0);
        return CgroupUsage {
            cpu_ns: stat(read(dir.join("cpu.stat")), "usage_usec").unwrap_or(0) * 1000,
            memory_usage,
            working_set: memory_usage.saturating_sub(inactive),
        };
    }
    let cpu_ns = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| number(read(root.join(h).join(cg).join("cpuacct.usage"))))
        .unwrap_or(0);
    let memory = root.join("memory").join(cg);
    let memory_usage = number(read(memory.join("memory.usage_in_bytes"))).unwrap_or(0);
    let inactive = stat(read(memory.join("memory.stat")), "total_inactive_file").unwrap_or(0);
    CgroupUsage { cpu_ns, memory_usage, working_set: memory_usage.saturating_sub(inactive) }
}

/// How many times the kernel's OOM killer killed a process of the cgroup.
pub fn oom_kills(cgroup: &str) -> u64 {
    let cg = cgroup.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory").join(cg).join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(cg).join("memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
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
fn net_bytes(pid: u32) -> (u64, u64) {
    let Ok(dev) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else { return (0, 0) };
    dev.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() != "eth0" {
                return None;
            }
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .unwrap_or((0, 0))
}

impl Runtime {
    fn stats_of(&self, rec: &ContainerRecord) -> ContainerStats {
        let (writable_bytes, writable_inodes) =
            disk_usage(&self.inner.layout.container(rec.id.as_str()).upper());
        ContainerStats {
            id: rec.id.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            name: rec.spec.metadata.name.clone(),
            labels: rec.spec.labels.clone(),
            annotations: rec.spec.annotations.clone(),
            timestamp: crate::now_ns(),
            usage: if rec.state == ContainerState::Running {
                usage(&rec.cgroup)
            } else {
                Default::default()
            },
            writable_bytes,
            writable_inodes,
        }
    }

    pub async fn container_stats(&self, id: &str) -> Result<ContainerStats, Error> {
        let rec = self.container(id)?.snapshot();
        Ok(self.blocking(move |rt| rt.stats_of(&rec)).await)
    }

    /// Stats of every container `filter` matches.
    pub async fn list_container_stats(
        &self,
        filter: &super::ContainerFilter,
    ) -> Vec<ContainerStats> {
        let recs = self.list_containers(filter);
        self.blocking(move |rt| recs.iter().map(|r| rt.stats_of(r)).collect()).await
    }

    /// Stats of ready pods (all, or those whose id starts with `id`).
    pub async fn pod_stats(&self, id: Option<&str>) -> Result<Vec<PodStats>, Error> {
        let pods: Vec<_> = match id {
            Some(id) => vec![
                self.resolve(id).map_err(|_| Error::SandboxNotFound { id: id.into() })?.snapshot(),
            ],
            None => self
                .list_sandboxes(&Default::default())
                .into_iter()
                .filter(|r| r.state.is_ready())
                .collect(),
        };
        let ctrs = self.list_containers(&Default::default());
        Ok(self
            .blocking(move |rt| {
                pods.into_iter()
                    .map(|p| {
                        let (rx_bytes, tx_bytes) =
                            p.supervisor.map_or((0, 0), |s| net_bytes(s.pid));
                        PodStats {
                            sandbox_id: p.id.clone(),
                            timestamp: crate::now_ns(),
                            usage: usage(&super::create::pod_cgroup(&p)),
                            rx_bytes,
                            tx_bytes,
                            containers: ctrs
                                .iter()
                                .filter(|c| {
                                    c.sandbox_id == p.id && c.state == ContainerState::Running
                                })
                                .map(|c| rt.stats_of(c))
                                .collect(),
                        }
                    })
                    .collect()
            })
            .await)
    }

    /// Applies new resource limits to a running or created container's cgroup.
    pub async fn update_container_resources(&self, id: &str, res: Resources) -> Result<(), Error> {
        let c = self.container(id)?;
        let _op = c.op.lock().await;
        let rec = c.snapshot();
        if !rec.state.may_run() {
            return Err(Error::State { id: rec.id, state: rec.state, what: "cannot be updated" });
        }
        let node = super::create::node_facts(&self.inner.node_facts);
        let linux = super::spec::linux_resources(&res, node)?;
        let cgroup = rec.cgroup.clone();
        let config = self.inner.layout.container(rec.id.as_str()).config();
        self.blocking(move |_| {
            let m = manager(&cgroup)?;
            m.apply(&ControllerOpt {
                resources: &linux,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| e.to_string())?;
            save_resources(&config, linux).map_err(|e| format!("{}: {e}", config.display()))
        })
        .await
        .map_err(|reason| Error::Cgroup { cgroup: rec.cgroup.clone(), reason })?;
        let rec = c.update(|r| r.spec.resources = res);
        self.persist_container(&rec).await
    }

    /// Has the supervisor reopen the container's log file (after kubelet rotated it).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Error> {
        let rec = self.container(id)?.snapshot();
        if rec.state != ContainerState::Running {
            return Err(Error::State {
                id: rec.id,
                state: rec.state,
                what: "has no log to reopen",
            });
        }
        let sandbox = self
            .get(&rec.sandbox_id)
            .ok_or(Error::SandboxNotReady { id: rec.sandbox_id.clone() })?;
        let pod = PodLayout::from_dir(&sandbox.snapshot().pod_dir);
        let req = request::Kind::ReopenLog(ReopenLogRequest { id: rec.id.to_string() });
        match supervisor::call(&pod, req).await {
            Ok(_) => Ok(()),
            Err(supervisor::Error::Refused(message)) => {
                Err(Error::Supervisor { id: rec.id, message })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Keeps the container's saved OCI spec in step with an update (ContainerStatus shows
/// it), keeping its device rules.
fn save_resources(
    config: &std::path::Path,
    mut res: oci_spec::runtime::LinuxResources,
) -> Result<(), oci_spec::OciSpecError> {
    let mut spec = oci_spec::runtime::Spec::load(config)?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let devices = linux.resources().as_ref().and_then(|r| r.devices().clone());
    res.set_devices(devices);
    linux.set_resources(Some(res));
    spec.set_linux(Some(linux));
    spec.save(config)
}
