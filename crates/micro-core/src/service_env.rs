//! The `MICRO_*` environment the runtime gives every service it starts and the framework
//! (`micro::Service`) reads: one spelling for both sides (docs/runtime.md).

/// The service's name; overrides the name the code gives.
pub const SERVICE_NAME: &str = "MICRO_SERVICE_NAME";
/// The service's version (`latest` when unset).
pub const SERVICE_VERSION: &str = "MICRO_SERVICE_VERSION";
/// Where the service listens (`127.0.0.1:0` when unset: loopback, any free port).
pub const SERVICE_ADDRESS: &str = "MICRO_SERVICE_ADDRESS";
/// The micro server's gRPC address.
pub const SERVER_ADDRESS: &str = "MICRO_SERVER_ADDRESS";
/// The namespace the service acts in.
pub const NAMESPACE: &str = "MICRO_NAMESPACE";
/// The id of the service's account; set together with [`AUTH_SECRET`].
pub const AUTH_ID: &str = "MICRO_AUTH_ID";
/// The secret of the service's account, exchanged for tokens at start.
pub const AUTH_SECRET: &str = "MICRO_AUTH_SECRET";
/// A fresh id the runtime gives each process it starts. The framework puts it in the metadata of
/// the node it registers ([`LAUNCH_METADATA`]), so the runtime can tell when *this* process, not
/// an older one of the same service, is registered and ready for calls (docs/runtime.md).
pub const LAUNCH_ID: &str = "MICRO_LAUNCH_ID";
/// The registry node metadata key that carries [`LAUNCH_ID`].
pub const LAUNCH_METADATA: &str = "launch";
/// The log format the service writes (`text` or `json`): the runtime passes the server's own
/// (docs/observability.md, "Logs").
pub const LOG_FORMAT: &str = crate::logging::FORMAT_VAR;
