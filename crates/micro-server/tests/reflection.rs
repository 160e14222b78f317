//! gRPC reflection on :8081 lists exactly the services the server routes: every listed name
//! answers on this server, and the protos compiled in but not served (`debug.Debug`,
//! `store.BlobStore`) are not listed; a service registered in the caller's namespace is listed
//! while it is registered.

use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// What `micro server` serves on :8081, sorted: the core services, health and reflection.
const SERVED: &[&str] = &[
    "auth.Accounts",
    "auth.Auth",
    "auth.Rules",
    "broker.Broker",
    "config.Config",
    "debug.Debug",
    "events.Store",
    "events.Stream",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "jobs.Jobs",
    "registry.Registry",
    "runtime.Build",
    "runtime.Runtime",
    "runtime.Source",
    "store.Store",
];

/// `list_v1` and `list_v1alpha`: the services a reflection version lists, sorted. The two
/// versions' generated types differ only by module.
macro_rules! list_services {
    ($name:ident, $version:ident) => {
        async fn $name(channel: &Channel) -> Vec<String> {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::{ServerReflectionRequest, ServiceResponse};
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut client = ServerReflectionClient::new(channel.clone());
            let mut replies =
                client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
            let reply = replies.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
                panic!("unexpected reflection reply {reply:?}");
            };
            let mut names: Vec<String> =
                list.service.into_iter().map(|ServiceResponse { name }| name).collect();
            names.sort();
            names
        }
    };
}

list_services!(list_v1, v1);
list_services!(list_v1alpha, v1alpha);

/// Calls a method no service has on `service`, as the admin: a routed service answers
/// `Unimplemented` itself (no message); anything else falls through to the proxy, which answers
/// `Unimplemented` with "service … not found".
async fn call_missing_method(channel: &Channel, token: &str, service: &str) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(());
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let path = PathAndQuery::try_from(format!("/{service}/NoSuchMethod")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(request, path, codec).await.unwrap_err()
}

#[tokio::test]
async fn reflection_lists_exactly_the_served_services() {
    let home = tempfile::tempdir().unwrap();
    let memory = || "memory".to_string();
    let config = micro_server::Config {
        store: micro_server::config::StoreConfig { backend: memory(), ..Default::default() },
        events: micro_server::config::EventsConfig { backend: memory() },
        ..Default::default()
    };
    let platform = micro_server::Platform::open(home.path(), &config, true).await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = grpc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(platform.serve(
        grpc,
        http,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();

    // Anyone may reflect (the gate lets `/grpc.reflection.` through); both versions agree.
    let listed = list_v1(&channel).await;
    assert_eq!(listed, SERVED, "reflection v1 lists exactly the served services");
    assert_eq!(list_v1alpha(&channel).await, SERVED, "reflection v1alpha lists the same");
    for unserved in ["store.BlobStore", "opentelemetry.proto.collector.trace.v1.TraceService"] {
        assert!(!listed.iter().any(|name| name == unserved), "{unserved} is compiled in but not served");
    }

    // Every listed name is routed to a service of this server, not to the proxy.
    let token = micro_proto::auth::auth_client::AuthClient::new(channel.clone())
        .token(micro_proto::auth::TokenRequest {
            id: "admin".into(),
            secret: "micro".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .access_token;
    for name in &listed {
        let status = call_missing_method(&channel, &token, name).await;
        assert_eq!(status.code(), Code::Unimplemented, "{name}: {status:?}");
        assert!(!status.message().contains("not found"), "{name} reached the proxy: {status:?}");
    }
    let status = call_missing_method(&channel, &token, "store.BlobStore").await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("not found"), "store.BlobStore is not served here: {status:?}");

    // A registered service is listed too, by both versions, while it is registered.
    let mut registry = micro_proto::registry::registry_client::RegistryClient::new(channel.clone());
    let authorized = |service: &micro_proto::registry::Service| {
        let mut request = Request::new(service.clone());
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let hello = registered("hello", "Greeter");
    registry.register(authorized(&hello)).await.unwrap();
    let mut expected = [SERVED, &["hello.Greeter"]].concat();
    expected.sort();
    assert_eq!(list_v1(&channel).await, expected);
    assert_eq!(list_v1alpha(&channel).await, expected);
    registry.deregister(authorized(&hello)).await.unwrap();
    assert_eq!(list_v1(&channel).await, SERVED, "gone once deregistered");

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

/// A registry entry for service `name` declaring the gRPC service `name.handler` (`Call`).
fn registered(name: &str, handler: &str) -> micro_proto::registry::Service {
    use prost::Message as _;
    use prost_types::{DescriptorProto, FileDescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};
    let file = FileDescriptorProto {
        name: Some(format!("{name}.proto")),
        package: Some(name.into()),
        message_type: vec![DescriptorProto { name: Some("Request".into()), ..Default::default() }],
        service: vec![ServiceDescriptorProto {
            name: Some(handler.into()),
            method: vec![MethodDescriptorProto {
                name: Some("Call".into()),
                input_type: Some(format!(".{name}.Request")),
                output_type: Some(format!(".{name}.Request")),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    micro_proto::registry::Service {
        name: name.into(),
        version: "latest".into(),
        descriptors: prost_types::FileDescriptorSet { file: vec![file] }.encode_to_vec(),
        nodes: vec![micro_proto::registry::Node {
            id: format!("{name}-1"),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}
