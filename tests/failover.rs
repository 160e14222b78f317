//! A node that dies without deregistering stays in the registry until its TTL passes (90 s by
//! default). Meanwhile the gateway and the proxy pass over it: they choose nodes through the one
//! node pool (crates/micro-server/src/nodes.rs), which sends a call on to the next node when a
//! node cannot be connected, and then tries that node last.

mod common;

use std::time::Duration;

use common::{Server, Service, eventually, http_request, stderr, stdout};

#[test]
fn calls_pass_over_a_killed_node_while_it_is_still_registered() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let live = Service::start_helloworld(&server, &[]);
    let killed = Service::start_helloworld(&server, &[]);
    let killed_address = killed.address.clone();
    let registered =
        || server.ok(&["call", "registry", "Registry.GetService", r#"{"service":"helloworld"}"#]);
    let nodes = registered();
    assert!(nodes.contains(&live.address) && nodes.contains(&killed_address), "{nodes}");

    let ns = [("Micro-Namespace", "micro")];
    let through_gateway = |name: &str| {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let (status, reply) = http_request(&server.http, "POST", "/helloworld/call", &ns, body.as_bytes());
        (status == 200 && reply.contains(&format!("Hello {name}")))
            .then_some(())
            .ok_or(format!("{status} {reply}"))
    };
    let through_proxy = |name: &str| {
        let output = server.micro(&["helloworld", &format!("--name={name}")]);
        (output.status.success() && stdout(&output).contains(&format!("Hello {name}")))
            .then_some(())
            .ok_or(format!("{}: {} {}", output.status, stdout(&output), stderr(&output)))
    };
    // Both edges hold connections to both nodes before one dies.
    for i in 0..4 {
        through_gateway(&format!("warm{i}")).unwrap();
        through_proxy(&format!("warm{i}")).unwrap();
    }

    let status = killed.signal(9);
    assert!(!status.success(), "SIGKILL ends it without a chance to deregister: {status}");
    assert!(registered().contains(&killed_address), "the killed node is still registered");

    let gateway_failures: Vec<String> =
        (0..100).filter_map(|i| through_gateway(&format!("g{i}")).err()).collect();
    let proxy_failures: Vec<String> =
        (0..100).filter_map(|i| through_proxy(&format!("p{i}")).err()).collect();

    // Still listed after the calls, so it was listed throughout them.
    assert!(registered().contains(&killed_address), "the killed node stayed registered during the calls");
    assert!(
        gateway_failures.is_empty(),
        "gateway: {} failed out of 100: {gateway_failures:?}",
        gateway_failures.len()
    );
    assert!(
        proxy_failures.is_empty(),
        "proxy: {} failed out of 100: {proxy_failures:?}",
        proxy_failures.len()
    );
    // The calls did meet the killed node, and went on past it.
    let passed_over = format!("node={killed_address}");
    let logged = || {
        server
            .log()
            .lines()
            .any(|line| line.contains("node could not be reached") && line.contains(&passed_over))
    };
    assert!(eventually(Duration::from_secs(10), logged), "{}", server.log());
    drop(live);
}
