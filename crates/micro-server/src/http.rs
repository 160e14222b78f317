//! The :8080 listener. The API gateway proper (path resolution, JSON↔protobuf) arrives in a later
//! issue; until then it answers `GET /` with the version, like the original's API root.

use std::future::Future;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

/// The HTTP routes.
pub fn router() -> Router {
    Router::new().route("/", get(root)).fallback(not_found)
}

async fn root() -> Json<serde_json::Value> {
    Json(json!({ "version": micro_core::VERSION }))
}

async fn not_found() -> (StatusCode, Json<serde_json::Value>) {
    let body = json!({
        "Id": "micro.api",
        "Code": 404,
        "Detail": "not found",
        "Status": "Not Found",
    });
    (StatusCode::NOT_FOUND, Json(body))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn root_answers_with_the_version() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(router(), listener, async {
            let _ = rx.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["version"], micro_core::VERSION);

        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
