//! crictl's PodSandboxConfig files (JSON or YAML) for `podbay runp`.
//!
//! Field names are CRI's protobuf names in snake_case (as crictl's examples use) or their
//! camelCase JSON names; namespace modes are numbers or names (POD, CONTAINER, NODE,
//! TARGET). Unknown fields are refused with their name, so a typo is not silently ignored.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodFile {
    metadata: Option<MetaFile>,
    hostname: String,
    #[serde(alias = "logDirectory")]
    log_directory: String,
    #[serde(alias = "dnsConfig")]
    dns_config: Option<DnsFile>,
    #[serde(alias = "portMappings")]
    port_mappings: Vec<PortFile>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    linux: Option<LinuxFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MetaFile {
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DnsFile {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PortFile {
    protocol: Option<Named>,
    #[serde(alias = "containerPort")]
    container_port: i32,
    #[serde(alias = "hostPort")]
    host_port: i32,
    #[serde(alias = "hostIp")]
    host_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LinuxFile {
    #[serde(alias = "cgroupParent")]
    cgroup_parent: String,
    #[serde(alias = "securityContext")]
    security_context: Option<SecurityFile>,
    sysctls: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SecurityFile {
    #[serde(alias = "namespaceOptions")]
    namespace_options: Option<NamespaceFile>,
    privileged: bool,
    #[serde(alias = "readonlyRootfs")]
    readonly_rootfs: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NamespaceFile {
    network: Option<Named>,
    pid: Option<Named>,
    ipc: Option<Named>,
}

/// An enum value given by number or by name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Named {
    Number(i32),
    Name(String),
}

impl Named {
    pub(super) fn resolve(&self, field: &str, names: &[&str]) -> anyhow::Result<i32> {
        match self {
            Named::Number(n) if (0..names.len() as i32).contains(n) => Ok(*n),
            Named::Number(n) => bail!("{field}: unknown value {n}"),
            Named::Name(s) => names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(s))
                .map(|i| i as i32)
                .with_context(|| format!("{field}: unknown value {s:?} (one of {names:?})")),
        }
    }
}

pub(super) const MODES: &[&str] = &["POD", "CONTAINER", "NODE", "TARGET"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

pub(super) fn mode(v: &Option<Named>, field: &str) -> anyhow::Result<i32> {
    v.as_ref().map_or(Ok(0), |v| v.resolve(field, MODES))
}

/// Reads a pod config file; `.json` is parsed as JSON, anything else as YAML.
pub fn read(path: &Path) -> anyhow::Result<cri::PodSandboxConfig> {
    let file: PodFile = parse_file(path)?;
    convert(file).with_context(|| format!("in {}", path.display()))
}

/// Parses a config file into `T`: `.json` as JSON, anything else as YAML (a superset).
pub(super) fn parse_file<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    } else {
        serde_norway::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }
}

fn convert(f: PodFile) -> anyhow::Result<cri::PodSandboxConfig> {
    let port_mappings = f
        .port_mappings
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("port_mappings[{i}].protocol");
            Ok(cri::PortMapping {
                protocol: p.protocol.as_ref().map_or(Ok(0), |v| v.resolve(&field, PROTOCOLS))?,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let linux = f
        .linux
        .map(|l| -> anyhow::Result<_> {
            let security_context = l
                .security_context
                .map(|s| -> anyhow::Result<_> {
                    let field = "linux.security_context.namespace_options";
                    let namespace_options = s
                        .namespace_options
                        .map(|n| -> anyhow::Result<_> {
                            Ok(cri::NamespaceOption {
                                network: mode(&n.network, &format!("{field}.network"))?,
                                pid: mode(&n.pid, &format!("{field}.pid"))?,
                                ipc: mode(&n.ipc, &format!("{field}.ipc"))?,
                                ..Default::default()
                            })
                        })
                        .transpose()?;
                    Ok(cri::LinuxSandboxSecurityContext {
                        namespace_options,
                        privileged: s.privileged,
                        readonly_rootfs: s.readonly_rootfs,
                        ..Default::default()
                    })
                })
                .transpose()?;
            Ok(cri::LinuxPodSandboxConfig {
                cgroup_parent: l.cgroup_parent,
                security_context,
                sysctls: l.sysctls,
                ..Default::default()
            })
        })
        .transpose()?;
    Ok(cri::PodSandboxConfig {
        metadata: f.metadata.map(|m| cri::PodSandboxMetadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        }),
        hostname: f.hostname,
        log_directory: f.log_directory,
        dns_config: f.dns_config.map(|d| cri::DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings,
        labels: f.labels,
        annotations: f.annotations,
        linux,
        ..Default::default()
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn ns_options(c: cri::PodSandboxConfig) -> cri::NamespaceOption {
        c.linux.unwrap().security_context.unwrap().namespace_options.unwrap()
    }

    pub(in crate::cli) fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn crictl_json_example() {
        let (_d, p) = write(
            "pod.json",
            r#"{"metadata":{"name":"nginx-sandbox","namespace":"default","attempt":1,"uid":"hdishd83djaidwnduwk28bcsb"},
               "log_directory":"/tmp","linux":{"security_context":{"namespace_options":{"pid":1}}}}"#,
        );
        let c = read(&p).unwrap();
        assert_eq!(c.metadata.clone().unwrap().attempt, 1);
        assert_eq!(c.log_directory, "/tmp");
        let ns = ns_options(c);
        assert_eq!(ns.pid, 1);
    }

    #[test]
    fn yaml_with_camel_case_and_names() {
        let (_d, p) = write(
            "pod.yaml",
            "metadata: {name: a, namespace: b, uid: c}\nhostname: web\n\
             dnsConfig: {servers: [10.96.0.10], options: [ndots:5]}\n\
             linux:\n  securityContext:\n    namespaceOptions: {network: NODE, pid: container}\n",
        );
        let c = read(&p).unwrap();
        assert_eq!(c.dns_config.clone().unwrap().options, ["ndots:5"]);
        let ns = ns_options(c);
        assert_eq!((ns.network, ns.pid), (2, 1));
    }

    #[test]
    fn unknown_fields_and_values_are_named() {
        let (_d, p) = write("pod.json", r#"{"metadata":{"name":"a"},"hostnme":"x"}"#);
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("hostnme"));
        let (_d, p) =
            write("pod.yaml", "linux: {security_context: {namespace_options: {network: WIDE}}}\n");
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("namespace_options.network"));
    }
}
