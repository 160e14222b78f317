//! The events, broker and registry conformance suites against a real NATS server: the one
//! named by `MICRO_TEST_NATS_URL` (JetStream on, `max_payload: 2MB`); skipped when it is unset,
//! except in CI (`CI` set), where that fails.

use std::sync::Arc;
use std::time::Duration;

use micro_backend_nats::{EventsOptions, NatsBroker, NatsEvents, NatsRegistry};
use micro_broker::Broker;
use micro_events::{ConsumeOptions, Events, EventsError, PublishOptions, Start};
use micro_registry::{Registry, RegistryError};

/// Whether this run is CI's (`CI` set to anything but empty, `false` or `0`): there, a test
/// whose service is missing fails instead of skipping, so a skip is never all CI reports.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "false" | "0"))
}

fn nats_url(test: &str) -> Option<String> {
    match std::env::var("MICRO_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(!in_ci(), "{test}: MICRO_TEST_NATS_URL is not set, and CI must run this test");
            println!("skipped {test}: MICRO_TEST_NATS_URL is not set");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_conformance() {
    let Some(url) = nats_url("events_conformance") else { return };
    let events = NatsEvents::connect(&url).await.expect("connect to MICRO_TEST_NATS_URL");
    assert!(events.summary().starts_with("nats nats://"), "{}", events.summary());
    micro_events::conformance::run_all(Arc::new(events)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_conformance() {
    let Some(url) = nats_url("broker_conformance") else { return };
    let broker = NatsBroker::connect(&url).await.expect("connect to MICRO_TEST_NATS_URL");
    assert!(broker.summary().starts_with("nats nats://"), "{}", broker.summary());
    micro_broker::conformance::run_all(&broker).await;
}

/// Two registries on one NATS, as two servers hold them: the whole contract, including that
/// each sees what the other registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_conformance() {
    let Some(url) = nats_url("registry_conformance") else { return };
    let builtins = micro_registry::conformance::builtins;
    let one = NatsRegistry::connect(&url, builtins()).await.expect("connect to MICRO_TEST_NATS_URL");
    let two = NatsRegistry::connect(&url, builtins()).await.unwrap();
    assert!(
        one.summary().starts_with(&format!("nats {url} (JetStream KV bucket micro-registry")),
        "{}",
        one.summary()
    );
    micro_registry::conformance::run_all(Arc::new(one), Arc::new(two)).await;
}

/// What the bucket holds is what a registry that starts later loads; expired nodes are reaped
/// from the bucket itself, and only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_loads_the_bucket_and_reaps_it() {
    let Some(url) = nats_url("registry_loads_the_bucket_and_reaps_it") else { return };
    let domain = format!("load-{:x}", micro_events::now_ms());
    let early = NatsRegistry::connect(&url, Vec::new()).await.unwrap();
    let node = |id: &str| micro_proto::registry::Node {
        id: id.into(),
        address: "127.0.0.1:9".into(),
        ..Default::default()
    };
    let service = |name: &str, id: &str| micro_proto::registry::Service {
        name: name.into(),
        version: "1".into(),
        nodes: vec![node(id)],
        ..Default::default()
    };
    early.register(&domain, service("stays", "s-1"), Duration::from_secs(60)).await.unwrap();
    early.register(&domain, service("goes", "g-1"), Duration::from_millis(300)).await.unwrap();

    let late = NatsRegistry::connect(&url, Vec::new()).await.unwrap();
    assert_eq!(late.get(&domain, "stays").len(), 1, "a new instance starts with what the bucket holds");

    let bucket = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap())
        .get_key_value(micro_backend_nats::DEFAULT_BUCKET)
        .await
        .unwrap();
    let key = format!("{domain}.goes.1.g-1");
    assert!(bucket.get(&key).await.unwrap().is_some(), "one key per node: {key}");
    micro_registry::conformance::eventually("the short node expires", || {
        late.get(&domain, "goes").is_empty()
    })
    .await;
    let mut events = early.watch();
    // Both may reap; one deletes the key, the other's delete conflicts and is ignored.
    let (a, b) = tokio::join!(early.reap(), late.reap());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(bucket.get(&key).await.unwrap().is_none(), "the expired key left the bucket");
    let (action, gone) = micro_registry::conformance::next_event(&mut events, &domain).await;
    assert_eq!((action.as_str(), gone.name.as_str()), ("delete", "goes"));
    assert_eq!(late.get(&domain, "stays").len(), 1, "the live one stays");
    early.deregister(&domain, &service("stays", "s-1")).await.unwrap();
    micro_registry::conformance::eventually("the other instance sees the deregistration", || {
        late.get(&domain, "stays").is_empty()
    })
    .await;
}

/// Two backends (as two servers would hold) publishing to one topic at once: sequences stay
/// gap-free and timestamps never decrease, even with explicit timestamps out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_keep_time_order() {
    let Some(url) = nats_url("concurrent_publishers_keep_time_order") else { return };
    let one = NatsEvents::connect(&url).await.unwrap();
    let two = NatsEvents::connect(&url).await.unwrap();
    let topic = format!("order-{}", micro_events::new_event_id(micro_events::now_ms()));
    let base = micro_events::now_ms() + 60_000;
    let publish = |events: NatsEvents, offset: u64| {
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut published = Vec::new();
            for n in 0..100u64 {
                // Deliberately jumbled explicit timestamps, interleaved between publishers.
                let options =
                    PublishOptions { timestamp_ms: Some(base + (n * 7 + offset) % 50), ..Default::default() };
                published.push(events.publish("micro", &topic, vec![], options).await.unwrap().sequence);
            }
            published
        })
    };
    let (a, b) = (publish(one.clone(), 0), publish(two.clone(), 3));
    let mut sequences: Vec<u64> = a.await.unwrap().into_iter().chain(b.await.unwrap()).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=200).collect::<Vec<_>>(), "every publish got its own sequence");

    let mut events = one.read("micro", &topic, 1000, 0).await.unwrap();
    events.extend(two.read("micro", &topic, 1000, 200).await.unwrap());
    assert_eq!(events.len(), 200);
    assert!(events.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms), "timestamps never decrease");
    assert!(events.windows(2).all(|w| w[0].sequence + 1 == w[1].sequence));
}

/// A group that exists keeps its position and ignores `start`; a manual-ack member joining
/// with other settings brings the group's ack wait and retry limit to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_groups_keep_their_position() {
    let Some(url) = nats_url("existing_groups_keep_their_position") else { return };
    let events = NatsEvents::connect(&url).await.unwrap();
    let topic = format!("groups-{}", micro_events::new_event_id(micro_events::now_ms()));
    for n in 1..=4u64 {
        events.publish("micro", &topic, n.to_be_bytes().to_vec(), PublishOptions::default()).await.unwrap();
    }
    let manual = |wait_ms: u64, retry_limit: Option<u32>| ConsumeOptions {
        group: Some("g".into()),
        start: Start::Sequence(1),
        auto_ack: false,
        ack_wait: Duration::from_millis(wait_ms),
        retry_limit,
    };
    let mut first = events.consume("micro", &topic, manual(30_000, None)).await.unwrap();
    for _ in 0..2 {
        micro_events::conformance::next(&mut first).await.ack().await.unwrap();
    }
    drop(first);
    // Start::Sequence(1) again, short ack wait, retry limit 0: resumes at 3, one delivery each.
    let mut second = events.consume("micro", &topic, manual(100, Some(0))).await.unwrap();
    let third = micro_events::conformance::next(&mut second).await;
    assert_eq!((third.event.sequence, third.attempt), (3, 1), "the group kept its position");
    let fourth = micro_events::conformance::next(&mut second).await;
    assert_eq!(fourth.event.sequence, 4);
    fourth.ack().await.unwrap();
    micro_events::conformance::nothing_within(
        &mut second,
        Duration::from_millis(400),
        "retry limit 0 now applies",
    )
    .await;
    assert_eq!(third.ack().await, Err(EventsError::NotFound), "given up on after its one delivery");
    let newest = ConsumeOptions { group: Some("g".into()), ..ConsumeOptions::default() };
    drop(second);
    let mut auto = events.consume("micro", &topic, newest).await.unwrap();
    events.publish("micro", &topic, b"5".to_vec(), PublishOptions::default()).await.unwrap();
    assert_eq!(micro_events::conformance::next(&mut auto).await.event.sequence, 5);
}

/// Retention is the stream's limits, applied by JetStream; a server with other limits brings an
/// existing stream to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_applied_by_jetstream() {
    let Some(url) = nats_url("retention_is_applied_by_jetstream") else { return };
    let keeping = |max_events| EventsOptions {
        retention: micro_events::Retention { max_age: None, max_events: Some(max_events) },
        ..EventsOptions::default()
    };
    let three = NatsEvents::open(micro_backend_nats::connect(&url).await.unwrap(), keeping(3)).await.unwrap();
    let topic = format!("retention-{}", micro_events::new_event_id(micro_events::now_ms()));
    for n in 1..=5u8 {
        three.publish("micro", &topic, vec![n], PublishOptions::default()).await.unwrap();
    }
    let kept = |events: Vec<micro_events::Event>| events.iter().map(|e| e.sequence).collect::<Vec<_>>();
    assert_eq!(kept(three.read("micro", &topic, 0, 0).await.unwrap()), [3, 4, 5]);
    assert_eq!(three.sweep().await, Ok(0), "nothing for sweep to do");
    // A group whose next event was removed continues with the oldest one left.
    let mut group =
        three.consume("micro", &topic, micro_events::conformance::from_start("late")).await.unwrap();
    assert_eq!(micro_events::conformance::next(&mut group).await.event.sequence, 3);

    let ten = NatsEvents::open(micro_backend_nats::connect(&url).await.unwrap(), keeping(10)).await.unwrap();
    for n in 6..=10u8 {
        ten.publish("micro", &topic, vec![n], PublishOptions::default()).await.unwrap();
    }
    assert_eq!(kept(ten.read("micro", &topic, 0, 0).await.unwrap()), (3..=10).collect::<Vec<_>>());
}

/// NATS going away: operations fail as unavailable (promptly) and the same backend works again
/// once it is back. Runs its own nats-server (`MICRO_TEST_NATS_SERVER`, else `nats-server` on
/// the PATH when `MICRO_TEST_NATS_URL` says NATS is installed), on its own port and directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_nats_restart() {
    let Some(binary) = nats_binary("survives_a_nats_restart") else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = || NatsServer::start(&binary, dir.path(), port);
    let url = format!("nats://127.0.0.1:{port}");
    let server = start();
    let events = connect_within(&url, Duration::from_secs(10)).await;
    let broker = NatsBroker::connect(&url).await.unwrap();
    events.publish("micro", "restart", b"before".to_vec(), PublishOptions::default()).await.unwrap();
    let mut consumer =
        events.consume("micro", "restart", micro_events::conformance::from_start("g")).await.unwrap();
    assert_eq!(micro_events::conformance::next(&mut consumer).await.event.payload, b"before");
    let mut subscription = broker.subscribe("micro", "restart", None).await.unwrap();

    drop(server);
    // The clients notice the closed connection within moments; until then a publish is queued
    // and fails after its timeout (and may still be stored once NATS is back: at least once).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let started = tokio::time::Instant::now();
        let err = events
            .publish("micro", "restart", b"down".to_vec(), PublishOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, EventsError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains(&url), "names the server: {err}");
        // Bounded by the backend's 5 s operation timeout (with a generous margin), not hanging.
        assert!(started.elapsed() < Duration::from_secs(10), "bounded, not hanging");
        if started.elapsed() < Duration::from_secs(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "publishes keep waiting for a dead server");
    }
    loop {
        match broker.publish("micro", "restart", micro_broker::Message::new("down")).await {
            Err(err) => {
                assert!(matches!(err, micro_broker::BrokerError::Unavailable(_)), "{err}");
                break;
            }
            Ok(()) => assert!(tokio::time::Instant::now() < deadline, "the broker never noticed"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _server = start();
    // Poll until the client has reconnected and JetStream answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match events.publish("micro", "restart", b"after".to_vec(), PublishOptions::default()).await {
            Ok(_) => break,
            Err(err) if tokio::time::Instant::now() < deadline => {
                assert!(matches!(err, EventsError::Unavailable(_)), "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("publishing did not resume: {err}"),
        }
    }
    let stored: Vec<Vec<u8>> =
        events.read("micro", "restart", 0, 0).await.unwrap().into_iter().map(|event| event.payload).collect();
    assert_eq!(
        stored.first().map(Vec::as_slice),
        Some(b"before".as_slice()),
        "the stream survived the restart"
    );
    assert_eq!(stored.last().map(Vec::as_slice), Some(b"after".as_slice()));
    assert!(stored.len() <= 3, "at most the one publish that was queued when NATS died: {stored:?}");
    // At least once: NATS killed before it synced the consumer's state may deliver "before"
    // again, and the publish queued while it was down may arrive too.
    let mut delivery = micro_events::conformance::next(&mut consumer).await;
    while delivery.event.payload == b"down" || delivery.event.payload == b"before" {
        delivery = micro_events::conformance::next(&mut consumer).await;
    }
    assert_eq!(delivery.event.payload, b"after", "the consumer resumed by itself");
    // The broker notices the reconnection on its own: publishing may fail a little longer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match broker.publish("micro", "restart", micro_broker::Message::new("after")).await {
            Ok(()) => break,
            Err(err) if tokio::time::Instant::now() < deadline => {
                assert!(matches!(err, micro_broker::BrokerError::Unavailable(_)), "{err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("broker publishing did not resume: {err}"),
        }
    }
    loop {
        let message =
            tokio::time::timeout(Duration::from_secs(10), subscription.recv()).await.unwrap().unwrap();
        if message.body == b"after" {
            break;
        }
        assert_eq!(message.body, b"down", "only what was queued while NATS was away");
    }
}

/// A nats-server this test started: killed (and reaped) when dropped, also when the test fails.
struct NatsServer(std::process::Child);

impl NatsServer {
    /// Starts `binary` with JetStream, data in `dir`, on 127.0.0.1:`port`.
    fn start(binary: &str, dir: &std::path::Path, port: u16) -> Self {
        std::process::Command::new(binary)
            .args(["-js", "-sd"])
            .arg(dir)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(NatsServer)
            .expect("nats-server starts")
    }
}

/// The nats-server a restart test runs: `MICRO_TEST_NATS_SERVER`, else `nats-server` on the
/// PATH when `MICRO_TEST_NATS_URL` says NATS is installed; `None` (printed) to skip `test`.
fn nats_binary(test: &str) -> Option<String> {
    let binary = match std::env::var("MICRO_TEST_NATS_SERVER") {
        Ok(binary) if !binary.is_empty() => binary,
        _ if nats_url(test).is_some() => "nats-server".to_string(),
        _ => return None,
    };
    if std::process::Command::new(&binary).arg("--version").output().is_err() {
        assert!(!in_ci(), "{test}: cannot run {binary}, and CI must run this test");
        println!("skipped {test}: cannot run {binary} (set MICRO_TEST_NATS_SERVER)");
        return None;
    }
    Some(binary)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect_within(url: &str, patience: Duration) -> NatsEvents {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match NatsEvents::connect(url).await {
            Ok(events) => return events,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("nats-server did not come up: {err}"),
        }
    }
}

/// NATS going away under the registry: writes fail as unavailable (promptly, naming the
/// server), reads keep serving the cache, and once NATS is back the watch resumes by itself —
/// a registration through another instance shows up again — without recreating the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_survives_a_nats_restart() {
    let Some(binary) = nats_binary("registry_survives_a_nats_restart") else { return };
    let (dir, blank) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start_in = |dir: &std::path::Path| NatsServer::start(&binary, dir, port);
    let start = || start_in(dir.path());
    let url = format!("nats://127.0.0.1:{port}");
    let service = |name: &str| micro_proto::registry::Service {
        name: name.into(),
        version: "1".into(),
        nodes: vec![micro_proto::registry::Node {
            id: format!("{name}-1"),
            address: "127.0.0.1:9".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let server = start();
    let registry = registry_within(&url, Duration::from_secs(10)).await;
    registry.register("micro", service("before"), Duration::from_secs(60)).await.unwrap();
    let mut events = registry.watch();

    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let started = tokio::time::Instant::now();
        let err = registry.register("micro", service("down"), Duration::from_secs(60)).await.unwrap_err();
        assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains(&url), "names the server: {err}");
        // Bounded by the backend's 5 s operation timeout (with a generous margin), not hanging.
        assert!(started.elapsed() < Duration::from_secs(10), "bounded, not hanging");
        if started.elapsed() < Duration::from_secs(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "registering keeps waiting for a dead server");
    }
    let err = registry.deregister("micro", &service("before")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable(_)), "{err}");
    assert_eq!(registry.get("micro", "before").len(), 1, "reads serve the cache while NATS is away");
    assert!(registry.nodes("micro", "before").is_some());

    let server = start();
    let other = registry_within(&url, Duration::from_secs(20)).await;
    assert_eq!(other.get("micro", "before").len(), 1, "the bucket survived the restart");
    other.register("micro", service("after"), Duration::from_secs(60)).await.unwrap();
    micro_registry::conformance::eventually("the first registry's watch resumed", || {
        registry.get("micro", "after").len() == 1
    })
    .await;
    loop {
        let (action, seen) = micro_registry::conformance::next_event(&mut events, "micro").await;
        if seen.name == "after" {
            assert_eq!(action, "create", "watchers hear of what changed");
            break;
        }
    }
    registry.register("micro", service("again"), Duration::from_secs(60)).await.unwrap();
    registry.deregister("micro", &service("before")).await.unwrap();
    assert!(registry.get("micro", "before").is_empty(), "writes work again");
    micro_registry::conformance::eventually("and reach the other instance", || {
        other.get("micro", "before").is_empty() && other.get("micro", "again").len() == 1
    })
    .await;

    // A NATS that lost its state (here: a fresh data directory): the registry creates the
    // bucket again and its cache empties, as services that still run re-register.
    drop(server);
    let _server = start_in(blank.path());
    micro_registry::conformance::eventually("the cache follows the emptied bucket", || {
        registry.get("micro", "again").is_empty()
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(err) = registry.register("micro", service("fresh"), Duration::from_secs(60)).await {
        assert!(tokio::time::Instant::now() < deadline, "registering did not resume: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(registry.get("micro", "fresh").len(), 1, "the bucket was created again");
    micro_registry::conformance::eventually("the other instance follows too", || {
        other.get("micro", "fresh").len() == 1 && other.get("micro", "after").is_empty()
    })
    .await;
}

async fn registry_within(url: &str, patience: Duration) -> NatsRegistry {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match NatsRegistry::connect(url, Vec::new()).await {
            Ok(registry) => return registry,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("nats-server did not come up: {err}"),
        }
    }
}
