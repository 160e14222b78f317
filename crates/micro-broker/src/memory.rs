//! The in-process [`Broker`]: subscribers are bounded channels, publish is a non-blocking
//! `try_send` to each under a read lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Instant;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{
    Broker, BrokerError, LAG_LOG_INTERVAL, MAX_SUBSCRIPTIONS_PER_NAMESPACE, Message, SUBSCRIBER_BUFFER,
    Subscription, validate_message, validate_target,
};

/// The in-memory broker of one server.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespaces: RwLock<HashMap<String, Namespace>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
    /// Origin of the lag-log timestamps kept per subscriber.
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Namespace {
    topics: HashMap<String, Topic>,
    subscriptions: usize,
}

#[derive(Debug, Default)]
struct Topic {
    /// Subscribers without a queue: each gets every message.
    plain: Vec<Subscriber>,
    /// Queue groups: each message goes to one member of each.
    queues: HashMap<String, Queue>,
}

impl Topic {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

#[derive(Debug, Default)]
struct Queue {
    members: Vec<Subscriber>,
    /// Round-robin cursor; atomic so that publishers only need the read lock.
    next: AtomicUsize,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    sender: mpsc::Sender<Arc<Message>>,
    dropped: Arc<AtomicU64>,
    /// Milliseconds after `Inner::epoch` (plus one) of the last lag log line; zero: never.
    last_warned: AtomicU64,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        let inner = Inner {
            namespaces: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Live subscriptions in `namespace`.
    pub fn subscriptions(&self, namespace: &str) -> usize {
        let namespaces = self.inner.namespaces.read().expect("broker lock poisoned");
        namespaces.get(namespace).map_or(0, |ns| ns.subscriptions)
    }

    fn publish_now(&self, namespace: &str, topic: &str, message: Message) -> Result<(), BrokerError> {
        validate_target(namespace, topic, None)?;
        validate_message(&message)?;
        let message = Arc::new(message);
        let namespaces = self.inner.namespaces.read().expect("broker lock poisoned");
        let Some(subscribers) = namespaces.get(namespace).and_then(|ns| ns.topics.get(topic)) else {
            return Ok(());
        };
        for subscriber in &subscribers.plain {
            if let Err(TrySendError::Full(_)) = subscriber.sender.try_send(Arc::clone(&message)) {
                self.lagged(namespace, topic, None, subscriber);
            }
        }
        for (queue, group) in &subscribers.queues {
            let members = group.members.len();
            if members == 0 {
                continue;
            }
            // Round robin, but a full member passes its turn to the next one with room: the
            // message is only dropped when the whole group is behind.
            let start = group.next.fetch_add(1, Ordering::Relaxed) % members;
            let delivered = (0..members).any(|offset| {
                let member = &group.members[(start + offset) % members];
                member.sender.try_send(Arc::clone(&message)).is_ok()
            });
            if !delivered {
                self.lagged(namespace, topic, Some(queue), &group.members[start]);
            }
        }
        Ok(())
    }

    /// Counts a message dropped for `subscriber` and says so, at most once per
    /// [`LAG_LOG_INTERVAL`] per subscriber.
    fn lagged(&self, namespace: &str, topic: &str, queue: Option<&str>, subscriber: &Subscriber) {
        let dropped = subscriber.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let interval = u64::try_from(LAG_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let last = subscriber.last_warned.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        if due
            && subscriber
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                namespace,
                topic,
                queue = queue.unwrap_or(""),
                subscriber = subscriber.id,
                dropped,
                buffer = SUBSCRIBER_BUFFER,
                "broker subscriber lags; dropping messages for it"
            );
        }
    }

    fn subscribe_now(
        &self,
        namespace: &str,
        topic: &str,
        queue: Option<String>,
    ) -> Result<Subscription, BrokerError> {
        validate_target(namespace, topic, queue.as_deref())?;
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber =
            Subscriber { id, sender, dropped: Arc::clone(&dropped), last_warned: AtomicU64::new(0) };

        let mut namespaces = self.inner.namespaces.write().expect("broker lock poisoned");
        let ns = namespaces.entry(namespace.to_string()).or_default();
        if ns.subscriptions >= MAX_SUBSCRIPTIONS_PER_NAMESPACE {
            return Err(BrokerError::Full(format!(
                "namespace {namespace:?} already has {MAX_SUBSCRIPTIONS_PER_NAMESPACE} subscriptions, the limit"
            )));
        }
        ns.subscriptions += 1;
        let subscribers = ns.topics.entry(topic.to_string()).or_default();
        match &queue {
            None => subscribers.plain.push(subscriber),
            Some(queue) => subscribers.queues.entry(queue.clone()).or_default().members.push(subscriber),
        }
        drop(namespaces);

        let unsubscribe = Unsubscribe {
            inner: Arc::downgrade(&self.inner),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            queue,
            id,
        };
        Ok(Subscription::new(receiver, dropped, unsubscribe))
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, namespace: &str, topic: &str, message: Message) -> Result<(), BrokerError> {
        self.publish_now(namespace, topic, message)
    }

    async fn subscribe(
        &self,
        namespace: &str,
        topic: &str,
        queue: Option<String>,
    ) -> Result<Subscription, BrokerError> {
        self.subscribe_now(namespace, topic, queue)
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn summary(&self) -> String {
        format!("memory (in-process, {SUBSCRIBER_BUFFER} messages buffered per subscriber)")
    }
}

/// Removes one subscriber when its [`Subscription`] is dropped.
struct Unsubscribe {
    inner: Weak<Inner>,
    namespace: String,
    topic: String,
    queue: Option<String>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else { return };
        // Never panic in drop: a poisoned map is still a consistent map of subscribers.
        let mut namespaces = inner.namespaces.write().unwrap_or_else(PoisonError::into_inner);
        let Some(ns) = namespaces.get_mut(&self.namespace) else { return };
        let Some(topic) = ns.topics.get_mut(&self.topic) else { return };
        let before = topic.plain.len() + topic.queues.values().map(|q| q.members.len()).sum::<usize>();
        match &self.queue {
            None => topic.plain.retain(|s| s.id != self.id),
            Some(queue) => {
                if let Some(group) = topic.queues.get_mut(queue) {
                    group.members.retain(|s| s.id != self.id);
                    if group.members.is_empty() {
                        topic.queues.remove(queue);
                    }
                }
            }
        }
        let after = topic.plain.len() + topic.queues.values().map(|q| q.members.len()).sum::<usize>();
        if topic.is_empty() {
            ns.topics.remove(&self.topic);
        }
        ns.subscriptions -= before - after;
        if ns.subscriptions == 0 {
            namespaces.remove(&self.namespace);
        }
    }
}

#[cfg(test)]
impl MemoryBroker {
    pub(crate) fn inner_is_empty(&self) -> bool {
        self.inner.namespaces.read().expect("broker lock poisoned").is_empty()
    }
}
