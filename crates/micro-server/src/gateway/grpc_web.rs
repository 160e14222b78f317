//! gRPC-Web on the gateway port (docs/clients.md): `POST /{package}.{Service}/{Method}` with
//! `application/grpc-web[+proto]` or `application/grpc-web-text[+proto]` (base64).
//!
//! tonic-web translates the request into gRPC and the answer back (framing, base64, trailers in
//! a trailer frame); between the two, tonic's server side decodes the request message with the
//! method's registered descriptor and encodes the answers. The call itself is the gateway's:
//! the same `Gateway::admit` and node choice as the JSON paths, the same deadline and body
//! limit. A refusal (no token: `UNAUTHENTICATED`) is a trailers-only answer: HTTP 200 with
//! `grpc-status` and `grpc-message` in the headers, which is how gRPC-Web clients read it.
//! Client- and bidirectional-streaming methods are `UNIMPLEMENTED`: gRPC-Web has neither.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use micro_proto::dynamic::DynamicCodec;
use prost_reflect::DynamicMessage;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tower::{Layer as _, ServiceExt as _};

use super::call::{Resent, Target};
use super::resolve::Route;
use super::{ApiError, Gateway};

/// Whether a media type (lowercase, without parameters) is one of gRPC-Web's.
pub fn is_grpc_web(content_type: &str) -> bool {
    matches!(
        content_type,
        "application/grpc-web"
            | "application/grpc-web+proto"
            | "application/grpc-web-text"
            | "application/grpc-web-text+proto"
    )
}

impl Gateway {
    /// Serves one gRPC-Web request for `route`.
    pub(super) async fn grpc_web(&self, route: Route, request: Request) -> Response {
        let gateway = self.clone();
        let grpc = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let gateway = gateway.clone();
            let route = route.clone();
            async move { Ok::<_, Infallible>(gateway.grpc(&route, request).await) }
        });
        let answer = tonic_web::GrpcWebLayer::new().layer(grpc).oneshot(request).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(never) => match never {},
        };
        answer.map(Body::new)
    }

    /// One gRPC request (as tonic-web made it of the gRPC-Web one), answered as gRPC.
    async fn grpc(
        &self,
        route: &Route,
        request: http::Request<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let (parts, body) = request.into_parts();
        let limit = self.inner.options.body_limit;
        // Read whole before anything is decided: a client still sending when a refusal comes
        // sees a broken pipe instead of the refusal. The gateway's limit applies as everywhere.
        let admitted = match super::read_body(Body::new(body), limit, &parts).await {
            Ok(bytes) => {
                self.admit(route, &parts, Some(parts.uri.path())).await.map(|admitted| (admitted, bytes))
            }
            Err(error) => Err(error),
        };
        let ((target, metadata, _), bytes) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                tracing::debug!(status = error.status.as_u16(), detail = %error.detail, "call refused");
                return error.to_status().into_http();
            }
        };
        let request =
            http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)));
        let mut grpc = tonic::server::Grpc::new(DynamicCodec::new(target.method.input()))
            .max_decoding_message_size(limit);
        let method = target.method.clone();
        let call = Call(Some(Admitted { gateway: self.clone(), target, metadata }));
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => grpc.unary(call, request).await,
            (false, true) => grpc.server_streaming(call, request).await,
            _ => Status::unimplemented(format!(
                "{} is a client-streaming method, which gRPC-Web cannot carry: call it over gRPC or a websocket",
                method.full_name()
            ))
            .into_http(),
        }
    }
}

/// One admitted call: the request message tonic decoded, sent as the JSON paths send theirs.
/// tonic calls it once per request.
struct Call(Option<Admitted>);

struct Admitted {
    gateway: Gateway,
    target: Target,
    /// The metadata `Gateway::admit` built; the request's own is left (it is the same
    /// headers, before the gateway's changes).
    metadata: MetadataMap,
}

impl Call {
    fn take(&mut self) -> Admitted {
        self.0.take().expect("tonic calls the service of one request once")
    }
}

impl tonic::server::UnaryService<DynamicMessage> for Call {
    type Response = DynamicMessage;
    type Future = BoxFuture<'static, Result<tonic::Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: tonic::Request<DynamicMessage>) -> Self::Future {
        let Admitted { gateway, target, metadata } = self.take();
        Box::pin(async move {
            let answer = gateway.unary(&target, metadata, request.into_inner()).await;
            answer.map(tonic::Response::new).map_err(|error| error.to_status())
        })
    }
}

impl tonic::server::ServerStreamingService<DynamicMessage> for Call {
    type Response = DynamicMessage;
    type ResponseStream = BoxStream<'static, Result<DynamicMessage, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<DynamicMessage>) -> Self::Future {
        let Admitted { target, metadata, .. } = self.take();
        Box::pin(async move {
            let responses = target
                .call(
                    metadata,
                    Resent::new(request.into_inner()),
                    |mut grpc, request, path, codec| async move {
                        grpc.server_streaming(request, path, codec).await
                    },
                )
                .await
                .map_err(|error: ApiError| error.to_status())?;
            Ok(tonic::Response::new(responses.boxed()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_web_media_types() {
        for media in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            assert!(is_grpc_web(media), "{media}");
        }
        for media in ["application/grpc", "application/grpc-web+json", "application/json", ""] {
            assert!(!is_grpc_web(media), "{media}");
        }
    }
}
