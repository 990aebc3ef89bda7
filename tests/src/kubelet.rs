//! kubelet's CRI requests, built the way kubelet's own code builds them
//! (pkg/kubelet/kuberuntime; which function each builder follows is in
//! docs/architecture.md, "kubelet's request shapes"). Facts carried over, written here:
//! label and annotation keys, the log path layout, the QoS cgroup parents, the mounts kubelet
//! adds, the default masked and read-only paths, hugepage limits for every page size.

use std::collections::HashMap;

use crate::{BUSYBOX, Node, cri};

/// Kubernetes' QoS classes, which pick the cgroup parent and the oom_score_adj.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// kubelet's `--cgroup-root` for one test or bench run: the QoS parents (`kubepods/…`) go
/// below it, and they are kubelet's, not the runtime's, so dropping this removes them.
pub struct CgroupRoot(String);

impl CgroupRoot {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        CgroupRoot(format!("/podbay-kubelet-{tag}-{}-{n}", std::process::id()))
    }

    pub fn path(&self) -> &str {
        &self.0
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        crate::remove_cgroup_tree(&self.0);
    }
}

/// What a Pod object says that kubelet turns into CRI requests.
#[derive(Debug, Clone)]
pub struct PodShape {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub qos: Qos,
    /// kubelet's cgroup root (see [`CgroupRoot`]).
    pub cgroup_root: String,
    pub host_network: bool,
    pub privileged: bool,
    pub host_ports: Vec<(i32, i32)>,
}

impl PodShape {
    pub fn new(name: &str, qos: Qos, root: &CgroupRoot) -> Self {
        PodShape {
            cgroup_root: root.path().to_owned(),
            name: name.into(),
            namespace: "default".into(),
            uid: format!("8d6f0c3e-{:0>4}-4a1b-9c2d-{name:0>12}", name.len()),
            attempt: 0,
            qos,
            host_network: false,
            privileged: false,
            host_ports: Vec::new(),
        }
    }

    /// `<cgroup root>/kubepods[/burstable|/besteffort]/pod<uid>` (the cgroupfs driver's
    /// names).
    pub fn cgroup_parent(&self) -> String {
        let qos = match self.qos {
            Qos::Guaranteed => "",
            Qos::Burstable => "/burstable",
            Qos::BestEffort => "/besteffort",
        };
        format!("{}/kubepods{qos}/pod{}", self.cgroup_root, self.uid)
    }

    /// `/var/log/pods/<namespace>_<name>_<uid>`, under the node's dir.
    pub fn log_directory(&self, node: &Node) -> String {
        let dir = format!("{}_{}_{}", self.namespace, self.name, self.uid);
        node.dir().join("var-log-pods").join(dir).to_string_lossy().into_owned()
    }

    /// The kubelet-managed dir of the pod (`/var/lib/kubelet/pods/<uid>`), under the node's.
    pub fn kubelet_dir(&self, node: &Node) -> std::path::PathBuf {
        node.dir().join("kubelet-pods").join(&self.uid)
    }

    fn labels(&self) -> HashMap<String, String> {
        [
            ("io.kubernetes.pod.name", self.name.as_str()),
            ("io.kubernetes.pod.namespace", self.namespace.as_str()),
            ("io.kubernetes.pod.uid", self.uid.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// RunPodSandbox's config as `generatePodSandboxConfig` and
/// `generatePodSandboxLinuxConfig` make it.
pub fn pod_sandbox_config(node: &Node, p: &PodShape) -> cri::PodSandboxConfig {
    let mut labels = p.labels();
    labels.insert("app".into(), p.name.clone());
    let node_mode = |host: bool| {
        if host { cri::NamespaceMode::Node as i32 } else { cri::NamespaceMode::Pod as i32 }
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: p.name.clone(),
            uid: p.uid.clone(),
            namespace: p.namespace.clone(),
            attempt: p.attempt,
        }),
        // Only for pods in their own network namespace.
        hostname: if p.host_network { String::new() } else { p.name.clone() },
        log_directory: p.log_directory(node),
        // dnsPolicy ClusterFirst (ClusterFirstWithHostNet for host-network pods).
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                format!("{}.svc.cluster.local", p.namespace),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: p
            .host_ports
            .iter()
            .map(|(container_port, host_port)| cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: *container_port,
                host_port: *host_port,
                host_ip: String::new(),
            })
            .collect(),
        labels,
        annotations: map(&[
            ("kubernetes.io/config.seen", "2026-12-01T10:00:00.000000000Z"),
            ("kubernetes.io/config.source", "api"),
        ]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: p.cgroup_parent(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: node_mode(p.host_network),
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: node_mode(p.host_network && p.privileged),
                    ..Default::default()
                }),
                privileged: p.privileged,
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            // The pod's resources, as calculateSandboxResources sums them.
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_shares: if p.qos == Qos::BestEffort { 2 } else { 102 },
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: None,
    }
}

/// A container of the pod, as the Pod object says it.
#[derive(Debug, Clone)]
pub struct ContainerShape {
    pub name: String,
    pub attempt: u32,
    /// The image id kubelet got back from its pull check (`EnsureImageExists`).
    pub image_id: String,
    /// What the pod spec's `image:` says.
    pub image: String,
    pub command: Vec<String>,
    /// (container path, host path, read-only) volume mounts from the pod spec.
    pub volumes: Vec<(String, String, bool)>,
    pub privileged: bool,
    /// milli-CPU request and limit, memory limit in bytes (0: none).
    pub cpu_request_milli: i64,
    pub cpu_limit_milli: i64,
    pub memory_limit: i64,
}

impl ContainerShape {
    pub fn new(name: &str, image_id: &str, command: &[&str]) -> Self {
        ContainerShape {
            name: name.into(),
            attempt: 0,
            image_id: image_id.into(),
            image: "busybox:1.36".into(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            volumes: Vec::new(),
            privileged: false,
            cpu_request_milli: 0,
            cpu_limit_milli: 0,
            memory_limit: 0,
        }
    }
}

/// The masked paths kubelet sends by default (`securitycontext.ConvertToRuntimeMaskedPaths`
/// with the default proc mount).
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const DEFAULT_READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// kubelet's oom_score_adj per QoS (`GetContainerOOMScoreAdjust`): -997 for Guaranteed,
/// 1000 for BestEffort, and for Burstable 1000 - 1000 × memory request / node memory,
/// kept within 2..=999 (a small request gives 999 here).
fn oom_score_adj(qos: Qos) -> i64 {
    match qos {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => 999,
    }
}

/// The hugepage limits kubelet sends with every container (`GetHugepageLimitsFromResources`):
/// one per page size the kernel lists under /sys/kernel/mm/hugepages, `limit` bytes each
/// (0 when the pod asks for none), named as kubelet names them (`2MB`, `1GB`).
pub fn hugepage_limits(limit: u64) -> Vec<cri::HugepageLimit> {
    let mut out: Vec<_> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            Some(cri::HugepageLimit { page_size: page_size_name(kb * 1024), limit })
        })
        .collect();
    out.sort_by(|a, b| a.page_size.cmp(&b.page_size));
    out
}

/// kubelet's page size names: the largest unit that divides the size (`2MB`, `1GB`).
pub fn page_size_name(bytes: u64) -> String {
    let units = [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)];
    let (unit, size) =
        units.into_iter().find(|(_, s)| bytes.is_multiple_of(*s)).unwrap_or(("B", 1));
    format!("{}{unit}", bytes / size)
}

/// Makes the files kubelet mounts into every container: the pod's /etc/hosts, the
/// container's termination-log file and a service-account token dir.
pub fn prepare_kubelet_files(node: &Node, p: &PodShape, c: &ContainerShape) {
    let dir = p.kubelet_dir(node);
    let sa = dir.join("volumes/kubernetes.io~projected/kube-api-access");
    let term = dir.join(format!("containers/{}", c.name));
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::create_dir_all(&term).unwrap();
    std::fs::write(dir.join("etc-hosts"), format!("127.0.0.1\tlocalhost\n10.0.0.9\t{}\n", p.name))
        .unwrap();
    std::fs::write(sa.join("token"), "eyJhbGciOiJSUzI1NiJ9.e30.sig\n").unwrap();
    std::fs::write(sa.join("namespace"), &p.namespace).unwrap();
    std::fs::write(term.join(format!("{:08x}", c.attempt)), "").unwrap();
}

/// CreateContainer's config as `generateContainerConfig` and
/// `generateLinuxContainerConfig` make it (mounts from `makeMounts`).
pub fn container_config(node: &Node, p: &PodShape, c: &ContainerShape) -> cri::ContainerConfig {
    prepare_kubelet_files(node, p, c);
    let dir = p.kubelet_dir(node);
    let path = |rel: &str| dir.join(rel).to_string_lossy().into_owned();
    let mount = |container: &str, host: String, readonly: bool| cri::Mount {
        container_path: container.into(),
        host_path: host,
        readonly,
        selinux_relabel: false,
        propagation: cri::MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    };
    let mut mounts: Vec<cri::Mount> =
        c.volumes.iter().map(|(cp, hp, ro)| mount(cp, hp.clone(), *ro)).collect();
    mounts.push(mount(
        "/var/run/secrets/kubernetes.io/serviceaccount",
        path("volumes/kubernetes.io~projected/kube-api-access"),
        true,
    ));
    if !p.host_network {
        mounts.push(mount("/etc/hosts", path("etc-hosts"), false));
    }
    mounts.push(mount(
        "/dev/termination-log",
        path(&format!("containers/{}/{:08x}", c.name, c.attempt)),
        false,
    ));

    let mut labels = p.labels();
    labels.insert("io.kubernetes.container.name".into(), c.name.clone());
    let restart_count = c.attempt.to_string();
    let annotations = map(&[
        ("io.kubernetes.container.hash", "5d3f1a2b"),
        ("io.kubernetes.container.restartCount", &restart_count),
        ("io.kubernetes.container.terminationMessagePath", "/dev/termination-log"),
        ("io.kubernetes.container.terminationMessagePolicy", "File"),
        ("io.kubernetes.pod.terminationGracePeriod", "30"),
    ]);
    // milliCPUToShares / milliCPUToQuota.
    let shares = if c.cpu_request_milli == 0 { 2 } else { c.cpu_request_milli * 1024 / 1000 };
    let quota = if c.cpu_limit_milli == 0 { 0 } else { c.cpu_limit_milli * 100_000 / 1000 };
    let privileged = c.privileged;
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
        image: Some(cri::ImageSpec {
            image: c.image_id.clone(),
            user_specified_image: c.image.clone(),
            annotations: HashMap::new(),
            runtime_handler: String::new(),
        }),
        command: c.command.clone(),
        args: Vec::new(),
        working_dir: String::new(),
        envs: vec![
            cri::KeyValue { key: "KUBERNETES_SERVICE_HOST".into(), value: "10.96.0.1".into() },
            cri::KeyValue { key: "KUBERNETES_SERVICE_PORT".into(), value: "443".into() },
        ],
        mounts,
        devices: Vec::new(),
        labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, c.attempt),
        stdin: false,
        stdin_once: false,
        tty: false,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: if quota == 0 { 0 } else { 100_000 },
                cpu_quota: quota,
                cpu_shares: shares,
                memory_limit_in_bytes: c.memory_limit,
                oom_score_adj: oom_score_adj(p.qos),
                hugepage_limits: hugepage_limits(0),
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability::default()),
                privileged,
                namespace_options: Some(cri::NamespaceOption {
                    network: if p.host_network {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: if privileged {
                        cri::security_profile::ProfileType::Unconfined as i32
                    } else {
                        cri::security_profile::ProfileType::RuntimeDefault as i32
                    },
                    localhost_ref: String::new(),
                }),
                masked_paths: if privileged {
                    Vec::new()
                } else {
                    DEFAULT_MASKED_PATHS.iter().map(|s| (*s).to_owned()).collect()
                },
                readonly_paths: if privileged {
                    Vec::new()
                } else {
                    DEFAULT_READONLY_PATHS.iter().map(|s| (*s).to_owned()).collect()
                },
                ..Default::default()
            }),
        }),
        windows: None,
        cdi_devices: Vec::new(),
    }
}

/// The image id kubelet's pull check gets for the busybox test image (ImageStatus by
/// the pod spec's name, as `EnsureImageExists` asks).
pub async fn ensure_image(node: &Node) -> String {
    let mut images = node.image_client().await.unwrap();
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec { image: BUSYBOX.into(), ..Default::default() }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    status.image.expect("the busybox test image is there").id
}
