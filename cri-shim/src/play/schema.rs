//! What `podbay play` does with each field of a Pod or workload manifest: a table per
//! object kind. A field is used, ignored with a warning (health checks, scheduling, things
//! a single node has no use for), or refused (it would change what runs, and podbay play
//! cannot do it). Unknown fields are refused too, so a typo is never silently dropped.

use serde_json::Value;

pub enum Finding {
    /// Ignored (path).
    Warn(String),
    /// Refused (path, why).
    Error(String, String),
}

#[derive(Clone, Copy)]
enum Rule {
    /// Used as it is (a scalar, a list of scalars, or an object podbay reads whole).
    Use,
    /// A string → string map (labels, annotations, resource lists).
    Map,
    Warn,
    Refuse,
    Object(&'static [(&'static str, Rule)]),
    ListOf(&'static [(&'static str, Rule)]),
}

use Rule::*;

const META: &[(&str, Rule)] = &[
    ("name", Use),
    ("namespace", Use),
    ("labels", Map),
    ("annotations", Map),
    ("uid", Warn),
    ("generateName", Refuse),
    ("ownerReferences", Warn),
    ("finalizers", Warn),
    ("resourceVersion", Warn),
    ("creationTimestamp", Warn),
    ("generation", Warn),
    ("managedFields", Warn),
];

const SECCOMP: &[(&str, Rule)] = &[("type", Use), ("localhostProfile", Use)];

const POD_SECURITY: &[(&str, Rule)] = &[
    ("runAsUser", Use),
    ("runAsGroup", Use),
    ("runAsNonRoot", Use),
    ("fsGroup", Use),
    ("supplementalGroups", Use),
    ("sysctls", ListOf(&[("name", Use), ("value", Use)])),
    ("seccompProfile", Object(SECCOMP)),
    ("fsGroupChangePolicy", Warn),
    ("seLinuxOptions", Warn),
    ("appArmorProfile", Warn),
    ("windowsOptions", Warn),
    ("supplementalGroupsPolicy", Warn),
    ("seLinuxChangePolicy", Warn),
];

const CONTAINER_SECURITY: &[(&str, Rule)] = &[
    ("runAsUser", Use),
    ("runAsGroup", Use),
    ("runAsNonRoot", Use),
    ("capabilities", Object(&[("add", Use), ("drop", Use)])),
    ("privileged", Use),
    ("readOnlyRootFilesystem", Use),
    ("allowPrivilegeEscalation", Use),
    ("seccompProfile", Object(SECCOMP)),
    ("procMount", Refuse),
    ("seLinuxOptions", Warn),
    ("appArmorProfile", Warn),
    ("windowsOptions", Warn),
];

const CONTAINER: &[(&str, Rule)] = &[
    ("name", Use),
    ("image", Use),
    ("imagePullPolicy", Use),
    ("command", Use),
    ("args", Use),
    ("workingDir", Use),
    (
        "env",
        ListOf(&[
            ("name", Use),
            ("value", Use),
            (
                "valueFrom",
                Object(&[("fieldRef", Object(&[("fieldPath", Use), ("apiVersion", Use)]))]),
            ),
        ]),
    ),
    (
        "ports",
        ListOf(&[
            ("containerPort", Use),
            ("hostPort", Use),
            ("protocol", Use),
            ("hostIP", Use),
            ("name", Use),
        ]),
    ),
    ("resources", Object(&[("limits", Map), ("requests", Map), ("claims", Refuse)])),
    (
        "volumeMounts",
        ListOf(&[
            ("name", Use),
            ("mountPath", Use),
            ("readOnly", Use),
            ("mountPropagation", Use),
            ("subPath", Refuse),
            ("subPathExpr", Refuse),
            ("recursiveReadOnly", Refuse),
        ]),
    ),
    ("securityContext", Object(CONTAINER_SECURITY)),
    ("stdin", Use),
    ("stdinOnce", Use),
    ("tty", Use),
    ("livenessProbe", Warn),
    ("readinessProbe", Warn),
    ("startupProbe", Warn),
    ("terminationMessagePath", Warn),
    ("terminationMessagePolicy", Warn),
    ("resizePolicy", Warn),
    ("lifecycle", Refuse),
    ("envFrom", Refuse),
    ("volumeDevices", Refuse),
    ("restartPolicy", Refuse),
];

const VOLUME: &[(&str, Rule)] = &[
    ("name", Use),
    ("emptyDir", Object(&[("medium", Use), ("sizeLimit", Use)])),
    ("hostPath", Object(&[("path", Use), ("type", Use)])),
];

const POD_SPEC: &[(&str, Rule)] = &[
    ("containers", ListOf(CONTAINER)),
    ("initContainers", ListOf(CONTAINER)),
    ("volumes", ListOf(VOLUME)),
    ("restartPolicy", Use),
    ("hostname", Use),
    ("hostNetwork", Use),
    ("hostPID", Use),
    ("hostIPC", Use),
    ("shareProcessNamespace", Use),
    (
        "dnsConfig",
        Object(&[
            ("nameservers", Use),
            ("searches", Use),
            ("options", ListOf(&[("name", Use), ("value", Use)])),
        ]),
    ),
    ("securityContext", Object(POD_SECURITY)),
    ("terminationGracePeriodSeconds", Use),
    ("dnsPolicy", Warn),
    ("subdomain", Warn),
    ("nodeSelector", Warn),
    ("nodeName", Warn),
    ("affinity", Warn),
    ("tolerations", Warn),
    ("serviceAccountName", Warn),
    ("serviceAccount", Warn),
    ("automountServiceAccountToken", Warn),
    ("priorityClassName", Warn),
    ("priority", Warn),
    ("preemptionPolicy", Warn),
    ("schedulerName", Warn),
    ("enableServiceLinks", Warn),
    ("imagePullSecrets", Warn),
    ("readinessGates", Warn),
    ("topologySpreadConstraints", Warn),
    ("overhead", Warn),
    ("os", Warn),
    ("schedulingGates", Warn),
    ("resourceClaims", Refuse),
    ("activeDeadlineSeconds", Refuse),
    ("runtimeClassName", Refuse),
    ("hostAliases", Refuse),
    ("hostUsers", Refuse),
    ("setHostnameAsFQDN", Refuse),
    ("ephemeralContainers", Refuse),
    ("resources", Refuse),
];

const TEMPLATE: &[(&str, Rule)] = &[("metadata", Object(META)), ("spec", Object(POD_SPEC))];

const WORKLOAD_SPEC: &[(&str, Rule)] = &[
    ("replicas", Use),
    ("selector", Use),
    ("template", Object(TEMPLATE)),
    ("strategy", Warn),
    ("minReadySeconds", Warn),
    ("revisionHistoryLimit", Warn),
    ("progressDeadlineSeconds", Warn),
    ("paused", Refuse),
];

const POD: &[(&str, Rule)] = &[
    ("apiVersion", Use),
    ("kind", Use),
    ("metadata", Object(META)),
    ("spec", Object(POD_SPEC)),
    ("status", Warn),
];

const WORKLOAD: &[(&str, Rule)] = &[
    ("apiVersion", Use),
    ("kind", Use),
    ("metadata", Object(META)),
    ("spec", Object(WORKLOAD_SPEC)),
    ("status", Warn),
];

pub fn check_pod(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk("", doc, Object(POD), &mut out);
    out
}

pub fn check_workload(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk("", doc, Object(WORKLOAD), &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn walk(path: &str, value: &Value, rule: Rule, out: &mut Vec<Finding>) {
    let refuse = |why: &str| Finding::Error(path.to_owned(), why.to_owned());
    match rule {
        Use => {}
        Warn => out.push(Finding::Warn(path.to_owned())),
        Refuse => out.push(refuse("not supported by podbay play")),
        Map => {
            if let Some(map) = value.as_object() {
                if map.values().any(|v| !(v.is_string() || v.is_number())) {
                    out.push(refuse("values must be strings"));
                }
            } else if !value.is_null() {
                out.push(refuse("must be a map"));
            }
        }
        Object(fields) => {
            let Some(map) = value.as_object() else {
                if !value.is_null() {
                    out.push(refuse("must be an object"));
                }
                return;
            };
            for (key, v) in map {
                let at = join(path, key);
                match fields.iter().find(|(k, _)| k == key) {
                    Some((_, rule)) => walk(&at, v, *rule, out),
                    None => out.push(Finding::Error(at, "not supported by podbay play".into())),
                }
            }
        }
        ListOf(fields) => {
            let Some(items) = value.as_array() else {
                if !value.is_null() {
                    out.push(refuse("must be a list"));
                }
                return;
            };
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, Object(fields), out);
            }
        }
    }
}
