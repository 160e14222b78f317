//! Distributed tracing end to end (docs/observability.md#traces): a server and a service written
//! with the framework export their spans over OTLP to a collector built here from the official
//! OTLP protos; one HTTP call through the gateway is one trace across gateway, service, store
//! and the consumer of the event it published; `micro trace` shows it from the server's ring.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, http_request, poll};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Seen {
    /// The `service.name` of the resource that exported it.
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: SpanKind,
    attributes: HashMap<String, String>,
}

/// An OTLP/gRPC trace collector on an ephemeral port, keeping every span it is sent.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Receiver(Arc<Mutex<Vec<Seen>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                spans.push(Seen {
                    service: service.clone(),
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                        .collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Receiver(spans.clone());
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self { endpoint, spans, _runtime: runtime }
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }
}

/// The environment that makes a process export to `collector`, quickly.
fn otel_env(collector: &Collector) -> [(&'static str, &str); 2] {
    [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "50")]
}

/// The environment variable that makes [`tracer_process`] serve instead of returning.
const TRACER_PROCESS: &str = "TRACES_TRACER_PROCESS";
/// The events topic the tracer publishes to and consumes.
const TOPIC: &str = "traced";
/// The broker topic the tracer publishes to and subscribes to.
const BROKER_TOPIC: &str = "pinged";

/// A service written with the framework, as tenants write theirs: `debug.Debug/Health` writes
/// to the store, publishes an event on [`TOPIC`] and a broker message on [`BROKER_TOPIC`]; each
/// event of it is written to the store, each message is dropped.
#[derive(Clone, Default)]
struct Tracer;

#[tonic::async_trait]
impl micro_proto::debug::debug_server::Debug for Tracer {
    async fn log(
        &self,
        _: tonic::Request<micro_proto::debug::LogRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::LogResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn health(
        &self,
        _: tonic::Request<micro_proto::debug::HealthRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::HealthResponse>, tonic::Status> {
        let fail = |err: micro::Error| tonic::Status::internal(err.to_string());
        micro::store::Store::table("traces").write("visit", b"1".to_vec()).await.map_err(fail)?;
        micro::events::publish(TOPIC, "visited").await.map_err(fail)?;
        micro::broker::publish(BROKER_TOPIC, "pinged").await.map_err(fail)?;
        Ok(tonic::Response::new(micro_proto::debug::HealthResponse { status: "ok".into() }))
    }
    async fn stats(
        &self,
        _: tonic::Request<micro_proto::debug::StatsRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::StatsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn trace(
        &self,
        _: tonic::Request<micro_proto::debug::TraceRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::TraceResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Not a test of its own: the process of the `tracer` service, this test binary run again
/// for this one function (the framework's connection to the platform is process-wide).
#[test]
#[ignore = "run by the tracing test as a framework service's process (TRACES_TRACER_PROCESS set)"]
fn tracer_process() {
    if std::env::var_os(TRACER_PROCESS).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = common::DebugService::new(Tracer);
    let options = micro::events::ConsumeOptions::default().start(micro::events::Start::Sequence(1));
    let service = micro::Service::new("tracer")
        .handle(server)
        .consume(TOPIC, options, |_event| async {
            micro::store::Store::table("traces").write("consumed", b"1".to_vec()).await
        })
        .subscribe(BROKER_TOPIC, |_message| async {});
    runtime.block_on(service.run()).expect("the tracer serves");
}

/// The span of `spans` named `name` exported by `service`.
fn find<'a>(spans: &'a [Seen], service: &str, name: &str) -> Option<&'a Seen> {
    spans.iter().find(|span| span.service == service && span.name == name)
}

#[test]
fn a_gateway_call_is_one_trace_through_service_store_and_events() {
    let collector = Collector::start();
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(home.path(), &[], &otel_env(&collector));
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    let mut program = std::process::Command::new(std::env::current_exe().unwrap());
    program.args(["tracer_process", "--exact", "--ignored", "--nocapture"]).env(TRACER_PROCESS, "1");
    // As the runtime starts services: exporting to the server, which keeps their spans in its
    // ring and passes them on to its own collector.
    let at_server = format!("http://{}", server.grpc);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", at_server.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("MICRO_SERVICE_NAME", "tracer"),
    ];
    let tracer = common::Service::start_program(program, &server, &env);
    // Both come after registering, in either order.
    for needle in ["Consuming", "Subscribed"] {
        if !tracer.log().contains(needle) {
            tracer.wait_for(needle);
        }
    }

    // The caller's trace is accepted: every span joins it, the gateway's under the caller's.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{caller}-01");
    let (status, body) =
        http_request(&server.http, "GET", "/tracer/Debug/Health", &[("traceparent", &traceparent)], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ok"), "{body}");

    let complete = |spans: &[Seen]| {
        spans.iter().filter(|span| span.trace == trace && span.name == "store.Store/Write").count() == 2
            && find(spans, "tracer", &format!("process {TOPIC}")).is_some()
            && find(spans, "tracer", &format!("process {BROKER_TOPIC}")).is_some()
            && find(spans, "tracer", "debug.Debug/Health").is_some()
            // The gateway's span ends last (with its response body) and is batched on its own.
            && find(spans, "micro", "GET /tracer/Debug.Health").is_some()
            && spans.iter().any(|span| span.trace == trace && span.name == "events.Stream/Publish")
    };
    let spans_arrived =
        poll(Duration::from_secs(30), Duration::from_millis(50), || complete(&collector.spans()));
    let spans = collector.spans();
    assert!(spans_arrived, "the spans of the call never all arrived: {spans:#?}");

    let gateway = find(&spans, "micro", "GET /tracer/Debug.Health").expect("the gateway's span");
    assert_eq!((gateway.trace.as_str(), gateway.parent.as_str()), (trace, caller));
    assert_eq!(gateway.kind, SpanKind::Server);
    assert_eq!(gateway.attributes["http.response.status_code"], "200");

    let service = find(&spans, "tracer", "debug.Debug/Health").unwrap();
    assert_eq!((service.trace.as_str(), service.parent.as_str()), (trace, gateway.id.as_str()));
    assert_eq!(service.kind, SpanKind::Server);
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "debug.Debug"),
        ("rpc.method", "Health"),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert_eq!(service.attributes.get(key).map(String::as_str), Some(value), "{key} of {service:?}");
    }

    let under = |parent: &Seen, name: &str| {
        spans
            .iter()
            .find(|span| span.service == "micro" && span.name == name && span.parent == parent.id)
            .unwrap_or_else(|| panic!("no {name} span under {parent:?}: {spans:#?}"))
    };
    let store = under(service, "store.Store/Write");
    assert_eq!((store.trace.as_str(), store.kind), (trace, SpanKind::Server));
    let publish = under(service, "events.Stream/Publish");
    assert_eq!(publish.trace, trace);

    // The event carried the trace to its consumer, whose store write is its child.
    let consumer = find(&spans, "tracer", &format!("process {TOPIC}")).unwrap();
    assert_eq!((consumer.trace.as_str(), consumer.parent.as_str()), (trace, service.id.as_str()));
    assert_eq!(consumer.kind, SpanKind::Consumer);
    assert_eq!(consumer.attributes["messaging.destination.name"], TOPIC);
    under(consumer, "store.Store/Write");
    // And so did the broker message to its subscriber.
    let subscriber = find(&spans, "tracer", &format!("process {BROKER_TOPIC}")).unwrap();
    assert_eq!((subscriber.trace.as_str(), subscriber.parent.as_str()), (trace, service.id.as_str()));
    assert_eq!(subscriber.attributes["messaging.system"], "micro.broker");

    // `micro trace` shows the same trace from the server's ring: listed, and as a tree.
    let listed = server.ok(&["trace"]);
    let line = listed.lines().find(|line| line.starts_with(trace)).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.ends_with("GET /tracer/Debug.Health"), "{listed}");
    let tree = server.ok(&["trace", trace]);
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].starts_with("GET /tracer/Debug.Health "), "the gateway's span is the root:\n{tree}");
    assert!(lines[1].starts_with("└─ debug.Debug/Health ") && lines[1].contains(" tracer "), "{tree}");
    let depth = |name: &str| {
        let line = lines.iter().find(|line| line.contains(name)).unwrap_or_else(|| panic!("{name}:\n{tree}"));
        line_depth(line, line.find(name).unwrap())
    };
    assert_eq!(depth("events.Stream/Publish"), 2, "{tree}");
    assert_eq!(depth(&format!("process {TOPIC}")), 2, "{tree}");
    let writes: Vec<usize> =
        lines.iter().filter_map(|line| Some(line_depth(line, line.find("store.Store/Write")?))).collect();
    assert_eq!(writes, [2, 3], "the handler's write, then the consumer's:\n{tree}");

    // The service's export carried its token (the server takes spans from accounts only), and
    // the ring says whose they are.
    let json = server.ok(&["trace", trace, "--output", "json"]);
    let ring = common::json(&json);
    let exported = ring
        .as_array()
        .unwrap()
        .iter()
        .find(|span| span["metadata"]["service"] == "tracer")
        .unwrap_or_else(|| panic!("none of the tracer's spans: {json}"));
    assert!(exported["metadata"]["micro.exported_by"].as_str().is_some_and(|id| !id.is_empty()), "{json}");
    assert_eq!(exported["metadata"]["micro.namespace"], "micro", "{json}");

    // Without a traceparent the gateway starts a trace of its own.
    let (status, _) = http_request(&server.http, "GET", "/tracer/Debug/Health", &[], b"");
    assert_eq!(status, 200);
    let roots =
        || server.ok(&["trace"]).lines().filter(|line| line.ends_with("GET /tracer/Debug.Health")).count();
    assert!(
        poll(Duration::from_secs(10), Duration::from_millis(50), || roots() == 2),
        "{}",
        server.ok(&["trace"])
    );

    // Reading the ring adds nothing to it: none of the `micro trace` calls above is listed.
    let listed = server.ok(&["trace"]);
    assert!(!listed.contains("debug.Debug/Trace"), "{listed}");

    let missing = server.micro(&["trace", "0123456789abcdef0123456789abcdef"]);
    assert!(!missing.status.success());
    assert!(common::stderr(&missing).contains("not found"), "{}", common::stderr(&missing));
    server.ok(&["logout"]);
    let anonymous = server.micro(&["trace"]);
    assert!(!anonymous.status.success(), "only administrators read the ring");
}

/// The depth of a tree line's span whose name starts at byte `at`: 3 columns a level.
fn line_depth(line: &str, at: usize) -> usize {
    line[..at].chars().count() / 3
}

/// One span of trace `trace` that claims to be the platform's `service`.
fn export_of(service: &str, trace: &str) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    };
    let attribute = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: bytes(trace),
                    span_id: bytes("00f067aa0ba902b7"),
                    name: "auth.Auth/Token".into(),
                    kind: SpanKind::Server as i32,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_001_000_000,
                    // What a span says of itself does not decide whose it is.
                    attributes: vec![
                        attribute("micro.exported_by", "admin"),
                        attribute("micro.namespace", "micro"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The attack: anyone who reaches :8081 exports spans to fill the server's ring (which every
/// administrator reads) and have them forwarded to the platform's collector. The receiver takes
/// spans from accounts only, and each span it keeps names the account and namespace that sent
/// it, whatever the span says of itself.
#[test]
fn only_accounts_export_spans_and_each_says_whose_it_is() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = format!("http://{}", server.grpc);
    let token = |id: &str, secret: &str, namespace: &str| {
        runtime.block_on(async {
            let mut auth =
                micro_proto::auth::auth_client::AuthClient::connect(address.clone()).await.unwrap();
            let mut request = tonic::Request::new(micro_proto::auth::TokenRequest {
                id: id.into(),
                secret: secret.into(),
                ..Default::default()
            });
            request.metadata_mut().insert("micro-namespace", namespace.parse().unwrap());
            auth.token(request).await.unwrap().into_inner().token.unwrap().access_token
        })
    };
    let export = |token: Option<&str>, trace: &str| {
        runtime.block_on(async {
            let mut client =
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
                    address.clone(),
                )
                .await
                .unwrap();
            let mut request = tonic::Request::new(export_of("auth", trace));
            if let Some(token) = token {
                request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            }
            client.export(request).await.map(|_| ())
        })
    };

    let anonymous = "5ce0e9a56015fec5aadfa328ae398115";
    let refused = export(None, anonymous).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("needs a login"), "{refused:?}");
    let missing = server.micro(&["trace", anonymous]);
    assert!(common::stderr(&missing).contains("not found"), "kept nothing: {}", common::stdout(&missing));

    let tenant = "6ce0e9a56015fec5aadfa328ae398116";
    let bob = token("bob", "s3cret", "foo");
    export(Some(&bob), tenant).expect("an account's spans are taken");
    let json = server.ok(&["trace", tenant, "--output", "json"]);
    let spans = common::json(&json);
    let span = &spans[0];
    assert_eq!(span["name"], "auth.Auth/Token", "{json}");
    assert_eq!(span["metadata"]["service"], "auth", "{json}");
    assert_eq!(span["metadata"]["micro.exported_by"], "bob", "the account that sent it: {json}");
    assert_eq!(span["metadata"]["micro.namespace"], "foo", "{json}");
}
