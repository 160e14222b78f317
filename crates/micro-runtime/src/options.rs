//! A runtime's tunables ([`RuntimeOptions`]) and their production values.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::sandbox::Sandbox;
use crate::source::{SWEEP_INTERVAL, UPLOAD_GRACE};

/// How long a stopped service gets between SIGTERM and SIGKILL: longer than the framework's
/// own shutdown (leave 3 s, then drain in-flight calls 10 s; `crates/micro/src/service.rs`),
/// so a micro service stopped by an update or a kill finishes its calls.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// Shortest delay before restarting a crashed service; doubled per crash up to [`BACKOFF_MAX`],
/// each delay jittered between that schedule and the cap (`micro_core::backoff`).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run lasting this long resets the backoff to [`BACKOFF_INITIAL`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// A service that logs neither `Registered` nor `Listening on` counts as running after this long alive.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);
/// How long the new process of an update (`Runtime::update`) that announced itself as a micro
/// service (its `Listening on` line carries `launch=<MICRO_LAUNCH_ID>`) has to register and
/// answer health checks; past it the new process is killed and the old one keeps serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The table of database `micro` the desired state lives in, unless
/// [`RuntimeOptions::table`] names another.
pub const TABLE: &str = "runtime";

/// Tunables; [`RuntimeOptions::new`] gives the production values.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// `MICRO_HOME`: `sources/`, `build/`, `logs/` live below it.
    pub home: PathBuf,
    /// Where the cargo target dirs go, one per namespace (`<target_dir>/<namespace>`); default
    /// `home/build/targets`.
    pub target_dir: PathBuf,
    /// Where the framework's source embedded in this binary is installed (`micro_sdk::install`),
    /// and every build's `micro` dependency points (`<sdk_dir>/<version>/crates/micro`); default
    /// `home/sdk`.
    pub sdk_dir: PathBuf,
    pub stop_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    pub startup_grace: Duration,
    /// The store table of this runtime's desired state (database `micro`). Servers sharing a
    /// store each use their own, so each restores only the services it ran.
    pub table: String,
    /// How long an upload no service uses is kept ([`UPLOAD_GRACE`]).
    pub upload_grace: Duration,
    /// How often unused uploads are swept ([`SWEEP_INTERVAL`]).
    pub sweep_interval: Duration,
    /// How builds and services are confined; default [`Sandbox::detect`].
    pub sandbox: Sandbox,
    /// Whether a launch of a service is ready (registered and answering): the server injects
    /// one that reads its registry. Without one, the framework's `Registered` line counts.
    pub ready: Option<ReadyProbe>,
    /// [`READY_TIMEOUT`].
    pub ready_timeout: Duration,
}

/// One launch of a service, as the readiness probe is asked about it: `id` is the
/// `MICRO_LAUNCH_ID` the process got, which the framework puts in its registry node's
/// metadata as `launch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub id: String,
}

/// Answers whether a [`Launch`] is ready: registered under its name with a node whose metadata
/// `launch` is its id, and that node answers a gRPC health check. Asked repeatedly until it
/// says yes or [`RuntimeOptions::ready_timeout`] passes.
#[derive(Clone)]
pub struct ReadyProbe(Arc<dyn Fn(Launch) -> ProbeFuture + Send + Sync>);

/// What a [`ReadyProbe`] answers with.
type ProbeFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

impl ReadyProbe {
    pub fn new<F, Fut>(probe: F) -> Self
    where
        F: Fn(Launch) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self(Arc::new(move |launch| Box::pin(probe(launch))))
    }

    pub async fn ready(&self, launch: Launch) -> bool {
        (self.0)(launch).await
    }
}

impl std::fmt::Debug for ReadyProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyProbe")
    }
}

impl RuntimeOptions {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self {
            target_dir: home.join("build").join("targets"),
            sdk_dir: micro_core::home::sdk_dir(&home),
            home,
            stop_grace: STOP_GRACE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            backoff_reset: BACKOFF_RESET,
            startup_grace: STARTUP_GRACE,
            table: TABLE.to_string(),
            upload_grace: UPLOAD_GRACE,
            sweep_interval: SWEEP_INTERVAL,
            sandbox: Sandbox::detect(),
            ready: None,
            ready_timeout: READY_TIMEOUT,
        }
    }
}
