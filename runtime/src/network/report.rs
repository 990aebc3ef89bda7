//! The node network as people debug it (`podbay net show`, `crictl info`).

use std::net::Ipv4Addr;

use podbay_netplug::config::StoreConfig;

use super::{LivePod, PodNetwork};

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkReport {
    pub ready: bool,
    /// Why the network is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub bridge: String,
    pub cluster_cidr: String,
    pub subnet: String,
    pub gateway: String,
    pub mtu: Option<u32>,
    pub node_ip: Option<Ipv4Addr>,
    pub masquerade: bool,
    pub hairpin: bool,
    pub pods: Vec<PodReport>,
    /// The IP leases in the state database (IP → sandbox id): one per pod in `pods`.
    pub leases: std::collections::BTreeMap<Ipv4Addr, String>,
    /// podbay's nftables table, in nft syntax.
    pub rules: String,
    /// `local` or `etcd <endpoints>`.
    pub subnet_store: String,
    /// The VXLAN overlay and its peers, with `subnet_store = "etcd"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<podbay_netplug::overlay::OverlayReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub veth: String,
    /// The host veth's interface index: the pod sees its eth0 as `eth0@if<index>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub veth_index: Option<u32>,
    pub mac: String,
    pub host_ports: Vec<String>,
}

impl PodNetwork {
    /// The report of the node network with the pods that hold a network now.
    pub async fn report(&self, pods: &[LivePod]) -> NetworkReport {
        let node = self.node();
        // Once up, the node's config holds the subnet actually leased.
        let cfg = match &node {
            Ok(n) => n.config().clone(),
            Err(_) => self.inner.cfg.clone(),
        };
        let overlay = match node.as_ref().ok().and_then(|n| n.overlay()) {
            Some(o) => Some(o.report().await),
            None => None,
        };
        let leased = matches!(cfg.store, StoreConfig::Etcd(_));
        let ports = match &node {
            Ok(n) => n.bridge_ports().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let index_of = |veth: &str| ports.iter().find(|p| p.name == veth).map(|p| p.index);
        let mut pods: Vec<PodReport> = pods
            .iter()
            .map(|p| PodReport {
                id: p.id.to_string(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ip: p.attachment.ip,
                veth: p.attachment.host_veth.clone(),
                veth_index: index_of(&p.attachment.host_veth),
                mac: podbay_netplug::pod::format_mac(&podbay_netplug::pod::pod_mac(
                    p.attachment.ip,
                )),
                host_ports: p.port_maps().iter().map(ToString::to_string).collect(),
            })
            .collect();
        pods.sort_by_key(|p| p.ip);
        let store = self.inner.store.clone();
        let leases = tokio::task::spawn_blocking(move || super::leases::all(&store))
            .await
            .expect("state store task panicked")
            .map(|(leases, _)| leases.into_iter().collect())
            .unwrap_or_default();
        NetworkReport {
            ready: node.is_ok(),
            reason: node.as_ref().err().map(ToString::to_string),
            bridge: cfg.bridge.clone(),
            cluster_cidr: cfg.cluster_cidr.to_string(),
            subnet: if leased && node.is_err() {
                "(not leased yet)".into()
            } else {
                cfg.node_subnet.net().to_string()
            },
            gateway: cfg.gateway().to_string(),
            mtu: node.as_ref().ok().map(|n| n.mtu()),
            node_ip: node.as_ref().ok().and_then(|n| n.node_ip()),
            masquerade: cfg.masquerade,
            hairpin: cfg.hairpin,
            pods,
            leases,
            rules: podbay_netplug::firewall::Firewall::new(&cfg).render(),
            subnet_store: match &cfg.store {
                StoreConfig::Local => "local".into(),
                StoreConfig::Etcd(e) => format!("etcd {} ({})", e.endpoints_text(), e.prefix),
                StoreConfig::Kubelet => "kubelet (the node's pod CIDR)".into(),
            },
            overlay,
        }
    }
}
