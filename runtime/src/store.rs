//! The state store: an embedded transactional database (redb) under the root dir.
//!
//! Tables (values are JSON, so a record stays readable and can grow fields):
//! - `sandboxes`: sandbox id → `SandboxRecord`
//! - `sandbox_names`: pod name key (`name_namespace_uid_attempt`) → sandbox id
//!
//! A sandbox record and its name reservation change in one transaction. Later issues add
//! the IPAM leases and container records to the same transactions.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ErrorKind;
use crate::sandbox::SandboxRecord;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const SANDBOX_NAMES: TableDefinition<&str, &str> = TableDefinition::new("sandbox_names");

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
    #[error("sandbox record {id}: {source}")]
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
        tx.commit()?;
        Ok(Self { db })
    }

    /// Inserts or replaces a sandbox record together with its name reservation.
    pub fn put_sandbox(&self, rec: &SandboxRecord) -> Result<(), Error> {
        let value = serde_json::to_vec(rec).expect("a sandbox record serialises");
        let tx = self.db.begin_write()?;
        {
            let mut sandboxes = tx.open_table(SANDBOXES)?;
            sandboxes.insert(rec.id.as_str(), value.as_slice())?;
            let mut names = tx.open_table(SANDBOX_NAMES)?;
            names.insert(rec.spec.metadata.name_key().as_str(), rec.id.as_str())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes a sandbox record and its name reservation (if it still points at this id).
    pub fn delete_sandbox(&self, rec: &SandboxRecord) -> Result<(), Error> {
        let tx = self.db.begin_write()?;
        {
            let mut sandboxes = tx.open_table(SANDBOXES)?;
            sandboxes.remove(rec.id.as_str())?;
            let mut names = tx.open_table(SANDBOX_NAMES)?;
            let key = rec.spec.metadata.name_key();
            let ours = names.get(key.as_str())?.is_some_and(|v| v.value() == rec.id.as_str());
            if ours {
                names.remove(key.as_str())?;
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
        store.put_sandbox(&a).unwrap();
        store.put_sandbox(&b).unwrap();
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
}
