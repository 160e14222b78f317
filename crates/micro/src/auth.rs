//! Who is calling: every incoming call's `authorization: Bearer <jwt>` is verified locally with
//! the server's public key (`Auth.PublicKey`), and the admission decision of micro-access — the
//! one the server's gate and gateway apply — decides with the service's namespace's rules
//! (`Rules.List`, cached for [`RULES_TTL`]) whether the call may go on (docs/security.md). A
//! token of another namespace (not `micro`) is refused with `PERMISSION_DENIED`, never handed
//! to a handler. Handlers read the caller with [`account`].
//!
//! ```no_run
//! # struct Request;
//! async fn call(request: tonic::Request<Request>) -> Result<tonic::Response<()>, tonic::Status> {
//!     match micro::auth::account(&request) {
//!         Some(account) => tracing::info!(caller = %account.id, "called"),
//!         None => tracing::info!("called anonymously"),
//!     }
//!     Ok(tonic::Response::new(()))
//! }
//! ```

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use micro_access::admission::{self, Refusal};
use micro_access::token::{TokenError, Verifier};
use micro_access::{Resource, Rule};
use micro_proto::auth::auth_client::AuthClient;
use micro_proto::auth::rules_client::RulesClient;
use micro_proto::auth::{ListRequest, Options, PublicKeyRequest};
use tonic::Status;

pub use micro_core::Account;

use crate::platform::Platform;

/// How long the namespace's rules are used before they are read again.
pub const RULES_TTL: Duration = Duration::from_secs(30);
/// After failing to read the rules, how long callers get the error before trying again.
const RULES_RETRY: Duration = Duration::from_secs(5);

/// The account that made `request`, when it carried a valid token.
pub fn account<T>(request: &tonic::Request<T>) -> Option<Account> {
    request.extensions().get::<Account>().cloned()
}

/// How long the server's public key is trusted before it is read again. After the server's
/// signing key changes (a rotation: a new `auth_key` or `MICRO_AUTH_KEY`), tokens of the old
/// key stop working at a service within this time, verified ones included (docs/security.md).
pub const KEY_TTL: Duration = Duration::from_secs(60);
/// The shortest time between two reads of the key for tokens the held key refuses.
const KEY_RELOAD_MIN: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Cache {
    key: Option<(Verifier, Instant)>,
    rules: Option<(Arc<Vec<Rule>>, Instant)>,
    rules_failed: Option<(Status, Instant)>,
}

/// Decides incoming calls for one service.
#[derive(Debug)]
pub(crate) struct Guard {
    platform: Arc<Platform>,
    service: String,
    cache: tokio::sync::Mutex<Cache>,
    /// Tokens already verified, so a caller's token is checked once, not on every call.
    verified: micro_core::tokens::VerifiedTokens,
    /// When the public key is next read again ([`KEY_TTL`]); checked without the async lock.
    key_due: std::sync::Mutex<Option<Instant>>,
}

impl Guard {
    pub fn new(platform: Arc<Platform>, service: String) -> Self {
        Self {
            platform,
            service,
            cache: tokio::sync::Mutex::new(Cache::default()),
            verified: micro_core::tokens::VerifiedTokens::new(),
            key_due: std::sync::Mutex::new(None),
        }
    }

    /// The name of the service whose calls this guard decides.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The caller's account (if any) when the call may go on, else the status refusing it.
    pub async fn admit(&self, headers: &http::HeaderMap, path: &str) -> Result<Option<Account>, Status> {
        if admission::always_public(path) {
            return Ok(None);
        }
        let (_, endpoint) = admission::method_of(path)
            .ok_or_else(|| Status::unimplemented(format!("malformed gRPC path {path:?}")))?;
        let account = match admission::bearer(headers)? {
            Some(token) => Some(self.inspect(token).await?),
            None => None,
        };
        // A call reaching this service acts in the service's namespace, whatever it names.
        let namespace = &self.platform.namespace;
        admission::check_namespace(namespace, account.as_ref())?;
        let rules = self.rules().await?;
        let resource = Resource::new("service", self.service.as_str(), endpoint);
        micro_access::admit(namespace, account.as_ref(), &rules, &resource)?;
        Ok(account)
    }

    async fn inspect(&self, token: &str) -> Result<Account, Status> {
        let now = u64::try_from(crate::session::now()).unwrap_or_default();
        let key_due = self.key_due.lock().expect("key_due lock").is_none_or(|due| Instant::now() >= due);
        if !key_due && let Some(account) = self.verified.get(token, now) {
            return Ok(account);
        }
        // Reads the key again when it is due; a changed key empties `verified` first.
        let key = self.public_key(false).await?;
        if let Some(account) = self.verified.get(token, now) {
            return Ok(account);
        }
        let (account, expires_at) = match key.verify(token) {
            Ok(verified) => verified,
            // The server may have a new key: read it again (at most every KEY_RELOAD_MIN).
            Err(TokenError::BadSignature) => {
                let fresh = self.public_key(true).await?;
                if fresh.key() == key.key() {
                    return Err(Refusal::InvalidToken.into());
                }
                fresh.verify(token).map_err(|_| Refusal::InvalidToken)?
            }
            Err(_) => return Err(Refusal::InvalidToken.into()),
        };
        self.verified.insert(token, &account, expires_at, now);
        Ok(account)
    }

    /// The server's public key: the cached one while younger than [`KEY_TTL`] (with `reload`,
    /// for a token the cached key refused: younger than [`KEY_RELOAD_MIN`]), else read again.
    /// A changed key empties the verified-token cache, so tokens of the old key are refused
    /// from then on. When the server cannot be reached, a key already held stays in use.
    async fn public_key(&self, reload: bool) -> Result<Verifier, Status> {
        let mut cache = self.cache.lock().await;
        let fresh_for = if reload { KEY_RELOAD_MIN } else { KEY_TTL };
        if let Some((key, fetched)) = &cache.key
            && fetched.elapsed() < fresh_for
        {
            return Ok(key.clone());
        }
        let mut client = AuthClient::new(self.platform.channel.clone());
        let mut request = self.platform.session.anonymous(PublicKeyRequest {});
        request.set_timeout(crate::platform::CALL_TIMEOUT);
        let reply = match client.public_key(request).await {
            Ok(reply) => reply,
            Err(status) => {
                tracing::warn!(cause = %status.message(), "cannot read the micro server's public key");
                if let Some((key, _)) = &cache.key {
                    *self.key_due.lock().expect("key_due lock") = Some(Instant::now() + KEY_RELOAD_MIN);
                    return Ok(key.clone());
                }
                return Err(Status::unavailable(
                    "cannot verify the access token: the micro server's public key is unavailable",
                ));
            }
        };
        let key = Verifier::from_pem(&reply.into_inner().pem)
            .ok_or_else(|| Status::internal("the micro server's public key is not an Ed25519 SPKI PEM"))?;
        if cache.key.as_ref().is_some_and(|(old, _)| old.key() != key.key()) {
            tracing::info!(
                "the micro server's signing key changed: tokens of the old key are refused from now on"
            );
            self.verified.clear();
        }
        cache.key = Some((key.clone(), Instant::now()));
        *self.key_due.lock().expect("key_due lock") = Some(Instant::now() + KEY_TTL);
        Ok(key)
    }

    async fn rules(&self) -> Result<Arc<Vec<Rule>>, Status> {
        let mut cache = self.cache.lock().await;
        if let Some((rules, fetched)) = &cache.rules
            && fetched.elapsed() < RULES_TTL
        {
            return Ok(rules.clone());
        }
        if let Some((status, failed)) = &cache.rules_failed
            && failed.elapsed() < RULES_RETRY
        {
            return match &cache.rules {
                Some((rules, _)) => Ok(rules.clone()),
                None => Err(status.clone()),
            };
        }
        let namespace = self.platform.namespace.clone();
        let request = self.platform.request(ListRequest { options: Some(Options { namespace }) }).await;
        let authenticated = request.metadata().contains_key("authorization");
        match RulesClient::new(self.platform.channel.clone()).list(request).await {
            Ok(reply) => {
                let rules: Arc<Vec<Rule>> = Arc::new(
                    reply
                        .into_inner()
                        .rules
                        .into_iter()
                        .filter_map(|rule| Rule::try_from(rule).ok())
                        .collect(),
                );
                cache.rules = Some((rules.clone(), Instant::now()));
                cache.rules_failed = None;
                Ok(rules)
            }
            Err(status) => {
                tracing::warn!(cause = %status.message(), "cannot read the namespace's access rules");
                if let Some((rules, _)) = &cache.rules {
                    // Stale rules beat none; they are retried shortly.
                    let rules = rules.clone();
                    cache.rules_failed = Some((status, Instant::now()));
                    return Ok(rules);
                }
                if !authenticated {
                    // A service with no credentials cannot read rules at all: the developer is
                    // running it by hand without `micro login`, so it serves like the default rule.
                    return Ok(Arc::new(vec![Rule::default_rule()]));
                }
                let refused =
                    Status::unavailable("cannot read the access rules from the micro server; try again");
                cache.rules_failed = Some((refused.clone(), Instant::now()));
                Err(refused)
            }
        }
    }
}

/// The tower layer that puts the [`Guard`] in front of a service's handlers. It also accepts
/// calls addressed as `/<service name>.<Handler>/<Method>` (how the original's clients and
/// proxies call), by routing on the handler. An admitted call of one of the handlers' methods
/// is counted under it by the request metrics (its [`Slot`](micro_core::metrics::Slot)).
#[derive(Clone)]
pub(crate) struct GateLayer {
    guard: Arc<Guard>,
    /// Handler (`Helloworld`) → full gRPC service name (`helloworld.Helloworld`).
    handlers: Arc<HashMap<String, String>>,
    /// The gRPC paths of the handlers' methods (`/helloworld.Helloworld/Call`).
    methods: Arc<HashSet<String>>,
}

impl GateLayer {
    /// A gate for the handlers named `names` (`helloworld.Helloworld`), whose methods are `methods`.
    pub fn new(guard: Arc<Guard>, names: &[&str], methods: HashSet<String>) -> Self {
        let handlers = names
            .iter()
            .map(|name| (name.rsplit('.').next().unwrap_or(name).to_string(), name.to_string()))
            .collect();
        Self { guard, handlers: Arc::new(handlers), methods: Arc::new(methods) }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            guard: self.guard.clone(),
            handlers: self.handlers.clone(),
            methods: self.methods.clone(),
        }
    }
}

/// Admits or refuses each call; admitted calls carry the caller's [`Account`].
#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    guard: Arc<Guard>,
    handlers: Arc<HashMap<String, String>>,
    methods: Arc<HashSet<String>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
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
        let guard = self.guard.clone();
        let methods = self.methods.clone();
        if let Some(path) = reroute(&self.handlers, request.uri().path())
            && let Ok(uri) = http::Uri::builder().path_and_query(path).build()
        {
            *request.uri_mut() = uri;
        }
        Box::pin(async move {
            match guard.admit(request.headers(), request.uri().path()).await {
                Ok(account) => {
                    if let Some(slot) = request.extensions().get::<micro_core::metrics::Slot>()
                        && let Some(endpoint) = crate::metrics_http::endpoint(&methods, request.uri().path())
                    {
                        slot.resolve(guard.service(), &endpoint);
                    }
                    if let Some(account) = account {
                        request.extensions_mut().insert(account);
                    }
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The path to route `path` to when its service prefix is not the handler's gRPC name.
fn reroute(handlers: &HashMap<String, String>, path: &str) -> Option<String> {
    let (qualified, method) = path.strip_prefix('/')?.split_once('/')?;
    let handler = qualified.rsplit('.').next()?;
    let full = handlers.get(handler)?;
    (full != qualified).then(|| format!("/{full}/{method}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_route_by_handler() {
        let layer = GateLayer::new(
            Arc::new(Guard::new(
                Arc::new(
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
                        async { Platform::new(crate::env::Env::from_lookup(|_| None).unwrap()).unwrap() },
                    ),
                ),
                "foo-bar".into(),
            )),
            &["foobar.FooBar"],
            HashSet::new(),
        );
        assert_eq!(reroute(&layer.handlers, "/foo-bar.FooBar/Call").as_deref(), Some("/foobar.FooBar/Call"));
        assert_eq!(reroute(&layer.handlers, "/foobar.FooBar/Call"), None, "already right");
        assert_eq!(
            reroute(&layer.handlers, "/other.Other/Call"),
            None,
            "unknown handlers get tonic's 'unimplemented'"
        );
    }
}
