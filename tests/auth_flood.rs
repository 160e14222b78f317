//! A flood of bad logins against the real binary (docs/security.md, "Logins and tokens"): the
//! flood is answered with 401 or a fast 429 + `Retry-After`, and a good login from another
//! address still gets through while it goes on.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bad logins sent at once.
const FLOOD: usize = 200;
/// The flood comes from these two loopback addresses; the good login from a third.
const FLOODERS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];
const GOOD_PEER: &str = "127.0.0.3";

/// An answer: status, `Retry-After` when present, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// `POST /auth/token` with `body` to the gateway at `addr`, from local address `from`.
async fn login_from(addr: SocketAddr, from: &str, body: String) -> Reply {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.expect("the HTTP listener accepts");
    let request = format!(
        "POST /auth/token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let retry_after = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("retry-after").then(|| value.trim().to_string())
    });
    Reply { status, retry_after, body: body.to_string() }
}

#[test]
fn a_login_flood_is_refused_fast_and_a_good_login_still_gets_through() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &[]);
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    server.ok(&["auth", "create", "account", "--secret", "s3cret", "bob"]);
    let addr: SocketAddr = server.http.parse().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (flood, good, good_elapsed, flood_elapsed) = runtime.block_on(async move {
        let started = Instant::now();
        let mut flood = tokio::task::JoinSet::new();
        for n in 0..FLOOD {
            // Half against one real account (its own limit), half guessing unknown ones.
            let id = if n % 2 == 0 { "bob".to_string() } else { format!("user{n}") };
            let body = format!(r#"{{"id":"{id}","secret":"wrong-{n}"}}"#);
            flood.spawn(login_from(addr, FLOODERS[n / 2 % FLOODERS.len()], body));
        }
        // The good login goes once the flood is under way.
        tokio::task::yield_now().await;
        let good_started = Instant::now();
        let good = login_from(addr, GOOD_PEER, r#"{"id":"admin","secret":"micro"}"#.to_string()).await;
        let good_elapsed = good_started.elapsed();
        let flood = flood.join_all().await;
        (flood, good, good_elapsed, started.elapsed())
    });

    let count = |status: u16| flood.iter().filter(|reply| reply.status == status).count();
    let (unauthenticated, throttled) = (count(401), count(429));
    println!(
        "{FLOOD} bad logins from {FLOODERS:?} in {flood_elapsed:?}: {unauthenticated} × 401, {throttled} × 429; \
         the good login from {GOOD_PEER} took {good_elapsed:?}"
    );
    for reply in &flood {
        assert!(matches!(reply.status, 401 | 429), "a bad login got {reply:?}");
        if reply.status == 429 {
            let secs: u64 = reply.retry_after.as_deref().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                panic!("a 429 without a usable Retry-After: {reply:?}");
            });
            assert!(secs >= 1, "{reply:?}");
            assert!(reply.body.contains("retry in"), "{reply:?}");
        }
    }
    assert!(unauthenticated > 0, "some bad logins were checked and refused");
    assert!(throttled > 0, "the flood was throttled");
    assert!(
        flood.iter().any(|reply| reply.body.contains("MAX_FAILED_LOGINS_PER_PEER")),
        "the refusal names the limit"
    );

    assert_eq!(good.status, 200, "the good login failed: {good:?}");
    let token: Value = serde_json::from_str(&good.body).unwrap();
    assert!(token["token"]["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{}", good.body);
    // The bound is the issue's 2 s with a wide margin for slow, loaded machines; the figure
    // itself is printed above.
    assert!(good_elapsed < Duration::from_secs(30), "the good login took {good_elapsed:?}");

    // An access token is not a secret: exchanging one for tokens is refused like a wrong secret.
    let access = token["token"]["access_token"].as_str().unwrap();
    let body = format!(r#"{{"id":"admin","secret":"{access}"}}"#);
    let replay = runtime.block_on(login_from(addr, "127.0.0.4", body));
    assert_eq!(replay.status, 401, "{}", replay.body);
}
