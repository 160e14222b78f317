use micro::tokio_stream::StreamExt;
use micro::tokio_stream::wrappers::ReceiverStream;
use micro::tonic::{Request, Response, Status, Streaming};

use crate::{Ping, Pong, StreamingRequest, StreamingResponse, helloworld_server};

/// How many responses one `Stream` call may ask for.
const MAX_STREAM_COUNT: i64 = 1000;

pub struct Helloworld;

#[micro::tonic::async_trait]
impl helloworld_server::Helloworld for Helloworld {
    /// Greets the caller by name.
    async fn call(
        &self,
        request: Request<crate::Request>,
    ) -> Result<Response<crate::Response>, Status> {
        let name = request.into_inner().name;
        micro::tracing::info!(%name, "Received Helloworld.Call request");
        Ok(Response::new(crate::Response {
            msg: format!("Hello {name}"),
        }))
    }

    type StreamStream = ReceiverStream<Result<StreamingResponse, Status>>;

    /// Sends `count` responses, numbered from 0.
    async fn stream(
        &self,
        request: Request<StreamingRequest>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let count = request.into_inner().count;
        if !(0..=MAX_STREAM_COUNT).contains(&count) {
            return Err(Status::invalid_argument(format!(
                "count must be between 0 and {MAX_STREAM_COUNT}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for i in 0..count {
                if tx.send(Ok(StreamingResponse { count: i })).await.is_err() {
                    break; // the caller went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PingPongStream = ReceiverStream<Result<Pong, Status>>;

    /// Answers every ping with a pong of the same stroke.
    async fn ping_pong(
        &self,
        request: Request<Streaming<Ping>>,
    ) -> Result<Response<Self::PingPongStream>, Status> {
        let mut pings = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(ping) = pings.next().await {
                let pong = ping.map(|ping| Pong {
                    stroke: ping.stroke,
                });
                if tx.send(pong).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
