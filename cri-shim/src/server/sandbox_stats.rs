//! PodSandboxStats and ListPodSandboxStats: the handlers, the filter and the conversion.

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use podbay_runtime::container::PodStats;
use podbay_runtime::sandbox::SandboxRecord;
use tonic::Status;

use super::container_stats::{container_stats, cpu_memory, u64v};
use super::fields::unsorted;
use super::sandbox::cri_metadata;
use super::status::to_status;

pub async fn stats(
    rt: &Runtime,
    req: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    let id = req.pod_sandbox_id;
    let stats = rt.pod_stats(Some(&id)).await.map_err(|e| to_status("PodSandboxStats", e))?;
    let rec = rt.sandboxes().status(&id).ok();
    Ok(cri::PodSandboxStatsResponse { stats: stats.first().map(|s| pod_stats(s, rec.as_ref())) })
}

/// Stats of ready pods whose id starts with the filter's and whose labels match.
pub async fn list(
    rt: &Runtime,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let stats = rt.pod_stats(None).await.map_err(|e| to_status("ListPodSandboxStats", e))?;
    let stats = stats
        .iter()
        .filter(|s| s.sandbox_id.as_str().starts_with(f.id.as_str()))
        .filter_map(|s| {
            let rec = rt.sandboxes().status(s.sandbox_id.as_str()).ok()?;
            f.label_selector
                .iter()
                .all(|(k, v)| rec.spec.labels.get(k) == Some(v))
                .then(|| pod_stats(s, Some(&rec)))
        })
        .collect();
    Ok(cri::ListPodSandboxStatsResponse { stats })
}

pub fn pod_stats(s: &PodStats, rec: Option<&SandboxRecord>) -> cri::PodSandboxStats {
    let (cpu, memory) = cpu_memory(s.timestamp, &s.usage);
    let eth0 = cri::NetworkInterfaceUsage {
        name: "eth0".into(),
        rx_bytes: u64v(s.rx_bytes),
        rx_errors: u64v(0),
        tx_bytes: u64v(s.tx_bytes),
        tx_errors: u64v(0),
    };
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: s.sandbox_id.to_string(),
            metadata: rec.map(|r| cri_metadata(&r.spec.metadata)),
            labels: rec.map(|r| unsorted(&r.spec.labels)).unwrap_or_default(),
            annotations: rec.map(|r| unsorted(&r.spec.annotations)).unwrap_or_default(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(memory),
            network: Some(cri::NetworkUsage {
                timestamp: s.timestamp,
                default_interface: Some(eth0.clone()),
                interfaces: vec![eth0],
            }),
            process: None,
            containers: s.containers.iter().map(container_stats).collect(),
        }),
        windows: None,
    }
}
