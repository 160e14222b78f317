//! `micro jobs` end to end (docs/jobs.md): on the embedded server, the commands, bad input and
//! tenant isolation (a job acts as the account that created it, never with more rights); on
//! PostgreSQL + NATS, a job every second fires once per second across two servers, also when one
//! of them is killed with SIGKILL halfway. The multi-server test needs `MICRO_TEST_POSTGRES_URL`
//! and `MICRO_TEST_NATS_URL` (scripts/test starts both) and prints that it was skipped without
//! them (fails in CI).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Server, json, micro_in, stderr, stdout};

/// The runs `micro jobs history NAME` prints as JSON, newest first.
fn history(run: impl Fn(&[&str]) -> std::process::Output, name: &str) -> Vec<serde_json::Value> {
    let output = run(&["jobs", "history", name, "--limit", "0", "--output", "json"]);
    assert!(output.status.success(), "history of {name}: {}", stderr(&output));
    stdout(&output).lines().map(json).collect()
}

/// The error line of a CLI run that must fail.
fn refused(output: std::process::Output) -> String {
    assert!(!output.status.success(), "should have failed: {}", stdout(&output));
    stderr(&output)
}

#[test]
fn jobs_fire_as_their_account_and_stay_in_their_namespace() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    // Create, list, and it fires on schedule, publishing into the namespace.
    assert_eq!(server.ok(&["jobs", "create", "ticks", "--every", "1s", "--publish", "ticks"]), "");
    let listed = server.ok(&["jobs", "list"]);
    assert!(
        listed.starts_with(
            "NAME   SCHEDULE  ACTION         MISSED  NEXT\nticks  every 1s  publish ticks  skip"
        ),
        "{listed}"
    );
    let as_json = json(server.ok(&["jobs", "list", "--output", "json"]).trim());
    assert_eq!((as_json["name"].as_str(), as_json["owner"].as_str()), (Some("ticks"), Some("admin")));
    let fired = |count: usize| {
        let runs = history(|args| server.micro(args), "ticks");
        runs.iter().filter(|run| run["trigger"] == "schedule" && run["outcome"] == "ok").count() >= count
    };
    assert!(
        common::eventually(Duration::from_secs(20), || fired(2)),
        "{:?}",
        history(|a| server.micro(a), "ticks")
    );
    let events: Vec<serde_json::Value> =
        server.ok(&["events", "read", "ticks", "--limit", "100"]).lines().map(json).collect();
    assert!(events.len() >= 2, "{events:?}");
    assert_eq!(events[0]["metadata"]["micro-job"], "ticks");
    assert_eq!(events[0]["payload"]["job"], "ticks");

    // Run now, once: a manual run in the history.
    let ran = server.ok(&["jobs", "run", "ticks"]);
    assert!(ran.starts_with("SCHEDULED") && ran.contains("manual") && ran.contains(" ok"), "{ran}");
    let runs = history(|args| server.micro(args), "ticks");
    assert_eq!(runs.iter().filter(|run| run["trigger"] == "manual").count(), 1, "{runs:?}");

    // Bad input: a clear error, and nothing created.
    let cases: [(&[&str], &str); 8] = [
        (&["jobs", "create", "fast", "--every", "500ms", "--publish", "t"], "out of range: use at least 1s"),
        (&["jobs", "create", "cron6", "--cron", "* * * * * *", "--publish", "t"], "five fields"),
        (&["jobs", "create", "cronx", "--cron", "61 * * * *", "--publish", "t"], "invalid cron expression"),
        (&["jobs", "create", "Bad/Name", "--every", "1m", "--publish", "t"], "invalid job name"),
        (&["jobs", "create", "data", "--every", "1m", "--publish", "t", "--data", "{oops"], "not valid JSON"),
        (&["jobs", "create", "past", "--at", "2001-01-01T00:00:00Z", "--publish", "t"], "in the past"),
        (&["jobs", "create", "ticks", "--every", "1m", "--publish", "t"], "already exists"),
        (
            &["jobs", "create", "both", "--every", "1m", "--cron", "* * * * *", "--publish", "t"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        let error = refused(server.micro(args));
        // The CLI opens each error with a capital letter.
        assert!(error.to_lowercase().contains(&expected.to_lowercase()), "{args:?}: {error}");
    }
    let names: Vec<String> = server
        .ok(&["jobs", "list", "--output", "json"])
        .lines()
        .map(|line| json(line)["name"].to_string())
        .collect();
    assert_eq!(names, ["\"ticks\""], "refused creates changed nothing");
    assert_eq!(refused(server.micro(&["jobs", "run", "nope"])).trim(), "Not found");

    // A tenant sees and touches only its own namespace's jobs.
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "bob"]);
    server.ok(&["auth", "create", "account", "--namespace", "foo", "--secret", "s3cret", "carol"]);
    let bob = common::tenant_home(&server, "foo", "bob", "s3cret");
    let carol = common::tenant_home(&server, "foo", "carol", "s3cret");
    let as_bob = |args: &[&str]| micro_in(bob.path(), args);
    assert_eq!(stdout(&as_bob(&["jobs", "list"])), "NAME  SCHEDULE  ACTION  MISSED  NEXT\n");
    assert_eq!(refused(as_bob(&["jobs", "delete", "ticks"])).trim(), "Not found");
    assert_eq!(refused(as_bob(&["jobs", "history", "ticks"])).trim(), "Not found");
    assert_eq!(refused(as_bob(&["jobs", "run", "ticks"])).trim(), "Not found");

    // Its --call job acts as bob: reading micro's config is refused as it would be to bob.
    server.ok(&["config", "set", "secret-plan", "world"]);
    let read_micro = r#"{"namespace":"micro","path":"secret-plan"}"#;
    for (who, home) in [("admin", home.path()), ("bob", bob.path())] {
        let output = micro_in(
            home,
            &[
                "jobs",
                "create",
                "peek",
                "--every",
                "1h",
                "--call",
                "config",
                "Config.Get",
                "--data",
                read_micro,
            ],
        );
        assert!(output.status.success(), "{who}: {}", stderr(&output));
    }
    assert!(server.ok(&["jobs", "run", "peek"]).contains(" ok"), "the admin may read micro's config");
    let denied = refused(as_bob(&["jobs", "run", "peek"]));
    assert!(denied.contains("Access denied to namespace"), "{denied}");
    let names: Vec<String> = server
        .ok(&["jobs", "list", "--output", "json"])
        .lines()
        .map(|line| json(line)["name"].to_string())
        .collect();
    assert_eq!(names, ["\"peek\"", "\"ticks\""], "bob's job is in foo, not micro");
    assert_eq!(stdout(&as_bob(&["jobs", "list"])).lines().count(), 2, "bob sees his own");

    // A job whose account was deleted fails with a clear error, acting as nobody else.
    assert!(
        micro_in(carol.path(), &["jobs", "create", "orphan", "--every", "1s", "--publish", "o"])
            .status
            .success()
    );
    server.ok(&["auth", "delete", "account", "--namespace", "foo", "carol"]);
    let orphaned = || {
        history(as_bob, "orphan").iter().any(|run| {
            run["outcome"] == "failed"
                && run["error"].as_str().unwrap_or_default().contains("no longer exists")
        })
    };
    assert!(common::eventually(Duration::from_secs(20), orphaned), "{:?}", history(as_bob, "orphan"));
    assert_eq!(stdout(&as_bob(&["events", "read", "o"])), "", "nothing was published");

    // Delete: gone from the list and its history with it.
    assert_eq!(server.ok(&["jobs", "delete", "ticks"]), "");
    assert_eq!(refused(server.micro(&["jobs", "history", "ticks"])).trim(), "Not found");
    assert!(!server.ok(&["jobs", "list"]).contains("ticks"));
}

fn backends(test: &str) -> Option<(String, String)> {
    let postgres = common::needed_env("MICRO_TEST_POSTGRES_URL", test)?;
    let nats = common::needed_env("MICRO_TEST_NATS_URL", test)?;
    Some((postgres, nats))
}

/// The scheduled time (unix ms) of each event a job published to `topic`, with how often it
/// was published.
fn firings(server: &Server, topic: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for event in server.ok(&["events", "read", topic, "--limit", "1000"]).lines().map(json) {
        let scheduled = event["metadata"]["micro-job-scheduled"].as_str().and_then(|ms| ms.parse().ok());
        *seen.entry(scheduled.expect("every event names its firing")).or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_job_fires_once_per_second_across_two_servers_even_when_one_is_killed() {
    let test = "a_job_fires_once_per_second_across_two_servers_even_when_one_is_killed";
    let Some((postgres, nats)) = backends(test) else { return };
    let args = ["--store", &postgres, "--events", &nats, "--broker", &nats, "--registry", &nats];
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_with(home_a.path(), &args);
    let b = Server::start_with(home_b.path(), &args);
    a.ok(&["login", "--username", "admin", "--password", "micro"]);
    std::fs::copy(home_a.path().join("tokens.json"), home_b.path().join("tokens.json")).unwrap();

    // The shared backends outlive test runs: a name and topic no earlier run used.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (name, topic) = (format!("tick-{nanos:x}"), format!("ticks-{nanos:x}"));
    a.ok(&["jobs", "create", &name, "--every", "1s", "--publish", &topic]);

    // The first firing, then ten seconds of them; then A dies with SIGKILL, wherever it is.
    let window = Duration::from_secs(20);
    assert!(common::eventually(Duration::from_secs(20), || !firings(&b, &topic).is_empty()), "never fired");
    let first = *firings(&b, &topic).keys().next().unwrap();
    let (b_ref, topic_ref) = (&b, topic.as_str());
    let reached = |ms: u64| move || firings(b_ref, topic_ref).keys().any(|scheduled| *scheduled >= ms);
    assert!(common::poll(Duration::from_secs(30), Duration::from_millis(100), reached(first + 9_000)));
    let servers: Vec<String> =
        history(|args| b.micro(args), &name).iter().map(|run| run["server"].to_string()).collect();
    assert!(!a.signal(9).success(), "SIGKILL");

    // B carries on alone until the window is over.
    let last = first + u64::try_from(window.as_millis()).unwrap() - 1_000;
    assert!(
        common::poll(Duration::from_secs(60), Duration::from_millis(100), reached(last + 2_000)),
        "B stopped firing after A died: {:?}",
        firings(&b, &topic)
    );
    b.ok(&["jobs", "delete", &name]);

    let seen = firings(&b, &topic);
    let in_window: Vec<(&u64, &usize)> = seen.range(first..=last).collect();
    let total: usize = in_window.iter().map(|(_, count)| **count).sum();
    assert!(
        (19..=21).contains(&total),
        "{total} firings in 20 s, not 20 ± 1: {in_window:?} (before the kill: {servers:?})"
    );
    let doubled = in_window.iter().filter(|(_, count)| **count > 1).count();
    assert!(doubled <= 1, "at most the firing A died in may run twice: {in_window:?}");
    for window in seen.keys().collect::<Vec<_>>().windows(2) {
        assert!(window[1] - window[0] <= 2_000, "no firing lost for long: {seen:?}");
    }
}
