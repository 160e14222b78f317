//! Why a runtime operation failed: [`RuntimeError`], whose messages are safe to send to clients
//! (the gRPC edge maps each variant to a status code in `grpc`).

use micro_core::names::InvalidName;

/// Why a runtime operation failed; messages are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A limit such as [`MAX_SERVICES`](crate::MAX_SERVICES) or
    /// [`MAX_UPLOAD_BYTES`](crate::MAX_UPLOAD_BYTES) was reached.
    #[error("{0}")]
    Full(String),
    #[error("{0}")]
    Denied(micro_core::Denied),
    /// The caller may act in the namespace but not ask for this (a tenant asking for a command
    /// or a server-local source, docs/security.md); the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// A build failed (shown as the service's error).
    #[error("{0}")]
    Build(String),
    #[error("{0}")]
    Internal(String),
}

impl From<micro_store::StoreError> for RuntimeError {
    fn from(err: micro_store::StoreError) -> Self {
        RuntimeError::Internal(format!("runtime state: {err}"))
    }
}

impl From<InvalidName> for RuntimeError {
    fn from(err: InvalidName) -> Self {
        RuntimeError::Invalid(err.to_string())
    }
}

/// A failure of the runtime's own files (sources, builds, logs) as an internal error.
pub(crate) fn internal(err: std::io::Error) -> RuntimeError {
    RuntimeError::Internal(format!("runtime storage: {err}"))
}
