//! How micro's names become NATS names, in one place.
//!
//! Namespaces are `[a-z0-9_-]` (never `.` or `~`); topics, groups and queues are
//! `[A-Za-z0-9._-]`. NATS splits subjects into tokens at `.` and forbids `.` in stream and
//! consumer names, so a topic, group or queue is written with every `.` as `~` (which none of
//! them can contain, so the mapping is reversible and two names never meet):
//!
//! | what | NATS name |
//! |---|---|
//! | events of topic `orders.created` in namespace `foo` | subject `micro.events.foo.orders~created` |
//! | ... their stream | `micro-events~foo~orders~created` |
//! | named group `billing.v1` | durable consumer `g~billing~v1` |
//! | a consumer without a group | consumer `p~<random>`, deleted when it goes away |
//! | dead letters of group `billing` on topic `orders` in `foo` | subject `micro.dead.foo.orders.billing` in stream `micro-dead~foo~orders` |
//! | events released from them back to the group | subject `micro.released.foo.orders.billing` in stream `micro-released~foo~orders`, consumer `r~billing` |
//! | "events were released" wake-up for the group's members | core subject `micro.notify.released.foo.orders.billing` |
//! | broker topic `orders.created` in `foo` | subject `micro.broker.foo.orders~created` |
//! | queue group `workers.eu` | NATS queue group `workers~eu` |
//! | node `hw-1` of service `helloworld` version `1.0` in namespace `foo` | KV key `foo.helloworld.1_2E0.hw-1` in bucket `micro-registry` |
//!
//! Registry KV keys are `<domain>.<service>.<version>.<node id>`. KV keys allow only
//! `[-/_=.A-Za-z0-9]` with `.` between tokens, and versions and node ids may hold anything
//! printable, so each part keeps `[A-Za-z0-9-]` and writes every other byte as `_XX` (hex);
//! an empty part is `=`. The escaping is prefix-free, so distinct nodes never share a key.
//!
//! Stream and consumer names longer than [`MAX_NAME_BYTES`] keep a readable prefix and end in
//! a hash of the whole name (they become directory names on the NATS server's disk).
//!
//! Headers: NATS header names cannot hold `:`, spaces or control characters, values cannot
//! hold CR/LF and lose surrounding whitespace, so names and values are percent-encoded where
//! needed ([`encode_header_name`], [`encode_header_value`]); plain ASCII passes unchanged.

use sha2::Digest;

/// Longest stream or consumer name we create.
pub(crate) const MAX_NAME_BYTES: usize = 200;

/// A topic, group or queue as one subject token.
pub(crate) fn token(name: &str) -> String {
    name.replace('.', "~")
}

/// The topic, group or queue a subject token stands for (the inverse of [`token`]).
pub(crate) fn untoken(token: &str) -> String {
    token.replace('~', ".")
}

/// The subject events of `topic` in `namespace` are published on.
pub(crate) fn events_subject(namespace: &str, topic: &str) -> String {
    format!("micro.events.{namespace}.{}", token(topic))
}

/// The `(namespace, topic)` whose events go to `subject` (the inverse of [`events_subject`]).
pub(crate) fn topic_of_subject(subject: &str) -> Option<(String, String)> {
    let (namespace, token) = subject.strip_prefix("micro.events.")?.split_once('.')?;
    let topic = untoken(token);
    (events_subject(namespace, &topic) == subject).then(|| (namespace.to_string(), topic))
}

/// The stream holding the events of `topic` in `namespace`.
pub(crate) fn stream(namespace: &str, topic: &str) -> String {
    bounded(format!("micro-events~{namespace}~{}", token(topic)))
}

/// The durable consumer of a named group.
pub(crate) fn group_consumer(group: &str) -> String {
    bounded(format!("g~{}", token(group)))
}

/// The description of a named group's consumer, which names the group in full (its consumer's
/// name may end in a hash).
pub(crate) fn group_description(group: &str) -> String {
    format!("{GROUP_DESCRIPTION}{group}")
}

/// What [`group_description`] puts before the group's name.
const GROUP_DESCRIPTION: &str = "micro events group ";

/// The group whose durable consumer is `name`, described as `description` (the inverse of
/// [`group_consumer`]); `None` for every other consumer.
pub(crate) fn group_of_consumer(name: &str, description: Option<&str>) -> Option<String> {
    let group = match description.and_then(|d| d.strip_prefix(GROUP_DESCRIPTION)) {
        Some(group) => group.to_string(),
        // A name of the longest length may end in a hash: only the description tells.
        None if name.len() < MAX_NAME_BYTES => untoken(name.strip_prefix("g~")?),
        None => return None,
    };
    (group_consumer(&group) == name).then_some(group)
}

/// The stream holding the dead letters of every group of `topic` in `namespace`.
pub(crate) fn dead_stream(namespace: &str, topic: &str) -> String {
    bounded(format!("micro-dead~{namespace}~{}", token(topic)))
}

/// The subject of `group`'s dead letters (all groups of the topic: `group` = `*`).
pub(crate) fn dead_subject(namespace: &str, topic: &str, group: &str) -> String {
    format!("micro.dead.{namespace}.{}.{}", token(topic), token(group))
}

/// The stream holding events released from dead letters, of every group of the topic.
pub(crate) fn released_stream(namespace: &str, topic: &str) -> String {
    bounded(format!("micro-released~{namespace}~{}", token(topic)))
}

/// The subject of the events released to `group` (all groups: `group` = `*`).
pub(crate) fn released_subject(namespace: &str, topic: &str, group: &str) -> String {
    format!("micro.released.{namespace}.{}.{}", token(topic), token(group))
}

/// The consumer `group`'s members pull released events from.
pub(crate) fn released_consumer(group: &str) -> String {
    bounded(format!("r~{}", token(group)))
}

/// The core NATS subject a release is announced on, waking `group`'s members.
pub(crate) fn released_notify(namespace: &str, topic: &str, group: &str) -> String {
    format!("micro.notify.released.{namespace}.{}.{}", token(topic), token(group))
}

/// A fresh name for the consumer of a consumer without a group.
pub(crate) fn private_consumer() -> String {
    let mut random = [0u8; 12];
    // Without OS randomness the clock keeps names apart well enough for short-lived consumers.
    if getrandom::fill(&mut random).is_err() {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        random.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    format!("p~{}", hex::encode(random))
}

/// The subject broker messages of `topic` in `namespace` are published on.
pub(crate) fn broker_subject(namespace: &str, topic: &str) -> String {
    format!("micro.broker.{namespace}.{}", token(topic))
}

/// The registry KV key of node `node` of `service` `version` in `domain` (see the module docs).
pub(crate) fn registry_key(domain: &str, service: &str, version: &str, node: &str) -> String {
    [domain, service, version, node].map(key_token).join(".")
}

fn key_token(part: &str) -> String {
    if part.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("_{byte:02X}"));
        }
    }
    out
}

fn bounded(name: String) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let digest = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..16]);
    // Every name here is ASCII, so any byte index is a char boundary.
    format!("{}~{digest}", &name[..MAX_NAME_BYTES - digest.len() - 1])
}

fn percent(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// `name` as a NATS header name: printable ASCII other than `:` and `%` passes, the rest is
/// percent-encoded; the empty name is a lone `%`.
pub(crate) fn encode_header_name(name: &str) -> String {
    if name.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_graphic() && c != ':' && c != '%' {
            out.push(c);
        } else {
            percent(&mut out, c);
        }
    }
    out
}

/// The inverse of [`encode_header_name`]; anything else passes through as it decodes.
pub(crate) fn decode_header_name(name: &str) -> String {
    if name == "%" { String::new() } else { decode(name) }
}

/// `value` as a NATS header value: `%`, control characters and whitespace at either end are
/// percent-encoded.
pub(crate) fn encode_header_value(value: &str) -> String {
    let start = value.len() - value.trim_start().len();
    let end = value.trim_end().len().max(start);
    let mut out = String::with_capacity(value.len());
    for (at, c) in value.char_indices() {
        if at < start || at >= end || c == '%' || c.is_control() {
            percent(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The inverse of [`encode_header_value`].
pub(crate) fn decode_header_value(value: &str) -> String {
    decode(value)
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(byte) = text.get(at + 1..at + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            at += 3;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(events_subject("foo", "orders.created"), "micro.events.foo.orders~created");
        assert_eq!(stream("foo", "orders.created"), "micro-events~foo~orders~created");
        assert_ne!(stream("a_b", "c"), stream("a", "b_c"));
        assert_ne!(stream("a", "b.c"), stream("a", "b_c"));
        assert_eq!(group_consumer("billing.v1"), "g~billing~v1");
        assert_eq!(
            topic_of_subject(&events_subject("foo", "orders.created")),
            Some(("foo".into(), "orders.created".into()))
        );
        assert_eq!(topic_of_subject("micro.dead.foo.orders.billing"), None);
        assert_eq!(group_of_consumer("g~billing~v1", None).as_deref(), Some("billing.v1"));
        assert_eq!(group_of_consumer("r~billing", None), None, "a released-events consumer");
        assert_eq!(group_of_consumer("p~00ff", Some("micro events consumer without a group")), None);
        assert_ne!(private_consumer(), private_consumer());
        assert!(private_consumer().starts_with("p~"), "never a group's name, which start with g~");

        let long = "t".repeat(256);
        let (one, two) = (stream("micro", &long), stream("micro", &format!("{}u", &long[1..])));
        assert_eq!(one.len(), MAX_NAME_BYTES);
        assert_ne!(one, two, "long names stay distinct through their hash");
        assert_eq!(group_consumer(&long).len(), MAX_NAME_BYTES);
        let hashed = group_consumer(&long);
        assert_eq!(group_of_consumer(&hashed, Some(&group_description(&long))), Some(long.clone()));
        assert_eq!(group_of_consumer(&hashed, None), None, "a hashed name needs its description");
        for name in [one, group_consumer(&long), stream("foo", ".a..b.")] {
            assert!(!name.contains(['.', '*', '>', ' ', '/']), "{name}");
        }

        // Dead letters and released events: their own streams and subjects, one token per group,
        // never overlapping the topic's events or each other.
        assert_eq!(
            dead_subject("foo", "orders.created", "billing.v1"),
            "micro.dead.foo.orders~created.billing~v1"
        );
        assert_eq!(dead_stream("foo", "orders"), "micro-dead~foo~orders");
        assert_eq!(released_subject("foo", "orders", "*"), "micro.released.foo.orders.*");
        assert_eq!(released_stream("foo", "orders"), "micro-released~foo~orders");
        assert_eq!(released_consumer("billing.v1"), "r~billing~v1");
        assert_eq!(released_notify("foo", "orders", "b"), "micro.notify.released.foo.orders.b");
        assert_eq!(released_consumer(&long).len(), MAX_NAME_BYTES);
        for name in [dead_stream("micro", &long), released_stream("micro", &long)] {
            assert_eq!(name.len(), MAX_NAME_BYTES);
            assert!(!name.contains(['.', '*', '>', ' ', '/']), "{name}");
        }
    }

    #[test]
    fn registry_keys_are_valid_and_distinct() {
        assert_eq!(registry_key("foo", "helloworld", "1.0", "hw-1"), "foo.helloworld.1_2E0.hw-1");
        assert_eq!(registry_key("micro", "a.b", "", "n"), "micro.a_2Eb.=.n");
        let keys = [
            registry_key("a", "b", "c", "d"),
            registry_key("a", "b.c", "", "d"),
            registry_key("a", "b", "c.", "d"),
            registry_key("a", "b", "c_2E", "d"),
            registry_key("a", "b", "c.", "d_"),
            registry_key("a", "b", "=", "d"),
            registry_key("a", "b", "", "d"),
            registry_key("a", "b", "ü v/1", "node:1 2"),
        ];
        for (i, key) in keys.iter().enumerate() {
            assert!(
                key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b)),
                "only KV key characters: {key}"
            );
            assert_eq!(key.split('.').count(), 4, "four tokens: {key}");
            assert!(key.split('.').all(|token| !token.is_empty()), "{key}");
            assert!(keys[..i].iter().all(|other| other != key), "distinct: {key}");
        }
    }

    #[test]
    fn headers_round_trip() {
        for name in ["Content-Type", "", "a:b", "has space", "100%", "ünï", "tab\there"] {
            let encoded = encode_header_name(name);
            assert!(encoded.chars().all(|c| c.is_ascii_graphic() && c != ':'), "{encoded}");
            assert_eq!(decode_header_name(&encoded), name);
        }
        assert_eq!(encode_header_name("X-Trace-Id"), "X-Trace-Id", "plain names pass unchanged");
        for value in ["plain value", " padded ", "line\r\nbreak", "50% off", "ü", "", "\t"] {
            let encoded = encode_header_value(value);
            assert!(!encoded.contains(['\r', '\n']) && encoded.trim() == encoded, "{encoded:?}");
            assert_eq!(decode_header_value(&encoded), value);
        }
        assert_eq!(encode_header_value("a b"), "a b");
    }
}
