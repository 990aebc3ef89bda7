//! The node's side of the pod network, programmed by the daemon from the node's network
//! namespace with rtnetlink: the bridge and its gateway address, forwarding sysctls, the
//! firewall table, and attaching each pod's veth to the bridge.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use rtnetlink::packet_route::link::{InfoKind, LinkMessage};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkUnspec};

use crate::ErrorKind;
use crate::config::{FALLBACK_MTU, NetworkConfig, StoreConfig};
use crate::etcd::EtcdStore;
use crate::firewall::{self, Firewall, PortMap};
use crate::ipam::NodeSubnet;
use crate::lease::{self, LeaseAttrs, SubnetStore, VxlanData};
use crate::netlink::{self, Netlink, link_controller, link_kind, link_mac, link_mtu, link_name};
use crate::overlay::Overlay;
use crate::pod::{format_mac, pod_mac};
use crate::vxlan::{self, Device, DeviceSpec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open rtnetlink: {0}")]
    Connect(io::Error),
    #[error(transparent)]
    Netlink(#[from] netlink::Error),
    #[error("{name} exists but is a {kind} device, not a bridge")]
    NotABridge { name: String, kind: String },
    #[error(
        "bridge {bridge} has address {found}, expected {expected}; podbay does not change it (remove the address or fix network.node_subnet)"
    )]
    BridgeAddress { bridge: String, found: String, expected: String },
    #[error("set {path}: {source}")]
    Sysctl { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Firewall(#[from] firewall::Error),
    #[error("subnet lease: {0}")]
    Lease(#[from] lease::Error),
    #[error("vxlan: {0}")]
    Vxlan(#[from] vxlan::Error),
    #[error("no underlay for the overlay: {0}")]
    Underlay(String),
    #[error("overlay: {0}")]
    Overlay(#[from] crate::overlay::Error),
    #[error("leased subnet {subnet}: {reason}")]
    LeasedSubnet { subnet: String, reason: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotABridge { .. } | Error::BridgeAddress { .. } => ErrorKind::Unavailable,
            Error::Lease(e) | Error::Overlay(crate::overlay::Error::Store(e)) => e.kind(),
            Error::Underlay(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// A port of the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePort {
    pub name: String,
    pub index: u32,
    pub mac: String,
}

/// The node network, once ensured.
pub struct Node {
    nl: Netlink,
    cfg: NetworkConfig,
    bridge_index: u32,
    mtu: u32,
    node_ip: Option<Ipv4Addr>,
    firewall: Firewall,
    overlay: Option<Arc<Overlay<EtcdStore>>>,
}

/// What joining the overlay gave: the leased subnet, the device's MTU and this node's
/// underlay address, and the loop to start once the node is up.
struct Joined {
    subnet: NodeSubnet,
    mtu: u32,
    public_ip: Ipv4Addr,
    overlay: Arc<Overlay<EtcdStore>>,
    /// The revision of the first sync, which the watch starts from.
    revision: i64,
}

impl Node {
    /// Gets or creates everything the pod network needs on the node, then installs the
    /// firewall table holding `ports`. Safe to run again (on every daemon start).
    pub async fn ensure(cfg: &NetworkConfig, ports: &[PortMap]) -> Result<Node, Error> {
        let nl = Netlink::connect().map_err(Error::Connect)?;
        let uplink =
            match &cfg.iface {
                Some(name) => Some(nl.link_by_name(name).await?.ok_or_else(|| {
                    Error::Underlay(format!("network.iface {name} does not exist"))
                })?),
                None => nl.default_route_link().await?,
            };
        let mut mtu = match (cfg.mtu, &uplink) {
            (Some(m), _) => m,
            (None, Some(link)) => link_mtu(link).unwrap_or(FALLBACK_MTU),
            (None, None) => FALLBACK_MTU,
        };
        let mut node_ip = match &uplink {
            Some(link) => nl.ipv4_addresses(link.header.index).await?.first().map(|a| a.0),
            None => None,
        };
        let mut cfg = cfg.clone();
        let mut overlay = None;
        if let StoreConfig::Etcd(etcd) = &cfg.store {
            let uplink = uplink.as_ref().ok_or_else(|| {
                Error::Underlay("no interface holds a default route; set network.iface".into())
            })?;
            let joined = join_overlay(&nl, &cfg, etcd, uplink, node_ip).await?;
            cfg = cfg.with_subnet(joined.subnet);
            if cfg.mtu.is_none() {
                mtu = joined.mtu;
            }
            node_ip = Some(joined.public_ip);
            overlay = Some((joined.overlay, joined.revision));
        }
        let cfg = &cfg;
        let bridge_index = ensure_bridge(&nl, cfg, mtu).await?;
        sysctl("net/ipv4/ip_forward", "1")?;
        // kube-proxy needs bridged traffic to pass iptables/nftables; only if loaded.
        let nf_call = PathBuf::from("/proc/sys/net/bridge/bridge-nf-call-iptables");
        if nf_call.exists() {
            sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        }
        // hostPorts reached via 127.0.0.1 are routed out of the bridge (as portmap does).
        sysctl(&format!("net/ipv4/conf/{}/route_localnet", cfg.bridge), "1")?;
        let firewall = Firewall::new(cfg);
        let fw = firewall.clone();
        let ports = ports.to_vec();
        tokio::task::spawn_blocking(move || fw.ensure(&ports))
            .await
            .expect("firewall task panicked")?;
        let overlay = overlay.map(|(o, revision)| {
            tokio::spawn(o.clone().run(revision));
            o
        });
        Ok(Node { nl, cfg: cfg.clone(), bridge_index, mtu, node_ip, firewall, overlay })
    }

    /// The overlay, with `subnet_store = "etcd"`.
    pub fn overlay(&self) -> Option<&Arc<Overlay<EtcdStore>>> {
        self.overlay.as_ref()
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The MTU of the bridge and of every pod's eth0.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The node's address (on the default route's interface), which hostNetwork pods
    /// report as theirs.
    pub fn node_ip(&self) -> Option<Ipv4Addr> {
        self.node_ip
    }

    pub fn firewall(&self) -> &Firewall {
        &self.firewall
    }

    pub fn bridge_index(&self) -> u32 {
        self.bridge_index
    }

    /// Enslaves a pod's node-side veth to the bridge and sets it up, with hairpin mode if
    /// configured. IPv6 is turned off on it first: a bridge port needs no address of its
    /// own, and each one would otherwise add its link-local address and routes to the
    /// node's IPv6 tables and send its own DAD, MLD and router solicitations to the pod.
    /// A kernel without IPv6 has no such sysctl.
    pub async fn attach(&self, host_veth: &str) -> Result<(), Error> {
        match sysctl(&format!("net/ipv6/conf/{host_veth}/disable_ipv6"), "1") {
            Err(Error::Sysctl { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
        let master =
            LinkUnspec::new_with_name(host_veth).controller(self.bridge_index).up().build();
        let what = format!("attach {host_veth} to {}", self.cfg.bridge);
        self.nl.set_link(master, &what).await?;
        self.hairpin(host_veth).await
    }

    /// Turns on hairpin mode on a bridge port if configured (a pod then reaches itself
    /// through its Service IP). Idempotent: a restarted daemon applies it again to ports
    /// whose attach a crash may have cut short.
    pub async fn hairpin(&self, host_veth: &str) -> Result<(), Error> {
        if self.cfg.hairpin {
            let port = LinkBridgePort::new(0).name(host_veth.to_owned()).hairpin(true).build();
            self.nl.set_port(port, &format!("hairpin on {host_veth}")).await?;
        }
        Ok(())
    }

    /// The bridge's ports (pod veths, and whatever else someone attached).
    pub async fn bridge_ports(&self) -> Result<Vec<BridgePort>, Error> {
        let links = self.nl.links().await?;
        Ok(links
            .into_iter()
            .filter(|l| link_controller(l) == Some(self.bridge_index))
            .map(|l| BridgePort {
                name: link_name(&l).unwrap_or_default(),
                index: l.header.index,
                mac: link_mac(&l).map(|m| format_mac(&m)).unwrap_or_default(),
            })
            .collect())
    }

    /// Deletes a link (a stale veth); one already gone counts as deleted.
    pub async fn delete_link(&self, index: u32) -> Result<(), Error> {
        Ok(self.nl.delete_link(index).await?)
    }
}

/// Connects to etcd, gets the VXLAN device ready with a stable MAC, and leases the subnet.
async fn join_overlay(
    nl: &Netlink,
    cfg: &NetworkConfig,
    etcd: &crate::etcd::EtcdConfig,
    uplink: &LinkMessage,
    uplink_ip: Option<Ipv4Addr>,
) -> Result<Joined, Error> {
    let uplink_name = link_name(uplink).unwrap_or_default();
    let public_ip = cfg.public_ip.or(uplink_ip).ok_or_else(|| {
        Error::Underlay(format!("{uplink_name} has no IPv4 address; set network.public_ip"))
    })?;
    let underlay_mtu = link_mtu(uplink).unwrap_or(FALLBACK_MTU);
    let network = lease::Network {
        cluster_cidr: cfg.cluster_cidr,
        subnet_len: cfg.subnet_len,
        vni: cfg.vxlan.vni,
        port: cfg.vxlan.port,
    };
    let store = EtcdStore::connect(etcd, &network).await?;
    // The VTEP MAC stays what it was: the device's if it survived, else the one in this
    // node's lease (a reboot), else a new one.
    let mac = match Device::existing_mac(nl, &cfg.vxlan.device).await? {
        Some(mac) => mac,
        None => match store.find(public_ip).await? {
            Some(l) => {
                vxlan::parse_mac(&l.attrs.backend_data.vtep_mac).unwrap_or_else(vxlan::random_mac)
            }
            None => vxlan::random_mac(),
        },
    };
    let spec = DeviceSpec {
        name: cfg.vxlan.device.clone(),
        vni: cfg.vxlan.vni,
        port: cfg.vxlan.port,
        local: public_ip,
        underlay_index: uplink.header.index,
        mtu: cfg.mtu.unwrap_or(underlay_mtu.saturating_sub(vxlan::OVERHEAD)),
        mac,
        tx_checksum_offload: cfg.vxlan.tx_checksum_offload.enabled(),
    };
    let device = Device::ensure(nl, &spec).await?;
    let attrs = LeaseAttrs {
        public_ip,
        backend_type: lease::BACKEND_VXLAN.into(),
        backend_data: VxlanData { vni: cfg.vxlan.vni, vtep_mac: format_mac(&mac) },
    };
    let own = store.acquire(&attrs, None).await?;
    let subnet = NodeSubnet::new(own.subnet).map_err(|e| Error::LeasedSubnet {
        subnet: own.subnet.to_string(),
        reason: e.to_string(),
    })?;
    device.set_address(own.subnet.network()).await?;
    tracing::info!(
        subnet = %own.subnet, public_ip = %public_ip, device = %spec.name,
        vtep_mac = %format_mac(&mac), mtu = spec.mtu, "joined the overlay"
    );
    let renew_every = etcd.lease_ttl / 3;
    let mtu = spec.mtu;
    // Ready only with every peer in place and nothing stale left on the device.
    let overlay = Arc::new(Overlay::new(store, device, own, renew_every));
    let revision = overlay.resync().await?;
    Ok(Joined { subnet, mtu, public_ip, overlay, revision })
}

/// Gets or creates the bridge, up, with the gateway address; a bridge holding another
/// IPv4 address is reported, never changed.
async fn ensure_bridge(nl: &Netlink, cfg: &NetworkConfig, mtu: u32) -> Result<u32, Error> {
    let name = &cfg.bridge;
    let gateway = cfg.gateway();
    let prefix = cfg.node_subnet.net().prefix_len();
    let index = match nl.link_by_name(name).await? {
        Some(link) => {
            let kind = link_kind(&link).unwrap_or_else(|| "plain".into());
            if kind != InfoKind::Bridge.to_string() {
                return Err(Error::NotABridge { name: name.clone(), kind });
            }
            let up = LinkUnspec::new_with_index(link.header.index).mtu(mtu).up().build();
            nl.set_link(up, &format!("set {name} up")).await?;
            link.header.index
        }
        None => {
            // A fixed MAC: otherwise the bridge takes its ports' lowest MAC, which changes
            // as pods come and go.
            let bridge =
                LinkBridge::new(name).mtu(mtu).address(pod_mac(gateway).to_vec()).up().build();
            nl.create_link(bridge, &format!("bridge {name}")).await?;
            let link = nl.link_by_name(name).await?.ok_or_else(|| netlink::Error {
                what: format!("look up {name} after creating it"),
                source: rtnetlink::Error::RequestFailed,
            })?;
            link.header.index
        }
    };
    let mut addrs = nl.ipv4_addresses(index).await?;
    if let Some((ip, len, _)) = addrs.iter().find(|(ip, len, _)| (*ip, *len) != (gateway, prefix)) {
        if !matches!(cfg.store, StoreConfig::Kubelet) {
            return Err(Error::BridgeAddress {
                bridge: name.clone(),
                found: format!("{ip}/{len}"),
                expected: format!("{gateway}/{prefix}"),
            });
        }
        // The gateway follows kubelet's pod CIDR, which changes only while no pod holds
        // an address: a bridge left with the old one (podbay stopped between taking the
        // change and making the bridge again) gets the new one.
        for (_, _, stale) in addrs.drain(..).filter(|(ip, len, _)| (*ip, *len) != (gateway, prefix))
        {
            nl.delete_address(stale).await?;
        }
        addrs = nl.ipv4_addresses(index).await?;
    }
    if addrs.is_empty() {
        nl.add_address(index, gateway, prefix).await?;
    }
    Ok(index)
}

fn sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = PathBuf::from("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|source| Error::Sysctl { path, source })
}
