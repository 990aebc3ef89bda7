//! The node network's settings, checked once: a bad combination is reported naming the
//! config key, before anything touches the kernel.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::etcd::EtcdConfig;
use crate::ipam::NodeSubnet;
use crate::lease::{DEFAULT_VNI, DEFAULT_VXLAN_PORT};
use crate::vxlan::DEFAULT_DEVICE;

/// Embedded defaults: flannel's cluster CIDR and the CNI bridge name.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const DEFAULT_BRIDGE: &str = "cni0";
/// A node subnet's default size (flannel's SubnetLen).
pub const DEFAULT_SUBNET_LEN: u8 = 24;
/// Used when no interface holds a default route (an isolated node).
pub const FALLBACK_MTU: u32 = 1500;

/// The node's network, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub cluster_cidr: Ipv4Net,
    pub node_subnet: NodeSubnet,
    pub bridge: String,
    /// None: the MTU of the interface that holds the default route.
    pub mtu: Option<u32>,
    pub masquerade: bool,
    pub hairpin: bool,
    /// Where the node subnet comes from.
    pub store: StoreConfig,
    /// Size of each node's subnet in the cluster CIDR (flannel's SubnetLen).
    pub subnet_len: u8,
    pub vxlan: VxlanConfig,
    /// The node's address other nodes send VXLAN to; None: the underlay interface's first.
    pub public_ip: Option<Ipv4Addr>,
    /// The underlay interface; None: the one holding the default route.
    pub iface: Option<String>,
}

/// Where the node's subnet lease is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One node: `node_subnet` as configured, no overlay.
    Local,
    /// Many nodes: leases in etcd, VXLAN to every peer.
    Etcd(EtcdConfig),
    /// The node's subnet is the pod CIDR kubelet gives (UpdateRuntimeConfig, from the
    /// Kubernetes node object), as containerd's CNI config template and flannel's
    /// Kubernetes subnet manager take it; no overlay.
    Kubelet,
}

/// The VXLAN device (flannel's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    /// Tx checksum offload (and with it TSO) on the device.
    pub tx_checksum_offload: TxChecksum,
}

/// Whether flannel.1 keeps tx checksum offload (see `vxlan::set_tx_checksum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TxChecksum {
    /// On where the kernel computes VXLAN's outer UDP checksum right through NAT (Linux
    /// 5.7 and later), off before.
    #[default]
    Auto,
    On,
    Off,
}

/// The first kernel whose NAT no longer corrupts VXLAN's outer UDP checksum with offload
/// on (commit ea64d8d6c675).
pub const OFFLOAD_SAFE_KERNEL: (u32, u32) = (5, 7);

impl TxChecksum {
    /// Whether offload is on, for a kernel `release` (`uname -r`).
    pub fn enabled_for(self, release: &str) -> bool {
        match self {
            TxChecksum::On => true,
            TxChecksum::Off => false,
            TxChecksum::Auto => kernel_version(release).is_some_and(|v| v >= OFFLOAD_SAFE_KERNEL),
        }
    }

    /// Whether offload is on, on this kernel.
    pub fn enabled(self) -> bool {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        self.enabled_for(&release)
    }
}

/// `6.18.44-fc-v1045` → (6, 18).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl Default for VxlanConfig {
    fn default() -> Self {
        Self {
            device: DEFAULT_DEVICE.into(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            tx_checksum_offload: TxChecksum::Auto,
        }
    }
}

/// The settings as written in config.toml (text, optional fields).
#[derive(Debug, Clone, Default)]
pub struct NetworkSettings<'a> {
    pub cluster_cidr: &'a str,
    /// Empty: the cluster CIDR's first /24.
    pub node_subnet: &'a str,
    pub bridge: &'a str,
    /// 0: from the default route's interface.
    pub mtu: u32,
    pub masquerade: bool,
    pub hairpin: bool,
    /// `local` or `etcd`.
    pub subnet_store: &'a str,
    /// 0: 24 (or the cluster CIDR's own length if it is longer).
    pub subnet_len: u8,
    /// With `subnet_store = "etcd"`.
    pub etcd: Option<EtcdConfig>,
    pub vxlan: VxlanConfig,
    /// Empty: the underlay interface's first IPv4 address.
    pub public_ip: &'a str,
    /// Empty: the interface holding the default route.
    pub iface: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("network.{key}: {reason}")]
pub struct ConfigError {
    /// The key under `[network]` that is wrong.
    pub key: &'static str,
    pub reason: String,
}

impl NetworkConfig {
    pub fn from_settings(s: &NetworkSettings<'_>) -> Result<Self, ConfigError> {
        let cluster_cidr = parse_cluster_cidr(s.cluster_cidr)?;
        let subnet_len = subnet_len(s.subnet_len, cluster_cidr)?;
        let store = subnet_store(s)?;
        check_vxlan(&s.vxlan)?;
        let public_ip = match s.public_ip {
            "" => None,
            text => Some(text.parse::<Ipv4Addr>().map_err(|e| {
                ConfigError::new("public_ip", format!("{text:?} is not an IPv4 address ({e})"))
            })?),
        };
        let iface = match s.iface {
            "" => None,
            name => {
                validate_ifname(name).map_err(|reason| ConfigError::new("iface", reason))?;
                Some(name.to_owned())
            }
        };
        let node_subnet = node_subnet(s.node_subnet, cluster_cidr, subnet_len)?;
        validate_ifname(s.bridge).map_err(|reason| ConfigError::new("bridge", reason))?;
        let mtu = match s.mtu {
            0 => None,
            m if (576..=65535).contains(&m) => Some(m),
            m => {
                let reason = format!("{m} is outside 576..=65535 (0: automatic)");
                return Err(ConfigError::new("mtu", reason));
            }
        };
        Ok(Self {
            cluster_cidr,
            node_subnet,
            bridge: s.bridge.to_owned(),
            mtu,
            masquerade: s.masquerade,
            hairpin: s.hairpin,
            store,
            subnet_len,
            vxlan: s.vxlan.clone(),
            public_ip,
            iface,
        })
    }

    /// The node's subnet once leased (the overlay's lease replaces the configured one).
    pub fn with_subnet(&self, subnet: NodeSubnet) -> Self {
        Self { node_subnet: subnet, ..self.clone() }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.node_subnet.gateway()
    }
}

impl ConfigError {
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        ConfigError { key, reason: reason.into() }
    }
}

fn parse_cluster_cidr(text: &str) -> Result<Ipv4Net, ConfigError> {
    let cidr: Ipv4Net = text.parse().map_err(|e| {
        ConfigError::new("cluster_cidr", format!("{text:?} is not an IPv4 CIDR ({e})"))
    })?;
    if cidr.trunc() != cidr {
        let reason = format!("{cidr} has host bits set; did you mean {}?", cidr.trunc());
        return Err(ConfigError::new("cluster_cidr", reason));
    }
    Ok(cidr)
}

/// The length of each node's subnet: /24 by default, never shorter than the cluster's.
fn subnet_len(len: u8, cluster_cidr: Ipv4Net) -> Result<u8, ConfigError> {
    match len {
        0 => Ok(DEFAULT_SUBNET_LEN.max(cluster_cidr.prefix_len())),
        l if l < cluster_cidr.prefix_len() || l > crate::ipam::MAX_PREFIX => {
            let reason = format!(
                "{l} must be between the cluster CIDR's /{} and /{}",
                cluster_cidr.prefix_len(),
                crate::ipam::MAX_PREFIX
            );
            Err(ConfigError::new("subnet_len", reason))
        }
        l => Ok(l),
    }
}

/// Where the node's subnet comes from, with `[network.etcd]` checked.
fn subnet_store(s: &NetworkSettings<'_>) -> Result<StoreConfig, ConfigError> {
    fn err(key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(key, reason)
    }
    match (s.subnet_store, &s.etcd) {
        ("" | "local", _) => Ok(StoreConfig::Local),
        ("kubelet", _) => {
            if !s.node_subnet.is_empty() {
                let reason =
                    "is kubelet's pod CIDR with subnet_store = \"kubelet\"; leave it empty";
                return Err(err("node_subnet", reason));
            }
            Ok(StoreConfig::Kubelet)
        }
        ("etcd", Some(etcd)) => {
            if etcd.endpoints.is_empty() {
                return Err(err("etcd.endpoints", "at least one endpoint is needed"));
            }
            if let Some(bad) = etcd
                .endpoints
                .iter()
                .find(|e| !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 9)
            {
                return Err(err(
                    "etcd.endpoints",
                    format!("{bad:?} is not an http:// or https:// URL"),
                ));
            }
            if !etcd.prefix.starts_with('/') || etcd.prefix.ends_with('/') {
                let reason = format!("{:?} must start with '/' and not end with one", etcd.prefix);
                return Err(err("etcd.prefix", reason));
            }
            if etcd.cert_file.is_some() != etcd.key_file.is_some() {
                return Err(err("etcd.cert_file", "cert_file and key_file go together"));
            }
            if etcd.lease_ttl.as_secs() < 10 {
                return Err(err("etcd.lease_ttl_seconds", "must be at least 10"));
            }
            if !s.node_subnet.is_empty() {
                let reason = "is leased from etcd with subnet_store = \"etcd\"; leave it empty";
                return Err(err("node_subnet", reason));
            }
            Ok(StoreConfig::Etcd(etcd.clone()))
        }
        ("etcd", None) => Err(err("etcd", "subnet_store = \"etcd\" needs [network.etcd]")),
        (other, _) => {
            Err(err("subnet_store", format!("{other:?} is not \"local\", \"etcd\" or \"kubelet\"")))
        }
    }
}

fn check_vxlan(v: &VxlanConfig) -> Result<(), ConfigError> {
    validate_ifname(&v.device).map_err(|reason| ConfigError::new("vxlan.device", reason))?;
    if v.vni == 0 || v.vni >= 1 << 24 {
        return Err(ConfigError::new("vxlan.vni", format!("{} is outside 1..=16777215", v.vni)));
    }
    if v.port == 0 {
        return Err(ConfigError::new("vxlan.port", "0 is not a UDP port"));
    }
    Ok(())
}

/// The configured node subnet, or the cluster CIDR's first one; inside the cluster CIDR.
impl NetworkConfig {
    /// kubelet's pod CIDR as this node's subnet: the IPv4 one of a (dual-stack,
    /// comma-separated) list, inside the cluster CIDR, with room for pods.
    pub fn pod_cidr_subnet(&self, pod_cidr: &str) -> Result<NodeSubnet, ConfigError> {
        let v4 =
            pod_cidr.split(',').map(str::trim).find(|c| c.parse::<Ipv4Net>().is_ok()).ok_or_else(
                || ConfigError::new("pod_cidr", format!("{pod_cidr:?} holds no IPv4 CIDR")),
            )?;
        node_subnet(v4, self.cluster_cidr, self.subnet_len)
            .map_err(|e| ConfigError::new("pod_cidr", e.reason))
    }
}

fn node_subnet(text: &str, cluster_cidr: Ipv4Net, len: u8) -> Result<NodeSubnet, ConfigError> {
    let subnet = if text.is_empty() {
        let first = Ipv4Net::new(cluster_cidr.network(), len).expect("prefix ≤ 32");
        NodeSubnet::new(first).map_err(|e| ConfigError::new("cluster_cidr", e.to_string()))?
    } else {
        NodeSubnet::parse(text).map_err(|e| ConfigError::new("node_subnet", e.to_string()))?
    };
    if !cluster_cidr.contains(&subnet.net()) {
        let reason = format!("{} is not inside cluster_cidr {cluster_cidr}", subnet.net());
        return Err(ConfigError::new("node_subnet", reason));
    }
    Ok(subnet)
}

/// An interface name the kernel accepts: 1 to 15 bytes, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 bytes long"));
    }
    if name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NetworkSettings<'static> {
        NetworkSettings {
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            node_subnet: "",
            bridge: DEFAULT_BRIDGE,
            mtu: 0,
            masquerade: true,
            hairpin: true,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_take_the_first_slash_24() {
        let c = NetworkConfig::from_settings(&settings()).unwrap();
        assert_eq!(c.node_subnet.net().to_string(), "10.244.0.0/24");
        assert_eq!(c.gateway().to_string(), "10.244.0.1");
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn bad_combinations_name_the_key() {
        let cases: [(NetworkSettings<'static>, &str, &str); 7] = [
            (
                NetworkSettings { cluster_cidr: "10.244.0.0", ..settings() },
                "cluster_cidr",
                "not an IPv4 CIDR",
            ),
            (
                NetworkSettings { cluster_cidr: "10.244.1.0/16", ..settings() },
                "cluster_cidr",
                "host bits",
            ),
            (
                NetworkSettings { node_subnet: "10.245.0.0/24", ..settings() },
                "node_subnet",
                "not inside",
            ),
            (NetworkSettings { node_subnet: "10.244.0.0/31", ..settings() }, "node_subnet", "/30"),
            (
                NetworkSettings { node_subnet: "bogus", ..settings() },
                "node_subnet",
                "not an IPv4 CIDR",
            ),
            (NetworkSettings { bridge: "a-very-long-bridge", ..settings() }, "bridge", "15 bytes"),
            (NetworkSettings { mtu: 100, ..settings() }, "mtu", "576"),
        ];
        for (s, key, why) in cases {
            let e = NetworkConfig::from_settings(&s).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(
                e.to_string().contains(why) && e.to_string().starts_with(&format!("network.{key}")),
                "{e}"
            );
        }
    }

    fn etcd() -> EtcdConfig {
        EtcdConfig {
            endpoints: vec!["http://10.99.0.1:2379".into()],
            prefix: crate::etcd::DEFAULT_PREFIX.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            lease_ttl: crate::etcd::DEFAULT_LEASE_TTL,
        }
    }

    #[test]
    fn the_etcd_store_and_vxlan_settings_are_checked() {
        let ok = NetworkSettings { subnet_store: "etcd", etcd: Some(etcd()), ..settings() };
        let c = NetworkConfig::from_settings(&ok).unwrap();
        assert_eq!(c.store, StoreConfig::Etcd(etcd()));
        assert_eq!((c.vxlan.device.as_str(), c.vxlan.vni, c.vxlan.port), ("flannel.1", 1, 8472));
        assert_eq!(c.subnet_len, 24);
        let cases: Vec<(NetworkSettings<'static>, &str, &str)> = vec![
            (NetworkSettings { subnet_store: "consul", ..settings() }, "subnet_store", "consul"),
            (NetworkSettings { subnet_store: "etcd", ..settings() }, "etcd", "[network.etcd]"),
            (
                NetworkSettings {
                    etcd: Some(EtcdConfig { endpoints: vec![], ..etcd() }),
                    ..ok.clone()
                },
                "etcd.endpoints",
                "at least one",
            ),
            (
                NetworkSettings {
                    etcd: Some(EtcdConfig { endpoints: vec!["10.0.0.1:2379".into()], ..etcd() }),
                    ..ok.clone()
                },
                "etcd.endpoints",
                "http://",
            ),
            (
                NetworkSettings {
                    etcd: Some(EtcdConfig { prefix: "coreos.com/".into(), ..etcd() }),
                    ..ok.clone()
                },
                "etcd.prefix",
                "start with '/'",
            ),
            (
                NetworkSettings { node_subnet: "10.244.5.0/24", ..ok.clone() },
                "node_subnet",
                "leased",
            ),
            (NetworkSettings { subnet_len: 8, ..ok.clone() }, "subnet_len", "between"),
            (
                NetworkSettings {
                    vxlan: VxlanConfig { vni: 1 << 24, ..Default::default() },
                    ..ok.clone()
                },
                "vxlan.vni",
                "16777215",
            ),
            (NetworkSettings { public_ip: "10.0.0", ..ok.clone() }, "public_ip", "IPv4"),
            (NetworkSettings { iface: "eth0/1", ..ok.clone() }, "iface", "not a valid"),
        ];
        for (s, key, why) in cases {
            let e = NetworkConfig::from_settings(&s).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn a_small_cluster_cidr_is_its_own_node_subnet() {
        let s = NetworkSettings { cluster_cidr: "10.9.0.0/28", ..settings() };
        let c = NetworkConfig::from_settings(&s).unwrap();
        assert_eq!(c.node_subnet.net().to_string(), "10.9.0.0/28");
    }

    #[test]
    fn tx_checksum_auto_follows_the_kernel() {
        assert!(TxChecksum::Auto.enabled_for("6.18.44-fc-v1045"));
        assert!(TxChecksum::Auto.enabled_for("5.7.0"));
        assert!(!TxChecksum::Auto.enabled_for("5.6.19-1-amd64"));
        assert!(!TxChecksum::Auto.enabled_for("4.19.0"));
        assert!(!TxChecksum::Auto.enabled_for("garbage"));
        assert!(TxChecksum::On.enabled_for("4.19.0"));
        assert!(!TxChecksum::Off.enabled_for("6.1.0"));
    }
}
