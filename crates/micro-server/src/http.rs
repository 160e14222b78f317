//! The :8080 listener: the fixed routes of the original's API (`GET /` answers the version,
//! `/favicon.ico` an empty 200), `GET /metrics` ([`crate::metrics`], with the events backend's
//! consumer groups read just before each render: [`crate::events_metrics`]; docs/observability.md),
//! every other path to the API [`gateway`](crate::gateway), and the browser boundary around all
//! of it ([`browser`](crate::gateway::browser): CORS, `Host`, security headers;
//! docs/security.md). Every request is counted by the request metrics, outermost.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;

use crate::events_metrics::GroupMetrics;
use crate::gateway::{self, ApiError, Gateway, browser};
use crate::metrics::{self, Listener, Metrics, RequestMetricsLayer};

/// The HTTP routes, `/metrics` without consumer-group metrics.
pub fn router(gateway: Gateway) -> Router {
    routes(gateway, None)
}

/// The HTTP routes, `/metrics` with the consumer groups of `events`.
pub fn router_with_events(gateway: Gateway, events: Arc<dyn micro_events::Events>) -> Router {
    routes(gateway, Some(events))
}

fn routes(gateway: Gateway, events: Option<Arc<dyn micro_events::Events>>) -> Router {
    let options = gateway.options().clone();
    let exposition = Metrics::install();
    let groups = events.map(GroupMetrics::new);
    let router = Router::new()
        .route("/", any(root))
        .route("/favicon.ico", get(|| async { StatusCode::OK }))
        .route(metrics::PATH, get(move |state, request| scrape(state, request, exposition, groups)))
        .fallback(gateway::handle)
        .with_state(gateway)
        .layer(browser::cors_layer(&options.cors_origins));
    let router = match options.host_check {
        Some(check) => {
            router.layer(axum::middleware::from_fn_with_state(Arc::new(check), browser::check_host))
        }
        None => router,
    };
    router
        .layer(axum::middleware::from_fn(browser::security_headers))
        .layer(RequestMetricsLayer::new(Listener::Http))
}

/// `GET /metrics`: the Prometheus text, for callers admitted to `service:debug:Debug.Metrics`
/// in namespace `micro` ([`Gateway::admit_metrics`]; docs/security.md, "Metrics"); a 404 to
/// everyone when `MICRO_METRICS=off` ([`micro_core::metrics::enabled`]).
async fn scrape(
    State(gateway): State<Gateway>,
    request: Request,
    exposition: Metrics,
    groups: Option<GroupMetrics>,
) -> Response {
    // Off, there is nothing to admit anyone to; saying so is no secret.
    if !micro_core::metrics::enabled() {
        return (StatusCode::NOT_FOUND, format!("{}\n", micro_core::metrics::OFF)).into_response();
    }
    if let Err(error) = gateway.admit_metrics(request.headers()).await {
        return error.into_response();
    }
    // Admitted callers only: a refused scrape costs the events backend nothing.
    if let Some(groups) = &groups {
        groups.collect().await;
    }
    if let Some(slot) = request.extensions().get::<metrics::Slot>() {
        slot.resolve(metrics::RESOURCE_SERVICE, metrics::RESOURCE_ENDPOINT);
    }
    // The text format's content type (version 0.0.4), as Prometheus asks for it.
    let content_type = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (content_type, exposition.render()).into_response()
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
