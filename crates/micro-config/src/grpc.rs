//! The `config.Config` gRPC service (docs/compatibility.md §3.4 plus our `Watch`) over [`Config`].
//!
//! The namespace is `request.namespace` when set, else the request [`Context`]'s (inserted by
//! the server's interceptor), else `micro`. Values cross the wire as JSON text in `Value.data`;
//! invalid JSON is rejected here (the CLI is the one that falls back to "treat it as a string").
//! Errors become [`Status`] in exactly one place, `From<ConfigError> for Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use micro_core::Context;
use micro_proto::config::config_server::{self, ConfigServer};
use micro_proto::config::{
    Change as WireChange, ChangeSet, DeleteRequest, DeleteResponse, GetRequest, GetResponse, ReadRequest,
    ReadResponse, SetRequest, SetResponse, Value as WireValue, WatchRequest, WatchResponse,
};
use micro_store::StoreError;
use serde_json::Value;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::document::MAX_VALUE_BYTES;
use crate::service::{Config, ConfigError, WatchError};

/// The message of every not-found answer, as the original sent it (the CLI prints it).
pub const NOT_FOUND: &str = "Not found";

/// The `format` of every value this service returns.
const FORMAT: &str = "json";

/// The gRPC face of a [`Config`].
#[derive(Debug, Clone)]
pub struct ConfigService {
    config: Arc<Config>,
}

impl ConfigService {
    /// Serves `config` over gRPC.
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }
}

/// The ready-to-mount tonic server for `config`.
pub fn server(config: Arc<Config>) -> ConfigServer<ConfigService> {
    ConfigServer::new(ConfigService::new(config))
}

impl From<ConfigError> for Status {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::NotFound => Status::not_found(NOT_FOUND),
            ConfigError::Invalid(message) => Status::invalid_argument(message),
            ConfigError::DocumentTooLarge(message) => Status::failed_precondition(message),
            ConfigError::Secret(message) => {
                tracing::error!(cause = %message, "config secret cannot be opened");
                Status::internal(format!(
                    "{message} (is the server running with its original config secret key?)"
                ))
            }
            ConfigError::Corrupt(message) => {
                tracing::error!(cause = %message, "config document corrupt");
                Status::internal(message)
            }
            // Store messages may name files and engine internals: log them, send a summary.
            ConfigError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "config store unavailable");
                Status::unavailable("the config store is unavailable; try again")
            }
            ConfigError::Store(err) => {
                tracing::error!(cause = %err, "config store failed");
                Status::internal("the config store failed; see the server log")
            }
        }
    }
}

/// The namespace a request acts in: the one it names, else its context's; the caller must be
/// authorised for it (docs/compatibility.md §6.6).
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn namespace<T>(request: &Request<T>, requested: &str) -> Result<String, Status> {
    let context = request.extensions().get::<Context>().cloned().unwrap_or_default();
    let namespace = if requested.is_empty() { context.namespace.clone() } else { requested.to_string() };
    context.authorize(&namespace).map_err(Status::from)?;
    Ok(namespace)
}

fn wire_value(value: &Value) -> WireValue {
    WireValue { data: value.to_string(), format: FORMAT.to_string() }
}

fn unix(time: SystemTime) -> std::time::Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// A stable, cheap fingerprint of the data (64-bit FNV-1a, hex). The original used MD5; clients
/// only compare checksums for equality.
fn checksum(data: &str) -> String {
    let hash = data.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The stream type of `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl config_server::Config for ConfigService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let namespace = namespace(&request, &request.get_ref().namespace)?;
        let GetRequest { path, options, .. } = request.into_inner();
        let reveal = options.is_some_and(|options| options.secret);
        let value = self.config.get(&namespace, &path, reveal).await?;
        Ok(Response::new(GetResponse { value: Some(wire_value(&value)) }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let namespace = namespace(&request, &request.get_ref().namespace)?;
        let SetRequest { path, value, options, .. } = request.into_inner();
        let Some(value) = value else {
            return Err(Status::invalid_argument(
                "missing value: set value.data to the JSON text of the value",
            ));
        };
        if value.data.len() > MAX_VALUE_BYTES {
            return Err(Status::invalid_argument(format!(
                "the value is {} bytes, larger than the limit of {MAX_VALUE_BYTES} bytes",
                value.data.len()
            )));
        }
        let parsed: Value = serde_json::from_str(&value.data)
            .map_err(|err| Status::invalid_argument(format!("the value is not valid JSON: {err}")))?;
        let secret = options.is_some_and(|options| options.secret);
        self.config.set(&namespace, &path, parsed, secret).await?;
        Ok(Response::new(SetResponse {}))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let namespace = namespace(&request, &request.get_ref().namespace)?;
        self.config.delete(&namespace, &request.get_ref().path).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let namespace = namespace(&request, &request.get_ref().namespace)?;
        let path = request.into_inner().path;
        let data = self.config.get(&namespace, &path, false).await?.to_string();
        let change_set = ChangeSet {
            checksum: checksum(&data),
            data,
            format: FORMAT.to_string(),
            source: "config".to_string(),
            timestamp: i64::try_from(unix(SystemTime::now()).as_secs()).unwrap_or(i64::MAX),
        };
        Ok(Response::new(ReadResponse {
            change: Some(WireChange { namespace, path, change_set: Some(change_set) }),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let namespace = namespace(&request, &request.get_ref().namespace)?;
        let WatchRequest { path, options, .. } = request.into_inner();
        let reveal = options.is_some_and(|options| options.secret);
        let watcher = self.config.watch(&namespace, &path, reveal)?;
        // A lagging gRPC watcher is ended with ABORTED rather than left silently stale: the
        // client re-opens the watch and reads the current value.
        let stream = watcher.map(|item| match item {
            Ok(change) => Ok(WatchResponse {
                namespace: change.namespace,
                path: change.path,
                value: Some(wire_value(&change.value)),
                action: change.action.as_str().to_string(),
                timestamp: i64::try_from(unix(change.timestamp).as_millis()).unwrap_or(i64::MAX),
            }),
            Err(WatchError::Lagged { missed }) => Err(Status::aborted(format!(
                "the watch fell behind and skipped {missed} changes: watch again and read the current value"
            ))),
            Err(WatchError::Config(err)) => Err(err.into()),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_come_from_the_request_then_the_context() {
        let anonymous = namespace(&Request::new(()), "").unwrap_err();
        assert_eq!(
            (anonymous.code(), anonymous.message()),
            (tonic::Code::Unauthenticated, "An account is required")
        );

        let mut request = Request::new(());
        request.extensions_mut().insert(Context::member("micro"));
        assert_eq!(namespace(&request, "").unwrap(), "micro");
        assert_eq!(namespace(&request, "foo").unwrap(), "foo", "micro may act in any namespace");

        let mut request = Request::new(());
        request.extensions_mut().insert(Context::member("foo"));
        assert_eq!(namespace(&request, "").unwrap(), "foo");
        assert_eq!(namespace(&request, "foo").unwrap(), "foo");
        let denied = namespace(&request, "bar").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn errors_map_to_statuses() {
        let cases = [
            (ConfigError::NotFound, tonic::Code::NotFound, "Not found"),
            (ConfigError::Invalid("bad path".into()), tonic::Code::InvalidArgument, "bad path"),
            (ConfigError::DocumentTooLarge("too big".into()), tonic::Code::FailedPrecondition, "too big"),
            (ConfigError::Secret("cannot open".into()), tonic::Code::Internal, "cannot open"),
        ];
        for (err, code, message) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(message), "{}", status.message());
        }
        for (err, code) in [
            (StoreError::Unavailable("/srv/store.redb locked".into()), tonic::Code::Unavailable),
            (StoreError::Internal("/srv/store.redb corrupt".into()), tonic::Code::Internal),
            (StoreError::Invalid("key too long".into()), tonic::Code::Internal),
        ] {
            let status = Status::from(ConfigError::Store(err));
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("/srv"), "no internals on the wire: {}", status.message());
        }
    }

    #[test]
    fn checksums_are_stable_fnv1a() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_eq!(checksum("a"), "af63dc4c8601ec8c");
        assert_ne!(checksum("{\"a\":1}"), checksum("{\"a\":2}"));
    }
}
