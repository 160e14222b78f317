//! The events service: durable, ordered event streams per namespace and topic, consumed by
//! groups that share the load and acknowledge what they processed.
//!
//! [`Events`] is the one trait every backend implements; its contract is written on the trait
//! and checked for every backend by `conformance`. Services hold it as `Arc<dyn Events>`.
//!
//! Layout:
//! - this file: the domain types ([`Event`], [`PublishOptions`], [`ConsumeOptions`],
//!   [`Start`], [`Retention`], [`Delivery`], [`Consumer`], [`Nack`], [`DeadLetter`],
//!   [`Selection`], [`Replay`], [`Replayed`], [`TopicInfo`], [`GroupLag`]), [`EventsError`],
//!   the [`Events`] trait and the limits;
//! - [`validate`]: the input limits every backend enforces, in one place;
//! - `engine`: consumer groups (cursor, in-flight table, redelivery) over a `storage::Storage`
//!   log, shared by the embedded backends;
//! - [`memory`]: [`memory::MemoryEvents`], the log in memory (tests, `--events memory`);
//! - [`mod@file`]: [`file::FileEvents`], the log in one redb file, fsync'd before a publish
//!   is acknowledged;
//! - [`grpc`]: the `events.Stream` and `events.Store` gRPC services over any [`Events`];
//! - `conformance` (under `cfg(test)` or the `conformance` feature): the shared suite.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod engine;
pub mod file;
pub mod grpc;
pub mod memory;
mod storage;
pub mod validate;

pub use validate::{
    MAX_EVENT_BYTES, MAX_GROUP_BYTES, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_TOPIC_BYTES,
};

/// Events [`Events::read`] returns when asked for none in particular (the original's default).
pub const DEFAULT_READ_LIMIT: usize = 250;
/// Most events one [`Events::read`] returns.
pub const MAX_READ_LIMIT: usize = 1000;
/// Retention default: events older than this are removed.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Retention default: a topic keeps at most this many events, the oldest removed first.
pub const DEFAULT_MAX_EVENTS: u64 = 1_000_000;
/// Unacknowledged deliveries one group may have out at once; a consumer of a group at the
/// limit waits for an ack, a nack or an ack-wait to run out (NATS' `max_ack_pending`).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Ack wait when none is given.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Dead letters one group keeps (docs/events.md#dead-letters): a group at the limit makes room
/// for a new one by removing its oldest (lowest sequence on the embedded backends, earliest
/// dead-lettered on NATS), with a warning in the server log.
pub const MAX_DEAD_LETTERS: usize = 1000;
/// Longest nack reason kept; a longer one is cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 4096;
/// Most topics [`Events::topics`] lists (the first in name order); a namespace with more is
/// listed in part.
pub const MAX_TOPICS: usize = 10_000;
/// Most consumer groups [`Events::groups`] reports (the first by namespace, topic and group);
/// the rest are left out, with a warning in the server log. Each is three series of the
/// server's metrics (docs/observability.md), so this also bounds those.
pub const MAX_GROUPS: usize = 1000;

/// A new event id for an event stamped `timestamp_ms`: unique, sorting roughly by time. Every
/// backend names its events this way.
pub fn new_event_id(timestamp_ms: u64) -> String {
    storage::new_id(timestamp_ms)
}

/// What the server log says when a group gives an event up: its retry limit ran out
/// (`exhausted`) or it was nacked as permanent; kept as a dead letter (`grouped`) or, for a
/// consumer without a group, dropped. Every backend logs these words.
pub fn given_up(exhausted: bool, grouped: bool) -> &'static str {
    match (exhausted, grouped) {
        (true, true) => "event not acknowledged within its retry limit; dropped to the group's dead letters",
        (true, false) => "event not acknowledged within its retry limit; dropped",
        (false, true) => "event nacked as permanent; dropped to the group's dead letters",
        (false, false) => "event nacked as permanent; dropped",
    }
}

/// Now in unix milliseconds, as events are stamped.
pub fn now_ms() -> u64 {
    micro_core::time::unix_millis()
}

/// The result of every events operation.
pub type Result<T, E = EventsError> = std::result::Result<T, E>;

/// One stored event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Unique; the same on every delivery of the event.
    pub id: String,
    pub topic: String,
    pub metadata: BTreeMap<String, String>,
    pub payload: Vec<u8>,
    /// Unix milliseconds; non-decreasing along a topic's sequence.
    pub timestamp_ms: u64,
    /// Position in the topic, from 1, in publish order, without gaps.
    pub sequence: u64,
}

/// What [`Events::publish`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub sequence: u64,
    pub timestamp_ms: u64,
}

/// Optional parts of a publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishOptions {
    pub metadata: BTreeMap<String, String>,
    /// Unix milliseconds; `None` = now. Raised to the topic's latest timestamp if earlier, so
    /// time order and publish order agree.
    pub timestamp_ms: Option<u64>,
}

/// Where a new group starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// Only events published after the group was created.
    #[default]
    Newest,
    /// At this sequence (1 = the beginning; earlier events removed by retention are skipped).
    Sequence(u64),
    /// At the first event whose timestamp is at or after this unix-milliseconds time.
    Time(u64),
}

/// How [`Events::consume`] consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Consumers with the same group share its events, each event going to one of them, and
    /// the group's position is persisted. `None` = a private group of this consumer alone,
    /// forgotten when it is dropped.
    pub group: Option<String>,
    /// Where the group starts when it has no position yet; ignored for a known group.
    pub start: Start,
    /// Acknowledge every event as it is delivered.
    pub auto_ack: bool,
    /// With manual ack: an event not acked within this time is delivered again.
    pub ack_wait: Duration,
    /// With manual ack: redeliveries before an event is given up on (moved to a named group's
    /// dead letters; logged and dropped for a consumer without a group); `Some(n)` = at most
    /// `n + 1` deliveries, `None` = unlimited.
    pub retry_limit: Option<u32>,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            group: None,
            start: Start::Newest,
            auto_ack: true,
            ack_wait: DEFAULT_ACK_WAIT,
            retry_limit: None,
        }
    }
}

/// How long and how many events each topic keeps; removal happens on publish (for the topic
/// published to) and by [`Events::sweep`] (for every topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `None` = keep regardless of age.
    pub max_age: Option<Duration>,
    /// `None` = keep regardless of count.
    pub max_events: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: Some(DEFAULT_MAX_AGE), max_events: Some(DEFAULT_MAX_EVENTS) }
    }
}

/// Why an events operation failed. Messages are lowercase and may name internals: log them,
/// send clients only what [`grpc`]'s mapping sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// An ack or nack named an event that is not awaiting one (acked already, given up on,
    /// or never delivered to that group).
    #[error("not found")]
    NotFound,
    /// The request broke a limit of [`validate`]; the message says which and how.
    #[error("{0}")]
    Invalid(String),
    /// The backend cannot serve right now (I/O error, file locked); retrying may succeed.
    #[error("events unavailable: {0}")]
    Unavailable(String),
    /// The backend failed in a way retrying will not fix (corrupt data, a bug).
    #[error("events failed: {0}")]
    Internal(String),
}

/// How a consumer rejects a delivered event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nack {
    /// Do not retry: the event goes to the group's dead letters at once (a consumer without a
    /// group drops it with a warning).
    pub permanent: bool,
    /// Why the consumer failed; kept as the dead letter's error, cut to [`MAX_REASON_BYTES`].
    pub reason: String,
}

impl Nack {
    /// A permanent nack: dead-letter the event at once, with `reason`.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self { permanent: true, reason: reason.into() }
    }

    /// A nack to be retried (within the retry limit), with `reason`.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self { permanent: false, reason: reason.into() }
    }

    /// The reason as kept: at most [`MAX_REASON_BYTES`], cut at a character boundary.
    pub fn kept_reason(&self) -> String {
        let mut end = self.reason.len().min(MAX_REASON_BYTES);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        self.reason[..end].to_string()
    }
}

/// An event a named group gave up on: its retry limit ran out, or a consumer nacked it as
/// permanent. Kept until released or dropped (docs/events.md#dead-letters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetter {
    pub event: Event,
    /// Deliveries to the group before it was given up on.
    pub attempts: u32,
    /// The reason of the last nack that gave one; empty otherwise.
    pub error: String,
    /// Unix milliseconds of the first and the last delivery.
    pub first_delivery_ms: u64,
    pub last_delivery_ms: u64,
}

/// Which dead letters a release or drop acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter of the group.
    All,
    /// These event ids; every one must be a dead letter of the group, else nothing changes.
    Ids(Vec<String>),
}

/// An event of a topic, named by its sequence or by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The event with this sequence.
    Sequence(u64),
    /// Unix milliseconds: as a replay's start, the first event at or after it; as its end, the
    /// last event at or before it.
    Time(u64),
}

/// What [`Events::replay`] replays: the events from `from` up to `to` (inclusive; `None` = no
/// end, the group carries on through every later event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub from: Position,
    pub to: Option<Position>,
}

/// The sequences a replay covers, inclusive, as the topic stood when it began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// Events stored in that range (retention may have removed some before `first_sequence`).
    pub events: u64,
}

/// Where a replay restarts a group whose position is `settled` (every event up to it settled),
/// and, for a replay with an end (`bounded`), the `(to, resume)` it skips afterwards: it
/// starts at `range`'s first event or at the group's first unsettled one if that is earlier
/// (nothing in flight is lost), and after a bounded range goes on at its first unsettled event
/// (`resume`) rather than at `to + 1`, when that is further. Every backend decides through this
/// (docs/events.md#replay).
pub fn replay_restart(settled: u64, range: &Replayed, bounded: bool) -> (u64, Option<(u64, u64)>) {
    let start = range.first_sequence.min(settled.saturating_add(1));
    let resume = settled.saturating_add(1);
    let skip = (bounded && resume > range.last_sequence + 1).then_some((range.last_sequence, resume));
    (start, skip)
}

/// One topic of a namespace, as [`Events::topics`] lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// Events stored now.
    pub events: u64,
    /// The latest sequence assigned (also when retention removed that event since).
    pub last_sequence: u64,
    /// The timestamp of the latest event, unix milliseconds; 0 when it is not stored any more.
    pub last_timestamp_ms: u64,
}

/// Where one named consumer group stands, as [`Events::groups`] reports it (the server's
/// `micro_events_group_*` metrics, docs/observability.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLag {
    pub namespace: String,
    pub topic: String,
    pub group: String,
    /// The group's lag: events stored after its position that it has not settled yet (not
    /// delivered, or delivered and not acknowledged), events released or replayed to it and not
    /// yet settled included (not on NATS, which counts only its consumer's own pending and
    /// unacknowledged messages).
    pub pending: u64,
    /// Delivered and not yet acknowledged, when the backend knows (the embedded backends know
    /// only the deliveries of this process).
    pub unacked: Option<u64>,
    /// Dead letters kept, when the backend knows (on NATS: dead-letter messages stored, so an
    /// event given up on twice counts twice).
    pub dead: Option<u64>,
}

/// `groups` as [`Events::groups`] returns them: in (namespace, topic, group) order, at most
/// [`MAX_GROUPS`], with a warning when some were left out. Every backend reports through it.
pub fn reported_groups(mut groups: Vec<GroupLag>) -> Vec<GroupLag> {
    groups.sort_by(|a, b| (&a.namespace, &a.topic, &a.group).cmp(&(&b.namespace, &b.topic, &b.group)));
    if groups.len() > MAX_GROUPS {
        tracing::warn!(
            groups = groups.len(),
            limit = MAX_GROUPS,
            "more consumer groups than are reported; the rest are left out of the metrics"
        );
        groups.truncate(MAX_GROUPS);
    }
    groups
}

/// Settles one delivered event; implemented by each backend.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self, id: &str) -> Result<()>;
    async fn nack(&self, id: &str, nack: Nack) -> Result<()>;
}

/// One delivery of an event to a consumer.
pub struct Delivery {
    pub event: Event,
    /// 1 on the first delivery, counting up on redeliveries.
    pub attempt: u32,
    /// `None` when the consumer auto-acks.
    acker: Option<Arc<dyn Acker>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event)
            .field("attempt", &self.attempt)
            .field("manual_ack", &self.acker.is_some())
            .finish()
    }
}

impl Delivery {
    /// A delivery settled by `acker` (`None` = already acknowledged).
    pub fn new(event: Event, attempt: u32, acker: Option<Arc<dyn Acker>>) -> Self {
        Self { event, attempt, acker }
    }

    /// Acknowledges the event: it is never delivered to this group again. A no-op with
    /// auto-ack; [`EventsError::NotFound`] when the ack wait ran out and the event was given up
    /// on or acked after a redelivery.
    pub async fn ack(&self) -> Result<()> {
        match &self.acker {
            Some(acker) => acker.ack(&self.event.id).await,
            None => Ok(()),
        }
    }

    /// Rejects the event: it is delivered again at once, subject to the retry limit. A no-op
    /// with auto-ack.
    pub async fn nack(&self) -> Result<()> {
        self.nack_with(Nack::default()).await
    }

    /// Rejects the event as `nack` says: retried (within the retry limit) or, when permanent,
    /// moved to the group's dead letters at once; the reason is kept as the last error. A
    /// no-op with auto-ack.
    pub async fn nack_with(&self, nack: Nack) -> Result<()> {
        match &self.acker {
            Some(acker) => acker.nack(&self.event.id, nack).await,
            None => Ok(()),
        }
    }
}

/// The deliveries of one consumer, in publish order apart from redeliveries. Ends only on an
/// error of the backend; dropping it leaves the group, and the events it had not acked are
/// delivered again to the group's other members at once (not after their ack wait).
pub struct Consumer {
    inner: Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>>,
}

impl Consumer {
    /// A consumer reading from `stream`.
    pub fn new(stream: impl Stream<Item = Result<Delivery>> + Send + 'static) -> Self {
        Self { inner: Box::pin(stream) }
    }

    /// The next delivery; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Durable, ordered event logs, one per `(namespace, topic)`, with consumer groups.
///
/// # Contract
///
/// - **Durability.** When [`publish`](Events::publish) returns `Ok`, the event is stored as
///   durably as the backend promises (the file backend: fsync'd, concurrent publishes sharing
///   one commit), and it is visible to [`read`](Events::read) and to consumers.
/// - **Order.** Each topic numbers its events 1, 2, 3 ... in publish order; reads and first
///   deliveries follow that order. Timestamps never decrease along it.
/// - **Isolation.** Namespaces never see each other's topics, events or groups.
/// - **Groups.** Every event reaches every group; within a group each event goes to one
///   member at a time. With auto-ack it is delivered once; with manual ack it stays in flight
///   until acked, and is delivered again (same id, any member) after `ack_wait` or at once on
///   a nack, up to `retry_limit` times. When a consumer is
///   dropped, the events in flight to it become deliverable to the other members at once.
///   A named group's position (everything up to the first unsettled event) is persisted:
///   durably before an ack returns, lazily for auto-ack deliveries (a crash may deliver a
///   few auto-acked events again); a group reopened later resumes there, and events settled
///   beyond an unsettled one may be delivered again after a restart (at least once).
/// - **Dead letters.** A named group's event whose retry limit runs out (the nack or ack wait
///   of its last allowed delivery), or that is nacked as [`Nack::permanent`], becomes one of
///   the group's dead letters (settled for the group) with its attempts, last reason and
///   delivery times, stored as durably as events; a consumer without a group drops it with a
///   warning instead. A group keeps at most [`MAX_DEAD_LETTERS`], removing its oldest to make
///   room. [`release`](Events::release) hands dead letters back to the group, each delivered
///   once more (attempt 1, same id, retry limit applying afresh), ahead of new events;
///   [`drop_dead_letters`](Events::drop_dead_letters) removes them. A selection naming an id
///   that is not a dead letter of the group fails with [`EventsError::Invalid`] and changes
///   nothing.
/// - **Replay** (docs/events.md#replay). [`replay`](Events::replay) moves a named group that
///   exists back to `from`, atomically with respect to its deliveries and acks: its members
///   (running or not) get the events from `from` on again, in order, once each, ahead of new
///   events, then carry on — without `to`, through every later event; with `to`, where the
///   group was before the replay (or at `to + 1` if that is further). A delivery in flight at
///   that moment whose event is replayed is superseded: the event comes again with the replay
///   (attempt 1) and an ack of the old delivery fails with [`EventsError::NotFound`] (on NATS, a
///   delivery another server holds stays in flight, so its event may come once more). Nothing
///   in flight is lost: deliveries outside the replay stay in flight, or (the embedded engine)
///   come again too. Released dead letters not yet delivered stay ahead of the replay; dead
///   letters are left alone (a replayed event that fails again replaces its dead letter). The
///   replay is stored as durably as an ack. An unknown group, a topic without events, `from`
///   after `to` or after the topic's last event, a sequence 0 or a time in the future fail
///   with [`EventsError::Invalid`] and change nothing.
/// - **Topics.** [`topics`](Events::topics) lists the topics of one namespace that have had
///   events, in name order, at most [`MAX_TOPICS`].
/// - **Groups' lag.** [`groups`](Events::groups) reports every named group of every namespace
///   (groups without a name are private to one consumer and left out) with its
///   [`GroupLag::pending`] events — with the group's position persisted and no member holding
///   deliveries, what is stored after that position — in (namespace, topic, group) order, at
///   most [`MAX_GROUPS`]. It reads a moment's state: counts may be off by what is in motion.
/// - **Retention.** Events beyond [`Retention`] are removed oldest first; a group whose next
///   event was removed continues with the oldest one left.
/// - **Validation.** Every backend applies [`validate`] and rejects bad input with
///   [`EventsError::Invalid`], changing nothing.
#[async_trait]
pub trait Events: Send + Sync + 'static {
    /// Appends an event to `topic` in `namespace`.
    async fn publish(
        &self,
        namespace: &str,
        topic: &str,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<Published>;

    /// Stored events of `topic` in publish order: skip `offset`, return at most `limit`
    /// (0 = [`DEFAULT_READ_LIMIT`], capped at [`MAX_READ_LIMIT`]).
    async fn read(&self, namespace: &str, topic: &str, limit: usize, offset: u64) -> Result<Vec<Event>>;

    /// Joins (or creates) a group on `topic` and streams its deliveries.
    async fn consume(&self, namespace: &str, topic: &str, options: ConsumeOptions) -> Result<Consumer>;

    /// Acknowledges event `id` delivered to `group` (empty = the private groups of the
    /// namespace's consumers of `topic`), as [`Delivery::ack`].
    async fn ack(&self, namespace: &str, topic: &str, group: &str, id: &str) -> Result<()>;

    /// Rejects event `id` delivered to `group`, as [`Delivery::nack`].
    async fn nack(&self, namespace: &str, topic: &str, group: &str, id: &str) -> Result<()> {
        self.nack_with(namespace, topic, group, id, Nack::default()).await
    }

    /// Rejects event `id` delivered to `group`, as [`Delivery::nack_with`]; returns once a
    /// permanent (or last allowed) nack's dead letter is stored.
    async fn nack_with(&self, namespace: &str, topic: &str, group: &str, id: &str, nack: Nack) -> Result<()>;

    /// The dead letters of named `group` on `topic`, in sequence order (at most
    /// [`MAX_DEAD_LETTERS`]); empty for a group that has none or does not exist.
    async fn dead_letters(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<DeadLetter>>;

    /// Hands the selected dead letters back to `group` (each delivered once more, attempt 1);
    /// returns their ids in sequence order.
    async fn release(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
    ) -> Result<Vec<String>>;

    /// Removes the selected dead letters; returns their ids in sequence order.
    async fn drop_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
    ) -> Result<Vec<String>>;

    /// Moves named `group` back to `replay.from` (see the contract above); returns what the
    /// replay covers.
    async fn replay(&self, namespace: &str, topic: &str, group: &str, replay: &Replay) -> Result<Replayed>;

    /// The topics of `namespace` that have had events, in name order, at most [`MAX_TOPICS`].
    async fn topics(&self, namespace: &str) -> Result<Vec<TopicInfo>>;

    /// The named groups of every namespace and where they stand, in (namespace, topic, group)
    /// order, at most [`MAX_GROUPS`] (through [`reported_groups`]).
    async fn groups(&self) -> Result<Vec<GroupLag>>;

    /// Applies retention to every topic; returns how many events were removed.
    async fn sweep(&self) -> Result<u64>;

    /// One line for start-up logs, e.g. `file /home/me/.micro/events.db`.
    fn summary(&self) -> String;
}
