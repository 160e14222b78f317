//! The redb file a previous release wrote still opens and carries on: events, a group's
//! position and its dead letters survive an upgrade of micro (or of redb, whose major versions
//! may change the file format). `fixtures/events-redb4.redb` was written by micro 0.1.0 on
//! redb 4.6 with [`fill`]; `fixture_was_written_by_fill` pins it to that content, so a new
//! format is added beside it (never a regenerated copy in its place) when the engine changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use micro_events::file::FileEvents;
use micro_events::{ConsumeOptions, Events, Nack, PublishOptions, Retention, Start};

const FIXTURE: &str = "tests/fixtures/events-redb4.redb";
/// The first event's timestamp (unix ms); retention is off so the fixture never ages out.
const STAMP: u64 = 1_764_000_000_000;
const KEEP_ALL: Retention = Retention { max_age: None, max_events: None };

fn options(group: &str) -> ConsumeOptions {
    ConsumeOptions {
        group: Some(group.into()),
        start: Start::Sequence(1),
        auto_ack: false,
        ack_wait: Duration::from_secs(60),
        retry_limit: Some(3),
    }
}

/// Three events on `orders`; group `billing` acked the first and dead-lettered the second.
async fn fill(events: &FileEvents) {
    for n in 0..3u8 {
        let metadata = BTreeMap::from([("n".to_string(), n.to_string())]);
        let stamped = PublishOptions { metadata, timestamp_ms: Some(STAMP + u64::from(n)) };
        events.publish("micro", "orders", vec![n], stamped).await.unwrap();
    }
    let mut billing = events.consume("micro", "orders", options("billing")).await.unwrap();
    let first = billing.next().await.unwrap().unwrap();
    assert_eq!(first.event.sequence, 1);
    first.ack().await.unwrap();
    let second = billing.next().await.unwrap().unwrap();
    assert_eq!(second.event.sequence, 2);
    second.nack_with(Nack::permanent("card declined")).await.unwrap();
}

/// Everything [`fill`] left, read back through `events`.
async fn check(events: &FileEvents) {
    let stored = events.read("micro", "orders", 0, 0).await.unwrap();
    let seen: Vec<_> = stored
        .iter()
        .map(|e| (e.sequence, e.payload.clone(), e.timestamp_ms, e.metadata["n"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, vec![0], STAMP, "0".to_string()),
            (2, vec![1], STAMP + 1, "1".to_string()),
            (3, vec![2], STAMP + 2, "2".to_string())
        ]
    );
    let dead = events.dead_letters("micro", "orders", "billing").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].event.sequence, dead[0].error.as_str(), dead[0].attempts), (2, "card declined", 1));
    assert_eq!(dead[0].event.id, stored[1].id);
    let topics = events.topics("micro").await.unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!((topics[0].name.as_str(), topics[0].events, topics[0].last_sequence), ("orders", 3, 3));
    // The group goes on where it was: the acked and the dead-lettered events are not redelivered.
    let mut billing = events.consume("micro", "orders", options("billing")).await.unwrap();
    let next = billing.next().await.unwrap().unwrap();
    assert_eq!(next.event.sequence, 3);
    assert_eq!(next.event.id, stored[2].id);
}

#[tokio::test]
async fn a_file_written_by_redb_4_opens_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE), &path).unwrap();
    {
        let events = FileEvents::open_with(&path, KEEP_ALL).unwrap();
        check(&events).await;
        let next = events.publish("micro", "orders", vec![3], PublishOptions::default()).await.unwrap();
        assert_eq!(next.sequence, 4, "sequences carry on");
    }
    let events = FileEvents::open_with(&path, KEEP_ALL).unwrap();
    assert_eq!(events.read("micro", "orders", 0, 3).await.unwrap()[0].payload, [3]);
}

#[tokio::test]
async fn fixture_was_written_by_fill() {
    let dir = tempfile::tempdir().unwrap();
    let events = FileEvents::open_with(&dir.path().join("events.redb"), KEEP_ALL).unwrap();
    fill(&events).await;
    check(&events).await;
}

/// Writes the fixture (run once, by hand, on the release that is to be pinned:
/// `cargo test -p micro-events --test file_format -- --ignored write_fixture`). Never overwrite
/// an existing fixture: add one for the new format beside it.
#[tokio::test]
#[ignore = "writes the fixture; run by hand"]
async fn write_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    assert!(!path.exists(), "{FIXTURE} exists: add a new fixture beside it instead");
    let events = FileEvents::open_with(&path, KEEP_ALL).unwrap();
    fill(&events).await;
}
