//! The registry as far as the foundation goes: it answers which core services this server hosts.
//! User services register through the registry service of a later issue, which replaces this.

use micro_proto::registry::registry_server::Registry;
use micro_proto::registry::{
    DeregisterResponse, GetServiceRequest, GetServiceResponse, ListServicesRequest, ListServicesResponse,
    RegisterResponse, Service, WatchRequest,
};
use tonic::{Request, Response, Status};

/// Names of the core services hosted in this process, in `micro services` order.
pub const CORE_SERVICES: &[&str] = &["config", "registry", "store"];

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

#[tonic::async_trait]
impl Registry for CoreRegistry {
    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<GetServiceResponse>, Status> {
        let name = request.into_inner().service;
        if !CORE_SERVICES.contains(&name.as_str()) {
            return Err(Status::not_found(format!("service {name} not found")));
        }
        Ok(Response::new(GetServiceResponse { services: vec![Self::core(&name)] }))
    }

    async fn register(&self, _: Request<Service>) -> Result<Response<RegisterResponse>, Status> {
        Err(Status::unimplemented("registering user services is not supported by this server yet"))
    }

    async fn deregister(&self, _: Request<Service>) -> Result<Response<DeregisterResponse>, Status> {
        Err(Status::unimplemented("registering user services is not supported by this server yet"))
    }

    async fn list_services(
        &self,
        _: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        // Core services are visible from every namespace, as domain `micro` is public.
        let services = CORE_SERVICES.iter().map(|name| Self::core(name)).collect();
        Ok(Response::new(ListServicesResponse { services }))
    }

    type WatchStream = tokio_stream::Empty<Result<micro_proto::registry::Result, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watching the registry is not supported by this server yet"))
    }
}
