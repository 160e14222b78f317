//! `cargo run --release -p micro-bench -- backends`: the same store and events work through two
//! `micro server`s in one run — one on the embedded backends (redb store, redb event log), one
//! on the production backends (`--store` PostgreSQL, `--events` NATS JetStream) named by
//! `MICRO_TEST_POSTGRES_URL` and `MICRO_TEST_NATS_URL` (scripts/services starts both). Each
//! row is a closed loop through the server's gRPC API with an admin token.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use micro_proto::events::stream_client::StreamClient;
use micro_proto::events::{ConsumeRequest, PublishRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::events::{Auth, PAYLOAD, admin_token, connect_publishers};
use crate::load::{Budget, Report, closed_loop};
use crate::procs::Server;
use crate::report::Figure;
use crate::store::{KEYS, connect_store_ops};

/// Concurrency levels of every closed-loop row.
const CONCURRENCY: &[usize] = &[1, 64];
/// Events the consume row reads.
const CONSUME_EVENTS: usize = 10_000;

/// One figure on both backends.
pub struct Row {
    pub what: String,
    pub embedded: f64,
    pub production: Option<f64>,
}

/// Measures the embedded server, then (when both URLs are set) the production one.
pub async fn measure(micro: &Path, home: &Path, budget: Budget) -> anyhow::Result<(Vec<Row>, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let production = match (var("MICRO_TEST_POSTGRES_URL"), var("MICRO_TEST_NATS_URL")) {
        (Some(postgres), Some(nats)) => Some((postgres, nats)),
        _ => {
            eprintln!("MICRO_TEST_POSTGRES_URL and MICRO_TEST_NATS_URL unset: embedded backends only");
            None
        }
    };
    let embedded_home = home.join("embedded");
    std::fs::create_dir_all(&embedded_home)?;
    let server = Server::start(micro, &embedded_home).await?;
    let embedded = measured(&server.grpc, "embedded", budget).await?;
    drop(server);

    let (production, described) = match production {
        Some((postgres, nats)) => {
            let production_home = home.join("production");
            std::fs::create_dir_all(&production_home)?;
            let flags = ["--store", &postgres, "--events", &nats, "--broker", &nats];
            let server = Server::start_with(micro, &production_home, &flags).await?;
            let figures = measured(&server.grpc, "production", budget).await?;
            (Some(figures), "PostgreSQL (store) and NATS JetStream (events)".to_string())
        }
        None => (None, "not measured (no MICRO_TEST_POSTGRES_URL / MICRO_TEST_NATS_URL)".to_string()),
    };
    let rows = embedded
        .into_iter()
        .enumerate()
        .map(|(n, (what, rate))| Row {
            what,
            embedded: rate,
            production: production.as_ref().map(|figures| figures[n].1),
        })
        .collect();
    Ok((rows, described))
}

/// Every figure through the server at `grpc`: store writes and reads, event publishes and a
/// consume, in that order.
async fn measured(grpc: &str, label: &str, budget: Budget) -> anyhow::Result<Vec<(String, f64)>> {
    let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
    let token = admin_token(channel.clone()).await?;
    let auth = Auth(MetadataValue::try_from(format!("Bearer {token}"))?);
    let table = format!("bench{}", crate::unix_now());
    let mut figures = Vec::new();

    for &concurrency in CONCURRENCY {
        let writers = connect_store_ops(grpc, &auth, &table, true, concurrency).await?;
        let report = closed_loop(writers, budget).await;
        eprintln!("{label:<10} store write c={concurrency:<3} {report}");
        figures.push((format!("store write, durable, c={concurrency} (ops/s)"), checked(&report)?));
    }
    for &concurrency in CONCURRENCY {
        let readers = connect_store_ops(grpc, &auth, &table, false, concurrency).await?;
        let report = closed_loop(readers, budget).await;
        eprintln!("{label:<10} store read  c={concurrency:<3} {report}");
        figures.push((format!("store read, c={concurrency} (ops/s)"), checked(&report)?));
    }
    let topic = format!("bench{}", crate::unix_now());
    for &concurrency in CONCURRENCY {
        let publishers = connect_publishers(grpc, &auth, &topic, concurrency).await?;
        let report = closed_loop(publishers, budget).await;
        eprintln!("{label:<10} publish     c={concurrency:<3} {report}");
        figures.push((format!("event publish, durable, c={concurrency} (msgs/s)"), checked(&report)?));
    }
    // Consume from the start of the topic the publish rows filled (at least CONSUME_EVENTS).
    let mut client = StreamClient::new(channel.clone());
    let publish = PublishRequest { topic: topic.clone(), payload: PAYLOAD.to_vec(), ..Default::default() };
    // The stream API has no count: a publish's sequence tells how many the topic holds.
    let mut held = client.publish(auth.request(publish.clone())).await?.into_inner().sequence;
    while held < CONSUME_EVENTS as u64 {
        held = client.publish(auth.request(publish.clone())).await?.into_inner().sequence;
    }
    let request = ConsumeRequest {
        group: "bench".into(),
        topic: topic.clone(),
        auto_ack: true,
        retry_limit: -1,
        sequence: 1,
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client.consume(auth.request(request)).await?.into_inner();
    for _ in 0..CONSUME_EVENTS {
        stream.message().await?.context("the consume stream ended")?;
    }
    let rate = CONSUME_EVENTS as f64 / started.elapsed().as_secs_f64();
    eprintln!("{label:<10} consume          {rate:.0} msgs/s");
    figures.push(("event consume, auto-ack, one consumer (msgs/s)".into(), rate));
    Ok(figures)
}

/// The rate of `report`, refusing a run where calls failed (a broken backend must not look fast).
fn checked(report: &Report) -> anyhow::Result<f64> {
    anyhow::ensure!(report.errors == 0 || report.rps() > 0.0, "every call failed");
    if report.errors > 0 {
        eprintln!("  ({} calls failed)", report.errors);
    }
    Ok(report.rps())
}

/// Each row as a figure: the production backend's rate against the embedded one's.
pub fn figures(rows: &[Row]) -> Vec<Figure> {
    rows.iter()
        .map(|row| match row.production {
            Some(rate) => Figure::new(format!("PostgreSQL/NATS: {}", row.what), "", rate)
                .against("embedded", row.embedded),
            None => Figure::new(format!("embedded: {}", row.what), "", row.embedded),
        })
        .collect()
}

/// The backends section of `BENCHMARKS.md`.
pub fn render(rows: &[Row], production: &str, budget: Budget) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Embedded backends against PostgreSQL and NATS\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- backends` with scripts/services' PostgreSQL and \
         nats-server on loopback (`source scripts/services && services_start`): two release `micro server`s \
         measured one after the other in one run, the first on the embedded backends (redb store, redb event \
         log, both fsync'd per acknowledged write), the second with `--store postgres://… --events nats://…`. \
         Production backends: {production}. Closed loops through the gRPC API with an admin token, {}s after a \
         {}ms warm-up; values of {} bytes; reads spread over {KEYS} keys written first.\n",
        budget.duration.as_secs_f64(),
        budget.warmup.as_millis(),
        PAYLOAD.len()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", crate::cores(), crate::unix_now());
    let _ = writeln!(md, "| figure | embedded | PostgreSQL / NATS | production ÷ embedded |");
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for row in rows {
        let (production, ratio) = match row.production {
            Some(rate) if row.embedded > 0.0 => {
                (format!("{rate:.0}"), format!("{:.2}×", rate / row.embedded))
            }
            _ => ("—".into(), "—".into()),
        };
        let _ = writeln!(md, "| {} | {:.0} | {production} | {ratio} |", row.what, row.embedded);
    }
    md
}
