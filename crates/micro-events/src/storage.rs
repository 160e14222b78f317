//! The log under the embedded backends: per `(namespace, topic)` an append-only run of events
//! numbered from 1, plus the persisted group positions, each named group's dead letters and
//! the events released from them back to the group (docs/events.md#dead-letters). Synchronous; the engine calls it on
//! the blocking pool.
//!
//! Retention only ever removes a topic's oldest events, so a topic's stored sequences are
//! always one contiguous range `first..=last`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{DeadLetter, Event, Result, Retention, Selection, TopicInfo};

/// An event as a publish hands it to the log, before it has a sequence.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) id: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) payload: Vec<u8>,
    /// Requested unix milliseconds; raised to the topic's latest.
    pub(crate) timestamp_ms: u64,
}

/// One event of an [`Storage::append`] batch and where it goes.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    pub(crate) namespace: String,
    pub(crate) topic: String,
    pub(crate) event: NewEvent,
}

/// The sequence range a topic holds: `first..=last`; empty when `first > last`. `last` is the
/// latest sequence ever assigned, also when retention removed the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// What a group does after a replay with an end (docs/events.md#replay): once it has read up
/// to `to`, it goes on at `resume` rather than at `to + 1` (events in between it had settled
/// before the replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    pub(crate) to: u64,
    pub(crate) resume: u64,
}

/// A named group as storage knows it: its position and what it has waiting besides the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredGroup {
    pub(crate) namespace: String,
    pub(crate) topic: String,
    pub(crate) group: String,
    /// The persisted position (see [`Storage::load_cursor`]).
    pub(crate) settled: u64,
    pub(crate) skip: Option<Skip>,
    /// The topic's sequence range now.
    pub(crate) bounds: Bounds,
    /// Dead letters kept.
    pub(crate) dead: u64,
    /// Events released back to the group, not yet settled.
    pub(crate) released: u64,
}

/// Events of the log a group at position `settled` (with `skip`) has still to read, of those
/// stored in `bounds`.
pub(crate) fn unread(bounds: Bounds, settled: u64, skip: Option<Skip>) -> u64 {
    // Stored events in from..=to.
    let span = |from: u64, to: u64| (to.min(bounds.last) + 1).saturating_sub(from.max(bounds.first));
    match skip {
        Some(skip) if settled < skip.to => span(settled + 1, skip.to) + span(skip.resume, bounds.last),
        Some(skip) => span((settled + 1).max(skip.resume), bounds.last),
        None => span(settled + 1, bounds.last),
    }
}

pub(crate) trait Storage: Send + Sync + 'static {
    /// Appends each event of `batch`, in order, with its topic's next sequence, durably and
    /// all at once (one commit: all or none), applying `retention` to the topics appended to
    /// in the same step. Returns the stored events in `batch` order.
    fn append(&self, batch: Vec<Append>, retention: &Retention) -> Result<Vec<Event>>;

    /// Up to `limit` events with sequence `from` or later, in order.
    fn read_from(&self, namespace: &str, topic: &str, from: u64, limit: usize) -> Result<Vec<Event>>;

    fn bounds(&self, namespace: &str, topic: &str) -> Result<Bounds>;

    /// The first stored sequence whose timestamp is at or after `timestamp_ms`; `last + 1`
    /// when there is none.
    fn sequence_at(&self, namespace: &str, topic: &str, timestamp_ms: u64) -> Result<u64>;

    /// The persisted position of a group: every sequence up to it is settled.
    fn load_cursor(&self, namespace: &str, topic: &str, group: &str) -> Result<Option<u64>>;

    /// Saves a group's position; `durable` false lets the backend defer making it durable
    /// (until its next durable write or its close), so a crash may lose it.
    fn save_cursor(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        settled: u64,
        durable: bool,
    ) -> Result<()>;

    /// Moves a group back (a replay): its position becomes `settled` and its skip `skip` (none
    /// removes one), durably, in one commit.
    fn save_replay(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        settled: u64,
        skip: Option<Skip>,
    ) -> Result<()>;

    /// The skip of a group's latest bounded replay, if any (inert once the group is past it).
    fn load_skip(&self, namespace: &str, topic: &str, group: &str) -> Result<Option<Skip>>;

    /// The topics of `namespace` that have had events, in name order, at most `max`.
    fn topics(&self, namespace: &str, max: usize) -> Result<Vec<TopicInfo>>;

    /// The named groups of every namespace (those with a persisted position), in (namespace,
    /// topic, group) order, at most `max`.
    fn groups(&self, max: usize) -> Result<Vec<StoredGroup>>;

    /// Stores `dead` as a dead letter of `group` (replacing one of the same sequence) and
    /// forgets a released copy of its event, durably. Past `max` dead letters, removes the
    /// lowest sequences and returns them.
    fn add_dead_letter(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        dead: &DeadLetter,
        max: usize,
    ) -> Result<Vec<u64>>;

    /// The dead letters of `group`, in sequence order.
    fn dead_letters(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<DeadLetter>>;

    /// Removes the dead letters of `group` that `which` selects (as
    /// [`crate::validate::selected`]: a bad id changes nothing) and, with `release`, records
    /// their events as released to the group, in one durable commit. Returns them.
    fn take_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
        release: bool,
    ) -> Result<Vec<DeadLetter>>;

    /// The events released to `group` and not yet settled, in sequence order.
    fn released(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<Event>>;

    /// Forgets a released event once the group settled it, durably.
    fn settle_released(&self, namespace: &str, topic: &str, group: &str, sequence: u64) -> Result<()>;

    /// Applies `retention` to every topic; returns the events removed.
    fn sweep(&self, retention: &Retention) -> Result<u64>;

    fn summary(&self) -> String;
}

/// The oldest timestamp `retention` keeps at `now_ms` (0 = any).
pub(crate) fn oldest_kept(retention: &Retention, now_ms: u64) -> u64 {
    retention
        .max_age
        .map_or(0, |age: Duration| now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)))
}

/// How many of `count` events over the count limit of `retention`.
pub(crate) fn over_count(retention: &Retention, count: u64) -> u64 {
    retention.max_events.map_or(0, |max| count.saturating_sub(max))
}

/// Most events one append or sweep step removes, so retention never holds the writer long.
pub(crate) const RETENTION_BATCH: u64 = 1024;

/// A unique event id: the publish time and 64 random bits, hex, so ids sort roughly by time.
pub(crate) fn new_id(timestamp_ms: u64) -> String {
    let mut random = [0u8; 8];
    // Without OS randomness fall back to the clock's nanoseconds: still unique in practice
    // together with the millisecond prefix and the caller's sequence.
    if getrandom::fill(&mut random).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        random[..4].copy_from_slice(&nanos.to_le_bytes());
    }
    format!("{timestamp_ms:012x}{:016x}", u64::from_le_bytes(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_counts_stored_events_after_the_position_and_past_a_skip() {
        let bounds = Bounds { first: 3, last: 10 };
        assert_eq!(unread(bounds, 5, None), 5, "6 to 10");
        assert_eq!(unread(bounds, 0, None), 8, "retention removed 1 and 2");
        assert_eq!(unread(bounds, 10, None), 0);
        assert_eq!(unread(Bounds { first: 1, last: 0 }, 0, None), 0, "an empty topic");
        let skip = Some(Skip { to: 6, resume: 9 });
        assert_eq!(unread(bounds, 4, skip), 4, "5, 6, then 9 and 10");
        assert_eq!(unread(bounds, 7, skip), 2, "past the replay's end: from 9");
    }
}
