//! The small shared kernel every micro crate may depend on.
//!
//! - [`Context`]: who is calling and in which namespace, resolved once at the edge.
//! - [`home`]: where state lives (`MICRO_HOME`, default `~/.micro`).
//! - [`duration`]: Go-style durations (`1s`, `1m30s`, `250ms`) as the original CLI accepted.
//! - [`shutdown`]: the signal future servers drain on.
//!
//! Not a dumping ground: anything used by one crate only lives in that crate.

pub mod duration;
pub mod home;
pub mod shutdown;

/// The version every component reports (`micro --version`, the gateway's `GET /`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The namespace of the platform's administrators and core services.
pub const DEFAULT_NAMESPACE: &str = "micro";

/// Identity and scope of one request, resolved once by the edge (gRPC interceptor or gateway)
/// and handed to core services, which scope all data by [`Context::namespace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The namespace the request acts in (store database, config document, topic prefix ...).
    pub namespace: String,
    /// The authenticated account's id, when the caller presented a valid token.
    pub account: Option<String>,
}

impl Context {
    /// A context in `namespace` with no authenticated account.
    pub fn anonymous(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            account: None,
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::anonymous(DEFAULT_NAMESPACE)
    }
}
