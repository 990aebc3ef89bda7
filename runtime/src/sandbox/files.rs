//! The pod's hostname, hosts and resolv.conf files.

use std::path::Path;

use super::{DnsSpec, Error, NamespaceMode, SandboxSpec};
use crate::layout::PodLayout;

const HOSTS_HEADER: &str = "# Kubernetes-managed hosts file (written by podbay).\n";
const HOSTS_BASE: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// Writes hostname, hosts and resolv.conf into the pod dir.
pub fn write_pod_files(pod: &PodLayout, spec: &SandboxSpec, host_etc: &Path) -> Result<(), Error> {
    write(&pod.hostname(), format!("{}\n", spec.hostname).as_bytes())?;
    let hosts = if spec.namespaces.network == NamespaceMode::Node {
        // Host-network pods see the node's hosts file, as with containerd.
        std::fs::read(host_etc.join("hosts")).unwrap_or_default()
    } else {
        format!("{HOSTS_HEADER}{HOSTS_BASE}").into_bytes()
    };
    write(&pod.hosts(), &hosts)?;
    let resolv = match &spec.dns {
        Some(dns) => resolv_conf(dns).into_bytes(),
        None => std::fs::read(host_etc.join("resolv.conf")).unwrap_or_default(),
    };
    write(&pod.resolv_conf(), &resolv)
}

fn write(path: &Path, data: &[u8]) -> Result<(), Error> {
    std::fs::write(path, data).map_err(|source| Error::WriteFile { path: path.into(), source })
}

/// resolv.conf text from a pod's DNS config, in kubelet's layout.
pub fn resolv_conf(dns: &DnsSpec) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_kubelet_layout() {
        let dns = DnsSpec {
            servers: vec!["10.96.0.10".into(), "fd00::10".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver fd00::10\noptions ndots:5 edns0\n"
        );
        assert_eq!(resolv_conf(&DnsSpec::default()), "");
    }
}
