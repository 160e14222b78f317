//! The small shared kernel every micro crate may depend on.
//!
//! - [`Context`]: who is calling and in which namespace, resolved once at the edge.
//! - [`home`]: where state lives (`MICRO_HOME`, default `~/.micro`).
//! - [`cli_files`]: the CLI's `config.json` and `tokens.json`, read by the CLI and the framework.
//! - [`backoff`]: the one retry pacing (exponential, with jitter) of every retry loop.
//! - [`batch`]: the waiting line of a group commit (event log, store file).
//! - [`duration`]: Go-style durations (`1s`, `1m30s`, `250ms`) as the original CLI accepted.
//! - [`metrics`]: Prometheus metrics: the request metrics' names and layer, the one recorder.
//! - [`host`]: which `Host` a loopback listener answers (DNS rebinding), for every HTTP port.
//! - [`logging`]: one logging setup (filter `MICRO_LOG`, format text or JSON) for server and services.
//! - [`names`]: the one rule for service names and versions (runtime and CLI alike).
//! - [`service_env`]: the `MICRO_*` variables the runtime sets for a service and `micro` reads.
//! - [`shutdown`]: the signal future servers drain on.
//! - [`task`]: [`task::AbortOnDrop`], which ends a background task with its owner.
//! - [`tls`]: how the CLI and services reach a server over TLS (port 443 rule, trusted roots).
//! - [`tokens`]: verified access tokens, so the server's gate and services verify each once.
//! - [`trace`]: distributed tracing: the OTEL_* setup, W3C propagation, RPC and consumer spans.
//! - [`time`]: unix seconds and milliseconds now, RFC 3339 formatting and parsing.
//! - [`workers`]: dedicated threads for blocking work (store reads, password hashing).
//!
//! Not a dumping ground: anything used by one crate only lives in that crate.

pub mod backoff;
pub mod batch;
pub mod cli_files;
pub mod duration;
pub mod home;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod service_env;
pub mod shutdown;
pub mod task;
pub mod time;
pub mod tls;
pub mod tokens;
pub mod trace;
pub mod workers;

/// The version every component reports (`micro --version`, the gateway's `GET /`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The namespace of the platform's administrators and core services.
pub const DEFAULT_NAMESPACE: &str = "micro";

/// The header (gRPC metadata key) naming the namespace a call acts in (`Micro-Namespace` in
/// the original): sent by the CLI and services, read by the server's gate and gateway.
pub const NAMESPACE_HEADER: &str = "micro-namespace";

/// The scope that makes an account of [`DEFAULT_NAMESPACE`] an administrator of the platform
/// (docs/security.md): the only accounts that may run commands or server-local sources.
pub const ADMIN_SCOPE: &str = "admin";

/// An authenticated caller, as its access token describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    /// Unique within its issuer namespace.
    pub id: String,
    /// Display name, unique within the namespace; defaults to the id.
    pub name: String,
    /// `user` or `service`.
    pub kind: String,
    /// The namespace that issued the account: the only one it may act in, unless it is
    /// [`DEFAULT_NAMESPACE`], whose accounts may act in every namespace.
    pub issuer: String,
    pub scopes: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Identity and scope of one request, resolved once by the edge (gRPC interceptor or gateway)
/// and handed to core services, which scope all data by [`Context::namespace`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The namespace the request acts in (store database, config document, topic prefix ...).
    pub namespace: String,
    /// The authenticated account, when the caller presented a valid token.
    pub account: Option<Account>,
}

impl Account {
    /// Whether this account may act in `namespace`: the one that issued it, or any for an
    /// account of [`DEFAULT_NAMESPACE`] (docs/security.md). The edges refuse the rest.
    pub fn may_act_in(&self, namespace: &str) -> bool {
        self.issuer == namespace || self.issuer == DEFAULT_NAMESPACE
    }

    /// Whether this is a platform administrator: an account of [`DEFAULT_NAMESPACE`] with the
    /// [`ADMIN_SCOPE`]. Tenants' admins (scope `admin` in another namespace) are not.
    pub fn is_platform_admin(&self) -> bool {
        self.issuer == DEFAULT_NAMESPACE && self.scopes.iter().any(|scope| scope == ADMIN_SCOPE)
    }
}

impl Context {
    /// Whether the caller is a platform administrator ([`Account::is_platform_admin`]).
    pub fn is_platform_admin(&self) -> bool {
        self.account.as_ref().is_some_and(Account::is_platform_admin)
    }

    /// A context in `namespace` with no authenticated account.
    pub fn anonymous(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), account: None }
    }

    /// A context in `namespace` acting as `account`.
    pub fn with_account(namespace: impl Into<String>, account: Account) -> Self {
        Self { namespace: namespace.into(), account: Some(account) }
    }

    /// A context in `namespace` acting as a user account that namespace issued (tests, tools).
    pub fn member(namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let account = Account {
            id: "member".to_string(),
            name: "member".to_string(),
            kind: "user".to_string(),
            issuer: namespace.clone(),
            ..Account::default()
        };
        Self::with_account(namespace, account)
    }

    /// Namespace authorisation (docs/compatibility.md §6.6), applied by every resource service before it
    /// touches `namespace`'s data: an account is required; accounts issued by
    /// [`DEFAULT_NAMESPACE`] may act in any namespace, others only in their own.
    pub fn authorize(&self, namespace: &str) -> Result<(), Denied> {
        match &self.account {
            None => Err(Denied::AccountRequired),
            Some(account) if account.issuer == DEFAULT_NAMESPACE || account.issuer == namespace => Ok(()),
            Some(_) => Err(Denied::Namespace),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::anonymous(DEFAULT_NAMESPACE)
    }
}

/// Why [`Context::authorize`] refused a request. Services map these to `UNAUTHENTICATED` and
/// `PERMISSION_DENIED`, with the display text as the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("An account is required")]
    AccountRequired,
    #[error("Access denied to namespace")]
    Namespace,
}

impl From<Denied> for tonic::Status {
    /// `UNAUTHENTICATED` without an account, `PERMISSION_DENIED` for another namespace; the
    /// message is the original's text.
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::AccountRequired => tonic::Status::unauthenticated(denied.to_string()),
            Denied::Namespace => tonic::Status::permission_denied(denied.to_string()),
        }
    }
}

/// An environment's server address with its port: `host:port` is kept; `host` alone means port
/// 443, as the original CLI assumed.
pub fn with_port(address: &str) -> String {
    if address.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
        address.to_string()
    } else {
        format!("{address}:443")
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

    fn account(issuer: &str) -> Account {
        Account { id: "bob".into(), issuer: issuer.into(), ..Account::default() }
    }

    #[test]
    fn namespace_authorisation() {
        assert_eq!(Context::anonymous("micro").authorize("micro"), Err(Denied::AccountRequired));
        let admin = Context::with_account("micro", account("micro"));
        assert_eq!(admin.authorize("micro"), Ok(()));
        assert_eq!(admin.authorize("foo"), Ok(()), "micro accounts act in every namespace");
        let bob = Context::with_account("foo", account("foo"));
        assert_eq!(bob.authorize("foo"), Ok(()));
        assert_eq!(bob.authorize("micro"), Err(Denied::Namespace));
        assert_eq!(bob.authorize("bar"), Err(Denied::Namespace));
        assert_eq!(Denied::AccountRequired.to_string(), "An account is required");
        let status = tonic::Status::from(Denied::Namespace);
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::PermissionDenied, "Access denied to namespace")
        );
        assert_eq!(tonic::Status::from(Denied::AccountRequired).code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn bare_hosts_get_the_tls_port() {
        assert_eq!(with_port("proxy.example.com"), "proxy.example.com:443");
        assert_eq!(with_port("127.0.0.1:8081"), "127.0.0.1:8081");
    }

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
