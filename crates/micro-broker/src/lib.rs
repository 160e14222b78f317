//! The broker: ephemeral publish/subscribe, topics scoped by namespace (docs/compatibility.md §3.6, §7.2).
//!
//! A message published on a topic goes to every subscriber of that topic in that namespace that
//! is not in a queue, and to exactly one member of each queue group subscribed to it (round
//! robin), so queue groups load-balance. Nothing is persisted and a subscriber only sees what is
//! published while it is subscribed. Publishing never waits for subscribers: each subscriber has
//! a bounded buffer ([`SUBSCRIBER_BUFFER`]) and a message that does not fit is dropped for that
//! subscriber and counted.
//!
//! - [`Broker`]: the backend trait and its contract; [`MemoryBroker`] is the in-process backend
//!   (`micro-backend-nats` holds the NATS one; both run the same [`conformance`] suite).
//! - [`grpc`]: the `broker.Broker` service, which needs an account (docs/compatibility.md §6.6).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod grpc;
mod memory;
pub mod outlet;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;

pub use memory::MemoryBroker;

/// Longest topic (and queue name), in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Largest message body.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest total size of a message's header names and values.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How many messages a subscriber may have waiting before new ones are dropped for it.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// Most live subscriptions one namespace may hold.
pub const MAX_SUBSCRIPTIONS_PER_NAMESPACE: usize = 4096;
/// Shortest gap between two "subscriber lags" log lines about one subscriber.
pub const LAG_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a publish or subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The topic, queue, namespace or message is malformed or too large.
    #[error("{0}")]
    Invalid(String),
    /// A per-namespace limit was reached.
    #[error("{0}")]
    Full(String),
    /// The backend cannot serve right now (e.g. its NATS server is unreachable); retrying
    /// may succeed. The message may name internals: log it, do not send it to clients.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// One message: headers and an opaque body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub header: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Message {
    /// A message with `body` and no headers.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self { header: HashMap::new(), body: body.into() }
    }
}

/// A pluggable broker backend.
///
/// Contract every backend keeps (checked by [`conformance`]):
/// - Topics and queues live inside a namespace: nothing crosses namespaces.
/// - A message goes to every live subscriber without a queue, and to exactly one member of each
///   queue group (spread across members); never twice to one subscriber.
/// - No persistence and no replay: only subscribers live at publish time can receive a message.
///   Per publisher and subscriber, messages arrive in publish order (fewer on drops).
/// - `publish` never waits for a subscriber to read. A subscriber that lets
///   [`SUBSCRIBER_BUFFER`] messages pile up loses the next ones; each loss is counted in
///   [`Subscription::dropped`] and [`Broker::dropped`].
/// - Dropping a [`Subscription`] unsubscribes it.
#[async_trait::async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Publishes `message` on `topic` in `namespace`.
    async fn publish(&self, namespace: &str, topic: &str, message: Message) -> Result<(), BrokerError>;

    /// Subscribes to `topic` in `namespace`, in queue group `queue` when given.
    async fn subscribe(
        &self,
        namespace: &str,
        topic: &str,
        queue: Option<String>,
    ) -> Result<Subscription, BrokerError>;

    /// Messages dropped so far for lagging subscribers, over all subscriptions.
    fn dropped(&self) -> u64;

    /// One line for start-up logs.
    fn summary(&self) -> String;
}

/// A live subscription: a stream of messages that unsubscribes when dropped.
pub struct Subscription {
    messages: mpsc::Receiver<Arc<Message>>,
    dropped: Arc<AtomicU64>,
    // Held only for its `Drop`, which removes the subscriber from its backend.
    _unsubscribe: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription reading `messages`, whose losses `dropped` counts; `unsubscribe` is dropped
    /// with it (backends put their clean-up in its `Drop`).
    pub fn new(
        messages: mpsc::Receiver<Arc<Message>>,
        dropped: Arc<AtomicU64>,
        unsubscribe: impl Send + Sync + 'static,
    ) -> Self {
        Self { messages, dropped, _unsubscribe: Box::new(unsubscribe) }
    }

    /// The next message; `None` once the backend has gone away.
    pub async fn recv(&mut self) -> Option<Arc<Message>> {
        self.messages.recv().await
    }

    /// Messages dropped so far because this subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Stream for Subscription {
    type Item = Arc<Message>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.messages.poll_recv(cx)
    }
}

/// Checks a topic or queue name: 1 to [`MAX_TOPIC_BYTES`] of `[A-Za-z0-9._-]`.
pub fn validate_topic(topic: &str) -> Result<(), BrokerError> {
    validate_name("topic", topic)
}

fn validate_name(what: &str, name: &str) -> Result<(), BrokerError> {
    if name.is_empty() {
        return Err(BrokerError::Invalid(format!("missing {what}")));
    }
    if name.len() > MAX_TOPIC_BYTES {
        return Err(BrokerError::Invalid(format!("{what} is longer than {MAX_TOPIC_BYTES} bytes")));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(BrokerError::Invalid(format!("{what} {name:?} may only contain A-Z a-z 0-9 . _ -")));
    }
    Ok(())
}

/// Checks everything a publish or subscribe names: namespace, topic and queue.
pub fn validate_target(namespace: &str, topic: &str, queue: Option<&str>) -> Result<(), BrokerError> {
    micro_core::validate_namespace(namespace).map_err(|err| BrokerError::Invalid(err.to_string()))?;
    validate_topic(topic)?;
    if let Some(queue) = queue {
        validate_name("queue", queue)?;
    }
    Ok(())
}

/// Checks a message's size: body up to [`MAX_MESSAGE_BYTES`], headers up to [`MAX_HEADER_BYTES`].
pub fn validate_message(message: &Message) -> Result<(), BrokerError> {
    if message.body.len() > MAX_MESSAGE_BYTES {
        return Err(BrokerError::Invalid(format!(
            "message body is {} bytes, more than the {MAX_MESSAGE_BYTES} allowed",
            message.body.len()
        )));
    }
    let header_bytes: usize = message.header.iter().map(|(name, value)| name.len() + value.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(BrokerError::Invalid(format!(
            "message headers are {header_bytes} bytes, more than the {MAX_HEADER_BYTES} allowed"
        )));
    }
    Ok(())
}
