//! [`PostgresStore`] against a real PostgreSQL: the store conformance suite, schema creation
//! racing between servers, and losing and regaining the database at run time.
//!
//! Tests that need a database read `MICRO_TEST_POSTGRES_URL` (scripts/test starts one and sets
//! it); without it they print that they were skipped (in CI they fail). Connection failures need no database.

use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use micro_backend_postgres::PostgresStore;
use micro_store::{ListOptions, ReadOptions, Record, Store, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Whether this run is CI's (`CI` set to anything but empty, `false` or `0`): there, a test
/// whose service is missing fails instead of skipping, so a skip is never all CI reports.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.trim(), "" | "false" | "0"))
}

/// The test database's URL, or `None` after printing that `test` was skipped (in CI: fails).
fn database_url(test: &str) -> Option<String> {
    match std::env::var("MICRO_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(!in_ci(), "{test}: MICRO_TEST_POSTGRES_URL is not set, and CI must run this test");
            eprintln!("skipped {test}: MICRO_TEST_POSTGRES_URL is not set (scripts/test sets it)");
            None
        }
    }
}

/// A unique name for this run's schemas and records.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}")
}

/// Runs `sql` on its own connection to `url`, outside any store.
async fn admin(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap_or_else(|err| panic!("{sql}: {err:?}"));
    drop(client);
    let _ = connection.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let Some(url) = database_url("conformance") else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let summary = store.summary();
    assert!(summary.starts_with("postgres at "), "{summary}");
    let password = tokio_postgres::Config::from_str(&url).unwrap().get_password().map(<[u8]>::to_vec);
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        let password = String::from_utf8_lossy(&password);
        assert!(!summary.contains(&format!(":{password}@")), "the summary hides the password: {summary}");
    }
    micro_store::conformance::run_all(Arc::new(store)).await;
    eprintln!("ran the store conformance suite against {summary}");
}

/// Several servers booting at once against an empty schema all succeed, and then share data:
/// what one writes the others read, with expiry on the database's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_booting_together_share_one_schema() {
    let Some(url) = database_url("servers_booting_together_share_one_schema") else { return };
    let schema = format!("micro_test_{}", run_id());
    admin(&url, &format!("CREATE SCHEMA {schema}")).await;
    // The schema chosen through the URL, as docs/production.md shows.
    let separator = if url.contains('?') { '&' } else { '?' };
    let url_in_schema = format!("{url}{separator}options=-c%20search_path%3D{schema}");

    let mut boots = JoinSet::new();
    for _ in 0..4 {
        let url = url_in_schema.clone();
        boots.spawn(async move { PostgresStore::connect(&url).await });
    }
    let stores: Vec<PostgresStore> = boots.join_all().await.into_iter().map(Result::unwrap).collect();

    stores[0].write("db", "t", Record::new("k", "from the first")).await.unwrap();
    stores[1].write("db", "t", Record::new("ttl", "v").with_expiry(Duration::from_secs(60))).await.unwrap();
    for store in &stores {
        let read = store.read("db", "t", "k", ReadOptions::default()).await.unwrap();
        assert_eq!(read[0].value, b"from the first");
        assert_eq!(store.list("db", "t", ListOptions::default()).await.unwrap(), ["k", "ttl"]);
        let ttl = store.read("db", "t", "ttl", ReadOptions::default()).await.unwrap()[0].expiry.unwrap();
        assert!(ttl > Duration::from_secs(50) && ttl <= Duration::from_secs(60), "{ttl:?}");
        assert_eq!(store.tables("db").await.unwrap(), ["t"]);
    }
    drop(stores);
    admin(&url, &format!("SELECT 1 FROM {schema}.micro_store_records")).await;
    admin(&url, &format!("DROP SCHEMA {schema} CASCADE")).await;
}

#[tokio::test]
async fn connecting_fails_fast_and_says_why() {
    let started = Instant::now();
    let err = PostgresStore::connect("postgres://nobody:hunter2@127.0.0.1:1/x").await.unwrap_err();
    let StoreError::Unavailable(message) = &err else { panic!("{err:?}") };
    assert!(message.starts_with("cannot connect to PostgreSQL at nobody@127.0.0.1:1/x: "), "{message}");
    assert!(message.to_lowercase().contains("refused"), "names the cause: {message}");
    assert!(!message.contains("hunter2"), "{message}");

    for (url, mentions) in [
        ("postgres://u@host:notaport/x", "invalid PostgreSQL URL"),
        ("postgres://u:hunter2@127.0.0.1/x?sslmode=require", "TLS"),
        ("postgres://u@127.0.0.1/x?frobnicate=1", "invalid PostgreSQL URL"),
    ] {
        let err = PostgresStore::connect(url).await.unwrap_err();
        let StoreError::Invalid(message) = &err else { panic!("{url}: {err:?}") };
        assert!(message.contains(mentions) && !message.contains("hunter2"), "{url}: {message}");
    }
    // Four refused connections take milliseconds; retrying until the connect timeout would
    // take it whole: the bound is the behaviour, with all the margin up to it.
    assert!(
        started.elapsed() < micro_backend_postgres::CONNECT_TIMEOUT,
        "no retries on a refused connection"
    );

    // A server that accepts the connection but never answers: the connect timeout (here the
    // URL's, in seconds) ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let url = format!("postgres://nobody@127.0.0.1:{port}/x?connect_timeout=1");
    let err = PostgresStore::connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let took = started.elapsed();
    // The URL's 1 s, not the default CONNECT_TIMEOUT (5 s), ended the wait.
    assert!(
        took >= Duration::from_millis(900) && took < micro_backend_postgres::CONNECT_TIMEOUT,
        "took {took:?}: {err}"
    );
    holder.abort();
}

/// A TCP forwarder to the database that the test can cut and restore, standing in for a
/// database that goes away and comes back.
struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<JoinSet<()>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn to(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (accept_up, accept_connections) = (up.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let upstream = upstream.clone();
                accept_connections.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, up, connections, _accept: accept }
    }

    /// Refuses new connections and cuts the open ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.connections.lock().unwrap().abort_all();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_is_unavailable_until_it_returns() {
    let Some(url) = database_url("losing_the_database_is_unavailable_until_it_returns") else { return };
    let direct = tokio_postgres::Config::from_str(&url).unwrap();
    let (Some(tokio_postgres::config::Host::Tcp(host)), port) =
        (direct.get_hosts().first(), direct.get_ports().first().copied().unwrap_or(5432))
    else {
        assert!(!in_ci(), "losing_the_database_is_unavailable_until_it_returns needs a TCP URL in CI");
        eprintln!("skipped losing_the_database_is_unavailable_until_it_returns: the URL is not TCP");
        return;
    };
    let link = Link::to(format!("{host}:{port}")).await;
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(link.port);
    if let Some(user) = direct.get_user() {
        config.user(user);
    }
    if let Some(password) = direct.get_password() {
        config.password(password);
    }
    if let Some(dbname) = direct.get_dbname() {
        config.dbname(dbname);
    }

    let store = PostgresStore::connect_with(config).await.unwrap();
    let db = format!("outage-{}", run_id());
    store.write(&db, "t", Record::new("before", "v")).await.unwrap();

    link.cut();
    // Every operation fails as Unavailable (never hangs, never Internal), whether it meets a
    // pooled connection that was cut or has to open a new one.
    for attempt in 0..3 {
        let write = store.write(&db, "t", Record::new("during", "v")).await;
        assert!(matches!(write, Err(StoreError::Unavailable(_))), "write {attempt}: {write:?}");
        let read = store.read(&db, "t", "before", ReadOptions::default()).await;
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "read {attempt}: {read:?}");
    }
    let Err(StoreError::Unavailable(message)) = store.list(&db, "t", ListOptions::default()).await else {
        panic!("list during the outage")
    };
    assert!(message.contains("PostgreSQL"), "{message}");

    link.restore();
    // The pool reconnects on demand: the first operation after the outage succeeds.
    store.write(&db, "t", Record::new("after", "v")).await.unwrap();
    assert_eq!(store.list(&db, "t", ListOptions::default()).await.unwrap(), ["after", "before"]);
}
