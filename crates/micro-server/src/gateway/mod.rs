//! The HTTP API gateway on :8080 (docs/compatibility.md §4; docs/architecture.md (c)):
//! `/{service}/{method}` → a gRPC call to a node of that service, JSON ↔ protobuf through the
//! descriptors the service registered.
//!
//! One request goes: [`resolve`] the path to a service and endpoint → [`auth`] identifies the
//! caller and checks the namespace's rules → [`call`] finds the service in the registry (in the
//! caller's namespace), the method in its descriptors and the nodes to try, in the node pool's
//! order ([`crate::nodes`]) → [`body`] builds the request message from query and body → a
//! unary call answered as JSON, or a server stream written as one JSON object per line
//! (chunked), or over a websocket ([`ws`]); a node that cannot be reached passes the call on to
//! the next ([`call::Target::call`]). Every failure is an
//! [`ApiError`] ([`errors`]), the original's JSON error with a matching status. Around
//! everything, [`browser`] keeps web pages out: CORS only for configured origins, `Host`
//! checked on loopback binds, security headers (docs/security.md). The same calls are served
//! over gRPC-Web ([`grpc_web`]) and the Connect protocol ([`connect`]) at their gRPC paths
//! `/{package}.{Service}/{Method}`, admitted by the same `Gateway::admit` (docs/clients.md).
//! `GET /openapi.json` and `GET /{service}/openapi.json` answer the OpenAPI document of these
//! paths ([`openapi`]).

pub mod auth;
pub mod body;
pub mod browser;
pub mod call;
pub mod connect;
pub mod errors;
pub mod grpc_web;
pub mod openapi;
pub mod resolve;
pub mod ws;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use micro_auth::Auth;
use micro_registry::Registry;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tracing::{Instrument as _, debug, info_span, warn};

pub use errors::ApiError;

use self::call::{Connector, Resent, Target};
use self::resolve::Route;
use crate::forward::Forwarder;

/// Largest request body accepted by default; bigger ones get a 413.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// How long a unary call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How much longer than the deadline the gateway waits before giving up on a unary call itself.
const TIMEOUT_SLACK: Duration = Duration::from_millis(500);

/// Content types whose bodies are the request message in protobuf encoding.
const PROTO_CONTENT_TYPES: &[&str] =
    &["application/protobuf", "application/x-protobuf", "application/proto", "application/octet-stream"];

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the core services (listed in the registry without nodes) are served: the :8081
    /// listener of this server.
    pub core_address: Option<SocketAddr>,
    /// With `example.com`, requests to `foo.example.com` act in namespace `foo`.
    pub api_domain: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Deadline of unary calls.
    pub timeout: Duration,
    /// Origins whose pages may call with credentials and read the answers (`--cors-origin`).
    pub cors_origins: Vec<String>,
    /// `Some` on a loopback bind: the `Host` names answered; others get 421.
    pub host_check: Option<browser::HostCheck>,
    /// The node pool, shared with the gRPC proxy (one round robin, one view of dead nodes);
    /// by default a pool of the gateway's own.
    pub nodes: crate::nodes::Nodes,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            core_address: None,
            api_domain: None,
            body_limit: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            cors_origins: Vec::new(),
            host_check: None,
            nodes: crate::nodes::Nodes::new(),
        }
    }
}

/// The gateway: shared state of every HTTP request. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    auth: Arc<Auth>,
    forwarder: Forwarder,
    connector: Connector,
    options: Options,
}

impl Gateway {
    pub fn new(registry: Arc<dyn Registry>, auth: Arc<Auth>, options: Options) -> Self {
        let connector = Connector::new(registry, options.core_address, options.nodes.clone());
        let forwarder = Forwarder::new(auth.clone());
        Self { inner: Arc::new(Inner { auth, forwarder, connector, options }) }
    }

    /// How the gateway was set up.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }
}

/// The RPC protocols this port speaks beside its JSON paths, told apart by content type (and
/// Connect's version header), all at gRPC paths `/{package}.{Service}/{Method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// gRPC-Web, binary or text, translated to gRPC by tonic-web ([`grpc_web`]).
    GrpcWeb,
    /// The Connect protocol ([`connect`]).
    Connect(connect::Kind),
}

impl Protocol {
    /// The protocol of `request` and the method its path names; `None` for requests of the
    /// JSON paths (any other path, method or content type).
    ///
    /// The content type decides first, so that a JSON request (the hot path) costs no
    /// allocation here: its route is resolved once, by [`resolve::resolve`].
    fn of(request: &Request) -> Option<(Self, Route)> {
        if request.method() != Method::POST {
            return None;
        }
        let content_type = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
        let content_type = content_type.split(';').next().unwrap_or_default().trim();
        // Media types are case-insensitive; clients send them in lowercase.
        let content_type: std::borrow::Cow<'_, str> = if content_type.bytes().any(|b| b.is_ascii_uppercase())
        {
            content_type.to_ascii_lowercase().into()
        } else {
            content_type.into()
        };
        let protocol = if grpc_web::is_grpc_web(&content_type) {
            Self::GrpcWeb
        } else {
            Self::Connect(connect::Kind::of(&content_type, request.headers())?)
        };
        Some((protocol, resolve::resolve_grpc(request.uri().path())?))
    }

    fn name(self) -> &'static str {
        match self {
            Self::GrpcWeb => "grpc-web",
            Self::Connect(_) => "connect",
        }
    }
}

/// How a request wants its answer.
enum Mode {
    Http,
    WebSocket(WebSocketUpgrade),
}

/// The handler of every path but the fixed routes, each request in a server span of its own
/// (docs/observability.md#traces): under the caller's `traceparent` or a new trace, named
/// `METHOD /service/Handler.Method` (`METHOD` alone for paths that name no service), with the
/// HTTP conventions' attributes. The call the gateway makes is its child: the request's
/// `traceparent` is rewritten to the span, and the metadata sent on copies it.
pub async fn handle(State(gateway): State<Gateway>, mut request: Request) -> Response {
    use micro_core::trace::{self, FutureExt as _};
    let parent = trace::extract(request.headers());
    if !trace::enabled() {
        return dispatch(gateway, request).with_context(parent).await;
    }
    let method = request.method().clone();
    let route =
        resolve::resolve(request.uri().path()).or_else(|| resolve::resolve_grpc(request.uri().path()));
    let name = match &route {
        Some(route) => format!("{method} /{}/{}", route.service, route.endpoint()),
        None => method.to_string(),
    };
    let mut attributes = vec![
        opentelemetry::KeyValue::new("http.request.method", method.to_string()),
        opentelemetry::KeyValue::new("url.path", request.uri().path().to_string()),
    ];
    if let Some(route) = &route {
        attributes.push(opentelemetry::KeyValue::new("micro.service", route.service.clone()));
        attributes.push(opentelemetry::KeyValue::new("micro.endpoint", route.endpoint()));
    }
    let cx = trace::start(name, opentelemetry::trace::SpanKind::Server, attributes, &parent);
    trace::inject(&cx, request.headers_mut());
    let response = dispatch(gateway, request).with_context(cx.clone()).instrument(trace::log_span(&cx)).await;
    let status = response.status();
    let span = opentelemetry::trace::TraceContextExt::span(&cx);
    span.set_attribute(opentelemetry::KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    trace::finish(&cx, status.is_server_error().then(|| status.to_string()));
    response
}

/// Serves one request of any protocol of this port.
async fn dispatch(gateway: Gateway, request: Request) -> Response {
    if let Some(only) = openapi::requested(request.method(), request.uri().path()) {
        let span = info_span!(
            "openapi",
            service = only.as_deref().unwrap_or(""),
            namespace = tracing::field::Empty,
        );
        return async move {
            gateway.openapi(only, request).await.unwrap_or_else(|error| {
                debug!(status = error.status.as_u16(), detail = %error.detail, "document refused");
                error.into_response()
            })
        }
        .instrument(span)
        .await;
    }
    if let Some((protocol, route)) = Protocol::of(&request) {
        let span = info_span!(
            "rpc",
            protocol = protocol.name(),
            service = route.service.as_str(),
            endpoint = route.endpoint(),
            namespace = tracing::field::Empty,
        );
        let served = match protocol {
            Protocol::GrpcWeb => gateway.grpc_web(route, request).instrument(span).await,
            Protocol::Connect(kind) => gateway.connect(kind, route, request).instrument(span).await,
        };
        return served;
    }
    let route = resolve::resolve(request.uri().path());
    let span = info_span!(
        "api",
        method = %request.method(),
        path = %request.uri().path(),
        service = route.as_ref().map_or("", |route| route.service.as_str()),
        endpoint = route.as_ref().map(Route::endpoint).unwrap_or_default(),
        namespace = tracing::field::Empty,
    );
    async move {
        match gateway.serve(route, request).await {
            Ok(response) => response,
            Err(error) => {
                if error.status.is_server_error() {
                    warn!(status = error.status.as_u16(), detail = %error.detail, "request failed");
                } else {
                    debug!(status = error.status.as_u16(), detail = %error.detail, "request refused");
                }
                error.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

impl Gateway {
    /// Serves one request of the JSON paths for `route`; also how a scheduled job's firing
    /// calls, as its account ([`crate::jobs`]).
    pub(crate) async fn serve(&self, route: Option<Route>, request: Request) -> Result<Response, ApiError> {
        let options = &self.inner.options;
        let route = route.ok_or_else(|| ApiError::not_found("the path names no service"))?;
        let (mut parts, body) = request.into_parts();
        let (target, metadata, _) = self.admit(&route, &parts, None).await?;
        let method = target.method.clone();

        let mode = if is_websocket(&parts) {
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
            // A websocket message is a request body: the same limit applies.
            Mode::WebSocket(upgrade.max_message_size(options.body_limit).max_frame_size(options.body_limit))
        } else {
            Mode::Http
        };

        let query = parts.uri.query().unwrap_or("");
        let query_fields = body::query_fields(&method.input(), query)?;

        if let Mode::WebSocket(upgrade) = mode {
            let initial = if query_fields.is_empty() { None } else { Some(query_fields) };
            let session = ws::Session { target, metadata, initial };
            return Ok(upgrade.on_upgrade(move |socket| session.run(socket)));
        }

        if method.is_client_streaming() {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("{} is a client-streaming endpoint: call it over a websocket", route.endpoint()),
            ));
        }

        let bytes = read_body(body, options.body_limit, &parts).await?;
        let content_type = content_type(&parts);
        let proto = PROTO_CONTENT_TYPES.contains(&content_type.as_str()) && !method.is_server_streaming();
        let message = if proto {
            DynamicMessage::decode(method.input(), bytes.as_ref())
                .map_err(|err| ApiError::bad_request(format!("invalid protobuf body: {err}")))?
        } else {
            request_message(&method, query_fields, &bytes, &parts)?
        };
        if method.is_server_streaming() {
            let request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), message);
            return stream(target, request).await;
        }
        let response = self.unary(&target, metadata, message).await?;
        if proto {
            let mut response = Response::new(Body::from(response.encode_to_vec()));
            let value = HeaderValue::from_str(&content_type).expect("one of PROTO_CONTENT_TYPES, all valid");
            response.headers_mut().insert(header::CONTENT_TYPE, value);
            return Ok(response);
        }
        let json =
            body::to_json(&response).map_err(|error| ApiError::unshowable_answer(&target.service, &error))?;
        Ok(json_response(json))
    }
}

impl Gateway {
    /// The admission of one call, the same on every protocol of this port (the JSON paths,
    /// websockets, gRPC-Web, Connect): who calls and in which namespace, whether the
    /// namespace's rules let them reach `route`, where the call goes, and the metadata it
    /// carries (the caller's token for a core service, a forwarded one for a user service).
    /// `grpc_path`: the request named the method by its gRPC path, which must match exactly.
    /// Also answers the namespace the call acts in.
    async fn admit(
        &self,
        route: &Route,
        parts: &Parts,
        grpc_path: Option<&str>,
    ) -> Result<(Target, tonic::metadata::MetadataMap, String), ApiError> {
        let options = &self.inner.options;
        let caller = auth::identify(&self.inner.auth, &parts.headers, options.api_domain.as_deref())?;
        tracing::Span::current().record("namespace", caller.namespace.as_str());
        auth::authorize(&self.inner.auth, &caller, route).await?;
        let target = match grpc_path {
            Some(path) => self.inner.connector.target_exact(&caller.namespace, route, path)?,
            None => self.inner.connector.target(&caller.namespace, route)?,
        };
        // The route names a registered service and a method its descriptors have: the request
        // metrics may count it under them.
        if let Some(slot) = parts.extensions.get::<crate::metrics::Slot>() {
            slot.resolve(&route.service, &route.endpoint());
        }
        let mut metadata = call::metadata(&parts.headers, &parts.method, &caller);
        call::forward_client(&self.inner.auth, &mut metadata, &parts.extensions, &target);
        if !target.core {
            // A user service gets a token scoped to its namespace, never the caller's own.
            metadata.remove("authorization");
            let forwarded =
                caller.token.as_deref().zip(caller.account.as_ref()).and_then(|(token, account)| {
                    self.inner.forwarder.bearer(token, account, &caller.namespace)
                });
            if let Some(value) = forwarded.and_then(|value| value.as_bytes().try_into().ok()) {
                metadata.insert("authorization", value);
            }
        }
        Ok((target, metadata, caller.namespace))
    }

    /// The admission of `GET /metrics` ([`crate::metrics`]; docs/security.md, "Metrics"): the
    /// caller as on every path ([`auth::identify`]), acting in namespace `micro`, for the
    /// resource `service:debug:Debug.Metrics`, by the one decision ([`micro_access::admit`]).
    /// The rules are those of `micro` without its `default` rule (everyone may call everything,
    /// which would publish every namespace's service names), and below them all a grant to
    /// `micro` accounts with scope `admin`: admins read the metrics, other `micro` accounts when
    /// a rule says so, anonymous scrapers when a public rule names the resource. An account of
    /// another namespace is refused (403) before any rule is read.
    pub(crate) async fn admit_metrics(&self, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
        use micro_access::{Access, Resource, Rule};
        let caller = auth::identify(&self.inner.auth, headers, self.inner.options.api_domain.as_deref())?;
        let namespace = micro_core::DEFAULT_NAMESPACE;
        let mut rules: Vec<Rule> = self
            .inner
            .auth
            .rules(namespace)
            .await
            .iter()
            .filter(|rule| rule.id != micro_access::rules::DEFAULT_RULE_ID)
            .cloned()
            .collect();
        let resource =
            Resource::new("service", crate::metrics::RESOURCE_SERVICE, crate::metrics::RESOURCE_ENDPOINT);
        rules.push(Rule {
            id: "metrics-admins".into(),
            scope: micro_core::ADMIN_SCOPE.into(),
            resource: resource.clone(),
            access: Access::Granted,
            priority: i32::MIN,
        });
        micro_access::admit(namespace, caller.account.as_ref(), &rules, &resource).map_err(auth::refused)
    }

    /// A unary call within the gateway's deadline: sent as `grpc-timeout` for the service to
    /// honour, and enforced here as well, with a little slack so that a service's own deadline
    /// error wins when it has one.
    async fn unary(
        &self,
        target: &Target,
        metadata: tonic::metadata::MetadataMap,
        message: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let timeout = self.inner.options.timeout;
        let mut request = tonic::Request::from_parts(metadata, tonic::Extensions::default(), message);
        request.set_timeout(timeout);
        tokio::time::timeout(timeout + TIMEOUT_SLACK, unary(target, request)).await.map_err(|_| ApiError {
            id: target.service.clone(),
            status: StatusCode::REQUEST_TIMEOUT,
            detail: format!("{} did not answer within {:?}", target.service, timeout),
        })?
    }
}

fn is_websocket(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The request's media type, lowercase, without parameters.
fn content_type(parts: &Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads the body, refusing more than `limit` bytes with a 413.
async fn read_body(body: Body, limit: usize, parts: &Parts) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {limit} bytes"))
    };
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let err = err.into_inner();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
        while let Some(error) = source {
            if error.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = error.source();
        }
        ApiError::bad_request(format!("cannot read the request body: {err}"))
    })
}

/// The request message: query fields, with a JSON or form body merged over them.
///
/// A JSON body must say `Content-Type: application/json` (or `+json`), or the answer is 415:
/// a web page can send `text/plain` and forms to any site without asking, so taking those as
/// JSON would let it call endpoints (docs/security.md). Two allowances for terminal tools,
/// which send no `Origin`: `curl -d '{...}'` (a form type with a body that opens an object)
/// and a body with no content type at all are read as JSON.
fn request_message(
    method: &MethodDescriptor,
    mut fields: serde_json::Map<String, serde_json::Value>,
    bytes: &[u8],
    parts: &Parts,
) -> Result<DynamicMessage, ApiError> {
    let input = method.input();
    if !bytes.iter().all(u8::is_ascii_whitespace) && parts.method != Method::GET {
        let content_type = content_type(parts);
        let opens_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let from_browser = parts.headers.contains_key(header::ORIGIN);
        let form = content_type == "application/x-www-form-urlencoded";
        let json = content_type == "application/json"
            || content_type.ends_with("+json")
            || (!from_browser && (content_type.is_empty() || (form && opens_object)));
        let patch = if json {
            body::json_object(bytes)?
        } else if form && !opens_object {
            let form = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("the form body is not UTF-8"))?;
            body::query_fields(&input, form)?
        } else {
            let given = if content_type.is_empty() { "none".to_string() } else { content_type };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "a JSON body needs Content-Type: application/json (this request has {given}); \
                     protobuf bodies use application/protobuf"
                ),
            ));
        };
        body::merge(&input, &mut fields, patch);
    }
    Ok(body::to_message(&input, fields)?)
}

async fn unary(target: &Target, request: tonic::Request<DynamicMessage>) -> Result<DynamicMessage, ApiError> {
    let (metadata, _, message) = request.into_parts();
    // Sent whole to each node tried: only a node that never got it is tried after.
    target
        .call(metadata, Resent::new(message), |mut grpc, request, path, codec| async move {
            grpc.unary(request, path, codec).await
        })
        .await
}

/// A server stream over chunked HTTP: one JSON object per line. A failure before the first
/// message is an ordinary error response; one after it ends the body with the error JSON line.
async fn stream(target: Target, request: tonic::Request<DynamicMessage>) -> Result<Response, ApiError> {
    let (metadata, _, message) = request.into_parts();
    let responses = target
        .call(metadata, Resent::new(message), |mut grpc, request, path, codec| async move {
            grpc.server_streaming(request, path, codec).await
        })
        .await?;
    let service = target.service.clone();
    let lines = responses.scan(false, move |failed, item| {
        if *failed {
            return futures::future::ready(None);
        }
        let line = match item {
            Ok(message) => match body::to_json(&message) {
                Ok(json) => json,
                Err(error) => {
                    *failed = true;
                    ApiError::unshowable_answer(&service, &error).body().into_bytes()
                }
            },
            Err(status) => {
                *failed = true;
                ApiError::from_status(&service, &status).body().into_bytes()
            }
        };
        let mut line = line;
        line.push(b'\n');
        futures::future::ready(Some(Ok::<_, std::convert::Infallible>(Bytes::from(line))))
    });
    Ok(json_response_body(Body::from_stream(lines)))
}

fn json_response(bytes: Vec<u8>) -> Response {
    json_response_body(Body::from(bytes))
}

fn json_response_body(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
