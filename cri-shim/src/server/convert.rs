//! CRI ⇄ runtime conversion, and validation of everything kubelet or crictl sends.
//! Bad input becomes InvalidArgument naming the field, before anything is created.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use k8s_cri::v1 as cri;
use podbay_runtime::container::spec::ALL_CAPABILITIES;
use podbay_runtime::container::{
    CgroupUsage, ContainerFilter, ContainerMetadata, ContainerRecord, ContainerSpec,
    ContainerState, ContainerStats, DeviceSpec, MountSpec, PidMode, PodStats, Propagation,
    Resources, SeccompProfile, Security,
};
use podbay_runtime::image::{Credentials, ImageRecord};
use podbay_runtime::network::PortMapping;
use podbay_runtime::sandbox::{
    DnsSpec, NamespaceMode, NamespaceSpec, PodMetadata, SandboxFilter, SandboxRecord, SandboxSpec,
    SandboxState,
};
use tonic::Status;

/// Longest hostname Linux accepts (HOST_NAME_MAX).
const HOSTNAME_MAX: usize = 64;
/// Longest name, namespace or uid podbay accepts (a DNS subdomain's limit).
const NAME_MAX: usize = 253;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

pub fn sandbox_spec(req: cri::RunPodSandboxRequest) -> Result<SandboxSpec, Status> {
    let config = req.config.ok_or_else(|| invalid("config", "is required"))?;
    let meta = config.metadata.ok_or_else(|| invalid("config.metadata", "is required"))?;
    for (field, value) in [
        ("config.metadata.name", &meta.name),
        ("config.metadata.namespace", &meta.namespace),
        ("config.metadata.uid", &meta.uid),
    ] {
        check_name(field, value)?;
    }
    let hostname = if config.hostname.is_empty() {
        default_hostname(&meta.name)
    } else {
        check_hostname("config.hostname", &config.hostname)?;
        config.hostname
    };
    let log_directory = match config.log_directory.as_str() {
        "" => None,
        d if d.starts_with('/') && !d.contains('\0') => Some(PathBuf::from(d)),
        d => {
            return Err(invalid("config.log_directory", format!("{d:?} is not an absolute path")));
        }
    };
    let dns = config.dns_config.map(dns_spec).transpose()?;
    let linux = config.linux.unwrap_or_default();
    let ns = linux.security_context.unwrap_or_default().namespace_options.unwrap_or_default();
    let namespaces = namespace_spec(&ns)?;
    let cgroup_parent = Some(linux.cgroup_parent).filter(|c| !c.is_empty());
    let port_mappings = port_mappings(&config.port_mappings)?;
    let sysctls = sysctls(linux.sysctls, &namespaces)?;
    Ok(SandboxSpec {
        metadata: PodMetadata {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            attempt: meta.attempt,
        },
        hostname,
        log_directory,
        dns,
        labels: sorted(config.labels),
        annotations: sorted(config.annotations),
        namespaces,
        cgroup_parent,
        runtime_handler: req.runtime_handler,
        port_mappings,
        sysctls,
    })
}

/// IPC sysctls Kubernetes counts as namespaced (besides `fs.mqueue.*`); `net.*` is the
/// network namespace's.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "kernel.shmmax",
    "kernel.shmall",
    "kernel.shmmni",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
];

/// The pod's sysctls: namespaced ones only, and only in namespaces the pod owns (as
/// kubelet's and containerd's checks have it). Keys may use `/` as the separator.
fn sysctls(
    raw: HashMap<String, String>,
    ns: &NamespaceSpec,
) -> Result<BTreeMap<String, String>, Status> {
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let field = format!("config.linux.sysctls[{key:?}]");
        let dotted = key.replace('/', ".");
        let valid = !key.is_empty()
            && key.split(['.', '/']).all(|p| {
                !p.is_empty()
                    && p != ".."
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            });
        if !valid {
            return Err(invalid(&field, "is not a sysctl name"));
        }
        if value.contains(['\n', '\0']) {
            return Err(invalid(&field, format!("{value:?} is not a sysctl value")));
        }
        let (owner, mode) = if dotted.starts_with("net.") {
            ("network", ns.network)
        } else if dotted.starts_with("fs.mqueue.") || IPC_SYSCTLS.contains(&dotted.as_str()) {
            ("IPC", ns.ipc)
        } else {
            return Err(invalid(
                &field,
                "is not a namespaced sysctl (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)",
            ));
        };
        if mode == NamespaceMode::Node {
            return Err(invalid(
                &field,
                format!("the pod uses the node's {owner} namespace, so it cannot set it"),
            ));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// hostPorts. kubelet lists every container port; one with host_port 0 maps nothing and
/// is skipped, as the CNI portmap plugin does.
fn port_mappings(ports: &[cri::PortMapping]) -> Result<Vec<PortMapping>, Status> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let field = |name: &str| format!("config.port_mappings[{i}].{name}");
        let port = |name: &str, v: i32| {
            u16::try_from(v)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(&field(name), format!("{v} is not a port (1 to 65535)")))
        };
        let protocol = match cri::Protocol::try_from(p.protocol) {
            Ok(cri::Protocol::Tcp) => podbay_netplug::Protocol::Tcp,
            Ok(cri::Protocol::Udp) => podbay_netplug::Protocol::Udp,
            Ok(cri::Protocol::Sctp) => podbay_netplug::Protocol::Sctp,
            Err(_) => {
                return Err(invalid(
                    &field("protocol"),
                    format!("{} is not TCP (0), UDP (1) or SCTP (2)", p.protocol),
                ));
            }
        };
        if p.host_port == 0 {
            continue;
        }
        let host_port = port("host_port", p.host_port)?;
        let container_port = port("container_port", p.container_port)?;
        let host_ip = match p.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            ip => match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => Some(v4),
                Ok(IpAddr::V6(_)) => {
                    return Err(invalid(
                        &field("host_ip"),
                        format!("{ip}: IPv6 hostPorts are not supported"),
                    ));
                }
                Err(_) => {
                    return Err(invalid(&field("host_ip"), format!("{ip:?} is not an IP address")));
                }
            },
        };
        out.push(PortMapping { protocol, container_port, host_port, host_ip });
    }
    Ok(out)
}

fn sorted(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn check_name(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > NAME_MAX {
        return Err(invalid(field, format!("is {} bytes long; at most {NAME_MAX}", value.len())));
    }
    if value.contains('/') {
        return Err(invalid(field, format!("{value:?} must not contain '/'")));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL byte"));
    }
    Ok(())
}

/// RFC 1123 hostname: dot-separated labels of letters, digits and '-', no label starting
/// or ending with '-', each at most 63 bytes, the whole at most 64 bytes.
fn check_hostname(field: &str, h: &str) -> Result<(), Status> {
    if h.len() > HOSTNAME_MAX {
        return Err(invalid(field, format!("{h:?} is longer than {HOSTNAME_MAX} bytes")));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !h.split('.').all(label_ok) {
        return Err(invalid(field, format!("{h:?} is not a valid hostname (RFC 1123)")));
    }
    Ok(())
}

/// The pod name made into a hostname, when kubelet gives none.
fn default_hostname(name: &str) -> String {
    let mut h: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(63)
        .collect();
    h = h.trim_matches('-').to_owned();
    if h.is_empty() { "pod".into() } else { h }
}

fn dns_spec(dns: cri::DnsConfig) -> Result<DnsSpec, Status> {
    for (i, s) in dns.servers.iter().enumerate() {
        if s.parse::<IpAddr>().is_err() {
            return Err(invalid(
                &format!("config.dns_config.servers[{i}]"),
                format!("{s:?} is not an IP address"),
            ));
        }
    }
    for (i, s) in dns.searches.iter().enumerate() {
        if s.is_empty() || s.len() > NAME_MAX || s.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(invalid(
                &format!("config.dns_config.searches[{i}]"),
                format!("{s:?} is not a search domain"),
            ));
        }
    }
    for (i, o) in dns.options.iter().enumerate() {
        if !dns_option_ok(o) {
            return Err(invalid(
                &format!("config.dns_config.options[{i}]"),
                format!("{o:?} is not a resolv.conf option (name or name:value)"),
            ));
        }
    }
    Ok(DnsSpec { servers: dns.servers, searches: dns.searches, options: dns.options })
}

fn dns_option_ok(o: &str) -> bool {
    let (name, value) = match o.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (o, None),
    };
    let word = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    word(name) && value.is_none_or(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
}

fn namespace_spec(ns: &cri::NamespaceOption) -> Result<NamespaceSpec, Status> {
    use cri::NamespaceMode as M;
    let field = "config.linux.security_context.namespace_options";
    let shared = |name: &str, raw: i32| match M::try_from(raw) {
        Ok(M::Pod | M::Container) => Ok(NamespaceMode::Pod),
        Ok(M::Node) => Ok(NamespaceMode::Node),
        Ok(M::Target) => Err(invalid(&format!("{field}.{name}"), "TARGET is not valid for a pod")),
        Err(_) => Err(invalid(&format!("{field}.{name}"), format!("unknown mode {raw}"))),
    };
    let pid = match M::try_from(ns.pid) {
        Ok(M::Pod) => NamespaceMode::Pod,
        Ok(M::Container) => NamespaceMode::Container,
        Ok(M::Node) => NamespaceMode::Node,
        Ok(M::Target) => {
            return Err(invalid(&format!("{field}.pid"), "TARGET is not valid for a pod"));
        }
        Err(_) => {
            return Err(invalid(&format!("{field}.pid"), format!("unknown mode {}", ns.pid)));
        }
    };
    Ok(NamespaceSpec { network: shared("network", ns.network)?, ipc: shared("ipc", ns.ipc)?, pid })
}

fn cri_mode(m: NamespaceMode) -> i32 {
    match m {
        NamespaceMode::Pod => cri::NamespaceMode::Pod as i32,
        NamespaceMode::Container => cri::NamespaceMode::Container as i32,
        NamespaceMode::Node => cri::NamespaceMode::Node as i32,
    }
}

fn cri_state(s: SandboxState) -> i32 {
    match s {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::NotReady | SandboxState::Unknown => {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

fn cri_metadata(m: &PodMetadata) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn unsorted(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The IP a sandbox reports: its lease, or the node's for hostNetwork pods.
pub fn sandbox_ip(rec: &SandboxRecord, node_ip: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    match (&rec.network, rec.spec.namespaces.network) {
        (Some(net), _) => Some(net.ip),
        (None, NamespaceMode::Node) => node_ip,
        (None, _) => None,
    }
}

pub fn sandbox_status(
    rec: &SandboxRecord,
    node_ip: Option<Ipv4Addr>,
    verbose: bool,
) -> cri::PodSandboxStatusResponse {
    let ns = &rec.spec.namespaces;
    let ip = sandbox_ip(rec, node_ip).map(|ip| ip.to_string()).unwrap_or_default();
    let status = cri::PodSandboxStatus {
        id: rec.id.to_string(),
        metadata: Some(cri_metadata(&rec.spec.metadata)),
        state: cri_state(rec.state),
        created_at: rec.created_at,
        network: Some(cri::PodSandboxNetworkStatus { ip, additional_ips: vec![] }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: cri_mode(ns.network),
                    pid: cri_mode(ns.pid),
                    ipc: cri_mode(ns.ipc),
                    ..Default::default()
                }),
            }),
        }),
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        runtime_handler: rec.spec.runtime_handler.clone(),
    };
    let mut info = HashMap::new();
    if verbose {
        info.insert("info".to_owned(), sandbox_info(rec).to_string());
    }
    cri::PodSandboxStatusResponse { status: Some(status), info, ..Default::default() }
}

/// The verbose JSON info of a sandbox: processes, namespaces and files on the node.
pub fn sandbox_info(rec: &SandboxRecord) -> serde_json::Value {
    serde_json::json!({
        "state": rec.state.as_str(),
        "pid": rec.supervisor.map(|s| s.pid),
        "supervisor": rec.supervisor,
        "podInit": rec.pod_init,
        "podDir": rec.pod_dir,
        "namespaces": rec.namespaces,
        "shm": rec.shm,
        "hostname": rec.spec.hostname,
        "network": rec.network,
        "config": rec.spec,
    })
}

pub fn sandbox_summary(rec: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: rec.id.to_string(),
        metadata: Some(cri_metadata(&rec.spec.metadata)),
        state: cri_state(rec.state),
        created_at: rec.created_at,
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        runtime_handler: rec.spec.runtime_handler.clone(),
    }
}

pub fn sandbox_filter(f: Option<cri::PodSandboxFilter>) -> SandboxFilter {
    let Some(f) = f else {
        return SandboxFilter::default();
    };
    SandboxFilter {
        id: Some(f.id).filter(|id| !id.is_empty()),
        ready: f.state.map(|s| s.state == cri::PodSandboxState::SandboxReady as i32),
        labels: sorted(f.label_selector),
    }
}

/// The image named by a request's ImageSpec, or InvalidArgument naming the field.
pub fn image_ref(field: &str, spec: Option<&cri::ImageSpec>) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(i) if !i.is_empty() => Ok(i.to_owned()),
        _ => Err(invalid(field, "is empty")),
    }
}

/// Credentials from a CRI AuthConfig: username/password, `auth` (base64 user:pass), an
/// identity token (sent as the password, as registries that issue them accept), or a
/// registry token (a bearer token used as is).
pub fn image_auth(auth: Option<cri::AuthConfig>) -> Result<Option<Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.registry_token.is_empty() {
        return Ok(Some(Credentials::Bearer(a.registry_token)));
    }
    if !a.identity_token.is_empty() {
        let username = if a.username.is_empty() { "<token>".to_owned() } else { a.username };
        return Ok(Some(Credentials::Basic { username, password: a.identity_token }));
    }
    if !a.auth.is_empty() {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| invalid("auth.auth", format!("is not base64: {e}")))?;
        let text = String::from_utf8(raw).map_err(|_| invalid("auth.auth", "is not UTF-8"))?;
        let (username, password) =
            text.split_once(':').ok_or_else(|| invalid("auth.auth", "is not user:password"))?;
        return Ok(Some(Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }));
    }
    if a.username.is_empty() && a.password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::Basic { username: a.username, password: a.password }))
}

/// An image as the CRI shows it: a numeric USER is the uid, a name the username.
pub fn cri_image(rec: &ImageRecord) -> cri::Image {
    let user = rec.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user.to_owned()),
    };
    cri::Image {
        id: rec.id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size(),
        uid,
        username,
        spec: Some(cri::ImageSpec { image: rec.id.clone(), ..Default::default() }),
        pinned: false,
    }
}

/// ImageStatus' verbose `info`: digests, layers and the config.
pub fn image_info(rec: &ImageRecord, config: &[u8]) -> serde_json::Value {
    let layers: Vec<_> = rec
        .layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "digest": l.digest, "mediaType": l.media_type, "size": l.size,
                "diffID": l.diff_id, "chainID": l.chain_id,
            })
        })
        .collect();
    serde_json::json!({
        "id": rec.id,
        "repoTags": rec.repo_tags,
        "repoDigests": rec.repo_digests,
        "manifestDigest": rec.manifest,
        "indexDigest": rec.index,
        "layers": layers,
        "config": serde_json::from_slice::<serde_json::Value>(config).unwrap_or_default(),
    })
}

/// Validates a CreateContainer request into the runtime's spec.
pub fn container_spec(config: Option<cri::ContainerConfig>) -> Result<ContainerSpec, Status> {
    let c = config.ok_or_else(|| invalid("config", "is required"))?;
    let meta = c.metadata.ok_or_else(|| invalid("config.metadata", "is required"))?;
    check_name("config.metadata.name", &meta.name)?;
    let image = image_ref("config.image", c.image.as_ref())?;
    let mut envs = Vec::new();
    for (n, kv) in c.envs.into_iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains(['=', '\0']) {
            return Err(invalid(
                &format!("config.envs[{n}].key"),
                format!("{:?} is not a variable name", kv.key),
            ));
        }
        envs.push((kv.key, kv.value));
    }
    let mut mounts = Vec::new();
    for (n, m) in c.mounts.into_iter().enumerate() {
        if !m.container_path.starts_with('/') {
            return Err(invalid(
                &format!("config.mounts[{n}].container_path"),
                format!("{:?} is not absolute", m.container_path),
            ));
        }
        if !m.host_path.starts_with('/') {
            return Err(invalid(
                &format!("config.mounts[{n}].host_path"),
                format!("{:?} is not absolute", m.host_path),
            ));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
            Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
            Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
            Err(_) => {
                return Err(invalid(
                    &format!("config.mounts[{n}].propagation"),
                    format!("unknown value {}", m.propagation),
                ));
            }
        };
        mounts.push(MountSpec {
            container_path: m.container_path,
            host_path: m.host_path.into(),
            readonly: m.readonly,
            propagation,
        });
    }
    let devices = c
        .devices
        .into_iter()
        .map(|d| DeviceSpec {
            container_path: d.container_path,
            host_path: d.host_path.into(),
            permissions: d.permissions,
        })
        .collect();
    let linux = c.linux.unwrap_or_default();
    let resources = linux.resources.map(resources).unwrap_or_default();
    let security = security(linux.security_context.unwrap_or_default())?;
    if c.log_path.starts_with('/') || c.log_path.split('/').any(|p| p == "..") {
        return Err(invalid(
            "config.log_path",
            format!("{:?} must be relative to the pod's log directory", c.log_path),
        ));
    }
    Ok(ContainerSpec {
        metadata: ContainerMetadata { name: meta.name, attempt: meta.attempt },
        image,
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs,
        mounts,
        devices,
        labels: sorted(c.labels),
        annotations: sorted(c.annotations),
        log_path: c.log_path,
        stdin: c.stdin,
        tty: c.tty,
        resources,
        security,
    })
}

pub fn resources(r: cri::LinuxContainerResources) -> Resources {
    Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit: r.memory_limit_in_bytes,
        memory_swap_limit: r.memory_swap_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        hugepage_limits: r.hugepage_limits.into_iter().map(|h| (h.page_size, h.limit)).collect(),
        unified: r.unified.into_iter().collect(),
    }
}

fn security(s: cri::LinuxContainerSecurityContext) -> Result<Security, Status> {
    let field = "config.linux.security_context";
    let caps = s.capabilities.unwrap_or_default();
    // No namespace options at all (crictl's minimal configs): the container's own PID
    // namespace, as kubelet asks by default.
    let ns = s.namespace_options.unwrap_or(cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    });
    let pid_mode = match cri::NamespaceMode::try_from(ns.pid) {
        Ok(cri::NamespaceMode::Container) => PidMode::Container,
        Ok(cri::NamespaceMode::Pod) => PidMode::Pod,
        Ok(cri::NamespaceMode::Node) => PidMode::Node,
        Ok(cri::NamespaceMode::Target) => PidMode::Target(
            podbay_runtime::ids::ContainerId::parse(&ns.target_id)
                .map_err(|e| invalid(&format!("{field}.namespace_options.target_id"), e))?,
        ),
        Err(_) => {
            return Err(invalid(
                &format!("{field}.namespace_options.pid"),
                format!("unknown mode {}", ns.pid),
            ));
        }
    };
    let uid = |v: Option<cri::Int64Value>, name: &str| -> Result<Option<u32>, Status> {
        v.map(|v| {
            u32::try_from(v.value).map_err(|_| {
                invalid(&format!("{field}.{name}"), format!("{} is not a valid id", v.value))
            })
        })
        .transpose()
    };
    let seccomp = match s.seccomp {
        // Hardened by default: no profile means RuntimeDefault (see docs/architecture.md).
        None => SeccompProfile::RuntimeDefault,
        Some(p) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::RuntimeDefault) => {
                SeccompProfile::RuntimeDefault
            }
            Ok(cri::security_profile::ProfileType::Unconfined) => SeccompProfile::Unconfined,
            Ok(cri::security_profile::ProfileType::Localhost) => {
                if !p.localhost_ref.starts_with('/') {
                    return Err(invalid(
                        &format!("{field}.seccomp.localhost_ref"),
                        format!("{:?} is not an absolute path", p.localhost_ref),
                    ));
                }
                SeccompProfile::Localhost(p.localhost_ref.into())
            }
            Err(_) => {
                return Err(invalid(
                    &format!("{field}.seccomp.profile_type"),
                    format!("unknown type {}", p.profile_type),
                ));
            }
        },
    };
    for (list, names) in [
        ("add_capabilities", &caps.add_capabilities),
        ("drop_capabilities", &caps.drop_capabilities),
    ] {
        for (i, name) in names.iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            let cap = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            if cap != "CAP_ALL" && !ALL_CAPABILITIES.contains(&cap.as_str()) {
                return Err(invalid(
                    &format!("{field}.capabilities.{list}[{i}]"),
                    format!("unknown capability {name:?}"),
                ));
            }
        }
    }
    Ok(Security {
        privileged: s.privileged,
        add_capabilities: caps.add_capabilities,
        drop_capabilities: caps.drop_capabilities,
        run_as_user: uid(s.run_as_user, "run_as_user")?,
        run_as_group: uid(s.run_as_group, "run_as_group")?,
        run_as_username: s.run_as_username,
        supplemental_groups: s
            .supplemental_groups
            .into_iter()
            .map(|g| {
                u32::try_from(g).map_err(|_| {
                    invalid(
                        &format!("{field}.supplemental_groups"),
                        format!("{g} is not a valid id"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        readonly_rootfs: s.readonly_rootfs,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths,
        readonly_paths: s.readonly_paths,
        seccomp,
        pid_mode,
    })
}

fn cri_container_state(s: ContainerState) -> i32 {
    match s {
        ContainerState::Created => cri::ContainerState::ContainerCreated as i32,
        ContainerState::Running => cri::ContainerState::ContainerRunning as i32,
        ContainerState::Exited => cri::ContainerState::ContainerExited as i32,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown as i32,
    }
}

fn cri_container_metadata(m: &ContainerMetadata) -> cri::ContainerMetadata {
    cri::ContainerMetadata { name: m.name.clone(), attempt: m.attempt }
}

fn cri_image_spec(rec: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec { image: rec.spec.image.clone(), ..Default::default() }
}

pub fn container_summary(rec: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: rec.id.to_string(),
        pod_sandbox_id: rec.sandbox_id.to_string(),
        metadata: Some(cri_container_metadata(&rec.spec.metadata)),
        image: Some(cri_image_spec(rec)),
        image_ref: rec.image_ref.clone(),
        state: cri_container_state(rec.state),
        created_at: rec.created_at,
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        ..Default::default()
    }
}

pub fn container_status(
    rec: &ContainerRecord,
    oci: Option<serde_json::Value>,
    verbose: bool,
) -> cri::ContainerStatusResponse {
    let mounts = rec
        .spec
        .mounts
        .iter()
        .map(|m| cri::Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.to_string_lossy().into_owned(),
            readonly: m.readonly,
            propagation: match m.propagation {
                Propagation::Private => cri::MountPropagation::PropagationPrivate,
                Propagation::HostToContainer => cri::MountPropagation::PropagationHostToContainer,
                Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
            } as i32,
            ..Default::default()
        })
        .collect();
    let status = cri::ContainerStatus {
        id: rec.id.to_string(),
        metadata: Some(cri_container_metadata(&rec.spec.metadata)),
        state: cri_container_state(rec.state),
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at: rec.finished_at,
        exit_code: rec.exit_code,
        image: Some(cri_image_spec(rec)),
        image_ref: rec.image_ref.clone(),
        reason: rec.reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        message: rec.message.clone(),
        labels: unsorted(&rec.spec.labels),
        annotations: unsorted(&rec.spec.annotations),
        mounts,
        log_path: rec.log_path.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let mut info = HashMap::new();
    if verbose {
        let v = serde_json::json!({
            "sandboxID": rec.sandbox_id,
            "pid": rec.init.map(|i| i.pid),
            "imageId": rec.image_id,
            "cgroup": rec.cgroup,
            "stopSignal": rec.stop_signal,
            "runtimeSpec": oci,
            "config": rec.spec,
        });
        info.insert("info".to_owned(), v.to_string());
    }
    cri::ContainerStatusResponse { status: Some(status), info }
}

pub fn container_filter(f: Option<cri::ContainerFilter>) -> ContainerFilter {
    let Some(f) = f else { return ContainerFilter::default() };
    let state = f.state.map(|s| match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    });
    ContainerFilter {
        id: Some(f.id).filter(|s| !s.is_empty()),
        state,
        sandbox_id: Some(f.pod_sandbox_id).filter(|s| !s.is_empty()),
        labels: sorted(f.label_selector),
    }
}

fn u64v(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

fn cpu_memory(t: i64, u: &CgroupUsage) -> (cri::CpuUsage, cri::MemoryUsage) {
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
            metadata: Some(cri::ContainerMetadata { name: s.name.clone(), attempt: 0 }),
            labels: unsorted(&s.labels),
            annotations: unsorted(&s.annotations),
        }),
        cpu: Some(cpu),
        memory: Some(memory),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: s.timestamp,
            fs_id: None,
            used_bytes: u64v(s.writable_bytes),
            inodes_used: u64v(s.writable_inodes),
        }),
        ..Default::default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(f: impl FnOnce(&mut cri::PodSandboxConfig)) -> cri::RunPodSandboxRequest {
        let mut config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web-1".into(),
            ..Default::default()
        };
        f(&mut config);
        cri::RunPodSandboxRequest { config: Some(config), ..Default::default() }
    }

    fn err(f: impl FnOnce(&mut cri::PodSandboxConfig)) -> String {
        let e = sandbox_spec(request(f)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        e.message().to_owned()
    }

    #[test]
    fn sysctls_are_namespaced_and_well_formed() {
        let with = |key: &str| {
            let key = key.to_owned();
            move |c: &mut cri::PodSandboxConfig| {
                c.linux.get_or_insert_default().sysctls.insert(key, "1".into());
            }
        };
        for ok in ["net.ipv4.ip_forward", "net/ipv4/conf/eth0.100/forwarding", "fs.mqueue.msg_max"]
        {
            let spec = sandbox_spec(request(with(ok))).unwrap();
            assert_eq!(spec.sysctls.len(), 1, "{ok}");
        }
        for (bad, words) in [
            ("kernel.panic", "not a namespaced sysctl"),
            ("net/../../../etc/passwd", "not a sysctl name"),
            ("net..ipv4", "not a sysctl name"),
            ("vm.swappiness", "not a namespaced sysctl"),
        ] {
            let e = err(with(bad));
            assert!(e.contains(bad) && e.contains(words), "{e}");
        }
    }

    #[test]
    fn valid_config_converts() {
        let spec = sandbox_spec(request(|_| {})).unwrap();
        assert_eq!(spec.hostname, "web-1");
        assert_eq!(spec.namespaces, NamespaceSpec::default());
        assert!(spec.dns.is_none());
    }

    #[test]
    fn bad_metadata_names_the_field() {
        assert!(err(|c| c.metadata = None).starts_with("config.metadata:"));
        assert!(
            err(|c| c.metadata.as_mut().unwrap().name.clear()).starts_with("config.metadata.name")
        );
        assert!(err(|c| c.metadata.as_mut().unwrap().namespace.clear()).contains("namespace"));
        assert!(err(|c| c.metadata.as_mut().unwrap().uid = "a/b".into()).contains("uid"));
        assert!(err(|c| c.metadata.as_mut().unwrap().name = "a\0b".into()).contains("NUL"));
        assert!(err(|c| c.metadata.as_mut().unwrap().name = "x".repeat(254)).contains("253"));
        let e = sandbox_spec(cri::RunPodSandboxRequest::default()).unwrap_err();
        assert!(e.message().starts_with("config:"));
    }

    #[test]
    fn bad_hostname_and_dns_name_the_field() {
        for h in ["-bad", "a..b", "under_score", &"h".repeat(65), "bad-"] {
            assert!(err(|c| c.hostname = h.into()).starts_with("config.hostname"), "{h}");
        }
        let dns = |servers: &[&str], options: &[&str]| cri::DnsConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            searches: vec![],
            options: options.iter().map(|s| s.to_string()).collect(),
        };
        assert!(err(|c| c.dns_config = Some(dns(&["nope"], &[]))).contains("servers[0]"));
        for bad in ["ndots:", "a b", "", ":5", "x:y z"] {
            let e = err(|c| c.dns_config = Some(dns(&["1.1.1.1"], &["ndots:5", bad])));
            assert!(e.contains("options[1]"), "{bad}: {e}");
        }
        sandbox_spec(request(|c| c.dns_config = Some(dns(&["::1"], &["ndots:5", "edns0"]))))
            .unwrap();
    }

    #[test]
    fn default_hostname_from_name() {
        assert_eq!(default_hostname("My_Pod.v1"), "my-pod-v1");
        assert_eq!(default_hostname("___"), "pod");
    }

    #[test]
    fn namespace_modes() {
        let spec = sandbox_spec(request(|c| {
            c.linux = Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }))
        .unwrap();
        assert_eq!(spec.namespaces.network, NamespaceMode::Node);
        assert_eq!(spec.namespaces.pid, NamespaceMode::Container);
        let e = err(|c| {
            c.linux = Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption { pid: 3, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        });
        assert!(e.contains("namespace_options.pid"), "{e}");
    }
}
