//! The events service's consumer groups in the Prometheus metrics (docs/observability.md): how
//! far each named group lags behind its topic, what it holds unacknowledged, and its dead
//! letters, read from the backend ([`micro_events::Events::groups`]) just before each render of
//! `GET /metrics` ([`crate::http`]).
//!
//! The read is bounded by [`COLLECT_TIMEOUT`]; when it fails or runs over, the gauges keep the
//! values of the last read that worked (logged at debug: a scrape must not fail because the
//! events backend is slow). A group that is no longer reported (deleted, or beyond
//! [`micro_events::MAX_GROUPS`]) has its series set to 0 once: the exporter cannot remove a
//! series, so it stays, at 0, until the server restarts. The series are those of the process's
//! one recorder ([`crate::metrics::Metrics`]): servers booted in one process (tests) that have
//! a group of the same name share its series.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::{Unit, describe_gauge, gauge};
use micro_events::{Events, GroupLag};

/// Events of a named group not yet settled: stored after its position and not acknowledged
/// ([`GroupLag::pending`]), by `namespace`, `topic` and `group`. What is usually called lag.
pub const GROUP_PENDING: &str = "micro_events_group_pending";
/// Events delivered to a named group and not yet acknowledged, by the labels of
/// [`GROUP_PENDING`].
pub const GROUP_UNACKED: &str = "micro_events_group_unacked";
/// Dead letters a named group keeps (docs/events.md#dead-letters), by the labels of
/// [`GROUP_PENDING`].
pub const DEAD_LETTERS: &str = "micro_events_dead_letters";

/// How long a render waits for the backend's groups before it renders the last values.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `(namespace, topic, group)`: the labels of one group's series.
type Key = (String, String, String);

/// Sets the group gauges from one events backend. Cheap to clone.
#[derive(Clone)]
pub struct GroupMetrics {
    events: Arc<dyn Events>,
    /// The groups of the last read that worked: those missing from the next one are zeroed.
    reported: Arc<Mutex<HashSet<Key>>>,
}

impl GroupMetrics {
    /// The gauges of `events`' groups, described on the installed recorder
    /// ([`crate::metrics::Metrics::install`] first, or the help text is lost).
    pub fn new(events: Arc<dyn Events>) -> Self {
        describe_gauge!(
            GROUP_PENDING,
            Unit::Count,
            "Events of a consumer group not yet settled (lag), by namespace, topic and group."
        );
        describe_gauge!(
            GROUP_UNACKED,
            Unit::Count,
            "Events delivered to a consumer group and not yet acknowledged."
        );
        describe_gauge!(DEAD_LETTERS, Unit::Count, "Dead letters a consumer group keeps.");
        Self { events, reported: Arc::default() }
    }

    /// Reads the backend's groups (within [`COLLECT_TIMEOUT`]) and sets the gauges; on failure
    /// they keep their last values.
    pub async fn collect(&self) {
        match tokio::time::timeout(COLLECT_TIMEOUT, self.events.groups()).await {
            Ok(Ok(groups)) => self.set(&groups),
            Ok(Err(err)) => {
                tracing::debug!(cause = %err, "cannot read the consumer groups; their metrics keep the last values");
            }
            Err(_) => tracing::debug!(
                timeout_ms = COLLECT_TIMEOUT.as_millis() as u64,
                "the consumer groups were not read in time; their metrics keep the last values"
            ),
        }
    }

    /// Sets the gauges of `groups`, and zeroes those of groups the last call set and this one
    /// does not.
    fn set(&self, groups: &[GroupLag]) {
        let mut current = HashSet::with_capacity(groups.len());
        for lag in groups {
            let labels = labels(&lag.namespace, &lag.topic, &lag.group);
            gauge!(GROUP_PENDING, &labels).set(lag.pending as f64);
            if let Some(unacked) = lag.unacked {
                gauge!(GROUP_UNACKED, &labels).set(unacked as f64);
            }
            if let Some(dead) = lag.dead {
                gauge!(DEAD_LETTERS, &labels).set(dead as f64);
            }
            current.insert((lag.namespace.clone(), lag.topic.clone(), lag.group.clone()));
        }
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        for (namespace, topic, group) in reported.difference(&current) {
            let labels = labels(namespace, topic, group);
            for name in [GROUP_PENDING, GROUP_UNACKED, DEAD_LETTERS] {
                gauge!(name, &labels).set(0.0);
            }
        }
        *reported = current;
    }
}

fn labels(namespace: &str, topic: &str, group: &str) -> [(&'static str, String); 3] {
    [("namespace", namespace.to_string()), ("topic", topic.to_string()), ("group", group.to_string())]
}

#[cfg(test)]
mod tests {
    use micro_events::memory::MemoryEvents;
    use micro_events::{ConsumeOptions, PublishOptions, Start};

    use super::*;
    use crate::metrics::Metrics;

    /// The value of the series `name{namespace="micro",topic=topic,group=group}` in `text`.
    fn value(text: &str, name: &str, topic: &str, group: &str) -> Option<f64> {
        let series = format!(r#"{name}{{namespace="micro",topic="{topic}",group="{group}"}} "#);
        text.lines().find_map(|line| line.strip_prefix(&series)?.parse().ok())
    }

    /// A group's lag, unacked deliveries and dead letters are rendered after a collect; a group
    /// that disappears is set to 0.
    #[tokio::test]
    async fn groups_are_rendered_and_vanished_ones_zeroed() {
        let exposition = Metrics::install();
        let events = Arc::new(MemoryEvents::default());
        // A topic of this test alone: the recorder is the process's.
        let topic = "events-metrics-test";
        for n in 0..5u8 {
            events.publish("micro", topic, vec![n], PublishOptions::default()).await.unwrap();
        }
        let options = ConsumeOptions {
            group: Some("g".into()),
            start: Start::Sequence(1),
            auto_ack: false,
            ack_wait: Duration::from_secs(60),
            retry_limit: None,
        };
        let mut consumer = events.consume("micro", topic, options).await.unwrap();
        for _ in 0..2 {
            consumer.next().await.unwrap().unwrap().ack().await.unwrap();
        }
        let _held = consumer.next().await.unwrap().unwrap();

        let metrics = GroupMetrics::new(events.clone());
        metrics.collect().await;
        let text = exposition.render();
        assert_eq!(value(&text, GROUP_PENDING, topic, "g"), Some(3.0), "{text}");
        assert_eq!(value(&text, GROUP_UNACKED, topic, "g"), Some(1.0));
        assert_eq!(value(&text, DEAD_LETTERS, topic, "g"), Some(0.0));
        assert!(text.contains(&format!("# HELP {GROUP_PENDING} ")), "described");

        metrics.set(&[]);
        let text = exposition.render();
        for name in [GROUP_PENDING, GROUP_UNACKED, DEAD_LETTERS] {
            assert_eq!(value(&text, name, topic, "g"), Some(0.0), "{name} of a vanished group is zeroed");
        }
    }
}
