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

/// Two servers on one NATS, a `--queue` subscriber process on each: the queue group spans the
/// servers, so each of 20 messages published through one server reaches exactly one member,
/// and a plain subscriber on the other server gets them all.
#[test]
fn a_queue_group_spans_servers_on_nats() {
    use std::time::Duration;
    const JOBS: u32 = 20;
    let Some(url) = nats_url("a_queue_group_spans_servers_on_nats") else { return };
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |home: &std::path::Path| {
        let server = Server::start_with(home, &["--broker", &url]);
        server.ok(&["login", "--username", "admin", "--password", "micro"]);
        server
    };
    // B only carries its member: it must outlive the subscribers (dropped first, declared later).
    let (a, _b) = (start(home_a.path()), start(home_b.path()));
    let subject = fresh("work");
    let queue = fresh("workers");
    let members = [
        common::Collector::start(home_a.path(), &["broker", "subscribe", &subject, "--queue", &queue]),
        common::Collector::start(home_b.path(), &["broker", "subscribe", &subject, "--queue", &queue]),
    ];
    let everything = common::Collector::start(home_b.path(), &["broker", "subscribe", &subject]);
    let jobs = |subscriber: &common::Collector| -> Vec<u32> {
        subscriber.lines().iter().filter_map(|line| line.strip_prefix("job ")?.parse().ok()).collect()
    };
    // The broker keeps nothing: probe until every subscriber is attached (NATS hands queue
    // members messages at random, so probing goes on until each member has had one).
    let ready = common::eventually(Duration::from_secs(30), || {
        a.ok(&["broker", "publish", &subject, "probe"]);
        members.iter().all(|member| !member.lines().is_empty()) && !everything.lines().is_empty()
    });
    assert!(
        ready,
        "the subscribers never attached: {:?}",
        members.iter().map(common::Collector::lines).collect::<Vec<_>>()
    );

    for n in 0..JOBS {
        a.ok(&["broker", "publish", &subject, "job", &n.to_string()]);
    }
    // NATS delivers one publisher's messages to each subscriber in publish order, so once a
    // member has printed an `end` published after every job, nothing more of the jobs can reach
    // it. Members get queue messages at random: publish ends until each has had one.
    let ended = |subscriber: &common::Collector| subscriber.lines().iter().any(|line| line == "end");
    let settled = common::eventually(Duration::from_secs(30), || {
        a.ok(&["broker", "publish", &subject, "end"]);
        members.iter().all(ended) && ended(&everything)
    });
    assert!(settled, "the end markers never arrived: {:?}", members.iter().map(jobs).collect::<Vec<_>>());
    let shares: Vec<Vec<u32>> = members.iter().map(jobs).collect();
    let mut all = shares.concat();
    all.sort_unstable();
    assert_eq!(all, (0..JOBS).collect::<Vec<_>>(), "each job reached exactly one member: {shares:?}");
    // Both servers' members take part (all 20 to one member by chance: odds of 1 in 500,000).
    assert!(shares.iter().all(|share| !share.is_empty()), "the group is shared across servers: {shares:?}");
    for share in &shares {
        assert!(
            share.windows(2).all(|pair| pair[0] < pair[1]),
            "each member's share is in order: {shares:?}"
        );
    }
    assert_eq!(
        jobs(&everything),
        (0..JOBS).collect::<Vec<_>>(),
        "a plain subscriber gets them all, in order"
    );
}

/// Replay and topics on NATS (docs/events.md#replay): a member of a group runs on server B
/// while the group is replayed through server A; the member prints the replayed events once,
/// in order, then new ones. The topic is listed with its count.
#[test]
fn a_replay_through_one_server_reaches_a_member_on_another() {
    use std::time::Duration;
    let Some(url) = nats_url("a_replay_through_one_server_reaches_a_member_on_another") else { return };
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |home: &std::path::Path| {
        let server = Server::start_with(home, &["--events", &url]);
        server.ok(&["login", "--username", "admin", "--password", "micro"]);
        server
    };
    let (a, _b) = (start(home_a.path()), start(home_b.path()));
    let topic = fresh("replayed");
    for n in 1..=4 {
        a.ok(&["events", "publish", &topic, &format!(r#"{{"n":{n}}}"#)]);
    }
    let member = common::Collector::start(
        home_b.path(),
        &["events", "consume", &topic, "--group", "g", "--offset", "1"],
    );
    let printed = |count: usize| {
        let arrived = common::eventually(Duration::from_secs(30), || member.lines().len() >= count);
        assert!(arrived, "{count} lines: {:?}", member.lines());
        payloads(&member.lines().join("\n"))
    };
    assert_eq!(printed(4), [1, 2, 3, 4]);
    assert_eq!(
        a.ok(&["events", "replay", &topic, "--group", "g", "--from", "2", "--to", "3"]),
        "Replaying 2 events (sequences 2 to 3) to group g\n"
    );
    a.ok(&["events", "publish", &topic, r#"{"n":5}"#]);
    assert_eq!(printed(7), [1, 2, 3, 4, 2, 3, 5], "the replay once, in order, then new events");
    let bad = a.micro(&["events", "replay", &topic, "--group", "nobody", "--from", "1"]);
    assert!(common::stderr(&bad).contains("No consumer group nobody"), "{}", common::stderr(&bad));

    // The shared NATS may hold other runs' topics: look for this one.
    let listed = a.ok(&["events", "topics", "--output", "json"]);
    let mine: Vec<serde_json::Value> =
        listed.lines().map(common::json).filter(|t| t["name"] == topic.as_str()).collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!((mine[0]["events"].as_u64(), mine[0]["last_sequence"].as_u64()), (Some(5), Some(5)));
}
