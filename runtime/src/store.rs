//! The state store: an embedded transactional database (redb) under the root dir.
//!
//! Tables (values are JSON, so a record stays readable and can grow fields):
//! - `sandboxes`: sandbox id → `SandboxRecord`
//! - `sandbox_names`: pod name key (`name_namespace_uid_attempt`) → sandbox id
//! - `ip_leases`: pod IP → sandbox id
//! - `ipam`: `last` → the IP handed out last (round-robin survives restarts)
//! - `containers`: container id → `ContainerRecord`
//! - `container_names`: `name_sandbox_attempt` → container id
//!
//! A sandbox record, its name reservation and its IP lease change in one transaction:
//! a crash leaves either a pod with its lease or neither.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ErrorKind;
use crate::container::ContainerRecord;
use crate::sandbox::SandboxRecord;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const SANDBOX_NAMES: TableDefinition<&str, &str> = TableDefinition::new("sandbox_names");
const IP_LEASES: TableDefinition<&str, &str> = TableDefinition::new("ip_leases");
const IPAM: TableDefinition<&str, &str> = TableDefinition::new("ipam");
const IPAM_LAST: &str = "last";
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const CONTAINER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("container_names");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open state database {path}: {source}")]
    Open { path: PathBuf, source: Box<redb::DatabaseError> },
    #[error("state database transaction: {0}")]
    Transaction(#[from] Box<redb::TransactionError>),
    #[error("state database table: {0}")]
    Table(#[from] Box<redb::TableError>),
    #[error("state database storage: {0}")]
    Storage(#[from] Box<redb::StorageError>),
    #[error("state database commit: {0}")]
    Commit(#[from] Box<redb::CommitError>),
    #[error("record {id}: {source}")]
    Decode { id: String, source: serde_json::Error },
}

macro_rules! boxed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Box::new(e).into() }
        }
    )*};
}
boxed_from!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

impl Error {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// The IP leases (IP → sandbox id) and the IP handed out last.
pub type Leases = (Vec<(Ipv4Addr, String)>, Option<Ipv4Addr>);

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database and its tables.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = Database::create(path)
            .map_err(|source| Error::Open { path: path.into(), source: Box::new(source) })?;
        // The records hold pod specs (labels, annotations): root only.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        let tx = db.begin_write()?;
        tx.open_table(SANDBOXES)?;
        tx.open_table(SANDBOX_NAMES)?;
        tx.open_table(IP_LEASES)?;
        tx.open_table(IPAM)?;
        tx.open_table(CONTAINERS)?;
        tx.open_table(CONTAINER_NAMES)?;
        crate::image::records::create_tables(&tx)?;
        tx.commit()?;
        Ok(Self { db })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Inserts or replaces a sandbox record together with its name reservation and its IP
    /// lease; `released` is a lease of this sandbox to free in the same transaction.
    pub fn put_sandbox(
        &self,
        rec: &SandboxRecord,
        released: Option<Ipv4Addr>,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(rec).expect("a sandbox record serialises");
        let tx = self.db.begin_write()?;
        {
            let mut sandboxes = tx.open_table(SANDBOXES)?;
            sandboxes.insert(rec.id.as_str(), value.as_slice())?;
            let mut names = tx.open_table(SANDBOX_NAMES)?;
            names.insert(rec.spec.metadata.name_key().as_str(), rec.id.as_str())?;
            let mut leases = tx.open_table(IP_LEASES)?;
            if let Some(ip) = released {
                remove_if_ours(&mut leases, &ip.to_string(), rec.id.as_str())?;
            }
            if let Some(net) = &rec.network {
                let ip = net.ip.to_string();
                if leases.insert(ip.as_str(), rec.id.as_str())?.is_none() {
                    tx.open_table(IPAM)?.insert(IPAM_LAST, ip.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a sandbox record, its name reservation and its lease (each only if it still
    /// points at this id).
    pub fn delete_sandbox(&self, rec: &SandboxRecord) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut sandboxes = tx.open_table(SANDBOXES)?;
            sandboxes.remove(rec.id.as_str())?;
            let mut names = tx.open_table(SANDBOX_NAMES)?;
            remove_if_ours(&mut names, &rec.spec.metadata.name_key(), rec.id.as_str())?;
            if let Some(net) = &rec.network {
                let mut leases = tx.open_table(IP_LEASES)?;
                remove_if_ours(&mut leases, &net.ip.to_string(), rec.id.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every IP lease (IP → sandbox id) and the IP handed out last.
    pub fn leases(&self) -> Result<Leases, Error> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(IP_LEASES)?.iter()? {
            let (ip, id) = row?;
            if let Ok(ip) = ip.value().parse() {
                out.push((ip, id.value().to_owned()));
            }
        }
        let last = tx.open_table(IPAM)?.get(IPAM_LAST)?.and_then(|v| v.value().parse().ok());
        Ok((out, last))
    }

    /// Frees leases in one transaction.
    pub fn delete_leases(&self, ips: &[Ipv4Addr]) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut leases = tx.open_table(IP_LEASES)?;
            for ip in ips {
                leases.remove(ip.to_string().as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every sandbox record.
    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, Error> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(SANDBOXES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, value) = row?;
            let rec = serde_json::from_slice(value.value())
                .map_err(|source| Error::Decode { id: id.value().to_owned(), source })?;
            out.push(rec);
        }
        Ok(out)
    }
}

impl Store {
    /// Inserts or replaces a container record and its name reservation in one transaction.
    pub fn put_container(&self, rec: &ContainerRecord) -> Result<(), Error> {
        let value = serde_json::to_vec(rec).expect("a container record serialises");
        let tx = self.db.begin_write()?;
        {
            tx.open_table(CONTAINERS)?.insert(rec.id.as_str(), value.as_slice())?;
            tx.open_table(CONTAINER_NAMES)?.insert(rec.name_key().as_str(), rec.id.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_container(&self, rec: &ContainerRecord) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(CONTAINERS)?.remove(rec.id.as_str())?;
            let mut names = tx.open_table(CONTAINER_NAMES)?;
            remove_if_ours(&mut names, &rec.name_key(), rec.id.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>, Error> {
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(CONTAINERS)?.iter()? {
            let (id, value) = row?;
            let rec = serde_json::from_slice(value.value())
                .map_err(|source| Error::Decode { id: id.value().to_owned(), source })?;
            out.push(rec);
        }
        Ok(out)
    }
}

fn remove_if_ours(table: &mut redb::Table<&str, &str>, key: &str, id: &str) -> Result<(), Error> {
    if table.get(key)?.is_some_and(|v| v.value() == id) {
        table.remove(key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::tests::record;

    #[test]
    fn put_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let a = record("a");
        let b = record("b");
        store.put_sandbox(&a, None).unwrap();
        store.put_sandbox(&b, None).unwrap();
        assert_eq!(store.sandboxes().unwrap().len(), 2);
        store.delete_sandbox(&a).unwrap();
        let left = store.sandboxes().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, b.id);
        drop(store);
        // Reopening sees the committed state.
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.sandboxes().unwrap().len(), 1);
    }

    #[test]
    fn leases_change_with_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let ip: Ipv4Addr = "10.244.0.2".parse().unwrap();
        let mut a = record("a");
        a.network = Some(crate::network::PodNetwork { ip, host_veth: "vethx".into() });
        store.put_sandbox(&a, None).unwrap();
        assert_eq!(store.leases().unwrap(), (vec![(ip, a.id.as_str().to_owned())], Some(ip)));
        // Stop: the record loses its network and the lease goes in the same transaction.
        a.network = None;
        store.put_sandbox(&a, Some(ip)).unwrap();
        assert_eq!(store.leases().unwrap(), (vec![], Some(ip)));
        a.network = Some(crate::network::PodNetwork { ip, host_veth: "vethx".into() });
        store.put_sandbox(&a, None).unwrap();
        store.delete_sandbox(&a).unwrap();
        assert!(store.leases().unwrap().0.is_empty());
    }
}
