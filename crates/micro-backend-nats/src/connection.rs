//! One NATS connection: fails fast at boot, reconnects on its own afterwards.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use tokio::sync::watch;

/// How long [`connect`] tries before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one operation (a publish, a JetStream API call, an ack) waits for NATS before it
/// fails as unavailable.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why [`connect`] failed; each message names the server and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid NATS URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to the NATS server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the NATS server at {url} does not have JetStream enabled: start nats-server with -js")]
    NoJetStream { url: String },
}

/// A connection to a NATS server (or cluster), shared by the operations of one backend.
/// Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// The URL with any credentials masked, for logs and errors.
    url: String,
    /// Bumped every time the client (re)connects.
    connects: watch::Receiver<u64>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("url", &self.inner.url).finish_non_exhaustive()
    }
}

/// Connects to `url` (`nats://HOST:PORT` or `tls://HOST:PORT`, optionally with
/// `user:password@`; several comma-separated for a cluster) within [`CONNECT_TIMEOUT`].
/// Afterwards the connection reconnects by itself, forever, when the server goes away.
pub async fn connect(url: &str) -> Result<Connection, ConnectError> {
    let shown = redact(url);
    let servers: Vec<&str> = url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if servers.is_empty() || !servers.iter().all(|s| s.starts_with("nats://") || s.starts_with("tls://")) {
        return Err(ConnectError::InvalidUrl {
            url: shown,
            reason: "use nats://HOST:PORT (or tls://HOST:PORT), comma-separated for a cluster".into(),
        });
    }
    let (connected, connects) = watch::channel(0u64);
    let logged = shown.clone();
    let options = ConnectOptions::new()
        .name("micro")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(OPERATION_TIMEOUT))
        .event_callback(move |event| {
            let (connected, url) = (connected.clone(), logged.clone());
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!(%url, "connected to NATS");
                        connected.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Event::Disconnected => tracing::warn!(%url, "lost the connection to NATS; reconnecting"),
                    // Our own doing: the backend was dropped.
                    Event::Closed => tracing::debug!(%url, "NATS connection closed"),
                    other => tracing::warn!(%url, event = %other, "NATS connection event"),
                }
            }
        });
    let connecting = async_nats::connect_with_options(servers.as_slice(), options);
    // The client's own timeout covers each TCP/TLS handshake; this one covers the whole try.
    let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(ConnectError::Unreachable {
                url: shown,
                reason: format!(
                    "no answer within {}s (is nats-server running there?)",
                    CONNECT_TIMEOUT.as_secs()
                ),
            });
        }
        Ok(Err(err)) if err.kind() == ConnectErrorKind::ServerParse => {
            return Err(ConnectError::InvalidUrl { url: shown, reason: err.to_string() });
        }
        Ok(Err(err)) => {
            return Err(ConnectError::Unreachable {
                url: shown,
                reason: format!("{err} (is nats-server running there?)"),
            });
        }
        Ok(Ok(client)) => client,
    };
    Ok(Connection { inner: Arc::new(Shared { client, url: shown, connects }) })
}

impl Connection {
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The server URL, credentials masked.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Changes every time the client (re)connects.
    pub(crate) fn connects(&self) -> watch::Receiver<u64> {
        self.inner.connects.clone()
    }

    /// `Err` with a clear message while the client is not connected, so callers fail at once
    /// instead of queueing behind a reconnect.
    pub(crate) fn ready(&self) -> Result<(), String> {
        match self.inner.client.connection_state() {
            State::Connected => Ok(()),
            State::Disconnected | State::Pending => {
                Err(format!("not connected to the NATS server at {}; reconnecting", self.inner.url))
            }
        }
    }

    /// The connected server's version and largest accepted message.
    pub(crate) fn server(&self) -> (String, usize) {
        let info = self.inner.client.server_info();
        (info.version, info.max_payload)
    }
}

/// A JetStream context over `connection` whose API calls time out after [`OPERATION_TIMEOUT`],
/// once the server has shown that JetStream is enabled for us.
pub(crate) async fn jetstream(
    connection: &Connection,
) -> Result<async_nats::jetstream::Context, ConnectError> {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::AccountErrorKind;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(OPERATION_TIMEOUT)
        .build(connection.client().clone());
    if let Err(err) = js.query_account().await {
        let url = connection.url().to_string();
        return Err(match err.kind() {
            AccountErrorKind::JetStreamUnavailable => ConnectError::NoJetStream { url },
            AccountErrorKind::JetStream(js_err)
                if [ErrorCode::JETSTREAM_NOT_ENABLED, ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT]
                    .contains(&js_err.error_code()) =>
            {
                ConnectError::NoJetStream { url }
            }
            _ => ConnectError::Unreachable { url, reason: format!("JetStream did not answer: {err}") },
        });
    }
    Ok(js)
}

/// `url` with the password (or token) of each server masked.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let server = server.trim();
            match (server.find("://"), server.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let userinfo = &server[scheme + 3..at];
                    let masked =
                        userinfo.split_once(':').map_or("***".to_string(), |(user, _)| format!("{user}:***"));
                    format!("{}{masked}{}", &server[..scheme + 3], &server[at..])
                }
                _ => server.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("nats://me:secret@host:4222"), "nats://me:***@host:4222");
        assert_eq!(redact("nats://token@host"), "nats://***@host");
        assert_eq!(redact("nats://a:1, nats://u:p@b:2"), "nats://a:1,nats://u:***@b:2");
    }

    #[tokio::test]
    async fn bad_urls_and_unreachable_servers_fail_fast_and_clearly() {
        let err = connect("http://localhost:4222").await.unwrap_err();
        assert!(matches!(err, ConnectError::InvalidUrl { .. }), "{err}");
        assert!(err.to_string().contains("nats://HOST:PORT"), "{err}");

        let started = std::time::Instant::now();
        let err = connect("nats://127.0.0.1:1").await.unwrap_err();
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "names the server: {err}");
    }
}
