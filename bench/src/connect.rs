//! The `connect` section: the per-call overhead of Connect unary JSON on the gateway
//! (`POST /helloworld.Helloworld/Call`, `Content-Type: application/json`, docs/clients.md) against
//! the gateway's own JSON path (`POST /helloworld/call`) to the same handler, back to back
//! against the same processes, at each concurrency of the calls section.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::load::{self, Budget, Report, Via, run_load};
use crate::procs;
use crate::report::{Figure, Target};

/// The JSON path's row, the baseline.
const JSON_PATH: &str = "gateway JSON path /helloworld/call (baseline)";
/// The Connect row.
const CONNECT: &str = "Connect unary JSON /helloworld.Helloworld/Call";

/// The share of the JSON path's req/s at c=64 that Connect must keep: issue 18's "within 10%".
const KEPT: f64 = 0.9;

/// Measures both rows at each of `concurrency`, rewrites the `connect` part of `path` and
/// returns the budget's figures.
pub async fn measure(
    bins: &procs::Binaries,
    home: &Path,
    concurrency: &[usize],
    budget: Budget,
    path: &PathBuf,
) -> anyhow::Result<Vec<Figure>> {
    std::fs::create_dir_all(home)?;
    let server = procs::Server::start(&bins.micro, home).await?;
    let service = procs::Helloworld::start(&bins.helloworld, home, &server).await?;
    let token = server.token().await?;
    let target = load::Target::discover(&server.grpc, &service.address).await?;
    let rows = [(JSON_PATH, Via::Gateway(server.http.clone())), (CONNECT, Via::Connect(server.http.clone()))];
    let mut results: Vec<(&str, usize, Report)> = Vec::new();
    for &concurrency in concurrency {
        for (name, via) in &rows {
            let report = run_load(&target, via, &token, concurrency, budget).await?;
            eprintln!("{name:<48} c={concurrency:<3} {report}");
            results.push((name, concurrency, report));
        }
    }
    crate::runtime::write_section(path, "connect", &render(&results, budget))?;
    Ok(figures(&results))
}

fn find<'a>(results: &'a [(&str, usize, Report)], name: &str, concurrency: usize) -> Option<&'a Report> {
    results.iter().find(|(n, c, _)| *n == name && *c == concurrency).map(|(_, _, report)| report)
}

/// p50 added over the JSON path at c=1, and req/s kept at c=64.
fn figures(results: &[(&str, usize, Report)]) -> Vec<Figure> {
    let mut figures = Vec::new();
    if let (Some(json), Some(connect)) = (find(results, JSON_PATH, 1), find(results, CONNECT, 1)) {
        let (json, connect) = (json.percentile(50.0) as f64, connect.percentile(50.0) as f64);
        figures.push(Figure::new("connect: p50 added over the JSON path, c=1", "µs", connect - json));
        figures.push(Figure::new("connect: p50, c=1", "µs", connect).against("JSON path", json));
    }
    if let (Some(json), Some(connect)) = (find(results, JSON_PATH, 64), find(results, CONNECT, 64)) {
        figures.push(
            Figure::new("connect: req/s, c=64", "req/s", connect.rps())
                .against("JSON path", json.rps())
                .target(Target::RatioAtLeast(KEPT)),
        );
    }
    figures
}

fn render(results: &[(&str, usize, Report)], budget: Budget) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Connect unary JSON against the gateway's JSON path\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- --only connect` (bench/): release builds of `micro \
         server` and `examples/helloworld` on loopback, auth on (every call carries the admin's bearer token). \
         `{{\"name\":\"bench\"}}` to `Helloworld.Call`, as `POST /helloworld/call` and as Connect's \
         `POST /helloworld.Helloworld/Call` (`Content-Type: application/json`, `Connect-Protocol-Version: 1`), \
         each worker on one keep-alive HTTP/1.1 connection. The rows ran back to back against the same \
         processes; each runs {}s after a {}ms warm-up. The target: Connect within 10% of the JSON path.\n",
        budget.duration.as_secs_f64(),
        budget.warmup.as_millis()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", crate::cores(), crate::unix_now());
    let _ = writeln!(md, "| path | concurrency | req/s | p50 | p99 | vs JSON path (req/s) | errors |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, concurrency, report) in results {
        let baseline = find(results, JSON_PATH, *concurrency).map_or(report.rps(), Report::rps);
        let _ = writeln!(
            md,
            "| {name} | {concurrency} | {:.0} | {} | {} | {:.2}× | {} |",
            report.rps(),
            crate::fmt_micros(report.percentile(50.0)),
            crate::fmt_micros(report.percentile(99.0)),
            report.rps() / baseline,
            report.errors
        );
    }
    md
}
