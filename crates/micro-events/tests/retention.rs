//! `Events::sweep` on both embedded backends: an event that ages past `Retention::max_age` after
//! it was published is removed by the next sweep, on every topic of every namespace, while
//! younger events stay and sequence numbers carry on. (The server runs this sweep at boot and
//! every minute; tests/events.rs checks that end to end.)

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micro_events::file::FileEvents;
use micro_events::memory::MemoryEvents;
use micro_events::{Events, PublishOptions, Retention, now_ms};

/// The age limit: long enough that the "young" events are nowhere near it.
const MAX_AGE: Duration = Duration::from_secs(60);
/// How far short of the limit the expiring events start.
const MARGIN: Duration = Duration::from_secs(3);

async fn sweeps_only_what_aged_out(events: Arc<dyn Events>) {
    // Stamped just inside the limit, so the publish keeps them; they pass it within MARGIN.
    let expiring_at = now_ms() - MAX_AGE.as_millis() as u64 + MARGIN.as_millis() as u64;
    let stamped = PublishOptions { timestamp_ms: Some(expiring_at), ..PublishOptions::default() };
    for (namespace, topic) in [("micro", "a"), ("micro", "b"), ("foo", "a")] {
        for n in 0..2u8 {
            events.publish(namespace, topic, vec![n], stamped.clone()).await.unwrap();
        }
    }
    // A topic whose events are young, and topic `b` also gets one young event after its old.
    events.publish("micro", "young", vec![9], PublishOptions::default()).await.unwrap();
    events.publish("micro", "b", vec![9], PublishOptions::default()).await.unwrap();
    assert_eq!(events.read("micro", "a", 0, 0).await.unwrap().len(), 2, "kept while inside the limit");
    assert_eq!(events.sweep().await.unwrap(), 0, "nothing has aged out yet");

    // Wait out the margin on the wall clock, which retention is measured by.
    let past = UNIX_EPOCH + Duration::from_millis(expiring_at) + MAX_AGE + Duration::from_millis(50);
    while SystemTime::now() < past {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events.sweep().await.unwrap(), 6, "two old events on each of three topics");
    assert!(events.read("micro", "a", 0, 0).await.unwrap().is_empty());
    assert!(events.read("foo", "a", 0, 0).await.unwrap().is_empty(), "every namespace is swept");
    let b = events.read("micro", "b", 0, 0).await.unwrap();
    assert_eq!(
        b.iter().map(|e| (e.sequence, e.payload.clone())).collect::<Vec<_>>(),
        [(3, vec![9])],
        "the young event of a swept topic stays"
    );
    assert_eq!(events.read("micro", "young", 0, 0).await.unwrap().len(), 1);
    assert_eq!(events.sweep().await.unwrap(), 0, "a second sweep finds nothing more");
    let next = events.publish("micro", "a", vec![], PublishOptions::default()).await.unwrap();
    assert_eq!(next.sequence, 3, "sequences carry on after a sweep");
}

fn retention() -> Retention {
    Retention { max_age: Some(MAX_AGE), max_events: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sweep_removes_only_events_past_retention() {
    sweeps_only_what_aged_out(Arc::new(MemoryEvents::new(retention()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sweep_removes_only_events_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let events = FileEvents::open_with(&dir.path().join("events.redb"), retention()).unwrap();
    sweeps_only_what_aged_out(Arc::new(events)).await;
}
