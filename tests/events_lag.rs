//! The events service's consumer groups in `GET /metrics` end to end (docs/observability.md,
//! crates/micro-server/src/events_metrics.rs): a group that acked 2 of 5 events lags by 3, and
//! by 0 once it caught up.

mod common;

use common::{Server, sample};

/// `name` of group `billing` on topic `lagged` in `micro`, as the exporter renders it.
fn series(name: &str) -> String {
    format!(r#"{name}{{namespace="micro",topic="lagged",group="billing"}}"#)
}

/// `GET /metrics` as the admin: the exposition text.
fn scrape(server: &Server) -> String {
    let bearer = format!("Bearer {}", server.ok(&["user", "token"]).trim());
    let reply = common::http_send(&server.http, "GET", "/metrics", &[("Authorization", &bearer)], b"");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

#[test]
fn metrics_report_a_groups_lag() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    for n in 0..5 {
        server.ok(&["events", "publish", "lagged", &format!(r#"{{"n":{n}}}"#)]);
    }
    // The CLI acks each event it prints; the ones the server streamed ahead go back to the group.
    let group = ["events", "consume", "lagged", "--group", "billing", "--offset", "1", "--count"];
    let consumed = server.ok(&[&group[..], &["2"]].concat());
    assert_eq!(consumed.lines().count(), 2, "{consumed}");

    let text = scrape(&server);
    assert_eq!(sample(&text, &series("micro_events_group_pending")), Some(3.0), "{text}");
    assert_eq!(sample(&text, &series("micro_events_dead_letters")), Some(0.0), "{text}");
    assert!(sample(&text, &series("micro_events_group_unacked")).is_some(), "{text}");
    for name in ["micro_events_group_pending", "micro_events_group_unacked", "micro_events_dead_letters"] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name} is described: {text}");
    }

    let rest = server.ok(&[&group[..], &["3"]].concat());
    assert_eq!(rest.lines().count(), 3, "{rest}");
    let text = scrape(&server);
    assert_eq!(sample(&text, &series("micro_events_group_pending")), Some(0.0), "caught up: {text}");
    assert_eq!(sample(&text, &series("micro_events_group_unacked")), Some(0.0), "{text}");
}
