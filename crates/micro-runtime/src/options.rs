//! A runtime's tunables ([`RuntimeOptions`]) and their production values.

use std::path::PathBuf;
use std::time::Duration;

use crate::sandbox::Sandbox;
use crate::source::{SWEEP_INTERVAL, UPLOAD_GRACE};

/// How long a stopped service gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// First delay before restarting a crashed service; doubled per crash up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run lasting this long resets the backoff to [`BACKOFF_INITIAL`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// A service that logs neither `Registered` nor `Listening on` counts as running after this long alive.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);
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
}

impl RuntimeOptions {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self {
            target_dir: home.join("build").join("targets"),
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
        }
    }
}
