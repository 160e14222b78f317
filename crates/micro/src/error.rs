//! The framework's one error type.

/// What went wrong in the framework or in a call to the platform.
#[derive(thiserror::Error)]
pub enum Error {
    /// A `MICRO_*` variable or builder option has a value the framework cannot use.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The service could not listen on its address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    /// The micro server could not be reached.
    #[error("cannot reach the micro server at {address}: {cause} (is 'micro server' running?)")]
    Unreachable { address: String, cause: String },
    /// The TLS handshake with the micro server failed (an untrusted CA: set `MICRO_TLS_CA`).
    #[error("cannot reach the micro server at {address} over TLS: {failure}")]
    Tls { address: String, failure: micro_core::tls::Failure },
    /// A named service has no running node in the registry.
    #[error("service {0} not found")]
    NotFound(String),
    /// A platform call was refused or failed; the status says why.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// A value could not be encoded or decoded as JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Debug` prints the message: `fn main() -> micro::Result<()>` then reports errors readably.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// The gRPC status of a failed platform call, if that is what this is.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(status) => Some(status),
            _ => None,
        }
    }
}

/// The framework's result type; `fn main() -> micro::Result<()>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
