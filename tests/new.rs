//! `micro new`: the generated project's names and files, its errors, and that it builds.

mod common;

use std::path::Path;
use std::process::Command;

use common::{micro_cmd, stderr, stdout};

fn new_in(dir: &Path, args: &[&str]) -> std::process::Output {
    let home = dir.join(".micro-home");
    let mut cmd = micro_cmd(&home);
    cmd.current_dir(dir).arg("new").args(args);
    cmd.output().expect("the micro binary runs")
}

#[test]
fn names_become_packages_and_services() {
    let temp = tempfile::tempdir().unwrap();
    for (name, package, service, server) in [
        ("foobar", "foobar", "Foobar", "foobar_server::FoobarServer"),
        ("foo-bar", "foobar", "FooBar", "foo_bar_server::FooBarServer"),
        ("foo-bar-baz", "foobarbaz", "FooBarBaz", "foo_bar_baz_server::FooBarBazServer"),
    ] {
        let output = new_in(temp.path(), &[name]);
        assert!(output.status.success(), "micro new {name}: {}", stderr(&output));
        let out = stdout(&output);
        assert!(out.starts_with(&format!("Creating service {name}\n")), "{out}");
        for file in ["Cargo.toml", "build.rs", "src/main.rs", "src/handler.rs", "README.md", ".gitignore"] {
            assert!(out.contains(&format!("{name}/{file}")), "{file} is listed: {out}");
        }
        assert!(out.contains(&format!("{name}/proto/{name}.proto")));
        assert!(
            out.contains(&format!("cd {name}")) && out.contains("micro run .") && out.contains("cargo run")
        );

        let dir = temp.path().join(name);
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        let proto = read(&format!("proto/{name}.proto"));
        assert!(proto.contains(&format!("package {package};")), "{proto}");
        assert!(proto.contains(&format!("service {service} {{")), "{proto}");
        let main = read("src/main.rs");
        assert!(main.contains(&format!("micro::include_proto!(\"{package}\");")), "{main}");
        assert!(main.contains(&format!("micro::Service::new(\"{name}\")")), "{main}");
        assert!(main.contains(&format!("{server}::new(")), "{main}");
        assert!(read("Cargo.toml").contains(&format!("name = \"{name}\"")));
    }

    let again = new_in(temp.path(), &["foo-bar"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(stderr(&again).trim(), "foo-bar already exists");
}

#[test]
fn bad_names_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let missing = new_in(temp.path(), &[]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("<NAME>"), "clap names the missing argument: {}", stderr(&missing));

    for path in ["/tmp/abs", "a/b", "../up"] {
        let output = new_in(temp.path(), &[path]);
        assert_eq!(output.status.code(), Some(1), "{path}");
        assert!(stderr(&output).contains("not a path"), "{path}: {}", stderr(&output));
    }
    let upper = new_in(temp.path(), &["FooBar"]);
    assert_eq!(upper.status.code(), Some(1));
    assert!(stderr(&upper).contains("Invalid service name \"FooBar\""), "{}", stderr(&upper));
    assert_eq!(
        std::fs::read_dir(temp.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != ".micro-home")
            .count(),
        0,
        "nothing was created"
    );
}

/// The generated project builds on its own (not as part of this workspace), in release mode as
/// `micro run` builds it. Its dependencies are compiled into `target/service-build`, which the
/// runtime tests then reuse as the server's build dir; `micro new` copies the SDK's lock file,
/// so both builds resolve the versions this repository is tested with.
#[test]
fn the_generated_service_builds() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let temp = tempfile::tempdir().unwrap();
    let output = new_in(temp.path(), &["foo-bar"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let project = temp.path().join("foo-bar");
    assert!(project.join("Cargo.lock").is_file(), "the SDK's lock file is copied");

    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet"])
        .current_dir(&project)
        // The server builds each namespace's services in a target dir of its own.
        .env("CARGO_TARGET_DIR", workspace.join(common::SERVICE_BUILD_DIR).join("micro"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(build.status.success(), "cargo build of the generated service failed:\n{}", stderr(&build));
    assert!(workspace.join(common::SERVICE_BUILD_DIR).join("micro/release/foo-bar").exists());
}
