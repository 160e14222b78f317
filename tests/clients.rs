//! The documented clients of docs/clients.md, run as a user would run them. Python (grpcio):
//! protos from `micro proto`, code from `grpcio-tools` (the venv scripts/services installs,
//! `MICRO_TEST_PYTHON`), and docs/clients/python/call.py, which the documentation shows
//! verbatim, logging in with `Auth.Token` and calling `Helloworld.Call` through :8081. Go
//! (grpc-go): the same protos, code from protoc-gen-go and protoc-gen-go-grpc (Debian's packages,
//! which scripts/services installs: `MICRO_TEST_GO`, `MICRO_TEST_GOPATH`), and
//! docs/clients/go/main.go, shown verbatim too, built in GOPATH mode and run the same way.
//! curl: docs/clients/curl/call.sh, shown verbatim, logging in and calling through :8080 with
//! curl and jq (`MICRO_TEST_JQ`, which scripts/services installs when missing).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Server, Service, needed_env};

/// The Python client docs/clients.md shows, as a path from the workspace root.
const PYTHON_CLIENT: &str = "docs/clients/python/call.py";

/// The Go client docs/clients.md shows, as a path from the workspace root.
const GO_CLIENT: &str = "docs/clients/go/main.go";

/// The curl client docs/clients.md shows, as a path from the workspace root.
const CURL_CLIENT: &str = "docs/clients/curl/call.sh";

/// The Go import path docs/clients.md gives helloworld.proto with protoc's `M` flag: a user
/// service's proto names no `go_package`, and protoc-gen-go needs one.
const GO_HELLOWORLD: &str = "Mhelloworld.proto=micro.dev/proto/helloworld";

fn workspace(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|err| panic!("{command:?} does not run: {err}"))
}

/// `micro proto helloworld` and `micro proto auth` into `protos`, as docs/clients.md shows them;
/// returns the paths of the files written.
fn micro_protos(server: &Server, protos: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for service in ["helloworld", "auth"] {
        let written = server.ok(&["proto", service, "--out", protos.to_str().unwrap()]);
        files.extend(written.lines().map(str::to_string));
    }
    let names: Vec<_> = files.iter().map(|file| Path::new(file).strip_prefix(protos).unwrap()).collect();
    assert_eq!(
        names,
        [Path::new("helloworld.proto"), Path::new("auth/auth.proto")],
        "as docs/clients.md names them"
    );
    files
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
    let files = micro_protos(&server, &protos);
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

#[test]
fn a_go_grpc_client_generated_from_micro_proto_calls_helloworld() {
    let test = "a_go_grpc_client_generated_from_micro_proto_calls_helloworld";
    let Some(go) = needed_env("MICRO_TEST_GO", test) else { return };
    let Some(deps) = needed_env("MICRO_TEST_GOPATH", test) else { return };
    let source = std::fs::read_to_string(workspace(GO_CLIENT)).unwrap();
    let docs = std::fs::read_to_string(workspace("docs/clients.md")).unwrap();
    assert!(docs.contains(&format!("```go\n{source}```")), "docs/clients.md shows {GO_CLIENT} verbatim");
    assert!(docs.contains(&format!("--go_opt={GO_HELLOWORLD}")), "docs/clients.md names the M flag");

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);
    common::accounts_only(&server, "helloworld");

    // As docs/clients.md, "Go (grpc-go)": the protos, the generated code under a GOPATH (auth
    // by its go_package, helloworld by the M flag), then `go run` in GOPATH mode.
    let dir = tempfile::tempdir().unwrap();
    let (protos, gopath) = (dir.path().join("protos"), dir.path().join("go"));
    let sources = gopath.join("src");
    std::fs::create_dir_all(&sources).unwrap();
    let files = micro_protos(&server, &protos);
    let protoc = run(Command::new("protoc")
        .arg("-I")
        .arg(&protos)
        .arg(format!("--go_out={}", sources.display()))
        .arg(format!("--go-grpc_out={}", sources.display()))
        .arg(format!("--go_opt={GO_HELLOWORLD}"))
        .arg(format!("--go-grpc_opt={GO_HELLOWORLD}"))
        .args(&files));
    assert!(protoc.status.success(), "protoc {files:?}: {}", common::stderr(&protoc));
    for generated in ["micro.dev/proto/auth/auth_grpc.pb.go", "micro.dev/proto/helloworld/helloworld.pb.go"] {
        assert!(sources.join(generated).is_file(), "protoc wrote {generated}");
    }

    let path = std::env::join_paths([gopath.as_path(), Path::new(&deps)]).unwrap();
    let call = |flags: &[&str]| {
        run(Command::new(&go)
            .arg("run")
            .arg(workspace(GO_CLIENT))
            .arg(&server.grpc)
            .args(flags)
            .env("GO111MODULE", "off")
            .env("GOPATH", &path)
            .env("GOFLAGS", ""))
    };
    let answered = call(&[]);
    assert!(answered.status.success(), "{}", common::stderr(&answered));
    assert_eq!(common::stdout(&answered), "Hello Jane\n");

    let refused = call(&["--anonymous"]);
    assert!(!refused.status.success(), "{}", common::stdout(&refused));
    let stderr = common::stderr(&refused);
    assert!(stderr.contains("UNAUTHENTICATED: "), "no token, no call: {stderr}");
}

#[test]
fn a_curl_script_logs_in_and_calls_helloworld_through_the_gateway() {
    let test = "a_curl_script_logs_in_and_calls_helloworld_through_the_gateway";
    let Some(jq) = needed_env("MICRO_TEST_JQ", test) else { return };
    let source = std::fs::read_to_string(workspace(CURL_CLIENT)).unwrap();
    let docs = std::fs::read_to_string(workspace("docs/clients.md")).unwrap();
    assert!(docs.contains(&format!("```sh\n{source}```")), "docs/clients.md shows {CURL_CLIENT} verbatim");

    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);
    common::accounts_only(&server, "helloworld");

    // jq where the script looks for it: on PATH.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&jq, bin.path().join("jq")).unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin.path().to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let api = format!("http://{}", server.http);
    let answered = run(Command::new("sh").arg(workspace(CURL_CLIENT)).arg(&api).env("PATH", &path));
    assert!(answered.status.success(), "{}", common::stderr(&answered));
    assert_eq!(common::json(&common::stdout(&answered)), serde_json::json!({"msg": "Hello Jane"}));

    // The same call without the login: the 401 the script's `curl -f` turns into a failure.
    let anonymous = run(Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{api}/helloworld/Helloworld/Call"))
        .args(["-H", "Content-Type: application/json", "-d", r#"{"name": "Jane"}"#]));
    assert_eq!(common::stdout(&anonymous), "401", "no token, no call");
}
