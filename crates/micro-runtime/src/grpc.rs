//! The `runtime.Runtime`, `runtime.Source` and `runtime.Build` gRPC services
//! (docs/compatibility.md §3.8) over a [`Runtime`].
//!
//! The namespace of a request is `options.namespace` when set (for `Build.Read`, whose request is
//! a `Service`, its metadata `namespace`), else the caller's; the caller must be allowed in it
//! (docs/compatibility.md §6.6).

use std::pin::Pin;

use micro_core::Context;
use micro_proto::runtime::build_server::{self, BuildServer};
use micro_proto::runtime::runtime_server::{self, RuntimeServer};
use micro_proto::runtime::source_server::{self, SourceServer};
use micro_proto::runtime::{
    BuildReadResponse, CreateRequest, CreateResponse, DeleteRequest, DeleteResponse, LogRecord, LogsRequest,
    ReadRequest, ReadResponse, Service, UpdateRequest, UpdateResponse, UploadRequest, UploadResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::RuntimeError;
use crate::service::{CreateSpec, Runtime};
use crate::state::ServiceInfo;

/// The gRPC face of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeService {
    runtime: Runtime,
}

/// The ready-to-mount tonic servers: `runtime.Runtime`, `runtime.Source` and `runtime.Build`.
pub fn servers(
    runtime: Runtime,
) -> (RuntimeServer<RuntimeService>, SourceServer<RuntimeService>, BuildServer<RuntimeService>) {
    let service = RuntimeService { runtime };
    (RuntimeServer::new(service.clone()), SourceServer::new(service.clone()), BuildServer::new(service))
}

impl From<RuntimeError> for Status {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Invalid(message) => Status::invalid_argument(message),
            RuntimeError::NotFound(message) => Status::not_found(message),
            RuntimeError::AlreadyExists(message) => Status::already_exists(message),
            RuntimeError::Full(message) => Status::resource_exhausted(message),
            RuntimeError::Denied(denied) => Status::from(denied),
            RuntimeError::Forbidden(message) => Status::permission_denied(message),
            RuntimeError::Build(message) => Status::failed_precondition(message),
            RuntimeError::Internal(message) => {
                tracing::error!(cause = %message, "runtime failure");
                Status::internal("the runtime failed; see the server log")
            }
        }
    }
}

fn context<T>(request: &Request<T>) -> Context {
    request.extensions().get::<Context>().cloned().unwrap_or_default()
}

fn to_proto(info: ServiceInfo) -> Service {
    Service {
        name: info.name,
        version: info.version,
        source: info.source,
        metadata: info.metadata.into_iter().collect(),
        status: info.status.code(),
    }
}

fn spec_of(service: Option<Service>) -> Result<CreateSpec, Status> {
    let service = service.ok_or_else(|| Status::invalid_argument("blank resource"))?;
    if service.name.is_empty() {
        return Err(Status::invalid_argument("blank resource: the service has no name"));
    }
    Ok(CreateSpec {
        name: service.name,
        version: service.version,
        source: service.source,
        metadata: service.metadata.into_iter().collect(),
        ..CreateSpec::default()
    })
}

/// The stream type of `Logs`.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogRecord, Status>> + Send>>;

#[tonic::async_trait]
impl runtime_server::Runtime for RuntimeService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let context = context(&request);
        let request = request.into_inner();
        let mut spec = spec_of(request.resource.and_then(|r| r.service))?;
        let options = request.options.unwrap_or_default();
        spec.command = options.command;
        spec.args = options.args;
        spec.env = options.env;
        spec.entrypoint = options.entrypoint;
        spec.kind = options.r#type;
        spec.secrets = options.secrets.into_iter().collect();
        self.runtime.create(&context, &options.namespace, spec).await?;
        Ok(Response::new(CreateResponse {}))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let context = context(&request);
        let options = request.into_inner().options.unwrap_or_default();
        let services = self.runtime.read(&context, &options.namespace, &options.service, &options.version)?;
        Ok(Response::new(ReadResponse { services: services.into_iter().map(to_proto).collect() }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let context = context(&request);
        let request = request.into_inner();
        let spec = spec_of(request.resource.and_then(|r| r.service))?;
        let namespace = request.options.map(|o| o.namespace).unwrap_or_default();
        self.runtime.delete(&context, &namespace, &spec.name, &spec.version).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn update(&self, request: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        let context = context(&request);
        let request = request.into_inner();
        let mut spec = spec_of(request.resource.and_then(|r| r.service))?;
        let options = request.options.unwrap_or_default();
        spec.entrypoint = options.entrypoint;
        self.runtime.update(&context, &options.namespace, spec).await?;
        Ok(Response::new(UpdateResponse {}))
    }

    type LogsStream = LogStream;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let context = context(&request);
        let request = request.into_inner();
        let namespace = request.options.map(|o| o.namespace).unwrap_or_default();
        let lines = self
            .runtime
            .logs_since(&context, &namespace, &request.service, request.count, request.since, request.stream)
            .await?;
        let service = request.service;
        let stream = ReceiverStream::new(lines).map(move |line| {
            Ok(LogRecord {
                timestamp: line.timestamp,
                metadata: [("service".to_string(), service.clone())].into(),
                message: line.message,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl source_server::Source for RuntimeService {
    async fn upload(
        &self,
        request: Request<Streaming<UploadRequest>>,
    ) -> Result<Response<UploadResponse>, Status> {
        let context = context(&request);
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument("empty upload: the first message must name the service")
        })?;
        let service = first
            .service
            .ok_or_else(|| Status::invalid_argument("the first upload message must name the service"))?;
        let head = tokio_stream::once(Ok(first.data));
        let rest = stream.map(|message| {
            message
                .map(|m| m.data)
                .map_err(|status| RuntimeError::Invalid(format!("upload interrupted: {}", status.message())))
        });
        let chunks = head.chain(rest);
        tokio::pin!(chunks);
        let id = self.runtime.upload(&context, &service.name, &service.version, chunks).await?;
        Ok(Response::new(UploadResponse { id }))
    }
}

/// The stream type of `Build.Read`.
pub type BuildStream = Pin<Box<dyn Stream<Item = Result<BuildReadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl build_server::Build for RuntimeService {
    type ReadStream = BuildStream;

    /// The output of the service version's last build, followed while that build runs
    /// ([`Runtime::build_output`]).
    async fn read(&self, request: Request<Service>) -> Result<Response<Self::ReadStream>, Status> {
        let context = context(&request);
        let service = request.into_inner();
        if service.name.is_empty() {
            return Err(Status::invalid_argument("blank resource: the service has no name"));
        }
        let namespace = service.metadata.get("namespace").map(String::as_str).unwrap_or_default();
        let chunks = self.runtime.build_output(&context, namespace, &service.name, &service.version).await?;
        let stream = ReceiverStream::new(chunks)
            .map(|chunk| chunk.map(|data| BuildReadResponse { data }).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }
}
