//! Kubernetes manifests for `podbay play`: multi-document YAML, `Pod`, `Deployment` and
//! `ReplicaSet` (apps/v1), read into the small set of typed fields podbay acts on.
//!
//! Every field of a document is first checked against [`schema`]'s table of what podbay
//! play does with it: used, ignored with a warning (probes and whatever only touches health
//! or scheduling), or refused (anything that would change what runs). The typed structs
//! below then take the used fields; unknown keys never reach them silently.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::schema::{self, Finding};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub volumes: Vec<Volume>,
    pub restart_policy: Option<String>,
    pub hostname: Option<String>,
    pub host_network: bool,
    #[serde(rename = "hostPID")]
    pub host_pid: bool,
    #[serde(rename = "hostIPC")]
    pub host_ipc: bool,
    pub share_process_namespace: bool,
    pub dns_config: Option<DnsConfig>,
    pub security_context: Option<PodSecurityContext>,
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<DnsOption>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DnsOption {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub fs_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub sysctls: Vec<NameValue>,
    pub seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    pub kind: String,
    pub localhost_profile: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub env: Vec<EnvVar>,
    pub ports: Vec<ContainerPort>,
    pub resources: Resources,
    pub volume_mounts: Vec<VolumeMount>,
    pub security_context: Option<SecurityContext>,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvVarSource {
    pub field_ref: Option<FieldRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerPort {
    pub container_port: i32,
    pub host_port: i32,
    pub protocol: Option<String>,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Resources {
    pub limits: BTreeMap<String, Quantity>,
    pub requests: BTreeMap<String, Quantity>,
}

/// A resource quantity as written: `500m`, `1`, `128Mi`, `1G`, or a bare number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Text(String),
    Number(f64),
}

impl Quantity {
    fn text(&self) -> String {
        match self {
            Quantity::Text(t) => t.trim().to_owned(),
            Quantity::Number(n) => n.to_string(),
        }
    }

    /// CPU in millicores (`500m` → 500, `2` → 2000, `0.5` → 500).
    pub fn millicores(&self) -> Option<i64> {
        let t = self.text();
        if let Some(m) = t.strip_suffix('m') {
            return m.parse::<i64>().ok().filter(|v| *v >= 0);
        }
        t.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v * 1000.0).ceil() as i64)
    }

    /// Bytes (`128Mi`, `1G`, `1e9`, `500k`).
    pub fn bytes(&self) -> Option<i64> {
        let t = self.text();
        const SUFFIXES: [(&str, f64); 12] = [
            ("Ki", 1024.0),
            ("Mi", 1048576.0),
            ("Gi", 1073741824.0),
            ("Ti", 1099511627776.0),
            ("Pi", 1125899906842624.0),
            ("Ei", 1152921504606846976.0),
            ("k", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("T", 1e12),
            ("P", 1e15),
            ("E", 1e18),
        ];
        let (number, scale) = SUFFIXES
            .iter()
            .find_map(|(s, f)| t.strip_suffix(s).map(|n| (n, *f)))
            .unwrap_or((t.as_str(), 1.0));
        let v = number.parse::<f64>().ok().filter(|v| *v >= 0.0 && v.is_finite())? * scale;
        (v <= i64::MAX as f64).then_some(v.ceil() as i64)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
    pub mount_propagation: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub capabilities: Option<Capabilities>,
    pub privileged: Option<bool>,
    pub read_only_root_filesystem: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub seccomp_profile: Option<SeccompProfile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub empty_dir: Option<EmptyDir>,
    pub host_path: Option<HostPath>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EmptyDir {
    pub medium: String,
    pub size_limit: Option<Quantity>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HostPath {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One pod to run: from a `Pod`, or one replica of a `Deployment`/`ReplicaSet`.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub meta: ObjectMeta,
    pub spec: PodSpec,
    /// `pod-web`, `deployment-web`: what `--down` and a replay match on.
    pub workload: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Template {
    metadata: ObjectMeta,
    spec: PodSpec,
}

/// The warnings for the fields podbay play ignores (also when the file is refused), and
/// every pod the file asks for; errors name each refused field by its path.
pub fn read(text: &str) -> (Vec<String>, anyhow::Result<Vec<PodPlan>>) {
    let mut warnings = Vec::new();
    let plans = read_into(text, &mut warnings);
    (warnings, plans)
}

fn read_into(text: &str, warnings: &mut Vec<String>) -> anyhow::Result<Vec<PodPlan>> {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(doc).with_context(|| format!("document {}: not YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let at = |path: &str| format!("{kind} {name:?}: {path}");
        let findings = match kind.as_str() {
            "Pod" => schema::check_pod(&value),
            "Deployment" | "ReplicaSet" => schema::check_workload(&value),
            "" => {
                errors.push(format!("document {}: no kind", i + 1));
                continue;
            }
            other => {
                errors.push(format!(
                    "document {}: kind {other} is not supported by podbay play (Pod, Deployment, ReplicaSet)",
                    i + 1
                ));
                continue;
            }
        };
        for f in findings {
            match f {
                Finding::Warn(p) => warnings.push(format!("{}: ignored by podbay play", at(&p))),
                Finding::Error(p, why) => errors.push(format!("{}: {why}", at(&p))),
            }
        }
        if !errors.is_empty() {
            continue;
        }
        match kind.as_str() {
            "Pod" => {
                let meta: ObjectMeta =
                    serde_json::from_value(value["metadata"].clone()).context("metadata")?;
                let spec: PodSpec =
                    serde_json::from_value(value["spec"].clone()).with_context(|| at("spec"))?;
                let workload = format!("pod-{}", meta.name);
                plans.push(PodPlan { meta, spec, workload });
            }
            _ => {
                let meta: ObjectMeta =
                    serde_json::from_value(value["metadata"].clone()).context("metadata")?;
                let replicas = value["spec"]["replicas"].as_i64().unwrap_or(1);
                if !(0..=100).contains(&replicas) {
                    errors.push(at("spec.replicas: must be 0 to 100"));
                    continue;
                }
                let template: Template = serde_json::from_value(value["spec"]["template"].clone())
                    .with_context(|| at("spec.template"))?;
                let workload = format!("{}-{}", kind.to_lowercase(), meta.name);
                for r in 0..replicas {
                    let mut pod_meta = template.metadata.clone();
                    pod_meta.name = format!("{}-{r}", meta.name);
                    pod_meta.namespace = meta.namespace.clone();
                    plans.push(PodPlan {
                        meta: pod_meta,
                        spec: template.spec.clone(),
                        workload: workload.clone(),
                    });
                }
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    for p in &mut plans {
        if p.meta.namespace.is_empty() {
            p.meta.namespace = "default".into();
        }
        check_names(p)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &plans {
        if !seen.insert((p.meta.namespace.clone(), p.meta.name.clone())) {
            bail!("pod {}/{} is in the file twice", p.meta.namespace, p.meta.name);
        }
    }
    Ok(plans)
}

/// A DNS-1123 label: lower-case alphanumerics and '-', 1–63, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Names become paths and CRI names: they must be what Kubernetes allows.
fn check_names(p: &PodPlan) -> anyhow::Result<()> {
    let pod = format!("{}/{}", p.meta.namespace, p.meta.name);
    if !is_dns_subdomain(&p.meta.name) {
        bail!("pod {pod}: metadata.name must be a DNS-1123 subdomain");
    }
    if !is_dns_label(&p.meta.namespace) {
        bail!("pod {pod}: metadata.namespace must be a DNS-1123 label");
    }
    if p.spec.containers.is_empty() {
        bail!("pod {pod}: spec.containers: at least one container");
    }
    let mut names = std::collections::BTreeSet::new();
    for (field, list) in
        [("initContainers", &p.spec.init_containers), ("containers", &p.spec.containers)]
    {
        for (i, c) in list.iter().enumerate() {
            if !is_dns_label(&c.name) {
                bail!("pod {pod}: spec.{field}[{i}].name {:?} must be a DNS-1123 label", c.name);
            }
            if !names.insert(&c.name) {
                bail!("pod {pod}: spec.{field}[{i}].name {:?} is used twice", c.name);
            }
            if c.image.is_empty() {
                bail!("pod {pod}: spec.{field}[{i}].image is required");
            }
        }
    }
    for (i, v) in p.spec.volumes.iter().enumerate() {
        if !is_dns_label(&v.name) {
            bail!("pod {pod}: spec.volumes[{i}].name {:?} must be a DNS-1123 label", v.name);
        }
        if v.empty_dir.is_some() == v.host_path.is_some() {
            bail!("pod {pod}: spec.volumes[{i}]: one of emptyDir or hostPath");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity::Text(s.into());
        assert_eq!(q("500m").millicores(), Some(500));
        assert_eq!(q("2").millicores(), Some(2000));
        assert_eq!(Quantity::Number(0.25).millicores(), Some(250));
        assert_eq!(q("128Mi").bytes(), Some(128 << 20));
        assert_eq!(q("1G").bytes(), Some(1_000_000_000));
        assert_eq!(q("-1").bytes(), None);
        assert_eq!(q("lots").bytes(), None);
    }

    #[test]
    fn deployments_become_replicas_and_unknown_kinds_are_refused() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: busybox}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: solo, namespace: x}\nspec:\n  containers: [{name: c, image: busybox, livenessProbe: {exec: {command: [true]}}}]\n";
        let (warnings, plans) = read(text);
        let plans = plans.unwrap();
        let names: Vec<_> = plans.iter().map(|p| p.meta.name.as_str()).collect();
        assert_eq!(names, ["web-0", "web-1", "solo"]);
        assert_eq!(plans[0].meta.labels["app"], "web");
        assert_eq!(plans[0].workload, "deployment-web");
        assert_eq!(
            warnings,
            ["Pod \"solo\": spec.containers[0].livenessProbe: ignored by podbay play"]
        );
        let err = read("kind: Service\nmetadata: {name: s}\n").1.unwrap_err().to_string();
        assert!(err.contains("kind Service is not supported"), "{err}");
    }

    #[test]
    fn refused_fields_are_named_by_path() {
        let text = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    lifecycle: {postStart: {exec: {command: [x]}}}\n  volumes:\n  - name: v\n    configMap: {name: cm}\n";
        let err = read(text).1.unwrap_err().to_string();
        assert!(
            err.contains("spec.containers[0].lifecycle: not supported by podbay play"),
            "{err}"
        );
        assert!(err.contains("spec.volumes[0].configMap: not supported by podbay play"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        let err =
            read("kind: Pod\nmetadata: {name: ../x}\nspec: {containers: [{name: c, image: b}]}\n")
                .1
                .unwrap_err()
                .to_string();
        assert!(err.contains("DNS-1123"), "{err}");
    }
}
