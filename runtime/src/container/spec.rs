//! The OCI runtime spec of a container, built as Kubernetes defines it from the CRI
//! ContainerConfig (already validated into a [`ContainerSpec`]), its sandbox and its
//! image's config, with containerd's defaults: mounts, capabilities, masked and read-only
//! paths, a RuntimeDefault seccomp profile. Pure: every fact about the node comes in
//! [`NodeFacts`], so the rules are unit-tested without root.
//!
//! The spec is assembled as OCI JSON and checked by deserialising it into
//! `oci_spec::runtime::Spec`, the type libcontainer reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{ContainerSpec, Error, PidMode, Propagation, SeccompProfile};
use crate::ids::ContainerId;
use crate::layout::NsKind;
use crate::sandbox::SandboxRecord;

/// The capabilities a container gets unless the request adds or drops some (containerd's).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by its bit number (capability.h).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths hidden from unprivileged containers unless the request lists its own.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
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

/// Paths read-only in unprivileged containers unless the request lists its own.
pub const DEFAULT_READONLY_PATHS: &[&str] =
    &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the image's config says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
}

impl ImageConfig {
    /// Reads the run config out of an OCI image config blob.
    pub fn parse(blob: &[u8]) -> Result<Self, serde_json::Error> {
        let c: oci_spec::image::ImageConfiguration = serde_json::from_slice(blob)?;
        let Some(cfg) = c.config() else { return Ok(Self::default()) };
        Ok(Self {
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            env: cfg.env().clone().unwrap_or_default(),
            working_dir: cfg.working_dir().clone().unwrap_or_default(),
            user: cfg.user().clone().unwrap_or_default(),
            stop_signal: cfg.stop_signal().clone().unwrap_or_default(),
        })
    }
}

/// Facts about the node and the container's surroundings.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// Capabilities podbay holds (what "privileged" grants).
    pub capabilities: Vec<String>,
    /// podbay's own oom_score_adj: without CAP_SYS_RESOURCE nothing lower can be set.
    pub own_oom_score_adj: i64,
    /// Names of the cgroup v1 hierarchies mounted under /sys/fs/cgroup (empty on v2).
    pub cgroup_v1_hierarchies: Vec<String>,
    /// Host devices a privileged container gets (and requested devices are looked up in).
    pub host_devices: Vec<HostDevice>,
    /// Whether the hugetlb controller is there. kubelet sends hugepage limits (0 when
    /// the pod asks for none) for every page size the kernel has, whether or not the
    /// controller is mounted; without it they are dropped, as containerd does.
    pub hugetlb: bool,
    /// The node's empty directory, bound read-only over a masked directory of a container
    /// without CAP_SYS_ADMIN (`node::shared_dirs`); `None`: a tmpfs each, as runc.
    pub masked_dir_source: Option<PathBuf>,
    /// The node's cgroup v1 directory (one empty directory per hierarchy), bound
    /// read-only at /sys/fs/cgroup for such a container; `None`: a tmpfs each, as runc.
    pub cgroup_v1_dir: Option<PathBuf>,
}

/// A device node of the host, with the mode and owner it has there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path: PathBuf,
    /// `c` or `b`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (the host's: a container never gets a device more open than that).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl NodeFacts {
    fn holds(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }
}

/// The image's /etc/passwd and /etc/group, for user names.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    pub passwd: String,
    pub group: String,
}

/// A user and its groups, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl UserDb {
    fn passwd_by(&self, f: impl Fn(&str, u32) -> bool) -> Option<(String, u32, u32)> {
        self.passwd.lines().find_map(|l| {
            let p: Vec<&str> = l.split(':').collect();
            let (uid, gid) = (p.get(2)?.parse().ok()?, p.get(3)?.parse().ok()?);
            f(p[0], uid).then(|| (p[0].to_owned(), uid, gid))
        })
    }

    fn group_by_name(&self, name: &str) -> Option<u32> {
        self.group.lines().find_map(|l| {
            let p: Vec<&str> = l.split(':').collect();
            (p[0] == name).then(|| p.get(2)?.parse().ok()).flatten()
        })
    }

    /// Groups listing `user` as a member.
    fn member_of(&self, user: &str) -> Vec<u32> {
        self.group
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split(':').collect();
                let members = p.get(3)?;
                members.split(',').any(|m| m == user).then(|| p.get(2)?.parse().ok()).flatten()
            })
            .collect()
    }
}

/// Resolves the container's user: run_as_user / run_as_username, else the image's USER;
/// run_as_group overrides the group; groups the user is a member of, and the
/// supplemental groups, are added.
pub fn resolve_user(spec: &ContainerSpec, image_user: &str, db: &UserDb) -> Result<User, Error> {
    let sec = &spec.security;
    let (name, uid, mut gid) = if let Some(uid) = sec.run_as_user {
        match db.passwd_by(|_, u| u == uid) {
            Some((name, _, gid)) => (Some(name), uid, gid),
            None => (None, uid, 0),
        }
    } else if !sec.run_as_username.is_empty() {
        let (name, uid, gid) = db.passwd_by(|n, _| n == sec.run_as_username).ok_or_else(|| {
            Error::invalid(
                "linux.security_context.run_as_username",
                format!("no user {:?} in the image's /etc/passwd", sec.run_as_username),
            )
        })?;
        (Some(name), uid, gid)
    } else {
        let (user, group) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user, None),
        };
        let (name, uid, gid) = if user.is_empty() {
            (Some("root".to_owned()), 0, 0)
        } else if let Ok(uid) = user.parse::<u32>() {
            match db.passwd_by(|_, u| u == uid) {
                Some((n, _, g)) => (Some(n), uid, g),
                None => (None, uid, 0),
            }
        } else {
            let (n, u, g) = db.passwd_by(|n, _| n == user).ok_or_else(|| {
                Error::invalid("image USER", format!("no user {user:?} in the image's /etc/passwd"))
            })?;
            (Some(n), u, g)
        };
        let gid = match group {
            None => gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => db.group_by_name(g).ok_or_else(|| {
                    Error::invalid(
                        "image USER",
                        format!("no group {g:?} in the image's /etc/group"),
                    )
                })?,
            },
        };
        (name, uid, gid)
    };
    if let Some(g) = sec.run_as_group {
        gid = g;
    }
    let mut additional: Vec<u32> = match name {
        Some(n) if !sec.strict_supplemental_groups => db.member_of(&n),
        _ => Vec::new(),
    };
    additional.extend(&sec.supplemental_groups);
    additional.retain(|g| *g != gid);
    additional.sort_unstable();
    additional.dedup();
    Ok(User { uid, gid, additional_gids: additional })
}

/// The process arguments: command replaces the entrypoint (and drops the image's cmd),
/// args replace cmd.
pub fn process_args(spec: &ContainerSpec, image: &ImageConfig) -> Vec<String> {
    let (entry, cmd) = if spec.command.is_empty() {
        (&image.entrypoint, if spec.args.is_empty() { &image.cmd } else { &spec.args })
    } else {
        (&spec.command, &spec.args)
    };
    entry.iter().chain(cmd).cloned().collect()
}

/// The image's environment with the request's on top; PATH and HOSTNAME are always set.
pub fn environment(spec: &ContainerSpec, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), hostname.into())];
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in &spec.envs {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(1, ("PATH".into(), DEFAULT_PATH.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The capability set: privileged gets what podbay holds; otherwise the defaults with
/// the request's adds and drops ("ALL" works for both), never more than podbay holds.
pub fn capabilities(spec: &ContainerSpec, node: &NodeFacts) -> Vec<String> {
    let sec = &spec.security;
    if sec.privileged {
        return node.capabilities.clone();
    }
    let norm = |c: &String| {
        let c = c.to_ascii_uppercase();
        if c.starts_with("CAP_") { c } else { format!("CAP_{c}") }
    };
    let add: Vec<String> = sec.add_capabilities.iter().map(norm).collect();
    let drop: Vec<String> = sec.drop_capabilities.iter().map(norm).collect();
    let mut caps: Vec<String> = if add.iter().any(|c| c == "CAP_ALL") {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        let mut c: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        c.extend(add.into_iter().filter(|a| ALL_CAPABILITIES.contains(&a.as_str())));
        c
    };
    if drop.iter().any(|c| c == "CAP_ALL") {
        caps.clear();
    }
    caps.retain(|c| !drop.contains(c) && node.holds(c));
    caps.sort();
    caps.dedup();
    caps
}

/// A container path with `.`, `..` and repeated slashes resolved as text (`..` stops at
/// the root, as it does in the container): `/proc/../proc/self` → `/proc/self`.
pub fn clean_container_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Where a volume may go: not onto or under `/proc` (it would replace the procfs that the
/// masked paths hide parts of; runc refuses it too), except the files lxcfs serves, and
/// not over `/`, `/sys` or `/dev` as a whole.
pub fn check_mount_destination(path: &str) -> Result<(), String> {
    let clean = clean_container_path(path);
    const LXCFS: &[&str] = &[
        "/proc/cpuinfo",
        "/proc/diskstats",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/swaps",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/slabinfo",
    ];
    if clean == "/proc" || (clean.starts_with("/proc/") && !LXCFS.contains(&clean.as_str())) {
        return Err(format!(
            "{path:?} is in the container's /proc, which a volume may not replace"
        ));
    }
    if ["/", "/sys", "/dev"].contains(&clean.as_str()) {
        return Err(format!("{path:?} would replace {clean} as a whole"));
    }
    Ok(())
}

/// Where `path` lands inside `rootfs` once the image's symlinks are followed (as the
/// kernel would follow them in the container, `..` stopping at its root); None when it
/// loops. Each component is looked at with `lstat` below a prefix already free of links,
/// so nothing of the host is ever followed.
pub fn resolve_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let here = rootfs.join(done.join("/")).join(&part);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = std::fs::read_link(&here).ok()?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_owned));
            }
            _ => done.push(part),
        }
    }
    Some(format!("/{}", done.join("/")))
}

/// The annotation naming a container's sandbox in its OCI spec (containerd's).
pub const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The annotation naming the node's empty directory, which the supervisor binds
/// read-only over the container's masked directories in place of a tmpfs each
/// (`supervisor/process/premount.rs`). Set by podbay alone: a request's is dropped.
pub const MASKED_DIR_SOURCE: &str = "io.podbay.masked-dir-source";

/// Everything the spec is built from.
pub struct Inputs<'a> {
    pub id: &'a ContainerId,
    pub spec: &'a ContainerSpec,
    pub sandbox: &'a SandboxRecord,
    pub image: &'a ImageConfig,
    pub user: &'a User,
    pub rootfs: &'a Path,
    pub cgroup: &'a str,
    pub node: &'a NodeFacts,
    /// The PID namespace of the target container (PID mode TARGET).
    pub target_pid_ns: Option<PathBuf>,
    /// The Localhost seccomp profile's contents.
    pub seccomp_profile: Option<Value>,
    /// RuntimeDefault's filter goes beside `config.json`, compiled ahead (`create.rs`):
    /// the spec names none.
    pub seccomp_ahead: bool,
    /// The pod's hostname, hosts, resolv.conf and /dev/shm.
    pub pod_files: PodFiles,
    /// Where the idmapped clone of `spec.mounts[n]` is, for the mounts that ask for one.
    pub idmapped_mounts: BTreeMap<usize, PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PodFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub shm: PathBuf,
}

/// The oom_score_adj a container gets for the one it asks for: without CAP_SYS_RESOURCE
/// nothing below podbay's own can be set, so a lower request is raised to it.
pub fn applied_oom_score_adj(requested: i64, node: &NodeFacts) -> i64 {
    let adj = if requested == 0 || node.holds("CAP_SYS_RESOURCE") {
        requested
    } else {
        requested.max(node.own_oom_score_adj)
    };
    adj.clamp(-1000, 1000)
}

/// Builds the OCI spec.
pub fn build(i: &Inputs<'_>) -> Result<oci_spec::runtime::Spec, Error> {
    let spec = i.spec;
    let sec = &spec.security;
    let args = process_args(spec, i.image);
    if args.is_empty() {
        return Err(Error::invalid("command", "neither the request nor the image names a command"));
    }
    let caps = capabilities(spec, i.node);
    let shared = SharedDirs::of(i, &caps);
    let cwd = if !spec.working_dir.is_empty() {
        spec.working_dir.clone()
    } else if !i.image.working_dir.is_empty() {
        i.image.working_dir.clone()
    } else {
        "/".into()
    };
    if !cwd.starts_with('/') {
        return Err(Error::invalid("working_dir", format!("{cwd:?} is not absolute")));
    }
    let mut process = json!({
        "terminal": i.spec.tty,
        "user": { "uid": i.user.uid, "gid": i.user.gid, "additionalGids": i.user.additional_gids },
        "args": args,
        "env": environment(spec, i.image, &i.sandbox.spec.hostname),
        "cwd": cwd,
        "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
    });
    // Only when set: libcontainer loads a seccomp filter before dropping capabilities
    // only when the field is absent, and a `false` would make the load fail later.
    if sec.no_new_privs {
        process["noNewPrivileges"] = json!(true);
    }
    let res = &spec.resources;
    if res.oom_score_adj != 0 {
        process["oomScoreAdj"] = json!(applied_oom_score_adj(res.oom_score_adj, i.node));
    }

    let linux = json!({
        "cgroupsPath": i.cgroup,
        "namespaces": namespaces(i)?,
        "resources": resources(i),
        "devices": devices(i)?,
        "maskedPaths": if sec.privileged { vec![] } else if sec.masked_paths.is_empty() {
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        } else { sec.masked_paths.clone() },
        "readonlyPaths": readonly_paths(i, &shared),
    });
    let mut linux = linux;
    if let Some((uids, gids)) = id_mappings(i) {
        linux["uidMappings"] = uids;
        linux["gidMappings"] = gids;
    }
    if let Some(p) = rootfs_propagation(spec) {
        linux["rootfsPropagation"] = json!(p);
    }
    if !sec.privileged {
        match &sec.seccomp {
            SeccompProfile::RuntimeDefault if !i.seccomp_ahead => {
                linux["seccomp"] = super::seccomp::runtime_default(&caps);
            }
            SeccompProfile::RuntimeDefault => {}
            SeccompProfile::Localhost(_) => {
                linux["seccomp"] = i.seccomp_profile.clone().unwrap_or(Value::Null);
            }
            SeccompProfile::Unconfined => {}
        }
    }
    let mut annotations: BTreeMap<String, String> = spec.annotations.clone();
    annotations.insert("io.kubernetes.cri.container-name".into(), spec.metadata.name.clone());
    annotations.insert(SANDBOX_ANNOTATION.into(), i.sandbox.id.to_string());
    // podbay's own: never the request's (it names a directory the supervisor binds).
    annotations.remove(MASKED_DIR_SOURCE);
    if let Some(dir) = shared.masked {
        annotations.insert(MASKED_DIR_SOURCE.into(), dir.to_string_lossy().into_owned());
    }
    let doc = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": { "path": i.rootfs, "readonly": sec.readonly_rootfs },
        "mounts": mounts(i, &shared)?,
        "annotations": annotations,
        "linux": linux,
    });
    serde_json::from_value(doc).map_err(|e| Error::invalid("container config", e))
}

fn namespaces(i: &Inputs<'_>) -> Result<Vec<Value>, Error> {
    let mut out = vec![json!({ "type": "mount" })];
    let pod_ns = |kind: NsKind| i.sandbox.namespaces.get(&kind);
    for (kind, name) in [(NsKind::Net, "network"), (NsKind::Ipc, "ipc"), (NsKind::Uts, "uts")] {
        if let Some(path) = pod_ns(kind) {
            out.push(json!({ "type": name, "path": path }));
        }
    }
    match &i.spec.security.pid_mode {
        PidMode::Container => out.push(json!({ "type": "pid" })),
        PidMode::Pod => match pod_ns(NsKind::Pid) {
            Some(path) => out.push(json!({ "type": "pid", "path": path })),
            None => {
                return Err(Error::invalid(
                    "linux.security_context.namespace_options.pid",
                    "POD, but the sandbox has no PID namespace of its own",
                ));
            }
        },
        PidMode::Node => {}
        PidMode::Target(_) => {
            let path = i.target_pid_ns.as_ref().ok_or_else(|| {
                Error::invalid("linux.security_context.namespace_options.target_id", "not running")
            })?;
            out.push(json!({ "type": "pid", "path": path }));
        }
    }
    if let Some(path) = pod_ns(NsKind::User) {
        out.push(json!({ "type": "user", "path": path }));
    }
    // On cgroup v2 a container has a cgroup namespace of its own (rooted at its cgroup),
    // as containerd and CRI-O give it: `/proc/self/cgroup` says `0::/` and the cgroup2
    // mount at /sys/fs/cgroup shows its own cgroup (its limits, which runtimes such as
    // the JVM read there), not the node's whole tree. Not on v1, and not for a privileged
    // container, as containerd.
    if i.node.cgroup_v1_hierarchies.is_empty() && !i.spec.security.privileged {
        out.push(json!({ "type": "cgroup" }));
    }
    Ok(out)
}

/// The pod's uid and gid maps, with its user namespace (which the container joins).
fn id_mappings(i: &Inputs<'_>) -> Option<(Value, Value)> {
    let userns = i.sandbox.spec.namespaces.user.as_ref()?;
    let maps = |ranges: &[crate::sandbox::IdRange]| {
        Value::Array(
            ranges
                .iter()
                .map(|r| json!({ "containerID": r.container_id, "hostID": r.host_id, "size": r.length }))
                .collect(),
        )
    };
    Some((maps(&userns.uids), maps(&userns.gids)))
}

/// The cgroup limits alone (UpdateContainerResources), as OCI `linux.resources`.
pub fn linux_resources(
    r: &super::Resources,
    node: &NodeFacts,
) -> Result<oci_spec::runtime::LinuxResources, Error> {
    let mut v = limits(r, node);
    if let Some(o) = v.as_object_mut() {
        o.remove("devices");
    }
    serde_json::from_value(v).map_err(|e| Error::invalid("linux", e))
}

fn resources(i: &Inputs<'_>) -> Value {
    let mut out = limits(&i.spec.resources, i.node);
    let mut devices = vec![json!({ "allow": false, "access": "rwm" })];
    if i.spec.security.privileged {
        devices.push(json!({ "allow": true, "access": "rwm" }));
    }
    for d in &i.spec.devices {
        if let Some(host) = i.node.host_devices.iter().find(|h| h.path == d.host_path) {
            let access = if d.permissions.is_empty() { "rwm" } else { &d.permissions };
            devices.push(json!({ "allow": true, "type": host.kind.to_string(), "major": host.major, "minor": host.minor, "access": access }));
        }
    }
    out["devices"] = json!(devices);
    out
}

fn limits(r: &super::Resources, node: &NodeFacts) -> Value {
    let unified = node.cgroup_v1_hierarchies.is_empty();
    let mut out = json!({});
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    let mut mem = serde_json::Map::new();
    if r.memory_limit > 0 {
        mem.insert("limit".into(), json!(r.memory_limit));
    }
    if r.memory_swap_limit > 0 {
        mem.insert("swap".into(), json!(r.memory_swap_limit));
    }
    if !mem.is_empty() {
        out["memory"] = Value::Object(mem);
    }
    if node.hugetlb && !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = r
            .hugepage_limits
            .iter()
            .map(|(size, limit)| json!({ "pageSize": size, "limit": limit }))
            .collect();
    }
    if let Some(pids) = r.unified.get("pids.max").and_then(|v| v.parse::<i64>().ok()) {
        out["pids"] = json!({ "limit": pids });
    }
    if unified && !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

/// Device nodes made in the container: every host device for a privileged one, and the
/// requested ones; each with the host's mode, uid and gid (as runc and containerd do), so
/// a user inside can do with it what the same user could on the host, no more.
fn devices(i: &Inputs<'_>) -> Result<Vec<Value>, Error> {
    let node_dev = |h: &HostDevice, dest: &str| json!({ "path": dest, "type": h.kind.to_string(), "major": h.major, "minor": h.minor, "fileMode": h.mode, "uid": h.uid, "gid": h.gid });
    let mut out = Vec::new();
    if i.spec.security.privileged {
        for d in &i.node.host_devices {
            out.push(node_dev(d, &d.path.to_string_lossy()));
        }
    }
    for (n, d) in i.spec.devices.iter().enumerate() {
        let host = i.node.host_devices.iter().find(|h| h.path == d.host_path).ok_or_else(|| {
            Error::invalid(
                format!("devices[{n}].host_path"),
                format!("{} is not a device on this node", d.host_path.display()),
            )
        })?;
        out.push(node_dev(host, &d.container_path));
    }
    Ok(out)
}

fn readonly_paths(i: &Inputs<'_>, shared: &SharedDirs<'_>) -> Vec<String> {
    let sec = &i.spec.security;
    if sec.privileged {
        return Vec::new();
    }
    let mut paths: Vec<String> = if sec.readonly_paths.is_empty() {
        DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect()
    } else {
        sec.readonly_paths.clone()
    };
    // The tmpfs of a v1 tree is made read-only once the hierarchies are bound on it (a
    // container cannot create cgroups there); each hierarchy's bind is read-only by its
    // own options (libcontainer sets the attribute on the clone before it attaches it),
    // so the container cannot raise its limits. Not listed again here: each entry costs
    // the init two more mounts. The node's v1 directory is bound read-only to begin
    // with, and a read-only path is a recursive bind of the whole tree again.
    if shared.cgroup_v1.is_none() {
        paths.push("/sys/fs/cgroup".into());
    }
    paths
}

/// The node's shared directories this container gets bound read-only where it would
/// otherwise get a tmpfs of its own (`node::shared_dirs`). None of them for a container
/// that could make them writable again (privileged, or holding CAP_SYS_ADMIN), which
/// would let it change what other containers see.
struct SharedDirs<'a> {
    /// The node's cgroup v1 directory, as the container's /sys/fs/cgroup.
    cgroup_v1: Option<&'a Path>,
    /// The node's empty directory, over the container's masked directories (the
    /// annotation [`MASKED_DIR_SOURCE`] names it for the supervisor).
    masked: Option<&'a Path>,
}

impl<'a> SharedDirs<'a> {
    fn of(i: &Inputs<'a>, caps: &[String]) -> Self {
        let may = !i.spec.security.privileged && !caps.iter().any(|c| c == "CAP_SYS_ADMIN");
        let node = i.node;
        SharedDirs {
            cgroup_v1: node.cgroup_v1_dir.as_deref().filter(|_| may),
            masked: node.masked_dir_source.as_deref().filter(|_| may),
        }
    }
}

/// The root's propagation: libcontainer takes `shared`, `slave`, `private` and
/// `unbindable` (and applies them recursively); runc's `rshared`/`rslave` it refuses.
fn rootfs_propagation(spec: &ContainerSpec) -> Option<&'static str> {
    if spec.has_bidirectional_mount() {
        Some("shared")
    } else if spec.mounts.iter().any(|m| m.propagation == Propagation::HostToContainer) {
        Some("slave")
    } else {
        None
    }
}

/// `/sys/fs/cgroup` in the container. On cgroup v2, libcontainer's cgroup mount. On v1,
/// a tmpfs with the container's own cgroup of each controller bound on it, as runc
/// mounts them: libcontainer's v1 mount looks the init process up in /proc by its pid
/// in the container's PID namespace, which fails when that namespace is the pod's
/// (PID mode POD or TARGET). In place of the tmpfs, the node's v1 directory (a mount
/// point for each hierarchy) bound read-only, where the container may have it.
fn cgroup_mounts(i: &Inputs<'_>, shared: &SharedDirs<'_>, ro: &str) -> Vec<Value> {
    let common = ["nosuid", "noexec", "nodev"];
    if i.node.cgroup_v1_hierarchies.is_empty() {
        return vec![
            json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": [common[0], common[1], common[2], "relatime", ro] }),
        ];
    }
    let mut out = vec![match shared.cgroup_v1 {
        Some(dir) => {
            json!({ "destination": "/sys/fs/cgroup", "type": "bind", "source": dir, "options": ["bind", "rprivate", common[0], common[1], common[2], "ro"] })
        }
        None => {
            json!({ "destination": "/sys/fs/cgroup", "type": "tmpfs", "source": "tmpfs", "options": [common[0], common[1], common[2], "mode=755", "size=64k"] })
        }
    }];
    for h in i
        .node
        .cgroup_v1_hierarchies
        .iter()
        .filter(|h| crate::cgroups::V1_CONTROLLERS.contains(&h.as_str()))
    {
        out.push(json!({
            "destination": format!("/sys/fs/cgroup/{h}"),
            "type": "bind",
            "source": format!("/sys/fs/cgroup/{h}{}", i.cgroup),
            "options": ["bind", common[0], common[1], common[2], ro],
        }));
    }
    out
}

fn mounts(i: &Inputs<'_>, shared: &SharedDirs<'_>) -> Result<Vec<Value>, Error> {
    let spec = i.spec;
    let privileged = spec.security.privileged;
    let ro_sys = if privileged { "rw" } else { "ro" };
    let requested = |dest: &str| spec.mounts.iter().any(|m| m.container_path == dest);
    let mut out = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", ro_sys] }),
    ];
    out.extend(cgroup_mounts(i, shared, ro_sys));
    let files = &i.pod_files;
    let file_opt = if spec.security.readonly_rootfs { "ro" } else { "rw" };
    for (dest, src) in [
        ("/etc/hostname", &files.hostname),
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
    ] {
        if !requested(dest) {
            out.push(json!({ "destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", file_opt] }));
        }
    }
    if !requested("/dev/shm") {
        out.push(json!({ "destination": "/dev/shm", "type": "bind", "source": files.shm, "options": ["rbind", "nosuid", "nodev", "noexec"] }));
    }
    for (n, m) in spec.mounts.iter().enumerate() {
        if !m.container_path.starts_with('/') {
            return Err(Error::invalid(
                format!("mounts[{n}].container_path"),
                format!("{:?} is not absolute", m.container_path),
            ));
        }
        if !m.host_path.exists() {
            return Err(Error::invalid(
                format!("mounts[{n}].host_path"),
                format!("{} does not exist on the node", m.host_path.display()),
            ));
        }
        let propagation = match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        };
        let mut options = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
        if m.recursive_read_only {
            options.push("rro");
        }
        let source = i.idmapped_mounts.get(&n).unwrap_or(&m.host_path);
        out.push(json!({ "destination": m.container_path, "type": "bind", "source": source, "options": options }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerMetadata, MountSpec, Resources, Security};

    pub(crate) fn spec() -> ContainerSpec {
        ContainerSpec {
            metadata: ContainerMetadata { name: "web".into(), attempt: 0 },
            image: "busybox".into(),
            user_specified_image: String::new(),
            command: vec![],
            args: vec![],
            working_dir: String::new(),
            envs: vec![],
            mounts: vec![],
            devices: vec![],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            log_path: "web.log".into(),
            stdin: false,
            stdin_once: false,
            tty: false,
            resources: Resources::default(),
            security: Security::default(),
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/opt/bin".into(), "A=image".into()],
            working_dir: "/srv".into(),
            user: String::new(),
            stop_signal: String::new(),
        }
    }

    fn node() -> NodeFacts {
        NodeFacts {
            capabilities: ALL_CAPABILITIES
                .iter()
                .filter(|c| **c != "CAP_SYS_RESOURCE")
                .map(|c| c.to_string())
                .collect(),
            own_oom_score_adj: 0,
            cgroup_v1_hierarchies: vec!["memory".into(), "cpu,cpuacct".into()],
            host_devices: vec![
                HostDevice {
                    path: PathBuf::from("/dev/null"),
                    kind: 'c',
                    major: 1,
                    minor: 3,
                    mode: 0o666,
                    uid: 0,
                    gid: 0,
                },
                HostDevice {
                    path: PathBuf::from("/dev/kmsg"),
                    kind: 'c',
                    major: 1,
                    minor: 11,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            ],
            hugetlb: false,
            ..Default::default()
        }
    }

    #[test]
    fn a_cgroup_namespace_on_cgroup_v2_unless_privileged() {
        let has_cgroup_ns = |v: &Value| {
            v["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "cgroup")
        };
        let v2 = NodeFacts { cgroup_v1_hierarchies: vec![], ..node() };
        let mut s = spec();
        assert!(has_cgroup_ns(&built_on(&s, &v2).unwrap()));
        assert!(!has_cgroup_ns(&built(&s).unwrap()));
        s.security.privileged = true;
        assert!(!has_cgroup_ns(&built_on(&s, &v2).unwrap()));
    }

    fn db() -> UserDb {
        UserDb {
            passwd: "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n".into(),
            group: "root:x:0:\nweb:x:1001:\nstaff:x:50:web,other\n".into(),
        }
    }

    fn built(s: &ContainerSpec) -> Result<Value, Error> {
        built_on(s, &node())
    }

    fn built_on(s: &ContainerSpec, node: &NodeFacts) -> Result<Value, Error> {
        let sandbox = crate::sandbox::tests::record("pod");
        let user = resolve_user(s, "", &db())?;
        let inputs = Inputs {
            id: &ContainerId::generate(),
            spec: s,
            sandbox: &sandbox,
            image: &image(),
            user: &user,
            rootfs: Path::new("/rootfs"),
            cgroup: "/podbay/pod/ctr",
            node,
            target_pid_ns: None,
            seccomp_profile: None,
            seccomp_ahead: false,
            pod_files: PodFiles {
                hostname: "/pod/hostname".into(),
                hosts: "/pod/hosts".into(),
                resolv_conf: "/pod/resolv.conf".into(),
                shm: "/pod/shm".into(),
            },
            idmapped_mounts: BTreeMap::new(),
        };
        build(&inputs).map(|s| serde_json::to_value(s).unwrap())
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let mut s = spec();
        assert_eq!(process_args(&s, &image()), ["/entry", "serve"]);
        s.args = vec!["a".into()];
        assert_eq!(process_args(&s, &image()), ["/entry", "a"]);
        s.command = vec!["/cmd".into()];
        assert_eq!(process_args(&s, &image()), ["/cmd", "a"]);
        s.args.clear();
        assert_eq!(process_args(&s, &image()), ["/cmd"]);
    }

    #[test]
    fn env_merges_over_the_image() {
        let mut s = spec();
        s.envs = vec![("A".into(), "req".into()), ("B".into(), "b".into())];
        let env = environment(&s, &image(), "pod");
        assert_eq!(env, ["HOSTNAME=pod", "PATH=/opt/bin", "A=req", "B=b"]);
        let env = environment(&spec(), &ImageConfig::default(), "h");
        assert!(env[1].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn users_resolve_from_the_image() {
        let mut s = spec();
        assert_eq!(
            resolve_user(&s, "", &db()).unwrap(),
            User { uid: 0, gid: 0, additional_gids: vec![] }
        );
        assert_eq!(
            resolve_user(&s, "web", &db()).unwrap(),
            User { uid: 1000, gid: 1001, additional_gids: vec![50] }
        );
        assert_eq!(resolve_user(&s, "1234:staff", &db()).unwrap().gid, 50);
        s.security.run_as_user = Some(1000);
        s.security.run_as_group = Some(7);
        s.security.supplemental_groups = vec![9];
        assert_eq!(
            resolve_user(&s, "", &db()).unwrap(),
            User { uid: 1000, gid: 7, additional_gids: vec![9, 50] }
        );
        // SupplementalGroupsPolicy Strict: the image's memberships are left out.
        s.security.strict_supplemental_groups = true;
        assert_eq!(
            resolve_user(&s, "", &db()).unwrap(),
            User { uid: 1000, gid: 7, additional_gids: vec![9] }
        );
        let mut s = spec();
        s.security.run_as_username = "nobody".into();
        let e = resolve_user(&s, "", &db()).unwrap_err().to_string();
        assert!(e.contains("run_as_username") && e.contains("nobody"), "{e}");
    }

    #[test]
    fn capabilities_add_drop_all_and_privileged() {
        let mut s = spec();
        let caps = capabilities(&s, &node());
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        s.security.drop_capabilities = vec!["NET_RAW".into()];
        s.security.add_capabilities = vec!["sys_admin".into(), "CAP_SYS_RESOURCE".into()];
        let caps = capabilities(&s, &node());
        assert!(caps.contains(&"CAP_SYS_ADMIN".into()));
        assert!(!caps.contains(&"CAP_NET_RAW".into()));
        // Not held by podbay: never given, never an error.
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".into()));
        s.security.drop_capabilities = vec!["ALL".into()];
        s.security.add_capabilities = vec!["KILL".into()];
        assert!(capabilities(&s, &node()).is_empty());
        s.security.privileged = true;
        assert_eq!(capabilities(&s, &node()).len(), ALL_CAPABILITIES.len() - 1);
    }

    #[test]
    fn shared_dirs_only_for_containers_that_cannot_unlock_them() {
        let mut n = node();
        n.cgroup_v1_dir = Some("/run/podbay/cgroup-v1".into());
        n.masked_dir_source = Some("/run/podbay/empty".into());
        let mut s = spec();
        s.annotations.insert(MASKED_DIR_SOURCE.into(), "/".into());
        let cgroup_root = |v: &Value| {
            let mounts = v["mounts"].as_array().unwrap();
            mounts.iter().find(|m| m["destination"] == "/sys/fs/cgroup").unwrap().clone()
        };
        let v = built_on(&s, &n).unwrap();
        let root = cgroup_root(&v);
        assert_eq!(
            (&root["type"], &root["source"]),
            (&json!("bind"), &json!("/run/podbay/cgroup-v1"))
        );
        assert!(root["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        let ro = v["linux"]["readonlyPaths"].as_array().unwrap();
        assert!(!ro.iter().any(|x| x == "/sys/fs/cgroup"), "bound read-only already");
        assert_eq!(v["annotations"][MASKED_DIR_SOURCE], "/run/podbay/empty");
        // CAP_SYS_ADMIN could remount a bind writable: a tmpfs of its own, and no source.
        s.security.add_capabilities = vec!["SYS_ADMIN".into()];
        let v = built_on(&s, &n).unwrap();
        assert_eq!(cgroup_root(&v)["type"], "tmpfs");
        assert!(
            v["linux"]["readonlyPaths"].as_array().unwrap().iter().any(|x| x == "/sys/fs/cgroup")
        );
        assert!(v["annotations"].get(MASKED_DIR_SOURCE).is_none(), "the request's is dropped");
    }

    #[test]
    fn hardening_defaults_and_privileged() {
        let v = built(&spec()).unwrap();
        let masked = v["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.iter().any(|p| p == "/proc/kcore"));
        let ro = v["linux"]["readonlyPaths"].as_array().unwrap();
        for p in ["/proc/sys", "/sys/fs/cgroup"] {
            assert!(ro.iter().any(|x| x == p), "{p}");
        }
        // Each hierarchy's bind is read-only by its options (below), not listed again.
        assert!(!ro.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with("/sys/fs/cgroup/"))));
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        // cgroup v1: the container's own cgroup of each controller, read-only.
        let memory = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys/fs/cgroup/memory")
            .unwrap();
        assert_eq!(memory["source"], "/sys/fs/cgroup/memory/podbay/pod/ctr");
        assert!(memory["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        assert!(v["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "pid"));
        let mut s = spec();
        s.security.privileged = true;
        let v = built(&s).unwrap();
        assert!(v["linux"]["maskedPaths"].as_array().is_none_or(|a| a.is_empty()));
        assert!(v["linux"]["seccomp"].is_null());
        assert_eq!(v["linux"]["devices"][0]["path"], "/dev/null");
        // Each device as open as on the host, no more.
        assert_eq!(v["linux"]["devices"][0]["fileMode"], 0o666);
        assert_eq!(v["linux"]["devices"][1]["path"], "/dev/kmsg");
        assert_eq!(v["linux"]["devices"][1]["fileMode"], 0o644);
    }

    #[test]
    fn oom_score_adj_is_never_below_podbay_without_sys_resource() {
        let mut s = spec();
        s.resources.oom_score_adj = -998;
        let v = built(&s).unwrap();
        assert_eq!(v["process"]["oomScoreAdj"], 0);
        s.resources.oom_score_adj = 1000;
        assert_eq!(built(&s).unwrap()["process"]["oomScoreAdj"], 1000);
    }

    #[test]
    fn bad_mounts_name_the_field() {
        let mut s = spec();
        s.mounts = vec![MountSpec {
            idmap: None,
            container_path: "/data".into(),
            host_path: "/nonexistent/podbay".into(),
            readonly: false,
            recursive_read_only: false,
            propagation: Propagation::Private,
        }];
        let e = built(&s).unwrap_err().to_string();
        assert!(e.contains("mounts[0].host_path") && e.contains("/nonexistent/podbay"), "{e}");
    }

    #[test]
    fn destinations_under_proc_or_over_sys_and_dev_are_refused() {
        for bad in ["/proc", "/proc/", "/proc/self", "/x/../proc/1/root", "/sys", "/dev/", "/"] {
            assert!(check_mount_destination(bad).is_err(), "{bad}");
        }
        for ok in ["/data", "/proc/cpuinfo", "/sys/fs/fuse", "/dev/shm", "/procfs"] {
            assert!(check_mount_destination(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/proc", root.path().join("p")).unwrap();
        std::os::unix::fs::symlink("../../real", root.path().join("up")).unwrap();
        std::os::unix::fs::symlink("loop", root.path().join("loop")).unwrap();
        assert_eq!(resolve_in_root(root.path(), "/p/self").as_deref(), Some("/proc/self"));
        assert_eq!(resolve_in_root(root.path(), "/up/x").as_deref(), Some("/real/x"));
        assert_eq!(resolve_in_root(root.path(), "/loop"), None);
    }

    #[test]
    fn container_paths_clean_as_text() {
        assert_eq!(clean_container_path("/proc/../proc//self/."), "/proc/self");
        assert_eq!(clean_container_path("/../../etc"), "/etc");
        assert_eq!(clean_container_path("//"), "/");
    }

    #[test]
    fn recursive_read_only_mounts_say_rro() {
        let mut s = spec();
        s.mounts = vec![MountSpec {
            idmap: None,
            container_path: "/data".into(),
            host_path: "/".into(),
            readonly: true,
            recursive_read_only: true,
            propagation: Propagation::Private,
        }];
        let v = built(&s).unwrap();
        let m = v["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/data");
        let options = m.unwrap()["options"].as_array().unwrap().clone();
        assert!(options.iter().any(|o| o == "rro") && options.iter().any(|o| o == "ro"));
    }

    #[test]
    fn resources_reach_the_spec() {
        let mut s = spec();
        s.resources.memory_limit = 64 << 20;
        s.resources.cpu_shares = 512;
        let v = built(&s).unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 512);
    }

    #[test]
    fn hugepage_limits_only_where_the_controller_is() {
        let mut s = spec();
        s.resources.hugepage_limits = [("2MB".to_string(), 0), ("1GB".to_string(), 0)].into();
        // kubelet sends these for every page size; without hugetlb they are dropped.
        let v = built(&s).unwrap();
        assert!(v["linux"]["resources"].get("hugepageLimits").is_none(), "{v}");
        let with = NodeFacts { hugetlb: true, ..node() };
        let v = built_on(&s, &with).unwrap();
        let limits = v["linux"]["resources"]["hugepageLimits"].as_array().unwrap();
        assert_eq!(limits.len(), 2);
        let update = linux_resources(&s.resources, &node()).unwrap();
        assert!(update.hugepage_limits().as_ref().is_none_or(|l| l.is_empty()));
        let update = linux_resources(&s.resources, &with).unwrap();
        assert_eq!(update.hugepage_limits().as_ref().map(Vec::len), Some(2));
    }
}
