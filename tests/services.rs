//! User services end to end: the `helloworld` example registers with a real server and is
//! reached through the CLI, the gRPC proxy and the HTTP gateway.

mod common;

use std::time::Duration;

use common::{Server, Service, eventually, http_request, stderr};
use serde_json::Value;

fn listed(server: &Server, name: &str) -> bool {
    server.ok(&["services"]).lines().any(|line| line == name)
}

#[test]
fn helloworld_is_served_by_cli_proxy_and_gateway() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let hello = Service::start_helloworld(&server, &[]);
    assert!(listed(&server, "helloworld"), "registered services are listed");

    let reply: serde_json::Value = serde_json::from_str(&server.ok(&["helloworld", "--name=Alice"])).unwrap();
    assert_eq!(reply["msg"], "Hello Alice");
    let help = server.ok(&["helloworld", "call", "--help"]);
    assert!(help.contains("--name string"), "{help}");
    let call = server.ok(&["call", "helloworld", "Helloworld.Call", r#"{"name":"John"}"#]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&call).unwrap()["msg"], "Hello John");
    let stream = server.ok(&["stream", "helloworld", "Helloworld.Stream", r#"{"count":3}"#]);
    let messages: Vec<serde_json::Value> =
        serde_json::Deserializer::from_str(&stream).into_iter().map(Result::unwrap).collect();
    // `count` is an int64: a string in protobuf JSON, and 0 (the default) may be left out.
    let counts: Vec<i64> = messages
        .iter()
        .map(|message| match &message["count"] {
            Value::Null => 0,
            Value::String(count) => count.parse().unwrap_or_else(|_| panic!("{stream}")),
            other => other.as_i64().unwrap_or_else(|| panic!("{stream}")),
        })
        .collect();
    assert_eq!(counts, [0, 1, 2], "numbered from 0, in order: {stream}");

    let ns = [("Micro-Namespace", "micro")];
    let (status, body) = http_request(&server.http, "GET", "/helloworld?name=Jane", &ns, b"");
    assert_eq!(
        (status, serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"].clone()),
        (200, "Hello Jane".into()),
        "{body}"
    );
    let (status, body) = http_request(&server.http, "POST", "/helloworld/call", &ns, br#"{"name":"Joe"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"], "Hello Joe");

    let (status, body) = http_request(&server.http, "POST", "/nosuchservice/call", &ns, b"{}");
    assert_eq!(status, 404, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("errors are JSON");
    assert_eq!(error["Code"], 404);
    let (status, body) = http_request(&server.http, "POST", "/helloworld/call", &ns, b"{\"name\":");
    assert_eq!(status, 400, "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["Detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    let huge = vec![b' '; 5 * 1024 * 1024];
    let (status, _) = http_request(&server.http, "POST", "/helloworld/call", &ns, &huge);
    assert_eq!(status, 413, "bodies over the limit are refused");

    // Deny everyone the service: anonymous callers get 401, logged-in ones 403.
    server.ok(&[
        "auth",
        "create",
        "rule",
        "no-hello",
        "--resource",
        "service:helloworld:*",
        "--access",
        "denied",
        "--priority",
        "10",
    ]);
    let (status, body) = http_request(&server.http, "GET", "/helloworld?name=X", &ns, b"");
    assert_eq!(status, 401, "{body}");
    let token = server.ok(&["user", "token"]);
    let bearer = format!("Bearer {}", token.trim());
    let (status, body) = http_request(
        &server.http,
        "GET",
        "/helloworld?name=X",
        &[("Micro-Namespace", "micro"), ("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 403, "{body}");
    let denied = server.micro(&["call", "helloworld", "Helloworld.Call", "{}"]);
    assert_eq!(denied.status.code(), Some(2), "the proxy applies the same rules: {}", stderr(&denied));
    server.ok(&["auth", "delete", "rule", "no-hello"]);

    let status = hello.signal(15);
    assert!(status.success(), "SIGTERM stops the service cleanly: {status}");
    // Gone at once, not when its TTL (90 s by default) lets the reaper drop it: the service
    // deregistered itself before exiting. Nothing in the server's log says it was reaped.
    assert!(
        eventually(Duration::from_secs(10), || !listed(&server, "helloworld")),
        "deregistered on SIGTERM, long before its TTL"
    );
    assert!(!server.log().contains("dropped nodes whose TTL passed"), "{}", server.log());
}

/// A node whose TTL lapses is dropped by the server's reaper (every second) without anyone
/// deregistering it.
#[test]
fn a_killed_service_leaves_within_its_ttl() {
    const TTL: Duration = Duration::from_secs(2);
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let hello = Service::start_helloworld(
        &server,
        &[("MICRO_REGISTER_TTL", "2s"), ("MICRO_REGISTER_INTERVAL", "500ms")],
    );
    assert!(listed(&server, "helloworld"));
    hello.signal(9);
    assert!(listed(&server, "helloworld"), "nobody deregistered it");
    // The TTL is the promise: gone once it has passed, with a generous margin for the reaper's
    // one-second tick and a loaded machine.
    assert!(
        eventually(TTL + Duration::from_secs(8), || !listed(&server, "helloworld")),
        "gone once its TTL passed"
    );
    assert!(
        eventually(Duration::from_secs(5), || server.log().contains("dropped nodes whose TTL passed")),
        "the reaper dropped it: {}",
        server.log()
    );
}

#[test]
fn calls_alternate_between_instances() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let first = Service::start_helloworld(&server, &[]);
    let second = Service::start_helloworld(&server, &[]);
    let nodes = server.ok(&["call", "registry", "Registry.GetService", r#"{"service":"helloworld"}"#]);
    assert!(nodes.contains(&first.address) && nodes.contains(&second.address), "{nodes}");

    for i in 0..6 {
        let reply = server.ok(&["call", "helloworld", "Helloworld.Call", &format!(r#"{{"name":"n{i}"}}"#)]);
        assert!(reply.contains(&format!("Hello n{i}")), "{reply}");
    }
    // The handler logs each request's name; the proxy round-robins over the two nodes.
    let served = |service: &Service| (0..6).filter(|i| service.log().contains(&format!("name=n{i}"))).count();
    // Log lines arrive through a pipe: give them a moment.
    assert!(
        eventually(Duration::from_secs(10), || served(&first) + served(&second) == 6),
        "every call logged:\n{}\n{}",
        first.log(),
        second.log()
    );
    assert_eq!((served(&first), served(&second)), (3, 3), "calls alternate between the instances");
}
