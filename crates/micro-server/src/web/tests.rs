//! The dashboard in process: its cookies, the CSRF proof on every `/api/` request, the login
//! (the CLI's sentence on a wrong password), pages per namespace, assets, and the description
//! of a message with every kind of field.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use micro_auth::{Auth, AuthOptions, NewAccount};
use micro_proto::registry::{Node, Service};
use micro_registry::MemoryRegistry;
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::session::CSRF_HEADER;
use super::*;

const HOST: &str = "127.0.0.1:8082";

struct Harness {
    router: Router,
    auth: Arc<Auth>,
    registry: Arc<MemoryRegistry>,
    _dir: tempfile::TempDir,
}

/// A dashboard over a registry with the core services, `helloworld`-like `greeter` in `micro`
/// and `private` in `foo`; accounts `admin`/`micro` of `micro` and `bob`/`s3cret` of `foo`.
async fn harness() -> Harness {
    let registry = Arc::new(MemoryRegistry::new(crate::registry::builtins()));
    let node = |id: &str| Node { id: id.into(), address: "127.0.0.1:1".into(), ..Default::default() };
    let greeter = Service {
        name: "greeter".into(),
        version: "latest".into(),
        metadata: [("team".to_string(), "<core>".to_string())].into(),
        nodes: vec![node("greeter-1")],
        descriptors: kinds_pool().encode_to_vec(),
        ..Default::default()
    };
    registry.register("micro", greeter, Duration::from_secs(60)).unwrap();
    let private = Service {
        name: "private".into(),
        version: "v1".into(),
        nodes: vec![node("private-1")],
        descriptors: kinds_pool().encode_to_vec(),
        ..Default::default()
    };
    registry.register("foo", private, Duration::from_secs(60)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(micro_store::memory::MemoryStore::new());
    let options =
        AuthOptions { disable_admin: false, admin_password: Some("micro".into()), loopback_only: true };
    let auth = Arc::new(Auth::open(store, dir.path(), options).await.unwrap());
    let bob = NewAccount { id: "bob".into(), secret: "s3cret".into(), ..Default::default() };
    auth.generate("foo", bob).await.unwrap();
    let gateway = Gateway::new(registry.clone(), auth.clone(), crate::gateway::Options::default());
    let options = Options {
        api_url: "http://127.0.0.1:8080".into(),
        proxy_url: "http://127.0.0.1:8081".into(),
        secure: false,
        host_check: Some(browser::HostCheck::new(Some("127.0.0.1".parse().unwrap()), None, Vec::new())),
    };
    let router = router(Web::new(gateway, registry.clone(), auth.clone(), options));
    Harness { router, auth, registry, _dir: dir }
}

/// A browser's cookie jar, reduced to what these tests need.
#[derive(Default, Clone)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, response: &Response) {
        for value in response.headers().get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.0.retain(|(kept, _)| kept != name);
            if !attributes.contains("Max-Age=0") {
                self.0.push((name.to_string(), value.to_string()));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(kept, _)| kept == name).map(|(_, value)| value.as_str())
    }

    fn header(&self) -> String {
        self.0.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Response {
        self.router.clone().oneshot(request).await.unwrap()
    }

    fn request(method: Method, uri: &str, jar: &Jar) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri(uri).header(header::HOST, HOST);
        if jar.0.is_empty() { builder } else { builder.header(header::COOKIE, jar.header()) }
    }

    /// Opens the login page (which gives the CSRF cookie) and logs in; returns the jar and the
    /// login's answer.
    async fn login(&self, user: &str, password: &str, namespace: &str) -> (Jar, Response) {
        let mut jar = Jar::default();
        let page = self.send(Self::request(Method::GET, "/login", &jar).body(Body::empty()).unwrap()).await;
        assert_eq!(page.status(), StatusCode::OK);
        jar.take(&page);
        let csrf = jar.get(CSRF_COOKIE).expect("the login page sets the CSRF cookie").to_string();
        let body = json!({"username": user, "password": password, "namespace": namespace}).to_string();
        let response = self
            .send(
                Self::request(Method::POST, "/api/login", &jar)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(CSRF_HEADER, &csrf)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        jar.take(&response);
        (jar, response)
    }

    /// `POST uri` as JSON with `jar`'s cookies, carrying `csrf` as the CSRF header and acting
    /// in `namespace` when they are given.
    async fn post_json(
        &self,
        uri: &str,
        jar: &Jar,
        csrf: Option<&str>,
        namespace: Option<&str>,
        body: &str,
    ) -> Response {
        let mut builder =
            Self::request(Method::POST, uri, jar).header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            builder = builder.header(CSRF_HEADER, csrf);
        }
        if let Some(namespace) = namespace {
            builder = builder.header("Micro-Namespace", namespace);
        }
        self.send(builder.body(Body::from(body.to_string())).unwrap()).await
    }

    /// Each of `calls` (path, body) is refused by the dashboard itself (403, [`WEB_ID`]) without
    /// the CSRF header, with a guessed one and with `jar`'s token cut short.
    async fn assert_refused_without_proof(&self, jar: &Jar, namespace: Option<&str>, calls: &[(&str, &str)]) {
        let csrf = jar.get(CSRF_COOKIE).unwrap().to_string();
        for (path, body) in calls {
            for forged in [None, Some("guess"), Some(&csrf[..csrf.len() - 1])] {
                let response = self.post_json(path, jar, forged, namespace, body).await;
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} with {forged:?}");
                let error = json_body(response).await;
                assert_eq!(error["Id"], WEB_ID, "refused by the dashboard before the gateway: {error}");
            }
        }
    }

    async fn page(&self, uri: &str, jar: &Jar) -> (StatusCode, String, Response) {
        let response = self.send(Self::request(Method::GET, uri, jar).body(Body::empty()).unwrap()).await;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned(), Response::from_parts(parts, Body::empty()))
    }
}

async fn json_body(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
}

#[test]
fn cookies_are_http_only_strict_and_scoped_to_the_site() {
    let cookie = session::set_cookie(TOKEN_COOKIE, "tok", Some(SESSION_TTL), false);
    assert_eq!(cookie, "micro-token=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600");
    let secure = session::set_cookie(CSRF_COOKIE, "abc", None, true);
    assert_eq!(secure, "micro-csrf=abc; Path=/; HttpOnly; SameSite=Strict; Secure");
    let cleared = session::clear_cookie(TOKEN_COOKIE, false);
    assert_eq!(cleared, "micro-token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let (a, b) = (session::new_csrf(), session::new_csrf());
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
}

#[tokio::test]
async fn login_sets_the_session_cookies_and_logout_clears_them() {
    let harness = harness().await;
    let (jar, response) = harness.login("admin", "micro", "micro").await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for cookie in &cookies {
        assert!(cookie.contains("; Path=/; HttpOnly; SameSite=Strict"), "{cookie}");
    }
    assert!(cookies[0].starts_with("micro-token=ey") && cookies[0].ends_with("Max-Age=3600"), "{cookies:?}");
    let body = json_body(response).await;
    assert_eq!((body["account"].as_str(), body["namespace"].as_str()), (Some("admin"), Some("micro")));

    // The CSRF token was replaced at login: the old one proves nothing any more.
    let csrf = jar.get(CSRF_COOKIE).unwrap().to_string();
    let (status, html, _) = harness.page("/services", &jar).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!(r#"<meta name="csrf-token" content="{csrf}">"#)), "{html}");

    let logout = |csrf: Option<&str>| {
        let builder = Harness::request(Method::POST, "/api/logout", &jar);
        let builder = match csrf {
            Some(csrf) => builder.header(CSRF_HEADER, csrf),
            None => builder,
        };
        builder.body(Body::empty()).unwrap()
    };
    for forged in [None, Some("wrong")] {
        let response = harness.send(logout(forged)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{forged:?}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }
    let response = harness.send(logout(Some(&csrf))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut after = jar.clone();
    after.take(&response);
    assert!(after.0.is_empty(), "both cookies are cleared: {:?}", after.0);
    let (status, _, response) = harness.page("/services", &after).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/login");
}

#[tokio::test]
async fn every_api_post_needs_the_csrf_header() {
    let harness = harness().await;
    let (jar, _) = harness.login("admin", "micro", "micro").await;
    let csrf = jar.get(CSRF_COOKIE).unwrap().to_string();
    for (uri, body) in [
        ("/api/login", r#"{"username":"admin","password":"micro"}"#),
        ("/api/logout", ""),
        ("/api/call/greeter/Kinds/Do", "{}"),
    ] {
        for forged in [None, Some("not-the-cookie")] {
            let response = harness.post_json(uri, &jar, forged, None, body).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri} with {forged:?}");
            assert!(response.headers().get(header::SET_COOKIE).is_none(), "{uri}");
            let error = json_body(response).await;
            assert!(error["Detail"].as_str().unwrap().contains("X-CSRF-Token"), "{error}");
        }
    }
    // A page of another origin cannot send the header: its preflight gets no grant.
    let preflight = Harness::request(Method::OPTIONS, "/api/call/greeter/Kinds/Do", &jar)
        .header(header::ORIGIN, "http://127.0.0.1:9999")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-csrf-token,content-type")
        .body(Body::empty())
        .unwrap();
    let response = harness.send(preflight).await;
    assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert!(response.headers().get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    // The describe API, a read, wants the proof too (it is only ever fetched by our page).
    let describe =
        Harness::request(Method::GET, "/api/describe/greeter/Kinds.Do", &jar).body(Body::empty()).unwrap();
    assert_eq!(harness.send(describe).await.status(), StatusCode::FORBIDDEN);
    let describe = Harness::request(Method::GET, "/api/describe/greeter/Kinds.Do", &jar)
        .header(CSRF_HEADER, &csrf)
        .body(Body::empty())
        .unwrap();
    assert_eq!(harness.send(describe).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_password_gets_the_sentence_of_micro_login() {
    let harness = harness().await;
    let (jar, response) = harness.login("admin", "wrong", "micro").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(jar.get(TOKEN_COOKIE).is_none());
    let error = json_body(response).await;
    assert_eq!(error["Detail"], "Invalid credentials: check the username and password for namespace micro");
    let (_, response) = harness.login("bob", "s3cret", "micro").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "bob is an account of foo, not micro");
    let (_, response) = harness.login("", "", "micro").await;
    assert_eq!(json_body(response).await["Detail"], "a username and a password are required");
}

#[tokio::test]
async fn pages_show_the_namespace_of_the_session_only() {
    let harness = harness().await;
    let (status, _, response) = harness.page("/services", &Jar::default()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "no session: to the login page");
    assert_eq!(response.headers()[header::LOCATION], "/login");

    let (admin, _) = harness.login("admin", "micro", "micro").await;
    let (status, html, response) = harness.page("/services", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
    for service in ["auth", "config", "events", "registry", "runtime", "store", "greeter"] {
        assert!(html.contains(&format!(r#"data-service="{service}""#)), "{service} listed: {html}");
    }
    assert!(!html.contains("private"), "foo's service is not in micro: {html}");
    assert!(html.contains(r#"href="/services/store/Store.Read""#), "{html}");
    assert!(
        html.contains(r#"href="/services/greeter/Kinds.Watch">Kinds.Watch</a> <small>server stream</small>"#)
    );
    assert!(!html.contains("<script>") && !html.contains(" style="), "no inline script or style");

    // A micro admin may look into foo; the service page escapes what services registered.
    let (status, html, _) = harness.page("/services?namespace=foo", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"data-service="private""#) && !html.contains(r#"data-service="greeter""#),
        "{html}"
    );
    let (status, html, _) = harness.page("/services/greeter", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<dd>&lt;core&gt;</dd>") && html.contains("greeter-1"), "{html}");

    let (bob, response) = harness.login("bob", "s3cret", "foo").await;
    assert_eq!(response.status(), StatusCode::OK);
    let (status, html, _) = harness.page("/services", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"data-service="private""#) && !html.contains("greeter"), "{html}");
    assert!(!html.contains(r#"name="namespace""#), "a tenant has no namespace switch");
    let (status, html, _) = harness.page("/services?namespace=micro", &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("the token was issued by namespace foo and cannot act in micro"), "{html}");
    assert!(!html.contains("greeter"), "{html}");
    let (status, _, _) = harness.page("/services/private/Kinds.Do", &bob).await;
    assert_eq!(status, StatusCode::OK);
    let (status, html, _) = harness.page("/services/private/Kinds.Nope", &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("endpoint Kinds.Nope not found on service private"), "{html}");
}

#[tokio::test]
async fn a_rebinding_host_gets_421_and_assets_are_cached_and_gzipped() {
    let harness = harness().await;
    let rebound = Request::builder()
        .uri("/login")
        .header(header::HOST, "evil.example:8082")
        .body(Body::empty())
        .unwrap();
    assert_eq!(harness.send(rebound).await.status(), StatusCode::MISDIRECTED_REQUEST);

    let uri = format!("/assets/app.js?v={}", assets::version());
    let gz = Harness::request(Method::GET, &uri, &Jar::default())
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .body(Body::empty())
        .unwrap();
    let response = harness.send(gz).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    let etag = response.headers()[header::ETAG].clone();
    let zipped = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut plain).unwrap();
    assert_eq!(plain, include_str!("assets/app.js"));

    let css = Harness::request(Method::GET, "/assets/app.css", &Jar::default())
        .header(header::ACCEPT_ENCODING, "gzip;q=0")
        .body(Body::empty())
        .unwrap();
    let response = harness.send(css).await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none(), "gzip;q=0 refuses gzip");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache", "unversioned: revalidate");
    let again = Harness::request(Method::GET, "/assets/app.css", &Jar::default())
        .header(header::IF_NONE_MATCH, etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(harness.send(again).await.status(), StatusCode::NOT_MODIFIED);
    let missing =
        Harness::request(Method::GET, "/assets/nope.js", &Jar::default()).body(Body::empty()).unwrap();
    assert_eq!(harness.send(missing).await.status(), StatusCode::NOT_FOUND);
}

/// The Runtime, Store, Config, Events and Jobs pages: shown after the gateway's admission decision for what
/// they read, in the session's namespace only; their frames escape what the URL brings; they
/// load their own script; every state change they make needs the CSRF proof.
#[tokio::test]
async fn runtime_store_and_config_pages_are_per_namespace_and_escaped() {
    let harness = harness().await;
    for page in ["/runtime", "/store", "/config", "/events", "/jobs"] {
        let (status, _, response) = harness.page(page, &Jar::default()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{page}: no session, to the login page");
        assert_eq!(response.headers()[header::LOCATION], "/login");
    }

    let (admin, _) = harness.login("admin", "micro", "micro").await;
    for (page, script, marker) in [
        ("/runtime", "runtime.js", r#"<section id="runtime" class="panel" data-poll="2000">"#),
        ("/store", "data.js", r#"<section id="store""#),
        ("/config", "data.js", r#"<section id="config""#),
        ("/events", "data.js", r#"<section id="dead" class="panel">"#),
        ("/jobs", "data.js", r#"<table class="jobs" id="jobs-table">"#),
    ] {
        let (status, html, response) = harness.page(page, &admin).await;
        assert_eq!(status, StatusCode::OK, "{page}: {html}");
        assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert!(html.contains(marker), "{page}: {html}");
        let src = format!(r#"<script src="/assets/{script}?v={}" defer></script>"#, assets::version());
        assert!(html.contains(&src), "{page} loads {script}: {html}");
        assert!(html.contains(&format!(r#"<a href="{page}" aria-current="page">"#)), "{page}: {html}");
        assert!(!html.contains("<script>") && !html.contains(" style="), "{page}: no inline script or style");
        let (status, _, _) = harness.page(&format!("/assets/{script}"), &Jar::default()).await;
        assert_eq!(status, StatusCode::OK, "{script} is embedded");
    }
    // A micro admin may open another namespace's pages; the switch stays on the page.
    let (status, html, _) = harness.page("/runtime?namespace=foo", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"data-namespace="foo""#) && html.contains(r#"action="/runtime""#), "{html}");
    assert!(html.contains(r#"href="/store?namespace=foo""#), "the top bar keeps the namespace: {html}");

    // What the URL brings is escaped in the frame.
    let (status, html, _) = harness
        .page("/store?database=%3Cscript%3Ealert(1)%3C%2Fscript%3E&table=%22t%22&prefix=a%27b", &admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script>alert(1)"), "{html}");
    assert!(html.contains(r#"data-database="&lt;script&gt;alert(1)&lt;/script&gt;""#), "{html}");
    assert!(html.contains(r#"data-table="&quot;t&quot;""#) && html.contains(r#"value="a&#39;b""#), "{html}");
    let (_, html, _) = harness.page("/events?topic=%3Cb%3E", &admin).await;
    assert!(html.contains(r#"id="events-topic" value="&lt;b&gt;""#) && !html.contains("<b>"), "{html}");
    let (_, html, _) = harness.page("/events?topic=orders&group=%22g%22", &admin).await;
    assert!(html.contains(r#"id="dead-group" value="&quot;g&quot;""#), "{html}");
    assert!(html.contains(r#"id="dead-topic" value="orders""#), "{html}");
    assert!(html.contains(r#"<table class="topics" id="topics-table">"#), "{html}");
    let long = format!("/events?topic=t&group={}", "g".repeat(300));
    assert_eq!(harness.page(&long, &admin).await.0, StatusCode::BAD_REQUEST);
    // The jobs page: the table, the history panel and the create form; no job is in the HTML.
    let (_, html, _) = harness.page("/jobs?namespace=foo", &admin).await;
    assert!(html.contains(r#"data-namespace="foo""#) && html.contains(r#"action="/jobs""#), "{html}");
    assert!(html.contains(r#"<section id="runs" class="panel" hidden>"#), "{html}");
    assert!(html.contains(r#"<form id="job-create""#), "{html}");
    let long = format!("/store?prefix={}", "x".repeat(300));
    assert_eq!(harness.page(&long, &admin).await.0, StatusCode::BAD_REQUEST);

    // A tenant sees its own namespace's pages, never another's.
    let (bob, _) = harness.login("bob", "s3cret", "foo").await;
    for page in ["/runtime", "/store", "/config", "/events", "/jobs"] {
        let (status, html, _) = harness.page(page, &bob).await;
        assert_eq!(status, StatusCode::OK, "{page}: {html}");
        assert!(html.contains(r#"data-namespace="foo""#), "{page}: {html}");
        assert!(!html.contains(r#"name="namespace""#), "{page}: a tenant has no namespace switch");
        let (status, html, _) = harness.page(&format!("{page}?namespace=micro"), &bob).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        assert!(
            html.contains("the token was issued by namespace foo and cannot act in micro"),
            "{page}: {html}"
        );
        assert!(!html.contains(r#"data-namespace="micro""#), "{page}: {html}");
    }

    // The run form's name for a source given without one: the CLI's rule, behind the proof.
    let csrf = admin.get(CSRF_COOKIE).unwrap().to_string();
    let named = "/api/service-name?source=file%3A%2F%2F%2Frepos%2Fticker.git%2F";
    let proven = Harness::request(Method::GET, named, &admin).header(CSRF_HEADER, &csrf);
    let response = harness.send(proven.body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_body(response).await, json!({"name": "ticker"}));
    let unproven = Harness::request(Method::GET, named, &admin).body(Body::empty()).unwrap();
    assert_eq!(harness.send(unproven).await.status(), StatusCode::FORBIDDEN);

    // Every change these pages make is a call through /api/call: refused without the proof.
    let calls = [
        ("/api/call/runtime/Runtime/Delete", r#"{"resource":{"service":{"name":"x"}}}"#),
        ("/api/call/runtime/Runtime/Update", r#"{"resource":{"service":{"name":"x"}}}"#),
        ("/api/call/runtime/Runtime/Create", r#"{"resource":{"service":{"name":"x","source":"a.b/c/d"}}}"#),
        ("/api/call/store/Store/Write", r#"{"record":{"key":"k","value":"eA=="}}"#),
        ("/api/call/store/Store/Delete", r#"{"key":"k"}"#),
        ("/api/call/config/Config/Set", r#"{"path":"a","value":{"data":"1"}}"#),
        ("/api/call/config/Config/Delete", r#"{"path":"a"}"#),
        ("/api/call/events/Stream/Publish", r#"{"topic":"t","payload":"e30="}"#),
        ("/api/call/events/Stream/Release", r#"{"topic":"t","group":"g","all":true}"#),
        ("/api/call/events/Stream/DropDeadLetters", r#"{"topic":"t","group":"g","all":true}"#),
        ("/api/call/broker/Broker/Publish", r#"{"topic":"t","message":{"body":"eA=="}}"#),
        ("/api/call/jobs/Jobs/Create", r#"{"job":{"name":"tick","every":"1h","topic":"ticks"}}"#),
        ("/api/call/jobs/Jobs/Run", r#"{"name":"tick"}"#),
        ("/api/call/jobs/Jobs/Delete", r#"{"name":"tick"}"#),
    ];
    harness.assert_refused_without_proof(&admin, None, &calls).await;
}

/// The Accounts and rules page: a session is required; the frame is shown after the gateway's
/// decision for `auth.Accounts/List`, so a tenant its namespace's rules keep out of the auth
/// service gets the gateway's sentence; the top bar links to it for admins only; the accounts
/// it lists never reach the HTML (the script writes them as text); every change it makes needs
/// the CSRF proof.
#[tokio::test]
async fn the_accounts_page_is_for_those_the_rules_let_in() {
    use micro_access::rules::{Access, Resource, Rule};
    let harness = harness().await;
    let (status, _, response) = harness.page("/accounts", &Jar::default()).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "no session: to the login page");
    assert_eq!(response.headers()[header::LOCATION], "/login");

    let marked = NewAccount {
        id: "carol".into(),
        secret: "pa55word".into(),
        metadata: [("note".to_string(), "<img src=x onerror=alert(1)>".to_string())].into(),
        ..Default::default()
    };
    harness.auth.generate("foo", marked).await.unwrap();

    let (admin, _) = harness.login("admin", "micro", "micro").await;
    let (status, html, response) = harness.page("/accounts", &admin).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let src = format!(r#"<script src="/assets/admin.js?v={}" defer></script>"#, assets::version());
    assert!(html.contains(&src), "{html}");
    assert!(html.contains(r#"<a href="/accounts" aria-current="page">Accounts</a>"#), "{html}");
    assert!(html.contains(r#"<section id="accounts""#) && html.contains(r#"<section id="rules""#), "{html}");
    assert!(!html.contains("<script>") && !html.contains(" style="), "no inline script or style");
    let (status, _, _) = harness.page("/assets/admin.js", &Jar::default()).await;
    assert_eq!(status, StatusCode::OK, "admin.js is embedded");
    // A micro admin may open foo's; the switch stays on the page; no account is in the HTML.
    let (status, html, _) = harness.page("/accounts?namespace=foo", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"data-namespace="foo""#) && html.contains(r#"action="/accounts""#), "{html}");
    assert!(!html.contains("carol") && !html.contains("<img"), "{html}");
    // What the URL brings is escaped in the refusal.
    let (status, html, _) = harness.page("/accounts?namespace=%3Cb%3Ex", &admin).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!html.contains("<b>x") && html.contains("&lt;b&gt;x"), "{html}");

    // foo's rules keep everyone but admins out of the auth service.
    let rule = |id: &str, scope: &str, resource: Resource, access, priority| Rule {
        id: id.into(),
        scope: scope.into(),
        resource,
        access,
        priority,
    };
    for rule in [
        rule("admins", "admin", Resource::new("service", "auth", "*"), Access::Granted, 10),
        rule("no-auth", "*", Resource::new("service", "auth", "*"), Access::Denied, 5),
    ] {
        harness.auth.create_rule("foo", rule).await.unwrap();
    }
    let (bob, _) = harness.login("bob", "s3cret", "foo").await;
    let (status, html, _) = harness.page("/services", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains(r#"href="/accounts""#), "no link without the admin scope: {html}");
    let (status, html, _) = harness.page("/accounts", &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("Forbidden call made to auth:Accounts.List by bob"), "{html}");
    assert!(!html.contains("admin.js"), "{html}");
    let (status, html, _) = harness.page("/accounts?namespace=micro", &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("the token was issued by namespace foo and cannot act in micro"), "{html}");
    // The admin still may.
    let (status, _, _) = harness.page("/accounts?namespace=foo", &admin).await;
    assert_eq!(status, StatusCode::OK);

    // Every change the page makes is a call through /api/call: refused without the proof.
    let rules = harness.auth.rules("foo").await;
    let calls = [
        ("/api/call/auth/Auth/Generate", r#"{"id":"x","secret":"y"}"#),
        ("/api/call/auth/Accounts/Delete", r#"{"id":"carol"}"#),
        (
            "/api/call/auth/Rules/Create",
            r#"{"rule":{"id":"r","resource":{"type":"*","name":"*","endpoint":"*"},"access":"GRANTED"}}"#,
        ),
        ("/api/call/auth/Rules/Delete", r#"{"id":"public"}"#),
    ];
    harness.assert_refused_without_proof(&admin, Some("foo"), &calls).await;
    assert!(harness.auth.list_accounts("foo").await.unwrap().iter().any(|account| account.id == "carol"));
    assert_eq!(harness.auth.rules("foo").await, rules, "nothing changed");
}

/// The files of a gzipped tar: (path, text), in archive order.
fn untar(bytes: &[u8]) -> Vec<(String, String)> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            (path, text)
        })
        .collect()
}

#[tokio::test]
async fn a_services_protos_download_as_micro_proto_writes_them_in_its_namespace_only() {
    let harness = harness().await;
    let (admin, _) = harness.login("admin", "micro", "micro").await;
    let (bob, _) = harness.login("bob", "s3cret", "foo").await;

    // What `micro proto greeter` writes (the same function), one link per file and the archive.
    let expected = {
        let greeter = Service {
            name: "greeter".into(),
            version: "latest".into(),
            descriptors: kinds_pool().encode_to_vec(),
            ..Default::default()
        };
        micro_proto::proto_file::service_protos("greeter", &[greeter]).unwrap()
    };
    assert!(!expected.is_empty());
    let (status, html, _) = harness.page("/services/greeter", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<a href="/protos/greeter" download id="protos-all">"#), "{html}");
    for (file, _) in &expected {
        assert!(html.contains(&format!(r#"<a href="/protos/greeter/{file}" download>{file}</a>"#)), "{html}");
    }

    let (status, body, response) = harness.page("/protos/greeter", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/gzip");
    assert_eq!(
        response.headers()[header::CONTENT_DISPOSITION],
        r#"attachment; filename="greeter-protos.tar.gz""#
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let archive = harness
        .send(Harness::request(Method::GET, "/protos/greeter", &admin).body(Body::empty()).unwrap())
        .await;
    let bytes = axum::body::to_bytes(archive.into_body(), 1 << 20).await.unwrap();
    assert_eq!(untar(&bytes), expected, "the archive holds what micro proto writes");
    let again = harness
        .send(Harness::request(Method::GET, "/protos/greeter", &admin).body(Body::empty()).unwrap())
        .await;
    let again = axum::body::to_bytes(again.into_body(), 1 << 20).await.unwrap();
    assert_eq!(bytes, again, "the same descriptors give the same bytes");
    let (file, source) = &expected[0];
    let (status, text, response) = harness.page(&format!("/protos/greeter/{file}"), &admin).await;
    assert_eq!((status, &text), (StatusCode::OK, source));
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    let (status, text, _) = harness.page("/protos/greeter/nope.proto", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("service greeter has no proto file nope.proto"), "{text}");
    // A core service: its own files.
    let (status, body, _) = harness.page("/protos/store", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, text, _) = harness.page("/protos/nothing", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("service nothing not found"), "{text}");

    // Without a session: the login page. A tenant: its own namespace's services only.
    let (status, _, response) = harness.page("/protos/greeter", &Jar::default()).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/login");
    let (status, _, _) = harness.page("/protos/private", &bob).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = harness.page("/protos/private?namespace=foo", &admin).await;
    assert_eq!(status, StatusCode::OK, "a micro admin may look into foo");
    let (status, text, _) = harness.page("/protos/greeter", &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "foo has no greeter: {text}");
    let (status, text, _) = harness.page("/protos/greeter?namespace=micro", &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("the token was issued by namespace foo and cannot act in micro"), "{text}");
    assert!(!text.contains("syntax ="), "{text}");

    // Descriptors name their files: one that is not a relative path is refused, not packed.
    let mut set =
        <prost_types::FileDescriptorSet as prost::Message>::decode(kinds_pool().encode_to_vec().as_slice())
            .unwrap();
    for file in set.file.iter_mut().filter(|file| !file.name().starts_with("google/")) {
        file.name = Some(format!("../{}", file.name()));
    }
    let evil = Service {
        name: "evil".into(),
        version: "latest".into(),
        nodes: vec![Node { id: "evil-1".into(), address: "127.0.0.1:1".into(), ..Default::default() }],
        descriptors: prost::Message::encode_to_vec(&set),
        ..Default::default()
    };
    harness.registry.register("micro", evil, Duration::from_secs(60)).unwrap();
    let (status, text, _) = harness.page("/protos/evil", &admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("is not a relative path"), "{text}");
}

#[test]
fn text_from_services_is_escaped() {
    assert_eq!(pages::esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    assert_eq!(pages::url_part("a b/c.d"), "a%20b%2Fc.d");
}

#[test]
fn paths_and_commands_of_endpoints() {
    let pool = kinds_pool();
    let method = pool.get_service_by_name("kinds.Kinds").unwrap().methods().next().unwrap();
    assert_eq!(describe::gateway_path("greeter", &method), "/greeter/Kinds/Do");
    assert_eq!(describe::gateway_path("foo.bar", &method), "/foo/bar/Kinds/Do");
    let resolved = crate::gateway::resolve::resolve("/foo/bar/Kinds/Do").unwrap();
    assert_eq!((resolved.service.as_str(), resolved.endpoint()), ("foo.bar", "Kinds.Do".to_string()));
    assert_eq!(describe::cli_command("helloworld", "Helloworld.Call"), "call");
    assert_eq!(describe::cli_command("store", "BlobStore.Read"), "blob-store read");
    assert_eq!(describe::cli_command("registry", "Registry.GetService"), "get-service");

    let core = DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
    let store = crate::registry::builtins().into_iter().find(|service| service.name == "store").unwrap();
    let endpoints: Vec<String> =
        micro_proto::dynamic::endpoints("store", &store, &core).into_keys().collect();
    assert!(
        endpoints.contains(&"Store.Read".to_string()) && endpoints.contains(&"BlobStore.Write".to_string())
    );
    assert!(
        endpoints.iter().all(|e| e.starts_with("Store.") || e.starts_with("BlobStore.")),
        "{endpoints:?}"
    );
}

/// The form of a request with every kind of field: scalars (64-bit as strings in the form),
/// an enum, nested, repeated and map fields, bytes, well-known types, oneofs, proto3
/// `optional`, and a message that contains itself.
#[test]
fn the_description_of_a_message_with_every_kind_of_field() {
    let pool = kinds_pool();
    let method = pool.get_service_by_name("kinds.Kinds").unwrap().methods().next().unwrap();
    let description = Value::Object(describe::describe(&method));
    assert_eq!(description["input"], "kinds.Everything");
    assert_eq!(description["output"], "kinds.Inner");
    assert_eq!(description["grpc_path"], "/kinds.Kinds/Do");
    assert_eq!(description["proto_file"], "kinds.proto");
    assert_eq!(description["server_streaming"], false);
    let fields = description["messages"]["kinds.Everything"]["fields"].as_array().unwrap();
    let field = |name: &str| {
        let mut field = fields.iter().find(|field| field["name"] == name).unwrap().clone();
        field.as_object_mut().unwrap().remove("json_name");
        field
    };
    for (name, kind) in [
        ("s", "string"),
        ("i32", "int32"),
        ("i64", "int64"),
        ("u32", "uint32"),
        ("u64", "uint64"),
        ("si32", "sint32"),
        ("si64", "sint64"),
        ("f32", "fixed32"),
        ("f64", "fixed64"),
        ("sf32", "sfixed32"),
        ("sf64", "sfixed64"),
        ("b", "bool"),
        ("fl", "float"),
        ("d", "double"),
        ("by", "bytes"),
        ("at", "timestamp"),
        ("wait", "duration"),
        ("mask", "field_mask"),
        ("extra", "json"),
    ] {
        assert_eq!(field(name), json!({"name": name, "kind": kind}), "{name}");
    }
    assert_eq!(field("color"), json!({"name": "color", "kind": "enum", "type": "kinds.Color"}));
    assert_eq!(field("inner"), json!({"name": "inner", "kind": "message", "type": "kinds.Inner"}));
    assert_eq!(field("tags"), json!({"name": "tags", "kind": "string", "repeated": true}));
    assert_eq!(
        field("items"),
        json!({"name": "items", "kind": "message", "type": "kinds.Inner", "repeated": true})
    );
    assert_eq!(
        field("labels"),
        json!({"name": "labels", "kind": "map", "map": {"key": {"kind": "string"}, "value": {"kind": "string"}}})
    );
    assert_eq!(
        field("by_id"),
        json!({"name": "by_id", "kind": "map",
               "map": {"key": {"kind": "int64"}, "value": {"kind": "message", "type": "kinds.Inner"}}})
    );
    assert_eq!(field("nick"), json!({"name": "nick", "kind": "string", "wrapper": true}));
    assert_eq!(field("a"), json!({"name": "a", "kind": "string", "oneof": "choice"}));
    assert_eq!(field("b2"), json!({"name": "b2", "kind": "int32", "oneof": "choice"}));
    assert_eq!(field("maybe"), json!({"name": "maybe", "kind": "string", "optional": true}));
    assert_eq!(field("again"), json!({"name": "again", "kind": "message", "type": "kinds.Everything"}));
    assert_eq!(fields.iter().find(|field| field["name"] == "by_id").unwrap()["json_name"], "byId");

    let messages = description["messages"].as_object().unwrap();
    let mut names: Vec<&String> = messages.keys().collect();
    names.sort();
    assert_eq!(names, ["kinds.Everything", "kinds.Inner"], "each message once, the recursive one too");
    assert_eq!(
        description["enums"]["kinds.Color"],
        json!([{"name": "RED", "number": 0}, {"name": "GREEN", "number": 1}])
    );

    let watch = pool.get_service_by_name("kinds.Kinds").unwrap().methods().nth(1).unwrap();
    assert_eq!(describe::describe(&watch)["server_streaming"], true);
}

/// `kinds.proto`: a message with every kind of field, for the tests above.
fn kinds_pool() -> DescriptorPool {
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{
        DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
        FileDescriptorProto, MessageOptions, MethodDescriptorProto, OneofDescriptorProto,
        ServiceDescriptorProto,
    };
    let field = |name: &str, number: i32, kind: Type, type_name: &str| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(kind as i32),
        type_name: (!type_name.is_empty()).then(|| type_name.to_string()),
        json_name: None,
        ..Default::default()
    };
    let repeated = |mut field: FieldDescriptorProto| {
        field.label = Some(Label::Repeated as i32);
        field
    };
    let in_oneof = |mut field: FieldDescriptorProto, index: i32| {
        field.oneof_index = Some(index);
        field
    };
    let entry = |name: &str, key: Type, value: Type, value_type: &str| DescriptorProto {
        name: Some(name.into()),
        field: vec![field("key", 1, key, ""), field("value", 2, value, value_type)],
        options: Some(MessageOptions { map_entry: Some(true), ..Default::default() }),
        ..Default::default()
    };
    let message = Type::Message;
    let mut maybe = in_oneof(field("maybe", 28, Type::String, ""), 1);
    maybe.proto3_optional = Some(true);
    let everything = DescriptorProto {
        name: Some("Everything".into()),
        field: vec![
            field("s", 1, Type::String, ""),
            field("i32", 2, Type::Int32, ""),
            field("i64", 3, Type::Int64, ""),
            field("u32", 4, Type::Uint32, ""),
            field("u64", 5, Type::Uint64, ""),
            field("si32", 6, Type::Sint32, ""),
            field("si64", 7, Type::Sint64, ""),
            field("f32", 8, Type::Fixed32, ""),
            field("f64", 9, Type::Fixed64, ""),
            field("sf32", 10, Type::Sfixed32, ""),
            field("sf64", 11, Type::Sfixed64, ""),
            field("b", 12, Type::Bool, ""),
            field("fl", 13, Type::Float, ""),
            field("d", 14, Type::Double, ""),
            field("by", 15, Type::Bytes, ""),
            field("color", 16, Type::Enum, ".kinds.Color"),
            field("inner", 17, message, ".kinds.Inner"),
            repeated(field("tags", 18, Type::String, "")),
            repeated(field("labels", 19, message, ".kinds.Everything.LabelsEntry")),
            field("at", 20, message, ".google.protobuf.Timestamp"),
            field("wait", 21, message, ".google.protobuf.Duration"),
            field("nick", 22, message, ".google.protobuf.StringValue"),
            field("extra", 23, message, ".google.protobuf.Struct"),
            repeated(field("items", 24, message, ".kinds.Inner")),
            repeated(field("by_id", 25, message, ".kinds.Everything.ByIdEntry")),
            in_oneof(field("a", 26, Type::String, ""), 0),
            in_oneof(field("b2", 27, Type::Int32, ""), 0),
            maybe,
            field("again", 29, message, ".kinds.Everything"),
            field("mask", 30, message, ".google.protobuf.FieldMask"),
        ],
        nested_type: vec![
            entry("LabelsEntry", Type::String, Type::String, ""),
            entry("ByIdEntry", Type::Int64, message, ".kinds.Inner"),
        ],
        oneof_decl: vec![
            OneofDescriptorProto { name: Some("choice".into()), ..Default::default() },
            OneofDescriptorProto { name: Some("_maybe".into()), ..Default::default() },
        ],
        ..Default::default()
    };
    let inner = DescriptorProto {
        name: Some("Inner".into()),
        field: vec![field("name", 1, Type::String, "")],
        ..Default::default()
    };
    let color = EnumDescriptorProto {
        name: Some("Color".into()),
        value: vec![
            EnumValueDescriptorProto { name: Some("RED".into()), number: Some(0), ..Default::default() },
            EnumValueDescriptorProto { name: Some("GREEN".into()), number: Some(1), ..Default::default() },
        ],
        ..Default::default()
    };
    let method = |name: &str, input: &str, output: &str, server_streaming: bool| MethodDescriptorProto {
        name: Some(name.into()),
        input_type: Some(input.into()),
        output_type: Some(output.into()),
        server_streaming: Some(server_streaming),
        ..Default::default()
    };
    let file = FileDescriptorProto {
        name: Some("kinds.proto".into()),
        package: Some("kinds".into()),
        syntax: Some("proto3".into()),
        dependency: [
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/field_mask.proto",
        ]
        .map(str::to_string)
        .to_vec(),
        message_type: vec![everything, inner],
        enum_type: vec![color],
        service: vec![ServiceDescriptorProto {
            name: Some("Kinds".into()),
            method: vec![
                method("Do", ".kinds.Everything", ".kinds.Inner", false),
                method("Watch", ".kinds.Inner", ".kinds.Inner", true),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut pool = DescriptorPool::global();
    pool.add_file_descriptor_proto(file).unwrap();
    pool
}
