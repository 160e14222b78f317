//! The one auth gate on :8081 (docs/security.md): every call is admitted or refused by the
//! admission decision of micro-access ([`micro_access::admit`]), the same the HTTP gateway and
//! every framework service apply. Admitted calls carry their [`Context`] to the core services,
//! which apply namespace authorisation (docs/compatibility.md §6.6) to the data they touch, or
//! to the [`proxy`](crate::proxy).
//!
//! The resource a rule names is the registered service: for a core service its package
//! (`/store.Store/Read` → `service:store:Store.Read`); for a user service the service the proxy
//! routes the path to, which may be named other than the path's package (`/hello.Greeter/Call`
//! served by `greeter` is `service:greeter:Greeter.Call`). The gate asks the proxy once and hands
//! the routed service on in the request's extensions ([`Routed`]), so the proxy does not look it
//! up again.
//!
//! A few calls are always let through ([`micro_access::admission::always_public`]), because
//! nobody could log in or probe the server otherwise.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use http::HeaderMap;
use micro_access::admission::{self, Refusal};
use micro_access::{Resource, admit};
use micro_auth::Auth;
use micro_core::Context;
use micro_proto::registry::Service as Registered;
use tonic::Status;

use crate::metrics;
use crate::proxy::Proxy;

/// The registered service the gate judged a proxied call against, for the proxy to call.
#[derive(Debug, Clone)]
pub struct Routed(pub Registered);

/// Decides each call on :8081.
#[derive(Clone)]
pub struct Gate {
    auth: Arc<Auth>,
    /// The gRPC names (`store.Store`) of the services served here; every other path is proxied.
    core: Arc<HashSet<&'static str>>,
    /// The paths of their methods: what a call may be counted under in the request metrics.
    methods: Arc<HashSet<String>>,
    proxy: Option<Proxy>,
}

/// What the gate admitted: the context the call runs with and, for a proxied call, the
/// registered service it goes to.
#[derive(Debug)]
pub struct Admitted {
    pub context: Context,
    pub routed: Option<Routed>,
    /// The resource the rules judged; `None` for the calls that are always let through.
    pub resource: Option<Resource>,
}

impl Gate {
    /// A gate in front of the services named `core` (served here) and `proxy` (all others).
    pub fn new(auth: Arc<Auth>, core: &[&'static str], proxy: Option<Proxy>) -> Self {
        let methods = Arc::new(crate::metrics::served_methods(core));
        Self { auth, core: Arc::new(core.iter().copied().collect()), methods, proxy }
    }

    /// Decides one call: what it runs with, or the status it is refused with.
    #[allow(clippy::result_large_err, reason = "tonic statuses are returned by value")]
    pub async fn admit(&self, headers: &HeaderMap, path: &str) -> Result<Admitted, Status> {
        let account = match admission::bearer(headers).map_err(rejected)? {
            Some(token) => Some(self.auth.inspect(token).map_err(|_| rejected(Refusal::InvalidToken))?),
            None => None,
        };
        let namespace = admission::namespace(headers, None, account.as_ref()).map_err(rejected)?;
        let mut context = Context { namespace, account };
        if admission::always_public(path) {
            // Logging in to another namespace while holding a token of one's own is fine: the
            // token plays no part there.
            if admission::check_namespace(&context.namespace, context.account.as_ref()).is_err() {
                context.account = None;
            }
            return Ok(Admitted { context, routed: None, resource: None });
        }
        admission::check_namespace(&context.namespace, context.account.as_ref()).map_err(rejected)?;
        // Every service here and every registered one is named: a path without a package names
        // none.
        let (prefix, endpoint) = admission::method_of(path)
            .filter(|(prefix, _)| !prefix.is_empty())
            .ok_or_else(|| Status::unimplemented(format!("malformed gRPC method path {path:?}")))?;
        let qualified = path[1..].split('/').next().unwrap_or_default();
        let routed = match &self.proxy {
            // `debug.Debug` is served here (namespace `micro`) and by services that register it
            // in other namespaces (traces::Shared).
            Some(proxy)
                if !self.core.contains(qualified)
                    || (qualified == crate::traces::SHARED
                        && context.namespace != micro_core::DEFAULT_NAMESPACE) =>
            {
                let handler = &qualified[prefix.len() + 1..];
                proxy.route(&context.namespace, prefix, handler).map(Routed)
            }
            _ => None,
        };
        let service = routed.as_ref().map_or(prefix, |routed| routed.0.name.as_str());
        let resource = Resource::new("service", service, endpoint);
        let rules = self.auth.rules(&context.namespace).await;
        admit(&context.namespace, context.account.as_ref(), &rules, &resource).map_err(rejected)?;
        Ok(Admitted { context, routed, resource: Some(resource) })
    }

    /// Tells the request metrics what an admitted call at `path` was resolved to: a method of a
    /// service served here, or a registered service the proxy routes it to. Calls at other
    /// paths stay unresolved (`other`), so that labels name only what exists.
    fn resolve(&self, slot: &metrics::Slot, path: &str, admitted: &Admitted) {
        match (&admitted.routed, &admitted.resource) {
            (Some(Routed(service)), Some(resource)) => slot.resolve(&service.name, &resource.endpoint),
            (None, Some(resource)) if self.methods.contains(path) => {
                slot.resolve(&resource.name, &resource.endpoint);
            }
            (None, None) if self.methods.contains(path) => {
                if let Some((prefix, endpoint)) = admission::method_of(path) {
                    slot.resolve(prefix, &endpoint);
                }
            }
            _ => {}
        }
    }
}

/// The tower layer that puts the [`Gate`] in front of every service.
#[derive(Clone)]
pub struct AuthLayer {
    gate: Gate,
}

impl AuthLayer {
    pub fn new(gate: Gate) -> Self {
        Self { gate }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthGate { inner, gate: self.gate.clone() }
    }
}

/// A refusal as the gate answers it, counted by reason.
fn rejected(refusal: Refusal) -> Status {
    metrics::rejected(metrics::Listener::Grpc, &refusal);
    refusal.into()
}

/// Admits or refuses each call; admitted calls carry their [`Context`] (and a proxied call its
/// [`Routed`] service) in the extensions.
#[derive(Clone)]
pub struct AuthGate<S> {
    inner: S,
    gate: Gate,
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
        let gate = self.gate.clone();
        Box::pin(async move {
            match gate.admit(request.headers(), request.uri().path()).await {
                Ok(admitted) => {
                    if let Some(slot) = request.extensions().get::<metrics::Slot>() {
                        gate.resolve(slot, request.uri().path(), &admitted);
                    }
                    let Admitted { context, routed, .. } = admitted;
                    request.extensions_mut().insert(context);
                    if let Some(routed) = routed {
                        request.extensions_mut().insert(routed);
                    }
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use micro_auth::{Access, AuthOptions, Rule};
    use micro_core::{Account, NAMESPACE_HEADER};
    use tonic::Code;

    use super::*;

    async fn open(dir: &std::path::Path) -> Arc<Auth> {
        let store = Arc::new(micro_store::memory::MemoryStore::new());
        let options = AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
        Arc::new(Auth::open(store, dir, options).await.unwrap())
    }

    /// The gate's decision without a proxy: the context, or the refusal.
    async fn admit(auth: &Arc<Auth>, headers: &HeaderMap, path: &str) -> Result<Context, Status> {
        Gate::new(auth.clone(), &[], None).admit(headers, path).await.map(|admitted| admitted.context)
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
}
