//! The `registry.Registry` gRPC service (docs/compatibility.md §3.7) over any [`Registry`] backend.
//!
//! The domain of a request is `options.domain` when set, else the caller's namespace. Reads of
//! domain `micro` are public; reads of other domains, and every write, need an account allowed
//! in that domain (docs/compatibility.md §6.6).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use micro_core::Context;
use micro_proto::registry::registry_server::{self, RegistryServer};
use micro_proto::registry::{
    EmptyResponse, GetRequest, GetResponse, ListRequest, ListResponse, Options, Result as WatchResult,
    Service, WatchRequest,
};
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use crate::{Registry, RegistryError};

/// The gRPC face of a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: Arc<dyn Registry>,
}

impl RegistryService {
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self { registry }
    }
}

/// The ready-to-mount tonic server for `registry`.
pub fn server(registry: Arc<dyn Registry>) -> RegistryServer<RegistryService> {
    RegistryServer::new(RegistryService::new(registry))
}

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid(message) => Status::invalid_argument(message),
            RegistryError::Full(message) => Status::resource_exhausted(message),
            RegistryError::Unavailable(cause) => {
                tracing::error!(%cause, "registry unavailable");
                Status::unavailable("the registry is unavailable; see the server log")
            }
        }
    }
}

fn context<T>(request: &Request<T>) -> Context {
    request.extensions().get::<Context>().cloned().unwrap_or_default()
}

fn domain_of(context: &Context, options: Option<&Options>) -> String {
    match options {
        Some(options) if !options.domain.is_empty() => options.domain.clone(),
        _ => context.namespace.clone(),
    }
}

/// The domain a read acts on: `micro` is public, others need an account allowed there.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn readable<T>(request: &Request<T>, options: Option<&Options>) -> Result<String, Status> {
    let context = context(request);
    let domain = domain_of(&context, options);
    if domain != micro_core::DEFAULT_NAMESPACE {
        context.authorize(&domain).map_err(Status::from)?;
    }
    Ok(domain)
}

/// The domain a write acts on; the caller must be allowed there.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn writable<T>(request: &Request<T>, options: Option<&Options>) -> Result<String, Status> {
    let context = context(request);
    let domain = domain_of(&context, options);
    micro_core::validate_namespace(&domain).map_err(|err| Status::invalid_argument(err.to_string()))?;
    context.authorize(&domain).map_err(Status::from)?;
    Ok(domain)
}

/// The stream type of `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResult, Status>> + Send>>;

#[tonic::async_trait]
impl registry_server::Registry for RegistryService {
    async fn get_service(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let domain = readable(&request, request.get_ref().options.as_ref())?;
        let name = &request.get_ref().service;
        let services = self.registry.get(&domain, name);
        if services.is_empty() {
            return Err(Status::not_found(format!("service {name} not found")));
        }
        Ok(Response::new(GetResponse { services }))
    }

    async fn register(&self, request: Request<Service>) -> Result<Response<EmptyResponse>, Status> {
        let domain = writable(&request, request.get_ref().options.as_ref())?;
        let service = request.into_inner();
        let ttl = service.options.as_ref().map_or(0, |options| options.ttl);
        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        self.registry.register(&domain, service, ttl).await?;
        Ok(Response::new(EmptyResponse {}))
    }

    async fn deregister(&self, request: Request<Service>) -> Result<Response<EmptyResponse>, Status> {
        let domain = writable(&request, request.get_ref().options.as_ref())?;
        self.registry.deregister(&domain, request.get_ref()).await?;
        Ok(Response::new(EmptyResponse {}))
    }

    async fn list_services(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let domain = readable(&request, request.get_ref().options.as_ref())?;
        Ok(Response::new(ListResponse { services: self.registry.list(&domain) }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let domain = readable(&request, request.get_ref().options.as_ref())?;
        let service = request.into_inner().service;
        let events = BroadcastStream::new(self.registry.watch());
        let stream = tokio_stream::StreamExt::filter_map(events, move |event| match event {
            Ok(event) if event.domain != domain => None,
            Ok(event) => {
                let name = event.result.service.as_ref().map_or("", |s| s.name.as_str());
                (service.is_empty() || name == service).then_some(Ok(event.result))
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, "a registry watcher fell behind and missed events");
                None
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
