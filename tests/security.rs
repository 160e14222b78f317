//! The trust model (docs/security.md), attacked the way it is attacked: each test replays an
//! attack against the built `micro` binary and shows it fail safely.

mod common;

use common::{HttpReply, Server, http_send};
use serde_json::Value;

/// What a hostile page does: log in as the default admin with a `text/plain` body (a "simple"
/// request the browser sends without asking) and read the token.
#[test]
fn a_web_page_can_neither_log_in_nor_read_answers() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &[]);
    let creds = br#"{"id":"admin","secret":"micro"}"#;
    let evil = "http://evil.example";

    let token = http_send(
        &server.http,
        "POST",
        "/auth/token",
        &[("Origin", evil), ("Content-Type", "text/plain")],
        creds,
    );
    assert_eq!(token.status, 415, "{}", token.body);
    assert!(token.body.contains("application/json"), "{}", token.body);
    assert!(!token.body.contains("access_token"), "{}", token.body);
    no_grant(&token);
    // A form (the other kind a page sends unasked) is no JSON either.
    let form = http_send(
        &server.http,
        "POST",
        "/auth/token",
        &[("Origin", evil), ("Content-Type", "application/x-www-form-urlencoded")],
        creds,
    );
    assert_eq!(form.status, 415, "{}", form.body);

    // The preflight a page needs for JSON or an Authorization header is refused a grant.
    let preflight = http_send(
        &server.http,
        "OPTIONS",
        "/runtime/create",
        &[
            ("Origin", evil),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization,content-type"),
        ],
        b"",
    );
    no_grant(&preflight);
    // Even where the page's request goes through, its answer carries no grant to read it by.
    let json = http_send(
        &server.http,
        "POST",
        "/auth/token",
        &[("Origin", evil), ("Content-Type", "application/json")],
        creds,
    );
    assert_eq!(json.status, 200, "{}", json.body);
    no_grant(&json);
    assert_eq!(json.header("x-content-type-options"), Some("nosniff"));

    // A cookie session without the CSRF header is no session: a cross-site form gets nothing.
    let admin_token = token_of(&json);
    let cookie = format!("micro-token={admin_token}; micro-csrf=abc");
    let forged = http_send(
        &server.http,
        "POST",
        "/store/list",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(forged.status, 401, "{}", forged.body);
    let with_csrf = http_send(
        &server.http,
        "POST",
        "/store/list",
        &[("Cookie", &cookie), ("X-CSRF-Token", "abc"), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(with_csrf.status, 200, "{}", with_csrf.body);

    // The terminal keeps working: curl -d sends JSON labelled as a form, with no Origin.
    let curl = http_send(
        &server.http,
        "POST",
        "/auth/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        creds,
    );
    assert_eq!(curl.status, 200, "{}", curl.body);
    token_of(&curl);
}

/// A configured origin is granted, exactly, with credentials; `*` is refused at boot.
#[test]
fn configured_origins_are_granted_exactly() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--cors-origin", "https://app.example"]);
    let ok = http_send(&server.http, "GET", "/", &[("Origin", "https://app.example")], b"");
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(
        ok.header("vary").is_some_and(|vary| vary.to_ascii_lowercase().contains("origin")),
        "{}",
        ok.head
    );
    no_grant(&http_send(&server.http, "GET", "/", &[("Origin", "https://app.example.evil")], b""));
    drop(server);

    let other = tempfile::tempdir().unwrap();
    let error = common::boot_error(other.path(), &["--cors-origin", "*"]);
    assert!(error.contains("cors_origins"), "{error}");
}

/// DNS rebinding: a hostile name resolving to 127.0.0.1 reaches the loopback listener with its
/// own name as `Host`; it gets 421. Loopback names and configured names are answered.
#[test]
fn a_rebinding_host_gets_421() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--allowed-host", "micro.lan"]);
    let rebound = http_send(
        &server.http,
        "POST",
        "/auth/token",
        &[("Host", "rebind.evil.example"), ("Content-Type", "application/json")],
        br#"{"id":"admin","secret":"micro"}"#,
    );
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    assert!(!rebound.body.contains("access_token"));
    for host in ["localhost:8080", "127.0.0.1", "micro.lan:8080"] {
        let answered = http_send(&server.http, "GET", "/", &[("Host", host)], b"");
        assert_eq!(answered.status, 200, "{host}: {}", answered.body);
    }
}

/// A tenant may run its own uploaded sources and remote repositories, but never a command,
/// a folder on the server's disk or a `file://` repository: those run as the server.
#[test]
fn a_tenant_cannot_run_commands_or_server_paths() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    let bearer = bearer(&server, "foo", "bob", "s3cret");
    let create = |options: &str| {
        let body = format!(r#"{{"resource":{{"service":{{"name":"pwn"}}}},"options":{options}}}"#);
        http_send(
            &server.http,
            "POST",
            "/runtime/create",
            &[("Authorization", &bearer), ("Micro-Namespace", "foo"), ("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let command = create(r#"{"command":["sh","-c","cat server/auth_key"]}"#);
    assert_eq!(command.status, 403, "{}", command.body);
    assert!(
        command.body.contains("only an admin of the micro namespace may run a command"),
        "{}",
        command.body
    );
    let home_path = home.path().display().to_string();
    for source in [home_path.as_str(), "file:///tmp/repo.git"] {
        let body =
            format!(r#"{{"resource":{{"service":{{"name":"pwn","source":"{source}"}}}},"options":{{}}}}"#);
        let local = http_send(
            &server.http,
            "POST",
            "/runtime/create",
            &[("Authorization", &bearer), ("Micro-Namespace", "foo"), ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(local.status, 403, "{source}: {}", local.body);
        assert!(local.body.contains("server's own disk"), "{}", local.body);
    }

    // The same over gRPC with the CLI, logged in as the tenant.
    server.ok(&["user", "namespace", "set", "foo"]);
    server.ok(&["login", "--username", "bob", "--password", "s3cret"]);
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("pwn")).unwrap();
    std::fs::write(work.path().join("pwn/run.sh"), "cat ../../server/auth_key\n").unwrap();
    let cli = server.micro_at(work.path(), &["run", "./pwn", "--command", "sh run.sh"]);
    assert_eq!(cli.status.code(), Some(2), "{} {}", common::stdout(&cli), common::stderr(&cli));
    assert!(common::stderr(&cli).to_lowercase().contains("only an admin"), "{}", common::stderr(&cli));
    let status = server.ok(&["status"]);
    assert!(!status.contains("pwn") && !status.contains("running"), "nothing was created: {status}");
}

/// `Bearer <token>` of account `id` of `namespace`, logged in through the gateway.
fn bearer(server: &Server, namespace: &str, id: &str, secret: &str) -> String {
    let body = serde_json::json!({ "id": id, "secret": secret }).to_string();
    let login = http_send(
        &server.http,
        "POST",
        "/auth/token",
        &[("Micro-Namespace", namespace), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    format!("Bearer {}", token_of(&login))
}

/// A gRPC channel to the server's :8081.
fn grpc_channel(runtime: &tokio::runtime::Runtime, server: &Server) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc)).unwrap();
    runtime.block_on(endpoint.connect()).unwrap()
}

fn no_grant(reply: &HttpReply) {
    assert_eq!(reply.header("access-control-allow-origin"), None, "{}", reply.head);
    assert_eq!(reply.header("access-control-allow-credentials"), None, "{}", reply.head);
}

fn token_of(reply: &HttpReply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: Value = serde_json::from_str(&reply.body).unwrap();
    json["token"]["access_token"].as_str().unwrap_or_else(|| panic!("a token: {json}")).to_string()
}

/// A query key of 100k segments (`a.a.a…`) would recurse once per segment: it gets a 400 naming
/// the limit, and the server stays up. So does a body nested past the JSON depth limit.
#[test]
fn deep_inputs_get_400_and_the_server_stays_up() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &[]);
    // In a form body (the gateway reads 4 MiB bodies): 100k segments.
    let form = format!("{}=1", "a.".repeat(100_000));
    let reply = http_send(
        &server.http,
        "POST",
        "/registry/getService",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("MAX_KEY_SEGMENTS"), "{}", reply.body);
    // In the URL as many as fit (hyper answers 414 past 64 KiB of URL).
    let deep = format!("/registry/getService?{}=1", "a.".repeat(30_000));
    let reply = http_send(&server.http, "GET", &deep, &[], b"");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("MAX_KEY_SEGMENTS"), "{}", reply.body);
    let too_long = format!("/registry/getService?{}=1", "a.".repeat(100_000));
    assert_eq!(http_send(&server.http, "GET", &too_long, &[], b"").status, 414);
    let nested = format!(r#"{{"service":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
    let reply = http_send(
        &server.http,
        "POST",
        "/registry/getService",
        &[("Content-Type", "application/json")],
        nested.as_bytes(),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("MAX_JSON_DEPTH"), "{}", reply.body);
    let alive = http_send(&server.http, "GET", "/", &[], b"");
    assert_eq!(alive.status, 200, "the server still answers");
}

/// State is its owner's only: `MICRO_HOME` and `server/` 0700, every file under `server/` (the
/// signing key, the store and event files) and `logs/` 0600, `sources/` and `build/` 0700, also
/// when an older version left them all readable by everyone.
#[test]
fn state_files_are_private_and_dumps_hide_passwords() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // Every directory and file under `root`, `root` first.
    let tree = |root: &std::path::Path| {
        let (mut dirs, mut files, mut pending) = (Vec::new(), Vec::new(), vec![root.to_path_buf()]);
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() { pending.push(path) } else { files.push(path) }
            }
            dirs.push(dir);
        }
        (dirs, files)
    };
    // A first boot makes the state (the key, the store, the event log) and the CLI's files…
    let server = Server::start(home.path());
    server.ok(&["store", "write", "k", "v"]);
    drop(server);
    // …which an older version, or a wide umask, left readable by everyone.
    let (dirs, files) = tree(home.path());
    for made in ["auth_key", "config_secret_key", "store.redb", "events.redb", "tokens.json"] {
        assert!(
            files.iter().any(|file| file.file_name().unwrap() == made),
            "the first boot made {made}: {files:?}"
        );
    }
    for dir in &dirs {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = Server::start(home.path());
    server.ok(&["store", "write", "k", "v"]);
    assert_eq!(mode(home.path()), 0o700);
    let (dirs, files) = tree(&home.path().join("server"));
    for name in ["auth_key", "config_secret_key", "store.redb", "events.redb"] {
        assert!(files.iter().any(|f| f.file_name().unwrap() == name), "{name} in {files:?}");
    }
    let logs = home.path().join("logs");
    let (log_dirs, log_files) = if logs.exists() { tree(&logs) } else { Default::default() };
    for dir in dirs.iter().chain(&log_dirs) {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for file in files.iter().chain(&log_files) {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    for dir in ["sources", "build"] {
        let dir = home.path().join(dir);
        if dir.exists() {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
    }
    for cli_file in ["config.json", "tokens.json"] {
        assert_eq!(
            mode(&home.path().join(cli_file)),
            0o600,
            "the CLI's {cli_file} (git credentials, logins)"
        );
    }
    drop(server);

    let output = common::micro_in(
        home.path(),
        &[
            "server",
            "--dump-config",
            "--store",
            "postgres://micro:hunter2@db.example/micro",
            "--broker",
            "nats://tok3n@n1:4222",
        ],
    );
    let dump = common::stdout(&output);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert!(dump.contains("postgres://micro:***@db.example/micro"), "{dump}");
    assert!(dump.contains("nats://***@n1:4222"), "{dump}");
    assert!(!dump.contains("hunter2") && !dump.contains("tok3n"), "{dump}");
}

/// A service that records the `authorization` each call brings: `debug.Debug` from the core
/// protos, served by the test itself on loopback.
#[derive(Clone, Default)]
struct Spy {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

impl Spy {
    /// Serves a new spy on loopback; returns it and its address.
    fn start(runtime: &tokio::runtime::Runtime) -> (Self, String) {
        let spy = Spy::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(micro_proto::debug::debug_server::DebugServer::new(spy.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (spy, address)
    }

    fn record<T>(&self, request: &tonic::Request<T>) {
        let token = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        self.seen.lock().unwrap().push(token);
    }
}

#[tonic::async_trait]
impl micro_proto::debug::debug_server::Debug for Spy {
    async fn log(
        &self,
        request: tonic::Request<micro_proto::debug::LogRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::LogResponse>, tonic::Status> {
        self.record(&request);
        Ok(tonic::Response::new(Default::default()))
    }
    async fn health(
        &self,
        request: tonic::Request<micro_proto::debug::HealthRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::HealthResponse>, tonic::Status> {
        self.record(&request);
        Ok(tonic::Response::new(micro_proto::debug::HealthResponse { status: "ok".into() }))
    }
    async fn stats(
        &self,
        request: tonic::Request<micro_proto::debug::StatsRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::StatsResponse>, tonic::Status> {
        self.record(&request);
        Ok(tonic::Response::new(Default::default()))
    }
    async fn trace(
        &self,
        request: tonic::Request<micro_proto::debug::TraceRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::TraceResponse>, tonic::Status> {
        self.record(&request);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// An admin calling a tenant's service hands it no token it could replay: through the gRPC
/// proxy and through the HTTP gateway the service sees a token issued for its own namespace
/// only, which :8081 refuses anywhere else; an anonymous call brings none.
#[test]
fn a_user_service_never_sees_the_callers_token() {
    use micro_proto::debug::debug_client::DebugClient;
    use micro_proto::registry::registry_client::RegistryClient;
    use micro_proto::registry::{Node, Options, Service};

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let admin = bearer(&server, "micro", "admin", "micro");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (spy, spy_address) = Spy::start(&runtime);

    let channel = grpc_channel(&runtime, &server);
    let registration = Service {
        name: "spy".into(),
        version: "latest".into(),
        nodes: vec![Node { id: "spy-1".into(), address: spy_address, ..Node::default() }],
        descriptors: micro_proto::FILE_DESCRIPTOR_SET.to_vec(),
        options: Some(Options { ttl: 300, domain: "foo".into() }),
        ..Service::default()
    };
    runtime
        .block_on(
            RegistryClient::new(channel.clone()).register(with(registration, &[("authorization", &admin)])),
        )
        .expect("the admin registers a service in foo");

    // Through the proxy, as an admin, as anonymous.
    let health = || micro_proto::debug::HealthRequest {};
    let admin_call = [("authorization", admin.as_str()), ("micro-namespace", "foo")];
    runtime.block_on(DebugClient::new(channel.clone()).health(with(health(), &admin_call))).unwrap();
    runtime
        .block_on(DebugClient::new(channel.clone()).health(with(health(), &[("micro-namespace", "foo")])))
        .unwrap();
    // Through the gateway.
    let gateway = http_send(
        &server.http,
        "POST",
        "/spy/Debug/Health",
        &[("Authorization", &admin), ("Micro-Namespace", "foo"), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(gateway.status, 200, "{}", gateway.body);

    let seen = spy.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1], None, "an anonymous call brings no token");
    for token in [&seen[0], &seen[2]] {
        let token = token.as_deref().expect("a forwarded token");
        assert_ne!(token, admin, "the caller's own token never reaches the service");
        // Valid in foo, where the service lives…
        let claims = jwt_claims(token.trim_start_matches("Bearer "));
        assert_eq!(
            (claims["sub"].as_str(), claims["iss"].as_str()),
            (Some("admin"), Some("foo")),
            "{claims}"
        );
        // …and nowhere else: replayed against :8081 in micro it is refused.
        let replay = http_send(
            &server.http,
            "POST",
            "/runtime/read",
            &[("Authorization", token), ("Micro-Namespace", "micro"), ("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(replay.status, 403, "{}", replay.body);
        let replay = runtime.block_on(RegistryClient::new(channel.clone()).list_services(with(
            Default::default(),
            &[("authorization", token), ("micro-namespace", "micro")],
        )));
        assert_eq!(replay.unwrap_err().code(), tonic::Code::PermissionDenied);
    }
}

/// `message` as a gRPC request carrying `pairs` as metadata.
fn with<T>(message: T, pairs: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in pairs {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

/// The claims of a JWT, read without verifying it.
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let mut bytes = Vec::new();
    let mut bits = 0u32;
    let mut count = 0;
    for c in payload.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A tarball whose one file declares 8 GiB in a PAX header (the ustar size says 0) in an upload
/// of about 1 KiB: refused with a clear error, and nothing near that size is written.
#[test]
fn an_upload_declaring_8_gib_is_refused_and_writes_nothing() {
    use micro_proto::runtime::source_client::SourceClient;
    use micro_proto::runtime::{Service as RuntimeService, UploadRequest};

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    let bearer = bearer(&server, "foo", "bob", "s3cret");

    // The PAX record `size=8589934592` for the next entry, then that entry with size 0 in its
    // own header, then 64 KiB of its "data" and no end: the server must judge by the PAX size.
    let mut archive = Vec::new();
    let record = "19 size=8589934592\n";
    let mut pax = tar::Header::new_ustar();
    pax.set_entry_type(tar::EntryType::XHeader);
    pax.set_path("PaxHeaders/Cargo.toml").unwrap();
    pax.set_size(record.len() as u64);
    pax.set_mode(0o644);
    pax.set_cksum();
    archive.extend_from_slice(pax.as_bytes());
    let mut padded = record.as_bytes().to_vec();
    padded.resize(512, 0);
    archive.extend_from_slice(&padded);
    let mut file = tar::Header::new_ustar();
    file.set_path("Cargo.toml").unwrap();
    file.set_size(0);
    file.set_mode(0o644);
    file.set_cksum();
    archive.extend_from_slice(file.as_bytes());
    archive.extend(std::iter::repeat_n(0u8, 64 * 1024));
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gzip, &archive).unwrap();
    let upload = gzip.finish().unwrap();
    assert!(upload.len() < 4096, "a small upload: {} bytes", upload.len());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let channel = grpc_channel(&runtime, &server);
    let outcome = runtime.block_on(async {
        let service = RuntimeService { name: "bomb".into(), version: "latest".into(), ..Default::default() };
        let messages = vec![
            UploadRequest { service: Some(service), data: Vec::new() },
            UploadRequest { service: None, data: upload },
        ];
        let request =
            with(tokio_stream::iter(messages), &[("authorization", &bearer), ("micro-namespace", "foo")]);
        SourceClient::new(channel).upload(request).await
    });
    let refused = outcome.expect_err("the upload is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("unpacks to more than 1024 MiB"),
        "the error names the cap: {refused:?}"
    );
    assert!(!refused.message().contains(&home.path().display().to_string()), "no server paths: {refused:?}");

    // Nothing of it stays on disk.
    let mut written = 0u64;
    let mut dirs = vec![home.path().join("sources")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() { dirs.push(entry.path()) } else { written += meta.len() }
        }
    }
    assert!(written < 1024 * 1024, "{written} bytes stayed under sources/");
}

/// The environment variable that makes [`framework_spy_process`] serve instead of returning.
const SPY_PROCESS: &str = "SECURITY_FRAMEWORK_SPY";

/// A service written with the `micro` framework, as tenants write theirs: `debug.Debug`, whose
/// `Health` answers with the account the framework judged the caller to be (`id@issuer`, or
/// `anonymous`) and records it, and whose `Log` returns every record, oldest first.
#[derive(Clone, Default)]
struct FrameworkSpy {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl micro_proto::debug::debug_server::Debug for FrameworkSpy {
    async fn log(
        &self,
        _: tonic::Request<micro_proto::debug::LogRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::LogResponse>, tonic::Status> {
        let seen = self.seen.lock().unwrap().clone();
        let records = seen
            .into_iter()
            .map(|message| micro_proto::debug::Record { message, ..Default::default() })
            .collect();
        Ok(tonic::Response::new(micro_proto::debug::LogResponse { records }))
    }
    async fn health(
        &self,
        request: tonic::Request<micro_proto::debug::HealthRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::HealthResponse>, tonic::Status> {
        let status = micro::auth::account(&request)
            .map_or_else(|| "anonymous".to_string(), |account| format!("{}@{}", account.id, account.issuer));
        self.seen.lock().unwrap().push(status.clone());
        Ok(tonic::Response::new(micro_proto::debug::HealthResponse { status }))
    }
    async fn stats(
        &self,
        _: tonic::Request<micro_proto::debug::StatsRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::StatsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
    async fn trace(
        &self,
        _: tonic::Request<micro_proto::debug::TraceRequest>,
    ) -> Result<tonic::Response<micro_proto::debug::TraceResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Not a test of its own: the process [`start_framework_spy`] runs, serving [`FrameworkSpy`]
/// with `micro::Service` until killed. The framework keeps its connection to the platform
/// (server, namespace, credentials) process-wide, read once from the `MICRO_*` environment,
/// so a service of foo and one of bar cannot share the test's process: each gets a process of
/// its own, this test binary run again for this one function.
#[test]
#[ignore = "run by the isolation tests as a framework service's process (SECURITY_FRAMEWORK_SPY set)"]
fn framework_spy_process() {
    if std::env::var_os(SPY_PROCESS).is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = common::DebugService::new(FrameworkSpy::default());
    runtime.block_on(micro::Service::new("spy").handle(server).run()).expect("the spy serves");
}

/// [`FrameworkSpy`] registered as `name` in `namespace` as service account `id` (with `secret`),
/// in a process of its own (see [`framework_spy_process`]); killed on drop.
fn start_framework_spy(
    server: &Server,
    name: &str,
    namespace: &str,
    id: &str,
    secret: &str,
) -> common::Service {
    let mut program = std::process::Command::new(std::env::current_exe().expect("the test binary's path"));
    program.args(["framework_spy_process", "--exact", "--ignored", "--nocapture"]).env(SPY_PROCESS, "1");
    common::Service::start_program(
        program,
        server,
        &[
            ("MICRO_SERVICE_NAME", name),
            ("MICRO_NAMESPACE", namespace),
            ("MICRO_AUTH_ID", id),
            ("MICRO_AUTH_SECRET", secret),
        ],
    )
}

/// Creates service account `id` in `namespace` as the runtime creates one for a service it
/// runs: type `service`, scope `service` (the CLI makes user accounts only).
fn create_service_account(
    runtime: &tokio::runtime::Runtime,
    channel: &tonic::transport::Channel,
    admin: &str,
    namespace: &str,
    id: &str,
    secret: &str,
) {
    use micro_proto::auth::auth_client::AuthClient;
    use micro_proto::auth::{GenerateRequest, Options};
    let request = GenerateRequest {
        id: id.into(),
        secret: secret.into(),
        scopes: vec!["service".into()],
        r#type: "service".into(),
        options: Some(Options { namespace: namespace.into() }),
        ..Default::default()
    };
    let request = with(request, &[("authorization", admin), ("micro-namespace", namespace)]);
    let created = runtime.block_on(AuthClient::new(channel.clone()).generate(request)).unwrap().into_inner();
    let account = created.account.expect("the created account");
    assert_eq!((account.r#type.as_str(), account.issuer.as_str()), ("service", namespace), "{account:?}");
}

/// A gRPC channel to `address` (a service's node).
fn channel_to(runtime: &tokio::runtime::Runtime, address: &str) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap();
    runtime.block_on(endpoint.connect()).unwrap()
}

/// A call's outcome as the matrix names it: `allowed` (by whom, for a user service),
/// `unauthenticated` (gRPC Unauthenticated, HTTP 401) or `forbidden` (PermissionDenied, 403).
fn grpc_outcome<T>(result: Result<tonic::Response<T>, tonic::Status>, seen: impl Fn(T) -> String) -> String {
    match result {
        Ok(reply) => seen(reply.into_inner()),
        Err(status) if status.code() == tonic::Code::Unauthenticated => "unauthenticated".into(),
        Err(status) if status.code() == tonic::Code::PermissionDenied => "forbidden".into(),
        Err(status) => format!("unexpected {:?}: {}", status.code(), status.message()),
    }
}

fn http_outcome(reply: HttpReply, seen: impl Fn(Value) -> String) -> String {
    match reply.status {
        200 => seen(serde_json::from_str(&reply.body).unwrap_or_default()),
        401 => "unauthenticated".into(),
        403 => "forbidden".into(),
        other => format!("unexpected {other}: {}", reply.body),
    }
}

/// What a user service's handler reported seeing, in a service of `namespace`: `allowed as
/// <id>` for an account of that namespace or `micro` (the only ones a handler may see), else
/// the whole `id@issuer` flagged.
fn seen_in(namespace: &str, status: &str) -> String {
    match status.rsplit_once('@') {
        None => format!("allowed as {status}"),
        Some((id, issuer)) if issuer == namespace || issuer == "micro" => format!("allowed as {id}"),
        Some(_) => format!("allowed as {status}, an account of another namespace"),
    }
}

/// One caller of the matrix.
struct Caller {
    /// `id@namespace`, or `anonymous`.
    label: &'static str,
    /// The account's id and issuing namespace; `None` for anonymous.
    account: Option<(&'static str, &'static str)>,
    /// `Bearer <access token>`.
    bearer: Option<String>,
}

impl Caller {
    /// What a call to a user service in `namespace` must come to: anonymous callers and
    /// accounts of that namespace or `micro` are let in (by the default rule), and the handler
    /// sees them as themselves; accounts of another namespace are refused.
    fn at_user_service(&self, namespace: &str) -> String {
        match self.account {
            None => "allowed as anonymous".to_string(),
            Some((id, issuer)) if issuer == "micro" || issuer == namespace => format!("allowed as {id}"),
            Some(_) => "forbidden".to_string(),
        }
    }

    /// What a call to the store in `namespace` must come to: it needs an account, of that
    /// namespace or `micro`.
    fn at_store(&self, namespace: &str) -> String {
        match self.account {
            None => "unauthenticated",
            Some((_, issuer)) if issuer == "micro" || issuer == namespace => "allowed",
            Some(_) => "forbidden",
        }
        .to_string()
    }
}

/// The isolation matrix: callers {anonymous, the `micro` admin, a user of foo, a user of bar,
/// foo's service account} × paths {a core service (store) over gRPC, a user service through the
/// gRPC proxy, the core service through the HTTP gateway, the user service through the
/// gateway, the user service's own node called straight, bypassing the server} × namespaces
/// {foo, bar}. The user services are real `micro` framework services, one registered in each
/// namespace, reporting the account the framework judged each call to be.
///
/// The contract (docs/security.md): an account acts only in the namespace that issued it, unless
/// it is of `micro`; a token of another namespace is refused (PermissionDenied / 403) on every
/// path, by the framework at the node too; anonymous callers may call the user service (public
/// by the default rule) but not the store (Unauthenticated / 401). A handler only ever sees
/// accounts of its own namespace or `micro`, and exactly the calls allowed reach it.
#[test]
fn every_path_gives_the_same_answer_for_each_account_and_namespace() {
    use micro_proto::debug::debug_client::DebugClient;
    use micro_proto::store::store_client::StoreClient;

    const NAMESPACES: [&str; 2] = ["foo", "bar"];
    const SERVICE_SECRET: &str = "svc-s3cret";
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "a1", "alice"]);
    server.ok(&["auth", "create", "account", "--namespace", "bar", "--secret", "b1", "bob"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let channel = grpc_channel(&runtime, &server);
    let admin = bearer(&server, "micro", "admin", "micro");
    // Each namespace's service runs as a service account of its own namespace (foo's is also
    // one of the callers), as `micro run` would start it.
    let spies: Vec<(&str, common::Service)> = NAMESPACES
        .into_iter()
        .map(|namespace| {
            let id = format!("spy-{namespace}");
            create_service_account(&runtime, &channel, &admin, namespace, &id, SERVICE_SECRET);
            (namespace, start_framework_spy(&server, "spy", namespace, &id, SERVICE_SECRET))
        })
        .collect();
    let node = |namespace: &str| {
        let (_, spy) = spies.iter().find(|(ns, _)| *ns == namespace).expect("a spy per namespace");
        channel_to(&runtime, &spy.address)
    };

    let callers = [
        Caller { label: "anonymous", account: None, bearer: None },
        Caller { label: "admin@micro", account: Some(("admin", "micro")), bearer: Some(admin.clone()) },
        Caller {
            label: "alice@foo",
            account: Some(("alice", "foo")),
            bearer: Some(bearer(&server, "foo", "alice", "a1")),
        },
        Caller {
            label: "bob@bar",
            account: Some(("bob", "bar")),
            bearer: Some(bearer(&server, "bar", "bob", "b1")),
        },
        Caller {
            label: "spy-foo@foo (service account)",
            account: Some(("spy-foo", "foo")),
            bearer: Some(bearer(&server, "foo", "spy-foo", SERVICE_SECRET)),
        },
    ];

    let mut failures = Vec::new();
    let mut table = Vec::new();
    for caller in &callers {
        for namespace in NAMESPACES {
            let mut metadata = vec![("micro-namespace", namespace)];
            let mut headers = vec![("Micro-Namespace", namespace), ("Content-Type", "application/json")];
            if let Some(token) = &caller.bearer {
                metadata.push(("authorization", token.as_str()));
                headers.push(("Authorization", token.as_str()));
            }
            let health = |reply: micro_proto::debug::HealthResponse| seen_in(namespace, &reply.status);
            let health_json = |reply: Value| {
                seen_in(namespace, reply["status"].as_str().unwrap_or("no status in the answer"))
            };
            let (expected_core, expected_user) =
                (caller.at_store(namespace), caller.at_user_service(namespace));
            let outcomes = [
                (
                    "core service over gRPC",
                    expected_core.as_str(),
                    grpc_outcome(
                        runtime.block_on(
                            StoreClient::new(channel.clone())
                                .databases(with(micro_proto::store::DatabasesRequest {}, &metadata)),
                        ),
                        |_| "allowed".to_string(),
                    ),
                ),
                (
                    "user service through the gRPC proxy",
                    expected_user.as_str(),
                    grpc_outcome(
                        runtime.block_on(
                            DebugClient::new(channel.clone())
                                .health(with(micro_proto::debug::HealthRequest {}, &metadata)),
                        ),
                        health,
                    ),
                ),
                (
                    "core service through the gateway",
                    expected_core.as_str(),
                    http_outcome(
                        http_send(&server.http, "POST", "/store/databases", &headers, b"{}"),
                        |_| "allowed".to_string(),
                    ),
                ),
                (
                    "user service through the gateway",
                    expected_user.as_str(),
                    http_outcome(
                        http_send(&server.http, "POST", "/spy/Debug/Health", &headers, b"{}"),
                        health_json,
                    ),
                ),
                (
                    "user service's node, straight",
                    expected_user.as_str(),
                    grpc_outcome(
                        runtime.block_on(
                            DebugClient::new(node(namespace))
                                .health(with(micro_proto::debug::HealthRequest {}, &metadata)),
                        ),
                        health,
                    ),
                ),
            ];

            for (path, expected, got) in outcomes {
                let mark = if got == expected { "ok" } else { "FAIL" };
                table.push(format!("{mark:4} {:32} in {namespace}, {path:36}: {got}", caller.label));
                if got != expected {
                    failures.push(format!(
                        "{} in {namespace}, {path}: expected {expected}, got {got}",
                        caller.label
                    ));
                }
            }
        }
    }
    println!("{}", table.join("\n"));

    // Each handler saw exactly the allowed calls (three paths per allowed cell), each by an
    // account of its own namespace or `micro`: anonymous, the admin and the callers of its own
    // namespace.
    for (namespace, spy) in &spies {
        let log = runtime
            .block_on(
                DebugClient::new(node(namespace)).log(with(micro_proto::debug::LogRequest::default(), &[])),
            )
            .map(|reply| {
                reply.into_inner().records.into_iter().map(|record| record.message).collect::<Vec<_>>()
            });
        let seen: Vec<String> = match log {
            Ok(seen) => seen.iter().map(|status| seen_in(namespace, status)).collect(),
            Err(status) => {
                failures.push(format!("the spy of {namespace} did not tell what it saw: {status:?}"));
                continue;
            }
        };
        let expected: Vec<String> = callers
            .iter()
            .map(|caller| caller.at_user_service(namespace))
            .filter(|outcome| outcome.starts_with("allowed"))
            .flat_map(|seen| [seen.clone(), seen.clone(), seen])
            .collect();
        if seen != expected {
            failures.push(format!(
                "the handler in {namespace} saw {seen:?}, not exactly the allowed calls {expected:?}; its log:\n{}",
                spy.log()
            ));
        }
    }
    assert!(failures.is_empty(), "{} cells break the contract:\n{}", failures.len(), failures.join("\n"));
}

/// Rules bind to the name a service is registered under, not to the proto package a call's
/// path names. `greeter` in foo serves the `debug` package; a call routed to it by descriptor
/// (`/debug.Debug/Health` through the proxy) is judged as `service:greeter:Debug.Health`, so a
/// rule denying `service:greeter:*` refuses it, and a rule granting `service:debug:*` (of
/// higher priority) does not open it.
#[test]
fn rules_bind_to_the_registered_service_name() {
    use micro_proto::debug::debug_client::DebugClient;

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "a1", "alice"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let channel = grpc_channel(&runtime, &server);
    let admin = bearer(&server, "micro", "admin", "micro");
    create_service_account(&runtime, &channel, &admin, "foo", "greeter-svc", "g1");
    let _greeter = start_framework_spy(&server, "greeter", "foo", "greeter-svc", "g1");
    let alice = bearer(&server, "foo", "alice", "a1");

    let proxied = |token: Option<&str>| {
        let mut metadata = vec![("micro-namespace", "foo")];
        metadata.extend(token.map(|token| ("authorization", token)));
        let request = with(micro_proto::debug::HealthRequest {}, &metadata);
        grpc_outcome(runtime.block_on(DebugClient::new(channel.clone()).health(request)), |reply| {
            seen_in("foo", &reply.status)
        })
    };
    let through_gateway = |token: Option<&str>| {
        let mut headers = vec![("Micro-Namespace", "foo"), ("Content-Type", "application/json")];
        headers.extend(token.map(|token| ("Authorization", token)));
        http_outcome(http_send(&server.http, "POST", "/greeter/Debug/Health", &headers, b"{}"), |reply| {
            seen_in("foo", reply["status"].as_str().unwrap_or("no status in the answer"))
        })
    };
    // Routed by descriptor: no service is registered as `debug`. This first call also has the
    // framework read foo's rules while they are the default, which it then keeps for RULES_TTL
    // (30 s): a refusal right after the rules change comes from the server's gate.
    assert_eq!(proxied(None), "allowed as anonymous");
    assert_eq!(proxied(Some(&alice)), "allowed as alice");

    server.ok(&[
        "auth",
        "create",
        "rule",
        "--namespace",
        "foo",
        "--resource",
        "service:greeter:*",
        "--access",
        "denied",
        "--priority",
        "10",
        "no-greeter",
    ]);
    server.ok(&[
        "auth",
        "create",
        "rule",
        "--namespace",
        "foo",
        "--resource",
        "service:debug:*",
        "--access",
        "granted",
        "--priority",
        "20",
        "debug-package",
    ]);
    let outcomes = [
        ("anonymous through the proxy", proxied(None)),
        ("alice@foo through the proxy", proxied(Some(&alice))),
        ("anonymous through the gateway", through_gateway(None)),
        ("alice@foo through the gateway", through_gateway(Some(&alice))),
    ];
    let expected = ["unauthenticated", "forbidden", "unauthenticated", "forbidden"];
    let failures: Vec<String> = outcomes
        .iter()
        .zip(expected)
        .filter(|((_, got), expected)| got != expected)
        .map(|((cell, got), expected)| format!("{cell}: expected {expected}, got {got}"))
        .collect();
    assert!(
        failures.is_empty(),
        "service:greeter:* denied, service:debug:* granted:\n{}",
        failures.join("\n")
    );
}
