//! `micro events` end to end: durable, ordered, grouped, namespaced, and kept across `kill -9`.

mod common;

use common::Server;
use micro_proto::events::stream_client::StreamClient;

/// The `Authorization` header of the harness's admin login (`e2e/micro` in `tokens.json`).
fn admin(home: &std::path::Path) -> String {
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("tokens.json")).unwrap()).unwrap();
    format!("Bearer {}", tokens["e2e/micro"]["access_token"].as_str().unwrap())
}

/// A gRPC client of `events.Stream` on `server`.
async fn stream_client(server: &Server) -> StreamClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    StreamClient::new(channel)
}

/// `message` with the `admin` header.
fn authorized<T>(admin: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", admin.parse().unwrap());
    request
}

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
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let admin = admin(home.path());

    // Explicit timestamps (unix seconds, as the wire has them) only gRPC can set: one that
    // passes retention two seconds from now, one a day inside it.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expiring = now - RETENTION.as_secs() + 2;
    let old_but_kept = now - RETENTION.as_secs() + 24 * 60 * 60;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = stream_client(&server).await;
        for (topic, timestamp) in [("expiring", expiring), ("aged", old_but_kept)] {
            let publish = PublishRequest {
                topic: topic.into(),
                payload: format!(r#"{{"n":{timestamp}}}"#).into_bytes(),
                timestamp: timestamp as i64,
                ..Default::default()
            };
            client.publish(authorized(&admin, publish)).await.unwrap();
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

/// Dead letters end to end (docs/events.md#dead-letters): a consumer that always fails an
/// event with retry limit 3 gets it 4 times (the first delivery and 3 retries), then it is a
/// dead letter; a permanent nack dead-letters at once. `micro events dead` lists them (kept
/// across `kill -9`), `release` hands one back to the group once, `drop` removes the rest, and
/// bad input is refused with nothing changed.
#[test]
fn dead_letters_are_listed_released_and_dropped() {
    use micro_proto::events::{AckRequest, ConsumeRequest, NackRequest};

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    for n in 1..=3 {
        server.ok(&["events", "publish", "orders", &format!(r#"{{"n":{n}}}"#)]);
    }
    let admin = admin(home.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (retried, permanent) = runtime.block_on(async {
        let mut client = stream_client(&server).await;
        let consume = ConsumeRequest {
            group: "billing".into(),
            topic: "orders".into(),
            auto_ack: false,
            ack_wait: 30_000_000_000,
            retry_limit: 3,
            sequence: 1,
            ..Default::default()
        };
        let mut stream = client.consume(authorized(&admin, consume)).await.unwrap().into_inner();
        let nack = |id: &str, permanent: bool, reason: &str| NackRequest {
            id: id.into(),
            topic: "orders".into(),
            group: "billing".into(),
            permanent,
            reason: reason.into(),
        };
        // The server streams ahead, so events 2 and 3 may come between event 1's redeliveries.
        let (mut deliveries, mut first, mut second, mut acked) = (0, String::new(), String::new(), false);
        while deliveries < 4 || second.is_empty() || !acked {
            let event = stream.message().await.unwrap().unwrap();
            match event.sequence {
                1 => {
                    deliveries += 1;
                    assert!(deliveries <= 4, "retry limit 3 allows 4 deliveries");
                    let reason = format!("boom {deliveries}");
                    client.nack(authorized(&admin, nack(&event.id, false, &reason))).await.unwrap();
                    first = event.id;
                }
                2 => {
                    client.nack(authorized(&admin, nack(&event.id, true, "malformed order"))).await.unwrap();
                    second = event.id;
                }
                _ => {
                    let ack = AckRequest {
                        id: event.id,
                        success: true,
                        topic: "orders".into(),
                        group: "billing".into(),
                    };
                    client.ack(authorized(&admin, ack)).await.unwrap();
                    acked = true;
                }
            }
        }
        (first, second)
    });

    let table = server.ok(&["events", "dead", "orders", "--group", "billing"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("ATTEMPTS") && lines[0].ends_with("LAST ERROR"));
    assert!(lines[1].starts_with(&retried) && lines[1].ends_with("boom 4"), "{table}");
    assert!(lines[2].starts_with(&permanent) && lines[2].ends_with("malformed order"), "{table}");
    let dead = |server: &Server| -> Vec<serde_json::Value> {
        let json = server.ok(&["events", "dead", "orders", "--group", "billing", "--output", "json"]);
        json.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    };
    let listed = dead(&server);
    assert_eq!(
        listed
            .iter()
            .map(|d| (d["id"].as_str().unwrap(), d["attempts"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [(retried.as_str(), 4), (permanent.as_str(), 1)],
        "retry limit 3 = 4 deliveries; a permanent nack = 1"
    );
    assert_eq!(listed[0]["event"]["payload"]["n"], 1);

    // Bad input: a clear error, nothing changed.
    let bad = server.micro(&["events", "release", "orders", "--group", "billing"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(common::stderr(&bad).trim(), "Name the dead letters to release by event id, or give --all");
    let bad = server.micro(&["events", "drop", "orders", "--group", "billing", "--all", &retried]);
    assert_eq!(common::stderr(&bad).trim(), "Give event ids or --all, not both");
    let bad = server.micro(&["events", "release", "orders", "--group", "billing", &retried, "nope"]);
    assert!(!bad.status.success());
    assert_eq!(common::stderr(&bad).trim(), "Not dead letters of group billing: nope");
    let bad = server.micro(&["events", "dead", "orders", "--group", "bad group"]);
    assert!(common::stderr(&bad).contains("Invalid group"), "{}", common::stderr(&bad));
    assert_eq!(dead(&server).len(), 2, "bad input changed nothing");

    let server = {
        assert!(!server.signal(9).success());
        Server::start(home.path())
    };
    assert_eq!(dead(&server).len(), 2, "dead letters kept across kill -9");

    assert_eq!(
        server.ok(&["events", "release", "orders", "--group", "billing", &retried]),
        format!("{retried}\n")
    );
    let again = server.ok(&["events", "consume", "orders", "--group", "billing", "--count", "1"]);
    assert_eq!(sequences(&again), [1], "the released event goes back to its group");
    assert_eq!(dead(&server).len(), 1);
    assert_eq!(
        server.ok(&["events", "drop", "orders", "--group", "billing", "--all"]),
        format!("{permanent}\n")
    );
    assert!(dead(&server).is_empty());
    assert_eq!(
        server.ok(&["events", "dead", "orders", "--group", "billing"]).lines().count(),
        1,
        "just the header"
    );
}

/// Topics and replay end to end (docs/events.md#topics, #replay): `micro events topics` lists
/// the namespace's topics only; `micro events replay` moves a group back while a member is
/// consuming — it prints the replayed events once, in order, then new ones — from a sequence,
/// from an RFC 3339 time or a duration ago, with `--to`; bad input is refused, changing nothing.
#[test]
fn topics_are_listed_and_groups_replayed() {
    use std::time::Duration;

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    for n in 1..=5 {
        server.ok(&["events", "publish", "orders", &format!(r#"{{"n":{n}}}"#)]);
    }
    server.ok(&["events", "publish", "audit", r#"{"n":0}"#]);

    let table = server.ok(&["events", "topics"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("EVENTS") && lines[0].ends_with("LAST EVENT"));
    assert!(lines[1].starts_with("audit ") && lines[2].starts_with("orders "), "in name order: {table}");
    let topics: Vec<serde_json::Value> =
        server.ok(&["events", "topics", "--output", "json"]).lines().map(common::json).collect();
    assert_eq!(
        topics
            .iter()
            .map(|t| (
                t["name"].as_str().unwrap(),
                t["events"].as_u64().unwrap(),
                t["last_sequence"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("audit", 1, 1), ("orders", 5, 5)]
    );

    // A member of group billing, consuming until killed; it takes the five events.
    let member = common::Collector::start(
        home.path(),
        &["events", "consume", "orders", "--group", "billing", "--offset", "1"],
    );
    let printed = |count: usize| {
        let arrived = common::eventually(Duration::from_secs(30), || member.lines().len() >= count);
        assert!(arrived, "{count} lines: {:?}", member.lines());
        sequences(&member.lines().join("\n"))
    };
    assert_eq!(printed(5), [1, 2, 3, 4, 5]);

    // Replay from a sequence: the running member prints 3 to 5 again, once, then new events.
    assert_eq!(
        server.ok(&["events", "replay", "orders", "--group", "billing", "--from", "3"]),
        "Replaying 3 events (sequences 3 to 5, then every later event) to group billing\n"
    );
    server.ok(&["events", "publish", "orders", r#"{"n":6}"#]);
    assert_eq!(printed(9), [1, 2, 3, 4, 5, 3, 4, 5, 6]);

    // From a time before every event to a sequence: 1 and 2, then the group carries on where
    // it was.
    assert_eq!(
        server.ok(&[
            "events",
            "replay",
            "orders",
            "--group",
            "billing",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2"
        ]),
        "Replaying 2 events (sequences 1 to 2) to group billing\n"
    );
    server.ok(&["events", "publish", "orders", r#"{"n":7}"#]);
    assert_eq!(printed(12)[9..], [1, 2, 7], "the bounded replay, then only new events");
    server.ok(&["events", "replay", "orders", "--group", "billing", "--from", "1h", "--to", "1"]);
    assert_eq!(printed(13)[12..], [1]);

    // Bad input: one clear line each, nothing changed.
    let future = "2999-01-01T00:00:00Z";
    for (args, expected) in [
        (vec!["--group", "nobody", "--from", "1"], "No consumer group nobody on topic orders"),
        (vec!["--group", "billing", "--from", "3", "--to", "2"], "after its end"),
        (vec!["--group", "billing", "--from", future], "in the future"),
        (vec!["--group", "billing", "--from", "0"], "Invalid --from 0: sequence numbers start at 1"),
        (vec!["--group", "billing", "--from", "yesterday"], "Invalid --from \"yesterday\""),
    ] {
        let bad = server.micro(&[&["events", "replay", "orders"][..], &args].concat());
        assert!(!bad.status.success(), "{args:?}");
        assert!(common::stderr(&bad).contains(expected), "{args:?}: {}", common::stderr(&bad));
        assert_eq!(common::stdout(&bad), "");
    }
    let unknown = server.micro(&["events", "replay", "nothing", "--group", "billing", "--from", "1"]);
    assert!(common::stderr(&unknown).contains("Topic nothing has no events"), "{}", common::stderr(&unknown));
    server.ok(&["events", "publish", "orders", r#"{"n":8}"#]);
    assert_eq!(printed(14)[13..], [8], "the bad replays changed nothing");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(member.lines().len(), 14, "each event once: {:?}", member.lines());

    // A tenant sees only its own topics, and cannot replay micro's groups.
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s", "bob"]);
    let foo = common::tenant_home(&server, "foo", "bob", "s");
    let in_foo = |args: &[&str]| common::micro_in(foo.path(), args);
    assert_eq!(common::stdout(&in_foo(&["events", "topics"])).lines().count(), 1, "just the header");
    assert!(in_foo(&["events", "publish", "mine", r#"{"n":1}"#]).status.success());
    let listed = common::stdout(&in_foo(&["events", "topics", "--output", "json"]));
    assert_eq!(listed.lines().map(|line| common::json(line)["name"].clone()).collect::<Vec<_>>(), ["mine"]);
    let theirs = in_foo(&["events", "replay", "orders", "--group", "billing", "--from", "1"]);
    assert!(common::stderr(&theirs).contains("Topic orders has no events"), "{}", common::stderr(&theirs));
    assert_eq!(server.ok(&["events", "topics"]).lines().count(), 3, "micro does not list foo's topic");
}
