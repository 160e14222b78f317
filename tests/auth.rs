//! Auth end to end: logging in, namespace isolation, rules, accounts and the default admin.

mod common;

use common::{Server, stderr, stdout};

/// Adds env `anon` pointing at `server`: no login is saved there, so its calls are anonymous.
fn add_anonymous_env(server: &Server) {
    server.ok(&["env", "add", "anon", &server.grpc.clone()]);
}

#[test]
fn fresh_server_requires_login_then_admin_works() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &[]);

    let anonymous = server.micro(&["store", "read", "k"]);
    assert_eq!(anonymous.status.code(), Some(2));
    assert!(stderr(&anonymous).contains("An account is required"), "{}", stderr(&anonymous));
    let not_logged_in = server.micro(&["user"]);
    assert_eq!(stderr(&not_logged_in).trim(), "You are not logged in");

    let wrong = server.micro(&["login", "--username", "admin", "--password", "wrong"]);
    let unknown = server.micro(&["login", "--username", "nobody", "--password", "wrong"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("Invalid credentials"), "{}", stderr(&wrong));
    assert_eq!(stderr(&wrong), stderr(&unknown), "unknown accounts and bad passwords look the same");

    assert_eq!(
        server.ok(&["login", "--username", "admin", "--password", "micro"]),
        "Successfully logged in.\n"
    );
    server.ok(&["store", "write", "k", "v"]);
    assert_eq!(server.ok(&["store", "read", "k"]), "v\n");
    server.ok(&["config", "set", "a.b", "1"]);
    assert_eq!(server.ok(&["config", "get", "a.b"]), "1\n");
    assert_eq!(server.ok(&["user"]), "admin\n");
    assert_eq!(server.ok(&["user", "token"]).trim().split('.').count(), 3, "a JWT");
    let user_config = server.ok(&["user", "config"]);
    assert!(user_config.contains("user: admin") && user_config.contains("namespace: micro"), "{user_config}");

    use std::os::unix::fs::PermissionsExt;
    let tokens = std::fs::metadata(home.path().join("tokens.json")).unwrap();
    assert_eq!(tokens.permissions().mode() & 0o777, 0o600, "saved tokens are private");
    let key = std::fs::metadata(home.path().join("server/auth_key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "the signing key is private");

    let call = server.ok(&["call", "auth", "Auth.Token", r#"{"id":"admin","secret":"micro"}"#]);
    let reply: serde_json::Value = serde_json::from_str(&call).unwrap();
    assert!(reply["token"]["expiry"].is_string(), "int64 fields are strings: {call}");
    assert!(reply["token"]["access_token"].as_str().is_some_and(|t| !t.is_empty()), "{call}");

    server.ok(&["logout"]);
    assert_eq!(server.micro(&["store", "read", "k"]).status.code(), Some(2), "logged out");
}

#[test]
fn namespaces_are_isolated() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    let created = server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s", "bob"]);
    let json: serde_json::Value =
        serde_json::from_str(created.strip_prefix("Account created: ").expect("the original's prefix"))
            .unwrap();
    assert_eq!(
        (json["id"].as_str(), json["issuer"].as_str(), json["secret"].as_str()),
        (Some("bob"), Some("foo"), Some("s"))
    );
    let duplicate =
        server.micro(&["auth", "create", "account", "--namespace", "foo", "--secret", "t", "bob"]);
    assert!(stderr(&duplicate).contains("already exists"), "{}", stderr(&duplicate));

    server.ok(&["store", "write", "shared", "micro-value"]);
    server.ok(&["config", "set", "shared.key", "1"]);

    server.ok(&["user", "namespace", "set", "foo"]);
    assert_eq!(server.ok(&["user", "namespace"]), "foo\n");
    let admin_here = server.micro(&["login", "--username", "admin", "--password", "micro"]);
    assert_eq!(admin_here.status.code(), Some(2), "no default admin outside micro");
    assert_eq!(server.ok(&["login", "--username", "bob", "--password", "s"]), "Successfully logged in.\n");
    assert_eq!(server.ok(&["user"]), "bob\n");

    for args in [&["store", "read", "shared"][..], &["config", "get", "shared.key"]] {
        let missing = server.micro(args);
        assert_eq!(stderr(&missing).trim(), "Not found", "{args:?}");
    }
    server.ok(&["store", "write", "shared", "foo-value"]);
    assert_eq!(server.ok(&["store", "read", "shared"]), "foo-value\n");
    assert_eq!(server.ok(&["store", "databases"]), "foo\n", "foo sees only its own database");

    let reach = server.micro(&["store", "read", "--database", "micro", "shared"]);
    assert_eq!(reach.status.code(), Some(2));
    assert!(stderr(&reach).contains("Access denied to namespace"), "{}", stderr(&reach));
    for what in ["rules", "accounts"] {
        let foreign = server.micro(&["auth", "list", what, "--namespace", "micro"]);
        assert_eq!(foreign.status.code(), Some(2), "foo cannot list micro's {what}: {}", stdout(&foreign));
    }
    assert!(server.ok(&["auth", "list", "accounts"]).lines().any(|line| line.starts_with("bob ")));

    server.ok(&["user", "namespace", "set", "micro"]);
    assert_eq!(
        server.ok(&["store", "read", "shared"]),
        "micro-value\n",
        "the admin login is kept per namespace"
    );
    assert!(!server.ok(&["auth", "list", "accounts"]).contains("bob"));
    assert!(server.ok(&["auth", "list", "accounts", "--namespace", "foo"]).contains("bob"));
    assert_eq!(
        server.ok(&["store", "read", "--database", "foo", "shared"]),
        "foo-value\n",
        "micro reaches every namespace"
    );
}

#[test]
fn lockdown_self_delete_and_password_change() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    add_anonymous_env(&server);

    let rules = server.ok(&["auth", "list", "rules"]);
    assert!(
        rules.lines().any(|l| l.split_whitespace().eq(["default", "<public>", "GRANTED", "*:*:*", "0"])),
        "{rules}"
    );
    assert!(server.micro(&["-e", "anon", "services"]).status.success(), "the default rule is public");

    let bad = server.micro(&["auth", "create", "rule", "x", "--resource", "service:store"]);
    assert_eq!(stderr(&bad).trim(), "Invalid resource, must be in the format type:name:endpoint");
    assert_eq!(
        server.ok(&["auth", "create", "rule", "lockdown", "--scope", "*", "--resource", "*:*:*"]),
        "Rule created\n"
    );
    let again = server.micro(&["auth", "create", "rule", "lockdown", "--scope", "*", "--resource", "*:*:*"]);
    assert!(stderr(&again).contains("A rule with this ID already exists"), "{}", stderr(&again));
    assert_eq!(server.ok(&["auth", "delete", "rule", "default"]), "Rule deleted\n");
    assert_eq!(
        server.ok(&["auth", "delete", "rule", "nosuch"]),
        "Rule deleted\n",
        "deleting a missing rule succeeds quietly, as other deletes do"
    );
    let rules = server.ok(&["auth", "list", "rules"]);
    assert!(!rules.contains("default") && rules.contains("lockdown"), "{rules}");

    let anonymous = server.micro(&["-e", "anon", "services"]);
    assert_eq!(anonymous.status.code(), Some(2), "anonymous calls fail once the public rule is gone");
    assert!(server.ok(&["services"]).contains("store"), "logged-in calls still work");
    let rules = server.ok(&["auth", "list", "rules"]);
    assert!(!rules.contains("default"), "a deleted default rule stays deleted: {rules}");

    let myself = server.micro(&["auth", "delete", "account", "admin"]);
    assert_ne!(myself.status.code(), Some(0));
    assert!(stderr(&myself).contains("Can't delete your own account"), "{}", stderr(&myself));

    let wrong_old =
        server.micro(&["user", "set", "password", "--old-password", "nope", "--new-password", "n3w"]);
    assert_eq!(wrong_old.status.code(), Some(127), "{}", stderr(&wrong_old));
    assert_eq!(stderr(&wrong_old).trim(), "Secret not correct");
    server.ok(&["user", "set", "password", "--old-password", "micro", "--new-password", "n3w-secret"]);
    let old = server.micro(&["-e", "anon", "login", "--username", "admin", "--password", "micro"]);
    assert_eq!(old.status.code(), Some(2), "the old password no longer works");
    server.ok(&["-e", "anon", "login", "--username", "admin", "--password", "n3w-secret"]);
}

#[test]
fn no_well_known_admin_password_off_loopback() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--proxy-address", "0.0.0.0:0"]);
    let rejected = server.micro(&["login", "--username", "admin", "--password", "micro"]);
    assert_eq!(rejected.status.code(), Some(2), "admin/micro is refused off loopback");
    let log = server.log();
    let password = log
        .lines()
        .find(|line| line.contains("generated a password"))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("password="))
                .map(|p| p.trim_matches('"'))
        })
        .unwrap_or_else(|| panic!("the generated password is logged once: {log}"))
        .to_string();
    server.ok(&["login", "--username", "admin", &format!("--password={password}")]);
    drop(server);

    let home = tempfile::tempdir().unwrap();
    let server = Server::start_with(home.path(), &["--disable-admin"]);
    let rejected = server.micro(&["login", "--username", "admin", "--password", "micro"]);
    assert_eq!(rejected.status.code(), Some(2), "--disable-admin creates no admin");
}

/// Several CLI processes finding the same login about to expire at once (a watcher beside
/// calls in a loop): one refreshes it, the others use what it saved; none is refused or drops
/// the login.
#[test]
fn concurrent_refreshes_of_one_login_all_succeed() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["store", "write", "k", "v"]);
    let path = home.path().join("tokens.json");
    for round in 0..3 {
        let mut tokens: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        tokens["e2e/micro"]["expiry"] = serde_json::json!(0);
        std::fs::write(&path, serde_json::to_vec(&tokens).unwrap()).unwrap();
        let calls: Vec<_> = (0..6)
            .map(|_| {
                common::micro_cmd(home.path())
                    .args(["store", "read", "k"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for call in calls {
            let output = call.wait_with_output().unwrap();
            assert!(output.status.success(), "round {round}: {}", stderr(&output));
            assert_eq!(stdout(&output), "v\n");
            assert!(!stderr(&output).contains("expired"), "round {round}: {}", stderr(&output));
        }
        let tokens: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(tokens["e2e/micro"]["expiry"].as_i64().unwrap() > 0, "the login is kept, refreshed");
    }
}

#[test]
fn expiring_tokens_are_refreshed_and_refresh_tokens_rotate() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    server.ok(&["store", "write", "k", "v"]);

    // Make the saved login look about to expire: the CLI must refresh it before the call.
    let path = home.path().join("tokens.json");
    let mut tokens: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = tokens.get_mut("e2e/micro").expect("the login is saved per env and namespace");
    let old_refresh = entry["refresh_token"].clone();
    entry["expiry"] = serde_json::json!(0);
    std::fs::write(&path, serde_json::to_vec(&tokens).unwrap()).unwrap();

    assert_eq!(server.ok(&["store", "read", "k"]), "v\n", "an expiring token is refreshed, not surfaced");
    let tokens: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(tokens["e2e/micro"]["expiry"].as_i64().unwrap() > 0, "the refreshed token is saved");
    assert!(tokens["e2e/micro"]["access_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_ne!(tokens["e2e/micro"]["refresh_token"], old_refresh);

    let reuse = format!(r#"{{"refresh_token":{old_refresh}}}"#);
    let replay = server.micro(&["call", "auth", "Auth.Token", &reuse]);
    assert_eq!(replay.status.code(), Some(2), "a used refresh token is dead: {}", stdout(&replay));

    let bad_header =
        server.micro(&["call", "--metadata", "authorization=Basic abc", "store", "Store.Databases"]);
    assert_eq!(bad_header.status.code(), Some(2));
    assert!(stderr(&bad_header).contains("expected Bearer schema"), "{}", stderr(&bad_header));
    let forged =
        server.micro(&["call", "--metadata", "authorization=Bearer a.b.c", "store", "Store.Databases"]);
    assert_eq!(forged.status.code(), Some(2), "{}", stderr(&forged));
}
