//! `micro events` end to end: durable, ordered, grouped, namespaced, and kept across `kill -9`.

mod common;

use common::Server;

fn sequences(output: &str) -> Vec<u64> {
    output
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["payload"]["n"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn events_are_ordered_durable_and_namespaced() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    for n in 0..12 {
        assert_eq!(
            server.ok(&["events", "publish", "orders", &format!(r#"{{"n":{n}}}"#), "--metadata", "k=v"]),
            ""
        );
    }
    let bad = server.micro(&["events", "publish", "orders", "{not json"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(common::stderr(&bad).starts_with("The payload is not valid JSON: "), "{}", common::stderr(&bad));
    assert_eq!(common::stdout(&bad), "");

    assert_eq!(
        sequences(&server.ok(&["events", "read", "orders", "--limit", "100"])),
        (0..12).collect::<Vec<_>>()
    );
    let all = server.ok(&["events", "consume", "orders", "--offset", "1", "--count", "12"]);
    assert_eq!(sequences(&all), (0..12).collect::<Vec<_>>(), "consumed in publish order");
    let first: serde_json::Value = serde_json::from_str(all.lines().next().unwrap()).unwrap();
    assert_eq!(first["metadata"]["k"], "v");

    // A named group starts where it is told the first time; its members share the events:
    // a second member gets the rest, though the server had streamed them to the first already.
    let group = ["events", "consume", "orders", "--group", "billing", "--offset", "1", "--count", "4"];
    assert_eq!(sequences(&server.ok(&group)), [0, 1, 2, 3]);
    assert_eq!(sequences(&server.ok(&group)), [4, 5, 6, 7]);

    let status = server.signal(9);
    assert!(!status.success());
    let server = Server::start(home.path());
    assert_eq!(
        sequences(&server.ok(&["events", "read", "orders", "--limit", "100"])).len(),
        12,
        "kept across kill -9"
    );
    assert_eq!(sequences(&server.ok(&group)), [8, 9, 10, 11], "the group resumes after its last ack");

    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s", "bob"]);
    server.ok(&["user", "namespace", "set", "foo"]);
    server.ok(&["login", "--username", "bob", "--password", "s"]);
    assert_eq!(server.ok(&["events", "read", "orders"]), "", "foo never sees micro's events");
    server.ok(&["events", "publish", "orders", r#"{"n":100}"#]);
    assert_eq!(sequences(&server.ok(&["events", "read", "orders"])), [100]);
}
