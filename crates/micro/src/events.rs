//! The platform's durable event streams, scoped to the service's namespace.
//!
//! ```no_run
//! # async fn example() -> micro::Result<()> {
//! use micro::events::{self, ConsumeOptions};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Order { id: u32 }
//!
//! events::publish("orders", &Order { id: 1 }).await?;
//!
//! // Every instance of the service in group "billing" shares the orders; each is acked once
//! // handled, and redelivered (to any member) if it is not acked within the ack wait.
//! let mut orders = events::consume("orders", ConsumeOptions::group("billing")).await?;
//! while let Some(event) = orders.next().await {
//!     let event = event?;
//!     let order: Order = event.json()?;
//!     # let _ = order.id;
//!     event.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Events are stored durably and delivered in publish order per topic. A consumer stream ends
//! with an error when the connection to the server fails; consuming again resumes a named
//! group where it was (unacked events are delivered again).
//!
//! An event a named group gives up on — its retry limit ran out, or it was nacked with
//! [`Failure::Permanent`] — goes to the group's dead letters, where `micro events dead`,
//! `release` and `drop` find it (docs/events.md#dead-letters).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use micro_proto::events::stream_client::StreamClient;
use micro_proto::events::{AckRequest, ConsumeRequest, Event as WireEvent, NackRequest, PublishRequest};
use tonic::Streaming;

use crate::Result;
use crate::platform::Platform;

/// Ack wait when [`ConsumeOptions::ack_wait`] was not called (the server's default too).
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// What a publish stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id, the same on every delivery.
    pub id: String,
    /// Its position in the topic, from 1.
    pub sequence: u64,
}

/// Publishes `message` as JSON on `topic`.
pub async fn publish<T: serde::Serialize + ?Sized>(topic: &str, message: &T) -> Result<Published> {
    publish_raw(topic, serde_json::to_vec(message)?, HashMap::new()).await
}

/// Publishes `payload` as given, with `metadata`, on `topic`. Inside a traced call the
/// metadata also carries its `traceparent` (unless it names one), so that the consumer's span
/// joins the trace (docs/observability.md#traces).
pub async fn publish_raw(
    topic: &str,
    payload: impl Into<Vec<u8>>,
    mut metadata: HashMap<String, String>,
) -> Result<Published> {
    let platform = Platform::global()?;
    micro_core::trace::inject_map(&mut metadata);
    let request =
        PublishRequest { topic: topic.to_string(), metadata, payload: payload.into(), timestamp: 0 };
    let reply = StreamClient::new(platform.channel.clone())
        .publish(platform.request(request).await)
        .await
        .map_err(|status| platform.error(status))?
        .into_inner();
    Ok(Published { id: reply.id, sequence: reply.sequence })
}

/// Where a new group starts; a group that exists already continues where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Only events published from now on.
    #[default]
    Newest,
    /// At this sequence (1 = the oldest event kept).
    Sequence(u64),
    /// At the first event published at or after this time.
    Time(std::time::SystemTime),
}

/// How [`consume`] consumes. The default: a private consumer of new events, manual ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeOptions {
    group: String,
    start: Start,
    auto_ack: bool,
    ack_wait: Duration,
    retry_limit: Option<u32>,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            group: String::new(),
            start: Start::Newest,
            auto_ack: false,
            ack_wait: DEFAULT_ACK_WAIT,
            retry_limit: None,
        }
    }
}

impl ConsumeOptions {
    /// Consumers of one group share its events (each to one of them), and the group's
    /// position is kept by the server.
    pub fn group(name: impl Into<String>) -> Self {
        Self { group: name.into(), ..Self::default() }
    }

    /// The same options for group `name`.
    pub fn with_group(mut self, name: impl Into<String>) -> Self {
        self.group = name.into();
        self
    }

    /// The group; empty for a private consumer.
    pub fn group_name(&self) -> &str {
        &self.group
    }

    /// Where the group starts if it is new.
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Events count as handled once delivered; [`Event::ack`] is then a no-op. Events in
    /// transit when the consumer goes away are lost to it (at most once).
    pub fn auto_ack(mut self) -> Self {
        self.auto_ack = true;
        self
    }

    /// An event not acked within `wait` is delivered again.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// At most `retries` redeliveries of an event (so at most `retries + 1` deliveries), then
    /// it is given up on: moved to a named group's dead letters (default: unlimited).
    pub fn retry_limit(mut self, retries: u32) -> Self {
        self.retry_limit = Some(retries);
        self
    }

    fn request(&self, topic: &str) -> ConsumeRequest {
        let (sequence, offset) = match self.start {
            Start::Newest => (0, 0),
            Start::Sequence(sequence) => (sequence.max(1), 0),
            Start::Time(time) => {
                let seconds = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
                (0, i64::try_from(seconds).unwrap_or(i64::MAX).max(1))
            }
        };
        ConsumeRequest {
            group: self.group.clone(),
            topic: topic.to_string(),
            offset,
            auto_ack: self.auto_ack,
            ack_wait: i64::try_from(self.ack_wait.as_nanos()).unwrap_or(i64::MAX).max(1),
            retry_limit: self.retry_limit.map_or(-1, i64::from),
            sequence,
        }
    }
}

/// Consumes `topic`: events arrive in publish order (redeliveries apart).
pub async fn consume(topic: &str, options: ConsumeOptions) -> Result<Consumer> {
    let platform = Platform::global()?;
    let request = platform.stream_request(options.request(topic)).await;
    let client = StreamClient::new(platform.channel.clone());
    let stream = client.clone().consume(request).await.map_err(|status| platform.error(status))?.into_inner();
    Ok(Consumer {
        stream,
        client,
        platform,
        topic: topic.to_string(),
        group: options.group,
        auto_ack: options.auto_ack,
    })
}

/// A stream of events from [`consume`]. Dropping it leaves the group; events it did not ack
/// go to the group's other members.
#[derive(Debug)]
pub struct Consumer {
    stream: Streaming<WireEvent>,
    client: StreamClient<tonic::transport::Channel>,
    platform: Arc<Platform>,
    topic: String,
    group: String,
    auto_ack: bool,
}

impl Consumer {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        match self.stream.message().await {
            Ok(Some(event)) => Some(Ok(Event {
                id: event.id,
                topic: event.topic,
                metadata: event.metadata,
                payload: event.payload,
                timestamp: std::time::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(event.timestamp_ms).unwrap_or_default()),
                sequence: event.sequence,
                settle: (!self.auto_ack)
                    .then(|| Settle { client: self.client.clone(), group: self.group.clone() }),
            })),
            Ok(None) => None,
            Err(status) => Some(Err(self.platform.error(status))),
        }
    }

    /// The topic consumed.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Why handling an event failed, and whether to try again: the error of a
/// [`Service::consume`](crate::Service::consume) handler, and what [`Event::nack_with`] sends.
///
/// ```
/// use micro::events::{Event, Failure};
///
/// async fn handle(event: Event) -> Result<(), Failure> {
///     // Malformed input never gets better: straight to the dead letters.
///     let order: serde_json::Value = event.json().map_err(Failure::permanent)?;
///     // Anything else is retried, within the retry limit.
///     if order["total"].is_null() {
///         return Err(Failure::retry("the price service is down"));
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Deliver the event again (within the retry limit); the reason is kept as its last error.
    Retry(String),
    /// Do not retry: the event goes to the group's dead letters at once, with this reason.
    Permanent(String),
}

impl Failure {
    /// A failure worth retrying, for `reason`.
    pub fn retry(reason: impl std::fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }

    /// A failure retrying cannot fix, for `reason`.
    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        Self::Permanent(reason.to_string())
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        match self {
            Self::Retry(reason) | Self::Permanent(reason) => reason,
        }
    }

    /// `err` as a failure: itself if it is one, else a retry with its message.
    pub(crate) fn of<E: std::fmt::Display + 'static>(err: E) -> Self {
        match (&err as &dyn std::any::Any).downcast_ref::<Failure>() {
            Some(failure) => failure.clone(),
            None => Self::Retry(err.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry(reason) => write!(f, "{reason}"),
            Self::Permanent(reason) => write!(f, "{reason} (permanent)"),
        }
    }
}

impl std::error::Error for Failure {}

/// How a manually acked event is settled.
#[derive(Debug, Clone)]
struct Settle {
    client: StreamClient<tonic::transport::Channel>,
    group: String,
}

/// One delivered event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The same on every delivery of the event.
    pub id: String,
    pub topic: String,
    pub metadata: HashMap<String, String>,
    pub payload: Vec<u8>,
    /// When it was published.
    pub timestamp: std::time::SystemTime,
    /// Its position in the topic, from 1.
    pub sequence: u64,
    settle: Option<Settle>,
}

impl Event {
    /// The payload decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// Marks the event handled: the group never gets it again. A no-op with auto-ack.
    pub async fn ack(&self) -> Result<()> {
        let Some(settle) = &self.settle else { return Ok(()) };
        let platform = Platform::global()?;
        let request = AckRequest {
            id: self.id.clone(),
            success: true,
            topic: self.topic.clone(),
            group: settle.group.clone(),
        };
        settle
            .client
            .clone()
            .ack(platform.request(request).await)
            .await
            .map_err(|status| platform.error(status))?;
        Ok(())
    }

    /// Gives the event back: it is delivered again at once (subject to the retry limit).
    /// A no-op with auto-ack.
    pub async fn nack(&self) -> Result<()> {
        self.nack_with(&Failure::Retry(String::new())).await
    }

    /// Gives the event back as `failure` says: delivered again (within the retry limit), or
    /// moved to the group's dead letters at once when permanent; the reason is kept as the
    /// dead letter's last error. A no-op with auto-ack.
    pub async fn nack_with(&self, failure: &Failure) -> Result<()> {
        let Some(settle) = &self.settle else { return Ok(()) };
        let platform = Platform::global()?;
        let request = NackRequest {
            id: self.id.clone(),
            topic: self.topic.clone(),
            group: settle.group.clone(),
            permanent: matches!(failure, Failure::Permanent(_)),
            reason: failure.reason().to_string(),
        };
        settle
            .client
            .clone()
            .nack(platform.request(request).await)
            .await
            .map_err(|status| platform.error(status))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_wire_request() {
        let default = ConsumeOptions::default().request("t");
        assert_eq!(
            (default.sequence, default.offset, default.auto_ack, default.retry_limit),
            (0, 0, false, -1)
        );
        assert_eq!(default.ack_wait, 30_000_000_000);

        let grouped =
            ConsumeOptions::group("g").start(Start::Sequence(0)).retry_limit(1).auto_ack().request("t");
        assert_eq!((grouped.group.as_str(), grouped.sequence, grouped.retry_limit), ("g", 1, 1));
        assert!(grouped.auto_ack);

        let then = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let timed = ConsumeOptions::default().start(Start::Time(then)).request("t");
        assert_eq!((timed.sequence, timed.offset), (0, 1_700_000_000));
    }

    #[test]
    fn handler_errors_become_failures() {
        assert_eq!(Failure::of("timeout".to_string()), Failure::Retry("timeout".into()));
        assert_eq!(Failure::of(Failure::permanent("bad")), Failure::Permanent("bad".into()));
        assert_eq!(Failure::permanent("bad").to_string(), "bad (permanent)");
        assert_eq!(Failure::retry("slow").reason(), "slow");
    }
}
