//! The in-process [`Broker`]: subscribers are bounded channels, publish is a non-blocking
//! `try_send` to each under a read lock.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use crate::outlet::{Outlet, Outlets, Target};

use crate::{
    Broker, BrokerError, MAX_SUBSCRIPTIONS_PER_NAMESPACE, Message, SUBSCRIBER_BUFFER, Subscription,
    validate_message, validate_target,
};

/// The in-memory broker of one server.
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespaces: RwLock<HashMap<String, Namespace>>,
    outlets: Outlets,
}

#[derive(Debug, Default)]
struct Namespace {
    topics: HashMap<String, Topic>,
    subscriptions: usize,
}

#[derive(Debug, Default)]
struct Topic {
    /// Subscribers without a queue: each gets every message.
    plain: Vec<Outlet>,
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
    members: Vec<Outlet>,
    /// Round-robin cursor; atomic so that publishers only need the read lock.
    next: AtomicUsize,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBroker {
    pub fn new() -> Self {
        let inner = Inner { namespaces: RwLock::new(HashMap::new()), outlets: Outlets::default() };
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
        let outlets = &self.inner.outlets;
        outlets.deliver(&subscribers.plain, Target { namespace, topic, queue: None }, &message);
        for (queue, group) in &subscribers.queues {
            let target = Target { namespace, topic, queue: Some((queue, &group.next)) };
            outlets.deliver(&group.members, target, &message);
        }
        Ok(())
    }

    fn subscribe_now(
        &self,
        namespace: &str,
        topic: &str,
        queue: Option<String>,
    ) -> Result<Subscription, BrokerError> {
        validate_target(namespace, topic, queue.as_deref())?;
        let unsubscribe = |id| -> Box<dyn Send + Sync> {
            Box::new(Unsubscribe {
                inner: Arc::downgrade(&self.inner),
                namespace: namespace.to_string(),
                topic: topic.to_string(),
                queue: queue.clone(),
                id,
            })
        };
        let (outlet, subscription) = self.inner.outlets.open(unsubscribe);

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
            None => subscribers.plain.push(outlet),
            Some(queue) => subscribers.queues.entry(queue.clone()).or_default().members.push(outlet),
        }
        Ok(subscription)
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
        self.inner.outlets.dropped()
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
