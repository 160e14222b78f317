//! `micro broker publish|subscribe`: ephemeral pub/sub in the current namespace.

use clap::Subcommand;
use micro_proto::broker::broker_client::BrokerClient;
use micro_proto::broker::{Message, PublishRequest, SubscribeRequest};

use crate::error::{CliError, Result};
use crate::{Global, out, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum BrokerCommand {
    /// Publish a message to a topic; the body is the other arguments joined by spaces (flags
    /// may come anywhere; put `--` before a body that starts with a dash)
    Publish {
        topic: String,
        #[arg(required = true, num_args = 1..)]
        body: Vec<String>,
        /// A header as KEY=VALUE (repeatable)
        #[arg(long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
    },
    /// Print the messages published to a topic, one per line, until interrupted
    Subscribe {
        topic: String,
        /// Share messages with the other subscribers of this queue instead of getting them all
        #[arg(long)]
        queue: Option<String>,
        /// Stop after this many messages
        #[arg(long)]
        count: Option<u64>,
    },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

pub async fn run(global: &Global, command: BrokerCommand) -> Result<()> {
    if let BrokerCommand::Unknown(args) = &command {
        return Err(unrecognized_subcommand("broker", args));
    }
    let client = global.connect().await?;
    let mut broker = BrokerClient::new(client.channel.clone());
    match command {
        BrokerCommand::Publish { topic, body, headers } => {
            let mut header = std::collections::HashMap::new();
            for entry in headers {
                let (key, value) = entry
                    .split_once('=')
                    .filter(|(key, _)| !key.is_empty())
                    .ok_or_else(|| CliError::new(format!("Invalid header {entry:?}: expected KEY=VALUE")))?;
                header.insert(key.to_string(), value.to_string());
            }
            let message = Message { header, body: body.join(" ").into_bytes() };
            let request = client.request(PublishRequest { topic, message: Some(message) });
            broker.publish(request).await.map_err(|status| client.error(status))?;
        }
        BrokerCommand::Subscribe { topic, queue, count } => {
            let request = client.request(SubscribeRequest { topic, queue: queue.unwrap_or_default() });
            let mut stream =
                broker.subscribe(request).await.map_err(|status| client.error(status))?.into_inner();
            let mut seen = 0;
            while count.is_none_or(|count| seen < count) {
                let Some(message) = stream.message().await.map_err(|status| client.error(status))? else {
                    break;
                };
                out(&format!("{}\n", String::from_utf8_lossy(&message.body)));
                seen += 1;
            }
        }
        BrokerCommand::Unknown(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}
