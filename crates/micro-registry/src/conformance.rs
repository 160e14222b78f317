//! The conformance suite: the [`Registry`] contract as executable checks, run by every backend.
//!
//! Compiled for this crate's tests and, with the `conformance` feature, for backends in other
//! crates:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn conformance() {
//!     let builtins = micro_registry::conformance::builtins;
//!     let one = Arc::new(MyRegistry::connect(url, builtins()).await?);
//!     let two = Arc::new(MyRegistry::connect(url, builtins()).await?);
//!     micro_registry::conformance::run_all(one, two).await;
//! }
//! ```
//!
//! Requirements on the registries under test: both built with [`builtins`]; `two` on the same
//! backend as `one` (a second connection to it, as a second server would hold; a backend that
//! cannot be shared passes `one` again); real time (TTL cases wait about a second of wall-clock
//! time, so no paused tokio clock). Every case works in domains named
//! `conformance-<run id>-<case>`, so the suite runs against a backend that already holds data,
//! including data from earlier or concurrent runs. Cases panic with the case and the finding on
//! a violation; each is public, so a failing one can be run alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro_proto::registry::{Endpoint, Node, Service};
use tokio::sync::broadcast;

use crate::{Event, MAX_NAME_BYTES, Registry, RegistryError};

/// How long a change may take to reach the other instance, or an expiry to show.
const PATIENCE: Duration = Duration::from_secs(10);
/// The TTL of registrations that must outlive a case.
const LONG: Duration = Duration::from_secs(120);

/// The built-ins both registries under test must be built with.
pub fn builtins() -> Vec<Service> {
    vec![Service {
        name: "conformance-core".into(),
        version: "1".into(),
        metadata: [("core".to_string(), "true".to_string())].into(),
        ..Default::default()
    }]
}

/// Runs every case against `one` (and `two`, a second instance on the same backend).
pub async fn run_all(one: Arc<dyn Registry>, two: Arc<dyn Registry>) {
    let (one, two) = (&*one, &*two);
    let run = run_id();
    let domain = |case: &str| format!("conformance-{run}-{case}");

    register_get_list_deregister(one, &domain("basic")).await;
    versions_and_nodes(one, &domain("versions")).await;
    domains_are_isolated(one, &domain("iso-a"), &domain("iso-b")).await;
    ttl_expiry(one, &domain("ttl")).await;
    reregister_refreshes(one, &domain("refresh")).await;
    watch_events(one, &domain("watch")).await;
    validation_changes_nothing(one, &domain("invalid")).await;
    instances_share_registrations(one, two, &domain("shared")).await;
}

/// A name no earlier run in this or another process used, short enough for a namespace.
fn run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or_default();
    format!("{:x}{}", nanos & 0xffff_ffff_ffff, RUNS.fetch_add(1, Ordering::Relaxed))
}

/// A service `name` `version` with nodes `(id, address)`.
pub fn service(name: &str, version: &str, nodes: &[(&str, &str)]) -> Service {
    Service {
        name: name.into(),
        version: version.into(),
        nodes: nodes
            .iter()
            .map(|(id, address)| Node { id: (*id).into(), address: (*address).into(), ..Default::default() })
            .collect(),
        ..Default::default()
    }
}

fn node_ids(services: &[Service]) -> Vec<String> {
    let mut ids: Vec<String> = services.iter().flat_map(|s| s.nodes.iter().map(|n| n.id.clone())).collect();
    ids.sort();
    ids
}

fn names(services: &[Service]) -> Vec<(String, String)> {
    services.iter().map(|s| (s.name.clone(), s.version.clone())).collect()
}

fn builtin_names() -> Vec<(String, String)> {
    names(&builtins())
}

/// Polls `condition` every 20 ms until it holds; panics after [`PATIENCE`] with `what`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event of `domain` (others are skipped); panics after [`PATIENCE`].
pub async fn next_event(events: &mut broadcast::Receiver<Event>, domain: &str) -> (String, Service) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(event)) if event.domain == domain => {
                return (event.result.action, event.result.service.unwrap_or_default());
            }
            Ok(Ok(_)) => {}
            Ok(Err(err)) => panic!("the watch of {domain} failed: {err}"),
            Err(_) => panic!("no event in {domain} within {PATIENCE:?}"),
        }
    }
}

async fn register(registry: &dyn Registry, domain: &str, service: Service, ttl: Duration) {
    let name = service.name.clone();
    if let Err(err) = registry.register(domain, service, ttl).await {
        panic!("registering {name} in {domain}: {err}");
    }
}

async fn deregister(registry: &dyn Registry, domain: &str, service: Service) {
    if let Err(err) = registry.deregister(domain, &service).await {
        panic!("deregistering {} in {domain}: {err}", service.name);
    }
}

/// Register, read back through get/nodes/list, merge a second node, deregister one node, then
/// the rest; built-ins are in every list and resolve with no nodes.
pub async fn register_get_list_deregister(registry: &dyn Registry, domain: &str) {
    let mut first = service("greeter", "latest", &[("g-1", "127.0.0.1:1001")]);
    first.metadata = [("round".to_string(), "1".to_string())].into();
    first.endpoints = vec![Endpoint { name: "Greeter.Hello".into(), ..Default::default() }];
    first.descriptors = vec![1, 2, 3];
    register(registry, domain, first, LONG).await;

    let got = registry.get(domain, "greeter");
    assert_eq!(names(&got), [("greeter".to_string(), "latest".to_string())], "basic: get after register");
    assert_eq!(got[0].nodes[0].address, "127.0.0.1:1001");
    assert_eq!(got[0].endpoints[0].name, "Greeter.Hello", "basic: endpoints round-trip");
    assert_eq!(got[0].descriptors, [1, 2, 3], "basic: descriptors round-trip");
    assert!(got[0].options.is_none(), "basic: options are not stored");

    // A second registration of the same version merges its node; its description wins.
    let mut second = service("greeter", "latest", &[("g-2", "127.0.0.1:1002")]);
    second.metadata = [("round".to_string(), "2".to_string())].into();
    register(registry, domain, second, LONG).await;
    let got = registry.get(domain, "greeter");
    assert_eq!(got.len(), 1, "basic: one version");
    assert_eq!(node_ids(&got), ["g-1", "g-2"], "basic: nodes are merged");
    assert_eq!(
        got[0].metadata.get("round").map(String::as_str),
        Some("2"),
        "basic: the latest description wins"
    );
    let nodes = registry.nodes(domain, "greeter").expect("basic: nodes of a registered service");
    let mut addresses: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(addresses, ["127.0.0.1:1001", "127.0.0.1:1002"]);

    let mut expected = builtin_names();
    expected.push(("greeter".into(), "latest".into()));
    expected.sort();
    assert_eq!(names(&registry.list(domain)), expected, "basic: list = services + built-ins, sorted");

    let core = &builtins()[0];
    assert_eq!(names(&registry.get(domain, &core.name)), builtin_names(), "basic: built-ins resolve");
    assert_eq!(registry.nodes(domain, &core.name), Some(Vec::new()), "basic: built-ins have no nodes");
    assert_eq!(registry.nodes(domain, "nope"), None, "basic: unknown services have no nodes");
    assert!(registry.get(domain, "nope").is_empty());

    deregister(registry, domain, service("greeter", "latest", &[("g-1", "")])).await;
    assert_eq!(node_ids(&registry.get(domain, "greeter")), ["g-2"], "basic: one node deregistered");
    deregister(registry, domain, service("greeter", "latest", &[])).await;
    assert!(registry.get(domain, "greeter").is_empty(), "basic: no nodes named = all of the version");
    assert_eq!(registry.nodes(domain, "greeter"), None);
    assert_eq!(names(&registry.list(domain)), builtin_names(), "basic: only built-ins left");
    deregister(registry, domain, service("greeter", "latest", &[("g-9", "")])).await;
    deregister(registry, domain, service("never", "1", &[])).await;
}

/// Versions of one name are separate services with their own nodes; `nodes` spans them.
pub async fn versions_and_nodes(registry: &dyn Registry, domain: &str) {
    register(
        registry,
        domain,
        service("api", "v1", &[("a-1", "127.0.0.1:2001"), ("a-2", "127.0.0.1:2002")]),
        LONG,
    )
    .await;
    register(registry, domain, service("api", "v2", &[("b-1", "127.0.0.1:2003")]), LONG).await;
    register(registry, domain, service("other", "v1", &[("o-1", "127.0.0.1:2004")]), LONG).await;

    let got = registry.get(domain, "api");
    assert_eq!(
        names(&got),
        [("api".to_string(), "v1".to_string()), ("api".to_string(), "v2".to_string())],
        "versions: both versions, in version order"
    );
    assert_eq!(node_ids(&got[..1]), ["a-1", "a-2"], "versions: v1 has its two nodes");
    assert_eq!(node_ids(&got[1..]), ["b-1"], "versions: v2 has its own");
    let mut nodes: Vec<String> = registry.nodes(domain, "api").unwrap().into_iter().map(|n| n.id).collect();
    nodes.sort();
    assert_eq!(nodes, ["a-1", "a-2", "b-1"], "versions: nodes spans every version");
    let listed: Vec<(String, String)> =
        names(&registry.list(domain)).into_iter().filter(|(name, _)| name != &builtins()[0].name).collect();
    assert_eq!(
        listed,
        [("api".into(), "v1".into()), ("api".into(), "v2".into()), ("other".into(), "v1".into())],
        "versions: list sorts by name then version"
    );

    deregister(registry, domain, service("api", "v1", &[])).await;
    assert_eq!(names(&registry.get(domain, "api")), [("api".to_string(), "v2".to_string())]);
    for (name, version) in [("api", "v2"), ("other", "v1")] {
        deregister(registry, domain, service(name, version, &[])).await;
    }
}

/// A registration in one domain is invisible from another.
pub async fn domains_are_isolated(registry: &dyn Registry, one: &str, other: &str) {
    register(registry, one, service("private", "1", &[("p-1", "127.0.0.1:3001")]), LONG).await;
    assert_eq!(registry.get(one, "private").len(), 1);
    assert!(registry.get(other, "private").is_empty(), "isolation: get from another domain");
    assert_eq!(registry.nodes(other, "private"), None, "isolation: nodes from another domain");
    assert_eq!(names(&registry.list(other)), builtin_names(), "isolation: list of another domain");
    register(registry, other, service("private", "1", &[("q-1", "127.0.0.1:3002")]), LONG).await;
    assert_eq!(node_ids(&registry.get(one, "private")), ["p-1"], "isolation: same name, separate nodes");
    assert_eq!(node_ids(&registry.get(other, "private")), ["q-1"]);
    deregister(registry, other, service("private", "1", &[])).await;
    assert_eq!(node_ids(&registry.get(one, "private")), ["p-1"], "isolation: deregistering elsewhere");
    deregister(registry, one, service("private", "1", &[])).await;
}

/// A node whose TTL passes vanishes from every read, reaped or not; reaping tells watchers.
pub async fn ttl_expiry(registry: &dyn Registry, domain: &str) {
    register(registry, domain, service("short", "1", &[("s-1", "127.0.0.1:4001")]), Duration::from_secs(1))
        .await;
    assert_eq!(node_ids(&registry.get(domain, "short")), ["s-1"], "ttl: visible until it expires");
    register(registry, domain, service("long", "1", &[("l-1", "127.0.0.1:4002")]), LONG).await;
    let mut events = registry.watch();

    eventually("ttl: an expired node leaves get, nodes and list", || {
        registry.get(domain, "short").is_empty()
            && registry.nodes(domain, "short").is_none()
            && !registry.list(domain).iter().any(|s| s.name == "short")
    })
    .await;
    assert_eq!(node_ids(&registry.get(domain, "long")), ["l-1"], "ttl: others stay");

    // Another instance (or server) may reap it first; either way watchers hear of it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        registry.reap().await.expect("ttl: reaping works");
        match tokio::time::timeout(Duration::from_millis(100), next_event(&mut events, domain)).await {
            Ok((action, service)) => {
                assert_eq!((action.as_str(), service.name.as_str()), ("delete", "short"), "ttl: reap event");
                break;
            }
            Err(_) => assert!(tokio::time::Instant::now() < deadline, "ttl: no delete event after the reap"),
        }
    }
    deregister(registry, domain, service("long", "1", &[])).await;
}

/// Re-registering before the TTL passes keeps a node listed past its first TTL.
pub async fn reregister_refreshes(registry: &dyn Registry, domain: &str) {
    // Beats every quarter TTL: a stall of up to three quarters (1.5 s) on a loaded machine
    // still keeps it listed.
    let ttl = Duration::from_secs(2);
    let beat = service("beating", "1", &[("b-1", "127.0.0.1:5001")]);
    register(registry, domain, beat.clone(), ttl).await;
    let started = tokio::time::Instant::now();
    while started.elapsed() < ttl * 2 {
        tokio::time::sleep(ttl / 4).await;
        assert_eq!(node_ids(&registry.get(domain, "beating")), ["b-1"], "refresh: heartbeats keep it listed");
        register(registry, domain, beat.clone(), ttl).await;
    }
    assert!(registry.nodes(domain, "beating").is_some(), "refresh: listed past its first TTL");
    eventually("refresh: gone once the heartbeats stop", || registry.get(domain, "beating").is_empty()).await;
}

/// Watchers see create, update and delete, in order, with the service named.
pub async fn watch_events(registry: &dyn Registry, domain: &str) {
    let mut events = registry.watch();
    register(registry, domain, service("watched", "1", &[("w-1", "127.0.0.1:6001")]), LONG).await;
    let (action, seen) = next_event(&mut events, domain).await;
    assert_eq!((action.as_str(), seen.name.as_str(), seen.version.as_str()), ("create", "watched", "1"));
    assert_eq!(node_ids(&[seen]), ["w-1"], "watch: create carries the node");

    register(registry, domain, service("watched", "1", &[("w-2", "127.0.0.1:6002")]), LONG).await;
    let (action, seen) = next_event(&mut events, domain).await;
    assert_eq!((action.as_str(), seen.name.as_str()), ("update", "watched"), "watch: a second node");
    assert_eq!(node_ids(&[seen]), ["w-1", "w-2"], "watch: update carries the live nodes");

    deregister(registry, domain, service("watched", "1", &[("w-1", "")])).await;
    let (action, _) = next_event(&mut events, domain).await;
    assert_eq!(action, "update", "watch: one of two nodes deregistered");
    deregister(registry, domain, service("watched", "1", &[])).await;
    let (action, seen) = next_event(&mut events, domain).await;
    assert_eq!((action.as_str(), seen.name.as_str()), ("delete", "watched"), "watch: the last node went");
}

/// Bad registrations fail as `Invalid` and change nothing.
pub async fn validation_changes_nothing(registry: &dyn Registry, domain: &str) {
    let ok = || service("ok", "1", &[("a", "127.0.0.1:7001")]);
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    let cases = [
        service("", "1", &[("a", "127.0.0.1:1")]),
        service("bad name", "1", &[("a", "127.0.0.1:1")]),
        service(&long, "1", &[("a", "127.0.0.1:1")]),
        service("ok", "bad\nversion", &[("a", "127.0.0.1:1")]),
        service("ok", "1", &[]),
        service("ok", "1", &[("", "127.0.0.1:1")]),
        service("ok", "1", &[(&long, "127.0.0.1:1")]),
        service("ok", "1", &[("a", "nowhere")]),
        service("ok", "1", &[("a", "host:99999")]),
        service(&builtins()[0].name, "1", &[("a", "127.0.0.1:1")]),
        Service { endpoints: vec![Endpoint::default()], ..ok() },
        Service { descriptors: vec![0; crate::MAX_DESCRIPTOR_BYTES + 1], ..ok() },
    ];
    for case in cases {
        let name = format!("{:.40}/{:.20}", case.name, case.version);
        match registry.register(domain, case, LONG).await {
            Err(RegistryError::Invalid(_)) => {}
            other => panic!("validation: {name} must be refused as invalid, got {other:?}"),
        }
    }
    for bad_domain in ["", "Upper", "has space", "a.b"] {
        match registry.register(bad_domain, ok(), LONG).await {
            Err(RegistryError::Invalid(_)) => {}
            other => panic!("validation: domain {bad_domain:?} must be refused as invalid, got {other:?}"),
        }
    }
    assert_eq!(names(&registry.list(domain)), builtin_names(), "validation: nothing was registered");
    assert!(registry.get(domain, "ok").is_empty());
    register(registry, domain, ok(), LONG).await;
    deregister(registry, domain, ok()).await;
}

/// Two instances on one backend see each other's registrations, deregistrations and expiries,
/// and each instance's watchers hear of the other's changes.
pub async fn instances_share_registrations(one: &dyn Registry, two: &dyn Registry, domain: &str) {
    register(one, domain, service("shared", "1", &[("n-1", "127.0.0.1:8001")]), LONG).await;
    eventually("shared: a registration through one reaches two", || {
        node_ids(&two.get(domain, "shared")) == ["n-1"]
            && two.nodes(domain, "shared").is_some_and(|nodes| nodes.len() == 1)
            && two.list(domain).iter().any(|s| s.name == "shared")
    })
    .await;

    let mut heard = two.watch();
    register(one, domain, service("shared", "1", &[("n-2", "127.0.0.1:8002")]), LONG).await;
    let (action, seen) = next_event(&mut heard, domain).await;
    assert_eq!(
        (action.as_str(), seen.name.as_str()),
        ("update", "shared"),
        "shared: two's watcher hears one"
    );
    assert_eq!(node_ids(&two.get(domain, "shared")), ["n-1", "n-2"]);

    deregister(two, domain, service("shared", "1", &[("n-1", "")])).await;
    eventually("shared: a deregistration through two reaches one", || {
        node_ids(&one.get(domain, "shared")) == ["n-2"]
    })
    .await;
    deregister(two, domain, service("shared", "1", &[])).await;
    eventually("shared: deregistering a whole version through two", || one.get(domain, "shared").is_empty())
        .await;

    register(one, domain, service("brief", "1", &[("t-1", "127.0.0.1:8003")]), Duration::from_secs(2)).await;
    eventually("shared: a short-lived registration reaches two", || !two.get(domain, "brief").is_empty())
        .await;
    eventually("shared: its expiry shows on two", || two.get(domain, "brief").is_empty()).await;

    assert_eq!(names(&one.list(domain)), builtin_names(), "shared: one ends with only the built-ins");
    assert_eq!(names(&two.list(domain)), builtin_names(), "shared: two ends with only the built-ins");
}
