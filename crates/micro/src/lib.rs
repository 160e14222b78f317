//! The micro service framework: write gRPC handlers, get a service that registers itself with
//! the platform, verifies its callers, and reaches the store, config and other services without
//! wiring.
//!
//! ```text
//! helloworld/
//!   Cargo.toml     [dependencies] micro, tokio   [build-dependencies] micro (feature "build")
//!   build.rs       fn main() { micro::build::compile("proto/helloworld.proto").unwrap(); }
//!   proto/helloworld.proto
//!   src/main.rs    below
//!   src/handler.rs impl helloworld_server::Helloworld for Helloworld { ... }
//! ```
//!
//! ```ignore
//! mod handler;
//! micro::include_proto!("helloworld");
//!
//! #[tokio::main]
//! async fn main() -> micro::Result<()> {
//!     micro::Service::new("helloworld")
//!         .handle(helloworld_server::HelloworldServer::new(handler::Helloworld))
//!         .run()
//!         .await
//! }
//! ```
//!
//! # Environment
//!
//! | variable | default | |
//! |---|---|---|
//! | `MICRO_SERVICE_NAME` | the name given to [`Service::new`] | overrides it |
//! | `MICRO_SERVICE_VERSION` | `latest` | |
//! | `MICRO_SERVICE_ADDRESS` | `127.0.0.1:0` | where to listen; a wildcard IP is advertised as loopback |
//! | `MICRO_SERVER_ADDRESS`, else `MICRO_PROXY` | the CLI environment's, else `127.0.0.1:8081` | the micro server; TLS with `https://HOST:PORT` or on port 443 |
//! | `MICRO_TLS_CA` | the CLI environment's `--ca` | a CA certificate (PEM) trusted besides the system's, for a server with a private CA |
//! | `MICRO_NAMESPACE` | the CLI environment's, else `micro` | registry domain, store database, config document |
//! | `MICRO_AUTH_ID`, `MICRO_AUTH_SECRET` | — | the service's account (`micro run` injects them) |
//! | `MICRO_REGISTER_TTL` | `90s` | how long the registry keeps a silent node |
//! | `MICRO_REGISTER_INTERVAL` | `30s` | how often the service re-registers |
//! | `MICRO_ENV` | the CLI's selected environment | whose `micro login` a hand-started service borrows |
//! | `MICRO_LOG`, else `RUST_LOG` | `info` | log filter (logs go to stderr) |
//! | `MICRO_LOG_FORMAT` | `text` | `json` writes one JSON object per line, with the fields of the current spans |
//! | `MICRO_METRICS` | on | `off` (or `false`, `0`) stops counting requests; `GET /metrics` answers 404 |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` and the other `OTEL_*` | the server's :8081 when `micro run` starts it, else unset | where spans go over OTLP; unset: none recorded, callers' `traceparent` still passed on (docs/observability.md#traces) |
//!
//! Without `MICRO_AUTH_ID`/`MICRO_AUTH_SECRET`, a service started by hand uses the developer's
//! `micro login` (from `MICRO_HOME`) to create an account of its own for as long as it runs;
//! with neither it runs anonymously and says registration needs one of them.
//!
//! A server reached over TLS (`https://…`, port 443, or the CLI environment's `--tls`) must
//! present a certificate for the address's host, signed by one of the system's authorities or
//! by `MICRO_TLS_CA`. The service itself serves plain gRPC: the server's proxy and gateway call
//! it on the address it registered.
//!
//! # Metrics
//!
//! The service's port also answers `GET /metrics` over HTTP/1.1: Prometheus text with the
//! service's calls by endpoint and code (`micro_requests_total{listener="service"}` and the
//! server's other request metrics), the process's RSS, CPU and open files, and whatever the
//! handlers record through the `metrics` facade ([`metrics`], re-exported): a handler's
//! `micro::metrics::counter!(...)` shows there too. The service's rules decide who may read it,
//! as the resource `service:<name>:Debug.Metrics` (docs/security.md, "Metrics"). A program that
//! installed a `metrics` recorder of its own first keeps it: `/metrics` then answers 404.
//!
//! # Layout
//!
//! - [`Service`]: handlers, listening, registration and heartbeat, graceful shutdown.
//! - [`auth`]: the caller's [`Account`](auth::Account) (tokens verified locally, rules applied).
//! - [`client`]: [`channel`](client::channel)`("name")` for calling other services, round robin.
//! - [`store`], [`config`], [`events`], [`broker`]: the platform's store, config, durable event
//!   streams and pub/sub, scoped to the service's namespace; [`Service::subscribe`] handles
//!   broker messages in a service.
//! - [`build`] (feature `build`): code generation for `build.rs`; [`include_proto!`] includes it.

mod env;
mod error;
mod login;
mod metrics_http;
mod platform;
mod registry;
mod service;
mod session;

pub mod auth;
pub mod broker;
#[cfg(feature = "build")]
pub mod build;
pub mod client;
pub mod config;
pub mod events;
pub mod store;

pub use error::{Error, Result};
/// Re-exported for handlers' own metrics: `micro::metrics::counter!("orders_total").increment(1)`
/// appears in the service's `GET /metrics` beside the request metrics (docs/observability.md).
pub use metrics;
pub use service::Service;
/// Re-exported for `#[tokio::main]` and the channels and streams handlers use.
pub use tokio;
/// Re-exported for server-streaming handlers (`ReceiverStream`, `StreamExt`).
pub use tokio_stream;
/// Re-exported for handlers: `tonic::Request`, `tonic::Response`, `tonic::Status`, streaming.
pub use tonic;
/// Re-exported for logging from handlers: `micro::tracing::info!(%name, "Received call")`.
/// [`Service::run`] sends it to stderr, filtered by `MICRO_LOG` (else `RUST_LOG`, default `info`).
pub use tracing;

/// What the code [`build`] generates refers to. Not for use by hand.
#[doc(hidden)]
pub mod codegen {
    pub use {prost, prost_types, tonic, tonic_prost};

    /// A generated server that knows the descriptors of its protobuf package.
    pub trait Described {
        /// The encoded `google.protobuf.FileDescriptorSet` of the server's package and imports.
        const FILE_DESCRIPTOR_SET: &'static [u8];
    }
}

/// Includes the code [`build::compile`](crate::build) generated for protobuf package `$package`:
/// its messages, `<service>_client` and `<service>_server` modules, and `FILE_DESCRIPTOR_SET`.
///
/// ```ignore
/// micro::include_proto!("helloworld");
/// // helloworld_server::HelloworldServer, helloworld_client::HelloworldClient, Request, ...
/// ```
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}

/// A random (version 4) UUID, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
pub(crate) fn uuid() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness is vanishingly rare; ids then only need to differ per process and time.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = (nanos ^ u128::from(std::process::id())).to_le_bytes();
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_v4_and_differ() {
        let (a, b) = (super::uuid(), super::uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
