//! `micro config`: get, set and delete values at dotted paths (docs/compatibility.md §2.12).

use clap::Subcommand;
use micro_proto::config::config_client::ConfigClient;
use micro_proto::config::{DeleteRequest, GetRequest, Options, SetRequest, Value};

use crate::error::{CliError, Result};
use crate::table::Output;
use crate::{Global, out, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the value at a path: strings as they are, anything else as JSON
    Get {
        /// Dotted path, e.g. database.address; empty for the whole document
        #[arg(default_value = "")]
        path: String,
        /// Reveal secret values instead of printing [secret]
        #[arg(short = 's', long)]
        secret: bool,
        /// Output format: strings as they are (table), or every value as JSON, strings quoted
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Set the value at a path: JSON when it parses, else a string; objects merge
    Set {
        path: String,
        value: String,
        /// Store the value encrypted; it reads back as [secret] unless --secret is given
        #[arg(short = 's', long)]
        secret: bool,
    },
    /// Delete the value (or subtree) at a path
    #[command(alias = "delete")]
    Del { path: String },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

pub async fn run(global: &Global, command: ConfigCommand) -> Result<()> {
    if let ConfigCommand::Unknown(args) = &command {
        return Err(unrecognized_subcommand("config", args));
    }
    let client = global.connect().await?;
    let mut config = ConfigClient::new(client.channel.clone());
    let namespace = client.namespace.clone();
    match command {
        ConfigCommand::Get { path, secret, output } => {
            let request = client.request(GetRequest { namespace, path, options: Some(Options { secret }) });
            let reply = config.get(request).await.map_err(|status| client.error(status))?.into_inner();
            let data = reply.value.map(|value| value.data).unwrap_or_default();
            out(&format!("{}\n", printable(&data, output)?));
        }
        ConfigCommand::Set { path, value, secret } => {
            let request = client.request(SetRequest {
                namespace,
                path,
                value: Some(Value { data: as_json(&value), format: "json".to_string() }),
                options: Some(Options { secret }),
            });
            config.set(request).await.map_err(|status| client.error(status))?;
        }
        ConfigCommand::Del { path } => {
            let request = client.request(DeleteRequest { namespace, path });
            config.delete(request).await.map_err(|status| client.error(status))?;
        }
        ConfigCommand::Unknown(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}

/// The JSON text to store for a command-line value: itself when it is JSON, else a JSON string.
fn as_json(value: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(_) => value.to_string(),
        Err(_) => serde_json::Value::String(value.to_string()).to_string(),
    }
}

/// What `config get` prints for the JSON text the server returned: compact JSON, strings
/// unquoted unless `output` is JSON; `null` (nothing at the path) is `Not found`.
fn printable(data: &str, output: Output) -> Result<String> {
    let value: serde_json::Value = if data.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(data)
            .map_err(|err| CliError::new(format!("the server returned a value that is not JSON: {err}")))?
    };
    match value {
        serde_json::Value::Null => Err(CliError::not_found()),
        serde_json::Value::String(text) if output == Output::Table => Ok(text),
        other => Ok(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_else_strings() {
        assert_eq!(as_json(r#"{"c":1}"#), r#"{"c":1}"#);
        assert_eq!(as_json("42"), "42");
        assert_eq!(as_json("val1"), r#""val1""#);
        assert_eq!(as_json(r#"say "hi""#), r#""say \"hi\"""#);
    }

    #[test]
    fn strings_print_unquoted_and_null_is_not_found() {
        assert_eq!(printable(r#""Micro <team>""#, Output::Table).unwrap(), "Micro <team>");
        assert_eq!(printable(r#"{"b": {"c": 1}}"#, Output::Table).unwrap(), r#"{"b":{"c":1}}"#);
        assert_eq!(printable("true", Output::Table).unwrap(), "true");
        assert_eq!(printable("null", Output::Table).unwrap_err().message, "Not found");
        assert_eq!(printable("", Output::Table).unwrap_err().message, "Not found");
        assert_eq!(printable(r#""Micro <team>""#, Output::Json).unwrap(), r#""Micro <team>""#);
        assert_eq!(printable(r#"{"b": 1}"#, Output::Json).unwrap(), r#"{"b":1}"#);
        assert_eq!(printable("null", Output::Json).unwrap_err().message, "Not found");
    }
}
