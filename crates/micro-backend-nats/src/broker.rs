//! [`NatsBroker`]: the [`Broker`] contract on core NATS.
//!
//! A topic is a subject (`micro.broker.<namespace>.<topic>`, see `names`), a message's headers
//! are NATS headers. Each server process holds at most one NATS subscription per
//! `(namespace, topic)` for its plain subscribers and one NATS queue subscription per
//! `(namespace, topic, queue)` for its members of that queue — a *route* — and hands what
//! arrives to its local subscribers the way [`micro_broker::MemoryBroker`] does: every plain
//! subscriber gets every message; a queue's message goes to one local member, round robin,
//! passing a full member's turn to the next. NATS spreads a queue's messages across the
//! processes subscribed to it (at random), so queue groups load-balance across servers, and
//! exactly round robin within one.
//!
//! Each subscriber has its own bounded buffer of [`SUBSCRIBER_BUFFER`] messages; the route's
//! forwarding task never waits for a subscriber, so a message that does not fit is dropped for
//! it and counted, and NATS never sees a slow consumer. Dropping the last local subscriber of a
//! route unsubscribes from NATS.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use async_nats::HeaderMap;
use async_nats::client::PublishErrorKind;
use futures::StreamExt;
use micro_broker::outlet::{Outlet, Outlets, Target};
use micro_broker::{
    Broker, BrokerError, MAX_SUBSCRIPTIONS_PER_NAMESPACE, Message, SUBSCRIBER_BUFFER, Subscription,
    validate_message, validate_target,
};
use micro_core::task::AbortOnDrop;

use crate::connection::{ConnectError, Connection, OPERATION_TIMEOUT, connect};
use crate::names;

/// The broker on a NATS server.
#[derive(Debug, Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Connection,
    routes: Mutex<Routes>,
    outlets: Outlets,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker").field("url", &self.connection.url()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Routes {
    /// Each route with its forwarding task, aborted (which drops, and so unsubscribes, its
    /// NATS subscription) when the route is removed.
    routes: HashMap<RouteKey, (Arc<Route>, AbortOnDrop)>,
    /// Live subscriptions per namespace.
    subscriptions: HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    namespace: String,
    topic: String,
    queue: Option<String>,
}

/// The local subscribers fed by one NATS subscription.
struct Route {
    members: RwLock<Vec<Outlet>>,
    /// Round-robin cursor of a queue route.
    next: AtomicUsize,
}

fn unavailable(cause: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(cause.to_string())
}

impl NatsBroker {
    /// Connects to the NATS server at `url`; fails within [`crate::CONNECT_TIMEOUT`].
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Ok(Self::new(connect(url).await?))
    }

    /// The broker over an open connection.
    pub fn new(connection: Connection) -> Self {
        Self {
            inner: Arc::new(Inner {
                connection,
                routes: Mutex::new(Routes::default()),
                outlets: Outlets::default(),
            }),
        }
    }

    /// Adds `subscriber` to the route for `key`. Without a route: creates one over `nats`, or,
    /// without that either, gives `subscriber` back so the caller can subscribe on NATS first.
    fn join(
        &self,
        key: &RouteKey,
        subscriber: Outlet,
        nats: Option<async_nats::Subscriber>,
    ) -> Result<Option<Outlet>, BrokerError> {
        let mut routes = self.inner.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let count = routes.subscriptions.get(&key.namespace).copied().unwrap_or(0);
        if count >= MAX_SUBSCRIPTIONS_PER_NAMESPACE {
            return Err(BrokerError::Full(format!(
                "namespace {:?} already has {MAX_SUBSCRIPTIONS_PER_NAMESPACE} subscriptions, the limit",
                key.namespace
            )));
        }
        if let Some((route, _)) = routes.routes.get(key) {
            // A NATS subscription made meanwhile is dropped here, which unsubscribes it.
            route.members.write().unwrap_or_else(PoisonError::into_inner).push(subscriber);
        } else if let Some(nats) = nats {
            let route = Arc::new(Route { members: RwLock::new(vec![subscriber]), next: AtomicUsize::new(0) });
            let forwarding =
                tokio::spawn(forward(Arc::downgrade(&self.inner), route.clone(), key.clone(), nats));
            routes.routes.insert(key.clone(), (route, AbortOnDrop::from(forwarding)));
        } else {
            return Ok(Some(subscriber));
        }
        *routes.subscriptions.entry(key.namespace.clone()).or_default() += 1;
        Ok(None)
    }
}

#[async_trait::async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, namespace: &str, topic: &str, message: Message) -> Result<(), BrokerError> {
        validate_target(namespace, topic, None)?;
        validate_message(&message)?;
        self.inner.connection.ready().map_err(unavailable)?;
        let client = self.inner.connection.client();
        let subject = names::broker_subject(namespace, topic);
        let body = bytes::Bytes::from(message.body);
        let sending = async {
            if message.header.is_empty() {
                client.publish(subject, body).await
            } else {
                let mut headers = HeaderMap::new();
                for (name, value) in &message.header {
                    headers.insert(
                        names::encode_header_name(name).as_str(),
                        names::encode_header_value(value).as_str(),
                    );
                }
                client.publish_with_headers(subject, headers, body).await
            }
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, sending).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Err(BrokerError::Invalid(format!(
                    "the message is larger than the NATS server at {} accepts ({err}); raise its max_payload",
                    self.inner.connection.url()
                )))
            }
            Ok(Err(err)) => {
                Err(unavailable(format!("publish to NATS at {}: {err}", self.inner.connection.url())))
            }
            Err(_) => Err(unavailable(format!(
                "NATS at {} did not take the message within {}s",
                self.inner.connection.url(),
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn subscribe(
        &self,
        namespace: &str,
        topic: &str,
        queue: Option<String>,
    ) -> Result<Subscription, BrokerError> {
        validate_target(namespace, topic, queue.as_deref())?;
        self.inner.connection.ready().map_err(unavailable)?;
        let key = RouteKey { namespace: namespace.to_string(), topic: topic.to_string(), queue };
        let (subscriber, subscription) = self
            .inner
            .outlets
            .open(|id| Box::new(Unsubscribe { inner: Arc::downgrade(&self.inner), key: key.clone(), id }));

        let Some(subscriber) = self.join(&key, subscriber, None)? else {
            return Ok(subscription);
        };
        // The first local subscriber of this route: subscribe on NATS, and wait until the
        // server has it (flush), so a message published after we return reaches it.
        let client = self.inner.connection.client();
        let subject = names::broker_subject(namespace, topic);
        let subscribing = async {
            let subscription = match &key.queue {
                Some(queue) => client.queue_subscribe(subject, names::token(queue)).await,
                None => client.subscribe(subject).await,
            }
            .map_err(|err| err.to_string())?;
            client.flush().await.map_err(|err| err.to_string())?;
            Ok::<_, String>(subscription)
        };
        let nats = match tokio::time::timeout(OPERATION_TIMEOUT, subscribing).await {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(err)) => {
                return Err(unavailable(format!(
                    "subscribe on NATS at {}: {err}",
                    self.inner.connection.url()
                )));
            }
            Err(_) => {
                return Err(unavailable(format!(
                    "NATS at {} did not confirm the subscription within {}s",
                    self.inner.connection.url(),
                    OPERATION_TIMEOUT.as_secs()
                )));
            }
        };

        self.join(&key, subscriber, Some(nats))?;
        Ok(subscription)
    }

    fn dropped(&self) -> u64 {
        self.inner.outlets.dropped()
    }

    fn summary(&self) -> String {
        let (version, _) = self.inner.connection.server();
        format!(
            "nats {} (core NATS {version}, {SUBSCRIBER_BUFFER} messages buffered per subscriber)",
            self.inner.connection.url()
        )
    }
}

/// Hands what a route's NATS subscription receives to its local subscribers until the route is
/// removed (the task is aborted) or the connection closes for good.
async fn forward(inner: Weak<Inner>, route: Arc<Route>, key: RouteKey, mut nats: async_nats::Subscriber) {
    while let Some(received) = nats.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let message = Arc::new(decode(received));
        let members = route.members.read().unwrap_or_else(PoisonError::into_inner);
        let target = Target {
            namespace: &key.namespace,
            topic: &key.topic,
            queue: key.queue.as_deref().map(|queue| (queue, &route.next)),
        };
        inner.outlets.deliver(&members, target, &message);
    }
}

fn decode(received: async_nats::Message) -> Message {
    let mut header = HashMap::new();
    if let Some(headers) = &received.headers {
        for (name, values) in headers.iter() {
            if let Some(value) = values.last() {
                header.insert(
                    names::decode_header_name(name.as_ref()),
                    names::decode_header_value(value.as_str()),
                );
            }
        }
    }
    Message { header, body: received.payload.to_vec() }
}

/// Removes one subscriber when its [`Subscription`] is dropped, and the route with its NATS
/// subscription when it was the last.
struct Unsubscribe {
    inner: Weak<Inner>,
    key: RouteKey,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else { return };
        // Never panic in drop: a poisoned map is still a consistent map of routes.
        let mut routes = inner.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((route, _)) = routes.routes.get(&self.key) else { return };
        let (removed, empty) = {
            let mut members = route.members.write().unwrap_or_else(PoisonError::into_inner);
            let before = members.len();
            members.retain(|member| member.id != self.id);
            (before - members.len(), members.is_empty())
        };
        if empty {
            routes.routes.remove(&self.key);
        }
        if let Some(count) = routes.subscriptions.get_mut(&self.key.namespace) {
            *count -= removed;
            if *count == 0 {
                routes.subscriptions.remove(&self.key.namespace);
            }
        }
    }
}
