//! The :8081 listener: the auth gate in front of every core service, gRPC reflection
//! ([`crate::reflection`], core and registered services),
//! `grpc.health.v1`, and the [`proxy`](crate::proxy) for every other service.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::Server;
use tonic::transport::server::Connected;

use crate::gate::{AuthLayer, Gate};
use crate::metrics::{Listener, RequestMetricsLayer};
use crate::nodes::Nodes;
use crate::proxy::Proxy;
use crate::reflection::Reflection;

/// The core services one server hosts, each over the backend chosen at boot.
#[derive(Clone)]
pub struct Core {
    pub store: Arc<dyn micro_store::Store>,
    pub config: Arc<micro_config::Config>,
    pub auth: Arc<micro_auth::Auth>,
    pub registry: Arc<dyn micro_registry::Registry>,
    pub runtime: micro_runtime::Runtime,
    pub broker: Arc<dyn micro_broker::Broker>,
    pub events: Arc<dyn micro_events::Events>,
    /// Scheduled jobs (`jobs.Jobs`); not served when `None`.
    pub jobs: Option<Arc<micro_jobs::Jobs>>,
}

/// Serves every core service of `core` on `listener` until `shutdown` resolves.
pub async fn serve(
    core: Core,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Service::new(core, Nodes::new()).await?.serve(nodelay(TcpListenerStream::new(listener)), shutdown).await
}

/// What :8081 serves — the gate in front of the core services, reflection, health and the proxy —
/// built once and served on as many listeners as the server has (TLS outside, plain text on
/// loopback for the gateway and local services).
#[derive(Clone)]
pub struct Service {
    routes: Routes,
    gate: Gate,
}

impl Service {
    /// The services of `core`, with the proxy choosing nodes from `nodes`, the pool the HTTP
    /// gateway shares (one round robin, one view of unreachable nodes).
    pub async fn new(core: Core, nodes: Nodes) -> anyhow::Result<Self> {
        build(core, nodes).await
    }

    /// Serves on the connections of `incoming` (plain TCP or TLS streams) until `shutdown`.
    pub async fn serve<I, IO, IE>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()>
    where
        I: Stream<Item = Result<IO, IE>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Server::builder()
            // Outermost, so that the gate finds the metrics' slot and refusals are counted too.
            .layer(RequestMetricsLayer::new(Listener::Grpc).observe(crate::metrics::count_logins))
            // Every call's server span, refusals included; a proxied call's `traceparent` names it.
            .layer(micro_core::trace::ServerLayer::forwarding())
            .layer(AuthLayer::new(self.gate))
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

async fn build(core: Core, nodes: Nodes) -> anyhow::Result<Service> {
    let Core { store, config, auth, registry, runtime, broker, events, jobs } = core;
    use micro_proto::config::config_server::ConfigServer;

    let (health, health_service) = tonic_health::server::health_reporter();
    let (auth_service, accounts_service, rules_service) = micro_auth::grpc::services(auth.clone());
    let (runtime_service, source_service, build_service) = micro_runtime::grpc::servers(runtime.clone());

    // Whatever no core service claims goes to the proxy; the gate runs in front of both.
    let proxy = Proxy::new(registry.clone(), crate::forward::Forwarder::new(auth.clone()), nodes);
    let mut served = Served::default();
    served
        .add(health_service)
        .add(micro_store::grpc::server(store))
        .add(ConfigServer::new(micro_config::grpc::ConfigService::new(config)))
        .add(micro_registry::grpc::server(registry.clone()))
        .add(auth_service)
        .add(accounts_service)
        .add(rules_service)
        .add(runtime_service)
        .add(source_service)
        .add(build_service)
        .add(micro_broker::grpc::server(broker))
        .add(micro_events::grpc::stream_server(events.clone()))
        .add(micro_events::grpc::store_server(events))
        // `debug.Debug/Trace` and `Stats`: the trace ring and the request counts
        // (docs/observability.md); calls the gate
        // routed to a registered service's `debug.Debug` go to it.
        .add(crate::traces::Shared::new(crate::traces::server(runtime), proxy.clone()))
        // Services' spans (OTLP): into the ring, and on to the server's own collector.
        .add(crate::traces::receiver());
    if let Some(jobs) = jobs {
        served.add(micro_jobs::grpc::server(jobs));
    }
    // Reflection lists what is served here, itself included, and what the caller's namespace
    // registered; it asks the gate which registered services a caller may see.
    let mut names = served.names.clone();
    names.extend([
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    ]);
    let gate = Gate::new(auth, &names, Some(proxy.clone()));
    // The OTLP receiver's descriptors are not among the core protos: it is not listed.
    let listed: Vec<&'static str> =
        served.names.iter().copied().filter(|name| *name != crate::traces::RECEIVER).collect();
    let reflection = reflection(&listed, gate.clone(), registry)?;
    served.add(reflection.v1()).add(reflection.v1alpha());
    // Health reports every service served here, and nothing else.
    for name in &served.names {
        health.set_service_status(*name, tonic_health::ServingStatus::Serving).await;
    }
    let Served { routes, .. } = served;
    let router = routes.routes().into_axum_router().fallback(move |request: axum::extract::Request| {
        let proxy = proxy.clone();
        async move { proxy.forward(request).await }
    });

    Ok(Service { routes: Routes::from(router), gate })
}

/// The routes of :8081 and the name of every service on them, so that reflection lists what is
/// served and nothing else.
#[derive(Default)]
struct Served {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl Served {
    fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }
}

/// gRPC reflection, v1 and v1alpha ([`crate::reflection`]): the services in `served`, the two
/// reflection services themselves, and the services registered in the caller's namespace. The
/// core descriptor set holds every proto under `proto/`, also services no core service
/// implements (`store.BlobStore`): their types still resolve by name, but
/// `ListServices` names only what a call can reach here. A caller would otherwise see them
/// listed and get `Unimplemented` from the proxy.
fn reflection(
    served: &[&'static str],
    gate: Gate,
    registry: Arc<dyn micro_registry::Registry>,
) -> Result<Reflection, prost::DecodeError> {
    let core = [micro_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
    Reflection::new(&core, served, gate, registry)
}

/// `incoming` with Nagle's algorithm off on every connection ([`set_nodelay`]).
pub(crate) fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(incoming, |accepted| {
        if let Ok(stream) = &accepted {
            set_nodelay(stream);
        }
        accepted
    })
}

/// Turns Nagle's algorithm off on an accepted connection: gRPC and HTTP/2 write small frames,
/// and with it on, replies on a busy connection wait for the peer's delayed ACK (about 40 ms).
pub(crate) fn set_nodelay(stream: &tokio::net::TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(cause = %err, "cannot turn off Nagle's algorithm");
    }
}
