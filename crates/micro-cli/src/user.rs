//! `micro user`: who you are logged in as, your token, namespace and settings, and your
//! password (docs/compatibility.md §2.7).

use clap::{Args, Subcommand};
use micro_proto::auth::ChangeSecretRequest;
use micro_proto::auth::accounts_client::AccountsClient;

use crate::error::{CliError, Result};
use crate::settings::Settings;
use crate::tokens::Tokens;
use crate::{Global, out, prompt, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Print your access token
    Token,
    /// Print the namespace commands act in, or set it
    Namespace {
        #[command(subcommand)]
        command: Option<NamespaceCommand>,
    },
    /// Print your settings, or get, set and delete one
    Config {
        #[command(subcommand)]
        command: Option<UserConfigCommand>,
    },
    /// Change a setting of your account
    Set {
        #[command(subcommand)]
        command: SetCommand,
    },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

#[derive(Subcommand, Debug)]
pub enum NamespaceCommand {
    /// Act in NAMESPACE from now on (log in there with `micro login`)
    Set { namespace: String },
}

#[derive(Subcommand, Debug)]
pub enum UserConfigCommand {
    /// Print a setting
    Get { key: String },
    /// Set a setting
    Set { key: String, value: String },
    /// Delete a setting
    #[command(alias = "del")]
    Delete { key: String },
}

#[derive(Subcommand, Debug)]
pub enum SetCommand {
    /// Change your password
    Password(PasswordArgs),
}

#[derive(Args, Debug)]
pub struct PasswordArgs {
    /// Current password [prompted for when absent]
    #[arg(long)]
    old_password: Option<String>,
    /// New password [prompted for twice when absent]
    #[arg(long)]
    new_password: Option<String>,
}

pub async fn run(global: &Global, command: Option<UserCommand>) -> Result<()> {
    let mut settings = Settings::load(&global.settings_path())?;
    let env = global.env_name(&settings);
    let namespace = settings.namespace(&env);
    let login = Tokens::load()?.get(&env, &namespace).cloned();
    let not_logged_in = || CliError::new("You are not logged in");
    match command {
        None => out(&format!("{}\n", login.ok_or_else(not_logged_in)?.account_name)),
        Some(UserCommand::Token) => {
            login.ok_or_else(not_logged_in)?;
            // Connecting refreshes a token that is about to expire.
            let client = global.connect().await?;
            out(&format!("{}\n", client.login.ok_or_else(not_logged_in)?.access_token));
        }
        Some(UserCommand::Namespace { command: None }) => out(&format!("{namespace}\n")),
        Some(UserCommand::Namespace { command: Some(NamespaceCommand::Set { namespace }) }) => {
            settings.set_namespace(&env, &namespace)?;
        }
        Some(UserCommand::Config { command: None }) => {
            let user = login.map_or_else(|| "n/a".to_string(), |login| login.account_name);
            let git = if settings.user("git.credentials").is_some() { "[hidden]" } else { "n/a" };
            let base = settings.user("git.baseurl").unwrap_or_else(|| "n/a".to_string());
            out(&format!(
                "user: {user}\nnamespace: {namespace}\nenvironment: {env}\ngit.credentials: {git}\ngit.baseurl: {base}\n"
            ));
        }
        Some(UserCommand::Config { command: Some(UserConfigCommand::Get { key }) }) => {
            out(&format!("{}\n", settings.user(&key).ok_or_else(CliError::not_found)?));
        }
        Some(UserCommand::Config { command: Some(UserConfigCommand::Set { key, value }) }) => {
            settings.set_user(&key, &value)?;
        }
        Some(UserCommand::Config { command: Some(UserConfigCommand::Delete { key }) }) => {
            settings.set_user(&key, "")?;
        }
        Some(UserCommand::Set { command: SetCommand::Password(args) }) => {
            let login = login.ok_or_else(not_logged_in)?;
            change_password(global, &login.account_id, args).await?;
        }
        Some(UserCommand::Unknown(args)) => return Err(unrecognized_subcommand("user", &args)),
    }
    Ok(())
}

async fn change_password(global: &Global, account: &str, args: PasswordArgs) -> Result<()> {
    let old = match args.old_password {
        Some(old) => old,
        None => prompt::secret("Enter current password: ")?,
    };
    let new = match args.new_password {
        Some(new) => new,
        None => {
            let new = prompt::secret("Enter a new password: ")?;
            if prompt::secret("Verify your password: ")? != new {
                return Err(CliError::new("The passwords do not match"));
            }
            new
        }
    };
    if new.is_empty() {
        return Err(CliError::new("The new password must not be empty"));
    }
    let client = global.connect().await?;
    let request = ChangeSecretRequest {
        id: account.to_string(),
        old_secret: old,
        new_secret: new,
        options: Some(client.auth_options()),
    };
    AccountsClient::new(client.channel.clone())
        .change_secret(client.request(request))
        .await
        .map_err(|status| client.error(status))?;
    Ok(())
}
