//! The pod network as the runtime uses it: the node network (netplug's [`Node`]), which
//! pod holds which IP lease and which hostPort, and whether the network is ready.
//!
//! Leases and hostPorts are decided here in memory, under one lock, so two concurrent
//! RunPodSandbox never get the same IP or port. They become durable with the sandbox
//! record, in the same database transaction (see `store.rs`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};

use podbay_netplug::ipam::NodeSubnet;
use podbay_netplug::{NetworkConfig, Node, PortMap, Protocol};

use crate::ErrorKind;
use crate::ids::SandboxId;

/// A hostPort as requested (CRI PortMapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_port: u16,
    /// None: every node address.
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    pub fn to_port_map(self, pod_ip: Ipv4Addr) -> PortMap {
        PortMap {
            protocol: self.protocol,
            host_ip: self.host_ip,
            host_port: self.host_port,
            pod_ip,
            pod_port: self.container_port,
        }
    }

    fn key(&self) -> PortKey {
        (self.protocol, self.host_port)
    }
}

/// A pod's network as recorded: its lease and its node-side veth.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetwork {
    pub ip: Ipv4Addr,
    pub host_veth: String,
}

/// A host port is taken per protocol, whatever host_ip (binding 0.0.0.0:80 and
/// 10.0.0.1:80 would clash on the node too).
type PortKey = (Protocol, u16);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the pod network is not ready: {reason}")]
    NotReady { reason: String },
    #[error(transparent)]
    Ipam(#[from] podbay_netplug::ipam::Error),
    #[error("host port {port}/{protocol} is already mapped by pod {holder} (sandbox {id})", protocol = .protocol.name())]
    PortTaken { protocol: Protocol, port: u16, holder: String, id: SandboxId },
    #[error("host port {port}/{protocol} appears twice in port_mappings", protocol = .protocol.name())]
    PortTwice { protocol: Protocol, port: u16 },
    #[error(transparent)]
    Node(#[from] podbay_netplug::node::Error),
    #[error(transparent)]
    Firewall(#[from] podbay_netplug::firewall::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotReady { .. } => ErrorKind::Unavailable,
            Error::Ipam(e) => e.kind().into(),
            Error::PortTaken { .. } => ErrorKind::AlreadyExists,
            Error::PortTwice { .. } => ErrorKind::InvalidArgument,
            Error::Node(e) => e.kind().into(),
            Error::Firewall(e) => e.kind().into(),
        }
    }
}

#[derive(Default)]
struct Leases {
    last: Option<Ipv4Addr>,
    ips: HashMap<Ipv4Addr, SandboxId>,
    /// host port → (sandbox, pod name) holding it.
    ports: HashMap<PortKey, (SandboxId, String)>,
}

/// The runtime's view of the pod network.
pub(crate) struct Network {
    pub(crate) cfg: NetworkConfig,
    node: RwLock<Result<Arc<Node>, String>>,
    leases: Mutex<Leases>,
}

/// What a new pod was given; released on failure.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) ip: Ipv4Addr,
    pub(crate) ports: Vec<PortMapping>,
}

impl Network {
    pub(crate) fn new(cfg: NetworkConfig) -> Self {
        Self {
            cfg,
            node: RwLock::new(Err("the node network has not been set up yet".into())),
            leases: Mutex::new(Leases::default()),
        }
    }

    /// The node network, or why it is not ready.
    pub(crate) fn node(&self) -> Result<Arc<Node>, Error> {
        self.node.read().expect("network lock").clone().map_err(|reason| Error::NotReady { reason })
    }

    pub(crate) fn set_node(&self, node: Result<Arc<Node>, String>) {
        *self.node.write().expect("network lock") = node;
    }

    /// Restores what the database and the live pods say is taken.
    pub(crate) fn restore(
        &self,
        last: Option<Ipv4Addr>,
        live: impl IntoIterator<Item = (SandboxId, String, Ipv4Addr, Vec<PortMapping>)>,
    ) {
        let mut l = self.leases.lock().expect("leases lock");
        l.last = last;
        for (id, name, ip, ports) in live {
            l.ips.insert(ip, id.clone());
            for p in ports {
                l.ports.insert(p.key(), (id.clone(), name.clone()));
            }
        }
    }

    /// Leases an IP of the node's subnet (round-robin) and reserves the hostPorts for a new
    /// pod.
    pub(crate) fn grant(
        &self,
        subnet: &NodeSubnet,
        id: &SandboxId,
        pod: &str,
        ports: &[PortMapping],
    ) -> Result<Grant, Error> {
        let mut l = self.leases.lock().expect("leases lock");
        let mut seen = std::collections::HashSet::new();
        for p in ports {
            if !seen.insert(p.key()) {
                return Err(Error::PortTwice { protocol: p.protocol, port: p.host_port });
            }
            if let Some((holder_id, holder)) = l.ports.get(&p.key()) {
                return Err(Error::PortTaken {
                    protocol: p.protocol,
                    port: p.host_port,
                    holder: holder.clone(),
                    id: holder_id.clone(),
                });
            }
        }
        let ip = subnet.next_free(l.last, |ip| l.ips.contains_key(&ip))?;
        l.last = Some(ip);
        l.ips.insert(ip, id.clone());
        for p in ports {
            l.ports.insert(p.key(), (id.clone(), pod.to_owned()));
        }
        Ok(Grant { ip, ports: ports.to_vec() })
    }

    /// Gives back a pod's IP and hostPorts (only what this sandbox holds).
    pub(crate) fn release(&self, id: &SandboxId, ip: Ipv4Addr, ports: &[PortMapping]) {
        let mut l = self.leases.lock().expect("leases lock");
        if l.ips.get(&ip) == Some(id) {
            l.ips.remove(&ip);
        }
        for p in ports {
            if l.ports.get(&p.key()).is_some_and(|(holder, _)| holder == id) {
                l.ports.remove(&p.key());
            }
        }
    }
}

/// The node network as people debug it (`podbay net show`, `crictl info`).
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
    pub mac: String,
    pub host_ports: Vec<String>,
}

impl crate::Runtime {
    pub async fn network_report(&self) -> NetworkReport {
        let node = self.inner.network.node();
        // Once up, the node's config holds the subnet actually leased.
        let cfg = match &node {
            Ok(n) => n.config().clone(),
            Err(_) => self.inner.network.cfg.clone(),
        };
        let overlay = match node.as_ref().ok().and_then(|n| n.overlay()) {
            Some(o) => Some(o.report().await),
            None => None,
        };
        let leased = matches!(cfg.store, podbay_netplug::config::StoreConfig::Etcd(_));
        let mut pods: Vec<PodReport> = {
            let map = self.inner.sandboxes.read().expect("sandboxes lock");
            map.values()
                .filter_map(|s| {
                    let rec = s.record.lock().expect("sandbox record lock");
                    let net = rec.network.as_ref()?;
                    Some(PodReport {
                        id: rec.id.to_string(),
                        namespace: rec.spec.metadata.namespace.clone(),
                        name: rec.spec.metadata.name.clone(),
                        ip: net.ip,
                        veth: net.host_veth.clone(),
                        mac: podbay_netplug::pod::format_mac(&podbay_netplug::pod::pod_mac(net.ip)),
                        host_ports: rec
                            .spec
                            .port_mappings
                            .iter()
                            .map(|p| p.to_port_map(net.ip).to_string())
                            .collect(),
                    })
                })
                .collect()
        };
        pods.sort_by_key(|p| p.ip);
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
            rules: podbay_netplug::firewall::Firewall::new(&cfg).render(),
            subnet_store: match &cfg.store {
                podbay_netplug::config::StoreConfig::Local => "local".into(),
                podbay_netplug::config::StoreConfig::Etcd(e) => {
                    format!("etcd {} ({})", e.endpoints_text(), e.prefix)
                }
            },
            overlay,
        }
    }

    /// Adds hostPort map elements (a blocking netlink batch, off the async threads).
    pub(crate) async fn add_ports(&self, ports: Vec<PortMap>) -> Result<(), Error> {
        let node = self.inner.network.node()?;
        tokio::task::spawn_blocking(move || node.firewall().add_ports(&ports))
            .await
            .expect("firewall task panicked")?;
        Ok(())
    }

    /// Removes hostPort map elements; ones already gone count as removed. With the network
    /// not ready there is nothing to remove from: the table is rebuilt when it comes up.
    pub(crate) async fn remove_ports(
        &self,
        ports: Vec<PortMap>,
    ) -> Result<(), crate::sandbox::Error> {
        let Ok(node) = self.inner.network.node() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || node.firewall().remove_ports(&ports))
            .await
            .expect("firewall task panicked")
            .map_err(|e| Error::from(e).into())
    }

    /// Tears down a stopped pod's network: its hostPorts and its lease. The veth went with
    /// the pod's namespace (the kernel deletes it in the background).
    pub(crate) async fn teardown_network(
        &self,
        id: &SandboxId,
        net: &PodNetwork,
        mappings: &[PortMapping],
    ) -> Result<(), crate::sandbox::Error> {
        if !mappings.is_empty() {
            self.remove_ports(mappings.iter().map(|p| p.to_port_map(net.ip)).collect()).await?;
        }
        self.inner.network.release(id, net.ip, mappings);
        Ok(())
    }

    /// The hostPorts of every pod that holds a network now.
    pub(crate) fn live_ports(&self) -> Vec<PortMap> {
        let map = self.inner.sandboxes.read().expect("sandboxes lock");
        map.values()
            .filter_map(|s| {
                let rec = s.record.lock().expect("sandbox record lock");
                let ip = rec.network.as_ref()?.ip;
                Some(rec.spec.port_mappings.iter().map(|p| p.to_port_map(ip)).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    }

    /// Brings the node network up (bridge, sysctls, firewall table holding exactly the live
    /// pods' hostPorts) and removes bridge ports no live pod explains. On failure the
    /// network stays not ready and this is retried in the background with backoff.
    pub(crate) async fn start_network(&self) {
        if let Err(reason) = self.try_start_network().await {
            tracing::error!(error = %reason, "pod network not ready; retrying in the background");
            self.inner.network.set_node(Err(reason));
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut delay = std::time::Duration::from_secs(1);
                loop {
                    tokio::time::sleep(delay).await;
                    let Some(inner) = weak.upgrade() else { return };
                    let runtime = crate::Runtime { inner };
                    match runtime.try_start_network().await {
                        Ok(()) => {
                            tracing::info!("pod network ready");
                            return;
                        }
                        Err(reason) => runtime.inner.network.set_node(Err(reason)),
                    }
                    delay = (delay * 2).min(std::time::Duration::from_secs(10));
                }
            });
        }
    }

    async fn try_start_network(&self) -> Result<(), String> {
        let ports = self.live_ports();
        let node =
            Node::ensure(&self.inner.network.cfg, &ports).await.map_err(|e| e.to_string())?;
        let explained: std::collections::HashSet<String> = {
            let map = self.inner.sandboxes.read().expect("sandboxes lock");
            map.values()
                .filter_map(|s| s.record.lock().expect("sandbox record lock").network.clone())
                .map(|n| n.host_veth)
                .collect()
        };
        match node.bridge_ports().await {
            Ok(found) => {
                for port in found.into_iter().filter(|p| !explained.contains(&p.name)) {
                    tracing::warn!(link = %port.name, "removing a bridge port no sandbox explains");
                    if let Err(e) = node.delete_link(port.index).await {
                        tracing::warn!(link = %port.name, error = %e, "stale bridge port left behind");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "list bridge ports"),
        }
        self.inner.network.set_node(Ok(Arc::new(node)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use podbay_netplug::config::{DEFAULT_BRIDGE, DEFAULT_CLUSTER_CIDR, NetworkSettings};

    use super::*;

    /// A network and a node config holding `subnet` (no kernel involved: grants only
    /// read the node's subnet).
    fn network(subnet: &str) -> (Network, NetworkConfig) {
        let cfg = NetworkConfig::from_settings(&NetworkSettings {
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            node_subnet: subnet,
            bridge: DEFAULT_BRIDGE,
            mtu: 0,
            masquerade: true,
            hairpin: true,
            ..Default::default()
        })
        .unwrap();
        (Network::new(cfg.clone()), cfg)
    }

    fn tcp(host_port: u16) -> PortMapping {
        PortMapping { protocol: Protocol::Tcp, container_port: 80, host_port, host_ip: None }
    }

    #[test]
    fn grants_round_robin_and_releases() {
        let (n, cfg) = network("10.244.0.0/29");
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        let ga = n.grant(&cfg.node_subnet, &a, "a", &[]).unwrap();
        let gb = n.grant(&cfg.node_subnet, &b, "b", &[]).unwrap();
        assert_eq!(
            (ga.ip.to_string().as_str(), gb.ip.to_string().as_str()),
            ("10.244.0.2", "10.244.0.3")
        );
        n.release(&a, ga.ip, &[]);
        // Not reused right away.
        let c = SandboxId::generate();
        assert_eq!(n.grant(&cfg.node_subnet, &c, "c", &[]).unwrap().ip.to_string(), "10.244.0.4");
    }

    #[test]
    fn a_taken_host_port_names_its_holder() {
        let (n, cfg) = network("");
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        n.grant(&cfg.node_subnet, &a, "default/web", &[tcp(8080)]).unwrap();
        let e = n.grant(&cfg.node_subnet, &b, "default/other", &[tcp(8080)]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("8080/tcp") && e.to_string().contains("default/web"), "{e}");
        // Same port, other protocol: fine. Twice in one request: invalid.
        let udp = PortMapping { protocol: Protocol::Udp, ..tcp(8080) };
        n.grant(&cfg.node_subnet, &b, "default/other", &[udp]).unwrap();
        let c = SandboxId::generate();
        assert_eq!(
            n.grant(&cfg.node_subnet, &c, "x", &[tcp(1), tcp(1)]).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn a_full_subnet_is_resource_exhausted() {
        let (n, cfg) = network("10.244.0.0/30");
        n.grant(&cfg.node_subnet, &SandboxId::generate(), "a", &[]).unwrap();
        let e = n.grant(&cfg.node_subnet, &SandboxId::generate(), "b", &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("10.244.0.0/30"), "{e}");
    }
}
