//! `micro call` end to end: JSON in, protobuf-JSON out, against the core services of a real
//! server, and the original's messages and exit codes for the ways a call can be wrong.

mod common;

use common::{Server, stderr, stdout};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
}

#[test]
fn call_sends_json_to_core_services_and_prints_protobuf_json() {
    let home = tempfile::tempdir().unwrap();
    // Logged in as the default admin by `Server::start`, so the calls pass the auth gate.
    let server = Server::start(home.path());

    let listed = server.ok(&["call", "registry", "Registry.ListServices", "{}"]);
    assert!(listed.starts_with("{\n\t\"services\": ["), "indented with tabs: {listed:?}");
    assert!(listed.ends_with("}\n"), "{listed:?}");
    let services = json(&listed)["services"].as_array().cloned().unwrap_or_default();
    assert!(services.iter().any(|service| service["name"] == "store"), "{listed}");

    // A write through `call` is a write: the store CLI reads it back. Bytes are base64 in JSON.
    let written =
        server.ok(&["call", "store", "Store.Write", r#"{"record": {"key": "called", "value": "aGk="}}"#]);
    assert_eq!(written, "{}\n", "an empty response prints as an empty object");
    assert_eq!(server.ok(&["store", "read", "called"]), "hi\n");

    // The request may be split over several arguments; field names may be camelCase too.
    let read = json(&server.ok(&[
        "call",
        "store",
        "Store.Read",
        r#"{"key":"#,
        r#""called","#,
        r#""options": {"table": "micro"}}"#,
    ]));
    assert_eq!(read["records"][0]["key"], "called");
    assert_eq!(read["records"][0]["value"], "aGk=");
    let prefixed =
        server.ok(&["call", "store", "Store.Read", r#"{"key": "call", "options": {"prefix": true}}"#]);
    assert_eq!(json(&prefixed), read);

    let raw = server.ok(&["call", "-o", "raw", "store", "Store.Read", r#"{"key": "called"}"#]);
    assert_eq!(raw.lines().count(), 1, "raw is one line: {raw:?}");
    assert_eq!(json(&raw), read);
    let with_flags = server.ok(&[
        "call",
        "--metadata",
        "x-trace-id=abc",
        "--request_timeout",
        "5s",
        "store",
        "Store.Read",
        r#"{"key": "called"}"#,
    ]);
    assert_eq!(json(&with_flags), read);

    // Server streaming: each message is printed as it arrives.
    server.ok(&["store", "write", "called2", "there"]);
    let listed = server.ok(&["call", "store", "Store.List"]);
    let keys: Vec<String> = serde_json::Deserializer::from_str(&listed)
        .into_iter::<Value>()
        .flat_map(|message| message.unwrap()["keys"].as_array().cloned().unwrap_or_default())
        .map(|key| key.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["called", "called2"], "{listed}");

    let missing = server.micro(&["call", "store", "Store.Read", r#"{"key": "nothing here"}"#]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing).trim(), "Not found");
    assert_eq!(stdout(&missing), "");

    // `tokenExpiry` is the lowerCamel JSON name of `token_expiry`.
    let request = r#"{"id": "admin", "secret": "micro", "tokenExpiry": 600}"#;
    let token = json(&server.ok(&["call", "auth", "Auth.Token", request]));
    let token = &token["token"];
    assert!(token["access_token"].as_str().is_some_and(|access| !access.is_empty()), "{token}");
    assert!(token["refresh_token"].as_str().is_some_and(|refresh| !refresh.is_empty()), "{token}");
    for field in ["created", "expiry"] {
        let value = token[field].as_str().unwrap_or_else(|| panic!("{field} is an int64 string: {token}"));
        assert!(value.parse::<i64>().is_ok_and(|seconds| seconds > 0), "{field}: {value}");
    }
}

#[test]
fn call_reports_bad_requests_with_the_original_messages_and_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    let fails = |args: &[&str], code: i32, message: &str| {
        let output = server.micro(args);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {}", stderr(&output));
        let err = stderr(&output);
        assert!(err.starts_with(message), "{args:?}: {err:?} should start with {message:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert_eq!(stdout(&output), "");
    };
    fails(&["call", "store", "Store.Read", "{not json"], 1, "Error creating request: ");
    fails(
        &["call", "store", "Store.Read", r#"{"kee": "x"}"#],
        1,
        "Error creating request: store.ReadRequest has no field \"kee\"",
    );
    fails(&["call", "store", "Store.Read", r#"{"key": 5}"#], 1, "Error creating request: field \"key\": ");
    fails(&["call", "nosuchservice", "Foo.Bar"], 5, "Service \"nosuchservice\" not found");
    fails(&["call", "store", "Store.Nope"], 5, "Service method \"Store.Nope\" not found");
    fails(
        &["call", "store", "StoreRead"],
        3,
        "Method name \"StoreRead\" invalid format. Expecting service.endpoint",
    );
    fails(
        &["call", "--request_timeout", "soon", "store", "Store.Read"],
        2,
        "Invalid format for request_timeout duration. Try 500ms or 5s",
    );
    fails(&["call", "--metadata", "novalue", "store", "Store.Read"], 1, "Invalid metadata \"novalue\"");

    let help = server.ok(&["call", "--help"]);
    assert!(help.starts_with("micro call - "), "{help}");
}
