//! The connection to the micro server every client in this crate shares: one lazily connected
//! gRPC channel, the namespace, and the [`Session`] whose token each call carries.
//!
//! It is process-wide on purpose: the framework's surface is `micro::store::read(..)` and
//! friends, callable anywhere in a service without wiring (as the original's package-level
//! defaults were). [`Service::run`](crate::Service::run) creates it; a client used first creates
//! it from the same environment.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::env::Env;
use crate::session::{self, Session};
use crate::{Error, Result};

/// How long to wait for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a unary platform call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The shared connection to the micro server.
#[derive(Debug)]
pub(crate) struct Platform {
    pub env: Env,
    /// `host:port` of the server's gRPC listener.
    pub address: String,
    /// Whether the connection uses TLS.
    pub tls: bool,
    pub namespace: String,
    pub channel: Channel,
    pub session: Session,
    /// The running service's name, once [`Service::run`](crate::Service::run) set it.
    pub service: OnceLock<String>,
}

static GLOBAL: OnceLock<Arc<Platform>> = OnceLock::new();

impl Platform {
    /// Builds the connection from `env` and the CLI files under `MICRO_HOME`. No I/O on the
    /// network: the channel connects on first use. Must run inside a tokio runtime.
    pub fn new(env: Env) -> Result<Self> {
        let home = micro_core::home::dir();
        let cli = crate::login::load(&home, env.cli_env.as_deref(), env.namespace.as_deref());
        let plan = session::plan(&env, cli);
        let endpoint = micro_core::tls::endpoint(&plan.server, plan.tls, plan.ca.as_deref())
            .map_err(|err| match err {
                micro_core::tls::ClientTlsError::InvalidAddress(address) => {
                    Error::Config(format!("invalid micro server address {address:?}"))
                }
                // Only MICRO_TLS_CA or the CLI's stored CA can be at fault here.
                other => Error::Config(format!("MICRO_TLS_CA: {other}")),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        let session = Session::new(plan.namespace.clone(), plan.source, home);
        Ok(Self {
            env,
            address: plan.server,
            tls: plan.tls,
            namespace: plan.namespace,
            channel,
            session,
            service: OnceLock::new(),
        })
    }

    /// The process-wide connection, created from the environment on first use.
    pub fn global() -> Result<Arc<Platform>> {
        if let Some(platform) = GLOBAL.get() {
            return Ok(platform.clone());
        }
        let platform = Arc::new(Platform::new(Env::from_process()?)?);
        // Two first uses may race; the loser's connection is dropped unused.
        Ok(GLOBAL.get_or_init(|| platform).clone())
    }

    /// `message` with the namespace and, when the service has one, the bearer token; unary
    /// calls also get [`CALL_TIMEOUT`].
    pub async fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.stream_request(message).await;
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// Like [`Self::request`] without a deadline, for streams that stay open.
    pub async fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.session.anonymous(message);
        // Inside a traced call, the server's span of this one is its child.
        micro_core::trace::inject_metadata(request.metadata_mut());
        if let Some(token) = self.session.bearer(&self.channel).await
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Maps a failed call: a failed TLS handshake becomes [`Error::Tls`], an unreachable server
    /// [`Error::Unreachable`].
    pub fn error(&self, status: tonic::Status) -> Error {
        if let Some(failure) = micro_core::tls::Failure::find(&status) {
            return Error::Tls { address: self.address.clone(), failure };
        }
        if status.code() == tonic::Code::Unavailable {
            Error::Unreachable { address: self.address.clone(), cause: status.message().to_string() }
        } else {
            Error::Status(status)
        }
    }
}
