//! `micro stats` end to end (docs/observability.md#stats): a real server with the helloworld
//! example, calls through the gateway and the gRPC proxy, a process the runtime runs, then
//! `debug.Debug/Stats` through the CLI as an administrator of `micro`, as a tenant and
//! anonymously.

mod common;

use std::time::Duration;

use common::{Server, Service, http_request, json, tenant_home};

const JSON: (&str, &str) = ("Content-Type", "application/json");
/// How many gateway calls of Helloworld.Call the test makes.
const CALLS: usize = 5;

/// `micro stats <args> --output json`, parsed.
fn stats(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut args = [&["stats"], args, &["--output", "json"]].concat();
    args.retain(|arg| !arg.is_empty());
    json(&server.ok(&args))
}

/// The row of `endpoint` in `stats`' endpoints.
fn endpoint<'a>(stats: &'a serde_json::Value, endpoint: &str) -> Option<&'a serde_json::Value> {
    stats["endpoints"].as_array()?.iter().find(|row| row["endpoint"] == endpoint)
}

#[test]
fn stats_show_requests_errors_latency_and_processes_to_administrators_only() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);
    for n in 0..CALLS {
        let body = format!(r#"{{"name":"n{n}"}}"#);
        let (status, answer) =
            http_request(&server.http, "POST", "/helloworld/Call", &[JSON], body.as_bytes());
        assert_eq!(status, 200, "{answer}");
    }
    let proxied = server.ok(&["call", "helloworld", "Helloworld.Call", r#"{"name":"X"}"#]);
    assert!(proxied.contains("Hello X"), "{proxied}");
    // A call the gateway refuses after resolving it: an error of that endpoint.
    let (status, answer) = http_request(&server.http, "POST", "/helloworld/Call", &[JSON], br#"{"name":5}"#);
    assert_eq!(status, 400, "{answer}");
    // A process of the runtime's that keeps running.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("sleeper")).unwrap();
    std::fs::write(work.path().join("sleeper/run.sh"), "exec sleep 600\n").unwrap();
    server.ok_at(work.path(), &["run", "./sleeper", "--command", "sh run.sh"]);

    // A request is counted when its response body is done, which the server may notice a
    // moment after the client read it: ask until every call shows.
    let expected = (CALLS + 2) as u64;
    let mut shown = serde_json::Value::Null;
    let counted = common::eventually(Duration::from_secs(30), || {
        shown = stats(&server, &["helloworld"]);
        endpoint(&shown, "Helloworld.Call").is_some_and(|row| row["requests"] == expected)
    });
    assert!(counted, "{CALLS} gateway calls, one proxied and one refused: {shown:#}");
    let call = endpoint(&shown, "Helloworld.Call").unwrap();
    assert_eq!(call["service"], "helloworld");
    assert_eq!(call["errors"], 1, "the refused call: {shown:#}");
    let quantile = |name: &str| call[name].as_u64().unwrap_or_else(|| panic!("{name}: {shown:#}"));
    assert!(0 < quantile("p50") && quantile("p50") <= quantile("p90"), "{shown:#}");
    assert!(quantile("p90") <= quantile("p99") && quantile("p99") <= 60_000_000_000, "{shown:#}");
    assert!(
        shown["endpoints"].as_array().unwrap().iter().all(|row| row["service"] == "helloworld"),
        "one service asked for: {shown:#}"
    );
    assert!(shown["processes"].as_array().unwrap().is_empty(), "helloworld was started by hand: {shown:#}");
    assert!(shown["uptime"].as_u64().is_some() && shown["started"].as_u64().unwrap() > 0, "{shown:#}");

    // The table: the endpoint's row with its count.
    let table = server.ok(&["stats", "helloworld"]);
    assert!(table.starts_with("SERVICE "), "{table}");
    let row =
        table.lines().find(|line| line.contains("Helloworld.Call")).unwrap_or_else(|| panic!("{table}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[..4], ["helloworld", "Helloworld.Call", &expected.to_string(), "1"], "{table}");

    // The runtime's process, with what it uses; without a name, every service shows.
    let mut all = serde_json::Value::Null;
    let running = common::eventually(Duration::from_secs(30), || {
        all = stats(&server, &[""]);
        all["processes"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|row| row["service"] == "sleeper" && row["rss"].as_u64().is_some_and(|rss| rss > 0))
        })
    });
    assert!(running, "the sleeper's process with its RSS: {all:#}");
    let sleeper =
        all["processes"].as_array().unwrap().iter().find(|row| row["service"] == "sleeper").unwrap();
    assert_eq!((&sleeper["namespace"], &sleeper["version"]), (&"micro".into(), &"latest".into()), "{all:#}");
    assert!(sleeper["pid"].as_u64().is_some_and(|pid| pid > 0) && sleeper["cpu"].is_u64(), "{all:#}");
    let only = stats(&server, &["helloworld"]);
    assert_eq!(only["processes"], serde_json::json!([]), "the sleeper is another service: {only:#}");
    assert!(endpoint(&all, "Helloworld.Call").is_some(), "{all:#}");
    assert!(endpoint(&all, "Runtime.Create").is_some(), "core services are counted too: {all:#}");
    let table = server.ok(&["stats", "sleeper"]);
    assert!(table.lines().any(|line| line.starts_with("NAMESPACE ")), "{table}");
    assert!(table.lines().any(|line| line.starts_with("micro ") && line.contains(" sleeper ")), "{table}");

    // Every namespace's counts: administrators of `micro` only.
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s", "bob"]);
    let tenant = tenant_home(&server, "foo", "bob", "s");
    let refused = common::micro_in(tenant.path(), &["stats", "helloworld"]);
    assert!(!refused.status.success(), "a tenant reads no stats");
    let stderr = common::stderr(&refused);
    assert!(stderr.contains("administrators of namespace micro may read stats"), "{stderr}");
    server.ok(&["logout"]);
    let anonymous = server.micro(&["stats"]);
    assert!(!anonymous.status.success(), "an anonymous caller reads no stats");
    assert!(common::stderr(&anonymous).contains("needs a login"), "{}", common::stderr(&anonymous));
}
