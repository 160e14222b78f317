//! The conformance suite: the [`Events`] contract as executable checks, run by every backend.
//!
//! Compiled for this crate's tests and, with the `conformance` feature, for backends in other
//! crates:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn conformance() {
//!     micro_events::conformance::run_all(Arc::new(MyEvents::connect(url).await?)).await;
//! }
//! ```
//!
//! Each case is public, taking the backend and a topic to work in, so a failing case can be
//! run alone; cases panic with the finding. Requirements: real time (the ack-wait cases wait
//! out ack waits of [`ACK_WAIT`]), the backend's default retention, and namespaces `micro` and
//! `foo` usable. [`run_all`] works in topics named `conformance-<run id>-<case>`, so it can
//! run against a persistent backend that already holds data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{
    ConsumeOptions, Consumer, Delivery, Events, EventsError, GroupLag, MAX_DEAD_LETTERS, MAX_EVENT_BYTES,
    MAX_GROUPS, Nack, Position, PublishOptions, Replay, Replayed, Selection, Start,
};

/// The ack wait of the manual-ack cases: short, since they wait it out.
pub const ACK_WAIT: Duration = Duration::from_millis(150);
/// How long a case waits to be sure nothing more arrives: three ack waits, so an event that was
/// not settled (or a duplicate of one that was) has been redelivered within it.
const QUIET: Duration = Duration::from_millis(450);
/// How soon a waiting consumer must be woken by a publish: generous for a loaded machine, yet
/// well under a re-poll (the NATS backend's pull requests expire after 10 s; the embedded engine
/// does not poll at all).
const PROMPT: Duration = Duration::from_secs(5);
/// How long a case waits for something that must arrive.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs every case against `events`.
pub async fn run_all(events: std::sync::Arc<dyn Events>) {
    let events = &*events;
    let run = run_id();
    let topic = |case: &str| format!("conformance-{run}-{case}");

    in_order_exactly_once(events, &topic("order")).await;
    ack_wait_redelivery(events, &topic("ackwait")).await;
    nack_redelivers_at_once(events, &topic("nack")).await;
    groups_share_and_fan_out(events, &topic("groups")).await;
    leaving_member_releases(events, &topic("leave")).await;
    start_positions_and_read(events, &topic("start")).await;
    namespaces_isolated(events, &topic("isolation")).await;
    wakes_waiting_consumer(events, &topic("wake")).await;
    concurrent_members(events, &topic("concurrent")).await;
    concurrent_publishers(events, &topic("publishers")).await;
    validation(events, &topic("validation")).await;
    retry_limit_dead_letters_and_release(events, &topic("dead")).await;
    permanent_nack_and_drop(events, &topic("permanent")).await;
    dead_letter_limit(events, &topic("deadlimit")).await;
    topics_per_namespace(events, &topic("topics")).await;
    group_lag(events, &topic("lag")).await;
    replay_from_time_sequence_and_to(events, &topic("replay")).await;
    replay_while_consuming(events, &topic("replaylive")).await;
    replay_bad_input(events, &topic("replaybad")).await;
}

/// A name no earlier run in this or another process used.
fn run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", RUNS.fetch_add(1, Ordering::Relaxed))
}

async fn publish(events: &dyn Events, namespace: &str, topic: &str, payload: &[u8]) -> (String, u64) {
    let published = events
        .publish(namespace, topic, payload.to_vec(), PublishOptions::default())
        .await
        .unwrap_or_else(|err| panic!("publish to {namespace}/{topic}: {err}"));
    (published.id, published.sequence)
}

/// Manual-ack options for `group` from the beginning.
pub fn manual(group: &str, retry_limit: Option<u32>) -> ConsumeOptions {
    ConsumeOptions {
        group: Some(group.to_string()),
        start: Start::Sequence(1),
        auto_ack: false,
        ack_wait: ACK_WAIT,
        retry_limit,
    }
}

/// Auto-ack options for `group` from the beginning.
pub fn from_start(group: &str) -> ConsumeOptions {
    ConsumeOptions { group: Some(group.to_string()), start: Start::Sequence(1), ..ConsumeOptions::default() }
}

/// The next delivery, which must come within [`PATIENCE`].
pub async fn next(consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(PATIENCE, consumer.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(err))) => panic!("consumer failed: {err}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery within {PATIENCE:?}"),
    }
}

/// Panics if anything arrives within `quiet`.
pub async fn nothing_within(consumer: &mut Consumer, quiet: Duration, why: &str) {
    if let Ok(delivery) = tokio::time::timeout(quiet, consumer.next()).await {
        panic!("{why}: got {:?}", delivery.map(|d| d.map(|d| (d.event.sequence, d.attempt))));
    }
}

/// 1,000 events consumed from the start with auto-ack: all of them, in order, once.
pub async fn in_order_exactly_once(events: &dyn Events, topic: &str) {
    const N: u64 = 1000;
    for n in 1..=N {
        let (_, sequence) = publish(events, "micro", topic, &n.to_be_bytes()).await;
        assert_eq!(sequence, n, "sequences count from 1 in publish order");
    }
    let mut consumer = events.consume("micro", topic, from_start("all")).await.unwrap();
    let mut ids = std::collections::HashSet::new();
    for n in 1..=N {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.event.sequence, n, "delivered in publish order");
        assert_eq!(delivery.event.payload, n.to_be_bytes());
        assert_eq!(delivery.attempt, 1);
        assert!(ids.insert(delivery.event.id.clone()), "ids are unique");
        delivery.ack().await.expect("ack is a no-op with auto-ack");
    }
    nothing_within(&mut consumer, QUIET, "after every event was auto-acked").await;
}

/// Manual ack: an unacked event comes back with the same id after the ack wait; retry limit 1
/// means exactly two deliveries; an acked event never comes back.
pub async fn ack_wait_redelivery(events: &dyn Events, topic: &str) {
    let (id, _) = publish(events, "micro", topic, b"once").await;
    let mut consumer = events.consume("micro", topic, manual("g", Some(1))).await.unwrap();
    let delivered = tokio::time::Instant::now();
    let first = next(&mut consumer).await;
    assert_eq!((first.event.id.as_str(), first.attempt), (id.as_str(), 1));
    let second = next(&mut consumer).await;
    assert_eq!((second.event.id.as_str(), second.attempt), (id.as_str(), 2), "redelivered with the same id");
    assert!(delivered.elapsed() >= ACK_WAIT, "not redelivered before the ack wait ran out");
    nothing_within(&mut consumer, ACK_WAIT * 2, "retry limit 1 allows exactly 2 deliveries").await;
    assert_eq!(second.ack().await, Err(EventsError::NotFound), "a given-up event cannot be acked");
    let dead = events.dead_letters("micro", topic, "g").await.unwrap();
    assert_eq!(
        dead.iter().map(|d| (d.event.id.as_str(), d.attempts, d.error.as_str())).collect::<Vec<_>>(),
        [(id.as_str(), 2, "")],
        "an unacked event past its retry limit is a dead letter; no nack, so no error"
    );

    let (acked, _) = publish(events, "micro", topic, b"acked").await;
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.event.id, acked);
    delivery.ack().await.unwrap();
    assert_eq!(delivery.ack().await, Err(EventsError::NotFound), "an ack settles the event once");
    nothing_within(&mut consumer, ACK_WAIT * 2, "an acked event is not redelivered").await;
}

/// A nack redelivers at once (well before the ack wait), within the retry limit.
pub async fn nack_redelivers_at_once(events: &dyn Events, topic: &str) {
    let (id, _) = publish(events, "micro", topic, b"x").await;
    let options = ConsumeOptions { ack_wait: Duration::from_secs(60), ..manual("g", None) };
    let mut consumer = events.consume("micro", topic, options).await.unwrap();
    let first = next(&mut consumer).await;
    first.nack().await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("a nacked event comes back long before its 60 s ack wait")
        .unwrap()
        .unwrap();
    assert_eq!((again.event.id.as_str(), again.attempt), (id.as_str(), 2));
    // Settling through the trait (the gRPC path) works the same as through the delivery.
    events.ack("micro", topic, "g", &id).await.unwrap();
    assert_eq!(events.ack("micro", topic, "g", &id).await, Err(EventsError::NotFound));
    assert_eq!(events.nack("micro", topic, "nope", &id).await, Err(EventsError::NotFound));
}

/// Two consumers of one group split the events with no duplicates and no gaps; another group
/// gets every event again.
pub async fn groups_share_and_fan_out(events: &dyn Events, topic: &str) {
    const N: u64 = 200;
    for n in 1..=N {
        publish(events, "micro", topic, &n.to_be_bytes()).await;
    }
    let mut one = events.consume("micro", topic, from_start("shared")).await.unwrap();
    let mut two = events.consume("micro", topic, from_start("shared")).await.unwrap();
    let (mut got_one, mut got_two) = (Vec::new(), Vec::new());
    for _ in 0..N / 2 {
        got_one.push(next(&mut one).await.event.sequence);
        got_two.push(next(&mut two).await.event.sequence);
    }
    nothing_within(&mut one, QUIET, "the group's events are used up").await;
    nothing_within(&mut two, QUIET, "the group's events are used up").await;
    let mut all: Vec<u64> = got_one.iter().chain(&got_two).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=N).collect::<Vec<_>>(), "members share the events: no duplicates, no gaps");
    assert!(!got_one.is_empty() && !got_two.is_empty());

    let mut other = events.consume("micro", topic, from_start("other")).await.unwrap();
    for n in 1..=N {
        assert_eq!(next(&mut other).await.event.sequence, n, "another group gets every event");
    }

    // Members with manual ack: an event one member leaves unacked goes to the other.
    let (id, _) = publish(events, "micro", topic, b"handover").await;
    let mut three = events.consume("micro", topic, manual("manual", None)).await.unwrap();
    let mut four = events.consume("micro", topic, manual("manual", None)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..=N {
        let delivery = next(&mut three).await;
        seen.push(delivery.event.sequence);
        if delivery.event.id != id {
            delivery.ack().await.unwrap();
        }
    }
    assert_eq!(seen, (1..=N + 1).collect::<Vec<_>>());
    drop(three);
    let handed = next(&mut four).await;
    assert_eq!(
        (handed.event.id.as_str(), handed.attempt),
        (id.as_str(), 2),
        "redelivered to the other member"
    );
    handed.ack().await.unwrap();
}

/// A manual-ack member that goes away hands its unacked events to the group at once, not
/// after their ack wait: the next member gets them (same ids), then the rest, nothing twice.
pub async fn leaving_member_releases(events: &dyn Events, topic: &str) {
    let mut ids = Vec::new();
    for n in 1..=4u64 {
        ids.push(publish(events, "micro", topic, &n.to_be_bytes()).await.0);
    }
    // Far longer than `next` waits: a delivery within it proves the release.
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("leave", None) };
    let mut first = events.consume("micro", topic, options.clone()).await.unwrap();
    let acked = next(&mut first).await;
    acked.ack().await.unwrap();
    let unacked = next(&mut first).await;
    assert_eq!(unacked.event.sequence, 2);
    drop(first);

    let mut second = events.consume("micro", topic, options).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut second).await;
        got.push((delivery.event.id.clone(), delivery.event.sequence));
        delivery.ack().await.unwrap();
    }
    got.sort_by_key(|(_, sequence)| *sequence);
    let expected: Vec<(String, u64)> = ids[1..].iter().cloned().zip(2..=4).collect();
    assert_eq!(got, expected, "the released event and the rest, once each");
    nothing_within(&mut second, QUIET, "everything was acked").await;
}

/// Many publishers at once: every publish gets its own sequence, the topic has no gaps, each
/// publisher's events keep its order, and reads and consumers agree with what publish said.
pub async fn concurrent_publishers(events: &dyn Events, topic: &str) {
    const PUBLISHERS: u64 = 32;
    const EACH: u64 = 25;
    let published: Vec<Vec<(String, u64)>> = futures::future::join_all((0..PUBLISHERS).map(|p| async move {
        let mut mine = Vec::new();
        for n in 0..EACH {
            mine.push(publish(events, "micro", topic, format!("{p}/{n}").as_bytes()).await);
        }
        mine
    }))
    .await;
    let mut sequences: Vec<u64> = published.iter().flatten().map(|(_, sequence)| *sequence).collect();
    for mine in &published {
        assert!(mine.windows(2).all(|pair| pair[0].1 < pair[1].1), "a publisher's events keep its order");
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=PUBLISHERS * EACH).collect::<Vec<_>>(), "one sequence each, no gaps");
    let mut consumer = events.consume("micro", topic, from_start("check")).await.unwrap();
    let by_sequence: std::collections::HashMap<u64, String> =
        published.into_iter().flatten().map(|(id, sequence)| (sequence, id)).collect();
    for sequence in 1..=PUBLISHERS * EACH {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.event.sequence, sequence);
        assert_eq!(Some(&delivery.event.id), by_sequence.get(&sequence), "the id publish returned");
    }
}

/// Newest skips what is there; a sequence or a time starts there; read pages in order.
pub async fn start_positions_and_read(events: &dyn Events, topic: &str) {
    for n in 1..=5u64 {
        publish(events, "micro", topic, &n.to_be_bytes()).await;
    }
    let mut newest = events.consume("micro", topic, ConsumeOptions::default()).await.unwrap();
    let mut third = events
        .consume("micro", topic, ConsumeOptions { start: Start::Sequence(3), ..ConsumeOptions::default() })
        .await
        .unwrap();
    assert_eq!(next(&mut third).await.event.sequence, 3);

    let stored = events.read("micro", topic, 0, 0).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(stored.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms), "time order");
    let page = events.read("micro", topic, 2, 1).await.unwrap();
    assert_eq!(page.iter().map(|e| e.sequence).collect::<Vec<_>>(), [2, 3]);
    assert!(events.read("micro", topic, 10, 5).await.unwrap().is_empty());
    assert!(events.read("micro", "conformance-never-published", 10, 0).await.unwrap().is_empty());

    // Time offsets: an event with an explicit later timestamp, then a consumer from that time.
    let later = stored[4].timestamp_ms + 60_000;
    let options =
        PublishOptions { timestamp_ms: Some(later), metadata: BTreeMap::from([("k".into(), "v".into())]) };
    let published = events.publish("micro", topic, b"later".to_vec(), options).await.unwrap();
    assert_eq!((published.sequence, published.timestamp_ms), (6, later));
    let mut timed = events
        .consume("micro", topic, ConsumeOptions { start: Start::Time(later), ..ConsumeOptions::default() })
        .await
        .unwrap();
    let event = next(&mut timed).await.event;
    assert_eq!((event.sequence, event.payload.as_slice()), (6, b"later".as_slice()));
    assert_eq!(event.metadata.get("k").map(String::as_str), Some("v"));
    // An earlier explicit timestamp is raised so time order follows publish order.
    let options = PublishOptions { timestamp_ms: Some(1), ..PublishOptions::default() };
    assert_eq!(events.publish("micro", topic, Vec::new(), options).await.unwrap().timestamp_ms, later);

    let first_new = next(&mut newest).await.event.sequence;
    assert_eq!(first_new, 6, "newest starts after what was there when it joined");
}

/// A consumer in namespace `foo` never sees `micro`'s events, and the other way round.
pub async fn namespaces_isolated(events: &dyn Events, topic: &str) {
    let mut in_foo = events.consume("foo", topic, from_start("g")).await.unwrap();
    let (micro_id, _) = publish(events, "micro", topic, b"micro").await;
    let (_, foo_sequence) = publish(events, "foo", topic, b"foo").await;
    assert_eq!(foo_sequence, 1, "each namespace numbers its own topic");
    let delivery = next(&mut in_foo).await;
    assert_eq!(delivery.event.payload, b"foo");
    nothing_within(&mut in_foo, QUIET, "foo's consumer sees only foo's events").await;
    let read = events.read("foo", topic, 0, 0).await.unwrap();
    assert_eq!(read.iter().map(|e| e.payload.as_slice()).collect::<Vec<_>>(), [b"foo".as_slice()]);

    let mut micro = events.consume("micro", topic, manual("g", None)).await.unwrap();
    assert_eq!(next(&mut micro).await.event.id, micro_id);
    assert_eq!(events.ack("foo", topic, "g", &micro_id).await, Err(EventsError::NotFound));
    events.ack("micro", topic, "g", &micro_id).await.unwrap();
    // The other way round: micro's consumer and log hold only micro's event.
    nothing_within(&mut micro, QUIET, "micro's consumer sees only micro's events").await;
    let read = events.read("micro", topic, 0, 0).await.unwrap();
    assert_eq!(read.iter().map(|e| e.payload.as_slice()).collect::<Vec<_>>(), [b"micro".as_slice()]);
}

/// A consumer already waiting for new events wakes as soon as one is published.
pub async fn wakes_waiting_consumer(events: &dyn Events, topic: &str) {
    let mut consumer = events.consume("micro", topic, ConsumeOptions::default()).await.unwrap();
    let waiting = tokio::time::timeout(PATIENCE, consumer.next());
    let publishing = async {
        // Let the consumer find nothing and start waiting first.
        tokio::time::sleep(QUIET).await;
        let published = tokio::time::Instant::now();
        (publish(events, "micro", topic, b"wake").await, published)
    };
    let (delivery, ((id, _), published)) = tokio::join!(waiting, publishing);
    let delivery = delivery.expect("woken by the publish").unwrap().unwrap();
    assert_eq!(delivery.event.id, id);
    assert!(published.elapsed() < PROMPT, "woken promptly, not by a poll interval");
}

/// Members pulling at the same time from several tasks still get each event exactly once.
pub async fn concurrent_members(events: &dyn Events, topic: &str) {
    const N: usize = 300;
    const MEMBERS: usize = 3;
    let (done, _) = tokio::sync::watch::channel(false);
    let taken = std::sync::atomic::AtomicUsize::new(0);
    let member = |mut consumer: Consumer| {
        let (done, taken) = (&done, &taken);
        async move {
            let mut finished = done.subscribe();
            let mut got = Vec::new();
            loop {
                tokio::select! {
                    delivery = consumer.next() => {
                        let delivery = delivery.expect("consumer ended").expect("consumer failed");
                        got.push(delivery.event.sequence);
                        delivery.ack().await.unwrap();
                        if taken.fetch_add(1, Ordering::SeqCst) + 1 == N {
                            done.send_replace(true);
                        }
                    }
                    _ = finished.wait_for(|done| *done) => return got,
                }
            }
        }
    };
    let mut consumers = Vec::new();
    for _ in 0..MEMBERS {
        consumers.push(events.consume("micro", topic, manual("g", None)).await.unwrap());
    }
    let publishing = async {
        for n in 0..N {
            publish(events, "micro", topic, &n.to_be_bytes()).await;
        }
    };
    let members = futures::future::join_all(consumers.into_iter().map(member));
    let (got, ()) = tokio::time::timeout(PATIENCE * 3, async { tokio::join!(members, publishing) })
        .await
        .expect("every event consumed");
    let mut all: Vec<u64> = got.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=N as u64).collect::<Vec<_>>(), "no duplicates, no gaps");
}

fn invalid<T>(result: Result<T, EventsError>) -> bool {
    matches!(result, Err(EventsError::Invalid(_)))
}

/// Bad input is rejected with a clear error and changes nothing.
pub async fn validation(events: &dyn Events, topic: &str) {
    let empty = PublishOptions::default;
    assert!(invalid(events.publish("micro", "", vec![], empty()).await));
    assert!(invalid(events.publish("micro", "a b", vec![], empty()).await));
    assert!(invalid(events.publish("micro", &"t".repeat(257), vec![], empty()).await));
    assert!(invalid(events.publish("Not A Namespace", topic, vec![], empty()).await));
    assert!(invalid(events.publish("micro", topic, vec![0; MAX_EVENT_BYTES + 1], empty()).await));
    let many = (0..100).map(|n| (format!("k{n}"), String::new())).collect();
    assert!(invalid(
        events.publish("micro", topic, vec![], PublishOptions { metadata: many, timestamp_ms: None }).await
    ));
    assert!(
        events.publish("micro", topic, vec![0; MAX_EVENT_BYTES], empty()).await.is_ok(),
        "the limit itself is fine"
    );
    assert_eq!(
        events.read("micro", topic, 0, 0).await.unwrap().len(),
        1,
        "rejected publishes stored nothing"
    );

    let zero_wait = ConsumeOptions { ack_wait: Duration::ZERO, ..manual("g", None) };
    assert!(invalid(events.consume("micro", topic, zero_wait).await.map(|_| ())));
    assert!(invalid(events.consume("micro", topic, from_start("bad group")).await.map(|_| ())));
    assert!(invalid(events.read("micro", "bad/topic", 0, 0).await));
}

/// Retry limit 3 means three redeliveries after the first delivery (`Some(n)` = at most `n + 1`
/// deliveries): a consumer that always fails gets the event exactly 4 times (attempts 1 to 4),
/// and the 4th nack makes it a dead letter with 4 attempts, the last nack's reason and its
/// delivery times. The group moves on past it. `release` hands it back: a fixed consumer gets
/// it exactly once, as attempt 1, with the same id.
pub async fn retry_limit_dead_letters_and_release(events: &dyn Events, topic: &str) {
    let (id, sequence) = publish(events, "micro", topic, b"poison").await;
    let before = crate::now_ms();
    // Nacks, not ack waits, drive the retries: a delivery within `next` proves the nack did.
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("dl", Some(3)) };
    let mut failing = events.consume("micro", topic, options.clone()).await.unwrap();
    for attempt in 1..=4 {
        let delivery = next(&mut failing).await;
        assert_eq!((delivery.event.id.as_str(), delivery.attempt), (id.as_str(), attempt));
        delivery.nack_with(Nack::retry(format!("failure {attempt}"))).await.unwrap();
    }
    let dead = events.dead_letters("micro", topic, "dl").await.unwrap();
    assert_eq!(dead.len(), 1, "dead-lettered once the 4th nack returned: {dead:?}");
    let letter = &dead[0];
    assert_eq!(
        (letter.event.id.as_str(), letter.event.sequence, letter.event.payload.as_slice()),
        (id.as_str(), sequence, b"poison".as_slice())
    );
    assert_eq!((letter.attempts, letter.error.as_str()), (4, "failure 4"), "retry limit 3 = 4 deliveries");
    assert!(
        before <= letter.first_delivery_ms
            && letter.first_delivery_ms <= letter.last_delivery_ms
            && letter.last_delivery_ms <= crate::now_ms(),
        "delivery times: {letter:?}"
    );
    assert!(events.dead_letters("foo", topic, "dl").await.unwrap().is_empty(), "namespaces are isolated");
    assert!(events.dead_letters("micro", topic, "other").await.unwrap().is_empty(), "per group");

    let (after, _) = publish(events, "micro", topic, b"after").await;
    let delivery = next(&mut failing).await;
    assert_eq!((delivery.event.id.as_str(), delivery.attempt), (after.as_str(), 1), "the group moved on");
    delivery.ack().await.unwrap();
    nothing_within(&mut failing, QUIET, "a dead letter is not delivered again").await;
    drop(failing);

    assert_eq!(
        events.release("micro", topic, "dl", &Selection::Ids(vec![id.clone()])).await.unwrap(),
        std::slice::from_ref(&id)
    );
    assert!(events.dead_letters("micro", topic, "dl").await.unwrap().is_empty(), "released: no longer dead");
    let mut fixed = events.consume("micro", topic, options).await.unwrap();
    let delivery = next(&mut fixed).await;
    assert_eq!(
        (delivery.event.id.as_str(), delivery.event.sequence, delivery.attempt),
        (id.as_str(), sequence, 1),
        "released with its attempt count reset"
    );
    delivery.ack().await.unwrap();
    nothing_within(&mut fixed, QUIET, "a released event comes back exactly once").await;
    assert!(events.dead_letters("micro", topic, "dl").await.unwrap().is_empty());

    // A member already waiting is woken by a release, promptly.
    let (late, _) = publish(events, "micro", topic, b"late").await;
    next(&mut fixed).await.nack_with(Nack::permanent("not yet")).await.unwrap();
    let waiting = tokio::time::timeout(PATIENCE, fixed.next());
    let releasing = async {
        tokio::time::sleep(QUIET).await;
        let released = tokio::time::Instant::now();
        (events.release("micro", topic, "dl", &Selection::All).await.unwrap(), released)
    };
    let (delivery, (ids, released)) = tokio::join!(waiting, releasing);
    let delivery = delivery.expect("woken by the release").unwrap().unwrap();
    assert_eq!((ids, delivery.event.id.as_str(), delivery.attempt), (vec![late.clone()], late.as_str(), 1));
    assert!(released.elapsed() < PROMPT, "woken promptly, not by a poll interval");
    delivery.ack().await.unwrap();
    nothing_within(&mut fixed, QUIET, "once").await;
}

/// A permanent nack dead-letters at once (listed as soon as the nack returns), whatever the
/// retry limit; `drop` removes dead letters for good. Bad input is refused and changes
/// nothing. A consumer without a group has no dead letters: its permanent nack drops the event.
pub async fn permanent_nack_and_drop(events: &dyn Events, topic: &str) {
    let (id, _) = publish(events, "micro", topic, b"malformed").await;
    let (good, _) = publish(events, "micro", topic, b"good").await;
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("perm", None) };
    let mut consumer = events.consume("micro", topic, options).await.unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.event.id, id);
    delivery.nack_with(Nack::permanent("cannot parse")).await.unwrap();
    let dead = events.dead_letters("micro", topic, "perm").await.unwrap();
    assert_eq!(
        dead.iter().map(|d| (d.event.id.as_str(), d.attempts, d.error.as_str())).collect::<Vec<_>>(),
        [(id.as_str(), 1, "cannot parse")]
    );
    assert_eq!(delivery.ack().await, Err(EventsError::NotFound), "a dead letter is settled for the group");
    let delivery = next(&mut consumer).await;
    assert_eq!((delivery.event.id.as_str(), delivery.attempt), (good.as_str(), 1));
    delivery.ack().await.unwrap();

    let ids = |ids: &[&str]| Selection::Ids(ids.iter().map(|id| (*id).to_string()).collect());
    assert!(invalid(events.drop_dead_letters("micro", topic, "perm", &ids(&["nope", &id])).await));
    assert!(invalid(events.release("micro", topic, "perm", &ids(&[])).await));
    assert!(invalid(events.release("micro", topic, "perm", &ids(&[&good])).await), "not a dead letter");
    assert!(invalid(events.dead_letters("micro", topic, "").await), "dead letters need a named group");
    assert!(invalid(events.dead_letters("micro", "bad topic", "perm").await));
    assert_eq!(
        events.dead_letters("micro", topic, "perm").await.unwrap().len(),
        1,
        "bad input changed nothing"
    );

    assert_eq!(
        events.drop_dead_letters("micro", topic, "perm", &ids(&[&id])).await.unwrap(),
        std::slice::from_ref(&id)
    );
    assert!(events.dead_letters("micro", topic, "perm").await.unwrap().is_empty(), "dropped");
    assert!(events.release("micro", topic, "perm", &Selection::All).await.unwrap().is_empty());
    nothing_within(&mut consumer, QUIET, "a dropped dead letter never comes back").await;

    let private = ConsumeOptions { group: None, ..manual("unused", None) };
    let mut alone = events
        .consume("micro", topic, ConsumeOptions { start: Start::Sequence(1), ..private })
        .await
        .unwrap();
    let delivery = next(&mut alone).await;
    delivery.nack_with(Nack::permanent("no group")).await.unwrap();
    let delivery = next(&mut alone).await;
    assert_eq!(delivery.event.id, good, "a consumer without a group drops a permanently nacked event");
}

/// A group keeps at most [`MAX_DEAD_LETTERS`]; one more removes the oldest. `drop` of all
/// empties the list.
pub async fn dead_letter_limit(events: &dyn Events, topic: &str) {
    let total = MAX_DEAD_LETTERS as u64 + 1;
    let mut ids = Vec::new();
    for n in 1..=total {
        ids.push(publish(events, "micro", topic, &n.to_be_bytes()).await.0);
    }
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("full", None) };
    let mut consumer = events.consume("micro", topic, options).await.unwrap();
    for n in 1..=total {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.event.sequence, n);
        delivery.nack_with(Nack::permanent("full")).await.unwrap();
    }
    let dead = events.dead_letters("micro", topic, "full").await.unwrap();
    assert_eq!(dead.len(), MAX_DEAD_LETTERS, "at most MAX_DEAD_LETTERS per group");
    assert_eq!(
        dead.iter().map(|d| d.event.sequence).collect::<Vec<_>>(),
        (2..=total).collect::<Vec<_>>(),
        "the oldest made room, the rest in sequence order"
    );
    let dropped = events.drop_dead_letters("micro", topic, "full", &Selection::All).await.unwrap();
    assert_eq!(dropped, ids[1..].to_vec());
    assert!(events.dead_letters("micro", topic, "full").await.unwrap().is_empty());
}

/// `topics` lists the namespace's topics with their counts, last sequence and last event's
/// time, and nothing of another namespace.
pub async fn topics_per_namespace(events: &dyn Events, topic: &str) {
    /// Slack for the last event's time: NATS reports when its server stored the event.
    const CLOCKS: u64 = 5_000;
    let (one, two) = (format!("{topic}-one"), format!("{topic}-two"));
    for _ in 0..3 {
        publish(events, "micro", &one, b"1").await;
    }
    let before = crate::now_ms();
    publish(events, "micro", &two, b"2").await;
    let after = crate::now_ms();
    publish(events, "foo", &format!("{topic}-foo"), b"f").await;
    let mine = |listed: Vec<crate::TopicInfo>| -> Vec<crate::TopicInfo> {
        listed.into_iter().filter(|info| info.name.starts_with(topic)).collect()
    };
    let listed = mine(events.topics("micro").await.unwrap());
    assert_eq!(
        listed.iter().map(|info| (info.name.as_str(), info.events, info.last_sequence)).collect::<Vec<_>>(),
        [(one.as_str(), 3, 3), (two.as_str(), 1, 1)],
        "micro's topics in name order, with their counts and last sequences"
    );
    let last = listed[1].last_timestamp_ms;
    assert!(
        before - CLOCKS <= last && last <= after + CLOCKS,
        "the last event's time: {before} <= {last} <= {after}"
    );
    let in_foo = mine(events.topics("foo").await.unwrap());
    assert_eq!(
        in_foo.iter().map(|info| info.name.as_str()).collect::<Vec<_>>(),
        [format!("{topic}-foo").as_str()],
        "foo sees only its own topic"
    );
    assert!(invalid(events.topics("Not A Namespace").await));
}

/// Waits until [`Events::groups`] reports `group` of `namespace`/`topic` with `pending`,
/// `unacked` and `dead` (each of the last two only if the backend knows it).
async fn expect_lag(
    events: &dyn Events,
    (namespace, topic, group): (&str, &str, &str),
    (pending, unacked, dead): (u64, u64, u64),
    why: &str,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let groups = events.groups().await.unwrap();
        assert!(groups.len() <= MAX_GROUPS, "at most MAX_GROUPS reported");
        let key = |lag: &GroupLag| (lag.namespace.clone(), lag.topic.clone(), lag.group.clone());
        assert!(groups.windows(2).all(|pair| key(&pair[0]) < key(&pair[1])), "in order, each once");
        let found = groups.iter().find(|lag| {
            (lag.namespace.as_str(), lag.topic.as_str(), lag.group.as_str()) == (namespace, topic, group)
        });
        let Some(found) = found else {
            assert!(
                groups.len() < MAX_GROUPS,
                "{why}: the backend holds over MAX_GROUPS groups; use a fresh one"
            );
            panic!("{why}: {namespace}/{topic} group {group} not reported");
        };
        let matches = found.pending == pending
            && found.unacked.is_none_or(|n| n == unacked)
            && found.dead.is_none_or(|n| n == dead);
        if matches {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{why}: {found:?}, not pending {pending}, unacked {unacked}, dead {dead}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `groups` reports each named group's lag: publish 5, ack 2 and hold the third (pending 3, one
/// unacked), nack it as permanent (pending 2, one dead letter), also once its member left; a
/// group of another namespace created at "newest" has only what came after.
pub async fn group_lag(events: &dyn Events, topic: &str) {
    const N: u64 = 5;
    const ACKED: u64 = 2;
    for n in 1..=N {
        publish(events, "micro", topic, &n.to_be_bytes()).await;
    }
    let long = ConsumeOptions { ack_wait: Duration::from_secs(60), ..manual("lag", None) };
    let mut consumer = events.consume("micro", topic, long).await.unwrap();
    for _ in 0..ACKED {
        next(&mut consumer).await.ack().await.unwrap();
    }
    let held = next(&mut consumer).await;
    let lag = ("micro", topic, "lag");
    expect_lag(events, lag, (N - ACKED, 1, 0), "2 of 5 acked, the third delivered").await;
    held.nack_with(Nack::permanent("lag")).await.unwrap();
    expect_lag(events, lag, (N - ACKED - 1, 0, 1), "the third dead-lettered").await;
    drop(consumer);
    expect_lag(events, lag, (N - ACKED - 1, 0, 1), "the member left").await;

    publish(events, "foo", topic, b"before").await;
    let newest = ConsumeOptions { group: Some("newest".into()), ..ConsumeOptions::default() };
    let _newest = events.consume("foo", topic, newest).await.unwrap();
    publish(events, "foo", topic, b"after").await;
    expect_lag(events, ("foo", topic, "newest"), (1, 0, 0), "a group at newest, one event later").await;
}

/// Publishes `n` events to `topic` stamped a second apart, starting a minute ago; returns their
/// ids and the first one's timestamp.
async fn publish_timed(events: &dyn Events, topic: &str, n: u64) -> (Vec<String>, u64) {
    let base = crate::now_ms() - 60_000;
    let mut ids = Vec::new();
    for k in 1..=n {
        let options = PublishOptions { timestamp_ms: Some(base + k * 1000), ..PublishOptions::default() };
        ids.push(events.publish("micro", topic, k.to_be_bytes().to_vec(), options).await.unwrap().id);
    }
    (ids, base + 1000)
}

/// Takes and acks deliveries until `expected` sequences came, in that order, each as attempt 1.
async fn expect_acked(consumer: &mut Consumer, expected: &[u64], why: &str) {
    let mut got = Vec::new();
    for _ in expected {
        let delivery = next(consumer).await;
        got.push((delivery.event.sequence, delivery.attempt));
        delivery.ack().await.unwrap();
    }
    let expected: Vec<(u64, u32)> = expected.iter().map(|sequence| (*sequence, 1)).collect();
    assert_eq!(got, expected, "{why}");
}

/// A replay from a time re-delivers exactly the events at or after it, in order, once; from a
/// sequence likewise; with an end, the events up to it, then the group carries on with new
/// events (not with those it had settled); a replay of a group with no member running takes
/// effect when one joins.
pub async fn replay_from_time_sequence_and_to(events: &dyn Events, topic: &str) {
    let (_, first_ms) = publish_timed(events, topic, 6).await;
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("r", None) };
    let mut member = events.consume("micro", topic, options.clone()).await.unwrap();
    expect_acked(&mut member, &[1, 2, 3, 4, 5, 6], "the group's first pass").await;

    let replay = |from, to| Replay { from, to };
    let replayed = events.replay("micro", topic, "r", &replay(Position::Time(first_ms + 2000), None)).await;
    assert_eq!(replayed, Ok(Replayed { first_sequence: 3, last_sequence: 6, events: 4 }));
    expect_acked(&mut member, &[3, 4, 5, 6], "replayed from the third event's time").await;
    nothing_within(&mut member, QUIET, "the replay delivers each event once").await;

    let bounded = replay(Position::Sequence(2), Some(Position::Sequence(3)));
    let replayed = events.replay("micro", topic, "r", &bounded).await;
    assert_eq!(replayed, Ok(Replayed { first_sequence: 2, last_sequence: 3, events: 2 }));
    expect_acked(&mut member, &[2, 3], "replayed from sequence 2 to 3").await;
    nothing_within(&mut member, QUIET, "not past the end: the group had settled 4 to 6").await;
    publish(events, "micro", topic, b"7").await;
    expect_acked(&mut member, &[7], "then new events").await;

    // Times at both ends: the last event at or before the end time.
    let between = replay(Position::Time(first_ms + 1000), Some(Position::Time(first_ms + 3500)));
    let replayed = events.replay("micro", topic, "r", &between).await;
    assert_eq!(replayed, Ok(Replayed { first_sequence: 2, last_sequence: 4, events: 3 }));
    expect_acked(&mut member, &[2, 3, 4], "replayed between two times").await;
    nothing_within(&mut member, QUIET, "then nothing: no new events").await;
    drop(member);

    let replayed = events.replay("micro", topic, "r", &replay(Position::Sequence(5), None)).await;
    assert_eq!(replayed, Ok(Replayed { first_sequence: 5, last_sequence: 7, events: 3 }));
    let mut member = events.consume("micro", topic, options).await.unwrap();
    expect_acked(&mut member, &[5, 6, 7], "a member joining after the replay").await;
    nothing_within(&mut member, QUIET, "once").await;
}

/// A replay while a member is waiting and with a delivery in flight: the waiting member wakes,
/// the in-flight delivery is superseded (its event comes again), and the member sees every
/// replayed event once, in order, then new ones.
pub async fn replay_while_consuming(events: &dyn Events, topic: &str) {
    for n in 1..=5u64 {
        publish(events, "micro", topic, &n.to_be_bytes()).await;
    }
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("live", None) };
    let mut member = events.consume("micro", topic, options).await.unwrap();
    expect_acked(&mut member, &[1, 2, 3, 4], "the first pass").await;
    let held = next(&mut member).await;
    assert_eq!(held.event.sequence, 5);

    let replay = Replay { from: Position::Sequence(2), to: None };
    assert_eq!(
        events.replay("micro", topic, "live", &replay).await,
        Ok(Replayed { first_sequence: 2, last_sequence: 5, events: 4 })
    );
    expect_acked(&mut member, &[2, 3, 4, 5], "replayed, the held event among them once").await;
    nothing_within(&mut member, QUIET, "each replayed event once").await;

    // A member already waiting is woken by a replay, promptly.
    let waiting = tokio::time::timeout(PATIENCE, member.next());
    let replaying = async {
        tokio::time::sleep(QUIET).await;
        let replay = Replay { from: Position::Sequence(4), to: None };
        (events.replay("micro", topic, "live", &replay).await.unwrap(), tokio::time::Instant::now())
    };
    let (delivery, (replayed, at)) = tokio::join!(waiting, replaying);
    let delivery = delivery.expect("woken by the replay").unwrap().unwrap();
    assert_eq!((replayed.first_sequence, delivery.event.sequence, delivery.attempt), (4, 4, 1));
    assert!(at.elapsed() < PROMPT, "woken promptly, not by a poll interval");
    delivery.ack().await.unwrap();
    expect_acked(&mut member, &[5], "the rest of the replay").await;
    publish(events, "micro", topic, b"6").await;
    expect_acked(&mut member, &[6], "then new events").await;
    nothing_within(&mut member, QUIET, "once").await;
}

/// Bad replays fail with a clear error and change nothing.
pub async fn replay_bad_input(events: &dyn Events, topic: &str) {
    for n in 1..=3u64 {
        publish(events, "micro", topic, &n.to_be_bytes()).await;
    }
    let options = ConsumeOptions { ack_wait: PATIENCE * 6, ..manual("bad", None) };
    let mut member = events.consume("micro", topic, options).await.unwrap();
    expect_acked(&mut member, &[1, 2, 3], "the first pass").await;

    let (seq, time) = (Position::Sequence, Position::Time);
    let future = crate::now_ms() + 3_600_000;
    let message = |result: Result<Replayed, EventsError>| match result {
        Err(EventsError::Invalid(message)) => message,
        other => panic!("expected a clear error, got {other:?}"),
    };
    let replay = |group: &'static str, topic: String, from, to| async move {
        message(events.replay("micro", &topic, group, &Replay { from, to }).await)
    };
    let cases = [
        (replay("nope", topic.to_string(), seq(1), None).await, "no consumer group nope"),
        (replay("bad", topic.to_string(), seq(3), Some(seq(2))).await, "after its end"),
        (replay("bad", topic.to_string(), seq(0), None).await, "sequence 0"),
        (replay("bad", topic.to_string(), time(future), None).await, "in the future"),
        (replay("bad", topic.to_string(), seq(1), Some(time(future))).await, "in the future"),
        (replay("bad", topic.to_string(), seq(4), None).await, "after the last event"),
        (replay("bad", topic.to_string(), seq(1), Some(seq(9))).await, "after the last event"),
        (replay("bad", format!("{topic}-never"), seq(1), None).await, "has no events"),
        (replay("", topic.to_string(), seq(1), None).await, "missing group"),
        (replay("bad", "bad topic".to_string(), seq(1), None).await, "invalid topic"),
    ];
    for (message, expected) in cases {
        assert!(message.contains(expected), "{expected:?} in {message:?}");
    }
    nothing_within(&mut member, QUIET, "bad replays changed nothing").await;
    publish(events, "micro", topic, b"4").await;
    expect_acked(&mut member, &[4], "the group carries on where it was").await;
}
