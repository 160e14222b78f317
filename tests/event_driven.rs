//! A service written with the framework's events and broker clients (`examples/orders`), run
//! by hand against a real server: `Service::consume` stores each order once and acks it,
//! shared by two instances; `Service::subscribe` turns each broker message into one event.

mod common;

use std::time::{Duration, Instant};

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
    // Acked once stored: each order is handled by one instance, once. An event whose ack is lost
    // comes back when its ack wait (the server's default, 30 s) runs out, so the count is taken
    // after that window, counted per order id: a late duplicate is seen.
    let stored_at = Instant::now();
    let handled = |log: String| log.lines().filter(|line| line.contains("Stored order")).count();
    let ids = |log: String| -> Vec<u32> {
        log.lines()
            .filter(|line| line.contains("Stored order"))
            .filter_map(|line| line.split_whitespace().find_map(|field| field.strip_prefix("id=")))
            .map(|id| id.parse().unwrap_or_else(|_| panic!("order ids are numbers: {id}")))
            .collect()
    };
    // The bad one (`{"no":"id"}`) fails, is given back and redelivered: retry limit 3 means four
    // deliveries, a second apart, then the server gives up on it.
    let failures = |log: String| log.lines().filter(|line| line.contains("event handler failed")).count();
    assert!(
        eventually(Duration::from_secs(30), || {
            server.log().contains("event not acknowledged within its retry limit; dropped")
        }),
        "the bad event is given up on after its retries:\n{}\n{}\n{}",
        server.log(),
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

    // Out of the redelivery window: nothing came back, nothing was handled twice.
    let window = Duration::from_secs(30) + Duration::from_secs(5);
    std::thread::sleep(window.saturating_sub(stored_at.elapsed()));
    let mut all = [ids(one.log()), ids(two.log())].concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=10).collect::<Vec<_>>(),
        "each order stored exactly once:\n{}\n{}",
        one.log(),
        two.log()
    );
    assert_eq!(
        failures(one.log()) + failures(two.log()),
        4,
        "the bad event: first delivery and 3 retries, no more:\n{}\n{}",
        one.log(),
        two.log()
    );

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
