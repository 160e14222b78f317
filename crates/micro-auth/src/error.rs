//! [`AuthError`]: every way an auth operation fails, with the variants callers act on.

use micro_store::StoreError;

/// The message of every failed credential login, whether the account is unknown or the secret
/// is wrong: the two must be indistinguishable.
pub const INVALID_CREDENTIALS: &str = "Invalid credentials";
/// The message of a refresh token that is unknown, already used, revoked or expired.
pub const INVALID_REFRESH_TOKEN: &str = "Invalid refresh token";
/// The message of `Auth.Token` without credentials or a refresh token.
pub const CREDENTIALS_REQUIRED: &str = "Credentials or a refresh token required";
/// The message of `Accounts.ChangeSecret` with a wrong old secret.
pub const SECRET_NOT_CORRECT: &str = "Secret not correct";
/// The message of an attempt to delete the account making the request.
pub const CANNOT_DELETE_SELF: &str = "Can't delete your own account";
/// Duplicate account id.
pub const DUPLICATE_ID: &str = "Account with this ID already exists";
/// Duplicate account name.
pub const DUPLICATE_NAME: &str = "Account with this Name already exists";
/// Duplicate rule id.
pub const DUPLICATE_RULE: &str = "A rule with this ID already exists";
/// An account id or name that matches no account.
pub const ACCOUNT_NOT_FOUND: &str = "Account not found";

/// Why an auth operation failed. Messages are safe to send to clients except for
/// [`AuthError::Key`], [`AuthError::Internal`] and [`AuthError::Store`], which may name files
/// and engine internals: `grpc` logs those and sends a summary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request broke a rule or limit; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// An account or rule with that id (or account name) already exists.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// No such account or rule.
    #[error("{0}")]
    NotFound(&'static str),
    /// Login with an unknown account or a wrong secret ([`INVALID_CREDENTIALS`]).
    #[error("{INVALID_CREDENTIALS}")]
    InvalidCredentials,
    /// A refresh token that is unknown, used, revoked or expired ([`INVALID_REFRESH_TOKEN`]).
    #[error("{INVALID_REFRESH_TOKEN}")]
    InvalidRefreshToken,
    /// An access token that fails verification (bad signature, expired, malformed).
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    /// `ChangeSecret` with a wrong old secret ([`SECRET_NOT_CORRECT`]).
    #[error("{SECRET_NOT_CORRECT}")]
    SecretNotCorrect,
    /// The caller tried to delete its own account ([`CANNOT_DELETE_SELF`]).
    #[error("{CANNOT_DELETE_SELF}")]
    CannotDeleteSelf,
    /// A limit on logins was reached: the hashing queue is full, or an account or peer failed
    /// too often (see [`crate::throttle`]). `limit` names the limit and its value; the caller
    /// may try again after `retry_after_secs` (gRPC `RESOURCE_EXHAUSTED`, HTTP 429).
    #[error("{limit}; retry in {retry_after_secs} s")]
    Throttled { limit: String, retry_after_secs: u64 },
    /// The caller may not act in the namespace.
    #[error(transparent)]
    Denied(#[from] micro_core::Denied),
    /// The signing key file cannot be created or read.
    #[error("auth key: {0}")]
    Key(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record is corrupt or hashing/signing failed.
    #[error("auth failed: {0}")]
    Internal(String),
}

impl From<micro_core::InvalidNamespace> for AuthError {
    fn from(err: micro_core::InvalidNamespace) -> Self {
        AuthError::Invalid(err.to_string())
    }
}
