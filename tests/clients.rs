//! The documented clients of docs/clients.md, run as a user would run them. Python (grpcio):
//! protos from `micro proto`, code from `grpcio-tools` (the venv scripts/services installs,
//! `MICRO_TEST_PYTHON`), and docs/clients/python/call.py, which the documentation shows
//! verbatim, logging in with `Auth.Token` and calling `Helloworld.Call` through :8081.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Server, Service, needed_env};

/// The Python client docs/clients.md shows, as a path from the workspace root.
const PYTHON_CLIENT: &str = "docs/clients/python/call.py";

fn workspace(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|err| panic!("{command:?} does not run: {err}"))
}

#[test]
fn a_python_grpcio_client_generated_from_micro_proto_calls_helloworld() {
    let Some(python) =
        needed_env("MICRO_TEST_PYTHON", "a_python_grpcio_client_generated_from_micro_proto_calls_helloworld")
    else {
        return;
    };
    let source = std::fs::read_to_string(workspace(PYTHON_CLIENT)).unwrap();
    let docs = std::fs::read_to_string(workspace("docs/clients.md")).unwrap();
    assert!(
        docs.contains(&format!("```python\n{source}```")),
        "docs/clients.md shows {PYTHON_CLIENT} verbatim"
    );

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);
    // helloworld for accounts only: denied to everyone, granted above that to any account.
    common::accounts_only(&server, "helloworld");

    // As docs/clients.md, "Python (grpcio)": the protos, then the generated code.
    let dir = tempfile::tempdir().unwrap();
    let (protos, generated) = (dir.path().join("protos"), dir.path().join("gen"));
    std::fs::create_dir_all(&generated).unwrap();
    let mut files = Vec::new();
    for service in ["helloworld", "auth"] {
        let written = server.ok(&["proto", service, "--out", protos.to_str().unwrap()]);
        files.extend(written.lines().map(str::to_string));
    }
    let protoc = run(Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&protos)
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .args(&files));
    assert!(protoc.status.success(), "grpc_tools.protoc {files:?}: {}", common::stderr(&protoc));

    let call = |flags: &[&str]| {
        run(Command::new(&python)
            .arg(workspace(PYTHON_CLIENT))
            .arg(&server.grpc)
            .args(flags)
            .env("PYTHONPATH", &generated))
    };
    let answered = call(&[]);
    assert!(answered.status.success(), "{}", common::stderr(&answered));
    assert_eq!(common::stdout(&answered), "Hello Jane\n");

    let refused = call(&["--anonymous"]);
    assert!(!refused.status.success(), "{}", common::stdout(&refused));
    let stderr = common::stderr(&refused);
    assert!(stderr.starts_with("UNAUTHENTICATED: "), "no token, no call: {stderr}");
}
