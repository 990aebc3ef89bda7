//! A pod of a manifest → the CRI requests kubelet would send for it: the sandbox config,
//! and each container's config (kubelet's kuberuntime conversions: namespaces, security
//! contexts, resources and QoS, env with field references and `$(VAR)` expansion, volume
//! mounts, log paths).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;

use super::manifest::{Container, PodPlan, Quantity, SeccompProfile, SecurityContext};

/// Labels kubelet puts on every sandbox and container; podbay play adds its own two.
pub const LABEL_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
/// Marks what `podbay play` made, with the workload it came from (`pod-web`,
/// `deployment-web`).
pub const LABEL_PLAY: &str = "io.podbay.play.workload";

/// CFS period kubelet uses (100 ms).
const CPU_PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;

/// The sandbox config of a pod; `log_directory` under its pod dir.
pub fn sandbox_config(plan: &PodPlan, uid: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    let meta = &plan.meta;
    let spec = &plan.spec;
    let mut labels: HashMap<String, String> =
        meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(LABEL_NAME.into(), meta.name.clone());
    labels.insert(LABEL_NAMESPACE.into(), meta.namespace.clone());
    labels.insert(LABEL_UID.into(), uid.into());
    labels.insert(LABEL_PLAY.into(), plan.workload.clone());
    let hostname = if spec.host_network {
        String::new()
    } else {
        spec.hostname.clone().unwrap_or_else(|| meta.name.chars().take(63).collect())
    };
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter(|p| p.host_port > 0)
        .map(|p| cri::PortMapping {
            protocol: protocol(p.protocol.as_deref()) as i32,
            container_port: p.container_port,
            host_port: p.host_port,
            host_ip: p.host_ip.clone(),
        })
        .collect();
    let dns = spec.dns_config.as_ref().map(|d| cri::DnsConfig {
        servers: d.nameservers.clone(),
        searches: d.searches.clone(),
        options: d
            .options
            .iter()
            .map(|o| match &o.value {
                Some(v) => format!("{}:{v}", o.name),
                None => o.name.clone(),
            })
            .collect(),
    });
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true));
    let security = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces(plan)),
        run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
        supplemental_groups: groups(plan),
        privileged,
        seccomp: psc.seccomp_profile.as_ref().map(seccomp),
        ..Default::default()
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: meta.name.clone(),
            uid: uid.into(),
            namespace: meta.namespace.clone(),
            attempt: 0,
        }),
        hostname,
        log_directory: log_dir.to_string_lossy().into_owned(),
        dns_config: dns,
        port_mappings: ports,
        labels,
        annotations: meta.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(security),
            sysctls: psc.sysctls.iter().map(|s| (s.name.clone(), s.value.clone())).collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

fn protocol(p: Option<&str>) -> cri::Protocol {
    match p.unwrap_or("TCP").to_ascii_uppercase().as_str() {
        "UDP" => cri::Protocol::Udp,
        "SCTP" => cri::Protocol::Sctp,
        _ => cri::Protocol::Tcp,
    }
}

fn namespaces(plan: &PodPlan) -> cri::NamespaceOption {
    let spec = &plan.spec;
    let mode = |node: bool, pod: bool| {
        if node {
            cri::NamespaceMode::Node
        } else if pod {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Container
        }
    };
    cri::NamespaceOption {
        network: mode(spec.host_network, true) as i32,
        pid: mode(spec.host_pid, spec.share_process_namespace) as i32,
        ipc: mode(spec.host_ipc, true) as i32,
        ..Default::default()
    }
}

/// supplementalGroups and fsGroup, as kubelet passes them.
fn groups(plan: &PodPlan) -> Vec<i64> {
    let psc = plan.spec.security_context.clone().unwrap_or_default();
    let mut g = psc.supplemental_groups.clone();
    if let Some(fs) = psc.fs_group
        && !g.contains(&fs)
    {
        g.push(fs);
    }
    g
}

fn seccomp(p: &SeccompProfile) -> cri::SecurityProfile {
    let kind = match p.kind.as_str() {
        "RuntimeDefault" => cri::security_profile::ProfileType::RuntimeDefault,
        "Localhost" => cri::security_profile::ProfileType::Localhost,
        _ => cri::security_profile::ProfileType::Unconfined,
    };
    cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: p.localhost_profile.clone().unwrap_or_default(),
    }
}

/// The pod's QoS class, from its containers' requests and limits (Kubernetes' rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

pub fn qos(plan: &PodPlan) -> Qos {
    let all: Vec<&Container> =
        plan.spec.containers.iter().chain(&plan.spec.init_containers).collect();
    let any =
        all.iter().any(|c| !c.resources.limits.is_empty() || !c.resources.requests.is_empty());
    if !any {
        return Qos::BestEffort;
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = c.resources.limits.get(*r);
            // A request left out defaults to the limit.
            let request = c.resources.requests.get(*r).or(limit);
            match (limit, request) {
                (Some(l), Some(q)) => same(r, l, q),
                _ => false,
            }
        })
    });
    if guaranteed { Qos::Guaranteed } else { Qos::Burstable }
}

fn same(resource: &str, a: &Quantity, b: &Quantity) -> bool {
    if resource == "cpu" { a.millicores() == b.millicores() } else { a.bytes() == b.bytes() }
}

/// kubelet's oom_score_adj for a container of a pod of this QoS.
fn oom_score_adj(qos: Qos, c: &Container, memory_capacity: i64) -> i64 {
    match qos {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let request = c
                .resources
                .requests
                .get("memory")
                .or(c.resources.limits.get("memory"))
                .and_then(Quantity::bytes)
                .unwrap_or(0);
            let adj = 1000 - (1000 * request as i128 / memory_capacity.max(1) as i128) as i64;
            adj.clamp(2, 999)
        }
    }
}

fn resources(
    pod: &str,
    field: &str,
    c: &Container,
    qos: Qos,
    memory_capacity: i64,
) -> anyhow::Result<cri::LinuxContainerResources> {
    let r = &c.resources;
    for (kind, list) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in list {
            let ok = match name.as_str() {
                "cpu" => q.millicores().is_some(),
                "memory" | "ephemeral-storage" => q.bytes().is_some(),
                n if n.starts_with("hugepages-") => q.bytes().is_some(),
                _ => false,
            };
            if !ok {
                bail!(
                    "pod {pod}: {field}.resources.{kind}.{name}: unknown resource or not a quantity"
                );
            }
        }
    }
    let cpu_limit = r.limits.get("cpu").and_then(Quantity::millicores);
    let cpu_request = r.requests.get("cpu").and_then(Quantity::millicores).or(cpu_limit);
    let mut out = cri::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(MIN_SHARES, |m| (m * 1024 / 1000).max(MIN_SHARES)),
        oom_score_adj: oom_score_adj(qos, c, memory_capacity),
        ..Default::default()
    };
    if let Some(m) = cpu_limit {
        out.cpu_period = CPU_PERIOD;
        out.cpu_quota = (m * CPU_PERIOD / 1000).max(1000);
    }
    if let Some(bytes) = r.limits.get("memory").and_then(Quantity::bytes) {
        out.memory_limit_in_bytes = bytes;
    }
    for (name, q) in &r.limits {
        if let Some(size) = name.strip_prefix("hugepages-") {
            out.hugepage_limits.push(cri::HugepageLimit {
                page_size: hugepage_size(size),
                limit: q.bytes().unwrap_or(0) as u64,
            });
        }
    }
    Ok(out)
}

/// `2Mi` → `2MB`, as the cgroup files name page sizes.
fn hugepage_size(k8s: &str) -> String {
    let q = Quantity::Text(k8s.into()).bytes().unwrap_or(0);
    match q {
        q if q >= 1 << 30 => format!("{}GB", q >> 30),
        q if q >= 1 << 20 => format!("{}MB", q >> 20),
        q => format!("{}KB", q >> 10),
    }
}

/// What a container's env and `$(VAR)` references are resolved with.
pub struct Fields<'a> {
    pub pod_ip: &'a str,
    pub node_name: &'a str,
    pub uid: &'a str,
}

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, and
/// undefined references stay as they are.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where each volume of the pod is on the node.
pub type VolumePaths = HashMap<String, std::path::PathBuf>;

/// A container's config; `field` is its path in the manifest (`spec.containers[0]`).
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    plan: &PodPlan,
    field: &str,
    c: &Container,
    attempt: u32,
    fields: &Fields<'_>,
    volumes: &VolumePaths,
    memory_capacity: i64,
) -> anyhow::Result<cri::ContainerConfig> {
    let meta = &plan.meta;
    let pod = format!("{}/{}", meta.namespace, meta.name);
    let mut env: Vec<(String, String)> = Vec::new();
    for (i, e) in c.env.iter().enumerate() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                let path = from.field_ref.as_ref().map(|f| f.field_path.as_str()).unwrap_or("");
                match path {
                    "metadata.name" => meta.name.clone(),
                    "metadata.namespace" => meta.namespace.clone(),
                    "metadata.uid" => fields.uid.to_owned(),
                    "status.podIP" => fields.pod_ip.to_owned(),
                    "spec.nodeName" => fields.node_name.to_owned(),
                    other => bail!(
                        "pod {pod}: {field}.env[{i}].valueFrom: fieldRef {other:?} is not supported by podbay play \
                         (metadata.name, metadata.namespace, metadata.uid, status.podIP, spec.nodeName)"
                    ),
                }
            }
            (Some(v), None) => expand(v, &env),
            (None, None) => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    let mut mounts = Vec::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let host = volumes.get(&m.name).with_context(|| {
            format!("pod {pod}: {field}.volumeMounts[{i}]: no volume {:?} in spec.volumes", m.name)
        })?;
        if !m.mount_path.starts_with('/') {
            bail!("pod {pod}: {field}.volumeMounts[{i}].mountPath must be absolute");
        }
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            Some(other) => bail!("pod {pod}: {field}.volumeMounts[{i}].mountPropagation {other:?}"),
        };
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    let psc = plan.spec.security_context.clone().unwrap_or_default();
    let ns = namespaces(plan);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let security = cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add,
            drop_capabilities: caps.drop,
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(ns),
        run_as_user: sc.run_as_user.or(psc.run_as_user).map(|value| cri::Int64Value { value }),
        run_as_group: sc.run_as_group.or(psc.run_as_group).map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: groups(plan),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        seccomp: sc.seccomp_profile.as_ref().or(psc.seccomp_profile.as_ref()).map(seccomp),
        ..Default::default()
    };
    let mut labels = HashMap::new();
    labels.insert(LABEL_NAME.to_owned(), meta.name.clone());
    labels.insert(LABEL_NAMESPACE.to_owned(), meta.namespace.clone());
    labels.insert(LABEL_UID.to_owned(), fields.uid.to_owned());
    labels.insert(LABEL_CONTAINER.to_owned(), c.name.clone());
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(cri::ImageSpec { image: c.image.clone(), ..Default::default() }),
        command: c.command.iter().map(|s| expand(s, &env)).collect(),
        args: c.args.iter().map(|s| expand(s, &env)).collect(),
        working_dir: c.working_dir.clone(),
        envs: env.into_iter().map(|(key, value)| cri::KeyValue { key, value }).collect(),
        mounts,
        labels,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(&pod, field, c, qos(plan), memory_capacity)?),
            security_context: Some(security),
        }),
        ..Default::default()
    })
}

/// The node's memory (MemTotal), which Burstable pods' oom_score_adj is relative to.
pub fn memory_capacity() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        })
        .map_or(1 << 30, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::play::manifest;

    fn plan(yaml: &str) -> PodPlan {
        manifest::read(yaml).1.unwrap().remove(0)
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x".to_owned())];
        assert_eq!(expand("$(A)-$(B)", &env), "1-x");
        assert_eq!(expand("$$(A) $(C) $", &env), "$(A) $(C) $");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn qos_and_resources_as_kubelet_computes_them() {
        let p = plan(
            "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: b\n    resources: {limits: {cpu: 500m, memory: 128Mi}}\n",
        );
        assert_eq!(qos(&p), Qos::Guaranteed);
        let f = Fields { pod_ip: "10.0.0.2", node_name: "n", uid: "u" };
        let c = container_config(
            &p,
            "spec.containers[0]",
            &p.spec.containers[0],
            0,
            &f,
            &HashMap::new(),
            1 << 30,
        )
        .unwrap();
        let r = c.linux.unwrap().resources.unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (512, 50_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, -997);

        let p = plan(
            "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: b\n    resources: {requests: {memory: 256Mi}}\n",
        );
        assert_eq!(qos(&p), Qos::Burstable);
        let c = container_config(&p, "x", &p.spec.containers[0], 0, &f, &HashMap::new(), 1 << 30)
            .unwrap();
        assert_eq!(c.linux.unwrap().resources.unwrap().oom_score_adj, 750);

        let p =
            plan("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: b}]\n");
        assert_eq!(qos(&p), Qos::BestEffort);
    }

    #[test]
    fn env_field_refs_and_namespaces() {
        let p = plan(
            "kind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  shareProcessNamespace: true\n  containers:\n  - name: c\n    image: b\n    args: [\"$(ME) at $(IP)\"]\n    env:\n    - {name: ME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n",
        );
        let f = Fields { pod_ip: "10.0.0.2", node_name: "n", uid: "u" };
        let c = container_config(&p, "x", &p.spec.containers[0], 1, &f, &HashMap::new(), 1 << 30)
            .unwrap();
        assert_eq!(c.args, ["p at 10.0.0.2"]);
        assert_eq!(c.log_path, "c/1.log");
        let ns = c.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.pid, cri::NamespaceMode::Pod as i32);
        let s = sandbox_config(&p, "u", Path::new("/l"));
        assert_eq!(s.labels[LABEL_PLAY], "pod-p");
        assert_eq!(s.hostname, "p");
    }
}
