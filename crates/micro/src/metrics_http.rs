//! What a service's own port answers over plain HTTP (HTTP/1.1 beside gRPC on the one port):
//! `GET /metrics`, the Prometheus text of the process's recorder ([`micro_core::metrics`]), to
//! callers the service's [`Guard`] admits to the resource `service:<name>:Debug.Metrics` in the
//! service's namespace (docs/security.md, "Metrics"); 404 for every other request that is not
//! gRPC. Refusals are HTTP statuses (401, 403) with a short text body. On a loopback address a
//! plain HTTP request naming a `Host` that is not a loopback name gets 421, as on the gateway:
//! a web page under a rebound DNS name reads nothing here.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use micro_core::host::HostCheck;
use micro_core::metrics::{ForeignRecorder, Metrics, Slot};
use tonic::body::Body;

use crate::auth::Guard;

/// The gRPC path a scrape is admitted as: [`Guard::admit`] makes it the resource
/// `service:<name>:Debug.Metrics`.
pub(crate) const ADMITTED_AS: &str = "/debug.Debug/Metrics";
/// The `endpoint` label of the scrapes.
const ENDPOINT: &str = "Debug.Metrics";

/// The endpoint a call at `path` counts under: `Handler.Method` when `path` is one of `methods`
/// (the service's handlers' methods, from their descriptors), else `None`: the call counts as
/// `other`, so the label values are what the service serves.
pub(crate) fn endpoint(methods: &HashSet<String>, path: &str) -> Option<String> {
    if !methods.contains(path) {
        return None;
    }
    micro_access::admission::method_of(path).map(|(_, endpoint)| endpoint)
}

/// Answers the plain HTTP requests of a service's port; passes gRPC calls on.
#[derive(Clone)]
pub(crate) struct HttpLayer {
    guard: Arc<Guard>,
    metrics: Option<Metrics>,
    /// The names a loopback-bound port answers; `None` on other addresses.
    host: Option<Arc<HostCheck>>,
}

impl HttpLayer {
    /// `metrics`: the recorder micro installed, or that the program installed its own first
    /// (then `/metrics` answers 404, saying so). `local`: the address the port is bound to.
    pub fn new(guard: Arc<Guard>, metrics: Result<Metrics, ForeignRecorder>, local: SocketAddr) -> Self {
        let host =
            local.ip().is_loopback().then(|| Arc::new(HostCheck::new(Some(local.ip()), None, Vec::new())));
        Self { guard, metrics: metrics.ok(), host }
    }
}

impl<S> tower::Layer<S> for HttpLayer {
    type Service = Http<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Http { inner, guard: self.guard.clone(), metrics: self.metrics.clone(), host: self.host.clone() }
    }
}

/// The service of [`HttpLayer`].
#[derive(Clone)]
pub(crate) struct Http<S> {
    inner: S,
    guard: Arc<Guard>,
    metrics: Option<Metrics>,
    host: Option<Arc<HostCheck>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<B>> for Http<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if micro_core::metrics::is_grpc(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let host = request.headers().get(http::header::HOST).and_then(|value| value.to_str().ok());
        if let (Some(check), Some(host)) = (&self.host, host)
            && !check.allows(host)
        {
            let answer =
                text(StatusCode::MISDIRECTED_REQUEST, &format!("this port does not answer to host {host:?}"));
            return Box::pin(std::future::ready(Ok(answer)));
        }
        if request.method() != Method::GET || request.uri().path() != micro_core::metrics::PATH {
            let answer = text(StatusCode::NOT_FOUND, "not found: this port serves gRPC and GET /metrics");
            return Box::pin(std::future::ready(Ok(answer)));
        }
        let guard = self.guard.clone();
        let metrics = self.metrics.clone();
        let headers = request.headers().clone();
        let slot = request.extensions().get::<Slot>().cloned();
        Box::pin(async move { Ok(scrape(&guard, metrics.as_ref(), &headers, slot).await) })
    }
}

/// `GET /metrics`: the text when the service's rules admit the caller; a 404 to everyone when
/// `MICRO_METRICS=off` ([`micro_core::metrics::enabled`]).
async fn scrape(
    guard: &Guard,
    metrics: Option<&Metrics>,
    headers: &http::HeaderMap,
    slot: Option<Slot>,
) -> Response<Body> {
    // Off, there is nothing to admit anyone to; saying so is no secret.
    if !micro_core::metrics::enabled() {
        return text(StatusCode::NOT_FOUND, micro_core::metrics::OFF);
    }
    if let Err(status) = guard.admit(headers, ADMITTED_AS).await {
        return text(http_status(status.code()), status.message());
    }
    if let Some(slot) = slot {
        slot.resolve(guard.service(), ENDPOINT);
    }
    let Some(metrics) = metrics else {
        return text(
            StatusCode::NOT_FOUND,
            "no metrics here: the program installed a metrics recorder of its own before micro's",
        );
    };
    let mut response = Response::new(Body::new(metrics.render()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(micro_core::metrics::CONTENT_TYPE),
    );
    response
}

/// The HTTP status of a refusal's gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A plain text answer: `message` and a newline.
fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(format!("{message}\n")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use micro_core::metrics::{Listener, RequestMetricsLayer};
    use tower::{Layer as _, Service as _};

    use super::*;

    #[tokio::test]
    async fn only_served_methods_are_endpoints_and_the_rest_counts_as_other() {
        let methods: HashSet<String> = ["/helloworld.Helloworld/Call".to_string()].into();
        assert_eq!(endpoint(&methods, "/helloworld.Helloworld/Call").as_deref(), Some("Helloworld.Call"));
        assert_eq!(endpoint(&methods, "/helloworld.Helloworld/Nope"), None);
        assert_eq!(endpoint(&methods, "/grpc.health.v1.Health/Check"), None, "not a handler's");

        let recorder = micro_core::metrics::builder().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        // Resolves as the gate does once a call is admitted.
        let inner = tower::service_fn(move |request: Request<_>| {
            let methods = methods.clone();
            async move {
                let _: &micro_core::metrics::Counted<()> = request.body();
                if let (Some(slot), Some(endpoint)) =
                    (request.extensions().get::<Slot>(), endpoint(&methods, request.uri().path()))
                {
                    slot.resolve("helloworld", &endpoint);
                }
                let mut response = Response::new(Body::empty());
                response.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                response.headers_mut().insert("grpc-status", "0".parse().unwrap());
                Ok::<_, Infallible>(response)
            }
        });
        let mut service = RequestMetricsLayer::new(Listener::Service).layer(inner);
        for path in ["/helloworld.Helloworld/Call", "/helloworld.Helloworld/Nope", "/unknown.Unknown/Call"] {
            let request = Request::builder().uri(path).body(()).unwrap();
            drop(service.call(request).await.unwrap());
        }
        let text = handle.render();
        let count = |labels: &str| {
            text.lines().find_map(|line| {
                line.strip_prefix(&format!("micro_requests_total{{{labels}}} "))?.parse::<f64>().ok()
            })
        };
        assert_eq!(
            count(r#"listener="service",service="helloworld",endpoint="Helloworld.Call",code="OK""#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            count(r#"listener="service",service="other",endpoint="other",code="OK""#),
            Some(2.0),
            "{text}"
        );
        assert!(!text.contains("Nope") && !text.contains("unknown"), "{text}");
    }

    #[test]
    fn refusals_are_http_statuses() {
        assert_eq!(http_status(tonic::Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(tonic::Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(micro_access::admission::method_of(ADMITTED_AS), Some(("debug", ENDPOINT.to_string())));
    }
}
