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

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithTonicConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
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

fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer_provider().tracer(SCOPE)
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// The trace context a request's headers (or gRPC metadata, `MetadataMap::as_ref`) carry; an
/// empty context when they carry none or a malformed one.
pub fn extract(headers: &http::HeaderMap) -> Context {
    if !headers.get(TRACEPARENT).and_then(|value| value.to_str().ok()).is_some_and(well_formed) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Writes `cx`'s span into `headers` as `traceparent` (and `tracestate`), replacing any there;
/// nothing when `cx` has no valid span.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
    }
}

/// [`inject`] with the current context: for outgoing calls made while handling one.
pub fn inject_current(headers: &mut http::HeaderMap) {
    inject(&Context::current(), headers);
}

/// Whether a `traceparent` has the W3C shape `version-trace_id-parent_id-flags` with ids of 32
/// and 16 hex digits (the SDK's parser also takes shorter ones, which the standard refuses).
fn well_formed(traceparent: &str) -> bool {
    let mut parts = traceparent.trim().split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex = |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
    hex(version, 2) && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
}

/// [`inject_current`] into a gRPC request's metadata (the framework's calls to the server).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = Context::current();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut headers = http::HeaderMap::new();
    inject(&cx, &mut headers);
    for (name, value) in &headers {
        if let Ok(value) = tonic::metadata::MetadataValue::try_from(value.as_bytes()) {
            let key = if name.as_str() == TRACEPARENT { TRACEPARENT } else { TRACESTATE };
            metadata.insert(key, value);
        }
    }
}

/// The trace context of event or broker metadata (the same keys as the headers).
pub fn extract_map(metadata: &HashMap<String, String>) -> Context {
    if !metadata.get(TRACEPARENT).is_some_and(|value| well_formed(value)) {
        return Context::new();
    }
    TraceContextPropagator::new().extract(metadata)
}

/// Writes the current span into event or broker metadata, unless it already names a trace.
pub fn inject_map(metadata: &mut HashMap<String, String>) {
    let cx = Context::current();
    if cx.span().span_context().is_valid() && !metadata.contains_key(TRACEPARENT) {
        TraceContextPropagator::new().inject_context(&cx, metadata);
    }
}

/// The `tracing` span that puts `cx`'s trace and span ids on every log line written inside it
/// (the JSON log format prints the current span's fields); disabled when `cx` has no span.
pub fn log_span(cx: &Context) -> tracing::Span {
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
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

/// Starts a span of `kind` named `name` under `parent`, and returns the context holding it.
pub fn start(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Context {
    let span = tracer()
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer(), parent);
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
/// log lines, and the request's `traceparent` rewritten to it, so that a call the server passes
/// on (the proxy) is its child. The span ends with the response head: a stream's span covers
/// its opening, and `rpc.grpc.status_code` is that of a trailers-only answer, else OK.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLayer;

impl<S> tower::Layer<S> for ServerLayer {
    type Service = Server<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Server { inner }
    }
}

/// See [`ServerLayer`].
#[derive(Debug, Clone)]
pub struct Server<S> {
    inner: S,
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
        inject(&cx, request.headers_mut());
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
