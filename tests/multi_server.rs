//! Several `micro server`s sharing PostgreSQL (store, config, auth) and NATS (events, broker,
//! registry): a token from one works on the other, config, events and services cross between
//! them, and the secrets they share stay out of reach of clients. Needs `MICRO_TEST_POSTGRES_URL` and
//! `MICRO_TEST_NATS_URL` (scripts/test starts both); prints that it was skipped without them (fails in CI).

mod common;

use common::{Server, Service, http_request};

fn backends(test: &str) -> Option<(String, String)> {
    let postgres = common::needed_env("MICRO_TEST_POSTGRES_URL", test)?;
    let nats = common::needed_env("MICRO_TEST_NATS_URL", test)?;
    Some((postgres, nats))
}

/// A name no earlier run used: the shared backends outlive test runs.
fn fresh(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{nanos:x}")
}

#[test]
fn two_servers_share_tokens_config_and_events() {
    let Some((postgres, nats)) = backends("two_servers_share_tokens_config_and_events") else { return };
    let args = ["--store", &postgres, "--events", &nats, "--broker", &nats, "--registry", &nats];
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_with(home_a.path(), &args);
    let b = Server::start_with(home_b.path(), &args);
    assert!(a.log().contains("keys shared through the store"), "{}", a.log());

    // Log in through A only; B's CLI gets A's token and B accepts it.
    a.ok(&["login", "--username", "admin", "--password", "micro"]);
    std::fs::copy(home_a.path().join("tokens.json"), home_b.path().join("tokens.json")).unwrap();
    let table = fresh("shared");
    a.ok(&["store", "write", "--table", &table, "greeting", "hello"]);
    assert_eq!(b.ok(&["store", "read", "--table", &table, "greeting"]).trim(), "hello");

    // Config, secrets included: sealed by A, opened by B with the shared key.
    let key = fresh("settings");
    a.ok(&["config", "set", &format!("{key}.colour"), "blue"]);
    a.ok(&["config", "set", "--secret", &format!("{key}.password"), "s3cret"]);
    assert_eq!(b.ok(&["config", "get", &format!("{key}.colour")]).trim(), "blue");
    assert_eq!(b.ok(&["config", "get", "--secret", &format!("{key}.password")]).trim(), "s3cret");

    // An event published through A is consumed through B.
    let topic = fresh("orders");
    a.ok(&["events", "publish", &topic, r#"{"n":1}"#]);
    let consumed = b.ok(&["events", "consume", &topic, "--offset", "1", "--count", "1"]);
    let event: serde_json::Value = serde_json::from_str(consumed.trim()).unwrap();
    assert_eq!(event["payload"]["n"], 1);

    // A service registered through A is callable through B's CLI and B's gateway. Its TTL is
    // long, so that its leaving on SIGTERM (below) can only be its own deregistration.
    let service =
        Service::start_helloworld(&a, &[("MICRO_REGISTER_TTL", "60s"), ("MICRO_REGISTER_INTERVAL", "20s")]);
    assert!(b.ok(&["services"]).lines().any(|name| name == "helloworld"), "B lists it");
    let reply: serde_json::Value = serde_json::from_str(&b.ok(&["helloworld", "--name=Alice"])).unwrap();
    assert_eq!(reply["msg"], "Hello Alice");
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home_b.path().join("tokens.json")).unwrap()).unwrap();
    let token = tokens["e2e/micro"]["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let (status, body) = http_request(
        &b.http,
        "POST",
        "/helloworld/call",
        &[("Authorization", &bearer), ("Content-Type", "application/json")],
        br#"{"name":"Bob"}"#,
    );
    assert_eq!((status, body.contains("Hello Bob")), (200, true), "{body}");
    let address = service.address.clone();
    // GetService fails (not found) once the last node is gone.
    let node_listed = |server: &Server| {
        let output =
            server.micro(&["call", "registry", "Registry.GetService", r#"{"service":"helloworld"}"#]);
        common::stdout(&output).contains(&address)
    };
    assert!(node_listed(&b), "B sees the node registered through A");
    assert!(service.signal(15).success(), "SIGTERM: exits cleanly");
    // Deregistered through A, seen through B, well before the 60 s TTL could have dropped it.
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || !node_listed(&b)),
        "SIGTERM deregisters the node in the shared registry"
    );

    // The shared secrets live where no client reaches them.
    let databases = b.ok(&["store", "databases"]);
    assert!(!databases.lines().any(|db| db.starts_with('_')), "{databases}");
    let denied = b.micro(&["store", "list", "--database", "_micro", "--table", "secrets"]);
    assert!(!denied.status.success());
    assert!(common::stderr(&denied).contains("reserved"), "{}", common::stderr(&denied));
}
