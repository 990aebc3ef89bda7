//! CreateContainer's ContainerConfig (and UpdateContainerResources' resources), validated
//! into the runtime's [`ContainerSpec`]. Bad input is InvalidArgument naming the field,
//! before anything is created.

use k8s_cri::v1 as cri;
use podbay_runtime::container::spec::ALL_CAPABILITIES;
use podbay_runtime::sandbox::UsernsSpec;

use super::sandbox_config::id_ranges;
use podbay_runtime::container::{
    ContainerMetadata, ContainerSpec, DeviceSpec, MountSpec, PidMode, Propagation, Resources,
    SeccompProfile, Security, UsernsRequest,
};
use tonic::Status;

use super::fields::{check_keys, check_lsm, check_name, invalid, sorted};
use super::image::image_ref;

/// What the node's config says about fields a request leaves unset.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The seccomp profile when the request names none (`container.unset_seccomp_profile`).
    pub seccomp: SeccompProfile,
}

impl Default for Defaults {
    /// The CRI's own meaning of unset fields.
    fn default() -> Self {
        Defaults { seccomp: SeccompProfile::Unconfined }
    }
}

/// Validates a CreateContainer request into the runtime's spec.
pub fn container_spec(
    config: Option<cri::ContainerConfig>,
    defaults: &Defaults,
) -> Result<ContainerSpec, Status> {
    let c = config.ok_or_else(|| invalid("config", "is required"))?;
    let meta = c.metadata.ok_or_else(|| invalid("config.metadata", "is required"))?;
    check_name("config.metadata.name", &meta.name)?;
    check_keys("config.labels", &c.labels)?;
    check_keys("config.annotations", &c.annotations)?;
    let image = image_ref("config.image", c.image.as_ref())?;
    let user_specified_image = c.image.as_ref().map(|i| i.user_specified_image.clone());
    let user_specified_image = user_specified_image.unwrap_or_default();
    if user_specified_image.len() > 4096 || user_specified_image.chars().any(char::is_control) {
        return Err(invalid(
            "config.image.user_specified_image",
            "must be at most 4096 bytes without control characters",
        ));
    }
    let envs = envs(c.envs)?;
    let mounts = mounts(c.mounts)?;
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
    let resources = match linux.resources {
        Some(r) => resources(r, "config.linux.resources")?,
        None => Resources::default(),
    };
    let security = security(linux.security_context.unwrap_or_default(), defaults)?;
    if c.log_path.starts_with('/') || c.log_path.split('/').any(|p| p == "..") {
        return Err(invalid(
            "config.log_path",
            format!("{:?} must be relative to the pod's log directory", c.log_path),
        ));
    }
    Ok(ContainerSpec {
        metadata: ContainerMetadata { name: meta.name, attempt: meta.attempt },
        image,
        user_specified_image,
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
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources,
        security,
    })
}

fn envs(raw: Vec<cri::KeyValue>) -> Result<Vec<(String, String)>, Status> {
    let mut envs = Vec::new();
    for (n, kv) in raw.into_iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains(['=', '\0']) {
            return Err(invalid(
                &format!("config.envs[{n}].key"),
                format!("{:?} is not a variable name", kv.key),
            ));
        }
        envs.push((kv.key, kv.value));
    }
    Ok(envs)
}

fn mounts(raw: Vec<cri::Mount>) -> Result<Vec<MountSpec>, Status> {
    let mut mounts = Vec::new();
    for (n, m) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("config.mounts[{n}].{name}");
        if !m.container_path.starts_with('/') {
            let reason = format!("{:?} is not absolute", m.container_path);
            return Err(invalid(&field("container_path"), reason));
        }
        if let Err(reason) =
            podbay_runtime::container::spec::check_mount_destination(&m.container_path)
        {
            return Err(invalid(&field("container_path"), reason));
        }
        if m.recursive_read_only && !m.readonly {
            return Err(invalid(&field("recursive_read_only"), "needs readonly"));
        }
        if m.recursive_read_only
            && m.propagation != cri::MountPropagation::PropagationPrivate as i32
        {
            return Err(invalid(&field("recursive_read_only"), "needs propagation PRIVATE"));
        }
        if !m.host_path.starts_with('/') {
            return Err(invalid(&field("host_path"), format!("{:?} is not absolute", m.host_path)));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
            Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
            Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
            Err(_) => {
                let reason = format!("unknown value {}", m.propagation);
                return Err(invalid(&field("propagation"), reason));
            }
        };
        let idmap = match (m.uid_mappings.is_empty(), m.gid_mappings.is_empty()) {
            (true, true) => None,
            (false, false) => Some(UsernsSpec {
                uids: id_ranges(&field("uid_mappings"), &m.uid_mappings)?,
                gids: id_ranges(&field("gid_mappings"), &m.gid_mappings)?,
            }),
            _ => {
                let reason = "uid_mappings and gid_mappings go together";
                return Err(invalid(&field("uid_mappings"), reason));
            }
        };
        mounts.push(MountSpec {
            container_path: m.container_path,
            host_path: m.host_path.into(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation,
            idmap,
        });
    }
    Ok(mounts)
}

/// Resource limits, each checked against what the kernel takes (a value it would refuse
/// later, in the middle of creating the container, is InvalidArgument naming the field
/// now). `field` is where they are in the request.
pub fn resources(r: cri::LinuxContainerResources, field: &str) -> Result<Resources, Status> {
    let bad = |name: &str, reason: String| Err(invalid(&format!("{field}.{name}"), reason));
    if r.cpu_period != 0 && !(1_000..=1_000_000).contains(&r.cpu_period) {
        return bad("cpu_period", format!("{} µs is outside 1000..=1000000", r.cpu_period));
    }
    // The kernel takes a quota up to a second per CPU for 1024 CPUs worth of periods.
    if ![0, -1].contains(&r.cpu_quota) && !(1_000..=1_000_000 * 1024).contains(&r.cpu_quota) {
        return bad(
            "cpu_quota",
            format!("{} µs is outside 1000..=1024000000 (-1: none)", r.cpu_quota),
        );
    }
    if r.cpu_shares != 0 && !(2..=262_144).contains(&r.cpu_shares) {
        return bad("cpu_shares", format!("{} is outside 2..=262144", r.cpu_shares));
    }
    const MIN_MEMORY: i64 = 6 << 20;
    if r.memory_limit_in_bytes != 0 && r.memory_limit_in_bytes < MIN_MEMORY {
        let reason = format!("{} bytes: a limit must be at least 6 MiB", r.memory_limit_in_bytes);
        return bad("memory_limit_in_bytes", reason);
    }
    let swap = r.memory_swap_limit_in_bytes;
    if ![0, -1].contains(&swap) && (swap < 0 || swap < r.memory_limit_in_bytes) {
        let reason = format!("{swap} must be -1, 0 or at least memory_limit_in_bytes");
        return bad("memory_swap_limit_in_bytes", reason);
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return bad("oom_score_adj", format!("{} is outside -1000..=1000", r.oom_score_adj));
    }
    for (name, list, online) in [
        ("cpuset_cpus", &r.cpuset_cpus, "/sys/devices/system/cpu/online"),
        ("cpuset_mems", &r.cpuset_mems, "/sys/devices/system/node/online"),
    ] {
        if let Err(reason) = check_cpuset(list, online) {
            return bad(name, reason);
        }
    }
    for h in &r.hugepage_limits {
        let digits = h.page_size.trim_end_matches(['K', 'M', 'G', 'B']);
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || !h.page_size.ends_with('B')
        {
            return bad(
                "hugepage_limits",
                format!("{:?} is not a page size (2MB, 1GB)", h.page_size),
            );
        }
    }
    for key in r.unified.keys() {
        if key.is_empty() || key.contains(['/', '\0']) || key.starts_with('.') {
            return bad("unified", format!("{key:?} is not a cgroup file name"));
        }
    }
    Ok(Resources {
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
    })
}

/// A cpuset list (`0-3,6`) naming only what the node has online (`online`, the same form).
fn check_cpuset(list: &str, online: &str) -> Result<(), String> {
    if list.is_empty() {
        return Ok(());
    }
    let want = parse_list(list).ok_or_else(|| format!("{list:?} is not a list like 0-3,6"))?;
    let have = std::fs::read_to_string(online).ok().and_then(|s| parse_list(s.trim()));
    if let Some(have) = have
        && let Some(missing) = want.iter().find(|n| !have.contains(n))
    {
        return Err(format!("{list:?} names {missing}, which this node does not have"));
    }
    Ok(())
}

fn parse_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let n = part.trim().parse::<u32>().ok()?;
                (n, n)
            }
        };
        if a > b || b - a > 4096 {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

fn security(
    s: cri::LinuxContainerSecurityContext,
    defaults: &Defaults,
) -> Result<Security, Status> {
    let field = "config.linux.security_context";
    // As containerd: a group alone would run the image's user with another primary group.
    if s.run_as_group.is_some() && s.run_as_user.is_none() && s.run_as_username.is_empty() {
        return Err(invalid(
            &format!("{field}.run_as_group"),
            "is set without run_as_user or run_as_username",
        ));
    }
    let caps = s.capabilities.unwrap_or_default();
    check_capabilities(&caps)?;
    // Deprecated in the CRI, and still what older kubelets send.
    #[allow(deprecated)]
    let apparmor_profile = &s.apparmor_profile;
    check_lsm(field, s.apparmor.as_ref(), apparmor_profile, s.selinux_options.as_ref())?;
    let uid = |v: Option<cri::Int64Value>, name: &str| -> Result<Option<u32>, Status> {
        v.map(|v| id(v.value, &format!("{field}.{name}"))).transpose()
    };
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
            .map(|g| id(g, &format!("{field}.supplemental_groups")))
            .collect::<Result<_, _>>()?,
        strict_supplemental_groups: match cri::SupplementalGroupsPolicy::try_from(
            s.supplemental_groups_policy,
        ) {
            Ok(cri::SupplementalGroupsPolicy::Merge) => false,
            Ok(cri::SupplementalGroupsPolicy::Strict) => true,
            Err(_) => {
                return Err(invalid(
                    &format!("{field}.supplemental_groups_policy"),
                    format!("unknown policy {}", s.supplemental_groups_policy),
                ));
            }
        },
        readonly_rootfs: s.readonly_rootfs,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths,
        readonly_paths: s.readonly_paths,
        seccomp: seccomp(s.seccomp, defaults)?,
        userns: userns_request(s.namespace_options.as_ref())?,
        pid_mode: pid_mode(s.namespace_options)?,
    })
}

fn userns_request(ns: Option<&cri::NamespaceOption>) -> Result<UsernsRequest, Status> {
    let field = "config.linux.security_context.namespace_options.userns_options";
    let Some(userns) = ns.and_then(|ns| ns.userns_options.as_ref()) else {
        return Ok(UsernsRequest::Unset);
    };
    Ok(match super::sandbox_config::userns_spec(field, Some(userns))? {
        Some(maps) => UsernsRequest::Pod(maps),
        None => UsernsRequest::Node,
    })
}

/// A uid or gid.
fn id(value: i64, field: &str) -> Result<u32, Status> {
    u32::try_from(value).map_err(|_| invalid(field, format!("{value} is not a valid id")))
}

/// The container's PID namespace. No namespace options at all (crictl's minimal configs):
/// its own, as kubelet asks by default.
fn pid_mode(ns: Option<cri::NamespaceOption>) -> Result<PidMode, Status> {
    let field = "config.linux.security_context.namespace_options";
    let ns = ns.unwrap_or(cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    });
    match cri::NamespaceMode::try_from(ns.pid) {
        Ok(cri::NamespaceMode::Container) => Ok(PidMode::Container),
        Ok(cri::NamespaceMode::Pod) => Ok(PidMode::Pod),
        Ok(cri::NamespaceMode::Node) => Ok(PidMode::Node),
        Ok(cri::NamespaceMode::Target) => Ok(PidMode::Target(
            podbay_runtime::ids::ContainerId::parse(&ns.target_id)
                .map_err(|e| invalid(&format!("{field}.target_id"), e))?,
        )),
        Err(_) => Err(invalid(&format!("{field}.pid"), format!("unknown mode {}", ns.pid))),
    }
}

fn seccomp(
    profile: Option<cri::SecurityProfile>,
    defaults: &Defaults,
) -> Result<SeccompProfile, Status> {
    use cri::security_profile::ProfileType;
    let field = "config.linux.security_context.seccomp";
    let Some(p) = profile else { return Ok(defaults.seccomp.clone()) };
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(SeccompProfile::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(SeccompProfile::Unconfined),
        Ok(ProfileType::Localhost) if p.localhost_ref.starts_with('/') => {
            Ok(SeccompProfile::Localhost(p.localhost_ref.into()))
        }
        Ok(ProfileType::Localhost) => Err(invalid(
            &format!("{field}.localhost_ref"),
            format!("{:?} is not an absolute path", p.localhost_ref),
        )),
        Err(_) => Err(invalid(
            &format!("{field}.profile_type"),
            format!("unknown type {}", p.profile_type),
        )),
    }
}

/// Every capability named is one the kernel knows (or `ALL`).
fn check_capabilities(caps: &cri::Capability) -> Result<(), Status> {
    for (list, names) in [
        ("add_capabilities", &caps.add_capabilities),
        ("drop_capabilities", &caps.drop_capabilities),
    ] {
        for (i, name) in names.iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            let cap = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            if cap != "CAP_ALL" && !ALL_CAPABILITIES.contains(&cap.as_str()) {
                return Err(invalid(
                    &format!("config.linux.security_context.capabilities.{list}[{i}]"),
                    format!("unknown capability {name:?}"),
                ));
            }
        }
    }
    Ok(())
}
