//! The runtime: turns source into running, supervised services (docs/runtime.md; docs/compatibility.md §9).
//!
//! - `service`: [`Runtime`], the API: create, read, update, delete, upload, logs, and the
//!   checks of every request before anything is stored.
//! - `state`: what the runtime knows about each service: desired state persisted in the store
//!   (database `micro`, table `runtime`, key `service/<ns>/<name>/<version>`, restored on
//!   open) and observed state (status, restarts, pid).
//! - `supervisor`: process handling: one supervisor task per service runs its child process in
//!   its own process group, restarts it on crash with exponential backoff, stops it with
//!   SIGTERM then SIGKILL; builds and starts an update beside the running process and swaps
//!   them once the new one is ready; and the account each launch runs as.
//! - [`source`]: uploaded tarballs (`source://…`, unpacked safely), git sources, path checks.
//! - `manifest`: points every dependency of a source on the framework at the SDK this binary
//!   installed (`micro_sdk`), checking the version asked for.
//! - `cargo`: `cargo fetch`, then `cargo build --release --offline` into the namespace's
//!   target dir under `MICRO_HOME/build/targets`.
//! - `sandbox`: the Landlock box of every build and service process.
//! - [`logs`]: the per-service log file under `MICRO_HOME/logs/<ns>/<name>.log`, and the
//!   per-version build log under `MICRO_HOME/logs/<ns>/build/`.
//! - [`metrics`]: the names of the runtime's metrics; builds and restarts recorded as they happen.
//! - [`grpc`]: the `runtime.Runtime`, `runtime.Source` and `runtime.Build` services.
//! - `options` and `error`: [`RuntimeOptions`] and [`RuntimeError`].
//!
//! Modules depend one way: `grpc` → `service` → `supervisor` → `state`, each also using the
//! modules below it (`cargo`, `source`, `sandbox`, `logs`, `options`, `error`); no module uses
//! one that uses it, and this file only declares and re-exports.
//!
//! Status lifecycle (metadata `status` and the proto's `status` enum): pending → building →
//! starting → running, or error (metadata `error`) / stopped.

mod cargo;
mod error;
pub mod grpc;
pub mod logs;
mod manifest;
pub mod metrics;
mod options;
mod sandbox;
mod service;
pub mod source;
mod state;
mod supervisor;
#[cfg(test)]
mod tests;

pub use micro_core::names::MAX_NAME_BYTES;

pub use crate::error::RuntimeError;
pub use crate::logs::MAX_LOG_LINE_BYTES;
pub use crate::options::{
    BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET, Launch, READY_TIMEOUT, ReadyProbe, RuntimeOptions,
    STARTUP_GRACE, STOP_GRACE, TABLE,
};
pub use crate::sandbox::Sandbox;
pub use crate::service::{
    CreateSpec, DEFAULT_VERSION, MAX_ENV_BYTES, MAX_ENV_ENTRIES, MAX_SERVICES, Process, Runtime,
};
pub use crate::source::{MAX_UPLOAD_BYTES, SWEEP_INTERVAL, UPLOAD_GRACE};
pub use crate::state::{CONCURRENT_BUILDS, ServiceInfo, Status, UpdatePhase};
