//! `micro broker` end to end: ephemeral messages from one CLI process to another.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Server;

#[test]
fn published_messages_reach_a_subscriber_in_order() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let mut subscriber = common::micro_cmd(home.path())
        .args(["broker", "subscribe", "greetings", "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("micro broker subscribe starts");

    // Messages published before the subscription exists are gone (the broker keeps nothing), so
    // publish until the subscriber has had its three.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while subscriber.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the subscriber never got 3 messages");
        server.ok(&["broker", "publish", "greetings", "hello", &sent.to_string()]);
        sent += 1;
    }
    assert!(subscriber.wait().unwrap().success());
    let mut output = String::new();
    subscriber.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    let numbers: Vec<u32> =
        output.lines().map(|line| line.strip_prefix("hello ").unwrap().parse().unwrap()).collect();
    assert_eq!(numbers.len(), 3, "{output}");
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "in publish order: {numbers:?}");

    let bad = server.micro(&["broker", "publish", "no spaces/allowed", "x"]);
    assert_ne!(bad.status.code(), Some(0));
}
