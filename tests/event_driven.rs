//! A service written with the framework's events and broker clients (`examples/orders`), run
//! by hand against a real server: `Service::consume` stores each order once and acks it,
//! shared by two instances; `Service::subscribe` turns each broker message into one event.

mod common;

use std::time::Duration;

use common::{Server, Service, eventually};

fn payloads(output: &str, field: &str) -> Vec<String> {
    let mut values: Vec<String> = output
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("one JSON event per line");
            event["payload"][field].to_string()
        })
        .collect();
    values.sort();
    values
}

#[test]
fn services_consume_events_and_broker_messages() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    // Published before any consumer exists: the group starts at sequence 1 and gets them.
    for id in 1..=5 {
        server.ok(&["events", "publish", "orders", &format!(r#"{{"id":{id}}}"#)]);
    }
    server.ok(&["events", "publish", "orders", r#"{"no":"id"}"#]);

    let one = Service::start_example("orders", &server, &[]);
    let two = Service::start_example("orders", &server, &[]);
    for instance in [&one, &two] {
        instance.wait_for("Subscribed");
    }
    for id in 6..=10 {
        server.ok(&["events", "publish", "orders", &format!(r#"{{"id":{id}}}"#)]);
    }
    let stored = |server: &Server| server.ok(&["store", "list", "--table", "orders"]);
    assert!(
        eventually(Duration::from_secs(20), || stored(&server).lines().count() == 10),
        "every order stored: {}\n{}\n{}",
        stored(&server),
        one.log(),
        two.log()
    );
    assert_eq!(server.ok(&["store", "read", "--table", "orders", "order/7"]).trim(), r#"{"id":7}"#);
    // Acked once stored: each order is handled by one instance, once (the bad one is retried).
    let handled = |log: String| log.lines().filter(|line| line.contains("Stored order")).count();
    assert!(
        eventually(Duration::from_secs(10), || handled(one.log()) + handled(two.log()) == 10),
        "each order stored once:\n{}\n{}",
        one.log(),
        two.log()
    );

    // Broker → events: the instances share the subscription, so each message is appended once.
    for who in ["a", "b", "c"] {
        server.ok(&["broker", "publish", "audit", &format!(r#"{{"who":"{who}"}}"#)]);
    }
    let log = |server: &Server| server.ok(&["events", "read", "audit-log"]);
    assert!(
        eventually(Duration::from_secs(10), || log(&server).lines().count() >= 3),
        "audit messages appended: {}",
        log(&server)
    );
    assert_eq!(payloads(&log(&server), "who"), [r#""a""#, r#""b""#, r#""c""#]);

    // A restarted instance resumes the group where it was: only new orders are stored again.
    let status = one.signal(15);
    assert!(status.success(), "SIGTERM stops the service cleanly");
    drop(two);
    let three = Service::start_example("orders", &server, &[]);
    three.wait_for("Consuming");
    server.ok(&["events", "publish", "orders", r#"{"id":11}"#]);
    three.wait_for("Stored order");
    assert_eq!(handled(three.log()), 1, "only the new order: {}", three.log());
}
