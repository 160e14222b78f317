//! The `broker.Broker` gRPC service (docs/compatibility.md §3.6) over a [`Broker`].
//!
//! Every call needs an account allowed in the caller's namespace (docs/compatibility.md §6.6),
//! and topics and queues live in that namespace. Publish copies the call's metadata into the
//! message headers without overwriting headers the message already has; credentials and
//! transport headers are never copied.

use std::pin::Pin;
use std::sync::Arc;

use micro_core::Context;
use micro_proto::broker::broker_server::{self, BrokerServer};
use micro_proto::broker::{Empty, Message as WireMessage, PublishRequest, SubscribeRequest};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::KeyAndValueRef;
use tonic::{Request, Response, Status};

use crate::{Broker, BrokerError, Message};

/// Call metadata that is not copied into message headers: credentials and transport details.
const UNCOPIED_METADATA: &[&str] =
    &["authorization", "content-type", "te", "user-agent", "accept-encoding", "host"];

/// The gRPC face of a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerService {
    broker: Arc<dyn Broker>,
}

impl BrokerService {
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self { broker }
    }
}

/// The ready-to-mount tonic server for `broker`.
pub fn server(broker: Arc<dyn Broker>) -> BrokerServer<BrokerService> {
    BrokerServer::new(BrokerService::new(broker))
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Self {
        match err {
            BrokerError::Invalid(message) => Status::invalid_argument(message),
            BrokerError::Full(message) => Status::resource_exhausted(message),
            BrokerError::Unavailable(cause) => {
                tracing::error!(%cause, "broker unavailable");
                Status::unavailable("the broker is unavailable; see the server log")
            }
        }
    }
}

/// The caller's namespace, once its account is allowed there.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn namespace_of<T>(request: &Request<T>) -> Result<String, Status> {
    let context = request.extensions().get::<Context>().cloned().unwrap_or_default();
    context.authorize(&context.namespace).map_err(Status::from)?;
    Ok(context.namespace)
}

fn copy_metadata(
    metadata: &tonic::metadata::MetadataMap,
    header: &mut std::collections::HashMap<String, String>,
) {
    for entry in metadata.iter() {
        let KeyAndValueRef::Ascii(name, value) = entry else { continue };
        let name = name.as_str();
        if UNCOPIED_METADATA.contains(&name) || name.starts_with("grpc-") {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        header.entry(name.to_string()).or_insert_with(|| value.to_string());
    }
}

/// The stream type of `Subscribe`.
pub type SubscribeStream = Pin<Box<dyn Stream<Item = Result<WireMessage, Status>> + Send>>;

#[tonic::async_trait]
impl broker_server::Broker for BrokerService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<Empty>, Status> {
        let namespace = namespace_of(&request)?;
        let (metadata, _, request) = request.into_parts();
        let wire = request.message.unwrap_or_default();
        let mut message = Message { header: wire.header, body: wire.body };
        copy_metadata(&metadata, &mut message.header);
        self.broker.publish(&namespace, &request.topic, message).await?;
        Ok(Response::new(Empty {}))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let namespace = namespace_of(&request)?;
        let request = request.into_inner();
        let queue = (!request.queue.is_empty()).then_some(request.queue);
        let subscription = self.broker.subscribe(&namespace, &request.topic, queue).await?;
        // The subscription lives in the stream: when the client goes away tonic drops the
        // stream, which unsubscribes.
        let stream = subscription
            .map(|message| Ok(WireMessage { header: message.header.clone(), body: message.body.clone() }));
        Ok(Response::new(Box::pin(stream)))
    }
}
