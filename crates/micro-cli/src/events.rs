//! `micro events publish|consume|read|topics|replay|dead|release|drop`: the durable event
//! streams of the current namespace, replays of their consumer groups (docs/events.md#replay)
//! and the groups' dead letters (docs/events.md#dead-letters).

use clap::Subcommand;
use micro_proto::events::store_client::StoreClient;
use micro_proto::events::stream_client::StreamClient;
use micro_proto::events::{
    AckRequest, ConsumeRequest, DeadLetter, DeadLettersRequest, DropDeadLettersRequest, Event,
    PublishRequest, ReadRequest, ReleaseRequest, ReplayRequest, Topic, TopicsRequest,
};

use crate::error::{CliError, Result};
use crate::table::Output;
use crate::{Global, out, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Publish an event; the payload is JSON
    Publish {
        topic: String,
        payload: String,
        /// Metadata as KEY=VALUE (repeatable)
        #[arg(long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
    },
    /// Print events as they are published, one JSON object per line, until interrupted
    Consume {
        topic: String,
        /// Consumer group: consumers of one group share the events
        #[arg(long)]
        group: Option<String>,
        /// Where to start: a sequence number (1 = the beginning) or a duration ago (e.g. 10m)
        /// [default: new events only]
        #[arg(long)]
        offset: Option<String>,
        /// Stop after this many events
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print stored events in publish order, one JSON object per line
    Read {
        topic: String,
        /// At most this many events
        #[arg(long, default_value_t = 25)]
        limit: u64,
        /// Skip this many events
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// List the namespace's topics, with their event counts and last events
    Topics {
        /// Output format: a table, or one JSON object per line
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Move a consumer group back: its members get the events from --from again, in order
    Replay {
        topic: String,
        /// The consumer group
        #[arg(long)]
        group: String,
        /// The first event: a sequence number, an RFC 3339 time (2026-01-05T10:00:00Z) or a
        /// duration ago (10m)
        #[arg(long, value_name = "TIME|SEQ")]
        from: String,
        /// The last event, as --from [default: none; the group carries on through every later
        /// event]
        #[arg(long, value_name = "TIME|SEQ")]
        to: Option<String>,
    },
    /// List a consumer group's dead letters: events it gave up on
    Dead {
        topic: String,
        /// The consumer group
        #[arg(long)]
        group: String,
        /// Output format: a table, or one JSON object per line
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Hand dead letters back to their group: each is delivered once more, attempts reset
    Release {
        topic: String,
        /// The consumer group
        #[arg(long)]
        group: String,
        /// Event ids of dead letters to release
        #[arg(value_name = "ID")]
        ids: Vec<String>,
        /// Release every dead letter of the group
        #[arg(long)]
        all: bool,
    },
    /// Remove dead letters for good
    Drop {
        topic: String,
        /// The consumer group
        #[arg(long)]
        group: String,
        /// Event ids of dead letters to remove
        #[arg(value_name = "ID")]
        ids: Vec<String>,
        /// Remove every dead letter of the group
        #[arg(long)]
        all: bool,
    },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

/// Checks a release or drop names dead letters: ids, or `--all`, not both.
fn selection(verb: &str, ids: &[String], all: bool) -> Result<()> {
    match (all, ids.is_empty()) {
        (true, false) => Err(CliError::new("Give event ids or --all, not both")),
        (false, true) => {
            Err(CliError::new(format!("Name the dead letters to {verb} by event id, or give --all")))
        }
        _ => Ok(()),
    }
}

/// Unix milliseconds as RFC 3339, to the second; `-` for none.
fn time(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map_or_else(|| "-".to_string(), |ms| micro_core::time::rfc3339(ms / 1000))
}

fn render_dead(dead: &[DeadLetter], output: Output) -> String {
    match output {
        Output::Json => dead
            .iter()
            .map(|letter| {
                let event = letter.event.clone().unwrap_or_default();
                let json = serde_json::json!({
                    "id": event.id,
                    "sequence": event.sequence,
                    "attempts": letter.attempts,
                    "error": letter.error,
                    "first_delivery": time(letter.first_delivery_ms),
                    "last_delivery": time(letter.last_delivery_ms),
                    "event": serde_json::from_str::<serde_json::Value>(render(&event).trim()).unwrap_or_default(),
                });
                format!("{json}\n")
            })
            .collect(),
        Output::Table => {
            let mut rows = vec![["ID", "SEQUENCE", "ATTEMPTS", "FIRST DELIVERY", "LAST DELIVERY", "LAST ERROR"]
                .map(String::from)
                .to_vec()];
            rows.extend(dead.iter().map(|letter| {
                let event = letter.event.clone().unwrap_or_default();
                vec![
                    event.id,
                    event.sequence.to_string(),
                    letter.attempts.to_string(),
                    time(letter.first_delivery_ms),
                    time(letter.last_delivery_ms),
                    letter.error.lines().next().unwrap_or("").to_string(),
                ]
            }));
            crate::table::render(&rows)
        }
    }
}

fn render_topics(topics: &[Topic], output: Output) -> String {
    match output {
        Output::Json => topics
            .iter()
            .map(|topic| {
                let json = serde_json::json!({
                    "name": topic.name,
                    "events": topic.events,
                    "last_sequence": topic.last_sequence,
                    "last_event": time(topic.last_timestamp_ms),
                });
                format!("{json}\n")
            })
            .collect(),
        Output::Table => {
            let mut rows = vec![["NAME", "EVENTS", "LAST SEQUENCE", "LAST EVENT"].map(String::from).to_vec()];
            rows.extend(topics.iter().map(|topic| {
                vec![
                    topic.name.clone(),
                    topic.events.to_string(),
                    topic.last_sequence.to_string(),
                    time(topic.last_timestamp_ms),
                ]
            }));
            crate::table::render(&rows)
        }
    }
}

/// One end of a replay as `(sequence, unix milliseconds)`, one of them zero: a sequence
/// number, an RFC 3339 time, or a duration ago as `consume --offset` takes it.
fn position(flag: &str, text: &str) -> Result<(u64, i64)> {
    if let Ok(sequence) = text.parse::<u64>() {
        if sequence == 0 {
            return Err(CliError::usage(format!("Invalid {flag} 0: sequence numbers start at 1")));
        }
        return Ok((sequence, 0));
    }
    if let Some(seconds) = micro_core::time::parse_rfc3339(text) {
        if seconds <= 0 {
            return Err(CliError::usage(format!("Invalid {flag} {text:?}: give a time after 1970")));
        }
        return Ok((0, seconds.saturating_mul(1000)));
    }
    let ago = micro_core::duration::parse(text).map_err(|_| {
        CliError::usage(format!(
            "Invalid {flag} {text:?}: give a sequence number, an RFC 3339 time such as 2026-01-05T10:00:00Z, \
             or a duration ago such as 10m"
        ))
    })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let since = now.saturating_sub(ago).as_millis();
    Ok((0, i64::try_from(since).unwrap_or(i64::MAX).max(1)))
}

/// How long the server waits for this command to ack an event it was sent before giving it to
/// another member of the group; an event is acked as soon as it is printed.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a consumer starts: `(sequence, unix seconds)`, zero meaning unset.
fn start(offset: Option<&str>) -> Result<(u64, i64)> {
    let Some(offset) = offset else { return Ok((0, 0)) };
    if let Ok(sequence) = offset.parse::<u64>() {
        return Ok((sequence.max(1), 0));
    }
    let ago = micro_core::duration::parse(offset).map_err(|_| {
        CliError::usage(format!(
            "Invalid offset {offset:?}: give a sequence number (1 = the beginning) or a duration such as 10m"
        ))
    })?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let since = now.saturating_sub(ago).as_secs();
    Ok((0, i64::try_from(since).unwrap_or(i64::MAX).max(1)))
}

fn render(event: &Event) -> String {
    let payload = serde_json::from_slice::<serde_json::Value>(&event.payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned()));
    let json = serde_json::json!({
        "id": event.id,
        "topic": event.topic,
        "sequence": event.sequence,
        "timestamp": event.timestamp,
        "metadata": event.metadata,
        "payload": payload,
    });
    format!("{json}\n")
}

pub async fn run(global: &Global, command: EventsCommand) -> Result<()> {
    if let EventsCommand::Unknown(args) = &command {
        return Err(unrecognized_subcommand("events", args));
    }
    match &command {
        EventsCommand::Publish { payload, .. } => {
            serde_json::from_str::<serde_json::Value>(payload)
                .map_err(|err| CliError::new(format!("The payload is not valid JSON: {err}")))?;
        }
        EventsCommand::Consume { offset, .. } => {
            start(offset.as_deref())?;
        }
        EventsCommand::Replay { from, to, .. } => {
            position("--from", from)?;
            if let Some(to) = to {
                position("--to", to)?;
            }
        }
        EventsCommand::Release { ids, all, .. } => selection("release", ids, *all)?,
        EventsCommand::Drop { ids, all, .. } => selection("drop", ids, *all)?,
        _ => {}
    }
    let client = global.connect().await?;
    match command {
        EventsCommand::Publish { topic, payload, metadata } => {
            let mut fields = std::collections::HashMap::new();
            for entry in metadata {
                let (key, value) =
                    entry.split_once('=').filter(|(key, _)| !key.is_empty()).ok_or_else(|| {
                        CliError::new(format!("Invalid metadata {entry:?}: expected KEY=VALUE"))
                    })?;
                fields.insert(key.to_string(), value.to_string());
            }
            let request =
                PublishRequest { topic, metadata: fields, payload: payload.into_bytes(), timestamp: 0 };
            StreamClient::new(client.channel.clone())
                .publish(client.request(request))
                .await
                .map_err(|status| client.error(status))?;
        }
        EventsCommand::Consume { topic, group, offset, count } => {
            let (sequence, since) = start(offset.as_deref())?;
            let group = group.unwrap_or_default();
            // Manual ack, each event acked once printed: the server streams ahead of what this
            // command reads, and with auto-ack events it never printed (after `--count`, or on
            // Ctrl-C) would count as consumed. Unacked ones go back to the group when we leave.
            let request = ConsumeRequest {
                group: group.clone(),
                topic: topic.clone(),
                offset: since,
                auto_ack: false,
                ack_wait: i64::try_from(ACK_WAIT.as_nanos()).unwrap_or(i64::MAX),
                retry_limit: -1,
                sequence,
            };
            let mut stream_client = StreamClient::new(client.channel.clone());
            let mut stream = stream_client
                .consume(client.request(request))
                .await
                .map_err(|status| client.error(status))?
                .into_inner();
            let mut seen = 0;
            while count.is_none_or(|count| seen < count) {
                let Some(event) = stream.message().await.map_err(|status| client.error(status))? else {
                    break;
                };
                out(&render(&event));
                let ack =
                    AckRequest { id: event.id, success: true, topic: topic.clone(), group: group.clone() };
                match stream_client.ack(client.request(ack)).await {
                    // Redelivered after its ack wait and acked already: nothing left to settle.
                    Err(status) if status.code() == tonic::Code::NotFound => {}
                    Err(status) => return Err(client.error(status)),
                    Ok(_) => {}
                }
                seen += 1;
            }
        }
        EventsCommand::Read { topic, limit, offset } => {
            let reply = StoreClient::new(client.channel.clone())
                .read(client.request(ReadRequest { topic, limit, offset }))
                .await
                .map_err(|status| client.error(status))?;
            out(&reply.into_inner().events.iter().map(render).collect::<String>());
        }
        EventsCommand::Topics { output } => {
            let reply = StreamClient::new(client.channel.clone())
                .topics(client.request(TopicsRequest {}))
                .await
                .map_err(|status| client.error(status))?;
            out(&render_topics(&reply.into_inner().topics, output));
        }
        EventsCommand::Replay { topic, group, from, to } => {
            let (from_sequence, from_time_ms) = position("--from", &from)?;
            let (to_sequence, to_time_ms) = match &to {
                Some(to) => position("--to", to)?,
                None => (0, 0),
            };
            let request = ReplayRequest {
                topic,
                group: group.clone(),
                from_sequence,
                from_time_ms,
                to_sequence,
                to_time_ms,
            };
            let reply = StreamClient::new(client.channel.clone())
                .replay(client.request(request))
                .await
                .map_err(|status| client.error(status))?
                .into_inner();
            let plural = if reply.events == 1 { "" } else { "s" };
            let end = if to.is_some() { "" } else { ", then every later event" };
            out(&format!(
                "Replaying {} event{plural} (sequences {} to {}{end}) to group {group}\n",
                reply.events, reply.first_sequence, reply.last_sequence
            ));
        }
        EventsCommand::Dead { topic, group, output } => {
            let reply = StreamClient::new(client.channel.clone())
                .dead_letters(client.request(DeadLettersRequest { topic, group }))
                .await
                .map_err(|status| client.error(status))?;
            out(&render_dead(&reply.into_inner().dead_letters, output));
        }
        EventsCommand::Release { topic, group, ids, all } => {
            let reply = StreamClient::new(client.channel.clone())
                .release(client.request(ReleaseRequest { topic, group, ids, all }))
                .await
                .map_err(|status| client.error(status))?;
            out(&reply.into_inner().ids.iter().map(|id| format!("{id}\n")).collect::<String>());
        }
        EventsCommand::Drop { topic, group, ids, all } => {
            let reply = StreamClient::new(client.channel.clone())
                .drop_dead_letters(client.request(DropDeadLettersRequest { topic, group, ids, all }))
                .await
                .map_err(|status| client.error(status))?;
            out(&reply.into_inner().ids.iter().map(|id| format!("{id}\n")).collect::<String>());
        }
        EventsCommand::Unknown(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_sequences_or_durations_ago() {
        assert_eq!(start(None).unwrap(), (0, 0));
        assert_eq!(start(Some("1")).unwrap(), (1, 0));
        assert_eq!(start(Some("0")).unwrap(), (1, 0), "0 means the beginning too");
        let (sequence, since) = start(Some("10m")).unwrap();
        assert_eq!(sequence, 0);
        assert!(since > 0);
        assert!(start(Some("yesterday")).unwrap_err().message.contains("Invalid offset"));
    }

    #[test]
    fn dead_letters_render_and_selections_are_checked() {
        let dead = DeadLetter {
            event: Some(Event {
                id: "e1".into(),
                sequence: 7,
                payload: b"{}".to_vec(),
                ..Default::default()
            }),
            attempts: 4,
            error: "boom\nsecond line".into(),
            first_delivery_ms: 1_700_000_000_000,
            last_delivery_ms: 1_700_000_001_000,
        };
        let table = render_dead(std::slice::from_ref(&dead), Output::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID  SEQUENCE  ATTEMPTS"), "{table}");
        assert!(lines[1].starts_with("e1  7         4         2023-11-14T22:13:20Z"), "{table}");
        assert!(lines[1].ends_with("boom"), "the first line of the error: {table}");
        let json: serde_json::Value =
            serde_json::from_str(render_dead(&[dead], Output::Json).trim()).unwrap();
        assert_eq!((json["id"].as_str(), json["attempts"].as_u64()), (Some("e1"), Some(4)));
        assert_eq!(json["event"]["sequence"], 7);

        assert!(selection("release", &[], false).unwrap_err().message.contains("or give --all"));
        assert!(selection("drop", &["a".into()], true).unwrap_err().message.contains("not both"));
        assert!(selection("drop", &["a".into()], false).is_ok() && selection("drop", &[], true).is_ok());
    }

    #[test]
    fn replay_positions_and_topics() {
        assert_eq!(position("--from", "7").unwrap(), (7, 0));
        assert_eq!(position("--from", "2026-01-05T10:00:00Z").unwrap(), (0, 1_767_607_200_000));
        let (sequence, ms) = position("--from", "10m").unwrap();
        let now = i64::try_from(micro_core::time::unix_millis()).unwrap();
        assert!(sequence == 0 && (now - 600_000 - 5_000..=now - 600_000).contains(&ms), "{ms}");
        assert!(position("--from", "0").unwrap_err().message.contains("start at 1"));
        let bad = position("--to", "yesterday").unwrap_err().message;
        assert!(bad.starts_with("Invalid --to \"yesterday\"") && bad.contains("RFC 3339"), "{bad}");

        let topics = [Topic {
            name: "orders".into(),
            events: 3,
            last_sequence: 5,
            last_timestamp_ms: 1_700_000_000_000,
        }];
        let table = render_topics(&topics, Output::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME    EVENTS  LAST SEQUENCE  LAST EVENT"), "{table}");
        assert_eq!(lines[1], "orders  3       5              2023-11-14T22:13:20Z", "{table}");
        let json: serde_json::Value =
            serde_json::from_str(render_topics(&topics, Output::Json).trim()).unwrap();
        assert_eq!(
            (json["name"].as_str(), json["events"].as_u64(), json["last_sequence"].as_u64()),
            (Some("orders"), Some(3), Some(5))
        );
        assert_eq!(json["last_event"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn payloads_render_as_json_when_they_are() {
        let event =
            Event { id: "a".into(), payload: br#"{"n":1}"#.to_vec(), sequence: 3, ..Default::default() };
        let line: serde_json::Value = serde_json::from_str(&render(&event)).unwrap();
        assert_eq!(line["payload"]["n"], 1);
        assert_eq!(line["sequence"], 3);
        let text = Event { payload: b"plain".to_vec(), ..Default::default() };
        assert_eq!(serde_json::from_str::<serde_json::Value>(&render(&text)).unwrap()["payload"], "plain");
    }
}
