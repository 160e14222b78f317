//! The gateway's one error type and its one mapping to HTTP: the original's JSON error
//! `{"Id","Code","Detail","Status"}` with the HTTP status equal to `Code` (docs/compatibility.md §4.4).
//! A `RESOURCE_EXHAUSTED` status (a refused login: micro-auth's login limits or its full hashing
//! queue) is a 429 with `Retry-After`: the seconds its detail ends with (`...; retry in N s`),
//! else [`DEFAULT_RETRY_AFTER_SECS`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tonic::{Code, Status};

/// The `Retry-After` of a 429 whose detail names no wait.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// The `Id` of errors the gateway itself raises.
pub const GATEWAY_ID: &str = "go.micro.api";

/// A failed request, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Where the error comes from: a service name or [`GATEWAY_ID`].
    pub id: String,
    pub status: StatusCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self { id: GATEWAY_ID.to_string(), status, detail: detail.into() }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// An answer of `service` that cannot be shown as JSON (`error` says why): a 502, the
    /// service answered but the gateway cannot pass the answer on.
    pub fn unshowable_answer(service: &str, error: &super::body::Error) -> Self {
        Self { id: service.to_string(), status: StatusCode::BAD_GATEWAY, detail: error.to_string() }
    }

    /// A failed call to `service`, mapped from its gRPC status. A service that answers with a
    /// micro error JSON (`{"id","code","detail","status"}`) as the status message keeps its
    /// own id, code and detail, as the original's clients did.
    pub fn from_status(service: &str, status: &Status) -> Self {
        if let Some(micro) = MicroError::parse(status.message()) {
            return micro;
        }
        let code = match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
            // tonic's own deadline surfaces as CANCELLED "Timeout expired".
            Code::Cancelled if status.message() == "Timeout expired" => StatusCode::REQUEST_TIMEOUT,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = match status.code() {
            // A bare UNIMPLEMENTED is tonic's answer to a path the server does not serve.
            Code::Unimplemented if status.message().is_empty() => {
                format!("{service} does not serve this endpoint")
            }
            Code::Unavailable => format!("{service} is unavailable: {}", status.message()),
            _ => status.message().to_string(),
        };
        Self { id: service.to_string(), status: code, detail }
    }

    /// The gRPC code of this error, for the protocols that answer in gRPC codes (gRPC-Web,
    /// Connect): [`ApiError::from_status`]'s table read backwards, so a refusal is the same
    /// refusal on every protocol (401 is `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, ...).
    pub fn code(&self) -> Code {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
            StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            status if status.is_server_error() => Code::Internal,
            _ => Code::Unknown,
        }
    }

    /// This error as a gRPC status: [`ApiError::code`] and the detail.
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.detail.clone())
    }

    /// The JSON body, as the original printed it: capitalised Go field names, in Go's order.
    pub fn body(&self) -> String {
        let body = Body {
            id: &self.id,
            code: self.status.as_u16(),
            detail: &self.detail,
            status: self.status.canonical_reason().unwrap_or(""),
        };
        serde_json::to_string(&body).expect("a struct of strings and a number serialises")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.id, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            let secs = retry_after_secs(&self.detail).unwrap_or(DEFAULT_RETRY_AFTER_SECS);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The `N` of a detail ending `retry in N s`, as micro-auth's refusals do.
fn retry_after_secs(detail: &str) -> Option<u64> {
    let (_, wait) = detail.rsplit_once("retry in ")?;
    wait.strip_suffix(" s")?.parse().ok()
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    id: &'a str,
    code: u16,
    detail: &'a str,
    status: &'a str,
}

/// The error JSON of Go micro services (`errors.Error`), lowercase keys.
#[derive(Deserialize)]
struct MicroError {
    #[serde(default)]
    id: String,
    code: u16,
    #[serde(default)]
    detail: String,
}

impl MicroError {
    fn parse(message: &str) -> Option<ApiError> {
        if !message.starts_with('{') {
            return None;
        }
        let error: MicroError = serde_json::from_str(message).ok()?;
        let status =
            StatusCode::from_u16(error.code).ok().filter(|s| s.is_client_error() || s.is_server_error())?;
        Some(ApiError { id: error.id, status, detail: error.detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_map_to_http_statuses() {
        let table = [
            (Code::NotFound, 404),
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::DeadlineExceeded, 408),
            (Code::AlreadyExists, 409),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::ResourceExhausted, 429),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in table {
            let error = ApiError::from_status("store", &Status::new(code, "why"));
            assert_eq!(error.status.as_u16(), http, "{code:?}");
            assert_eq!(error.id, "store");
        }
        let timeout = ApiError::from_status("x", &Status::cancelled("Timeout expired"));
        assert_eq!(timeout.status, StatusCode::REQUEST_TIMEOUT);
        let unrouted = ApiError::from_status("x", &Status::unimplemented(""));
        assert_eq!(unrouted.detail, "x does not serve this endpoint");

        let micro = r#"{"id":"helloworld","code":401,"detail":"Unauthorized call","status":"Unauthorized"}"#;
        let error = ApiError::from_status("helloworld", &Status::internal(micro));
        assert_eq!(
            (error.id.as_str(), error.status.as_u16(), error.detail.as_str()),
            ("helloworld", 401, "Unauthorized call")
        );
        let not_micro = ApiError::from_status("x", &Status::internal("{not json"));
        assert_eq!((not_micro.status.as_u16(), not_micro.detail.as_str()), (500, "{not json"));
    }

    #[test]
    fn grpc_codes_survive_the_round_trip_through_http_statuses() {
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::DeadlineExceeded,
            Code::AlreadyExists,
            Code::Unimplemented,
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            let error = ApiError::from_status("x", &Status::new(code, "why"));
            assert_eq!(error.code(), code, "{code:?}");
            assert_eq!(
                error.to_status().message(),
                if code == Code::Unavailable { "x is unavailable: why" } else { "why" }
            );
        }
        assert_eq!(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "big").code(), Code::ResourceExhausted);
        assert_eq!(ApiError::new(StatusCode::MISDIRECTED_REQUEST, "host").code(), Code::Unknown);
    }

    #[test]
    fn refusals_are_429_with_retry_after() {
        let throttled = Status::resource_exhausted(
            "too many failed logins for this account: MAX_FAILED_LOGINS_PER_ACCOUNT = 5 within 300 s; retry in 30 s",
        );
        let response = ApiError::from_status("auth", &throttled).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
        let other = ApiError::from_status("x", &Status::resource_exhausted("quota")).into_response();
        assert_eq!(other.headers()[header::RETRY_AFTER], "1", "a default when the detail names none");
        let not_limited = ApiError::not_found("retry in 5 s").into_response();
        assert!(not_limited.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(retry_after_secs("busy; retry in 1 s"), Some(1));
        assert_eq!(retry_after_secs("retry in soon s"), None);
    }

    #[tokio::test]
    async fn errors_render_as_the_original_json_with_matching_status() {
        let response = ApiError::not_found("service foo not found").into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"Id":"go.micro.api","Code":404,"Detail":"service foo not found","Status":"Not Found"}"#
        );
    }
}
