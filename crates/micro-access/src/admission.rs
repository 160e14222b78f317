//! The admission decision (docs/security.md): from the request's headers to the [`Context`] a
//! call runs with, or the [`Refusal`] it gets. Every edge runs the same steps:
//!
//! 1. the token: `Authorization: Bearer <jwt>` ([`bearer`]; the HTTP gateway may also take a
//!    CSRF-checked cookie), verified with the server's key into an [`Account`];
//! 2. the namespace the call acts in ([`namespace`]): the `Micro-Namespace` header, else what the
//!    edge knows (the gateway: the API domain's subdomain; a service: its own namespace), else
//!    the account's issuer, else `micro`;
//! 3. [`admit`]: a foreign token is refused ([`Refusal::Foreign`]), then the rules of that
//!    namespace judge `service:<registered name>:<Handler.Method>`.
//!
//! A few paths skip step 3 ([`always_public`]): nobody could log in or probe a server otherwise.

use http::HeaderMap;
use micro_core::{Account, DEFAULT_NAMESPACE};

use crate::rules::{self, Resource, Rule, Verdict};

pub use micro_core::NAMESPACE_HEADER;

/// Paths anyone may call whatever the rules say: logging in, token inspection, the public key,
/// health checks and reflection.
const ALWAYS_PUBLIC: &[&str] = &[
    "/auth.Auth/Token",
    "/auth.Auth/Inspect",
    "/auth.Auth/PublicKey",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
];

/// Why a call is refused. The display text is the message clients get.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An `Authorization` header that is not `Bearer <token>` (401).
    #[error("invalid authorization header. expected Bearer schema")]
    NotBearer,
    /// A token that does not verify or has expired (401).
    #[error("the access token is invalid or has expired: log in again with `micro login`")]
    InvalidToken,
    /// A `Micro-Namespace` that is no valid namespace name (400).
    #[error("{0}")]
    BadNamespace(String),
    /// A token of one namespace used in another (403).
    #[error("the token was issued by namespace {issuer} and cannot act in {namespace}")]
    Foreign { issuer: String, namespace: String },
    /// No account, and the rules let no anonymous caller in (401).
    #[error("Unauthorized call made to {service}:{endpoint}")]
    Unauthorized { service: String, endpoint: String },
    /// An account the rules keep out, or a public deny (403).
    #[error("Forbidden call made to {service}:{endpoint} by {id}")]
    Forbidden { service: String, endpoint: String, id: String },
}

impl Refusal {
    /// A fixed name for why: the `reason` label of the server's rejection metric
    /// (docs/observability.md).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotBearer => "not_bearer",
            Refusal::InvalidToken => "invalid_token",
            Refusal::BadNamespace(_) => "bad_namespace",
            Refusal::Foreign { .. } => "foreign_namespace",
            Refusal::Unauthorized { .. } => "unauthorized",
            Refusal::Forbidden { .. } => "forbidden",
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Refusal::NotBearer | Refusal::InvalidToken | Refusal::Unauthorized { .. } => {
                http::StatusCode::UNAUTHORIZED
            }
            Refusal::BadNamespace(_) => http::StatusCode::BAD_REQUEST,
            Refusal::Foreign { .. } | Refusal::Forbidden { .. } => http::StatusCode::FORBIDDEN,
        }
    }

    /// The gRPC code the gate and services answer with.
    pub fn code(&self) -> tonic::Code {
        match self.http_status() {
            http::StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            http::StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
            _ => tonic::Code::PermissionDenied,
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        tonic::Status::new(refusal.code(), refusal.to_string())
    }
}

/// Whether `path` is callable by anyone, whatever the rules say.
pub fn always_public(path: &str) -> bool {
    ALWAYS_PUBLIC.iter().any(|public| path.starts_with(public))
}

/// The token of the `Authorization: Bearer <token>` header; `None` without the header.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    match headers.get(http::header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| Some(token.trim()))
            .ok_or(Refusal::NotBearer),
    }
}

/// The namespace a call acts in: the `Micro-Namespace` header (validated), else `known` (what
/// the edge knows, e.g. the API domain's subdomain), else `account`'s issuer, else `micro`.
pub fn namespace(
    headers: &HeaderMap,
    known: Option<String>,
    account: Option<&Account>,
) -> Result<String, Refusal> {
    if let Some(value) = headers.get(NAMESPACE_HEADER) {
        let value = value
            .to_str()
            .map_err(|_| Refusal::BadNamespace("the Micro-Namespace header must be ASCII".to_string()))?;
        micro_core::validate_namespace(value).map_err(|err| Refusal::BadNamespace(err.to_string()))?;
        return Ok(value.to_string());
    }
    Ok(known
        .or_else(|| account.map(|account| account.issuer.clone()))
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()))
}

/// `/store.Store/Read` → (`store`, `Store.Read`): everything before the last `.` of the first
/// path segment is the prefix (the service the path names), the rest the handler
/// (docs/compatibility.md §3.1). A service of a proto without a package has an empty prefix
/// (`/Greeter/Call` → (``, `Greeter.Call`)). `None` for a path that is no gRPC method.
pub fn method_of(path: &str) -> Option<(&str, String)> {
    let (qualified, method) = path.strip_prefix('/')?.split_once('/')?;
    let (prefix, handler) = qualified.rsplit_once('.').unwrap_or(("", qualified));
    if (prefix.is_empty() && qualified.starts_with('.'))
        || handler.is_empty()
        || method.is_empty()
        || method.contains('/')
    {
        return None;
    }
    Some((prefix, format!("{handler}.{method}")))
}

/// Refuses an account acting in a `namespace` that did not issue it (accounts of `micro` act in
/// every namespace).
pub fn check_namespace(namespace: &str, account: Option<&Account>) -> Result<(), Refusal> {
    match account {
        Some(account) if !account.may_act_in(namespace) => {
            Err(Refusal::Foreign { issuer: account.issuer.clone(), namespace: namespace.to_string() })
        }
        _ => Ok(()),
    }
}

/// The decision: whether `account` (or an anonymous caller) acting in `namespace` may reach
/// `resource`, given `rules`, the rules of `namespace`. A foreign token is refused first
/// ([`check_namespace`]); then the first decisive rule answers ([`rules::verify`]).
pub fn admit(
    namespace: &str,
    account: Option<&Account>,
    rules: &[Rule],
    resource: &Resource,
) -> Result<(), Refusal> {
    check_namespace(namespace, account)?;
    match rules::verify(rules, account, resource) {
        Verdict::Allowed => Ok(()),
        Verdict::Unauthorized => {
            Err(Refusal::Unauthorized { service: resource.name.clone(), endpoint: resource.endpoint.clone() })
        }
        Verdict::Forbidden => Err(Refusal::Forbidden {
            service: resource.name.clone(),
            endpoint: resource.endpoint.clone(),
            id: account.map_or_else(String::new, |account| account.id.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use micro_core::Context;

    use super::*;
    use crate::rules::Access;

    fn account(issuer: &str, scopes: &[&str]) -> Account {
        Account {
            id: format!("user-of-{issuer}"),
            issuer: issuer.into(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            ..Account::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    fn call() -> Resource {
        Resource::new("service", "helloworld", "Helloworld.Call")
    }

    #[test]
    fn bearer_tokens_only() {
        assert_eq!(bearer(&HeaderMap::new()), Ok(None));
        assert_eq!(bearer(&headers(&[("authorization", "Bearer  a.b.c ")])), Ok(Some("a.b.c")));
        assert_eq!(bearer(&headers(&[("authorization", "Basic eA==")])), Err(Refusal::NotBearer));
        assert_eq!(Refusal::NotBearer.to_string(), "invalid authorization header. expected Bearer schema");
    }

    #[test]
    fn the_namespace_comes_from_the_header_the_edge_the_issuer_or_micro() {
        let alice = account("foo", &[]);
        let named = headers(&[(NAMESPACE_HEADER, "bar")]);
        assert_eq!(namespace(&named, Some("baz".into()), Some(&alice)).unwrap(), "bar");
        assert_eq!(namespace(&HeaderMap::new(), Some("baz".into()), Some(&alice)).unwrap(), "baz");
        assert_eq!(namespace(&HeaderMap::new(), None, Some(&alice)).unwrap(), "foo");
        assert_eq!(namespace(&HeaderMap::new(), None, None).unwrap(), "micro");
        let bad = namespace(&headers(&[(NAMESPACE_HEADER, "../x")]), None, None).unwrap_err();
        assert!(matches!(bad, Refusal::BadNamespace(_)), "{bad:?}");
        assert_eq!(bad.http_status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(tonic::Status::from(bad).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn method_paths_name_the_service_and_endpoint() {
        assert_eq!(method_of("/store.Store/Read"), Some(("store", "Store.Read".to_string())));
        assert_eq!(method_of("/go.micro.srv.foo.Foo/Bar"), Some(("go.micro.srv.foo", "Foo.Bar".to_string())));
        assert_eq!(method_of("/Greeter/Call"), Some(("", "Greeter.Call".to_string())), "no package");
        for bad in ["", "/", "/store.Store/", "store.Store/Read", "/.Store/Read", "/a.B/c/d", "/store./Read"]
        {
            assert_eq!(method_of(bad), None, "{bad:?}");
        }
        assert!(always_public("/auth.Auth/Token"));
        assert!(always_public("/grpc.health.v1.Health/Check"));
        assert!(!always_public("/auth.Accounts/List"));
    }

    /// Every kind of caller against the same rules: one outcome each, whatever edge asks.
    #[test]
    fn one_decision_per_caller() {
        let public = [Rule::default_rule()];
        let accounts_only = [Rule {
            id: "accounts".into(),
            scope: "*".into(),
            resource: Resource::new("*", "*", "*"),
            access: Access::Granted,
            priority: 0,
        }];
        let alice = account("foo", &[]);
        let admin = account("micro", &["admin"]);
        type Case<'a> = (&'a str, Context, &'a [Rule], Result<(), Refusal>);
        let cases: [Case; 7] = [
            ("anonymous, public", Context::anonymous("foo"), &public, Ok(())),
            (
                "anonymous, accounts only",
                Context::anonymous("foo"),
                &accounts_only,
                Err(Refusal::Unauthorized {
                    service: "helloworld".into(),
                    endpoint: "Helloworld.Call".into(),
                }),
            ),
            ("own namespace", Context::with_account("foo", alice.clone()), &accounts_only, Ok(())),
            (
                "foreign namespace, even where everything is public",
                Context::with_account("bar", alice.clone()),
                &public,
                Err(Refusal::Foreign { issuer: "foo".into(), namespace: "bar".into() }),
            ),
            ("micro acts everywhere", Context::with_account("bar", admin.clone()), &accounts_only, Ok(())),
            (
                "no rule at all",
                Context::with_account("foo", alice.clone()),
                &[],
                Err(Refusal::Forbidden {
                    service: "helloworld".into(),
                    endpoint: "Helloworld.Call".into(),
                    id: "user-of-foo".into(),
                }),
            ),
            (
                "micro judged by the rules of where it acts",
                Context::with_account("bar", admin),
                &[],
                Err(Refusal::Forbidden {
                    service: "helloworld".into(),
                    endpoint: "Helloworld.Call".into(),
                    id: "user-of-micro".into(),
                }),
            ),
        ];
        for (name, context, rules, expected) in cases {
            assert_eq!(
                admit(&context.namespace, context.account.as_ref(), rules, &call()),
                expected,
                "{name}"
            );
        }
        let forbidden = admit("bar", Some(&alice), &public, &call()).unwrap_err();
        assert_eq!(forbidden.http_status(), http::StatusCode::FORBIDDEN);
        let status = tonic::Status::from(forbidden);
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::PermissionDenied, "the token was issued by namespace foo and cannot act in bar")
        );
        let unauthorized = admit("foo", None, &[], &call()).unwrap_err();
        assert_eq!(unauthorized.to_string(), "Unauthorized call made to helloworld:Helloworld.Call");
        assert_eq!(tonic::Status::from(unauthorized).code(), tonic::Code::Unauthenticated);
    }
}
