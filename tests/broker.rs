//! `micro broker` end to end: ephemeral messages from one CLI process to another.

mod common;

use common::Server;

#[test]
fn published_messages_reach_a_subscriber_in_order() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let numbers = common::three_broker_messages(home.path(), "greetings", |n| {
        server.ok(&["broker", "publish", "greetings", "hello", &n.to_string()]);
    });
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "in publish order: {numbers:?}");

    let bad = server.micro(&["broker", "publish", "no spaces/allowed", "x"]);
    assert_ne!(bad.status.code(), Some(0));
}
