//! The state store: an embedded transactional database (redb) under the root dir.
//!
//! The store knows tables, keys and bytes, nothing of the records kept in them: each part
//! defines its own tables and encodes its own records (`sandbox/records.rs`,
//! `container/records.rs`, `image/records.rs`, `network/leases.rs`). Two kinds of table:
//! a [`RecordTable`] maps a key to a JSON record; an [`IndexTable`] maps a key (a name, an
//! IP) to an id. A change that spans parts (a sandbox record and its IP lease) is one
//! [`Store::write`] transaction, committed with one fdatasync: a crash leaves either all
//! of it or none.
//!
//! After an I/O error (a full disk) redb refuses every later transaction until the database
//! is opened again. The store then reopens it at once, and on each later write until that
//! works; meanwhile [`Store::health`] says why writes fail (RuntimeReady is false), and a
//! full disk is ResourceExhausted naming the file.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorKind;

/// A table of JSON records by key.
pub type RecordTable = TableDefinition<'static, &'static str, &'static [u8]>;
/// A table of ids by key (names, IPs).
pub type IndexTable = TableDefinition<'static, &'static str, &'static str>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state database {}: {what}: {source}", .path.display())]
    Db { path: PathBuf, what: &'static str, source: Box<redb::Error> },
    #[error(
        "state database {} cannot be read ({reason}). podbay does not start over a store it \
         cannot read: it would forget every pod and image. To start over, `podbay serve \
         --reset-state` moves it aside and removes every pod and container it left.",
        .path.display()
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error("state database {} is being reopened after a failure: {reason}", .path.display())]
    Reopening { path: PathBuf, reason: String, no_space: bool },
    #[error("record {key} in table {table}: {source}")]
    Decode { table: String, key: String, source: serde_json::Error },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Db { source, .. } => match source.as_ref() {
                redb::Error::Io(e) => crate::error::io_kind(e),
                redb::Error::PreviousIo => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Error::Reopening { no_space: true, .. } => ErrorKind::ResourceExhausted,
            Error::Reopening { .. } => ErrorKind::Unavailable,
            Error::Unreadable { .. } | Error::Decode { .. } => ErrorKind::Internal,
        }
    }

    /// Whether the database must be opened again before it takes another transaction.
    fn needs_reopen(&self) -> bool {
        matches!(self, Error::Db { source, .. }
            if matches!(source.as_ref(), redb::Error::Io(_) | redb::Error::PreviousIo))
    }
}

/// A redb failure of `what` on the database at `path`.
fn db_err<'a, E: Into<redb::Error>>(
    path: &'a Path,
    what: &'static str,
) -> impl Fn(E) -> Error + 'a {
    move |e| Error::Db { path: path.to_path_buf(), what, source: Box::new(e.into()) }
}

pub struct Store {
    path: PathBuf,
    /// `None` while a reopen has not worked yet.
    db: RwLock<Option<Database>>,
    /// Why the last write failed, while writes fail.
    failing: Mutex<Option<(String, bool)>>,
    /// Seconds each successful commit took (for `/metrics`).
    commits: Histogram,
}

impl Store {
    /// Opens the database, or creates it when there is no file yet. A file that exists but
    /// cannot be read as a database (an empty file, another format) is refused.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let exists = path.exists();
        let db = if exists { Database::open(path) } else { Database::create(path) };
        let db = db.map_err(|e| match exists {
            true => Error::Unreadable { path: path.into(), reason: e.to_string() },
            false => db_err(path, "create")(e),
        })?;
        // The records hold pod specs (labels, annotations): root only.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(Self {
            path: path.into(),
            db: RwLock::new(Some(db)),
            failing: Mutex::new(None),
            commits: crate::steps::latency_histogram(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit latency histogram (a handle onto the same counts).
    pub fn commit_seconds(&self) -> Histogram {
        self.commits.clone()
    }

    /// `Err(why)` while writes to the database fail.
    pub fn health(&self) -> Result<(), String> {
        match &*self.failing.lock().expect("store failure lock") {
            Some((reason, _)) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Runs `f` in one write transaction and commits it (durably) if `f` succeeds.
    pub fn write<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_with(f, Durability::Immediate)
    }

    /// As [`write`](Self::write), but the commit is not flushed to disk (no fsync): it is
    /// seen at once, made durable by the next durable commit, and lost if the daemon dies
    /// before one, as if it had never been made. Only for a change the daemon learns again
    /// at start from what it recovers (a container's start, which its supervisor reports).
    pub fn write_lazily<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_with(f, Durability::None)
    }

    fn write_with<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
        durability: Durability,
    ) -> Result<T, E> {
        let outcome = self.try_write(f, durability);
        match &outcome {
            Ok(_) => {
                self.failing.lock().expect("store failure lock").take();
            }
            Err(Attempt::Store(e)) if e.needs_reopen() => {
                let no_space = e.kind() == ErrorKind::ResourceExhausted;
                tracing::error!(path = %self.path.display(), error = %e, "state database write failed; reopening it");
                *self.failing.lock().expect("store failure lock") = Some((e.to_string(), no_space));
                self.reopen();
            }
            Err(_) => {}
        }
        outcome.map_err(|a| match a {
            Attempt::Store(e) => E::from(e),
            Attempt::Caller(e) => e,
        })
    }

    fn try_write<T, E>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
        durability: Durability,
    ) -> Result<T, Attempt<E>> {
        if self.db.read().expect("store lock").is_none() {
            self.reopen();
        }
        let guard = self.db.read().expect("store lock");
        let db = guard.as_ref().ok_or_else(|| Attempt::Store(self.reopening()))?;
        let mut tx = db
            .begin_write()
            .map_err(db_err(&self.path, "begin a write"))
            .map_err(Attempt::Store)?;
        // Refused only where the database is shared between processes, which it never is;
        // the commit is then durable.
        let _ = tx.set_durability(durability);
        let out = f(&Tx { tx: &tx, path: &self.path }).map_err(Attempt::Caller)?;
        let started = std::time::Instant::now();
        tx.commit().map_err(db_err(&self.path, "commit")).map_err(Attempt::Store)?;
        self.commits.observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Runs `f` on one consistent snapshot.
    pub fn read<T, E: From<Error>>(
        &self,
        f: impl FnOnce(&ReadTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let guard = self.db.read().expect("store lock");
        let db = guard.as_ref().ok_or_else(|| self.reopening())?;
        let tx = db.begin_read().map_err(db_err(&self.path, "begin a read"))?;
        f(&ReadTx { tx, path: &self.path })
    }

    /// Drops the failed handle and opens the file again (redb repairs what an interrupted
    /// commit left); a reopen that fails leaves `None` and is tried on the next write.
    fn reopen(&self) {
        let mut db = self.db.write().expect("store lock");
        *db = None;
        match Database::create(&self.path) {
            Ok(fresh) => *db = Some(fresh),
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "reopen the state database")
            }
        }
    }

    fn reopening(&self) -> Error {
        let (reason, no_space) = self
            .failing
            .lock()
            .expect("store failure lock")
            .clone()
            .unwrap_or_else(|| ("closed".into(), false));
        Error::Reopening { path: self.path.clone(), reason, no_space }
    }
}

/// A write's failure: the store's own, or what the caller's closure returned.
enum Attempt<E> {
    Store(Error),
    Caller(E),
}

/// A write transaction in progress.
pub struct Tx<'a> {
    tx: &'a redb::WriteTransaction,
    path: &'a Path,
}

impl<'a> Tx<'a> {
    fn err<E: Into<redb::Error>>(&self, what: &'static str) -> impl Fn(E) -> Error + 'a {
        db_err(self.path, what)
    }

    /// Inserts or replaces a record.
    pub fn put<T: Serialize>(
        &self,
        table: RecordTable,
        key: &str,
        record: &T,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(record).expect("a record serialises");
        let mut t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        t.insert(key, value.as_slice()).map_err(self.err("insert"))?;
        Ok(())
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: RecordTable,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        let value = t.get(key).map_err(self.err("read"))?.map(|v| v.value().to_vec());
        value.map(|v| decode(&table, key, &v)).transpose()
    }

    /// Removes a record; whether there was one.
    pub fn remove(&self, table: RecordTable, key: &str) -> Result<bool, Error> {
        let mut t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        Ok(t.remove(key).map_err(self.err("remove"))?.is_some())
    }

    /// Points `key` at `id`; returns what it pointed at before.
    pub fn set(&self, table: IndexTable, key: &str, id: &str) -> Result<Option<String>, Error> {
        let mut t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        let previous = t.insert(key, id).map_err(self.err("insert"))?;
        Ok(previous.map(|v| v.value().to_owned()))
    }

    pub fn lookup(&self, table: IndexTable, key: &str) -> Result<Option<String>, Error> {
        let t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        Ok(t.get(key).map_err(self.err("read"))?.map(|v| v.value().to_owned()))
    }

    /// Removes `key` whatever it points at.
    pub fn unset(&self, table: IndexTable, key: &str) -> Result<(), Error> {
        let mut t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        t.remove(key).map_err(self.err("remove"))?;
        Ok(())
    }

    /// Removes `key` only if it still points at `id` (a name or lease another object took
    /// meanwhile stays).
    pub fn unset_if(&self, table: IndexTable, key: &str, id: &str) -> Result<(), Error> {
        let mut t = self.tx.open_table(table).map_err(self.err("open a table"))?;
        if t.get(key).map_err(self.err("read"))?.is_some_and(|v| v.value() == id) {
            t.remove(key).map_err(self.err("remove"))?;
        }
        Ok(())
    }
}

/// A read-only snapshot.
pub struct ReadTx<'a> {
    tx: redb::ReadTransaction,
    path: &'a Path,
}

impl<'a> ReadTx<'a> {
    fn err<E: Into<redb::Error>>(&self, what: &'static str) -> impl Fn(E) -> Error + 'a {
        db_err(self.path, what)
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: RecordTable,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let Some(t) = self.open(table)? else { return Ok(None) };
        let value = t.get(key).map_err(self.err("read"))?;
        value.map(|v| decode(&table, key, v.value())).transpose()
    }

    /// Every record of a table, by key.
    pub fn all<T: DeserializeOwned>(&self, table: RecordTable) -> Result<Vec<(String, T)>, Error> {
        let Some(t) = self.open(table)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.err("read"))? {
            let (k, v) = row.map_err(self.err("read"))?;
            out.push((k.value().to_owned(), decode(&table, k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn lookup(&self, table: IndexTable, key: &str) -> Result<Option<String>, Error> {
        let Some(t) = self.open_index(table)? else { return Ok(None) };
        Ok(t.get(key).map_err(self.err("read"))?.map(|v| v.value().to_owned()))
    }

    /// Every (key, id) of an index.
    pub fn entries(&self, table: IndexTable) -> Result<Vec<(String, String)>, Error> {
        let Some(t) = self.open_index(table)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.err("read"))? {
            let (k, v) = row.map_err(self.err("read"))?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    /// A table nothing was ever written to reads as empty.
    fn open(
        &self,
        table: RecordTable,
    ) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, Error> {
        match self.tx.open_table(table) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.err("open a table")(e)),
        }
    }

    fn open_index(
        &self,
        table: IndexTable,
    ) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static str>>, Error> {
        match self.tx.open_table(table) {
            Ok(t) => Ok(Some(t)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.err("open a table")(e)),
        }
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
        assert!(store.health().is_ok());
    }

    #[test]
    fn an_unreadable_file_is_refused_not_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        std::fs::write(&path, b"").unwrap();
        let e = Store::open(&path).err().expect("an empty file is no database");
        assert!(matches!(e, Error::Unreadable { .. }), "{e}");
        assert!(e.to_string().contains("--reset-state"), "{e}");
        std::fs::write(&path, b"not a database at all").unwrap();
        assert!(matches!(Store::open(&path), Err(Error::Unreadable { .. })));
    }
}
