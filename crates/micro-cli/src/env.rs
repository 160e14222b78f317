//! `micro env`: list, get, set, add and delete environments (docs/compatibility.md §2.6).

use std::path::PathBuf;

use clap::Subcommand;

use crate::error::Result;
use crate::settings::{Settings, Transport};
use crate::table::Output;
use crate::{Global, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Print the current environment's name
    Get,
    /// Select the environment later commands use
    Set { name: String },
    /// Add an environment, or point an existing one at a new address
    ///
    /// The CLI connects with TLS to any address on port 443 (a bare host means port 443), or on
    /// another port with --tls, and verifies the server's certificate against the system's
    /// certificate authorities plus the one given with --ca.
    Add {
        name: String,
        /// The server's gRPC address
        #[arg(value_name = "HOST:PORT")]
        address: Option<String>,
        /// Connect with TLS on a port other than 443
        #[arg(long)]
        tls: bool,
        /// Also trust this CA certificate (PEM), e.g. a self-signed or private CA; implies --tls
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Delete an environment
    #[command(alias = "delete")]
    Del { name: String },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

pub fn run(global: &Global, command: Option<EnvCommand>, output: Output) -> Result<()> {
    let mut settings = Settings::load(&global.settings_path())?;
    match command {
        None if output == Output::Json => crate::out(&list_json(&settings, &global.env_name(&settings))),
        None => crate::out(&list(&settings, &global.env_name(&settings))),
        Some(EnvCommand::Get) => println!("{}", global.env_name(&settings)),
        Some(EnvCommand::Set { name }) => settings.select(&name)?,
        Some(EnvCommand::Add { name, address, tls, ca }) => {
            settings.add(&name, address.as_deref().unwrap_or_default(), &Transport { tls, ca })?
        }
        Some(EnvCommand::Del { name }) => {
            settings.delete(&name)?;
            crate::tokens::Tokens::load()?.remove_env(&name)?;
        }
        Some(EnvCommand::Unknown(args)) => return Err(unrecognized_subcommand("env", &args)),
    }
    Ok(())
}

/// One line per environment: `* name address  description`, the current one starred; the
/// address says `(TLS)` or `(TLS, CA FILE)` when the CLI connects with TLS.
fn list(settings: &Settings, current: &str) -> String {
    let rows: Vec<Vec<String>> = settings
        .envs()
        .into_iter()
        .map(|env| {
            let marker = if env.name == current { "*" } else { " " };
            let address = match (env.proxy_address.is_empty(), env.uses_tls(), env.ca_path()) {
                (true, _, _) => "none".to_string(),
                (false, false, _) => env.proxy_address.clone(),
                (false, true, None) => format!("{} (TLS)", env.proxy_address),
                (false, true, Some(ca)) => format!("{} (TLS, CA {})", env.proxy_address, ca.display()),
            };
            vec![format!("{marker} {}", env.name), address, env.description]
        })
        .collect();
    crate::table::render(&rows)
}

/// `micro env --output json`: an array of `{name, address, current, tls, ca, description}`,
/// `address` empty and `ca` null when there is none.
fn list_json(settings: &Settings, current: &str) -> String {
    let envs: Vec<_> = settings
        .envs()
        .into_iter()
        .map(|env| {
            serde_json::json!({
                "name": env.name,
                "address": env.proxy_address,
                "current": env.name == current,
                "tls": env.uses_tls(),
                "ca": env.ca_path().map(|ca| ca.display().to_string()),
                "description": env.description,
            })
        })
        .collect();
    crate::table::json(&envs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_shows_how_each_env_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load(&dir.path().join("config.json")).unwrap();
        settings.add("prod", "proxy.example.com:443", &Transport::default()).unwrap();
        settings.add("staging", "10.0.0.1:8081", &Transport::default()).unwrap();
        settings.add("empty", "", &Transport { tls: true, ca: None }).unwrap();
        let listing = list(&settings, "prod");
        let line = |name: &str| listing.lines().find(|l| l[2..].starts_with(name)).unwrap().to_string();
        assert!(line("prod").starts_with("* prod") && line("prod").contains("proxy.example.com:443 (TLS)"));
        assert!(line("staging").contains("10.0.0.1:8081") && !line("staging").contains("TLS"), "{listing}");
        assert!(line("local").contains("127.0.0.1:8081") && !line("local").contains("TLS"), "{listing}");
        assert!(line("empty").contains("none") && !line("empty").contains("TLS"), "{listing}");

        let json: serde_json::Value = serde_json::from_str(&list_json(&settings, "prod")).unwrap();
        let env =
            |name: &str| json.as_array().unwrap().iter().find(|env| env["name"] == name).unwrap().clone();
        assert_eq!(
            (env("prod")["address"].as_str(), env("prod")["current"].as_bool(), env("prod")["tls"].as_bool()),
            (Some("proxy.example.com:443"), Some(true), Some(true))
        );
        assert_eq!(
            (env("staging")["current"].as_bool(), env("staging")["tls"].as_bool()),
            (Some(false), Some(false))
        );
        assert_eq!((env("empty")["address"].as_str(), env("empty")["ca"].is_null()), (Some(""), true));
    }
}
