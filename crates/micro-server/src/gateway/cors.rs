//! CORS as the original's API did it (reference §4.6): every response allows the request's
//! origin (or `*`) with credentials, and `OPTIONS` preflights are answered at once.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const ALLOW_METHODS: &str = "POST, PATCH, GET, OPTIONS, PUT, DELETE";
const ALLOW_HEADERS: &str =
    "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, Micro-Namespace";

/// Middleware: answers preflights, adds the CORS headers a response does not already carry.
pub async fn cors(request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    add_headers(response.headers_mut(), origin);
    response
}

fn add_headers(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    let origin = origin.unwrap_or_else(|| HeaderValue::from_static("*"));
    let pairs = [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
        (header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")),
        (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS)),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS)),
    ];
    for (name, value) in pairs {
        headers.entry(name).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::any;
    use tower::ServiceExt as _;

    use super::*;

    fn app() -> Router {
        let handler = || async {
            let mut response = "called".into_response();
            response
                .headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("https://own"));
            response
        };
        Router::new().route("/x", any(handler)).layer(axum::middleware::from_fn(cors))
    }

    #[tokio::test]
    async fn preflights_are_answered_and_headers_added_unless_set() {
        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri("/anything/at/all")
            .header(header::ORIGIN, "https://app.example")
            .body(Body::empty())
            .unwrap();
        let response = app().oneshot(preflight).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], ALLOW_METHODS);
        assert!(headers[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("Micro-Namespace"));
        let body = axum::body::to_bytes(response.into_body(), 64).await.unwrap();
        assert!(body.is_empty());

        let get = Request::builder().uri("/x").body(Body::empty()).unwrap();
        let response = app().oneshot(get).await.unwrap();
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://own",
            "set headers are kept"
        );
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");

        let mut headers = HeaderMap::new();
        add_headers(&mut headers, None);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }
}
