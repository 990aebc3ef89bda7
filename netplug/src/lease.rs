//! Node subnet leases: which pod subnet each node holds, and how a node reaches it.
//!
//! The records are flannel's, so flannel tooling can read them (and podbay nodes can join a
//! cluster whose etcd flannel set up):
//!
//! - `<prefix>/config`: the network, `{"Network":"10.244.0.0/16","SubnetLen":24,
//!   "Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`;
//! - `<prefix>/subnets/10.244.3.0-24`: one node's lease, `{"PublicIP":"192.168.1.11",
//!   "BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:…"}}`.
//!
//! Two stores keep them behind [`SubnetStore`]: [`LocalStore`] (one node, the configured
//! subnet, no peers) and [`crate::etcd::EtcdStore`] (many nodes). This module holds the
//! records and the pure decisions (key names, validation, which subnet is free); the stores
//! do the I/O.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::ErrorKind;

/// flannel's defaults for the VXLAN backend.
pub const DEFAULT_VNI: u32 = 1;
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const BACKEND_VXLAN: &str = "vxlan";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcd {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    #[error("{key}: {reason}")]
    BadRecord { key: String, reason: String },
    #[error("{key}: {field} is {found}, but this node is configured with {expected} ({setting})")]
    ConfigMismatch {
        key: String,
        field: &'static str,
        found: String,
        expected: String,
        setting: &'static str,
    },
    #[error("no free subnet left in {network}: all {count} /{len} subnets are leased")]
    Exhausted { network: Ipv4Net, len: u8, count: u64 },
    #[error("gave up leasing a subnet after {0} conflicting attempts")]
    Contended(u32),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Unreachable { .. } | Error::Contended(_) => ErrorKind::Unavailable,
            Error::BadRecord { .. } | Error::ConfigMismatch { .. } => ErrorKind::InvalidArgument,
            Error::Exhausted { .. } => ErrorKind::ResourceExhausted,
        }
    }
}

/// `<prefix>/config`, as flannel writes it. Unknown fields (SubnetMin, IPv6Network…) are
/// kept out of the way, not refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDoc {
    #[serde(rename = "Network")]
    pub network: Ipv4Net,
    #[serde(rename = "SubnetLen", default, skip_serializing_if = "is_zero")]
    pub subnet_len: u8,
    #[serde(rename = "SubnetMin", default, skip_serializing_if = "Option::is_none")]
    pub subnet_min: Option<Ipv4Addr>,
    #[serde(rename = "SubnetMax", default, skip_serializing_if = "Option::is_none")]
    pub subnet_max: Option<Ipv4Addr>,
    #[serde(rename = "Backend")]
    pub backend: BackendDoc,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendDoc {
    #[serde(rename = "Type")]
    pub kind: String,
    /// 0 (absent): flannel's default, 1.
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    /// 0 (absent): the kernel's default as flannel uses it, 8472.
    #[serde(rename = "Port", default)]
    pub port: u16,
}

/// A lease's value: how other nodes reach this node's subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "BackendType")]
    pub backend_type: String,
    #[serde(rename = "BackendData")]
    pub backend_data: VxlanData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// One node's subnet lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
}

/// What changed among the leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lease appeared or its value changed.
    Put(Lease),
    /// A lease was deleted or expired.
    Removed(Ipv4Net),
}

/// What the network looks like, as this node is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub cluster_cidr: Ipv4Net,
    pub subnet_len: u8,
    pub vni: u32,
    pub port: u16,
}

impl Network {
    /// The `<prefix>/config` record this node writes when there is none.
    pub fn doc(&self) -> NetworkDoc {
        NetworkDoc {
            network: self.cluster_cidr,
            subnet_len: self.subnet_len,
            subnet_min: None,
            subnet_max: None,
            backend: BackendDoc { kind: BACKEND_VXLAN.into(), vni: self.vni, port: self.port },
        }
    }

    /// Checks a stored `<prefix>/config` against this node's settings; a difference is named
    /// by field and by the config.toml key that disagrees.
    pub fn check(&self, key: &str, doc: &NetworkDoc) -> Result<(), Error> {
        let mismatch = |field, found: String, expected: String, setting| Error::ConfigMismatch {
            key: key.to_owned(),
            field,
            found,
            expected,
            setting,
        };
        if doc.network != self.cluster_cidr {
            return Err(mismatch(
                "Network",
                doc.network.to_string(),
                self.cluster_cidr.to_string(),
                "network.cluster_cidr",
            ));
        }
        let len = if doc.subnet_len == 0 { 24 } else { doc.subnet_len };
        if len != self.subnet_len {
            return Err(mismatch(
                "SubnetLen",
                len.to_string(),
                self.subnet_len.to_string(),
                "network.subnet_len",
            ));
        }
        if !doc.backend.kind.eq_ignore_ascii_case(BACKEND_VXLAN) {
            return Err(mismatch(
                "Backend.Type",
                format!("{:?}", doc.backend.kind),
                format!("{BACKEND_VXLAN:?}"),
                "podbay speaks vxlan only",
            ));
        }
        let vni = if doc.backend.vni == 0 { DEFAULT_VNI } else { doc.backend.vni };
        if vni != self.vni {
            return Err(mismatch(
                "Backend.VNI",
                vni.to_string(),
                self.vni.to_string(),
                "network.vxlan.vni",
            ));
        }
        let port = if doc.backend.port == 0 { DEFAULT_VXLAN_PORT } else { doc.backend.port };
        if port != self.port {
            return Err(mismatch(
                "Backend.Port",
                port.to_string(),
                self.port.to_string(),
                "network.vxlan.port",
            ));
        }
        Ok(())
    }
}

/// The key name of a subnet under `<prefix>/subnets/`: `10.244.3.0-24`.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// Parses a subnet key name back (`10.244.3.0-24`).
pub fn parse_subnet_key(name: &str) -> Option<Ipv4Net> {
    let (ip, len) = name.split_once('-')?;
    let net = Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.trunc() == net).then_some(net)
}

/// Parses a lease value; the error names the key.
pub fn parse_attrs(key: &str, value: &[u8]) -> Result<LeaseAttrs, Error> {
    serde_json::from_slice(value)
        .map_err(|e| Error::BadRecord { key: key.to_owned(), reason: e.to_string() })
}

/// The subnets a node may lease, in order: like flannel, the network's first subnet is
/// left out (SubnetMin defaults to the second one), and SubnetMin/SubnetMax narrow it.
pub fn candidates(doc: &NetworkDoc, len: u8) -> impl Iterator<Item = Ipv4Net> {
    let network = doc.network;
    let step = 1u64 << (32 - u32::from(len));
    let base = u64::from(u32::from(network.network()));
    let count = 1u64 << (u32::from(len) - u32::from(network.prefix_len()));
    let min = doc.subnet_min.map(|ip| u64::from(u32::from(ip))).unwrap_or(base + step);
    let max = doc.subnet_max.map(|ip| u64::from(u32::from(ip))).unwrap_or(u64::MAX);
    (0..count)
        .map(move |i| base + i * step)
        .filter(move |start| *start >= min && *start <= max)
        .map(move |start| Ipv4Net::new(Ipv4Addr::from(start as u32), len).expect("len ≤ 32"))
}

/// The first subnet no lease holds.
pub fn first_free(doc: &NetworkDoc, len: u8, taken: &BTreeSet<Ipv4Net>) -> Result<Ipv4Net, Error> {
    candidates(doc, len).find(|s| !taken.contains(s)).ok_or_else(|| Error::Exhausted {
        network: doc.network,
        len,
        count: candidates(doc, len).count() as u64,
    })
}

/// Where leases are kept. Each node holds one lease and watches everybody's.
pub trait SubnetStore: Send + Sync + 'static {
    /// Leases a subnet for a node reached at `attrs.public_ip`: the one already held by that
    /// address if there is one (its value updated to `attrs`), otherwise `prefer` if it is
    /// free, otherwise a free one.
    fn acquire(
        &self,
        attrs: &LeaseAttrs,
        prefer: Option<Ipv4Net>,
    ) -> impl Future<Output = Result<Lease, Error>> + Send;

    /// The lease a node reached at `public_ip` holds now, if any (read only).
    fn find(
        &self,
        public_ip: Ipv4Addr,
    ) -> impl Future<Output = Result<Option<Lease>, Error>> + Send;

    /// Keeps `lease` alive; returns when it must be renewed again. An `Ok(false)` means the
    /// lease is gone and must be acquired again.
    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Every lease and the revision the list was taken at.
    fn list(&self) -> impl Future<Output = Result<(Vec<Lease>, i64), Error>> + Send;

    /// Events after `revision`, until the watch breaks (an error: relist, then watch again).
    fn watch(
        &self,
        revision: i64,
        events: tokio::sync::mpsc::Sender<Event>,
    ) -> impl Future<Output = Error> + Send;

    /// How the store is reached, for messages (`etcd http://10.99.0.1:2379`).
    fn describe(&self) -> String;
}

/// The single-node store: the configured subnet, and nobody else.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pub subnet: Ipv4Net,
}

impl SubnetStore for LocalStore {
    async fn acquire(&self, attrs: &LeaseAttrs, _prefer: Option<Ipv4Net>) -> Result<Lease, Error> {
        Ok(Lease { subnet: self.subnet, attrs: attrs.clone() })
    }

    async fn find(&self, _public_ip: Ipv4Addr) -> Result<Option<Lease>, Error> {
        Ok(None)
    }

    async fn renew(&self, _lease: &Lease) -> Result<bool, Error> {
        Ok(true)
    }

    async fn list(&self) -> Result<(Vec<Lease>, i64), Error> {
        Ok((Vec::new(), 0))
    }

    async fn watch(&self, _revision: i64, events: tokio::sync::mpsc::Sender<Event>) -> Error {
        events.closed().await;
        Error::Unreachable { endpoints: "local".into(), reason: "stopped".into() }
    }

    fn describe(&self) -> String {
        "local".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Network {
        Network {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            subnet_len: 24,
            vni: 1,
            port: 8472,
        }
    }

    #[test]
    fn records_are_flannels_json() {
        let doc = network().doc();
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#
        );
        let attrs = LeaseAttrs {
            public_ip: "10.99.0.11".parse().unwrap(),
            backend_type: "vxlan".into(),
            backend_data: VxlanData { vni: 1, vtep_mac: "0e:00:00:00:00:01".into() },
        };
        let text = serde_json::to_string(&attrs).unwrap();
        assert_eq!(
            text,
            r#"{"PublicIP":"10.99.0.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}}"#
        );
        // flannel adds fields (PublicIPv6, BackendV6Data) podbay does not use.
        let flannel = r#"{"PublicIP":"10.99.0.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}}"#;
        assert_eq!(parse_attrs("k", flannel.as_bytes()).unwrap(), attrs);
        let e = parse_attrs("/coreos.com/network/subnets/10.244.1.0-24", b"{").unwrap_err();
        assert!(e.to_string().starts_with("/coreos.com/network/subnets/10.244.1.0-24: "), "{e}");
    }

    #[test]
    fn subnet_keys_round_trip() {
        let s: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        assert_eq!(subnet_key(s), "10.244.3.0-24");
        assert_eq!(parse_subnet_key("10.244.3.0-24"), Some(s));
        for bad in ["10.244.3.1-24", "10.244.3.0", "x-24", "10.244.3.0-33"] {
            assert_eq!(parse_subnet_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stored_config_that_disagrees_names_the_field() {
        let n = network();
        n.check("/k/config", &n.doc()).unwrap();
        // flannel's own minimal config (defaults left out) is fine.
        let minimal: NetworkDoc =
            serde_json::from_str(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#)
                .unwrap();
        n.check("/k/config", &minimal).unwrap();
        let other = NetworkDoc { network: "10.245.0.0/16".parse().unwrap(), ..n.doc() };
        let e = n.check("/k/config", &other).unwrap_err();
        assert!(e.to_string().contains("Network is 10.245.0.0/16"), "{e}");
        assert!(e.to_string().contains("network.cluster_cidr"), "{e}");
        let mut vni = n.doc();
        vni.backend.vni = 4096;
        assert!(n.check("/k/config", &vni).unwrap_err().to_string().contains("Backend.VNI"));
        let mut host_gw = n.doc();
        host_gw.backend.kind = "host-gw".into();
        assert!(n.check("/k/config", &host_gw).unwrap_err().to_string().contains("Backend.Type"));
    }

    #[test]
    fn the_first_subnet_is_left_out_and_taken_ones_skipped() {
        let doc = network().doc();
        let taken: BTreeSet<Ipv4Net> =
            ["10.244.1.0/24", "10.244.2.0/24"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(first_free(&doc, 24, &taken).unwrap().to_string(), "10.244.3.0/24");
        assert_eq!(candidates(&doc, 24).count(), 255);
        let small = NetworkDoc { network: "10.9.0.0/23".parse().unwrap(), ..doc };
        let all: BTreeSet<Ipv4Net> = candidates(&small, 24).collect();
        let e = first_free(&small, 24, &all).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("10.9.0.0/23"), "{e}");
    }
}
