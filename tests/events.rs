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

/// The server's retention sweeper (runs at boot, then every minute; default retention 7 days,
/// crates/micro-server/src/backends.rs `events`): after a restart, an event that has aged past
/// retention is gone while an old one still within it and a fresh one stay, and the topic's
/// sequence numbers carry on rather than repeat.
#[test]
fn the_retention_sweeper_removes_only_events_past_retention() {
    use micro_proto::events::PublishRequest;
    use micro_proto::events::stream_client::StreamClient;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.path().join("tokens.json")).unwrap()).unwrap();
    let admin = format!("Bearer {}", tokens["e2e/micro"]["access_token"].as_str().unwrap());

    // Explicit timestamps (unix seconds, as the wire has them) only gRPC can set: one that
    // passes retention two seconds from now, one a day inside it.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expiring = now - RETENTION.as_secs() + 2;
    let old_but_kept = now - RETENTION.as_secs() + 24 * 60 * 60;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = StreamClient::new(channel);
        for (topic, timestamp) in [("expiring", expiring), ("aged", old_but_kept)] {
            let mut request = tonic::Request::new(PublishRequest {
                topic: topic.into(),
                payload: format!(r#"{{"n":{timestamp}}}"#).into_bytes(),
                timestamp: timestamp as i64,
                ..Default::default()
            });
            request.metadata_mut().insert("authorization", admin.parse().unwrap());
            client.publish(request).await.unwrap();
        }
    });
    server.ok(&["events", "publish", "fresh", r#"{"n":1}"#]);
    assert_eq!(
        sequences(&server.ok(&["events", "read", "expiring"])),
        [expiring],
        "kept while within retention"
    );

    // Wait out the two seconds (on the wall clock, which retention is measured by), then
    // restart: the sweeper's first pass runs at boot.
    let past = UNIX_EPOCH + RETENTION + Duration::from_secs(expiring + 1);
    while SystemTime::now() < past {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.signal(15).success());
    let server = Server::start(home.path());
    let swept = common::eventually(Duration::from_secs(30), || {
        server
            .log()
            .lines()
            .any(|line| line.contains("removed events past their retention") && line.contains("removed=1"))
    });
    assert!(swept, "the sweeper reports removing exactly one event:\n{}", server.log());
    assert_eq!(server.ok(&["events", "read", "expiring"]), "", "the expired event is gone");
    assert_eq!(
        sequences(&server.ok(&["events", "read", "aged"])),
        [old_but_kept],
        "an old event within retention stays"
    );
    assert_eq!(sequences(&server.ok(&["events", "read", "fresh"])), [1]);

    server.ok(&["events", "publish", "expiring", r#"{"n":2}"#]);
    let read = server.ok(&["events", "read", "expiring"]);
    let event: serde_json::Value = serde_json::from_str(read.trim()).unwrap();
    assert_eq!(
        (event["sequence"].as_u64(), event["payload"]["n"].as_u64()),
        (Some(2), Some(2)),
        "sequences never repeat"
    );
}
