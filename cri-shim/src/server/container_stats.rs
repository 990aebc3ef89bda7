//! ContainerStats and ListContainerStats: the handlers, the filter and the conversion.

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use podbay_runtime::cgroups::Usage;
use podbay_runtime::container::{ContainerFilter, ContainerState, ContainerStats};
use tonic::Status;

use super::fields::unsorted;
use super::status::to_status;

pub async fn stats(
    rt: &Runtime,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Status> {
    let stats = rt
        .containers()
        .stats(&req.container_id)
        .await
        .map_err(|e| to_status("ContainerStats", e))?;
    Ok(cri::ContainerStatsResponse { stats: Some(container_stats(&stats)) })
}

/// Stats of running containers only, as kubelet expects.
pub async fn list(
    rt: &Runtime,
    req: cri::ListContainerStatsRequest,
) -> cri::ListContainerStatsResponse {
    let f = req.filter.unwrap_or_default();
    let filter = ContainerFilter {
        id: Some(f.id).filter(|s| !s.is_empty()),
        state: Some(ContainerState::Running),
        sandbox_id: Some(f.pod_sandbox_id).filter(|s| !s.is_empty()),
        labels: f.label_selector.into_iter().collect(),
    };
    let stats = rt.containers().list_stats(&filter).await;
    cri::ListContainerStatsResponse { stats: stats.iter().map(container_stats).collect() }
}

pub(super) fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

pub(super) fn cpu_memory(t: i64, u: &Usage) -> (cri::CpuUsage, cri::MemoryUsage) {
    (
        cri::CpuUsage {
            timestamp: t,
            usage_core_nano_seconds: u64v(u.cpu_ns),
            usage_nano_cores: None,
        },
        cri::MemoryUsage {
            timestamp: t,
            working_set_bytes: u64v(u.working_set),
            usage_bytes: u64v(u.memory_usage),
            ..Default::default()
        },
    )
}

pub fn container_stats(s: &ContainerStats) -> cri::ContainerStats {
    let (cpu, memory) = cpu_memory(s.timestamp, &s.usage);
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: s.id.to_string(),
            metadata: Some(cri::ContainerMetadata { name: s.name.clone(), attempt: s.attempt }),
            labels: unsorted(&s.labels),
            annotations: unsorted(&s.annotations),
        }),
        cpu: Some(cpu),
        memory: Some(memory),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: s.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: s.writable_fs.display().to_string(),
            }),
            used_bytes: u64v(s.writable_bytes),
            inodes_used: u64v(s.writable_inodes),
        }),
        ..Default::default()
    }
}
