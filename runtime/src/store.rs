//! The state store: an embedded transactional database (redb) under the root dir.
//!
//! The store knows tables, keys and bytes, nothing of the records kept in them: each part
//! defines its own tables and encodes its own records (`sandbox/records.rs`,
//! `container/records.rs`, `image/records.rs`, `network/leases.rs`). Two kinds of table:
//! a [`RecordTable`] maps a key to a JSON record; an [`IndexTable`] maps a key (a name, an
//! IP) to an id. A change that spans parts (a sandbox record and its IP lease) is one
//! [`Store::write`] transaction, committed with one fdatasync: a crash leaves either all
//! of it or none.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorKind;

/// A table of JSON records by key.
pub type RecordTable = TableDefinition<'static, &'static str, &'static [u8]>;
/// A table of ids by key (names, IPs).
pub type IndexTable = TableDefinition<'static, &'static str, &'static str>;

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
    #[error("record {key} in table {table}: {source}")]
    Decode { table: String, key: String, source: serde_json::Error },
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
    /// Opens (or creates) the database. Tables are made by the first write to them.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = Database::create(path)
            .map_err(|source| Error::Open { path: path.into(), source: Box::new(source) })?;
        // The records hold pod specs (labels, annotations): root only.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(Self { db })
    }

    /// Runs `f` in one write transaction and commits it (durably) if `f` succeeds.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.db.begin_write().map_err(Error::from)?;
        let out = f(&Tx(&tx))?;
        tx.commit().map_err(Error::from)?;
        Ok(out)
    }

    /// Runs `f` on one consistent snapshot.
    pub fn read<T, E: From<Error>>(&self, f: impl FnOnce(&ReadTx) -> Result<T, E>) -> Result<T, E> {
        let tx = self.db.begin_read().map_err(Error::from)?;
        f(&ReadTx(tx))
    }
}

/// A write transaction in progress.
pub struct Tx<'a>(&'a redb::WriteTransaction);

impl Tx<'_> {
    /// Inserts or replaces a record.
    pub fn put<T: Serialize>(
        &self,
        table: RecordTable,
        key: &str,
        record: &T,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(record).expect("a record serialises");
        self.0.open_table(table)?.insert(key, value.as_slice())?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: RecordTable,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let t = self.0.open_table(table)?;
        let value = t.get(key)?.map(|v| v.value().to_vec());
        value.map(|v| decode(&table, key, &v)).transpose()
    }

    /// Removes a record; whether there was one.
    pub fn remove(&self, table: RecordTable, key: &str) -> Result<bool, Error> {
        Ok(self.0.open_table(table)?.remove(key)?.is_some())
    }

    /// Points `key` at `id`; returns what it pointed at before.
    pub fn set(&self, table: IndexTable, key: &str, id: &str) -> Result<Option<String>, Error> {
        Ok(self.0.open_table(table)?.insert(key, id)?.map(|v| v.value().to_owned()))
    }

    pub fn lookup(&self, table: IndexTable, key: &str) -> Result<Option<String>, Error> {
        Ok(self.0.open_table(table)?.get(key)?.map(|v| v.value().to_owned()))
    }

    /// Removes `key` whatever it points at.
    pub fn unset(&self, table: IndexTable, key: &str) -> Result<(), Error> {
        self.0.open_table(table)?.remove(key)?;
        Ok(())
    }

    /// Removes `key` only if it still points at `id` (a name or lease another object took
    /// meanwhile stays).
    pub fn unset_if(&self, table: IndexTable, key: &str, id: &str) -> Result<(), Error> {
        let mut t = self.0.open_table(table)?;
        if t.get(key)?.is_some_and(|v| v.value() == id) {
            t.remove(key)?;
        }
        Ok(())
    }
}

/// A read-only snapshot.
pub struct ReadTx(redb::ReadTransaction);

impl ReadTx {
    pub fn get<T: DeserializeOwned>(
        &self,
        table: RecordTable,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let Some(t) = missing_is_empty(self.0.open_table(table))? else { return Ok(None) };
        let value = t.get(key)?;
        value.map(|v| decode(&table, key, v.value())).transpose()
    }

    /// Every record of a table, by key.
    pub fn all<T: DeserializeOwned>(&self, table: RecordTable) -> Result<Vec<(String, T)>, Error> {
        let Some(t) = missing_is_empty(self.0.open_table(table))? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), decode(&table, k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn lookup(&self, table: IndexTable, key: &str) -> Result<Option<String>, Error> {
        let Some(t) = missing_is_empty(self.0.open_table(table))? else { return Ok(None) };
        Ok(t.get(key)?.map(|v| v.value().to_owned()))
    }

    /// Every (key, id) of an index.
    pub fn entries(&self, table: IndexTable) -> Result<Vec<(String, String)>, Error> {
        let Some(t) = missing_is_empty(self.0.open_table(table))? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }
}

/// A table nothing was ever written to reads as empty.
fn missing_is_empty<T>(opened: Result<T, TableError>) -> Result<Option<T>, Error> {
    match opened {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn decode<T: DeserializeOwned>(table: &RecordTable, key: &str, v: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(v).map_err(|source| Error::Decode {
        table: table.to_string(),
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const THINGS: RecordTable = TableDefinition::new("things");
    const NAMES: IndexTable = TableDefinition::new("names");

    #[test]
    fn records_and_indexes_change_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        // Nothing written yet: tables read as empty.
        assert!(store.read(|tx| tx.all::<u32>(THINGS)).unwrap().is_empty());
        store
            .write(|tx| {
                tx.put(THINGS, "a", &1u32)?;
                tx.set(NAMES, "one", "a")
            })
            .unwrap();
        // A failing write leaves nothing of itself.
        let failed: Result<(), Error> = store.write(|tx| {
            tx.put(THINGS, "b", &2u32)?;
            Err(Error::Decode {
                table: "x".into(),
                key: "y".into(),
                source: serde_json::from_str::<u32>("z").unwrap_err(),
            })
        });
        assert!(failed.is_err());
        drop(store);
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.read(|tx| tx.all::<u32>(THINGS)).unwrap(), vec![("a".into(), 1)]);
        store.write(|tx| tx.unset_if(NAMES, "one", "other")).unwrap();
        assert_eq!(store.read(|tx| tx.lookup(NAMES, "one")).unwrap().as_deref(), Some("a"));
        store.write(|tx| tx.unset_if(NAMES, "one", "a")).unwrap();
        assert!(store.read(|tx| tx.entries(NAMES)).unwrap().is_empty());
    }
}
