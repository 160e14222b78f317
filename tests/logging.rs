//! JSON logs end to end (docs/observability.md, "Logs"): a server started with `--log-format
//! json` writes only JSON lines, a framework service with `MICRO_LOG_FORMAT=json` too (its
//! handler's line with the handler's fields), and the runtime passes the server's format to the
//! processes it starts.

mod common;

use std::time::Duration;

use common::{Server, Service, http_request, json, poll};

/// The trace the test's call belongs to (W3C `traceparent`).
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// Every line of `log`, parsed; fails naming the first line that is not a JSON object.
fn json_lines(log: &str, who: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("{who} wrote a line that is not a JSON object: {line:?}\nin:\n{log}"),
        })
        .collect()
}

#[test]
fn server_and_services_write_json_lines() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--log-format", "json"]);
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    // Traced (spans exported to the server), so each call is handled inside a span with its ids.
    let otlp = format!("http://{}", server.grpc);
    let hello = Service::start_helloworld(
        &server,
        &[("MICRO_LOG_FORMAT", "json"), ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)],
    );
    let (status, body) = http_request(
        &server.http,
        "POST",
        "/helloworld/Call",
        &[
            ("Content-Type", "application/json"),
            ("traceparent", &format!("00-{TRACE_ID}-b7ad6b7169203331-01")),
        ],
        br#"{"name":"Alice"}"#,
    );
    assert_eq!((status, json(&body)["msg"].as_str()), (200, Some("Hello Alice")));
    hello.wait_for("Received Helloworld.Call request");

    let lines = json_lines(&server.log(), "the server");
    let listening = lines.iter().find(|line| line["message"] == "gRPC listening").expect("a listening line");
    assert_eq!(listening["addr"], server.grpc.as_str(), "fields are JSON fields: {listening}");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["timestamp"].is_string(), "{listening}");

    let lines = json_lines(&hello.log(), "helloworld");
    assert!(lines.iter().any(|line| line["message"] == "Registered"), "{lines:?}");
    let call = lines
        .iter()
        .find(|line| line["message"] == "Received Helloworld.Call request")
        .expect("the handler's line");
    assert_eq!(call["name"], "Alice", "{call}");
    let spans =
        call["spans"].as_array().unwrap_or_else(|| panic!("the handler's line names its spans: {call}"));
    assert!(
        spans
            .iter()
            .any(|span| span["trace_id"] == TRACE_ID
                && span["span_id"].as_str().is_some_and(|id| id.len() == 16)),
        "the caller's trace id and the call's span id are on the handler's line: {call}"
    );

    // A process the runtime starts gets the server's format.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("printer");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run.sh"), "echo \"format=$MICRO_LOG_FORMAT\"\nexec sleep 600\n").unwrap();
    server.ok_at(work.path(), &["run", "./printer", "--command", "sh run.sh"]);
    let mut logs = String::new();
    let passed = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        logs = common::stdout(&server.micro(&["logs", "printer"]));
        logs.contains("format=")
    });
    assert!(passed, "no output from printer: {logs}\nserver:\n{}", server.log());
    assert!(logs.lines().any(|line| line == "format=json"), "{logs}");
}

#[test]
fn a_bad_log_format_is_refused_with_one_line() {
    let home = tempfile::tempdir().unwrap();
    let output = common::micro_in(home.path(), &["server", "--log-format", "yaml", "--dump-config"]);
    assert!(!output.status.success());
    let said = common::stderr(&output);
    assert!(said.contains("unknown log format \"yaml\": use text or json"), "{said}");

    let service = std::process::Command::new(common::helloworld_bin())
        .env("MICRO_LOG_FORMAT", "yaml")
        .env("MICRO_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("helloworld runs");
    assert!(!service.status.success());
    let said = common::stderr(&service);
    assert!(said.contains("MICRO_LOG_FORMAT: unknown log format \"yaml\": use text or json"), "{said}");
}
