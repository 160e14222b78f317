//! [`NatsEvents`]: the [`Events`] contract on NATS JetStream.
//!
//! # Mapping
//!
//! - **Topic → stream.** Each `(namespace, topic)` is one stream (file storage, limits
//!   retention, discard old) capturing one subject (see `names`), so the stream sequence is the
//!   topic's gap-free sequence. [`Retention`] becomes the stream's `max_age` / `max_msgs`;
//!   JetStream enforces it by itself, so [`Events::sweep`] has nothing to do. Retention age
//!   counts from when NATS stored the event (not from an explicit event timestamp).
//! - **Event → message.** The payload is the message body; the id, the timestamp (unix ms) and
//!   each metadata entry travel as headers `Micro-Event-Id`, `Micro-Timestamp` and
//!   `Micro-Meta-<key>` (percent-encoded where NATS needs it). A message some other publisher
//!   put on the subject still reads as an event: its id is derived from its sequence, its
//!   timestamp is when NATS stored it.
//! - **Publish** is a JetStream publish; its `PubAck` is the durability point (as durable as
//!   the stream's storage and replicas: with the defaults, in the NATS server's file store).
//! - **Groups.** A named group is a durable pull consumer (`AckExplicit`, the group's `ack_wait`,
//!   `max_deliver` = retry limit + 1, `max_ack_pending` = [`micro_events::MAX_IN_FLIGHT`]); it
//!   starts where [`Start`] says when it is created and keeps its position (NATS' ack floor)
//!   afterwards. A consumer without a group gets a consumer of its own, deleted when it is
//!   dropped. Every member pulls one message at a time and only when asked for its next
//!   delivery, so members of one group share events as the embedded engine's do (see
//!   `consumer`).
//! - **Dead letters** (docs/events.md#dead-letters) of a topic's groups live in one more stream
//!   per topic (`micro-dead~…`, a subject per group, at most [`micro_events::MAX_DEAD_LETTERS`]
//!   messages per subject, the oldest discarded first): each message is the event (payload and
//!   headers as above) plus `Micro-Sequence`, `Micro-Attempts`, `Micro-Error`,
//!   `Micro-First-Delivery` and `Micro-Last-Delivery`. A member gives an event up by storing its
//!   dead letter, then acking it on its group's consumer. A release copies the dead letters to
//!   the topic's work-queue stream of released events (`micro-released~…`, a subject and a
//!   durable consumer `r~<group>` per group), deletes them from the dead letters, and wakes the
//!   group's members with a core NATS message; members pull released events ahead of new ones
//!   (see `consumer`). Copy-then-delete: a crash between the two leaves an event both released
//!   and dead (at least once). First-delivery times are those this process saw.
//! - **Replay** (docs/events.md#replay) copies the replayed events to the group's released
//!   events (the work-queue stream releases of dead letters use, above), so members get them
//!   ahead of new events, in order, once each, and wakes the members. The group's consumer is
//!   left alone: what it delivered up to the moment of the replay (`delivered`, its last
//!   delivered sequence) is copied from `from` on, and it carries on after that by itself — the
//!   same outcome as moving the position back, without deleting a consumer members are pulling
//!   from. Deliveries this process has in flight of copied events are acked and forgotten
//!   (superseded: an ack of them fails with not found); those of other processes stay in
//!   flight, so their events may come once more (at least once). A replay copies at most
//!   [`MAX_REPLAY_EVENTS`].
//! - **Topics** lists the namespace's event streams (`STREAM.LIST` filtered by the namespace's
//!   subjects), with each stream's message count and last sequence; the last event's time is
//!   when NATS stored it (an explicit publish timestamp is not read back, to keep the listing
//!   to one request per 256 topics).
//! - **Groups' lag** ([`Events::groups`]) lists the event streams (`STREAM.LIST`) and, of those
//!   with consumers, their consumers (`CONSUMER.LIST`); each group consumer (`g~…`, the group
//!   named in full by its description) reports `num_pending + num_ack_pending` as pending and
//!   `num_ack_pending` as unacked. Dead letters are the per-subject message counts of the
//!   dead-letter streams holding any (`STREAM.INFO` with a subjects filter). Events released or
//!   replayed to a group and not yet settled are not counted. Streams are taken in (namespace,
//!   topic) order until [`micro_events::MAX_GROUPS`] groups are found.
//! - **Start** `Newest` = deliver policy `new`; `Sequence(n)` = by start sequence `n`;
//!   `Time(ms)` = by start sequence of the first event whose `Micro-Timestamp` is at or after
//!   `ms`, found by binary search over the stream (timestamps never decrease along it, and
//!   NATS' own storage time would not honour explicit timestamps).
//!
//! # Timestamps and order with several publishers
//!
//! The contract raises a publish's timestamp to the topic's latest, so timestamps never
//! decrease along the sequence. Each publish therefore carries `Nats-Expected-Last-Sequence`
//! with the sequence of the event whose timestamp it compared against, and NATS stores it only
//! if that is still the stream's last sequence. On "wrong last sequence" another publisher (on
//! another server) got in first: the publisher re-reads the stream's tail (its last sequence
//! and that event's timestamp) and tries again. A publish that timed out and reaches NATS late
//! is refused the same way if anything was stored after its expected sequence. Within one process,
//! publishes to one topic take turns through a lock that also caches the tail, so they never
//! race each other and need no extra round trip; only publishers on different servers ever
//! retry. The cost is one publish in flight per topic per process.
//!
//! # Failures
//!
//! A NATS server that goes away makes operations fail with [`EventsError::Unavailable`] at
//! once (while the client knows it is disconnected) or within
//! [`crate::OPERATION_TIMEOUT`]; nothing waits forever. The client reconnects by itself;
//! consumers keep pulling once it is back, and a stream or consumer that disappeared with
//! the server's state is created again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_nats::jetstream::context::{PublishErrorKind, RequestErrorKind};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode, consumer};
use async_nats::{HeaderMap, HeaderValue};
use futures::StreamExt;
use micro_events::{
    ConsumeOptions, Consumer, DEFAULT_READ_LIMIT, DeadLetter, Event, Events, EventsError, GroupLag,
    MAX_DEAD_LETTERS, MAX_GROUPS, MAX_READ_LIMIT, MAX_TOPICS, Nack, Position, PublishOptions, Published,
    Replay, Replayed, Result, Retention, Selection, Start, TopicInfo, validate,
};
use serde_json::json;

use crate::connection::{ConnectError, Connection, OPERATION_TIMEOUT, connect};
use crate::consumer::{self as member, InFlight};
use crate::names;

/// Header holding the event id.
pub(crate) const ID_HEADER: &str = "Micro-Event-Id";
/// Header holding the event timestamp, unix milliseconds.
pub(crate) const TIMESTAMP_HEADER: &str = "Micro-Timestamp";
/// Prefix of the headers holding metadata, one per entry.
pub(crate) const METADATA_PREFIX: &str = "Micro-Meta-";
/// Header of a dead letter or released event holding the event's sequence in its topic.
pub(crate) const SEQUENCE_HEADER: &str = "Micro-Sequence";
/// Headers of a dead letter: attempts, last error (percent-encoded), delivery times (unix ms).
const ATTEMPTS_HEADER: &str = "Micro-Attempts";
const ERROR_HEADER: &str = "Micro-Error";
const FIRST_DELIVERY_HEADER: &str = "Micro-First-Delivery";
const LAST_DELIVERY_HEADER: &str = "Micro-Last-Delivery";
/// Most events one replay copies (see the module docs); a larger replay is refused: narrow it
/// with an end.
pub const MAX_REPLAY_EVENTS: u64 = 100_000;
/// How long a replay may take to copy its events before it fails as unavailable (the events
/// copied by then are delivered all the same).
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// Copies a replay has JetStream acknowledge at once.
const REPLAY_WINDOW: usize = 256;
/// Publishes one topic may lose to publishers elsewhere before giving up.
const MAX_PUBLISH_CONFLICTS: usize = 100;
/// Direct gets a read keeps in flight.
const READ_CONCURRENCY: usize = 64;
/// How long a consumer of no group lives on the server without pulling (it is deleted when
/// dropped; this only cleans up after a crash).
const PRIVATE_INACTIVE: Duration = Duration::from_secs(60 * 60);

/// How [`NatsEvents`] creates streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsOptions {
    pub retention: Retention,
    /// Copies of each stream in a NATS cluster (1 for a single server; 3 for a cluster that
    /// survives a node).
    pub replicas: usize,
}

impl Default for EventsOptions {
    fn default() -> Self {
        Self { retention: Retention::default(), replicas: 1 }
    }
}

/// Events on a NATS JetStream server.
#[derive(Clone)]
pub struct NatsEvents {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) connection: Connection,
    pub(crate) js: jetstream::Context,
    options: EventsOptions,
    topics: Mutex<HashMap<TopicKey, Arc<Topic>>>,
    /// The in-flight deliveries of this process's members of each named group.
    groups: Mutex<HashMap<(String, String, String), Weak<InFlight>>>,
    /// The in-flight deliveries of this process's consumers without a group, per topic.
    private: Mutex<HashMap<TopicKey, Vec<Weak<InFlight>>>>,
}

/// `(namespace, topic)`.
type TopicKey = (String, String);

/// What this process knows about one topic's stream.
pub(crate) struct Topic {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) stream: String,
    pub(crate) subject: String,
    /// The stream is known to exist with our config.
    ready: std::sync::atomic::AtomicBool,
    /// The dead-letter and released-events streams are known to exist.
    dead_ready: std::sync::atomic::AtomicBool,
    released_ready: std::sync::atomic::AtomicBool,
    /// The sequence and timestamp of the stream's last event, as far as this process knows;
    /// `None` = ask the server. Held by a publish from start to end.
    tail: tokio::sync::Mutex<Option<Tail>>,
}

#[derive(Debug, Clone, Copy)]
struct Tail {
    sequence: u64,
    timestamp_ms: u64,
}

impl std::fmt::Debug for NatsEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEvents").field("url", &self.inner.connection.url()).finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(cause: impl std::fmt::Display) -> EventsError {
    EventsError::Unavailable(cause.to_string())
}

/// Bounds `work` by [`OPERATION_TIMEOUT`]; what runs over is unavailable.
pub(crate) async fn bounded<T>(
    connection: &Connection,
    what: &str,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, work).await.unwrap_or_else(|_| {
        Err(unavailable(format!(
            "{what}: no answer from NATS at {} within {}s",
            connection.url(),
            OPERATION_TIMEOUT.as_secs()
        )))
    })
}

/// The answer of a JetStream API call: `Err` = it could not be made (unavailable), `Ok(Err)` =
/// JetStream refused with an error code.
pub(crate) type Api<T> = Result<std::result::Result<T, jetstream::Error>>;

impl NatsEvents {
    /// Releases (`release`) or drops the selected dead letters of `group`.
    async fn take_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
        release: bool,
    ) -> Result<Vec<String>> {
        validate::dead_letters(namespace, topic, group)?;
        validate::selection(which)?;
        self.inner.ready()?;
        let topic = self.inner.topic(namespace, topic);
        let what = if release { "release dead letters" } else { "drop dead letters" };
        bounded(&self.inner.connection, what, self.inner.take_dead_letters(&topic, group, which, release))
            .await
    }

    /// Replays `group` on `topic` (see the module docs).
    async fn replay_group(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        replay: &Replay,
    ) -> Result<Replayed> {
        validate::replay(namespace, topic, group, replay, micro_events::now_ms())?;
        self.inner.ready()?;
        let topic = self.inner.topic(namespace, topic);
        let replaying = tokio::time::timeout(REPLAY_TIMEOUT, self.inner.replay(&topic, group, replay));
        replaying.await.unwrap_or_else(|_| {
            Err(unavailable(format!(
                "replay: not done within {}s; the events copied by then are delivered",
                REPLAY_TIMEOUT.as_secs()
            )))
        })
    }

    /// Connects to the NATS server at `url` with default retention, one replica; fails
    /// within [`crate::CONNECT_TIMEOUT`] and when the server lacks JetStream.
    pub async fn connect(url: &str) -> std::result::Result<Self, ConnectError> {
        Self::open(connect(url).await?, EventsOptions::default()).await
    }

    /// Events over an open connection; checks that the server has JetStream.
    pub async fn open(
        connection: Connection,
        options: EventsOptions,
    ) -> std::result::Result<Self, ConnectError> {
        let js = crate::connection::jetstream(&connection).await?;
        let (version, max_payload) = connection.server();
        let needed = micro_events::MAX_EVENT_BYTES + micro_events::MAX_METADATA_BYTES * 3 + 1024;
        if max_payload < needed {
            tracing::warn!(
                url = %connection.url(),
                max_payload,
                needed,
                %version,
                "the NATS server's max_payload is below the largest event micro accepts; such events \
                 will be refused: set max_payload: 2MB in nats-server.conf"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                connection,
                js,
                options,
                topics: Mutex::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                private: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    pub(crate) fn ready(&self) -> Result<()> {
        self.connection.ready().map_err(unavailable)
    }

    fn topic(&self, namespace: &str, topic: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .entry((namespace.to_string(), topic.to_string()))
            .or_insert_with(|| {
                Arc::new(Topic {
                    namespace: namespace.to_string(),
                    name: topic.to_string(),
                    stream: names::stream(namespace, topic),
                    subject: names::events_subject(namespace, topic),
                    ready: std::sync::atomic::AtomicBool::new(false),
                    dead_ready: std::sync::atomic::AtomicBool::new(false),
                    released_ready: std::sync::atomic::AtomicBool::new(false),
                    tail: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// Calls the JetStream API `subject` (without the `$JS.API.` prefix).
    pub(crate) async fn api<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: &serde_json::Value,
    ) -> Api<T> {
        match self.js.request::<_, _, Response<T>>(subject.clone(), body).await {
            Ok(Response::Ok(value)) => Ok(Ok(value)),
            Ok(Response::Err { error }) => Ok(Err(error)),
            Err(err) if err.kind() == RequestErrorKind::NoResponders => Err(unavailable(format!(
                "JetStream at {} did not answer {subject} (is JetStream enabled?)",
                self.connection.url()
            ))),
            Err(err) => Err(unavailable(format!("JetStream {subject} at {}: {err}", self.connection.url()))),
        }
    }

    /// Creates `topic`'s stream unless this process already did. An existing stream keeps its
    /// settings (an operator may have raised its replicas, say) except the retention limits,
    /// which follow ours.
    pub(crate) async fn ensure_stream(&self, topic: &Topic) -> Result<()> {
        use std::sync::atomic::Ordering;
        if topic.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let retention = self.options.retention;
        let max_age = retention.max_age.unwrap_or(Duration::ZERO);
        let max_messages = retention.max_events.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX));
        let config = stream::Config {
            name: topic.stream.clone(),
            description: Some(format!("micro events: namespace {}, topic {}", topic.namespace, topic.name)),
            subjects: vec![topic.subject.clone()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age,
            max_messages,
            num_replicas: self.options.replicas,
            allow_direct: true,
            ..stream::Config::default()
        };
        let body = serde_json::to_value(&config).map_err(|err| EventsError::Internal(err.to_string()))?;
        let created: std::result::Result<stream::Info, _> =
            self.api(format!("STREAM.CREATE.{}", topic.stream), &body).await?;
        match created {
            Ok(_) => {}
            Err(err) if err.error_code() == ErrorCode::STREAM_NAME_EXIST => {
                let existing: std::result::Result<stream::Info, _> =
                    self.api(format!("STREAM.INFO.{}", topic.stream), &json!({})).await?;
                let mut existing = existing
                    .map_err(|err| unavailable(format!("stream info {}: {err}", topic.stream)))?
                    .config;
                if existing.max_age != max_age || existing.max_messages != max_messages {
                    tracing::info!(stream = %topic.stream, "setting the stream's limits to the configured retention");
                    existing.max_age = max_age;
                    existing.max_messages = max_messages;
                    let body = serde_json::to_value(&existing)
                        .map_err(|err| EventsError::Internal(err.to_string()))?;
                    let updated: std::result::Result<stream::Info, _> =
                        self.api(format!("STREAM.UPDATE.{}", topic.stream), &body).await?;
                    updated.map_err(|err| unavailable(format!("update stream {}: {err}", topic.stream)))?;
                }
            }
            Err(err) => return Err(unavailable(format!("create stream {}: {err}", topic.stream))),
        }
        topic.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates `topic`'s dead-letter stream (or, with `released`, its released-events stream)
    /// unless this process already did; an existing one is kept as it is.
    async fn ensure_side_stream(&self, topic: &Topic, released: bool) -> Result<()> {
        use std::sync::atomic::Ordering;
        let (ready, config) = if released {
            let config = stream::Config {
                name: names::released_stream(&topic.namespace, &topic.name),
                description: Some(format!(
                    "micro events released from dead letters: namespace {}, topic {}",
                    topic.namespace, topic.name
                )),
                subjects: vec![names::released_subject(&topic.namespace, &topic.name, "*")],
                retention: RetentionPolicy::WorkQueue,
                ..stream::Config::default()
            };
            (&topic.released_ready, config)
        } else {
            let config = stream::Config {
                name: names::dead_stream(&topic.namespace, &topic.name),
                description: Some(format!(
                    "micro events dead letters: namespace {}, topic {}",
                    topic.namespace, topic.name
                )),
                subjects: vec![names::dead_subject(&topic.namespace, &topic.name, "*")],
                retention: RetentionPolicy::Limits,
                max_messages_per_subject: i64::try_from(MAX_DEAD_LETTERS).unwrap_or(i64::MAX),
                ..stream::Config::default()
            };
            (&topic.dead_ready, config)
        };
        if ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let config = stream::Config {
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            num_replicas: self.options.replicas,
            allow_direct: true,
            ..config
        };
        let body = serde_json::to_value(&config).map_err(|err| EventsError::Internal(err.to_string()))?;
        let created: std::result::Result<stream::Info, _> =
            self.api(format!("STREAM.CREATE.{}", config.name), &body).await?;
        match created {
            Ok(_) => {}
            Err(err) if err.error_code() == ErrorCode::STREAM_NAME_EXIST => {}
            Err(err) => return Err(unavailable(format!("create stream {}: {err}", config.name))),
        }
        ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Stores `dead` as a dead letter of `group` (acknowledged by JetStream before this returns).
    pub(crate) async fn add_dead_letter(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        dead: &DeadLetter,
    ) -> Result<()> {
        let topic = self.topic(namespace, topic);
        self.ensure_side_stream(&topic, false).await?;
        let mut headers = copy_headers(&dead.event);
        headers.insert(ATTEMPTS_HEADER, dead.attempts.to_string().as_str());
        if !dead.error.is_empty() {
            headers.insert(ERROR_HEADER, names::encode_header_value(&dead.error).as_str());
        }
        headers.insert(FIRST_DELIVERY_HEADER, dead.first_delivery_ms.to_string().as_str());
        headers.insert(LAST_DELIVERY_HEADER, dead.last_delivery_ms.to_string().as_str());
        let subject = names::dead_subject(namespace, &topic.name, group);
        self.store(subject, headers, &dead.event.payload).await.map_err(|err| {
            topic.dead_ready.store(false, std::sync::atomic::Ordering::Release);
            unavailable(format!("store a dead letter of {group} on {}: {err}", self.connection.url()))
        })
    }

    /// `group`'s dead letters in sequence order, each with the stream sequences holding it
    /// (more than one if it was dead-lettered twice; the latest copy counts).
    async fn list_dead(&self, topic: &Topic, group: &str) -> Result<Vec<(Vec<u64>, DeadLetter)>> {
        let name = names::dead_stream(&topic.namespace, &topic.name);
        if self.state_of(&name).await?.is_none_or(|state| state.messages == 0) {
            return Ok(Vec::new());
        }
        let stream = self.js.get_stream_no_info(&name).await.map_err(unavailable)?;
        let subject = names::dead_subject(&topic.namespace, &topic.name, group);
        let mut by_id: HashMap<String, (Vec<u64>, DeadLetter)> = HashMap::new();
        let mut from = 1;
        loop {
            match stream.direct_get_next_for_subject(subject.clone(), Some(from)).await {
                Ok(message) => {
                    from = message.sequence + 1;
                    let dead = dead_of(&topic.name, &message);
                    let entry =
                        by_id.entry(dead.event.id.clone()).or_insert_with(|| (Vec::new(), dead.clone()));
                    entry.0.push(message.sequence);
                    entry.1 = dead;
                }
                Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(err) => {
                    return Err(unavailable(format!("read dead letters of {group} in {name}: {err}")));
                }
            }
        }
        let mut found: Vec<_> = by_id.into_values().collect();
        found.sort_by_key(|(_, dead)| dead.event.sequence);
        Ok(found)
    }

    /// Replays `group` on `topic`: resolves the range, then copies what the group's consumer
    /// delivered of it to the group's released events (see the module docs).
    async fn replay(&self, topic: &Topic, group: &str, replay: &Replay) -> Result<Replayed> {
        let state = self.stream_state(topic).await?;
        let (first, last) = state.as_ref().map_or((1, 0), |state| {
            let first =
                if state.messages == 0 { state.last_sequence + 1 } else { state.first_sequence.max(1) };
            (first, state.last_sequence)
        });
        let from = match replay.from {
            Position::Sequence(sequence) => sequence,
            Position::Time(ms) => self.sequence_at(topic, ms).await?,
        };
        let to = match replay.to {
            None => None,
            Some(Position::Sequence(sequence)) => Some(sequence),
            // The last event at or before the time: one before the first after it.
            Some(Position::Time(ms)) => Some(self.sequence_at(topic, ms.saturating_add(1)).await? - 1),
        };
        let range = validate::replay_range(&topic.name, first, last, from, to)?;
        let name = names::group_consumer(group);
        let info: std::result::Result<consumer::Info, _> =
            self.api(format!("CONSUMER.INFO.{}.{name}", topic.stream), &json!({})).await?;
        let delivered = match info {
            Ok(info) => info.delivered.stream_sequence,
            Err(err) if err.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {
                return Err(validate::unknown_group(&topic.name, group));
            }
            Err(err) => return Err(unavailable(format!("consumer info {name} on {}: {err}", topic.stream))),
        };
        let (copy_from, copy_to, copies) = replay_copies(&range, first, delivered)?;
        if copies > 0 {
            self.ensure_side_stream(topic, true).await?;
            self.ensure_released_consumer(topic, group).await?;
            let key = (topic.namespace.clone(), topic.name.clone(), group.to_string());
            let table =
                self.groups.lock().unwrap_or_else(PoisonError::into_inner).get(&key).and_then(Weak::upgrade);
            if let Some(table) = table {
                for reply in table.supersede(copy_from, copy_to) {
                    // Best effort: one not acked comes again after its ack wait (at least once).
                    let _ = self.connection.client().publish(reply, "+ACK".into()).await;
                }
            }
            self.copy_released(topic, group, copy_from, copy_to).await?;
            let notify = names::released_notify(&topic.namespace, &topic.name, group);
            // Best effort: members also look for released events whenever their pull expires.
            let _ = self.connection.client().publish(notify, bytes::Bytes::new()).await;
        }
        tracing::info!(
            namespace = %topic.namespace, topic = %topic.name, group, first = range.first_sequence,
            last = range.last_sequence, copied = copies, "consumer group replayed"
        );
        Ok(range)
    }

    /// Copies the topic's events `from..=to` to `group`'s released events, in order, with
    /// [`REPLAY_WINDOW`] of them awaiting JetStream's ack at a time.
    async fn copy_released(&self, topic: &Topic, group: &str, from: u64, to: u64) -> Result<()> {
        let subject = names::released_subject(&topic.namespace, &topic.name, group);
        let stream = self.js.get_stream_no_info(&topic.stream).await.map_err(unavailable)?;
        let mut sequence = from;
        while sequence <= to {
            let end = to.min(sequence + REPLAY_WINDOW as u64 - 1);
            let stream = &stream;
            let gets = futures::stream::iter(sequence..=end)
                .map(|sequence| async move { (sequence, stream.direct_get(sequence).await) })
                .buffered(READ_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut acks = Vec::with_capacity(gets.len());
            for (sequence, got) in gets {
                let event = match got {
                    Ok(message) => event_of_stored(&topic.name, message),
                    // Removed by retention meanwhile: nothing to replay.
                    Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => continue,
                    Err(err) => {
                        return Err(unavailable(format!("read {} at {sequence}: {err}", topic.stream)));
                    }
                };
                let published = self
                    .js
                    .publish_with_headers(subject.clone(), copy_headers(&event), event.payload.into())
                    .await
                    .map_err(|err| {
                        unavailable(format!("replay {} on {}: {err}", event.id, self.connection.url()))
                    })?;
                acks.push(published);
            }
            for ack in acks {
                ack.await
                    .map_err(|err| unavailable(format!("replay on {}: {err}", self.connection.url())))?;
            }
            sequence = end + 1;
        }
        Ok(())
    }

    /// The topics of `namespace`: its event streams, in name order, at most [`MAX_TOPICS`].
    async fn topics(&self, namespace: &str) -> Result<Vec<TopicInfo>> {
        let prefix = names::events_subject(namespace, "");
        let mut found = Vec::new();
        for info in self.list_streams(&names::events_subject(namespace, "*")).await? {
            let Some(token) = info.config.subjects.iter().find_map(|subject| subject.strip_prefix(&prefix))
            else {
                continue;
            };
            let state = info.state;
            let last_ms = u64::try_from(state.last_timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            found.push(TopicInfo {
                name: names::untoken(token),
                events: state.messages,
                last_sequence: state.last_sequence,
                last_timestamp_ms: if state.messages == 0 { 0 } else { last_ms },
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found.truncate(MAX_TOPICS);
        Ok(found)
    }

    /// Every item of a paged JetStream list (`STREAM.LIST`, `CONSUMER.LIST.<stream>`), all
    /// pages; `body` is the request besides its offset.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        mut body: serde_json::Value,
    ) -> Api<Vec<T>> {
        #[derive(serde::Deserialize)]
        struct Page<T> {
            total: usize,
            #[serde(alias = "streams", alias = "consumers")]
            items: Option<Vec<T>>,
        }
        let mut found = Vec::new();
        loop {
            body["offset"] = json!(found.len());
            let page: Page<T> = match self.api(subject.clone(), &body).await? {
                Ok(page) => page,
                Err(err) => return Ok(Err(err)),
            };
            let items = page.items.unwrap_or_default();
            let done = items.is_empty() || found.len() + items.len() >= page.total;
            found.extend(items);
            if done {
                return Ok(Ok(found));
            }
        }
    }

    /// Every stream with a subject within `subjects`.
    async fn list_streams(&self, subjects: &str) -> Result<Vec<stream::Info>> {
        self.list_all("STREAM.LIST".to_string(), json!({ "subject": subjects }))
            .await?
            .map_err(|err| unavailable(format!("list the streams of {subjects}: {err}")))
    }

    /// The consumers of stream `name` (none when it was deleted since it was listed).
    async fn list_consumers(&self, name: &str) -> Result<Vec<consumer::Info>> {
        match self.list_all(format!("CONSUMER.LIST.{name}"), json!({})).await? {
            Ok(consumers) => Ok(consumers),
            Err(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(Vec::new()),
            Err(err) => Err(unavailable(format!("list the consumers of {name}: {err}"))),
        }
    }

    /// Dead letters stored per dead-letter subject (one per group), of every topic.
    async fn dead_counts(&self) -> Result<HashMap<String, u64>> {
        #[derive(serde::Deserialize)]
        struct Detail {
            state: Subjects,
        }
        #[derive(serde::Deserialize)]
        struct Subjects {
            subjects: Option<HashMap<String, u64>>,
        }
        let mut counts = HashMap::new();
        for info in self.list_streams(&names::dead_subject("*", "*", "*")).await? {
            if info.state.messages == 0 {
                continue;
            }
            let Some(filter) = info.config.subjects.first() else { continue };
            let request = json!({ "subjects_filter": filter });
            let detail: std::result::Result<Detail, _> =
                self.api(format!("STREAM.INFO.{}", info.config.name), &request).await?;
            match detail {
                Ok(detail) => counts.extend(detail.state.subjects.unwrap_or_default()),
                Err(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
                Err(err) => return Err(unavailable(format!("stream info {}: {err}", info.config.name))),
            }
        }
        Ok(counts)
    }

    /// Every named group's lag (see the module docs), one more than [`MAX_GROUPS`] at most.
    async fn groups(&self) -> Result<Vec<GroupLag>> {
        let dead = self.dead_counts().await?;
        let mut streams: Vec<(String, String, stream::Info)> = self
            .list_streams(&names::events_subject("*", "*"))
            .await?
            .into_iter()
            .filter(|info| info.state.consumer_count > 0)
            .filter_map(|info| {
                let (namespace, topic) =
                    info.config.subjects.iter().find_map(|s| names::topic_of_subject(s))?;
                Some((namespace, topic, info))
            })
            .collect();
        streams.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut lags = Vec::new();
        for (namespace, topic, info) in streams {
            if lags.len() > MAX_GROUPS {
                break;
            }
            for consumer in self.list_consumers(&info.config.name).await? {
                let Some(group) =
                    names::group_of_consumer(&consumer.name, consumer.config.description.as_deref())
                else {
                    continue;
                };
                let unacked = consumer.num_ack_pending as u64;
                let subject = names::dead_subject(&namespace, &topic, &group);
                lags.push(GroupLag {
                    namespace: namespace.clone(),
                    topic: topic.clone(),
                    pending: consumer.num_pending + unacked,
                    unacked: Some(unacked),
                    dead: Some(dead.get(&subject).copied().unwrap_or(0)),
                    group,
                });
            }
        }
        Ok(lags)
    }

    /// Creates `group`'s consumer of released events if missing, with the group's ack wait.
    async fn ensure_released_consumer(&self, topic: &Topic, group: &str) -> Result<()> {
        let stream_name = names::released_stream(&topic.namespace, &topic.name);
        let name = names::released_consumer(group);
        let main: std::result::Result<consumer::Info, _> = self
            .api(format!("CONSUMER.INFO.{}.{}", topic.stream, names::group_consumer(group)), &json!({}))
            .await?;
        let ack_wait = main.map_or(micro_events::DEFAULT_ACK_WAIT, |info| info.config.ack_wait);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            name: Some(name.clone()),
            description: Some(format!("micro events released dead letters of group {group}")),
            filter_subject: names::released_subject(&topic.namespace, &topic.name, group),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            // Members count attempts against their own retry limit and ack what they give up.
            max_deliver: -1,
            max_ack_pending: i64::try_from(micro_events::MAX_IN_FLIGHT).unwrap_or(i64::MAX),
            ..consumer::pull::Config::default()
        };
        let config: consumer::Config = consumer::IntoConsumerConfig::into_consumer_config(config);
        let body = json!({ "stream_name": stream_name, "config": config, "action": "create" });
        let created: std::result::Result<consumer::Info, _> =
            self.api(format!("CONSUMER.CREATE.{stream_name}.{name}"), &body).await?;
        match created {
            Ok(_) => Ok(()),
            Err(err) if is_exists(&err) => Ok(()),
            Err(err) => Err(unavailable(format!("create consumer {name} on {stream_name}: {err}"))),
        }
    }

    /// Removes the selected dead letters of `group`; with `release`, first hands them to the
    /// group's released events and then wakes its members.
    async fn take_dead_letters(
        &self,
        topic: &Topic,
        group: &str,
        which: &Selection,
        release: bool,
    ) -> Result<Vec<String>> {
        let listed = self.list_dead(topic, group).await?;
        let letters: Vec<DeadLetter> = listed.iter().map(|(_, dead)| dead.clone()).collect();
        let chosen = validate::selected(&letters, which, group)?;
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        if release {
            self.ensure_side_stream(topic, true).await?;
            self.ensure_released_consumer(topic, group).await?;
            let subject = names::released_subject(&topic.namespace, &topic.name, group);
            for &n in &chosen {
                let event = &letters[n].event;
                self.store(subject.clone(), copy_headers(event), &event.payload).await.map_err(|err| {
                    topic.released_ready.store(false, std::sync::atomic::Ordering::Release);
                    unavailable(format!("release {} on {}: {err}", event.id, self.connection.url()))
                })?;
            }
        }
        let name = names::dead_stream(&topic.namespace, &topic.name);
        let stream = self.js.get_stream_no_info(&name).await.map_err(unavailable)?;
        for &n in &chosen {
            for &sequence in &listed[n].0 {
                match stream.delete_message(sequence).await {
                    Ok(_) => {}
                    // Deleted meanwhile (another release or drop, or the per-group limit).
                    Err(err)
                        if matches!(err.kind(), jetstream::stream::DeleteMessageErrorKind::JetStream(_)) => {}
                    Err(err) => return Err(unavailable(format!("delete a dead letter from {name}: {err}"))),
                }
            }
        }
        if release {
            let notify = names::released_notify(&topic.namespace, &topic.name, group);
            // Best effort: members also look for released events whenever their pull expires.
            let _ = self.connection.client().publish(notify, bytes::Bytes::new()).await;
        }
        tracing::info!(namespace = %topic.namespace, topic = %topic.name, group, count = chosen.len(), release, "dead letters taken");
        Ok(chosen.into_iter().map(|n| letters[n].event.id.clone()).collect())
    }

    /// Publishes a copy of an event (a dead letter, a released event) to `subject`; returns
    /// once JetStream stored it.
    async fn store(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: &[u8],
    ) -> std::result::Result<(), jetstream::context::PublishError> {
        self.js.publish_with_headers(subject, headers, payload.to_vec().into()).await?.await.map(|_| ())
    }

    /// The state of stream `name`, `None` when it does not exist.
    async fn state_of(&self, name: &str) -> Result<Option<stream::State>> {
        let info: std::result::Result<stream::Info, _> =
            self.api(format!("STREAM.INFO.{name}"), &json!({})).await?;
        match info {
            Ok(info) => Ok(Some(info.state)),
            Err(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(None),
            Err(err) => Err(unavailable(format!("stream info {name}: {err}"))),
        }
    }

    /// The topic stream's state, `None` when it does not exist.
    pub(crate) async fn stream_state(&self, topic: &Topic) -> Result<Option<stream::State>> {
        let state = self.state_of(&topic.stream).await?;
        if state.is_none() {
            topic.ready.store(false, std::sync::atomic::Ordering::Release);
        }
        Ok(state)
    }

    /// The first stored event at or after `sequence`, `None` past the end.
    async fn event_from(&self, topic: &Topic, sequence: u64) -> Result<Option<Event>> {
        let stream = self.js.get_stream_no_info(&topic.stream).await.map_err(unavailable)?;
        match stream.direct_get_next_for_subject(topic.subject.clone(), Some(sequence)).await {
            Ok(message) => Ok(Some(event_of_stored(&topic.name, message))),
            Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(err) => Err(unavailable(format!("read {} at {sequence}: {err}", topic.stream))),
        }
    }

    /// The sequence of the first event whose timestamp is at or after `timestamp_ms`; the next
    /// sequence to be assigned when there is none.
    pub(crate) async fn sequence_at(&self, topic: &Topic, timestamp_ms: u64) -> Result<u64> {
        let Some(state) = self.stream_state(topic).await? else { return Ok(1) };
        let end = state.last_sequence + 1;
        let (mut low, mut high, mut found) = (state.first_sequence.max(1), end, end);
        // Invariant: the answer is `found` or a sequence in [low, high).
        while low < high {
            let middle = low + (high - low) / 2;
            match self.event_from(topic, middle).await? {
                Some(event) if event.sequence >= high => high = middle,
                Some(event) if event.timestamp_ms >= timestamp_ms => {
                    found = event.sequence;
                    high = middle;
                }
                Some(event) => low = event.sequence + 1,
                None => high = middle,
            }
        }
        Ok(found)
    }

    /// The tail as the server has it.
    async fn load_tail(&self, topic: &Topic) -> Result<Tail> {
        let Some(state) = self.stream_state(topic).await? else {
            return Ok(Tail { sequence: 0, timestamp_ms: 0 });
        };
        let timestamp_ms = if state.messages == 0 {
            0
        } else {
            self.event_from(topic, state.last_sequence).await?.map_or(0, |event| event.timestamp_ms)
        };
        Ok(Tail { sequence: state.last_sequence, timestamp_ms })
    }

    async fn publish(&self, topic: &Topic, payload: Vec<u8>, options: PublishOptions) -> Result<Published> {
        self.ensure_stream(topic).await?;
        let payload = bytes::Bytes::from(payload);
        let mut tail = topic.tail.lock().await;
        let mut stream_missing = false;
        for _ in 0..MAX_PUBLISH_CONFLICTS {
            let known = match *tail {
                Some(known) => known,
                None => self.load_tail(topic).await?,
            };
            // Forget the tail until this publish's outcome is known: a failure below leaves it
            // unknown (e.g. a timeout after the server stored the event).
            *tail = None;
            let timestamp_ms =
                options.timestamp_ms.unwrap_or_else(micro_events::now_ms).max(known.timestamp_ms);
            let id = micro_events::new_event_id(timestamp_ms);
            let headers = event_headers(&id, timestamp_ms, &options.metadata);
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .headers(headers)
                .expected_last_sequence(known.sequence);
            let acked = match self.js.send_publish(topic.subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(err) => Err(err),
            };
            match acked {
                Ok(ack) => {
                    *tail = Some(Tail { sequence: ack.sequence, timestamp_ms });
                    return Ok(Published { id, sequence: ack.sequence, timestamp_ms });
                }
                Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                    tracing::debug!(stream = %topic.stream, expected = known.sequence, "another publisher got in first; retrying");
                }
                Err(err) if err.kind() == PublishErrorKind::StreamNotFound && !stream_missing => {
                    // Deleted behind our back (or lost with the server's state): create it again.
                    stream_missing = true;
                    topic.ready.store(false, std::sync::atomic::Ordering::Release);
                    self.ensure_stream(topic).await?;
                }
                Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    let (_, max_payload) = self.connection.server();
                    return Err(EventsError::Invalid(format!(
                        "the event with its metadata is larger than the {max_payload} bytes the NATS server at {} \
                         accepts (max_payload)",
                        self.connection.url()
                    )));
                }
                Err(err) => {
                    return Err(unavailable(format!(
                        "publish to {} at {}: {err}",
                        topic.stream,
                        self.connection.url()
                    )));
                }
            }
        }
        Err(unavailable(format!(
            "publish to {}: lost the race for the topic's next sequence {MAX_PUBLISH_CONFLICTS} times",
            topic.stream
        )))
    }

    async fn read(&self, topic: &Topic, limit: usize, offset: u64) -> Result<Vec<Event>> {
        let Some(state) = self.stream_state(topic).await? else { return Ok(Vec::new()) };
        if state.messages == 0 {
            return Ok(Vec::new());
        }
        let from = state.first_sequence.max(1).saturating_add(offset);
        if from > state.last_sequence {
            return Ok(Vec::new());
        }
        let to = state.last_sequence.min(from.saturating_add(limit as u64 - 1));
        let stream = self.js.get_stream_no_info(&topic.stream).await.map_err(unavailable)?;
        let stream = &stream;
        let gets = futures::stream::iter(from..=to)
            .map(|sequence| async move { (sequence, stream.direct_get(sequence).await) })
            .buffered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut events = Vec::with_capacity(gets.len());
        for (sequence, got) in gets {
            match got {
                Ok(message) => events.push(event_of_stored(&topic.name, message)),
                // Removed by retention since the stream info: skip it, as a later read would.
                Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => {}
                Err(err) => return Err(unavailable(format!("read {} at {sequence}: {err}", topic.stream))),
            }
        }
        Ok(events)
    }

    /// The in-flight table of the named group, shared by this process's members of it.
    pub(crate) fn group_in_flight(&self, namespace: &str, topic: &str, group: &str) -> Arc<InFlight> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (namespace.to_string(), topic.to_string(), group.to_string());
        if let Some(in_flight) = groups.get(&key).and_then(Weak::upgrade) {
            return in_flight;
        }
        groups.retain(|_, weak| weak.strong_count() > 0);
        let in_flight = Arc::new(InFlight::new(namespace, topic, group));
        groups.insert(key, Arc::downgrade(&in_flight));
        in_flight
    }

    /// A new in-flight table for a consumer without a group.
    pub(crate) fn private_in_flight(&self, namespace: &str, topic: &str) -> Arc<InFlight> {
        let mut private = self.private.lock().unwrap_or_else(PoisonError::into_inner);
        let in_flight = Arc::new(InFlight::new(namespace, topic, ""));
        let tables = private.entry((namespace.to_string(), topic.to_string())).or_default();
        tables.retain(|weak| weak.strong_count() > 0);
        tables.push(Arc::downgrade(&in_flight));
        in_flight
    }

    /// The table holding delivery `id` of `group` (empty: the topic's consumers without one).
    fn find_in_flight(&self, namespace: &str, topic: &str, group: &str, id: &str) -> Option<Arc<InFlight>> {
        if !group.is_empty() {
            let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            return groups
                .get(&(namespace.to_string(), topic.to_string(), group.to_string()))
                .and_then(Weak::upgrade);
        }
        let private = self.private.lock().unwrap_or_else(PoisonError::into_inner);
        private
            .get(&(namespace.to_string(), topic.to_string()))?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|in_flight| in_flight.contains(id))
    }

    /// Creates the consumer a member pulls from (a named group's if it does not exist yet,
    /// keeping its position if it does) and returns its name.
    pub(crate) async fn ensure_consumer(
        &self,
        topic: &Topic,
        options: &ConsumeOptions,
        private_name: Option<&str>,
        start: Start,
    ) -> Result<String> {
        let max_deliver = match (options.auto_ack, options.retry_limit) {
            (false, Some(limit)) => i64::from(limit).saturating_add(1),
            _ => -1,
        };
        let (name, durable) = match (&options.group, private_name) {
            (_, Some(name)) => (name.to_string(), false),
            (Some(group), None) => (names::group_consumer(group), true),
            (None, None) => (names::private_consumer(), false),
        };
        if durable {
            let existing: std::result::Result<consumer::Info, _> =
                self.api(format!("CONSUMER.INFO.{}.{name}", topic.stream), &json!({})).await?;
            match existing {
                Ok(info) => {
                    return self.align_consumer(topic, info, options, max_deliver).await.map(|()| name);
                }
                Err(err) if err.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {}
                Err(err) => {
                    return Err(unavailable(format!("consumer info {name} on {}: {err}", topic.stream)));
                }
            }
        }
        let deliver_policy = match start {
            Start::Newest => consumer::DeliverPolicy::New,
            Start::Sequence(sequence) => {
                consumer::DeliverPolicy::ByStartSequence { start_sequence: sequence.max(1) }
            }
            Start::Time(ms) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: self.sequence_at(topic, ms).await?,
            },
        };
        let ack_wait = if options.auto_ack { micro_events::DEFAULT_ACK_WAIT } else { options.ack_wait };
        let config = consumer::pull::Config {
            durable_name: durable.then(|| name.clone()),
            name: Some(name.clone()),
            description: Some(match &options.group {
                Some(group) if durable => names::group_description(group),
                _ => "micro events consumer without a group".to_string(),
            }),
            deliver_policy,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            max_deliver,
            max_ack_pending: i64::try_from(micro_events::MAX_IN_FLIGHT).unwrap_or(i64::MAX),
            inactive_threshold: if durable { Duration::ZERO } else { PRIVATE_INACTIVE },
            // A group's consumer has as many replicas as its stream; a private one needs one.
            num_replicas: if durable { 0 } else { 1 },
            ..consumer::pull::Config::default()
        };
        let config: consumer::Config = consumer::IntoConsumerConfig::into_consumer_config(config);
        let body = json!({ "stream_name": topic.stream, "config": config, "action": "create" });
        let created: std::result::Result<consumer::Info, _> =
            self.api(format!("CONSUMER.CREATE.{}.{name}", topic.stream), &body).await?;
        match created {
            Ok(_) => Ok(name),
            // A consumer without a group re-created after an outage may still exist: fine.
            Err(err) if !durable && is_exists(&err) => Ok(name),
            // Another member created the group meanwhile, from its own start: join it.
            Err(err) if durable && is_exists(&err) => {
                let existing: std::result::Result<consumer::Info, _> =
                    self.api(format!("CONSUMER.INFO.{}.{name}", topic.stream), &json!({})).await?;
                let info = existing.map_err(|err| unavailable(format!("consumer info {name}: {err}")))?;
                self.align_consumer(topic, info, options, max_deliver).await.map(|()| name)
            }
            Err(err) => Err(unavailable(format!("create consumer {name} on {}: {err}", topic.stream))),
        }
    }

    /// Gives an existing group the ack wait and retry limit of a manual-ack member that joins
    /// it (JetStream keeps them per consumer; the latest member's settings win). Its position
    /// and start are left alone.
    async fn align_consumer(
        &self,
        topic: &Topic,
        info: consumer::Info,
        options: &ConsumeOptions,
        max_deliver: i64,
    ) -> Result<()> {
        let mut config = info.config;
        let current_max = if config.max_deliver <= 0 { -1 } else { config.max_deliver };
        if options.auto_ack || (config.ack_wait == options.ack_wait && current_max == max_deliver) {
            return Ok(());
        }
        config.ack_wait = options.ack_wait;
        config.max_deliver = max_deliver;
        let name = info.name;
        let body = json!({ "stream_name": topic.stream, "config": config, "action": "update" });
        let updated: std::result::Result<consumer::Info, _> =
            self.api(format!("CONSUMER.CREATE.{}.{name}", topic.stream), &body).await?;
        updated
            .map(|_| ())
            .map_err(|err| unavailable(format!("update consumer {name} on {}: {err}", topic.stream)))
    }
}

/// What a replay of `range` copies, as `(from, to, count)`, when the topic's first stored
/// sequence is `first` and the group's consumer delivered up to `delivered`: what the consumer
/// delivers by itself from here on is not copied. More than [`MAX_REPLAY_EVENTS`] is refused.
fn replay_copies(range: &Replayed, first: u64, delivered: u64) -> Result<(u64, u64, u64)> {
    let (from, to) = (range.first_sequence.max(first), range.last_sequence.min(delivered));
    let copies = (to + 1).saturating_sub(from);
    if copies > MAX_REPLAY_EVENTS {
        return Err(EventsError::Invalid(format!(
            "the replay would copy {copies} events; on NATS a replay copies at most {MAX_REPLAY_EVENTS}: \
             give it an end"
        )));
    }
    Ok((from, to, copies))
}

fn is_exists(err: &jetstream::Error) -> bool {
    [ErrorCode::CONSUMER_ALREADY_EXISTS, ErrorCode::CONSUMER_NAME_EXIST].contains(&err.error_code())
}

fn event_headers(id: &str, timestamp_ms: u64, metadata: &BTreeMap<String, String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ID_HEADER, id);
    headers.insert(TIMESTAMP_HEADER, timestamp_ms.to_string().as_str());
    for (key, value) in metadata {
        let name = format!("{METADATA_PREFIX}{}", names::encode_header_name(key));
        headers.insert(name.as_str(), names::encode_header_value(value).as_str());
    }
    headers
}

/// The headers of a copy of `event` kept outside its topic (a dead letter, a released event):
/// the event's own, plus its sequence in the topic.
fn copy_headers(event: &Event) -> HeaderMap {
    let mut headers = event_headers(&event.id, event.timestamp_ms, &event.metadata);
    headers.insert(SEQUENCE_HEADER, event.sequence.to_string().as_str());
    headers
}

/// The event a stored message holds. `stored_ms` (when NATS stored it) stands in for a missing
/// timestamp header, the sequence for a missing id.
pub(crate) fn event_of(
    topic: &str,
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    stored_ms: u64,
) -> Event {
    let header = |name: &str| headers.and_then(|h| h.get_last(name)).map(HeaderValue::as_str);
    let id = header(ID_HEADER).map_or_else(|| format!("nats-{sequence}"), str::to_string);
    let timestamp_ms = header(TIMESTAMP_HEADER).and_then(|ms| ms.parse().ok()).unwrap_or(stored_ms);
    let mut metadata = BTreeMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if let (Some(key), Some(value)) = (name.strip_prefix(METADATA_PREFIX), values.last()) {
                metadata.insert(names::decode_header_name(key), names::decode_header_value(value.as_str()));
            }
        }
    }
    Event { id, topic: topic.to_string(), metadata, payload: payload.to_vec(), timestamp_ms, sequence }
}

/// The dead letter a message of a dead-letter stream holds.
fn dead_of(topic: &str, message: &jetstream::message::StreamMessage) -> DeadLetter {
    let stored_ms = u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let header = |name: &str| message.headers.get_last(name).map(HeaderValue::as_str);
    let number = |name: &str| header(name).and_then(|value| value.parse::<u64>().ok());
    let sequence = number(SEQUENCE_HEADER).unwrap_or(0);
    DeadLetter {
        event: event_of(topic, sequence, Some(&message.headers), &message.payload, stored_ms),
        attempts: number(ATTEMPTS_HEADER).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        error: header(ERROR_HEADER).map(names::decode_header_value).unwrap_or_default(),
        first_delivery_ms: number(FIRST_DELIVERY_HEADER).unwrap_or(stored_ms),
        last_delivery_ms: number(LAST_DELIVERY_HEADER).unwrap_or(stored_ms),
    }
}

fn event_of_stored(topic: &str, message: jetstream::message::StreamMessage) -> Event {
    let stored_ms = u64::try_from(message.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    event_of(topic, message.sequence, Some(&message.headers), &message.payload, stored_ms)
}

#[async_trait::async_trait]
impl Events for NatsEvents {
    async fn publish(
        &self,
        namespace: &str,
        topic: &str,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<Published> {
        validate::publish(namespace, topic, &payload, &options.metadata)?;
        self.inner.ready()?;
        let topic = self.inner.topic(namespace, topic);
        bounded(&self.inner.connection, "publish", self.inner.publish(&topic, payload, options)).await
    }

    async fn read(&self, namespace: &str, topic: &str, limit: usize, offset: u64) -> Result<Vec<Event>> {
        validate::namespace(namespace)?;
        validate::topic(topic)?;
        self.inner.ready()?;
        let limit = if limit == 0 { DEFAULT_READ_LIMIT } else { limit.min(MAX_READ_LIMIT) };
        let topic = self.inner.topic(namespace, topic);
        bounded(&self.inner.connection, "read", self.inner.read(&topic, limit, offset)).await
    }

    async fn consume(&self, namespace: &str, topic: &str, options: ConsumeOptions) -> Result<Consumer> {
        validate::consume(namespace, topic, &options)?;
        self.inner.ready()?;
        let topic = self.inner.topic(namespace, topic);
        bounded(&self.inner.connection, "consume", member::join(self.inner.clone(), topic, options)).await
    }

    async fn ack(&self, namespace: &str, topic: &str, group: &str, id: &str) -> Result<()> {
        validate::namespace(namespace)?;
        validate::topic(topic)?;
        let in_flight =
            self.inner.find_in_flight(namespace, topic, group, id).ok_or(EventsError::NotFound)?;
        in_flight.settle(&self.inner, id, member::Settle::Ack).await
    }

    async fn nack_with(&self, namespace: &str, topic: &str, group: &str, id: &str, nack: Nack) -> Result<()> {
        validate::namespace(namespace)?;
        validate::topic(topic)?;
        let in_flight =
            self.inner.find_in_flight(namespace, topic, group, id).ok_or(EventsError::NotFound)?;
        in_flight.settle(&self.inner, id, member::Settle::Nack(nack)).await
    }

    async fn dead_letters(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<DeadLetter>> {
        validate::dead_letters(namespace, topic, group)?;
        self.inner.ready()?;
        let topic = self.inner.topic(namespace, topic);
        let listed =
            bounded(&self.inner.connection, "list dead letters", self.inner.list_dead(&topic, group)).await?;
        Ok(listed.into_iter().map(|(_, dead)| dead).collect())
    }

    async fn release(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
    ) -> Result<Vec<String>> {
        self.take_dead_letters(namespace, topic, group, which, true).await
    }

    async fn drop_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
    ) -> Result<Vec<String>> {
        self.take_dead_letters(namespace, topic, group, which, false).await
    }

    async fn replay(&self, namespace: &str, topic: &str, group: &str, replay: &Replay) -> Result<Replayed> {
        self.replay_group(namespace, topic, group, replay).await
    }

    async fn topics(&self, namespace: &str) -> Result<Vec<TopicInfo>> {
        validate::namespace(namespace)?;
        self.inner.ready()?;
        bounded(&self.inner.connection, "list topics", self.inner.topics(namespace)).await
    }

    async fn groups(&self) -> Result<Vec<GroupLag>> {
        self.inner.ready()?;
        let groups = bounded(&self.inner.connection, "list groups", self.inner.groups()).await?;
        Ok(micro_events::reported_groups(groups))
    }

    /// Nothing to do: JetStream applies each stream's `max_age` and `max_msgs` itself.
    async fn sweep(&self) -> Result<u64> {
        Ok(0)
    }

    fn summary(&self) -> String {
        let (version, _) = self.inner.connection.server();
        format!(
            "nats {} (JetStream {version}, a file-backed stream per topic, {} replica{})",
            self.inner.connection.url(),
            self.inner.options.replicas,
            if self.inner.options.replicas == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_copies_what_the_group_was_delivered_within_the_limit() {
        let range = |first_sequence, last_sequence| Replayed { first_sequence, last_sequence, events: 0 };
        assert_eq!(replay_copies(&range(3, 10), 1, 6), Ok((3, 6, 4)), "the consumer delivers 7 on by itself");
        assert_eq!(replay_copies(&range(1, 10), 5, 10), Ok((5, 10, 6)), "removed events are not copied");
        assert_eq!(
            replay_copies(&range(8, 10), 1, 6),
            Ok((8, 6, 0)),
            "nothing delivered yet: nothing to copy"
        );
        let limit = MAX_REPLAY_EVENTS;
        assert_eq!(replay_copies(&range(1, limit), 1, limit), Ok((1, limit, limit)), "the limit itself");
        let over = replay_copies(&range(1, limit + 1), 1, limit + 1).unwrap_err().to_string();
        assert!(over.contains("at most 100000") && over.contains("give it an end"), "{over}");
    }
}
