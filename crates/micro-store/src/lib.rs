//! The store: key-value records addressed by `(database, table, key)`, with metadata and TTLs.
//!
//! [`Store`] is the one trait every backend implements; its contract (ordering, durability,
//! what "not found" means, paging, expiry) is written on the trait and checked for every backend
//! by `conformance`. Services hold a store as `Arc<dyn Store>` chosen once by the server's
//! backend factory.
//!
//! Layout:
//! - this file: the domain types ([`Record`], [`Field`], [`ReadOptions`], [`ListOptions`]),
//!   [`StoreError`] and the [`Store`] trait;
//! - [`validate`]: the input limits every backend enforces, in one place;
//! - [`memory`]: [`memory::MemoryStore`], a `BTreeMap` under a lock (tests, `--store memory`);
//! - [`mod@file`]: [`file::FileStore`], one redb file, fsync'd before a write is acknowledged;
//! - [`grpc`]: the `store.Store` gRPC service (docs/compatibility.md §3.3) over any [`Store`];
//! - [`spawn_sweeper`]: the background task that removes expired records;
//! - `conformance` (under `cfg(test)` or the `conformance` feature): the shared suite.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::AbortHandle;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod file;
pub mod grpc;
pub mod memory;
mod scan;
mod time;
pub mod validate;

pub use validate::{MAX_KEY_BYTES, MAX_METADATA_BYTES, MAX_NAME_BYTES, MAX_VALUE_BYTES};

/// The database the platform keeps its own secrets in (signing keys shared by servers on one
/// store). The gRPC store service refuses every database whose name starts with
/// [`RESERVED_PREFIX`], for every account, and never lists them.
pub const INTERNAL_DATABASE: &str = "_micro";
/// Database names starting with this are the platform's, out of reach of clients.
pub const RESERVED_PREFIX: &str = "_";

/// The result of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stored record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The record's key, unique within its `(database, table)`.
    pub key: String,
    /// The opaque value.
    pub value: Vec<u8>,
    /// Free-form metadata, stored and returned as given (the wire sends it as [`Field`]s).
    pub metadata: BTreeMap<String, Field>,
    /// On write: time to live from now (`None` or zero = never expires).
    /// On read: the time the record has left (`None` = never expires; never zero for a record
    /// that is returned).
    pub expiry: Option<Duration>,
}

impl Record {
    /// A record with no metadata that never expires.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), value: value.into(), metadata: BTreeMap::new(), expiry: None }
    }

    /// The same record, expiring `ttl` after it is written.
    #[must_use]
    pub fn with_expiry(mut self, ttl: Duration) -> Self {
        self.expiry = Some(ttl);
        self
    }

    /// The same record with metadata entry `name` set to `field`.
    #[must_use]
    pub fn with_metadata(mut self, name: impl Into<String>, field: Field) -> Self {
        self.metadata.insert(name.into(), field);
        self
    }
}

/// One metadata value: the wire's `store.Field{type, value}`. The original sent the Go type
/// name and the `%v` formatting of the value; we store both strings as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Field {
    /// The value's type name (the wire field `type`), e.g. `string`, `int64`.
    pub kind: String,
    /// The value, formatted as text.
    pub value: String,
}

impl Field {
    /// A field of type `kind` holding `value`.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self { kind: kind.into(), value: value.into() }
    }
}

/// Most records one `Store.Read` over gRPC returns, whatever its `limit` (0 included): page
/// through more with `offset` (docs/security.md).
pub const MAX_READ_RECORDS: u64 = 1000;
/// Most value bytes one `Store.Read` over gRPC gathers: the record that crosses it is the last
/// one returned (so every page makes progress); page on with `offset`.
pub const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
/// Most keys one `Store.List` over gRPC returns, whatever its `limit`: page with `offset`.
pub const MAX_LIST_KEYS: u64 = 10_000;

/// How [`Store::read`] interprets its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Match records whose key starts with the given key.
    pub prefix: bool,
    /// Match records whose key ends with the given key.
    pub suffix: bool,
    /// At most this many records (0 = unlimited); applied after `offset`.
    pub limit: u64,
    /// Skip this many matching records first.
    pub offset: u64,
    /// Stop once the records taken hold more value bytes than this (0 = no budget); the record
    /// that crosses it is still returned.
    pub max_bytes: u64,
}

/// Which keys [`Store::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this (empty = any).
    pub prefix: String,
    /// Only keys ending with this (empty = any).
    pub suffix: String,
    /// At most this many keys (0 = unlimited); applied after `offset`.
    pub limit: u64,
    /// Skip this many matching keys first.
    pub offset: u64,
}

/// Why a store operation failed. Messages are lowercase and may name internals (paths,
/// engine errors): log them, but send clients only what [`grpc`]'s mapping sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An exact read found no live record under the key.
    #[error("not found")]
    NotFound,
    /// The request broke a limit of [`validate`]; the message says which and how.
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot serve right now (I/O error, file locked, connection lost); retrying
    /// later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend failed in a way retrying will not fix (corrupt data, a bug).
    #[error("store failed: {0}")]
    Internal(String),
}

/// A key-value store of [`Record`]s in `(database, table)` namespaces.
///
/// # Contract
///
/// Every backend behaves the same; `conformance` checks each point below.
///
/// - **Addressing.** A record lives under `(database, table, key)`. The same key in another
///   table or database is an independent record.
/// - **Validation.** Database and table names, keys, patterns, values and metadata are checked
///   against the limits in [`validate`] before anything is touched; a violation is
///   [`StoreError::Invalid`] naming the limit, and changes nothing. Backends call the
///   [`validate`] check of each operation first, so all of them draw the same lines.
/// - **Atomicity and concurrency.** Operations may run concurrently from many tasks. Each
///   write or delete is atomic: readers see a record wholly before or wholly after it.
/// - **Ordering.** Every multi-result operation returns records/keys in byte-lexicographic key
///   order; [`Store::databases`] and [`Store::tables`] are sorted the same way.
/// - **Durability.** An `Ok` from [`Store::write`] or [`Store::delete`] means the change is as
///   durable as the backend can make it: the file backend has fsync'd it, so it survives a
///   crash or `kill -9` of the process; the memory backend keeps it until the process exits.
///   A failed operation changes nothing.
/// - **Writes replace.** [`Store::write`] replaces the whole record (value, metadata and
///   expiry); there is no merge. [`Store::create`] is the one conditional write.
/// - **Not found.** An exact read (neither `prefix` nor `suffix`) of a missing or expired key
///   is [`StoreError::NotFound`]. Prefix/suffix reads and lists that match nothing return an
///   empty `Vec`, not an error. [`Store::delete`] of a missing key is `Ok` (deletes are
///   idempotent).
/// - **Matching and paging.** A read with `prefix` keeps keys starting with the given key, with
///   `suffix` keys ending with it, with both flags keys doing both. [`Store::list`] does the same
///   with its own prefix and suffix (empty = any). Matching records are taken in key order,
///   skipping expired ones, then `offset` of them are skipped and at most `limit` returned
///   (`limit` 0 = unlimited).
/// - **Expiry.** A record written with a TTL ([`Record::expiry`]) stops being visible to
///   reads and lists the moment it expires; reads report its remaining TTL. Expired records
///   still take space until [`Store::sweep_expired`] removes them (see [`spawn_sweeper`]).
/// - **Databases and tables.** A `(database, table)` pair is known from its first successful
///   write on and stays listed even when its records are deleted or expire.
#[async_trait]
pub trait Store: Send + Sync {
    /// Reads the record under `key`, or with `prefix`/`suffix` the matching records (see the
    /// trait docs for matching, paging and [`StoreError::NotFound`]).
    async fn read(&self, database: &str, table: &str, key: &str, options: ReadOptions)
    -> Result<Vec<Record>>;

    /// Writes `record`, replacing any record under its key. The key must not be empty.
    async fn write(&self, database: &str, table: &str, record: Record) -> Result<()>;

    /// Writes `record` only when no live record is under its key (a missing or expired one
    /// counts as absent); returns whether it wrote. Atomic: of several concurrent creates of
    /// one key, also from processes sharing the backend, exactly one returns `true`. The one
    /// compare-and-set the platform needs, e.g. for servers agreeing on one signing key.
    async fn create(&self, database: &str, table: &str, record: Record) -> Result<bool>;

    /// Deletes the record under `key`; `Ok` whether or not it existed.
    async fn delete(&self, database: &str, table: &str, key: &str) -> Result<()>;

    /// The keys of live records matching `options`, in key order.
    async fn list(&self, database: &str, table: &str, options: ListOptions) -> Result<Vec<String>>;

    /// Every database that has a table, sorted.
    async fn databases(&self) -> Result<Vec<String>>;

    /// The tables of `database`, sorted; empty for an unknown database.
    async fn tables(&self, database: &str) -> Result<Vec<String>>;

    /// Removes every expired record and returns how many it removed.
    async fn sweep_expired(&self) -> Result<u64>;

    /// One line describing the backend for start-up logs, e.g. `file (redb) at /path/store.redb`.
    fn summary(&self) -> String;
}

/// The shortest period [`spawn_sweeper`] accepts; shorter periods are raised to it so a
/// misconfiguration cannot turn the sweeper into a busy loop.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

/// Owns the background sweeper started by [`spawn_sweeper`]; dropping it stops the task.
#[derive(Debug)]
#[must_use = "dropping the Sweeper stops the background sweep"]
pub struct Sweeper {
    task: AbortHandle,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // A sweep already running on the blocking pool finishes its transaction first; its
        // result is discarded. Either way the store stays consistent.
        self.task.abort();
    }
}

/// Starts a task that calls [`Store::sweep_expired`] every `every` (at least
/// [`MIN_SWEEP_INTERVAL`]), the first time straight away so records that expired while the
/// server was down are removed at boot. Must be called within a tokio runtime.
pub fn spawn_sweeper(store: Arc<dyn Store>, every: Duration) -> Sweeper {
    let every = every.max(MIN_SWEEP_INTERVAL);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match store.sweep_expired().await {
                Ok(0) => tracing::trace!("store sweep found no expired records"),
                Ok(removed) => tracing::info!(removed, "store swept expired records"),
                Err(err) => tracing::warn!(cause = %err, "store sweep failed; retrying next period"),
            }
        }
    });
    Sweeper { task: task.abort_handle() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[tokio::test]
    async fn sweeper_sweeps_and_stops_on_drop() {
        let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
        let sweeps = |store: &Arc<MemoryStore>| store.sweeps();
        let sweeper = spawn_sweeper(store.clone(), Duration::ZERO);

        // The first sweep runs at once; poll with a deadline rather than sleeping a guess.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sweeps(&store) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the sweeper never ran twice");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        drop(sweeper);
        // Abort takes effect at the task's next await; give it a few periods to land.
        tokio::time::sleep(MIN_SWEEP_INTERVAL * 3).await;
        let after_stop = sweeps(&store);
        tokio::time::sleep(MIN_SWEEP_INTERVAL * 5).await;
        assert_eq!(sweeps(&store), after_stop, "the sweeper kept running after its guard was dropped");
    }

    #[tokio::test]
    async fn sweeper_removes_expired_records() {
        let store = Arc::new(MemoryStore::new());
        store.write("db", "t", Record::new("gone", "x").with_expiry(Duration::from_millis(1))).await.unwrap();
        store.write("db", "t", Record::new("kept", "x")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;

        let _sweeper = spawn_sweeper(store.clone(), Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.stored_len() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "the expired record was never swept");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.list("db", "t", ListOptions::default()).await.unwrap(), ["kept"]);
    }
}
