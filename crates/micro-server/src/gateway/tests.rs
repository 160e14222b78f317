//! The gateway over real HTTP on loopback, in front of a real tonic service (a test
//! `store.Store` / `store.BlobStore`) registered in a registry with the core descriptors.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, Stream, StreamExt as _};
use micro_auth::{Access, AuthOptions, Rule};
use micro_core::Account;
use micro_proto::registry::{Node, Service};
use micro_proto::store::blob_store_server::{BlobStore, BlobStoreServer};
use micro_proto::store::store_server::{Store, StoreServer};
use micro_proto::store::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use micro_registry::MemoryRegistry;

/// A store whose answers show what reached it.
#[derive(Clone, Default)]
struct Echo {
    written: Arc<Mutex<Vec<String>>>,
}

fn header(request: &Request<impl Sized>, name: &str) -> String {
    request.metadata().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Store for Echo {
    /// The record's key is the request's, its value the authorization header, its expiry the
    /// limit, its metadata the namespace and `x-trace` metadata.
    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let field = |value: String| Field { r#type: "string".into(), value };
        let metadata = [
            ("namespace".to_string(), field(header(&request, "micro-namespace"))),
            ("trace".to_string(), field(header(&request, "x-trace"))),
        ];
        let authorization = header(&request, "authorization");
        let read = request.into_inner();
        match read.key.as_str() {
            "missing" => return Err(Status::not_found("record missing")),
            "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
            _ => {}
        }
        let record = Record {
            key: read.key,
            value: authorization.into_bytes(),
            expiry: read.options.map_or(0, |o| o.limit as i64),
            metadata: metadata.into_iter().collect(),
            expiry_ms: 0,
        };
        Ok(Response::new(ReadResponse { records: vec![record] }))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let key = request.into_inner().record.unwrap_or_default().key;
        self.written.lock().unwrap().push(key);
        Ok(Response::new(WriteResponse {}))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::permission_denied("no deleting"))
    }

    type ListStream = ListStream;

    /// `limit` messages `k0`, `k1` …; with prefix `fail`, an error after the first.
    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListStream>, Status> {
        let options = request.into_inner().options.unwrap_or_default();
        if options.prefix == "refuse" {
            return Err(Status::invalid_argument("refused"));
        }
        let fail = options.prefix == "fail";
        let items = (0..options.limit).map(move |i| {
            if fail && i == 1 {
                Err(Status::internal("broke"))
            } else {
                Ok(ListResponse { keys: vec![format!("k{i}")] })
            }
        });
        Ok(Response::new(Box::pin(futures::stream::iter(items.collect::<Vec<_>>()))))
    }

    async fn databases(&self, _: Request<DatabasesRequest>) -> Result<Response<DatabasesResponse>, Status> {
        Ok(Response::new(DatabasesResponse { databases: vec!["a".into(), "b".into()] }))
    }

    async fn tables(&self, _: Request<TablesRequest>) -> Result<Response<TablesResponse>, Status> {
        Err(Status::unavailable("down"))
    }
}

type BlobReadStream = Pin<Box<dyn Stream<Item = Result<BlobReadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BlobStore for Echo {
    type ReadStream = BlobReadStream;

    async fn read(&self, _: Request<BlobReadRequest>) -> Result<Response<BlobReadStream>, Status> {
        Err(Status::unimplemented("not here"))
    }

    /// Records every key written, answers once the input ends.
    async fn write(
        &self,
        request: Request<Streaming<BlobWriteRequest>>,
    ) -> Result<Response<BlobWriteResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(chunk) = stream.next().await {
            self.written.lock().unwrap().push(chunk?.key);
        }
        Ok(Response::new(BlobWriteResponse {}))
    }

    async fn delete(&self, _: Request<BlobDeleteRequest>) -> Result<Response<BlobDeleteResponse>, Status> {
        Ok(Response::new(BlobDeleteResponse {}))
    }
}

struct Harness {
    http: SocketAddr,
    auth: Arc<Auth>,
    echo: Echo,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    /// A test store registered as `store` in namespace `micro` and as `private` in namespace
    /// `foo` (and `opaque`, without descriptors), behind a gateway with a 1 KiB body limit.
    async fn start() -> Self {
        let echo = Echo::default();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(StoreServer::new(echo.clone()))
            .add_service(BlobStoreServer::new(echo.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async {
                let _ = stopped.await;
            });
        tokio::spawn(server);

        let registry = Arc::new(MemoryRegistry::new(Vec::new()));
        let service = |name: &str| Service {
            name: name.into(),
            version: "latest".into(),
            nodes: vec![Node {
                id: format!("{name}-1"),
                address: grpc_addr.to_string(),
                ..Default::default()
            }],
            descriptors: micro_proto::FILE_DESCRIPTOR_SET.to_vec(),
            ..Default::default()
        };
        registry.register("micro", service("store"), Duration::from_secs(60)).unwrap();
        // A user service registers its own protos only: the store file, where `Store` is unique.
        let private = Service { descriptors: store_descriptors(), ..service("private") };
        registry.register("foo", private, Duration::from_secs(60)).unwrap();
        registry
            .register(
                "micro",
                Service { descriptors: Vec::new(), ..service("opaque") },
                Duration::from_secs(60),
            )
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(micro_store::memory::MemoryStore::new());
        let options = AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
        let auth = Arc::new(Auth::open(store, dir.path(), options).await.unwrap());
        let gateway_options = Options {
            body_limit: 1024,
            api_domain: Some("example.com".into()),
            timeout: Duration::from_secs(1),
            cors_origins: vec!["https://app".into()],
            ..Options::default()
        };
        let gateway = Gateway::new(registry, auth.clone(), gateway_options);

        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(crate::http::serve(crate::http::router(gateway), http, std::future::pending()));
        Harness { http: http_addr, auth, echo, _dir: dir, _stop: stop }
    }

    /// Sends one HTTP/1.1 request and reads the whole response.
    async fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(self.http).await.unwrap();
        let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            head.push_str("Host: api.local\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer (413) before reading a large body; a failed write is fine then.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        Reply::parse(&raw)
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", target, headers, b"").await
    }

    fn token(&self, id: &str, issuer: &str) -> String {
        let account = Account {
            id: id.into(),
            name: id.into(),
            kind: "user".into(),
            issuer: issuer.into(),
            ..Account::default()
        };
        format!("Bearer {}", self.auth.mint(&account, Duration::from_secs(60)).unwrap())
    }
}

/// The descriptor set of `store/store.proto` alone.
fn store_descriptors() -> Vec<u8> {
    let core = prost_reflect::DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = core.files().find(|file| file.package_name() == "store").unwrap();
    let mut pool = prost_reflect::DescriptorPool::new();
    pool.add_file_descriptor_proto(file.file_descriptor_proto().clone()).unwrap();
    pool.encode_to_vec()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Self {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers.iter().any(|(n, v)| n == "transfer-encoding" && v == "chunked") {
            body = dechunk(&body);
        }
        Reply { status, headers, body }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error reply: the status and the JSON error with the same code.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        let json = self.json();
        assert_eq!(json["Code"], status);
        assert!(json["Status"].as_str().is_some_and(|s| !s.is_empty()), "{json}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        json["Detail"].as_str().unwrap().to_string()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        body = &body[line_end + 4 + size..];
    }
}

#[tokio::test]
async fn unary_calls_from_query_and_body() {
    let h = Harness::start().await;

    let root = h.get("/", &[]).await;
    assert_eq!((root.status, root.json()["version"].as_str()), (200, Some(micro_core::VERSION)));
    assert_eq!(h.get("/favicon.ico", &[]).await.status, 200);

    // GET: query parameters become typed fields; headers reach the service as metadata.
    let read = h.get("/store/read?key=jane&options.limit=7", &[("X-Trace", "t-1")]).await;
    assert_eq!(read.status, 200, "{}", String::from_utf8_lossy(&read.body));
    assert_eq!(read.header("content-type"), Some("application/json"));
    let json = read.json();
    let record = &json["records"][0];
    assert_eq!(record["key"], "jane");
    assert_eq!(record["expiry"], "7", "int64 fields are strings");
    assert_eq!(record["metadata"]["namespace"]["value"], "micro");
    assert_eq!(record["metadata"]["trace"]["value"], "t-1");
    assert!(record.get("expiry_ms").is_none(), "defaults are left out");
    assert_eq!(h.get("/store/Read?key=x", &[]).await.status, 200, "methods match case-insensitively");

    // POST: the JSON body merged over the query; lowerCamel names accepted.
    let body = br#"{"options": {"limit": 3}, "key": "from-body"}"#;
    let post = h
        .send(
            "POST",
            "/store/read?key=from-query&options.limit=1",
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
    assert_eq!(post.status, 200);
    assert_eq!(post.json()["records"][0]["key"], "from-body");
    assert_eq!(post.json()["records"][0]["expiry"], "3");
    let write = h.send("PUT", "/store/write", &[], br#"{"record": {"key": "w", "expiryMs": "5"}}"#).await;
    assert_eq!((write.status, write.json()), (200, json!({})));
    assert_eq!(h.echo.written.lock().unwrap().as_slice(), ["w"]);
    let form = h
        .send(
            "POST",
            "/store/read",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"key=formed&options.limit=2",
        )
        .await;
    assert_eq!(form.json()["records"][0]["key"], "formed");
    let curl = h
        .send(
            "POST",
            "/store/read",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            br#"{"key": "curl"}"#,
        )
        .await;
    assert_eq!(curl.json()["records"][0]["key"], "curl", "curl -d sends JSON as a form");
    let databases = h.get("/store/databases", &[]).await;
    assert_eq!(databases.json(), json!({"databases": ["a", "b"]}));

    // Protobuf bodies are decoded and answered as protobuf.
    let request = ReadRequest { key: "proto".into(), options: None };
    let proto = h
        .send(
            "POST",
            "/store/read",
            &[("Content-Type", "application/protobuf")],
            &prost::Message::encode_to_vec(&request),
        )
        .await;
    assert_eq!(proto.header("content-type"), Some("application/protobuf"));
    let decoded: ReadResponse = prost::Message::decode(proto.body.as_slice()).unwrap();
    assert_eq!(decoded.records[0].key, "proto");

    // A page may send JSON only as application/json, which a browser sends across origins
    // only after a preflight; text/plain and forms are no JSON once an Origin is present.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let mut headers = vec![("Origin", "https://app")];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        let refused = h.send("POST", "/store/read", &headers, br#"{"key": "page"}"#).await;
        let detail = refused.error(415);
        assert!(detail.contains("application/json"), "{content_type}: {detail}");
    }
    let plain = h.send("POST", "/store/read", &[("Content-Type", "text/plain")], br#"{"key": "t"}"#).await;
    plain.error(415);
    let bare = h.send("POST", "/store/read", &[], br#"{"key": "bare"}"#).await;
    assert_eq!(bare.json()["records"][0]["key"], "bare", "a tool that sends no type sends JSON");
    let typed = h
        .send(
            "POST",
            "/store/read",
            &[("Content-Type", "application/json; charset=utf-8"), ("Origin", "https://app")],
            br#"{"key": "typed"}"#,
        )
        .await;
    assert_eq!(typed.json()["records"][0]["key"], "typed");

    // CORS: only the configured origin is granted, exactly, never `*`.
    let preflight = async |origin: &'static str| {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ];
        h.send("OPTIONS", "/store/read", &headers, b"").await
    };
    let granted = preflight("https://app").await;
    assert_eq!(granted.status, 200);
    assert_eq!(granted.header("access-control-allow-origin"), Some("https://app"));
    assert_eq!(granted.header("access-control-allow-credentials"), Some("true"));
    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert_eq!(refused.header("access-control-allow-credentials"), None);
    assert_eq!(typed.header("access-control-allow-origin"), Some("https://app"));
    assert_eq!(read.header("access-control-allow-origin"), None, "no Origin, no grant");
    assert_eq!(read.header("x-content-type-options"), Some("nosniff"));
    let not_preflight = h.send("OPTIONS", "/store/read", &[], b"").await;
    assert_eq!((not_preflight.status, not_preflight.body.len()), (200, 0), "answered by the CORS layer");
}

#[tokio::test]
async fn failures_are_json_errors_with_matching_statuses() {
    let h = Harness::start().await;

    assert_eq!(h.get("/nope", &[]).await.error(404), "service nope not found");
    assert_eq!(h.get("/store/nope", &[]).await.error(404), "endpoint Store.Nope not found on service store");
    assert_eq!(h.get("/store", &[]).await.error(404), "endpoint Store.Call not found on service store");
    assert!(h.get("/opaque/x", &[]).await.error(501).contains("no protobuf descriptors"));

    let bad_json = h.send("POST", "/store/read", &[], b"{\"key\": ").await.error(400);
    assert!(bad_json.starts_with("invalid JSON body"), "{bad_json}");
    assert_eq!(
        h.send("POST", "/store/read", &[], br#"{"kee": "x"}"#).await.error(400),
        "store.ReadRequest has no field \"kee\""
    );
    assert_eq!(
        h.get("/store/read?options.limit=many", &[]).await.error(400),
        "field \"options.limit\": \"many\" is not an unsigned 64-bit integer"
    );
    let big = vec![b' '; 2048];
    assert_eq!(
        h.send("POST", "/store/read", &[], &big).await.error(413),
        "the request body is larger than 1024 bytes"
    );

    // Service errors keep the service's id and map to HTTP statuses.
    let missing = h.get("/store/read?key=missing", &[]).await;
    assert_eq!(missing.error(404), "record missing");
    assert_eq!(missing.json()["Id"], "store");
    assert_eq!(h.get("/store/delete", &[]).await.error(403), "no deleting");
    assert!(h.get("/store/tables", &[]).await.error(503).contains("down"));
    h.get("/store/read?key=slow", &[]).await.error(408);
    assert!(h.get("/store/blob-store/write", &[]).await.error(501).contains("websocket"));
}

#[tokio::test]
async fn tokens_namespaces_and_rules() {
    let h = Harness::start().await;

    // Services of other namespaces are reachable only in their namespace.
    assert_eq!(h.get("/private/store/read?key=a", &[]).await.status, 404);
    let foo = h.get("/private/store/read?key=a", &[("Micro-Namespace", "foo")]).await;
    assert_eq!(foo.status, 200, "{}", String::from_utf8_lossy(&foo.body));
    assert_eq!(foo.json()["records"][0]["metadata"]["namespace"]["value"], "foo");
    let by_host = h.get("/private/store/read?key=a", &[("Host", "foo.example.com:8080")]).await;
    assert_eq!(by_host.status, 200, "the subdomain of the API domain names the namespace");
    assert!(
        h.get("/store/read", &[("Micro-Namespace", "../x")]).await.error(400).contains("invalid namespace")
    );

    // A user service gets a token of the caller scoped to its namespace, never the caller's
    // own; a cookie with its CSRF header works as well as the header.
    let admin = h.token("admin", "micro");
    let forwarded = async |headers: &[(&str, &str)], path: &str| {
        let read = h.get(path, headers).await;
        let value = read.json()["records"][0]["value"].as_str().unwrap_or_default().to_string();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(value).unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let seen = forwarded(&[("Authorization", &admin)], "/store/read?key=a").await;
    assert_ne!(seen, admin, "the caller's token stays with the gateway");
    let account = h.auth.inspect(seen.trim_start_matches("Bearer ")).unwrap();
    assert_eq!((account.id.as_str(), account.issuer.as_str()), ("admin", "micro"));
    let in_foo =
        forwarded(&[("Authorization", &admin), ("Micro-Namespace", "foo")], "/private/store/read?key=a")
            .await;
    let account = h.auth.inspect(in_foo.trim_start_matches("Bearer ")).unwrap();
    assert_eq!(account.issuer, "foo", "an admin's call into foo carries a token valid in foo only");
    assert_eq!(account.metadata["forwarded_from"], "micro");
    let cookie = format!("micro-token={}; micro-csrf=t0k", admin.trim_start_matches("Bearer "));
    let by_cookie = forwarded(&[("Cookie", &cookie), ("X-CSRF-Token", "t0k")], "/store/read?key=a").await;
    assert_eq!(h.auth.inspect(by_cookie.trim_start_matches("Bearer ")).unwrap().id, "admin");
    let no_csrf = forwarded(&[("Cookie", &cookie)], "/store/read?key=a").await;
    assert_eq!(no_csrf, "", "without the CSRF header the cookie is no session");
    assert_eq!(h.get("/store/read", &[("Authorization", "Bearer forged")]).await.status, 401);
    assert_eq!(h.get("/store/read", &[("Authorization", "Basic eA==")]).await.status, 401);

    // A token of namespace foo cannot act in micro, but can in foo.
    let bob = h.token("bob", "foo");
    assert!(
        h.get("/store/read", &[("Authorization", &bob), ("Micro-Namespace", "micro")])
            .await
            .error(403)
            .contains("namespace foo")
    );
    assert_eq!(
        h.get("/private/store/read", &[("Authorization", &bob)]).await.status,
        200,
        "the namespace defaults to the issuer's"
    );

    // Rules: micro locked to accounts, Store.Delete denied to everyone.
    let rule = |id: &str, scope: &str, endpoint: &str, access, priority| Rule {
        id: id.into(),
        scope: scope.into(),
        resource: micro_auth::Resource::new("service", "*", endpoint),
        access,
        priority,
    };
    h.auth.create_rule("micro", rule("accounts", "*", "*", Access::Granted, 0)).await.unwrap();
    h.auth.create_rule("micro", rule("no-delete", "*", "Store.Databases", Access::Denied, 1)).await.unwrap();
    h.auth.delete_rule("micro", "default").await.unwrap();
    assert_eq!(h.get("/store/read", &[]).await.error(401), "Unauthorized call made to store:Store.Read");
    assert_eq!(h.get("/store/read", &[("Authorization", &admin)]).await.status, 200);
    assert_eq!(
        h.get("/store/databases", &[("Authorization", &admin)]).await.error(403),
        "Forbidden call made to store:Store.Databases by admin"
    );
}

#[tokio::test]
async fn server_streams_over_chunked_http_and_websockets() {
    let h = Harness::start().await;

    let list = h.get("/store/list?options.limit=3", &[]).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.header("transfer-encoding"), Some("chunked"));
    let lines: Vec<Value> =
        String::from_utf8(list.body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, [json!({"keys": ["k0"]}), json!({"keys": ["k1"]}), json!({"keys": ["k2"]})]);

    assert_eq!(h.get("/store/list?options.prefix=refuse", &[]).await.error(400), "refused");
    let failed = h.get("/store/list?options.limit=3&options.prefix=fail", &[]).await;
    let lines: Vec<Value> =
        String::from_utf8(failed.body).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["Code"], 500);
    assert_eq!(lines[1]["Detail"], "broke");

    // Websocket, request from the query.
    let url = format!("ws://{}/store/list?options.limit=2", h.http);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut texts = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            texts.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    assert_eq!(texts, [json!({"keys": ["k0"]}), json!({"keys": ["k1"]})]);

    // Websocket, request as the first message.
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/store/list", h.http)).await.unwrap();
    socket.send(WsMessage::text(r#"{"options": {"limit": 1}}"#)).await.unwrap();
    let first = socket.next().await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Value>(first.to_text().unwrap()).unwrap(), json!({"keys": ["k0"]}));

    // Client streaming over a websocket: requests until an empty message.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/store/blob-store/write", h.http)).await.unwrap();
    socket.send(WsMessage::text(r#"{"key": "b1"}"#)).await.unwrap();
    socket.send(WsMessage::text(r#"{"key": "b2"}"#)).await.unwrap();
    socket.send(WsMessage::text("")).await.unwrap();
    let answer = socket.next().await.unwrap().unwrap();
    assert_eq!(answer.to_text().unwrap(), "{}");
    assert_eq!(h.echo.written.lock().unwrap().as_slice(), ["b1", "b2"]);

    // A bad request message ends the session with the error JSON.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/store/list", h.http)).await.unwrap();
    socket.send(WsMessage::text(r#"{"nope": 1}"#)).await.unwrap();
    let error = socket.next().await.unwrap().unwrap();
    let error: Value = serde_json::from_str(error.to_text().unwrap()).unwrap();
    assert_eq!(
        (error["Code"].as_u64(), error["Detail"].as_str()),
        (Some(400), Some("store.ListRequest has no field \"nope\""))
    );

    // A websocket message is a request body: past the body limit (1 KiB here) the socket is
    // closed, and nothing reaches the service.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/store/blob-store/write", h.http)).await.unwrap();
    let big = format!(r#"{{"key": "{}"}}"#, "x".repeat(4096));
    let _ = socket.send(WsMessage::text(big)).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_) | Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized message ends the session");
    assert_eq!(h.echo.written.lock().unwrap().as_slice(), ["b1", "b2"], "the big message went nowhere");
}

#[tokio::test]
async fn connect_and_grpc_web_at_grpc_paths() {
    let h = Harness::start().await;
    let unary = [("content-type", "application/json"), ("connect-protocol-version", "1")];
    let answer = h.send("POST", "/store.Store/Databases", &unary, b"{}").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json(), json!({"databases": ["a", "b"]}));
    let wrong_case = h.send("POST", "/store.store/databases", &unary, b"{}").await;
    assert_eq!((wrong_case.status, wrong_case.json()["code"].clone()), (404, json!("not_found")));
    let big = format!(r#"{{"key": "{}"}}"#, "x".repeat(2048));
    let too_big = h.send("POST", "/store.Store/Read", &unary, big.as_bytes()).await;
    assert_eq!((too_big.status, too_big.json()["code"].clone()), (429, json!("resource_exhausted")));
    let bad = h.send("POST", "/store.Store/Read", &unary, br#"{"nope": 1}"#).await;
    assert_eq!((bad.status, bad.json()["code"].clone()), (400, json!("invalid_argument")));

    // Server streaming: one envelope per message, then the outcome.
    let stream = [("content-type", "application/connect+json")];
    let envelopes = |reply: Reply| {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/connect+json"));
        let mut body = &reply.body[..];
        let mut out = Vec::new();
        while !body.is_empty() {
            let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            out.push((body[0], serde_json::from_slice::<Value>(&body[5..5 + length]).unwrap()));
            body = &body[5 + length..];
        }
        out
    };
    let request = |json: &str| connect::envelope(0, json.as_bytes());
    let listed =
        envelopes(h.send("POST", "/store.Store/List", &stream, &request(r#"{"options":{"limit":2}}"#)).await);
    assert_eq!(listed, [(0, json!({"keys": ["k0"]})), (0, json!({"keys": ["k1"]})), (2, json!({}))]);
    let failed = h
        .send("POST", "/store.Store/List", &stream, &request(r#"{"options":{"limit":3,"prefix":"fail"}}"#))
        .await;
    let failed = envelopes(failed);
    assert_eq!(failed[1], (2, json!({"error": {"code": "internal", "message": "broke"}})), "{failed:?}");
    let refused =
        h.send("POST", "/store.Store/List", &stream, &request(r#"{"options":{"prefix":"refuse"}}"#)).await;
    assert_eq!(
        envelopes(refused),
        [(2, json!({"error": {"code": "invalid_argument", "message": "refused"}}))]
    );
    let client_streaming = envelopes(h.send("POST", "/store.BlobStore/Write", &stream, &request("{}")).await);
    assert_eq!(client_streaming[0].1["error"]["code"], "unimplemented");

    // gRPC-Web: the answer's message frame, then its trailers frame.
    let web = [("content-type", "application/grpc-web+proto")];
    let reply = h.send("POST", "/store.Store/Databases", &web, b"\0\0\0\0\0").await;
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..7], b"\x00\x00\x00\x00\x06\x0a\x01", "databases: [\"a\", \"b\"]");
    let trailers = String::from_utf8_lossy(&reply.body[11 + 5..]).to_string();
    assert_eq!(reply.body[11], 0x80, "{trailers}");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let unknown = h.send("POST", "/store.Store/Nope", &web, b"\0\0\0\0\0").await;
    assert_eq!(unknown.header("grpc-status"), Some("5"), "NOT_FOUND, trailers-only");
}
