//! The trace ring (docs/observability.md#traces): the spans of the last [`MAX_TRACES`]
//! traces this server recorded, for `micro trace` (`debug.Debug/Trace`) without extra
//! software. Memory is bounded: at most [`MAX_SPANS`] spans in all and [`MAX_SPANS_PER_TRACE`]
//! per trace, each with at most [`MAX_ATTRIBUTES`] attributes of at most [`MAX_VALUE_BYTES`].
//! The oldest trace (by its first span's arrival) goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micro_proto::debug::{Span, SpanType};
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};

/// How many traces the ring keeps.
pub const MAX_TRACES: usize = 256;
/// How many spans the ring keeps in all.
pub const MAX_SPANS: usize = 8192;
/// How many spans of one trace the ring keeps; later ones are dropped.
pub const MAX_SPANS_PER_TRACE: usize = 256;
/// How many attributes of a span the ring keeps.
pub const MAX_ATTRIBUTES: usize = 16;
/// The longest name or attribute value kept, in bytes; longer ones are cut.
pub const MAX_VALUE_BYTES: usize = 256;

/// The metadata key of [`Ring::recent`]'s spans that holds their trace's span count.
pub const SPANS_KEY: &str = "trace.spans";

/// The spans of the last traces.
#[derive(Debug, Default)]
pub struct Ring {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Trace ids, oldest first.
    order: VecDeque<TraceKey>,
    traces: HashMap<TraceKey, Vec<Kept>>,
    spans: usize,
}

/// A trace id as the ring files it: its 16 bytes.
type TraceKey = u128;

/// The key of a trace id in hex (any case); none for anything but 32 hex digits.
fn trace_key(id: &str) -> Option<TraceKey> {
    (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok()).flatten()
}

/// A span as the ring keeps it: one of this process's as the SDK ended it, put in the debug
/// proto's form only when read (most leave the ring unread, and the conversion would be paid
/// on the request's path), or one in that form already (a service's export, or one of ours
/// beyond the bounds of the form).
#[derive(Debug)]
enum Kept {
    Own(Box<SpanData>),
    Converted(Span),
}

impl Kept {
    fn span(&self) -> Span {
        match self {
            Kept::Own(data) => from_sdk(data, "micro"),
            Kept::Converted(span) => span.clone(),
        }
    }

    fn started(&self) -> u64 {
        match self {
            Kept::Own(data) => nanos(data.start_time),
            Kept::Converted(span) => span.started,
        }
    }

    /// Its id and its parent's (empty for none), in hex.
    fn ids(&self) -> (String, String) {
        match self {
            Kept::Own(data) => (data.span_context.span_id().to_string(), parent_of(data)),
            Kept::Converted(span) => (span.id.clone(), span.parent.clone()),
        }
    }
}

/// Whether the ring may keep `span` as the SDK gave it: its converted form would keep all of
/// it (no value cut, no attribute dropped), so it holds no more than that form would.
fn within_bounds(span: &SpanData) -> bool {
    use opentelemetry::Value;
    span.name.len() <= MAX_VALUE_BYTES
        && span.attributes.len() <= MAX_ATTRIBUTES
        && span.events.is_empty()
        && span.links.is_empty()
        && span.attributes.iter().all(|kv| {
            kv.key.as_str().len() <= MAX_VALUE_BYTES
                && match &kv.value {
                    Value::String(text) => text.as_str().len() <= MAX_VALUE_BYTES,
                    Value::Bool(_) | Value::I64(_) | Value::F64(_) => true,
                    _ => false,
                }
        })
        && match &span.status {
            opentelemetry::trace::Status::Error { description } => description.len() <= MAX_VALUE_BYTES,
            _ => true,
        }
}

/// The ring of this process: the tracer's processor feeds it, the debug service reads it.
/// One per process like the tracer itself (a test process booting several servers shares it).
pub fn ring() -> Arc<Ring> {
    static RING: OnceLock<Arc<Ring>> = OnceLock::new();
    RING.get_or_init(|| Arc::new(Ring::default())).clone()
}

/// The tracer's options for the server: spans always recorded, kept in [`ring`].
pub fn options() -> micro_core::trace::Options {
    micro_core::trace::Options { always: true, processors: vec![Box::new(Processor(ring()))], bearer: None }
}

impl Ring {
    /// Keeps `span`, evicting the oldest traces beyond the bounds; a span whose trace id is not
    /// 32 hex digits is not kept.
    pub fn push(&self, span: Span) {
        if let Some(key) = trace_key(&span.trace) {
            self.keep(key, Kept::Converted(span));
        }
    }

    /// Keeps a span this process ended ([`Processor`]).
    fn push_own(&self, span: SpanData) {
        let key = u128::from_be_bytes(span.span_context.trace_id().to_bytes());
        let kept = if within_bounds(&span) {
            Kept::Own(Box::new(span))
        } else {
            Kept::Converted(from_sdk(&span, "micro"))
        };
        self.keep(key, kept);
    }

    fn keep(&self, key: TraceKey, span: Kept) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *inner;
        match inner.traces.get_mut(&key) {
            Some(spans) if spans.len() >= MAX_SPANS_PER_TRACE => return,
            Some(spans) => spans.push(span),
            None => {
                inner.order.push_back(key);
                inner.traces.insert(key, vec![span]);
            }
        }
        inner.spans += 1;
        while inner.order.len() > MAX_TRACES || inner.spans > MAX_SPANS {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some(spans) = inner.traces.remove(&oldest) {
                inner.spans -= spans.len();
            }
        }
    }

    /// The spans of trace `id`, by start time; none when the ring does not hold it.
    pub fn trace(&self, id: &str) -> Vec<Span> {
        let Some(key) = trace_key(id) else { return Vec::new() };
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut spans: Vec<Span> =
            inner.traces.get(&key).map(|spans| spans.iter().map(Kept::span).collect()).unwrap_or_default();
        spans.sort_by_key(|span| span.started);
        spans
    }

    /// One span per trace, newest trace first: its root (the span without a parent in the
    /// ring), or its earliest span while the root has not ended.
    pub fn recent(&self) -> Vec<Span> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| {
                let spans = inner.traces.get(id)?;
                let ids: Vec<(String, String)> = spans.iter().map(Kept::ids).collect();
                let root = spans
                    .iter()
                    .zip(&ids)
                    .filter(|(_, (_, parent))| !ids.iter().any(|(id, _)| id == parent))
                    .min_by_key(|(span, _)| span.started())?;
                let mut root = root.0.span();
                root.metadata.insert(SPANS_KEY.into(), spans.len().to_string());
                Some(root)
            })
            .collect()
    }
}

/// `debug.Debug` on :8081: `Trace` reads the [`ring`] — a trace's spans by start time for an
/// id, or one span per recent trace, newest first, without one. `Stats` answers what the
/// request metrics counted per endpoint ([`crate::metrics::endpoint_stats`]) and the usage of
/// the runtime's processes (docs/observability.md#stats). Both hold every namespace's calls, so
/// only platform administrators (accounts of `micro` with scope `admin`) may read them
/// ([`admit`]). `Health` answers `ok`; `Log` is not served here.
#[derive(Clone)]
pub struct DebugService {
    ring: Arc<Ring>,
    runtime: micro_runtime::Runtime,
}

/// The `debug.Debug` server of [`DebugService`], reporting the processes of `runtime`.
pub fn server(
    runtime: micro_runtime::Runtime,
) -> micro_proto::debug::debug_server::DebugServer<DebugService> {
    micro_proto::debug::debug_server::DebugServer::new(DebugService { ring: ring(), runtime })
}

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

/// Admits a call of `debug.Debug` that reads `what` (every namespace's data): platform
/// administrators only.
fn admit<T>(request: &tonic::Request<T>, what: &str) -> Result<(), tonic::Status> {
    let context = request.extensions().get::<micro_core::Context>().cloned().unwrap_or_default();
    match &context.account {
        None => Err(tonic::Status::unauthenticated(format!("reading {what} needs a login"))),
        Some(account) if !account.is_platform_admin() => Err(tonic::Status::permission_denied(format!(
            "only administrators of namespace micro may read {what}"
        ))),
        Some(_) => Ok(()),
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn nanos_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[tonic::async_trait]
impl micro_proto::debug::debug_server::Debug for DebugService {
    async fn log(
        &self,
        _: tonic::Request<micro_proto::debug::LogRequest>,
    ) -> Reply<micro_proto::debug::LogResponse> {
        Err(tonic::Status::unimplemented("the server's logs are not served over debug.Debug"))
    }

    async fn health(
        &self,
        _: tonic::Request<micro_proto::debug::HealthRequest>,
    ) -> Reply<micro_proto::debug::HealthResponse> {
        Ok(tonic::Response::new(micro_proto::debug::HealthResponse { status: "ok".into() }))
    }

    async fn stats(
        &self,
        request: tonic::Request<micro_proto::debug::StatsRequest>,
    ) -> Reply<micro_proto::debug::StatsResponse> {
        use micro_proto::debug::{EndpointStats, ProcessStats, StatsResponse};
        admit(&request, "stats")?;
        let service = request.into_inner().service;
        let service = Some(service.as_str()).filter(|service| !service.is_empty());
        let endpoints = crate::metrics::endpoint_stats(service)
            .into_iter()
            .map(|stats| EndpointStats {
                service: stats.service,
                endpoint: stats.endpoint,
                requests: stats.requests,
                errors: stats.errors,
                p50: nanos_of(stats.p50),
                p90: nanos_of(stats.p90),
                p99: nanos_of(stats.p99),
            })
            .collect();
        let runtime = self.runtime.clone();
        let name = service.map(str::to_string);
        // Reading /proc is blocking file I/O: off the async workers.
        let processes = tokio::task::spawn_blocking(move || runtime.processes(name.as_deref()))
            .await
            .map_err(|_| tonic::Status::internal("cannot read the runtime's processes"))?
            .into_iter()
            .map(|process| ProcessStats {
                namespace: process.namespace,
                service: process.name,
                version: process.version,
                pid: process.pid,
                rss: process.rss,
                cpu: nanos_of(process.cpu),
            })
            .collect();
        let now = SystemTime::now();
        let started = crate::metrics::counting_since();
        Ok(tonic::Response::new(StatsResponse {
            timestamp: unix_seconds(now),
            started: unix_seconds(started),
            uptime: now.duration_since(started).map_or(0, |uptime| uptime.as_secs()),
            endpoints,
            processes,
        }))
    }

    async fn trace(
        &self,
        request: tonic::Request<micro_proto::debug::TraceRequest>,
    ) -> Reply<micro_proto::debug::TraceResponse> {
        admit(&request, "traces")?;
        let id = request.into_inner().id;
        let spans = if id.is_empty() {
            self.ring.recent()
        } else {
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(tonic::Status::invalid_argument("a trace id is 32 hexadecimal digits"));
            }
            self.ring.trace(&id)
        };
        Ok(tonic::Response::new(micro_proto::debug::TraceResponse { spans }))
    }
}

/// The core service that registered services may serve as well ([`Shared`]).
pub const SHARED: &str = micro_proto::debug::debug_server::SERVICE_NAME;

/// `debug.Debug` is a handler services may serve too (its protos are compiled into every
/// framework service): in namespaces other than `micro` the gate routes a call of it to a
/// registered service that serves it ([`crate::gate::Routed`]), which goes there through the
/// proxy; any other call (every call in `micro`) is the server's own ([`server`]).
#[derive(Clone)]
pub struct Shared<S> {
    inner: S,
    proxy: crate::proxy::Proxy,
}

impl<S> Shared<S> {
    pub fn new(inner: S, proxy: crate::proxy::Proxy) -> Self {
        Self { inner, proxy }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Shared<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Shared<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.extensions().get::<crate::gate::Routed>().is_some() {
            let proxy = self.proxy.clone();
            return Box::pin(async move { Ok(proxy.forward(request).await) });
        }
        let mut inner = self.inner.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(request).await
        })
    }
}

/// The gRPC name of the OTLP trace receiver ([`receiver`]).
pub const RECEIVER: &str =
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::SERVICE_NAME;
/// The metadata key of a span a service exported to the [`receiver`]: the id of the account
/// that exported it (whatever the span's own attributes say).
pub const EXPORTED_BY: &str = "micro.exported_by";
/// The metadata key of the namespace an exported span came from.
pub const EXPORTED_IN: &str = "micro.namespace";
/// How long a forward of received spans to the server's own collector may take when
/// `OTEL_EXPORTER_OTLP_TIMEOUT` does not say (the specification's default).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The OTLP trace receiver on :8081 (`opentelemetry.proto.collector.trace.v1.TraceService`),
/// where the services the runtime starts export their spans with their account's token
/// (anonymous exports are refused): each is kept in the [`ring`] under its resource's
/// `service.name`, stamped with [`EXPORTED_BY`] and [`EXPORTED_IN`], and the request is passed on as it came to the
/// server's own collector when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set,
/// with `OTEL_EXPORTER_OTLP_HEADERS` and within `OTEL_EXPORTER_OTLP_TIMEOUT`.
#[derive(Debug, Clone)]
pub struct Receiver {
    ring: Arc<Ring>,
    forward: Option<Forward>,
}

#[derive(Debug, Clone)]
struct Forward {
    client: opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<
        tonic::transport::Channel,
    >,
    headers: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
    timeout: Duration,
}

/// The receiver's server, forwarding where the `OTEL_*` environment says.
pub fn receiver()
-> opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer<Receiver> {
    let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let either = |specific: &str, general: &str| var(specific).or_else(|| var(general));
    let off = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let forward = either("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
        .filter(|_| !off)
        .and_then(|endpoint| {
            let (address, tls) = match endpoint.split_once("://") {
                Some(("https", rest)) => (rest, true),
                Some((_, rest)) => (rest, false),
                None => (endpoint.as_str(), false),
            };
            let address = address.split('/').next().unwrap_or_default();
            match micro_core::tls::endpoint(address, tls, None) {
                Ok(endpoint) => Some(endpoint.connect_lazy()),
                Err(err) => {
                    tracing::warn!(cause = %err, "cannot forward services' spans to OTEL_EXPORTER_OTLP_ENDPOINT");
                    None
                }
            }
        })
        .map(|channel| Forward {
            client: opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(
                channel,
            ),
            headers: either("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.trim().to_ascii_lowercase().parse().ok()?, value.trim().parse().ok()?))
                })
                .collect(),
            timeout: either("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
                .and_then(|ms| ms.parse().ok())
                .map_or(FORWARD_TIMEOUT, Duration::from_millis),
        });
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
        Receiver { ring: ring(), forward },
    )
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Reply<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse> {
        // Only accounts may add spans: the ring is every namespace's, and a forward costs the
        // server's collector. Each span says who exported it (docs/observability.md#traces).
        let context = request.extensions().get::<micro_core::Context>().cloned().unwrap_or_default();
        let Some(account) = context.account else {
            return Err(tonic::Status::unauthenticated("exporting spans needs a login"));
        };
        let export = request.into_inner();
        for resource in &export.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| value(kv.value.as_ref()))
                .unwrap_or_default();
            for span in resource.scope_spans.iter().flat_map(|scope| &scope.spans) {
                let mut span = from_otlp(span, &service);
                span.metadata.insert(EXPORTED_BY.into(), bounded(&account.id));
                span.metadata.insert(EXPORTED_IN.into(), context.namespace.clone());
                self.ring.push(span);
            }
        }
        if let Some(forward) = &self.forward {
            let mut request = tonic::Request::new(export);
            request.set_timeout(forward.timeout);
            for (key, value) in &forward.headers {
                request.metadata_mut().insert(key.clone(), value.clone());
            }
            if let Err(status) = forward.client.clone().export(request).await {
                tracing::debug!(cause = %status.message(), "cannot forward services' spans");
                return Err(tonic::Status::unavailable("the collector did not take the spans"));
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// An OTLP attribute value as text.
fn value(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => bounded(text),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// An OTLP id in lowercase hex, at most its first 32 bytes.
fn hex(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(32)])
}

/// The ring's form of a span a service exported.
fn from_otlp(span: &opentelemetry_proto::tonic::trace::v1::Span, service: &str) -> Span {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;
    let mut metadata: HashMap<String, String> = span
        .attributes
        .iter()
        .take(MAX_ATTRIBUTES)
        .map(|kv| (bounded(&kv.key), value(kv.value.as_ref())))
        .collect();
    metadata.insert("service".into(), bounded(service));
    let kind = Kind::try_from(span.kind).unwrap_or(Kind::Unspecified);
    let name = match kind {
        Kind::Server => "server",
        Kind::Client => "client",
        Kind::Producer => "producer",
        Kind::Consumer => "consumer",
        _ => "internal",
    };
    metadata.insert("kind".into(), name.into());
    if let Some(status) = &span.status
        && status.code == 2
    {
        metadata.insert("error".into(), bounded(&status.message));
    }
    Span {
        trace: hex(&span.trace_id),
        id: hex(&span.span_id),
        parent: hex(&span.parent_span_id),
        name: bounded(&span.name),
        started: span.start_time_unix_nano,
        duration: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
        metadata,
        r#type: if matches!(kind, Kind::Server | Kind::Consumer) {
            SpanType::Inbound
        } else {
            SpanType::Outbound
        } as i32,
    }
}

/// Feeds the ring every span this process ends.
#[derive(Debug)]
struct Processor(Arc<Ring>);

impl SpanProcessor for Processor {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.push_own(span);
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// Cuts `text` to [`MAX_VALUE_BYTES`] at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_VALUE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// The parent span id of `span` in hex, empty for a root.
fn parent_of(span: &SpanData) -> String {
    if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        String::new()
    } else {
        span.parent_span_id.to_string()
    }
}

/// The ring's form of a span of this process, recorded by `service`.
fn from_sdk(span: &SpanData, service: &str) -> Span {
    let mut metadata: HashMap<String, String> = span
        .attributes
        .iter()
        .take(MAX_ATTRIBUTES)
        .map(|kv| (bounded(kv.key.as_str()), bounded(&kv.value.to_string())))
        .collect();
    metadata.insert("service".into(), bounded(service));
    let kind = match span.span_kind {
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    };
    metadata.insert("kind".into(), kind.into());
    if let opentelemetry::trace::Status::Error { description } = &span.status {
        metadata.insert("error".into(), bounded(description));
    }
    let parent = parent_of(span);
    let started = nanos(span.start_time);
    Span {
        trace: span.span_context.trace_id().to_string(),
        id: span.span_context.span_id().to_string(),
        parent,
        name: bounded(&span.name),
        started,
        duration: nanos(span.end_time).saturating_sub(started),
        metadata,
        r#type: if matches!(span.span_kind, SpanKind::Server | SpanKind::Consumer) {
            SpanType::Inbound
        } else {
            SpanType::Outbound
        } as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: usize, id: usize, parent: Option<usize>, started: u64) -> Span {
        Span {
            trace: format!("{trace:032x}"),
            id: format!("{id:016x}"),
            parent: parent.map(|parent| format!("{parent:016x}")).unwrap_or_default(),
            name: format!("span {id}"),
            started,
            ..Span::default()
        }
    }

    #[test]
    fn the_ring_keeps_the_last_traces_within_its_bounds() {
        let ring = Ring::default();
        ring.push(span(1, 2, Some(1), 20));
        ring.push(span(1, 1, None, 10));
        ring.push(span(2, 3, Some(99), 30));
        let trace = ring.trace(&format!("{:032x}", 1));
        assert_eq!(trace.iter().map(|s| s.started).collect::<Vec<_>>(), [10, 20], "ordered by start");
        let recent = ring.recent();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].trace, format!("{:032x}", 2), "newest first");
        assert_eq!(recent[1].id, format!("{:016x}", 1), "a trace shows as its root");

        for n in 0..MAX_SPANS_PER_TRACE + 10 {
            ring.push(span(3, 1000 + n, Some(1), n as u64));
        }
        assert_eq!(ring.trace(&format!("{:032x}", 3)).len(), MAX_SPANS_PER_TRACE, "per-trace bound");

        for trace in 10..10 + MAX_TRACES {
            ring.push(span(trace, 1, None, 0));
        }
        assert!(ring.trace(&format!("{:032x}", 1)).is_empty(), "the oldest traces went first");
        assert_eq!(ring.recent().len(), MAX_TRACES);
        let inner = ring.inner.lock().unwrap();
        assert!(inner.spans <= MAX_SPANS);
        assert_eq!(inner.spans, inner.traces.values().map(Vec::len).sum::<usize>());
    }

    #[test]
    fn the_ring_holds_at_most_max_spans() {
        let ring = Ring::default();
        let traces = MAX_SPANS / MAX_SPANS_PER_TRACE + 2;
        for trace in 0..traces {
            for n in 0..MAX_SPANS_PER_TRACE {
                ring.push(span(trace, n, None, 0));
            }
        }
        let inner = ring.inner.lock().unwrap();
        assert!(inner.spans <= MAX_SPANS, "{} spans", inner.spans);
        assert!(!inner.traces.contains_key(&0), "the oldest went");
        assert_eq!(inner.traces[&(traces as u128 - 1)].len(), MAX_SPANS_PER_TRACE);
    }

    #[test]
    fn exported_spans_keep_bounded_attributes() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        let attribute = |n: usize| KeyValue {
            key: format!("key{n}"),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(1000))) }),
            ..KeyValue::default()
        };
        let exported = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            name: "n".repeat(1000),
            kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32,
            start_time_unix_nano: 10,
            end_time_unix_nano: 25,
            attributes: (0..MAX_ATTRIBUTES + 10).map(attribute).collect(),
            ..Default::default()
        };
        let kept = from_otlp(&exported, "tracer");
        assert_eq!((kept.trace.len(), kept.id.len(), kept.parent.as_str()), (32, 16, ""));
        assert_eq!((kept.started, kept.duration), (10, 15));
        assert_eq!(kept.metadata.len(), MAX_ATTRIBUTES + 2, "the first attributes, service and kind");
        assert_eq!((kept.metadata["service"].as_str(), kept.metadata["kind"].as_str()), ("tracer", "server"));
        assert!(kept.name.len() == MAX_VALUE_BYTES && kept.metadata["key0"].len() == MAX_VALUE_BYTES);
    }

    /// This process's spans go in as the SDK ended them and come out as `from_sdk` reads them;
    /// one beyond the form's bounds is converted (and cut) on the way in.
    #[test]
    fn own_spans_are_read_in_the_form_of_the_exported_ones() {
        use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
        let ring = Arc::new(Ring::default());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(Processor(ring.clone()))
            .build();
        let tracer = provider.tracer("test");
        let parent = tracer.start("parent");
        let parent_cx = opentelemetry::Context::new().with_span(parent);
        let mut child = tracer
            .span_builder("store.Store/Read")
            .with_kind(SpanKind::Server)
            .with_attributes([opentelemetry::KeyValue::new("rpc.service", "store.Store")])
            .start_with_context(&tracer, &parent_cx);
        let trace = child.span_context().trace_id().to_string();
        child.end();
        let mut long = tracer.start_with_context("long", &parent_cx);
        long.set_attribute(opentelemetry::KeyValue::new("url.path", "x".repeat(1000)));
        long.end();
        parent_cx.span().end();

        let kinds: Vec<bool> = ring
            .inner
            .lock()
            .unwrap()
            .traces
            .values()
            .flatten()
            .map(|kept| matches!(kept, Kept::Own(_)))
            .collect();
        assert_eq!(kinds, [true, false, true], "the long one was converted as it came");
        let spans = ring.trace(&trace.to_uppercase());
        assert_eq!(spans.len(), 3, "{spans:?}");
        let root = spans.iter().find(|span| span.name == "parent").unwrap();
        let read = spans.iter().find(|span| span.name == "store.Store/Read").unwrap();
        assert_eq!(
            (read.trace.as_str(), read.parent.as_str(), root.parent.as_str()),
            (trace.as_str(), root.id.as_str(), "")
        );
        assert_eq!(read.metadata["rpc.service"], "store.Store");
        assert_eq!((read.metadata["kind"].as_str(), read.metadata["service"].as_str()), ("server", "micro"));
        assert_eq!(read.r#type, SpanType::Inbound as i32);
        let long = spans.iter().find(|span| span.name == "long").unwrap();
        assert_eq!(long.metadata["url.path"].len(), MAX_VALUE_BYTES);
        assert_eq!(ring.recent().iter().map(|span| span.name.as_str()).collect::<Vec<_>>(), ["parent"]);
    }

    #[test]
    fn values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_VALUE_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
