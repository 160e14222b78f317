//! The framework travels with the server (docs/runtime.md): a project made by `micro new` builds
//! against the SDK the binary installed, wherever the binary is, and the runtime builds a
//! project against its own SDK whatever its manifest says about `micro`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, micro_cmd, poll, stderr, stdout};

/// How long the one build of a service may take (its dependencies are usually compiled
/// already, in the shared build dir).
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

/// Whether `micro status` shows `name` in status `error`.
fn failed(server: &Server, name: &str) -> bool {
    server.ok(&["status"]).lines().any(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        columns.first() == Some(&name) && columns.get(3) == Some(&"error")
    })
}

/// `micro new` from a copy of the binary away from this checkout: the project depends on the
/// SDK it installed into `MICRO_SDK_DIR`, and builds offline.
#[test]
fn a_new_project_builds_against_the_installed_sdk() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = tempfile::tempdir().unwrap();
    let copy = bin.path().join("micro");
    // Copied by `cp`, not `std::fs::copy`: while this process holds the copy open for writing,
    // a process the other test forks inherits that descriptor until its exec, and running the
    // copy then fails with ETXTBSY ("Text file busy"). A `cp` child's descriptor is its own.
    let copied = Command::new("cp").arg(common::micro_bin()).arg(&copy).status().unwrap();
    assert!(copied.success(), "cp of the micro binary failed");
    let home = tempfile::tempdir().unwrap();
    let sdk = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();

    let mut new = Command::new(&copy);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MICRO_") {
            new.env_remove(key);
        }
    }
    let output = new
        .args(["new", "hello"])
        .current_dir(work.path())
        .env("MICRO_HOME", home.path())
        .env("MICRO_SDK_DIR", sdk.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "micro new: {}", stderr(&output));

    let version = env!("CARGO_PKG_VERSION");
    let installed = sdk.path().join(version);
    assert!(installed.join("crates/micro/Cargo.toml").is_file(), "the SDK is installed");
    assert!(!home.path().join("sdk").exists(), "MICRO_SDK_DIR moves it out of MICRO_HOME");
    let project = work.path().join("hello");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    let expected = format!(
        "micro = {{ version = \"{version}\", path = \"{}\" }}",
        installed.join("crates/micro").display()
    );
    assert!(manifest.contains(&expected), "{manifest}");
    assert!(
        !manifest.contains(&workspace.display().to_string()),
        "nothing points at the checkout: {manifest}"
    );

    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(&project)
        // The dependencies from crates.io are compiled already there (tests/new.rs, the runtime
        // tests); the SDK's crates are compiled anew, at their new path.
        .env("CARGO_TARGET_DIR", workspace.join(common::SERVICE_BUILD_DIR).join("micro"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(build.status.success(), "cargo build of the new project failed:\n{}", stderr(&build));
}

/// A project whose `micro` dependency points nowhere builds on the server, against the
/// server's SDK, and answers a call.
#[test]
fn the_runtime_builds_against_its_own_sdk() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    let made = micro_cmd(home.path()).current_dir(work.path()).args(["new", "hello"]).output().unwrap();
    assert!(made.status.success(), "micro new: {}", stderr(&made));
    let manifest_path = work.path().join("hello/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let nowhere: String = manifest
        .lines()
        .map(|line| match line.strip_prefix("micro = ") {
            Some(dep) if dep.contains("features") => {
                "micro = { path = \"/nonexistent/micro\", features = [\"build\"] }".to_string()
            }
            Some(_) => "micro = { path = \"/nonexistent/micro\" }".to_string(),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(nowhere.matches("/nonexistent/micro").count(), 2, "{nowhere}");
    std::fs::write(&manifest_path, nowhere + "\n").unwrap();

    assert_eq!(server.ok_at(work.path(), &["run", "./hello"]), "");
    // Until it answers, or stops at `error` (a failed build: no point waiting out the deadline).
    let mut answered = false;
    poll(BUILD_DEADLINE, Duration::from_millis(500), || {
        answered = stdout(&server.micro(&["hello", "--name=Alice"])).contains("Hello Alice");
        answered || failed(&server, "hello")
    });
    assert!(
        answered,
        "hello never answered; status:\n{}\nlogs:\n{}\nserver log:\n{}",
        server.ok(&["status"]),
        stdout(&server.micro(&["logs", "-n", "50", "hello"])),
        server.log()
    );
    let logs = server.ok(&["logs", "-n", "500", "hello"]);
    assert!(logs.contains(&format!("building with micro {}", env!("CARGO_PKG_VERSION"))), "{logs}");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join(common::SERVICE_SDK_DIR);
    assert!(shared.join(env!("CARGO_PKG_VERSION")).join(".digest").is_file(), "the server installed its SDK");
    server.ok(&["kill", "hello"]);

    // A project that needs another major version of micro is refused before cargo runs, and
    // the build log says why.
    let made = micro_cmd(home.path()).current_dir(work.path()).args(["new", "old"]).output().unwrap();
    assert!(made.status.success(), "micro new: {}", stderr(&made));
    let manifest_path = work.path().join("old/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let pinned = format!("version = \"{}\"", env!("CARGO_PKG_VERSION"));
    let newer: Vec<String> = manifest
        .lines()
        .map(|line| {
            if line.starts_with("micro = ") {
                line.replace(&pinned, "version = \"9\"")
            } else {
                line.to_string()
            }
        })
        .collect();
    let newer = newer.join("\n");
    assert_eq!(newer.matches("version = \"9\"").count(), 2, "{newer}");
    std::fs::write(&manifest_path, newer + "\n").unwrap();
    assert_eq!(server.ok_at(work.path(), &["run", "./old"]), "");
    poll(BUILD_DEADLINE, Duration::from_millis(200), || failed(&server, "old"));
    let build = server.ok(&["logs", "--build", "old"]);
    assert!(build.contains("this project needs micro 9; this server provides micro"), "{build}");
    server.ok(&["kill", "old"]);
}
