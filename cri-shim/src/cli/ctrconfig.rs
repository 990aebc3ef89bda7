//! crictl's ContainerConfig files (JSON or YAML) for `podbay create` and `podbay run`.
//!
//! The same rules as pod files (see `podconfig`): CRI's snake_case names or their
//! camelCase JSON names, enum values by number or name, unknown fields refused by name.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use k8s_cri::v1 as cri;
use serde::Deserialize;

use super::podconfig::{Named, mode, parse_file};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContainerFile {
    metadata: Option<MetaFile>,
    image: Option<ImageFile>,
    command: Vec<String>,
    args: Vec<String>,
    #[serde(alias = "workingDir")]
    working_dir: String,
    envs: Vec<KeyValueFile>,
    mounts: Vec<MountFile>,
    devices: Vec<DeviceFile>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    #[serde(alias = "logPath")]
    log_path: String,
    stdin: bool,
    #[serde(alias = "stdinOnce")]
    stdin_once: bool,
    tty: bool,
    linux: Option<LinuxFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MetaFile {
    name: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ImageFile {
    image: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct KeyValueFile {
    key: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MountFile {
    #[serde(alias = "containerPath")]
    container_path: String,
    #[serde(alias = "hostPath")]
    host_path: String,
    readonly: bool,
    #[serde(alias = "selinuxRelabel")]
    selinux_relabel: bool,
    propagation: Option<Named>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DeviceFile {
    #[serde(alias = "containerPath")]
    container_path: String,
    #[serde(alias = "hostPath")]
    host_path: String,
    permissions: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LinuxFile {
    resources: Option<ResourcesFile>,
    #[serde(alias = "securityContext")]
    security_context: Option<SecurityFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ResourcesFile {
    #[serde(alias = "cpuPeriod")]
    cpu_period: i64,
    #[serde(alias = "cpuQuota")]
    cpu_quota: i64,
    #[serde(alias = "cpuShares")]
    cpu_shares: i64,
    #[serde(alias = "memoryLimitInBytes")]
    memory_limit_in_bytes: i64,
    #[serde(alias = "memorySwapLimitInBytes")]
    memory_swap_limit_in_bytes: i64,
    #[serde(alias = "oomScoreAdj")]
    oom_score_adj: i64,
    #[serde(alias = "cpusetCpus")]
    cpuset_cpus: String,
    #[serde(alias = "cpusetMems")]
    cpuset_mems: String,
    #[serde(alias = "hugepageLimits")]
    hugepage_limits: Vec<HugepageFile>,
    unified: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HugepageFile {
    #[serde(alias = "pageSize")]
    page_size: String,
    limit: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SecurityFile {
    capabilities: Option<CapabilitiesFile>,
    privileged: bool,
    #[serde(alias = "namespaceOptions")]
    namespace_options: Option<NamespaceFile>,
    #[serde(alias = "runAsUser")]
    run_as_user: Option<Id>,
    #[serde(alias = "runAsGroup")]
    run_as_group: Option<Id>,
    #[serde(alias = "runAsUsername")]
    run_as_username: String,
    #[serde(alias = "readonlyRootfs")]
    readonly_rootfs: bool,
    #[serde(alias = "supplementalGroups")]
    supplemental_groups: Vec<i64>,
    #[serde(alias = "noNewPrivs")]
    no_new_privs: bool,
    #[serde(alias = "maskedPaths")]
    masked_paths: Vec<String>,
    #[serde(alias = "readonlyPaths")]
    readonly_paths: Vec<String>,
    seccomp: Option<ProfileFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CapabilitiesFile {
    #[serde(alias = "addCapabilities")]
    add_capabilities: Vec<String>,
    #[serde(alias = "dropCapabilities")]
    drop_capabilities: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NamespaceFile {
    network: Option<Named>,
    pid: Option<Named>,
    ipc: Option<Named>,
    #[serde(alias = "targetId")]
    target_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ProfileFile {
    #[serde(alias = "profileType")]
    profile_type: Option<Named>,
    #[serde(alias = "localhostRef")]
    localhost_ref: String,
}

/// A user or group id: `1000` or, as protobuf's JSON wrapper types, `{value: 1000}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Id {
    Plain(i64),
    Wrapped { value: i64 },
}

impl Id {
    fn value(&self) -> cri::Int64Value {
        match self {
            Id::Plain(value) | Id::Wrapped { value } => cri::Int64Value { value: *value },
        }
    }
}

const PROPAGATIONS: &[&str] =
    &["PROPAGATION_PRIVATE", "PROPAGATION_HOST_TO_CONTAINER", "PROPAGATION_BIDIRECTIONAL"];
const PROFILES: &[&str] = &["RuntimeDefault", "Unconfined", "Localhost"];

/// Reads a container config file; `.json` is parsed as JSON, anything else as YAML.
pub fn read(path: &Path) -> anyhow::Result<cri::ContainerConfig> {
    let file: ContainerFile = parse_file(path)?;
    convert(file).with_context(|| format!("in {}", path.display()))
}

fn convert(f: ContainerFile) -> anyhow::Result<cri::ContainerConfig> {
    let mounts = f
        .mounts
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("mounts[{i}].propagation");
            Ok(cri::Mount {
                container_path: m.container_path,
                host_path: m.host_path,
                readonly: m.readonly,
                selinux_relabel: m.selinux_relabel,
                propagation: m
                    .propagation
                    .as_ref()
                    .map_or(Ok(0), |p| p.resolve(&field, PROPAGATIONS))?,
                ..Default::default()
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let linux = f.linux.map(linux).transpose()?;
    Ok(cri::ContainerConfig {
        metadata: f.metadata.map(|m| cri::ContainerMetadata { name: m.name, attempt: m.attempt }),
        image: f.image.map(|i| cri::ImageSpec { image: i.image, ..Default::default() }),
        command: f.command,
        args: f.args,
        working_dir: f.working_dir,
        envs: f.envs.into_iter().map(|e| cri::KeyValue { key: e.key, value: e.value }).collect(),
        mounts,
        devices: f
            .devices
            .into_iter()
            .map(|d| cri::Device {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        labels: f.labels,
        annotations: f.annotations,
        log_path: f.log_path,
        stdin: f.stdin,
        stdin_once: f.stdin_once,
        tty: f.tty,
        linux,
        ..Default::default()
    })
}

fn linux(l: LinuxFile) -> anyhow::Result<cri::LinuxContainerConfig> {
    let resources = l.resources.map(|r| cri::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        hugepage_limits: r
            .hugepage_limits
            .into_iter()
            .map(|h| cri::HugepageLimit { page_size: h.page_size, limit: h.limit })
            .collect(),
        unified: r.unified,
    });
    let security_context = l.security_context.map(security).transpose()?;
    Ok(cri::LinuxContainerConfig { resources, security_context })
}

fn security(s: SecurityFile) -> anyhow::Result<cri::LinuxContainerSecurityContext> {
    let field = "linux.security_context.namespace_options";
    let namespace_options = s
        .namespace_options
        .map(|n| -> anyhow::Result<_> {
            Ok(cri::NamespaceOption {
                network: mode(&n.network, &format!("{field}.network"))?,
                pid: mode(&n.pid, &format!("{field}.pid"))?,
                ipc: mode(&n.ipc, &format!("{field}.ipc"))?,
                target_id: n.target_id,
                ..Default::default()
            })
        })
        .transpose()?;
    let seccomp = s
        .seccomp
        .map(|p| -> anyhow::Result<_> {
            let field = "linux.security_context.seccomp.profile_type";
            Ok(cri::SecurityProfile {
                profile_type: p
                    .profile_type
                    .as_ref()
                    .map_or(Ok(0), |t| t.resolve(field, PROFILES))?,
                localhost_ref: p.localhost_ref,
            })
        })
        .transpose()?;
    Ok(cri::LinuxContainerSecurityContext {
        capabilities: s.capabilities.map(|c| cri::Capability {
            add_capabilities: c.add_capabilities,
            drop_capabilities: c.drop_capabilities,
            ..Default::default()
        }),
        privileged: s.privileged,
        namespace_options,
        run_as_user: s.run_as_user.as_ref().map(Id::value),
        run_as_group: s.run_as_group.as_ref().map(Id::value),
        run_as_username: s.run_as_username,
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: s.supplemental_groups,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths,
        readonly_paths: s.readonly_paths,
        seccomp,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::podconfig::tests::write;

    #[test]
    fn crictl_json_example() {
        let (_d, p) = write(
            "container.json",
            r#"{"metadata":{"name":"busybox"},"image":{"image":"busybox"},
                "command":["top"],"log_path":"busybox.0.log","linux":{}}"#,
        );
        let c = read(&p).unwrap();
        assert_eq!(c.metadata.unwrap().name, "busybox");
        assert_eq!(c.image.unwrap().image, "busybox");
        assert_eq!(c.command, ["top"]);
        assert_eq!(c.log_path, "busybox.0.log");
        assert!(c.linux.is_some());
    }

    #[test]
    fn yaml_with_security_and_resources() {
        let (_d, p) = write(
            "container.yaml",
            "metadata: {name: web, attempt: 2}\nimage: {image: busybox}\n\
             envs: [{key: A, value: b}]\nworkingDir: /tmp\n\
             mounts: [{containerPath: /data, hostPath: /srv, readonly: true, \
             propagation: PROPAGATION_HOST_TO_CONTAINER}]\n\
             linux:\n  resources: {memory_limit_in_bytes: 33554432, cpuShares: 512}\n\
             \x20 securityContext:\n    runAsUser: {value: 1000}\n    run_as_group: 1000\n\
             \x20   capabilities: {drop_capabilities: [NET_RAW]}\n\
             \x20   seccomp: {profile_type: Unconfined}\n\
             \x20   namespaceOptions: {pid: TARGET, target_id: abc}\n",
        );
        let c = read(&p).unwrap();
        assert_eq!(c.envs[0].key, "A");
        assert_eq!(c.working_dir, "/tmp");
        assert_eq!((c.mounts[0].readonly, c.mounts[0].propagation), (true, 1));
        let l = c.linux.unwrap();
        let r = l.resources.unwrap();
        assert_eq!((r.memory_limit_in_bytes, r.cpu_shares), (32 << 20, 512));
        let s = l.security_context.unwrap();
        assert_eq!(s.run_as_user.unwrap().value, 1000);
        assert_eq!(s.run_as_group.unwrap().value, 1000);
        assert_eq!(s.capabilities.unwrap().drop_capabilities, ["NET_RAW"]);
        assert_eq!(s.seccomp.unwrap().profile_type, 1);
        let ns = s.namespace_options.unwrap();
        assert_eq!((ns.pid, ns.target_id.as_str()), (3, "abc"));
    }

    #[test]
    fn unknown_fields_and_values_are_named() {
        let (_d, p) = write("c.json", r#"{"metadata":{"name":"a"},"comand":["x"]}"#);
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("comand"));
        let (_d, p) = write("c.yaml", "mounts: [{container_path: /a, propagation: SIDEWAYS}]\n");
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("mounts[0].propagation"));
        let (_d, p) = write("c.yaml", "linux: {security_context: {seccomp: {profile_type: X}}}\n");
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("seccomp.profile_type"));
    }
}
