//! The input limits every backend enforces, checked before anything is stored.

use std::collections::BTreeMap;

use crate::{ConsumeOptions, DeadLetter, EventsError, Result, Selection};

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
}
