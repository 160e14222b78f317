//! gRPC reflection on :8081 through the real binary, with `buf curl` (npm's `@bufbuild/buf`,
//! installed by scripts/services as `MICRO_TEST_BUF`): it lists helloworld while it runs and
//! not after it is killed, and calls `Helloworld.Call` with no schema given, the types coming
//! from the descriptors helloworld registered (docs/clients.md, "buf curl / grpcurl").

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{Server, Service, eventually, needed_env};

/// `buf curl args...` against the server's :8081, over plain-text HTTP/2.
fn buf_curl(buf: &str, args: &[&str]) -> Output {
    Command::new(buf).arg("curl").args(args).output().expect("buf runs")
}

fn listed(buf: &str, server: &Server) -> String {
    let output = buf_curl(
        buf,
        &[
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-services",
            &format!("http://{}", server.grpc),
        ],
    );
    assert!(output.status.success(), "buf curl --list-services: {}", common::stderr(&output));
    common::stdout(&output)
}

#[test]
fn buf_curl_lists_and_calls_registered_services_by_reflection() {
    let Some(buf) =
        needed_env("MICRO_TEST_BUF", "buf_curl_lists_and_calls_registered_services_by_reflection")
    else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    // A short TTL, so that once killed it leaves the registry within seconds.
    let hello = Service::start_helloworld(
        &server,
        &[("MICRO_REGISTER_TTL", "2s"), ("MICRO_REGISTER_INTERVAL", "500ms")],
    );
    let token = server.ok(&["user", "token"]).trim().to_string();

    let services = listed(&buf, &server);
    let names: Vec<&str> = services.lines().collect();
    assert!(names.contains(&"helloworld.Helloworld"), "{services}");
    assert!(
        names.contains(&"store.Store") && names.contains(&"auth.Auth"),
        "and the core services: {services}"
    );
    assert!(!names.contains(&"store.BlobStore"), "only what is served: {services}");

    let call = |headers: &[String]| {
        let mut args = vec!["--protocol", "grpc", "--http2-prior-knowledge", "-d", r#"{"name":"x"}"#];
        for header in headers {
            args.extend(["-H", header.as_str()]);
        }
        let url = format!("http://{}/helloworld.Helloworld/Call", server.grpc);
        args.push(&url);
        buf_curl(&buf, &args)
    };
    let answered = call(&[format!("authorization: Bearer {token}"), "micro-namespace: micro".into()]);
    assert!(answered.status.success(), "buf curl Call: {}", common::stderr(&answered));
    let reply: serde_json::Value = serde_json::from_str(&common::stdout(&answered)).unwrap();
    assert_eq!(reply, serde_json::json!({"msg": "Hello x"}));

    // A schema-less call still meets the gate: the token is what admits it.
    let forged = call(&["authorization: Bearer a.b.c".into()]);
    assert!(!forged.status.success());
    assert!(common::stderr(&forged).contains("unauthenticated"), "{}", common::stderr(&forged));

    // Killed, nobody deregisters it: it leaves the registry, and reflection, when its TTL ends.
    hello.signal(9);
    assert!(
        eventually(Duration::from_secs(15), || !listed(&buf, &server)
            .lines()
            .any(|name| name == "helloworld.Helloworld")),
        "helloworld is still listed after it stopped"
    );
    let gone = call(&[format!("authorization: Bearer {token}")]);
    assert!(!gone.status.success(), "no schema, no call: {}", common::stdout(&gone));
}
