//! IP leases in the state database.
//!
//! Tables: `ip_leases` (pod IP → sandbox id) and `ipam` (`last` → the IP handed out last,
//! so round-robin survives restarts). A lease is written in the same transaction as its
//! sandbox record (see `sandbox/records.rs`): a crash leaves either a pod with its lease
//! or neither.

use std::net::Ipv4Addr;

use redb::TableDefinition;

use crate::ids::SandboxId;
use crate::store::{self, IndexTable, Store, Tx};

const IP_LEASES: IndexTable = TableDefinition::new("ip_leases");
const IPAM: IndexTable = TableDefinition::new("ipam");
const IPAM_LAST: &str = "last";
/// kubelet's pod CIDR, with `network.subnet_store = "kubelet"`.
const IPAM_POD_CIDR: &str = "pod_cidr";

/// Records that `id` holds `ip`; a new lease also becomes the IP handed out last.
pub(crate) fn hold(tx: &Tx<'_>, ip: Ipv4Addr, id: &SandboxId) -> Result<(), store::Error> {
    let ip = ip.to_string();
    if tx.set(IP_LEASES, &ip, id.as_str())?.is_none() {
        tx.set(IPAM, IPAM_LAST, &ip)?;
    }
    Ok(())
}

/// Frees `ip` if `id` still holds it.
pub(crate) fn free(tx: &Tx<'_>, ip: Ipv4Addr, id: &SandboxId) -> Result<(), store::Error> {
    tx.unset_if(IP_LEASES, &ip.to_string(), id.as_str())
}

/// The IP leases (IP → sandbox id) and the IP handed out last.
pub(crate) type Leases = (Vec<(Ipv4Addr, String)>, Option<Ipv4Addr>);

/// Every lease and the IP handed out last.
pub(crate) fn all(store: &Store) -> Result<Leases, store::Error> {
    store.read(|tx| {
        let leases = tx
            .entries(IP_LEASES)?
            .into_iter()
            .filter_map(|(ip, id)| Some((ip.parse().ok()?, id)))
            .collect();
        let last = tx.lookup(IPAM, IPAM_LAST)?.and_then(|v| v.parse().ok());
        Ok((leases, last))
    })
}

/// The pod CIDR kubelet gave last (it sends it again only when it changes).
pub(crate) fn pod_cidr(store: &Store) -> Result<Option<String>, store::Error> {
    store.read(|tx| tx.lookup(IPAM, IPAM_POD_CIDR))
}

pub(crate) fn set_pod_cidr(store: &Store, cidr: &str) -> Result<(), store::Error> {
    store.write(|tx| tx.set(IPAM, IPAM_POD_CIDR, cidr).map(drop))
}

/// Frees leases whatever holds them, in one transaction.
pub(crate) fn free_all(store: &Store, ips: &[Ipv4Addr]) -> Result<(), store::Error> {
    store.write(|tx| ips.iter().try_for_each(|ip| tx.unset(IP_LEASES, &ip.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_held_freed_and_remember_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        let ip: Ipv4Addr = "10.244.0.2".parse().unwrap();
        store.write(|tx| hold(tx, ip, &a)).unwrap();
        assert_eq!(all(&store).unwrap(), (vec![(ip, a.to_string())], Some(ip)));
        // Only the holder frees it.
        store.write(|tx| free(tx, ip, &b)).unwrap();
        assert_eq!(all(&store).unwrap().0.len(), 1);
        store.write(|tx| free(tx, ip, &a)).unwrap();
        assert_eq!(all(&store).unwrap(), (vec![], Some(ip)));
        store.write(|tx| hold(tx, ip, &b)).unwrap();
        free_all(&store, &[ip]).unwrap();
        assert!(all(&store).unwrap().0.is_empty());
    }
}
