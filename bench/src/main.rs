//! `cargo run --release -p micro-bench -- [--quick] [--only NAME]... [--with-redis] [--nats URL]`:
//! starts real `micro server`s (and the `helloworld` example) in temp `MICRO_HOME`s on ephemeral
//! loopback ports and measures, in one run, each figure beside its baseline:
//!
//! - `gateway`, `proxy` (section `calls`): the same handler called directly with tonic (the
//!   baseline), through the gRPC proxy and through the HTTP gateway, auth on (see `load.rs`);
//! - `overhead`: gateway and proxy calls with request metrics on and spans exported over OTLP
//!   against both off, each on a fresh server and helloworld pair (see `overhead.rs`);
//! - `connect`: Connect unary JSON on the gateway against its JSON path (see `connect.rs`);
//! - `store`: durable writes and reads through the server, and the same against `redis-server`
//!   (`appendfsync always`) with `--with-redis` (see `store.rs`);
//! - `events`: durable publish, consume and broker fan-out through the server beside the same
//!   backends in-process, and on NATS JetStream with `--nats URL` (see `events.rs`);
//! - `boot`: start to ready, idle RSS, RSS after gateway load (see `boot.rs`);
//! - `backends` (not in the default set): store and events on the embedded backends against
//!   PostgreSQL + NATS (see `backends.rs`);
//! - `runtime` (not in the default set, minutes long): `micro run` source to first call.
//!
//! Each section rewrites its part of `BENCHMARKS.md` and its entry in `BENCHMARKS.json`; the
//! budget table at the top of `BENCHMARKS.md` puts every figure beside its target. `--quick`
//! runs each row briefly, for trying the harness, not for the record.
//!
//! Ratios within one run are the figures that count; absolute times drift between runs.

mod backends;
mod boot;
mod connect;
mod events;
mod http;
mod load;
mod overhead;
mod procs;
mod redis;
mod report;
mod runtime;
mod store;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::load::{Budget, Report, run_load};
use crate::report::{Figure, Run, Target};

/// Every section, in the order a run measures them.
const SECTIONS: &[&str] =
    &["gateway", "proxy", "overhead", "connect", "store", "events", "boot", "backends", "runtime"];
/// What runs without `--only`.
const DEFAULT: &[&str] = &["gateway", "proxy", "overhead", "connect", "store", "events", "boot"];

/// Concurrency levels measured.
const CONCURRENCY: &[usize] = &[1, 64];

/// The command line.
pub struct Options {
    pub quick: bool,
    pub only: Vec<String>,
    pub with_redis: bool,
    pub nats: Option<String>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Options { quick: false, only: Vec::new(), with_redis: false, nats: None };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--with-redis" => options.with_redis = true,
                "--nats" => options.nats = Some(value("--nats")?),
                "--only" => {
                    for name in value("--only")?.split(',') {
                        options.select(name)?;
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: micro-bench [--quick] [--only NAME[,NAME]]... [--with-redis] [--nats URL]\n\
                         sections: {} (default: {})",
                        SECTIONS.join(", "),
                        DEFAULT.join(", ")
                    );
                    std::process::exit(0);
                }
                // The modes of earlier versions: `micro-bench events` = `--only events`.
                name if !name.starts_with('-') => options.select(name)?,
                other => bail!("unknown flag {other:?} (see --help)"),
            }
        }
        if options.only.is_empty() {
            options.only = DEFAULT.iter().map(|s| s.to_string()).collect();
        }
        Ok(options)
    }

    fn select(&mut self, name: &str) -> anyhow::Result<()> {
        if !SECTIONS.contains(&name) {
            bail!("unknown section {name:?}: one of {}", SECTIONS.join(", "));
        }
        if !self.only.iter().any(|n| n == name) {
            self.only.push(name.to_string());
        }
        Ok(())
    }

    fn runs(&self, name: &str) -> bool {
        self.only.iter().any(|n| n == name)
    }

    /// Warm-up and measured time of each closed-loop row.
    pub fn budget(&self) -> Budget {
        if self.quick {
            Budget::timed(Duration::from_millis(200), Duration::from_secs(1))
        } else {
            Budget::timed(Duration::from_millis(500), Duration::from_secs(5))
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line with its causes, not a debug dump.
            eprintln!("Error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ is in the repository").to_path_buf();
    // Checked before anything is built, so a missing tool fails at once.
    let redis = if options.with_redis && options.runs("store") { Some(redis::binary()?) } else { None };
    let bins = procs::build(&root)?;
    let home = tempdir()?;
    let path = root.join("BENCHMARKS.md");
    let run = Run::describe(&root, options.quick);
    let budget = options.budget();

    if options.runs("gateway") || options.runs("proxy") {
        let figures = calls(&bins, &home.join("calls"), &options, &path).await?;
        report::record(&root, &run, "calls", &figures)?;
    }
    if options.runs("overhead") {
        let figures = overhead::measure(&bins, &home.join("overhead"), CONCURRENCY, budget, &path).await?;
        report::record(&root, &run, "overhead", &figures)?;
    }
    if options.runs("connect") {
        let figures = connect::measure(&bins, &home.join("connect"), CONCURRENCY, budget, &path).await?;
        report::record(&root, &run, "connect", &figures)?;
    }
    if options.runs("store") {
        let figures =
            store::measure(&bins.micro, &home.join("store"), redis.as_deref(), budget, &path).await?;
        report::record(&root, &run, "store", &figures)?;
    }
    if options.runs("events") {
        let figures = events_section(&bins.micro, &home.join("events"), &options, &path).await?;
        report::record(&root, &run, "events", &figures)?;
    }
    if options.runs("boot") {
        let figures = boot::measure(&bins, &home.join("boot"), options.quick, &path).await?;
        report::record(&root, &run, "boot", &figures)?;
    }
    if options.runs("backends") {
        let (rows, production) = backends::measure(&bins.micro, &home.join("backends"), budget).await?;
        runtime::write_section(&path, "backends", &backends::render(&rows, &production, budget))?;
        report::record(&root, &run, "backends", &backends::figures(&rows))?;
    }
    if options.runs("runtime") {
        let home = home.join("runtime");
        std::fs::create_dir_all(&home)?;
        let server = procs::Server::start(&bins.micro, &home).await?;
        let figures = runtime::measure(&bins.micro, &home).await?;
        runtime::write_section(&path, "runtime", &runtime::render(&figures))?;
        report::record(&root, &run, "runtime", &runtime::figures(&figures))?;
        drop(server);
    }
    eprintln!("wrote {} and BENCHMARKS.json", path.display());
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

/// The events section: through the embedded server, and through one on NATS when given.
async fn events_section(
    micro: &Path,
    home: &Path,
    options: &Options,
    path: &PathBuf,
) -> anyhow::Result<Vec<Figure>> {
    std::fs::create_dir_all(home)?;
    let server = procs::Server::start(micro, home).await?;
    let scratch = home.join("bench");
    std::fs::create_dir_all(&scratch)?;
    let budget = options.budget();
    let rows = events::measure(&server.grpc, &scratch, budget).await?;
    drop(server);
    let nats = match &options.nats {
        Some(url) => {
            let nats_home = home.join("nats");
            std::fs::create_dir_all(&nats_home)?;
            let server =
                procs::Server::start_with(micro, &nats_home, &["--events", url, "--broker", url]).await?;
            Some(events::measure_publish(&server.grpc, budget).await?)
        }
        None => None,
    };
    runtime::write_section(path, "events", &events::render(&rows, nats.as_deref(), budget))?;
    Ok(events::figures(&rows, nats.as_deref()))
}

/// The calls section: direct, proxy and gateway calls of one helloworld handler.
async fn calls(
    bins: &procs::Binaries,
    home: &Path,
    options: &Options,
    path: &PathBuf,
) -> anyhow::Result<Vec<Figure>> {
    std::fs::create_dir_all(home)?;
    let server = procs::Server::start(&bins.micro, home).await?;
    eprintln!("server ready in {:?} (rss {} KiB)", server.ready_in, server.rss_kib());
    let service = procs::Helloworld::start(&bins.helloworld, home, &server).await?;
    let token = server.token().await?;

    let target = load::Target::discover(&server.grpc, &service.address).await?;
    let mut paths = vec![("direct tonic call (baseline)", load::Via::Direct)];
    if options.runs("proxy") {
        paths.push(("through the gRPC proxy :8081", load::Via::Proxy));
    }
    if options.runs("gateway") {
        paths.push(("through the HTTP gateway :8080", load::Via::Gateway(server.http.clone())));
    }
    let mut results: Vec<(String, usize, Report)> = Vec::new();
    for &concurrency in CONCURRENCY {
        for (name, how) in &paths {
            let report = run_load(&target, how, &token, concurrency, options.budget()).await?;
            eprintln!("{name:<32} c={concurrency:<3} {report}");
            results.push((name.to_string(), concurrency, report));
        }
    }
    runtime::write_section(path, "calls", &render(&results, options.budget()))?;
    Ok(call_figures(&results))
}

/// The budget's figures of the calls section: added p50 at c=1 and kept req/s at c=64.
fn call_figures(results: &[(String, usize, Report)]) -> Vec<Figure> {
    let find = |word: &str, concurrency: usize| {
        results.iter().find(|(name, c, _)| name.contains(word) && *c == concurrency).map(|(_, _, r)| r)
    };
    let mut figures = Vec::new();
    for (word, label, added, kept) in [("gateway", "gateway", 50.0, 0.6), ("proxy", "proxy", 30.0, 0.7)] {
        let (Some(direct1), Some(via1)) = (find("baseline", 1), find(word, 1)) else { continue };
        let added_p50 = via1.percentile(50.0) as f64 - direct1.percentile(50.0) as f64;
        figures.push(
            Figure::new(format!("{label}: p50 added over a direct call, c=1"), "µs", added_p50)
                .target(Target::AtMost(added)),
        );
        figures.push(
            Figure::new(format!("{label}: p50, c=1"), "µs", via1.percentile(50.0) as f64)
                .against("direct", direct1.percentile(50.0) as f64),
        );
        if let (Some(direct), Some(via)) = (find("baseline", 64), find(word, 64)) {
            figures.push(
                Figure::new(format!("{label}: req/s, c=64"), "req/s", via.rps())
                    .against("direct", direct.rps())
                    .target(Target::RatioAtLeast(kept)),
            );
        }
    }
    figures
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("micro-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn render(results: &[(String, usize, Report)], budget: Budget) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Calling a service: gateway and proxy against a direct tonic call\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- --only gateway,proxy` (bench/): release builds of \
         `micro server` and `examples/helloworld` on loopback, auth on: every call carries the admin's bearer \
         token, which the server's gate (proxy, gateway) and the service's framework verify. \
         `Helloworld.Call {{\"name\":\"bench\"}}`, the same handler each way. Compare rows within the table: \
         they ran back to back against the same processes. Each row runs {}s after a {}ms warm-up; latencies \
         are per call.\n",
        budget.duration.as_secs_f64(),
        budget.warmup.as_millis()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", cores(), unix_now());
    let _ = writeln!(md, "| path | concurrency | req/s | p50 | p99 | vs direct (req/s) | errors |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, concurrency, report) in results {
        let baseline = results
            .iter()
            .find(|(n, c, _)| n.contains("baseline") && c == concurrency)
            .map_or(report.rps(), |(_, _, r)| r.rps());
        let _ = writeln!(
            md,
            "| {name} | {concurrency} | {:.0} | {} | {} | {:.2}× | {} |",
            report.rps(),
            fmt_micros(report.percentile(50.0)),
            fmt_micros(report.percentile(99.0)),
            report.rps() / baseline,
            report.errors
        );
    }
    md
}

fn fmt_micros(micros: u64) -> String {
    if micros >= 10_000 { format!("{:.1} ms", micros as f64 / 1000.0) } else { format!("{micros} µs") }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
