//! Namespace isolation of the broker and events, end to end in both directions: two CLIs on one
//! server, the admin in `micro` and a tenant in `foo`, use the same topic; neither's
//! subscribers or consumers ever get the other's messages.
//!
//! Each check ends with a marker published in each namespace after everything else: a message
//! that leaked across would arrive before it, so what a process printed up to its marker is
//! exactly what it was delivered.

mod common;

use std::time::Duration;

use common::{Collector, Server, eventually, micro_in};

/// How long a process may take to attach or to get what was published.
const PATIENCE: Duration = Duration::from_secs(30);

/// The lines of `collector` up to (without) `marker`, once it has printed it.
fn until_marker(collector: &Collector, marker: &str, what: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let arrived = eventually(PATIENCE, || {
        lines = collector.lines();
        lines.iter().any(|line| line.contains(marker))
    });
    assert!(arrived, "{what} never got its marker {marker:?}: {lines:?}");
    let end = lines.iter().position(|line| line.contains(marker)).unwrap();
    lines.truncate(end);
    lines
}

#[test]
fn broker_messages_stay_in_their_namespace_both_ways() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    let foo = common::tenant_home(&server, "foo", "bob", "s3cret");
    let micro_publish = |words: &[&str]| server.ok(&[&["broker", "publish", "news"][..], words].concat());
    let foo_publish = |words: &[&str]| {
        let output = micro_in(foo.path(), &[&["broker", "publish", "news"][..], words].concat());
        assert!(output.status.success(), "{}", common::stderr(&output));
    };

    let in_micro = [
        Collector::start(home.path(), &["broker", "subscribe", "news"]),
        Collector::start(home.path(), &["broker", "subscribe", "news", "--queue", "q"]),
    ];
    let in_foo = [
        Collector::start(foo.path(), &["broker", "subscribe", "news"]),
        Collector::start(foo.path(), &["broker", "subscribe", "news", "--queue", "q"]),
    ];
    // The broker keeps nothing: probe each namespace until its subscribers have attached.
    let attached = eventually(PATIENCE, || {
        micro_publish(&["probe", "micro"]);
        foo_publish(&["probe", "foo"]);
        in_micro.iter().chain(&in_foo).all(|subscriber| !subscriber.lines().is_empty())
    });
    assert!(attached, "the subscribers never attached");

    for n in 0..5 {
        micro_publish(&["from", "micro", &n.to_string()]);
        foo_publish(&["from", "foo", &n.to_string()]);
    }
    micro_publish(&["end", "micro"]);
    foo_publish(&["end", "foo"]);

    let own = |who: &str| (0..5).map(|n| format!("from {who} {n}")).collect::<Vec<_>>();
    for (namespace, subscribers, other) in [("micro", &in_micro, "foo"), ("foo", &in_foo, "micro")] {
        for subscriber in subscribers.iter() {
            let lines = until_marker(subscriber, &format!("end {namespace}"), namespace);
            assert!(
                lines.iter().all(|line| !line.contains(other)),
                "a subscriber in {namespace} got {other}'s messages: {lines:?}"
            );
            let messages: Vec<String> = lines.into_iter().filter(|line| line.starts_with("from ")).collect();
            assert_eq!(messages, own(namespace), "a subscriber in {namespace} gets its own, in order");
        }
    }
}

#[test]
fn events_stay_in_their_namespace_both_ways() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    let foo = common::tenant_home(&server, "foo", "bob", "s3cret");
    let run_in_foo = |args: &[&str]| {
        let output = micro_in(foo.path(), args);
        assert!(output.status.success(), "micro {args:?} in foo: {}", common::stderr(&output));
        common::stdout(&output)
    };
    let publish_in = |namespace: &str, label: &str| {
        let args = ["events", "publish", "orders", &format!(r#"{{"from":"{namespace}","label":"{label}"}}"#)];
        if namespace == "micro" { server.ok(&args) } else { run_in_foo(&args) }
    };

    // Consumers from the start of the topic, one grouped and one not, in each namespace; once
    // each has printed its namespace's first event it is attached and waiting while the other
    // namespace publishes.
    let consume = ["events", "consume", "orders", "--offset", "1"];
    let grouped = ["events", "consume", "orders", "--offset", "1", "--group", "billing"];
    let in_micro = [Collector::start(home.path(), &consume), Collector::start(home.path(), &grouped)];
    let in_foo = [Collector::start(foo.path(), &consume), Collector::start(foo.path(), &grouped)];
    publish_in("micro", "ready");
    publish_in("foo", "ready");
    let attached =
        eventually(PATIENCE, || in_micro.iter().chain(&in_foo).all(|consumer| !consumer.lines().is_empty()));
    assert!(attached, "the consumers never got their first event");

    for n in 0..5 {
        publish_in("micro", &n.to_string());
        publish_in("foo", &n.to_string());
    }
    publish_in("micro", "end");
    publish_in("foo", "end");

    let labels = |lines: &[String], namespace: &str| -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(event["payload"]["from"], namespace, "a consumer in {namespace} got {line}");
                event["payload"]["label"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let own: Vec<String> =
        std::iter::once("ready".to_string()).chain((0..5).map(|n| n.to_string())).collect();
    for (namespace, consumers) in [("micro", &in_micro), ("foo", &in_foo)] {
        for consumer in consumers.iter() {
            let lines = until_marker(consumer, r#""label":"end""#, namespace);
            assert_eq!(labels(&lines, namespace), own, "a consumer in {namespace} gets its own, in order");
        }
    }

    // Each namespace's log holds its own seven events, numbered from 1.
    let read_micro = server.ok(&["events", "read", "orders", "--limit", "100"]);
    let read_foo = run_in_foo(&["events", "read", "orders", "--limit", "100"]);
    for (namespace, output) in [("micro", read_micro), ("foo", read_foo)] {
        let lines: Vec<String> = output.lines().map(str::to_string).collect();
        let mut expected = own.clone();
        expected.push("end".to_string());
        assert_eq!(labels(&lines, namespace), expected, "{namespace}'s log");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["sequence"], 1, "each namespace numbers its own topic: {}", lines[0]);
    }
}
