//! The registry as far as the foundation goes: it answers which core services this server hosts.
//! User services register through the registry service of a later issue, which replaces this.

use micro_proto::registry::registry_server::Registry;
use micro_proto::registry::{
    EmptyResponse, GetRequest, GetResponse, ListRequest, ListResponse, Service, WatchRequest,
};
use tonic::{Request, Response, Status};

/// Names of the core services hosted in this process, in `micro services` order.
pub const CORE_SERVICES: &[&str] = &["auth", "config", "registry", "store"];

/// Serves `registry.Registry` lookups for the core services.
#[derive(Debug, Default, Clone)]
pub struct CoreRegistry;

impl CoreRegistry {
    pub fn new() -> Self {
        Self
    }

    fn core(name: &str) -> Service {
        Service { name: name.to_string(), version: micro_core::VERSION.to_string(), ..Default::default() }
    }
}

/// Reads of the `micro` domain are public; reads of any other domain need an account allowed in
/// that namespace (reference §6.6). An empty domain is the caller's namespace.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn authorize_read<T>(request: &Request<T>, domain: &str) -> Result<(), Status> {
    let context = request.extensions().get::<micro_core::Context>().cloned().unwrap_or_default();
    let domain = if domain.is_empty() { context.namespace.as_str() } else { domain };
    if domain == micro_core::DEFAULT_NAMESPACE {
        return Ok(());
    }
    context.authorize(domain).map_err(|denied| match denied {
        micro_core::Denied::AccountRequired => Status::unauthenticated(denied.to_string()),
        micro_core::Denied::Namespace => Status::permission_denied(denied.to_string()),
    })
}

#[tonic::async_trait]
impl Registry for CoreRegistry {
    async fn get_service(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let domain =
            request.get_ref().options.as_ref().map(|options| options.domain.clone()).unwrap_or_default();
        authorize_read(&request, &domain)?;
        let name = request.into_inner().service;
        if !CORE_SERVICES.contains(&name.as_str()) {
            return Err(Status::not_found(format!("service {name} not found")));
        }
        Ok(Response::new(GetResponse { services: vec![Self::core(&name)] }))
    }

    async fn register(&self, _: Request<Service>) -> Result<Response<EmptyResponse>, Status> {
        Err(Status::unimplemented("registering user services is not supported by this server yet"))
    }

    async fn deregister(&self, _: Request<Service>) -> Result<Response<EmptyResponse>, Status> {
        Err(Status::unimplemented("registering user services is not supported by this server yet"))
    }

    async fn list_services(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let domain =
            request.get_ref().options.as_ref().map(|options| options.domain.clone()).unwrap_or_default();
        authorize_read(&request, &domain)?;
        // Core services are visible from every namespace, as domain `micro` is public.
        let services = CORE_SERVICES.iter().map(|name| Self::core(name)).collect();
        Ok(Response::new(ListResponse { services }))
    }

    type WatchStream = tokio_stream::Empty<Result<micro_proto::registry::Result, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watching the registry is not supported by this server yet"))
    }
}

#[cfg(test)]
mod tests {
    use micro_core::Context;
    use micro_proto::registry::Options;

    use super::*;

    fn list(domain: &str, context: Context) -> Request<ListRequest> {
        let options = Options { domain: domain.to_string(), ..Default::default() };
        let mut request = Request::new(ListRequest { options: Some(options) });
        request.extensions_mut().insert(context);
        request
    }

    #[tokio::test]
    async fn micro_is_public_other_domains_need_their_accounts() {
        let registry = CoreRegistry::new();
        let listed = registry.list_services(list("micro", Context::anonymous("micro"))).await.unwrap();
        assert_eq!(listed.into_inner().services.len(), CORE_SERVICES.len());
        let anonymous = registry.list_services(list("foo", Context::anonymous("foo"))).await.unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        let foreign = registry.list_services(list("foo", Context::member("bar"))).await.unwrap_err();
        assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
        assert!(registry.list_services(list("", Context::member("foo"))).await.is_ok());
    }
}
