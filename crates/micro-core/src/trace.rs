//! Distributed tracing (docs/observability.md#traces), shared by the server and the framework:
//!
//! - [`init`] sets up the process's OpenTelemetry tracer from the standard `OTEL_*` variables:
//!   OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, the
//!   sampler from `OTEL_TRACES_SAMPLER`/`_ARG` (default: parent-based, always on), the resource
//!   from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; nothing when `OTEL_SDK_DISABLED`
//!   is `true`.
//! - W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers, gRPC metadata
//!   ([`extract`], [`inject`]) and event and broker metadata ([`extract_map`], [`inject_map`]).
//! - [`ServerLayer`]: the server span of every gRPC call a tonic server answers (the server's
//!   :8081 and every framework service), following the OpenTelemetry RPC conventions.
//! - [`client`], [`consumer`]: the spans of outgoing calls and of handled events and messages.
//!
//! When no tracer is set up ([`enabled`] is false) nothing is recorded, but a `traceparent`
//! that came in still goes out on the calls made while handling it: propagation costs one
//! header lookup per call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanProcessor};

pub use opentelemetry::context::FutureExt;

/// The W3C header (and metadata key) that carries a call's trace and parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendor trace state, carried beside [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";
/// The instrumentation scope every span of micro is recorded under.
pub const SCOPE: &str = "micro";
/// How long [`Tracing::shutdown`] waits for the last spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The variable that turns the SDK off (`true`): no spans, no export, only propagation.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// Where spans are exported (OTLP over gRPC, `http://host:4317`).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The traces-only form of [`OTEL_EXPORTER_OTLP_ENDPOINT`], which it beats.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `none` turns the exporter off; `otlp` (the default) is the only other value understood.
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// The service name of the resource; beats the name the program gives [`init`].
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `key=value,…` resource attributes.
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// Calls of paths under this prefix (the OTLP collector services) are not traced.
pub const UNTRACED_PREFIX: &str = "/opentelemetry.proto.collector.";
/// Reading the server's trace ring is not traced either: each `micro trace` would otherwise
/// add a trace of its own and push the ones it looks for out of the ring.
pub const UNTRACED_PATH: &str = "/debug.Debug/Trace";

/// Whether calls of `path` make no span ([`UNTRACED_PREFIX`], [`UNTRACED_PATH`]).
pub fn untraced(path: &str) -> bool {
    path.starts_with(UNTRACED_PREFIX) || path == UNTRACED_PATH
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process records spans (a tracer was set up by [`init`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer set up by [`init`]; [`shutdown`](Tracing::shutdown) exports what is left.
#[derive(Debug, Default)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Whether spans are recorded.
    pub fn is_on(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans not yet sent (within [`SHUTDOWN_TIMEOUT`]) and stops recording.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            ENABLED.store(false, Ordering::Relaxed);
            set_tracer(None);
            if let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::debug!(cause = %err, "tracing shut down with an error");
            }
        }
    }
}

/// What [`init`] sets up beside the OTLP exporter of the environment.
#[derive(Debug, Default)]
pub struct Options {
    /// Record spans even without an exporter (the server's trace ring is a processor here).
    pub always: bool,
    /// Further span processors (the server's trace ring).
    pub processors: Vec<Box<dyn SpanProcessor>>,
    /// The bearer token each export carries, read afresh for each: for an exporter whose
    /// endpoint is the micro server ([`exports_to`]), which takes spans from accounts only.
    pub bearer: Option<Bearer>,
}

/// Where the exporter's current access token comes from (`None`: export without one).
#[derive(Clone)]
pub struct Bearer(pub std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = (self.0)().and_then(|token| format!("Bearer {token}").parse().ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Whether the `OTEL_*` environment exports spans to the server at `address` (`host:port`):
/// its traces endpoint is `http://address` or `https://address`. Only then may an exporter
/// carry the process's micro token ([`Options::bearer`]); a collector of the user's own never
/// sees it.
pub fn exports_to(address: &str) -> bool {
    exports_to_with(address, |name| std::env::var(name).ok())
}

fn exports_to_with(address: &str, var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
    let Some(endpoint) = set(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).or_else(|| set(OTEL_EXPORTER_OTLP_ENDPOINT))
    else {
        return false;
    };
    let rest = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
    rest.is_some_and(|rest| !address.is_empty() && rest.trim_end_matches('/') == address)
}

/// Sets up this process's tracer from the `OTEL_*` environment, as `service` unless
/// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) names it otherwise.
/// Records spans when an exporter is configured or `options.always`; otherwise (and when
/// `OTEL_SDK_DISABLED=true`) returns a [`Tracing`] that records nothing. Call once, inside a
/// tokio runtime (the exporter's connection is spawned on it).
pub fn init(service: &str, options: Options) -> Tracing {
    init_with(service, options, |name| std::env::var(name).ok())
}

fn init_with(service: &str, options: Options, var: impl Fn(&str) -> Option<String>) -> Tracing {
    let set = |name: &str| var(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty());
    if set(OTEL_SDK_DISABLED).is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Tracing::default();
    }
    let export = set(OTEL_TRACES_EXPORTER).is_none_or(|value| !value.eq_ignore_ascii_case("none"))
        && (set(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).is_some() || set(OTEL_EXPORTER_OTLP_ENDPOINT).is_some());
    if !export && !options.always {
        return Tracing::default();
    }
    let named = set(OTEL_SERVICE_NAME).is_some()
        || set(OTEL_RESOURCE_ATTRIBUTES).is_some_and(|attributes| {
            attributes.split(',').any(|pair| pair.trim_start().starts_with("service.name="))
        });
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(service.to_string());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    for processor in options.processors {
        builder = builder.with_span_processor(BoxedProcessor(processor));
    }
    if export {
        // Endpoint, headers, timeout and compression come from the OTEL_EXPORTER_OTLP_* variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        let exporter = match options.bearer {
            Some(bearer) => exporter.with_interceptor(bearer).build(),
            None => exporter.build(),
        };
        match exporter {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(err) => {
                tracing::warn!(cause = %err, "cannot export traces over OTLP; check OTEL_EXPORTER_OTLP_*")
            }
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    set_tracer(Some(provider.tracer(SCOPE)));
    ENABLED.store(true, Ordering::Relaxed);
    Tracing { provider: Some(provider) }
}

/// A boxed processor is a processor (the SDK takes them by type).
#[derive(Debug)]
struct BoxedProcessor(Box<dyn SpanProcessor>);

impl SpanProcessor for BoxedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

/// The tracer of the provider [`init`] set up, kept rather than asked of the global provider on
/// every span (a lock, a box and a scope each time); `None` before `init` and after shutdown.
static TRACER: std::sync::RwLock<Option<opentelemetry_sdk::trace::SdkTracer>> = std::sync::RwLock::new(None);

fn tracer() -> Option<opentelemetry_sdk::trace::SdkTracer> {
    TRACER.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn set_tracer(tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    *TRACER.write().unwrap_or_else(std::sync::PoisonError::into_inner) = tracer;
}

/// The trace context a request's headers (or gRPC metadata, `MetadataMap::as_ref`) carry; an
/// empty context when they carry none or a malformed one.
pub fn extract(headers: &http::HeaderMap) -> Context {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    remote(text(TRACEPARENT), || text(TRACESTATE))
}

/// Writes `cx`'s span into `headers` as `traceparent` (and `tracestate`, or none when it has
/// no trace state), replacing any there; nothing when `cx` has no valid span.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return;
    }
    let traceparent = traceparent(context);
    headers.insert(
        http::HeaderName::from_static(TRACEPARENT),
        http::HeaderValue::from_bytes(&traceparent).expect("a traceparent is ASCII"),
    );
    match http::HeaderValue::from_str(&context.trace_state().header()) {
        Ok(state) if !state.is_empty() => {
            headers.insert(http::HeaderName::from_static(TRACESTATE), state);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
}

/// [`inject`] with the current context: for outgoing calls made while handling one.
pub fn inject_current(headers: &mut http::HeaderMap) {
    inject(&Context::current(), headers);
}

/// The context of the remote span a `traceparent` (and `tracestate`) name, parsed as the W3C
/// Trace Context standard and the OpenTelemetry propagator have it: lowercase hex ids of 32 and
/// 16 digits, not all zeros; version `ff` refused, version `00` with exactly four parts; only
/// the sampled flag kept. An empty context for anything else. (Written out rather than through
/// the SDK's propagator, which formats and splits into allocations on every call.)
fn remote<'a>(traceparent: Option<&'a str>, tracestate: impl FnOnce() -> Option<&'a str>) -> Context {
    match traceparent.and_then(parse_traceparent) {
        Some((trace_id, span_id, flags)) => {
            let state = tracestate().and_then(|state| state.parse().ok()).unwrap_or_default();
            let context = SpanContext::new(trace_id, span_id, flags, true, state);
            Context::new().with_remote_span_context(context)
        }
        None => Context::new(),
    }
}

fn parse_traceparent(traceparent: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let version = lower_hex::<1>(version)?[0];
    if version == 0xff || (version == 0 && parts.next().is_some()) {
        return None;
    }
    let trace_id = TraceId::from_bytes(lower_hex::<16>(trace)?);
    let span_id = SpanId::from_bytes(lower_hex::<8>(parent)?);
    let flags = TraceFlags::new(lower_hex::<1>(flags)?[0]) & TraceFlags::SAMPLED;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some((trace_id, span_id, flags))
}

/// The `N` bytes that `text`, exactly `2 * N` lowercase hex digits, spells.
fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut bytes = [0; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// The `traceparent` of `context`: `00-{trace id}-{span id}-{flags}`, 55 ASCII bytes.
fn traceparent(context: &SpanContext) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = [(context.trace_flags() & TraceFlags::SAMPLED).to_u8()];
    let written = hex::encode_to_slice(context.trace_id().to_bytes(), &mut out[3..35])
        .and_then(|()| hex::encode_to_slice(context.span_id().to_bytes(), &mut out[36..52]))
        .and_then(|()| hex::encode_to_slice(flags, &mut out[53..55]));
    debug_assert!(written.is_ok(), "the slices fit the ids");
    out
}

/// [`inject_current`] into a gRPC request's metadata (the framework's calls to the server).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    inject_current(metadata.as_mut());
}

/// The trace context of event or broker metadata (the same keys as the headers).
pub fn extract_map(metadata: &HashMap<String, String>) -> Context {
    remote(metadata.get(TRACEPARENT).map(String::as_str), || metadata.get(TRACESTATE).map(String::as_str))
}

/// Writes the current span into event or broker metadata, unless it already names a trace.
pub fn inject_map(metadata: &mut HashMap<String, String>) {
    let cx = Context::current();
    let span = cx.span();
    let context = span.span_context();
    if context.is_valid() && !metadata.contains_key(TRACEPARENT) {
        let traceparent = traceparent(context);
        metadata.insert(TRACEPARENT.into(), String::from_utf8_lossy(&traceparent).into_owned());
        let state = context.trace_state().header();
        if !state.is_empty() {
            metadata.insert(TRACESTATE.into(), state);
        }
    }
}

/// The `tracing` span that puts `cx`'s trace and span ids on every log line written inside it
/// (the JSON log format prints the current span's fields); disabled when `cx` has no span, and
/// when this process logs text (`crate::logging::active_format`): ids are for the machines that
/// read JSON lines, and a span per call costs a slab entry and two formatted ids.
pub fn log_span(cx: &Context) -> tracing::Span {
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() || crate::logging::active_format() != crate::logging::Format::Json {
        return tracing::Span::none();
    }
    tracing::info_span!("trace", trace_id = %context.trace_id(), span_id = %context.span_id())
}

/// The RPC attributes of a gRPC `path` (`/store.Store/Read`): span name `store.Store/Read`,
/// `rpc.system=grpc`, `rpc.service`, `rpc.method`.
fn rpc(path: &str) -> (String, Vec<KeyValue>) {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.rsplit_once('/').unwrap_or((name, ""));
    let attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_string()),
        KeyValue::new("rpc.method", method.to_string()),
    ];
    (name.to_string(), attributes)
}

/// Starts a span of `kind` named `name` under `parent`, and returns the context holding it (the
/// parent itself when this process records nothing).
pub fn start(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context {
    let Some(tracer) = tracer() else {
        return parent.clone();
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// A client span for a gRPC call of `path` under the current context, or `None` when this
/// process records nothing (then [`inject_current`] still passes the caller's trace on).
pub fn client(path: &str) -> Option<Context> {
    if !enabled() {
        return None;
    }
    let (name, attributes) = rpc(path);
    Some(start(name, SpanKind::Client, attributes, &Context::current()))
}

/// The consumer span of one event or broker message of `topic` (`system`: `events` or
/// `broker`), the child of the span that published it; the published context itself when this
/// process records nothing.
pub fn consumer(system: &'static str, topic: &str, metadata: &HashMap<String, String>) -> Context {
    let parent = extract_map(metadata);
    if !enabled() {
        return parent;
    }
    let attributes = vec![
        KeyValue::new("messaging.system", format!("micro.{system}")),
        KeyValue::new("messaging.destination.name", topic.to_string()),
        KeyValue::new("messaging.operation.type", "process"),
    ];
    start(format!("process {topic}"), SpanKind::Consumer, attributes, &parent)
}

/// Ends `cx`'s span with the gRPC status `code` (`rpc.grpc.status_code`): an error for the
/// codes the RPC conventions count as errors on its side (`server`: UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS; a client: all but OK).
pub fn finish_rpc(cx: &Context, code: i32, server: bool) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    let error = if server { matches!(code, 2 | 4 | 12 | 13 | 14 | 15) } else { code != 0 };
    if error {
        span.set_status(Status::error(format!("gRPC status {code}")));
    }
    span.end();
}

/// Ends `cx`'s span as failed with `reason`, or OK.
pub fn finish(cx: &Context, failure: Option<String>) {
    let span = cx.span();
    if let Some(reason) = failure {
        span.set_status(Status::error(reason));
    }
    span.end();
}

/// The tower layer that traces every call a tonic server answers: the server span of the call
/// (name `package.Service/Method`, kind server, `rpc.*` attributes, under the caller's
/// `traceparent`, or a new trace), current while the handler runs, its ids on the handler's
/// log lines, and, for a server that passes requests on ([`ServerLayer::forwarding`]: the
/// proxy), the request's `traceparent` rewritten to it, so that the call passed on is its child.
/// (A framework service's handlers call out with the current context instead.) The span ends
/// with the response head: a stream's span covers its opening, and `rpc.grpc.status_code` is
/// that of a trailers-only answer, else OK.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLayer {
    forwards: bool,
}

impl ServerLayer {
    /// For a server that answers its calls itself (a framework service).
    pub fn handling() -> Self {
        Self { forwards: false }
    }

    /// For a server that passes some requests on as they came (the server's :8081, whose
    /// proxy forwards them): their `traceparent` names the server span.
    pub fn forwarding() -> Self {
        Self { forwards: true }
    }
}

impl<S> tower::Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Server { inner, forwards: self.forwards }
    }
}

/// See [`ServerLayer`].
#[derive(Debug, Clone)]
pub struct Server<S> {
    inner: S,
    forwards: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Server<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if untraced(request.uri().path()) {
            // Exporting spans makes none: a trace per export would crowd out the calls.
            return Box::pin(self.inner.call(request));
        }
        let parent = extract(request.headers());
        if !enabled() {
            // Nothing recorded; the caller's trace still reaches the calls made meanwhile.
            if parent.span().span_context().is_valid() {
                return Box::pin(self.inner.call(request).with_context(parent));
            }
            return Box::pin(self.inner.call(request));
        }
        let (name, attributes) = rpc(request.uri().path());
        let cx = start(name, SpanKind::Server, attributes, &parent);
        if self.forwards {
            inject(&cx, request.headers_mut());
        }
        let log = log_span(&cx);
        let answered = self.inner.call(request);
        let finished = cx.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let result = answered.await;
                let code = match &result {
                    Ok(response) => response_code(response),
                    Err(_) => 2,
                };
                finish_rpc(&finished, code, true);
                result
            }
            .with_context(cx),
            log,
        ))
    }
}

/// The gRPC status of a response head: its `grpc-status` when the answer is trailers-only
/// (refusals and handler errors), else OK for HTTP 200 and UNKNOWN for anything else.
pub fn response_code<R>(response: &http::Response<R>) -> i32 {
    if let Some(code) = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok()) {
        return code;
    }
    if response.status() == http::StatusCode::OK { 0 } else { 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_through_headers_and_maps() {
        let mut headers = http::HeaderMap::new();
        headers
            .insert(TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
        let cx = extract(&headers);
        let span = cx.span();
        let context = span.span_context();
        assert!(context.is_valid() && context.is_remote() && context.is_sampled());
        assert_eq!(context.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");

        let mut out = http::HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out.get(TRACEPARENT), headers.get(TRACEPARENT));

        let mut metadata = HashMap::new();
        {
            let _attached = cx.clone().attach();
            inject_map(&mut metadata);
        }
        assert_eq!(metadata[TRACEPARENT], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(extract_map(&metadata).span().span_context().span_id(), context.span_id());

        for bad in
            ["", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7-b7ad-01"]
        {
            let mut headers = http::HeaderMap::new();
            headers.insert(TRACEPARENT, bad.parse().unwrap());
            assert!(!extract(&headers).span().span_context().is_valid(), "{bad:?} is no parent");
        }
        let mut untouched = http::HeaderMap::new();
        inject(&Context::new(), &mut untouched);
        assert!(untouched.is_empty(), "no span, no header");
    }

    /// The hand-written parser and formatter agree with the SDK's propagator, but for the
    /// short fields the SDK lets through and the standard refuses.
    #[test]
    fn traceparent_parses_and_prints_as_the_sdk_propagator_does() {
        use opentelemetry::propagation::TextMapPropagator as _;
        let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let id = "0af7651916cd43dd8448eb211c80319c";
        let inputs = [
            format!("00-{id}-b7ad6b7169203331-01"),
            format!("00-{id}-b7ad6b7169203331-00"),
            format!("00-{id}-b7ad6b7169203331-03"),
            format!(" 00-{id}-b7ad6b7169203331-01 "),
            format!("01-{id}-b7ad6b7169203331-01-future"),
            format!("00-{id}-b7ad6b7169203331-01-extra"),
            format!("ff-{id}-b7ad6b7169203331-01"),
            format!("00-{}-b7ad6b7169203331-01", id.to_uppercase()),
            format!("00-{id}-B7AD6B7169203331-01"),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{id}-b7ad6b7169203331-0g"),
            "00-00000000000000000000000000000000-b7ad6b7169203331-01".into(),
            String::new(),
        ];
        let short = [
            format!("00-{id}-b7ad6b716920333-01"),
            format!("00-{id}-b7ad6b7169203331-1"),
            format!("0-{id}-b7ad6b7169203331-01"),
        ];
        for input in &short {
            let metadata = HashMap::from([(TRACEPARENT.to_string(), input.clone())]);
            assert!(propagator.extract(&metadata).span().span_context().is_valid(), "{input:?}");
            assert!(!extract_map(&metadata).span().span_context().is_valid(), "{input:?}");
        }
        for input in &inputs {
            for state in [None, Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"), Some("not a state")] {
                let mut metadata = HashMap::from([(TRACEPARENT.to_string(), input.clone())]);
                if let Some(state) = state {
                    metadata.insert(TRACESTATE.into(), state.into());
                }
                let ours = extract_map(&metadata);
                let theirs = propagator.extract(&metadata);
                assert_eq!(ours.span().span_context(), theirs.span().span_context(), "{input:?} {state:?}");

                let mut printed = HashMap::new();
                {
                    let _attached = ours.clone().attach();
                    inject_map(&mut printed);
                }
                let mut expected = HashMap::new();
                propagator.inject_context(&theirs, &mut expected);
                expected.retain(|_, value: &mut String| !value.is_empty());
                assert_eq!(printed, expected, "{input:?} {state:?}");
            }
        }
    }

    #[test]
    fn rpc_attributes_follow_the_conventions() {
        let (name, attributes) = rpc("/store.Store/Read");
        assert_eq!(name, "store.Store/Read");
        let value =
            |key: &str| attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string());
        assert_eq!(value("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(value("rpc.service").as_deref(), Some("store.Store"));
        assert_eq!(value("rpc.method").as_deref(), Some("Read"));
    }

    #[test]
    fn the_environment_decides_what_is_recorded() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
        };
        assert!(!init_with("svc", Options::default(), env(&[])).is_on(), "no exporter, not asked");
        assert!(
            !init_with(
                "svc",
                Options { always: true, ..Options::default() },
                env(&[(OTEL_SDK_DISABLED, "true")])
            )
            .is_on(),
            "OTEL_SDK_DISABLED wins"
        );
        assert!(
            !init_with(
                "svc",
                Options::default(),
                env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:1"), (OTEL_TRACES_EXPORTER, "none")])
            )
            .is_on(),
            "OTEL_TRACES_EXPORTER=none turns the exporter off"
        );
    }

    #[test]
    fn the_token_goes_only_to_the_server_it_belongs_to() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
        };
        let server = "127.0.0.1:8081";
        assert!(exports_to_with(server, env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:8081")])));
        assert!(exports_to_with(server, env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, " https://127.0.0.1:8081/ ")])));
        assert!(!exports_to_with(server, env(&[])), "no exporter");
        assert!(!exports_to_with(server, env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4317")])));
        assert!(!exports_to_with(server, env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:80811")])));
        assert!(
            !exports_to_with(server, env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "127.0.0.1:8081")])),
            "no scheme"
        );
        assert!(
            !exports_to_with(
                server,
                env(&[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://127.0.0.1:8081"),
                    (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://collector:4317")
                ])
            ),
            "the traces endpoint beats the general one"
        );
        assert!(!exports_to_with("", env(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://")])));
    }
}
