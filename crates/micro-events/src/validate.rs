//! The input limits every backend enforces, checked before anything is stored.

use std::collections::BTreeMap;

use crate::{ConsumeOptions, DeadLetter, EventsError, Position, Replay, Replayed, Result, Selection};

/// Largest event payload.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Longest topic name.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Longest group name.
pub const MAX_GROUP_BYTES: usize = 256;
/// Most metadata entries on one event.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most bytes of metadata (keys plus values) on one event.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

fn invalid(message: String) -> EventsError {
    EventsError::Invalid(message)
}

fn name_ok(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A namespace name, as [`micro_core::validate_namespace`].
pub fn namespace(namespace: &str) -> Result<()> {
    micro_core::validate_namespace(namespace).map_err(|err| invalid(err.to_string()))
}

/// A topic: 1–[`MAX_TOPIC_BYTES`] of `[A-Za-z0-9._-]`.
pub fn topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(invalid("missing topic".into()));
    }
    if name_ok(topic, MAX_TOPIC_BYTES) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid topic {topic:?}: use 1-{MAX_TOPIC_BYTES} letters, digits, '.', '_' or '-'"
        )))
    }
}

/// A group: 1–[`MAX_GROUP_BYTES`] of `[A-Za-z0-9._-]`.
pub fn group(group: &str) -> Result<()> {
    if name_ok(group, MAX_GROUP_BYTES) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid group {group:?}: use 1-{MAX_GROUP_BYTES} letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Everything a publish carries.
pub fn publish(
    namespace: &str,
    topic: &str,
    payload: &[u8],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    self::namespace(namespace)?;
    self::topic(topic)?;
    if payload.len() > MAX_EVENT_BYTES {
        return Err(invalid(format!(
            "the payload is {} bytes; the limit is {MAX_EVENT_BYTES}",
            payload.len()
        )));
    }
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(format!(
            "{} metadata entries; the limit is {MAX_METADATA_ENTRIES}",
            metadata.len()
        )));
    }
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(invalid(format!("the metadata is {bytes} bytes; the limit is {MAX_METADATA_BYTES}")));
    }
    if metadata.keys().any(String::is_empty) {
        return Err(invalid("a metadata key is empty".into()));
    }
    Ok(())
}

/// A consume request.
pub fn consume(namespace: &str, topic: &str, options: &ConsumeOptions) -> Result<()> {
    self::namespace(namespace)?;
    self::topic(topic)?;
    if let Some(name) = &options.group {
        group(name)?;
    }
    if !options.auto_ack && options.ack_wait.is_zero() {
        return Err(invalid("invalid AckWait passed, should be positive integer".into()));
    }
    Ok(())
}

/// A dead-letter request: a namespace, a topic and a named group.
pub fn dead_letters(namespace: &str, topic: &str, group: &str) -> Result<()> {
    self::namespace(namespace)?;
    self::topic(topic)?;
    if group.is_empty() {
        return Err(invalid("missing group: dead letters belong to a named group".into()));
    }
    self::group(group)
}

/// A selection before anything is looked up: ids, or all.
pub fn selection(which: &Selection) -> Result<()> {
    match which {
        Selection::Ids(ids) if ids.is_empty() => {
            Err(invalid("no dead letters named: give event ids, or all".into()))
        }
        Selection::Ids(ids) if ids.iter().any(String::is_empty) => {
            Err(invalid("an event id is empty".into()))
        }
        _ => Ok(()),
    }
}

/// The positions in `dead` (a group's dead letters) that `which` selects, in `dead`'s order;
/// [`EventsError::Invalid`] naming every id that is not among them. Every backend selects
/// through this, so a release or drop with a bad id changes nothing anywhere.
pub fn selected(dead: &[DeadLetter], which: &Selection, group: &str) -> Result<Vec<usize>> {
    selection(which)?;
    let Selection::Ids(ids) = which else { return Ok((0..dead.len()).collect()) };
    let missing: Vec<&str> =
        ids.iter().filter(|id| !dead.iter().any(|d| &d.event.id == *id)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(invalid(format!("not dead letters of group {group}: {}", missing.join(", "))));
    }
    Ok((0..dead.len()).filter(|&n| ids.contains(&dead[n].event.id)).collect())
}

/// A replay request before anything is looked up: a named group, no sequence 0, no time after
/// `now_ms`, and `from` not after `to` when both are of one kind.
pub fn replay(namespace: &str, topic: &str, group: &str, replay: &Replay, now_ms: u64) -> Result<()> {
    self::namespace(namespace)?;
    self::topic(topic)?;
    if group.is_empty() {
        return Err(invalid("missing group: a replay moves a named consumer group".into()));
    }
    self::group(group)?;
    for (which, position) in [("from", Some(replay.from)), ("to", replay.to)] {
        match position {
            Some(Position::Sequence(0)) => {
                return Err(invalid(format!("replay {which} sequence 0: sequences start at 1")));
            }
            Some(Position::Time(ms)) if ms > now_ms => {
                return Err(invalid(format!(
                    "replay {which} a time in the future ({ms} ms; now is {now_ms})"
                )));
            }
            _ => {}
        }
    }
    match (replay.from, replay.to) {
        (Position::Sequence(from), Some(Position::Sequence(to))) if from > to => {
            Err(invalid(format!("replay from sequence {from} is after its end, sequence {to}")))
        }
        (Position::Time(from), Some(Position::Time(to))) if from > to => {
            Err(invalid(format!("replay from time {from} ms is after its end, {to} ms")))
        }
        _ => Ok(()),
    }
}

/// What a replay of `topic` covers once its ends are sequences: `from` is the first sequence
/// to replay (a time's first event at or after it), `to` the last (a time's last event at or
/// before it); `first..=last` are the sequences the topic holds. Every backend resolves
/// through this, so the same request fails the same way everywhere.
pub fn replay_range(topic: &str, first: u64, last: u64, from: u64, to: Option<u64>) -> Result<Replayed> {
    if last == 0 {
        return Err(invalid(format!("topic {topic} has no events to replay")));
    }
    if from > last {
        return Err(invalid(format!(
            "nothing to replay: the replay starts after the last event of topic {topic} (sequence {last})"
        )));
    }
    let to = to.unwrap_or(last);
    if to > last {
        return Err(invalid(format!(
            "the replay ends at sequence {to}, after the last event of topic {topic} (sequence {last})"
        )));
    }
    if from > to {
        return Err(invalid(format!(
            "nothing to replay: the replay starts at sequence {from}, after its end (sequence {to})"
        )));
    }
    let stored_from = from.max(first);
    let events = if stored_from > to { 0 } else { to - stored_from + 1 };
    Ok(Replayed { first_sequence: from, last_sequence: to, events })
}

/// An unknown group, for a replay: it has never consumed `topic`.
pub fn unknown_group(topic: &str, group: &str) -> EventsError {
    invalid(format!("no consumer group {group} on topic {topic}: a replay moves a group that exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(topic("orders.created-v1_x").is_ok());
        assert!(topic(&"a".repeat(MAX_TOPIC_BYTES)).is_ok());
        assert!(topic(&"a".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        assert_eq!(topic(""), Err(EventsError::Invalid("missing topic".into())));
        for bad in ["a b", "a/b", "a*", "ä", "a>"] {
            assert!(topic(bad).is_err(), "{bad}");
        }
        assert!(group("").is_err());
        assert!(namespace("Foo").is_err());
    }

    #[test]
    fn replays() {
        let replay = |from, to| Replay { from, to };
        let (seq, time) = (Position::Sequence, Position::Time);
        assert!(super::replay("micro", "t", "g", &replay(seq(1), Some(seq(1))), 5).is_ok());
        assert!(super::replay("micro", "t", "g", &replay(time(5), None), 5).is_ok());
        for (bad, why) in [
            (replay(seq(0), None), "sequence 0"),
            (replay(time(6), None), "in the future"),
            (replay(seq(1), Some(time(6))), "in the future"),
            (replay(seq(3), Some(seq(2))), "after its end"),
            (replay(time(3), Some(time(2))), "after its end"),
        ] {
            let err = super::replay("micro", "t", "g", &bad, 5).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(super::replay("micro", "t", "", &replay(seq(1), None), 5).is_err());

        assert_eq!(
            replay_range("t", 1, 10, 3, None),
            Ok(Replayed { first_sequence: 3, last_sequence: 10, events: 8 })
        );
        assert_eq!(
            replay_range("t", 5, 10, 1, Some(6)),
            Ok(Replayed { first_sequence: 1, last_sequence: 6, events: 2 })
        );
        for (first, last, from, to, why) in [
            (1, 0, 1, None, "no events"),
            (1, 10, 11, None, "after the last event"),
            (1, 10, 1, Some(11), "after the last event"),
            (1, 10, 5, Some(4), "after its end"),
        ] {
            let err = replay_range("t", first, last, from, to).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
