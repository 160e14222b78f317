//! The one auth gate on :8081 (docs/compatibility.md §6.5): every call's `authorization: Bearer <jwt>` is
//! turned into an account, its `micro-namespace` into the namespace it acts in, and the rules of
//! the account's namespace (or, for anonymous calls, of the namespace named) decide whether the
//! call may go on. Core services then receive a [`Context`] and apply namespace authorisation
//! (docs/compatibility.md §6.6) to the data they touch.
//!
//! A few calls are always let through, because nobody could log in or probe the server otherwise:
//! `Auth.Token`, `Auth.Inspect`, `Auth.PublicKey`, health checks and reflection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::HeaderMap;
use micro_auth::{Auth, Resource, Verdict};
use micro_core::Context;
use tonic::Status;

/// Metadata key naming the namespace a call acts in (`Micro-Namespace` in the original).
pub const NAMESPACE_HEADER: &str = "micro-namespace";

/// gRPC services callable by anyone, whatever the rules say.
const ALWAYS_PUBLIC: &[&str] = &[
    "/auth.Auth/Token",
    "/auth.Auth/Inspect",
    "/auth.Auth/PublicKey",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
];

/// The tower layer that puts [`AuthGate`] in front of every service.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthGate { inner, auth: self.auth.clone() }
    }
}

/// Admits or refuses each call; admitted calls carry their [`Context`] in the extensions.
#[derive(Clone)]
pub struct AuthGate<S> {
    inner: S,
    auth: Arc<Auth>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service handles this call; a fresh clone takes its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match admit(&auth, request.headers(), request.uri().path()).await {
                Ok(context) => {
                    request.extensions_mut().insert(context);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// Decides one call: the context it runs with, or the status it is refused with.
#[allow(clippy::result_large_err, reason = "tonic statuses are returned by value")]
pub async fn admit(auth: &Auth, headers: &HeaderMap, path: &str) -> Result<Context, Status> {
    let account = match headers.get(http::header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let token =
                value.to_str().ok().and_then(|value| value.strip_prefix("Bearer ")).ok_or_else(|| {
                    Status::unauthenticated("invalid authorization header. expected Bearer schema")
                })?;
            let account = auth.inspect(token.trim()).map_err(|_| {
                Status::unauthenticated(
                    "the access token is invalid or has expired: log in again with `micro login`",
                )
            })?;
            Some(account)
        }
    };
    let namespace = match headers.get(NAMESPACE_HEADER) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| Status::invalid_argument("the micro-namespace header must be ASCII"))?;
            micro_core::validate_namespace(value).map_err(|err| Status::invalid_argument(err.to_string()))?;
            value.to_string()
        }
        None => {
            account.as_ref().map_or_else(|| micro_core::DEFAULT_NAMESPACE.to_string(), |a| a.issuer.clone())
        }
    };
    let foreign = account.as_ref().is_some_and(|a| !a.may_act_in(&namespace));
    if ALWAYS_PUBLIC.iter().any(|public| path.starts_with(public)) {
        // Logging in to another namespace while holding a token of one's own is fine: the
        // token plays no part there.
        let account = if foreign { None } else { account };
        return Ok(Context { namespace, account });
    }
    if let Some(account) = account.as_ref().filter(|_| foreign) {
        // As the HTTP gateway does: an account acts only in the namespace that issued it
        // (accounts of `micro` in every one), whatever a service would make of it.
        return Err(Status::permission_denied(format!(
            "the token was issued by namespace {} and cannot act in {namespace}",
            account.issuer
        )));
    }
    let context = Context { namespace, account };

    let (service, endpoint) = resource_of(path)?;
    let resource =
        Resource { kind: "service".to_string(), name: service.clone(), endpoint: endpoint.clone() };
    // An account is judged by its own namespace's rules; an anonymous caller by the rules of the
    // namespace it names.
    let rules =
        context.account.as_ref().map_or(context.namespace.as_str(), |account| account.issuer.as_str());
    match auth.verify(rules, context.account.as_ref(), &resource).await {
        Verdict::Allowed => Ok(context),
        Verdict::Unauthorized => {
            Err(Status::unauthenticated(format!("Unauthorized call made to {service}:{endpoint}")))
        }
        Verdict::Forbidden => {
            let id = context.account.as_ref().map_or("", |account| account.id.as_str());
            Err(Status::permission_denied(format!("Forbidden call made to {service}:{endpoint} by {id}")))
        }
    }
}

/// `/store.Store/Read` → (`store`, `Store.Read`): everything before the last `.` of the first
/// path segment is the service, the rest the handler (docs/compatibility.md §3.1).
#[allow(clippy::result_large_err, reason = "tonic statuses are returned by value")]
pub fn resource_of(path: &str) -> Result<(String, String), Status> {
    let malformed = || Status::unimplemented(format!("malformed gRPC method path {path:?}"));
    let (qualified, method) =
        path.strip_prefix('/').and_then(|rest| rest.split_once('/')).ok_or_else(malformed)?;
    let (service, handler) = qualified.rsplit_once('.').ok_or_else(malformed)?;
    if service.is_empty() || handler.is_empty() || method.is_empty() || method.contains('/') {
        return Err(malformed());
    }
    Ok((service.to_string(), format!("{handler}.{method}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use micro_auth::{Access, AuthOptions, Rule};
    use micro_core::Account;
    use tonic::Code;

    use super::*;

    async fn open(dir: &std::path::Path) -> Auth {
        let store = Arc::new(micro_store::memory::MemoryStore::new());
        let options = AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
        Auth::open(store, dir, options).await.unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    fn account(id: &str, issuer: &str) -> Account {
        Account {
            id: id.into(),
            name: id.into(),
            kind: "user".into(),
            issuer: issuer.into(),
            ..Account::default()
        }
    }

    #[tokio::test]
    async fn tokens_namespaces_and_rules_decide_each_call() {
        let dir = tempfile::tempdir().unwrap();
        let auth = open(dir.path()).await;
        const READ: &str = "/store.Store/Read";

        let anonymous = admit(&auth, &HeaderMap::new(), READ).await.unwrap();
        assert_eq!(anonymous, Context::anonymous("micro"), "the default rule is public");

        let basic = admit(&auth, &headers(&[("authorization", "Basic eA==")]), READ).await.unwrap_err();
        assert_eq!(
            (basic.code(), basic.message()),
            (Code::Unauthenticated, "invalid authorization header. expected Bearer schema")
        );
        let forged = admit(&auth, &headers(&[("authorization", "Bearer a.b.c")]), READ).await.unwrap_err();
        assert_eq!(forged.code(), Code::Unauthenticated);
        let bad_namespace = admit(&auth, &headers(&[(NAMESPACE_HEADER, "../x")]), READ).await.unwrap_err();
        assert_eq!(bad_namespace.code(), Code::InvalidArgument);

        let bob = account("bob", "foo");
        let token = format!("Bearer {}", auth.mint(&bob, Duration::from_secs(60)).unwrap());
        let context = admit(&auth, &headers(&[("authorization", &token)]), READ).await.unwrap();
        assert_eq!(
            context,
            Context::with_account("foo", bob.clone()),
            "the namespace defaults to the issuer's"
        );
        let named = admit(&auth, &headers(&[("authorization", &token), (NAMESPACE_HEADER, "bar")]), READ)
            .await
            .unwrap_err();
        assert_eq!(
            (named.code(), named.message()),
            (Code::PermissionDenied, "the token was issued by namespace foo and cannot act in bar"),
            "as at the gateway, before any service or the proxy sees it"
        );
        let login = admit(
            &auth,
            &headers(&[("authorization", &token), (NAMESPACE_HEADER, "bar")]),
            "/auth.Auth/Token",
        )
        .await
        .unwrap();
        assert_eq!(login, Context::anonymous("bar"), "logging in elsewhere ignores the token");

        // Lock `foo` down: accounts only, and store reads denied to everyone.
        let rule = |id: &str, scope: &str, resource: (&str, &str, &str), access| Rule {
            id: id.into(),
            scope: scope.into(),
            resource: micro_auth::Resource::new(resource.0, resource.1, resource.2),
            access,
            priority: 0,
        };
        auth.create_rule("foo", rule("accounts", "*", ("*", "*", "*"), Access::Granted)).await.unwrap();
        let no_reads =
            Rule { priority: 1, ..rule("no-reads", "*", ("service", "store", "Store.Read"), Access::Denied) };
        auth.create_rule("foo", no_reads).await.unwrap();
        auth.delete_rule("foo", "default").await.unwrap();

        let foo = headers(&[(NAMESPACE_HEADER, "foo")]);
        let locked = admit(&auth, &foo, "/config.Config/Get").await.unwrap_err();
        assert_eq!(
            (locked.code(), locked.message()),
            (Code::Unauthenticated, "Unauthorized call made to config:Config.Get")
        );
        assert!(admit(&auth, &foo, "/auth.Auth/Token").await.is_ok(), "logging in is always possible");
        assert!(admit(&auth, &foo, "/grpc.health.v1.Health/Check").await.is_ok());

        let denied = admit(&auth, &headers(&[("authorization", &token)]), READ).await.unwrap_err();
        assert_eq!(
            (denied.code(), denied.message()),
            (Code::PermissionDenied, "Forbidden call made to store:Store.Read by bob")
        );
        assert!(admit(&auth, &headers(&[("authorization", &token)]), "/config.Config/Get").await.is_ok());
    }

    #[test]
    fn resources_come_from_method_paths() {
        let ok = |path: &str| resource_of(path).unwrap();
        assert_eq!(ok("/store.Store/Read"), ("store".to_string(), "Store.Read".to_string()));
        assert_eq!(ok("/go.micro.srv.foo.Foo/Bar"), ("go.micro.srv.foo".to_string(), "Foo.Bar".to_string()));
        for bad in ["", "/", "/Store/Read", "/store.Store/", "store.Store/Read", "/.Store/Read", "/a.B/c/d"] {
            assert_eq!(resource_of(bad).unwrap_err().code(), tonic::Code::Unimplemented, "{bad:?}");
        }
    }
}
