//! The server's Prometheus metrics end to end (docs/observability.md): a real server with the
//! helloworld example, traffic through the gateway, the gRPC proxy and the CLI (store, events),
//! then `GET /metrics` as each kind of caller, the counts of each (service, endpoint, code), and
//! Debian's `promtool check metrics` on the text; the same of helloworld's own `/metrics` (a
//! framework service counts its calls on its own port), and a rule that keeps scrapers out of
//! it. Then a real Prometheus scrapes the server and the service and answers PromQL queries for
//! helloworld's requests. `promtool` and `prometheus` come from
//! Debian's `prometheus` package, which scripts/services installs (`MICRO_TEST_PROMTOOL`,
//! `MICRO_TEST_PROMETHEUS`); without them the tests skip loudly, except in CI, where they fail.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, Service, http_request, in_ci, json, sample, tenant_home};

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// The tool `variable` names, or `None` (after saying so, loudly) when this run may skip.
fn tool(variable: &str, name: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin").join(name)))
        .filter(|path| path.is_file());
    if path.is_none() {
        assert!(
            !in_ci(),
            "{test}: {name} not found, and CI must run this test (scripts/test installs Debian's prometheus)"
        );
        eprintln!(
            "\n*** SKIPPED {test}: {name} not found (apt-get install prometheus, or run scripts/test, which \
             installs it) ***\n"
        );
    }
    path
}

/// The series of [`micro_requests_total`] with these labels, as the exporter renders them.
fn requests(listener: &str, service: &str, endpoint: &str, code: &str) -> String {
    format!(
        r#"micro_requests_total{{listener="{listener}",service="{service}",endpoint="{endpoint}",code="{code}"}}"#
    )
}

/// `GET /metrics` with `headers`: (status, content type, body).
fn scrape(server: &Server, headers: &[(&str, &str)]) -> (u16, String, String) {
    let reply = common::http_send(&server.http, "GET", "/metrics", headers, b"");
    let content_type = reply.header("content-type").unwrap_or_default().to_string();
    (reply.status, content_type, reply.body)
}

/// `GET /metrics` on a framework service's own port, with `headers`: (status, body).
fn scrape_service(service: &Service, headers: &[(&str, &str)]) -> (u16, String) {
    http_request(&service.address, "GET", "/metrics", headers, b"")
}

/// Runs `promtool check metrics` on `text`; fails the test on any complaint.
fn promtool_check(promtool: &PathBuf, text: &str) {
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}\non:\n{text}"
    );
}

/// Three gateway calls and one proxied gRPC call of helloworld, a store write and an event
/// published through the CLI (over :8081), and two paths that name no endpoint.
fn traffic(server: &Server) {
    for name in ["a", "b", "c"] {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let (status, answer) =
            http_request(&server.http, "POST", "/helloworld/Call", &[JSON], body.as_bytes());
        assert_eq!((status, json(&answer)["msg"].as_str()), (200, Some(format!("Hello {name}").as_str())));
    }
    let proxied = server.ok(&["call", "helloworld", "Helloworld.Call", r#"{"name":"X"}"#]);
    assert!(proxied.contains("Hello X"), "{proxied}");
    server.ok(&["store", "write", "metrics-key", "v"]);
    server.ok(&["events", "publish", "metrics-topic", r#"{"n":1}"#]);
    let (status, _) = http_request(&server.http, "POST", "/nosuchservice/Nope/Call", &[JSON], b"{}");
    assert_eq!(status, 404);
    let (status, _) = http_request(&server.http, "POST", "/helloworld/Helloworld/Nope", &[JSON], b"{}");
    assert_eq!(status, 404);
}

#[test]
fn metrics_count_both_listeners_by_endpoint_and_pass_promtool() {
    const TEST: &str = "tests/metrics.rs (promtool)";
    let Some(promtool) = tool("MICRO_TEST_PROMTOOL", "promtool", TEST) else { return };
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let hello = Service::start_helloworld(&server, &[]);
    traffic(&server);
    // The runtime: one process that keeps running, one that crashes and is restarted.
    let work = tempfile::tempdir().unwrap();
    for (name, script) in [("sleeper", "exec sleep 600\n"), ("crasher", "echo crashing >&2\nexit 3\n")] {
        std::fs::create_dir_all(work.path().join(name)).unwrap();
        std::fs::write(work.path().join(name).join("run.sh"), script).unwrap();
        server.ok_at(work.path(), &["run", &format!("./{name}"), "--command", "sh run.sh"]);
    }
    // A refused gRPC call: a token that does not verify.
    let (status, _) = http_request(
        &server.http,
        "POST",
        "/store/Store/Read",
        &[JSON, ("Authorization", "Bearer not-a-token")],
        br#"{"key":"k"}"#,
    );
    assert_eq!(status, 401);

    // Who may read: admins of `micro`; not anonymous callers, not tenants.
    let (status, _, body) = scrape(&server, &[]);
    assert_eq!(status, 401, "the default public rule does not publish metrics: {body}");
    assert!(body.contains("Unauthorized call made to debug:Debug.Metrics"), "{body}");
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s", "bob"]);
    let tenant = tenant_home(&server, "foo", "bob", "s");
    let tenant_token = common::stdout(&common::micro_in(tenant.path(), &["user", "token"]));
    let tenant_bearer = format!("Bearer {}", tenant_token.trim());
    let (status, _, body) = scrape(&server, &[("Authorization", &tenant_bearer)]);
    assert_eq!(status, 403, "{body}");
    let bearer = format!("Bearer {}", server.ok(&["user", "token"]).trim());
    let (status, content_type, _) = scrape(&server, &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");

    // A request is counted when its response body is done, which the server may notice a moment
    // after the client has read it: scrape until the last one shows.
    let expected = [
        (requests("http", "helloworld", "Helloworld.Call", "200"), 3.0, "gateway calls"),
        (requests("grpc", "helloworld", "Helloworld.Call", "OK"), 1.0, "the proxied call"),
        (requests("grpc", "store", "Store.Write", "OK"), 1.0, "the CLI's store write"),
        (requests("grpc", "events", "Stream.Publish", "OK"), 1.0, "the CLI's publish"),
        (requests("http", "other", "other", "404"), 2.0, "paths that name no endpoint"),
        (requests("http", "other", "other", "401"), 2.0, "the anonymous scrape and the bad token"),
        (requests("http", "other", "other", "403"), 1.0, "the tenant's scrape"),
        (
            r#"micro_auth_rejections_total{listener="http",reason="unauthorized"}"#.to_string(),
            1.0,
            "the anonymous scrape, by reason",
        ),
        (
            r#"micro_auth_rejections_total{listener="http",reason="foreign_namespace"}"#.to_string(),
            1.0,
            "the tenant's scrape, by reason",
        ),
        (
            r#"micro_auth_rejections_total{listener="http",reason="invalid_token"}"#.to_string(),
            1.0,
            "the call with a bad token",
        ),
        (r#"micro_runtime_services{status="running"}"#.to_string(), 1.0, "the sleeper runs"),
    ];
    let mut text = String::new();
    common::eventually(Duration::from_secs(30), || {
        text = scrape(&server, &[("Authorization", &bearer)]).2;
        expected.iter().all(|(series, value, _)| sample(&text, series) == Some(*value))
            && sample(&text, "micro_runtime_restarts_total").is_some_and(|restarts| restarts >= 1.0)
    });
    for (series, value, what) in &expected {
        assert_eq!(sample(&text, series), Some(*value), "{what}: {series} in:\n{text}");
    }
    let count = |series: String| sample(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(
        !text.contains("nosuchservice") && !text.contains("Nope"),
        "unknown paths fold into other:\n{text}"
    );
    let duration = r#"micro_request_duration_seconds_count{listener="http",service="helloworld",endpoint="Helloworld.Call",code="200"}"#;
    assert_eq!(count(duration.to_string()), 3.0, "durations are histograms");
    assert!(text.contains("# TYPE micro_request_duration_seconds histogram"), "{text}");
    assert!(
        count(r#"micro_auth_logins_total{result="success"}"#.to_string()) >= 2.0,
        "admin and bob logged in"
    );
    assert!(count("process_resident_memory_bytes".to_string()) > 0.0);
    assert!(count("micro_runtime_restarts_total".to_string()) >= 1.0, "the crasher was restarted");
    assert_eq!(
        count(r#"micro_runtime_services{status="building"}"#.to_string()),
        0.0,
        "every status is named"
    );
    // Bytes each way, per endpoint: the store write carries its value in, the calls their answers out.
    let bytes = |name: &str, listener: &str, service: &str, endpoint: &str| {
        count(format!(r#"{name}{{listener="{listener}",service="{service}",endpoint="{endpoint}"}}"#))
    };
    assert!(bytes("micro_request_bytes_total", "grpc", "store", "Store.Write") > 0.0);
    assert!(bytes("micro_request_bytes_total", "grpc", "events", "Stream.Publish") > 0.0);
    // Three answers of `{"msg":"Hello a"}` and its like.
    assert!(bytes("micro_response_bytes_total", "http", "helloworld", "Helloworld.Call") >= 3.0 * 15.0);
    assert!(bytes("micro_response_bytes_total", "grpc", "helloworld", "Helloworld.Call") > 0.0);
    assert!(count("process_open_fds".to_string()) > 0.0);

    // The scrape in flight is counted as such; answered, under its own endpoint.
    assert_eq!(
        sample(
            &text,
            r#"micro_requests_in_flight{listener="http",service="debug",endpoint="Debug.Metrics"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(count(requests("http", "debug", "Debug.Metrics", "200")) >= 1.0, "the first admin scrape");

    promtool_check(&promtool, &text);

    // helloworld's own port: its four calls (three through the gateway, one proxied), by its
    // handler's endpoint; anyone the service's rules let call it (here: the public default rule
    // of `micro`) may read them.
    let calls = r#"micro_requests_total{listener="service",service="helloworld",endpoint="Helloworld.Call",code="OK"}"#;
    let mut own = String::new();
    common::eventually(Duration::from_secs(30), || {
        let (status, body) = scrape_service(&hello, &[]);
        own = body;
        status == 200 && sample(&own, calls) == Some(4.0)
    });
    assert_eq!(sample(&own, calls), Some(4.0), "{own}");
    let duration = r#"micro_request_duration_seconds_count{listener="service",service="helloworld",endpoint="Helloworld.Call",code="OK"}"#;
    assert_eq!(sample(&own, duration), Some(4.0), "{own}");
    assert!(sample(&own, "process_resident_memory_bytes").is_some_and(|rss| rss > 0.0), "{own}");
    assert!(
        !own.contains("listener=\"http\"") && !own.contains("micro_runtime"),
        "the service's text is its own process's:\n{own}"
    );
    let reply = common::http_send(&hello.address, "GET", "/metrics", &[], b"");
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(
        sample(&reply.body, r#"micro_requests_total{listener="service",service="helloworld",endpoint="Debug.Metrics",code="200"}"#)
            .is_some_and(|scrapes| scrapes >= 1.0),
        "scrapes count under their own endpoint:\n{}",
        reply.body
    );
    // Not gRPC and not /metrics: 404; gRPC still works on the same port (the proxied call above).
    let (status, body) = http_request(&hello.address, "GET", "/", &[], b"");
    assert_eq!(status, 404, "{body}");
    let (status, _) = http_request(&hello.address, "POST", "/metrics", &[JSON], b"{}");
    assert_eq!(status, 404);
    // DNS rebinding: a page at a hostile name that resolves to 127.0.0.1 reads nothing.
    let port = hello.address.rsplit_once(':').unwrap().1;
    let (status, body) =
        http_request(&hello.address, "GET", "/metrics", &[("Host", &format!("rebound.example:{port}"))], b"");
    assert_eq!(status, 421, "{body}");
    assert!(!body.contains("micro_requests_total"), "{body}");
    let (status, _) =
        http_request(&hello.address, "GET", "/metrics", &[("Host", &format!("localhost:{port}"))], b"");
    assert_eq!(status, 200);
    promtool_check(&promtool, &reply.body);
}

#[test]
fn a_rule_denying_debug_metrics_keeps_scrapers_out_of_a_services_port() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    // Before the service starts, so that its first read of the rules has it.
    server.ok(&[
        "auth",
        "create",
        "rule",
        "no-hello-metrics",
        "--resource",
        "service:helloworld:Debug.Metrics",
        "--access",
        "denied",
        "--priority",
        "10",
    ]);
    let hello = Service::start_helloworld(&server, &[]);
    let (status, body) = scrape_service(&hello, &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Debug.Metrics") && !body.contains("micro_requests_total"), "{body}");
    let bearer = format!("Bearer {}", server.ok(&["user", "token"]).trim());
    let (status, body) = scrape_service(&hello, &[("Authorization", &bearer)]);
    assert_eq!(status, 403, "the rule keeps accounts out too: {body}");
    // The rule names the metrics alone: the service's calls go on.
    let (status, answer) =
        http_request(&server.http, "POST", "/helloworld/Call", &[JSON], br#"{"name":"a"}"#);
    assert_eq!((status, json(&answer)["msg"].as_str()), (200, Some("Hello a")));
}

#[test]
fn metrics_off_answer_404_and_calls_go_on() {
    let home = tempfile::tempdir().unwrap();
    let off = [("MICRO_METRICS", "off")];
    let server = Server::start_with_env(home.path(), &[], &off);
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    let hello = Service::start_helloworld(&server, &off);
    let (status, answer) =
        http_request(&server.http, "POST", "/helloworld/Call", &[JSON], br#"{"name":"a"}"#);
    assert_eq!((status, json(&answer)["msg"].as_str()), (200, Some("Hello a")));
    let proxied = server.ok(&["call", "helloworld", "Helloworld.Call", r#"{"name":"X"}"#]);
    assert!(proxied.contains("Hello X"), "{proxied}");
    // Admin or not, nothing to read: the server's port and the service's say why.
    let bearer = format!("Bearer {}", server.ok(&["user", "token"]).trim());
    let (status, _, body) = scrape(&server, &[("Authorization", &bearer)]);
    assert_eq!((status, body.trim()), (404, "metrics are off (MICRO_METRICS=off)"));
    let (status, _, body) = scrape(&server, &[]);
    assert_eq!(status, 404, "{body}");
    let (status, body) = scrape_service(&hello, &[("Authorization", &bearer)]);
    assert_eq!((status, body.trim()), (404, "metrics are off (MICRO_METRICS=off)"));
}

/// A `prometheus` process, stopped (by its PID) on drop.
struct Prometheus {
    child: Child,
    address: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `binary` scraping the `/metrics` of `targets` every second, on an ephemeral port.
    fn start(binary: &PathBuf, targets: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: micro\n    \
                 metrics_path: /metrics\n    static_configs:\n      - targets: ['{}']\n",
                targets.join("', '")
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Self { child, address, _data: data }
    }

    /// The result vector of the instant query `query`; empty while Prometheus cannot answer.
    fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let encoded: String = query
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let Ok(stream) = std::net::TcpStream::connect(&self.address) else { return Vec::new() };
        drop(stream);
        let (status, body) =
            http_request(&self.address, "GET", &format!("/api/v1/query?query={encoded}"), &[], b"");
        if status != 200 {
            return Vec::new();
        }
        json(&body)["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

#[test]
fn a_real_prometheus_scrapes_the_server_and_answers_for_helloworld() {
    const TEST: &str = "tests/metrics.rs (prometheus)";
    let Some(prometheus) = tool("MICRO_TEST_PROMETHEUS", "prometheus", TEST) else { return };
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let hello = Service::start_helloworld(&server, &[]);
    traffic(&server);

    // An operator who scrapes without a token makes the metrics public, as any endpoint.
    let (status, _, _) = scrape(&server, &[]);
    assert_eq!(status, 401);
    server.ok(&["auth", "create", "rule", "scrape", "--resource", "service:debug:Debug.Metrics"]);
    let (status, _, text) = scrape(&server, &[]);
    assert_eq!(status, 200, "{text}");

    let prometheus = Prometheus::start(&prometheus, &[&server.http, &hello.address]);
    let query =
        r#"sum(micro_requests_total{listener="http",service="helloworld",endpoint="Helloworld.Call"})"#;
    let mut answer = Vec::new();
    let answered = common::poll(Duration::from_secs(60), Duration::from_millis(250), || {
        answer = prometheus.query(query);
        !answer.is_empty()
    });
    assert!(answered, "prometheus did not answer {query} within a minute");
    assert_eq!(answer[0]["value"][1], "3", "{answer:?}");
    // Each target is scraped on its own schedule: the second may come a moment later.
    let mut up = Vec::new();
    common::poll(Duration::from_secs(30), Duration::from_millis(250), || {
        up = prometheus.query(r#"sum(up{job="micro"})"#);
        up.first().is_some_and(|sample| sample["value"][1] == "2")
    });
    assert_eq!(up[0]["value"][1], "2", "both scrapes succeed: {up:?}");

    // The service's own series: its four calls, then its request rate while calls go on.
    let own =
        r#"sum(micro_requests_total{listener="service",service="helloworld",endpoint="Helloworld.Call"})"#;
    let answered = common::poll(Duration::from_secs(60), Duration::from_millis(250), || {
        answer = prometheus.query(own);
        answer.first().is_some_and(|sample| sample["value"][1] == "4")
    });
    assert!(answered, "prometheus did not answer {own} with 4 within a minute: {answer:?}");
    let rate = r#"sum(rate(micro_requests_total{listener="service",service="helloworld",endpoint="Helloworld.Call",code="OK"}[30s]))"#;
    let answered = common::poll(Duration::from_secs(60), Duration::from_millis(250), || {
        let (status, _) = http_request(&server.http, "POST", "/helloworld/Call", &[JSON], br#"{"name":"r"}"#);
        assert_eq!(status, 200);
        answer = prometheus.query(rate);
        answer
            .first()
            .and_then(|sample| sample["value"][1].as_str()?.parse::<f64>().ok())
            .is_some_and(|rate| rate > 0.0)
    });
    assert!(answered, "prometheus did not answer {rate} with a positive rate within a minute: {answer:?}");
}
