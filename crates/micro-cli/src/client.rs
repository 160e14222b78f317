//! The connection to the selected environment's server: one gRPC channel, and requests that
//! carry the namespace and, once logged in, the account's token.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::{CliError, Result};
use crate::settings::Settings;

/// How long to wait for the server to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take before the CLI gives up with `Request timed out`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The header the server reads the caller's namespace from.
pub const NAMESPACE_HEADER: &str = "micro-namespace";

/// A connected environment.
pub struct Client {
    pub channel: Channel,
    pub address: String,
    pub namespace: String,
    token: Option<String>,
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
        let address = with_port(&found.proxy_address);
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| CliError::new(format!("invalid address {address:?} for environment '{env}'")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = endpoint.connect().await.map_err(|_| CliError::unreachable(&address))?;
        Ok(Self { channel, address, namespace: settings.namespace(env), token: token_for(env) })
    }

    /// Wraps `message` with the namespace and token headers.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(namespace) = MetadataValue::try_from(self.namespace.as_str()) {
            metadata.insert(NAMESPACE_HEADER, namespace);
        }
        if let Some(token) = &self.token
            && let Ok(bearer) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            metadata.insert("authorization", bearer);
        }
        request
    }

    /// Maps a failed call to the CLI's message and exit code.
    pub fn error(&self, status: tonic::Status) -> CliError {
        CliError::from_status(&status, &self.address)
    }
}

/// The error for an `-e` naming an environment that does not exist.
pub fn env_not_found(env: &str) -> CliError {
    CliError::new(format!("Env \"{env}\" not found. See `micro env` for available environments."))
}

/// A bare host means the TLS port, as the original CLI assumed.
fn with_port(address: &str) -> String {
    if address.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        address.to_string()
    } else {
        format!("{address}:443")
    }
}

/// The access token saved for `env` by `micro login` (`$MICRO_HOME/tokens.json`), if any.
fn token_for(env: &str) -> Option<String> {
    let bytes = std::fs::read(micro_core::home::dir().join("tokens.json")).ok()?;
    let tokens: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    tokens.get(env)?.get("access_token")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_hosts_get_the_tls_port() {
        assert_eq!(with_port("proxy.example.com"), "proxy.example.com:443");
        assert_eq!(with_port("127.0.0.1:8081"), "127.0.0.1:8081");
    }
}
