//! Reaching a service: its descriptors and nodes from the registry, the nodes to try in the
//! order of the node pool ([`crate::nodes`]: round robin, unreachable nodes last), the call made
//! at the next node when one cannot be reached, and HTTP headers turned into gRPC metadata
//! (docs/compatibility.md §3.1).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use micro_proto::dynamic::DynamicCodec;
use micro_proto::registry::Service;
use micro_registry::Registry;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use tonic::Status;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;

use super::auth::Caller;
use super::errors::ApiError;
use super::resolve::{Route, find_method, grpc_path};
use crate::nodes::{AttemptError, CallError, Lease, Nodes, Once, Plan, Tracked};
use micro_core::NAMESPACE_HEADER;

/// Most decoded descriptor sets kept.
const MAX_POOLS: usize = 64;

/// HTTP headers that are not forwarded as metadata: hop-by-hop headers, those gRPC itself sets,
/// and those the gateway sets from what it resolved.
const SKIPPED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept-encoding",
    "authorization",
    // The browser's cookies (a session token among them) are the browser's business, never a
    // service's or a broker subscriber's.
    "cookie",
    // It proves a cookie session came from the dashboard's page; it is no service's business.
    super::auth::CSRF_HEADER,
    NAMESPACE_HEADER,
    // Who the client is, for the login limits: only the gateway says so (see `forward_client`).
    micro_auth::peer::CLIENT_IP_HEADER,
    micro_auth::peer::CLIENT_KEY_HEADER,
];

/// Names the HTTP client (its address, which `http::serve` records per connection) in a call to
/// this server's core services, so that `Auth.Token` limits failed logins per client rather than
/// per gateway (micro-auth's `peer` module). Calls to registered services get nothing: the proof
/// is a key of this process, not for them to see.
pub fn forward_client(
    auth: &micro_auth::Auth,
    metadata: &mut MetadataMap,
    extensions: &axum::http::Extensions,
    target: &Target,
) {
    if target.core {
        let client = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        auth.forward_peer(metadata, client);
    }
}

/// A method of a service, resolved to the nodes to send it to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The service name, the `Id` of its errors.
    pub service: String,
    pub method: MethodDescriptor,
    pub path: PathAndQuery,
    /// The nodes to try, in order.
    pub plan: Plan,
    /// Whether the node is this server's own core services (which take the caller's token),
    /// rather than a user service (which gets a forwarded one, [`crate::forward`]).
    pub core: bool,
}

/// The request message(s) of one call, as each node tried gets them ([`Target::call`]).
pub trait Outgoing {
    /// What one attempt sends.
    type Message;
    /// The message(s) for one attempt; `last`: no node is tried after it.
    fn attempt(&mut self, last: bool) -> Self::Message;
}

/// A value sent whole to each node tried (a unary or server-streaming request, the metadata):
/// each attempt but the last gets a copy, the last takes it, so a call with one node copies
/// nothing.
pub struct Resent<T>(Option<T>);

impl<T> Resent<T> {
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }
}

impl<T: Clone> Outgoing for Resent<T> {
    type Message = T;

    fn attempt(&mut self, last: bool) -> T {
        let value = if last { self.0.take() } else { self.0.clone() };
        value.expect("no attempt follows the last")
    }
}

/// A stream of requests (a websocket's), which only the first node to read it gets: a node never
/// reached leaves it, unread, to the next.
impl<S> Outgoing for Once<S> {
    type Message = Lease<S>;

    fn attempt(&mut self, _last: bool) -> Lease<S> {
        self.lease()
    }
}

impl Target {
    /// Makes the call of `metadata` and `message` with `send` (given a client to one node, the
    /// request, the path and the response codec) at one node after another (see
    /// [`Plan::run`]): it is made again at the next node only when the node was never reached
    /// (could not be connected before it read any of the request or answered), never once the
    /// node may have the call.
    pub async fn call<O, T, F, Fut>(
        &self,
        metadata: MetadataMap,
        mut message: O,
        mut send: F,
    ) -> Result<T, ApiError>
    where
        O: Outgoing,
        F: FnMut(Grpc<Tracked>, tonic::Request<O::Message>, PathAndQuery, DynamicCodec) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut metadata = Resent::new(metadata);
        let answered = self
            .plan
            .run_to_last(|channel, last| {
                let (tracked, reach) = Tracked::new(channel);
                let request = tonic::Request::from_parts(
                    metadata.attempt(last),
                    tonic::Extensions::default(),
                    message.attempt(last),
                );
                let codec = DynamicCodec::new(self.method.output());
                let answer = send(Grpc::new(tracked), request, self.path.clone(), codec);
                async move {
                    answer.await.map(tonic::Response::into_inner).map_err(|status| match reach.unreached() {
                        Some(cause) => AttemptError::NotReached(cause),
                        None => AttemptError::Failed(status),
                    })
                }
            })
            .await;
        answered.map_err(|err| match err {
            CallError::Failed { error, .. } => ApiError::from_status(&self.service, &error),
            unreachable @ CallError::Unreachable(_) => ApiError {
                id: self.service.clone(),
                status: StatusCode::SERVICE_UNAVAILABLE,
                detail: format!("{} is unavailable: {unreachable}", self.service),
            },
        })
    }
}

/// Registry lookups and descriptor pools, shared by every request; nodes are chosen through the
/// node pool.
pub struct Connector {
    registry: Arc<dyn Registry>,
    /// Where the core services listed by the registry without nodes are served (:8081).
    core_address: Option<SocketAddr>,
    nodes: Nodes,
    pools: DescriptorCache<DescriptorPool>,
}

/// What is decoded from registered descriptor sets, by the set's bytes, so that each set is
/// decoded once rather than on every request: the gateway's pools, reflection's files
/// ([`crate::reflection`]). At most [`MAX_POOLS`] sets are kept; a full cache starts over.
pub struct DescriptorCache<T> {
    decoded: Mutex<HashMap<u64, T>>,
}

impl<T: Clone> Default for DescriptorCache<T> {
    fn default() -> Self {
        Self { decoded: Mutex::new(HashMap::new()) }
    }
}

impl<T: Clone> DescriptorCache<T> {
    /// What `decode` makes of `descriptors`, decoded now only if not yet cached; an error is not
    /// cached.
    pub fn get_or_decode<E>(
        &self,
        descriptors: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        descriptors.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(decoded) = self.decoded.lock().expect("descriptor cache lock poisoned").get(&key) {
            return Ok(decoded.clone());
        }
        let decoded = decode(descriptors)?;
        let mut cache = self.decoded.lock().expect("descriptor cache lock poisoned");
        if cache.len() >= MAX_POOLS {
            cache.clear();
        }
        cache.insert(key, decoded.clone());
        Ok(decoded)
    }
}

impl Connector {
    /// A connector choosing nodes through `nodes`, a pool it may share with the proxy.
    pub fn new(registry: Arc<dyn Registry>, core_address: Option<SocketAddr>, nodes: Nodes) -> Self {
        Self { registry, core_address, nodes, pools: DescriptorCache::default() }
    }

    /// Finds `route` in `namespace`: the service's registered versions whose descriptors hold
    /// the endpoint, and their nodes in the order to try them (one turn of the round robin per
    /// service).
    pub fn target(&self, namespace: &str, route: &Route) -> Result<Target, ApiError> {
        let versions = self.registry.get(namespace, &route.service);
        if versions.is_empty() {
            return Err(ApiError::not_found(format!("service {} not found", route.service)));
        }
        let mut described = false;
        // (address, method, core) of every node of every version that has the endpoint.
        let mut candidates: Vec<(String, MethodDescriptor, bool)> = Vec::new();
        for version in &versions {
            if version.descriptors.is_empty() {
                continue;
            }
            described = true;
            let pool = self.pool(&version.descriptors).map_err(|err| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("service {} registered invalid descriptors: {err}", route.service),
                )
            })?;
            if let Some(method) = find_method(&pool, route) {
                let core = is_core(version);
                for address in self.addresses(version) {
                    candidates.push((address, method.clone(), core));
                }
            }
        }
        if !described {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "service {} registered no protobuf descriptors, so the gateway cannot encode its requests",
                    route.service
                ),
            ));
        }
        if candidates.is_empty() {
            return Err(ApiError::not_found(format!(
                "endpoint {} not found on service {}",
                route.endpoint(),
                route.service
            )));
        }
        let addresses = candidates.iter().map(|(address, ..)| address.clone()).collect();
        let mut plan = self.nodes.plan(namespace, &route.service, addresses);
        // How each address declares the endpoint: as the first version listing it does.
        let mut declared: HashMap<&str, (&MethodDescriptor, bool)> = HashMap::with_capacity(candidates.len());
        for (address, method, core) in &candidates {
            declared.entry(address.as_str()).or_insert((method, *core));
        }
        let declaration = |address: &str| *declared.get(address).expect("planned from the candidates");
        let (method, core) = declaration(&plan.addresses()[0]);
        let method = method.clone();
        // Versions that declare the endpoint differently are not tried for this call.
        plan.retain(|address| {
            let (other, other_core) = declaration(address);
            other.full_name() == method.full_name() && other_core == core
        });
        let path = PathAndQuery::from_str(&grpc_path(&method)).map_err(|_| {
            ApiError::bad_request(format!("endpoint {} has no valid gRPC path", route.endpoint()))
        })?;
        Ok(Target { service: route.service.clone(), method, path, plan, core })
    }

    /// [`Connector::target`] for a request that named the gRPC path itself (gRPC-Web,
    /// Connect): the endpoint found must have exactly that path, not one that matches it only
    /// without case or in another package.
    pub fn target_exact(&self, namespace: &str, route: &Route, path: &str) -> Result<Target, ApiError> {
        let target = self.target(namespace, route)?;
        if target.path.path() != path {
            return Err(ApiError::not_found(format!("method {} not found", path.trim_start_matches('/'))));
        }
        Ok(target)
    }

    /// Node addresses of one registered version ([`crate::nodes::address`]); core services are
    /// served on :8081.
    fn addresses(&self, service: &Service) -> Vec<String> {
        if is_core(service) {
            return self.core_address.map(|address| vec![address.to_string()]).unwrap_or_default();
        }
        crate::nodes::addresses(&service.nodes)
    }

    fn pool(&self, descriptors: &[u8]) -> Result<DescriptorPool, String> {
        self.pools
            .get_or_decode(descriptors, |bytes| DescriptorPool::decode(bytes).map_err(|err| err.to_string()))
    }
}

/// A core service: listed without nodes, served by this server itself.
fn is_core(service: &Service) -> bool {
    service.nodes.is_empty() && service.metadata.get("core").is_some_and(|core| core == "true")
}

/// The request's HTTP headers as gRPC metadata, plus what the gateway resolved: the caller's
/// token (also when it came in a cookie; the gateway swaps it for a forwarded one before a
/// user service sees it), the namespace, the original host and method.
pub fn metadata(headers: &HeaderMap, method: &Method, caller: &Caller) -> MetadataMap {
    let mut forwarded = HeaderMap::new();
    for (name, value) in headers {
        let name_str = name.as_str();
        if SKIPPED_HEADERS.contains(&name_str)
            || name_str.starts_with("grpc-")
            // gRPC-Web and Connect protocol headers: this gateway speaks them, a service does not.
            || name_str.starts_with("connect-")
            || name_str == "x-grpc-web"
            || name_str.starts_with("sec-websocket-")
            || name_str.ends_with("-bin")
        {
            continue;
        }
        // gRPC metadata is printable ASCII; HTTP tolerates more.
        if value.as_bytes().iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
            forwarded.append(name.clone(), value.clone());
        }
    }
    if let Some(value) =
        caller.token.as_ref().and_then(|token| HeaderValue::from_str(&format!("Bearer {token}")).ok())
    {
        forwarded.insert(header::AUTHORIZATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&caller.namespace) {
        forwarded.insert(HeaderName::from_static(NAMESPACE_HEADER), value);
    }
    if let Some(host) = headers.get(header::HOST) {
        forwarded.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if let Ok(value) = HeaderValue::from_str(method.as_str()) {
        forwarded.insert(HeaderName::from_static("method"), value);
    }
    MetadataMap::from_headers(forwarded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_registry::MemoryRegistry;
    use std::time::Duration;

    #[test]
    fn headers_become_metadata_without_hop_by_hop_ones() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-trace", "abc"),
            ("connection", "keep-alive"),
            ("te", "gzip"),
            ("content-type", "application/json"),
            ("grpc-timeout", "1S"),
            ("authorization", "Bearer from-header"),
            ("micro-namespace", "spoofed"),
            ("host", "api.local:8080"),
            ("x-data-bin", "AAA="),
            ("micro-client-ip", "192.0.2.1"),
            ("micro-client-key", "guess"),
        ] {
            headers.append(name, value.parse().unwrap());
        }
        headers.append("x-odd", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let caller = Caller { namespace: "foo".into(), account: None, token: Some("tok".into()) };
        let metadata = metadata(&headers, &Method::POST, &caller).into_headers();
        assert_eq!(metadata["x-trace"], "abc");
        assert_eq!(metadata["authorization"], "Bearer tok");
        assert_eq!(metadata["micro-namespace"], "foo");
        assert_eq!(metadata["x-forwarded-host"], "api.local:8080");
        assert_eq!(metadata["method"], "POST");
        for skipped in [
            "connection",
            "te",
            "content-type",
            "grpc-timeout",
            "host",
            "x-data-bin",
            "x-odd",
            "micro-client-ip",
            "micro-client-key",
        ] {
            assert!(!metadata.contains_key(skipped), "{skipped}");
        }
    }

    #[test]
    fn a_resent_request_is_copied_for_every_attempt_but_the_last() {
        let mut resent = Resent::new(vec![1, 2]);
        assert_eq!(resent.attempt(false), [1, 2]);
        assert_eq!(resent.attempt(false), [1, 2]);
        assert_eq!(resent.attempt(true), [1, 2]);
        assert!(resent.0.is_none(), "the last attempt took it");
    }

    #[tokio::test]
    async fn nodes_are_chosen_round_robin_and_core_services_go_to_the_core_address() {
        let registry = Arc::new(MemoryRegistry::new(crate::registry::builtins()));
        let node = |id: &str, address: &str| micro_proto::registry::Node {
            id: id.into(),
            address: address.into(),
            ..Default::default()
        };
        let service = Service {
            name: "teststore".into(),
            version: "1".into(),
            nodes: vec![node("a", "127.0.0.1:1"), node("b", "127.0.0.1:2")],
            descriptors: micro_proto::FILE_DESCRIPTOR_SET.to_vec(),
            ..Default::default()
        };
        registry.register("micro", service, Duration::from_secs(60)).unwrap();
        let core: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let connector = Connector::new(registry, Some(core), Nodes::new());
        let route = |path: &str| super::super::resolve::resolve(path).unwrap();

        let first = connector.target("micro", &route("/teststore/blob-store/read")).unwrap();
        assert_eq!(first.path.as_str(), "/store.BlobStore/Read");
        assert!(!first.core);
        let second = connector.target("micro", &route("/teststore/blob-store/read")).unwrap();
        assert_eq!(first.plan.addresses(), ["127.0.0.1:1", "127.0.0.1:2"], "the other node is next");
        assert_eq!(second.plan.addresses(), ["127.0.0.1:2", "127.0.0.1:1"], "the next call starts there");

        let core_target = connector.target("micro", &route("/store/read")).unwrap();
        assert_eq!(core_target.path.as_str(), "/store.Store/Read");
        assert_eq!(core_target.plan.addresses(), ["127.0.0.1:8081"]);
        assert!(core_target.core);

        let missing = connector.target("micro", &route("/nope")).unwrap_err();
        assert_eq!(
            (missing.status, missing.detail.as_str()),
            (StatusCode::NOT_FOUND, "service nope not found")
        );
        let other_namespace = connector.target("foo", &route("/teststore/blob-store/read")).unwrap_err();
        assert_eq!(other_namespace.status, StatusCode::NOT_FOUND, "services live in their namespace");
        let no_method = connector.target("micro", &route("/teststore/blob-store/nope")).unwrap_err();
        assert_eq!(no_method.detail, "endpoint BlobStore.Nope not found on service teststore");
    }
}
