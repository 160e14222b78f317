//! `micro server --store postgres://...` end to end: boot failures are one clear line, and
//! store, config and auth data live in PostgreSQL, so they outlive the server and its
//! `MICRO_HOME`.
//!
//! The restart test needs a database: it reads `MICRO_TEST_POSTGRES_URL` (scripts/test starts
//! PostgreSQL and sets it) and prints that it was skipped without it (fails in CI).

#![cfg(feature = "postgres")]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, stderr};

/// Runs `micro server` with `args` on ephemeral ports in `home`, which must exit by itself
/// within `within`; kills it and fails the test otherwise.
fn server_exits(home: &std::path::Path, args: &[&str], within: Duration) -> Output {
    let mut child = common::micro_cmd(home)
        .args(["server", "--proxy-address", "127.0.0.1:0", "--api-address", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("micro server starts");
    let deadline = Instant::now() + within;
    while child.try_wait().expect("the server can be polled").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("micro server {args:?} was still running after {within:?}: {}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The lines of `output`'s stderr that are the CLI's error, not the server's log.
fn error_lines(output: &Output) -> Vec<String> {
    stderr(output).lines().filter(|line| line.starts_with("Error:")).map(str::to_string).collect()
}

#[test]
fn an_unreachable_or_malformed_postgres_url_fails_the_boot_in_one_line() {
    let home = tempfile::tempdir().unwrap();

    let started = Instant::now();
    let unreachable = server_exits(
        home.path(),
        &["--store", "postgres://nobody:hunter2@127.0.0.1:1/x"],
        Duration::from_secs(30),
    );
    assert_eq!(unreachable.status.code(), Some(1), "{}", stderr(&unreachable));
    let errors = error_lines(&unreachable);
    assert_eq!(errors.len(), 1, "one error line: {}", stderr(&unreachable));
    assert!(
        errors[0]
            .starts_with("Error: store unavailable: cannot connect to PostgreSQL at nobody@127.0.0.1:1/x: "),
        "{}",
        errors[0]
    );
    assert!(errors[0].to_lowercase().contains("connection refused"), "{}", errors[0]);
    let everything = stderr(&unreachable);
    assert!(!everything.contains("hunter2"), "the password is never printed: {everything}");
    assert!(!everything.contains("panicked"), "{everything}");
    assert!(started.elapsed() < Duration::from_secs(15), "fails fast, took {:?}", started.elapsed());

    let malformed = server_exits(
        home.path(),
        &["--store", "postgres://nobody@127.0.0.1:notaport/x"],
        Duration::from_secs(30),
    );
    assert_eq!(malformed.status.code(), Some(1), "{}", stderr(&malformed));
    let errors = error_lines(&malformed);
    assert_eq!(errors.len(), 1, "{}", stderr(&malformed));
    assert!(
        errors[0].starts_with("Error: invalid PostgreSQL URL (") && errors[0].contains("port"),
        "{}",
        errors[0]
    );

    // The same through the environment, as a deployment would set it.
    let output = common::micro_cmd(home.path())
        .env("MICRO_STORE", "postgresql://nobody@127.0.0.1:1/x")
        .args(["server", "--proxy-address", "127.0.0.1:0", "--api-address", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(error_lines(&output)[0].contains("cannot connect to PostgreSQL at nobody@127.0.0.1:1/x"));
}

#[test]
fn store_config_and_accounts_live_in_postgres_across_restarts() {
    let Some(url) = common::needed_env(
        "MICRO_TEST_POSTGRES_URL",
        "store_config_and_accounts_live_in_postgres_across_restarts",
    ) else {
        return;
    };
    // The database outlives test runs: names unique to this run keep them apart.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (key, path, account) = (format!("pg-e2e-{run}"), format!("pge2e{run}.flag"), format!("pg-{run}"));

    let first_home = tempfile::tempdir().unwrap();
    let server = Server::start_with(first_home.path(), &["--store", &url]);
    let log = server.log();
    assert!(log.contains("postgres at "), "the log names the store: {log}");
    assert!(!log.contains("store.redb"), "{log}");
    server.ok(&["login", "--username", "admin", "--password", "micro"]);

    server.ok(&["store", "write", &key, "kept in postgres"]);
    server.ok(&["store", "write", "--expiry", "1h", &format!("{key}-ttl"), "for a while"]);
    assert_eq!(server.ok(&["store", "read", &key]), "kept in postgres\n");
    server.ok(&["config", "set", &path, r#"{"on":true}"#]);
    assert_eq!(server.ok(&["config", "get", &format!("{path}.on")]), "true\n");
    server.ok(&["auth", "create", "account", "--secret", "s3cret", &account]);
    let status = server.signal(15);
    assert!(status.success(), "{status}");

    // A new server with a new MICRO_HOME: only the database connects the two.
    let second_home = tempfile::tempdir().unwrap();
    let server = Server::start_with(second_home.path(), &["--store", &url]);
    assert_eq!(
        server.ok(&["login", "--username", &account, "--password", "s3cret"]),
        "Successfully logged in.\n",
        "the account created through the first server"
    );
    server.ok(&["login", "--username", "admin", "--password", "micro"]);
    assert_eq!(server.ok(&["store", "read", &key]), "kept in postgres\n");
    assert_eq!(server.ok(&["store", "list", "--prefix", &key]), format!("{key}\n{key}-ttl\n"));
    let verbose = server.ok(&["store", "read", "-v", &format!("{key}-ttl")]);
    let row: Vec<&str> = verbose.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..row.len().min(4)], [format!("{key}-ttl").as_str(), "for", "a", "while"], "{verbose}");
    // Written with 1h moments ago (rounded up to the second): between 50 minutes and an hour
    // are left, whichever server reads it.
    let expiry = row.last().copied().unwrap_or_default();
    let seconds = go_seconds(expiry)
        .unwrap_or_else(|| panic!("the TTL survives as a duration, not {expiry:?}: {verbose}"));
    assert!((50 * 60..=60 * 60).contains(&seconds), "the TTL survives: {verbose}");
    assert_eq!(server.ok(&["config", "get", &path]), "{\"on\":true}\n");
    assert!(
        !second_home.path().join("server/store").exists(),
        "nothing is written to the file store when postgres is used"
    );
}

/// Seconds in a duration as the CLI prints one (`1h0m0s`, `59m58s`, `12s`).
fn go_seconds(text: &str) -> Option<u64> {
    let (mut total, mut number) = (0, String::new());
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total += number.parse::<u64>().ok()? * unit;
                number.clear();
            }
            _ => return None,
        }
    }
    number.is_empty().then_some(total)
}
