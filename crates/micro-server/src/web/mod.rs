//! The web dashboard on :8082 (docs/web.md): log in to a namespace, see every registered
//! service with its nodes, versions and endpoints, and call any endpoint through a form
//! generated from its protobuf descriptor.
//!
//! - Pages ([`pages`]) are rendered here, from the registry this server reads (the gateway's);
//!   one small hand-written script and one stylesheet ([`assets`]) are embedded in the binary.
//! - Login ([`session`]) is `Auth.Token`, in process, as `micro login` makes it: the access
//!   token goes into the gateway's `micro-token` cookie, beside a CSRF cookie (double submit);
//!   both `HttpOnly; SameSite=Strict`.
//! - Calls (`POST /api/call/<gateway path>`) are handed to the gateway's own handler
//!   ([`crate::gateway::handle`]) with the session cookie as the credential: the same
//!   admission, rules, node choice and JSON mapping as `curl localhost:8080/...`. A server
//!   stream comes back as one JSON object per line, which the page shows as it arrives.
//! - Forms are built in the browser from `GET /api/describe/{service}/{endpoint}`
//!   ([`describe`]), a JSON description of the request message.
//! - The Runtime, Store, Config, Events, Jobs and Accounts pages ([`runtime`], [`data`], [`admin`])
//!   are frames filled by their scripts through the same `/api/call` path: the core services'
//!   own endpoints, with the gateway's admission for every call; the frame is shown after the
//!   decision for its first read.
//! - A service's `.proto` files are downloaded from its page ([`protos`]), as `micro proto`
//!   writes them.
//! - The browser boundary is the gateway's ([`crate::gateway::browser`]): no CORS grant, the
//!   `Host` check on a loopback bind, the security headers; the pages' CSP allows only this
//!   origin's script and style. Every `/api/` request must carry the CSRF header.

pub mod admin;
pub mod assets;
pub mod data;
pub mod describe;
pub mod pages;
pub mod protos;
pub mod runtime;
pub mod session;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use micro_access::admission;
use micro_auth::{Auth, AuthError, Credentials};
use micro_proto::registry::Service;
use micro_registry::Registry;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use serde::Deserialize;
use serde_json::{Value, json};

use self::pages::{Frame, ServiceView};
use self::session::{CSRF_COOKIE, SESSION_TTL, Session, TOKEN_COOKIE};
use crate::gateway::auth::Caller;
use crate::gateway::call::DescriptorCache;
use crate::gateway::resolve::Route;
use crate::gateway::{ApiError, Gateway, browser};

/// The `Id` of the dashboard's own errors (the gateway's are `go.micro.api`).
pub const WEB_ID: &str = "micro.web";

/// The dashboard pages' CSP: scripts, styles and requests of this origin only, no inline
/// script or style, no framing, forms posting nowhere else.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The largest login body read.
const LOGIN_BODY_LIMIT: usize = 16 * 1024;

/// What the sentence of an expired or missing session says.
const SESSION_EXPIRED: &str = "Your session has expired: log in again.";

/// How the dashboard is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The HTTP gateway's URL, for the `curl` commands the pages offer (`http://127.0.0.1:8080`).
    pub api_url: String,
    /// The gRPC listener's URL, for the `buf curl` commands (`http://127.0.0.1:8081`).
    pub proxy_url: String,
    /// The listener serves TLS: cookies are `Secure`.
    pub secure: bool,
    /// `Some` on a loopback bind: the `Host` names answered; others get 421.
    pub host_check: Option<browser::HostCheck>,
}

/// The dashboard: shared state of every request. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: Gateway,
    registry: Arc<dyn Registry>,
    auth: Arc<Auth>,
    options: Options,
    pools: DescriptorCache<DescriptorPool>,
}

impl Web {
    /// A dashboard calling through `gateway`, listing `registry`, logging in with `auth`.
    pub fn new(gateway: Gateway, registry: Arc<dyn Registry>, auth: Arc<Auth>, options: Options) -> Self {
        Self {
            inner: Arc::new(Inner { gateway, registry, auth, options, pools: DescriptorCache::default() }),
        }
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }
}

/// The dashboard's routes, inside the browser boundary.
pub fn router(web: Web) -> Router {
    let host_check = web.options().host_check.clone();
    let router = Router::new()
        .route("/", get(root))
        .route("/login", get(login_page))
        .route("/services", get(services_page))
        .route("/services/{service}", get(service_page))
        .route("/services/{service}/{endpoint}", get(endpoint_page))
        .merge(runtime::routes())
        .merge(data::routes())
        .merge(admin::routes())
        .merge(protos::routes())
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/describe/{service}/{endpoint}", get(describe_endpoint))
        .route("/api/call/{*path}", post(call))
        .route("/assets/{file}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(|| async { web_error(StatusCode::NOT_FOUND, "no such page") })
        .with_state(web)
        // No origin is granted: every OPTIONS is answered there, with no grant.
        .layer(browser::cors_layer(&[]));
    let router = match host_check {
        Some(check) => {
            router.layer(axum::middleware::from_fn_with_state(Arc::new(check), browser::check_host))
        }
        None => router,
    };
    router
        .layer(axum::middleware::from_fn(browser::security_headers))
        .layer(axum::middleware::from_fn(page_csp))
}

/// Middleware: HTML pages get [`PAGE_CSP`] in place of the gateway's allow-nothing policy,
/// which every other answer keeps.
async fn page_csp(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if html {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    }
    response
}

/// An error of the dashboard itself: the gateway's JSON with [`WEB_ID`].
fn web_refusal(status: StatusCode, detail: impl Into<String>) -> ApiError {
    ApiError { id: WEB_ID.to_string(), status, detail: detail.into() }
}

fn web_error(status: StatusCode, detail: impl Into<String>) -> Response {
    web_refusal(status, detail).into_response()
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let value = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    response.headers_mut().insert(header::LOCATION, value);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    namespace: Option<String>,
    expired: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AssetQuery {
    v: Option<String>,
}

/// Who looks at a page, in which namespace, with which CSRF token.
struct Viewer {
    session: Session,
    namespace: String,
    csrf: String,
    /// Set when the request had no CSRF cookie: the cookie to store it in.
    new_csrf: Option<HeaderValue>,
}

impl Viewer {
    fn frame(&self) -> Frame<'_> {
        Frame { csrf: &self.csrf, account: Some(&self.session.account), namespace: &self.namespace }
    }
}

impl Web {
    /// The request's CSRF token, or a new one with the cookie that stores it.
    fn csrf(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        match session::csrf_cookie(headers) {
            Some(token) => (token, None),
            None => {
                let token = session::new_csrf();
                let cookie = session::set_cookie(CSRF_COOKIE, &token, None, self.inner.options.secure);
                (token, Some(cookie))
            }
        }
    }

    /// An HTML answer, storing a new CSRF cookie when the page made one.
    fn page(
        &self,
        status: StatusCode,
        html: String,
        headers: &HeaderMap,
        csrf: Option<HeaderValue>,
    ) -> Response {
        let mut response = assets::html(status, html, headers);
        if let Some(cookie) = csrf {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }

    /// The viewer of a page in `namespace` (the account's own when `None`), or the answer to
    /// give instead: the login page for a browser without a valid session, a page saying why
    /// for a namespace the account may not act in or whose rules refuse it the registry.
    async fn viewer(
        &self,
        headers: &HeaderMap,
        namespace: Option<String>,
        read: &str,
    ) -> Result<Viewer, Response> {
        self.viewer_of(headers, namespace, registry_route(read)).await
    }

    /// The viewer of a page in `namespace` that shows what `route` answers: as [`Self::viewer`],
    /// with the admission decision the gateway makes for `route` (the pages of the runtime,
    /// the store and config read their data through `/api/call`, which decides again per call).
    async fn viewer_of(
        &self,
        headers: &HeaderMap,
        namespace: Option<String>,
        route: Route,
    ) -> Result<Viewer, Response> {
        let Some(session) = session::session(&self.inner.auth, headers) else {
            let expired = session::csrf_cookie(headers).is_some()
                && crate::gateway::auth::cookie(headers, TOKEN_COOKIE).is_some();
            return Err(redirect(if expired { "/login?expired=1" } else { "/login" }));
        };
        let (csrf, new_csrf) = self.csrf(headers);
        let namespace =
            namespace.filter(|ns| !ns.is_empty()).unwrap_or_else(|| session.account.issuer.clone());
        let viewer = Viewer { session, namespace, csrf, new_csrf };
        if let Err(error) = self.admit_route(&viewer.session, &viewer.namespace, route).await {
            let own = Viewer { namespace: viewer.session.account.issuer.clone(), ..viewer };
            let html = pages::error(
                &own.frame(),
                error.status.canonical_reason().unwrap_or("Refused"),
                &error.detail,
            );
            return Err(self.page(error.status, html, headers, own.new_csrf.clone()));
        }
        Ok(viewer)
    }

    /// A page whose frame its script fills (the Runtime, Data and Accounts pages): `render`'s
    /// HTML for the viewer's frame, shown after the decision for `first_read` as
    /// [`Self::viewer_of`] makes it, or the answer it gives instead.
    async fn frame_page(
        &self,
        headers: &HeaderMap,
        namespace: Option<String>,
        first_read: Route,
        render: impl FnOnce(&Frame<'_>) -> String,
    ) -> Response {
        match self.viewer_of(headers, namespace, first_read).await {
            Ok(viewer) => {
                self.page(StatusCode::OK, render(&viewer.frame()), headers, viewer.new_csrf.clone())
            }
            Err(response) => response,
        }
    }

    /// The admission decision for `session` reading the registry of `namespace` with
    /// `Registry.<read>`: the namespace must be valid and the account's to act in, and the
    /// namespace's rules must let it, as for the same call through the gateway.
    async fn admit(&self, session: &Session, namespace: &str, read: &str) -> Result<(), ApiError> {
        self.admit_route(session, namespace, registry_route(read)).await
    }

    /// The admission decision for `session` calling `route` in `namespace`, as the gateway
    /// makes it for the same call (`crate::gateway::auth::authorize`).
    async fn admit_route(&self, session: &Session, namespace: &str, route: Route) -> Result<(), ApiError> {
        micro_core::validate_namespace(namespace).map_err(|err| ApiError::bad_request(err.to_string()))?;
        admission::check_namespace(namespace, Some(&session.account))
            .map_err(|refusal| ApiError::new(refusal.http_status(), refusal.to_string()))?;
        let caller = Caller {
            namespace: namespace.to_string(),
            account: Some(session.account.clone()),
            token: Some(session.token.clone()),
        };
        crate::gateway::auth::authorize(&self.inner.auth, &caller, &route).await
    }

    fn pool(&self, descriptors: &[u8]) -> Option<DescriptorPool> {
        self.inner.pools.get_or_decode(descriptors, |bytes| DescriptorPool::decode(bytes)).ok()
    }

    /// The endpoints of the registered versions of one service: those of its newest version
    /// that carries descriptors.
    fn endpoints(&self, name: &str, versions: &[Service]) -> BTreeMap<String, MethodDescriptor> {
        versions
            .iter()
            .rev()
            .find(|version| !version.descriptors.is_empty())
            .and_then(|version| Some((version, self.pool(&version.descriptors)?)))
            .map(|(version, pool)| micro_proto::dynamic::endpoints(name, version, &pool))
            .unwrap_or_default()
    }

    /// `versions` (every registered version of service `name`) as the pages show them.
    fn view(&self, name: &str, versions: &[Service]) -> ServiceView {
        let endpoints = self.endpoints(name, versions);
        ServiceView {
            name: name.to_string(),
            core: versions.iter().all(is_core),
            versions: versions
                .iter()
                .map(|service| pages::Version {
                    version: service.version.clone(),
                    metadata: service.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    nodes: service.nodes.clone(),
                })
                .collect(),
            endpoints: endpoints
                .iter()
                .map(|(endpoint, method)| {
                    (endpoint.clone(), method.is_client_streaming(), method.is_server_streaming())
                })
                .collect(),
        }
    }
}

/// `<service>.<handler>/<method>`: what a page reads first, the call its admission is decided for.
fn route(service: &str, handler: &str, method: &str) -> Route {
    Route { service: service.into(), handler: handler.into(), method: method.into() }
}

/// `registry.Registry/<method>`: what the services pages read.
fn registry_route(method: &str) -> Route {
    route("registry", "Registry", method)
}

/// A core service: listed without nodes, served by this server itself.
fn is_core(service: &Service) -> bool {
    service.nodes.is_empty() && service.metadata.get("core").is_some_and(|core| core == "true")
}

async fn root(State(web): State<Web>, headers: HeaderMap) -> Response {
    match session::session(&web.inner.auth, &headers) {
        Some(_) => redirect("/services"),
        None => redirect("/login"),
    }
}

async fn asset(Path(file): Path<String>, Query(query): Query<AssetQuery>, headers: HeaderMap) -> Response {
    let versioned = query.v.as_deref() == Some(assets::version());
    assets::serve(&file, versioned, &headers)
}

async fn login_page(State(web): State<Web>, headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    let (csrf, new_csrf) = web.csrf(&headers);
    let expired = query.expired.is_some() && session::session(&web.inner.auth, &headers).is_none();
    let namespace = query.namespace.unwrap_or_else(|| micro_core::DEFAULT_NAMESPACE.to_string());
    let html = pages::login(&csrf, &namespace, expired.then_some(SESSION_EXPIRED));
    web.page(StatusCode::OK, html, &headers, new_csrf)
}

async fn services_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let viewer = match web.viewer(&headers, query.namespace, "ListServices").await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    // Sorted by name, then version: each name's versions are adjacent.
    let mut grouped: Vec<(String, Vec<Service>)> = Vec::new();
    for service in web.inner.registry.list(&viewer.namespace) {
        match grouped.last_mut() {
            Some((name, versions)) if *name == service.name => versions.push(service),
            _ => grouped.push((service.name.clone(), vec![service])),
        }
    }
    let views: Vec<ServiceView> = grouped.iter().map(|(name, versions)| web.view(name, versions)).collect();
    let html = pages::services(&viewer.frame(), &views);
    web.page(StatusCode::OK, html, &headers, viewer.new_csrf.clone())
}

async fn service_page(
    State(web): State<Web>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let viewer = match web.viewer(&headers, query.namespace, "GetService").await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let versions = web.inner.registry.get(&viewer.namespace, &name);
    if versions.is_empty() {
        let html = pages::error(&viewer.frame(), "Not Found", &format!("service {name} not found"));
        return web.page(StatusCode::NOT_FOUND, html, &headers, viewer.new_csrf.clone());
    }
    // The files `micro proto` would write, offered for download; none when the service
    // registered no usable descriptors.
    let protos: Vec<String> = micro_proto::proto_file::service_protos(&name, &versions)
        .map(|files| files.into_iter().map(|(file, _)| file).collect())
        .unwrap_or_default();
    let html = pages::service(&viewer.frame(), &web.view(&name, &versions), &protos);
    web.page(StatusCode::OK, html, &headers, viewer.new_csrf.clone())
}

async fn endpoint_page(
    State(web): State<Web>,
    Path((name, endpoint)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let viewer = match web.viewer(&headers, query.namespace, "GetService").await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let versions = web.inner.registry.get(&viewer.namespace, &name);
    let endpoints = web.endpoints(&name, &versions);
    let Some(method) = endpoints.get(&endpoint) else {
        let detail = if versions.is_empty() {
            format!("service {name} not found")
        } else {
            format!("endpoint {endpoint} not found on service {name}")
        };
        let html = pages::error(&viewer.frame(), "Not Found", &detail);
        return web.page(StatusCode::NOT_FOUND, html, &headers, viewer.new_csrf.clone());
    };
    let html = pages::endpoint(
        &viewer.frame(),
        &name,
        &endpoint,
        method.is_client_streaming(),
        method.is_server_streaming(),
    );
    web.page(StatusCode::OK, html, &headers, viewer.new_csrf.clone())
}

/// The session of an `/api/` request that proved it comes from our page (the CSRF header);
/// 403 without the proof, 401 without a valid session.
fn api_session(web: &Web, headers: &HeaderMap) -> Result<Session, ApiError> {
    if !session::csrf_checked(headers) {
        return Err(web_refusal(
            StatusCode::FORBIDDEN,
            "the request did not come from the dashboard's page (no valid X-CSRF-Token): reload the page",
        ));
    }
    session::session(&web.inner.auth, headers)
        .ok_or_else(|| web_refusal(StatusCode::UNAUTHORIZED, SESSION_EXPIRED))
}

/// The namespace an `/api/` request acts in: `Micro-Namespace`, else the account's.
fn api_namespace(headers: &HeaderMap, session: &Session) -> Result<String, ApiError> {
    admission::namespace(headers, None, Some(&session.account))
        .map_err(|refusal| ApiError::new(refusal.http_status(), refusal.to_string()))
}

#[derive(Deserialize)]
struct LoginRequest {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    namespace: String,
}

/// `POST /api/login {"username","password","namespace"}`: `Auth.Token` in process, as `micro
/// login` calls it (the failed-login limits count this browser's address); sets the session
/// cookies and a new CSRF token.
async fn login(State(web): State<Web>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if !session::csrf_checked(headers) {
        return web_error(
            StatusCode::FORBIDDEN,
            "the login did not come from the dashboard's page (no valid X-CSRF-Token): reload the page",
        );
    }
    if !is_json(headers) {
        return web_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a login is JSON: Content-Type: application/json",
        );
    }
    let bytes = match axum::body::to_bytes(body, LOGIN_BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return web_error(StatusCode::PAYLOAD_TOO_LARGE, "the login is too large"),
    };
    let login: LoginRequest = match serde_json::from_slice(&bytes) {
        Ok(login) => login,
        Err(err) => return web_error(StatusCode::BAD_REQUEST, format!("invalid login: {err}")),
    };
    let namespace = match login.namespace.trim() {
        "" => micro_core::DEFAULT_NAMESPACE.to_string(),
        namespace => namespace.to_string(),
    };
    if let Err(err) = micro_core::validate_namespace(&namespace) {
        return web_error(StatusCode::BAD_REQUEST, err.to_string());
    }
    if login.username.is_empty() || login.password.is_empty() {
        return web_error(StatusCode::BAD_REQUEST, "a username and a password are required");
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let credentials = Credentials::Secret { id: login.username, secret: login.password };
    let token = match web.inner.auth.token_from(&namespace, credentials, Some(SESSION_TTL), peer).await {
        Ok(token) => token,
        Err(AuthError::InvalidCredentials) => {
            // The sentence `micro login` prints.
            return web_error(
                StatusCode::UNAUTHORIZED,
                format!("Invalid credentials: check the username and password for namespace {namespace}"),
            );
        }
        Err(err) => return ApiError::from_status("auth", &tonic::Status::from(err)).into_response(),
    };
    let account = web.inner.auth.inspect(&token.access_token).ok();
    let secure = web.inner.options.secure;
    let csrf = session::new_csrf();
    let mut response = axum::Json(json!({
        "account": account.as_ref().map(|account| account.id.clone()),
        "namespace": namespace,
        "expiry": token.expiry,
    }))
    .into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        session::set_cookie(TOKEN_COOKIE, &token.access_token, Some(SESSION_TTL), secure),
    );
    cookies.append(header::SET_COOKIE, session::set_cookie(CSRF_COOKIE, &csrf, None, secure));
    cookies.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /api/logout`: clears both cookies (CSRF header required, like every state change).
async fn logout(State(web): State<Web>, headers: HeaderMap) -> Response {
    if !session::csrf_checked(&headers) {
        return web_error(
            StatusCode::FORBIDDEN,
            "the request did not come from the dashboard's page (no valid X-CSRF-Token): reload the page",
        );
    }
    let secure = web.inner.options.secure;
    let mut response = axum::Json(json!({})).into_response();
    let cookies = response.headers_mut();
    cookies.append(header::SET_COOKIE, session::clear_cookie(TOKEN_COOKIE, secure));
    cookies.append(header::SET_COOKIE, session::clear_cookie(CSRF_COOKIE, secure));
    response
}

/// `GET /api/describe/{service}/{endpoint}`: the request description [`describe`] gives, with
/// where the endpoint is reached: its gateway path, the `micro` command, the gateway's and the
/// gRPC listener's URLs.
async fn describe_endpoint(
    State(web): State<Web>,
    Path((name, endpoint)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let session = match api_session(&web, &headers) {
        Ok(session) => session,
        Err(error) => return error.into_response(),
    };
    let namespace = match api_namespace(&headers, &session) {
        Ok(namespace) => namespace,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = web.admit(&session, &namespace, "GetService").await {
        return error.into_response();
    }
    let versions = web.inner.registry.get(&namespace, &name);
    if versions.is_empty() {
        return ApiError::not_found(format!("service {name} not found")).into_response();
    }
    let endpoints = web.endpoints(&name, &versions);
    let Some(method) = endpoints.get(&endpoint) else {
        return ApiError::not_found(format!("endpoint {endpoint} not found on service {name}"))
            .into_response();
    };
    let mut description = describe::describe(method);
    let options = &web.inner.options;
    description.insert("service".into(), json!(name));
    description.insert("endpoint".into(), json!(endpoint));
    description.insert("namespace".into(), json!(namespace));
    description.insert("core".into(), json!(versions.iter().all(is_core)));
    description.insert("path".into(), json!(describe::gateway_path(&name, method)));
    description
        .insert("cli".into(), json!(format!("micro {name} {}", describe::cli_command(&name, &endpoint))));
    description.insert("api_url".into(), json!(options.api_url));
    description.insert("proxy_url".into(), json!(options.proxy_url));
    let mut response = axum::Json(Value::Object(description)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /api/call/<gateway path>`: the gateway's own request path, in process, with the
/// session cookie (and the CSRF header that makes it count) as the credential.
async fn call(State(web): State<Web>, mut request: Request) -> Response {
    if let Err(error) = api_session(&web, request.headers()) {
        return error.into_response();
    }
    let path = request.uri().path().strip_prefix("/api/call").unwrap_or("/").to_string();
    let uri = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    match uri.parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return web_error(StatusCode::BAD_REQUEST, "invalid path"),
    }
    crate::gateway::handle(State(web.inner.gateway.clone()), request).await
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .is_some_and(|value| value == "application/json" || value.ends_with("+json"))
}
