//! Prometheus metrics behind the `metrics` facade, shared by the server and every framework
//! service (docs/observability.md): the request metrics' names and buckets, the process's one
//! recorder, and the layer that counts each request under bounded labels.
//!
//! - [`Metrics::install`] installs the Prometheus recorder once per process (a test process may
//!   boot many servers; they share it) and renders the exposition text with the process's RSS,
//!   CPU, open files and threads (`metrics-process`). When the program installed a recorder of
//!   its own first, it says so once and gives [`ForeignRecorder`].
//! - [`RequestMetricsLayer`] wraps a listener (`http` and `grpc` of the server, `service` of a
//!   framework service). It puts an empty [`Slot`] in every request's extensions; the
//!   listener's admission code fills it once it has resolved the call to a service and one of
//!   its methods ([`Slot::resolve`]). When the response body ends (or is dropped: a stream the
//!   client left) the layer counts the request under that service and endpoint and the
//!   response's code. A request whose slot stays empty (unknown paths, refusals before the target
//!   was resolved, malformed calls) counts as `service="other", endpoint="other"`, so the label
//!   values are bounded by the methods the process serves or routes, and in any case by
//!   [`MAX_TARGETS`]. The same labels count the body bytes each way ([`Counted`], [`Metered`]),
//!   and a [`Tally`] per pair keeps counts the server's `micro stats` reads ([`tallies`]).
//! - [`enabled`]: whether this process counts requests at all; `MICRO_METRICS=off` ([`ENV`])
//!   turns the layer into a pass-through and `GET /metrics` into a 404 ([`OFF`]).
//! - [`methods_of`]: the gRPC paths of the methods in descriptor sets, what a listener may
//!   resolve calls to.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// The variable that turns the request metrics off: `off`, `false` or `0` (any case); anything
/// else, or unset, leaves them on. Read once per process ([`enabled`]).
pub const ENV: &str = "MICRO_METRICS";
/// The body of `GET /metrics` (a 404) in a process whose metrics are off.
pub const OFF: &str = "metrics are off (MICRO_METRICS=off)";

/// Whether this process counts requests: [`ENV`], read on the first call. Off, the
/// [`RequestMetricsLayer`] passes requests through (no [`Slot`], nothing recorded) and the
/// listeners answer `GET /metrics` with a 404 saying [`OFF`].
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| enabled_by(std::env::var(ENV).ok().as_deref()))
}

/// What a value of [`ENV`] says: off for `off`, `false` and `0`, on otherwise.
fn enabled_by(value: Option<&str>) -> bool {
    !value
        .map(str::trim)
        .is_some_and(|value| ["off", "false", "0"].iter().any(|off| value.eq_ignore_ascii_case(off)))
}

/// The path the metrics are served at (the server's HTTP port, every framework service's port).
pub const PATH: &str = "/metrics";
/// The content type of the exposition text (format 0.0.4), as Prometheus asks for it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The upper bounds, in seconds, of the buckets of [`REQUEST_DURATION_SECONDS`]: from half a
/// millisecond (a store read on loopback) to a minute (a long stream).
pub const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often the recorder folds recorded histogram samples into its buckets between scrapes, so
/// that a process nobody scrapes does not keep every sample.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Most distinct (service, endpoint) label pairs the request metrics keep. Each is a series per
/// listener and code; past this, calls of new pairs count as [`OTHER`] (and a warning is logged
/// once), so that a registry with very many services cannot grow the text without bound.
pub const MAX_TARGETS: usize = 4096;

/// Which listener a request came in on: the `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The server's HTTP gateway on :8080; `code` is the HTTP status.
    Http,
    /// The server's gRPC port :8081 (core services and proxied calls); `code` is the gRPC status
    /// name.
    Grpc,
    /// A framework service's own port: gRPC calls (`code`: the gRPC status name) and
    /// `GET /metrics` over HTTP/1.1 (`code`: the HTTP status).
    Service,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Grpc => "grpc",
            Listener::Service => "service",
        }
    }
}

/// The process's recorder: renders what every listener in the process recorded. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

/// The program installed a `metrics` recorder of its own before [`Metrics::install`]: what is
/// recorded goes to it, and there is no Prometheus text to render here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("another metrics recorder was installed in this process before micro's")]
pub struct ForeignRecorder;

static INSTALLED: OnceLock<Result<Metrics, ForeignRecorder>> = OnceLock::new();

impl Metrics {
    /// The recorder of this process, installed on the first call with the settings `configure`
    /// adds to [`builder`] and the help texts of [`describe`] and `describe_more`; later calls
    /// return it as it is. The `metrics` facade has one global recorder per process, so every
    /// listener in it shares it. When another recorder is installed already, a warning is
    /// logged (once) and every call gives [`ForeignRecorder`].
    pub fn install(
        configure: fn(PrometheusBuilder) -> PrometheusBuilder,
        describe_more: fn(),
    ) -> Result<Self, ForeignRecorder> {
        INSTALLED
            .get_or_init(|| {
                let recorder = configure(builder()).build_recorder();
                let handle = recorder.handle();
                if let Err(err) = metrics::set_global_recorder(recorder) {
                    tracing::warn!(cause = %err, "another metrics recorder is installed; micro's /metrics is off");
                    return Err(ForeignRecorder);
                }
                let process = metrics_process::Collector::default();
                describe(&process);
                describe_more();
                spawn_upkeep(handle.clone());
                Ok(Metrics { handle, process })
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
}

/// Runs `collect` before each [`Metrics::render`] (gauges read from state, such as the server
/// runtime's services by status), until the returned guard is dropped.
pub fn collect_before_render(collect: impl Fn() + Send + Sync + 'static) -> Collecting {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).push((id, Arc::new(collect)));
    Collecting(id)
}

type Collector = Arc<dyn Fn() + Send + Sync>;

/// What [`Metrics::render`] runs first, registered by the listeners of this process.
static COLLECTORS: std::sync::Mutex<Vec<(u64, Collector)>> = std::sync::Mutex::new(Vec::new());

/// Keeps a collector of [`collect_before_render`]; dropping it removes the collector.
pub struct Collecting(u64);

impl Drop for Collecting {
    fn drop(&mut self) {
        COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).retain(|(id, _)| *id != self.0);
    }
}

/// The recorder's settings: [`REQUEST_DURATION_SECONDS`] as a histogram with
/// [`DURATION_BUCKETS`] (without buckets the exporter would render a summary).
pub fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION_SECONDS.to_string()), DURATION_BUCKETS)
        .expect("DURATION_BUCKETS is not empty")
}

/// The help text of the request metrics and the process metrics, on the current recorder.
pub fn describe(process: &metrics_process::Collector) {
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
    describe_counter!(REQUEST_BYTES_TOTAL, Unit::Bytes, "Bytes of request bodies received.");
    describe_counter!(RESPONSE_BYTES_TOTAL, Unit::Bytes, "Bytes of response bodies sent.");
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

/// The gRPC paths (`/store.Store/Read`) of every method of the services named `served` in the
/// encoded descriptor sets `sets`: what a listener resolves calls to. A call at another path
/// under a served name is no method, and counts as [`OTHER`].
pub fn methods_of(sets: &[&[u8]], served: &[&str]) -> HashSet<String> {
    let mut methods = HashSet::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
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

    /// The `service` label.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The `endpoint` label (`Handler.Method`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// How many buckets a [`Tally`] has: one per [`DURATION_BUCKETS`] bound and one beyond the last.
pub const TALLY_BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// The calls of one (service, endpoint) on every listener, kept beside the Prometheus series for
/// the server's `debug.Debug/Stats`: the exporter can only render its text, and parsing that
/// back per call would cost more than these few atomics per request. Bounded like the labels:
/// one per [`Target`], so at most [`MAX_TARGETS`].
#[derive(Debug)]
pub struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Calls by duration: `buckets[i]` counts those within `DURATION_BUCKETS[i]` and above the
    /// bound before it; the last, those beyond every bound.
    buckets: [AtomicU64; TALLY_BUCKETS],
}

/// What a [`Tally`] counted, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    /// Calls answered with a gRPC status other than `OK` or an HTTP status of 400 or more.
    pub errors: u64,
    /// See [`Tally`]: the last bucket counts calls beyond every bound of [`DURATION_BUCKETS`].
    pub buckets: [u64; TALLY_BUCKETS],
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
    /// Counts one call that took `elapsed`.
    pub fn record(&self, error: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        let bucket =
            DURATION_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// The counts of one (service, endpoint) ([`tallies`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Tallied {
    pub service: String,
    pub endpoint: String,
    pub counts: Counts,
}

/// The (service, endpoint) pairs of `service` (every service when `None`) that requests were
/// resolved to, with their counts since the process started; calls resolved to nothing
/// ([`OTHER`]) are not among them.
pub fn tallies(service: Option<&str>) -> Vec<Tallied> {
    let seen = TARGETS.seen.read().unwrap_or_else(PoisonError::into_inner);
    seen.by_service
        .iter()
        .filter(|(name, _)| service.is_none_or(|service| service == &***name))
        .flat_map(|(_, endpoints)| endpoints.values())
        .map(|target| Tallied {
            service: target.service.to_string(),
            endpoint: target.endpoint.to_string(),
            counts: target.tally.counts(),
        })
        .collect()
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
    series: Series,
    target: OnceLock<Target>,
    /// Bytes of the request body read so far ([`Counted`]).
    received: AtomicU64,
}

impl Slot {
    fn new(listener: Listener, series: Series) -> Self {
        Self(Arc::new(SlotInner { listener, series, target: OnceLock::new(), received: AtomicU64::new(0) }))
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
            self.0.series.pair(self.0.listener, target, |series| series.in_flight.increment(1.0));
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

/// What a listener adds to the counting of each finished request: its target (resolved, or
/// [`Target::other`]) and its `code` (the server counts its logins this way).
pub type Observer = fn(&Target, &str);

/// Counts the requests of one listener (see the module docs).
#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    listener: Listener,
    observer: Option<Observer>,
    series: Series,
}

impl RequestMetricsLayer {
    pub fn new(listener: Listener) -> Self {
        Self { listener, observer: None, series: Series::default() }
    }

    /// Calls `observer` with each request as it is counted.
    pub fn observe(self, observer: Observer) -> Self {
        Self { observer: Some(observer), ..self }
    }
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            listener: self.listener,
            observer: self.observer,
            series: self.series.clone(),
        }
    }
}

/// The service of [`RequestMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    listener: Listener,
    observer: Option<Observer>,
    series: Series,
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
        if !enabled() {
            let request = request.map(|inner| Counted { inner, slot: None });
            return MeteredFuture { inner: self.inner.call(request), call: None };
        }
        let slot = Slot::new(self.listener, self.series.clone());
        request.extensions_mut().insert(slot.clone());
        let request = request.map(|inner| Counted { inner, slot: Some(slot.clone()) });
        let call = Call::new(slot, self.observer);
        MeteredFuture { inner: self.inner.call(request), call: Some(call) }
    }
}

/// One request being measured; counted exactly once, when its response ends or it is dropped.
struct Call {
    slot: Slot,
    start: Instant,
    /// Whether `code` is a gRPC status name (else an HTTP status): by listener, and on a
    /// service's port by the response's content type.
    grpc: bool,
    code: Option<SharedString>,
    /// Bytes of the response body sent so far.
    sent: u64,
    observer: Option<Observer>,
}

impl Call {
    fn new(slot: Slot, observer: Option<Observer>) -> Self {
        let grpc = slot.0.listener != Listener::Http;
        Self { slot, start: Instant::now(), grpc, code: None, sent: 0, observer }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let listener = self.slot.0.listener;
        // Without a code the client left before the status: the response future or a stream
        // was dropped.
        let code = self.code.take().unwrap_or_else(|| {
            SharedString::const_str(if self.grpc { "CANCELLED" } else { HTTP_CLIENT_CLOSED })
        });
        let bytes = Transferred { received: self.slot.0.received.load(Ordering::Relaxed), sent: self.sent };
        let finished = Finished { grpc: self.grpc, code, elapsed: self.start.elapsed(), bytes };
        record(&self.slot.0.series, listener, self.slot.target(), finished, self.observer);
    }
}

/// How one request ended.
struct Finished {
    grpc: bool,
    code: SharedString,
    elapsed: Duration,
    bytes: Transferred,
}

/// The body bytes of one request, each way.
struct Transferred {
    received: u64,
    sent: u64,
}

/// Counts one finished request (see [`Call`]).
fn record(
    series: &Series,
    listener: Listener,
    target: Option<&Target>,
    finished: Finished,
    observer: Option<Observer>,
) {
    let Finished { grpc, code, elapsed, bytes } = finished;
    if let Some(target) = target {
        series.pair(listener, target, |series| series.in_flight.decrement(1.0));
    }
    let other = Target::other();
    // A path under a served name that names no method of its node is answered UNIMPLEMENTED:
    // it is no endpoint.
    let labelled = match target {
        Some(target) if !(grpc && &*code == "UNIMPLEMENTED") => target,
        _ => &other,
    };
    if let Some(observer) = observer {
        observer(labelled, &code);
    }
    let error = if grpc { &*code != "OK" } else { code.parse::<u16>().map_or(true, |status| status >= 400) };
    labelled.tally.record(error, elapsed);
    series.code(listener, labelled, code, |series| {
        series.total.increment(1);
        series.duration.record(elapsed.as_secs_f64());
    });
    series.pair(listener, labelled, |series| {
        series.received.increment(bytes.received);
        series.sent.increment(bytes.sent);
    });
}

/// The series one layer records into, kept per target (and code) once registered: a registry
/// lookup builds a key of up to four labels, hashes it and takes a lock, six times a call; a kept
/// handle costs one map read. Kept per layer rather than per process, so that a layer's series
/// are those of the recorder its first calls were counted with (tests count with recorders of
/// their own beside the process's). Bounded like the labels: the targets ([`MAX_TARGETS`])
/// times their codes (the gRPC status names and the HTTP statuses).
#[derive(Debug, Clone, Default)]
struct Series(Arc<RwLock<SeriesMap>>);

#[derive(Debug, Default)]
struct SeriesMap {
    /// By the address of the target's [`Tally`] (kept alive in the value, so never reused).
    pairs: HashMap<usize, PairSeries>,
    codes: HashMap<(usize, SharedString), CodeSeries>,
}

#[derive(Debug)]
struct PairSeries {
    _target: Arc<Tally>,
    in_flight: metrics::Gauge,
    received: metrics::Counter,
    sent: metrics::Counter,
}

#[derive(Debug)]
struct CodeSeries {
    _target: Arc<Tally>,
    total: metrics::Counter,
    duration: metrics::Histogram,
}

impl Series {
    /// Runs `f` with the in-flight and bytes series of `target` on `listener`.
    fn pair<R>(&self, listener: Listener, target: &Target, f: impl FnOnce(&PairSeries) -> R) -> R {
        let key = Arc::as_ptr(&target.tally) as usize;
        if let Some(series) = self.0.read().unwrap_or_else(PoisonError::into_inner).pairs.get(&key) {
            return f(series);
        }
        let labels = in_flight_labels(listener, target);
        let series = PairSeries {
            _target: target.tally.clone(),
            in_flight: gauge!(REQUESTS_IN_FLIGHT, labels.iter()),
            received: counter!(REQUEST_BYTES_TOTAL, labels.iter()),
            sent: counter!(RESPONSE_BYTES_TOTAL, labels.iter()),
        };
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        f(map.pairs.entry(key).or_insert(series))
    }

    /// Runs `f` with the count and duration series of `target` answered with `code`.
    fn code<R>(
        &self,
        listener: Listener,
        target: &Target,
        code: SharedString,
        f: impl FnOnce(&CodeSeries) -> R,
    ) -> R {
        let key = (Arc::as_ptr(&target.tally) as usize, code);
        if let Some(series) = self.0.read().unwrap_or_else(PoisonError::into_inner).codes.get(&key) {
            return f(series);
        }
        let [listener, service, endpoint] = in_flight_labels(listener, target);
        let labels = [listener, service, endpoint, Label::new("code", key.1.clone())];
        let series = CodeSeries {
            _target: target.tally.clone(),
            total: counter!(REQUESTS_TOTAL, labels.iter()),
            duration: histogram!(REQUEST_DURATION_SECONDS, labels.iter()),
        };
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        f(map.codes.entry(key).or_insert(series))
    }
}

pin_project_lite::pin_project! {
    /// A request body that adds the bytes read to its request's [`Slot`] (none when the
    /// metrics are off).
    pub struct Counted<B> {
        #[pin]
        inner: B,
        slot: Option<Slot>,
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
            && let Some(slot) = this.slot
        {
            slot.0.received.fetch_add(data.len() as u64, Ordering::Relaxed);
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
            call.grpc = match call.slot.0.listener {
                Listener::Http => false,
                Listener::Grpc => true,
                Listener::Service => is_grpc(response.headers()),
            };
            call.code = if call.grpc {
                // A trailers-only response (every refusal) has its status in the headers.
                grpc_status(response.headers())
            } else {
                Some(http_code(response.status()))
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
                    && call.grpc
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

/// Whether `headers` (of a request or a response) say the body is gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

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
    fn metrics_are_off_only_when_the_variable_says_so() {
        for off in ["off", "OFF", "false", "False", "0", " off "] {
            assert!(!enabled_by(Some(off)), "{off:?} turns them off");
        }
        for on in [None, Some(""), Some("on"), Some("true"), Some("1"), Some("no"), Some("offf")] {
            assert!(enabled_by(on), "{on:?} leaves them on");
        }
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

    #[tokio::test]
    async fn a_service_port_counts_grpc_calls_by_status_name_and_http_by_status() {
        let (recorder, handle) = local();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let mut grpc = Response::new(http_body_util::Full::default());
        grpc.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
        grpc.headers_mut().insert("grpc-status", "0".parse().unwrap());
        drop(
            serve_one(Listener::Service, Some(("hello", "Hello.Call")), grpc)
                .await
                .into_body()
                .collect()
                .await,
        );
        let mut refused = Response::new(http_body_util::Full::default());
        *refused.status_mut() = StatusCode::UNAUTHORIZED;
        drop(serve_one(Listener::Service, None, refused).await.into_body().collect().await);
        let scrape =
            serve_one(Listener::Service, Some(("hello", "Debug.Metrics")), Response::new("x".into()));
        drop(scrape.await.into_body().collect().await);

        let text = handle.render();
        let count = |series: &str| value(&text, &format!("micro_requests_total{{{series}}}"));
        assert_eq!(count(r#"listener="service",service="hello",endpoint="Hello.Call",code="OK""#), Some(1.0));
        assert_eq!(count(r#"listener="service",service="other",endpoint="other",code="401""#), Some(1.0));
        assert_eq!(
            count(r#"listener="service",service="hello",endpoint="Debug.Metrics",code="200""#),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn methods_are_those_of_the_served_services() {
        let set = descriptors();
        let methods = methods_of(&[&set], &["hello.Hello"]);
        assert_eq!(methods, HashSet::from(["/hello.Hello/Call".to_string()]));
        assert!(methods_of(&[&set], &["hello.Other"]).is_empty());
        assert!(methods_of(&[b"not a descriptor set"], &["hello.Hello"]).is_empty());
    }

    /// A descriptor set of one file, package `hello`, with service `Hello` and its method `Call`.
    fn descriptors() -> Vec<u8> {
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let method = MethodDescriptorProto { name: Some("Call".into()), ..Default::default() };
        let service =
            ServiceDescriptorProto { name: Some("Hello".into()), method: vec![method], ..Default::default() };
        let file = FileDescriptorProto {
            name: Some("hello.proto".into()),
            package: Some("hello".into()),
            service: vec![service],
            ..Default::default()
        };
        FileDescriptorSet { file: vec![file] }.encode_to_vec()
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
