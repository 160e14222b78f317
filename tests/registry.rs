//! `micro server --registry nats://…` end to end: several servers on one NATS share the
//! registry, so a service registered through one is listed, called and reached over HTTP
//! through another. Needs the NATS server `MICRO_TEST_NATS_URL` names; prints that it was
//! skipped without it (fails in CI).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, Service, eventually, http_request};

fn nats_url(test: &str) -> Option<String> {
    common::needed_env("MICRO_TEST_NATS_URL", test)
}

fn listed(server: &Server, name: &str) -> bool {
    server.ok(&["services"]).lines().any(|line| line == name)
}

/// Makes a server in `to` sign tokens and seal secrets with the keys of the server in `from`,
/// so a token issued by either is valid on both and at the services either one serves.
// Until the keys are shared through the store (issue 7), servers sharing a registry share them
// by copying the files `micro_auth::KEY_FILE` and `backends::config_secret_key` read.
fn share_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("server")).unwrap();
    for file in ["auth_key", "config_secret_key"] {
        std::fs::copy(from.join("server").join(file), to.join("server").join(file))
            .unwrap_or_else(|err| panic!("copy server/{file}: {err}"));
    }
}

#[test]
fn a_service_registered_through_one_server_is_served_by_another() {
    let Some(url) = nats_url("a_service_registered_through_one_server_is_served_by_another") else { return };
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = ["--registry", url.as_str(), "--events", url.as_str(), "--broker", url.as_str()];
    let a = Server::start_with(home_a.path(), &flags);
    share_keys(home_a.path(), home_b.path());
    let b = Server::start_with(home_b.path(), &flags);
    for server in [&a, &b] {
        server.ok(&["login", "--username", "admin", "--password", "micro"]);
        let log = server.log();
        assert!(
            log.lines().any(|line| line.contains("registry") && line.contains(&format!("nats {url}"))),
            "the log names the registry backend: {log}"
        );
    }

    // Registered through A only, heartbeating every 500 ms for 2 s.
    let hello =
        Service::start_helloworld(&a, &[("MICRO_REGISTER_TTL", "2s"), ("MICRO_REGISTER_INTERVAL", "500ms")]);
    assert!(listed(&a, "helloworld"));
    assert!(
        eventually(Duration::from_secs(10), || listed(&b, "helloworld")),
        "B lists what registered through A"
    );
    let nodes = b.ok(&["call", "registry", "Registry.GetService", r#"{"service":"helloworld"}"#]);
    assert!(nodes.contains(&hello.address), "B knows the node: {nodes}");

    let reply: serde_json::Value = serde_json::from_str(&b.ok(&["helloworld", "--name=Alice"])).unwrap();
    assert_eq!(reply["msg"], "Hello Alice", "the CLI through B reaches the service (B's proxy)");
    let (status, body) = http_request(
        &b.http,
        "POST",
        "/helloworld/call",
        &[("Micro-Namespace", "micro")],
        br#"{"name":"Bob"}"#,
    );
    assert_eq!(status, 200, "B's gateway reaches the service: {body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"], "Hello Bob");

    // Killed: nobody deregisters it; its TTL runs out and every server drops it.
    let killed = Instant::now();
    hello.signal(9);
    assert!(
        // Its 2 s TTL, the reapers' 1 s tick, and a generous margin for a loaded machine.
        eventually(Duration::from_secs(2 + 10), || !listed(&b, "helloworld") && !listed(&a, "helloworld")),
        "gone from both servers once its TTL passed"
    );
    assert!(killed.elapsed() >= Duration::from_millis(1000), "not before its TTL: {:?}", killed.elapsed());
    let (status, body) = http_request(
        &b.http,
        "POST",
        "/helloworld/call",
        &[("Micro-Namespace", "micro")],
        br#"{"name":"Bob"}"#,
    );
    assert_eq!(status, 404, "{body}");
}

#[test]
fn an_unreachable_or_unknown_registry_stops_the_boot_with_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let boot = |args: &[&str]| common::boot_error(home.path(), args);
    let unreachable = boot(&["--registry", "nats://127.0.0.1:1"]);
    assert!(
        unreachable.contains("nats registry backend") && unreachable.contains("nats://127.0.0.1:1"),
        "{unreachable}"
    );
    let unknown = boot(&["--registry", "etcd://localhost"]);
    assert!(unknown.contains("registry.backend") && unknown.contains("nats://"), "{unknown}");

    let mut dump = common::micro_cmd(home.path());
    dump.env("MICRO_REGISTRY", "nats://127.0.0.1:4222").args(["server", "--dump-config"]);
    let config: toml::Value = toml::from_str(&common::stdout(&dump.output().unwrap())).unwrap();
    assert_eq!(config["registry"]["backend"].as_str(), Some("nats://127.0.0.1:4222"));
    let mut dump = common::micro_cmd(home.path());
    dump.args(["server", "--dump-config"]);
    let config: toml::Value = toml::from_str(&common::stdout(&dump.output().unwrap())).unwrap();
    assert_eq!(config["registry"]["backend"].as_str(), Some("memory"), "the default");
}
