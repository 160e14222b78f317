//! The contract tests of [`Broker`] (see its docs): every backend runs [`run_all`].
//!
//! Each check takes a fresh-enough broker and uses its own namespaces and topics, so the checks
//! can share one broker. They panic on failure, like `assert!`.

use std::collections::HashSet;
use std::time::Duration;

use crate::{Broker, Message, SUBSCRIBER_BUFFER, Subscription};

/// How long a check waits for a message that must arrive.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check against `broker`.
pub async fn run_all(broker: &dyn Broker) {
    fan_out(broker).await;
    queue_groups_split(broker).await;
    namespaces_isolated(broker).await;
    slow_subscriber_does_not_block(broker).await;
    unsubscribe_on_drop(broker).await;
}

fn numbered(n: usize) -> Message {
    let mut message = Message::new(n.to_string());
    message.header.insert("n".to_string(), n.to_string());
    message
}

async fn next(subscription: &mut Subscription) -> usize {
    let message = tokio::time::timeout(RECEIVE_TIMEOUT, subscription.recv())
        .await
        .expect("a published message did not arrive in time")
        .expect("the broker closed a live subscription");
    std::str::from_utf8(&message.body).expect("bodies are numbers").parse().expect("bodies are numbers")
}

async fn take(subscription: &mut Subscription, count: usize) -> Vec<usize> {
    let mut received = Vec::with_capacity(count);
    for _ in 0..count {
        received.push(next(subscription).await);
    }
    received
}

/// Whatever is waiting, without waiting for more: publishes sent before a marker are all in
/// once the marker has arrived.
async fn until_marker(subscription: &mut Subscription, marker: usize) -> Vec<usize> {
    let mut received = Vec::new();
    loop {
        let n = next(subscription).await;
        if n == marker {
            return received;
        }
        received.push(n);
    }
}

/// Every subscriber without a queue gets every message, in publish order, with its headers.
pub async fn fan_out(broker: &dyn Broker) {
    const SUBSCRIBERS: usize = 5;
    const MESSAGES: usize = 100;
    let mut subscriptions = Vec::new();
    for _ in 0..SUBSCRIBERS {
        subscriptions.push(broker.subscribe("conformance-fanout", "orders.created", None).await.unwrap());
    }
    for n in 0..MESSAGES {
        broker.publish("conformance-fanout", "orders.created", numbered(n)).await.unwrap();
    }
    for subscription in &mut subscriptions {
        let first = tokio::time::timeout(RECEIVE_TIMEOUT, subscription.recv()).await.unwrap().unwrap();
        assert_eq!(first.header.get("n").map(String::as_str), Some("0"), "headers travel with the message");
        assert_eq!(take(subscription, MESSAGES - 1).await, (1..MESSAGES).collect::<Vec<_>>());
        assert_eq!(subscription.dropped(), 0);
    }
    // An exact topic match only: neither a prefix nor a longer topic receives anything.
    let mut other = broker.subscribe("conformance-fanout", "orders", None).await.unwrap();
    broker.publish("conformance-fanout", "orders.created", numbered(0)).await.unwrap();
    broker.publish("conformance-fanout", "orders", numbered(7)).await.unwrap();
    assert_eq!(next(&mut other).await, 7);
}

/// Members of one queue split the messages with no duplicates and no gaps; another queue and a
/// plain subscriber each get all of them.
pub async fn queue_groups_split(broker: &dyn Broker) {
    const MESSAGES: usize = 100;
    const MARKER: usize = usize::MAX;
    let (ns, topic) = ("conformance-queues", "jobs");
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(broker.subscribe(ns, topic, Some("workers".to_string())).await.unwrap());
    }
    let mut auditors = broker.subscribe(ns, topic, Some("auditors".to_string())).await.unwrap();
    let mut plain = broker.subscribe(ns, topic, None).await.unwrap();
    for n in 0..MESSAGES {
        broker.publish(ns, topic, numbered(n)).await.unwrap();
    }
    let all: Vec<usize> = (0..MESSAGES).collect();
    assert_eq!(take(&mut auditors, MESSAGES).await, all, "a one-member queue gets everything");
    assert_eq!(take(&mut plain, MESSAGES).await, all, "a plain subscriber gets everything");

    // One marker per worker ends each share: round robin (the contract's "spread across
    // members") hands each worker one of them.
    for _ in 0..workers.len() {
        broker.publish(ns, topic, numbered(MARKER)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut shares = Vec::new();
    for worker in &mut workers {
        let share = until_marker(worker, MARKER).await;
        assert!(!share.is_empty(), "every queue member gets a share of the messages");
        seen.extend(share.iter().copied());
        shares.push(share);
    }
    let unique: HashSet<usize> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no message reaches two members of one queue");
    assert_eq!(unique, all.iter().copied().collect(), "every message reaches the queue");
    for share in &shares {
        assert!(share.windows(2).all(|w| w[0] < w[1]), "each member sees its share in publish order");
    }
}

/// A subscriber in one namespace never sees another namespace's messages on the same topic, in
/// either direction, queue members included.
pub async fn namespaces_isolated(broker: &dyn Broker) {
    const MARKER: usize = usize::MAX;
    let (micro_ns, foo_ns) = ("conformance-micro", "conformance-foo");
    let mut micro = broker.subscribe(micro_ns, "news", None).await.unwrap();
    let mut micro_queue = broker.subscribe(micro_ns, "news", Some("q".to_string())).await.unwrap();
    let mut tenant = broker.subscribe(foo_ns, "news", None).await.unwrap();
    let mut tenant_queue = broker.subscribe(foo_ns, "news", Some("q".to_string())).await.unwrap();
    broker.publish(micro_ns, "news", numbered(1)).await.unwrap();
    broker.publish(foo_ns, "news", numbered(2)).await.unwrap();
    // A marker in each namespace, published after both: whatever leaked across would arrive
    // before it, so each subscriber's messages up to its marker are exactly its own.
    broker.publish(micro_ns, "news", numbered(MARKER)).await.unwrap();
    broker.publish(foo_ns, "news", numbered(MARKER)).await.unwrap();
    assert_eq!(until_marker(&mut micro, MARKER).await, [1], "micro never sees foo's messages");
    assert_eq!(until_marker(&mut micro_queue, MARKER).await, [1], "nor does a queue in micro");
    assert_eq!(until_marker(&mut tenant, MARKER).await, [2], "foo never sees micro's messages");
    assert_eq!(until_marker(&mut tenant_queue, MARKER).await, [2], "nor does a queue in foo");
}

/// A subscriber that never reads does not hold up the publisher or other subscribers; what does
/// not fit its buffer is dropped and counted.
pub async fn slow_subscriber_does_not_block(broker: &dyn Broker) {
    const EXTRA: usize = 50;
    let (ns, topic) = ("conformance-slow", "ticks");
    let total = SUBSCRIBER_BUFFER + EXTRA;
    let before = broker.dropped();
    let mut slow = broker.subscribe(ns, topic, None).await.unwrap();
    let mut fast = broker.subscribe(ns, topic, None).await.unwrap();
    let publishing = async {
        for n in 0..total {
            broker.publish(ns, topic, numbered(n)).await.unwrap();
            assert_eq!(next(&mut fast).await, n, "a subscriber that keeps up gets everything");
        }
    };
    tokio::time::timeout(RECEIVE_TIMEOUT, publishing).await.expect("publishing waited on a slow subscriber");

    assert_eq!(slow.dropped(), EXTRA as u64, "every message past the buffer is dropped and counted");
    assert_eq!(fast.dropped(), 0);
    assert!(broker.dropped() >= before + EXTRA as u64, "the broker-wide drop count includes them");
    // The slow subscriber still has the oldest messages, in order.
    assert_eq!(take(&mut slow, SUBSCRIBER_BUFFER).await, (0..SUBSCRIBER_BUFFER).collect::<Vec<_>>());
    broker.publish(ns, topic, numbered(total)).await.unwrap();
    assert_eq!(next(&mut slow).await, total, "once drained it receives again");
}

/// A dropped subscription gets nothing more: its queue's other members take over its share.
pub async fn unsubscribe_on_drop(broker: &dyn Broker) {
    const MESSAGES: usize = 20;
    let (ns, topic) = ("conformance-unsubscribe", "events");
    let mut stays = broker.subscribe(ns, topic, Some("q".to_string())).await.unwrap();
    let leaves = broker.subscribe(ns, topic, Some("q".to_string())).await.unwrap();
    drop(leaves);
    for n in 0..MESSAGES {
        broker.publish(ns, topic, numbered(n)).await.unwrap();
    }
    assert_eq!(take(&mut stays, MESSAGES).await, (0..MESSAGES).collect::<Vec<_>>());

    let plain = broker.subscribe(ns, topic, None).await.unwrap();
    drop(plain);
    let before = broker.dropped();
    for n in 0..SUBSCRIBER_BUFFER * 2 {
        broker.publish(ns, topic, numbered(n)).await.unwrap();
        next(&mut stays).await;
    }
    assert_eq!(broker.dropped(), before, "nothing is queued (or dropped) for a gone subscriber");
}
