//! [`MemoryStore`]: everything in a `BTreeMap` under a lock. For tests and `--store memory`;
//! nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use crate::scan::{Filter, Pager};
use crate::{Field, ListOptions, ReadOptions, Record, Result, Store, StoreError, time, validate};

/// database → table → key → record. Nested maps so lookups borrow `&str` without allocating.
type Databases = BTreeMap<String, BTreeMap<String, BTreeMap<String, Stored>>>;

#[derive(Debug, Clone)]
struct Stored {
    value: Vec<u8>,
    metadata: BTreeMap<String, Field>,
    /// Absolute expiry in unix milliseconds.
    expires_at: Option<u64>,
}

impl Stored {
    fn to_record(&self, key: &str, now: u64) -> Record {
        Record {
            key: key.to_string(),
            value: self.value.clone(),
            metadata: self.metadata.clone(),
            expiry: time::remaining(self.expires_at, now),
        }
    }
}

/// An in-memory [`Store`]. Cheap to create; every instance is independent.
#[derive(Debug, Default)]
pub struct MemoryStore {
    databases: RwLock<Databases>,
    #[cfg(test)]
    sweeps: std::sync::atomic::AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    // No operation panics while holding the lock with the maps half-updated (each mutation is
    // a single map call), so data behind a poisoned lock is still consistent.
    fn read_lock(&self) -> RwLockReadGuard<'_, Databases> {
        self.databases.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Databases> {
        self.databases.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many times [`Store::sweep_expired`] ran.
    #[cfg(test)]
    pub(crate) fn sweeps(&self) -> u64 {
        self.sweeps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many records are held, expired or not.
    #[cfg(test)]
    pub(crate) fn stored_len(&self) -> usize {
        self.read_lock().values().flat_map(|tables| tables.values()).map(BTreeMap::len).sum()
    }

    /// Visits the live records of one table matching `filter`, in key order, until `visit`
    /// returns false.
    fn scan(
        &self,
        database: &str,
        table: &str,
        filter: Filter<'_>,
        mut visit: impl FnMut(&str, &Stored) -> bool,
    ) {
        let now = micro_core::time::unix_millis();
        let databases = self.read_lock();
        let Some(records) = databases.get(database).and_then(|tables| tables.get(table)) else {
            return;
        };
        for (key, stored) in records.range::<str, _>((Bound::Included(filter.prefix), Bound::Unbounded)) {
            if filter.is_past(key) {
                break;
            }
            if filter.suffix_matches(key) && time::is_live(stored.expires_at, now) && !visit(key, stored) {
                break;
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn read(
        &self,
        database: &str,
        table: &str,
        key: &str,
        options: ReadOptions,
    ) -> Result<Vec<Record>> {
        validate::read(database, table, key, &options)?;
        if !options.prefix && !options.suffix {
            let now = micro_core::time::unix_millis();
            let databases = self.read_lock();
            let stored = databases
                .get(database)
                .and_then(|tables| tables.get(table))
                .and_then(|records| records.get(key))
                .filter(|stored| time::is_live(stored.expires_at, now))
                .ok_or(StoreError::NotFound)?;
            return Ok(vec![stored.to_record(key, now)]);
        }

        let now = micro_core::time::unix_millis();
        let mut pager = Pager::for_read(&options);
        let mut found = Vec::new();
        self.scan(database, table, Filter::read(key, &options), |key, stored| {
            if pager.admit() {
                let record = stored.to_record(key, now);
                pager.charge(record.value.len());
                found.push(record);
            }
            !pager.is_full()
        });
        Ok(found)
    }

    async fn write(&self, database: &str, table: &str, record: Record) -> Result<()> {
        validate::write(database, table, &record)?;
        let stored = Stored {
            value: record.value,
            metadata: record.metadata,
            expires_at: time::expires_at(record.expiry, micro_core::time::unix_millis()),
        };
        self.write_lock()
            .entry(database.to_string())
            .or_default()
            .entry(table.to_string())
            .or_default()
            .insert(record.key, stored);
        Ok(())
    }

    async fn create(&self, database: &str, table: &str, record: Record) -> Result<bool> {
        validate::write(database, table, &record)?;
        let now = micro_core::time::unix_millis();
        let mut data = self.write_lock();
        let records = data.entry(database.to_string()).or_default().entry(table.to_string()).or_default();
        if records.get(&record.key).is_some_and(|stored| time::is_live(stored.expires_at, now)) {
            return Ok(false);
        }
        let stored = Stored {
            value: record.value,
            metadata: record.metadata,
            expires_at: time::expires_at(record.expiry, now),
        };
        records.insert(record.key, stored);
        Ok(true)
    }

    async fn delete(&self, database: &str, table: &str, key: &str) -> Result<()> {
        validate::delete(database, table, key)?;
        if let Some(records) = self.write_lock().get_mut(database).and_then(|tables| tables.get_mut(table)) {
            records.remove(key);
        }
        Ok(())
    }

    async fn list(&self, database: &str, table: &str, options: ListOptions) -> Result<Vec<String>> {
        validate::list(database, table, &options)?;
        let mut pager = Pager::new(options.offset, options.limit);
        let mut keys = Vec::new();
        self.scan(database, table, Filter::list(&options), |key, _| {
            if pager.admit() {
                keys.push(key.to_string());
            }
            !pager.is_full()
        });
        Ok(keys)
    }

    async fn databases(&self) -> Result<Vec<String>> {
        // Tables are only ever added, so every database in the map has one.
        Ok(self.read_lock().keys().cloned().collect())
    }

    async fn tables(&self, database: &str) -> Result<Vec<String>> {
        validate::database(database)?;
        Ok(self.read_lock().get(database).map(|tables| tables.keys().cloned().collect()).unwrap_or_default())
    }

    async fn sweep_expired(&self) -> Result<u64> {
        #[cfg(test)]
        self.sweeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = micro_core::time::unix_millis();
        let mut removed = 0u64;
        for records in self.write_lock().values_mut().flat_map(|tables| tables.values_mut()) {
            let before = records.len();
            records.retain(|_, stored| time::is_live(stored.expires_at, now));
            removed += (before - records.len()) as u64;
        }
        Ok(removed)
    }

    fn summary(&self) -> String {
        "memory (not persisted)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn conformance() {
        crate::conformance::run_all(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn sweep_frees_memory() {
        let store = MemoryStore::new();
        let short = std::time::Duration::from_millis(1);
        for key in ["a", "b", "c"] {
            store.write("db", "t", Record::new(key, "v").with_expiry(short)).await.unwrap();
        }
        store.write("db", "t", Record::new("d", "v")).await.unwrap();
        tokio::time::sleep(short * 5).await;
        assert_eq!(store.stored_len(), 4, "expired records linger until swept");
        assert_eq!(store.sweep_expired().await.unwrap(), 3);
        assert_eq!(store.stored_len(), 1);
        assert_eq!(store.tables("db").await.unwrap(), ["t"], "the table stays listed");
    }
}
