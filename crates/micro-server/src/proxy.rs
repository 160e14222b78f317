//! The gRPC proxy on :8081 (reference §4.9): a call for a service this process does not host is
//! forwarded, as raw HTTP/2 (headers, body frames and trailers, never decoded), to a node of
//! that service from the registry. The auth gate has already admitted the call and put its
//! [`Context`] in the request extensions; the registry domain is the context's namespace.
//!
//! # Routing rule
//!
//! A gRPC path is `/<prefix>.<Handler>/<Method>`, where `<prefix>` is everything before the last
//! `.` of the first segment (reference §3.1). Tonic servers, ours included, dispatch on the full
//! `<package>.<Handler>` name, so the path is forwarded unchanged and the prefix must be mapped
//! to a registered service:
//!
//! 1. a service registered under the name `<prefix>` (the original's convention, and ours when
//!    a service is named after its proto package: `/helloworld.Helloworld/Call` → `helloworld`);
//! 2. else a service whose registered descriptors declare the gRPC service `<prefix>.<Handler>`
//!    (a service `greeter` serving proto package `hello` is reached at `/hello.Greeter/Call`).
//!
//! Nodes of the chosen service are tried in round-robin order per service. A node that cannot
//! be connected to is skipped (the request body has not been read yet, so it can be replayed);
//! when none answers the call fails with `UNAVAILABLE`. An unknown service is `UNIMPLEMENTED`
//! with `service <prefix> not found`, as a proper gRPC response.
//!
//! Auth rules see the resource `service:<prefix>:<Handler.Method>` (the gate runs on the path).
//!
//! The caller's `authorization` never reaches the node: it is replaced by a token scoped to the
//! callee's namespace ([`crate::forward`]), or dropped for an anonymous caller.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use http::{Request, Response};
use micro_core::Context;
use micro_proto::registry::Service;
use micro_registry::Registry;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use crate::forward::Forwarder;

/// Most proxies one call may pass through: a node registered at a proxy's own address (or two
/// servers pointing at each other) would otherwise forward a call in a circle until memory or
/// streams run out. Counted in the [`HOPS_HEADER`]; past it the call fails with
/// `FAILED_PRECONDITION`.
pub const MAX_PROXY_HOPS: u32 = 8;
/// The metadata the proxy counts its hops in.
pub const HOPS_HEADER: &str = "micro-proxy-hops";

/// How long to wait for a node to accept a connection before trying the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Cached channels and round-robin counters kept at most; past this the caches start afresh.
const MAX_CACHED: usize = 4096;

/// Headers that name properties of one HTTP connection; HTTP/2 forbids forwarding them.
const CONNECTION_HEADERS: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// Forwards calls to registered services. Cheap to clone: clones share their caches.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn Registry>,
    forwarder: Forwarder,
    /// One lazily connected channel per node address; it reconnects by itself.
    channels: Mutex<HashMap<String, Channel>>,
    /// Next node index per (domain, service).
    turns: Mutex<HashMap<(String, String), Arc<AtomicUsize>>>,
    /// `<package>.<Handler>` → registered service name, per domain, found through descriptors.
    by_descriptor: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(registry: Arc<dyn Registry>, forwarder: Forwarder) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                forwarder,
                channels: Mutex::default(),
                turns: Mutex::default(),
                by_descriptor: Mutex::default(),
            }),
        }
    }

    /// Forwards one call and returns the node's response, or a gRPC error response.
    pub async fn forward<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        match self.try_forward(request).await {
            Ok(response) => response,
            Err(status) => status.into_http(),
        }
    }

    async fn try_forward<B>(&self, request: Request<B>) -> Result<Response<Body>, Status>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let path = request.uri().path().to_string();
        let (prefix, handler) = split_path(&path)
            .ok_or_else(|| Status::unimplemented(format!("malformed gRPC method path {path:?}")))?;
        let context = request.extensions().get::<Context>().cloned();
        let domain = context
            .as_ref()
            .map_or_else(|| micro_core::DEFAULT_NAMESPACE.to_string(), |context| context.namespace.clone());
        let not_found = || Status::unimplemented(format!("service {prefix} not found"));
        let service = self.resolve(&domain, prefix, handler).ok_or_else(not_found)?;
        if service.nodes.is_empty() {
            // A core service name with a handler this process does not host.
            return Err(not_found());
        }

        let (mut parts, body) = request.into_parts();
        for header in CONNECTION_HEADERS {
            parts.headers.remove(*header);
        }
        let hops = parts
            .headers
            .get(HOPS_HEADER)
            .and_then(|value| value.to_str().ok()?.parse::<u32>().ok())
            .unwrap_or(0)
            .saturating_add(1);
        if hops > MAX_PROXY_HOPS {
            return Err(Status::failed_precondition(format!(
                "the call to {prefix} passed through {MAX_PROXY_HOPS} proxies (MAX_PROXY_HOPS): a node of \
                 {} forwards back to a proxy",
                service.name
            )));
        }
        parts.headers.insert(HOPS_HEADER, http::HeaderValue::from(hops));
        let caller_token = parts.headers.remove(http::header::AUTHORIZATION);
        let forwarded = caller_token
            .as_ref()
            .and_then(|value| value.to_str().ok()?.strip_prefix("Bearer "))
            .zip(context.as_ref().and_then(|context| context.account.as_ref()))
            .and_then(|(token, account)| self.inner.forwarder.token(token.trim(), account, &domain))
            .and_then(|token| http::HeaderValue::from_str(&format!("Bearer {token}")).ok());
        if let Some(value) = forwarded {
            parts.headers.insert(http::header::AUTHORIZATION, value);
        }
        // The body moves into the first attempt only when a node takes it; until then it can be
        // handed to the next node.
        let slot = Arc::new(Mutex::new(Some(Body::new(body))));
        let addresses: Vec<&str> = service.nodes.iter().map(|node| node.address.as_str()).collect();
        let start = self.turn(&domain, &service.name);
        let mut failures = Vec::new();
        for offset in 0..addresses.len() {
            let address = addresses[(start + offset) % addresses.len()];
            let mut channel = self.channel(address)?;
            let mut attempt = Request::from_parts(clone_parts(&parts), Body::new(Lease::new(slot.clone())));
            *attempt.uri_mut() = path_only(&parts.uri);
            let sent = async {
                std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx)).await?;
                tower::Service::call(&mut channel, attempt).await
            };
            match sent.await {
                Ok(response) => {
                    debug!(service = %service.name, node = address, path = %path, "proxied");
                    return Ok(response);
                }
                Err(err) => {
                    let cause = error_chain(&err);
                    warn!(service = %service.name, node = address, cause = %cause, "node did not answer");
                    failures.push(format!("{address} ({cause})"));
                    if lock(&slot).is_none() {
                        // The node read part of the request before failing; it cannot be replayed.
                        return Err(Status::unavailable(format!(
                            "service {}: node {address} failed during the call: {cause}",
                            service.name
                        )));
                    }
                }
            }
        }
        Err(Status::unavailable(format!(
            "service {}: no node could be reached: {}",
            service.name,
            failures.join(", ")
        )))
    }

    /// The registered service a call for `<prefix>.<handler>` goes to (see the module docs).
    fn resolve(&self, domain: &str, prefix: &str, handler: &str) -> Option<Service> {
        let registry = &self.inner.registry;
        if let Some(nodes) = registry.nodes(domain, prefix) {
            // Nodes only: cloning whole entries (descriptors) per call halved proxy throughput.
            return Some(Service { name: prefix.to_string(), nodes, ..Service::default() });
        }
        let qualified = format!("{prefix}.{handler}");
        let key = (domain.to_string(), qualified.clone());
        let cached = lock(&self.inner.by_descriptor).get(&key).cloned();
        if let Some(name) = cached {
            if let Some(service) = pick_version(registry.get(domain, &name))
                && declares(&service.descriptors, prefix, handler)
            {
                return Some(service);
            }
            lock(&self.inner.by_descriptor).remove(&key);
        }
        let found = registry
            .list(domain)
            .into_iter()
            .filter(|service| !service.nodes.is_empty())
            .find(|service| declares(&service.descriptors, prefix, handler))?;
        {
            let mut index = lock(&self.inner.by_descriptor);
            if index.len() >= MAX_CACHED {
                index.clear();
            }
            index.insert(key, found.name.clone());
        }
        pick_version(registry.get(domain, &found.name)).or(Some(found))
    }

    /// Where round robin starts for this call of `service`.
    fn turn(&self, domain: &str, service: &str) -> usize {
        let counter = {
            let mut turns = lock(&self.inner.turns);
            if turns.len() >= MAX_CACHED {
                turns.clear();
            }
            turns.entry((domain.to_string(), service.to_string())).or_default().clone()
        };
        counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The cached channel to `address`, created (unconnected) on first use.
    #[allow(clippy::result_large_err, reason = "tonic statuses are returned by value")]
    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = lock(&self.inner.channels);
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| Status::unavailable(format!("invalid node address {address:?}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        if channels.len() >= MAX_CACHED {
            channels.clear();
        }
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// `/hello.world.Greeter/Call` → (`hello.world`, `Greeter`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (qualified, method) = path.strip_prefix('/')?.split_once('/')?;
    let (prefix, handler) = qualified.rsplit_once('.')?;
    (!prefix.is_empty() && !handler.is_empty() && !method.is_empty()).then_some((prefix, handler))
}

/// One registered service with the live nodes of all its versions (as the original's selector,
/// calls are spread over every version); the core entry as is. `None` when nothing is live.
fn pick_version(services: Vec<Service>) -> Option<Service> {
    let core = services.iter().any(|service| service.metadata.contains_key("core"));
    let nodes: Vec<_> = services.iter().flat_map(|service| service.nodes.iter().cloned()).collect();
    let mut service = services.into_iter().next_back()?;
    if nodes.is_empty() && !core {
        return None;
    }
    service.nodes = nodes;
    Some(service)
}

/// Whether an encoded `FileDescriptorSet` declares the gRPC service `<package>.<handler>`.
fn declares(descriptors: &[u8], package: &str, handler: &str) -> bool {
    // Skip the decode when the handler's name does not even occur in the bytes.
    if handler.is_empty() || !descriptors.windows(handler.len()).any(|window| window == handler.as_bytes()) {
        return false;
    }
    let Ok(set) = prost_types::FileDescriptorSet::decode(descriptors) else { return false };
    set.file
        .iter()
        .filter(|file| file.package() == package)
        .any(|file| file.service.iter().any(|service| service.name() == handler))
}

fn clone_parts(parts: &http::request::Parts) -> http::request::Parts {
    let mut builder =
        Request::builder().method(parts.method.clone()).uri(parts.uri.clone()).version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        headers.clone_from(&parts.headers);
    }
    builder.body(()).expect("the parts were taken from a valid request").into_parts().0
}

/// The channel sets scheme and authority to the node's; only the path is kept.
fn path_only(uri: &http::Uri) -> http::Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

fn error_chain(err: &tonic::transport::Error) -> String {
    use std::error::Error;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps are caches that stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request body that takes the real body out of a shared slot the first time it is polled, so
/// an attempt that fails before reading it leaves it for the next node.
struct Lease {
    slot: Arc<Mutex<Option<Body>>>,
    body: Option<Body>,
    taken: bool,
}

impl Lease {
    fn new(slot: Arc<Mutex<Option<Body>>>) -> Self {
        Self { slot, body: None, taken: false }
    }
}

impl HttpBody for Lease {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if !self.taken {
            self.taken = true;
            let body = lock(&self.slot).take();
            self.body = body;
        }
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    // Saying when the request is complete lets the HTTP/2 client end the stream with the last
    // DATA frame instead of an empty one after the node may already have answered (which made
    // it reset streams, and the node's HTTP/2 server close the connection after enough resets).
    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None if self.taken => true,
            None => lock(&self.slot).as_ref().is_none_or(HttpBody::is_end_stream),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None if self.taken => http_body::SizeHint::with_exact(0),
            None => lock(&self.slot)
                .as_ref()
                .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint),
        }
    }
}
