//! The pod network as the runtime uses it: the node network (netplug's [`Node`]), which
//! pod holds which IP lease and which hostPort, and whether the network is ready.
//!
//! Leases and hostPorts are decided here in memory, under one lock, so two concurrent
//! RunPodSandbox never get the same IP or port. They become durable with the sandbox
//! record, in the same database transaction (`leases.rs`).

pub(crate) mod leases;
mod report;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use podbay_netplug::config::StoreConfig;
use podbay_netplug::ipam::NodeSubnet;
use podbay_netplug::{NetworkConfig, Node, PortMap, Protocol};
pub use report::{NetworkReport, PodReport};
use tracing::{debug, error, info, warn};

use crate::ErrorKind;
use crate::ids::SandboxId;
use crate::store::{self, Store};

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

/// A pod's place on the pod network, as its record keeps it: its lease and its node-side
/// veth.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub ip: Ipv4Addr,
    pub host_veth: String,
}

/// A pod that holds a network now.
#[derive(Debug, Clone)]
pub struct LivePod {
    pub id: SandboxId,
    pub namespace: String,
    pub name: String,
    pub attachment: Attachment,
    pub ports: Vec<PortMapping>,
}

impl LivePod {
    fn port_maps(&self) -> Vec<PortMap> {
        self.ports.iter().map(|p| p.to_port_map(self.attachment.ip)).collect()
    }
}

/// Who the pods holding a network are, asked each time the node network (re)starts.
pub type LivePods = Arc<dyn Fn() -> Vec<LivePod> + Send + Sync>;

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
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("pod_cidr: {reason}")]
    PodCidr { reason: String },
    #[error("{0}")]
    PodCidrChange(String),
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
            Error::Store(e) => e.kind(),
            Error::PodCidr { .. } => ErrorKind::InvalidArgument,
            Error::PodCidrChange(_) => ErrorKind::FailedPrecondition,
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

/// The runtime's view of the pod network. Cheap to clone.
#[derive(Clone)]
pub struct PodNetwork {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NetworkConfig,
    node: RwLock<Result<Arc<Node>, String>>,
    leases: Mutex<Leases>,
    store: Arc<Store>,
    /// With `subnet_store = "kubelet"`: the node's subnet, once kubelet sent it.
    pod_cidr: Mutex<Option<NodeSubnet>>,
    /// Something the network's status should say while it works (a refused pod CIDR).
    note: Mutex<Option<String>>,
    /// Who holds a network, for a start that kubelet's pod CIDR triggers.
    live: OnceLock<LivePods>,
    /// One (re)start of the node network at a time.
    starting: tokio::sync::Mutex<()>,
}

/// NetworkReady's reason while kubelet has not sent the pod CIDR.
const WAITING_FOR_POD_CIDR: &str = "waiting for the node's pod CIDR from kubelet \
     (UpdateRuntimeConfig; network.subnet_store = \"kubelet\")";

/// Why a RunPodSandbox that raced a pod CIDR change gets no address (it may try again).
const POD_CIDR_CHANGING: &str = "the node's pod CIDR changed while the pod was set up \
     (UpdateRuntimeConfig); the network is being made again with the new one";

/// What a new pod was given; released on failure.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) ip: Ipv4Addr,
    pub(crate) ports: Vec<PortMapping>,
}

impl Grant {
    /// The hostPort map elements of the grant.
    pub(crate) fn port_maps(&self) -> Vec<PortMap> {
        self.ports.iter().map(|p| p.to_port_map(self.ip)).collect()
    }
}

impl PodNetwork {
    pub(crate) fn new(cfg: NetworkConfig, store: Arc<Store>) -> Self {
        let node = RwLock::new(Err("the node network has not been set up yet".into()));
        // kubelet sends its pod CIDR again only when it changes: the last one is kept.
        let pod_cidr = match cfg.store {
            StoreConfig::Kubelet => leases::pod_cidr(&store)
                .ok()
                .flatten()
                .and_then(|text| cfg.pod_cidr_subnet(&text).ok()),
            _ => None,
        };
        let inner = Inner {
            cfg,
            node,
            leases: Mutex::new(Leases::default()),
            store,
            pod_cidr: Mutex::new(pod_cidr),
            note: Mutex::new(None),
            live: OnceLock::new(),
            starting: tokio::sync::Mutex::new(()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Pod IPs leased now and the addresses the node's subnet can hand out, once the node
    /// network is up.
    pub fn ipam_usage(&self) -> Option<(usize, u32)> {
        let node = self.node().ok()?;
        let used = self.inner.leases.lock().expect("leases lock").ips.len();
        Some((used, node.config().node_subnet.capacity()))
    }

    /// With the VXLAN overlay: its peer count and when it last matched the leases.
    pub fn overlay_sync_state(&self) -> Option<(usize, Option<std::time::SystemTime>)> {
        Some(self.node().ok()?.overlay()?.sync_state())
    }

    /// What NetworkReady should say besides ready (a pod CIDR change refused).
    pub fn note(&self) -> Option<String> {
        self.inner.note.lock().expect("note lock").clone()
    }

    /// kubelet's pod CIDR (UpdateRuntimeConfig). With `subnet_store = "kubelet"` it is the
    /// node's subnet: the first one brings the network up; a change is taken while no pod
    /// holds an address (the bridge is made again with the new one) and refused while some
    /// do. Otherwise it is ignored.
    pub async fn set_pod_cidr(&self, text: &str) -> Result<(), Error> {
        let inner = &self.inner;
        if !matches!(inner.cfg.store, StoreConfig::Kubelet) || text.is_empty() {
            debug!(pod_cidr = text, "kubelet's pod CIDR not used (network.subnet_store)");
            return Ok(());
        }
        let subnet =
            inner.cfg.pod_cidr_subnet(text).map_err(|e| Error::PodCidr { reason: e.reason })?;
        // Checked and taken under the leases lock: a RunPodSandbox that read the old subnet
        // before this either holds its address already (and the change is refused) or is
        // refused by grant (the subnet it read is no longer the pod CIDR).
        let current = {
            let granted = inner.leases.lock().expect("leases lock");
            let current = *inner.pod_cidr.lock().expect("pod cidr lock");
            if current == Some(subnet) {
                return Ok(());
            }
            if let Some(old) = current {
                let held = granted.ips.len();
                if held > 0 {
                    let message = format!(
                        "kubelet's pod CIDR changed from {} to {}, but {held} pods hold addresses \
                         in {}: keeping {}; remove those pods for the change to take effect",
                        old.net(),
                        subnet.net(),
                        old.net(),
                        old.net()
                    );
                    error!("{message}");
                    *inner.note.lock().expect("note lock") = Some(message.clone());
                    return Err(Error::PodCidrChange(message));
                }
            }
            *inner.pod_cidr.lock().expect("pod cidr lock") = Some(subnet);
            current
        };
        let (store, saved) = (inner.store.clone(), subnet.net().to_string());
        let persisted = tokio::task::spawn_blocking(move || leases::set_pod_cidr(&store, &saved))
            .await
            .expect("state store task panicked");
        if let Err(e) = persisted {
            let mut taken = inner.pod_cidr.lock().expect("pod cidr lock");
            if *taken == Some(subnet) {
                *taken = current;
            }
            return Err(e.into());
        }
        *inner.note.lock().expect("note lock") = None;
        info!(pod_cidr = %subnet.net(), "the node's pod CIDR from kubelet");
        match (current, self.node()) {
            // The bridge holds the old gateway: deleting it makes the bridge watch make it
            // again, with the new one.
            (Some(_), Ok(node)) => node.delete_link(node.bridge_index()).await?,
            _ => {
                if let Some(live) = inner.live.get() {
                    self.start(live.clone()).await;
                }
            }
        }
        Ok(())
    }

    /// The node network, or why it is not ready.
    pub fn node(&self) -> Result<Arc<Node>, Error> {
        self.inner
            .node
            .read()
            .expect("network lock")
            .clone()
            .map_err(|reason| Error::NotReady { reason })
    }

    /// Whether pods can get a network, or why not (CRI's NetworkReady condition).
    pub fn ready(&self) -> Result<(), String> {
        self.node().map(drop).map_err(|e| e.to_string())
    }

    /// The node's IP, which hostNetwork pods report.
    pub fn node_ip(&self) -> Option<Ipv4Addr> {
        self.node().ok().and_then(|n| n.node_ip())
    }

    fn set_node(&self, node: Result<Arc<Node>, String>) {
        *self.inner.node.write().expect("network lock") = node;
    }

    /// Frees every lease in the database that no live pod holds, and restores the
    /// allocator's state from the rest.
    pub(crate) fn restore(&self, live: &[LivePod]) -> Result<(), Error> {
        let held: HashSet<_> =
            live.iter().map(|p| (p.attachment.ip, p.id.as_str().to_owned())).collect();
        let (leases, last) = leases::all(&self.inner.store)?;
        let stale: Vec<_> =
            leases.into_iter().filter(|l| !held.contains(l)).map(|(ip, _)| ip).collect();
        if !stale.is_empty() {
            info!(count = stale.len(), "freeing IP leases no running pod holds");
            leases::free_all(&self.inner.store, &stale)?;
        }
        let mut l = self.inner.leases.lock().expect("leases lock");
        l.last = last;
        for p in live {
            l.ips.insert(p.attachment.ip, p.id.clone());
            let name = format!("{}/{}", p.namespace, p.name);
            for m in &p.ports {
                l.ports.insert(m.key(), (p.id.clone(), name.clone()));
            }
        }
        Ok(())
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
        let mut l = self.inner.leases.lock().expect("leases lock");
        if matches!(self.inner.cfg.store, StoreConfig::Kubelet)
            && *self.inner.pod_cidr.lock().expect("pod cidr lock") != Some(*subnet)
        {
            return Err(Error::NotReady { reason: POD_CIDR_CHANGING.into() });
        }
        let mut seen = HashSet::new();
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
        let mut l = self.inner.leases.lock().expect("leases lock");
        if l.ips.get(&ip) == Some(id) {
            l.ips.remove(&ip);
        }
        for p in ports {
            if l.ports.get(&p.key()).is_some_and(|(holder, _)| holder == id) {
                l.ports.remove(&p.key());
            }
        }
    }

    /// Adds hostPort map elements (a blocking netlink batch, off the async threads).
    pub(crate) async fn add_ports(&self, ports: Vec<PortMap>) -> Result<(), Error> {
        let node = self.node()?;
        tokio::task::spawn_blocking(move || node.firewall().add_ports(&ports))
            .await
            .expect("firewall task panicked")?;
        Ok(())
    }

    /// Removes hostPort map elements; ones already gone count as removed. With the network
    /// not ready there is nothing to remove from: the table is rebuilt when it comes up.
    pub(crate) async fn remove_ports(&self, ports: Vec<PortMap>) -> Result<(), Error> {
        let Ok(node) = self.node() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || node.firewall().remove_ports(&ports))
            .await
            .expect("firewall task panicked")?;
        Ok(())
    }

    /// Tears down a stopped pod's network: its hostPorts and its lease. The veth went with
    /// the pod's namespace (the kernel deletes it in the background).
    pub(crate) async fn teardown(
        &self,
        id: &SandboxId,
        net: &Attachment,
        mappings: &[PortMapping],
    ) -> Result<(), Error> {
        if !mappings.is_empty() {
            self.remove_ports(mappings.iter().map(|p| p.to_port_map(net.ip)).collect()).await?;
        }
        self.release(id, net.ip, mappings);
        Ok(())
    }

    /// Brings the node network up (bridge, sysctls, firewall table holding exactly the live
    /// pods' hostPorts) and removes bridge ports no live pod explains. On failure the
    /// network stays not ready and this is retried in the background with backoff.
    pub(crate) async fn start(&self, live: LivePods) {
        let _ = self.inner.live.set(live.clone());
        let Err(reason) = self.try_start(&live).await else { return };
        error!(error = %reason, "pod network not ready; retrying in the background");
        self.set_node(Err(reason));
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else { return };
                let network = PodNetwork { inner };
                // Brought up meanwhile (kubelet's pod CIDR arrived).
                if network.node().is_ok() {
                    return;
                }
                match network.try_start(&live).await {
                    Ok(()) => {
                        info!("pod network ready");
                        return;
                    }
                    Err(reason) => network.set_node(Err(reason)),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        });
    }

    async fn try_start(&self, live: &LivePods) -> Result<(), String> {
        let _one = self.inner.starting.lock().await;
        let cfg = match self.inner.cfg.store {
            StoreConfig::Kubelet => match *self.inner.pod_cidr.lock().expect("pod cidr lock") {
                Some(subnet) => self.inner.cfg.with_subnet(subnet),
                None => return Err(WAITING_FOR_POD_CIDR.into()),
            },
            _ => self.inner.cfg.clone(),
        };
        // Subscribed first, so a deletion right after the bridge is made is not missed.
        let watch = podbay_netplug::netlink::LinkWatch::subscribe()
            .map_err(|e| format!("watch the node's links: {e}"))?;
        let pods = live();
        let ports: Vec<PortMap> = pods.iter().flat_map(LivePod::port_maps).collect();
        let node = Node::ensure(&cfg, &ports).await.map_err(|e| e.to_string())?;
        let explained: HashSet<&str> =
            pods.iter().map(|p| p.attachment.host_veth.as_str()).collect();
        match node.bridge_ports().await {
            Ok(found) => {
                for port in found.iter().filter(|p| !explained.contains(p.name.as_str())) {
                    warn!(link = %port.name, "removing a bridge port no sandbox explains");
                    if let Err(e) = node.delete_link(port.index).await {
                        warn!(link = %port.name, error = %e, "stale bridge port left behind");
                    }
                }
                // A bridge made again (it was deleted) has lost its ports, and a pod's
                // record is committed while its veth is attached (`sandbox/run.rs`), so a
                // crash may have left a veth unattached, or attached without its hairpin
                // mode: the live pods' veths are attached again, or get hairpin again.
                let attached: HashSet<&str> = found.iter().map(|p| p.name.as_str()).collect();
                for p in &pods {
                    let veth = &p.attachment.host_veth;
                    if attached.contains(veth.as_str()) {
                        if let Err(e) = node.hairpin(veth).await {
                            warn!(link = %veth, error = %e, "hairpin on a pod's veth");
                        }
                        continue;
                    }
                    info!(link = %veth, pod = %p.name, "attaching a pod's veth to the bridge again");
                    if let Err(e) = node.attach(veth).await {
                        warn!(link = %veth, error = %e, "re-attach a pod's veth");
                    }
                }
            }
            Err(e) => warn!(error = %e, "list bridge ports"),
        }
        let bridge = (node.bridge_index(), node.config().bridge.clone());
        self.set_node(Ok(Arc::new(node)));
        self.repair_when_deleted(watch, bridge, live.clone());
        Ok(())
    }

    /// When the bridge is deleted (by hand, by another tool), the network is not ready
    /// until it is made again and every live pod is attached to it again.
    fn repair_when_deleted(
        &self,
        watch: podbay_netplug::netlink::LinkWatch,
        (index, name): (u32, String),
        live: LivePods,
    ) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let deleted = watch.deleted(index).await;
            let Some(inner) = weak.upgrade() else { return };
            let network = PodNetwork { inner };
            if deleted {
                error!(bridge = %name, "the pod bridge was deleted; making it again and re-attaching the pods");
                network.set_node(Err(format!("bridge {name} was deleted; making it again")));
            } else {
                // Events may have been lost: check the bridge again (start is idempotent)
                // and watch anew.
                warn!(bridge = %name, "link events lost; checking the pod bridge again");
            }
            Box::pin(network.start(live)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use podbay_netplug::config::{DEFAULT_BRIDGE, DEFAULT_CLUSTER_CIDR, NetworkSettings};

    use super::*;

    /// A network and a node config holding `subnet` (no kernel involved: grants only
    /// read the node's subnet).
    fn network(subnet: &str) -> (PodNetwork, NetworkConfig) {
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
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        (PodNetwork::new(cfg.clone(), store), cfg)
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

    /// kubelet's pod CIDR: a grant from a subnet read before a change is refused, and a
    /// change while a pod holds an address is refused.
    #[tokio::test]
    async fn a_pod_cidr_change_and_a_grant_never_both_win() {
        let cfg = NetworkConfig::from_settings(&NetworkSettings {
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            bridge: DEFAULT_BRIDGE,
            masquerade: true,
            hairpin: true,
            subnet_store: "kubelet",
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let n = PodNetwork::new(cfg.clone(), store);
        n.set_pod_cidr("10.244.1.0/24").await.unwrap();
        let old = cfg.pod_cidr_subnet("10.244.1.0/24").unwrap();
        n.set_pod_cidr("10.244.2.0/24").await.unwrap();
        // A RunPodSandbox that read the node's subnet before the change.
        let e = n.grant(&old, &SandboxId::generate(), "late", &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(n.inner.leases.lock().unwrap().ips.is_empty());
        let new = cfg.pod_cidr_subnet("10.244.2.0/24").unwrap();
        let g = n.grant(&new, &SandboxId::generate(), "a", &[]).unwrap();
        assert!(new.net().contains(&g.ip), "{}", g.ip);
        let e = n.set_pod_cidr("10.244.3.0/24").await.unwrap_err();
        assert!(e.to_string().contains("1 pods hold addresses"), "{e}");
        assert!(n.grant(&new, &SandboxId::generate(), "b", &[]).is_ok());
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
