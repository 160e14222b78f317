//! The boot section: `micro server` from spawn to `grpc.health.v1` answering `SERVING`, in a
//! fresh `MICRO_HOME` (keys generated, store and event files created, default admin hashed) and
//! restarted on an existing one; resident memory once idle after boot; and resident memory after
//! a fixed number of gateway calls to a registered helloworld.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::load::{Budget, Via, run_load};
use crate::procs::{Binaries, Helloworld, Server};
use crate::report::{Figure, Target};

/// How long a booted server is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(1);
/// Concurrency of the gateway load before the loaded memory reading.
const LOAD_CONCURRENCY: usize = 64;

struct Boot {
    ready: Duration,
    rss_kib: u64,
}

pub async fn measure(
    bins: &Binaries,
    home: &Path,
    quick: bool,
    path: &PathBuf,
) -> anyhow::Result<Vec<Figure>> {
    let (boots, calls) = if quick { (2, 10_000) } else { (5, 100_000) };
    std::fs::create_dir_all(home)?;
    let mut fresh = Vec::new();
    let mut restarted = Vec::new();
    for n in 0..boots {
        let home = home.join(format!("boot-{n}"));
        std::fs::create_dir_all(&home)?;
        for boots in [&mut fresh, &mut restarted] {
            let server = Server::boot(&bins.micro, &home, &[]).await?;
            tokio::time::sleep(SETTLE).await;
            boots.push(Boot { ready: server.ready_in, rss_kib: server.rss_kib() });
            drop(server);
        }
    }
    let median = |boots: &[Boot], get: fn(&Boot) -> f64| {
        let mut values: Vec<f64> = boots.iter().map(get).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ready_ms = |boot: &Boot| boot.ready.as_secs_f64() * 1000.0;
    let rss_mib = |boot: &Boot| boot.rss_kib as f64 / 1024.0;
    eprintln!(
        "boot: fresh {:.1} ms {:.1} MiB, restart {:.1} ms {:.1} MiB (medians of {boots})",
        median(&fresh, ready_ms),
        median(&fresh, rss_mib),
        median(&restarted, ready_ms),
        median(&restarted, rss_mib)
    );

    // Memory with a service registered, then after `calls` gateway calls to it.
    let home = home.join("loaded");
    std::fs::create_dir_all(&home)?;
    let server = Server::start(&bins.micro, &home).await?;
    let service = Helloworld::start(&bins.helloworld, &home, &server).await?;
    let target = crate::load::Target::discover(&server.grpc, &service.address).await?;
    let token = server.token().await?;
    tokio::time::sleep(SETTLE).await;
    let with_service = (server.rss_kib(), service.rss_kib());
    let budget = Budget { warmup: Duration::ZERO, duration: Duration::from_secs(600), calls: Some(calls) };
    let report =
        run_load(&target, &Via::Gateway(server.http.clone()), &token, LOAD_CONCURRENCY, budget).await?;
    eprintln!("boot: {calls} gateway calls at c={LOAD_CONCURRENCY}: {report}");
    let loaded = (server.rss_kib(), service.rss_kib());
    drop(service);
    drop(server);

    let mut md = String::new();
    let _ = writeln!(md, "## Boot and memory\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- --only boot`: a release `micro server` with the \
         embedded defaults, timed from spawn until `grpc.health.v1.Health/Check` answers `SERVING`, medians of \
         {boots} boots in fresh `MICRO_HOME`s (signing keys made, store and event files created, the default \
         admin's password hashed) and of {boots} restarts on those homes. Resident memory (VmRSS) is read {}s \
         after ready; the loaded figure after {calls} calls through the HTTP gateway at concurrency \
         {LOAD_CONCURRENCY} to a registered helloworld ({:.0} req/s, {} errors).\n",
        SETTLE.as_secs(),
        report.rps(),
        report.errors
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", crate::cores(), crate::unix_now());
    let _ = writeln!(md, "| figure | value |");
    let _ = writeln!(md, "|---|---:|");
    let _ = writeln!(md, "| start to ready, fresh `MICRO_HOME` | {:.1} ms |", median(&fresh, ready_ms));
    let _ = writeln!(md, "| start to ready, restart | {:.1} ms |", median(&restarted, ready_ms));
    let _ = writeln!(md, "| server RSS idle after a fresh boot | {:.1} MiB |", median(&fresh, rss_mib));
    let _ = writeln!(md, "| server RSS idle after a restart | {:.1} MiB |", median(&restarted, rss_mib));
    let _ = writeln!(
        md,
        "| server RSS idle, one service registered | {:.1} MiB |",
        with_service.0 as f64 / 1024.0
    );
    let _ = writeln!(md, "| server RSS after {calls} gateway calls | {:.1} MiB |", loaded.0 as f64 / 1024.0);
    let _ = writeln!(
        md,
        "| helloworld RSS idle / after the calls | {:.1} / {:.1} MiB |",
        with_service.1 as f64 / 1024.0,
        loaded.1 as f64 / 1024.0
    );
    crate::runtime::write_section(path, "boot", &md)?;

    Ok(vec![
        Figure::new("start to ready, fresh MICRO_HOME", "ms", median(&fresh, ready_ms))
            .target(Target::AtMost(150.0)),
        Figure::new("start to ready, restart", "ms", median(&restarted, ready_ms))
            .target(Target::AtMost(150.0)),
        Figure::new("server RSS idle after boot", "MiB", median(&fresh, rss_mib))
            .target(Target::AtMost(30.0)),
        Figure::new("server RSS idle after a restart", "MiB", median(&restarted, rss_mib))
            .target(Target::AtMost(30.0)),
        Figure::new(format!("server RSS after {calls} gateway calls"), "MiB", loaded.0 as f64 / 1024.0)
            .against("idle, one service registered", with_service.0 as f64 / 1024.0),
    ])
}
