//! The `overhead` section: what request metrics and exported traces cost a call, against both
//! off, in one run. Four setups, each a fresh `micro server` and `helloworld` pair measured the
//! way the calls section measures them (`load.rs`), one after the other so that none's
//! background work (exporters send batches seconds after the load) lands in another's rows:
//!
//! - off: both processes with `MICRO_METRICS=off` and `OTEL_SDK_DISABLED=true`;
//! - metrics only, tracing only: one of the two, to show where the cost is (not budget lines);
//! - on: request metrics on; the server exports its spans over OTLP/gRPC to a collector in this
//!   process ([`Sink`]: counts the spans, keeps none), and helloworld exports its own to the
//!   server's :8081, as `micro run` sets it up, which forwards them to the same collector.
//!
//! A run whose collector received no span measured no export, and fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use micro_core::trace::{OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SDK_DISABLED};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::load::{self, Budget, Report, Via, run_load};
use crate::procs;
use crate::report::{Figure, Target};

/// The most the two may add to the p50 of a call at c=1, in µs.
const ADDED_P50: f64 = 10.0;
/// The least share of the c=64 throughput with both off that they keep.
const KEPT_RPS: f64 = 0.95;
/// How long the exporters get to deliver a first span after the load: the batch span processor
/// sends every 5 s (`OTEL_BSP_SCHEDULE_DELAY`), and the server forwards what it received.
const EXPORT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Off,
    /// Request metrics on, tracing off: what the metrics cost alone.
    Metrics,
    /// Tracing on and exporting, metrics off: what the spans cost alone.
    Tracing,
    On,
}

impl Setup {
    /// Whether the pair counts requests.
    fn metrics(self) -> bool {
        matches!(self, Setup::Metrics | Setup::On)
    }

    /// Whether the pair records and exports spans.
    fn traces(self) -> bool {
        matches!(self, Setup::Tracing | Setup::On)
    }

    fn name(self) -> &'static str {
        match self {
            Setup::Off => "off",
            Setup::Metrics => "metrics only",
            Setup::Tracing => "tracing only",
            Setup::On => "on",
        }
    }
}

/// One measured row.
struct Row {
    setup: Setup,
    path: &'static str,
    concurrency: usize,
    report: Report,
}

/// Measures the four setups at each of `concurrency`, writes the section to `path` and returns its
/// figures.
pub async fn measure(
    bins: &procs::Binaries,
    home: &Path,
    concurrency: &[usize],
    budget: Budget,
    path: &PathBuf,
) -> anyhow::Result<Vec<Figure>> {
    let sink = Sink::start().await?;
    let to_sink = format!("http://{}", sink.address);
    let mut rows = Vec::new();
    let mut last = None;
    // Both off, each half alone (to show where the cost is; not budget lines), then both.
    for setup in [Setup::Off, Setup::Metrics, Setup::Tracing, Setup::On] {
        // The pair before stops first (its exporters flush now, not during the next load).
        drop(last.take());
        if !setup.traces() && sink.spans() > 0 {
            bail!("the collector received spans from a pair with tracing off");
        }
        let metrics = if setup.metrics() { "on" } else { "off" };
        let tracing_off = if setup.traces() { "false" } else { "true" };
        let env = [(micro_core::metrics::ENV, metrics), (OTEL_SDK_DISABLED, tracing_off)];
        let setup_home = home.join(setup.name().replace(' ', "-"));
        std::fs::create_dir_all(&setup_home)?;
        let server_env = [env[0], env[1], (OTEL_EXPORTER_OTLP_ENDPOINT, to_sink.as_str())];
        let server = procs::Server::start_with_env(&bins.micro, &setup_home, &[], &server_env).await?;
        // Helloworld's spans go to the server, as `micro run` has them; the server forwards them.
        let to_server = format!("http://{}", server.grpc);
        let service_env = [env[0], env[1], (OTEL_EXPORTER_OTLP_ENDPOINT, to_server.as_str())];
        let service =
            procs::Helloworld::start_with_env(&bins.helloworld, &setup_home, &server, &service_env).await?;
        rows.extend(measure_pair(&server, &service, setup, concurrency, budget).await?);
        // A tuple drops in order: the service first, so that it deregisters from a live server.
        last = Some((service, server));
    }
    let (service, server) = last.expect("the last pair");
    let deadline = Instant::now() + EXPORT_DEADLINE;
    while sink.spans() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped, the exporters flush what they still hold.
    drop(service);
    drop(server);
    let spans = sink.spans();
    eprintln!("the collector received {spans} spans");
    if spans == 0 {
        bail!(
            "the collector received no span within {EXPORT_DEADLINE:?}: the \"on\" rows measured no export"
        );
    }
    crate::runtime::write_section(path, "overhead", &render(&rows, spans, budget))?;
    Ok(figures(&rows, spans))
}

/// Gateway and proxy calls of `service` through `server` at each of `concurrency`.
async fn measure_pair(
    server: &procs::Server,
    service: &procs::Helloworld,
    setup: Setup,
    concurrency: &[usize],
    budget: Budget,
) -> anyhow::Result<Vec<Row>> {
    let token = server.token().await?;
    let target = load::Target::discover(&server.grpc, &service.address).await?;
    let paths = [("gateway", Via::Gateway(server.http.clone())), ("proxy", Via::Proxy)];
    let mut rows = Vec::new();
    for &concurrency in concurrency {
        for (path, how) in &paths {
            let report = run_load(&target, how, &token, concurrency, budget).await?;
            eprintln!("{:<3} {path:<8} c={concurrency:<3} {report}", setup.name());
            rows.push(Row { setup, path, concurrency, report });
        }
    }
    Ok(rows)
}

fn find<'a>(rows: &'a [Row], setup: Setup, path: &str, concurrency: usize) -> Option<&'a Report> {
    rows.iter()
        .find(|row| row.setup == setup && row.path == path && row.concurrency == concurrency)
        .map(|row| &row.report)
}

/// p50 at c=1 and req/s at c=64 of each path, with metrics and tracing against both off.
fn figures(rows: &[Row], spans: u64) -> Vec<Figure> {
    let mut figures = Vec::new();
    for path in ["gateway", "proxy"] {
        if let (Some(off), Some(on)) = (find(rows, Setup::Off, path, 1), find(rows, Setup::On, path, 1)) {
            let (off, on) = (off.percentile(50.0) as f64, on.percentile(50.0) as f64);
            figures.push(
                Figure::new(format!("{path}: p50 added by metrics and tracing, c=1"), "µs", on - off)
                    .target(Target::AtMost(ADDED_P50)),
            );
            figures.push(
                Figure::new(format!("{path}: p50 with metrics and tracing, c=1"), "µs", on)
                    .against("both off", off),
            );
        }
        if let (Some(off), Some(on)) = (find(rows, Setup::Off, path, 64), find(rows, Setup::On, path, 64)) {
            figures.push(
                Figure::new(format!("{path}: req/s with metrics and tracing, c=64"), "req/s", on.rps())
                    .against("both off", off.rps())
                    .target(Target::RatioAtLeast(KEPT_RPS)),
            );
        }
    }
    figures.push(
        Figure::new("overhead: spans the collector received", "", spans as f64).target(Target::AtLeast(1.0)),
    );
    figures
}

fn render(rows: &[Row], spans: u64, budget: Budget) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Overhead: request metrics and exported traces against both off\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- --only overhead` (bench/): four fresh pairs of \
         `micro server` and `examples/helloworld`, measured one after the other like the calls section (auth \
         on, `Helloworld.Call {{\"name\":\"bench\"}}`). **off**: both processes with `MICRO_METRICS=off` and \
         `OTEL_SDK_DISABLED=true`. **metrics only**, **tracing only**: one of the two (not budget lines: they \
         show where the cost is). **on**: request metrics on; the server exports its spans over OTLP/gRPC to \
         a collector in the bench process that counts and drops them, and helloworld exports its spans to \
         the server (`OTEL_EXPORTER_OTLP_ENDPOINT` = its :8081, as `micro run` sets it), which forwards them \
         there. Budget: at most +{ADDED_P50} µs of p50 at c=1, at least {KEPT_RPS:.2}× the req/s at c=64. \
         Each row runs {}s after a {}ms warm-up; latencies are per call.\n",
        budget.duration.as_secs_f64(),
        budget.warmup.as_millis()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", crate::cores(), crate::unix_now());
    let _ = writeln!(md, "| figure | off | on | on against off |");
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for path in ["gateway", "proxy"] {
        for setup in [Setup::Metrics, Setup::Tracing, Setup::On] {
            if let (Some(off), Some(on)) = (find(rows, Setup::Off, path, 1), find(rows, setup, path, 1)) {
                let (off, on) = (off.percentile(50.0), on.percentile(50.0));
                let added = on as i64 - off as i64;
                let what = if setup == Setup::On { String::new() } else { format!(" ({})", setup.name()) };
                let _ = writeln!(md, "| {path} p50, c=1{what} | {off} µs | {on} µs | {added:+} µs |");
            }
        }
    }
    for path in ["gateway", "proxy"] {
        for setup in [Setup::Metrics, Setup::Tracing, Setup::On] {
            if let (Some(off), Some(on)) = (find(rows, Setup::Off, path, 64), find(rows, setup, path, 64)) {
                let what = if setup == Setup::On { String::new() } else { format!(" ({})", setup.name()) };
                let _ = writeln!(
                    md,
                    "| {path} req/s, c=64{what} | {:.0} | {:.0} | {:.3}× |",
                    off.rps(),
                    on.rps(),
                    on.rps() / off.rps().max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    let _ =
        writeln!(md, "\nThe collector received {spans} spans from the \"tracing only\" and \"on\" pairs.\n");
    let _ = writeln!(md, "| setup | path | concurrency | req/s | p50 | p99 | errors |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {} | {} |",
            row.setup.name(),
            row.path,
            row.concurrency,
            row.report.rps(),
            crate::fmt_micros(row.report.percentile(50.0)),
            crate::fmt_micros(row.report.percentile(99.0)),
            row.report.errors
        );
    }
    md
}

/// An OTLP/gRPC trace collector on an ephemeral loopback port that counts the spans it is sent
/// and keeps none; stops when dropped.
struct Sink {
    address: String,
    spans: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let spans = Arc::new(AtomicU64::new(0));
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Counter(spans.clone())))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let task = tokio::spawn(async move {
            if let Err(err) = server.await {
                eprintln!("the span collector stopped: {err}");
            }
        });
        Ok(Self { address, spans, task })
    }

    fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The collector's service: adds each export's spans to the count.
struct Counter(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len() as u64)
            .sum::<u64>();
        self.0.fetch_add(spans, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}
