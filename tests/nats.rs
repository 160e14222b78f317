//! `micro server --events nats://… --broker nats://…` end to end. The tests that need a NATS
//! server use the one `MICRO_TEST_NATS_URL` names and print that they were skipped without it (fail in CI).

mod common;

use common::Server;

fn nats_url(test: &str) -> Option<String> {
    common::needed_env("MICRO_TEST_NATS_URL", test)
}

/// A topic no earlier run used: streams on a shared NATS server outlive test runs.
fn fresh(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{nanos:x}")
}

fn payloads(output: &str) -> Vec<u64> {
    output
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"]["n"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn unreachable_or_unknown_backends_stop_the_boot_with_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let boot = |args: &[&str]| common::boot_error(home.path(), args);
    let events = boot(&["--events", "nats://127.0.0.1:1"]);
    assert!(events.contains("nats events backend") && events.contains("nats://127.0.0.1:1"), "{events}");
    let broker = boot(&["--broker", "nats://127.0.0.1:1"]);
    assert!(broker.contains("nats broker backend") && broker.contains("nats://127.0.0.1:1"), "{broker}");
    let unknown = boot(&["--events", "kafka://localhost"]);
    assert!(unknown.contains("events.backend") && unknown.contains("nats://"), "{unknown}");

    let mut dump = common::micro_cmd(home.path());
    dump.env("MICRO_BROKER", "nats://127.0.0.1:4222").args(["server", "--events", "memory", "--dump-config"]);
    let dumped = common::stdout(&dump.output().unwrap());
    let config: toml::Value = toml::from_str(&dumped).unwrap();
    assert_eq!(config["events"]["backend"].as_str(), Some("memory"), "{dumped}");
    assert_eq!(config["broker"]["backend"].as_str(), Some("nats://127.0.0.1:4222"), "{dumped}");
}

/// Two servers on one NATS: what one publishes, the other reads, consumes and receives.
#[test]
fn two_servers_share_events_and_broker_through_nats() {
    let Some(url) = nats_url("two_servers_share_events_and_broker_through_nats") else { return };
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |home: &std::path::Path| {
        let server = Server::start_with(home, &["--events", &url, "--broker", &url]);
        server.ok(&["login", "--username", "admin", "--password", "micro"]);
        server
    };
    let (a, b) = (start(home_a.path()), start(home_b.path()));
    for log in [a.log(), b.log()] {
        let names_nats =
            |what: &str| log.lines().any(|line| line.contains(what) && line.contains(&format!("nats {url}")));
        assert!(names_nats("events") && names_nats("broker"), "the log names the backends: {log}");
    }

    let topic = fresh("orders");
    for n in 0..6 {
        a.ok(&["events", "publish", &topic, &format!(r#"{{"n":{n}}}"#), "--metadata", "k=v"]);
    }
    assert_eq!(payloads(&b.ok(&["events", "read", &topic, "--limit", "100"])), (0..6).collect::<Vec<_>>());
    let all = b.ok(&["events", "consume", &topic, "--offset", "1", "--count", "6"]);
    assert_eq!(payloads(&all), (0..6).collect::<Vec<_>>(), "consumed in publish order");
    let first: serde_json::Value = serde_json::from_str(all.lines().next().unwrap()).unwrap();
    assert_eq!(first["metadata"]["k"], "v");
    // One group across both servers: its members share the events.
    let group = ["events", "consume", &topic, "--group", "billing", "--offset", "1", "--count", "3"];
    assert_eq!(payloads(&a.ok(&group)), [0, 1, 2]);
    // What A's server had streamed ahead when A's command left goes back to the group at once;
    // JetStream may redeliver those in any order.
    let mut rest = payloads(&b.ok(&group));
    rest.sort_unstable();
    assert_eq!(rest, [3, 4, 5], "the group's position is shared");

    let subject = fresh("greetings");
    // The broker keeps nothing: publish through A until B's subscriber has had three.
    let numbers = common::three_broker_messages(home_b.path(), &subject, |n| {
        a.ok(&["broker", "publish", &subject, "hello", &n.to_string()]);
    });
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "in publish order: {numbers:?}");
}
