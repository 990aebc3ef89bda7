//! RunPodSandbox's PodSandboxConfig, validated into the runtime's [`SandboxSpec`]: names,
//! hostname, log directory, DNS, namespace modes, hostPorts and sysctls. Bad input is
//! InvalidArgument naming the field, before anything is created.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_cri::v1 as cri;
use podbay_runtime::network::PortMapping;
use podbay_runtime::sandbox::{
    DnsSpec, IdRange, NamespaceMode, NamespaceSpec, PodMetadata, SandboxSpec, UsernsSpec,
};
use tonic::Status;

use super::fields::{NAME_MAX, check_keys, check_lsm, check_name, invalid, sorted};

/// Longest hostname Linux accepts (HOST_NAME_MAX).
const HOSTNAME_MAX: usize = 64;

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
    check_keys("config.labels", &config.labels)?;
    check_keys("config.annotations", &config.annotations)?;
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
    let security = linux.security_context.unwrap_or_default();
    check_lsm(
        "config.linux.security_context",
        security.apparmor.as_ref(),
        "",
        security.selinux_options.as_ref(),
    )?;
    let ns = security.namespace_options.unwrap_or_default();
    let namespaces = namespace_spec(&ns)?;
    let cgroup_parent = match linux.cgroup_parent.as_str() {
        "" => None,
        p => Some(cgroup_parent("config.linux.cgroup_parent", p)?),
    };
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

/// Longest cgroup path accepted (the kernel's PATH_MAX, less room for the hierarchy's
/// mount point and the container's id below it).
const CGROUP_PATH_MAX: usize = 3072;
/// Longest name of one cgroup directory (the kernel's NAME_MAX).
const CGROUP_NAME_MAX: usize = 255;

/// kubelet's cgroup_parent, as the cgroupfs driver sends it: an absolute path below the
/// hierarchy's root (`/kubepods/burstable/pod<uid>`). Nothing that could leave the root,
/// name a control file or be the root itself is accepted; a trailing `/` is dropped.
fn cgroup_parent(field: &str, path: &str) -> Result<String, Status> {
    let bad = |reason: String| Err(invalid(field, format!("{path:?} {reason}")));
    if !path.starts_with('/') {
        return bad("must be an absolute cgroupfs path (podbay uses the cgroupfs driver, \
                    not systemd slices)"
            .into());
    }
    if path.len() > CGROUP_PATH_MAX {
        return bad(format!("is {} bytes long; at most {CGROUP_PATH_MAX}", path.len()));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return bad("is the hierarchy's root; a pod needs a cgroup of its own".into());
    }
    for part in trimmed[1..].split('/') {
        match part {
            "" => return bad("has an empty component ('//')".into()),
            "." | ".." => return bad(format!("has a {part:?} component")),
            p if p.len() > CGROUP_NAME_MAX => {
                return bad(format!("has a component longer than {CGROUP_NAME_MAX} bytes"));
            }
            p if p.chars().any(char::is_control) => {
                return bad("has a control character".into());
            }
            p if is_cgroup_control_file(p) => {
                return bad(format!("names the cgroup control file {p:?}"));
            }
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// Names the kernel uses for files in a cgroup directory (v1 and v2): `cgroup.*`, the
/// v1 core files, and `<controller>.*` for every controller.
fn is_cgroup_control_file(name: &str) -> bool {
    const CORE: &[&str] = &["tasks", "notify_on_release", "release_agent"];
    const CONTROLLERS: &[&str] = &[
        "cgroup",
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "io",
        "blkio",
        "pids",
        "devices",
        "freezer",
        "hugetlb",
        "net_cls",
        "net_prio",
        "perf_event",
        "rdma",
        "misc",
    ];
    CORE.contains(&name)
        || name.split_once('.').is_some_and(|(prefix, _)| CONTROLLERS.contains(&prefix))
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
    let mut spec = NamespaceSpec {
        network: shared("network", ns.network)?,
        ipc: shared("ipc", ns.ipc)?,
        pid,
        user: None,
    };
    spec.user = userns_spec(&format!("{field}.userns_options"), ns.userns_options.as_ref())?;
    if spec.user.is_some() {
        for (name, mode) in [("network", spec.network), ("ipc", spec.ipc), ("pid", spec.pid)] {
            if mode == NamespaceMode::Node {
                return Err(invalid(
                    &format!("{field}.userns_options"),
                    format!(
                        "a pod with its own user namespace cannot use the node's {name} namespace"
                    ),
                ));
            }
        }
    }
    Ok(spec)
}

/// The most ranges a uid_map or gid_map takes (the kernel's limit).
const MAX_ID_RANGES: usize = 340;

/// CRI userns_options: absent or NODE is the node's user namespace; POD is the pod's own,
/// with the maps kubelet chose. The maps must be ones the kernel takes, must give the
/// pod a root (container id 0) and must not reach the node's root.
pub(crate) fn userns_spec(
    field: &str,
    userns: Option<&cri::UserNamespace>,
) -> Result<Option<UsernsSpec>, Status> {
    use cri::NamespaceMode as M;
    let Some(userns) = userns else { return Ok(None) };
    match M::try_from(userns.mode) {
        Ok(M::Node) => {
            if !userns.uids.is_empty() || !userns.gids.is_empty() {
                return Err(invalid(field, "mode NODE takes no uids or gids"));
            }
            Ok(None)
        }
        Ok(M::Pod) => Ok(Some(UsernsSpec {
            uids: id_ranges(&format!("{field}.uids"), &userns.uids)?,
            gids: id_ranges(&format!("{field}.gids"), &userns.gids)?,
        })),
        Ok(m) => Err(invalid(
            &format!("{field}.mode"),
            format!("{} is not supported (POD or NODE)", m.as_str_name()),
        )),
        Err(_) => Err(invalid(&format!("{field}.mode"), format!("unknown mode {}", userns.mode))),
    }
}

pub(crate) fn id_ranges(field: &str, maps: &[cri::IdMapping]) -> Result<Vec<IdRange>, Status> {
    if maps.is_empty() {
        return Err(invalid(field, "mode POD needs at least one mapping"));
    }
    if maps.len() > MAX_ID_RANGES {
        return Err(invalid(
            field,
            format!("{} mappings; the kernel takes {MAX_ID_RANGES}", maps.len()),
        ));
    }
    let end = |start: u32, len: u32| u64::from(start) + u64::from(len);
    let mut out = Vec::with_capacity(maps.len());
    for (n, m) in maps.iter().enumerate() {
        let bad = |msg: String| Err(invalid(&format!("{field}[{n}]"), msg));
        if m.length == 0 {
            return bad("length is 0".into());
        }
        if end(m.container_id, m.length) > u64::from(u32::MAX)
            || end(m.host_id, m.length) > u64::from(u32::MAX)
        {
            return bad("runs past the largest id (4294967294)".into());
        }
        if m.host_id == 0 {
            return bad("maps the node's root (host id 0) into the pod".into());
        }
        for (k, o) in maps[..n].iter().enumerate() {
            // [a, a + m.length) and [b, b + o.length) share an id.
            let overlap =
                |a: u32, b: u32| u64::from(a) < end(b, o.length) && u64::from(b) < end(a, m.length);
            if overlap(m.container_id, o.container_id) || overlap(m.host_id, o.host_id) {
                return bad(format!("overlaps mapping {k}"));
            }
        }
        out.push(IdRange { container_id: m.container_id, host_id: m.host_id, length: m.length });
    }
    if !out.iter().any(|r| r.container_id == 0) {
        return Err(invalid(field, "container id 0 (the pod's root) is not mapped"));
    }
    Ok(out)
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
    fn apparmor_and_selinux_that_cannot_apply_are_refused() {
        let e = err(|c| {
            let sc = c.linux.get_or_insert_default().security_context.get_or_insert_default();
            sc.selinux_options =
                Some(cri::SeLinuxOption { r#type: "spc_t".into(), ..Default::default() });
        });
        assert!(e.starts_with("config.linux.security_context.selinux_options: "), "{e}");
        let e = err(|c| {
            let sc = c.linux.get_or_insert_default().security_context.get_or_insert_default();
            sc.apparmor = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: "k8s-nginx".into(),
            });
        });
        assert!(e.contains("security_context.apparmor") && e.contains("k8s-nginx"), "{e}");
        // RuntimeDefault and Unconfined apply nothing here, as containerd without AppArmor.
        let ok = sandbox_spec(request(|c| {
            let sc = c.linux.get_or_insert_default().security_context.get_or_insert_default();
            sc.apparmor = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            });
            sc.selinux_options = Some(cri::SeLinuxOption::default());
        }));
        assert!(ok.is_ok());
    }

    #[test]
    fn cgroup_parents_stay_below_the_root() {
        let with = |p: &str| {
            let p = p.to_owned();
            move |c: &mut cri::PodSandboxConfig| c.linux.get_or_insert_default().cgroup_parent = p
        };
        let spec = |p: &str| sandbox_spec(request(with(p))).unwrap().cgroup_parent;
        assert_eq!(spec("/kubepods/burstable/pod1/").as_deref(), Some("/kubepods/burstable/pod1"));
        assert_eq!(spec("/kubepods.slice/x").as_deref(), Some("/kubepods.slice/x"));
        assert_eq!(spec(""), None);
        for (bad, says) in [
            ("kubepods/pod1", "absolute"),
            ("kubepods-burstable-pod1.slice", "absolute"),
            ("/", "root"),
            ("/kubepods/../../escape-1", "\"..\" component"),
            ("/kubepods/./pod1", "\".\" component"),
            ("/kubepods//pod1", "empty component"),
            ("/kubepods/cgroup.procs", "control file"),
            ("/kubepods/tasks", "control file"),
            ("/kubepods/memory.limit_in_bytes", "control file"),
            ("/kubepods/pod\n1", "control character"),
        ] {
            let e = err(with(bad));
            assert!(e.starts_with("config.linux.cgroup_parent: "), "{bad}: {e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(err(with(&format!("/{}", "a".repeat(256)))).contains("longer than 255"));
        assert!(err(with(&"/a".repeat(2000))).contains("at most 3072"));
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

    #[test]
    fn id_maps_may_touch_but_not_overlap() {
        let m = |container_id, host_id, length| cri::IdMapping { host_id, container_id, length };
        let ok = [m(0, 100_000, 1000), m(1000, 101_000, 1000)];
        assert_eq!(id_ranges("uids", &ok).unwrap().len(), 2);
        let e = id_ranges("uids", &[m(0, 100_000, 1000), m(999, 200_000, 1)]).unwrap_err();
        assert!(e.message().contains("uids[1]: overlaps mapping 0"), "{}", e.message());
        let e = id_ranges("uids", &[m(0, 100_000, 1000), m(5000, 100_999, 1)]).unwrap_err();
        assert!(e.message().contains("overlaps"), "{}", e.message());
        let e = id_ranges("uids", &[m(0, u32::MAX - 5, 10)]).unwrap_err();
        assert!(e.message().contains("runs past"), "{}", e.message());
    }
}
