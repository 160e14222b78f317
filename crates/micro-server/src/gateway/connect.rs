//! The Connect protocol on the gateway port (docs/clients.md), for `@connectrpc/connect-node`,
//! `@connectrpc/connect-web` and the other Connect clients: `POST /{package}.{Service}/{Method}`.
//!
//! - **Unary**: `application/json` or `application/proto` with `Connect-Protocol-Version: 1`;
//!   the body is the request message, the answer the response message. An error is the JSON
//!   `{"code":"unauthenticated","message":...}` with the HTTP status Connect gives that code.
//! - **Server streaming**: `application/connect+json` or `application/connect+proto`; the
//!   request is one envelope (flags byte, 4-byte big-endian length, message), the answer 200
//!   with one envelope per message and a last one flagged end-of-stream holding
//!   `{"error":{...}}` when the call failed, `{}` otherwise.
//!
//! No maintained crate serves Connect for messages known only at run time, so the envelopes
//! are here; JSON is `micro_proto::json`, the gateway's one mapping ([`super::body`]). The call
//! is the gateway's: `Gateway::admit`, the node choice, deadline and body limit of the JSON
//! paths; errors are [`ApiError`]s, coded by [`ApiError::code`]. Compressed requests are
//! refused (no client compresses unless told to); client- and bidirectional-streaming methods
//! are `unimplemented` (they need HTTP/2 end to end: use gRPC on :8081 or a websocket).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt as _;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Code;

use super::call::Resent;
use super::resolve::Route;
use super::{ApiError, Gateway, body};

/// The header every Connect client sends, and the only version there is.
pub const PROTOCOL_VERSION_HEADER: &str = "connect-protocol-version";

/// Envelope flag: the envelope ends the stream and holds its outcome as JSON.
const END_STREAM: u8 = 0x02;
/// Envelope flag: the message is compressed.
const COMPRESSED: u8 = 0x01;

/// How a Connect request is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub codec: Codec,
    /// Enveloped messages (`application/connect+*`), for streaming methods.
    pub streaming: bool,
}

/// The encoding of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Kind {
    /// The Connect request a media type (lowercase, without parameters) and the headers say,
    /// if any: a unary one needs the version header, so that the JSON paths' own
    /// `application/json` requests stay theirs.
    pub fn of(content_type: &str, headers: &HeaderMap) -> Option<Self> {
        let versioned = headers.get(PROTOCOL_VERSION_HEADER).is_some_and(|version| version == "1");
        let (codec, streaming) = match content_type {
            "application/json" if versioned => (Codec::Json, false),
            "application/proto" if versioned => (Codec::Proto, false),
            "application/connect+json" => (Codec::Json, true),
            "application/connect+proto" => (Codec::Proto, true),
            _ => return None,
        };
        Some(Self { codec, streaming })
    }

    /// The content type of the answer: the request's.
    fn content_type(self) -> &'static str {
        match (self.codec, self.streaming) {
            (Codec::Json, false) => "application/json",
            (Codec::Proto, false) => "application/proto",
            (Codec::Json, true) => "application/connect+json",
            (Codec::Proto, true) => "application/connect+proto",
        }
    }
}

impl Codec {
    fn decode(self, input: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, ApiError> {
        match self {
            Codec::Proto => DynamicMessage::decode(input.clone(), bytes)
                .map_err(|err| ApiError::bad_request(format!("invalid protobuf message: {err}"))),
            Codec::Json => {
                let fields = if bytes.iter().all(u8::is_ascii_whitespace) {
                    serde_json::Map::new()
                } else {
                    body::json_object(bytes)?
                };
                Ok(body::to_message(input, fields)?)
            }
        }
    }

    fn encode(self, service: &str, message: &DynamicMessage) -> Result<Vec<u8>, ApiError> {
        match self {
            Codec::Proto => Ok(message.encode_to_vec()),
            Codec::Json => {
                body::to_json(message).map_err(|error| ApiError::unshowable_answer(service, &error))
            }
        }
    }
}

/// Connect's name of a code (its error JSON's `code`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary error with `code`, as the Connect protocol fixes it.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Connect's error JSON of `error`.
pub fn error_json(error: &ApiError) -> serde_json::Value {
    serde_json::json!({ "code": code_name(error.code()), "message": error.detail })
}

/// A unary call's error answer.
pub fn unary_error(error: &ApiError) -> Response {
    let mut response = Response::new(Body::from(error_json(error).to_string()));
    *response.status_mut() = http_status(error.code());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// One envelope: `flags`, the payload's length (big-endian `u32`), the payload.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let length = u32::try_from(payload.len()).expect("messages are limited far below 4 GiB");
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(flags);
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(payload);
    Bytes::from(bytes)
}

/// The end-of-stream envelope: `{}`, or `{"error":{...}}` for a failed call.
pub fn end_of_stream(error: Option<&ApiError>) -> Bytes {
    let outcome = match error {
        Some(error) => serde_json::json!({ "error": error_json(error) }),
        None => serde_json::json!({}),
    };
    envelope(END_STREAM, outcome.to_string().as_bytes())
}

/// The one message of a server-streaming request: exactly one uncompressed envelope.
pub fn single_message(bytes: &[u8]) -> Result<&[u8], ApiError> {
    let invalid = |why: &str| ApiError::bad_request(format!("invalid Connect envelope: {why}"));
    let (head, rest) = bytes.split_at_checked(5).ok_or_else(|| invalid("shorter than its 5-byte prefix"))?;
    let flags = head[0];
    if flags & COMPRESSED != 0 {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "compressed messages are not supported"));
    }
    if flags & END_STREAM != 0 {
        return Err(invalid("the request ends the stream before any message"));
    }
    let length = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
    if rest.len() != length {
        return Err(invalid(&format!("it announces {length} bytes but {} follow", rest.len())));
    }
    Ok(rest)
}

impl Gateway {
    /// Serves one Connect request of `kind` for `route`.
    pub(super) async fn connect(&self, kind: Kind, route: Route, request: Request) -> Response {
        match self.connect_call(kind, &route, request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(status = error.status.as_u16(), detail = %error.detail, "call refused");
                if kind.streaming {
                    // A stream's outcome is always in its last envelope, under a 200.
                    answer(kind, Body::from(end_of_stream(Some(&error))))
                } else {
                    unary_error(&error)
                }
            }
        }
    }

    async fn connect_call(&self, kind: Kind, route: &Route, request: Request) -> Result<Response, ApiError> {
        let (parts, request_body) = request.into_parts();
        let encoding = if kind.streaming { "connect-content-encoding" } else { "content-encoding" };
        if parts.headers.get(encoding).is_some_and(|value| value != "identity") {
            return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "compressed requests are not supported"));
        }
        // Read whole before anything is decided: a client still sending when a refusal comes
        // sees a broken pipe instead of the refusal.
        let bytes = super::read_body(request_body, self.inner.options.body_limit, &parts).await?;
        let (target, metadata, _) = self.admit(route, &parts, Some(parts.uri.path())).await?;
        let method = target.method.clone();
        if method.is_client_streaming() {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "{} is a client-streaming method: call it over gRPC or a websocket",
                    method.full_name()
                ),
            ));
        }
        if method.is_server_streaming() != kind.streaming {
            let wanted =
                if method.is_server_streaming() { "application/connect+json" } else { "application/json" };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{} takes {wanted} (or its proto form)", method.full_name()),
            ));
        }
        let payload = if kind.streaming { single_message(&bytes)? } else { &bytes[..] };
        let message = kind.codec.decode(&method.input(), payload)?;

        if !kind.streaming {
            let response = self.unary(&target, metadata, message).await?;
            return Ok(answer(kind, Body::from(kind.codec.encode(&target.service, &response)?)));
        }
        let responses = target
            .call(metadata, Resent::new(message), |mut grpc, request, path, codec| async move {
                grpc.server_streaming(request, path, codec).await
            })
            .await?;
        let service = target.service.clone();
        let envelopes = responses.map(Some).chain(futures::stream::once(async { None })).scan(
            false,
            move |ended, item| {
                if *ended {
                    return futures::future::ready(None);
                }
                let envelope = match item {
                    Some(Ok(message)) => match kind.codec.encode(&service, &message) {
                        Ok(bytes) => envelope(0, &bytes),
                        Err(error) => {
                            *ended = true;
                            end_of_stream(Some(&error))
                        }
                    },
                    Some(Err(status)) => {
                        *ended = true;
                        end_of_stream(Some(&ApiError::from_status(&service, &status)))
                    }
                    None => {
                        *ended = true;
                        end_of_stream(None)
                    }
                };
                futures::future::ready(Some(Ok::<_, std::convert::Infallible>(envelope)))
            },
        );
        Ok(answer(kind, Body::from_stream(envelopes)))
    }
}

/// A 200 with `body`, typed as `kind` says.
fn answer(kind: Kind, body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.content_type()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_media_type_and_version_header() {
        let mut versioned = HeaderMap::new();
        versioned.insert(PROTOCOL_VERSION_HEADER, HeaderValue::from_static("1"));
        let plain = HeaderMap::new();
        let kind = |codec, streaming| Some(Kind { codec, streaming });
        assert_eq!(Kind::of("application/json", &versioned), kind(Codec::Json, false));
        assert_eq!(Kind::of("application/proto", &versioned), kind(Codec::Proto, false));
        assert_eq!(Kind::of("application/json", &plain), None, "the JSON paths' own requests");
        assert_eq!(Kind::of("application/connect+json", &plain), kind(Codec::Json, true));
        assert_eq!(Kind::of("application/connect+proto", &versioned), kind(Codec::Proto, true));
        assert_eq!(Kind::of("application/grpc-web", &versioned), None);
        for (codec, streaming) in [(Codec::Json, false), (Codec::Proto, true)] {
            let kind = Kind { codec, streaming };
            assert_eq!(
                Kind::of(kind.content_type(), &versioned),
                Some(kind),
                "answers in the request's type"
            );
        }
    }

    #[test]
    fn envelopes_round_trip_and_bad_ones_are_refused() {
        let bytes = envelope(0, b"hello");
        assert_eq!(&bytes[..], b"\x00\x00\x00\x00\x05hello");
        assert_eq!(single_message(&bytes).unwrap(), b"hello");
        assert_eq!(single_message(&envelope(0, b"")).unwrap(), b"");
        for bad in [&b"\x00\x00\x00"[..], b"\x00\x00\x00\x00\x06hello", b"\x00\x00\x00\x00\x04hello"] {
            assert_eq!(single_message(bad).unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
        }
        assert_eq!(single_message(&envelope(END_STREAM, b"{}")).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(single_message(&envelope(COMPRESSED, b"x")).unwrap_err().code(), Code::Unimplemented);

        let ok = end_of_stream(None);
        assert_eq!(&ok[..], b"\x02\x00\x00\x00\x02{}");
        let failed = end_of_stream(Some(&ApiError::new(StatusCode::UNAUTHORIZED, "no token")));
        assert_eq!(failed[0], END_STREAM);
        let outcome: serde_json::Value = serde_json::from_slice(&failed[5..]).unwrap();
        assert_eq!(outcome, serde_json::json!({"error": {"code": "unauthenticated", "message": "no token"}}));
    }

    #[tokio::test]
    async fn unary_errors_carry_connects_status_and_code() {
        let cases = [
            (StatusCode::UNAUTHORIZED, 401, "unauthenticated"),
            (StatusCode::FORBIDDEN, 403, "permission_denied"),
            (StatusCode::NOT_FOUND, 404, "not_found"),
            (StatusCode::BAD_REQUEST, 400, "invalid_argument"),
            (StatusCode::REQUEST_TIMEOUT, 504, "deadline_exceeded"),
            (StatusCode::PAYLOAD_TOO_LARGE, 429, "resource_exhausted"),
            (StatusCode::SERVICE_UNAVAILABLE, 503, "unavailable"),
            (StatusCode::INTERNAL_SERVER_ERROR, 500, "internal"),
        ];
        for (status, http, code) in cases {
            let response = unary_error(&ApiError::new(status, "why"));
            assert_eq!(response.status().as_u16(), http, "{status}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json, serde_json::json!({"code": code, "message": "why"}));
        }
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }
}
