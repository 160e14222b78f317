//! The node pool: which node of a registered service gets a call, and when a call may go on to
//! the next node. The gRPC proxy ([`crate::proxy`]) and the HTTP gateway
//! ([`crate::gateway::call`]) both choose through it, so the two edges cannot drift apart.
//!
//! - **Address**: a node is reached at its registered `address` when that names a port, else at
//!   `address` with the node's `port` field ([`address`]).
//! - **Order** ([`Nodes::plan`]): round robin per (namespace, service) over the nodes that are not
//!   being skipped; nodes that recently could not be reached go last, still tried when nothing
//!   else answers.
//! - **Failover** ([`Plan::run`]): a call goes to the next node only when the node it was sent to
//!   was never reached: the connection could not be made (or was lost) before the node read any
//!   of the request body or answered. A call the node may have received is never sent again.
//!   That node is then skipped for [`SKIP_UNREACHABLE_FOR`], so the next calls do not wait for it
//!   first; afterwards it takes its turns again, and one call finds out whether it is back (on a
//!   host that drops packets rather than refusing, that call waits up to [`CONNECT_TIMEOUT`]).
//! - **Channels**: one lazily connecting tonic channel per address, reconnecting by itself,
//!   connecting within [`CONNECT_TIMEOUT`]; at most [`MAX_CHANNELS`] are kept.
//!
//! How each edge tells "never reached" from "may have the call": the proxy forwards raw HTTP/2
//! bodies, which it hands to an attempt through a [`Once`] that the first node to read it takes;
//! the gateway re-sends its decoded message, through a [`Tracked`] channel that notes whether the
//! node read the body or answered.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Bytes, HttpBody};
use futures::Stream;
use futures::future::BoxFuture;
use micro_proto::registry::Node;
use tonic::Status;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

/// How long to wait for a node to accept a connection before trying the next one.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node that could not be reached goes to the back of the order.
pub const SKIP_UNREACHABLE_FOR: Duration = Duration::from_secs(10);
/// Node channels kept at most; past it the cache starts afresh (calls in flight keep theirs).
pub const MAX_CHANNELS: usize = 1024;
/// Round-robin counters and skipped nodes remembered at most, each; past it they start afresh.
const MAX_TRACKED: usize = 4096;

/// Where `node` is reached: its `address` when that names a port (`host:port`, `[v6]:port`),
/// else `address` with `node.port` (a bare IPv6 address in brackets). An address without a port
/// and no port field is returned as is (and fails to connect, naming it).
pub fn address(node: &Node) -> String {
    let address = node.address.as_str();
    let bare_v6 = address.parse::<Ipv6Addr>().is_ok();
    let has_port = !bare_v6
        && match address.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").is_some_and(|(_, port)| port.parse::<u16>().is_ok()),
            None => address.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()),
        };
    match u16::try_from(node.port) {
        Ok(port) if !has_port && port > 0 && bare_v6 => format!("[{address}]:{port}"),
        Ok(port) if !has_port && port > 0 => format!("{address}:{port}"),
        _ => address.to_string(),
    }
}

/// The addresses of `nodes`, in order ([`address`]).
pub fn addresses(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(address).collect()
}

/// The node pool of one server: channels, round-robin turns and skipped nodes. Cheap to clone:
/// clones share all three.
#[derive(Clone, Default)]
pub struct Nodes {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// One lazily connected channel per node address.
    channels: HashMap<String, Channel>,
    /// Calls planned so far, per namespace and service.
    turns: HashMap<String, HashMap<String, usize>>,
    turn_count: usize,
    /// Nodes that could not be reached, and until when they go last.
    skipped: HashMap<String, Instant>,
}

impl State {
    fn turn(&mut self, namespace: &str, service: &str) -> usize {
        if let Some(turn) = self.turns.get_mut(namespace).and_then(|services| services.get_mut(service)) {
            let current = *turn;
            *turn = current.wrapping_add(1);
            return current;
        }
        if self.turn_count >= MAX_TRACKED {
            self.turns.clear();
            self.turn_count = 0;
        }
        self.turn_count += 1;
        self.turns.entry(namespace.to_string()).or_default().insert(service.to_string(), 1);
        0
    }
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes").finish_non_exhaustive()
    }
}

impl Nodes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The order in which one call of `service` in `namespace` tries `addresses` (see the module
    /// docs). Each plan is one turn of the round robin.
    pub fn plan(&self, namespace: &str, service: &str, addresses: Vec<String>) -> Plan {
        self.plan_at(namespace, service, addresses, Instant::now())
    }

    fn plan_at(&self, namespace: &str, service: &str, addresses: Vec<String>, now: Instant) -> Plan {
        let mut state = lock(&self.state);
        let turn = state.turn(namespace, service);
        let (mut order, skipped) = if state.skipped.is_empty() {
            (addresses, Vec::new())
        } else {
            state.skipped.retain(|_, until| *until > now);
            let skipped = &state.skipped;
            addresses.into_iter().partition(|address| !skipped.contains_key(address))
        };
        if !order.is_empty() {
            let start = turn % order.len();
            order.rotate_left(start);
        }
        let reachable = order.len();
        order.extend(skipped);
        Plan { nodes: self.clone(), service: service.to_string(), addresses: order, reachable }
    }

    /// The cached channel to `address`, created (unconnected) on first use.
    pub fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut state = lock(&self.state);
        if let Some(channel) = state.channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| format!("the registered node address {address:?} is not HOST:PORT"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        if state.channels.len() >= MAX_CHANNELS {
            state.channels.clear();
        }
        state.channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends `address` to the back of the order for [`SKIP_UNREACHABLE_FOR`].
    pub fn unreachable(&self, address: &str) {
        self.unreachable_at(address, Instant::now());
    }

    fn unreachable_at(&self, address: &str, now: Instant) {
        let mut state = lock(&self.state);
        if state.skipped.len() >= MAX_TRACKED {
            state.skipped.clear();
        }
        state.skipped.insert(address.to_string(), now + SKIP_UNREACHABLE_FOR);
    }

    /// Takes `address` back into the round robin: it answered.
    pub fn reached(&self, address: &str) {
        lock(&self.state).skipped.remove(address);
    }
}

/// The nodes one call tries, in order: the turn's node first, then the rest round the ring, then
/// the nodes being skipped.
#[derive(Clone, Debug)]
pub struct Plan {
    nodes: Nodes,
    /// The service, for logs.
    service: String,
    addresses: Vec<String>,
    /// How many addresses, from the start, were not being skipped.
    reachable: usize,
}

/// How one attempt at one node ended without an answer.
#[derive(Debug)]
pub enum AttemptError<E> {
    /// The node never got the call (why): the call may go to the next node.
    NotReached(String),
    /// The node may have received the call: it is not sent again.
    Failed(E),
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// No node could be reached: each tried, as `address (why)`.
    #[error("no node could be reached: {}", .0.join(", "))]
    Unreachable(Vec<String>),
    /// `node` took the call and it failed there.
    #[error("node {node} failed during the call: {error}")]
    Failed { node: String, error: E },
}

impl Plan {
    /// The addresses, in the order they are tried.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Keeps only the addresses `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let mut index = 0;
        let reachable = self.reachable;
        let mut kept_reachable = 0;
        self.addresses.retain(|address| {
            let kept = keep(address);
            if kept && index < reachable {
                kept_reachable += 1;
            }
            index += 1;
            kept
        });
        self.reachable = kept_reachable;
    }

    /// Makes the call with `attempt`, given the channel to each node in turn, until one answers,
    /// one fails having taken the call, or every node was found unreachable. Nodes found
    /// unreachable are skipped by later plans for [`SKIP_UNREACHABLE_FOR`].
    pub async fn run<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, CallError<E>>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, AttemptError<E>>>,
    {
        self.run_to_last(|channel, _last| attempt(channel)).await
    }

    /// [`Plan::run`], telling `attempt` whether it is the `last`: no node is tried after it, so
    /// it may take by move what the attempts before it had to copy.
    pub async fn run_to_last<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, CallError<E>>
    where
        F: FnMut(Channel, bool) -> Fut,
        Fut: Future<Output = Result<T, AttemptError<E>>>,
    {
        let mut unreached = Vec::new();
        for (index, address) in self.addresses.iter().enumerate() {
            let last = index + 1 == self.addresses.len();
            let outcome = match self.nodes.channel(address) {
                Ok(channel) => attempt(channel, last).await,
                Err(cause) => Err(AttemptError::NotReached(cause)),
            };
            let was_skipped = index >= self.reachable;
            match outcome {
                Ok(answer) => {
                    if was_skipped {
                        self.nodes.reached(address);
                    }
                    debug!(service = %self.service, node = %address, "node answered");
                    return Ok(answer);
                }
                Err(AttemptError::Failed(error)) => {
                    if was_skipped {
                        self.nodes.reached(address);
                    }
                    return Err(CallError::Failed { node: address.clone(), error });
                }
                Err(AttemptError::NotReached(cause)) => {
                    warn!(service = %self.service, node = %address, cause = %cause, "node could not be reached");
                    self.nodes.unreachable(address);
                    unreached.push(format!("{address} ({cause})"));
                }
            }
        }
        Err(CallError::Unreachable(unreached))
    }
}

/// A value that goes to whichever attempt first reads it: each attempt gets a [`Lease`], and the
/// value stays here until a lease is polled, so an attempt whose node was never reached leaves
/// it for the next node. Holds a raw HTTP body (the proxy) or a stream of messages (the
/// gateway's websockets).
pub struct Once<T> {
    slot: Arc<Mutex<Option<T>>>,
}

impl<T> Once<T> {
    pub fn new(value: T) -> Self {
        Self { slot: Arc::new(Mutex::new(Some(value))) }
    }

    /// A handle for one attempt, which takes the value the first time it is polled.
    pub fn lease(&self) -> Lease<T> {
        Lease { slot: self.slot.clone(), value: None, taken: false }
    }

    /// Whether an attempt took the value: its node may have (part of) it.
    pub fn is_taken(&self) -> bool {
        lock(&self.slot).is_none()
    }
}

/// One attempt's hold on a [`Once`] value: a request body, or a stream.
pub struct Lease<T> {
    slot: Arc<Mutex<Option<T>>>,
    value: Option<T>,
    taken: bool,
}

impl<T> Lease<T> {
    fn value(&mut self) -> Option<&mut T> {
        if !self.taken {
            self.taken = true;
            self.value = lock(&self.slot).take();
        }
        self.value.as_mut()
    }
}

impl<B> HttpBody for Lease<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        match self.value() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    // Saying when the request is complete lets the HTTP/2 client end the stream with the last
    // DATA frame instead of an empty one after the node may already have answered (which made
    // it reset streams, and the node's HTTP/2 server close the connection after enough resets).
    // An empty body is complete at once: the client then sends it with the headers without
    // polling it, so it counts as taken.
    fn is_end_stream(&self) -> bool {
        match &self.value {
            Some(body) => body.is_end_stream(),
            None if self.taken => true,
            None => {
                let mut slot = lock(&self.slot);
                let end = slot.as_ref().is_none_or(HttpBody::is_end_stream);
                if end {
                    slot.take();
                }
                end
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.value {
            Some(body) => body.size_hint(),
            None if self.taken => http_body::SizeHint::with_exact(0),
            None => lock(&self.slot)
                .as_ref()
                .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint),
        }
    }
}

impl<S> Stream for Lease<S>
where
    S: Stream + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        match self.value() {
            Some(stream) => Pin::new(stream).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

/// A channel to one node for one tonic client call, noting whether the node was reached: made
/// with [`Tracked::new`], whose [`Reach`] says afterwards whether the call may go to another
/// node. Readiness is awaited inside the call, so a node that cannot be connected fails the call
/// before any of it was sent.
#[derive(Clone)]
pub struct Tracked {
    channel: Channel,
    reach: Arc<Reach>,
}

/// What one [`Tracked`] call got to.
#[derive(Default)]
pub struct Reach {
    body_read: AtomicBool,
    answered: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Reach {
    /// Why the node never got the call (the connection failed before the node read any of the
    /// request body or answered), or `None` when it may have it: it answered, or read the body.
    pub fn unreached(&self) -> Option<String> {
        if self.body_read.load(Ordering::SeqCst) || self.answered.load(Ordering::SeqCst) {
            return None;
        }
        lock(&self.failure).clone()
    }
}

impl Tracked {
    pub fn new(channel: Channel) -> (Self, Arc<Reach>) {
        let reach = Arc::new(Reach::default());
        (Self { channel, reach: reach.clone() }, reach)
    }
}

impl tower::Service<http::Request<Body>> for Tracked {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, tonic::transport::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Awaited in `call`, where a failure is noted.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mut channel = self.channel.clone();
        let reach = self.reach.clone();
        let request = request.map(|body| Body::new(Watched { body, reach: reach.clone() }));
        Box::pin(async move {
            let sent = async {
                std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx)).await?;
                tower::Service::call(&mut channel, request).await
            }
            .await;
            match &sent {
                Ok(_) => reach.answered.store(true, Ordering::SeqCst),
                Err(err) => *lock(&reach.failure) = Some(error_chain(err)),
            }
            sent
        })
    }
}

/// A request body that notes when the node starts reading it.
struct Watched {
    body: Body,
    reach: Arc<Reach>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        self.reach.body_read.store(true, Ordering::SeqCst);
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        // A complete body is sent with the headers, unread.
        let end = self.body.is_end_stream();
        if end {
            self.reach.body_read.store(true, Ordering::SeqCst);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An error and its causes, `: `-separated (`transport error: tcp connect error: Connection
/// refused (os error 111)`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are caches and slots that stay consistent whatever panicked holding them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str, port: i64) -> Node {
        Node { id: "n".into(), address: address.into(), port, ..Node::default() }
    }

    fn strings(addresses: &[&str]) -> Vec<String> {
        addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_node_is_reached_at_its_address_or_its_address_and_port() {
        for (address, port, reached) in [
            ("127.0.0.1:9000", 0, "127.0.0.1:9000"),
            ("127.0.0.1:9000", 8000, "127.0.0.1:9000"),
            ("127.0.0.1", 8000, "127.0.0.1:8000"),
            ("greeter.internal", 8000, "greeter.internal:8000"),
            ("greeter.internal:50051", 8000, "greeter.internal:50051"),
            ("[::1]:9000", 8000, "[::1]:9000"),
            ("[::1]", 8000, "[::1]:8000"),
            ("::1", 8000, "[::1]:8000"),
            ("fe80::1", 0, "fe80::1"),
            ("greeter", 0, "greeter"),
            ("greeter", -1, "greeter"),
            ("greeter", 70000, "greeter"),
        ] {
            assert_eq!(address_of(address, port), reached, "{address} with port {port}");
        }
        let nodes = [node("10.0.0.1", 80), node("10.0.0.2:81", 0)];
        assert_eq!(addresses(&nodes), ["10.0.0.1:80", "10.0.0.2:81"]);
    }

    fn address_of(address: &str, port: i64) -> String {
        super::address(&node(address, port))
    }

    fn first(plan: &Plan) -> &str {
        &plan.addresses()[0]
    }

    #[test]
    fn calls_go_round_robin_per_namespace_and_service() {
        let nodes = Nodes::new();
        let abc = || strings(&["a", "b", "c"]);
        let firsts: Vec<String> =
            (0..6).map(|_| first(&nodes.plan("micro", "svc", abc())).to_string()).collect();
        assert_eq!(firsts, ["a", "b", "c", "a", "b", "c"]);
        // Every plan holds every node once, the rest round the ring after the turn's.
        assert_eq!(nodes.plan("micro", "svc", abc()).addresses(), ["a", "b", "c"]);
        assert_eq!(nodes.plan("micro", "svc", abc()).addresses(), ["b", "c", "a"]);

        // Other services, and the same service in another namespace, have turns of their own.
        assert_eq!(first(&nodes.plan("micro", "other", abc())), "a");
        assert_eq!(first(&nodes.plan("foo", "svc", abc())), "a");
        assert_eq!(first(&nodes.plan("micro", "svc", abc())), "c");

        assert!(nodes.plan("micro", "none", Vec::new()).addresses().is_empty());
        let mut plan = nodes.plan("micro", "svc", abc());
        plan.retain(|address| address != "b");
        assert_eq!(plan.addresses(), ["a", "c"]);
    }

    #[test]
    fn an_unreachable_node_goes_last_until_its_skip_ends_or_it_answers() {
        let nodes = Nodes::new();
        let start = Instant::now();
        let abc = || strings(&["a", "b", "c"]);
        nodes.unreachable_at("b", start);

        // While skipped, b is tried last, and the others share its turns.
        let soon = start + SKIP_UNREACHABLE_FOR / 2;
        let plans: Vec<Vec<String>> =
            (0..4).map(|_| nodes.plan_at("micro", "svc", abc(), soon).addresses().to_vec()).collect();
        assert_eq!(plans, [["a", "c", "b"], ["c", "a", "b"], ["a", "c", "b"], ["c", "a", "b"]]);
        // With every node skipped, all are still tried.
        nodes.unreachable_at("a", start);
        nodes.unreachable_at("c", start);
        assert_eq!(nodes.plan_at("micro", "one", abc(), soon).addresses(), ["a", "b", "c"]);

        // Once the skip has passed, b takes its turns again.
        let later = start + SKIP_UNREACHABLE_FOR + Duration::from_secs(1);
        let firsts: Vec<String> =
            (0..3).map(|_| first(&nodes.plan_at("micro", "two", abc(), later)).to_string()).collect();
        assert_eq!(firsts, ["a", "b", "c"]);

        // A skipped node that answers is taken back at once.
        nodes.unreachable_at("b", start);
        nodes.reached("b");
        assert_eq!(nodes.plan_at("micro", "three", abc(), soon).addresses(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_call_moves_on_only_from_nodes_it_never_reached() {
        let nodes = Nodes::new();
        let addresses = || strings(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);

        // The first node is never reached, the second answers: the call lands on the second,
        // and the first goes last in the next plans.
        let plan = nodes.plan("micro", "svc", addresses());
        let mut attempts = 0;
        let answer = plan
            .run(|_channel| {
                attempts += 1;
                let attempt = attempts;
                async move {
                    match attempt {
                        1 => Err(AttemptError::<()>::NotReached("refused".into())),
                        _ => Ok(attempt),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(answer, 2);
        assert_eq!(
            nodes.plan("micro", "svc", addresses()).addresses(),
            ["127.0.0.1:3", "127.0.0.1:2", "127.0.0.1:1"]
        );

        // A node that may have taken the call ends it: nothing is sent again.
        let plan = nodes.plan("micro", "other", addresses());
        let mut attempts = 0;
        let failed = plan
            .run(|_channel| {
                attempts += 1;
                async { Err::<(), _>(AttemptError::Failed("broke mid-call")) }
            })
            .await
            .unwrap_err();
        assert_eq!(attempts, 1);
        assert_eq!(failed.to_string(), "node 127.0.0.1:2 failed during the call: broke mid-call");

        // Only the attempt at the last node is told it is the last.
        let plan = nodes.plan("micro", "lasts", addresses());
        let mut lasts = Vec::new();
        plan.run_to_last(|_channel, last| {
            lasts.push(last);
            async { Err::<(), AttemptError<()>>(AttemptError::NotReached("refused".into())) }
        })
        .await
        .unwrap_err();
        assert_eq!(lasts, [false, false, true]);

        // Nobody reachable: each node named with why, an address that is none among them.
        let plan = nodes.plan("micro", "down", strings(&["127.0.0.1:4", "not an address"]));
        let down = plan
            .run(|_channel| async {
                Err::<(), AttemptError<&str>>(AttemptError::NotReached("refused".into()))
            })
            .await
            .unwrap_err();
        assert_eq!(
            down.to_string(),
            "no node could be reached: 127.0.0.1:4 (refused), not an address (the registered node address \
             \"not an address\" is not HOST:PORT)"
        );
    }

    #[tokio::test]
    async fn a_tracked_call_to_a_closed_port_never_reached_its_node() {
        use micro_proto::store::{ReadRequest, ReadResponse};
        let closed = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let (tracked, reach) = Tracked::new(Nodes::new().channel(&closed).unwrap());
        let mut grpc = tonic::client::Grpc::new(tracked);
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<ReadRequest, ReadResponse>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/store.Store/Read");
        grpc.unary(tonic::Request::new(ReadRequest::default()), path, codec).await.unwrap_err();
        let cause = reach.unreached().expect("the node was never reached");
        assert!(cause.contains("connect"), "{cause}");

        // A lease dropped unread leaves the value for the next one.
        let once = Once::new(futures::stream::iter([1, 2]));
        drop(once.lease());
        assert!(!once.is_taken());
        let read: Vec<i32> = futures::StreamExt::collect(once.lease()).await;
        assert_eq!(read, [1, 2]);
        assert!(once.is_taken());
    }
}
