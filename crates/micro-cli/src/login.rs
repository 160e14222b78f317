//! `micro login` and `micro logout` (docs/compatibility.md §2.7).

use clap::Args;
use micro_proto::auth::TokenRequest;
use micro_proto::auth::auth_client::AuthClient;

use crate::error::{CliError, EXIT_UNAUTHORIZED, Result};
use crate::tokens::{self, Tokens};
use crate::{Global, out, prompt};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Account id or name [prompted for when absent]
    #[arg(long, visible_alias = "email")]
    username: Option<String>,
    /// Password [prompted for, without echo, when absent]
    #[arg(long)]
    password: Option<String>,
}

pub async fn login(global: &Global, args: LoginArgs) -> Result<()> {
    let username = match args.username {
        Some(username) => username,
        None => prompt::line("Enter username: ")?,
    };
    let password = match args.password {
        Some(password) => password,
        None => prompt::secret("Enter password: ")?,
    };
    if username.is_empty() || password.is_empty() {
        return Err(CliError::new("a username and a password are required"));
    }

    let client = global.connect().await?;
    let mut tokens = Tokens::load()?;
    tokens.remove(&client.env, &client.namespace)?;
    let request = TokenRequest {
        id: username,
        secret: password,
        token_expiry: tokens::TOKEN_EXPIRY_SECS,
        options: Some(client.auth_options()),
        ..Default::default()
    };
    let reply = AuthClient::new(client.channel.clone())
        .token(client.anonymous_request(request))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated => CliError::with_code(
                format!(
                    "Invalid credentials: check the username and password for namespace {}",
                    client.namespace
                ),
                EXIT_UNAUTHORIZED,
            ),
            _ => client.error(status),
        })?;
    let token = reply.into_inner().token.ok_or_else(|| CliError::new("the server returned no token"))?;
    tokens.set(&client.env, &client.namespace, tokens::from_token(&token))?;
    out("Successfully logged in.\n");
    Ok(())
}

/// Forgets the login for the current environment and namespace.
pub fn logout(global: &Global) -> Result<()> {
    let (env, namespace) = global.env_and_namespace()?;
    Tokens::load()?.remove(&env, &namespace)?;
    Ok(())
}
