//! `micro server` and the CLI's basic behaviour end to end.

mod common;

use common::{Server, micro_in, stderr, stdout};

#[test]
fn server_answers_http_health_reflection_and_services_then_drains_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    let (status, body) = common::http_get(&server.http, "/");
    assert!(status.contains("200"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

    let services = server.ok(&["services"]);
    for core in ["config", "registry", "store"] {
        assert!(services.lines().any(|line| line == core), "{core} missing from {services:?}");
    }

    let log = server.log();
    assert!(log.contains("store.redb"), "the log names where data lives: {log}");
    assert!(log.contains(&home.path().display().to_string()), "{log}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest { service: "store.Store".into() })
            .await
            .unwrap();
        assert_eq!(
            reply.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies =
            reflection.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in ["store.Store", "config.Config", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from reflection: {names:?}");
        }
    });

    let status = server.signal(15);
    assert!(status.success(), "SIGTERM drains and exits cleanly: {status}");
}

#[test]
fn dump_config_layers_flags_over_env_and_file() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("micro.toml"), "api_address = \"127.0.0.1:9999\"\n").unwrap();
    let output = common::micro_cmd(home.path())
        .env("MICRO_PROXY_ADDRESS", "127.0.0.1:7777")
        .args(["server", "--dump-config", "--store", "memory"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let config: toml::Value = toml::from_str(&stdout(&output)).unwrap();
    assert_eq!(config["api_address"].as_str(), Some("127.0.0.1:9999"));
    assert_eq!(config["proxy_address"].as_str(), Some("127.0.0.1:7777"));
    assert_eq!(config["store"]["backend"].as_str(), Some("memory"));

    let bad = micro_in(home.path(), &["server", "--proxy-address", "nonsense"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("HOST:PORT"), "{}", stderr(&bad));
}

#[test]
fn version_help_and_unknown_commands() {
    let home = tempfile::tempdir().unwrap();
    let version = micro_in(home.path(), &["--version"]);
    assert_eq!(stdout(&version).trim(), format!("micro version {}", env!("CARGO_PKG_VERSION")));

    let help = micro_in(home.path(), &["help"]);
    assert!(help.status.success());
    for command in ["server", "store", "config", "env", "services"] {
        assert!(stdout(&help).contains(command), "help lists {command}");
    }
    let store_help = micro_in(home.path(), &["store", "--help"]);
    assert!(stdout(&store_help).contains("micro store"), "{}", stdout(&store_help));

    let none = micro_in(home.path(), &[]);
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(stderr(&none).trim(), "No command provided to micro. Please refer to 'micro --help'");

    let unknown = micro_in(home.path(), &["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        stderr(&unknown).trim(),
        "Unrecognized micro command: frobnicate. Please refer to 'micro --help'"
    );

    let bad_sub = micro_in(home.path(), &["config", "asdasd"]);
    assert_eq!(bad_sub.status.code(), Some(1));
    assert!(
        stderr(&bad_sub).starts_with("Unrecognized subcommand for micro config: asdasd"),
        "{}",
        stderr(&bad_sub)
    );
}

#[test]
fn env_commands() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| micro_in(home.path(), args);
    let listing = stdout(&run(&["env"]));
    assert!(listing.lines().any(|l| l.starts_with("* local") && l.contains("127.0.0.1:8081")), "{listing}");
    assert_eq!(stdout(&run(&["env", "get"])).trim(), "local");

    assert!(run(&["env", "add", "staging", "10.1.2.3:8081"]).status.success());
    assert!(run(&["env", "set", "staging"]).status.success());
    assert_eq!(stdout(&run(&["env", "get"])).trim(), "staging");
    let override_listing = stdout(&run(&["-e", "local", "env"]));
    assert!(override_listing.lines().any(|l| l.starts_with("* local")), "{override_listing}");
    assert_eq!(stdout(&run(&["env", "get"])).trim(), "staging", "-e does not change the selection");

    let missing = run(&["env", "set", "nope"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(stderr(&missing).contains("Environment 'nope' does not exist"), "{}", stderr(&missing));
    let bad_env = run(&["-e", "nope", "services"]);
    assert!(stderr(&bad_env).contains("Env \"nope\" not found"), "{}", stderr(&bad_env));

    assert!(run(&["env", "del", "staging"]).status.success());
    assert!(!stdout(&run(&["env"])).contains("staging"));
}

/// How long the test's slow service takes to answer: long enough for SIGTERM to land mid-call.
const SLOW: std::time::Duration = std::time::Duration::from_secs(2);
/// The gRPC name the slow service is reached at through the server's proxy (registered as
/// service `slow`).
const SLOW_PATH: &str = "/slow.Slow/Check";

/// `grpc.health.v1.Health`, whose `Check` answers after [`SLOW`]; it says when a call arrived.
struct SlowHealth(tokio::sync::mpsc::UnboundedSender<()>);

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for SlowHealth {
    async fn check(
        &self,
        _: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        let _ = self.0.send(());
        tokio::time::sleep(SLOW).await;
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        Ok(tonic::Response::new(tonic_health::pb::HealthCheckResponse { status: serving }))
    }

    type WatchStream = tokio_stream::Empty<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<tonic_health::pb::HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not needed here"))
    }
}

/// A gRPC service (client channel or server) whose requests have their path replaced by `to`:
/// the health messages travel under the name `slow.Slow`, which the micro server does not host
/// itself and so forwards to the registered node.
#[derive(Clone)]
struct Renamed<S> {
    inner: S,
    to: &'static str,
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Renamed<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<B>) -> Self::Future {
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(tonic::codegen::http::uri::PathAndQuery::from_static(self.to));
        *request.uri_mut() = tonic::codegen::http::Uri::from_parts(parts).expect("only the path changed");
        self.inner.call(request)
    }
}

impl<S> tonic::server::NamedService for Renamed<S> {
    const NAME: &'static str = "slow.Slow";
}

/// SIGTERM drains: a call in flight through the proxy when the signal arrives gets its answer,
/// and the server then exits cleanly.
#[test]
fn sigterm_lets_a_call_in_flight_finish() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let node = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let node_address = node.local_addr().unwrap().to_string();
    let health = tonic_health::pb::health_server::HealthServer::new(SlowHealth(arrived));
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(Renamed { inner: health, to: "/grpc.health.v1.Health/Check" })
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(node)),
    );
    let registration = serde_json::json!({
        "name": "slow",
        "nodes": [{"id": "slow-1", "address": node_address}],
        "options": {"ttl": 300},
    });
    server.ok(&["call", "registry", "Registry.Register", &registration.to_string()]);

    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.path().join("tokens.json")).unwrap()).unwrap();
    let bearer = format!("Bearer {}", tokens["e2e/micro"]["access_token"].as_str().unwrap());
    let grpc = server.grpc.clone();
    let call = runtime.spawn(async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client =
            tonic_health::pb::health_client::HealthClient::new(Renamed { inner: channel, to: SLOW_PATH });
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
        request.metadata_mut().insert("authorization", bearer.parse().unwrap());
        client.check(request).await
    });
    // The call has reached the node through the proxy: it is in flight.
    let reached = runtime
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(30), arrivals.recv()).await });
    assert!(matches!(reached, Ok(Some(()))), "the call never reached the node: {}", server.log());

    let sent = std::time::Instant::now();
    let stopping = std::thread::spawn(move || server.signal(15));
    let reply = runtime.block_on(call).unwrap();
    let status = stopping.join().unwrap();
    let reply =
        reply.unwrap_or_else(|status| panic!("the call in flight was cut off by SIGTERM: {status:?}"));
    assert_eq!(
        reply.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        "the node's answer came back through the draining proxy"
    );
    assert!(status.success(), "drained and exited cleanly: {status}");
    assert!(sent.elapsed() < std::time::Duration::from_secs(10) + SLOW, "within the grace period");
}
