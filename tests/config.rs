//! `micro config` end to end: dotted paths, merging, secrets.

mod common;

use common::{Server, stderr};

#[test]
fn config_paths_merge_and_secrets() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    assert_eq!(server.ok(&["config", "set", "a.b", r#"{"c":1}"#]), "");
    assert_eq!(server.ok(&["config", "get", "a"]), "{\"b\":{\"c\":1}}\n");
    assert_eq!(server.ok(&["config", "get", "a.b.c"]), "1\n");

    server.ok(&["config", "set", "a.b", r#"{"d":"two"}"#]);
    assert_eq!(server.ok(&["config", "get", "a.b"]), "{\"c\":1,\"d\":\"two\"}\n", "objects merge");
    assert_eq!(server.ok(&["config", "get", "a.b.d"]), "two\n", "string leaves print unquoted");

    server.ok(&["config", "set", "key.subkey", "val1"]);
    assert_eq!(server.ok(&["config", "get", "key.subkey"]), "val1\n", "non-JSON is a string");
    server.ok(&["config", "set", "mail", r#""Micro Team <support@m3o.com>""#]);
    assert_eq!(server.ok(&["config", "get", "mail"]), "Micro Team <support@m3o.com>\n");

    server.ok(&["config", "set", "--secret", "key.password", "hunter2"]);
    assert_eq!(server.ok(&["config", "get", "key.password"]), "[secret]\n");
    assert_eq!(server.ok(&["config", "get", "--secret", "key.password"]), "hunter2\n");
    server.ok(&["config", "set", "--secret", "key.pin", "42"]);
    assert_eq!(server.ok(&["config", "get", "key.pin"]), "[secret]\n");
    assert_eq!(server.ok(&["config", "get", "-s", "key.pin"]), "42\n");

    let stored = std::fs::read(home.path().join("server/store/store.redb")).unwrap();
    assert!(!stored.windows(7).any(|w| w == b"hunter2"), "secrets are sealed at rest");
    let key = home.path().join("server/config_secret_key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    assert_eq!(server.ok(&["config", "del", "a.b"]), "");
    let missing = server.micro(&["config", "get", "a.b"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing).trim(), "Not found");
    assert_eq!(server.ok(&["config", "get", "a"]), "{}\n");
}
