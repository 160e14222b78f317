//! The :8081 listener: one request-context layer in front of every core service, plus gRPC
//! reflection and `grpc.health.v1`.

use std::future::Future;
use std::sync::Arc;

use micro_core::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::InterceptorLayer;
use tonic::transport::Server;
use tonic::{Request, Status};

use crate::registry::CoreRegistry;

/// Metadata key naming the namespace a call acts in (`Micro-Namespace` in the original).
pub const NAMESPACE_HEADER: &str = "micro-namespace";

/// Resolves the request context once, before any core service sees the call. The auth issue
/// extends this with token → account and rule checks.
#[allow(clippy::result_large_err, reason = "tonic's interceptor signature returns Status by value")]
pub fn resolve_context(mut request: Request<()>) -> Result<Request<()>, Status> {
    let namespace = match request.metadata().get(NAMESPACE_HEADER) {
        None => micro_core::DEFAULT_NAMESPACE.to_string(),
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| Status::invalid_argument("the micro-namespace header must be ASCII"))?;
            micro_core::validate_namespace(value).map_err(|err| Status::invalid_argument(err.to_string()))?;
            value.to_string()
        }
    };
    request.extensions_mut().insert(Context::anonymous(namespace));
    Ok(request)
}

/// Serves every core service this server hosts on `listener` until `shutdown` resolves.
pub async fn serve(
    store: Arc<dyn micro_store::Store>,
    config: Arc<micro_config::Config>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    health.set_serving::<RegistryServer<CoreRegistry>>().await;

    Server::builder()
        .layer(InterceptorLayer::new(resolve_context))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(micro_store::grpc::server(store))
        .add_service(ConfigServer::new(micro_config::grpc::ConfigService::new(config)))
        .add_service(RegistryServer::new(CoreRegistry::new()))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_comes_from_the_namespace_header() {
        let resolved = resolve_context(Request::new(())).unwrap();
        assert_eq!(resolved.extensions().get::<Context>(), Some(&Context::default()));

        let mut request = Request::new(());
        request.metadata_mut().insert(NAMESPACE_HEADER, "foo".parse().unwrap());
        let resolved = resolve_context(request).unwrap();
        assert_eq!(resolved.extensions().get::<Context>().unwrap().namespace, "foo");

        let mut request = Request::new(());
        request.metadata_mut().insert(NAMESPACE_HEADER, "../etc".parse().unwrap());
        let status = resolve_context(request).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("invalid namespace"), "{}", status.message());
    }
}
