//! One member of a group: pulls from its JetStream consumer, tracks what it delivered, and
//! hands back what it had when it goes away.
//!
//! A member pulls exactly one message, and only while its [`Consumer`] is asked for the next
//! delivery: nothing is fetched ahead, so an event never waits in one member's buffer while
//! another member of the group is idle (the embedded engine behaves the same way). Each pull
//! request has its own reply subject under the member's inbox, so status replies of a request
//! that was given up on (expired, or sent before a reconnect) are told apart from the current
//! one. A request lives [`PULL_EXPIRES`] on the server; an idle member renews it, and renews
//! it at once after the connection comes back.
//!
//! Manual-ack deliveries are recorded in the group's [`InFlight`] table (shared by this
//! process's members of the group) under the event id, with the reply subject JetStream acks
//! go to, so a delivery can be settled through it or through [`micro_events::Events::ack`] by
//! id. When a member is dropped, the deliveries it still had are NAKed, so JetStream hands
//! them to another member at once rather than after their ack wait.
//!
//! A replay (docs/events.md#replay, see `events`) copies the replayed events to the group's
//! released events, so members get them the way they get released dead letters; deliveries
//! this process has in flight of the replayed events are superseded first
//! ([`InFlight::supersede`]).
//!
//! Dead letters (docs/events.md#dead-letters): a delivery nacked as permanent, or whose last
//! allowed delivery is nacked or runs out of ack wait, is stored as a dead letter of a named
//! group and then acked (a consumer without a group drops it with a warning). A member of a
//! named group also pulls its group's released events (`events`' work-queue stream), one at a
//! time with `no_wait`, whenever it joins, a release is announced on the group's wake-up
//! subject, its pull of new events expires, or it just got a released event; such a request is
//! answered on `<inbox>.released` (and takes no request number), so its statuses never count as,
//! nor hide, the open pull's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{StatusCode, Subject};
use futures::{FutureExt, StreamExt};
use micro_core::backoff::Backoff;
use micro_events::{
    Acker, ConsumeOptions, Consumer, DeadLetter, Delivery, Event, EventsError, MAX_IN_FLIGHT, Nack, Result,
    Start,
};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::{Connection, OPERATION_TIMEOUT};
use crate::events::{Inner, SEQUENCE_HEADER, Topic, event_of, unavailable};
use crate::names;

/// How long a pull request waits on the server for a message.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// How long past [`PULL_EXPIRES`] a member waits for the server's "expired" reply before it
/// assumes the request was lost and sends another.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// Shortest and longest wait before retrying when the consumer cannot be reached (jittered:
/// `micro_core::backoff`).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Member numbers, telling apart the members of one process.
static MEMBERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How a delivery is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Nack(Nack),
}

/// Deliveries awaiting an ack, by event id, of this process's members of one group.
pub(crate) struct InFlight {
    namespace: String,
    topic: String,
    /// Empty for a consumer without a group.
    group: String,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Where JetStream takes the ack of this delivery.
    reply: Subject,
    member: u64,
    attempt: u32,
    /// The retry limit allows no further delivery.
    last: bool,
    /// When JetStream gives up waiting for the ack of this delivery.
    deadline: Instant,
    ack_wait: Duration,
    /// What a dead letter of it holds: the event (whose sequence is the topic's), when this
    /// process first and last delivered it (unix ms), and the latest nack reason.
    event: Event,
    first_ms: u64,
    last_ms: u64,
    error: String,
    /// Delivered from the group's released events, not from its consumer of the topic.
    released: bool,
}

impl InFlight {
    pub(crate) fn new(namespace: &str, topic: &str, group: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are inserted and removed whole; a panic elsewhere leaves the map valid.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.entries().contains_key(id)
    }

    fn insert(&self, id: String, mut entry: Entry) {
        let mut entries = self.entries();
        // A redelivery keeps what the earlier delivery learnt (its table entry stays after a
        // nack until the redelivery replaces it).
        if let Some(earlier) =
            entries.get(&id).filter(|earlier| earlier.event.sequence == entry.event.sequence)
        {
            entry.first_ms = entry.first_ms.min(earlier.first_ms);
            if entry.error.is_empty() {
                entry.error.clone_from(&earlier.error);
            }
        }
        if entries.len() >= 4 * MAX_IN_FLIGHT {
            // Deliveries whose ack wait ran out long ago went to a member of another process.
            let now = Instant::now();
            entries.retain(|_, entry| entry.deadline + entry.ack_wait * 2 > now);
        }
        entries.insert(id, entry);
    }

    /// Gives up on delivery `id`: stores a named group's dead letter (a failure leaves it
    /// unsettled, so it is redelivered or given up on again), then acks it, so JetStream
    /// neither redelivers it nor keeps it in the released work queue.
    async fn give_up(&self, events: &Inner, id: &str, entry: &Entry) -> Result<()> {
        let group = (!self.group.is_empty()).then_some(self.group.as_str());
        if let Some(group) = group {
            let dead = DeadLetter {
                event: entry.event.clone(),
                attempts: entry.attempt,
                error: entry.error.clone(),
                first_delivery_ms: entry.first_ms,
                last_delivery_ms: entry.last_ms,
            };
            events.add_dead_letter(&self.namespace, &self.topic, group, &dead).await?;
        }
        tracing::warn!(
            namespace = %self.namespace, topic = %self.topic, group, id, deliveries = entry.attempt,
            error = %entry.error, "{}", micro_events::given_up(entry.last, group.is_some())
        );
        if let Err(cause) = ack_recorded(&events.connection, &entry.reply).await {
            tracing::debug!(id, %cause, "the ack of an event given up on failed; JetStream may deliver it again");
        }
        Ok(())
    }

    /// Takes `member`'s last-chance deliveries whose ack wait ran out, to be given up on.
    fn expire(&self, member: u64) -> Vec<(String, Entry)> {
        let now = Instant::now();
        let mut entries = self.entries();
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| entry.member == member && entry.last && entry.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        expired.into_iter().filter_map(|id| entries.remove(&id).map(|entry| (id, entry))).collect()
    }

    /// Forgets the deliveries from the group's consumer of the topic whose events are in
    /// `first..=last` (a replay delivers them again), returning where to ack them so the
    /// consumer does not redeliver them too.
    pub(crate) fn supersede(&self, first: u64, last: u64) -> Vec<Subject> {
        let mut entries = self.entries();
        let superseded: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| !entry.released && (first..=last).contains(&entry.event.sequence))
            .map(|(id, _)| id.clone())
            .collect();
        superseded.into_iter().filter_map(|id| entries.remove(&id)).map(|entry| entry.reply).collect()
    }

    /// Removes `member`'s deliveries, returning where to NAK them, in sequence order (JetStream
    /// redelivers NAKed messages in the order it gets the NAKs).
    fn release(&self, member: u64) -> Vec<Subject> {
        let mut entries = self.entries();
        let mine: Vec<String> =
            entries.iter().filter(|(_, entry)| entry.member == member).map(|(id, _)| id.clone()).collect();
        let mut released: Vec<Entry> = mine.into_iter().filter_map(|id| entries.remove(&id)).collect();
        released.sort_by_key(|entry| entry.event.sequence);
        released.into_iter().map(|entry| entry.reply).collect()
    }

    /// Acks or nacks delivery `id`: [`EventsError::NotFound`] when it is not awaiting one.
    pub(crate) async fn settle(&self, events: &Inner, id: &str, settle: Settle) -> Result<()> {
        let connection = &events.connection;
        connection.ready().map_err(unavailable)?;
        let (entry, expired, give_up) = {
            let mut entries = self.entries();
            let kept = entries.get_mut(id).ok_or(EventsError::NotFound)?;
            // Its last delivery ran out of ack wait: given up on, whatever this says.
            let expired = kept.last && kept.deadline <= Instant::now();
            let give_up = match &settle {
                Settle::Ack => false,
                Settle::Nack(nack) => {
                    kept.error = nack.kept_reason();
                    nack.permanent || kept.last
                }
            };
            let entry = if settle == Settle::Ack || give_up || expired {
                entries.remove(id).ok_or(EventsError::NotFound)?
            } else {
                kept.clone()
            };
            (entry, expired, give_up)
        };
        if expired || give_up {
            if let Err(err) = self.give_up(events, id, &entry).await {
                // Still unsettled: put it back, so a retry (or its ack wait) gives it up again.
                self.entries().entry(id.to_string()).or_insert(entry);
                return Err(err);
            }
            return if expired { Err(EventsError::NotFound) } else { Ok(()) };
        }
        match settle {
            Settle::Ack => ack_recorded(connection, &entry.reply).await.map_err(|cause| {
                // Still awaiting its ack: put it back, so a retry can settle it.
                self.entries().entry(id.to_string()).or_insert(entry);
                unavailable(format!("ack {id} on NATS at {}: {cause}", connection.url()))
            }),
            Settle::Nack(_) => {
                connection.client().publish(entry.reply.clone(), "-NAK".into()).await.map_err(|err| {
                    unavailable(format!("nack {id} on NATS at {}: {err}", connection.url()))
                })?;
                Ok(())
            }
        }
    }
}

/// Acks the delivery whose ack subject is `reply` with a request, not a plain publish: the
/// reply says JetStream recorded the ack. `Err` is the cause when it did not.
async fn ack_recorded(connection: &Connection, reply: &Subject) -> std::result::Result<(), String> {
    let acked =
        tokio::time::timeout(OPERATION_TIMEOUT, connection.client().request(reply.clone(), "+ACK".into()));
    match acked.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {}s", OPERATION_TIMEOUT.as_secs())),
    }
}

/// Settles deliveries through their group's table.
struct MemberAcker {
    in_flight: Arc<InFlight>,
    events: Arc<Inner>,
}

#[async_trait::async_trait]
impl Acker for MemberAcker {
    async fn ack(&self, id: &str) -> Result<()> {
        self.in_flight.settle(&self.events, id, Settle::Ack).await
    }

    async fn nack(&self, id: &str, nack: Nack) -> Result<()> {
        self.in_flight.settle(&self.events, id, Settle::Nack(nack)).await
    }
}

/// Joins `options.group` (or a consumer of its own) on `topic` and streams its deliveries.
pub(crate) async fn join(events: Arc<Inner>, topic: Arc<Topic>, options: ConsumeOptions) -> Result<Consumer> {
    events.ensure_stream(&topic).await?;
    let consumer = events.ensure_consumer(&topic, &options, None, options.start).await?;
    let in_flight = match &options.group {
        Some(group) => events.group_in_flight(&topic.namespace, &topic.name, group),
        None => events.private_in_flight(&topic.namespace, &topic.name),
    };
    let connection = events.connection.clone();
    let inbox = connection.client().new_inbox();
    let subscriber = connection
        .client()
        .subscribe(format!("{inbox}.*"))
        .await
        .map_err(|err| unavailable(format!("subscribe on NATS at {}: {err}", connection.url())))?;
    let acker: Option<Arc<dyn Acker>> = (!options.auto_ack)
        .then(|| Arc::new(MemberAcker { in_flight: in_flight.clone(), events: events.clone() }) as _);
    // A named group's members listen for releases of its dead letters.
    let notify = match &options.group {
        Some(group) => Some(
            connection
                .client()
                .subscribe(names::released_notify(&topic.namespace, &topic.name, group))
                .await
                .map_err(|err| unavailable(format!("subscribe on NATS at {}: {err}", connection.url())))?,
        ),
        None => None,
    };
    let released_stream = names::released_stream(&topic.namespace, &topic.name);
    let released_pull = options.group.as_ref().map(|group| {
        format!("$JS.API.CONSUMER.MSG.NEXT.{released_stream}.{}", names::released_consumer(group))
    });
    let member = Member {
        id: MEMBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        pull_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{}.{consumer}", topic.stream),
        private: options.group.is_none(),
        consumer,
        connects: {
            let mut connects = connection.connects();
            // Only reconnects from now on matter.
            connects.borrow_and_update();
            connects
        },
        events,
        topic,
        options,
        inbox,
        subscriber: Some(subscriber),
        request: 0,
        outstanding: None,
        in_flight,
        acker,
        backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
        resume: None,
        released_stream,
        released_pull,
        check_released: true,
        notify,
    };
    tracing::debug!(member = member.id, consumer = %member.consumer, stream = %member.topic.stream, "consumer joined");
    Ok(Consumer::new(futures::stream::unfold(Some(member), |member| async move {
        let mut member = member?;
        match member.next().await {
            Ok(delivery) => Some((Ok(delivery), Some(member))),
            Err(err) => Some((Err(err), None)),
        }
    })))
}

struct Member {
    id: u64,
    events: Arc<Inner>,
    topic: Arc<Topic>,
    options: ConsumeOptions,
    /// The JetStream consumer pulled from.
    consumer: String,
    /// A consumer of this member alone (no group), deleted when the member goes.
    private: bool,
    pull_subject: String,
    /// Pull requests are answered on `<inbox>.<request number>`.
    inbox: String,
    /// `None` only while being dropped.
    subscriber: Option<async_nats::Subscriber>,
    /// The number of the latest pull request.
    request: u64,
    /// When the latest pull request, if still open, counts as lost.
    outstanding: Option<Instant>,
    in_flight: Arc<InFlight>,
    acker: Option<Arc<dyn Acker>>,
    connects: watch::Receiver<u64>,
    backoff: Backoff,
    /// The sequence after the last one delivered: where a consumer lost with the server's
    /// state is re-created.
    resume: Option<u64>,
    /// The stream of released dead letters of the topic.
    released_stream: String,
    /// Where a named group's member asks for one released event; `None` without a group.
    released_pull: Option<String>,
    /// Ask for a released event before waiting.
    check_released: bool,
    /// Announcements of releases to the group; `None` without a group.
    notify: Option<async_nats::Subscriber>,
}

impl Member {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            for (id, entry) in self.in_flight.expire(self.id) {
                if let Err(err) = self.in_flight.give_up(&self.events, &id, &entry).await {
                    tracing::error!(cause = %err, id, "cannot store a dead letter; the event is lost to its group");
                }
            }
            if self.check_released {
                self.check_released = false;
                self.pull_released().await?;
            }
            let now = Instant::now();
            if self.outstanding.is_none_or(|deadline| deadline <= now) {
                self.pull().await?;
            }
            let deadline = self.outstanding.unwrap_or(now);
            let subscriber =
                self.subscriber.as_mut().ok_or_else(|| EventsError::Internal("member closed".into()))?;
            let notified = async {
                match self.notify.as_mut() {
                    Some(notify) => notify.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(_) = notified => self.check_released = true,
                received = subscriber.next() => {
                    let Some(message) = received else {
                        return Err(unavailable(format!("the connection to NATS at {} closed", self.events.connection.url())));
                    };
                    if let Some(delivery) = self.receive(message).await? {
                        return Ok(delivery);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.outstanding = None;
                    self.check_released = true;
                }
                changed = self.connects.changed() => {
                    if changed.is_err() {
                        return Err(unavailable("the NATS connection is gone"));
                    }
                    // Reconnected: the open request may have died with the old connection.
                    self.outstanding = None;
                }
            }
        }
    }

    /// Asks the server for one message.
    async fn pull(&mut self) -> Result<()> {
        self.request += 1;
        let reply = format!("{}.{}", self.inbox, self.request);
        let expires = u64::try_from(PULL_EXPIRES.as_nanos()).unwrap_or(u64::MAX);
        let body = json!({ "batch": 1, "expires": expires }).to_string();
        let connection = &self.events.connection;
        connection
            .client()
            .publish_with_reply(self.pull_subject.clone(), reply, body.into())
            .await
            .map_err(|err| unavailable(format!("pull from NATS at {}: {err}", connection.url())))?;
        self.outstanding = Some(Instant::now() + PULL_EXPIRES + PULL_GRACE);
        Ok(())
    }

    /// Asks the group's released events for one, without waiting (see the module docs).
    async fn pull_released(&mut self) -> Result<()> {
        let Some(subject) = self.released_pull.clone() else { return Ok(()) };
        let reply = format!("{}.released", self.inbox);
        let body = json!({ "batch": 1, "no_wait": true }).to_string();
        let connection = &self.events.connection;
        connection
            .client()
            .publish_with_reply(subject, reply, body.into())
            .await
            .map_err(|err| unavailable(format!("pull from NATS at {}: {err}", connection.url())))
    }

    /// Handles what arrived on the inbox: a delivery, or a status about a pull request.
    async fn receive(&mut self, message: async_nats::Message) -> Result<Option<Delivery>> {
        let status = message.status.unwrap_or(StatusCode::OK);
        if status == StatusCode::OK {
            let (delivery, released) = self.deliver(message).await?;
            if released {
                // There may be more.
                self.check_released = true;
            } else {
                // A delivery carries its stream subject, not the request's reply subject, so
                // it cannot be matched to a request; with one pull of new events open at a
                // time it answers that one.
                self.outstanding = None;
                self.backoff.reset();
            }
            return Ok(Some(delivery));
        }
        // Statuses come on the reply subject of the request they are about.
        let current = message.subject.as_str().rsplit('.').next().and_then(|n| n.parse::<u64>().ok())
            == Some(self.request);
        if status == StatusCode::IDLE_HEARTBEAT || !current {
            return Ok(None);
        }
        self.outstanding = None;
        let description = message.description.unwrap_or_default().to_ascii_lowercase();
        if status == StatusCode::TIMEOUT || description.contains("no messages") {
            // The request expired empty: the next turn of the loop renews it, after a look for
            // released events (in case an announcement was missed).
            self.check_released = true;
        } else if status == StatusCode::NO_RESPONDERS
            || description.contains("deleted")
            || description.contains("not found")
        {
            self.recover().await;
        } else {
            tracing::debug!(%status, %description, consumer = %self.consumer, "pull request ended; retrying");
            self.back_off().await;
        }
        Ok(None)
    }

    async fn back_off(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    /// Nobody answers our pulls: JetStream is away, or the stream or consumer is gone (the
    /// server lost its state, or someone deleted them). Creates whatever is missing; the
    /// caller's next pull tries again.
    async fn recover(&mut self) {
        self.back_off().await;
        let start = self.resume.map_or(self.options.start, Start::Sequence);
        let private = self.private.then(|| self.consumer.clone());
        let recreated = async {
            self.events.ensure_stream(&self.topic).await?;
            self.events.ensure_consumer(&self.topic, &self.options, private.as_deref(), start).await
        };
        if let Err(err) = recreated.await {
            tracing::warn!(cause = %err, consumer = %self.consumer, stream = %self.topic.stream, "events consumer cannot reach NATS; retrying");
        }
    }

    /// The delivery `message` holds, and whether it is a released event.
    async fn deliver(&mut self, message: async_nats::Message) -> Result<(Delivery, bool)> {
        let Some(reply) = message.reply.clone() else {
            return Err(EventsError::Internal("a JetStream delivery without an ack subject".into()));
        };
        let message = jetstream::Message { message, context: self.events.js.clone() };
        let info = message.info().map_err(|err| {
            EventsError::Internal(format!("unreadable JetStream ack subject {reply}: {err}"))
        })?;
        let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
        let released = info.stream == self.released_stream;
        let sequence = if released {
            let header = message.headers.as_ref().and_then(|headers| headers.get_last(SEQUENCE_HEADER));
            header.and_then(|value| value.as_str().parse().ok()).unwrap_or(0)
        } else {
            info.stream_sequence
        };
        let stored_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let event =
            event_of(&self.topic.name, sequence, message.headers.as_ref(), &message.payload, stored_ms);
        if !released {
            self.resume = Some(self.resume.unwrap_or(0).max(sequence + 1));
        }
        let connection = &self.events.connection;
        if self.options.auto_ack {
            connection
                .client()
                .publish(reply, "+ACK".into())
                .await
                .map_err(|err| unavailable(format!("ack on NATS at {}: {err}", connection.url())))?;
            return Ok((Delivery::new(event, attempt, None), released));
        }
        let now_ms = micro_events::now_ms();
        let entry = Entry {
            reply,
            member: self.id,
            attempt,
            last: self.options.retry_limit.is_some_and(|limit| attempt > limit),
            deadline: Instant::now() + self.options.ack_wait,
            ack_wait: self.options.ack_wait,
            event: event.clone(),
            first_ms: now_ms,
            last_ms: now_ms,
            error: String::new(),
            released,
        };
        self.in_flight.insert(event.id.clone(), entry);
        Ok((Delivery::new(event, attempt, self.acker.clone()), released))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let released = self.in_flight.release(self.id);
        tracing::debug!(member = self.id, released = released.len(), consumer = %self.consumer, "consumer left; deliveries released");
        let subscriber = self.subscriber.take();
        let events = self.events.clone();
        let (stream, consumer, private) = (self.topic.stream.clone(), self.consumer.clone(), self.private);
        // No runtime means the process is exiting; the deliveries then wait out their ack
        // wait, as after a crash.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let mut unsettled = released;
            if let Some(mut subscriber) = subscriber {
                let _ = subscriber.unsubscribe().await;
                // Deliveries that arrived but were never handed out are unacked too.
                while let Some(Some(message)) = subscriber.next().now_or_never() {
                    if message.status.is_none()
                        && let Some(reply) = message.reply
                    {
                        unsettled.push(reply);
                    }
                }
            }
            let client = events.connection.client();
            if private {
                let empty = json!({});
                let deleting = events.api::<serde_json::Value>(format!("CONSUMER.DELETE.{stream}.{consumer}"), &empty);
                if let Ok(Ok(Err(err))) = tokio::time::timeout(OPERATION_TIMEOUT, deleting).await {
                    tracing::debug!(%err, %consumer, "could not delete a consumer without a group; it expires on its own");
                }
                return;
            }
            for reply in unsettled {
                // Best effort: what is not NAKed is redelivered after its ack wait.
                let _ = client.publish(reply, "-NAK".into()).await;
            }
        });
    }
}
