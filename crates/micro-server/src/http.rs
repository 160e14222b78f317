//! The :8080 listener: the fixed routes of the original's API (`GET /` answers the version,
//! `/favicon.ico` an empty 200), every other path to the API [`gateway`](crate::gateway), and
//! the browser boundary around all of it ([`browser`](crate::gateway::browser): CORS, `Host`,
//! security headers; docs/security.md).

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;

use crate::gateway::{self, ApiError, Gateway, browser};

/// The HTTP routes.
pub fn router(gateway: Gateway) -> Router {
    let options = gateway.options().clone();
    let router = Router::new()
        .route("/", any(root))
        .route("/favicon.ico", get(|| async { StatusCode::OK }))
        .fallback(gateway::handle)
        .with_state(gateway)
        .layer(browser::cors_layer(&options.cors_origins));
    let router = match options.host_check {
        Some(check) => {
            router.layer(axum::middleware::from_fn_with_state(Arc::new(check), browser::check_host))
        }
        None => router,
    };
    router.layer(axum::middleware::from_fn(browser::security_headers))
}

async fn root(request: Request) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        Json(json!({ "version": micro_core::VERSION })).into_response()
    } else {
        ApiError::not_found("the path names no service").into_response()
    }
}

/// Serves `router` on `listener` (a `TcpListener`, or a [`TlsIncoming`](crate::tls::TlsIncoming))
/// until `shutdown` resolves, then lets open requests finish.
pub async fn serve<L>(
    router: Router,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    // Each request knows its client's address (the login limits count failures per client);
    // wrapped, axum's `ConnectInfo<SocketAddr>` covers every listener, TLS ones too.
    let listener = axum::serve::ListenerExt::tap_io(listener, |_: &mut L::Io| {});
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
