//! Container records in the state database.
//!
//! Tables: `containers` (container id → [`ContainerRecord`] as JSON) and
//! `container_names` (`name_sandbox_attempt` → container id); a record and its name
//! change in one transaction.

use redb::TableDefinition;

use super::ContainerRecord;
use crate::store::{self, IndexTable, RecordTable, Store};

const CONTAINERS: RecordTable = TableDefinition::new("containers");
const CONTAINER_NAMES: IndexTable = TableDefinition::new("container_names");

pub(super) fn put(store: &Store, rec: &ContainerRecord) -> Result<(), store::Error> {
    store.write(|tx| put_in(tx, rec))
}

/// [`put`] without an fsync, for a container's start (see `Store::write_lazily`).
pub(super) fn put_lazily(store: &Store, rec: &ContainerRecord) -> Result<(), store::Error> {
    store.write_lazily(|tx| put_in(tx, rec))
}

fn put_in(tx: &store::Tx<'_>, rec: &ContainerRecord) -> Result<(), store::Error> {
    tx.put(CONTAINERS, rec.id.as_str(), rec)?;
    tx.set(CONTAINER_NAMES, &rec.name_key(), rec.id.as_str()).map(drop)
}

pub(super) fn delete(store: &Store, rec: &ContainerRecord) -> Result<(), store::Error> {
    store.write(|tx| {
        tx.remove(CONTAINERS, rec.id.as_str())?;
        tx.unset_if(CONTAINER_NAMES, &rec.name_key(), rec.id.as_str())
    })
}

pub(super) fn all(store: &Store) -> Result<Vec<ContainerRecord>, store::Error> {
    store.read(|tx| Ok(tx.all(CONTAINERS)?.into_iter().map(|(_, rec)| rec).collect()))
}
