//! The connection to the selected environment's server: one gRPC channel, and requests that
//! carry the namespace and, once logged in, the account's token.

use std::time::Duration;

use micro_proto::auth::auth_client::AuthClient;
use micro_proto::auth::{Options, TokenRequest};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::error::{CliError, Result};
use crate::settings::Settings;
use crate::tokens::{self, Saved, Tokens};

/// How long to wait for the server to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take before the CLI gives up with `Request timed out`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub use micro_core::NAMESPACE_HEADER;

/// A connected environment.
pub struct Client {
    pub channel: Channel,
    pub address: String,
    /// Whether the connection uses TLS.
    pub tls: bool,
    pub env: String,
    pub namespace: String,
    /// The login this client calls as, if any (already refreshed when it was about to expire).
    pub login: Option<Saved>,
}

impl Client {
    /// Connects to environment `env` as `settings` describe it.
    pub async fn connect(settings: &Settings, env: &str) -> Result<Self> {
        let Some(found) = settings.env(env) else { return Err(env_not_found(env)) };
        if found.proxy_address.is_empty() {
            return Err(CliError::new(format!(
                "Environment '{env}' has no address: set one with `micro env add {env} HOST:PORT`"
            )));
        }
        let address = micro_core::with_port(&found.proxy_address);
        let tls = found.uses_tls();
        let endpoint = micro_core::tls::endpoint(&address, tls, found.ca_path())
            .map_err(|err| CliError::new(format!("environment '{env}': {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|err| CliError::connect_failed(&address, &err))?;
        let mut client = Self {
            channel,
            address,
            tls,
            env: env.to_string(),
            namespace: settings.namespace(env),
            login: None,
        };
        client.login = client.current_login().await?;
        Ok(client)
    }

    /// The saved login for this env and namespace, refreshed first when it expires within
    /// [`REFRESH_MARGIN_SECS`](micro_core::cli_files::REFRESH_MARGIN_SECS). A refresh token the
    /// server no longer accepts (revoked, account deleted) drops the login: the call goes on
    /// anonymously.
    async fn current_login(&self) -> Result<Option<Saved>> {
        let tokens = Tokens::load()?;
        let Some(saved) = tokens.get(&self.env, &self.namespace).cloned() else { return Ok(None) };
        if !saved.needs_refresh(micro_core::time::unix_seconds()) {
            return Ok(Some(saved));
        }
        // One refresh at a time: a refresh token is used up by its refresh, so a second CLI
        // process (or `micro run --watch` beside `micro <service>` calls) refreshing the same
        // login would be refused and drop it. Whoever waited reads what the first one saved.
        let _lock = Tokens::lock().await?;
        let mut tokens = Tokens::load()?;
        let Some(saved) = tokens.get(&self.env, &self.namespace).cloned() else { return Ok(None) };
        if !saved.needs_refresh(micro_core::time::unix_seconds()) {
            return Ok(Some(saved));
        }
        let mut auth = AuthClient::new(self.channel.clone());
        let request = TokenRequest {
            refresh_token: saved.refresh_token.clone(),
            token_expiry: tokens::TOKEN_EXPIRY_SECS,
            options: Some(Options { namespace: self.namespace.clone() }),
            ..Default::default()
        };
        match auth.token(self.anonymous_request(request)).await {
            Ok(reply) => {
                let Some(token) = reply.into_inner().token else { return Ok(None) };
                let refreshed = tokens::from_token(&token);
                tokens.set(&self.env, &self.namespace, refreshed.clone())?;
                Ok(Some(refreshed))
            }
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::InvalidArgument | Code::NotFound
                ) =>
            {
                tokens.remove(&self.env, &self.namespace)?;
                eprintln!("Your login has expired: log in again with `micro login`");
                Ok(None)
            }
            Err(status) => Err(self.error(status)),
        }
    }

    /// Wraps `message` with the namespace header only.
    pub fn anonymous_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(namespace) = MetadataValue::try_from(self.namespace.as_str()) {
            request.metadata_mut().insert(NAMESPACE_HEADER, namespace);
        }
        request
    }

    /// Wraps `message` with the namespace and token headers.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.anonymous_request(message);
        if let Some(login) = &self.login
            && let Ok(bearer) = MetadataValue::try_from(format!("Bearer {}", login.access_token))
        {
            request.metadata_mut().insert("authorization", bearer);
        }
        request
    }

    /// The options every auth call carries: the current namespace.
    pub fn auth_options(&self) -> Options {
        Options { namespace: self.namespace.clone() }
    }

    /// Maps a failed call to the CLI's message and exit code.
    pub fn error(&self, status: tonic::Status) -> CliError {
        CliError::from_status(&status, &self.address, self.tls)
    }
}

/// The error for an `-e` naming an environment that does not exist.
pub fn env_not_found(env: &str) -> CliError {
    CliError::new(format!("Env \"{env}\" not found. See `micro env` for available environments."))
}
