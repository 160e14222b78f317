//! Calling other services by name, straight to their nodes (no extra hop through the server):
//!
//! ```no_run
//! # mod greeter_client { pub struct GreeterClient<T>(T); impl<T> GreeterClient<T> { pub fn new(t: T) -> Self { Self(t) } } }
//! # async fn example() -> micro::Result<()> {
//! let greeter = greeter_client::GreeterClient::new(micro::client::channel("greeter").await?);
//! # Ok(()) }
//! ```
//!
//! [`channel`] looks the service up in the registry (`Registry/GetService` in the service's
//! namespace) and returns a [`Channel`] that sends each call to the next node in turn (round
//! robin, starting at a random node). Calls carry the namespace and this service's token, so
//! the callee can verify them. Node lists are shared per service name and refreshed every
//! [`REFRESH_INTERVAL`] while a channel for it is alive.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use micro_proto::registry::registry_client::RegistryClient;
use micro_proto::registry::{GetRequest, Options};
use tonic::transport::Endpoint;

use crate::platform::Platform;
use crate::session::NAMESPACE_HEADER;
use crate::{Error, Result};

/// How often the node list of a service in use is read again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long to wait for a node to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel to a service's nodes, for the service's generated client (`XClient::new(channel)`).
/// Cheap to clone; clones share the node list and the round-robin position.
#[derive(Clone)]
pub struct Channel {
    nodes: Arc<Nodes>,
    platform: Arc<Platform>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("service", &self.nodes.service).finish_non_exhaustive()
    }
}

/// The nodes of one service and where the next call goes.
struct Nodes {
    service: String,
    list: RwLock<Vec<(String, tonic::transport::Channel)>>,
    next: AtomicUsize,
}

impl Nodes {
    fn new(service: &str) -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self {
            service: service.to_string(),
            list: RwLock::new(Vec::new()),
            next: AtomicUsize::new(usize::from_le_bytes(seed)),
        }
    }

    /// The next node, round robin.
    fn pick(&self) -> Option<(String, tonic::transport::Channel)> {
        let list = self.list.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if list.is_empty() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        Some(list[index].clone())
    }

    /// Replaces the node list with `addresses`, keeping the connections to nodes still there.
    fn update(&self, addresses: Vec<String>) {
        let mut list = self.list.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut old: HashMap<String, tonic::transport::Channel> = list.drain(..).collect();
        for address in addresses {
            if list.iter().any(|(known, _)| *known == address) {
                continue;
            }
            let channel = match old.remove(&address) {
                Some(channel) => channel,
                None => match Endpoint::from_shared(format!("http://{address}")) {
                    Ok(endpoint) => {
                        endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy()
                    }
                    Err(_) => {
                        tracing::warn!(service = %self.service, %address, "ignoring a node with an invalid address");
                        continue;
                    }
                },
            };
            list.push((address, channel));
        }
    }
}

/// Node lists by service name, shared by every [`Channel`] to that service.
static NODES: Mutex<Option<HashMap<String, Weak<Nodes>>>> = Mutex::new(None);

/// A [`Channel`] to service `name`'s nodes. Fails with [`Error::NotFound`] when the registry
/// has no node of it, and with the registry's status when the lookup is refused.
pub async fn channel(name: &str) -> Result<Channel> {
    let platform = Platform::global()?;
    let existing = {
        let mut map = NODES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get_or_insert_with(HashMap::new).get(name).and_then(Weak::upgrade)
    };
    if let Some(nodes) = existing
        && nodes.list.read().is_ok_and(|list| !list.is_empty())
    {
        return Ok(Channel { nodes, platform });
    }
    let nodes = Arc::new(Nodes::new(name));
    let addresses = lookup(&platform, name).await?;
    if addresses.is_empty() {
        return Err(Error::NotFound(name.to_string()));
    }
    nodes.update(addresses);
    NODES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), Arc::downgrade(&nodes));
    tokio::spawn(refresh(Arc::downgrade(&nodes), platform.clone()));
    Ok(Channel { nodes, platform })
}

/// Keeps `nodes` current while any channel holds it; the task ends when the last one is dropped.
async fn refresh(nodes: Weak<Nodes>, platform: Arc<Platform>) {
    loop {
        tokio::time::sleep(REFRESH_INTERVAL).await;
        let Some(name) = nodes.upgrade().map(|nodes| nodes.service.clone()) else { return };
        match lookup(&platform, &name).await {
            Ok(addresses) => match nodes.upgrade() {
                Some(nodes) => nodes.update(addresses),
                None => return,
            },
            Err(err) => {
                tracing::debug!(service = %name, cause = %err, "cannot refresh the service's nodes; keeping the known ones")
            }
        }
    }
}

/// The addresses of `name`'s nodes in the service's namespace; none when it is not registered.
async fn lookup(platform: &Platform, name: &str) -> Result<Vec<String>> {
    let request = GetRequest {
        service: name.to_string(),
        options: Some(Options { ttl: 0, domain: platform.namespace.clone() }),
    };
    let request = platform.request(request).await;
    match RegistryClient::new(platform.channel.clone()).get_service(request).await {
        Ok(reply) => Ok(reply
            .into_inner()
            .services
            .into_iter()
            .flat_map(|service| service.nodes)
            .map(|node| node.address)
            .collect()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(Vec::new()),
        Err(status) => Err(platform.error(status)),
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per node; the call waits for the node it picks.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let nodes = self.nodes.clone();
        let platform = self.platform.clone();
        Box::pin(async move {
            let Some((_, mut node)) = nodes.pick() else {
                let status =
                    tonic::Status::unavailable(format!("service {} has no running node", nodes.service));
                return Ok(status.into_http());
            };
            // The callee's span is the child of this call's client span, or (recording
            // nothing) of the caller's own.
            let span = micro_core::trace::client(request.uri().path());
            match &span {
                Some(cx) => micro_core::trace::inject(cx, request.headers_mut()),
                None => micro_core::trace::inject_current(request.headers_mut()),
            }
            let headers = request.headers_mut();
            if !headers.contains_key(NAMESPACE_HEADER)
                && let Ok(value) = http::HeaderValue::from_str(&platform.namespace)
            {
                headers.insert(NAMESPACE_HEADER, value);
            }
            if !headers.contains_key(http::header::AUTHORIZATION)
                && let Some(token) = platform.session.bearer(&platform.channel).await
                && let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}"))
            {
                request.headers_mut().insert(http::header::AUTHORIZATION, value);
            }
            std::future::poll_fn(|cx| tower::Service::poll_ready(&mut node, cx)).await?;
            let answered = tower::Service::call(&mut node, request).await;
            if let Some(cx) = span {
                let code = answered.as_ref().map_or(14, micro_core::trace::response_code);
                micro_core::trace::finish_rpc(&cx, code, false);
            }
            Ok(answered?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_go_round_robin_over_the_current_nodes() {
        let nodes = Nodes::new("greeter");
        assert!(nodes.pick().is_none());
        nodes.update(vec![
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
            "127.0.0.1:1".into(),
        ]);
        let addresses = |nodes: &Nodes| -> Vec<String> {
            nodes.list.read().unwrap().iter().map(|(address, _)| address.clone()).collect()
        };
        assert_eq!(
            addresses(&nodes),
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
            "duplicates are kept once"
        );

        // Each node once per round, whatever the random start.
        let picked: Vec<String> = (0..6).map(|_| nodes.pick().unwrap().0).collect();
        assert_eq!(picked[..3].iter().collect::<std::collections::HashSet<_>>().len(), 3, "{picked:?}");
        assert_eq!(picked[..3], picked[3..]);

        nodes.update(vec!["127.0.0.1:3".into(), "bad address".into()]);
        assert_eq!(addresses(&nodes), ["127.0.0.1:3"], "gone and invalid nodes are dropped");
        nodes.update(Vec::new());
        assert!(nodes.pick().is_none());
    }
}
