//! Text the node reads: its config file, and the flannel records in etcd that any node of
//! the cluster (or anyone with etcd access) writes.

use std::collections::BTreeSet;
use std::path::Path;

use podbay::config::Config;
use podbay_netplug::lease::{self, LeaseAttrs, Network, NetworkDoc};

pub fn config(_scratch: &Path, data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text) else { return };
    let _ = config.registry_config();
    let _ = config.image.limits();
    let Ok(net) = config.network.to_config() else { return };
    // A node config that validates must give a network whose subnets can be counted and
    // leased (flannel's arithmetic over cluster_cidr and subnet_len).
    let network = Network {
        cluster_cidr: net.cluster_cidr,
        subnet_len: net.subnet_len,
        vni: net.vxlan.vni,
        port: net.vxlan.port,
    };
    let doc = network.doc();
    network.check("config", &doc).expect("a node's own network doc matches it");
    let _ = lease::first_free(&doc, network.subnet_len, &BTreeSet::new());
}

/// The first byte picks the record: a lease (key line, then JSON), or the network config
/// JSON checked against a node's settings and then used to pick a subnet.
pub fn lease(_scratch: &Path, data: &[u8]) {
    let Some((which, rest)) = data.split_first() else { return };
    if which % 2 == 0 {
        let (key, value) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let key = String::from_utf8_lossy(key);
        if let Some(subnet) = lease::parse_subnet_key(&key) {
            assert_eq!(lease::parse_subnet_key(&lease::subnet_key(subnet)), Some(subnet));
        }
        if let Ok(attrs) = lease::parse_attrs(&key, value) {
            let json = serde_json::to_vec(&attrs).expect("lease attrs serialize");
            let back: LeaseAttrs = serde_json::from_slice(&json).expect("lease attrs read back");
            assert_eq!(back, attrs);
        }
    } else {
        let Ok(doc) = serde_json::from_slice::<NetworkDoc>(rest) else { return };
        // The settings of a node that accepts this doc: its own network and length.
        let len = if doc.subnet_len == 0 { 24 } else { doc.subnet_len };
        let node = Network {
            cluster_cidr: doc.network,
            subnet_len: len,
            vni: doc.backend.vni.max(1),
            port: if doc.backend.port == 0 { 8472 } else { doc.backend.port },
        };
        if node.check("config", &doc).is_ok() && len >= doc.network.prefix_len() && len <= 30 {
            let taken = BTreeSet::new();
            let _ = lease::first_free(&doc, len, &taken);
        }
    }
}
