//! A flood of bad logins against the real binary (docs/security.md, "Logins and tokens"): the
//! flood is answered with 401 or a fast 429 + `Retry-After`, and a good login from another
//! address still gets through while it goes on.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{HttpReply, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bad logins sent at once.
const FLOOD: usize = 200;
/// The flood comes from these two loopback addresses; the good login from a third.
const FLOODERS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];
const GOOD_PEER: &str = "127.0.0.3";

/// How long the good login may take before the test calls it starved. The promise is 2 s
/// (measured 0.17–0.27 s, printed on every run); the bound is far wider so that a slow, loaded
/// machine cannot fail the test, which is about the login getting through at all.
const GOOD_LOGIN_BOUND: Duration = Duration::from_secs(30);

/// `POST /auth/token` with `body` to the gateway at `addr`, from local address `from`.
async fn login_from(addr: SocketAddr, from: &str, body: String) -> HttpReply {
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
    HttpReply::parse(&response)
}

#[test]
fn a_login_flood_is_refused_fast_and_a_good_login_still_gets_through() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &[]);
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    server.ok(&["auth", "create", "account", "--secret", "s3cret", "bob"]);
    let addr: SocketAddr = server.http.parse().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Flood logins answered so far: the good login's place in the flood, for the printout.
    let answered = Arc::new(AtomicUsize::new(0));
    let (flood, good, good_elapsed, answered_around_good, flood_elapsed) = runtime.block_on(async move {
        let started = Instant::now();
        let mut flood = tokio::task::JoinSet::new();
        for n in 0..FLOOD {
            // Half against one real account (its own limit), half guessing unknown ones.
            let id = if n % 2 == 0 { "bob".to_string() } else { format!("user{n}") };
            let body = format!(r#"{{"id":"{id}","secret":"wrong-{n}"}}"#);
            let (from, answered) = (FLOODERS[n / 2 % FLOODERS.len()], answered.clone());
            flood.spawn(async move {
                let reply = login_from(addr, from, body).await;
                answered.fetch_add(1, Ordering::SeqCst);
                reply
            });
        }
        // The good login goes once the flood is under way: the server has answered some of it.
        let first = flood.join_next().await.expect("the flood is not empty").expect("a flood login task");
        let answered_before = answered.load(Ordering::SeqCst);
        let good_started = Instant::now();
        let good = tokio::time::timeout(
            GOOD_LOGIN_BOUND,
            login_from(addr, GOOD_PEER, r#"{"id":"admin","secret":"micro"}"#.to_string()),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("the flood starved the good login: no answer within {GOOD_LOGIN_BOUND:?}")
        });
        let good_elapsed = good_started.elapsed();
        let answered_after = answered.load(Ordering::SeqCst);
        let flood: Vec<HttpReply> = std::iter::once(first).chain(flood.join_all().await).collect();
        (flood, good, good_elapsed, (answered_before, answered_after), started.elapsed())
    });

    let count = |status: u16| flood.iter().filter(|reply| reply.status == status).count();
    let (unauthenticated, throttled) = (count(401), count(429));
    println!(
        "{FLOOD} bad logins from {FLOODERS:?} in {flood_elapsed:?}: {unauthenticated} × 401, {throttled} × 429; \
         the good login from {GOOD_PEER} took {good_elapsed:?} (promised: within 2 s), while the flood's \
         answers went from {} to {} of {FLOOD}",
        answered_around_good.0, answered_around_good.1
    );
    for reply in &flood {
        assert!(matches!(reply.status, 401 | 429), "a bad login got {reply:?}");
        if reply.status == 429 {
            let secs: u64 = reply.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or_else(|| {
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

    // An access token is not a secret: exchanging one for tokens is refused like a wrong secret.
    let access = token["token"]["access_token"].as_str().unwrap();
    let body = format!(r#"{{"id":"admin","secret":"{access}"}}"#);
    let replay = runtime.block_on(login_from(addr, "127.0.0.4", body));
    assert_eq!(replay.status, 401, "{}", replay.body);
}
