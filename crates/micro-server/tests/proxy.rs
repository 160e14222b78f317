//! The :8081 proxy in process: calls for registered services reach their nodes through the auth
//! gate, unary and streaming, with headers and trailers intact, skipping nodes that are down.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use http::HeaderMap;
use micro_core::{Account, Context};
use micro_proto::registry::{Node, Service};
use micro_proto::store::{
    ListRequest, ListResponse, ReadRequest, ReadResponse, Record, WriteRequest, WriteResponse,
};
use micro_registry::MemoryRegistry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// The store service as a user service would be: served as `kv.Store` on its own listener. It
/// records the headers of each call and acts for an account of `micro` (a real service would
/// verify the forwarded token itself).
#[derive(Clone)]
struct Upstream {
    inner: micro_proto::store::store_server::StoreServer<micro_store::grpc::StoreService>,
    seen: Seen,
}

impl NamedService for Upstream {
    const NAME: &'static str = "kv.Store";
}

impl tower::Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        <micro_proto::store::store_server::StoreServer<micro_store::grpc::StoreService> as tower::Service<
            http::Request<Body>,
        >>::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        self.seen.lock().unwrap().push(request.headers().clone());
        let path = request.uri().path().replacen("/kv.Store/", "/store.Store/", 1);
        *request.uri_mut() = path.parse().unwrap();
        let account = Account { id: "kv".into(), issuer: "micro".into(), ..Account::default() };
        request.extensions_mut().insert(Context::with_account("micro", account));
        self.inner.call(request)
    }
}

async fn start_upstream(seen: Seen) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let store = Arc::new(micro_store::memory::MemoryStore::new());
    let upstream = Upstream { inner: micro_store::grpc::server(store), seen };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder().add_routes(Routes::new(upstream)).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ),
    );
    (address, stop)
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn service(name: &str, addresses: &[&str], descriptors: Vec<u8>) -> Service {
    Service {
        name: name.into(),
        version: "latest".into(),
        nodes: addresses
            .iter()
            .enumerate()
            .map(|(i, address)| Node {
                id: format!("{name}-{i}"),
                address: (*address).into(),
                ..Node::default()
            })
            .collect(),
        descriptors,
        ..Service::default()
    }
}

/// A descriptor set declaring only the gRPC service `kv.Store`.
fn kv_descriptors() -> Vec<u8> {
    use prost::Message;
    use prost_types::{FileDescriptorProto, FileDescriptorSet, ServiceDescriptorProto};
    let file = FileDescriptorProto {
        name: Some("kv.proto".into()),
        package: Some("kv".into()),
        service: vec![ServiceDescriptorProto { name: Some("Store".into()), ..Default::default() }],
        ..Default::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

struct Platform {
    address: String,
    registry: Arc<MemoryRegistry>,
    auth: Arc<micro_auth::Auth>,
    channel: Channel,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_platform() -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn micro_store::Store> = Arc::new(micro_store::memory::MemoryStore::new());
    let options = micro_auth::AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
    let auth = Arc::new(micro_auth::Auth::open(store.clone(), dir.path(), options).await.unwrap());
    let config =
        Arc::new(micro_config::Config::new(store.clone(), micro_config::SecretKey::generate().unwrap()));
    let registry = Arc::new(MemoryRegistry::new(micro_server::registry::builtins()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let runtime = micro_runtime::Runtime::open(
        store.clone(),
        auth.clone(),
        micro_runtime::RuntimeOptions::new(dir.path()),
    )
    .await
    .unwrap();
    let broker: Arc<dyn micro_broker::Broker> = Arc::new(micro_broker::MemoryBroker::new());
    let events: Arc<dyn micro_events::Events> = Arc::new(micro_events::memory::MemoryEvents::default());
    let core = micro_server::grpc::Core {
        store,
        config,
        auth: auth.clone(),
        registry: registry.clone(),
        runtime,
        broker,
        events,
        jobs: None,
    };
    let served = tokio::spawn(micro_server::grpc::serve(core, listener, async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    Platform { address: address.to_string(), registry, auth, channel, stop, served, _dir: dir }
}

async fn unary<Req, Res>(channel: &Channel, path: &'static str, message: Req) -> Result<Res, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    unary_with(channel, path, message, &[("micro-namespace", "micro")]).await
}

async fn unary_with<Req, Res>(
    channel: &Channel,
    path: &'static str,
    message: Req,
    metadata: &[(&'static str, &str)],
) -> Result<Res, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(message);
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request.metadata_mut().insert("x-trace-id", "abc".parse().unwrap());
    let codec = tonic_prost::ProstCodec::<Req, Res>::default();
    grpc.unary(request, PathAndQuery::from_static(path), codec).await.map(tonic::Response::into_inner)
}

async fn list_keys(channel: &Channel, path: &'static str) -> Result<Vec<String>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<ListRequest, ListResponse>::default();
    let mut stream = grpc
        .server_streaming(Request::new(ListRequest::default()), PathAndQuery::from_static(path), codec)
        .await?
        .into_inner();
    let mut keys = Vec::new();
    while let Some(message) = stream.message().await? {
        keys.extend(message.keys);
    }
    Ok(keys)
}

#[tokio::test]
async fn calls_for_registered_services_reach_their_nodes() {
    let seen = Seen::default();
    let (upstream, stop_upstream) = start_upstream(seen.clone()).await;
    let dead = dead_address().await;
    let platform = start_platform().await;
    let channel = &platform.channel;

    // Unknown services are a gRPC answer, not a dropped stream.
    let unknown = unary::<ReadRequest, ReadResponse>(channel, "/kv.Store/Read", ReadRequest::default()).await;
    let unknown = unknown.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (Code::Unimplemented, "service kv not found"));

    // Registered under its package name, with one node down: every call lands on the live one.
    platform
        .registry
        .register("micro", service("kv", &[&dead, &upstream], Vec::new()), Default::default())
        .unwrap();
    for i in 0..4 {
        let record = Record { key: format!("k{i}"), value: b"v".to_vec(), ..Record::default() };
        let write = WriteRequest { record: Some(record), options: None };
        unary::<WriteRequest, WriteResponse>(channel, "/kv.Store/Write", write).await.unwrap();
    }
    let read: ReadResponse =
        unary(channel, "/kv.Store/Read", ReadRequest { key: "k2".into(), options: None }).await.unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.records[0].value, b"v");
    // Errors of the node come back as its status, trailers and all.
    let missing = unary::<ReadRequest, ReadResponse>(
        channel,
        "/kv.Store/Read",
        ReadRequest { key: "nope".into(), options: None },
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert_eq!(list_keys(channel, "/kv.Store/List").await.unwrap(), ["k0", "k1", "k2", "k3"]);

    let headers = seen.lock().unwrap().first().cloned().unwrap();
    assert_eq!(headers.get("x-trace-id").unwrap(), "abc", "metadata is forwarded: {headers:?}");
    assert_eq!(headers.get("micro-namespace").unwrap(), "micro");
    assert_eq!(seen.lock().unwrap().len(), 7, "the dead node never took a call");

    // Registered under another name: found through the descriptors it registered.
    platform.registry.deregister("micro", &service("kv", &[], Vec::new()));
    platform
        .registry
        .register("micro", service("key-value", &[&upstream], kv_descriptors()), Default::default())
        .unwrap();
    assert_eq!(list_keys(channel, "/kv.Store/List").await.unwrap(), ["k0", "k1", "k2", "k3"]);

    // The caller's token never reaches the node: an admin's call into foo carries a token that
    // is valid in foo only, and an anonymous call carries none.
    let admin = Account {
        id: "admin".into(),
        issuer: "micro".into(),
        scopes: vec!["admin".into()],
        ..Account::default()
    };
    let bearer =
        format!("Bearer {}", platform.auth.mint(&admin, std::time::Duration::from_secs(600)).unwrap());
    platform.registry.register("foo", service("kv", &[&upstream], Vec::new()), Default::default()).unwrap();
    let calls = seen.lock().unwrap().len();
    let read = ReadRequest { key: "k0".into(), options: None };
    let metadata = [("micro-namespace", "foo"), ("authorization", bearer.as_str())];
    let _ = unary_with::<ReadRequest, ReadResponse>(channel, "/kv.Store/Read", read.clone(), &metadata).await;
    let _ = unary::<ReadRequest, ReadResponse>(channel, "/kv.Store/Read", read).await;
    let seen_now = seen.lock().unwrap()[calls..].to_vec();
    assert_eq!(seen_now.len(), 2);
    let forwarded = seen_now[0].get("authorization").expect("a forwarded token").to_str().unwrap();
    assert_ne!(forwarded, bearer);
    let account = platform.auth.inspect(forwarded.trim_start_matches("Bearer ")).unwrap();
    assert_eq!((account.id.as_str(), account.issuer.as_str()), ("admin", "foo"));
    assert_eq!(seen_now[1].get("authorization"), None, "an anonymous call carries no token");

    // A node registered at the proxy's own address: the call goes round MAX_PROXY_HOPS times,
    // then fails, and the proxy keeps serving.
    platform
        .registry
        .register("micro", service("loop", &[&platform.address], Vec::new()), Default::default())
        .unwrap();
    let looped = unary::<ReadRequest, ReadResponse>(channel, "/loop.Store/Read", ReadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(looped.code(), Code::FailedPrecondition, "{looped:?}");
    assert!(looped.message().contains("MAX_PROXY_HOPS"), "{looped:?}");

    // No live node: UNAVAILABLE naming what was tried.
    platform.registry.register("micro", service("down", &[&dead], Vec::new()), Default::default()).unwrap();
    let down = unary::<ReadRequest, ReadResponse>(channel, "/down.Store/Read", ReadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().starts_with("service down: no node could be reached: 127.0.0.1:"), "{down:?}");

    // Core services are still served in process, and a core name is never proxied.
    let hosted =
        unary::<ReadRequest, ReadResponse>(channel, "/store.Store/Read", ReadRequest::default()).await;
    assert_eq!(hosted.unwrap_err().code(), Code::Unauthenticated, "the in-process store wants an account");
    let not_hosted =
        unary::<ReadRequest, ReadResponse>(channel, "/store.Nope/Read", ReadRequest::default()).await;
    assert_eq!(not_hosted.unwrap_err().message(), "service store not found");

    platform.stop.send(()).unwrap();
    platform.served.await.unwrap().unwrap();
    let _ = stop_upstream.send(());
}

/// The descriptors of a user service serving the store's methods as the gRPC service `kv.Store`
/// (what [`Upstream`] answers), with the store's messages.
fn kv_store_descriptors() -> Vec<u8> {
    use prost::Message;
    use prost_types::{FileDescriptorProto, FileDescriptorSet};
    let mut set = FileDescriptorSet::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
    let store = set.file.iter().find(|file| file.package() == "store").unwrap();
    let service = store.service.iter().find(|service| service.name() == "Store").unwrap().clone();
    let kv = FileDescriptorProto {
        name: Some("kv/kv.proto".into()),
        package: Some("kv".into()),
        dependency: vec![store.name().to_string()],
        service: vec![service],
        ..Default::default()
    };
    set.file.push(kv);
    set.encode_to_vec()
}

/// One HTTP request to the gateway's router; returns status and body.
async fn gateway_get(router: &axum::Router, path: &str) -> (u16, String) {
    use tower::ServiceExt as _;
    let request = http::Request::get(path).body(axum::body::Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_gateway_fails_over_like_the_proxy() {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let seen = Seen::default();
    let (upstream, stop_upstream) = start_upstream(seen.clone()).await;
    let dead = dead_address().await;
    let platform = start_platform().await;
    let channel = &platform.channel;

    // A dead node first. The live one also names a `port`: the port in its address wins (the
    // registry takes only addresses with a port).
    let mut kv = service("kv", &[&dead, &upstream], kv_store_descriptors());
    kv.nodes[1].port = 1;
    platform.registry.register("micro", kv, Default::default()).unwrap();

    // Through the proxy: every call lands on the live node.
    for i in 0..4 {
        let record = Record { key: format!("k{i}"), value: b"v".to_vec(), ..Record::default() };
        let write = WriteRequest { record: Some(record), options: None };
        unary::<WriteRequest, WriteResponse>(channel, "/kv.Store/Write", write).await.unwrap();
    }

    // Through the gateway, likewise: no call is answered 503 for the dead node.
    let gateway = micro_server::gateway::Gateway::new(
        platform.registry.clone(),
        platform.auth.clone(),
        micro_server::gateway::Options::default(),
    );
    let router = micro_server::http::router(gateway.clone());
    for i in 0..4 {
        let (status, body) = gateway_get(&router, &format!("/kv/store/read?key=k{i}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"k{i}\"")), "{body}");
    }
    // The node's own errors are its answer: not sent on to another node.
    let calls = seen.lock().unwrap().len();
    let (status, body) = gateway_get(&router, "/kv/store/read?key=nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(seen.lock().unwrap().len(), calls + 1, "the call was made once");

    // Over a websocket too: the request stream waits for the node that is reached.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_address = http.local_addr().unwrap();
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let served_http = tokio::spawn(micro_server::http::serve(router, http, async {
        let _ = http_stopped.await;
    }));
    for _ in 0..2 {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{http_address}/kv/store/list")).await.unwrap();
        socket.send(Message::text("{}")).await.unwrap();
        let mut keys = String::new();
        while let Some(Ok(Message::Text(text))) = socket.next().await {
            keys.push_str(text.as_str());
        }
        assert!(keys.contains("\"k0\"") && keys.contains("\"k3\""), "{keys}");
    }
    assert_eq!(seen.lock().unwrap().len(), 4 + 4 + 1 + 2, "the dead node never took a call");

    // No node reachable: 503 naming what was tried.
    platform
        .registry
        .register("micro", service("down", &[&dead], kv_store_descriptors()), Default::default())
        .unwrap();
    let router = micro_server::http::router(gateway);
    let (status, body) = gateway_get(&router, "/down/store/read").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("down is unavailable: no node could be reached: 127.0.0.1:"), "{body}");

    let _ = stop_http.send(());
    served_http.await.unwrap().unwrap();
    platform.stop.send(()).unwrap();
    platform.served.await.unwrap().unwrap();
    let _ = stop_upstream.send(());
}
