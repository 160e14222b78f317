//! `micro store` end to end: the acceptance walkthrough of the foundation issue.

mod common;

use common::{Server, stderr, stdout};

#[test]
fn store_write_read_prefix_list_expiry_and_tables() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    assert_eq!(server.ok(&["store", "write", "somekey", "val1"]), "", "write prints nothing");
    assert_eq!(server.ok(&["store", "read", "somekey"]), "val1\n");

    server.ok(&["store", "write", "somekey1", "val1"]);
    server.ok(&["store", "write", "somekey2", "val2"]);
    server.ok(&["store", "delete", "somekey"]);
    assert_eq!(server.ok(&["store", "read", "--prefix", "somekey"]), "val1\nval2\n");
    assert_eq!(server.ok(&["store", "list"]), "somekey1\nsomekey2\n");
    assert_eq!(server.ok(&["store", "list", "--limit", "1", "--offset", "1"]), "somekey2\n");

    let missing = server.micro(&["store", "read", "somekey"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing).trim(), "Not found");
    assert_eq!(stdout(&missing), "");

    server.ok(&["store", "write", "many", "words", "in", "a", "value"]);
    assert_eq!(server.ok(&["store", "read", "many"]), "words in a value\n");

    let verbose = server.ok(&["store", "read", "-v", "somekey1"]);
    let header: Vec<&str> = verbose.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["KEY", "VALUE", "EXPIRY"]);
    assert!(verbose.lines().nth(1).unwrap().split_whitespace().eq(["somekey1", "val1", "None"]), "{verbose}");

    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["store", "read", "--output", "json", "somekey2"])).unwrap();
    assert_eq!(json[0]["key"], "somekey2");
    assert_eq!(json[0]["value"], "val2");

    server.ok(&["store", "write", "--expiry", "1s", "shortlived", "soon-gone"]);
    assert_eq!(server.ok(&["store", "read", "shortlived"]), "soon-gone\n");
    // Flags parse anywhere: after the value they are flags, not more words of it.
    server.ok(&["store", "write", "trailing", "v", "--expiry", "1h"]);
    let trailing = server.ok(&["store", "read", "-v", "trailing"]);
    let row: Vec<&str> = trailing.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["trailing", "v"], "{trailing}");
    assert_ne!(row[2], "None", "the record has a TTL: {trailing}");
    server.ok(&["store", "write", "dashed", "--", "-1"]);
    assert_eq!(server.ok(&["store", "read", "dashed"]), "-1\n", "a dashed value after --");
    // Waiting out a TTL, not a readiness wait: the record must be gone once it has expired.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let gone = server.micro(&["store", "read", "shortlived"]);
    assert_eq!(stderr(&gone).trim(), "Not found");
    assert!(!server.ok(&["store", "list"]).contains("shortlived"));

    server.ok(&["store", "write", "--table", "other", "somekey1", "elsewhere"]);
    assert_eq!(server.ok(&["store", "read", "--table", "other", "somekey1"]), "elsewhere\n");
    assert_eq!(server.ok(&["store", "read", "somekey1"]), "val1\n", "tables are independent");
    let tables = server.ok(&["store", "tables"]);
    let tables: Vec<&str> = tables.lines().collect();
    assert!(tables.contains(&"micro") && tables.contains(&"other"), "{tables:?}");
    assert!(tables.is_sorted(), "{tables:?}");
    assert!(server.ok(&["store", "databases"]).lines().any(|db| db == "micro"));

    let bad = server.micro(&["store", "write", "--expiry", "soon", "k", "v"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(stderr(&bad).contains("duration"), "{}", stderr(&bad));
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    for i in 0..20 {
        server.ok(&["store", "write", &format!("durable{i:02}"), &format!("value{i}")]);
    }
    server.ok(&["config", "set", "durable.flag", "true"]);
    let status = server.signal(9);
    assert!(!status.success(), "SIGKILL ends the server abnormally");

    let server = Server::start(home.path());
    assert_eq!(server.ok(&["store", "read", "durable19"]), "value19\n");
    assert_eq!(server.ok(&["store", "list", "--prefix", "durable"]).lines().count(), 20);
    assert_eq!(server.ok(&["config", "get", "durable.flag"]), "true\n");
}

#[test]
fn no_server_is_a_one_line_connection_error() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let ok = |args: &[&str]| assert!(common::micro_in(home.path(), args).status.success(), "{args:?}");
    ok(&["env", "add", "nowhere", &addr]);
    ok(&["env", "set", "nowhere"]);

    let output = common::micro_in(home.path(), &["store", "read", "x"]);
    assert_eq!(output.status.code(), Some(4));
    let message = stderr(&output);
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    assert!(message.contains(&format!("Failed to connect to micro server at {addr}")), "{message}");
    assert_eq!(stdout(&output), "");
}
