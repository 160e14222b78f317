//! Who is calling: every incoming call's `authorization: Bearer <jwt>` is verified locally with
//! the server's public key (`Auth.PublicKey`), and the namespace's rules (`Rules.List`, cached
//! for [`RULES_TTL`]) decide whether the call may go on (docs/compatibility.md §6.5). Handlers read the
//! caller with [`account`].
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

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use micro_proto::auth::auth_client::AuthClient;
use micro_proto::auth::rules_client::RulesClient;
use micro_proto::auth::{ListRequest, Options, PublicKeyRequest};
use serde::Deserialize;
use tonic::Status;

pub use micro_core::Account;

use crate::platform::Platform;

/// How long the namespace's rules are used before they are read again.
pub const RULES_TTL: Duration = Duration::from_secs(30);
/// After failing to read the rules, how long callers get the error before trying again.
const RULES_RETRY: Duration = Duration::from_secs(5);
/// How far token expiry may disagree with this machine's clock.
const LEEWAY_SECS: u64 = 5;
/// Paths anyone may call: health checks and reflection.
const ALWAYS_PUBLIC: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The account that made `request`, when it carried a valid token.
pub fn account<T>(request: &tonic::Request<T>) -> Option<Account> {
    request.extensions().get::<Account>().cloned()
}

/// One access rule (docs/compatibility.md §6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// `""` public, `"*"` any account, else a scope name.
    pub scope: String,
    /// `type`, `name`, `endpoint`; each may be `*`.
    pub resource: [String; 3],
    pub granted: bool,
    pub priority: i32,
}

/// The outcome of a rule check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// No account, and nothing lets anonymous callers in (401).
    Unauthorized,
    /// An account that is not let in, or a public deny (403).
    Forbidden,
}

/// The rule engine of micro-auth, repeated here so services do not link the server's storage.
/// Candidates match type, name and endpoint (`*`, exact, or a `prefix/*` of a path endpoint),
/// case-insensitively; highest priority first, first decisive rule wins.
pub(crate) fn verify(rules: &[Rule], account: Option<&Account>, resource: [&str; 3]) -> Verdict {
    let denied = if account.is_some() { Verdict::Forbidden } else { Verdict::Unauthorized };
    let mut endpoints = vec!["*".to_string(), resource[2].to_string()];
    let parts: Vec<&str> = resource[2].split('/').collect();
    if parts.len() > 1 {
        for end in 1..=parts.len() {
            endpoints.push(format!("{}/*", parts[..end].join("/")));
        }
    }
    let matches = |pattern: &str, value: &str| pattern == "*" || pattern.eq_ignore_ascii_case(value);
    let mut candidates: Vec<&Rule> = rules
        .iter()
        .filter(|rule| matches(&rule.resource[0], resource[0]) && matches(&rule.resource[1], resource[1]))
        .filter(|rule| endpoints.iter().any(|pattern| rule.resource[2].eq_ignore_ascii_case(pattern)))
        .collect();
    candidates.sort_by_key(|rule| std::cmp::Reverse(rule.priority));
    for rule in candidates {
        let applies = match (rule.scope.as_str(), account) {
            ("", _) => true,
            (_, None) => false,
            ("*", Some(_)) => true,
            (scope, Some(account)) => account.scopes.iter().any(|held| held.eq_ignore_ascii_case(scope)),
        };
        if applies {
            return if rule.granted { Verdict::Allowed } else { denied };
        }
    }
    denied
}

/// The rule every namespace starts with: everyone may call everything.
fn default_rules() -> Vec<Rule> {
    vec![Rule {
        scope: String::new(),
        resource: ["*".into(), "*".into(), "*".into()],
        granted: true,
        priority: 0,
    }]
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    exp: u64,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    name: String,
}

/// The raw Ed25519 key inside an SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
fn parse_public_key(pem: &str) -> Option<[u8; 32]> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).ok()?;
    let key = der.strip_prefix(&SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// The account a token describes and its expiry (unix seconds), once its signature checks out.
fn decode(key: &[u8; 32], token: &str) -> Result<(Account, u64), jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = LEEWAY_SECS;
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_ed_der(key), &validation)?.claims;
    let name = if claims.name.is_empty() { claims.sub.clone() } else { claims.name };
    let account = Account {
        id: claims.sub,
        name,
        kind: claims.kind,
        issuer: claims.iss,
        scopes: claims.scopes,
        metadata: claims.metadata,
    };
    Ok((account, claims.exp))
}

/// How long the server's public key is trusted before it is read again. After the server's
/// signing key changes (a rotation: a new `auth_key` or `MICRO_AUTH_KEY`), tokens of the old
/// key stop working at a service within this time, verified ones included (docs/security.md).
pub const KEY_TTL: Duration = Duration::from_secs(60);
/// The shortest time between two reads of the key for tokens the held key refuses.
const KEY_RELOAD_MIN: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Cache {
    key: Option<([u8; 32], Instant)>,
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

    /// The caller's account (if any) when the call may go on, else the status refusing it.
    pub async fn admit(&self, headers: &http::HeaderMap, path: &str) -> Result<Option<Account>, Status> {
        if ALWAYS_PUBLIC.iter().any(|public| path.starts_with(public)) {
            return Ok(None);
        }
        let endpoint = endpoint_of(path)
            .ok_or_else(|| Status::unimplemented(format!("malformed gRPC path {path:?}")))?;
        let account = match headers.get(http::header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
                    Status::unauthenticated("invalid authorization header. expected Bearer schema")
                })?;
                Some(self.inspect(token.trim()).await?)
            }
        };
        // Accounts of this namespace (or the super namespace) are judged as themselves; others
        // are anonymous here, for the rules and for the handler alike (docs/security.md): a
        // handler never sees an account another namespace made up.
        let namespace = &self.platform.namespace;
        let judged =
            account.as_ref().filter(|a| &a.issuer == namespace || a.issuer == micro_core::DEFAULT_NAMESPACE);
        let rules = self.rules().await?;
        match verify(&rules, judged, ["service", &self.service, &endpoint]) {
            Verdict::Allowed => Ok(judged.cloned()),
            Verdict::Unauthorized => {
                Err(Status::unauthenticated(format!("Unauthorized call made to {}:{endpoint}", self.service)))
            }
            Verdict::Forbidden => {
                let id = judged.map_or("", |a| a.id.as_str());
                Err(Status::permission_denied(format!(
                    "Forbidden call made to {}:{endpoint} by {id}",
                    self.service
                )))
            }
        }
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
        let invalid = || Status::unauthenticated("the access token is invalid or has expired");
        let (account, expires_at) = match decode(&key, token) {
            Ok(verified) => verified,
            // The server may have a new key: read it again (at most every KEY_RELOAD_MIN).
            Err(err) if matches!(err.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                let fresh = self.public_key(true).await?;
                if fresh == key {
                    return Err(invalid());
                }
                decode(&fresh, token).map_err(|_| invalid())?
            }
            Err(_) => return Err(invalid()),
        };
        self.verified.insert(token, &account, expires_at, now);
        Ok(account)
    }

    /// The server's public key: the cached one while younger than [`KEY_TTL`] (with `reload`,
    /// for a token the cached key refused: younger than [`KEY_RELOAD_MIN`]), else read again.
    /// A changed key empties the verified-token cache, so tokens of the old key are refused
    /// from then on. When the server cannot be reached, a key already held stays in use.
    async fn public_key(&self, reload: bool) -> Result<[u8; 32], Status> {
        let mut cache = self.cache.lock().await;
        let fresh_for = if reload { KEY_RELOAD_MIN } else { KEY_TTL };
        if let Some((key, fetched)) = cache.key
            && fetched.elapsed() < fresh_for
        {
            return Ok(key);
        }
        let mut client = AuthClient::new(self.platform.channel.clone());
        let mut request = self.platform.session.anonymous(PublicKeyRequest {});
        request.set_timeout(crate::platform::CALL_TIMEOUT);
        let reply = match client.public_key(request).await {
            Ok(reply) => reply,
            Err(status) => {
                tracing::warn!(cause = %status.message(), "cannot read the micro server's public key");
                if let Some((key, _)) = cache.key {
                    *self.key_due.lock().expect("key_due lock") = Some(Instant::now() + KEY_RELOAD_MIN);
                    return Ok(key);
                }
                return Err(Status::unavailable(
                    "cannot verify the access token: the micro server's public key is unavailable",
                ));
            }
        };
        let key = parse_public_key(&reply.into_inner().pem)
            .ok_or_else(|| Status::internal("the micro server's public key is not an Ed25519 SPKI PEM"))?;
        if cache.key.is_some_and(|(old, _)| old != key) {
            tracing::info!(
                "the micro server's signing key changed: tokens of the old key are refused from now on"
            );
            self.verified.clear();
        }
        cache.key = Some((key, Instant::now()));
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
                let rules: Arc<Vec<Rule>> =
                    Arc::new(reply.into_inner().rules.into_iter().filter_map(local_rule).collect());
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
                    return Ok(Arc::new(default_rules()));
                }
                let refused =
                    Status::unavailable("cannot read the access rules from the micro server; try again");
                cache.rules_failed = Some((refused.clone(), Instant::now()));
                Err(refused)
            }
        }
    }
}

fn local_rule(rule: micro_proto::auth::Rule) -> Option<Rule> {
    use micro_proto::auth::Access;
    let granted = match Access::try_from(rule.access).ok()? {
        Access::Granted => true,
        Access::Denied => false,
        Access::Unknown => return None,
    };
    let resource = rule.resource?;
    Some(Rule {
        scope: rule.scope,
        resource: [resource.r#type, resource.name, resource.endpoint],
        granted,
        priority: rule.priority,
    })
}

/// `/helloworld.Helloworld/Call` → `Helloworld.Call` (docs/compatibility.md §3.1: the service
/// prefix is the caller's business; the endpoint is `Handler.Method`).
pub(crate) fn endpoint_of(path: &str) -> Option<String> {
    let (qualified, method) = path.strip_prefix('/')?.split_once('/')?;
    let handler = qualified.rsplit('.').next()?;
    if handler.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some(format!("{handler}.{method}"))
}

/// The tower layer that puts the [`Guard`] in front of a service's handlers. It also accepts
/// calls addressed as `/<service name>.<Handler>/<Method>` (how the original's clients and
/// proxies call), by routing on the handler.
#[derive(Clone)]
pub(crate) struct GateLayer {
    guard: Arc<Guard>,
    /// Handler (`Helloworld`) → full gRPC service name (`helloworld.Helloworld`).
    handlers: Arc<HashMap<String, String>>,
}

impl GateLayer {
    pub fn new(guard: Arc<Guard>, names: &[&str]) -> Self {
        let handlers = names
            .iter()
            .map(|name| (name.rsplit('.').next().unwrap_or(name).to_string(), name.to_string()))
            .collect();
        Self { guard, handlers: Arc::new(handlers) }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate { inner, guard: self.guard.clone(), handlers: self.handlers.clone() }
    }
}

/// Admits or refuses each call; admitted calls carry the caller's [`Account`].
#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    guard: Arc<Guard>,
    handlers: Arc<HashMap<String, String>>,
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
        if let Some(path) = reroute(&self.handlers, request.uri().path())
            && let Ok(uri) = http::Uri::builder().path_and_query(path).build()
        {
            *request.uri_mut() = uri;
        }
        Box::pin(async move {
            match guard.admit(request.headers(), request.uri().path()).await {
                Ok(account) => {
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

    fn rule(scope: &str, resource: &str, granted: bool, priority: i32) -> Rule {
        let parts: Vec<String> = resource.splitn(3, ':').map(str::to_string).collect();
        Rule {
            scope: scope.into(),
            resource: [parts[0].clone(), parts[1].clone(), parts[2].clone()],
            granted,
            priority,
        }
    }

    fn account(scopes: &[&str]) -> Account {
        Account {
            id: "bob".into(),
            issuer: "micro".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Account::default()
        }
    }

    const CALL: [&str; 3] = ["service", "helloworld", "Helloworld.Call"];

    #[test]
    fn rules_decide_as_the_server_does() {
        assert_eq!(verify(&default_rules(), None, CALL), Verdict::Allowed);
        assert_eq!(verify(&[], None, CALL), Verdict::Unauthorized);
        assert_eq!(verify(&[], Some(&account(&[])), CALL), Verdict::Forbidden);

        let deny_public = [rule("", "service:helloworld:*", false, 1), default_rules().remove(0)];
        assert_eq!(verify(&deny_public, None, CALL), Verdict::Unauthorized);
        assert_eq!(verify(&deny_public, Some(&account(&["admin"])), CALL), Verdict::Forbidden);

        let accounts_only = [rule("*", "service:helloworld:Helloworld.Call", true, 0)];
        assert_eq!(verify(&accounts_only, None, CALL), Verdict::Unauthorized);
        assert_eq!(verify(&accounts_only, Some(&account(&[])), CALL), Verdict::Allowed);

        let admins = [rule("guest", "*:*:*", false, 2), rule("ADMIN", "SERVICE:*:helloworld.call", true, 1)];
        assert_eq!(verify(&admins, Some(&account(&["admin"])), CALL), Verdict::Allowed);
        assert_eq!(verify(&admins, Some(&account(&["guest", "admin"])), CALL), Verdict::Forbidden);

        let paths = [rule("", "api:web:/foo/*", true, 0)];
        assert_eq!(verify(&paths, None, ["api", "web", "/foo/bar"]), Verdict::Allowed);
        assert_eq!(verify(&paths, None, ["api", "web", "/food"]), Verdict::Unauthorized);
    }

    #[test]
    fn paths_name_endpoints_and_route_by_handler() {
        assert_eq!(endpoint_of("/helloworld.Helloworld/Call").as_deref(), Some("Helloworld.Call"));
        assert_eq!(endpoint_of("/foo-bar.FooBar/Stream").as_deref(), Some("FooBar.Stream"));
        assert_eq!(endpoint_of("/nonsense"), None);

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
        );
        assert_eq!(reroute(&layer.handlers, "/foo-bar.FooBar/Call").as_deref(), Some("/foobar.FooBar/Call"));
        assert_eq!(reroute(&layer.handlers, "/foobar.FooBar/Call"), None, "already right");
        assert_eq!(
            reroute(&layer.handlers, "/other.Other/Call"),
            None,
            "unknown handlers get tonic's 'unimplemented'"
        );
    }

    #[test]
    fn tokens_verify_with_the_servers_public_key() {
        // A fixed Ed25519 key pair (RFC 8032 test 1) in the shapes the server uses.
        let seed: [u8; 32] = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public: [u8; 32] = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&public);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&spki)
        );
        assert_eq!(parse_public_key(&pem), Some(public));
        assert_eq!(parse_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"), None);

        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let signing = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8);
        let exp = crate::session::now() + 60;
        let claims = serde_json::json!({
            "sub": "bob-id", "iss": "foo", "exp": exp, "type": "user", "scopes": ["admin"], "name": "bob"
        });
        let token =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::EdDSA), &claims, &signing).unwrap();
        let (account, expires_at) = decode(&public, &token).unwrap();
        assert_eq!(expires_at as i64, exp);
        assert_eq!(
            (account.id.as_str(), account.name.as_str(), account.issuer.as_str()),
            ("bob-id", "bob", "foo")
        );
        assert_eq!(account.scopes, ["admin"]);
        assert!(decode(&[7; 32], &token).is_err(), "another key's signature fails");

        let expired = serde_json::json!({"sub": "x", "iss": "foo", "exp": exp - 3600});
        let expired =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::EdDSA), &expired, &signing).unwrap();
        assert!(decode(&public, &expired).is_err());
    }

    fn hex(text: &str) -> [u8; 32] {
        let bytes: Vec<u8> =
            (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect();
        bytes.try_into().unwrap()
    }
}
