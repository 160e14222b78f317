//! [`FileStore`]: every database and table in one redb file, each change fsync'd before it is
//! acknowledged.
//!
//! Layout inside the file (redb tables):
//! - `records`: `(database, table, key)` → the record, encoded as a private protobuf message
//!   (value, metadata, absolute expiry in unix milliseconds). The tuple key orders records by
//!   database, then table, then key bytes, so a prefix read is one range scan.
//! - `expiry`: `(expires_at_ms, database, table, key)` → `()`, one entry per record with a TTL,
//!   so [`Store::sweep_expired`] visits only what has expired instead of every record.
//! - `tables`: `(database, table)` → `()`, every pair ever written, for `databases`/`tables`.
//!
//! No redb call runs on a runtime thread: reads run on the store's reader threads, commits and
//! sweeps on tokio's blocking pool (`spawn_blocking`). redb lets one write transaction run at a
//! time and readers run alongside it on a snapshot.
//!
//! Writes, creates and deletes are group-committed (`Writer`): they queue, and the writer
//! holding the commit lock applies the whole queue in order in one transaction with one fsync,
//! then hands each waiter its own result. Under contention that turns one fsync per change
//! into one per batch; a writer alone still commits at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use micro_core::batch::CommitQueue;
use micro_core::workers::Workers;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use crate::scan::{Filter, Pager};
use crate::{Field, ListOptions, ReadOptions, Record, Result, Store, StoreError, time, validate};

const RECORDS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("records");
const EXPIRY: TableDefinition<(u64, &str, &str, &str), ()> = TableDefinition::new("expiry");
const TABLES: TableDefinition<(&str, &str), ()> = TableDefinition::new("tables");

/// Expired records removed per write transaction by a sweep, so a large sweep never holds the
/// writer lock (and delays acknowledged writes) for long.
const SWEEP_BATCH: usize = 1024;

/// Bounds on one group commit, so a burst of writers never makes one transaction (and the
/// wait of its first writer) unboundedly long. A single larger change still goes alone.
const MAX_BATCH_OPS: usize = 4096;
const MAX_BATCH_BYTES: usize = 8 << 20;

/// A record as stored in the `records` table. Protobuf keeps it compact and lets fields be
/// added later without rewriting the file.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredRecord {
    #[prost(bytes = "vec", tag = "1")]
    value: Vec<u8>,
    /// Absolute expiry in unix milliseconds; absent = never expires.
    #[prost(uint64, optional, tag = "2")]
    expires_at: Option<u64>,
    #[prost(btree_map = "string, message", tag = "3")]
    metadata: BTreeMap<String, StoredField>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredField {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// The expiry of a [`StoredRecord`] alone: decoding it skips the value and metadata without
/// copying them, which is all `list` and the index bookkeeping need.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredExpiry {
    #[prost(uint64, optional, tag = "2")]
    expires_at: Option<u64>,
}

impl StoredRecord {
    fn from_record(record: Record, now: u64) -> Self {
        Self {
            value: record.value,
            expires_at: time::expires_at(record.expiry, now),
            metadata: record
                .metadata
                .into_iter()
                .map(|(name, field)| (name, StoredField { kind: field.kind, value: field.value }))
                .collect(),
        }
    }

    fn into_record(self, key: &str, now: u64) -> Record {
        Record {
            key: key.to_string(),
            value: self.value,
            metadata: self
                .metadata
                .into_iter()
                .map(|(name, field)| (name, Field { kind: field.kind, value: field.value }))
                .collect(),
            expiry: time::remaining(self.expires_at, now),
        }
    }
}

fn decode_record(bytes: &[u8], key: &str) -> Result<StoredRecord> {
    prost::Message::decode(bytes).map_err(|err| corrupt(key, &err))
}

fn decode_expiry(bytes: &[u8], key: &str) -> Result<Option<u64>> {
    <StoredExpiry as prost::Message>::decode(bytes)
        .map(|stored| stored.expires_at)
        .map_err(|err| corrupt(key, &err))
}

fn corrupt(key: &str, err: &prost::DecodeError) -> StoreError {
    StoreError::Internal(format!("the stored record {key:?} cannot be decoded: {err}"))
}

/// Maps a redb error: I/O trouble (disk full, fsync failed, file locked) is worth retrying
/// later or after a restart; anything else is a bug or corruption.
fn storage(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        err @ (redb::Error::Io(_) | redb::Error::PreviousIo) => {
            StoreError::Unavailable(format!("store file i/o failed: {err}"))
        }
        redb::Error::DatabaseAlreadyOpen => {
            StoreError::Unavailable("the store file is already open, by this or another process".into())
        }
        err => StoreError::Internal(format!("store file: {err}")),
    }
}

/// A [`Store`] in one redb file. Cloning is cheap and shares the file.
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
    readers: Workers,
    path: PathBuf,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens the store file at `path`, creating it and its parent directories if missing.
    /// A file left by a crash is repaired by redb on open, which can take a while for a large
    /// file. Blocks: call it at start-up, not from a request path.
    pub fn open(path: &Path) -> Result<FileStore> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Unavailable(format!("cannot create the directory {}: {err}", parent.display()))
            })?;
        }
        let shown = path.display().to_string();
        let announced = AtomicBool::new(false);
        let db = Database::builder()
            .set_repair_callback(move |session| {
                // redb walks the whole file after a crash; say why start-up is slow.
                if !announced.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %shown, "repairing the store file after an unclean shutdown");
                }
                tracing::debug!(progress = session.progress(), "store file repair");
            })
            .create(path)
            .map_err(storage)?;

        // Create the tables up front so read transactions never meet a missing table.
        let tx = begin_write(&db)?;
        tx.open_table(RECORDS).map_err(storage)?;
        tx.open_table(EXPIRY).map_err(storage)?;
        tx.open_table(TABLES).map_err(storage)?;
        tx.commit().map_err(storage)?;

        Ok(FileStore {
            db: Arc::new(db),
            writer: Arc::default(),
            readers: Workers::start("store-read", READ_THREADS).map_err(|err| {
                StoreError::Unavailable(format!("cannot start the store file readers: {err}"))
            })?,
            path: path.to_path_buf(),
        })
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the read-only `work` on a reader thread; a panic in it is an error.
    async fn read_only<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        self.readers.run(move || work(&db)).await.map_err(|err| StoreError::Internal(err.to_string()))?
    }

    /// Runs `work` against the database on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(|err| {
            // A panic inside redb or our closure: contained here, its transaction rolled back.
            tracing::error!(cause = %err, "store file task failed");
            StoreError::Internal(format!("store file task failed: {err}"))
        })?
    }
}

impl FileStore {
    /// Queues `op` for the next group commit and waits until it is durable (or failed).
    async fn submit(&self, op: Op) -> Result<bool> {
        let (sender, mut result) = oneshot::channel();
        self.writer.queue.push((op, sender));
        loop {
            let leader = tokio::select! {
                biased;
                // Another writer's batch carried ours: no need to queue for the lock again
                // (behind writers that may commit a batch of their own first).
                done = &mut result => return done.unwrap_or_else(|_| Err(lost())),
                leader = self.writer.commit.lock() => leader,
            };
            match result.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(lost()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = self.writer.queue.take(MAX_BATCH_OPS, MAX_BATCH_BYTES, |(op, _)| op.size());
            if batch.is_empty() {
                // Ours is in a batch whose committer's future was dropped mid-commit; the
                // commit still runs and reports to us.
                drop(leader);
                return result.await.unwrap_or_else(|_| Err(lost()));
            }
            let (db, writer) = (self.db.clone(), self.writer.clone());
            // The commit reports to every waiter itself, so this future may be dropped. A panic
            // drops the transaction (rolled back) and the senders, which waiters see as `lost`.
            let commit = tokio::task::spawn_blocking(move || writer.commit_batch(&db, batch));
            if let Err(err) = commit.await {
                tracing::error!(cause = %err, "store file commit task failed");
            }
        }
    }
}

/// Threads reads run on: two, so one long scan (a big `list`) leaves a thread for point reads.
/// Dedicated threads rather than tokio's blocking pool: +20% reads/s through the server at
/// c=64 in one run (see BENCHMARKS.md).
const READ_THREADS: usize = 2;

/// A queued change whose commit task failed (panicked) before reporting; it was rolled back.
fn lost() -> StoreError {
    StoreError::Internal("the store file commit task failed; the change was not applied".into())
}

/// One change waiting in the [`Writer`] queue for its group commit.
enum Op {
    /// `write` (replace) or, with `only_if_absent`, `create`.
    Put {
        database: String,
        table: String,
        record: Record,
        only_if_absent: bool,
    },
    Delete {
        database: String,
        table: String,
        key: String,
    },
}

impl Op {
    /// Roughly the bytes the change adds to a transaction, for [`MAX_BATCH_BYTES`].
    fn size(&self) -> usize {
        match self {
            Op::Put { database, table, record, .. } => {
                let metadata: usize = record
                    .metadata
                    .iter()
                    .map(|(name, field)| name.len() + field.kind.len() + field.value.len())
                    .sum();
                database.len() + table.len() + record.key.len() + record.value.len() + metadata
            }
            Op::Delete { database, table, key } => database.len() + table.len() + key.len(),
        }
    }
}

/// A queued change and where its result goes: `Ok(true)` when it changed something (for
/// `create`, that it wrote).
type Pending = (Op, oneshot::Sender<Result<bool>>);

/// Group commit: writers queue their changes; whichever holds `commit` applies the whole queue
/// (up to the batch limits) in one transaction, fsyncs once and reports to every waiter. A
/// writer alone commits at once, so there is no added latency without contention.
#[derive(Default)]
struct Writer {
    queue: CommitQueue<Pending>,
    /// Held while one writer takes a batch and commits it; never across anything else.
    commit: tokio::sync::Mutex<()>,
    /// Transactions committed by batches (each one fsync), for tests and diagnostics.
    commits: AtomicU64,
}

impl Writer {
    /// Applies `batch` and sends each waiter its result. Runs on the blocking pool.
    fn commit_batch(&self, db: &Database, batch: Vec<Pending>) {
        let (ops, senders): (Vec<Op>, Vec<_>) = batch.into_iter().unzip();
        match self.apply(db, ops) {
            Ok(results) => {
                for (sender, result) in senders.into_iter().zip(results) {
                    // A waiter that went away no longer wants its result.
                    let _ = sender.send(result);
                }
            }
            Err(err) => {
                for sender in senders {
                    let _ = sender.send(Err(err.clone()));
                }
            }
        }
    }

    /// Applies `ops` in order in one durable transaction, committed only if one of them
    /// changed something. The outer error fails the whole batch (nothing committed); an inner
    /// one fails that op alone, which then changed nothing.
    fn apply(&self, db: &Database, ops: Vec<Op>) -> Result<Vec<Result<bool>>> {
        let now = micro_core::time::unix_millis();
        let tx = begin_write(db)?;
        let results = {
            let mut tables = OpenTables {
                records: tx.open_table(RECORDS).map_err(storage)?,
                expiry: tx.open_table(EXPIRY).map_err(storage)?,
                tables: tx.open_table(TABLES).map_err(storage)?,
            };
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    Op::Put { database, table, record, only_if_absent } => {
                        tables.put(&database, &table, record, only_if_absent, now)?
                    }
                    Op::Delete { database, table, key } => Ok(tables.delete(&database, &table, &key)?),
                });
            }
            results
        };
        if results.iter().any(|result| matches!(result, Ok(true))) {
            tx.commit().map_err(storage)?;
            self.commits.fetch_add(1, Ordering::Relaxed);
        } else {
            // Nothing changed: skip the fsync.
            tx.abort().map_err(storage)?;
        }
        Ok(results)
    }
}

/// The tables of one write transaction.
struct OpenTables<'tx> {
    records: redb::Table<'tx, (&'static str, &'static str, &'static str), &'static [u8]>,
    expiry: redb::Table<'tx, (u64, &'static str, &'static str, &'static str), ()>,
    tables: redb::Table<'tx, (&'static str, &'static str), ()>,
}

impl OpenTables<'_> {
    /// Writes `record`; with `only_if_absent`, only when no live record is under its key.
    /// Returns whether it wrote. Every check comes before the first change, so an op that
    /// fails (the inner error) leaves nothing behind; a storage error fails the transaction.
    fn put(
        &mut self,
        database: &str,
        table: &str,
        record: Record,
        only_if_absent: bool,
        now: u64,
    ) -> Result<Result<bool>> {
        let key = record.key.clone();
        let location = (database, table, key.as_str());
        if only_if_absent && let Some(old) = self.records.get(location).map_err(storage)? {
            match decode_expiry(old.value(), &key) {
                Ok(at) if time::is_live(at, now) => return Ok(Ok(false)),
                Ok(_) => {}
                Err(err) => return Ok(Err(err)),
            }
        }
        let stored = StoredRecord::from_record(record, now);
        let encoded = prost::Message::encode_to_vec(&stored);
        let previous = match self.records.insert(location, encoded.as_slice()).map_err(storage)? {
            // An undecodable old record leaves at most a stale index entry, which a sweep
            // discards; it must not block overwriting the record.
            Some(old) => decode_expiry(old.value(), &key).unwrap_or(None),
            None => None,
        };
        if let Some(at) = previous.filter(|at| Some(*at) != stored.expires_at) {
            self.expiry.remove((at, location.0, location.1, location.2)).map_err(storage)?;
        }
        if let Some(at) = stored.expires_at {
            self.expiry.insert((at, location.0, location.1, location.2), ()).map_err(storage)?;
        }
        self.tables.insert((location.0, location.1), ()).map_err(storage)?;
        Ok(Ok(true))
    }

    /// Deletes the record under `key`; returns whether there was one.
    fn delete(&mut self, database: &str, table: &str, key: &str) -> Result<bool> {
        let location = (database, table, key);
        let Some(old) = self.records.remove(location).map_err(storage)? else {
            return Ok(false);
        };
        if let Some(at) = decode_expiry(old.value(), key).unwrap_or(None) {
            self.expiry.remove((at, location.0, location.1, location.2)).map_err(storage)?;
        }
        Ok(true)
    }
}

fn begin_write(db: &Database) -> Result<WriteTransaction> {
    let mut tx = db.begin_write().map_err(storage)?;
    // Immediate is redb's default; set it anyway, since "acknowledged = on disk" is the
    // contract this backend exists for.
    tx.set_durability(Durability::Immediate).map_err(storage)?;
    Ok(tx)
}

/// Visits the live records of one table matching `filter`, in key order, until `visit`
/// returns false. `visit` gets the key and the encoded record.
fn scan(
    db: &Database,
    database: &str,
    table: &str,
    filter: Filter<'_>,
    mut visit: impl FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let now = micro_core::time::unix_millis();
    let tx = db.begin_read().map_err(storage)?;
    let records = tx.open_table(RECORDS).map_err(storage)?;
    for entry in records.range((database, table, filter.prefix)..).map_err(storage)? {
        let (stored_key, bytes) = entry.map_err(storage)?;
        let (db_name, table_name, key) = stored_key.value();
        if db_name != database || table_name != table || filter.is_past(key) {
            break;
        }
        if !filter.suffix_matches(key) {
            continue;
        }
        let bytes = bytes.value();
        if time::is_live(decode_expiry(bytes, key)?, now) && !visit(key, bytes)? {
            break;
        }
    }
    Ok(())
}

#[async_trait]
impl Store for FileStore {
    async fn read(
        &self,
        database: &str,
        table: &str,
        key: &str,
        options: ReadOptions,
    ) -> Result<Vec<Record>> {
        validate::read(database, table, key, &options)?;
        let (database, table, key) = (database.to_string(), table.to_string(), key.to_string());
        self.read_only(move |db| {
            let now = micro_core::time::unix_millis();
            if !options.prefix && !options.suffix {
                let tx = db.begin_read().map_err(storage)?;
                let records = tx.open_table(RECORDS).map_err(storage)?;
                let bytes =
                    records.get((database.as_str(), table.as_str(), key.as_str())).map_err(storage)?;
                let stored = match bytes {
                    Some(bytes) => decode_record(bytes.value(), &key)?,
                    None => return Err(StoreError::NotFound),
                };
                if !time::is_live(stored.expires_at, now) {
                    return Err(StoreError::NotFound);
                }
                return Ok(vec![stored.into_record(&key, now)]);
            }

            let mut pager = Pager::for_read(&options);
            let mut found = Vec::new();
            scan(db, &database, &table, Filter::read(&key, &options), |key, bytes| {
                if pager.admit() {
                    let record = decode_record(bytes, key)?.into_record(key, now);
                    pager.charge(record.value.len());
                    found.push(record);
                }
                Ok(!pager.is_full())
            })?;
            Ok(found)
        })
        .await
    }

    async fn write(&self, database: &str, table: &str, record: Record) -> Result<()> {
        validate::write(database, table, &record)?;
        let (database, table) = (database.to_string(), table.to_string());
        self.submit(Op::Put { database, table, record, only_if_absent: false }).await.map(drop)
    }

    async fn create(&self, database: &str, table: &str, record: Record) -> Result<bool> {
        validate::write(database, table, &record)?;
        let (database, table) = (database.to_string(), table.to_string());
        self.submit(Op::Put { database, table, record, only_if_absent: true }).await
    }

    async fn delete(&self, database: &str, table: &str, key: &str) -> Result<()> {
        validate::delete(database, table, key)?;
        let (database, table, key) = (database.to_string(), table.to_string(), key.to_string());
        self.submit(Op::Delete { database, table, key }).await.map(drop)
    }

    async fn list(&self, database: &str, table: &str, options: ListOptions) -> Result<Vec<String>> {
        validate::list(database, table, &options)?;
        let (database, table) = (database.to_string(), table.to_string());
        self.read_only(move |db| {
            let mut pager = Pager::new(options.offset, options.limit);
            let mut keys = Vec::new();
            scan(db, &database, &table, Filter::list(&options), |key, _| {
                if pager.admit() {
                    keys.push(key.to_string());
                }
                Ok(!pager.is_full())
            })?;
            Ok(keys)
        })
        .await
    }

    async fn databases(&self) -> Result<Vec<String>> {
        self.read_only(|db| {
            let tx = db.begin_read().map_err(storage)?;
            let tables = tx.open_table(TABLES).map_err(storage)?;
            let mut databases: Vec<String> = Vec::new();
            for entry in tables.iter().map_err(storage)? {
                let (pair, _) = entry.map_err(storage)?;
                let (database, _) = pair.value();
                // Pairs are sorted by database first, so duplicates are adjacent.
                if databases.last().is_none_or(|last| last != database) {
                    databases.push(database.to_string());
                }
            }
            Ok(databases)
        })
        .await
    }

    async fn tables(&self, database: &str) -> Result<Vec<String>> {
        validate::database(database)?;
        let database = database.to_string();
        self.read_only(move |db| {
            let tx = db.begin_read().map_err(storage)?;
            let tables = tx.open_table(TABLES).map_err(storage)?;
            let mut names = Vec::new();
            for entry in tables.range((database.as_str(), "")..).map_err(storage)? {
                let (pair, _) = entry.map_err(storage)?;
                let (db_name, table) = pair.value();
                if db_name != database {
                    break;
                }
                names.push(table.to_string());
            }
            Ok(names)
        })
        .await
    }

    async fn sweep_expired(&self) -> Result<u64> {
        let now = micro_core::time::unix_millis();
        let mut removed = 0u64;
        loop {
            let (batch_removed, more) = self.blocking(move |db| sweep_batch(db, now)).await?;
            removed += batch_removed;
            if !more {
                return Ok(removed);
            }
        }
    }

    fn summary(&self) -> String {
        format!("file (redb) at {}", self.path.display())
    }
}

/// Removes up to [`SWEEP_BATCH`] records that expired at or before `now` in one transaction.
/// Returns how many records it removed and whether more index entries may be due.
fn sweep_batch(db: &Database, now: u64) -> Result<(u64, bool)> {
    type Due = (u64, String, String, String);
    let tx = begin_write(db)?;
    let (removed, visited) = {
        let mut records = tx.open_table(RECORDS).map_err(storage)?;
        let mut expiry = tx.open_table(EXPIRY).map_err(storage)?;

        let mut due: Vec<Due> = Vec::new();
        for entry in expiry.iter().map_err(storage)? {
            let (index_key, _) = entry.map_err(storage)?;
            let (at, database, table, key) = index_key.value();
            if at > now || due.len() == SWEEP_BATCH {
                break;
            }
            due.push((at, database.to_string(), table.to_string(), key.to_string()));
        }

        let mut removed = 0u64;
        for (at, database, table, key) in &due {
            let location = (database.as_str(), table.as_str(), key.as_str());
            expiry.remove((*at, location.0, location.1, location.2)).map_err(storage)?;
            // Only remove the record if this index entry is still its expiry; a stale entry
            // (the record was since rewritten) is just dropped.
            let current = match records.get(location).map_err(storage)? {
                Some(bytes) => decode_expiry(bytes.value(), key).unwrap_or(None),
                None => None,
            };
            if current == Some(*at) {
                records.remove(location).map_err(storage)?;
                removed += 1;
            }
        }
        (removed, due.len())
    };
    if visited == 0 {
        // Nothing was due: skip the fsync.
        tx.abort().map_err(storage)?;
    } else {
        tx.commit().map_err(storage)?;
    }
    Ok((removed, visited == SWEEP_BATCH))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn count(
        db: &Database,
        table: TableDefinition<'_, impl redb::Key + 'static, impl redb::Value + 'static>,
    ) -> u64 {
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(table).unwrap();
        redb::ReadableTableMetadata::len(&table).unwrap()
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("nested/dirs/store.redb")).unwrap();
        crate::conformance::run_all(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = FileStore::open(&path).unwrap();
            assert_eq!(store.summary(), format!("file (redb) at {}", path.display()));
            assert_eq!(store.path(), path);
            let record = Record::new("k", "v")
                .with_metadata("m", Field::new("string", "x"))
                .with_expiry(Duration::from_secs(3600));
            store.write("db", "t", record).await.unwrap();
            store.write("db", "t", Record::new("gone", "v")).await.unwrap();
            store.delete("db", "t", "gone").await.unwrap();

            let again = FileStore::open(&path).unwrap_err();
            assert!(matches!(again, StoreError::Unavailable(_)), "the file is locked while open: {again:?}");
        }

        let store = FileStore::open(&path).unwrap();
        let records = store.read("db", "t", "k", ReadOptions::default()).await.unwrap();
        assert_eq!(records[0].value, b"v");
        assert_eq!(records[0].metadata["m"], Field::new("string", "x"));
        assert!(
            records[0].expiry.is_some_and(|left| left > Duration::from_secs(3000)),
            "absolute expiry kept"
        );
        assert!(matches!(
            store.read("db", "t", "gone", ReadOptions::default()).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.tables("db").await.unwrap(), ["t"]);
        assert_eq!(store.databases().await.unwrap(), ["db"]);
    }

    /// Acknowledged writes survive the process dying without any cleanup (no destructors, no
    /// clean redb shutdown), and the file is repaired on reopen. The test re-runs its own test
    /// binary as the child that writes and then aborts.
    #[test]
    fn acknowledged_writes_survive_a_crash() {
        const CHILD: &str = "MICRO_STORE_TEST_CRASH_CHILD";
        const WRITES: usize = 20;
        if let Some(path) = std::env::var_os(CHILD) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let store = FileStore::open(Path::new(&path)).unwrap();
                for i in 0..WRITES {
                    store.write("db", "t", Record::new(format!("k{i:02}"), format!("v{i}"))).await.unwrap();
                }
                println!("acknowledged {WRITES}");
            });
            std::process::abort();
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "file::tests::acknowledged_writes_survive_a_crash",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            // Any core dump of the abort lands in the temp dir, not the source tree.
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(!child.status.success(), "the child aborts");
        assert!(stdout.contains(&format!("acknowledged {WRITES}")), "child output: {stdout}");

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = FileStore::open(&path).unwrap();
            let keys = store.list("db", "t", ListOptions::default()).await.unwrap();
            assert_eq!(keys.len(), WRITES, "every acknowledged write is there: {keys:?}");
            let last = store.read("db", "t", "k19", ReadOptions::default()).await.unwrap();
            assert_eq!(last[0].value, b"v19");
            store.write("db", "t", Record::new("after", "crash")).await.unwrap();
        });
    }

    #[tokio::test]
    async fn expiry_index_tracks_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("store.redb")).unwrap();
        let hour = Duration::from_secs(3600);
        let short = Duration::from_millis(1);

        store.write("db", "t", Record::new("a", "v").with_expiry(hour)).await.unwrap();
        store.write("db", "t", Record::new("a", "v").with_expiry(hour * 2)).await.unwrap();
        store.write("db", "t", Record::new("b", "v").with_expiry(hour)).await.unwrap();
        store.write("db", "t", Record::new("b", "v")).await.unwrap();
        store.write("db", "t", Record::new("c", "v").with_expiry(hour)).await.unwrap();
        store.delete("db", "t", "c").await.unwrap();
        assert_eq!(count(&store.db, EXPIRY), 1, "one index entry per record with a TTL, none stale");

        for key in ["x", "y", "z"] {
            store.write("db", "t", Record::new(key, "v").with_expiry(short)).await.unwrap();
        }
        tokio::time::sleep(short * 5).await;
        assert_eq!(count(&store.db, RECORDS), 5, "expired records stay until swept");
        assert_eq!(store.sweep_expired().await.unwrap(), 3);
        assert_eq!(count(&store.db, RECORDS), 2);
        assert_eq!(count(&store.db, EXPIRY), 1, "the sweep removes its index entries");
    }

    #[tokio::test]
    async fn sweep_runs_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("store.redb")).unwrap();
        let expired = micro_core::time::unix_millis() - 1;
        // Seed more than one batch of already-expired records in one transaction (one fsync,
        // not thousands): the write path cannot create records that are expired on arrival.
        let db = store.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = begin_write(&db).unwrap();
            {
                let mut records = tx.open_table(RECORDS).unwrap();
                let mut expiry = tx.open_table(EXPIRY).unwrap();
                let stored = StoredRecord {
                    value: b"v".to_vec(),
                    expires_at: Some(expired),
                    metadata: BTreeMap::new(),
                };
                let encoded = prost::Message::encode_to_vec(&stored);
                for i in 0..SWEEP_BATCH + 10 {
                    let key = format!("k{i:05}");
                    records.insert(("db", "t", key.as_str()), encoded.as_slice()).unwrap();
                    expiry.insert((expired, "db", "t", key.as_str()), ()).unwrap();
                }
                // A stale index entry whose record no longer has that expiry is dropped, not counted.
                expiry.insert((expired, "db", "t", "no-such-record"), ()).unwrap();
            }
            tx.commit().unwrap();
        })
        .await
        .unwrap();

        assert!(store.list("db", "t", ListOptions::default()).await.unwrap().is_empty(), "all invisible");
        assert_eq!(store.sweep_expired().await.unwrap(), (SWEEP_BATCH + 10) as u64);
        assert_eq!(count(&store.db, RECORDS), 0);
        assert_eq!(count(&store.db, EXPIRY), 0);
        assert_eq!(store.sweep_expired().await.unwrap(), 0);
    }

    fn commits(store: &FileStore) -> u64 {
        store.writer.commits.load(Ordering::Relaxed)
    }

    /// Polls `change` once, so it queues its change and then waits for the commit lock.
    async fn queue(change: &mut Change<'_>) {
        tokio::select! {
            biased;
            result = change => panic!("finished while the commit lock is held: {result:?}"),
            () = std::future::ready(()) => {}
        }
    }

    type Change<'a> = std::pin::Pin<Box<dyn Future<Output = Result<bool>> + Send + 'a>>;

    fn write(store: &FileStore, record: Record) -> Change<'_> {
        Box::pin(async move { store.write("db", "t", record).await.map(|()| true) })
    }

    fn create(store: &FileStore, key: &str, value: &str) -> Change<'static> {
        let (store, record) = (store.clone(), Record::new(key, value));
        Box::pin(async move { store.create("db", "t", record).await })
    }

    fn delete<'a>(store: &'a FileStore, key: &'a str) -> Change<'a> {
        Box::pin(async move { store.delete("db", "t", key).await.map(|()| true) })
    }

    /// Writers that queue while a commit is running all go in the next transaction, applied
    /// in queue order: later changes see earlier ones, and a change that fails on its own
    /// (a corrupt old record) leaves nothing behind and does not fail the others.
    #[tokio::test]
    async fn queued_writers_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("store.redb")).unwrap();
        seed_corrupt(&store, "bad").await;
        let before = commits(&store);

        let hour = Duration::from_secs(3600);
        let mut changes: Vec<Change<'_>> =
            (0..56).map(|i| write(&store, Record::new(format!("k{i:02}"), "v"))).collect();
        changes.extend([
            create(&store, "dup", "first"),
            create(&store, "dup", "second"),
            create(&store, "bad", "fixed?"),
            delete(&store, "missing"),
            write(&store, Record::new("ttl", "v").with_expiry(hour)),
            delete(&store, "ttl"),
            delete(&store, "k00"),
            create(&store, "k00", "again"),
        ]);
        let commit = store.writer.commit.lock().await;
        for change in &mut changes {
            queue(change).await;
        }
        assert_eq!(store.writer.queue.len(), 64, "every change waits in the queue");
        drop(commit);
        let results = futures::future::join_all(changes).await;

        assert_eq!(commits(&store) - before, 1, "64 writes, one transaction");
        assert!(results[..56].iter().all(|result| *result == Ok(true)), "{results:?}");
        let tail: Vec<_> = results[56..].iter().map(|result| result.as_ref().map_err(drop)).collect();
        // `true` for writes and deletes is just `Ok`; for creates, whether they wrote.
        assert_eq!(
            tail,
            [Ok(&true), Ok(&false), Err(()), Ok(&true), Ok(&true), Ok(&true), Ok(&true), Ok(&true)]
        );
        assert!(matches!(results[58], Err(StoreError::Internal(_))), "{:?}", results[58]);

        let read = |key: &'static str| store.read("db", "t", key, ReadOptions::default());
        assert_eq!(read("dup").await.unwrap()[0].value, b"first");
        assert_eq!(read("k00").await.unwrap()[0].value, b"again");
        assert!(matches!(read("ttl").await, Err(StoreError::NotFound)));
        assert!(matches!(read("bad").await, Err(StoreError::Internal(_))), "the failed create wrote nothing");
        assert_eq!(count(&store.db, RECORDS), 56 + 2, "k00..k55, dup and the corrupt record");
        assert_eq!(count(&store.db, EXPIRY), 0, "the ttl record's index entry went with it");

        // Changes that change nothing skip the fsync, alone or together.
        store.delete("db", "t", "missing").await.unwrap();
        assert!(!store.create("db", "t", Record::new("dup", "late")).await.unwrap());
        assert_eq!(commits(&store) - before, 1);
        store.write("db", "t", Record::new("alone", "v")).await.unwrap();
        assert_eq!(commits(&store) - before, 2, "a writer alone commits at once");
    }

    /// The writer committing a batch may be cancelled (its future dropped) mid-commit: the
    /// commit still completes and reports to the other writers in the batch.
    #[tokio::test]
    async fn a_cancelled_committer_still_commits_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("store.redb")).unwrap();
        let mut leader = write(&store, Record::new("leader", "v"));
        let mut follower = write(&store, Record::new("follower", "v"));

        let commit = store.writer.commit.lock().await;
        queue(&mut leader).await;
        queue(&mut follower).await;
        drop(commit);
        // The lock passes to the first waiter: the leader takes both changes and starts the
        // commit, then is dropped.
        tokio::select! {
            biased;
            result = &mut leader => assert_eq!(result, Ok(true)),
            () = std::future::ready(()) => {}
        }
        drop(leader);

        assert_eq!(follower.await, Ok(true));
        let read = store.read("db", "t", "leader", ReadOptions::default()).await.unwrap();
        assert_eq!(read[0].value, b"v", "the cancelled writer's change was committed");
        assert!(store.writer.queue.is_empty());
    }

    async fn seed_corrupt(store: &FileStore, key: &'static str) {
        let db = store.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = begin_write(&db).unwrap();
            tx.open_table(RECORDS)
                .unwrap()
                .insert(("db", "t", key), [0xff_u8, 0xff, 0xff].as_slice())
                .unwrap();
            tx.commit().unwrap();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_panicking_read_is_an_error_and_the_readers_live_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = FileStore::open(&path).unwrap();
        store.write("db", "t", Record::new("k", "v")).await.unwrap();
        for _ in 0..2 * READ_THREADS {
            let panicked = store.read_only(|_| -> Result<()> { panic!("inside a read") }).await;
            assert!(matches!(panicked, Err(StoreError::Internal(_))), "{panicked:?}");
        }
        let mut reads = Vec::new();
        for _ in 0..4 * READ_THREADS {
            reads.push(store.read("db", "t", "k", ReadOptions::default()));
        }
        for read in futures::future::join_all(reads).await {
            assert_eq!(read.unwrap()[0].value, b"v", "every reader still reads");
        }
        // The readers hold no handle on the file: it can be opened again once the store is gone.
        drop(store);
        FileStore::open(&path).expect("the file is free again");
    }

    #[tokio::test]
    async fn corrupt_records_are_internal_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("store.redb")).unwrap();
        seed_corrupt(&store, "bad").await;

        let err = store.read("db", "t", "bad", ReadOptions::default()).await.unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        // The broken record can still be overwritten or deleted.
        store.write("db", "t", Record::new("bad", "fixed")).await.unwrap();
        assert_eq!(store.read("db", "t", "bad", ReadOptions::default()).await.unwrap()[0].value, b"fixed");
        store.delete("db", "t", "bad").await.unwrap();
    }
}
