//! `Config.Watch` end to end: a gRPC client watching through the server's gate sees the changes
//! `micro config set/del` make, in order and none skipped, and only those of its own namespace.

mod common;

use std::time::Duration;

use micro_proto::config::config_client::ConfigClient;
use micro_proto::config::{SetRequest, Value, WatchRequest, WatchResponse};
use serde_json::{Value as Json, json};

use common::Server;

/// How long a change may take to reach a watcher before the test fails.
const ARRIVAL: Duration = Duration::from_secs(30);

/// The admin's access token, as the CLI saved it on login in the harness's env `e2e`.
fn admin_token(home: &std::path::Path) -> String {
    let tokens: Json = serde_json::from_slice(&std::fs::read(home.join("tokens.json")).unwrap()).unwrap();
    let token = tokens["e2e/micro"]["access_token"].as_str().expect("the harness logged in");
    format!("Bearer {token}")
}

/// `message` carrying `authorization`, when given.
fn request<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    request
}

fn watch(namespace: &str, path: &str) -> WatchRequest {
    WatchRequest { namespace: namespace.into(), path: path.into(), options: None }
}

/// The next change on `stream` as (action, path, value at the watched path).
async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> (String, String, Json) {
    let change = tokio::time::timeout(ARRIVAL, stream.message())
        .await
        .expect("a change arrived in time")
        .expect("the watch did not fail")
        .expect("the watch is still open");
    let value = serde_json::from_str(&change.value.expect("changes carry a value").data).unwrap();
    (change.action, change.path, value)
}

#[test]
fn a_grpc_watcher_sees_cli_changes_in_order_and_only_its_namespace() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let admin = admin_token(home.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        ConfigClient::new(channel)
    });

    // The gate applies to Watch like any call: no account, no watch; a bad path is refused.
    let anonymous = runtime.block_on(client.watch(request(watch("", "app"), None))).unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated, "{anonymous:?}");
    let bad = runtime.block_on(client.watch(request(watch("", "a..b"), Some(&admin)))).unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    // The watch is registered by the time its response headers arrive: nothing made after
    // that can be missed. The admin's own namespace is `micro`; it may watch any other.
    let mut in_micro =
        runtime.block_on(client.watch(request(watch("", "app"), Some(&admin)))).unwrap().into_inner();
    let mut in_foo =
        runtime.block_on(client.watch(request(watch("foo", "app"), Some(&admin)))).unwrap().into_inner();

    server.ok(&["config", "set", "app.colour", "blue"]);
    server.ok(&["config", "set", "other.x", "1"]); // outside the watched path
    server.ok(&["config", "set", "app.size", "3"]);
    server.ok(&["config", "set", "--secret", "app.password", "hunter2"]);
    for n in 0..10 {
        server.ok(&["config", "set", "app.n", &n.to_string()]);
    }
    server.ok(&["config", "del", "app.colour"]);
    server.ok(&["config", "del", "app"]);

    let mut expected = vec![
        ("set", "app.colour", json!({"colour": "blue"})),
        ("set", "app.size", json!({"colour": "blue", "size": 3})),
        ("set", "app.password", json!({"colour": "blue", "size": 3, "password": "[secret]"})),
    ];
    for n in 0..10 {
        expected.push(("set", "app.n", json!({"colour": "blue", "size": 3, "password": "[secret]", "n": n})));
    }
    expected.push(("delete", "app.colour", json!({"size": 3, "password": "[secret]", "n": 9})));
    expected.push(("delete", "app", Json::Null));
    for (index, (action, path, value)) in expected.into_iter().enumerate() {
        let seen = runtime.block_on(next(&mut in_micro));
        assert_eq!(seen, (action.to_string(), path.to_string(), value), "change {index}, in CLI order");
    }

    // A change in foo is the first thing foo's watcher sees: none of micro's changes on the
    // same path reached it. And micro's watcher does not see foo's change: its next is micro's.
    let foo_set = SetRequest {
        namespace: "foo".into(),
        path: "app.colour".into(),
        value: Some(Value { data: r#""red""#.into(), format: String::new() }),
        options: None,
    };
    runtime.block_on(client.set(request(foo_set, Some(&admin)))).unwrap();
    assert_eq!(
        runtime.block_on(next(&mut in_foo)),
        ("set".to_string(), "app.colour".to_string(), json!({"colour": "red"})),
        "foo's watcher sees foo's change first and nothing of micro's"
    );
    server.ok(&["config", "set", "app.colour", "green"]);
    assert_eq!(
        runtime.block_on(next(&mut in_micro)),
        ("set".to_string(), "app.colour".to_string(), json!({"colour": "green"})),
        "micro's watcher skipped foo's change"
    );
    // The CLI reads each namespace's own document.
    assert_eq!(server.ok(&["config", "get", "app.colour"]).trim(), "green");
}
