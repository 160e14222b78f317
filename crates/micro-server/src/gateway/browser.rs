//! The browser boundary of the HTTP listener (docs/security.md): a web page the user visits
//! must not be able to drive the local server.
//!
//! - **CORS**: no origin is granted except those configured (`--cors-origin`); a granted
//!   origin is echoed exactly, never `*`, with `Vary: Origin`. Preflights of other origins get
//!   no grant, so the browser stops there. Every `OPTIONS` is answered there (empty 200) and
//!   reaches no service. Built on tower-http's [`CorsLayer`].
//! - **Host** ([`HostCheck`]): on a loopback bind, a request whose `Host` is not a loopback
//!   name, the bind address, the API domain or a configured `--allowed-host` gets 421, which
//!   ends DNS rebinding (a hostile name that resolves to 127.0.0.1).
//! - **Headers** ([`security_headers`]): `nosniff`, no framing, a CSP that allows nothing.
//!
//! JSON bodies needing `application/json` (a 415 otherwise) and the CSRF check of cookie
//! sessions are decided per request, in [`super::request_message`] and [`super::auth`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ApiError;
use super::auth::CSRF_HEADER;
use micro_core::NAMESPACE_HEADER;

/// How long a browser may cache a granted preflight.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins` (each `scheme://host[:port]`, checked by the config): those
/// origins, and no other, may call with credentials and read the answers.
pub fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> =
        origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(NAMESPACE_HEADER),
            HeaderName::from_static(CSRF_HEADER),
            // What gRPC-Web and Connect clients send (super::grpc_web, super::connect).
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static(super::connect::PROTOCOL_VERSION_HEADER),
            HeaderName::from_static("connect-timeout-ms"),
        ])
        // A gRPC-Web answer's outcome is in these headers when it has no trailer frame.
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Adds the headers every answer carries: the body is what its type says, no page may frame
/// it, and rendered as a page it may load and run nothing.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        // tower-http adds this to every preflight; without an allowed origin it grants nothing.
        headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

pub use micro_core::host::HostCheck;

/// Middleware: 421 for a request whose `Host` (or HTTP/2 authority) this listener does not
/// answer to. A request naming no host at all is let through (no browser sends one).
pub async fn check_host(State(check): State<Arc<HostCheck>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|authority| authority.as_str().to_string()));
    match host {
        Some(host) if !check.allows(&host) => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to host {host:?}: start it with --allowed-host NAME to serve that name"
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Checks a configured CORS origin: `scheme://host[:port]`, http or https, nothing after it.
pub fn validate_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || origin == "null" {
        return Err(format!("{origin:?} is not allowed: list each origin, e.g. https://app.example.com"));
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{origin:?} is not an origin: it must start with http:// or https://"))?;
    let host_ok = !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        && !rest.ends_with(':');
    if !host_ok || HeaderValue::from_str(origin).is_err() {
        return Err(format!("{origin:?} is not an origin: scheme://host[:port], with no path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::any;
    use tower::ServiceExt as _;

    use super::*;

    fn app(origins: &[String], check: HostCheck) -> Router {
        Router::new()
            .route("/x", any(|| async { "called" }))
            .layer(cors_layer(origins))
            .layer(axum::middleware::from_fn_with_state(Arc::new(check), check_host))
            .layer(axum::middleware::from_fn(security_headers))
    }

    fn request(method: Method, origin: Option<&str>) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri("/x").header(header::HOST, "127.0.0.1:8080");
        match origin {
            Some(origin) => builder.header(header::ORIGIN, origin),
            None => builder,
        }
    }

    #[tokio::test]
    async fn only_configured_origins_get_a_grant() {
        let app = app(&["https://app.example".to_string()], HostCheck::default());
        let preflight = |origin: &str| {
            request(Method::OPTIONS, Some(origin))
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type")
                .body(Body::empty())
                .unwrap()
        };
        let evil = app.clone().oneshot(preflight("http://evil.example")).await.unwrap();
        assert!(evil.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(evil.headers().get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());

        let good = app.clone().oneshot(preflight("https://app.example")).await.unwrap();
        assert_eq!(good.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(good.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert!(good.headers()[header::VARY].to_str().unwrap().contains("origin"));

        let call = app
            .clone()
            .oneshot(request(Method::POST, Some("http://evil.example")).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            call.status(),
            StatusCode::OK,
            "the layer grants nothing; the call itself is judged later"
        );
        assert!(call.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(call.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            call.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("default-src 'none'")
        );

        let plain = app.oneshot(request(Method::OPTIONS, None).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(plain.status(), StatusCode::OK);
        let body = axum::body::to_bytes(plain.into_body(), 64).await.unwrap();
        assert!(body.is_empty(), "an OPTIONS reaches no handler");
    }

    #[test]
    fn loopback_names_the_bind_address_and_configured_hosts_pass() {
        let check = HostCheck::new(
            Some("127.0.0.2".parse().unwrap()),
            Some(".Example.COM.".into()),
            vec!["micro.internal.".into()],
        );
        for host in [
            "localhost",
            "localhost:8080",
            "app.localhost:1",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
            "[::1]",
            "127.0.0.2:80",
            "example.com",
            "foo.example.com:8080",
            "MICRO.internal",
        ] {
            assert!(check.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "attacker.com:8080",
            "10.0.0.1",
            "fooexample.com",
            "micro.internal.evil",
            "[::2]",
        ] {
            assert!(!check.allows(host), "{host}");
        }
    }

    #[tokio::test]
    async fn a_rebinding_host_gets_421() {
        let app = app(&[], HostCheck::default());
        let rebound = Request::builder()
            .uri("/x")
            .header(header::HOST, "rebind.evil.example:8080")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(rebound).await.unwrap();
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("--allowed-host"));
        let local = app.oneshot(request(Method::GET, None).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(local.status(), StatusCode::OK);
    }

    #[test]
    fn origins_are_checked() {
        for good in ["https://app.example", "http://localhost:3000", "http://[::1]:8080"] {
            assert_eq!(validate_origin(good), Ok(()), "{good}");
        }
        for bad in
            ["*", "null", "app.example", "https://app.example/path", "ftp://x", "https://", "http://x:"]
        {
            assert!(validate_origin(bad).is_err(), "{bad}");
        }
    }
}
