//! Prometheus metrics of the server process (docs/observability.md): what only the server
//! counts, on the machinery of [`micro_core::metrics`] (the request metrics' names, buckets and
//! layer, and the process's one recorder, shared with every framework service).
//!
//! - [`Metrics::install`] installs the recorder once per process (a test process may boot many
//!   servers; they share it), with the runtime's build buckets and the server's help texts, and
//!   renders the exposition text for `GET /metrics` ([`crate::http`]).
//! - [`RequestMetricsLayer`] wraps each listener (`http` on :8080, `grpc` on :8081); their
//!   admission code resolves each request's [`Slot`] (`Gateway::admit`, the :8081 gate) to a
//!   service and one of its methods: a registered or core service, so that the labels name only
//!   what exists ([`served_methods`]). [`count_logins`] counts `auth.Auth/Token` calls on :8081.
//! - [`rejected`] counts the admission decision's refusals by reason (the :8081 gate and the
//!   gateway call it); [`collect_runtime`] sets the runtime's services by status at each render;
//!   [`endpoint_stats`] reads the request counts for `debug.Debug/Stats` (`micro stats`).

use std::collections::HashSet;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
pub use micro_core::metrics::{
    DURATION_BUCKETS, HTTP_CLIENT_CLOSED, Listener, MAX_TARGETS, OTHER, PATH, REQUEST_BYTES_TOTAL,
    REQUEST_DURATION_SECONDS, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, RESPONSE_BYTES_TOTAL, RequestMetricsLayer,
    Slot, TALLY_BUCKETS, Target, UPKEEP_INTERVAL,
};

/// Calls of `auth.Auth/Token` (logins with a secret, and refresh-token exchanges), by `result`
/// (`success` or `failure`).
pub const AUTH_LOGINS_TOTAL: &str = "micro_auth_logins_total";

/// Calls refused by the admission decision (docs/security.md), by `listener` and `reason`
/// (`not_bearer`, `invalid_token`, `bad_namespace`, `foreign_namespace`, `unauthorized`,
/// `forbidden`: [`micro_access::admission::Refusal::reason`]).
pub const AUTH_REJECTIONS_TOTAL: &str = "micro_auth_rejections_total";

/// Reading [`PATH`] is admitted as this resource, `service:debug:Debug.Metrics`, in namespace
/// `micro` (docs/security.md, "Metrics").
pub const RESOURCE_SERVICE: &str = "debug";
/// See [`RESOURCE_SERVICE`].
pub const RESOURCE_ENDPOINT: &str = "Debug.Metrics";

/// The process's recorder: renders what every server in the process recorded. Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Option<micro_core::metrics::Metrics>);

/// When this process began counting requests: the first [`Metrics::install`].
static STARTED: std::sync::LazyLock<std::time::SystemTime> =
    std::sync::LazyLock::new(std::time::SystemTime::now);

/// When this process began counting requests ([`endpoint_stats`] counts from then).
pub fn counting_since() -> std::time::SystemTime {
    *STARTED
}

impl Metrics {
    /// The recorder of this process, installed on the first call. The `metrics` facade has one
    /// global recorder per process, so every server booted in it (tests boot several) shares it.
    /// When another recorder was installed first (a warning says so), `/metrics` stays empty.
    pub fn install() -> Self {
        std::sync::LazyLock::force(&STARTED);
        Self(micro_core::metrics::Metrics::install(builder, describe_server).ok())
    }

    /// The exposition text (Prometheus text format 0.0.4), process metrics read just now.
    pub fn render(&self) -> String {
        self.0.as_ref().map(micro_core::metrics::Metrics::render).unwrap_or_default()
    }
}

/// The runtime's services by status ([`micro_runtime::metrics::SERVICES`]), set at each render.
pub fn collect_runtime(runtime: micro_runtime::Runtime) -> micro_core::metrics::Collecting {
    micro_core::metrics::collect_before_render(move || {
        for (status, count) in runtime.census() {
            gauge!(micro_runtime::metrics::SERVICES, "status" => status.as_str()).set(count as f64);
        }
    })
}

/// Counts one call refused by admission on `listener`.
pub fn rejected(listener: Listener, refusal: &micro_access::admission::Refusal) {
    counter!(AUTH_REJECTIONS_TOTAL, "listener" => listener.as_str(), "reason" => refusal.reason())
        .increment(1);
}

/// Counts a finished call of `auth.Auth/Token` on :8081 (the [`RequestMetricsLayer`]'s observer
/// there) in [`AUTH_LOGINS_TOTAL`].
pub fn count_logins(target: &Target, code: &str) {
    if target.service() == "auth" && target.endpoint() == "Auth.Token" {
        let result = if code == "OK" { "success" } else { "failure" };
        counter!(AUTH_LOGINS_TOTAL, "result" => result).increment(1);
    }
}

/// The recorder's settings: the shared ones ([`micro_core::metrics::builder`]) and the
/// runtime's builds as a histogram with their own buckets.
fn builder(builder: PrometheusBuilder) -> PrometheusBuilder {
    builder
        .set_buckets_for_metric(
            Matcher::Full(micro_runtime::metrics::BUILD_DURATION_SECONDS.to_string()),
            micro_runtime::metrics::BUILD_DURATION_BUCKETS,
        )
        .expect("BUILD_DURATION_BUCKETS is not empty")
}

/// The help text of the server's own metrics, on the current recorder.
fn describe_server() {
    describe_counter!(AUTH_LOGINS_TOTAL, Unit::Count, "Auth.Token calls (logins and refreshes), by result.");
    describe_counter!(
        AUTH_REJECTIONS_TOTAL,
        Unit::Count,
        "Calls refused by admission, by listener and reason."
    );
    describe_histogram!(
        micro_runtime::metrics::BUILD_DURATION_SECONDS,
        Unit::Seconds,
        "Builds of services (cargo fetch and build), by result."
    );
    describe_counter!(
        micro_runtime::metrics::RESTARTS_TOTAL,
        Unit::Count,
        "Service processes restarted after a crash."
    );
    describe_gauge!(micro_runtime::metrics::SERVICES, Unit::Count, "Services of the runtime, by status.");
}

/// The `q` quantile (0 to 1) of the durations counted in `buckets` (see
/// [`micro_core::metrics::Tally`]), estimated as Prometheus's `histogram_quantile` does: linearly
/// within the bucket that holds it, and the last bound for those beyond it. Zero without calls.
fn quantile(buckets: &[u64; TALLY_BUCKETS], q: f64) -> Duration {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, count) in buckets.iter().enumerate() {
        if *count > 0 && (below + count) as f64 >= rank {
            let Some(upper) = DURATION_BUCKETS.get(index) else { break };
            let lower = if index == 0 { 0.0 } else { DURATION_BUCKETS[index - 1] };
            let within = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
            return Duration::from_secs_f64(lower + (upper - lower) * within);
        }
        below += count;
    }
    Duration::from_secs_f64(DURATION_BUCKETS[DURATION_BUCKETS.len() - 1])
}

/// What the server counted of one endpoint since its process started ([`endpoint_stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStats {
    pub service: String,
    pub endpoint: String,
    /// Calls answered on both listeners.
    pub requests: u64,
    /// Those answered with a gRPC status other than `OK` or an HTTP status of 400 or more.
    pub errors: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

/// The endpoints of `service` (every service when `None`) that were called, by service and
/// endpoint; calls resolved to nothing ([`OTHER`]) are not among them. Like the recorder, the
/// counts are of this process: every server booted in it, every namespace.
pub fn endpoint_stats(service: Option<&str>) -> Vec<EndpointStats> {
    let mut stats: Vec<EndpointStats> = micro_core::metrics::tallies(service)
        .into_iter()
        .filter(|tallied| tallied.counts.requests > 0)
        .map(|tallied| {
            let buckets = &tallied.counts.buckets;
            EndpointStats {
                service: tallied.service,
                endpoint: tallied.endpoint,
                requests: tallied.counts.requests,
                errors: tallied.counts.errors,
                p50: quantile(buckets, 0.5),
                p90: quantile(buckets, 0.9),
                p99: quantile(buckets, 0.99),
            }
        })
        .collect();
    stats.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
    stats
}

/// The gRPC paths (`/store.Store/Read`) of every method of the services named `served` that the
/// server hosts itself (core services, health, reflection): a call at another path under a core
/// service's name is no method, and counts as [`OTHER`].
pub fn served_methods(served: &[&str]) -> HashSet<String> {
    let sets = [
        micro_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    micro_core::metrics::methods_of(&sets, served)
}

#[cfg(test)]
mod tests {
    use metrics::histogram;
    use micro_core::metrics::Tally;

    use super::*;

    /// The value of the series `name{labels}` in `text`, labels in rendering order.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn quantiles_are_estimated_within_their_bucket() {
        let tally = Tally::default();
        assert_eq!(quantile(&[0; TALLY_BUCKETS], 0.5), Duration::ZERO, "no calls");
        for _ in 0..98 {
            tally.record(false, Duration::from_micros(2000));
        }
        tally.record(true, Duration::from_secs(3));
        tally.record(true, Duration::from_secs(600));
        let counts = tally.counts();
        let buckets = counts.buckets;
        assert_eq!((counts.requests, counts.errors), (100, 2));
        assert_eq!(buckets[2], 98, "2ms is within 1ms to 2.5ms");
        let p50 = quantile(&buckets, 0.5).as_secs_f64();
        assert!((p50 - (0.001 + 0.0015 * 50.0 / 98.0)).abs() < 1e-9, "{p50}");
        assert_eq!(
            quantile(&buckets, 0.99),
            Duration::from_secs_f64(5.0),
            "the 99th call is within 2.5s to 5s"
        );
        assert_eq!(quantile(&buckets, 1.0), Duration::from_secs(60), "beyond the last bound: the last bound");
    }

    #[test]
    fn served_methods_are_those_of_served_services() {
        let methods = served_methods(&["store.Store", "grpc.health.v1.Health"]);
        assert!(methods.contains("/store.Store/Read"));
        assert!(methods.contains("/grpc.health.v1.Health/Check"));
        assert!(!methods.contains("/store.Store/Nope"));
        assert!(!methods.contains("/debug.Debug/Health"), "compiled in, not served");
    }

    #[test]
    fn builds_render_as_a_histogram_with_their_buckets() {
        let recorder = builder(micro_core::metrics::builder()).build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        histogram!(micro_runtime::metrics::BUILD_DURATION_SECONDS, "result" => "success").record(3.0);
        let text = handle.render();
        let bucket = |le: &str| {
            value(
                &text,
                &format!(r#"micro_runtime_build_duration_seconds_bucket{{result="success",le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("2.5"), Some(0.0), "{text}");
        assert_eq!(bucket("5"), Some(1.0), "{text}");
        assert_eq!(bucket("1800"), Some(1.0), "the longest bucket is BUILD_DURATION_BUCKETS' last: {text}");
    }

    #[test]
    fn the_recorder_is_installed_once() {
        let first = Metrics::install();
        let second = Metrics::install();
        counter!("micro_test_installed_total").increment(1);
        assert!(second.render().contains("micro_test_installed_total 1"), "{}", first.render());
        assert!(first.render().contains("process_resident_memory_bytes"), "process metrics are collected");
        assert!(first.render().contains("# HELP micro_auth_rejections_total"), "the server's own help");
    }
}
