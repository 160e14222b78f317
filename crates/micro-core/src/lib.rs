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
        Self { namespace: namespace.into(), account: None }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::anonymous(DEFAULT_NAMESPACE)
    }
}

/// Longest namespace name accepted anywhere.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Why a namespace name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid namespace {0:?}: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
)]
pub struct InvalidNamespace(pub String);

/// Checks a namespace name: 1–[`MAX_NAMESPACE_BYTES`] of `[a-z0-9_-]`, not starting with `-`/`_`.
/// Namespaces become store databases, topic prefixes and DNS labels, so the alphabet is narrow.
pub fn validate_namespace(name: &str) -> Result<(), InvalidNamespace> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(InvalidNamespace(name.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for good in ["micro", "foo", "foo-bar", "a1", "team_9"] {
            assert!(validate_namespace(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAMESPACE_BYTES + 1);
        for bad in ["", "Foo", "-x", "_x", "a.b", "a/b", "a b", long.as_str()] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
        assert!(validate_namespace(&"a".repeat(MAX_NAMESPACE_BYTES)).is_ok());
    }
}
