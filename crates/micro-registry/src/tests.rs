use std::sync::Arc;
use std::time::Duration;

use micro_core::Context;
use micro_proto::registry::registry_server::Registry as _;
use micro_proto::registry::{GetRequest, ListRequest, Node, Options, Service, WatchRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

use super::*;
use crate::grpc::RegistryService;

fn service(name: &str, version: &str, nodes: &[(&str, &str)]) -> Service {
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

fn core() -> Vec<Service> {
    vec![Service { name: "store".into(), version: "1".into(), ..Default::default() }]
}

#[test]
fn register_merges_nodes_and_lists_per_domain() {
    let registry = MemoryRegistry::new(core());
    registry
        .register("micro", service("greeter", "latest", &[("g-1", "127.0.0.1:1")]), Duration::from_secs(60))
        .unwrap();
    registry
        .register("micro", service("greeter", "latest", &[("g-2", "127.0.0.1:2")]), Duration::from_secs(60))
        .unwrap();
    registry.register("foo", service("greeter", "v2", &[("f-1", "127.0.0.1:3")]), Duration::ZERO).unwrap();

    let greeter = registry.get("micro", "greeter");
    assert_eq!(greeter.len(), 1);
    assert_eq!(greeter[0].nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["g-1", "g-2"]);
    assert_eq!(registry.get("foo", "greeter")[0].version, "v2", "domains are separate");
    let names: Vec<String> = registry.list("micro").into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["greeter", "store"], "built-ins are listed in every domain");
    assert_eq!(registry.get("bar", "store").len(), 1);

    assert_eq!(registry.nodes("micro", "greeter").unwrap().len(), 2);
    assert_eq!(registry.nodes("micro", "store"), Some(Vec::new()), "built-ins are served in-process");
    assert_eq!(registry.nodes("micro", "nope"), None);
    registry.deregister("micro", &service("greeter", "latest", &[("g-1", "")]));
    assert_eq!(registry.get("micro", "greeter")[0].nodes.len(), 1);
    registry.deregister("micro", &service("greeter", "latest", &[]));
    assert!(registry.get("micro", "greeter").is_empty());
}

#[test]
fn expired_nodes_vanish_from_reads_and_are_reaped() {
    let registry = MemoryRegistry::new(Vec::new());
    registry
        .register("micro", service("short", "1", &[("s-1", "127.0.0.1:1")]), Duration::from_millis(1))
        .unwrap();
    registry
        .register("micro", service("long", "1", &[("l-1", "127.0.0.1:2")]), Duration::from_secs(60))
        .unwrap();
    let mut events = registry.watch();
    // A TTL of 1 ms is over by the time this thread is scheduled again.
    std::thread::sleep(Duration::from_millis(5));
    assert!(registry.get("micro", "short").is_empty(), "reads never show an expired node");
    assert_eq!(registry.reap(), 1);
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.result.action.as_str(), event.result.service.unwrap().name.as_str()),
        ("delete", "short")
    );
    assert_eq!(registry.list("micro").len(), 1);
}

#[test]
fn bad_registrations_are_refused_and_change_nothing() {
    let registry = MemoryRegistry::new(core());
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    let cases = [
        service("", "1", &[("a", "127.0.0.1:1")]),
        service("bad name", "1", &[("a", "127.0.0.1:1")]),
        service(&long, "1", &[("a", "127.0.0.1:1")]),
        service("ok", "1", &[]),
        service("ok", "1", &[("", "127.0.0.1:1")]),
        service("ok", "1", &[("a", "nowhere")]),
        service("ok", "1", &[("a", "host:99999")]),
        service("store", "1", &[("a", "127.0.0.1:1")]),
        Service {
            descriptors: vec![0; MAX_DESCRIPTOR_BYTES + 1],
            ..service("ok", "1", &[("a", "127.0.0.1:1")])
        },
    ];
    for case in cases {
        assert!(registry.register("micro", case.clone(), Duration::ZERO).is_err(), "{}", case.name);
    }
    assert_eq!(registry.list("micro").len(), 1, "only the built-in");
}

#[test]
fn domains_are_bounded() {
    let registry = MemoryRegistry::new(Vec::new());
    for i in 0..MAX_SERVICES_PER_DOMAIN {
        registry
            .register("micro", service(&format!("s{i}"), "1", &[("n", "127.0.0.1:1")]), Duration::ZERO)
            .unwrap();
    }
    let full = registry.register("micro", service("one-more", "1", &[("n", "127.0.0.1:1")]), Duration::ZERO);
    assert!(matches!(full, Err(RegistryError::Full(_))));
    registry.register("micro", service("s0", "1", &[("n2", "127.0.0.1:2")]), Duration::ZERO).unwrap();
    registry.register("other", service("one-more", "1", &[("n", "127.0.0.1:1")]), Duration::ZERO).unwrap();
}

#[test]
fn descriptor_bytes_per_domain_are_bounded() {
    use crate::MAX_DESCRIPTOR_BYTES_PER_DOMAIN;
    let registry = MemoryRegistry::new(Vec::new());
    let big = |name: &str| Service {
        descriptors: vec![0; MAX_DESCRIPTOR_BYTES],
        ..service(name, "1", &[("n", "127.0.0.1:1")])
    };
    let fit = MAX_DESCRIPTOR_BYTES_PER_DOMAIN / MAX_DESCRIPTOR_BYTES;
    for i in 0..fit {
        registry.register("micro", big(&format!("s{i}")), Duration::ZERO).unwrap();
    }
    match registry.register("micro", big("one-more"), Duration::ZERO) {
        Err(RegistryError::Full(message)) => {
            assert!(message.contains("MAX_DESCRIPTOR_BYTES_PER_DOMAIN"), "{message}")
        }
        other => panic!("expected Full, got {other:?}"),
    }
    registry
        .register("micro", big("s0"), Duration::ZERO)
        .expect("a heartbeat of a registered service still fits");
    registry.register("micro", service("small", "1", &[("n", "127.0.0.1:1")]), Duration::ZERO).unwrap();
    registry.register("other", big("one-more"), Duration::ZERO).expect("each domain has its own budget");
}

fn request<T>(message: T, context: Context) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(context);
    request
}

fn in_domain(domain: &str) -> Option<Options> {
    Some(Options { domain: domain.into(), ttl: 0 })
}

#[tokio::test]
async fn grpc_applies_namespace_authorisation() {
    let registry = Arc::new(MemoryRegistry::new(core()));
    let grpc = RegistryService::new(registry.clone());
    let svc = service("greeter", "1", &[("n", "127.0.0.1:1")]);

    let anonymous = grpc.register(request(svc.clone(), Context::anonymous("micro"))).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let foreign = Service { options: in_domain("micro"), ..svc.clone() };
    assert_eq!(
        grpc.register(request(foreign, Context::member("foo"))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    grpc.register(request(svc.clone(), Context::member("foo"))).await.unwrap();

    let list = |domain: &str| ListRequest { options: in_domain(domain) };
    let public = grpc.list_services(request(list("micro"), Context::anonymous("micro"))).await.unwrap();
    assert_eq!(public.into_inner().services.len(), 1, "micro is public and holds only the built-in");
    let hidden = grpc.list_services(request(list("foo"), Context::anonymous("foo"))).await.unwrap_err();
    assert_eq!(hidden.code(), Code::Unauthenticated);
    let own = grpc.list_services(request(ListRequest::default(), Context::member("foo"))).await.unwrap();
    assert_eq!(own.into_inner().services.len(), 2);

    let get = |name: &str| GetRequest { service: name.into(), options: None };
    let missing = grpc.get_service(request(get("nope"), Context::member("foo"))).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        grpc.get_service(request(get("greeter"), Context::member("foo")))
            .await
            .unwrap()
            .into_inner()
            .services
            .len(),
        1
    );
    assert_eq!(
        grpc.get_service(request(get("greeter"), Context::member("micro"))).await.unwrap_err().code(),
        Code::NotFound
    );

    let watch = WatchRequest { service: "greeter".into(), options: None };
    let mut stream = grpc.watch(request(watch, Context::member("foo"))).await.unwrap().into_inner();
    registry.register("micro", service("greeter", "1", &[("m", "127.0.0.1:2")]), Duration::ZERO).unwrap();
    registry.register("foo", service("other", "1", &[("o", "127.0.0.1:3")]), Duration::ZERO).unwrap();
    grpc.deregister(request(svc, Context::member("foo"))).await.unwrap();
    let event = stream.next().await.unwrap().unwrap();
    assert_eq!(event.action, "delete", "only foo's greeter events reach the watcher");
}

/// The memory backend keeps the contract; one instance stands for both (it cannot be shared).
#[tokio::test]
async fn memory_conformance() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new(crate::conformance::builtins()));
    crate::conformance::run_all(registry.clone(), registry).await;
}
