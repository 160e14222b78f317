//! `cargo run --release -p micro-bench`: starts a real `micro server` and the `helloworld`
//! example in a temp `MICRO_HOME`, then measures in one run, side by side, the same handler
//! called three ways: a direct tonic call to the service's node (the baseline), a call through
//! the server's gRPC proxy, and an HTTP call through the API gateway. Also records server
//! start-to-ready and resident memory. Writes `BENCHMARKS.md` at the repository root.
//!
//! With the argument `events`, measures durable publish, consume and broker fan-out through the
//! server beside the same backends in-process (see `events.rs`).
//!
//! With the argument `backends`, measures store and events through a server on the embedded
//! backends and one on PostgreSQL + NATS (see `backends.rs`).
//!
//! With the argument `runtime`, measures `micro run` instead: source to first successful call,
//! cold and warm, beside plain `cargo build --release` (see `runtime.rs`). Each mode rewrites its
//! own section of `BENCHMARKS.md`.
//!
//! Ratios within one run are the figures that count; absolute times drift between runs.

mod backends;
mod events;
mod http;
mod load;
mod procs;
mod runtime;

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::load::{Report, run_load};

/// How long each scenario runs.
const DURATION: Duration = Duration::from_secs(5);
/// Warm-up before each scenario (not measured).
const WARMUP: Duration = Duration::from_millis(500);
/// Concurrency levels measured.
const CONCURRENCY: &[usize] = &[1, 64];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ is in the repository");
    let bins = procs::build(root)?;
    let home = tempdir()?;
    let path = root.join("BENCHMARKS.md");

    if std::env::args().nth(1).as_deref() == Some("runtime") {
        let server = procs::Server::start(&bins.micro, &home).await?;
        let figures = runtime::measure(&bins.micro, &home).await?;
        runtime::write_section(&path, "runtime", &runtime::render(&figures))?;
        eprintln!("wrote {}", path.display());
        drop(server);
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }

    if std::env::args().nth(1).as_deref() == Some("backends") {
        let (rows, production) = backends::measure(&bins.micro, &home, WARMUP, DURATION).await?;
        runtime::write_section(&path, "backends", &backends::render(&rows, &production, DURATION, WARMUP))?;
        eprintln!("wrote {}", path.display());
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }

    if std::env::args().nth(1).as_deref() == Some("events") {
        let server = procs::Server::start(&bins.micro, &home).await?;
        let scratch = home.join("bench");
        std::fs::create_dir_all(&scratch)?;
        let rows = events::measure(&server.grpc, &scratch, WARMUP, DURATION).await?;
        runtime::write_section(&path, "events", &events::render(&rows, DURATION, WARMUP))?;
        eprintln!("wrote {}", path.display());
        drop(server);
        let _ = std::fs::remove_dir_all(&home);
        return Ok(());
    }

    let server = procs::Server::start(&bins.micro, &home).await?;
    eprintln!("server ready in {:?} (rss {} KiB)", server.ready_in, server.rss_kib());
    let service = procs::Helloworld::start(&bins.helloworld, &home, &server).await?;
    let idle_rss = (server.rss_kib(), service.rss_kib());

    let target = load::Target::discover(&server.grpc, &service.address).await?;
    let mut results: Vec<(String, usize, Report)> = Vec::new();
    for &concurrency in CONCURRENCY {
        for (name, how) in [
            ("direct tonic call (baseline)", load::Via::Direct),
            ("through the gRPC proxy :8081", load::Via::Proxy),
            ("through the HTTP gateway :8080", load::Via::Gateway(server.http.clone())),
        ] {
            let report = run_load(&target, &how, concurrency, WARMUP, DURATION).await?;
            eprintln!("{name:<32} c={concurrency:<3} {report}");
            results.push((name.to_string(), concurrency, report));
        }
    }
    let loaded_rss = (server.rss_kib(), service.rss_kib());

    let markdown = render(&server, idle_rss, loaded_rss, &results);
    runtime::write_section(&path, "calls", &markdown)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    drop(service);
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("micro-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn render(
    server: &procs::Server,
    idle: (u64, u64),
    loaded: (u64, u64),
    results: &[(String, usize, Report)],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench` (bench/): one run, one machine, release builds of \
         `micro server` and `examples/helloworld` on loopback. Compare rows within a table: they ran back to \
         back against the same processes. Each row runs {}s after a {}ms warm-up; latencies are per call.\n",
        DURATION.as_secs(),
        WARMUP.as_millis()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", cores(), unix_now());
    let _ = writeln!(md, "## Calling a service: gateway and proxy against a direct tonic call\n");
    let _ = writeln!(md, "`Helloworld.Call {{\"name\":\"bench\"}}` — the same handler each way.\n");
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
    let _ = writeln!(md, "\n## Server\n");
    let _ = writeln!(md, "| figure | value |");
    let _ = writeln!(md, "|---|---:|");
    let _ = writeln!(
        md,
        "| `micro server` start to ready (spawn → gRPC listening) | {} ms |",
        server.ready_in.as_millis()
    );
    let _ = writeln!(md, "| server RSS idle (after start, one service registered) | {} KiB |", idle.0);
    let _ = writeln!(md, "| server RSS after the load above | {} KiB |", loaded.0);
    let _ = writeln!(md, "| helloworld RSS idle / after load | {} / {} KiB |", idle.1, loaded.1);
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
