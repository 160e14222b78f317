//! `micro broker` end to end: ephemeral messages from one CLI process to another.

mod common;

use std::time::Duration;

use common::{Collector, Server};

#[test]
fn published_messages_reach_a_subscriber_in_order() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let numbers = common::three_broker_messages(home.path(), "greetings", |n| {
        server.ok(&["broker", "publish", "greetings", "hello", &n.to_string()]);
    });
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "in publish order: {numbers:?}");

    // Refused by the server's topic check (a server error, exit 127), with the rule in the message.
    let bad = server.micro(&["broker", "publish", "no spaces/allowed", "x"]);
    assert_eq!(bad.status.code(), Some(127), "{}", common::stderr(&bad));
    assert_eq!(
        common::stderr(&bad).trim(),
        r#"Topic "no spaces/allowed" may only contain A-Z a-z 0-9 . _ -"#
    );
}

/// A `micro broker subscribe ARGS...` process collecting the lines it prints.
fn subscriber(home: &std::path::Path, args: &[&str]) -> Collector {
    Collector::start(home, &[&["broker", "subscribe"], args].concat())
}

/// The `job <n>` numbers `subscriber` printed.
fn jobs(subscriber: &Collector) -> Vec<u32> {
    subscriber.lines().iter().filter_map(|line| line.strip_prefix("job ")?.parse().ok()).collect()
}

/// Whether `subscriber` printed the end marker.
fn ended(subscriber: &Collector) -> bool {
    subscriber.lines().iter().any(|line| line == END)
}

/// Published after the jobs; a subscriber that printed it has printed every job it will get.
const END: &str = "end";

/// Two subscriber processes in one queue group share a topic: each message reaches exactly one
/// of them, taking turns; a plain subscriber beside them still gets every message.
#[test]
fn a_queue_group_shares_messages_between_processes() {
    const JOBS: u32 = 20;
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let members = [
        subscriber(home.path(), &["work", "--queue", "workers"]),
        subscriber(home.path(), &["work", "--queue", "workers"]),
    ];
    let everything = subscriber(home.path(), &["work"]);
    // The broker keeps nothing: probe until every subscriber is attached (each member has had a
    // probe, and so has the plain subscriber).
    let ready = common::eventually(Duration::from_secs(30), || {
        server.ok(&["broker", "publish", "work", "probe"]);
        members.iter().all(|member| !member.lines().is_empty()) && !everything.lines().is_empty()
    });
    assert!(
        ready,
        "the subscribers never attached: {:?}",
        members.iter().map(Collector::lines).collect::<Vec<_>>()
    );

    for n in 0..JOBS {
        server.ok(&["broker", "publish", "work", "job", &n.to_string()]);
    }
    // Each subscriber gets the messages of the topic in publish order, so one that printed an end
    // marker published after the jobs has printed every delivery of a job it will ever get,
    // duplicates included. The members share the markers too: publish until each has had one.
    assert!(
        common::eventually(Duration::from_secs(30), || {
            server.ok(&["broker", "publish", "work", END]);
            members.iter().all(ended) && ended(&everything)
        }),
        "the end marker never reached every subscriber: {:?} / {:?}",
        members.iter().map(Collector::lines).collect::<Vec<_>>(),
        everything.lines()
    );
    let shares: Vec<Vec<u32>> = members.iter().map(jobs).collect();
    let mut all = shares.concat();
    all.sort_unstable();
    assert_eq!(all, (0..JOBS).collect::<Vec<_>>(), "each job reached exactly one member: {shares:?}");
    assert_eq!(
        shares.iter().map(Vec::len).collect::<Vec<_>>(),
        [JOBS as usize / 2; 2],
        "the members take turns: {shares:?}"
    );
    assert_eq!(
        jobs(&everything),
        (0..JOBS).collect::<Vec<_>>(),
        "a plain subscriber gets them all, in order"
    );
}
