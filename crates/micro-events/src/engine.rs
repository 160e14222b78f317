//! Consumer groups over a [`Storage`] log, shared by the embedded backends.
//!
//! Each `(namespace, topic)` in use has a [`TopicState`]: a watch channel bumped by every
//! publish (consumers wait on it, no polling), its named groups and the private groups of
//! consumers that gave none.
//!
//! A [`Group`] is pull-based: a consumer asking for its next delivery takes, in this order,
//! an in-flight event whose ack wait ran out (lowest sequence first; once its retry limit is
//! spent, moved to a named group's dead letters, or dropped with a warning for a private
//! group), else an event released from the dead letters, else the next event of the log (read
//! ahead in batches of [`FETCH_BATCH`]). A released event's sequence is behind the group's
//! position, so it does not hold the position back; storage keeps it until it is settled. Nothing is taken from the log while the group has [`MAX_IN_FLIGHT`]
//! unacked events. The group's position ("settled") is the sequence before its earliest
//! event not yet settled — in flight, read ahead, or not fetched — and is saved whenever it
//! moves, by at most one writer at a time; acks that arrive during a save are covered by the
//! next one (group commit).
//!
//! A replay (docs/events.md#replay) moves a group back under its `persisted` and `state`
//! locks, so no ack, nack, delivery or save runs half before and half after it: the new
//! position (and, for a replay with an end, the [`Skip`] past what the group had settled) is
//! stored durably first, then the group's in-flight deliveries (but released ones) and
//! read-ahead are dropped and it reads the log from the replay's start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use micro_core::batch::CommitQueue;
use tokio::sync::{oneshot, watch};
use tokio::time::{Duration, Instant};

use crate::now_ms;
use crate::storage::{Append, Bounds, NewEvent, Skip, Storage, new_id, unread};
use crate::{
    Acker, ConsumeOptions, Consumer, DEFAULT_READ_LIMIT, DeadLetter, Delivery, Event, EventsError, GroupLag,
    MAX_DEAD_LETTERS, MAX_GROUPS, MAX_IN_FLIGHT, MAX_READ_LIMIT, MAX_TOPICS, Nack, Position, PublishOptions,
    Published, Replay, Replayed, Result, Retention, Selection, Start, TopicInfo, validate,
};

/// Events a group reads ahead from the log in one go.
const FETCH_BATCH: usize = 256;
/// Most publishes committed together.
const MAX_BATCH_EVENTS: usize = 4096;
/// Most payload bytes committed together (a single larger event is committed alone).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// A publish waiting for its commit, and where its result goes.
type Pending = (Append, oneshot::Sender<Result<Event>>);

type TopicKey = (String, String);

/// The embedded backends' implementation of [`crate::Events`].
pub(crate) struct Engine {
    storage: Arc<dyn Storage>,
    retention: Retention,
    topics: Mutex<HashMap<TopicKey, Arc<TopicState>>>,
    /// Publishes waiting to be committed.
    pending: CommitQueue<Pending>,
    /// Held by the publisher committing a batch.
    commit: tokio::sync::Mutex<()>,
}

struct TopicState {
    /// Bumped after every publish to the topic.
    published: watch::Sender<u64>,
    groups: tokio::sync::Mutex<HashMap<String, Arc<Group>>>,
    private: Mutex<Vec<Weak<Group>>>,
}

/// Runs `work` against the storage on the blocking pool.
async fn blocking<T: Send + 'static>(
    storage: &Arc<dyn Storage>,
    work: impl FnOnce(&dyn Storage) -> Result<T> + Send + 'static,
) -> Result<T> {
    let storage = storage.clone();
    tokio::task::spawn_blocking(move || work(&*storage)).await.map_err(|err| {
        tracing::error!(cause = %err, "events storage task failed");
        EventsError::Internal(format!("events storage task failed: {err}"))
    })?
}

/// [`crate::replay_restart`] with the skip as storage keeps it.
fn restart(settled: u64, range: &Replayed, bounded: bool) -> (u64, Option<Skip>) {
    let (start, skip) = crate::replay_restart(settled, range, bounded);
    (start, skip.map(|(to, resume)| Skip { to, resume }))
}

impl Engine {
    pub(crate) fn new(storage: Arc<dyn Storage>, retention: Retention) -> Self {
        Self {
            storage,
            retention,
            topics: Mutex::new(HashMap::new()),
            pending: CommitQueue::default(),
            commit: tokio::sync::Mutex::new(()),
        }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<TopicKey, Arc<TopicState>>> {
        // The map is only inserted into and read; a panic while holding it leaves it valid.
        self.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn topic(&self, namespace: &str, topic: &str) -> Arc<TopicState> {
        self.topics()
            .entry((namespace.to_string(), topic.to_string()))
            .or_insert_with(|| {
                Arc::new(TopicState {
                    published: watch::Sender::new(0),
                    groups: tokio::sync::Mutex::new(HashMap::new()),
                    private: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    pub(crate) async fn publish(
        &self,
        namespace: &str,
        topic: &str,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<Published> {
        validate::publish(namespace, topic, &payload, &options.metadata)?;
        let timestamp_ms = options.timestamp_ms.unwrap_or_else(now_ms);
        let event = NewEvent { id: new_id(timestamp_ms), metadata: options.metadata, payload, timestamp_ms };
        let append = Append { namespace: namespace.to_string(), topic: topic.to_string(), event };
        let stored = self.append(append).await?;
        // Consumers create the topic state before they read the log, so one that read before
        // this append sees the bump, and one that reads after sees the event.
        let state = self.topics().get(&(namespace.to_string(), topic.to_string())).cloned();
        if let Some(state) = state {
            state.published.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(Published { id: stored.id, sequence: stored.sequence, timestamp_ms: stored.timestamp_ms })
    }

    /// Appends `append` durably, in one commit with whatever other publishes are waiting
    /// (group commit): the publisher holding the commit lock takes the queue, up to
    /// [`MAX_BATCH_EVENTS`] / [`MAX_BATCH_BYTES`], commits it, and hands every publisher its
    /// result; the others find theirs when they get the lock, or commit the next batch.
    async fn append(&self, append: Append) -> Result<Event> {
        let (sender, mut result) = oneshot::channel();
        self.pending.push((append, sender));
        loop {
            let leader = self.commit.lock().await;
            match result.try_recv() {
                Ok(stored) => return stored,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(EventsError::Internal("a publish was dropped before it committed".into()));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = self
                .pending
                .take(MAX_BATCH_EVENTS, MAX_BATCH_BYTES, |(append, _)| append.event.payload.len());
            if batch.is_empty() {
                // Ours is in a batch whose committer went away mid-commit; it reports to us.
                drop(leader);
                return result.await.unwrap_or_else(|_| {
                    Err(EventsError::Internal("a publish was dropped before it committed".into()))
                });
            }
            let (storage, retention) = (self.storage.clone(), self.retention);
            // The commit reports to every publisher itself, so this future may be dropped.
            let commit = tokio::task::spawn_blocking(move || {
                let (appends, senders): (Vec<Append>, Vec<_>) = batch.into_iter().unzip();
                match storage.append(appends, &retention) {
                    Ok(stored) => {
                        for (sender, event) in senders.into_iter().zip(stored) {
                            let _ = sender.send(Ok(event));
                        }
                    }
                    Err(err) => {
                        for sender in senders {
                            let _ = sender.send(Err(err.clone()));
                        }
                    }
                }
            });
            if let Err(err) = commit.await {
                tracing::error!(cause = %err, "events commit task failed");
            }
        }
    }

    pub(crate) async fn read(
        &self,
        namespace: &str,
        topic: &str,
        limit: usize,
        offset: u64,
    ) -> Result<Vec<Event>> {
        validate::namespace(namespace)?;
        validate::topic(topic)?;
        let limit = if limit == 0 { DEFAULT_READ_LIMIT } else { limit.min(MAX_READ_LIMIT) };
        let (ns, name) = (namespace.to_string(), topic.to_string());
        blocking(&self.storage, move |storage| {
            let bounds = storage.bounds(&ns, &name)?;
            storage.read_from(&ns, &name, bounds.first.saturating_add(offset), limit)
        })
        .await
    }

    pub(crate) async fn consume(
        &self,
        namespace: &str,
        topic: &str,
        options: ConsumeOptions,
    ) -> Result<Consumer> {
        validate::consume(namespace, topic, &options)?;
        let state = self.topic(namespace, topic);
        let group = match &options.group {
            Some(name) => {
                let mut groups = state.groups.lock().await;
                match groups.get(name) {
                    Some(group) => group.clone(),
                    None => {
                        let group = self.open_group(namespace, topic, Some(name), options.start).await?;
                        groups.insert(name.clone(), group.clone());
                        group
                    }
                }
            }
            None => {
                let group = self.open_group(namespace, topic, None, options.start).await?;
                let mut private = state.private.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                private.retain(|weak| weak.strong_count() > 0);
                private.push(Arc::downgrade(&group));
                group
            }
        };
        Ok(consumer(state, group, options))
    }

    /// A group as persisted (named and known), else new at `start`.
    async fn open_group(
        &self,
        namespace: &str,
        topic: &str,
        name: Option<&String>,
        start: Start,
    ) -> Result<Arc<Group>> {
        let (ns, tp, gr) = (namespace.to_string(), topic.to_string(), name.cloned());
        let (next, settled, released, skip) = blocking(&self.storage, move |storage| {
            let released = gr.as_ref().map_or(Ok(Vec::new()), |group| storage.released(&ns, &tp, group))?;
            if let Some(group) = &gr
                && let Some(settled) = storage.load_cursor(&ns, &tp, group)?
            {
                let skip = storage.load_skip(&ns, &tp, group)?;
                return Ok((settled + 1, settled, released, skip));
            }
            let next = match start {
                Start::Newest => storage.bounds(&ns, &tp)?.last + 1,
                Start::Sequence(sequence) => sequence.max(1),
                Start::Time(ms) => storage.sequence_at(&ns, &tp, ms)?,
            };
            if let Some(group) = &gr {
                // Persist the starting point, so a group created at "newest" does not move
                // on to a later "newest" after a restart.
                storage.save_cursor(&ns, &tp, group, next - 1, true)?;
            }
            Ok((next, next - 1, released, None))
        })
        .await?;
        let mut state = GroupState {
            next_fetch: next,
            buffer: VecDeque::new(),
            released: released.into(),
            in_flight: BTreeMap::new(),
            ids: HashMap::new(),
            skip,
        };
        state.apply_skip();
        Ok(Arc::new(Group {
            storage: self.storage.clone(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            name: name.cloned(),
            state: tokio::sync::Mutex::new(state),
            changed: watch::Sender::new(0),
            persisted: tokio::sync::Mutex::new(Persisted { saved: settled, durable: settled }),
        }))
    }

    async fn find_group(&self, namespace: &str, topic: &str, group: &str, id: &str) -> Result<Arc<Group>> {
        validate::namespace(namespace)?;
        validate::topic(topic)?;
        let state = self.topics().get(&(namespace.to_string(), topic.to_string())).cloned();
        let Some(state) = state else { return Err(EventsError::NotFound) };
        if !group.is_empty() {
            return state.groups.lock().await.get(group).cloned().ok_or(EventsError::NotFound);
        }
        let private: Vec<Arc<Group>> = {
            let private = state.private.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            private.iter().filter_map(Weak::upgrade).collect()
        };
        for group in private {
            if group.state.lock().await.ids.contains_key(id) {
                return Ok(group);
            }
        }
        Err(EventsError::NotFound)
    }

    pub(crate) async fn ack(&self, namespace: &str, topic: &str, group: &str, id: &str) -> Result<()> {
        self.find_group(namespace, topic, group, id).await?.settle(id).await
    }

    pub(crate) async fn nack_with(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        id: &str,
        nack: Nack,
    ) -> Result<()> {
        self.find_group(namespace, topic, group, id).await?.reject(id, &nack).await
    }

    pub(crate) async fn dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
    ) -> Result<Vec<DeadLetter>> {
        validate::dead_letters(namespace, topic, group)?;
        let (ns, tp, gr) = (namespace.to_string(), topic.to_string(), group.to_string());
        blocking(&self.storage, move |storage| storage.dead_letters(&ns, &tp, &gr)).await
    }

    /// Removes the selected dead letters; with `release`, hands them back to the group: stored
    /// as released, and queued in the group if it is open here (else it loads them on open).
    pub(crate) async fn take_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
        release: bool,
    ) -> Result<Vec<String>> {
        validate::dead_letters(namespace, topic, group)?;
        validate::selection(which)?;
        let state = self.topic(namespace, topic);
        // Held across the storage step so a group opening meanwhile loads the released events
        // either from storage or from here, never both.
        let groups = state.groups.lock().await;
        let (ns, tp, gr, which) =
            (namespace.to_string(), topic.to_string(), group.to_string(), which.clone());
        let taken =
            blocking(&self.storage, move |storage| storage.take_dead_letters(&ns, &tp, &gr, &which, release))
                .await?;
        if release && let Some(open) = groups.get(group) {
            open.state.lock().await.released.extend(taken.iter().map(|dead| dead.event.clone()));
            open.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        tracing::info!(namespace, topic, group, count = taken.len(), release, "dead letters taken");
        Ok(taken.into_iter().map(|dead| dead.event.id).collect())
    }

    pub(crate) async fn replay(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        replay: &Replay,
    ) -> Result<Replayed> {
        validate::replay(namespace, topic, group, replay, now_ms())?;
        let state = self.topic(namespace, topic);
        // Held throughout, so the group is not opened (from storage) halfway.
        let groups = state.groups.lock().await;
        let (ns, tp, gr, replay) = (namespace.to_string(), topic.to_string(), group.to_string(), *replay);
        let (range, cursor) = blocking(&self.storage, move |storage| {
            let bounds = storage.bounds(&ns, &tp)?;
            let sequence = |position: Position, end: bool| match position {
                Position::Sequence(sequence) => Ok(sequence),
                // The end is the last event at or before the time: one before the first after it.
                Position::Time(ms) if end => Ok(storage.sequence_at(&ns, &tp, ms.saturating_add(1))? - 1),
                Position::Time(ms) => storage.sequence_at(&ns, &tp, ms),
            };
            let to = replay.to.map(|to| sequence(to, true)).transpose()?;
            let range =
                validate::replay_range(&tp, bounds.first, bounds.last, sequence(replay.from, false)?, to)?;
            Ok((range, storage.load_cursor(&ns, &tp, &gr)?))
        })
        .await?;
        let bounded = replay.to.is_some();
        match groups.get(group) {
            Some(open) => {
                let mut persisted = open.persisted.lock().await;
                let mut state = open.state.lock().await;
                let (start, skip) = restart(state.settled(), &range, bounded);
                let (ns, tp, gr) = (namespace.to_string(), topic.to_string(), group.to_string());
                blocking(&self.storage, move |storage| storage.save_replay(&ns, &tp, &gr, start - 1, skip))
                    .await?;
                let GroupState { in_flight, ids, .. } = &mut *state;
                in_flight.retain(|_, entry| entry.released);
                ids.retain(|_, sequence| in_flight.contains_key(sequence));
                state.buffer.clear();
                state.next_fetch = start;
                state.skip = skip;
                (persisted.saved, persisted.durable) = (start - 1, start - 1);
                drop((state, persisted));
                open.changed.send_modify(|n| *n = n.wrapping_add(1));
            }
            None => {
                let settled = cursor.ok_or_else(|| validate::unknown_group(topic, group))?;
                let (start, skip) = restart(settled, &range, bounded);
                let (ns, tp, gr) = (namespace.to_string(), topic.to_string(), group.to_string());
                blocking(&self.storage, move |storage| storage.save_replay(&ns, &tp, &gr, start - 1, skip))
                    .await?;
            }
        }
        tracing::info!(
            namespace,
            topic,
            group,
            first = range.first_sequence,
            last = range.last_sequence,
            events = range.events,
            "consumer group replayed"
        );
        Ok(range)
    }

    pub(crate) async fn list_topics(&self, namespace: &str) -> Result<Vec<TopicInfo>> {
        validate::namespace(namespace)?;
        let ns = namespace.to_string();
        blocking(&self.storage, move |storage| storage.topics(&ns, MAX_TOPICS)).await
    }

    /// Every named group from storage (one more than [`MAX_GROUPS`], so the report can say some
    /// were left out); a group open in this process counts from its live state, which knows its
    /// deliveries and read-ahead, the others from their persisted position.
    pub(crate) async fn groups(&self) -> Result<Vec<GroupLag>> {
        let stored = blocking(&self.storage, |storage| storage.groups(MAX_GROUPS + 1)).await?;
        let mut lags = Vec::with_capacity(stored.len());
        for stored in stored {
            let state = self.topics().get(&(stored.namespace.clone(), stored.topic.clone())).cloned();
            let open = match state {
                Some(state) => state.groups.lock().await.get(&stored.group).cloned(),
                None => None,
            };
            let (pending, unacked) = match open {
                Some(open) => open.state.lock().await.lag(stored.bounds),
                None => (unread(stored.bounds, stored.settled, stored.skip) + stored.released, 0),
            };
            lags.push(GroupLag {
                namespace: stored.namespace,
                topic: stored.topic,
                group: stored.group,
                pending,
                unacked: Some(unacked),
                dead: Some(stored.dead),
            });
        }
        Ok(crate::reported_groups(lags))
    }

    pub(crate) async fn sweep(&self) -> Result<u64> {
        let retention = self.retention;
        blocking(&self.storage, move |storage| storage.sweep(&retention)).await
    }

    pub(crate) fn summary(&self) -> String {
        self.storage.summary()
    }
}

struct InFlight {
    event: Event,
    /// The consumer it was last delivered to.
    consumer: u64,
    deliveries: u32,
    deadline: Instant,
    ack_wait: Duration,
    retry_limit: Option<u32>,
    /// Unix milliseconds of the first and the latest delivery.
    first_ms: u64,
    last_ms: u64,
    /// The reason of the latest nack that gave one.
    error: String,
    /// Released from the dead letters: behind the group's position, kept by storage until
    /// settled.
    released: bool,
}

impl InFlight {
    fn new(event: Event, consumer: u64, options: &ConsumeOptions, now: Instant, released: bool) -> Self {
        let now_ms = now_ms();
        Self {
            event,
            consumer,
            deliveries: 1,
            deadline: now + options.ack_wait,
            ack_wait: options.ack_wait,
            retry_limit: options.retry_limit,
            first_ms: now_ms,
            last_ms: now_ms,
            error: String::new(),
            released,
        }
    }

    /// The retry limit allows no further delivery.
    fn exhausted(&self) -> bool {
        self.retry_limit.is_some_and(|limit| self.deliveries > limit)
    }
}

struct GroupState {
    /// The next sequence to read from the log.
    next_fetch: u64,
    /// Read ahead, not yet delivered.
    buffer: VecDeque<Event>,
    /// Released from the dead letters, not yet delivered; they go before the log's events.
    released: VecDeque<Event>,
    /// Delivered, awaiting an ack, by sequence.
    in_flight: BTreeMap<u64, InFlight>,
    /// Event id → sequence of `in_flight`.
    ids: HashMap<String, u64>,
    /// After a replay with an end: past `to`, read on at `resume`.
    skip: Option<Skip>,
}

impl GroupState {
    /// Every sequence up to this one is settled.
    fn settled(&self) -> u64 {
        let mut earliest = self.next_fetch;
        if let Some(event) = self.buffer.front() {
            earliest = earliest.min(event.sequence);
        }
        if let Some((&sequence, _)) = self.in_flight.iter().find(|(_, entry)| !entry.released) {
            earliest = earliest.min(sequence);
        }
        earliest.saturating_sub(1)
    }

    /// Jumps over what a bounded replay skips, once the group read up to its end.
    fn apply_skip(&mut self) {
        if let Some(skip) = self.skip
            && self.next_fetch > skip.to
        {
            self.next_fetch = self.next_fetch.max(skip.resume);
            self.skip = None;
        }
    }

    /// How many events to read ahead from `next_fetch`: a batch, but not past a skip's end.
    fn fetch_limit(&self) -> usize {
        match self.skip {
            Some(skip) => {
                usize::try_from(skip.to + 1 - self.next_fetch).unwrap_or(FETCH_BATCH).min(FETCH_BATCH)
            }
            None => FETCH_BATCH,
        }
    }

    /// `(pending, unacked)` of [`GroupLag`], the topic's log holding `bounds`: every event in
    /// flight, read ahead or released and not delivered yet, and what is left to read.
    fn lag(&self, bounds: Bounds) -> (u64, u64) {
        let waiting = self.buffer.iter().chain(&self.released);
        let waiting = waiting.filter(|event| !self.in_flight.contains_key(&event.sequence)).count();
        let unacked = self.in_flight.len() as u64;
        (unacked + waiting as u64 + unread(bounds, self.next_fetch.saturating_sub(1), self.skip), unacked)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.deadline).min()
    }
}

struct Group {
    storage: Arc<dyn Storage>,
    namespace: String,
    topic: String,
    /// `None` for a consumer's private group, whose position is not persisted.
    name: Option<String>,
    state: tokio::sync::Mutex<GroupState>,
    /// Bumped when an event becomes deliverable again or in-flight room frees up.
    changed: watch::Sender<u64>,
    /// The position last saved; held while saving, so saves run one at a time.
    persisted: tokio::sync::Mutex<Persisted>,
}

struct Persisted {
    /// Saved, perhaps not yet durably.
    saved: u64,
    /// Saved durably.
    durable: u64,
}

enum Take {
    /// An event to deliver, its attempt number, and how much the position may have moved
    /// (0: not; [`FETCH_BATCH`]: save it now).
    Got(Event, u32, usize),
    /// Nothing now; wait for a publish, a group change, or this ack-wait deadline.
    Wait(Option<Instant>),
}

impl Group {
    /// The next delivery for consumer `consumer`.
    async fn take(&self, consumer: u64, options: &ConsumeOptions) -> Result<Take> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let mut moved = false;
        while let Some(sequence) = state.in_flight.iter().find(|(_, f)| f.deadline <= now).map(|(s, _)| *s) {
            let Some(entry) = state.in_flight.get_mut(&sequence) else { break };
            if entry.exhausted() {
                self.give_up(&mut state, sequence).await?;
                moved = true;
                continue;
            }
            entry.deliveries += 1;
            entry.deadline = now + entry.ack_wait;
            entry.consumer = consumer;
            entry.last_ms = now_ms();
            return Ok(Take::Got(entry.event.clone(), entry.deliveries, usize::from(moved)));
        }
        if !options.auto_ack && state.in_flight.len() >= MAX_IN_FLIGHT {
            return Ok(Take::Wait(state.next_deadline()));
        }
        while let Some(event) = state.released.pop_front() {
            if state.ids.contains_key(&event.id) || state.in_flight.contains_key(&event.sequence) {
                continue; // delivered already, as released or from the log
            }
            if options.auto_ack {
                self.settle_released(event.sequence).await?;
                return Ok(Take::Got(event, 1, usize::from(moved)));
            }
            state.ids.insert(event.id.clone(), event.sequence);
            state
                .in_flight
                .insert(event.sequence, InFlight::new(event.clone(), consumer, options, now, true));
            return Ok(Take::Got(event, 1, usize::from(moved)));
        }
        if state.buffer.is_empty() {
            state.apply_skip();
            let (ns, topic, from, limit) =
                (self.namespace.clone(), self.topic.clone(), state.next_fetch, state.fetch_limit());
            let events =
                blocking(&self.storage, move |storage| storage.read_from(&ns, &topic, from, limit)).await?;
            if let Some(last) = events.last() {
                state.next_fetch = last.sequence + 1;
            }
            state.buffer.extend(events);
            // A read that reached a bounded replay's end jumps now, so the position moves on.
            state.apply_skip();
        }
        match state.buffer.pop_front() {
            Some(event) if options.auto_ack => {
                // Caught up with what was read ahead: save now rather than after a batch.
                let unsaved = if state.buffer.is_empty() { FETCH_BATCH } else { 1 };
                Ok(Take::Got(event, 1, unsaved))
            }
            // Released, and in flight as such, when a replay reached it: delivered already.
            Some(event) if state.in_flight.contains_key(&event.sequence) => Ok(Take::Wait(Some(now))),
            Some(event) => {
                state.ids.insert(event.id.clone(), event.sequence);
                state
                    .in_flight
                    .insert(event.sequence, InFlight::new(event.clone(), consumer, options, now, false));
                Ok(Take::Got(event, 1, usize::from(moved)))
            }
            None => Ok(Take::Wait(state.next_deadline())),
        }
    }

    /// Saves the group's position if it moved past the saved one. `durable` for acks, whose
    /// callers were told the event is settled; auto-ack consumers save every [`FETCH_BATCH`]
    /// deliveries and when they catch up, not durably (the file backend makes them durable
    /// with its next durable write or on close), so a crash may redeliver a few auto-acked
    /// events rather than cost a commit per event.
    ///
    /// `needed`: the position the caller needs saved; a save that covered it while the caller
    /// waited for its turn is enough (group commit: one save covers every ack before it).
    async fn persist(&self, needed: Option<u64>, durable: bool) -> Result<()> {
        let Some(name) = &self.name else { return Ok(()) };
        let mut persisted = self.persisted.lock().await;
        let reached = if durable { persisted.durable } else { persisted.saved };
        if needed.is_some_and(|needed| needed <= reached) {
            return Ok(());
        }
        let settled = self.state.lock().await.settled();
        if settled <= reached {
            return Ok(());
        }
        let (ns, topic, group) = (self.namespace.clone(), self.topic.clone(), name.clone());
        blocking(&self.storage, move |storage| storage.save_cursor(&ns, &topic, &group, settled, durable))
            .await?;
        persisted.saved = settled;
        if durable {
            persisted.durable = settled;
        }
        Ok(())
    }

    async fn settle(&self, id: &str) -> Result<()> {
        let needed = {
            let mut state = self.state.lock().await;
            let sequence = state.ids.remove(id).ok_or(EventsError::NotFound)?;
            if state.in_flight.remove(&sequence).is_some_and(|entry| entry.released) {
                self.settle_released(sequence).await?;
            }
            state.settled()
        };
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.persist(Some(needed), true).await
    }

    /// Forgets a released event the group settled.
    async fn settle_released(&self, sequence: u64) -> Result<()> {
        let Some(name) = &self.name else { return Ok(()) };
        let (ns, topic, group) = (self.namespace.clone(), self.topic.clone(), name.clone());
        blocking(&self.storage, move |storage| storage.settle_released(&ns, &topic, &group, sequence)).await
    }

    async fn reject(&self, id: &str, nack: &Nack) -> Result<()> {
        let needed = {
            let mut state = self.state.lock().await;
            let sequence = *state.ids.get(id).ok_or(EventsError::NotFound)?;
            let Some(entry) = state.in_flight.get_mut(&sequence) else { return Err(EventsError::NotFound) };
            entry.error = nack.kept_reason();
            if nack.permanent || entry.exhausted() {
                // Given up on now: the dead letter is stored before the nack returns.
                self.give_up(&mut state, sequence).await?;
                Some(state.settled())
            } else {
                entry.deadline = Instant::now();
                None
            }
        };
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        match needed {
            Some(needed) => self.persist(Some(needed), true).await,
            None => Ok(()),
        }
    }

    /// Gives up on in-flight `sequence`: a named group's dead letter (stored durably first,
    /// so a failure leaves it in flight), a private group's warning.
    async fn give_up(&self, state: &mut GroupState, sequence: u64) -> Result<()> {
        let Some(entry) = state.in_flight.get(&sequence) else { return Ok(()) };
        let group = self.name.as_deref();
        let removed = match &self.name {
            Some(name) => {
                let dead = DeadLetter {
                    event: entry.event.clone(),
                    attempts: entry.deliveries,
                    error: entry.error.clone(),
                    first_delivery_ms: entry.first_ms,
                    last_delivery_ms: entry.last_ms,
                };
                let (ns, topic, name) = (self.namespace.clone(), self.topic.clone(), name.clone());
                blocking(&self.storage, move |storage| {
                    storage.add_dead_letter(&ns, &topic, &name, &dead, MAX_DEAD_LETTERS)
                })
                .await?
            }
            None => Vec::new(),
        };
        tracing::warn!(
            namespace = %self.namespace, topic = %self.topic, group, id = %entry.event.id, sequence,
            deliveries = entry.deliveries, error = %entry.error,
            "{}", crate::given_up(entry.exhausted(), group.is_some())
        );
        if !removed.is_empty() {
            tracing::warn!(
                namespace = %self.namespace, topic = %self.topic, group, removed = ?removed,
                limit = MAX_DEAD_LETTERS, "dead letters over the limit; the oldest removed"
            );
        }
        if let Some(entry) = state.in_flight.remove(&sequence) {
            state.ids.remove(&entry.event.id);
        }
        Ok(())
    }
}

impl GroupState {
    /// Makes the events in flight to `consumer` deliverable again at once (it left the
    /// group, so they would otherwise wait out their ack wait); returns how many.
    fn release(&mut self, consumer: u64) -> usize {
        let now = Instant::now();
        let mut released = 0;
        for entry in self.in_flight.values_mut().filter(|entry| entry.consumer == consumer) {
            entry.deadline = now;
            released += 1;
        }
        released
    }
}

impl Group {
    fn released(&self, consumer: u64, released: usize) {
        if released > 0 {
            tracing::debug!(consumer, released, topic = %self.topic, "consumer left; deliveries released");
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// A consumer's membership of its group; dropping it (the consumer went away) releases the
/// consumer's unacked deliveries to the other members.
struct Member {
    group: Arc<Group>,
    id: u64,
}

impl Drop for Member {
    fn drop(&mut self) {
        let id = self.id;
        if let Ok(mut state) = self.group.state.try_lock() {
            let released = state.release(id);
            drop(state);
            self.group.released(id, released);
            return;
        }
        // Busy: release from a task, unless the backend is gone by then. No runtime means the
        // process is exiting; the events then wait out their ack wait, as after a crash.
        let group = Arc::downgrade(&self.group);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(group) = group.upgrade() {
                    let released = group.state.lock().await.release(id);
                    group.released(id, released);
                }
            });
        }
    }
}

/// Settles a delivery through its group.
struct GroupAcker(Arc<Group>);

#[async_trait]
impl Acker for GroupAcker {
    async fn ack(&self, id: &str) -> Result<()> {
        self.0.settle(id).await
    }

    async fn nack(&self, id: &str, nack: Nack) -> Result<()> {
        self.0.reject(id, &nack).await
    }
}

/// Consumer numbers, for logs only.
static CONSUMERS: AtomicU64 = AtomicU64::new(0);

fn consumer(topic: Arc<TopicState>, group: Arc<Group>, options: ConsumeOptions) -> Consumer {
    let acker: Option<Arc<dyn Acker>> =
        if options.auto_ack { None } else { Some(Arc::new(GroupAcker(group.clone()))) };
    let member = Member { group, id: CONSUMERS.fetch_add(1, Ordering::Relaxed) };
    tracing::debug!(consumer = member.id, group = member.group.name.as_deref().unwrap_or(""), topic = %member.group.topic, "consumer joined");
    let stream = futures::stream::unfold(Some((topic, member, options, acker, 0)), |context| async move {
        let (topic, member, options, acker, mut unsaved) = context?;
        let group = &member.group;
        loop {
            // Subscribe before looking, so a publish or change after the look wakes us.
            let mut published = topic.published.subscribe();
            let mut changed = group.changed.subscribe();
            match group.take(member.id, &options).await {
                Ok(Take::Got(event, attempt, moved)) => {
                    // Auto-ack positions are saved every FETCH_BATCH deliveries and whenever
                    // the consumer catches up, not one commit per event.
                    unsaved += moved;
                    if unsaved >= FETCH_BATCH {
                        if let Err(err) = group.persist(None, false).await {
                            return Some((Err(err), None));
                        }
                        unsaved = 0;
                    }
                    let delivery = Delivery::new(event, attempt, acker.clone());
                    return Some((Ok(delivery), Some((topic, member, options, acker, unsaved))));
                }
                Ok(Take::Wait(deadline)) => {
                    if unsaved > 0 {
                        if let Err(err) = group.persist(None, false).await {
                            return Some((Err(err), None));
                        }
                        unsaved = 0;
                    }
                    let timer = async {
                        match deadline {
                            Some(deadline) => tokio::time::sleep_until(deadline).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = published.changed() => {}
                        _ = changed.changed() => {}
                        () = timer => {}
                    }
                }
                Err(err) => return Some((Err(err), None)),
            }
        }
    });
    Consumer::new(stream)
}

/// Implements [`crate::Events`] for a backend struct holding `engine: Arc<Engine>`.
macro_rules! delegate_events {
    ($backend:ty) => {
        #[async_trait::async_trait]
        impl $crate::Events for $backend {
            async fn publish(
                &self,
                namespace: &str,
                topic: &str,
                payload: Vec<u8>,
                options: $crate::PublishOptions,
            ) -> $crate::Result<$crate::Published> {
                self.engine.publish(namespace, topic, payload, options).await
            }

            async fn read(
                &self,
                namespace: &str,
                topic: &str,
                limit: usize,
                offset: u64,
            ) -> $crate::Result<Vec<$crate::Event>> {
                self.engine.read(namespace, topic, limit, offset).await
            }

            async fn consume(
                &self,
                namespace: &str,
                topic: &str,
                options: $crate::ConsumeOptions,
            ) -> $crate::Result<$crate::Consumer> {
                self.engine.consume(namespace, topic, options).await
            }

            async fn ack(&self, namespace: &str, topic: &str, group: &str, id: &str) -> $crate::Result<()> {
                self.engine.ack(namespace, topic, group, id).await
            }

            async fn nack_with(
                &self,
                namespace: &str,
                topic: &str,
                group: &str,
                id: &str,
                nack: $crate::Nack,
            ) -> $crate::Result<()> {
                self.engine.nack_with(namespace, topic, group, id, nack).await
            }

            async fn dead_letters(
                &self,
                namespace: &str,
                topic: &str,
                group: &str,
            ) -> $crate::Result<Vec<$crate::DeadLetter>> {
                self.engine.dead_letters(namespace, topic, group).await
            }

            async fn release(
                &self,
                namespace: &str,
                topic: &str,
                group: &str,
                which: &$crate::Selection,
            ) -> $crate::Result<Vec<String>> {
                self.engine.take_dead_letters(namespace, topic, group, which, true).await
            }

            async fn drop_dead_letters(
                &self,
                namespace: &str,
                topic: &str,
                group: &str,
                which: &$crate::Selection,
            ) -> $crate::Result<Vec<String>> {
                self.engine.take_dead_letters(namespace, topic, group, which, false).await
            }

            async fn replay(
                &self,
                namespace: &str,
                topic: &str,
                group: &str,
                replay: &$crate::Replay,
            ) -> $crate::Result<$crate::Replayed> {
                self.engine.replay(namespace, topic, group, replay).await
            }

            async fn topics(&self, namespace: &str) -> $crate::Result<Vec<$crate::TopicInfo>> {
                self.engine.list_topics(namespace).await
            }

            async fn groups(&self) -> $crate::Result<Vec<$crate::GroupLag>> {
                self.engine.groups().await
            }

            async fn sweep(&self) -> $crate::Result<u64> {
                self.engine.sweep().await
            }

            fn summary(&self) -> String {
                self.engine.summary()
            }
        }
    };
}

pub(crate) use delegate_events;
