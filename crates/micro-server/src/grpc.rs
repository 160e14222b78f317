//! The :8081 listener: the auth gate in front of every core service, gRPC reflection,
//! `grpc.health.v1`, and the [`proxy`](crate::proxy) for every other service.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::Connected;

use crate::gate::AuthLayer;
use crate::proxy::Proxy;

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
}

/// Serves every core service of `core` on `listener` until `shutdown` resolves.
pub async fn serve(
    core: Core,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Service::new(core).await?.serve(nodelay(TcpListenerStream::new(listener)), shutdown).await
}

/// What :8081 serves — the gate in front of the core services, reflection, health and the proxy —
/// built once and served on as many listeners as the server has (TLS outside, plain text on
/// loopback for the gateway and local services).
#[derive(Clone)]
pub struct Service {
    routes: Routes,
    auth: Arc<micro_auth::Auth>,
}

impl Service {
    pub async fn new(core: Core) -> anyhow::Result<Self> {
        build(core).await
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
            .layer(AuthLayer::new(self.auth))
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await?;
        Ok(())
    }
}

async fn build(core: Core) -> anyhow::Result<Service> {
    let Core { store, config, auth, registry, runtime, broker, events } = core;
    use micro_proto::config::config_server::ConfigServer;
    use micro_proto::registry::registry_server::RegistryServer;
    use micro_proto::store::store_server::StoreServer;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(micro_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(micro_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<StoreServer<micro_store::grpc::StoreService>>().await;
    health.set_serving::<ConfigServer<micro_config::grpc::ConfigService>>().await;
    health.set_serving::<RegistryServer<micro_registry::grpc::RegistryService>>().await;
    let (auth_service, accounts_service, rules_service) = micro_auth::grpc::services(auth.clone());
    let (runtime_service, source_service) = micro_runtime::grpc::servers(runtime);
    for name in
        ["auth.Auth", "auth.Accounts", "auth.Rules", "runtime.Runtime", "runtime.Source", "broker.Broker"]
    {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }

    let mut routes = Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(micro_store::grpc::server(store))
        .add_service(ConfigServer::new(micro_config::grpc::ConfigService::new(config)))
        .add_service(micro_registry::grpc::server(registry.clone()))
        .add_service(auth_service)
        .add_service(accounts_service)
        .add_service(rules_service)
        .add_service(runtime_service)
        .add_service(source_service)
        .add_service(micro_broker::grpc::server(broker))
        .add_service(micro_events::grpc::stream_server(events.clone()))
        .add_service(micro_events::grpc::store_server(events));
    // Whatever no core service claims goes to the proxy; the gate runs in front of both.
    let proxy = Proxy::new(registry, crate::forward::Forwarder::new(auth.clone()));
    let router = routes.routes().into_axum_router().fallback(move |request: axum::extract::Request| {
        let proxy = proxy.clone();
        async move { proxy.forward(request).await }
    });

    Ok(Service { routes: Routes::from(router), auth })
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
