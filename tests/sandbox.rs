//! The runtime's sandbox through the real binary (docs/security.md, "Tenant code stays in its
//! box"): a service, and a tenant's build script, try to reach the server's state, other
//! services' files and the server process, and print one line per attempt; the tests read the
//! lines back with `micro logs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, stdout};

/// How long a script service may take to print its report.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);
/// How long the cold build of a dependency-free crate may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(300);

/// The probe: each attempt prints `<what>: allowed` or `<what>: denied`. `$PPID` is the server,
/// which starts the script's shell itself.
const PROBE: &str = r#"home="$PROBE_HOME"
server=$PPID
try() { what=$1; shift; if "$@" >/dev/null 2>&1; then echo "$what: allowed"; else echo "$what: denied"; fi; }
echo "server pid: $server"
try "auth_key" cat "$home/server/auth_key"
try "store" cat "$home/server/store/store.redb"
try "server dir" ls "$home/server"
try "server dir write" touch "$home/server/planted"
try "other source" cat "$PROBE_OTHER_SOURCE/run.sh"
try "other log" cat "$home/logs/micro/other.log"
try "server environ" cat "/proc/$server/environ"
try "server signal" kill -0 "$server"
try "own source write" sh -c 'echo mine > written && test "$(cat written)" = mine'
try "tmpdir write" sh -c 'echo t > "$TMPDIR/t" && test -s "$TMPDIR/t"'
try "system read" cat /etc/passwd
try "etc secrets" cat /etc/shadow
echo "probe done"
"#;

/// Polls `micro logs name` until it contains `needle`; returns the log.
fn wait_for_log(server: &Server, name: &str, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let logs = stdout(&server.micro(&["logs", "-n", "100", name]));
        if logs.contains(needle) {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log of {name}:\n{logs}\nstatus:\n{}\nserver log:\n{}",
            server.ok(&["status"]),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the server said at boot that this kernel has no Landlock (the tests then have
/// nothing to check).
fn no_landlock(server: &Server) -> bool {
    let log = server.log();
    if log.contains("the kernel has no Landlock") {
        assert!(!common::in_ci(), "CI must run the sandbox tests on a kernel with Landlock");
        eprintln!("skipped: this kernel has no Landlock");
        return true;
    }
    false
}

/// The `sandbox` metadata `micro status --output json` shows for `name`.
fn sandbox_of(server: &Server, name: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["status", name, "--output", "json"])).unwrap();
    json[0]["metadata"]["sandbox"].as_str().unwrap_or_default().to_string()
}

/// Starts `other` (a ticker) and `probe`; returns the probe's log once it is done, and the
/// folder `other`'s source was unpacked into.
fn run_probe(server: &Server, home: &Path, work: &Path) -> (String, std::path::PathBuf) {
    std::fs::create_dir_all(work.join("other")).unwrap();
    std::fs::write(work.join("other/run.sh"), "echo other secret; exec sleep 300\n").unwrap();
    server.ok_at(work, &["run", "./other", "--command", "sh run.sh"]);
    wait_for_log(server, "other", "other secret", SCRIPT_DEADLINE);
    let other_source = std::fs::read_dir(home.join("sources/micro"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.file_name().unwrap().to_string_lossy().starts_with("other-"))
        .expect("other's source is unpacked under sources/micro");
    // Each target exists, so a `denied` is the sandbox's doing.
    for path in [
        home.join("server/auth_key"),
        home.join("server/store/store.redb"),
        home.join("logs/micro/other.log"),
        other_source.join("run.sh"),
    ] {
        assert!(path.is_file(), "{} exists", path.display());
    }

    std::fs::create_dir_all(work.join("probe")).unwrap();
    std::fs::write(work.join("probe/run.sh"), PROBE).unwrap();
    let env = format!("PROBE_HOME={},PROBE_OTHER_SOURCE={}", home.display(), other_source.display());
    server.ok_at(work, &["run", "./probe", "--command", "sh run.sh", "--env_vars", &env]);
    (wait_for_log(server, "probe", "probe done", SCRIPT_DEADLINE), other_source)
}

/// The pid the probe saw as its parent: the server's own process.
fn server_pid(logs: &str) -> u32 {
    let pid: u32 = logs
        .lines()
        .find_map(|line| line.strip_prefix("server pid: "))
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("the probe names the server's pid:\n{logs}"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, std::fs::canonicalize(common::micro_bin()).unwrap(), "pid {pid} is the server");
    pid
}

/// A service started by the admin with `--command` (allowed) cannot read the signing key, the
/// store, another service's source or log, or the server's environment, nor signal the server;
/// it can write its own source and TMPDIR and read the system.
#[test]
fn a_service_cannot_reach_the_servers_state_other_services_or_the_server() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    if no_landlock(&server) {
        return;
    }
    assert!(server.log().contains("landlock (ABI"), "the boot log names the sandbox:\n{}", server.log());
    let (logs, _) = run_probe(&server, home.path(), work.path());
    server_pid(&logs);
    for denied in [
        "auth_key",
        "store",
        "server dir",
        "server dir write",
        "other source",
        "other log",
        "server environ",
        "server signal",
        "etc secrets",
    ] {
        assert!(logs.contains(&format!("{denied}: denied")), "{denied}: denied, in:\n{logs}");
    }
    for allowed in ["own source write", "tmpdir write", "system read"] {
        assert!(logs.contains(&format!("{allowed}: allowed")), "{allowed}: allowed, in:\n{logs}");
    }
    assert!(!home.path().join("server/planted").exists());
    assert_eq!(sandbox_of(&server, "probe"), "landlock");
    assert!(server.ok(&["status"]).contains("sandbox=landlock"), "micro status shows the sandbox");
    assert_eq!(sandbox_of(&server, "other"), "landlock");
    for name in ["probe", "other"] {
        server.ok(&["kill", name]);
    }
}

/// `--unsandboxed-runtime` is the explicit way out: a warning at boot, `sandbox: none`, and the
/// same probe reads everything (which also shows the probe can see what it is denied above).
#[test]
fn the_unsandboxed_runtime_flag_turns_the_sandbox_off() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--unsandboxed-runtime"]);
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    let log = server.log();
    assert!(log.contains("WARN") && log.contains("--unsandboxed-runtime"), "a warning at boot:\n{log}");
    let (logs, _) = run_probe(&server, home.path(), work.path());
    server_pid(&logs);
    for allowed in ["auth_key", "store", "other source", "other log", "server environ", "server signal"] {
        assert!(logs.contains(&format!("{allowed}: allowed")), "{allowed}: allowed, in:\n{logs}");
    }
    assert_eq!(sandbox_of(&server, "probe"), "none");
    let _ = std::fs::remove_file(home.path().join("server/planted"));
    for name in ["probe", "other"] {
        server.ok(&["kill", name]);
    }
}

/// A tenant's build script runs in the sandbox too: it cannot read the signing key or the store,
/// nor write the shared cargo registry; the service prints what its build script found.
#[test]
fn a_tenant_build_script_is_confined() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    if no_landlock(&server) {
        return;
    }
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    server.ok(&["user", "namespace", "set", "foo"]);
    server.ok(&["login", "--username", "bob", "--password", "s3cret"]);

    let krate = work.path().join("snoop");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"snoop\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    let registry = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"))
        .join("registry");
    std::fs::write(
        krate.join("build.rs"),
        format!(
            r#"fn main() {{
    let read = |path: &str| if std::fs::read(path).is_ok() {{ "allowed" }} else {{ "denied" }};
    let planted = {registry:?}.to_string() + "/snoop-planted";
    let write = if std::fs::write(&planted, "x").is_ok() {{ "allowed" }} else {{ "denied" }};
    println!(
        "cargo:rustc-env=PROBE=auth_key: {{}}; store: {{}}; registry write: {{}}",
        read({auth_key:?}),
        read({store:?}),
        write
    );
}}
"#,
            registry = registry.display().to_string(),
            auth_key = home.path().join("server/auth_key").display().to_string(),
            store = home.path().join("server/store/store.redb").display().to_string(),
        ),
    )
    .unwrap();
    std::fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"build found {}\", env!(\"PROBE\")); }\n",
    )
    .unwrap();
    server.ok_at(work.path(), &["run", "./snoop"]);
    let logs = wait_for_log(&server, "snoop", "build found", BUILD_DEADLINE);
    assert!(logs.contains("build found auth_key: denied; store: denied; registry write: denied"), "{logs}");
    assert!(!registry.join("snoop-planted").exists());
    assert_eq!(sandbox_of(&server, "snoop"), "landlock");
    server.ok(&["kill", "snoop"]);
}
