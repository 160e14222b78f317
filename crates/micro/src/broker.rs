//! The platform's broker: ephemeral publish/subscribe, scoped to the service's namespace.
//! Only subscribers connected at publish time get a message; nothing is stored (use
//! [`events`](crate::events) for that).
//!
//! ```no_run
//! # async fn example() -> micro::Result<()> {
//! micro::broker::publish("greetings", &serde_json::json!({"hello": "world"})).await?;
//!
//! let mut greetings = micro::broker::subscribe("greetings").await?;
//! while let Some(message) = greetings.next().await {
//!     let message = message?;
//!     println!("{}", String::from_utf8_lossy(&message.body));
//! }
//! # Ok(()) }
//! ```
//!
//! In a service, [`Service::subscribe`](crate::Service::subscribe) runs a handler per message,
//! sharing the topic between the service's instances.

use std::collections::HashMap;
use std::sync::Arc;

use micro_proto::broker::broker_client::BrokerClient;
use micro_proto::broker::{Message as WireMessage, PublishRequest, SubscribeRequest};
use tonic::Streaming;

use crate::Result;
use crate::platform::Platform;

/// One message.
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

    /// The body decoded from JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// Publishes `message` as JSON on `topic`.
pub async fn publish<T: serde::Serialize + ?Sized>(topic: &str, message: &T) -> Result<()> {
    publish_message(topic, Message::new(serde_json::to_vec(message)?)).await
}

/// Publishes `message` as given on `topic`; inside a traced call its header also carries the
/// call's `traceparent` (unless it names one), as events do.
pub async fn publish_message(topic: &str, mut message: Message) -> Result<()> {
    let platform = Platform::global()?;
    micro_core::trace::inject_map(&mut message.header);
    let request = PublishRequest {
        topic: topic.to_string(),
        message: Some(WireMessage { header: message.header, body: message.body }),
    };
    BrokerClient::new(platform.channel.clone())
        .publish(platform.request(request).await)
        .await
        .map_err(|status| platform.error(status))?;
    Ok(())
}

/// Subscribes to every message on `topic`.
pub async fn subscribe(topic: &str) -> Result<Subscription> {
    subscribe_queue(topic, "").await
}

/// Subscribes in queue group `queue`: the group's subscribers share the topic's messages,
/// each to one of them (an empty `queue` = every message).
pub async fn subscribe_queue(topic: &str, queue: &str) -> Result<Subscription> {
    let platform = Platform::global()?;
    let request = SubscribeRequest { topic: topic.to_string(), queue: queue.to_string() };
    let stream = BrokerClient::new(platform.channel.clone())
        .subscribe(platform.stream_request(request).await)
        .await
        .map_err(|status| platform.error(status))?
        .into_inner();
    Ok(Subscription { stream, platform })
}

/// A live subscription; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    stream: Streaming<WireMessage>,
    platform: Arc<Platform>,
}

impl Subscription {
    /// The next message; `None` when the server ended the subscription.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        match self.stream.message().await {
            Ok(Some(message)) => Some(Ok(Message { header: message.header, body: message.body })),
            Ok(None) => None,
            Err(status) => Some(Err(self.platform.error(status))),
        }
    }
}
