//! Sandbox records in the state database.
//!
//! Tables: `sandboxes` (sandbox id → [`SandboxRecord`] as JSON) and `sandbox_names` (pod
//! name key `name_namespace_uid_attempt` → sandbox id). A record, its name and its IP
//! lease (`network/leases.rs`) change in one transaction.

use std::net::Ipv4Addr;

use redb::TableDefinition;

use super::SandboxRecord;
use crate::network::leases;
use crate::store::{self, IndexTable, RecordTable, Store};

const SANDBOXES: RecordTable = TableDefinition::new("sandboxes");
const SANDBOX_NAMES: IndexTable = TableDefinition::new("sandbox_names");

/// Inserts or replaces a record with its name and its lease; `released` is a lease of
/// this sandbox freed in the same transaction.
pub(super) fn put(
    store: &Store,
    rec: &SandboxRecord,
    released: Option<Ipv4Addr>,
) -> Result<(), store::Error> {
    store.write(|tx| {
        tx.put(SANDBOXES, rec.id.as_str(), rec)?;
        tx.set(SANDBOX_NAMES, &rec.spec.metadata.name_key(), rec.id.as_str())?;
        if let Some(ip) = released {
            leases::free(tx, ip, &rec.id)?;
        }
        if let Some(net) = &rec.network {
            leases::hold(tx, net.ip, &rec.id)?;
        }
        Ok(())
    })
}

/// Deletes a record, its name and its lease (each only if it still points at this id).
pub(super) fn delete(store: &Store, rec: &SandboxRecord) -> Result<(), store::Error> {
    store.write(|tx| {
        tx.remove(SANDBOXES, rec.id.as_str())?;
        tx.unset_if(SANDBOX_NAMES, &rec.spec.metadata.name_key(), rec.id.as_str())?;
        if let Some(net) = &rec.network {
            leases::free(tx, net.ip, &rec.id)?;
        }
        Ok(())
    })
}

pub(super) fn all(store: &Store) -> Result<Vec<SandboxRecord>, store::Error> {
    store.read(|tx| Ok(tx.all(SANDBOXES)?.into_iter().map(|(_, rec)| rec).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Attachment;
    use crate::sandbox::tests::record;

    #[test]
    fn put_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let a = record("a");
        let b = record("b");
        put(&store, &a, None).unwrap();
        put(&store, &b, None).unwrap();
        assert_eq!(all(&store).unwrap().len(), 2);
        delete(&store, &a).unwrap();
        let left = all(&store).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, b.id);
        drop(store);
        // Reopening sees the committed state.
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(all(&store).unwrap().len(), 1);
    }

    #[test]
    fn leases_change_with_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let ip: Ipv4Addr = "10.244.0.2".parse().unwrap();
        let mut a = record("a");
        a.network = Some(Attachment { ip, host_veth: "vethx".into() });
        put(&store, &a, None).unwrap();
        assert_eq!(leases::all(&store).unwrap(), (vec![(ip, a.id.as_str().to_owned())], Some(ip)));
        // Stop: the record loses its network and the lease goes in the same transaction.
        a.network = None;
        put(&store, &a, Some(ip)).unwrap();
        assert_eq!(leases::all(&store).unwrap(), (vec![], Some(ip)));
        a.network = Some(Attachment { ip, host_veth: "vethx".into() });
        put(&store, &a, None).unwrap();
        delete(&store, &a).unwrap();
        assert!(leases::all(&store).unwrap().0.is_empty());
    }
}
