//! `micro env`: list, get, set, add and delete environments (reference §2.6).

use clap::Subcommand;

use crate::error::Result;
use crate::settings::Settings;
use crate::{Global, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Print the current environment's name
    Get,
    /// Select the environment later commands use
    Set { name: String },
    /// Add an environment, or point an existing one at a new address
    Add {
        name: String,
        /// The server's gRPC address
        #[arg(value_name = "HOST:PORT")]
        address: Option<String>,
    },
    /// Delete an environment
    #[command(alias = "delete")]
    Del { name: String },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

pub fn run(global: &Global, command: Option<EnvCommand>) -> Result<()> {
    let mut settings = Settings::load(&global.settings_path())?;
    match command {
        None => print!("{}", list(&settings, &global.env_name(&settings))),
        Some(EnvCommand::Get) => println!("{}", global.env_name(&settings)),
        Some(EnvCommand::Set { name }) => settings.select(&name)?,
        Some(EnvCommand::Add { name, address }) => {
            settings.add(&name, address.as_deref().unwrap_or_default())?
        }
        Some(EnvCommand::Del { name }) => {
            settings.delete(&name)?;
            crate::tokens::Tokens::load()?.remove_env(&name)?;
        }
        Some(EnvCommand::Unknown(args)) => return Err(unrecognized_subcommand("env", &args)),
    }
    Ok(())
}

/// One line per environment: `* name address  description`, the current one starred.
fn list(settings: &Settings, current: &str) -> String {
    let rows: Vec<Vec<String>> = settings
        .envs()
        .into_iter()
        .map(|env| {
            let marker = if env.name == current { "*" } else { " " };
            let address = if env.proxy_address.is_empty() { "none".to_string() } else { env.proxy_address };
            vec![format!("{marker} {}", env.name), address, env.description]
        })
        .collect();
    crate::table::render(&rows)
}
