//! Property tests of the HTTP gateway's request parsing and JSON ↔ protobuf mapping
//! (docs/security.md): arbitrary paths, queries, headers and bodies against services described
//! by the core descriptors. Whatever arrives, the gateway answers — a 4xx for what it cannot
//! take, a 503 for a well-formed call to a node that is down — and never panics or answers 500.
//!
//! The case count is fixed (`CASES`, or `PROPTEST_CASES` to run more locally).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use micro_proto::registry::{Node, Service};
use micro_registry::MemoryRegistry;
use micro_server::gateway::{Gateway, Options};
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt as _;

/// Cases per property in CI.
const CASES: u32 = 256;

/// Statuses a request may get here: every node is down, so nothing succeeds past parsing.
const EXPECTED: &[u16] = &[200, 400, 401, 403, 404, 405, 408, 413, 415, 421, 429, 501, 502, 503];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let router = runtime.block_on(async {
            let store = Arc::new(micro_store::memory::MemoryStore::new());
            let options =
                micro_auth::AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
            let auth = Arc::new(micro_auth::Auth::open(store, dir.path(), options).await.unwrap());
            let registry = Arc::new(MemoryRegistry::new(micro_server::registry::builtins()));
            // A node nobody listens on: a dead user service with every core message type.
            let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
            let greeter = Service {
                name: "greeter".into(),
                version: "latest".into(),
                nodes: vec![Node { id: "g-1".into(), address: dead.to_string(), ..Node::default() }],
                descriptors: micro_proto::FILE_DESCRIPTOR_SET.to_vec(),
                ..Service::default()
            };
            registry.register("micro", greeter, Duration::from_secs(3600)).unwrap();
            let options = Options {
                core_address: Some(dead),
                timeout: Duration::from_secs(2),
                host_check: Some(micro_server::gateway::browser::HostCheck::default()),
                ..Options::default()
            };
            micro_server::http::router(Gateway::new(registry, auth, options))
        });
        Fixture { runtime, router, _dir: dir }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9 ._=-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("key".to_string()),
                    Just("options".to_string()),
                    Just("record".to_string()),
                    Just("service".to_string()),
                    Just("prefix".to_string()),
                    Just("limit".to_string()),
                    Just("value".to_string()),
                    Just("metadata".to_string()),
                    "[a-zA-Z_]{1,10}",
                ],
                inner,
                0..6,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/store/read".to_string()),
        Just("/store/list".to_string()),
        Just("/registry/getService".to_string()),
        Just("/auth/token".to_string()),
        Just("/greeter/Store/Read".to_string()),
        Just("/greeter/Store/List".to_string()),
        Just("/greeter/Config/Watch".to_string()),
        Just("/greeter/Events/Publish".to_string()),
        Just("/".to_string()),
        "(/[a-zA-Z0-9._~%-]{0,12}){0,4}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("key".to_string()),
        Just("options.prefix".to_string()),
        Just("options[limit]".to_string()),
        Just("record.metadata.a".to_string()),
        "[a-zA-Z_.\\[\\]%0-9]{0,40}",
        (1usize..200).prop_map(|n| "a.".repeat(n) + "b"),
    ];
    let value = "[a-zA-Z0-9%{}\\[\\]\":,.+-]{0,24}";
    prop::collection::vec((key, value), 0..6)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        prop::collection::vec(any::<u8>(), 0..256),
        Just(Vec::new()),
        (1usize..300).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
    ]
}

prop_compose! {
    fn request()(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        path in path(),
        query in query(),
        content_type in prop::sample::select(vec![
            "", "application/json", "text/plain", "application/x-www-form-urlencoded",
            "application/protobuf", "application/json; charset=utf-8", "multipart/form-data",
        ]),
        body in body(),
        origin in prop::option::of(prop::sample::select(vec!["http://evil.example", "null"])),
        namespace in prop::option::of("[a-z0-9./-]{0,12}"),
        authorization in prop::option::of("(Bearer |Basic )?[a-zA-Z0-9.]{0,40}"),
        host in prop::sample::select(vec!["127.0.0.1:8080", "localhost", "evil.example", "[::1]:1"]),
    ) -> Request<Body> {
        let target = if query.is_empty() { path } else { format!("{path}?{query}") };
        let mut builder = Request::builder().method(method).uri(target).header("host", host);
        if !content_type.is_empty() {
            builder = builder.header("content-type", content_type);
        }
        if let Some(origin) = origin {
            builder = builder.header("origin", origin);
        }
        if let Some(namespace) = namespace {
            builder = builder.header("micro-namespace", namespace);
        }
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        builder.body(Body::from(body)).unwrap_or_else(|_| Request::new(Body::empty()))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_clear_answer(request in request()) {
        let fixture = fixture();
        let description = format!("{} {}", request.method(), request.uri());
        let response = fixture.runtime.block_on(fixture.router.clone().oneshot(request)).unwrap();
        let status = response.status().as_u16();
        prop_assert!(EXPECTED.contains(&status), "{description} → {status}");
        if status >= 400 {
            let bytes = fixture.runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 20)).unwrap();
            let error: Value = serde_json::from_slice(&bytes).map_err(|err| {
                TestCaseError::fail(format!("{description} → {status}, not a JSON error: {err}"))
            })?;
            prop_assert_eq!(error["Code"].as_u64(), Some(u64::from(status)), "{}", description);
        }
    }
}
