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

#[tonic::async_trait]
impl Registry for CoreRegistry {
    async fn get_service(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
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

    async fn list_services(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        // Core services are visible from every namespace, as domain `micro` is public.
        let services = CORE_SERVICES.iter().map(|name| Self::core(name)).collect();
        Ok(Response::new(ListResponse { services }))
    }

    type WatchStream = tokio_stream::Empty<Result<micro_proto::registry::Result, Status>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watching the registry is not supported by this server yet"))
    }
}
