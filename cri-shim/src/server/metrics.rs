//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metric names, which kubelet
//! serves on /metrics/cadvisor when it takes stats from the CRI, read from the same cgroup
//! files and /proc/<pid>/net/dev as the stats calls. Every metric carries the label values
//! its descriptor names, in that order.

use k8s_cri::v1 as cri;
use podbay_runtime::Runtime;
use podbay_runtime::container::{ContainerStats, PodStats};
use tonic::Status;

use super::status::to_status;

/// The labels every metric has: cAdvisor's container id, name and image.
const BASE: &[&str] = &["id", "name", "image"];

struct Def {
    name: &'static str,
    help: &'static str,
    counter: bool,
    /// Label beyond [`BASE`], if any.
    extra: Option<&'static str>,
}

const CPU: Def = Def::new(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    COUNTER,
    None,
);
const WORKING_SET: Def =
    Def::new("container_memory_working_set_bytes", "Current working set in bytes.", GAUGE, None);
const MEMORY_USAGE: Def = Def::new(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    GAUGE,
    None,
);
const RSS: Def = Def::new("container_memory_rss", "Size of RSS in bytes.", GAUGE, None);
const PROCESSES: Def = Def::new(
    "container_processes",
    "Number of processes running inside the container.",
    GAUGE,
    None,
);
const FS_USAGE: Def = Def::new(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    GAUGE,
    Some("device"),
);
const RX_BYTES: Def = Def::new(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received.",
    COUNTER,
    Some("interface"),
);
const TX_BYTES: Def = Def::new(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted.",
    COUNTER,
    Some("interface"),
);
const RX_ERRORS: Def = Def::new(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving.",
    COUNTER,
    Some("interface"),
);
const TX_ERRORS: Def = Def::new(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting.",
    COUNTER,
    Some("interface"),
);

const COUNTER: bool = true;
const GAUGE: bool = false;

impl Def {
    const fn new(
        name: &'static str,
        help: &'static str,
        counter: bool,
        extra: Option<&'static str>,
    ) -> Def {
        Def { name, help, counter, extra }
    }
}

const ALL: &[&Def] = &[
    &CPU,
    &WORKING_SET,
    &MEMORY_USAGE,
    &RSS,
    &PROCESSES,
    &FS_USAGE,
    &RX_BYTES,
    &TX_BYTES,
    &RX_ERRORS,
    &TX_ERRORS,
];

pub fn descriptors() -> cri::ListMetricDescriptorsResponse {
    let descriptors = ALL
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE.iter().copied().chain(d.extra).map(str::to_owned).collect(),
        })
        .collect();
    cri::ListMetricDescriptorsResponse { descriptors }
}

pub async fn pod_metrics(rt: &Runtime) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    let stats = rt.pod_stats(None).await.map_err(|e| to_status("ListPodSandboxMetrics", e))?;
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics: stats.iter().map(pod).collect() })
}

fn metric(d: &Def, at: i64, labels: &[&str], extra: Option<&str>, value: u64) -> cri::Metric {
    debug_assert_eq!(d.extra.is_some(), extra.is_some(), "{}", d.name);
    cri::Metric {
        name: d.name.into(),
        timestamp: at,
        metric_type: if d.counter { cri::MetricType::Counter } else { cri::MetricType::Gauge }
            as i32,
        label_values: labels.iter().copied().chain(extra).map(str::to_owned).collect(),
        value: Some(cri::UInt64Value { value }),
    }
}

/// The pod's own metrics (its cgroup and eth0) as cAdvisor's pod-level container (no
/// name, no image), and each running container's.
fn pod(s: &PodStats) -> cri::PodSandboxMetrics {
    let id = s.sandbox_id.as_str();
    let labels = [id, "", ""];
    let u = &s.usage;
    let at = s.timestamp;
    let mut metrics = vec![
        metric(&CPU, at, &labels, None, u.cpu_ns / 1_000_000_000),
        metric(&WORKING_SET, at, &labels, None, u.working_set),
        metric(&MEMORY_USAGE, at, &labels, None, u.memory_usage),
        metric(&RSS, at, &labels, None, u.rss),
        metric(&PROCESSES, at, &labels, None, u.processes),
    ];
    for (d, value) in [
        (&RX_BYTES, s.rx_bytes),
        (&TX_BYTES, s.tx_bytes),
        (&RX_ERRORS, s.rx_errors),
        (&TX_ERRORS, s.tx_errors),
    ] {
        metrics.push(metric(d, at, &labels, Some("eth0"), value));
    }
    cri::PodSandboxMetrics {
        pod_sandbox_id: id.to_owned(),
        metrics,
        container_metrics: s.containers.iter().map(container).collect(),
    }
}

fn container(c: &ContainerStats) -> cri::ContainerMetrics {
    let labels = [c.id.as_str(), c.name.as_str(), c.image.as_str()];
    let u = &c.usage;
    let at = c.timestamp;
    let device = c.writable_fs.to_string_lossy();
    cri::ContainerMetrics {
        container_id: c.id.to_string(),
        metrics: vec![
            metric(&CPU, at, &labels, None, u.cpu_ns / 1_000_000_000),
            metric(&WORKING_SET, at, &labels, None, u.working_set),
            metric(&MEMORY_USAGE, at, &labels, None, u.memory_usage),
            metric(&RSS, at, &labels, None, u.rss),
            metric(&PROCESSES, at, &labels, None, u.processes),
            metric(&FS_USAGE, at, &labels, Some(&device), c.writable_bytes),
        ],
    }
}
