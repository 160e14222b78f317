//! [`FileEvents`]: every namespace's event logs and group positions in one redb file, each
//! publish fsync'd before it is acknowledged.
//!
//! Layout inside the file (redb tables):
//! - `events`: `(namespace, topic, sequence)` → the event (a private protobuf message: id,
//!   metadata, payload, timestamp), so a topic is one ordered range;
//! - `topics`: `(namespace, topic)` → `(last sequence, last timestamp ms)`, kept after
//!   retention removed the events, so sequences never repeat;
//! - `cursors`: `(namespace, topic, group)` → the group's settled position;
//! - `skips`: `(namespace, topic, group)` → `(to, resume)` of the group's latest replay with an
//!   end (docs/events.md#replay);
//! - `dead`: `(namespace, topic, group, sequence)` → a dead letter of the group (the event,
//!   attempts, last error, delivery times; a private protobuf message);
//! - `released`: `(namespace, topic, group, sequence)` → an event released from the dead
//!   letters back to the group, until the group settles it (so a restart delivers it still).
//!
//! Every redb call runs on tokio's blocking pool (the engine's `spawn_blocking`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::engine::Engine;
use crate::now_ms;
use crate::storage::{Append, Bounds, RETENTION_BATCH, Skip, Storage, StoredGroup, oldest_kept, over_count};
use crate::{DeadLetter, Event, EventsError, Result, Retention, Selection, TopicInfo, validate};

const EVENTS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("events");
const TOPICS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("topics");
const CURSORS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("cursors");
const SKIPS: TableDefinition<(&str, &str, &str), (u64, u64)> = TableDefinition::new("skips");
const DEAD: TableDefinition<(&str, &str, &str, u64), &[u8]> = TableDefinition::new("dead");
const RELEASED: TableDefinition<(&str, &str, &str, u64), &[u8]> = TableDefinition::new("released");

#[derive(Clone, PartialEq, prost::Message)]
struct StoredEvent {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(btree_map = "string, string", tag = "2")]
    metadata: BTreeMap<String, String>,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(uint64, tag = "4")]
    timestamp_ms: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredDeadLetter {
    #[prost(message, optional, tag = "1")]
    event: Option<StoredEvent>,
    #[prost(uint32, tag = "2")]
    attempts: u32,
    #[prost(string, tag = "3")]
    error: String,
    #[prost(uint64, tag = "4")]
    first_delivery_ms: u64,
    #[prost(uint64, tag = "5")]
    last_delivery_ms: u64,
}

fn stored_event(event: &Event) -> StoredEvent {
    StoredEvent {
        id: event.id.clone(),
        metadata: event.metadata.clone(),
        payload: event.payload.clone(),
        timestamp_ms: event.timestamp_ms,
    }
}

fn encode_dead(dead: &DeadLetter) -> Vec<u8> {
    prost::Message::encode_to_vec(&StoredDeadLetter {
        event: Some(stored_event(&dead.event)),
        attempts: dead.attempts,
        error: dead.error.clone(),
        first_delivery_ms: dead.first_delivery_ms,
        last_delivery_ms: dead.last_delivery_ms,
    })
}

fn decode_dead(bytes: &[u8], topic: &str, sequence: u64) -> Result<DeadLetter> {
    let stored: StoredDeadLetter = prost::Message::decode(bytes).map_err(|err| corrupt(&err))?;
    Ok(DeadLetter {
        event: event_of(stored.event.unwrap_or_default(), topic, sequence),
        attempts: stored.attempts,
        error: stored.error,
        first_delivery_ms: stored.first_delivery_ms,
        last_delivery_ms: stored.last_delivery_ms,
    })
}

/// The timestamp of a [`StoredEvent`] alone, decoded without copying the payload.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredTimestamp {
    #[prost(uint64, tag = "4")]
    timestamp_ms: u64,
}

fn corrupt(err: &prost::DecodeError) -> EventsError {
    EventsError::Internal(format!("a stored event cannot be decoded: {err}"))
}

fn decode(bytes: &[u8], topic: &str, sequence: u64) -> Result<Event> {
    let stored: StoredEvent = prost::Message::decode(bytes).map_err(|err| corrupt(&err))?;
    Ok(event_of(stored, topic, sequence))
}

fn event_of(stored: StoredEvent, topic: &str, sequence: u64) -> Event {
    Event {
        id: stored.id,
        topic: topic.to_string(),
        metadata: stored.metadata,
        payload: stored.payload,
        timestamp_ms: stored.timestamp_ms,
        sequence,
    }
}

/// A key of the per-group tables `dead` and `released`.
type GroupKey = (&'static str, &'static str, &'static str, u64);

/// `group`'s entries of `table` (`dead` or `released`), in sequence order, each decoded from
/// its bytes and sequence.
fn group_entries<T>(
    table: &impl ReadableTable<GroupKey, &'static [u8]>,
    (namespace, topic, group): (&str, &str, &str),
    decode: impl Fn(&[u8], u64) -> Result<T>,
) -> Result<Vec<T>> {
    let mut found = Vec::new();
    for entry in
        table.range((namespace, topic, group, 0)..=(namespace, topic, group, u64::MAX)).map_err(storage)?
    {
        let (key, bytes) = entry.map_err(storage)?;
        found.push(decode(bytes.value(), key.value().3)?);
    }
    Ok(found)
}

fn timestamp(bytes: &[u8]) -> Result<u64> {
    <StoredTimestamp as prost::Message>::decode(bytes).map(|t| t.timestamp_ms).map_err(|err| corrupt(&err))
}

/// Maps a redb error: I/O trouble may pass; anything else is a bug or corruption.
fn storage(err: impl Into<redb::Error>) -> EventsError {
    match err.into() {
        err @ (redb::Error::Io(_) | redb::Error::PreviousIo) => {
            EventsError::Unavailable(format!("events file i/o failed: {err}"))
        }
        redb::Error::DatabaseAlreadyOpen => {
            EventsError::Unavailable("the events file is already open, by this or another process".into())
        }
        err => EventsError::Internal(format!("events file: {err}")),
    }
}

/// A write transaction that commits with an fsync before `commit` returns.
fn begin_write(db: &Database) -> Result<WriteTransaction> {
    let mut tx = db.begin_write().map_err(storage)?;
    // Immediate is redb's default; set it anyway: "acknowledged = on disk" is the contract.
    tx.set_durability(Durability::Immediate).map_err(storage)?;
    Ok(tx)
}

/// Removes up to [`RETENTION_BATCH`] of the topic's oldest events that `retention` no
/// longer keeps; `last` is the topic's last sequence.
fn retain(
    events: &mut Table<'_, (&'static str, &'static str, u64), &'static [u8]>,
    namespace: &str,
    topic: &str,
    last: u64,
    retention: &Retention,
    now: u64,
) -> Result<u64> {
    let cutoff = oldest_kept(retention, now);
    let mut doomed = Vec::new();
    {
        let range = events.range((namespace, topic, 0)..=(namespace, topic, u64::MAX)).map_err(storage)?;
        for entry in range {
            let (key, bytes) = entry.map_err(storage)?;
            let sequence = key.value().2;
            let left = last - sequence + 1;
            let too_many = over_count(retention, left) > 0;
            if doomed.len() as u64 >= RETENTION_BATCH || !(too_many || timestamp(bytes.value())? < cutoff) {
                break;
            }
            doomed.push(sequence);
        }
    }
    for sequence in &doomed {
        events.remove((namespace, topic, *sequence)).map_err(storage)?;
    }
    Ok(doomed.len() as u64)
}

pub(crate) struct FileStorage {
    db: Database,
    path: PathBuf,
    /// A non-durable commit (an auto-ack position) awaits a durable one.
    deferred: AtomicBool,
}

impl Drop for FileStorage {
    /// Makes deferred positions durable on close: an empty durable commit covers them.
    fn drop(&mut self) {
        if !self.deferred.load(Ordering::Acquire) {
            return;
        }
        if let Err(err) = begin_write(&self.db).and_then(|tx| tx.commit().map_err(storage)) {
            tracing::warn!(cause = %err, path = %self.path.display(), "cannot save consumer positions on close");
        }
    }
}

impl FileStorage {
    fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                EventsError::Unavailable(format!("cannot create the directory {}: {err}", parent.display()))
            })?;
        }
        let db = Database::create(path).map_err(storage)?;
        // Create the tables up front so read transactions never meet a missing table.
        let tx = begin_write(&db)?;
        tx.open_table(EVENTS).map_err(storage)?;
        tx.open_table(TOPICS).map_err(storage)?;
        tx.open_table(CURSORS).map_err(storage)?;
        tx.open_table(SKIPS).map_err(storage)?;
        tx.open_table(DEAD).map_err(storage)?;
        tx.open_table(RELEASED).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(Self { db, path: path.to_path_buf(), deferred: AtomicBool::new(false) })
    }
}

impl FileStorage {
    /// Commits `tx`, tracking whether a non-durable commit awaits a durable one. The flag is
    /// set while `tx` is open, so flag updates follow redb's one-writer-at-a-time order.
    fn commit(&self, tx: WriteTransaction, durable: bool) -> Result<()> {
        // A durable commit also makes every earlier non-durable one durable.
        let before = self.deferred.swap(!durable, Ordering::AcqRel);
        tx.commit().map_err(|err| {
            self.deferred.store(before || !durable, Ordering::Release);
            storage(err)
        })
    }
}

/// The sequences stored of `topic` in `events`, whose last assigned one `topics` holds (none
/// yet: `1..=0`; all removed by retention: `last + 1..=last`).
fn topic_bounds(
    topics: &impl ReadableTable<(&'static str, &'static str), (u64, u64)>,
    events: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    namespace: &str,
    topic: &str,
) -> Result<Bounds> {
    let last = topics.get((namespace, topic)).map_err(storage)?.map_or(0, |v| v.value().0);
    let first =
        match events.range((namespace, topic, 0)..=(namespace, topic, u64::MAX)).map_err(storage)?.next() {
            Some(entry) => entry.map_err(storage)?.0.value().2,
            None => last + 1,
        };
    Ok(Bounds { first, last })
}

impl Storage for FileStorage {
    fn append(&self, batch: Vec<Append>, retention: &Retention) -> Result<Vec<Event>> {
        let tx = begin_write(&self.db)?;
        let mut stored = Vec::with_capacity(batch.len());
        let mut keys = Vec::with_capacity(batch.len());
        {
            let mut topics = tx.open_table(TOPICS).map_err(storage)?;
            let mut events = tx.open_table(EVENTS).map_err(storage)?;
            for Append { namespace, topic, event } in batch {
                let (namespace, topic) = (namespace.as_str(), topic.as_str());
                let (last, last_ms) =
                    topics.get((namespace, topic)).map_err(storage)?.map_or((0, 0), |v| v.value());
                let sequence = last + 1;
                let timestamp_ms = last_ms.max(event.timestamp_ms);
                let record = StoredEvent {
                    id: event.id,
                    metadata: event.metadata,
                    payload: event.payload,
                    timestamp_ms,
                };
                let bytes = prost::Message::encode_to_vec(&record);
                events.insert((namespace, topic, sequence), bytes.as_slice()).map_err(storage)?;
                topics.insert((namespace, topic), (sequence, timestamp_ms)).map_err(storage)?;
                stored.push(Event {
                    id: record.id,
                    topic: topic.to_string(),
                    metadata: record.metadata,
                    payload: record.payload,
                    timestamp_ms,
                    sequence,
                });
                keys.push((namespace.to_string(), topic.to_string()));
            }
            // Each topic appended to applies its retention once, at its last sequence.
            let now = now_ms();
            let mut done = std::collections::HashSet::new();
            for ((namespace, topic), event) in keys.iter().zip(&stored).rev() {
                if done.insert((namespace, topic)) {
                    retain(&mut events, namespace, topic, event.sequence, retention, now)?;
                }
            }
        }
        self.commit(tx, true)?;
        Ok(stored)
    }

    fn read_from(&self, namespace: &str, topic: &str, from: u64, limit: usize) -> Result<Vec<Event>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let events = tx.open_table(EVENTS).map_err(storage)?;
        let mut found = Vec::new();
        for entry in events.range((namespace, topic, from)..=(namespace, topic, u64::MAX)).map_err(storage)? {
            if found.len() >= limit {
                break;
            }
            let (key, bytes) = entry.map_err(storage)?;
            found.push(decode(bytes.value(), topic, key.value().2)?);
        }
        Ok(found)
    }

    fn bounds(&self, namespace: &str, topic: &str) -> Result<Bounds> {
        let tx = self.db.begin_read().map_err(storage)?;
        let (topics, events) =
            (tx.open_table(TOPICS).map_err(storage)?, tx.open_table(EVENTS).map_err(storage)?);
        topic_bounds(&topics, &events, namespace, topic)
    }

    fn sequence_at(&self, namespace: &str, topic: &str, timestamp_ms: u64) -> Result<u64> {
        let bounds = self.bounds(namespace, topic)?;
        let tx = self.db.begin_read().map_err(storage)?;
        let events = tx.open_table(EVENTS).map_err(storage)?;
        // Timestamps never decrease along the sequence: binary search the first at or after.
        let (mut low, mut high) = (bounds.first, bounds.last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let before = match events.get((namespace, topic, middle)).map_err(storage)? {
                Some(bytes) => timestamp(bytes.value())? < timestamp_ms,
                // Removed by retention since `bounds`: older than anything left.
                None => true,
            };
            if before { low = middle + 1 } else { high = middle }
        }
        Ok(low)
    }

    fn load_cursor(&self, namespace: &str, topic: &str, group: &str) -> Result<Option<u64>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let cursors = tx.open_table(CURSORS).map_err(storage)?;
        Ok(cursors.get((namespace, topic, group)).map_err(storage)?.map(|v| v.value()))
    }

    fn save_cursor(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        settled: u64,
        durable: bool,
    ) -> Result<()> {
        let mut tx = begin_write(&self.db)?;
        if !durable {
            tx.set_durability(Durability::None).map_err(storage)?;
        }
        tx.open_table(CURSORS)
            .map_err(storage)?
            .insert((namespace, topic, group), settled)
            .map_err(storage)?;
        self.commit(tx, durable)
    }

    fn save_replay(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        settled: u64,
        skip: Option<Skip>,
    ) -> Result<()> {
        let tx = begin_write(&self.db)?;
        {
            let key = (namespace, topic, group);
            tx.open_table(CURSORS).map_err(storage)?.insert(key, settled).map_err(storage)?;
            let mut skips = tx.open_table(SKIPS).map_err(storage)?;
            match skip {
                Some(skip) => skips.insert(key, (skip.to, skip.resume)).map(drop),
                None => skips.remove(key).map(drop),
            }
            .map_err(storage)?;
        }
        self.commit(tx, true)
    }

    fn load_skip(&self, namespace: &str, topic: &str, group: &str) -> Result<Option<Skip>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let skips = tx.open_table(SKIPS).map_err(storage)?;
        Ok(skips.get((namespace, topic, group)).map_err(storage)?.map(|v| {
            let (to, resume) = v.value();
            Skip { to, resume }
        }))
    }

    fn topics(&self, namespace: &str, max: usize) -> Result<Vec<TopicInfo>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let topics = tx.open_table(TOPICS).map_err(storage)?;
        let events = tx.open_table(EVENTS).map_err(storage)?;
        let mut found = Vec::new();
        // Topic names are [A-Za-z0-9._-], all sorting before '~'.
        for entry in topics.range((namespace, "")..=(namespace, "~")).map_err(storage)?.take(max) {
            let (key, value) = entry.map_err(storage)?;
            let (name, (last, last_ms)) = (key.value().1.to_string(), value.value());
            let first = match events
                .range((namespace, name.as_str(), 0)..=(namespace, name.as_str(), u64::MAX))
                .map_err(storage)?
                .next()
            {
                Some(entry) => entry.map_err(storage)?.0.value().2,
                None => last + 1,
            };
            let count = last + 1 - first;
            found.push(TopicInfo {
                name,
                events: count,
                last_sequence: last,
                last_timestamp_ms: if count == 0 { 0 } else { last_ms },
            });
        }
        Ok(found)
    }

    fn groups(&self, max: usize) -> Result<Vec<StoredGroup>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let cursors = tx.open_table(CURSORS).map_err(storage)?;
        let (topics, events) =
            (tx.open_table(TOPICS).map_err(storage)?, tx.open_table(EVENTS).map_err(storage)?);
        let (skips, dead) = (tx.open_table(SKIPS).map_err(storage)?, tx.open_table(DEAD).map_err(storage)?);
        let released = tx.open_table(RELEASED).map_err(storage)?;
        let mut found = Vec::new();
        for entry in cursors.iter().map_err(storage)?.take(max) {
            let (key, settled) = entry.map_err(storage)?;
            let (namespace, topic, group) = key.value();
            let bounds = topic_bounds(&topics, &events, namespace, topic)?;
            let skip = skips.get((namespace, topic, group)).map_err(storage)?.map(|v| {
                let (to, resume) = v.value();
                Skip { to, resume }
            });
            let range = (namespace, topic, group, 0)..=(namespace, topic, group, u64::MAX);
            found.push(StoredGroup {
                namespace: namespace.to_string(),
                topic: topic.to_string(),
                group: group.to_string(),
                settled: settled.value(),
                skip,
                bounds,
                dead: dead.range(range.clone()).map_err(storage)?.count() as u64,
                released: released.range(range).map_err(storage)?.count() as u64,
            });
        }
        Ok(found)
    }

    fn sweep(&self, retention: &Retention) -> Result<u64> {
        let topics: Vec<(String, String, u64)> = {
            let tx = self.db.begin_read().map_err(storage)?;
            let topics = tx.open_table(TOPICS).map_err(storage)?;
            let mut all = Vec::new();
            for entry in topics.iter().map_err(storage)? {
                let (key, value) = entry.map_err(storage)?;
                let (namespace, topic) = key.value();
                all.push((namespace.to_string(), topic.to_string(), value.value().0));
            }
            all
        };
        let now = now_ms();
        let mut removed = 0;
        for (namespace, topic, last) in topics {
            loop {
                let tx = begin_write(&self.db)?;
                let step = {
                    let mut events = tx.open_table(EVENTS).map_err(storage)?;
                    retain(&mut events, &namespace, &topic, last, retention, now)?
                };
                tx.commit().map_err(storage)?;
                removed += step;
                if step < RETENTION_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    fn add_dead_letter(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        dead: &DeadLetter,
        max: usize,
    ) -> Result<Vec<u64>> {
        let tx = begin_write(&self.db)?;
        let mut removed = Vec::new();
        {
            let sequence = dead.event.sequence;
            let mut released = tx.open_table(RELEASED).map_err(storage)?;
            released.remove((namespace, topic, group, sequence)).map_err(storage)?;
            let mut letters = tx.open_table(DEAD).map_err(storage)?;
            letters
                .insert((namespace, topic, group, sequence), encode_dead(dead).as_slice())
                .map_err(storage)?;
            let range = (namespace, topic, group, 0)..=(namespace, topic, group, u64::MAX);
            let count = letters.range(range.clone()).map_err(storage)?.count();
            for entry in letters.range(range).map_err(storage)?.take(count.saturating_sub(max)) {
                removed.push(entry.map_err(storage)?.0.value().3);
            }
            for sequence in &removed {
                letters.remove((namespace, topic, group, *sequence)).map_err(storage)?;
            }
        }
        self.commit(tx, true)?;
        Ok(removed)
    }

    fn dead_letters(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<DeadLetter>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let letters = tx.open_table(DEAD).map_err(storage)?;
        group_entries(&letters, (namespace, topic, group), |bytes, sequence| {
            decode_dead(bytes, topic, sequence)
        })
    }

    fn take_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
        release: bool,
    ) -> Result<Vec<DeadLetter>> {
        // redb has one writer at a time: reading inside the write transaction keeps the
        // selection and the removal one step.
        let tx = begin_write(&self.db)?;
        let chosen = {
            let mut letters = tx.open_table(DEAD).map_err(storage)?;
            let all = group_entries(&letters, (namespace, topic, group), |bytes, sequence| {
                decode_dead(bytes, topic, sequence)
            })?;
            let chosen: Vec<DeadLetter> =
                validate::selected(&all, which, group)?.into_iter().map(|n| all[n].clone()).collect();
            let mut released = tx.open_table(RELEASED).map_err(storage)?;
            for dead in &chosen {
                let key = (namespace, topic, group, dead.event.sequence);
                letters.remove(key).map_err(storage)?;
                if release {
                    let bytes = prost::Message::encode_to_vec(&stored_event(&dead.event));
                    released.insert(key, bytes.as_slice()).map_err(storage)?;
                }
            }
            chosen
        };
        if chosen.is_empty() {
            tx.abort().map_err(storage)?;
        } else {
            self.commit(tx, true)?;
        }
        Ok(chosen)
    }

    fn released(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<Event>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let released = tx.open_table(RELEASED).map_err(storage)?;
        group_entries(&released, (namespace, topic, group), |bytes, sequence| decode(bytes, topic, sequence))
    }

    fn settle_released(&self, namespace: &str, topic: &str, group: &str, sequence: u64) -> Result<()> {
        let tx = begin_write(&self.db)?;
        tx.open_table(RELEASED)
            .map_err(storage)?
            .remove((namespace, topic, group, sequence))
            .map_err(storage)?;
        self.commit(tx, true)
    }

    fn summary(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// An [`Events`](crate::Events) backend in one redb file. Cloning is cheap and shares it.
#[derive(Clone)]
pub struct FileEvents {
    engine: Arc<Engine>,
    path: PathBuf,
}

impl std::fmt::Debug for FileEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileEvents").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FileEvents {
    /// Opens the events file at `path` with the default [`Retention`], creating it and its
    /// parent directories if missing. Blocks: call it at start-up.
    pub fn open(path: &Path) -> Result<FileEvents> {
        Self::open_with(path, Retention::default())
    }

    /// As [`FileEvents::open`], keeping events as `retention` says.
    pub fn open_with(path: &Path, retention: Retention) -> Result<FileEvents> {
        let storage = FileStorage::open(path)?;
        Ok(FileEvents {
            engine: Arc::new(Engine::new(Arc::new(storage), retention)),
            path: path.to_path_buf(),
        })
    }

    /// The path of the events file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

crate::engine::delegate_events!(FileEvents);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conformance::{manual, next, nothing_within};
    use crate::{ConsumeOptions, Events, PublishOptions, Start};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let events = FileEvents::open(&dir.path().join("events.db")).unwrap();
        assert!(events.summary().starts_with("file "));
        crate::conformance::run_all(Arc::new(events)).await;
    }

    /// Reopen keeps every acknowledged publish and each group's position: a group resumes at
    /// its first unacked event (events acked beyond it come again: at least once).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reopen_keeps_events_and_group_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("events.db");
        let mut ids = Vec::new();
        {
            let events = FileEvents::open(&path).unwrap();
            for n in 1..=10u8 {
                ids.push(events.publish("micro", "t", vec![n], PublishOptions::default()).await.unwrap().id);
            }
            let long = ConsumeOptions { ack_wait: Duration::from_secs(60), ..manual("g", None) };
            let mut consumer = events.consume("micro", "t", long).await.unwrap();
            for _ in 1..=5 {
                next(&mut consumer).await.ack().await.unwrap();
            }
            let _sixth = next(&mut consumer).await; // never acked
            next(&mut consumer).await.ack().await.unwrap(); // 7, acked past the gap
            // A group created at "newest", and an auto-ack group that took everything (its
            // position saved lazily, made durable on close).
            let late = ConsumeOptions { group: Some("late".into()), ..ConsumeOptions::default() };
            let _newest = events.consume("micro", "t", late).await.unwrap();
            let mut done =
                events.consume("micro", "t", crate::conformance::from_start("done")).await.unwrap();
            for _ in 1..=10 {
                next(&mut done).await;
            }
            assert_eq!(
                FileEvents::open(&path).unwrap_err(),
                EventsError::Unavailable(
                    "the events file is already open, by this or another process".into()
                )
            );
        }

        let events = FileEvents::open(&path).unwrap();
        let stored = events.read("micro", "t", 0, 0).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            ids,
            "every publish kept, ids too"
        );
        let published = events.publish("micro", "t", vec![11], PublishOptions::default()).await.unwrap();
        assert_eq!(published.sequence, 11, "sequences continue after reopen");
        // No group is open yet: each reports what is stored after its persisted position (g's 7,
        // acked past its gap, comes again, so it counts).
        let lags = events.groups().await.unwrap();
        assert_eq!(
            lags.iter().map(|lag| (lag.group.as_str(), lag.pending, lag.unacked)).collect::<Vec<_>>(),
            [("done", 1, Some(0)), ("g", 6, Some(0)), ("late", 1, Some(0))],
            "the groups' lag from their persisted positions"
        );

        // `start` is ignored for a group that already has a position.
        let newest = ConsumeOptions { start: Start::Newest, ..manual("g", None) };
        let mut consumer = events.consume("micro", "t", newest).await.unwrap();
        let resumed = next(&mut consumer).await;
        assert_eq!((resumed.event.sequence, resumed.event.id.as_str()), (6, ids[5].as_str()));
        let mut done = events.consume("micro", "t", crate::conformance::from_start("done")).await.unwrap();
        assert_eq!(
            next(&mut done).await.event.sequence,
            11,
            "a fully acked group resumes after its last event"
        );
        let mut late = events
            .consume("micro", "t", ConsumeOptions { group: Some("late".into()), ..ConsumeOptions::default() })
            .await
            .unwrap();
        assert_eq!(next(&mut late).await.event.sequence, 11, "newest was fixed when the group was created");
        nothing_within(&mut late, Duration::from_millis(50), "nothing after 11").await;
    }

    /// Dead letters survive a restart, and so does a release the group has not settled yet:
    /// the reopened group delivers the released event once, then nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reopen_keeps_dead_letters_and_releases() {
        use crate::{Nack, Selection};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let long = ConsumeOptions { ack_wait: Duration::from_secs(60), ..manual("g", None) };
        let mut ids = Vec::new();
        {
            let events = FileEvents::open(&path).unwrap();
            for n in 1..=2u8 {
                ids.push(events.publish("micro", "t", vec![n], PublishOptions::default()).await.unwrap().id);
            }
            let mut consumer = events.consume("micro", "t", long.clone()).await.unwrap();
            for _ in 1..=2 {
                next(&mut consumer).await.nack_with(Nack::permanent("boom")).await.unwrap();
            }
        }
        {
            let events = FileEvents::open(&path).unwrap();
            let dead = events.dead_letters("micro", "t", "g").await.unwrap();
            assert_eq!(
                dead.iter().map(|d| (d.event.id.clone(), d.error.as_str())).collect::<Vec<_>>(),
                [(ids[0].clone(), "boom"), (ids[1].clone(), "boom")],
                "dead letters kept across a restart"
            );
            let released = events.release("micro", "t", "g", &Selection::Ids(vec![ids[1].clone()])).await;
            assert_eq!(released.unwrap(), [ids[1].clone()]);
        }
        let events = FileEvents::open(&path).unwrap();
        assert_eq!(events.dead_letters("micro", "t", "g").await.unwrap().len(), 1);
        let mut consumer = events.consume("micro", "t", long).await.unwrap();
        let delivery = next(&mut consumer).await;
        assert_eq!(
            (delivery.event.id.as_str(), delivery.attempt),
            (ids[1].as_str(), 1),
            "the release survived"
        );
        delivery.ack().await.unwrap();
        nothing_within(&mut consumer, Duration::from_millis(200), "settled: not delivered again").await;
        drop(consumer);
        let mut consumer = events.consume("micro", "t", manual("g", None)).await.unwrap();
        nothing_within(&mut consumer, Duration::from_millis(200), "nor after reopening the group").await;
    }

    /// A replay survives a restart: a group replayed with an end, reopened halfway through, still
    /// stops at the end and skips what it had settled before the replay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_keeps_a_replay() {
        use crate::{Position, Replay};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let long = ConsumeOptions { ack_wait: Duration::from_secs(60), ..manual("g", None) };
        {
            let events = FileEvents::open(&path).unwrap();
            for n in 1..=6u8 {
                events.publish("micro", "t", vec![n], PublishOptions::default()).await.unwrap();
            }
            let mut consumer = events.consume("micro", "t", long.clone()).await.unwrap();
            for _ in 1..=6 {
                next(&mut consumer).await.ack().await.unwrap();
            }
            let replay = Replay { from: Position::Sequence(2), to: Some(Position::Sequence(4)) };
            events.replay("micro", "t", "g", &replay).await.unwrap();
            next(&mut consumer).await.ack().await.unwrap(); // 2
        }
        let events = FileEvents::open(&path).unwrap();
        let mut consumer = events.consume("micro", "t", long).await.unwrap();
        for expected in [3, 4] {
            let delivery = next(&mut consumer).await;
            assert_eq!(delivery.event.sequence, expected, "the rest of the replay");
            delivery.ack().await.unwrap();
        }
        nothing_within(&mut consumer, Duration::from_millis(200), "not past its end: 5 and 6 were settled")
            .await;
        events.publish("micro", "t", vec![7], PublishOptions::default()).await.unwrap();
        assert_eq!(next(&mut consumer).await.event.sequence, 7, "then new events");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_on_publish_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let events = FileEvents::open_with(&path, Retention { max_age: None, max_events: Some(3) }).unwrap();
        for n in 1..=5u8 {
            events.publish("micro", "t", vec![n], PublishOptions::default()).await.unwrap();
        }
        let kept = events.read("micro", "t", 0, 0).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3, 4, 5]);
        let mut consumer = events.consume("micro", "t", crate::conformance::from_start("g")).await.unwrap();
        assert_eq!(next(&mut consumer).await.event.sequence, 3, "removed events are skipped");
        drop((consumer, events));

        // Events stamped long ago, kept while there is no age limit ...
        let events = FileEvents::open_with(&path, Retention { max_age: None, max_events: None }).unwrap();
        let old = PublishOptions { timestamp_ms: Some(1_000), ..PublishOptions::default() };
        for _ in 0..2 {
            events.publish("micro", "old", vec![], old.clone()).await.unwrap();
        }
        drop(events);
        // ... are swept, on every topic, once reopened with one; the rest stays.
        let events = FileEvents::open_with(
            &path,
            Retention { max_age: Some(Duration::from_secs(60)), max_events: None },
        )
        .unwrap();
        assert_eq!(events.sweep().await.unwrap(), 2);
        assert!(events.read("micro", "old", 0, 0).await.unwrap().is_empty());
        assert_eq!(events.read("micro", "t", 0, 0).await.unwrap().len(), 3);
        assert_eq!(
            events.publish("micro", "old", vec![], PublishOptions::default()).await.unwrap().sequence,
            3
        );
    }
}
