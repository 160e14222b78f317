//! The runtime's metrics (docs/observability.md): their names, and how builds and restarts are
//! recorded through the `metrics` facade. The server renders them with the rest; services by
//! status are counted when it renders ([`crate::Runtime::census`]).

use std::time::Duration;

/// Builds finished, by `result` (`success`, `failure`), as a histogram of their durations
/// (cargo fetch and cargo build, not the upload or checkout before them).
pub const BUILD_DURATION_SECONDS: &str = "micro_runtime_build_duration_seconds";
/// The upper bounds, in seconds, of the buckets of [`BUILD_DURATION_SECONDS`]: from a second (a
/// rebuild with nothing to do) to half an hour (a first build of a large dependency tree).
pub const BUILD_DURATION_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Crashes of a service process after which the runtime restarted it (with backoff).
pub const RESTARTS_TOTAL: &str = "micro_runtime_restarts_total";
/// Services the runtime manages, by `status` (`pending`, `building`, `starting`, `running`,
/// `stopping`, `stopped`, `error`), counted at each scrape.
pub const SERVICES: &str = "micro_runtime_services";

/// Records one build that took `elapsed`.
pub(crate) fn build_finished(elapsed: Duration, succeeded: bool) {
    let result = if succeeded { "success" } else { "failure" };
    metrics::histogram!(BUILD_DURATION_SECONDS, "result" => result).record(elapsed.as_secs_f64());
}

/// Records one restart after a crash.
pub(crate) fn restarted() {
    metrics::counter!(RESTARTS_TOTAL).increment(1);
}
