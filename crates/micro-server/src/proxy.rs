//! The gRPC proxy on :8081 (docs/compatibility.md §4.9): a call for a service this process does not host is
//! forwarded, as raw HTTP/2 (headers, body frames and trailers, never decoded), to a node of
//! that service from the registry. The auth gate has already admitted the call and put its
//! [`Context`] in the request extensions; the registry domain is the context's namespace.
//!
//! # Routing rule
//!
//! A gRPC path is `/<prefix>.<Handler>/<Method>`, where `<prefix>` is everything before the last
//! `.` of the first segment (docs/compatibility.md §3.1). Tonic servers, ours included, dispatch on the full
//! `<package>.<Handler>` name, so the path is forwarded unchanged and the prefix must be mapped
//! to a registered service:
//!
//! 1. a service registered under the name `<prefix>` (the original's convention, and ours when
//!    a service is named after its proto package: `/helloworld.Helloworld/Call` → `helloworld`);
//! 2. else a service whose registered descriptors declare the gRPC service `<prefix>.<Handler>`
//!    (a service `greeter` serving proto package `hello` is reached at `/hello.Greeter/Call`).
//!
//! Nodes of the chosen service are tried in the order of the node pool ([`crate::nodes`]):
//! round robin per service, nodes that recently could not be reached last. A node that cannot be
//! connected to is passed over (the request body has not been read yet, so the next node gets
//! it); when none answers the call fails with `UNAVAILABLE`. An unknown service is
//! `UNIMPLEMENTED` with `service <prefix> not found`, as a proper gRPC response.
//!
//! Auth rules see the resource `service:<registered name>:<Handler.Method>`: the gate routes the
//! call through [`Proxy::route`] before it judges it and hands the service on ([`Routed`]), so a
//! rule on `greeter` covers `/hello.Greeter/Call` and a rule on `hello` does not.
//!
//! The caller's `authorization` never reaches the node: it is replaced by a token scoped to the
//! callee's namespace ([`crate::forward`]), or dropped for an anonymous caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Bytes, HttpBody};
use http::{Request, Response};
use micro_core::Context;
use micro_proto::registry::Service;
use micro_registry::Registry;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tracing::warn;

use crate::forward::Forwarder;
use crate::gate::Routed;
use crate::nodes::{AttemptError, CallError, Nodes, Once, error_chain};

/// Most proxies one call may pass through: a node registered at a proxy's own address (or two
/// servers pointing at each other) would otherwise forward a call in a circle until memory or
/// streams run out. Counted in the [`HOPS_HEADER`]; past it the call fails with
/// `FAILED_PRECONDITION`.
pub const MAX_PROXY_HOPS: u32 = 8;
/// The metadata the proxy counts its hops in.
pub const HOPS_HEADER: &str = "micro-proxy-hops";

/// Services found through their descriptors, cached at most; past this the cache starts afresh.
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
    nodes: Nodes,
    /// `<package>.<Handler>` → registered service name, per domain, found through descriptors.
    by_descriptor: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy choosing nodes through `nodes`, a pool it may share with the gateway.
    pub fn new(registry: Arc<dyn Registry>, forwarder: Forwarder, nodes: Nodes) -> Self {
        Self { inner: Arc::new(Inner { registry, forwarder, nodes, by_descriptor: Mutex::default() }) }
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

    async fn try_forward<B>(&self, mut request: Request<B>) -> Result<Response<Body>, Status>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let path = request.uri().path().to_string();
        let (prefix, handler) = split_path(&path)
            .ok_or_else(|| Status::unimplemented(format!("malformed gRPC method path {path:?}")))?;
        let domain = request
            .extensions()
            .get::<Context>()
            .map_or_else(|| micro_core::DEFAULT_NAMESPACE.to_string(), |context| context.namespace.clone());
        let not_found = || Status::unimplemented(format!("service {prefix} not found"));
        let service = match request.extensions_mut().remove::<Routed>() {
            Some(Routed(service)) => service,
            None => self.route(&domain, prefix, handler).ok_or_else(not_found)?,
        };
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
            .zip(parts.extensions.get::<Context>().and_then(|context| context.account.as_ref()))
            .and_then(|(token, account)| self.inner.forwarder.bearer(token.trim(), account, &domain));
        if let Some(value) = forwarded {
            parts.headers.insert(http::header::AUTHORIZATION, value);
        }
        // The body moves into the first attempt only when a node reads it; until then it can be
        // handed to the next node.
        let body = Once::new(Body::new(body));
        let (parts, body) = (&parts, &body);
        let plan = self.inner.nodes.plan(&domain, &service.name, crate::nodes::addresses(&service.nodes));
        let answered = plan
            .run(|mut channel| {
                let mut attempt = Request::from_parts(clone_parts(parts), Body::new(body.lease()));
                *attempt.uri_mut() = path_only(&parts.uri);
                async move {
                    std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
                        .await
                        .map_err(|err| AttemptError::NotReached(error_chain(&err)))?;
                    tower::Service::call(&mut channel, attempt).await.map_err(|err| {
                        let cause = error_chain(&err);
                        if body.is_taken() {
                            // The node read part of the request before failing; it cannot be replayed.
                            AttemptError::Failed(cause)
                        } else {
                            AttemptError::NotReached(cause)
                        }
                    })
                }
            })
            .await;
        answered.map_err(|err| {
            if let CallError::Failed { node, error } = &err {
                warn!(service = %service.name, node = %node, cause = %error, "node failed during the call");
            }
            Status::unavailable(format!("service {}: {err}", service.name))
        })
    }

    /// The registered service a call for `<prefix>.<handler>` in `domain` goes to (see the module
    /// docs), with its nodes.
    pub fn route(&self, domain: &str, prefix: &str, handler: &str) -> Option<Service> {
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps are caches that stay consistent whatever panicked while holding them.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
