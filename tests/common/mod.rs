//! Drives the real `micro` binary like a user: a server on ephemeral ports with a temp
//! `MICRO_HOME`, and CLI invocations against it through a `micro env`.

#![allow(dead_code, reason = "each test file uses a different part of the harness")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Where services built by tests go (relative to the workspace root): `tests/new.rs` builds a
/// generated service there and servers started by tests use it as their build dir, so the
/// dependencies of user services are compiled once per checkout, not once per test.
pub const SERVICE_BUILD_DIR: &str = "target/service-build";

/// Where servers started by tests install the framework's source their builds depend on
/// (relative to the workspace root): one for all of them, as cargo compiles a path dependency
/// once per path, so the SDK's crates in [`SERVICE_BUILD_DIR`] stay compiled across test homes.
pub const SERVICE_SDK_DIR: &str = "target/service-sdk";

/// How long a server gets to print its listening addresses before a test fails.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The `micro` binary under test: cargo's build of it, or the one `MICRO_TEST_BIN` names (a
/// release build, for the dashboard's figures in BENCHMARKS.md); the examples are looked up
/// beside it ([`example_bin`]).
pub fn micro_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("MICRO_TEST_BIN")
            .ok()
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_micro").to_string())
    })
}

/// A `micro` command with `MICRO_HOME` set and no inherited micro settings. A server it starts
/// serves its web dashboard on an ephemeral port (`MICRO_WEB_ADDRESS`), not on :8082, so tests
/// running side by side do not compete for that port.
pub fn micro_cmd(home: &Path) -> Command {
    let mut cmd = without_micro_env(Command::new(micro_bin()));
    cmd.env("MICRO_HOME", home).env("MICRO_WEB_ADDRESS", "127.0.0.1:0").stdin(Stdio::null());
    cmd
}

/// `command` without the `MICRO_*` variables of the environment the tests run in.
fn without_micro_env(mut command: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MICRO_") {
            command.env_remove(key);
        }
    }
    command
}

/// Collects `child`'s stderr: the whole log so far, and each line as it arrives.
fn capture_stderr(child: &mut Child) -> (Arc<Mutex<String>>, mpsc::Receiver<String>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, lines) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            let _ = tx.send(line);
        }
    });
    (log, lines)
}

/// Runs `micro args...` in `home` and returns its output.
pub fn micro_in(home: &Path, args: &[&str]) -> Output {
    micro_cmd(home).args(args).output().expect("the micro binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running `micro server` process, killed on drop.
pub struct Server {
    child: Child,
    home: PathBuf,
    pub grpc: String,
    pub http: String,
    /// The web dashboard's address; `None` when started with `--web-address off`.
    pub web: Option<String>,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts a server in `home` on ephemeral ports, selects it as the CLI's env `e2e` and logs
    /// in there as the default admin.
    pub fn start(home: &Path) -> Self {
        let server = Self::start_with(home, &[]);
        server.ok(&["login", "--username", "admin", "--password", "micro"]);
        server
    }

    /// Starts a server with `extra` flags (which may replace the loopback ephemeral addresses),
    /// selected as env `e2e`, without logging in.
    pub fn start_with(home: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(home, extra, &[])
    }

    /// [`Self::start_with`] with the variables `env` set for the server process (`OTEL_*`).
    pub fn start_with_env(home: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = micro_cmd(home);
        command.envs(env.iter().copied());
        command.env("MICRO_BUILD_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join(SERVICE_BUILD_DIR));
        command.env("MICRO_SDK_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join(SERVICE_SDK_DIR));
        command.arg("server");
        if !extra.contains(&"--proxy-address") {
            command.args(["--proxy-address", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--api-address") {
            command.args(["--api-address", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("micro server starts");
        let (log, rx) = capture_stderr(&mut child);

        let (mut grpc, mut http, mut web) = (None, None, None);
        let web_off = extra.windows(2).any(|pair| pair[0] == "--web-address" && pair[1] == "off");
        let deadline = std::time::Instant::now() + READY_DEADLINE;
        while grpc.is_none() || http.is_none() || (web.is_none() && !web_off) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("gRPC listening") => grpc = addr_field(&line),
                Ok(line) if line.contains("HTTP listening") => http = addr_field(&line),
                Ok(line) if line.contains("web listening") => web = addr_field(&line),
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("micro server did not become ready; its log:\n{}", log.lock().unwrap());
                }
            }
        }
        let server = Self {
            child,
            home: home.to_path_buf(),
            grpc: grpc.expect("loop ends once set"),
            http: http.expect("loop ends once set"),
            web,
            log,
        };
        // Point the CLI at this server, replacing any env left by an earlier server in `home`.
        let _ = server.micro(&["env", "del", "e2e"]);
        server.ok(&["env", "add", "e2e", &server.grpc.clone()]);
        server.ok(&["env", "set", "e2e"]);
        server
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn micro(&self, args: &[&str]) -> Output {
        micro_in(&self.home, args)
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.micro(args);
        assert!(
            output.status.success(),
            "micro {args:?} failed ({}): stdout {:?} stderr {:?}",
            output.status,
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    /// Sends `signal` and waits for the process to end.
    pub fn signal(mut self, signal: i32) -> std::process::ExitStatus {
        // The child is not yet reaped, so its PID is still ours to signal.
        send_signal(self.child.id(), signal);
        let status = self.child.wait().expect("the server can be waited for");
        std::mem::forget(self);
        status
    }
}

fn send_signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("the kill command exists");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The `addr` field of a log line, text (`addr=…`) or JSON (`"addr":"…"`, `--log-format json`).
fn addr_field(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .or_else(|| line.split("\"addr\":\"").nth(1)?.split('"').next())
        .map(str::to_string)
}

impl Drop for Server {
    /// SIGTERM first, so the server stops the services its runtime started; SIGKILL when it has
    /// not exited within the grace period.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 GET against `addr`; returns (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the HTTP listener accepts");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// Runs `micro server` with `args` in `home`, which must fail to boot within 20 s with exactly
/// one `Error:` line on stderr; returns that line.
pub fn boot_error(home: &Path, args: &[&str]) -> String {
    let started = std::time::Instant::now();
    let output = micro_in(
        home,
        &[&["server", "--proxy-address", "127.0.0.1:0", "--api-address", "127.0.0.1:0"], args].concat(),
    );
    assert!(started.elapsed() < Duration::from_secs(20), "fails fast");
    assert!(!output.status.success(), "{args:?} must not boot");
    let stderr = stderr(&output);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("Error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

/// Runs `micro broker subscribe <topic> --count 3` in `home` and calls `publish(n)` for
/// n = 0, 1, ... until the subscriber has had three messages (the broker keeps nothing, so
/// messages published before it subscribed are gone); returns the numbers it printed from
/// messages `hello <n>`.
pub fn three_broker_messages(home: &Path, topic: &str, mut publish: impl FnMut(usize)) -> Vec<u32> {
    use std::io::Read;
    let mut subscriber = micro_cmd(home)
        .args(["broker", "subscribe", topic, "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("micro broker subscribe starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while subscriber.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the subscriber never got 3 messages");
        publish(sent);
        sent += 1;
    }
    assert!(subscriber.wait().unwrap().success());
    let mut output = String::new();
    subscriber.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    let numbers: Vec<u32> =
        output.lines().map(|line| line.strip_prefix("hello ").unwrap().parse().unwrap()).collect();
    assert_eq!(numbers.len(), 3, "{output}");
    numbers
}

/// The `helloworld` example's binary, built beside `micro` by `cargo test --workspace`.
pub fn helloworld_bin() -> PathBuf {
    example_bin("helloworld")
}

/// The binary of example `name`, built beside `micro` by scripts/test.
pub fn example_bin(name: &str) -> PathBuf {
    let path = Path::new(micro_bin()).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with scripts/test (it builds every binary first)",
        path.display()
    );
    path
}

/// A running user service process, killed on drop.
pub struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<String>>,
    pub address: String,
}

impl Service {
    /// Starts the helloworld example against `server` with `env`, as a developer would by hand
    /// (it registers with the CLI login saved in the server's `MICRO_HOME`), and waits until it
    /// has registered.
    pub fn start_helloworld(server: &Server, env: &[(&str, &str)]) -> Self {
        Self::start_example("helloworld", server, env)
    }

    /// Starts example `name` as [`Self::start_helloworld`] starts helloworld.
    pub fn start_example(name: &str, server: &Server, env: &[(&str, &str)]) -> Self {
        let service = Self::spawn_example(name, server, env);
        service.wait_for("Registered");
        service
    }

    /// Starts example `name` like [`Self::start_example`], returning once it listens (without
    /// waiting for it to register).
    pub fn spawn_example(name: &str, server: &Server, env: &[(&str, &str)]) -> Self {
        Self::spawn_program(Command::new(example_bin(name)), server, env)
    }

    /// Starts `program` (a command running a service built with the `micro` framework) like
    /// [`Self::start_example`], and waits until it has registered.
    pub fn start_program(program: Command, server: &Server, env: &[(&str, &str)]) -> Self {
        let service = Self::spawn_program(program, server, env);
        service.wait_for("Registered");
        service
    }

    /// Starts `program` against `server` with `env` (over the environment `micro run` would
    /// give it, without the test runner's `MICRO_*`), returning once it listens.
    fn spawn_program(program: Command, server: &Server, env: &[(&str, &str)]) -> Self {
        let mut command = without_micro_env(program);
        command
            // The lines waited for below are logged at `info`.
            .env("RUST_LOG", "info")
            .env("MICRO_HOME", &server.home)
            .env("MICRO_SERVER_ADDRESS", &server.grpc)
            .env("MICRO_SERVICE_ADDRESS", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the example starts");
        let (log, lines) = capture_stderr(&mut child);
        let mut service = Self { child, lines, log, address: String::new() };
        let listening = service.wait_for("Listening on");
        service.address = listening
            .split_whitespace()
            .skip_while(|word| *word != "on")
            .nth(1)
            .and_then(|address| address.split('"').next())
            .expect("the line names the address")
            .to_string();
        service
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no {needle:?} in the service log:\n{}", self.log.lock().unwrap()),
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` and waits for the process to end.
    pub fn signal(mut self, signal: i32) -> std::process::ExitStatus {
        send_signal(self.child.id(), signal);
        let status = self.child.wait().expect("the service can be waited for");
        std::mem::forget(self);
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 20 ms until it holds or `within` has passed; returns whether it held.
pub fn eventually(within: Duration, condition: impl FnMut() -> bool) -> bool {
    poll(within, Duration::from_millis(20), condition)
}

/// Polls `condition` every `interval` until it holds or `within` has passed; returns whether
/// it held.
pub fn poll(within: Duration, interval: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// A raw HTTP/1.1 request with `headers` and `body`; returns (status code, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let reply = http_send(addr, method, path, headers, body);
    (reply.status, reply.body)
}

/// An HTTP answer: status, head (status line and headers) and body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// Reads a whole HTTP/1.1 response as the server sent it (status 0 when it is none).
    pub fn parse(response: &[u8]) -> Self {
        let response = String::from_utf8_lossy(response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        HttpReply { status, head: head.to_string(), body }
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// A raw HTTP/1.1 request with `headers` (a `Host` among them replaces `addr` as the host) and
/// `body`.
pub fn http_send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the HTTP listener accepts");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading the whole body and close; that is fine.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    HttpReply::parse(&response)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

impl Server {
    /// Runs `micro args...` with `dir` as the working directory (for `micro run ./folder`).
    pub fn micro_at(&self, dir: &Path, args: &[&str]) -> Output {
        micro_cmd(&self.home).current_dir(dir).args(args).output().expect("the micro binary runs")
    }

    /// Runs a CLI command in `dir` that must succeed; returns its stdout.
    pub fn ok_at(&self, dir: &Path, args: &[&str]) -> String {
        let output = self.micro_at(dir, args);
        assert!(
            output.status.success(),
            "micro {args:?} in {} failed ({}): stdout {:?} stderr {:?}",
            dir.display(),
            output.status,
            stdout(&output),
            stderr(&output)
        );
        stdout(&output)
    }

    /// A `micro` command against this server, for processes a test drives itself (`logs -f`).
    pub fn command(&self) -> Command {
        micro_cmd(&self.home)
    }
}

/// Whether this run is CI's (`CI` set to anything but empty, `false` or `0`): there, a test
/// whose backing service is missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "false" | "0"))
}

/// The non-empty value of environment variable `name`, which test `test` needs (scripts/test
/// sets it). Without it the test is skipped with a line saying why, except in CI, where it
/// fails: a skip must never be all CI reports.
pub fn needed_env(name: &str, test: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            assert!(!in_ci(), "{test}: {name} is not set, and CI must run this test (scripts/test sets it)");
            eprintln!("skipped {test}: {name} is not set (scripts/test sets it)");
            None
        }
    }
}

/// A long-running `micro args...` process in `home` (a broker subscriber, an events consumer)
/// whose stdout lines are collected as they arrive; killed on drop.
pub struct Collector {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    pub fn start(home: &Path, args: &[&str]) -> Self {
        let mut child = micro_cmd(home)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the micro binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("the process can be polled").is_none()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A second CLI home pointed at `server` as env `e2e`, in `namespace`, logged in as `user`
/// with `secret` (an account `server`'s admin created there).
pub fn tenant_home(server: &Server, namespace: &str, user: &str, secret: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("a temp dir");
    for args in [
        &["env", "add", "e2e", &server.grpc][..],
        &["env", "set", "e2e"],
        &["user", "namespace", "set", namespace],
        &["login", "--username", user, "--password", secret],
    ] {
        let output = micro_in(home.path(), args);
        assert!(output.status.success(), "micro {args:?} failed: {}", stderr(&output));
    }
    home
}

/// A TLS client trusting only `ca`, offering `alpn`.
pub fn tls_client(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// The encoded `FileDescriptorSet` that `service`'s first registered version carries, as
/// `micro call registry Registry.GetService` shows it.
pub fn registered_descriptors(server: &Server, service: &str) -> Vec<u8> {
    use base64::Engine as _;
    let request = serde_json::json!({ "service": service }).to_string();
    let got: serde_json::Value =
        serde_json::from_str(&server.ok(&["call", "registry", "Registry.GetService", &request])).unwrap();
    let encoded = got["services"][0]["descriptors"].as_str().expect("the service registers descriptors");
    base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()
}

/// The value of the one line of the Prometheus text `text` that is exactly the series `series`
/// (name and labels as the exporter renders them).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `text` as JSON, or a panic showing it.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"))
}

/// Denies every caller `service` by rule `id` at priority 10 (a rule of higher priority may
/// grant it again).
pub fn deny_service(server: &Server, id: &str, service: &str) {
    let resource = format!("service:{service}:*");
    server.ok(&[
        "auth",
        "create",
        "rule",
        id,
        "--resource",
        &resource,
        "--access",
        "denied",
        "--priority",
        "10",
    ]);
}

/// Locks `service` to accounts: denied to everyone ([`deny_service`], rule `no-{service}`), and
/// above that granted to any account (rule `{service}-accounts`, priority 20).
pub fn accounts_only(server: &Server, service: &str) {
    deny_service(server, &format!("no-{service}"), service);
    let resource = format!("service:{service}:*");
    let id = format!("{service}-accounts");
    server.ok(&["auth", "create", "rule", &id, "--resource", &resource, "--scope", "*", "--priority", "20"]);
}

/// A `debug.Debug` implementation served by `micro::Service` the way a tenant's generated
/// server is: tonic's generated server, with the descriptors `micro::build` would have generated
/// for it (the core protos, `debug` among them). The tests' stand-in framework services
/// (tests/security.rs's spy, tests/traces.rs's tracer) implement `debug.Debug` because its
/// messages are compiled already.
pub struct DebugService<T>(micro_proto::debug::debug_server::DebugServer<T>);

impl<T: micro_proto::debug::debug_server::Debug> DebugService<T> {
    pub fn new(handler: T) -> Self {
        Self(micro_proto::debug::debug_server::DebugServer::new(handler))
    }
}

impl<T> Clone for DebugService<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> tonic::server::NamedService for DebugService<T> {
    const NAME: &'static str = micro_proto::debug::debug_server::SERVICE_NAME;
}

impl<T> micro::codegen::Described for DebugService<T> {
    const FILE_DESCRIPTOR_SET: &'static [u8] = micro_proto::FILE_DESCRIPTOR_SET;
}

/// What tonic servers take.
type TonicRequest = tonic::codegen::http::Request<tonic::body::Body>;

impl<T: micro_proto::debug::debug_server::Debug> tonic::codegen::Service<TonicRequest> for DebugService<T> {
    type Response =
        <micro_proto::debug::debug_server::DebugServer<T> as tonic::codegen::Service<TonicRequest>>::Response;
    type Error =
        <micro_proto::debug::debug_server::DebugServer<T> as tonic::codegen::Service<TonicRequest>>::Error;
    type Future =
        <micro_proto::debug::debug_server::DebugServer<T> as tonic::codegen::Service<TonicRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tonic::codegen::Service::<TonicRequest>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: TonicRequest) -> Self::Future {
        self.0.call(request)
    }
}
