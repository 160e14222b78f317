//! `micro run --watch` end to end (docs/runtime.md#watch-mode): a copy of the helloworld example
//! is run in watch mode, edited three times while a client calls it through the gateway without
//! pause, then broken: every edit is served without one failed call, and the broken build leaves
//! the last good version serving while the watcher prints the compiler's error.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, http_request};

/// How often the watch test looks again.
const POLL: Duration = Duration::from_millis(200);

/// How long the first build may take (the dependencies are usually compiled already, in the
/// shared build dir; cold, they take minutes).
const FIRST_BUILD_DEADLINE: Duration = Duration::from_secs(900);
/// How long a rebuild of the edited handler and its swap may take.
const RELOAD_DEADLINE: Duration = Duration::from_secs(300);

/// The watcher process, stopped by its PID on drop if the test did not stop it.
struct Watcher {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Watcher {
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the watcher's output holds `count` lines containing `needle`.
    fn wait_for(&self, needle: &str, count: usize, within: Duration) -> String {
        let found = common::poll(within, POLL, || {
            self.output().lines().filter(|line| line.contains(needle)).count() >= count
        });
        assert!(found, "no {count}× {needle:?} from the watcher:\n{}", self.output());
        self.output()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call of `Helloworld.Call` through the HTTP gateway: the greeting, or what went wrong.
fn greet(server: &Server, name: &str) -> Result<String, String> {
    let (status, body) = http_request(
        &server.http,
        "GET",
        &format!("/helloworld?name={name}"),
        &[("Micro-Namespace", "micro")],
        b"",
    );
    let reply: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| format!("HTTP {status}, not JSON: {body:?}"))?;
    match (status, reply["msg"].as_str()) {
        (200, Some(msg)) => Ok(msg.to_string()),
        _ => Err(format!("HTTP {status}: {body}")),
    }
}

/// Copies the helloworld example to `dest` as a project of its own, its `micro` dependency
/// pointing at this checkout's framework, with the checkout's lock file (as `micro new` does),
/// so its dependencies are the ones compiled already in the shared build dir.
fn copy_helloworld(dest: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = workspace.join("examples/helloworld");
    for file in ["build.rs", "proto/helloworld.proto", "src/main.rs", "src/handler.rs"] {
        let to = dest.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(example.join(file), &to).unwrap();
    }
    let micro = workspace.join("crates/micro");
    let micro = toml::Value::String(micro.to_string_lossy().into_owned());
    std::fs::write(
        dest.join("Cargo.toml"),
        format!(
            "[package]\nname = \"helloworld\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nmicro = {{ path = {micro} }}\n\
             tokio = {{ version = \"1\", features = [\"macros\", \"rt-multi-thread\"] }}\n\n\
             [build-dependencies]\nmicro = {{ path = {micro}, features = [\"build\"] }}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::copy(workspace.join("Cargo.lock"), dest.join("Cargo.lock")).unwrap();
    std::fs::write(dest.join(".gitignore"), "/target\n").unwrap();
}

/// Replaces the greeting `from` with `to` in the handler.
fn edit_greeting(handler: &Path, from: &str, to: &str) {
    let code = std::fs::read_to_string(handler).unwrap();
    let (from, to) = (format!("format!(\"{from} {{name}}\")"), format!("format!(\"{to} {{name}}\")"));
    assert!(code.contains(&from), "{from} is not in the handler:\n{code}");
    std::fs::write(handler, code.replace(&from, &to)).unwrap();
}

#[test]
fn watch_mode_reloads_every_edit_without_a_failed_call() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let project = work.path().join("helloworld");
    copy_helloworld(&project);
    let handler = project.join("src/handler.rs");

    let mut child = server
        .command()
        .current_dir(work.path())
        .args(["run", "--watch", "./helloworld"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("micro run --watch starts");
    let output = Arc::new(Mutex::new(String::new()));
    let sink = output.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let watcher = Watcher { child, output };

    let served = |greeting: &str| greet(&server, "Jane").is_ok_and(|msg| msg == format!("{greeting} Jane"));
    // Stops waiting as soon as the watcher reports a failed first build.
    assert!(
        common::poll(FIRST_BUILD_DEADLINE, POLL, || served("Hello")
            || watcher.output().contains("Build of helloworld failed"))
            && served("Hello"),
        "helloworld never answered; watcher:\n{}\nlogs:\n{}",
        watcher.output(),
        server.ok(&["logs", "-n", "100", "helloworld"])
    );
    watcher.wait_for("Started helloworld in ", 1, RELOAD_DEADLINE);
    watcher.wait_for("Watching ", 1, RELOAD_DEADLINE);

    // A client calling through the gateway all along, one call after the other.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = {
        let (stop, calls, errors, http) = (stop.clone(), calls.clone(), errors.clone(), server.http.clone());
        std::thread::spawn(move || {
            let ns = [("Micro-Namespace", "micro")];
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = http_request(&http, "GET", "/helloworld?name=Loop", &ns, b"");
                let msg = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|reply| reply["msg"].as_str().map(str::to_string));
                match (status, msg) {
                    (200, Some(msg)) if msg.ends_with(" Loop") => {}
                    _ => errors.lock().unwrap().push(format!("HTTP {status}: {body}")),
                }
                calls.fetch_add(1, Ordering::SeqCst);
                // Paced, so the builds keep most of the machine.
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    assert!(
        common::poll(Duration::from_secs(30), POLL, || calls.load(Ordering::SeqCst) > 0),
        "the client never called"
    );

    let greetings = ["Hello", "Hi", "Hey", "Howdy"];
    for (reload, pair) in greetings.windows(2).enumerate() {
        let calls_before = calls.load(Ordering::SeqCst);
        edit_greeting(&handler, pair[0], pair[1]);
        assert!(
            common::poll(RELOAD_DEADLINE, POLL, || served(pair[1])),
            "{} was never served; watcher:\n{}\nlogs:\n{}",
            pair[1],
            watcher.output(),
            server.ok(&["logs", "-n", "100", "helloworld"])
        );
        let output = watcher.wait_for("Reloaded helloworld in ", reload + 1, RELOAD_DEADLINE);
        assert!(output.contains("Changed src/handler.rs — rebuilding"), "{output}");
        assert!(calls.load(Ordering::SeqCst) > calls_before, "the client called during the reload");
    }
    let reloads: Vec<String> =
        watcher.output().lines().filter(|line| line.starts_with("Reloaded ")).map(str::to_string).collect();
    eprintln!("reload times:\n{}", reloads.join("\n"));

    // A syntax error: the build fails, the watcher shows rustc's error, the last good version
    // keeps serving.
    let code = std::fs::read_to_string(&handler).unwrap();
    let broken = code.replace("format!(\"Howdy {name}\")", "format!(\"Oops {name}\") oops");
    assert_ne!(code, broken);
    std::fs::write(&handler, broken).unwrap();
    let output = watcher.wait_for("Build of helloworld failed", 1, RELOAD_DEADLINE);
    let after = &output[output.find("Build of helloworld failed").unwrap()..];
    assert!(after.contains("the previous version keeps serving"), "{after}");
    assert!(after.lines().any(|line| line.starts_with("error")), "rustc's error is shown:\n{after}");
    assert!(after.contains("src/handler.rs"), "the error names the file:\n{after}");
    assert_eq!(greet(&server, "Jane"), Ok("Howdy Jane".to_string()), "the last good version serves");
    let status = server.ok(&["status", "helloworld", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status[0]["status"], "running", "{status}");
    assert_eq!(status[0]["metadata"]["update"], "failed", "{status}");

    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let errors = errors.lock().unwrap().clone();
    let calls = calls.load(Ordering::SeqCst);
    eprintln!("{calls} calls through the gateway during three reloads and a failed build");
    assert!(
        errors.is_empty(),
        "{} of {calls} calls failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );

    // Stopping the watcher (by its PID) leaves the service running.
    let pid = watcher.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    watcher.wait_for("Stopped watching; helloworld keeps running", 1, Duration::from_secs(30));
    assert_eq!(greet(&server, "Jane"), Ok("Howdy Jane".to_string()));
}
