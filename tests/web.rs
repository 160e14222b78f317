//! The web dashboard (docs/web.md) in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which scripts/test installs) against the real
//! binary. It logs in, finds helloworld, calls `Helloworld.Call` and `Helloworld.Stream`
//! through the generated forms, fills nested, repeated and map fields, runs the "copy as"
//! commands, logs in as a tenant, and lets a page of another origin try to drive it.
//!
//! Without Chromium the test is skipped with a loud line, except in CI (`CI` set), where a
//! missing browser is a failure. `MICRO_WEB_SCREENSHOTS=1` writes the screenshots it takes into
//! docs/web/ (otherwise into a temp dir), and it prints the first-load bytes and the time from
//! navigation to a usable form.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, Service, eventually, stderr, stdout};
use serde_json::{Value, json};

/// How long the browser gets for anything the test waits for.
const WAIT: Duration = Duration::from_secs(20);
/// The key of a WebDriver element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP/1.1 exchange with chromedriver: (status, body). The body is read by its
/// `Content-Length`: chromedriver says `Connection: close` but keeps the socket open.
fn wire(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(address).expect("chromedriver accepts");
    // A command that hangs fails the test rather than holding it for ever.
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The path `variable` names (when it is a file), else the first of `names` found in `PATH` or
/// `/usr/bin`.
fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).collect();
    names.iter().flat_map(|name| dirs.iter().map(move |dir| dir.join(name))).find(|path| path.is_file())
}

/// Chromium and its WebDriver, or `None` (after saying so, loudly) when this run may skip.
fn chromium() -> Option<(PathBuf, PathBuf)> {
    let browser = find_program("MICRO_TEST_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_program("MICRO_TEST_CHROMEDRIVER", &["chromedriver"]);
    match (browser, driver) {
        (Some(browser), Some(driver)) => Some((browser, driver)),
        (browser, driver) => {
            let missing = match (browser, driver) {
                (None, None) => "chromium and chromedriver",
                (None, _) => "chromium",
                _ => "chromedriver",
            };
            assert!(
                !common::in_ci(),
                "tests/web.rs: {missing} not found, and CI must run the browser test \
                 (scripts/test installs Debian's chromium and chromium-driver)"
            );
            eprintln!(
                "\n*** SKIPPED tests/web.rs: {missing} not found (apt-get install chromium chromium-driver, \
                 or run scripts/test, which installs them) ***\n"
            );
            None
        }
    }
}

/// A chromedriver process with one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    address: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let address = format!("127.0.0.1:{port}");
        let ready = eventually(WAIT, || {
            std::net::TcpStream::connect(&address).is_ok() && {
                let (_, body) = wire(&address, "GET", "/status", b"");
                serde_json::from_str::<Value>(&body).is_ok_and(|status| status["value"]["ready"] == true)
            }
        });
        assert!(ready, "chromedriver on {address} never became ready");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1200,860",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let mut browser = Browser { driver, address, session: String::new(), _profile: profile };
        let created = browser.post("/session", capabilities);
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    /// One WebDriver command; its `value`, or a panic naming the error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = if path.starts_with("/session/") || path == "/session" {
            path.to_string()
        } else {
            format!("/session/{}{path}", self.session)
        };
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let (status, reply) = wire(&self.address, method, &path, body.as_bytes());
        let value: Value =
            serde_json::from_str(&reply).unwrap_or_else(|err| panic!("{method} {path}: {err}: {reply}"));
        assert!(status == 200, "{method} {path} ({status}): {}", value["value"]);
        value["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.command("POST", path, Some(body))
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.command("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    fn all(&self, css: &str) -> Vec<String> {
        let found = self.post("/elements", json!({"using": "css selector", "value": css}));
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|element| element[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    /// The first element `css` selects, waiting for it to appear.
    fn wait(&self, css: &str) -> String {
        let mut found = None;
        let appeared = eventually(WAIT, || {
            found = self.all(css).into_iter().next();
            found.is_some()
        });
        assert!(
            appeared,
            "no {css} on {} within {WAIT:?}; the page shows:\n{}",
            self.url(),
            self.body_text()
        );
        found.unwrap()
    }

    /// Waits until the text of `css`'s first element contains `needle`; returns the text.
    fn wait_text(&self, css: &str, needle: &str) -> String {
        let mut text = String::new();
        let shown = eventually(WAIT, || {
            text = self.all(css).first().map(|element| self.text(element)).unwrap_or_default();
            text.contains(needle)
        });
        assert!(shown, "{css} never showed {needle:?}; it shows {text:?}; the page:\n{}", self.body_text());
        text
    }

    fn text(&self, element: &str) -> String {
        self.command("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn body_text(&self) -> String {
        self.all("body").first().map(|body| self.text(body)).unwrap_or_default()
    }

    fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}));
    }

    fn type_into(&self, element: &str, text: &str) {
        self.post(&format!("/element/{element}/clear"), json!({}));
        self.post(&format!("/element/{element}/value"), json!({ "text": text }));
    }

    fn exec(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Runs an async script (it gets a `done` callback as its last argument).
    fn exec_async(&self, script: &str) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": [] }))
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Empties the HTTP cache (Chrome DevTools, through chromedriver), for a cold first load.
    fn clear_cache(&self) {
        self.post("/goog/cdp/execute", json!({"cmd": "Network.clearBrowserCache", "params": {}}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = wire(&self.address, "DELETE", &format!("/session/{}", self.session), b"");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A one-page site on another port: a page that tries to drive the dashboard (and the gateway,
/// where the dashboard's cookies go too) and writes what it got into `#out`.
struct Attacker {
    address: String,
}

impl Attacker {
    fn start(dashboard: &str, gateway: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let page = format!(
            r#"<!doctype html><html><body><pre id="out">running</pre><script>
const D = "http://{dashboard}", G = "http://{gateway}";
const write = JSON.stringify({{record: {{key: "pwned", value: "eA=="}}}});
async function attempt(name, url, init) {{
  try {{
    const response = await fetch(url, Object.assign({{credentials: "include"}}, init));
    if (response.type === "opaque") return [name, "opaque"];
    return [name, "read " + response.status + " " + (await response.text()).slice(0, 200)];
  }} catch (err) {{
    return [name, "blocked"];
  }}
}}
(async () => {{
  const results = [];
  results.push(await attempt("read the services page", D + "/services", {{}}));
  results.push(await attempt("call with a simple request", D + "/api/call/store/Store/Write",
    {{method: "POST", headers: {{"Content-Type": "text/plain"}}, body: write}}));
  results.push(await attempt("call blind (no-cors)", D + "/api/call/store/Store/Write",
    {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: write}}));
  results.push(await attempt("call as JSON with a guessed CSRF token", D + "/api/call/store/Store/Write",
    {{method: "POST", headers: {{"Content-Type": "application/json", "X-CSRF-Token": "guess"}}, body: write}}));
  results.push(await attempt("log out blind (no-cors)", D + "/api/logout", {{method: "POST", mode: "no-cors"}}));
  results.push(await attempt("log in blind (no-cors)", D + "/api/login",
    {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
      body: JSON.stringify({{username: "admin", password: "micro"}})}}));
  results.push(await attempt("the gateway with the dashboard's cookie (no-cors)", G + "/store/Store/Write",
    {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: write}}));
  results.push(await attempt("the gateway, reading", G + "/store/Store/Databases", {{method: "POST"}}));
  document.getElementById("out").textContent = JSON.stringify(results);
  document.body.dataset.done = "1";
}})();
</script></body></html>"#
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // The request head, up to its blank line.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        });
        Attacker { address }
    }
}

/// Where the screenshots go: docs/web/ with `MICRO_WEB_SCREENSHOTS=1`, else a temp dir.
fn screenshot_dir(temp: &Path) -> PathBuf {
    if std::env::var("MICRO_WEB_SCREENSHOTS").is_ok_and(|value| value == "1") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    } else {
        temp.to_path_buf()
    }
}

/// Runs `command` in bash with the test server's `MICRO_HOME` and `micro` on `PATH`; its stdout.
fn shell(server_home: &Path, command: &str) -> String {
    let bin_dir = Path::new(common::micro_bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .arg("-c")
        .arg(command)
        .env("MICRO_HOME", server_home)
        .env("PATH", path)
        .env_remove("MICRO_ENV")
        .output()
        .unwrap();
    assert!(output.status.success(), "{command}: {}", stderr(&output));
    stdout(&output)
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some((chromium, chromedriver)) = chromium() else { return };
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let dashboard = server.web.clone().expect("the dashboard listens");
    let base = format!("http://{dashboard}");
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    let _hello = Service::start_helloworld(&server, &[]);
    let _tenant = Service::start_helloworld(
        &server,
        &[
            ("MICRO_NAMESPACE", "foo"),
            ("MICRO_SERVICE_NAME", "greeter"),
            ("MICRO_AUTH_ID", "bob"),
            ("MICRO_AUTH_SECRET", "s3cret"),
        ],
    );
    let shots = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(shots.path());
    let browser = Browser::start(&chromium, &chromedriver);

    // The first load, with an empty cache: the login page and its script and stylesheet.
    browser.goto(&format!("{base}/"));
    browser.wait("form#login");
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    let first_load = browser.exec(
        "const nav = performance.getEntriesByType('navigation')[0];
         const resources = performance.getEntriesByType('resource');
         return {bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
                 decoded: nav.decodedBodySize + resources.reduce((sum, r) => sum + r.decodedBodySize, 0),
                 files: 1 + resources.length};",
    );

    // A wrong password: the sentence of `micro login`.
    browser.type_into(&browser.wait("#username"), "admin");
    browser.type_into(&browser.wait("#password"), "wrong");
    browser.click(&browser.wait("form#login button[type=submit]"));
    browser.wait_text(
        "#login-error",
        "Invalid credentials: check the username and password for namespace micro",
    );
    browser.type_into(&browser.wait("#password"), "micro");
    browser.screenshot(&shots.join("login.png"));
    browser.click(&browser.wait("form#login button[type=submit]"));

    // Services: helloworld and the core services, not the tenant's.
    browser.wait(r#"#services tr[data-service="helloworld"]"#);
    for core in ["auth", "config", "events", "registry", "runtime", "store", "broker"] {
        assert!(!browser.all(&format!(r#"tr[data-service="{core}"]"#)).is_empty(), "{core} listed");
    }
    assert!(browser.all(r#"tr[data-service="greeter"]"#).is_empty(), "foo's greeter is not in micro");
    browser.screenshot(&shots.join("services.png"));

    // The service page: its node and version.
    browser.click(&browser.wait(r#"tr[data-service="helloworld"] a.service"#));
    browser.wait_text("h1", "helloworld");
    browser.wait_text("table.nodes", &_hello.address);

    // Helloworld.Call through the generated form.
    browser.click(&browser.wait(r#"a[href="/services/helloworld/Helloworld.Call"]"#));
    browser.wait(r#"body[data-ready="form"]"#);
    browser.type_into(&browser.wait(r#"input[name="name"]"#), "Dashboard");
    browser.click(&browser.wait("#send"));
    browser.wait_text("#status", "200");
    let answer = browser.wait_text("#response", "Hello Dashboard");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer, json!({"msg": "Hello Dashboard"}));
    let latency = browser.text(&browser.wait("#latency"));
    assert!(latency.ends_with(" ms"), "{latency}");

    // Copy as: the curl and micro commands do the same from a terminal.
    browser.click(&browser.wait(r#"button[data-copy="curl"]"#));
    let curl = browser.wait_text("#command", "curl");
    assert!(curl.contains(&format!("'http://{}/helloworld/Helloworld/Call'", server.http)), "{curl}");
    let reply: Value = serde_json::from_str(&shell(home.path(), &curl)).unwrap();
    assert_eq!(reply, json!({"msg": "Hello Dashboard"}), "{curl}");
    browser.click(&browser.wait(r#"button[data-copy="micro"]"#));
    let micro = browser.wait_text("#command", "micro helloworld");
    assert_eq!(micro, "micro helloworld call --name=Dashboard");
    assert!(shell(home.path(), &micro).contains("Hello Dashboard"), "{micro}");
    browser.click(&browser.wait(r#"button[data-copy="buf"]"#));
    let buf = browser.wait_text("#command", "buf curl");
    assert!(
        buf.contains("--schema 'helloworld.proto'")
            && buf.ends_with(&format!("'http://{}/helloworld.Helloworld/Call'", server.grpc)),
        "{buf}"
    );
    browser.screenshot(&shots.join("endpoint.png"));

    // Helloworld.Stream: every message, as it comes.
    browser.goto(&format!("{base}/services/helloworld/Helloworld.Stream"));
    browser.wait(r#"body[data-ready="form"]"#);
    browser.type_into(&browser.wait(r#"input[name="count"]"#), "3");
    browser.click(&browser.wait("#send"));
    browser.wait_text("#count", "3 messages");
    let messages: Vec<String> = browser.all("#messages li").iter().map(|li| browser.text(li)).collect();
    assert_eq!(messages, [r#"{}"#, r#"{"count":"1"}"#, r#"{"count":"2"}"#]);
    // The raw JSON editor holds what the form holds, and is what is sent while open.
    browser.click(&browser.wait("#tab-json"));
    let editor = browser.wait("#request-json");
    let shown = browser.exec("return document.getElementById('request-json').value;");
    assert_eq!(serde_json::from_str::<Value>(shown.as_str().unwrap()).unwrap(), json!({"count": "3"}));
    browser.type_into(&editor, r#"{"count": "2"}"#);
    browser.click(&browser.wait("#send"));
    browser.wait_text("#count", "2 messages");

    // Nested, repeated and map fields: create an account through auth's Generate form.
    browser.goto(&format!("{base}/services/auth/Auth.Generate"));
    browser.wait(r#"body[data-ready="form"]"#);
    browser.type_into(&browser.wait(r#"input[name="id"]"#), "carol");
    browser.type_into(&browser.wait(r#"input[name="secret"]"#), "c4rol-secret");
    browser.click(&browser.wait(r#"fieldset[data-path="scopes"] button.add"#));
    browser.type_into(&browser.wait(r#"input[name="scopes[0]"]"#), "reader");
    browser.click(&browser.wait(r#"fieldset[data-path="metadata"] button.add"#));
    browser.type_into(&browser.wait(r#"input[name="metadata[0].key"]"#), "team");
    browser.type_into(&browser.wait(r#"input[name="metadata[0].value"]"#), "web");
    browser.click(&browser.wait(r#"details[data-path="options"] > summary"#));
    browser.type_into(&browser.wait(r#"input[name="options.namespace"]"#), "micro");
    browser.click(&browser.wait("#send"));
    browser.wait_text("#status", "200");
    browser.wait_text("#response", "carol");
    browser.screenshot(&shots.join("form.png"));
    let accounts = server.ok(&["auth", "list", "accounts"]);
    let carol =
        accounts.lines().find(|line| line.starts_with("carol")).unwrap_or_else(|| panic!("{accounts}"));
    assert!(carol.contains("reader") && carol.contains("team=web"), "{carol}");

    // Navigation to a usable form, with an empty cache: the endpoint page, its script, its
    // stylesheet and the request's description.
    browser.clear_cache();
    browser.goto(&format!("{base}/services/helloworld/Helloworld.Call"));
    browser.wait(r#"body[data-ready="form"]"#);
    let endpoint_load = browser.exec(
        "const nav = performance.getEntriesByType('navigation')[0];
         const resources = performance.getEntriesByType('resource');
         return {bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
                 files: 1 + resources.length,
                 ready: performance.getEntriesByName('micro:form-ready')[0].startTime};",
    );
    println!(
        "web: first load (login page, empty cache): {} bytes transferred ({} decoded) in {} files",
        first_load["bytes"], first_load["decoded"], first_load["files"]
    );
    println!(
        "web: endpoint page, empty cache: {} bytes transferred in {} files; navigation to a usable form: {:.1} ms",
        endpoint_load["bytes"],
        endpoint_load["files"],
        endpoint_load["ready"].as_f64().unwrap_or_default()
    );

    // A page of another origin (another port of the same host, so the same site: the cookies
    // go along) gets no answer it can read and changes nothing.
    let attacker = Attacker::start(&dashboard, &server.http);
    browser.goto(&format!("http://{}/", attacker.address));
    browser.wait(r#"body[data-done="1"]"#);
    let results: Vec<(String, String)> =
        serde_json::from_str(&browser.text(&browser.wait("#out"))).expect("the attacker's results");
    assert_eq!(results.len(), 8, "{results:?}");
    for (attempt, outcome) in &results {
        assert!(outcome == "blocked" || outcome == "opaque", "{attempt}: {outcome}");
    }
    let read = server.micro(&["store", "read", "pwned"]);
    assert!(!read.status.success(), "the attacker wrote nothing: {}", stdout(&read));
    browser.goto(&format!("{base}/services"));
    browser.wait(r#"#services tr[data-service="helloworld"]"#);

    // A tenant logs in to foo and sees foo only.
    browser.click(&browser.wait("#logout"));
    browser.wait("form#login");
    browser.type_into(&browser.wait("#username"), "bob");
    browser.type_into(&browser.wait("#password"), "s3cret");
    browser.type_into(&browser.wait("#namespace"), "foo");
    browser.click(&browser.wait("form#login button[type=submit]"));
    browser.wait(r#"#services tr[data-service="greeter"]"#);
    assert!(browser.all(r#"tr[data-service="helloworld"]"#).is_empty(), "micro's helloworld is not in foo");
    browser.goto(&format!("{base}/services?namespace=micro"));
    browser.wait_text("main", "the token was issued by namespace foo and cannot act in micro");
    assert!(browser.all(r#"tr[data-service="helloworld"]"#).is_empty());
    // Its own service answers through the form, in foo.
    browser.goto(&format!("{base}/services/greeter/Helloworld.Call"));
    browser.wait(r#"body[data-ready="form"]"#);
    browser.type_into(&browser.wait(r#"input[name="name"]"#), "Bob");
    browser.click(&browser.wait("#send"));
    browser.wait_text("#response", "Hello Bob");
    // The API refuses foo's session in micro, as the gateway does.
    let refused = browser.exec_async(
        "const done = arguments[arguments.length - 1];
         const csrf = document.querySelector('meta[name=csrf-token]').content;
         fetch('/api/call/helloworld/Helloworld/Call', {method: 'POST', body: '{}',
           headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf, 'Micro-Namespace': 'micro'}})
           .then(async r => done([r.status, await r.text()]));",
    );
    assert_eq!(refused[0], 403, "{refused}");
    assert!(refused[1].as_str().unwrap().contains("cannot act in micro"), "{refused}");

    // `micro web` prints the dashboard's URL (and opens nothing without a terminal).
    let printed =
        common::micro_cmd(home.path()).env("MICRO_WEB_ADDRESS", &dashboard).args(["web"]).output().unwrap();
    assert_eq!(stdout(&printed).trim(), base, "{}", stderr(&printed));
    let default =
        common::micro_cmd(home.path()).env_remove("MICRO_WEB_ADDRESS").args(["web"]).output().unwrap();
    let grpc_host = server.grpc.rsplit_once(':').unwrap().0;
    assert_eq!(stdout(&default).trim(), format!("http://{grpc_host}:8082"), "{}", stderr(&default));

    // Switched off, there is no dashboard.
    let quiet = tempfile::tempdir().unwrap();
    let off = Server::start_with(quiet.path(), &["--web-address", "off"]);
    assert!(off.web.is_none() && !off.log().contains("web listening"), "{}", off.log());
}

/// A server and a browser logged in to its dashboard as the default admin, on the services
/// page: where the tests of the Runtime, Data and Accounts pages start. The fields drop in
/// order: the browser, the server, then the folders.
struct LoggedIn {
    browser: Browser,
    server: Server,
    /// Where screenshots go ([`screenshot_dir`]).
    shots: PathBuf,
    _shots_temp: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl LoggedIn {
    /// `None` when this run skips the browser tests ([`chromium`]).
    fn start() -> Option<Self> {
        let (chromium, chromedriver) = chromium()?;
        let home = tempfile::tempdir().unwrap();
        let server = Server::start(home.path());
        let base = format!("http://{}", server.web.clone().expect("the dashboard listens"));
        let shots_temp = tempfile::tempdir().unwrap();
        let shots = screenshot_dir(shots_temp.path());
        let browser = Browser::start(&chromium, &chromedriver);
        browser.goto(&format!("{base}/login"));
        browser.type_into(&browser.wait("#username"), "admin");
        browser.type_into(&browser.wait("#password"), "micro");
        browser.type_into(&browser.wait("#namespace"), "micro");
        browser.click(&browser.wait("form#login button[type=submit]"));
        browser.wait("#services");
        Some(Self { browser, server, shots, _shots_temp: shots_temp, _home: home })
    }
}

/// The texts of every element `css` selects, read in one script (a list that grows as it is
/// read would make element references stale).
fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let script = format!(
        "return Array.from(document.querySelectorAll({})).map(node => node.textContent);",
        serde_json::to_string(css).unwrap()
    );
    let found = browser.exec(&script);
    found.as_array().unwrap().iter().map(|text| text.as_str().unwrap_or_default().to_string()).collect()
}

/// Waits until the text of an element `css` selects contains `needle`, reading the texts in one
/// script: for what the page renders again while it is read.
fn wait_texts(browser: &Browser, css: &str, needle: &str) {
    let shown = eventually(WAIT, || texts(browser, css).iter().any(|text| text.contains(needle)));
    assert!(shown, "{css} never showed {needle:?}; the page:\n{}", browser.body_text());
}

/// Waits (up to `within`) until `css` selects something.
fn wait_long(browser: &Browser, css: &str, within: Duration, what: impl Fn() -> String) {
    let appeared = eventually(within, || !browser.all(css).is_empty());
    assert!(appeared, "no {css} within {within:?}; the page shows:\n{}\n{}", browser.body_text(), what());
}

/// The Runtime, Store, Config, Events and Jobs pages in a real browser: a service run from a
/// git URL through the page, its logs followed until a new line arrives, then killed from the
/// page; a store key written in the browser and read with `micro store read`; a config secret
/// set in the browser and shown masked until revealed; events published and read; a consumer
/// group's dead letters listed, one released (and consumed by the group), one dropped; the
/// broker live; a job created with `micro jobs create` listed, run now, its run in its history,
/// and deleted; a job created with the page's form.
#[test]
fn the_runtime_store_and_config_pages_in_a_real_browser() {
    let Some(dashboard) = LoggedIn::start() else { return };
    let LoggedIn { browser, server, shots, _home: home, .. } = &dashboard;

    // A service in a bare git repository: a script that counts, one line a second.
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("ticker");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("run.sh"), "i=0\nwhile true; do i=$((i+1)); echo \"tick $i\"; sleep 1; done\n")
        .unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let output = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", stderr(&output));
    };
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "ticker"]);
    git(work.path(), &["clone", "-q", "--bare", "ticker", "ticker.git"]);
    let url = format!("file://{}", work.path().join("ticker.git").display());

    // Runtime: run the repository from the page, as `micro run URL --command "sh run.sh"`.
    browser.click(&browser.wait(r#".top nav a[href="/runtime"]"#));
    browser.wait(r#"body[data-ready="runtime"]"#);
    browser.wait_text("#status tbody", "No services");
    browser.type_into(&browser.wait("#run-source"), &url);
    browser.type_into(&browser.wait("#run-command"), "sh run.sh");
    browser.click(&browser.wait("#run-form button[type=submit]"));
    browser.wait_text("#run-done", "ticker latest accepted");
    // The table refreshes itself until the service runs.
    let running = r#"#status tr[data-service="ticker"][data-status="running"]"#;
    wait_long(browser, running, Duration::from_secs(60), || server.ok(&["status"]));
    let row = texts(browser, r#"#status tr[data-service="ticker"] td"#);
    assert_eq!(row[..4], ["ticker", "latest", url.as_str(), "running"], "{row:?}");
    assert!(row[7].starts_with("owner=admin, group=micro"), "{row:?}");
    let status = server.ok(&["status"]);
    assert!(status.lines().any(|line| line.starts_with("ticker") && line.contains(" running ")), "{status}");
    // Running it again gets the sentence of `micro run`.
    browser.type_into(&browser.wait("#run-source"), &url);
    browser.click(&browser.wait("#run-form button[type=submit]"));
    browser.wait_text(
        "#run-error",
        &format!("service ticker latest already exists: rebuild it with `micro update {url}`"),
    );

    // Its logs, followed: a line that was not there when following began arrives.
    browser.click(&browser.wait(r#"#status tr[data-service="ticker"] button[data-action="logs"]"#));
    browser.wait_text("#logs-state", "following");
    browser.wait_text("#logs", "tick ");
    let ticks = |lines: &[String]| -> Vec<u64> {
        lines.iter().filter_map(|line| line.strip_prefix("tick ")?.parse().ok()).collect()
    };
    let first = ticks(&texts(browser, "#logs li")).into_iter().max().expect("a tick");
    let newer = eventually(WAIT, || ticks(&texts(browser, "#logs li")).into_iter().max() > Some(first));
    assert!(newer, "no line after tick {first} arrived: {:?}", texts(browser, "#logs li"));
    browser.screenshot(&shots.join("runtime.png"));

    // Kill from the page, after saying yes.
    browser.click(&browser.wait(r#"#status tr[data-service="ticker"] button[data-action="kill"]"#));
    browser.wait_text("#confirm", "Kill ticker latest?");
    browser.click(&browser.wait("#confirm-no"));
    assert!(browser.all("#confirm").is_empty(), "the dialog closes");
    assert!(server.ok(&["status"]).contains("ticker"), "cancelled: still there");
    browser.click(&browser.wait(r#"#status tr[data-service="ticker"] button[data-action="kill"]"#));
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#status tbody", "No services");
    assert!(!server.ok(&["status"]).contains("ticker"), "{}", server.ok(&["status"]));

    // Store: a key written in the browser is what `micro store read` reads.
    server.ok(&["store", "write", "cli-key", "from the CLI"]);
    browser.click(&browser.wait(r#".top nav a[href="/store"]"#));
    browser.wait(r#"body[data-ready="store"]"#);
    browser.wait(r#"#keys tr[data-key="cli-key"]"#);
    browser.type_into(&browser.wait("#write-key"), "web-key");
    browser.type_into(&browser.wait("#write-value"), "written in <the> browser");
    browser.type_into(&browser.wait("#write-expiry"), "1h");
    browser.click(&browser.wait("#store-write button[type=submit]"));
    browser.wait_text("#write-done", "wrote web-key");
    browser.wait_text("#record-value", "written in <the> browser");
    let ttl = browser.text(&browser.wait("#record-ttl"));
    assert!(ttl == "1h0m0s" || (ttl.starts_with("59m") && ttl.ends_with('s')), "the TTL shown: {ttl}");
    assert_eq!(server.ok(&["store", "read", "web-key"]), "written in <the> browser\n");
    // Prefix search, and reading a key the CLI wrote.
    browser.type_into(&browser.wait("#store-prefix"), "cli");
    browser.click(&browser.wait("#store-scope button[type=submit]"));
    let only_cli = eventually(WAIT, || texts(browser, "#keys tbody tr") == ["cli-key"]);
    assert!(only_cli, "{:?}", texts(browser, "#keys tbody tr"));
    browser.click(&browser.wait(r#"#keys tr[data-key="cli-key"] a"#));
    browser.wait_text("#record-value", "from the CLI");
    assert_eq!(browser.text(&browser.wait("#record-ttl")), "None");
    browser.screenshot(&shots.join("store.png"));
    // Delete, after saying yes.
    browser.click(&browser.wait("#record-delete"));
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#keys tbody", "No keys");
    assert!(!server.micro(&["store", "read", "cli-key"]).status.success(), "deleted");

    // Config: a secret set in the browser is masked on the page until revealed.
    browser.click(&browser.wait(r#".top nav a[href="/config"]"#));
    browser.wait(r#"body[data-ready="config"]"#);
    browser.type_into(&browser.wait("#set-path"), "web.greeting");
    browser.type_into(&browser.wait("#set-value"), "hello");
    browser.click(&browser.wait("#config-set button[type=submit]"));
    wait_texts(browser, r#"#config-tree tr[data-path="web.greeting"]"#, "hello");
    browser.type_into(&browser.wait("#set-path"), "web.password");
    browser.type_into(&browser.wait("#set-value"), "hunter2");
    browser.click(&browser.wait("#set-secret"));
    browser.click(&browser.wait("#config-set button[type=submit]"));
    wait_texts(browser, r#"#config-tree tr[data-path="web.password"] .masked"#, "[secret]");
    assert!(!browser.body_text().contains("hunter2"), "masked: {}", browser.body_text());
    assert_eq!(server.ok(&["config", "get", "web.password"]), "[secret]\n");
    assert_eq!(server.ok(&["config", "get", "web.password", "--secret"]), "hunter2\n");
    browser.screenshot(&shots.join("config.png"));
    browser.click(&browser.wait("#config-reveal"));
    wait_texts(browser, r#"#config-tree tr[data-path="web.password"]"#, "hunter2");
    browser.click(&browser.wait("#config-reveal"));
    browser.wait(r#"#config-tree tr[data-path="web.password"] .masked"#);
    assert!(!browser.body_text().contains("hunter2"), "hidden again");

    // Events: published in the browser, read with the CLI; published with the CLI, read in
    // the browser from an offset.
    browser.click(&browser.wait(r#".top nav a[href="/events"]"#));
    browser.wait(r#"body[data-ready="events"]"#);
    browser.type_into(&browser.wait("#events-topic"), "orders");
    browser.type_into(&browser.wait("#events-payload"), "not json");
    browser.click(&browser.wait("#events-publish button[type=submit]"));
    browser.wait_text("#events-error", "The payload is not valid JSON");
    browser.type_into(&browser.wait("#events-payload"), r#"{"n": 1}"#);
    browser.click(&browser.wait("#events-publish button[type=submit]"));
    browser.wait_text("#events-done", "published to orders");
    let read = server.ok(&["events", "read", "orders"]);
    let event: Value = serde_json::from_str(read.lines().next().unwrap_or_default()).unwrap();
    assert_eq!(event["payload"], json!({"n": 1}), "{read}");
    server.ok(&["events", "publish", "orders", r#"{"n": 2}"#]);
    browser.type_into(&browser.wait("#events-offset"), "1");
    browser.click(&browser.wait("#events-read button[type=submit]"));
    let only_second = eventually(WAIT, || {
        let shown = texts(browser, "#events-list li");
        shown.len() == 1 && shown[0].contains(r#""payload":{"n":2}"#)
    });
    assert!(only_second, "{:?}", texts(browser, "#events-list li"));

    // Dead letters: a consumer of group billing rejects two events as permanent failures
    // (`Stream.Consume`, then `Stream.Nack` with `permanent`, through the dashboard's own call
    // path); the page lists them, releases one, which the group then consumes, and drops the
    // other.
    server.ok(&["events", "publish", "invoices", r#"{"invoice": 1}"#]);
    server.ok(&["events", "publish", "invoices", r#"{"invoice": 2}"#]);
    let rejected = browser.exec_async(
        r#"const done = arguments[arguments.length - 1];
        const headers = {'Content-Type': 'application/json',
          'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content};
        const post = (endpoint, body, signal) => fetch('/api/call/events/Stream/' + endpoint,
          {method: 'POST', headers, body: JSON.stringify(body), signal});
        (async () => {
          const controller = new AbortController();
          const consume = await post('Consume', {topic: 'invoices', group: 'billing', auto_ack: false,
            retry_limit: '3', sequence: '1', ack_wait: '5000000000'}, controller.signal);
          const reader = consume.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffered = '';
          const nacked = [];
          while (nacked.length < 2) {
            const {value, done: ended} = await reader.read();
            if (ended) break;
            buffered += value;
            let newline;
            while ((newline = buffered.indexOf('\n')) >= 0) {
              const event = JSON.parse(buffered.slice(0, newline));
              buffered = buffered.slice(newline + 1);
              const nack = await post('Nack', {id: event.id, topic: 'invoices', group: 'billing',
                permanent: true, reason: 'card declined\nat line 2'});
              nacked.push([event.id, nack.status]);
            }
          }
          controller.abort();
          return nacked;
        })().then(done, (err) => done(String(err)));"#,
    );
    let nacked: Vec<(String, u16)> =
        serde_json::from_value(rejected.clone()).unwrap_or_else(|_| panic!("{rejected}"));
    assert_eq!(nacked.iter().map(|(_, status)| *status).collect::<Vec<_>>(), [200, 200], "{rejected}");
    let (first, second) = (&nacked[0].0, &nacked[1].0);
    let dead = server.ok(&["events", "dead", "invoices", "--group", "billing"]);
    assert!(dead.contains(first.as_str()) && dead.contains(second.as_str()), "{dead}");
    browser.type_into(&browser.wait("#dead-topic"), "invoices");
    browser.type_into(&browser.wait("#dead-group"), "billing");
    browser.click(&browser.wait("#dead-list button[type=submit]"));
    let row = format!(r#"#dead-table tr[data-id="{first}"]"#);
    wait_texts(browser, &row, "card declined");
    let cells = texts(browser, &format!("{row} td"));
    assert_eq!(cells[1..4], [first.as_str(), "1", "1"], "id, sequence, attempts: {cells:?}");
    assert_eq!(cells[6], "card declined", "the first line of the error: {cells:?}");
    assert_eq!(cells[7], r#"{"invoice": 1}"#, "{cells:?}");
    assert!(!browser.all(&format!(r#"#dead-table tr[data-id="{second}"]"#)).is_empty());
    browser.exec("document.getElementById('dead').scrollIntoView();");
    browser.screenshot(&shots.join("dead-letters.png"));
    // Nothing chosen: the CLI's sentence, and nothing changes.
    browser.click(&browser.wait("#dead-release"));
    browser.wait_text("#dead-error", "Name the dead letters to release by event id, or give --all");
    // Release the first: the group gets it again, and `micro events consume` (a member of the
    // group) prints it.
    browser.click(&browser.wait(&format!("{row} input.choose")));
    browser.click(&browser.wait("#dead-release"));
    browser.wait_text("#dead-done", &format!("released 1: {first}"));
    let gone = eventually(WAIT, || browser.all(&row).is_empty());
    assert!(gone, "{:?}", texts(browser, "#dead-table tbody tr"));
    let consumed = shell(home.path(), "timeout 60 micro events consume invoices --group billing --count 1");
    let consumed: Value = serde_json::from_str(consumed.trim()).unwrap_or_else(|_| panic!("{consumed}"));
    assert_eq!(
        (consumed["id"].as_str(), &consumed["payload"]),
        (Some(first.as_str()), &json!({"invoice": 1}))
    );
    // Drop all (the second), after saying yes.
    browser.click(&browser.wait("#dead-drop-all"));
    browser.wait_text("#confirm", "Drop every dead letter of billing on invoices?");
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#dead-done", &format!("dropped 1: {second}"));
    browser.wait_text("#dead-table tbody", "No dead letters");
    let dead = server.ok(&["events", "dead", "invoices", "--group", "billing"]);
    assert!(!dead.contains(first.as_str()) && !dead.contains(second.as_str()), "{dead}");

    // The namespace's topics, with their counts; a topic's name reads it.
    browser.click(&browser.wait("#topics-reload"));
    wait_texts(browser, r#"#topics-table tr[data-topic="invoices"]"#, "invoices");
    let row = texts(browser, r#"#topics-table tr[data-topic="orders"] td"#);
    assert_eq!(row[..3], ["orders", "2", "2"], "{row:?}");
    browser.click(&browser.wait(r#"#topics-table tr[data-topic="invoices"] a"#));
    wait_texts(browser, "#events-list li", r#""topic":"invoices""#);

    // The broker, live: what is published while the page listens arrives (it keeps nothing,
    // so publish until the subscription is there).
    browser.type_into(&browser.wait("#broker-topic"), "chat");
    browser.click(&browser.wait("#broker-subscribe button[type=submit]"));
    browser.wait(r#"#events[data-subscribed="chat"]"#);
    let mut sent = 0;
    let arrived = eventually(WAIT, || {
        server.ok(&["broker", "publish", "chat", &format!("hello {sent}")]);
        sent += 1;
        !texts(browser, "#broker-list li").is_empty()
    });
    assert!(arrived, "no message arrived");
    assert!(
        texts(browser, "#broker-list li")[0].starts_with("hello "),
        "{:?}",
        texts(browser, "#broker-list li")
    );
    browser.type_into(&browser.wait("#broker-body"), "from the page");
    browser.click(&browser.wait("#broker-publish button[type=submit]"));
    wait_texts(browser, "#broker-list li", "from the page");
    browser.screenshot(&shots.join("events.png"));
    browser.click(&browser.wait("#broker-stop"));
    browser.wait_text("#broker-state", "stopped");

    // Jobs: one created with the CLI is listed as `micro jobs list` shows it; Run now fires it
    // and its history shows the run; Delete asks first.
    server.ok(&["jobs", "create", "tick", "--every", "1h", "--publish", "ticks"]);
    browser.click(&browser.wait(r#".top nav a[href="/jobs"]"#));
    browser.wait(r#"body[data-ready="jobs"]"#);
    let row = r#"#jobs-table tr[data-job="tick"]"#;
    wait_texts(browser, row, "publish ticks");
    let cells = texts(browser, &format!("{row} td"));
    assert_eq!(cells[..4], ["tick", "every 1h", "publish ticks", "skip"], "{cells:?}");
    assert!(cells[4].ends_with('Z'), "the next firing, RFC 3339: {cells:?}");
    browser.click(&browser.wait(&format!(r#"{row} button[data-action="run-now"]"#)));
    browser.wait_text("#jobs-done", "ran tick: ok");
    wait_texts(browser, r#"#runs-table tr[data-outcome="ok"]"#, "manual");
    let history = server.ok(&["jobs", "history", "tick"]);
    assert!(history.contains("manual") && history.contains("ok"), "{history}");
    browser.click(&browser.wait(&format!(r#"{row} button[data-action="delete"]"#)));
    browser.wait_text("#confirm", "Delete job tick and its history?");
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#jobs-done", "deleted tick");
    browser.wait_text("#jobs-table tbody", "No jobs");
    assert!(!server.ok(&["jobs", "list"]).contains("tick"));
    // The form creates one as `micro jobs create tock --every 30m --publish ticks --data …`.
    browser.type_into(&browser.wait("#job-name"), "tock");
    browser.type_into(&browser.wait("#job-schedule"), "30m");
    browser.type_into(&browser.wait("#job-topic"), "ticks");
    browser.type_into(&browser.wait("#job-data"), r#"{"n": 1}"#);
    browser.click(&browser.wait("#job-create button[type=submit]"));
    browser.wait_text("#job-done", "created tock");
    wait_texts(browser, r#"#jobs-table tr[data-job="tock"]"#, "every 30m");
    let listed = server.ok(&["jobs", "list", "--output", "json"]);
    assert!(listed.contains(r#""data":"{\"n\": 1}""#) && listed.contains(r#""every":"30m""#), "{listed}");
}

/// The Accounts and rules page in a real browser: an account created in the browser is what
/// `micro auth list accounts` lists, a rule created there is what `micro auth list rules` lists,
/// and both are deleted from the page after saying yes.
#[test]
fn the_accounts_page_in_a_real_browser() {
    let Some(dashboard) = LoggedIn::start() else { return };
    let LoggedIn { browser, server, shots, .. } = &dashboard;

    browser.click(&browser.wait(r#".top nav a[href="/accounts"]"#));
    browser.wait(r#"body[data-ready="accounts"]"#);
    wait_texts(browser, r#"#accounts-table tr[data-account="admin"]"#, "admin");
    wait_texts(browser, r#"#rules-table tr[data-rule="default"]"#, "<public>");

    // An account, as `micro auth create account web-user --secret ... --scopes dev,ops`.
    browser.type_into(&browser.wait("#account-id"), "web-user");
    browser.type_into(&browser.wait("#account-secret"), "web-s3cret");
    browser.type_into(&browser.wait("#account-scopes"), "dev, ops");
    browser.click(&browser.wait("#account-create button[type=submit]"));
    browser.wait_text("#account-done", "Account created: web-user");
    wait_texts(browser, r#"#accounts-table tr[data-account="web-user"]"#, "dev, ops");
    let row = texts(browser, r#"#accounts-table tr[data-account="web-user"] td"#);
    assert_eq!(row[..6], ["web-user", "web-user", "user", "dev, ops", "micro", "n/a"], "{row:?}");
    let accounts = server.ok(&["auth", "list", "accounts"]);
    assert!(
        accounts.lines().any(|line| line.starts_with("web-user") && line.contains("dev, ops")),
        "{accounts}"
    );

    // A rule, as `micro auth create rule web-rule --scope dev --resource service:store:*
    // --access denied --priority 7`.
    browser.type_into(&browser.wait("#rule-id"), "web-rule");
    browser.type_into(&browser.wait("#rule-scope"), "dev");
    browser.type_into(&browser.wait("#rule-name"), "store");
    browser.click(&browser.wait(r#"#rule-access option[value="DENIED"]"#));
    browser.type_into(&browser.wait("#rule-priority"), "7");
    browser.click(&browser.wait("#rule-create button[type=submit]"));
    browser.wait_text("#rule-done", "Rule created");
    wait_texts(browser, r#"#rules-table tr[data-rule="web-rule"]"#, "service:store:*");
    let row = texts(browser, r#"#rules-table tr[data-rule="web-rule"] td"#);
    assert_eq!(row[..5], ["web-rule", "dev", "DENIED", "service:store:*", "7"], "{row:?}");
    let rules = server.ok(&["auth", "list", "rules"]);
    let listed = rules.lines().find(|line| line.starts_with("web-rule")).unwrap_or_default();
    let listed: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(listed, ["web-rule", "dev", "DENIED", "service:store:*", "7"], "{rules}");
    browser.screenshot(&shots.join("accounts.png"));

    // Deleted from the page, after saying yes.
    browser.click(&browser.wait(r#"#rules-table tr[data-rule="web-rule"] button[data-action="delete"]"#));
    browser.wait_text("#confirm", "Delete rule web-rule?");
    browser.click(&browser.wait("#confirm-no"));
    assert!(browser.all("#confirm").is_empty(), "the dialog closes");
    assert!(server.ok(&["auth", "list", "rules"]).contains("web-rule"), "cancelled: still there");
    browser.click(&browser.wait(r#"#rules-table tr[data-rule="web-rule"] button[data-action="delete"]"#));
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#rule-done", "Rule deleted");
    let gone = eventually(WAIT, || browser.all(r#"#rules-table tr[data-rule="web-rule"]"#).is_empty());
    assert!(gone, "{:?}", texts(browser, "#rules-table tbody tr"));
    assert!(!server.ok(&["auth", "list", "rules"]).contains("web-rule"));

    browser
        .click(&browser.wait(r#"#accounts-table tr[data-account="web-user"] button[data-action="delete"]"#));
    browser.wait_text("#confirm", "Delete account web-user?");
    browser.click(&browser.wait("#confirm-yes"));
    let gone = eventually(WAIT, || browser.all(r#"#accounts-table tr[data-account="web-user"]"#).is_empty());
    assert!(gone, "{:?}", texts(browser, "#accounts-table tbody tr"));
    assert!(!server.ok(&["auth", "list", "accounts"]).contains("web-user"));
    browser.wait(r#"#accounts-table tr[data-account="admin"]"#);
}

/// A static site on its own origin (a port of 127.0.0.1): `files` by path (the query left
/// out), 404 for anything else.
fn serve_site(listener: TcpListener, files: Vec<(&'static str, &'static str, Vec<u8>)>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            // The rest of the head, up to its blank line.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let (status, content_type, body) = match files.iter().find(|(served, ..)| *served == path) {
                Some((_, content_type, body)) => ("200 OK", *content_type, body.as_slice()),
                None => ("404 Not Found", "text/plain", b"not found".as_slice()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
}

/// The browser client of docs/clients.md ("Browser"): docs/clients/browser/main.ts, with the
/// clients protoc-gen-es generates from `micro proto helloworld` and `micro proto auth`,
/// bundled by esbuild with `@connectrpc/connect-web`, served from a test-local origin that the
/// gateway allows (`--cors-origin`): it logs in with `Auth.Token` and calls `Helloworld.Call`
/// and `Helloworld.Stream` over Connect, and the page shows the answers. The same page from an
/// origin the gateway does not allow gets nothing.
#[test]
fn a_browser_page_calls_helloworld_through_connect_web() {
    let Some((chromium, chromedriver)) = chromium() else { return };
    let Some(tools) = common::needed_env("MICRO_TEST_NODE_TOOLS", "tests/web.rs (Connect-Web)") else {
        return;
    };
    let modules = Path::new(&tools).join("node_modules");
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_origin = format!("http://{}", allowed.local_addr().unwrap());
    let other_origin = format!("http://{}", other.local_addr().unwrap());

    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--cors-origin", &allowed_origin]);
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    let _hello = Service::start_helloworld(&server, &[]);

    // The client, as docs/clients.md builds it: protos from the registry, code from
    // protoc-gen-es, one bundle from esbuild.
    let work = tempfile::tempdir().unwrap();
    let protos = work.path().join("protos");
    for service in ["helloworld", "auth"] {
        server.ok(&["proto", service, "--out", protos.to_str().unwrap()]);
    }
    let template = json!({
        "version": "v2",
        "plugins": [{
            "local": modules.join(".bin/protoc-gen-es").to_str().unwrap(),
            "out": "gen",
            "opt": ["target=ts"],
        }],
    });
    let generated = Command::new(modules.join(".bin/buf"))
        .args(["generate", "protos", "--template", &template.to_string()])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(generated.status.success(), "buf generate: {}", stderr(&generated));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/clients/browser");
    std::fs::copy(source.join("main.ts"), work.path().join("main.ts")).unwrap();
    let bundled = Command::new(modules.join(".bin/esbuild"))
        .args(["main.ts", "--bundle", "--format=esm", "--target=es2020", "--minify", "--outfile=app.js"])
        .env("NODE_PATH", &modules)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(bundled.status.success(), "esbuild: {}", stderr(&bundled));
    let bundle = std::fs::read(work.path().join("app.js")).unwrap();
    let page = std::fs::read(source.join("index.html")).unwrap();
    println!("web: the Connect-Web page's bundle: {} bytes", bundle.len());
    let files =
        vec![("/", "text/html; charset=utf-8", page), ("/app.js", "text/javascript; charset=utf-8", bundle)];
    serve_site(allowed, files.clone());
    serve_site(other, files);

    let browser = Browser::start(&chromium, &chromedriver);
    let run = |origin: &str, password: &str| {
        browser.goto(&format!("{origin}/"));
        browser.type_into(&browser.wait("#gateway"), &format!("http://{}", server.http));
        browser.type_into(&browser.wait("#password"), password);
        browser.type_into(&browser.wait("#name"), "Browser");
        browser.click(&browser.wait("#login button[type=submit]"));
        browser.wait("body[data-done]");
        let done = browser.exec("return document.body.dataset.done;");
        let shown = |id: &str| texts(&browser, &format!("#{id}")).concat();
        (done.as_str().unwrap_or_default().to_string(), shown("call"), shown("stream"), shown("error"))
    };

    let (done, call, stream, error) = run(&allowed_origin, "micro");
    assert_eq!((done.as_str(), error.as_str()), ("ok", ""), "from {allowed_origin}");
    assert_eq!(call, "Hello Browser");
    assert_eq!(stream, "0,1,2");

    // A wrong password: Auth.Token refuses, nothing is called.
    let (done, call, _, error) = run(&allowed_origin, "wrong");
    assert_eq!((done.as_str(), call.as_str()), ("error", ""), "{error}");
    assert!(error.starts_with("Unauthenticated"), "{error}");

    // Another origin: the gateway grants it nothing, so the browser stops the first request.
    let (done, call, stream, error) = run(&other_origin, "micro");
    assert_eq!((done.as_str(), call.as_str(), stream.as_str()), ("error", "", ""), "{error}");
    assert!(!error.is_empty());
    println!("web: the page from {other_origin}, which the gateway does not allow: {error}");
}
