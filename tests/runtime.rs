//! `micro run`, `update`, `kill`, `status` and `logs` end to end: services built from source and
//! run by the server's runtime (docs/compatibility.md §2.9, §9.5).
//!
//! One test builds a real Rust service with cargo (cold dependencies: minutes); the others run
//! shell scripts with `--command`, which need no build.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, poll, stderr, stdout};

/// How long the cargo build of a fresh `micro new` service may take (dependencies cold).
const BUILD_DEADLINE: Duration = Duration::from_secs(600);
/// How long a script service may take to reach a state.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

/// The `micro status` line of `name`, if it is listed.
fn status_line(server: &Server, name: &str) -> Option<String> {
    server
        .ok(&["status"])
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .map(str::to_string)
}

/// Whether `micro status` shows `name version source status` (SOURCE one token).
fn shows(server: &Server, name: &str, version: &str, source: &str, status: &str) -> bool {
    status_line(server, name).is_some_and(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        columns.len() >= 4 && columns[..4] == [name, version, source, status]
    })
}

fn wait_for_status(server: &Server, name: &str, version: &str, source: &str, status: &str, within: Duration) {
    let found = poll(within, Duration::from_millis(500), || shows(server, name, version, source, status));
    assert!(
        found,
        "{name} {version} {source} never became {status}; status:\n{}\nlogs:\n{}\nserver log:\n{}",
        server.ok(&["status"]),
        stdout(&server.micro(&["logs", "-n", "50", name])),
        server.log()
    );
}

fn listed(server: &Server, name: &str) -> bool {
    server.ok(&["services"]).lines().any(|line| line == name)
}

/// Whether process `pid` exists and has not exited (a zombie has exited).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may itself contain spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

fn write_script(dir: &Path, script: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("run.sh"), script).unwrap();
}

/// The one slow test: `micro new` → `run` → call → logs → edit → `update` → call → `kill`.
#[test]
fn a_new_service_runs_updates_and_is_killed() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    assert_eq!(server.ok(&["status"]), "", "no services, no table");

    server.ok_at(work.path(), &["new", "helloworld"]);
    let run = server.ok_at(work.path(), &["run", "./helloworld"]);
    assert_eq!(run, "", "run prints nothing");
    wait_for_status(&server, "helloworld", "latest", "./helloworld", "running", BUILD_DEADLINE);
    let line = status_line(&server, "helloworld").unwrap();
    assert!(line.contains("owner=") && line.contains("group="), "{line}");
    assert!(line.contains(" ago "), "UPDATED counts from the start: {line}");

    let answered = poll(SCRIPT_DEADLINE, Duration::from_millis(500), || {
        stdout(&server.micro(&["helloworld", "--name=Alice"])).contains("Hello Alice")
    });
    assert!(
        answered,
        "helloworld never answered: {}",
        stderr(&server.micro(&["helloworld", "--name=Alice"]))
    );
    assert!(listed(&server, "helloworld"));
    // Its spans reach the server's trace ring: the runtime points its exporter at the server,
    // and it sends its own token, which the server wants (docs/observability.md#traces).
    let exported = |server: &Server| {
        let recent = common::json(&server.ok(&["trace", "--output", "json"]));
        // Only the traces of calls to helloworld: the ring holds the test's other calls too.
        recent.as_array().unwrap().iter().filter(|root| root["name"] == "helloworld.Helloworld/Call").any(
            |root| {
                let trace = root["trace"].as_str().unwrap_or_default();
                let spans = common::json(&server.ok(&["trace", trace, "--output", "json"]));
                spans.as_array().unwrap().iter().any(|span| {
                    span["metadata"]["service"] == "helloworld"
                        && span["name"] == "helloworld.Helloworld/Call"
                        && span["metadata"]["micro.exported_by"].as_str().is_some_and(|id| !id.is_empty())
                })
            },
        )
    };
    // The exporter sends a batch every 5 s (OTEL_BSP_SCHEDULE_DELAY's default).
    assert!(
        poll(SCRIPT_DEADLINE, Duration::from_millis(500), || exported(&server)),
        "no span of helloworld's in the ring:\n{}",
        server.ok(&["trace"])
    );
    let logs = server.ok(&["logs", "helloworld"]);
    assert!(logs.contains("Listening on"), "{logs}");
    // `--since` is honoured by the server: every line of a service started minutes ago is
    // within the last hour.
    let recent = server.ok(&["logs", "--since", "1h", "helloworld"]);
    assert!(recent.contains("Listening on"), "--since 1h: {recent}\ndefault: {logs}");
    let build = server.ok(&["logs", "--build", "helloworld"]);
    assert!(build.contains("Compiling helloworld v0.1.0") && build.contains("Finished"), "{build}");
    let json = server.ok(&["status", "--output", "json"]);
    let services: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(services[0]["name"], "helloworld", "{json}");

    let handler = work.path().join("helloworld/src/handler.rs");
    let code = std::fs::read_to_string(&handler).unwrap();
    assert!(code.contains("\"Hello {name}\""), "{code}");
    std::fs::write(&handler, code.replace("\"Hello {name}\"", "\"Hi {name}\"")).unwrap();
    assert_eq!(server.ok_at(work.path(), &["update", "./helloworld"]), "");
    let updated = poll(BUILD_DEADLINE, Duration::from_secs(1), || {
        stdout(&server.micro(&["helloworld", "--name=Joe"])).contains("Hi Joe")
    });
    assert!(
        updated,
        "the update never served the new greeting; logs:\n{}",
        server.ok(&["logs", "-n", "50", "helloworld"])
    );

    a_broken_build_shows_rustcs_errors(&server, home.path(), work.path());

    assert_eq!(server.ok(&["kill", "helloworld"]), "", "kill prints nothing");
    assert!(status_line(&server, "helloworld").is_none(), "{}", server.ok(&["status"]));
    assert!(
        poll(SCRIPT_DEADLINE, Duration::from_millis(200), || !listed(&server, "helloworld")),
        "a killed service leaves the registry"
    );
    let again = server.micro(&["kill", "helloworld"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
}

/// A copy of the running helloworld with a type error in its source (its dependencies are
/// compiled already, so only its own crate builds, and fails): the service shows the error,
/// `micro logs --build` prints rustc's rendering, and the `Build.Read` stream ends with the build.
fn a_broken_build_shows_rustcs_errors(server: &Server, home: &Path, work: &Path) {
    let broken = work.join("broken");
    copy_tree(&work.join("helloworld"), &broken);
    let manifest = std::fs::read_to_string(broken.join("Cargo.toml")).unwrap();
    std::fs::write(broken.join("Cargo.toml"), manifest.replace("name = \"helloworld\"", "name = \"broken\""))
        .unwrap();
    let main = std::fs::read_to_string(broken.join("src/main.rs")).unwrap();
    std::fs::write(
        broken.join("src/main.rs"),
        format!("{main}\nfn broken() -> u32 {{\n    \"not a number\"\n}}\n"),
    )
    .unwrap();
    assert_eq!(server.ok_at(work, &["run", "./broken"]), "", "run prints nothing off a terminal");
    let failed = poll(BUILD_DEADLINE, Duration::from_millis(500), || {
        status_line(server, "broken").is_some_and(|line| line.contains(" error "))
    });
    assert!(failed, "the broken build never failed: {}\n{}", server.ok(&["status"]), server.log());
    let line = status_line(server, "broken").unwrap();
    assert!(line.contains("cargo build failed") && line.contains("micro logs --build broken"), "{line}");

    let build = server.ok(&["logs", "--build", "broken"]);
    assert!(build.contains("Compiling broken v0.1.0"), "{build}");
    assert!(build.contains("error[E0308]: mismatched types"), "rustc's rendering: {build}");
    assert!(build.contains("src/main.rs"), "with its location: {build}");

    // The same through the generated client: the stream carries the log and ends.
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("tokens.json")).unwrap()).unwrap();
    let token = tokens["e2e/micro"]["access_token"].as_str().expect("the harness logged in").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let streamed = runtime.block_on(async {
        use micro_proto::runtime::build_client::BuildClient;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut request = tonic::Request::new(micro_proto::runtime::Service {
            name: "broken".into(),
            version: "latest".into(),
            metadata: [("namespace".to_string(), "micro".to_string())].into(),
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut stream = BuildClient::new(channel).read(request).await.unwrap().into_inner();
        let mut data = Vec::new();
        loop {
            let next = tokio::time::timeout(SCRIPT_DEADLINE, stream.message()).await;
            match next.expect("the stream of an ended build ends") {
                Ok(Some(chunk)) => data.extend(chunk.data),
                Ok(None) => break,
                Err(status) => panic!("Build.Read failed: {status:?}"),
            }
        }
        String::from_utf8(data).unwrap()
    });
    assert_eq!(streamed, build, "micro logs --build prints what Build.Read streams");
    assert_eq!(server.ok(&["kill", "broken"]), "");
}

/// Copies the files of `from` (no symbolic links) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A service that exits with an error shows `error` with the message, is restarted with backoff,
/// and `micro logs -f` streams the lines of each new attempt.
#[test]
fn a_crashing_service_shows_its_error_and_is_restarted() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    write_script(
        &work.path().join("crasher"),
        "echo \"attempt $(date +%s%N)\"\necho \"env A=$A B=$B\"\necho 'crasher: missing config' >&2\nexit 3\n",
    );
    server.ok_at(work.path(), &["run", "./crasher", "--command", "sh run.sh", "--env_vars", "A=1,B=2"]);

    let errored = poll(SCRIPT_DEADLINE, Duration::from_millis(200), || {
        status_line(&server, "crasher")
            .is_some_and(|line| line.contains(" error ") && line.contains("error="))
    });
    assert!(errored, "status:\n{}\nserver log:\n{}", server.ok(&["status"]), server.log());
    let line = status_line(&server, "crasher").unwrap();
    assert!(line.starts_with("crasher"), "{line}");
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[..4], ["crasher", "latest", "./crasher", "error"], "{line}");

    let restarts = || -> u64 {
        let json: serde_json::Value =
            serde_json::from_str(&server.ok(&["status", "crasher", "--output", "json"])).unwrap();
        json[0]["metadata"]["restarts"].as_str().and_then(|count| count.parse().ok()).unwrap_or(0)
    };
    assert!(
        poll(SCRIPT_DEADLINE, Duration::from_millis(500), || restarts() >= 2),
        "restarts: {}",
        restarts()
    );

    let logs = server.ok(&["logs", "-n", "100", "crasher"]);
    assert!(logs.contains("attempt ") && logs.contains("crasher: missing config"), "{logs}");
    // `--env_vars A=1,B=2` reaches the process's environment through gRPC and the runtime.
    assert!(logs.lines().any(|line| line == "env A=1 B=2"), "{logs}");
    let seen: Vec<String> = logs.lines().map(str::to_string).collect();

    // `logs -f` keeps streaming: a later attempt's line arrives.
    let mut follow = server
        .command()
        .args(["logs", "-f", "crasher"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("micro logs -f starts");
    let (tx, rx) = mpsc::channel();
    let output = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let mut new_attempt = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.starts_with("attempt ") && !seen.contains(&line) {
            new_attempt = Some(line);
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(new_attempt.is_some(), "logs -f streamed no new attempt");

    let missing = server.micro(&["logs", "nosuchservice"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("Logs not found for service nosuchservice"), "{}", stderr(&missing));
    // A service run with a command is never built.
    let unbuilt = server.micro(&["logs", "--build", "crasher"]);
    assert_eq!(unbuilt.status.code(), Some(1), "{}", stderr(&unbuilt));
    assert!(stderr(&unbuilt).contains("has not been built"), "{}", stderr(&unbuilt));

    server.ok(&["kill", "crasher"]);
    assert!(status_line(&server, "crasher").is_none());
}

/// `micro run .` from inside a folder and `micro run ../x` from beside it, and a git source at a
/// branch, which shows the branch as VERSION.
#[test]
fn folders_run_from_dot_and_parent_paths_and_git_at_a_branch() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let ticker = "while true; do echo tick; sleep 1; done\n";
    write_script(&work.path().join("ticker"), ticker);
    write_script(&work.path().join("pinger"), ticker);
    std::fs::create_dir_all(work.path().join("elsewhere")).unwrap();

    server.ok_at(&work.path().join("ticker"), &["run", ".", "--command", "sh run.sh"]);
    server
        .ok_at(&work.path().join("elsewhere"), &["run", "../pinger", "--command", "sh", "--args", "run.sh"]);
    wait_for_status(&server, "ticker", "latest", ".", "running", SCRIPT_DEADLINE);
    wait_for_status(&server, "pinger", "latest", "../pinger", "running", SCRIPT_DEADLINE);
    let names: Vec<String> = server
        .ok(&["status"])
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["pinger", "ticker"], "sorted by name");
    assert!(poll(SCRIPT_DEADLINE, Duration::from_millis(500), || server
        .ok(&["logs", "ticker"])
        .contains("tick")));

    // A bare repository with a branch, cloned by the server.
    let repo = work.path().join("gitsvc");
    write_script(&repo, ticker);
    let git = |dir: &Path, args: &[&str]| {
        let output = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    git(&repo, &["init", "-q"]);
    git(&repo, &["checkout", "-q", "-b", "feature/ticks"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "ticker"]);
    git(work.path(), &["clone", "-q", "--bare", "gitsvc", "gitsvc.git"]);
    let url = format!("file://{}", work.path().join("gitsvc.git").display());
    server.ok(&["run", &format!("{url}@feature/ticks"), "--command", "sh run.sh"]);
    wait_for_status(&server, "gitsvc", "feature/ticks", &url, "running", SCRIPT_DEADLINE);

    for name in ["ticker", "pinger"] {
        server.ok(&["kill", name]);
    }
    server.ok(&["kill", "gitsvc@feature/ticks"]);
    assert_eq!(server.ok(&["status"]), "", "every service is gone");
}

/// Services come back after the server restarts, without any command.
#[test]
fn services_are_restored_after_a_server_restart() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    write_script(&work.path().join("keeper"), "echo \"Listening on 127.0.0.1:1 pid $$\"\nexec sleep 300\n");
    server.ok_at(work.path(), &["run", "./keeper", "--command", "sh run.sh"]);
    wait_for_status(&server, "keeper", "latest", "./keeper", "running", SCRIPT_DEADLINE);

    // The script execs `sleep`, so the PID it prints is the service process's.
    let logs = server.ok(&["logs", "-n", "10", "keeper"]);
    let pid: u32 = logs
        .lines()
        .find_map(|line| line.split_once(" pid ").map(|(_, pid)| pid.trim().to_string()))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("the service printed its PID: {logs}"));
    assert!(running(pid), "the service process {pid} runs");

    let status = server.signal(15);
    assert!(status.success(), "the server drains and stops its services: {status}");
    // Stopped by the server, not left behind: the PID is gone (or a zombie awaiting its reaper).
    assert!(
        poll(Duration::from_secs(10), Duration::from_millis(100), || !running(pid)),
        "the service process {pid} outlived the server"
    );

    let server = Server::start(home.path());
    wait_for_status(&server, "keeper", "latest", "./keeper", "running", SCRIPT_DEADLINE);
    let logs = server.ok(&["logs", "-n", "10", "keeper"]);
    assert_eq!(logs.matches("Listening on").count(), 2, "started once per server run: {logs}");
    server.ok(&["kill", "keeper"]);
}

/// The runtime is per namespace end to end (CLI → gRPC gate → runtime): an account of another
/// namespace neither sees a service of `micro` nor reads its logs, kills or updates it.
#[test]
fn another_namespace_cannot_see_read_kill_or_update_a_service() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    write_script(&work.path().join("keeper"), "echo 'private line'\nexec sleep 300\n");
    server.ok_at(work.path(), &["run", "./keeper", "--command", "sh run.sh"]);
    wait_for_status(&server, "keeper", "latest", "./keeper", "running", SCRIPT_DEADLINE);
    assert!(poll(SCRIPT_DEADLINE, Duration::from_millis(200), || server
        .ok(&["logs", "keeper"])
        .contains("private line")));

    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    server.ok(&["user", "namespace", "set", "foo"]);
    server.ok(&["login", "--username", "bob", "--password", "s3cret"]);
    assert_eq!(server.ok(&["status"]), "", "foo lists none of micro's services");
    let logs = server.micro(&["logs", "keeper"]);
    assert_ne!(logs.status.code(), Some(0), "foo reads micro's logs: {}", stdout(&logs));
    assert!(!stdout(&logs).contains("private line"), "{}", stdout(&logs));
    assert!(stderr(&logs).contains("Logs not found for service keeper"), "{}", stderr(&logs));
    let kill = server.micro(&["kill", "keeper"]);
    assert_eq!(kill.status.code(), Some(1), "{}", stderr(&kill));
    assert!(stderr(&kill).contains("Service keeper latest not found"), "{}", stderr(&kill));
    let update = server.micro_at(work.path(), &["update", "./keeper"]);
    assert_ne!(update.status.code(), Some(0), "foo updates micro's service");
    assert_eq!(stderr(&update).trim(), "Not found");

    // Naming micro's namespace in the request itself (past the CLI) is denied by the gate's
    // account check, for reading, logs, delete and update alike.
    let foreign = [
        ("stream", "Runtime.Logs", r#"{"service":"keeper","options":{"namespace":"micro"}}"#),
        ("call", "Runtime.Read", r#"{"options":{"namespace":"micro"}}"#),
        (
            "call",
            "Runtime.Delete",
            r#"{"resource":{"service":{"name":"keeper","version":"latest"}},"options":{"namespace":"micro"}}"#,
        ),
        (
            "call",
            "Runtime.Update",
            r#"{"resource":{"service":{"name":"keeper","version":"latest"}},"options":{"namespace":"micro"}}"#,
        ),
    ];
    for (command, endpoint, request) in foreign {
        let denied = server.micro(&[command, "runtime", endpoint, request]);
        assert_eq!(denied.status.code(), Some(2), "{endpoint} in micro as foo's bob: {}", stderr(&denied));
        assert!(!stdout(&denied).contains("private line"), "{endpoint}: {}", stdout(&denied));
    }

    server.ok(&["user", "namespace", "set", "micro"]);
    wait_for_status(&server, "keeper", "latest", "./keeper", "running", SCRIPT_DEADLINE);
    // Never restarted or rebuilt: the one process still runs, its line printed once.
    let logs = server.ok(&["logs", "keeper"]);
    assert_eq!(logs.matches("private line").count(), 1, "untouched by foo: {logs}");
    server.ok(&["kill", "keeper"]);
}
