//! `micro stats [SERVICE]`: what the server counted of each endpoint it answered (through the
//! gateway and the gRPC proxy) and what the runtime's processes use, read through
//! `debug.Debug/Stats` (docs/observability.md#stats). Without a service, every service. Two
//! tables: endpoints (requests, errors, average rate since the server started, latency
//! quantiles), then processes (pid, RSS, CPU time). `--output json` prints both as the server
//! sent them.

use clap::Args;
use micro_proto::debug::debug_client::DebugClient;
use micro_proto::debug::{StatsRequest, StatsResponse};

use crate::error::Result;
use crate::table::{self, Output};
use crate::trace::duration;
use crate::{Global, out};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The service to show; without it, every service
    service: Option<String>,
    /// Output format: tables, or JSON
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(global: &Global, args: StatsArgs) -> Result<()> {
    let client = global.connect().await?;
    let request = client.request(StatsRequest { service: args.service.unwrap_or_default() });
    let stats = DebugClient::new(client.channel.clone())
        .stats(request)
        .await
        .map_err(|status| client.error(status))?
        .into_inner();
    if args.output == Output::Json {
        out(&table::json(&json(&stats)));
    } else {
        out(&tables(&stats));
    }
    Ok(())
}

fn json(stats: &StatsResponse) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = stats
        .endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "service": e.service,
                "endpoint": e.endpoint,
                "requests": e.requests,
                "errors": e.errors,
                "p50": e.p50,
                "p90": e.p90,
                "p99": e.p99,
            })
        })
        .collect();
    let processes: Vec<serde_json::Value> = stats
        .processes
        .iter()
        .map(|p| {
            serde_json::json!({
                "namespace": p.namespace,
                "service": p.service,
                "version": p.version,
                "pid": p.pid,
                "rss": p.rss,
                "cpu": p.cpu,
            })
        })
        .collect();
    serde_json::json!({
        "timestamp": stats.timestamp,
        "started": stats.started,
        "uptime": stats.uptime,
        "endpoints": endpoints,
        "processes": processes,
    })
}

/// Bytes as people read them: `812KiB`, `14.2MiB`.
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n}B"),
        1024..1_048_576 => format!("{}KiB", n / 1024),
        _ => format!("{:.1}MiB", n as f64 / 1_048_576.0),
    }
}

/// The endpoints table, then (when the runtime runs any of them) the processes table.
fn tables(stats: &StatsResponse) -> String {
    let uptime = stats.uptime.max(1) as f64;
    let mut rows = vec![
        ["SERVICE", "ENDPOINT", "REQUESTS", "ERRORS", "RATE/S", "P50", "P90", "P99"]
            .map(String::from)
            .to_vec(),
    ];
    for e in &stats.endpoints {
        rows.push(vec![
            e.service.clone(),
            e.endpoint.clone(),
            e.requests.to_string(),
            e.errors.to_string(),
            format!("{:.2}", e.requests as f64 / uptime),
            duration(e.p50),
            duration(e.p90),
            duration(e.p99),
        ]);
    }
    let mut text = table::render(&rows);
    if !stats.processes.is_empty() {
        let mut rows =
            vec![["NAMESPACE", "SERVICE", "VERSION", "PID", "RSS", "CPU"].map(String::from).to_vec()];
        for p in &stats.processes {
            rows.push(vec![
                p.namespace.clone(),
                p.service.clone(),
                p.version.clone(),
                p.pid.to_string(),
                bytes(p.rss),
                duration(p.cpu),
            ]);
        }
        text.push('\n');
        text.push_str(&table::render(&rows));
    }
    text
}

#[cfg(test)]
mod tests {
    use micro_proto::debug::{EndpointStats, ProcessStats};

    use super::*;

    #[test]
    fn stats_print_as_two_tables() {
        let stats = StatsResponse {
            uptime: 10,
            endpoints: vec![EndpointStats {
                service: "helloworld".into(),
                endpoint: "Helloworld.Call".into(),
                requests: 25,
                errors: 1,
                p50: 1_750_000,
                p90: 4_000_000,
                p99: 2_500_000_000,
            }],
            processes: vec![ProcessStats {
                namespace: "micro".into(),
                service: "helloworld".into(),
                version: "latest".into(),
                pid: 42,
                rss: 3 * 1_048_576,
                cpu: 120_000_000,
            }],
            ..StatsResponse::default()
        };
        assert_eq!(
            tables(&stats),
            "SERVICE     ENDPOINT         REQUESTS  ERRORS  RATE/S  P50    P90    P99\n\
             helloworld  Helloworld.Call  25        1       2.50    1.8ms  4.0ms  2.50s\n\
             \n\
             NAMESPACE  SERVICE     VERSION  PID  RSS     CPU\n\
             micro      helloworld  latest   42   3.0MiB  120.0ms\n"
        );
        assert_eq!(json(&stats)["processes"][0]["rss"], 3 * 1_048_576);
    }
}
