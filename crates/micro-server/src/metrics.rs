//! Prometheus metrics of the server process (docs/observability.md): every metric's name, the
//! recorder behind the `metrics` facade, and the request metrics of the two API listeners.
//!
//! - [`Metrics::install`] installs the Prometheus recorder once per process (a test process may
//!   boot many servers; they share it) and renders the exposition text for `GET /metrics`
//!   ([`crate::http`]), with the process's RSS, CPU, open files and threads (`metrics-process`).
//! - [`RequestMetricsLayer`] wraps each listener (`http` on :8080, `grpc` on :8081). It puts an
//!   empty [`Slot`] in every request's extensions; the admission code of the listener fills it
//!   once it has resolved the call to a service and one of its methods ([`Slot::resolve`]:
//!   `Gateway::admit`, the :8081 gate). When the response body ends (or is dropped: a stream the
//!   client left) the layer counts the request under that service and endpoint and the
//!   response's code. A request whose slot stays empty (unknown paths, refusals before the target
//!   was resolved, malformed calls) counts as `service="other", endpoint="other"`, so the label
//!   values are bounded by what the registry and the core services hold, and in any case by
//!   [`MAX_TARGETS`]. The same labels count the body bytes each way ([`Counted`], [`Metered`]):
//!   store, config, events and broker operations are calls of their core services.
//! - [`rejected`] counts the admission decision's refusals by reason (the :8081 gate and the
//!   gateway call it); [`collect_runtime`] sets the runtime's services by status at each render.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use metrics::{
    Label, SharedString, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message as _;

/// Requests answered, by `listener`, `service`, `endpoint` and `code`.
pub const REQUESTS_TOTAL: &str = "micro_requests_total";
/// Time from a request's arrival to the end of its response body (a stream's last message), by
/// the labels of [`REQUESTS_TOTAL`].
pub const REQUEST_DURATION_SECONDS: &str = "micro_request_duration_seconds";
/// Admitted requests not yet answered to the end, by `listener`, `service` and `endpoint`.
pub const REQUESTS_IN_FLIGHT: &str = "micro_requests_in_flight";
/// Calls of `auth.Auth/Token` (logins with a secret, and refresh-token exchanges), by `result`
/// (`success` or `failure`).
pub const AUTH_LOGINS_TOTAL: &str = "micro_auth_logins_total";

/// Calls refused by the admission decision (docs/security.md), by `listener` and `reason`
/// (`not_bearer`, `invalid_token`, `bad_namespace`, `foreign_namespace`, `unauthorized`,
/// `forbidden`: [`micro_access::admission::Refusal::reason`]).
pub const AUTH_REJECTIONS_TOTAL: &str = "micro_auth_rejections_total";
/// Bytes of request bodies received (gRPC: the framed messages), by `listener`, `service` and
/// `endpoint`: what store writes, config sets, publishes and registrations carry in.
pub const REQUEST_BYTES_TOTAL: &str = "micro_request_bytes_total";
/// Bytes of response bodies sent, by the labels of [`REQUEST_BYTES_TOTAL`]: what store reads,
/// config gets and event streams carry out.
pub const RESPONSE_BYTES_TOTAL: &str = "micro_response_bytes_total";

/// The label value of every service and endpoint a request was not resolved to.
pub const OTHER: &str = "other";
/// The `code` of an HTTP request whose client went away before the answer (nginx's convention).
pub const HTTP_CLIENT_CLOSED: &str = "499";

/// The upper bounds, in seconds, of the buckets of [`REQUEST_DURATION_SECONDS`]: from half a
/// millisecond (a store read on loopback) to a minute (a long stream).
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often the recorder folds recorded histogram samples into its buckets between scrapes, so
/// that a server nobody scrapes does not keep every sample.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Most distinct (service, endpoint) label pairs the request metrics keep. Each is a series per
/// listener and code; past this, calls of new pairs count as [`OTHER`] (and a warning is logged
/// once), so that a registry with very many services cannot grow the text without bound.
pub const MAX_TARGETS: usize = 4096;

/// The path the metrics are served at on the HTTP port.
pub const PATH: &str = "/metrics";
/// Reading [`PATH`] is admitted as this resource, `service:debug:Debug.Metrics`, in namespace
/// `micro` (docs/security.md, "Metrics").
pub const RESOURCE_SERVICE: &str = "debug";
/// See [`RESOURCE_SERVICE`].
pub const RESOURCE_ENDPOINT: &str = "Debug.Metrics";

/// Which listener a request came in on: the `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP gateway on :8080; `code` is the HTTP status.
    Http,
    /// The gRPC port :8081 (core services and proxied calls); `code` is the gRPC status name.
    Grpc,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Grpc => "grpc",
        }
    }
}

/// The process's recorder: renders what every server in the process recorded. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static INSTALLED: OnceLock<Metrics> = OnceLock::new();

/// When this process began counting requests: the first [`Metrics::install`].
static STARTED: std::sync::LazyLock<std::time::SystemTime> =
    std::sync::LazyLock::new(std::time::SystemTime::now);

/// When this process began counting requests ([`endpoint_stats`] counts from then).
pub fn counting_since() -> std::time::SystemTime {
    *STARTED
}

impl Metrics {
    /// The recorder of this process, installed on the first call. The `metrics` facade has one
    /// global recorder per process, so every server booted in it (tests boot several) shares it.
    pub fn install() -> Self {
        INSTALLED
            .get_or_init(|| {
                std::sync::LazyLock::force(&STARTED);
                let recorder = builder().build_recorder();
                let handle = recorder.handle();
                if let Err(err) = metrics::set_global_recorder(recorder) {
                    tracing::warn!(cause = %err, "another metrics recorder is installed; /metrics stays empty");
                }
                let process = metrics_process::Collector::default();
                describe(&process);
                spawn_upkeep(handle.clone());
                Metrics { handle, process }
            })
            .clone()
    }

    /// The exposition text (Prometheus text format 0.0.4), process metrics read just now.
    pub fn render(&self) -> String {
        self.process.collect();
        let collectors: Vec<Collector> = COLLECTORS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, c)| c.clone())
            .collect();
        for collector in collectors {
            collector();
        }
        self.handle.render()
    }

    /// Runs `collect` before each [`render`](Self::render) (gauges read from state, such as the
    /// runtime's services by status), until the returned guard is dropped.
    pub fn collect_before_render(collect: impl Fn() + Send + Sync + 'static) -> Collecting {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).push((id, Arc::new(collect)));
        Collecting(id)
    }
}

type Collector = Arc<dyn Fn() + Send + Sync>;

/// What [`Metrics::render`] runs first, registered by the servers of this process.
static COLLECTORS: std::sync::Mutex<Vec<(u64, Collector)>> = std::sync::Mutex::new(Vec::new());

/// Keeps a collector of [`Metrics::collect_before_render`]; dropping it removes the collector.
pub struct Collecting(u64);

impl Drop for Collecting {
    fn drop(&mut self) {
        COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).retain(|(id, _)| *id != self.0);
    }
}

/// The runtime's services by status ([`micro_runtime::metrics::SERVICES`]), set at each render.
pub fn collect_runtime(runtime: micro_runtime::Runtime) -> Collecting {
    Metrics::collect_before_render(move || {
        for (status, count) in runtime.census() {
            gauge!(micro_runtime::metrics::SERVICES, "status" => status.as_str()).set(count as f64);
        }
    })
}

/// Counts one call refused by admission on `listener`.
pub fn rejected(listener: Listener, refusal: &micro_access::admission::Refusal) {
    counter!(AUTH_REJECTIONS_TOTAL, "listener" => listener.as_str(), "reason" => refusal.reason())
        .increment(1);
}

/// The recorder's settings: [`REQUEST_DURATION_SECONDS`] as a histogram with
/// [`DURATION_BUCKETS`] (without buckets the exporter would render a summary).
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION_SECONDS.to_string()), DURATION_BUCKETS)
        .expect("DURATION_BUCKETS is not empty")
        .set_buckets_for_metric(
            Matcher::Full(micro_runtime::metrics::BUILD_DURATION_SECONDS.to_string()),
            micro_runtime::metrics::BUILD_DURATION_BUCKETS,
        )
        .expect("BUILD_DURATION_BUCKETS is not empty")
}

/// The help text of every metric, on the current recorder.
fn describe(process: &metrics_process::Collector) {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests answered, by listener, service, endpoint and code."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a request's arrival to the end of its response body."
    );
    describe_gauge!(REQUESTS_IN_FLIGHT, Unit::Count, "Admitted requests not yet answered to the end.");
    describe_counter!(AUTH_LOGINS_TOTAL, Unit::Count, "Auth.Token calls (logins and refreshes), by result.");
    describe_counter!(
        AUTH_REJECTIONS_TOTAL,
        Unit::Count,
        "Calls refused by admission, by listener and reason."
    );
    describe_counter!(REQUEST_BYTES_TOTAL, Unit::Bytes, "Bytes of request bodies received.");
    describe_counter!(RESPONSE_BYTES_TOTAL, Unit::Bytes, "Bytes of response bodies sent.");
    describe_histogram!(
        micro_runtime::metrics::BUILD_DURATION_SECONDS,
        Unit::Seconds,
        "Builds of services (cargo fetch and build), by result."
    );
    describe_counter!(
        micro_runtime::metrics::RESTARTS_TOTAL,
        Unit::Count,
        "Service processes restarted after a crash."
    );
    describe_gauge!(micro_runtime::metrics::SERVICES, Unit::Count, "Services of the runtime, by status.");
    process.describe();
}

/// Runs the recorder's upkeep every [`UPKEEP_INTERVAL`] on a thread of its own. The thread lives
/// as long as the process, like the global recorder it keeps: there is nothing to stop.
fn spawn_upkeep(handle: PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    };
    if let Err(err) = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(upkeep) {
        tracing::warn!(cause = %err, "cannot start the metrics upkeep; histograms are folded at scrapes only");
    }
}

/// The labels of one resolved (service, endpoint), made once per pair and shared by every call,
/// with the pair's [`Tally`].
#[derive(Debug, Clone)]
pub struct Target {
    service: SharedString,
    endpoint: SharedString,
    tally: Arc<Tally>,
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service && self.endpoint == other.endpoint
    }
}

impl Eq for Target {}

impl Target {
    /// The labels of requests resolved to nothing.
    pub fn other() -> Self {
        static OTHER_TALLY: std::sync::LazyLock<Arc<Tally>> = std::sync::LazyLock::new(Arc::default);
        Self {
            service: SharedString::const_str(OTHER),
            endpoint: SharedString::const_str(OTHER),
            tally: OTHER_TALLY.clone(),
        }
    }
}

/// How many buckets a [`Tally`] has: one per [`DURATION_BUCKETS`] bound and one beyond the last.
const TALLY_BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// The calls of one (service, endpoint) on both listeners, kept beside the Prometheus series for
/// `debug.Debug/Stats` ([`endpoint_stats`]): the exporter can only render its text, and parsing
/// that back per call would cost more than these few atomics per request. Bounded like the
/// labels: one per [`Target`], so at most [`MAX_TARGETS`].
#[derive(Debug)]
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Calls by duration: `buckets[i]` counts those within `DURATION_BUCKETS[i]` and above the
    /// bound before it; the last, those beyond every bound.
    buckets: [AtomicU64; TALLY_BUCKETS],
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Tally {
    fn record(&self, error: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        let bucket =
            DURATION_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// The `q` quantile (0 to 1) of the durations counted in `buckets` (see [`Tally::buckets`]),
/// estimated as Prometheus's `histogram_quantile` does: linearly within the bucket that holds
/// it, and the last bound for those beyond it. Zero without calls.
fn quantile(buckets: &[u64; TALLY_BUCKETS], q: f64) -> Duration {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, count) in buckets.iter().enumerate() {
        if *count > 0 && (below + count) as f64 >= rank {
            let Some(upper) = DURATION_BUCKETS.get(index) else { break };
            let lower = if index == 0 { 0.0 } else { DURATION_BUCKETS[index - 1] };
            let within = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
            return Duration::from_secs_f64(lower + (upper - lower) * within);
        }
        below += count;
    }
    Duration::from_secs_f64(DURATION_BUCKETS[DURATION_BUCKETS.len() - 1])
}

/// What the server counted of one endpoint since its process started ([`endpoint_stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    pub service: String,
    pub endpoint: String,
    /// Calls answered on both listeners.
    pub requests: u64,
    /// Those answered with a gRPC status other than `OK` or an HTTP status of 400 or more.
    pub errors: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

/// The endpoints of `service` (every service when `None`) that were called, by service and
/// endpoint; calls resolved to nothing ([`OTHER`]) are not among them. Like the recorder, the
/// counts are of this process: every server booted in it, every namespace.
pub fn endpoint_stats(service: Option<&str>) -> Vec<EndpointStats> {
    let seen = TARGETS.seen.read().unwrap_or_else(PoisonError::into_inner);
    let mut stats: Vec<EndpointStats> = seen
        .by_service
        .iter()
        .filter(|(name, _)| service.is_none_or(|service| service == &***name))
        .flat_map(|(_, endpoints)| endpoints.values())
        .filter_map(|target| {
            let tally = &target.tally;
            let requests = tally.requests.load(Ordering::Relaxed);
            if requests == 0 {
                return None;
            }
            let buckets: [u64; TALLY_BUCKETS] =
                std::array::from_fn(|i| tally.buckets[i].load(Ordering::Relaxed));
            Some(EndpointStats {
                service: target.service.to_string(),
                endpoint: target.endpoint.to_string(),
                requests,
                errors: tally.errors.load(Ordering::Relaxed),
                p50: quantile(&buckets, 0.5),
                p90: quantile(&buckets, 0.9),
                p99: quantile(&buckets, 0.99),
            })
        })
        .collect();
    stats.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
    stats
}

/// The label pairs seen so far, at most `limit`.
struct Targets {
    seen: RwLock<Seen>,
    limit: usize,
}

#[derive(Default)]
struct Seen {
    by_service: HashMap<Box<str>, HashMap<Box<str>, Target>>,
    len: usize,
    warned: bool,
}

impl Targets {
    fn new(limit: usize) -> Self {
        Self { seen: RwLock::default(), limit }
    }

    /// The labels of `service` and `endpoint`; [`Target::other`] once `limit` pairs are kept.
    fn get(&self, service: &str, endpoint: &str) -> Target {
        {
            let seen = self.seen.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(target) = seen.by_service.get(service).and_then(|endpoints| endpoints.get(endpoint)) {
                return target.clone();
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(target) = seen.by_service.get(service).and_then(|endpoints| endpoints.get(endpoint)) {
            return target.clone();
        }
        if seen.len >= self.limit {
            if !seen.warned {
                seen.warned = true;
                tracing::warn!(
                    limit = self.limit,
                    "MAX_TARGETS label pairs reached; new endpoints count as other"
                );
            }
            return Target::other();
        }
        let target = Target {
            service: SharedString::from_shared(Arc::from(service)),
            endpoint: SharedString::from_shared(Arc::from(endpoint)),
            tally: Arc::default(),
        };
        seen.by_service.entry(service.into()).or_default().insert(endpoint.into(), target.clone());
        seen.len += 1;
        target
    }
}

static TARGETS: std::sync::LazyLock<Targets> = std::sync::LazyLock::new(|| Targets::new(MAX_TARGETS));

/// Where the admission code of a listener writes what it resolved a request to; the
/// [`RequestMetricsLayer`] puts one in every request's extensions. Cheap to clone.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

struct SlotInner {
    listener: Listener,
    target: OnceLock<Target>,
    /// Bytes of the request body read so far ([`Counted`]).
    received: AtomicU64,
}

impl Slot {
    fn new(listener: Listener) -> Self {
        Self(Arc::new(SlotInner { listener, target: OnceLock::new(), received: AtomicU64::new(0) }))
    }

    /// The request goes to `endpoint` (`Handler.Method`) of `service`, a registered or core
    /// service that has that method: from now on it is in flight under those labels. Only the
    /// first call counts.
    pub fn resolve(&self, service: &str, endpoint: &str) {
        if self.0.target.get().is_some() {
            return;
        }
        if self.0.target.set(TARGETS.get(service, endpoint)).is_ok()
            && let Some(target) = self.0.target.get()
        {
            gauge!(REQUESTS_IN_FLIGHT, in_flight_labels(self.0.listener, target).iter()).increment(1.0);
        }
    }

    /// What the request was resolved to, if anything.
    pub fn target(&self) -> Option<&Target> {
        self.0.target.get()
    }
}

fn in_flight_labels(listener: Listener, target: &Target) -> [Label; 3] {
    [
        Label::from_static_parts("listener", listener.as_str()),
        Label::new("service", target.service.clone()),
        Label::new("endpoint", target.endpoint.clone()),
    ]
}

/// The gRPC paths (`/store.Store/Read`) of every method of the services named `served` that the
/// server hosts itself (core services, health, reflection): a call at another path under a core
/// service's name is no method, and counts as [`OTHER`].
pub fn served_methods(served: &[&str]) -> HashSet<String> {
    let sets = [
        micro_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashSet::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            tracing::warn!("a compiled-in descriptor set does not decode; its methods count as other");
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let name = if package.is_empty() {
                    service.name().to_string()
                } else {
                    format!("{package}.{}", service.name())
                };
                if !served.contains(&name.as_str()) {
                    continue;
                }
                for method in &service.method {
                    methods.insert(format!("/{name}/{}", method.name()));
                }
            }
        }
    }
    methods
}

/// Counts the requests of one listener (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RequestMetricsLayer {
    listener: Listener,
}

impl RequestMetricsLayer {
    pub fn new(listener: Listener) -> Self {
        Self { listener }
    }
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics { inner, listener: self.listener }
    }
}

/// The service of [`RequestMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    listener: Listener,
}

impl<S, B, R> tower::Service<Request<B>> for RequestMetrics<S>
where
    S: tower::Service<Request<Counted<B>>, Response = Response<R>>,
{
    type Response = Response<Metered<R>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let slot = Slot::new(self.listener);
        request.extensions_mut().insert(slot.clone());
        let request = request.map(|inner| Counted { inner, slot: slot.clone() });
        MeteredFuture { inner: self.inner.call(request), call: Some(Call::new(slot)) }
    }
}

/// One request being measured; counted exactly once, when its response ends or it is dropped.
struct Call {
    slot: Slot,
    start: Instant,
    code: Option<SharedString>,
    /// Bytes of the response body sent so far.
    sent: u64,
}

impl Call {
    fn new(slot: Slot) -> Self {
        Self { slot, start: Instant::now(), code: None, sent: 0 }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let listener = self.slot.0.listener;
        let code = self.code.take().unwrap_or_else(|| match listener {
            // The client left before the status: the response future or a stream was dropped.
            Listener::Grpc => SharedString::const_str("CANCELLED"),
            Listener::Http => SharedString::const_str(HTTP_CLIENT_CLOSED),
        });
        let bytes = Transferred { received: self.slot.0.received.load(Ordering::Relaxed), sent: self.sent };
        record(listener, self.slot.target(), code, self.start.elapsed(), bytes);
    }
}

/// The body bytes of one request, each way.
struct Transferred {
    received: u64,
    sent: u64,
}

/// Counts one finished request (see [`Call`]).
fn record(
    listener: Listener,
    target: Option<&Target>,
    code: SharedString,
    elapsed: Duration,
    bytes: Transferred,
) {
    if let Some(target) = target {
        gauge!(REQUESTS_IN_FLIGHT, in_flight_labels(listener, target).iter()).decrement(1.0);
    }
    let other = Target::other();
    // A path under a served name that names no method of its node is answered UNIMPLEMENTED:
    // it is no endpoint.
    let labelled = match target {
        Some(target) if !(listener == Listener::Grpc && &*code == "UNIMPLEMENTED") => target,
        _ => &other,
    };
    if listener == Listener::Grpc && &*labelled.service == "auth" && &*labelled.endpoint == "Auth.Token" {
        let result = if &*code == "OK" { "success" } else { "failure" };
        counter!(AUTH_LOGINS_TOTAL, "result" => result).increment(1);
    }
    let error = match listener {
        Listener::Grpc => &*code != "OK",
        Listener::Http => code.parse::<u16>().map_or(true, |status| status >= 400),
    };
    labelled.tally.record(error, elapsed);
    let labels = [
        Label::from_static_parts("listener", listener.as_str()),
        Label::new("service", labelled.service.clone()),
        Label::new("endpoint", labelled.endpoint.clone()),
        Label::new("code", code),
    ];
    counter!(REQUESTS_TOTAL, labels.iter()).increment(1);
    histogram!(REQUEST_DURATION_SECONDS, labels.iter()).record(elapsed.as_secs_f64());
    let labels = &labels[..3];
    counter!(REQUEST_BYTES_TOTAL, labels.iter()).increment(bytes.received);
    counter!(RESPONSE_BYTES_TOTAL, labels.iter()).increment(bytes.sent);
}

pin_project_lite::pin_project! {
    /// A request body that adds the bytes read to its request's [`Slot`].
    pub struct Counted<B> {
        #[pin]
        inner: B,
        slot: Slot,
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.slot.0.received.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RequestMetrics`]: hands the measurement on to the body.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, R, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<Metered<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let mut call = this.call.take();
        if let Some(call) = &mut call {
            call.code = match call.slot.0.listener {
                Listener::Http => Some(http_code(response.status())),
                // A trailers-only response (every refusal) has its status in the headers.
                Listener::Grpc => grpc_status(response.headers()),
            };
        }
        Poll::Ready(Ok(response.map(|inner| Metered { inner, call })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends the measurement of its request: at its end, at an error, or
    /// when dropped unfinished.
    pub struct Metered<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(call)) = (frame.data_ref(), this.call.as_mut()) {
                    call.sent += data.len() as u64;
                }
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), this.call.as_mut())
                    && call.slot.0.listener == Listener::Grpc
                {
                    call.code = grpc_status(trailers);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut()
                    && call.code.is_none()
                {
                    call.code = Some(SharedString::const_str("UNKNOWN"));
                }
                this.call.take();
            }
            None => {
                if let Some(call) = this.call.as_mut()
                    && call.code.is_none()
                {
                    // A gRPC body that ended without a status.
                    call.code = Some(SharedString::const_str("UNKNOWN"));
                }
                this.call.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gRPC status names, indexed by code (the `grpc-status` values 0 to 16).
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of the `grpc-status` in `headers` (`UNKNOWN` for a value outside the 17 codes);
/// `None` without one.
fn grpc_status(headers: &HeaderMap) -> Option<SharedString> {
    let value = headers.get("grpc-status")?;
    let name = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|value| value.parse::<usize>().ok())
        .and_then(|code| GRPC_CODES.get(code))
        .unwrap_or(&"UNKNOWN");
    Some(SharedString::const_str(name))
}

/// The status as a label value, without allocating for the statuses the server answers with.
fn http_code(status: StatusCode) -> SharedString {
    let code = match status.as_u16() {
        101 => "101",
        200 => "200",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        421 => "421",
        429 => "429",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return SharedString::from_owned(status.as_str().to_string()),
    };
    SharedString::const_str(code)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt as _;
    use tower::{Layer as _, Service as _};

    use super::*;

    /// A recorder of this test alone (the global one is shared by every test of the process).
    fn local() -> (metrics_exporter_prometheus::PrometheusRecorder, PrometheusHandle) {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        (recorder, handle)
    }

    /// The value of the series `name{labels}` in `text`, labels in rendering order.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn label_pairs_are_shared_and_bounded() {
        let targets = Targets::new(2);
        let first = targets.get("helloworld", "Helloworld.Call");
        assert_eq!(first, targets.get("helloworld", "Helloworld.Call"));
        assert!(
            matches!((&first.service, &targets.get("helloworld", "Helloworld.Call").service), (a, b) if std::ptr::eq(a.as_ref(), b.as_ref())),
            "a known pair is not allocated again"
        );
        assert_eq!(&*targets.get("store", "Store.Read").endpoint, "Store.Read");
        assert_eq!(targets.get("store", "Store.Write"), Target::other(), "past the limit, new pairs fold");
        assert_eq!(&*targets.get("store", "Store.Read").service, "store", "known pairs stay");
    }

    #[test]
    fn quantiles_are_estimated_within_their_bucket() {
        let tally = Tally::default();
        assert_eq!(quantile(&[0; TALLY_BUCKETS], 0.5), Duration::ZERO, "no calls");
        for _ in 0..98 {
            tally.record(false, Duration::from_micros(2000));
        }
        tally.record(true, Duration::from_secs(3));
        tally.record(true, Duration::from_secs(600));
        let buckets: [u64; TALLY_BUCKETS] = std::array::from_fn(|i| tally.buckets[i].load(Ordering::Relaxed));
        assert_eq!((tally.requests.load(Ordering::Relaxed), tally.errors.load(Ordering::Relaxed)), (100, 2));
        assert_eq!(buckets[2], 98, "2ms is within 1ms to 2.5ms");
        let p50 = quantile(&buckets, 0.5).as_secs_f64();
        assert!((p50 - (0.001 + 0.0015 * 50.0 / 98.0)).abs() < 1e-9, "{p50}");
        assert_eq!(
            quantile(&buckets, 0.99),
            Duration::from_secs_f64(5.0),
            "the 99th call is within 2.5s to 5s"
        );
        assert_eq!(quantile(&buckets, 1.0), Duration::from_secs(60), "beyond the last bound: the last bound");
    }

    #[test]
    fn codes_are_bounded_names() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_status(&headers).as_deref(), Some("NOT_FOUND"));
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(grpc_status(&headers).as_deref(), Some("UNKNOWN"));
        headers.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(grpc_status(&headers).as_deref(), Some("UNKNOWN"));
        assert_eq!(&*http_code(StatusCode::OK), "200");
        assert_eq!(&*http_code(StatusCode::IM_A_TEAPOT), "418");
    }

    #[test]
    fn served_methods_are_those_of_served_services() {
        let methods = served_methods(&["store.Store", "grpc.health.v1.Health"]);
        assert!(methods.contains("/store.Store/Read"));
        assert!(methods.contains("/grpc.health.v1.Health/Check"));
        assert!(!methods.contains("/store.Store/Nope"));
        assert!(!methods.contains("/debug.Debug/Health"), "compiled in, not served");
    }

    /// A service answering what `respond` makes of the request, after resolving it like an
    /// admission would when `resolve` is set.
    async fn serve_one(
        listener: Listener,
        resolve: Option<(&'static str, &'static str)>,
        response: Response<http_body_util::Full<Bytes>>,
    ) -> Response<Metered<http_body_util::Full<Bytes>>> {
        let response = std::sync::Mutex::new(Some(response));
        let inner = tower::service_fn(move |request: Request<Counted<()>>| {
            if let (Some(slot), Some((service, endpoint))) = (request.extensions().get::<Slot>(), resolve) {
                slot.resolve(service, endpoint);
            }
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        });
        let mut service = RequestMetricsLayer::new(listener).layer(inner);
        service.call(Request::new(())).await.unwrap()
    }

    #[tokio::test]
    async fn requests_render_as_counters_histograms_and_gauges() {
        let (recorder, handle) = local();
        let _guard = metrics::set_default_local_recorder(&recorder);
        describe(&metrics_process::Collector::default());

        // An HTTP call resolved to an endpoint, read to its end.
        let ok =
            serve_one(Listener::Http, Some(("helloworld", "Helloworld.Call")), Response::new("hi".into()))
                .await;
        let in_flight = handle.render();
        assert_eq!(
            value(
                &in_flight,
                r#"micro_requests_in_flight{listener="http",service="helloworld",endpoint="Helloworld.Call"}"#
            ),
            Some(1.0),
            "{in_flight}"
        );
        assert_eq!(ok.into_body().collect().await.unwrap().to_bytes(), "hi");

        // A path resolved to nothing, and a gRPC call whose status is in its trailers.
        let mut missing = Response::new(http_body_util::Full::default());
        *missing.status_mut() = StatusCode::NOT_FOUND;
        let missing = serve_one(Listener::Http, None, missing).await;
        drop(missing.into_body().collect().await.unwrap());
        let grpc = serve_one(Listener::Grpc, Some(("store", "Store.Read")), Response::new("x".into())).await;
        let (_, body) = grpc.into_parts();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let body = Metered { inner: WithTrailers(Some(trailers)), call: body.call };
        drop(body.collect().await.unwrap());
        // A proxied call of a method the node does not have, and a stream the client left.
        let mut unimplemented = Response::new(http_body_util::Full::default());
        unimplemented.headers_mut().insert("grpc-status", "12".parse().unwrap());
        drop(serve_one(Listener::Grpc, Some(("helloworld", "Helloworld.Nope")), unimplemented).await);
        drop(serve_one(Listener::Grpc, Some(("events", "Stream.Consume")), Response::new("x".into())).await);

        let text = handle.render();
        let count = |series: &str| value(&text, &format!("micro_requests_total{{{series}}}"));
        assert_eq!(
            count(r#"listener="http",service="helloworld",endpoint="Helloworld.Call",code="200""#),
            Some(1.0)
        );
        assert_eq!(count(r#"listener="http",service="other",endpoint="other",code="404""#), Some(1.0));
        assert_eq!(
            count(r#"listener="grpc",service="store",endpoint="Store.Read",code="NOT_FOUND""#),
            Some(1.0)
        );
        assert_eq!(
            count(r#"listener="grpc",service="other",endpoint="other",code="UNIMPLEMENTED""#),
            Some(1.0)
        );
        assert_eq!(
            count(r#"listener="grpc",service="events",endpoint="Stream.Consume",code="CANCELLED""#),
            Some(1.0)
        );
        assert!(
            !text.lines().any(|line| line.starts_with("micro_requests_total") && line.contains("Nope")),
            "a method the node does not have is no endpoint: {text}"
        );
        assert!(
            text.contains(r#"micro_request_duration_seconds_bucket{listener="http",service="helloworld",endpoint="Helloworld.Call",code="200",le="0.0005"}"#),
            "durations render as histograms: {text}"
        );
        assert!(text.contains("# TYPE micro_request_duration_seconds histogram"), "{text}");
        assert!(text.contains("# HELP micro_requests_total"), "{text}");
        assert_eq!(
            value(
                &text,
                r#"micro_requests_in_flight{listener="http",service="helloworld",endpoint="Helloworld.Call"}"#
            ),
            Some(0.0),
            "{text}"
        );
    }

    #[test]
    fn builds_render_as_a_histogram_with_their_buckets() {
        let (recorder, handle) = local();
        let _guard = metrics::set_default_local_recorder(&recorder);
        histogram!(micro_runtime::metrics::BUILD_DURATION_SECONDS, "result" => "success").record(3.0);
        let text = handle.render();
        let bucket = |le: &str| {
            value(
                &text,
                &format!(r#"micro_runtime_build_duration_seconds_bucket{{result="success",le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("2.5"), Some(0.0), "{text}");
        assert_eq!(bucket("5"), Some(1.0), "{text}");
        assert_eq!(bucket("1800"), Some(1.0), "the longest bucket is BUILD_DURATION_BUCKETS' last: {text}");
    }

    #[test]
    fn the_recorder_is_installed_once() {
        let first = Metrics::install();
        let second = Metrics::install();
        counter!("micro_test_installed_total").increment(1);
        assert!(second.render().contains("micro_test_installed_total 1"), "{}", first.render());
        assert!(first.render().contains("process_resident_memory_bytes"), "process metrics are collected");
    }

    /// A body of no data and then `trailers`.
    struct WithTrailers(Option<HeaderMap>);

    impl Body for WithTrailers {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|trailers| Ok(Frame::trailers(trailers))))
        }
    }
}
