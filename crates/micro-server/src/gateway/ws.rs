//! Calls over websockets (docs/compatibility.md §4.7), for every kind of method.
//!
//! The request messages are the query parameters (when there are any) and then each text or
//! binary message the client sends, as a JSON object. Unary and server-streaming methods take
//! one request; client-streaming and bidirectional ones take requests until the client sends an
//! empty message or closes. Every response is sent as a text message of protobuf-JSON; a failure
//! is sent as the error JSON, and the socket is then closed.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures::StreamExt as _;
use micro_core::task::AbortOnDrop;
use prost_reflect::DynamicMessage;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tracing::debug;

use super::body;
use super::call::Target;
use super::errors::ApiError;
use crate::nodes::Once;

/// Requests buffered between the socket and the call.
const REQUEST_BUFFER: usize = 16;

/// One upgraded call.
pub struct Session {
    pub target: Target,
    pub metadata: MetadataMap,
    /// The request given in the query, sent first.
    pub initial: Option<Map<String, Value>>,
}

impl Session {
    pub async fn run(self, mut socket: WebSocket) {
        let Session { target, metadata, initial } = self;
        let method = target.method.clone();
        let service = target.service.clone();
        let takes_many = method.is_client_streaming();
        let (requests_tx, requests_rx) = mpsc::channel::<DynamicMessage>(REQUEST_BUFFER);
        let (responses_tx, mut responses_rx) =
            mpsc::channel::<Result<DynamicMessage, ApiError>>(REQUEST_BUFFER);

        // The call runs beside the socket loop: a client-streaming server may answer only once
        // its input has ended, while the loop keeps reading that input.
        let call = {
            let target = target.clone();
            tokio::spawn(async move {
                let outcome = call(target, metadata, requests_rx, &responses_tx).await;
                if let Err(error) = outcome {
                    let _ = responses_tx.send(Err(error)).await;
                }
            })
        };
        // The call task ends with the session, however the session ends.
        let _call = AbortOnDrop::from(call);

        let mut requests = Some(requests_tx);
        if let Some(fields) = initial {
            match body::to_message(&method.input(), fields) {
                Ok(message) => {
                    send_request(&mut requests, message, takes_many).await;
                }
                Err(error) => return fail(socket, &ApiError::from(error)).await,
            }
        }

        loop {
            tokio::select! {
                incoming = socket.recv(), if requests.is_some() => {
                    let bytes = match incoming {
                        Some(Ok(Message::Text(text))) => text.as_str().as_bytes().to_vec(),
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            // The client is gone or done; answers can no longer be delivered.
                            debug!("websocket closed by the client");
                            return;
                        }
                    };
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        requests = None;
                        continue;
                    }
                    let message = body::json_object(&bytes)
                        .and_then(|fields| body::to_message(&method.input(), fields));
                    match message {
                        Ok(message) => send_request(&mut requests, message, takes_many).await,
                        Err(error) => return fail(socket, &ApiError::from(error)).await,
                    }
                }
                response = responses_rx.recv() => match response {
                    Some(Ok(message)) => {
                        let json = match body::to_json(&message) {
                            Ok(json) => json,
                            Err(error) => {
                                return fail(socket, &ApiError::unshowable_answer(&service, &error)).await;
                            }
                        };
                        let text = String::from_utf8(json).expect("serde_json writes UTF-8");
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => return fail(socket, &error).await,
                    None => {
                        let _ = socket.send(Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: Utf8Bytes::default() }))).await;
                        return;
                    }
                },
            }
        }
    }
}

/// Queues one request; methods that take a single request then end their input.
async fn send_request(
    requests: &mut Option<mpsc::Sender<DynamicMessage>>,
    message: DynamicMessage,
    takes_many: bool,
) {
    if let Some(sender) = requests {
        // A closed channel means the call already ended; its outcome arrives as a response.
        let _ = sender.send(message).await;
    }
    if !takes_many {
        *requests = None;
    }
}

/// Makes the call with the requests as they come, forwarding every response. A node that
/// cannot be reached leaves the requests, unread, to the next node.
async fn call(
    target: Target,
    metadata: MetadataMap,
    requests: mpsc::Receiver<DynamicMessage>,
    responses: &mpsc::Sender<Result<DynamicMessage, ApiError>>,
) -> Result<(), ApiError> {
    let requests = Once::new(tokio_stream::wrappers::ReceiverStream::new(requests));
    // Unary and server-streaming servers read one message from the stream: the same bytes on
    // the wire as a unary call.
    let mut answers = target
        .call(metadata, requests, |mut grpc, request, path, codec| async move {
            grpc.streaming(request, path, codec).await
        })
        .await?;
    while let Some(answer) = answers.next().await {
        let answer = answer.map_err(|status| ApiError::from_status(&target.service, &status));
        let failed = answer.is_err();
        if responses.send(answer).await.is_err() || failed {
            break;
        }
    }
    Ok(())
}

async fn fail(mut socket: WebSocket, error: &ApiError) {
    let _ = socket.send(Message::Text(error.body().into())).await;
    let frame = CloseFrame { code: close_code::ERROR, reason: Utf8Bytes::default() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
