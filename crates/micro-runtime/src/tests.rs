//! The runtime driven through its API with real child processes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use micro_core::Context;
use nix::sys::signal::{kill, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use super::*;
use crate::source::UploadId;
use crate::state::{DATABASE, store_key};
use crate::supervisor::{account_id, binary_dir};

struct Fixture {
    runtime: Runtime,
    store: Arc<dyn micro_store::Store>,
    auth: Arc<micro_auth::Auth>,
    home: tempfile::TempDir,
}

fn options(home: &Path) -> RuntimeOptions {
    RuntimeOptions {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        stop_grace: Duration::from_secs(2),
        startup_grace: Duration::from_secs(30),
        ..RuntimeOptions::new(home)
    }
}

async fn fixture() -> Fixture {
    let home = tempfile::tempdir().unwrap();
    let store: Arc<dyn micro_store::Store> = Arc::new(micro_store::memory::MemoryStore::new());
    let auth_options =
        micro_auth::AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
    let auth = Arc::new(micro_auth::Auth::open(store.clone(), home.path(), auth_options).await.unwrap());
    let runtime = Runtime::open(store.clone(), auth.clone(), options(home.path())).await.unwrap();
    runtime.start("127.0.0.1:1");
    Fixture { runtime, store, auth, home }
}

fn admin() -> Context {
    let account = micro_core::Account {
        id: "admin".into(),
        name: "admin".into(),
        kind: "user".into(),
        issuer: "micro".into(),
        scopes: vec!["admin".into()],
        ..Default::default()
    };
    Context::with_account("micro", account)
}

fn command_spec(name: &str, dir: &Path, script: &str) -> CreateSpec {
    CreateSpec {
        name: name.into(),
        source: dir.to_string_lossy().into(),
        metadata: [("source".to_string(), format!("./{name}"))].into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["GREETING=hi there".into()],
        ..CreateSpec::default()
    }
}

async fn wait_for(
    runtime: &Runtime,
    name: &str,
    what: &str,
    done: impl Fn(&ServiceInfo) -> bool,
) -> ServiceInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = runtime.read(&admin(), "", name, "").unwrap();
        if let Some(info) = found.first()
            && done(info)
        {
            return info.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {name} to be {what}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_lines(runtime: &Runtime, name: &str) -> Vec<String> {
    let mut rx = runtime.logs(&admin(), "", name, 100, false).await.unwrap();
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line.message);
    }
    lines
}

fn group_alive(pid: u32) -> bool {
    killpg(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_ok()
}

async fn wait_gone(pid: u32) {
    for _ in 0..100 {
        if !group_alive(pid) && kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} is still running");
}

#[tokio::test]
async fn command_service_runs_logs_and_is_deleted() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let script = "echo \"Listening on 127.0.0.1:1\"; echo \"env $MICRO_SERVICE_NAME $MICRO_SERVICE_VERSION $MICRO_NAMESPACE $MICRO_AUTH_ID $MICRO_SERVER_ADDRESS $MICRO_SERVICE_ADDRESS $OTEL_EXPORTER_OTLP_ENDPOINT home=${MICRO_HOME:-unset} $GREETING\"; echo Registered; sleep 30";
    f.runtime.create(&admin(), "", command_spec("hello", dir.path(), script)).await.unwrap();

    let info = wait_for(&f.runtime, "hello", "running", |i| i.status == Status::Running).await;
    assert_eq!((info.version.as_str(), info.metadata["status"].as_str()), ("latest", "running"));
    assert_eq!(info.metadata["source"], "./hello");
    assert_eq!(info.metadata["owner"], "admin");
    assert_eq!(info.metadata["group"], "micro");
    assert_eq!(info.metadata["restarts"], "0");
    assert!(info.metadata["started"].ends_with('Z') && !info.metadata["build"].is_empty(), "{info:?}");
    assert_eq!(info.status.code(), 4);

    // Registered comes after Listening on: once it is in the log, so is the env line.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = log_lines(&f.runtime, "hello").await;
        if lines.iter().any(|l| l == "Registered") || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lines[0], "Listening on 127.0.0.1:1");
    assert_eq!(
        lines[1],
        // Spans go to the server's OTLP receiver (docs/observability.md#traces).
        "env hello latest micro svc.hello.latest 127.0.0.1:1 127.0.0.1:0 http://127.0.0.1:1 home=unset hi there"
    );
    let accounts = f.auth.list_accounts("micro").await.unwrap();
    let account = accounts.iter().find(|a| a.id == "svc.hello.latest").expect("the service has an account");
    assert_eq!((account.kind.as_str(), account.scopes.clone()), ("service", vec!["service".to_string()]));
    assert_eq!(account.metadata.get("runtime.service").map(String::as_str), Some("hello"));
    assert_eq!(account.metadata.get("runtime.version").map(String::as_str), Some("latest"));

    let again = f.runtime.create(&admin(), "", command_spec("hello", dir.path(), script)).await;
    assert_eq!(again, Err(RuntimeError::AlreadyExists("service hello already exists".into())));
    let stranger = Context::member("foo");
    assert_eq!(
        f.runtime.create(&stranger, "micro", command_spec("x", dir.path(), script)).await,
        Err(RuntimeError::Denied(micro_core::Denied::Namespace))
    );
    assert!(f.runtime.read(&stranger, "micro", "", "").is_err());
    // A tenant acts in its own namespace, but never runs a command or a server-local source.
    let forbidden = |result: Result<(), RuntimeError>, says: &str| match result {
        Err(RuntimeError::Forbidden(message)) => assert!(message.contains(says), "{message}"),
        other => panic!("expected Forbidden, got {other:?}"),
    };
    let tenant_command = CreateSpec { source: String::new(), ..command_spec("x", dir.path(), script) };
    forbidden(f.runtime.create(&stranger, "", tenant_command).await, "--command");
    let tenant_folder = CreateSpec { command: Vec::new(), ..command_spec("x", dir.path(), script) };
    forbidden(f.runtime.create(&stranger, "", tenant_folder.clone()).await, "server's own disk");
    let tenant_file_git = CreateSpec { source: "file:///tmp/x.git".into(), ..tenant_folder.clone() };
    forbidden(f.runtime.create(&stranger, "", tenant_file_git).await, "server's own disk");
    let mut service_account = admin();
    service_account.account.as_mut().unwrap().scopes = vec!["service".into()];
    forbidden(f.runtime.create(&service_account, "", tenant_folder).await, "server's own disk");
    let update = CreateSpec { name: "hello".into(), source: "/etc".into(), ..CreateSpec::default() };
    forbidden(f.runtime.update(&service_account, "", update).await, "server's own disk");
    assert!(
        f.runtime.read(&stranger, "", "", "").unwrap().is_empty(),
        "nothing was created; others see nothing"
    );
    let bad = CreateSpec { name: "../x".into(), ..command_spec("x", dir.path(), script) };
    assert!(matches!(f.runtime.create(&admin(), "", bad).await, Err(RuntimeError::Invalid(_))));

    // Follow: new lines arrive until the receiver is dropped.
    let mut follow = f.runtime.logs(&admin(), "", "hello", 1, true).await.unwrap();
    assert_eq!(follow.recv().await.unwrap().message, "Registered");

    let pid = f.runtime.pid("micro", "hello", "latest").expect("running");
    assert!(group_alive(pid));
    f.runtime.delete(&admin(), "", "hello", "").await.unwrap();
    wait_gone(pid).await;
    assert!(f.runtime.read(&admin(), "", "", "").unwrap().is_empty());
    assert!(!f.auth.list_accounts("micro").await.unwrap().iter().any(|a| a.id == "svc.hello.latest"));
    assert_eq!(
        f.runtime.logs(&admin(), "", "hello", 0, false).await.err(),
        Some(RuntimeError::NotFound("Logs not found for service hello".into()))
    );
    assert_eq!(
        f.runtime.delete(&admin(), "", "hello", "").await,
        Err(RuntimeError::NotFound("service hello not found".into()))
    );
    assert!(
        f.store
            .read(
                DATABASE,
                TABLE,
                "service/",
                micro_store::ReadOptions { prefix: true, ..Default::default() }
            )
            .await
            .unwrap()
            .is_empty()
    );
    drop(f.home);
}

#[tokio::test]
async fn crashing_service_is_restarted_with_backoff() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    f.runtime
        .create(&admin(), "", command_spec("crash", dir.path(), "echo starting; echo boom >&2; exit 3"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let info = wait_for(&f.runtime, "crash", "restarted 3 times", |i| {
        i.metadata["restarts"].parse::<u32>().unwrap() >= 3
    })
    .await;
    // 100 + 200 + 400 ms of backoff at least before the third crash is recorded.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(info.metadata.get("error").map(String::as_str), Some("exited with code 3: boom"), "{info:?}");
    let info = wait_for(&f.runtime, "crash", "error", |i| i.status == Status::Error).await;
    assert_eq!(info.metadata["status"], "error");
    let lines = log_lines(&f.runtime, "crash").await;
    assert!(lines.iter().filter(|l| *l == "boom").count() >= 3, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("micro: exited with code 3: boom; restarting in")),
        "{lines:?}"
    );

    // A clean exit is `stopped`, not restarted.
    f.runtime.create(&admin(), "", command_spec("once", dir.path(), "echo done")).await.unwrap();
    let info = wait_for(&f.runtime, "once", "stopped", |i| i.status == Status::Stopped).await;
    assert_eq!(info.metadata["restarts"], "0");
    f.runtime.delete(&admin(), "", "crash", "latest").await.unwrap();
    f.runtime.shutdown().await;
}

#[tokio::test]
async fn services_are_restored_after_reopen() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    f.runtime
        .create(&admin(), "", command_spec("keep", dir.path(), "echo Listening on x; sleep 30"))
        .await
        .unwrap();
    wait_for(&f.runtime, "keep", "running", |i| i.status == Status::Running).await;
    let first = f.runtime.pid("micro", "keep", "latest").unwrap();
    f.runtime.shutdown().await;
    wait_gone(first).await;

    // As if the server had been killed: a process of the service is still running, and the
    // record names it. The restore stops it before starting the service again.
    let mut orphan = std::process::Command::new("sleep")
        .arg("30")
        .env("MICRO_SERVICE_NAME", "keep")
        .env("MICRO_SERVICE_VERSION", "latest")
        .env("MICRO_NAMESPACE", "micro")
        .process_group(0)
        .spawn()
        .unwrap();
    let key = store_key("micro", "keep", "latest");
    let record = f.store.read(DATABASE, TABLE, &key, Default::default()).await.unwrap().remove(0);
    let mut desired: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(desired["pid"], first, "the running pid is recorded");
    desired["pid"] = orphan.id().into();
    let value = serde_json::to_vec(&desired).unwrap();
    f.store.write(DATABASE, TABLE, micro_store::Record::new(key, value)).await.unwrap();

    let reopened = Runtime::open(f.store.clone(), f.auth.clone(), options(f.home.path())).await.unwrap();
    assert_eq!(reopened.read(&admin(), "", "keep", "").unwrap()[0].status, Status::Pending);
    reopened.start("127.0.0.1:1");
    let info = wait_for(&reopened, "keep", "running again", |i| i.status == Status::Running).await;
    assert_eq!(info.metadata["source"], "./keep");
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "the leftover process was stopped: {status:?}");
    let second = reopened.pid("micro", "keep", "latest").unwrap();
    assert_ne!(first, second);
    reopened.shutdown().await;
    wait_gone(second).await;
}

fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        builder.append_data(&mut header, path, body.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn uploaded_and_git_sources_run() {
    let f = fixture().await;
    let bytes = tarball(&[("app/run.sh", "echo Listening on upload; sleep 30\n")]);
    let chunks: Vec<Result<Vec<u8>, RuntimeError>> = bytes.chunks(1024).map(|c| Ok(c.to_vec())).collect();
    let id = f.runtime.upload(&admin(), "up", "", tokio_stream::iter(chunks)).await.unwrap();
    assert!(id.starts_with("source://up:latest:"), "{id}");
    let spec = CreateSpec {
        name: "up".into(),
        source: id.clone(),
        command: vec!["sh".into(), "run.sh".into()],
        entrypoint: "app".into(),
        ..CreateSpec::default()
    };
    f.runtime.create(&admin(), "", spec).await.unwrap();
    let info = wait_for(&f.runtime, "up", "running", |i| i.status == Status::Running).await;
    assert_eq!((info.source.as_str(), info.metadata["source"].as_str()), (id.as_str(), id.as_str()));
    assert_eq!(info.metadata["build"].len(), 12);

    let too_big =
        tokio_stream::iter(vec![Ok(vec![0u8; 1]), Err(RuntimeError::Invalid("upload interrupted".into()))]);
    assert!(f.runtime.upload(&admin(), "up", "", too_big).await.is_err());
    let missing = CreateSpec {
        name: "gone".into(),
        source: "source://gone:latest:abcd".into(),
        ..CreateSpec::default()
    };
    assert!(matches!(f.runtime.create(&admin(), "", missing).await, Err(RuntimeError::NotFound(_))));

    // A bare repository with a branch, cloned by the runtime at that branch.
    let repo = tempfile::tempdir().unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    let work = repo.path().join("work");
    std::fs::create_dir_all(work.join("svc")).unwrap();
    std::fs::write(work.join("svc/run.sh"), "echo Listening on main; sleep 30\n").unwrap();
    git(&work, &["init", "-q"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "main"]);
    git(&work, &["checkout", "-qb", "feature"]);
    std::fs::write(work.join("svc/run.sh"), "echo Listening on feature; sleep 30\n").unwrap();
    git(&work, &["commit", "-qam", "feature"]);
    git(repo.path(), &["clone", "-q", "--bare", "work", "x.git"]);
    let source = format!("file://{}/x.git/svc@feature", repo.path().display());
    let spec = CreateSpec {
        name: "svc".into(),
        version: "feature".into(),
        source,
        command: vec!["sh".into(), "run.sh".into()],
        ..CreateSpec::default()
    };
    f.runtime.create(&admin(), "", spec).await.unwrap();
    let info = wait_for(&f.runtime, "svc", "running", |i| i.status == Status::Running).await;
    assert_eq!(info.version, "feature");
    let lines = log_lines(&f.runtime, "svc").await;
    assert!(lines.contains(&"Listening on feature".to_string()), "{lines:?}");
    f.runtime.shutdown().await;
}

#[tokio::test]
async fn cargo_service_is_built_and_run() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("tiny");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"Listening on {}\", std::env::var(\"MICRO_SERVICE_NAME\").unwrap()); \
         std::thread::sleep(std::time::Duration::from_secs(30)); }\n",
    )
    .unwrap();
    let spec =
        CreateSpec { name: "tiny".into(), source: krate.to_string_lossy().into(), ..CreateSpec::default() };
    f.runtime.create(&admin(), "", spec.clone()).await.unwrap();
    let info =
        wait_for(&f.runtime, "tiny", "running", |i| i.status == Status::Running || i.status == Status::Error)
            .await;
    assert_eq!(info.status, Status::Running, "{info:?} {:?}", log_lines(&f.runtime, "tiny").await);
    let lines = log_lines(&f.runtime, "tiny").await;
    assert!(lines.contains(&"Listening on tiny".to_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("Compiling tiny")), "build output goes to the log: {lines:?}");
    assert!(
        f.home.path().join("build/targets/micro/release/tiny").exists(),
        "the namespace's target dir is used"
    );

    // Update rebuilds from the (edited) source and restarts.
    std::fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"Listening on v2\"); std::thread::sleep(std::time::Duration::from_secs(30)); }\n",
    )
    .unwrap();
    let first = f.runtime.pid("micro", "tiny", "latest").unwrap();
    let bin = f.home.path().join("build/services/micro/tiny.latest/bin");
    let builds = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&bin).unwrap().map(|entry| entry.unwrap().path()).collect()
    };
    let before = builds();
    assert_eq!(before.len(), 1, "one folder per build: {before:?}");
    assert!(before[0].join("tiny").is_file(), "{before:?}");
    f.runtime.update(&admin(), "", CreateSpec { source: String::new(), ..spec }).await.unwrap();
    wait_gone(first).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !log_lines(&f.runtime, "tiny").await.contains(&"Listening on v2".to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", log_lines(&f.runtime, "tiny").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The update's binary went to a folder of its own (the old process's was never replaced
    // while it ran), and the old folder goes once the old process is stopped.
    wait_for(&f.runtime, "tiny", "swapped", |i| !i.metadata.contains_key("update")).await;
    let after = builds();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before);
    f.runtime.shutdown().await;
}

/// Everything a `Build.Read` stream sends until it ends, as text (an error as `ERR <message>`).
async fn collect_build(mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, RuntimeError>>) -> String {
    let mut text = String::new();
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(err) => text.push_str(&format!("ERR {err}")),
        }
    }
    text
}

/// A build's output is kept per service version (`Build.Read`): read right after `create`, the
/// stream waits for the build to begin, follows it and ends with it; the log holds cargo's status
/// lines and rustc's rendered error, and the service's error names `micro logs --build`. A
/// command service has no build, an unknown service none either, another namespace reads none,
/// and `delete` removes it.
#[tokio::test]
async fn build_output_is_kept_followed_and_read_back() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("broken");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(krate.join("src/main.rs"), "fn main() {\n    let x: i32 = \"text\";\n}\n").unwrap();
    let spec =
        CreateSpec { name: "broken".into(), source: krate.to_string_lossy().into(), ..CreateSpec::default() };
    f.runtime.create(&admin(), "", spec).await.unwrap();
    let stream = f.runtime.build_output(&admin(), "", "broken", "").await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), collect_build(stream))
        .await
        .expect("the stream ends when the build does");
    assert!(output.contains("Compiling broken v0.1.0"), "cargo's status lines: {output}");
    assert!(output.contains("error[E0308]: mismatched types"), "rustc's rendering: {output}");
    assert!(!output.contains('\u{1b}'), "no colour codes: {output:?}");
    assert!(output.trim_end().ends_with("micro: cargo build failed (exit status: 101)"), "{output}");
    let info = wait_for(&f.runtime, "broken", "failed", |i| i.status == Status::Error).await;
    assert!(info.metadata["error"].contains("see `micro logs --build broken`"), "{info:?}");
    let logged = log_lines(&f.runtime, "broken").await;
    assert!(logged.iter().any(|l| l.contains("error[E0308]")), "the service log has it too: {logged:?}");

    // Ended: read back whole, at once.
    let again = f.runtime.build_output(&admin(), "", "broken", "latest").await.unwrap();
    assert_eq!(collect_build(again).await, output);
    let path = f.home.path().join("logs/micro/build/broken.latest.log");
    assert!(path.is_file(), "{}", path.display());

    // Another namespace reads no build of micro's.
    let stranger = Context::with_account(
        "foo",
        micro_core::Account { id: "bob".into(), issuer: "foo".into(), ..Default::default() },
    );
    let denied = f.runtime.build_output(&stranger, "micro", "broken", "").await;
    assert!(matches!(denied, Err(RuntimeError::Denied(_))), "{denied:?}");

    // Unknown: not found at once. A command service: not found once it has started.
    let unknown = f.runtime.build_output(&admin(), "", "nosuch", "").await;
    assert!(
        matches!(&unknown, Err(RuntimeError::NotFound(m)) if m.contains("no such service")),
        "{unknown:?}"
    );
    let script = tempfile::tempdir().unwrap();
    f.runtime.create(&admin(), "", command_spec("script", script.path(), "echo hi; sleep 30")).await.unwrap();
    let stream = f.runtime.build_output(&admin(), "", "script", "").await.unwrap();
    let never = tokio::time::timeout(Duration::from_secs(60), collect_build(stream)).await.unwrap();
    assert!(never.starts_with("ERR ") && never.contains("has not been built"), "{never}");

    f.runtime.delete(&admin(), "", "broken", "").await.unwrap();
    assert!(!path.exists(), "delete removes the build log");
    f.runtime.shutdown().await;
}

/// Every service of the micro namespace, once each is running (or in error, for `failing`).
async fn wait_all(runtime: &Runtime, count: usize, failing: &[&str]) -> Vec<ServiceInfo> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = runtime.read(&admin(), "", "", "").unwrap();
        let settled = |i: &ServiceInfo| {
            if failing.contains(&i.name.as_str()) {
                i.status == Status::Error
            } else {
                i.status == Status::Running
            }
        };
        if all.len() == count && all.iter().all(settled) {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the services: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn service_accounts_never_touch_other_accounts() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let person = |id: &str, name: &str| micro_auth::NewAccount {
        id: id.into(),
        name: name.into(),
        secret: "s3cret-password".into(),
        ..Default::default()
    };
    // People whose id or name the old `<name>-<version>` scheme gave services `john@doe` and
    // `a-b@c`/`a@b-c`, and one squatting the new id of service `squat`.
    f.auth.generate("micro", person("john-doe", "")).await.unwrap();
    f.auth.generate("micro", person("", "a-b-c")).await.unwrap();
    f.auth.generate("micro", person("svc.squat.latest", "")).await.unwrap();
    let people = |accounts: &[micro_core::Account]| {
        let mut names: Vec<String> =
            accounts.iter().filter(|a| a.kind == "user").map(|a| a.name.clone()).collect();
        names.sort();
        names
    };
    let everyone = vec!["a-b-c".to_string(), "john-doe".into(), "svc.squat.latest".into()];

    let services =
        [("john", "doe"), ("a-b", "c"), ("a", "b-c"), ("x", "y/z"), ("x", "y_z"), ("squat", "latest")];
    for (name, version) in services {
        let spec = CreateSpec {
            version: version.into(),
            ..command_spec(name, dir.path(), "echo Registered; sleep 30")
        };
        f.runtime.create(&admin(), "", spec).await.unwrap();
    }
    let all = wait_all(&f.runtime, services.len(), &["squat"]).await;
    let squat = all.iter().find(|i| i.name == "squat").unwrap();
    assert!(
        squat.metadata["error"].starts_with("cannot create the service account"),
        "a squatted id stops the launch rather than taking the account over: {squat:?}"
    );

    let accounts = f.auth.list_accounts("micro").await.unwrap();
    assert_eq!(people(&accounts), everyone, "launches delete nobody's account");
    let mut ids: Vec<&str> = accounts.iter().filter(|a| a.kind == "service").map(|a| a.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["svc.a-b.c", "svc.a.b-c", "svc.john.doe", "svc.x.y_2fz", "svc.x.y_5fz"]);
    for account in accounts.iter().filter(|a| a.kind == "service") {
        let (name, version) = (&account.metadata["runtime.service"], &account.metadata["runtime.version"]);
        assert_eq!(account.id, account_id(name, version));
    }
    // The binaries of services whose old folder names met are kept apart too.
    let home = f.home.path();
    assert_ne!(binary_dir(home, "micro", "a-b", "c"), binary_dir(home, "micro", "a", "b-c"));
    assert_ne!(binary_dir(home, "micro", "x", "y/z"), binary_dir(home, "micro", "x", "y_z"));

    // A restart re-creates the service's own account, and a delete removes only that.
    let first = f.runtime.pid("micro", "john", "doe").unwrap();
    f.runtime
        .update(
            &admin(),
            "",
            CreateSpec { name: "john".into(), version: "doe".into(), ..CreateSpec::default() },
        )
        .await
        .unwrap();
    wait_gone(first).await;
    wait_all(&f.runtime, services.len(), &["squat"]).await;
    for (name, version) in services {
        f.runtime.delete(&admin(), "", name, version).await.unwrap();
    }
    let accounts = f.auth.list_accounts("micro").await.unwrap();
    assert_eq!(people(&accounts), everyone, "deletes remove nobody's account");
    assert!(accounts.iter().all(|a| a.kind == "user"), "every service account went: {accounts:?}");
    f.runtime.shutdown().await;
}

#[tokio::test]
async fn uploads_no_service_uses_are_swept_after_the_grace() {
    let home = tempfile::tempdir().unwrap();
    let store: Arc<dyn micro_store::Store> = Arc::new(micro_store::memory::MemoryStore::new());
    let auth_options =
        micro_auth::AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
    let auth = Arc::new(micro_auth::Auth::open(store.clone(), home.path(), auth_options).await.unwrap());
    let options = RuntimeOptions { upload_grace: Duration::from_secs(60), ..options(home.path()) };
    let runtime = Runtime::open(store, auth, options).await.unwrap();
    runtime.start("127.0.0.1:1");
    let upload = |name: &'static str, body: &'static str| {
        let runtime = runtime.clone();
        async move {
            let bytes = tarball(&[("run.sh", body)]);
            let chunks: Vec<Result<Vec<u8>, RuntimeError>> = vec![Ok(bytes)];
            runtime.upload(&admin(), name, "", tokio_stream::iter(chunks)).await.unwrap()
        }
    };
    let sources = home.path().join("sources");
    let folder = |id: &str| UploadId::parse(id).unwrap().dir(&sources, "micro");
    let age = |path: &Path| {
        let past = std::time::SystemTime::now() - Duration::from_secs(120);
        std::fs::File::open(path).unwrap().set_modified(past).unwrap();
    };

    let used = upload("used", "echo Registered; sleep 30\n").await;
    let unused = upload("unused", "echo never run\n").await;
    let spec = CreateSpec {
        name: "used".into(),
        source: used.clone(),
        command: vec!["sh".into(), "run.sh".into()],
        ..CreateSpec::default()
    };
    runtime.create(&admin(), "", spec).await.unwrap();
    wait_for(&runtime, "used", "running", |i| i.status == Status::Running).await;
    // What an interrupted upload and an interrupted unpack leave behind.
    std::fs::write(sources.join(".upload-0123456789abcdef"), b"partial").unwrap();
    std::fs::create_dir_all(sources.join("micro/.unpacking-0123456789abcdef/src")).unwrap();

    assert_eq!(runtime.sweep_uploads().await, 0, "everything is younger than the grace");
    assert!(folder(&unused).is_dir());

    for path in [folder(&used), folder(&unused), sources.join("micro/.unpacking-0123456789abcdef")] {
        age(&path);
    }
    age(&sources.join(".upload-0123456789abcdef"));
    assert_eq!(runtime.sweep_uploads().await, 3);
    assert!(folder(&used).is_dir(), "the running service's upload stays");
    assert!(!folder(&unused).exists(), "the unused upload went after the grace");
    assert!(!sources.join(".upload-0123456789abcdef").exists());
    assert!(!sources.join("micro/.unpacking-0123456789abcdef").exists());
    let gone = CreateSpec {
        name: "unused".into(),
        source: unused.clone(),
        command: vec!["true".into()],
        ..CreateSpec::default()
    };
    assert!(matches!(runtime.create(&admin(), "", gone).await, Err(RuntimeError::NotFound(_))));

    // Uploading the same source again brings it back, and an upload that finds its folder
    // already there marks it fresh, so it gets a whole grace period again.
    assert_eq!(upload("unused", "echo never run\n").await, unused);
    age(&folder(&unused));
    assert_eq!(upload("unused", "echo never run\n").await, unused);
    assert_eq!(runtime.sweep_uploads().await, 0);
    assert!(folder(&unused).is_dir());
    let staged: Vec<_> =
        std::fs::read_dir(sources.join("micro")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(staged.len(), 2, "no unpack is left aside: {staged:?}");
    runtime.shutdown().await;
}

/// A runtime with a table of its own (a server on a shared store) writes every state change to
/// that table — the supervisor's too — and reads it back after a restart; nothing lands in the
/// default table.
#[tokio::test]
async fn state_goes_to_the_runtimes_own_table_and_comes_back() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let own = RuntimeOptions { table: "runtime-server-one".into(), ..options(f.home.path()) };
    let runtime = Runtime::open(f.store.clone(), f.auth.clone(), own.clone()).await.unwrap();
    runtime.start("127.0.0.1:1");
    runtime
        .create(&admin(), "", command_spec("mine", dir.path(), "echo Listening on x; sleep 30"))
        .await
        .unwrap();
    wait_for(&runtime, "mine", "running", |i| i.status == Status::Running).await;
    let pid = runtime.pid("micro", "mine", "latest").unwrap();

    let key = store_key("micro", "mine", "latest");
    let record =
        f.store.read(DATABASE, "runtime-server-one", &key, Default::default()).await.unwrap().remove(0);
    let desired: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(desired["pid"], pid, "the supervisor's write (the pid) is in the runtime's own table");
    assert!(
        f.store.read(DATABASE, TABLE, &key, Default::default()).await.is_err(),
        "nothing in the default table"
    );
    runtime.shutdown().await;

    let reopened = Runtime::open(f.store.clone(), f.auth.clone(), own).await.unwrap();
    assert_eq!(reopened.read(&admin(), "", "mine", "").unwrap().len(), 1, "read back after a restart");
    assert!(f.runtime.read(&admin(), "", "mine", "").unwrap().is_empty(), "the other runtime never saw it");
}

/// A runtime whose readiness probe says yes once `gate` exists (and counts its questions).
async fn runtime_with_probe(
    f: &Fixture,
    gate: std::path::PathBuf,
    asked: Arc<std::sync::atomic::AtomicUsize>,
    ready_timeout: Duration,
) -> Runtime {
    let probe = ReadyProbe::new(move |launch: Launch| {
        let (gate, asked) = (gate.clone(), asked.clone());
        async move {
            assert_eq!(launch.name, "swap");
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            gate.exists()
        }
    });
    let own = RuntimeOptions {
        table: "runtime-probed".into(),
        ready: Some(probe),
        ready_timeout,
        ..options(f.home.path())
    };
    let runtime = Runtime::open(f.store.clone(), f.auth.clone(), own).await.unwrap();
    runtime.start("127.0.0.1:1");
    runtime
}

/// A service that says it is a micro service (`launch=`, as the framework's `Listening on`
/// does) and records each of its launches in `launches/`.
const LAUNCHING: &str = "echo \"Listening on x launch=$MICRO_LAUNCH_ID\"; mkdir -p launches; \
     echo \"$MICRO_AUTH_ID $MICRO_AUTH_SECRET\" > launches/$$; exec sleep 60";

fn launches(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("launches")).map_or(0, Iterator::count)
}

/// The account id and secret the process `pid` of [`LAUNCHING`] was started with.
fn credentials(dir: &Path, pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(dir.join("launches").join(pid.to_string())).unwrap();
    let (id, secret) = text.trim().split_once(' ').unwrap();
    (id.to_string(), secret.to_string())
}

/// Whether `(id, secret)` still logs in to namespace micro.
async fn logs_in(f: &Fixture, (id, secret): &(String, String)) -> bool {
    let credentials = micro_auth::Credentials::Secret { id: id.clone(), secret: secret.clone() };
    f.auth.token("micro", credentials, None).await.is_ok()
}

/// The ids of the accounts in namespace micro, sorted.
async fn account_ids(f: &Fixture) -> Vec<String> {
    let mut ids: Vec<String> =
        f.auth.list_accounts("micro").await.unwrap().into_iter().map(|a| a.id).collect();
    ids.sort();
    ids
}

fn persisted(record: &[micro_store::Record]) -> serde_json::Value {
    serde_json::from_slice(&record[0].value).unwrap()
}

#[tokio::test]
async fn an_update_swaps_pids_only_once_the_new_process_is_ready() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = runtime_with_probe(&f, gate.clone(), asked.clone(), Duration::from_secs(60)).await;
    let spec = command_spec("swap", dir.path(), LAUNCHING);
    runtime.create(&admin(), "", spec.clone()).await.unwrap();
    // The first launch has nothing to replace: it runs once it has listened a moment.
    wait_for(&runtime, "swap", "running", |i| i.status == Status::Running).await;
    let old = runtime.pid("micro", "swap", "latest").unwrap();

    runtime.update(&admin(), "", spec.clone()).await.unwrap();
    let info = runtime.read(&admin(), "", "swap", "").unwrap().remove(0);
    assert_eq!(info.status, Status::Running, "an update never marks a running service down: {info:?}");
    assert!(info.metadata.contains_key("update"), "{info:?}");
    // The new process runs beside the old one, which keeps serving until the new one is ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while launches(dir.path()) < 2 || asked.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second launch: {:?}",
            log_lines(&runtime, "swap").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = runtime.read(&admin(), "", "swap", "").unwrap().remove(0);
    assert_eq!(info.metadata["update"], "starting", "{info:?}");
    assert_eq!(info.status, Status::Running);
    assert_eq!(runtime.pid("micro", "swap", "latest"), Some(old), "the old process is still the service's");
    assert!(group_alive(old), "the old process serves until the new one is ready");
    // Each process has an account of its own: the old one's still logs in.
    let old_account = credentials(dir.path(), old);
    assert_eq!(old_account.0, "svc.swap.latest");
    assert!(logs_in(&f, &old_account).await, "the old process keeps its credentials during the update");

    std::fs::write(&gate, "").unwrap();
    let info = wait_for(&runtime, "swap", "swapped", |i| !i.metadata.contains_key("update")).await;
    assert_eq!(info.status, Status::Running, "{info:?}");
    let new = runtime.pid("micro", "swap", "latest").unwrap();
    assert_ne!(new, old);
    wait_gone(old).await;
    assert!(group_alive(new));
    let new_account = credentials(dir.path(), new);
    assert!(new_account.0.starts_with("svc.swap.latest~"), "{new_account:?}");
    assert!(logs_in(&f, &new_account).await);
    assert!(!logs_in(&f, &old_account).await, "the old process's account went with it");
    assert_eq!(account_ids(&f).await.iter().filter(|id| id.starts_with("svc.")).count(), 1);
    let key = store_key("micro", "swap", "latest");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let desired =
            persisted(&f.store.read(DATABASE, "runtime-probed", &key, Default::default()).await.unwrap());
        if desired["pid"] == new && desired["spare_pid"].is_null() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "persisted: {desired}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = log_lines(&runtime, "swap").await;
    assert!(lines.iter().any(|l| l.contains("the new version is ready")), "{lines:?}");

    // Kill still stops everything, and deletes the account.
    runtime.delete(&admin(), "", "swap", "").await.unwrap();
    wait_gone(new).await;
    assert!(!account_ids(&f).await.iter().any(|id| id.starts_with("svc.")), "{:?}", account_ids(&f).await);
}

#[tokio::test]
async fn a_failed_update_keeps_the_old_process_serving() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let never = dir.path().join("never");
    let runtime = runtime_with_probe(&f, never, asked, Duration::from_millis(1500)).await;
    let spec = command_spec("swap", dir.path(), LAUNCHING);
    runtime.create(&admin(), "", spec.clone()).await.unwrap();
    wait_for(&runtime, "swap", "running", |i| i.status == Status::Running).await;
    let old = runtime.pid("micro", "swap", "latest").unwrap();

    // The build fails (here: its entrypoint is missing): nothing new starts, the old one serves.
    let broken = CreateSpec { entrypoint: "missing".into(), ..spec.clone() };
    runtime.update(&admin(), "", broken).await.unwrap();
    let info = wait_for(&runtime, "swap", "failed", |i| {
        i.metadata.get("update").map(String::as_str) == Some("failed")
    })
    .await;
    assert_eq!(info.status, Status::Running, "{info:?}");
    assert!(info.metadata["update_error"].contains("entrypoint missing not found"), "{info:?}");
    assert!(!info.metadata.contains_key("error"), "the service itself is fine: {info:?}");
    assert_eq!(runtime.pid("micro", "swap", "latest"), Some(old));
    assert!(group_alive(old));
    assert_eq!(launches(dir.path()), 1);
    let lines = log_lines(&runtime, "swap").await;
    assert!(lines.iter().any(|l| l.contains("update failed") && l.contains("keeps serving")), "{lines:?}");

    // A new process that is never ready is stopped after the ready timeout; the old one stays.
    runtime.update(&admin(), "", spec.clone()).await.unwrap();
    let info = wait_for(&runtime, "swap", "failed", |i| {
        i.metadata.get("update").map(String::as_str) == Some("failed")
    })
    .await;
    assert!(info.metadata["update_error"].contains("not ready"), "{info:?}");
    assert_eq!(launches(dir.path()), 2, "the new process was started");
    assert_eq!(runtime.pid("micro", "swap", "latest"), Some(old));
    assert!(group_alive(old));
    let candidate: u32 = std::fs::read_dir(dir.path().join("launches"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .find(|pid| *pid != old)
        .unwrap();
    wait_gone(candidate).await;
    // The old process still logs in; the failed one's account is gone.
    assert!(logs_in(&f, &credentials(dir.path(), old)).await, "a failed update leaves the old credentials");
    assert!(!logs_in(&f, &credentials(dir.path(), candidate)).await);
    let ids = account_ids(&f).await;
    assert_eq!(
        ids.iter().filter(|id| id.starts_with("svc.")).collect::<Vec<_>>(),
        ["svc.swap.latest"],
        "{ids:?}"
    );
    let desired = persisted(
        &f.store
            .read(DATABASE, "runtime-probed", &store_key("micro", "swap", "latest"), Default::default())
            .await
            .unwrap(),
    );
    assert_eq!(desired["pid"], old, "{desired}");
    assert!(desired["spare_pid"].is_null(), "{desired}");
    assert_eq!(desired["entrypoint"], "", "the desired state is the running version's: {desired}");
    runtime.shutdown().await;
    wait_gone(old).await;
}
