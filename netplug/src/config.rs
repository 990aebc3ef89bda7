//! The node network's settings, checked once: a bad combination is reported naming the
//! config key, before anything touches the kernel.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ipam::NodeSubnet;

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
        let err = |key, reason: String| ConfigError { key, reason };
        let cluster_cidr: Ipv4Net = s.cluster_cidr.parse().map_err(|e| {
            err("cluster_cidr", format!("{:?} is not an IPv4 CIDR ({e})", s.cluster_cidr))
        })?;
        if cluster_cidr.trunc() != cluster_cidr {
            return Err(err(
                "cluster_cidr",
                format!("{cluster_cidr} has host bits set; did you mean {}?", cluster_cidr.trunc()),
            ));
        }
        let node_subnet = if s.node_subnet.is_empty() {
            let len = DEFAULT_SUBNET_LEN.max(cluster_cidr.prefix_len());
            let first = Ipv4Net::new(cluster_cidr.network(), len).expect("prefix ≤ 32");
            NodeSubnet::new(first).map_err(|e| err("cluster_cidr", e.to_string()))?
        } else {
            NodeSubnet::parse(s.node_subnet).map_err(|e| err("node_subnet", e.to_string()))?
        };
        if !cluster_cidr.contains(&node_subnet.net()) {
            return Err(err(
                "node_subnet",
                format!("{} is not inside cluster_cidr {cluster_cidr}", node_subnet.net()),
            ));
        }
        validate_ifname(s.bridge).map_err(|reason| err("bridge", reason))?;
        let mtu = match s.mtu {
            0 => None,
            m if (576..=65535).contains(&m) => Some(m),
            m => return Err(err("mtu", format!("{m} is outside 576..=65535 (0: automatic)"))),
        };
        Ok(Self {
            cluster_cidr,
            node_subnet,
            bridge: s.bridge.to_owned(),
            mtu,
            masquerade: s.masquerade,
            hairpin: s.hairpin,
        })
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.node_subnet.gateway()
    }
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

    #[test]
    fn a_small_cluster_cidr_is_its_own_node_subnet() {
        let s = NetworkSettings { cluster_cidr: "10.9.0.0/28", ..settings() };
        let c = NetworkConfig::from_settings(&s).unwrap();
        assert_eq!(c.node_subnet.net().to_string(), "10.9.0.0/28");
    }
}
