//! `micro events publish|consume|read`: the durable event streams of the current namespace.

use clap::Subcommand;
use micro_proto::events::store_client::StoreClient;
use micro_proto::events::stream_client::StreamClient;
use micro_proto::events::{AckRequest, ConsumeRequest, Event, PublishRequest, ReadRequest};

use crate::error::{CliError, Result};
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
    #[command(external_subcommand)]
    Unknown(Vec<String>),
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
        CliError::new(format!(
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
                stream_client.ack(client.request(ack)).await.map_err(|status| client.error(status))?;
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
