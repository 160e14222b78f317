//! The identity a call carries into a user service (docs/security.md): never the caller's own
//! bearer token, which a `micro` admin's call would hand to tenant code valid in every namespace
//! for hours. The proxy and the gateway replace it with a token this server signs for the call:
//!
//! - the caller's account, issued by the **callee's namespace** (`iss`), so a service can verify
//!   it with the server's public key as before but can use it nowhere else; an account from
//!   `micro` keeps where it came from in metadata `forwarded_from`;
//! - valid for [`FORWARDED_TOKEN_LIFETIME`] only;
//! - none at all for a caller acting in a namespace that did not issue its account (and is not
//!   `micro`): such a caller reaches a service as anonymous.
//!
//! Tokens are cached per (caller token, namespace) while more than half their life is left, so
//! a busy caller costs one signature per few minutes and services keep their verified-token
//! cache warm.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use micro_auth::Auth;
use micro_core::Account;

/// How long a forwarded token is valid.
pub const FORWARDED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Metadata key naming the namespace that issued a forwarded `micro` account.
pub const FORWARDED_FROM: &str = "forwarded_from";
/// Most forwarded tokens cached; past it the cache starts afresh.
const MAX_CACHED: usize = 1024;

/// Caller token → (namespace, `Bearer <forwarded token>`, reused until), looked up by `&str`
/// so a cache hit allocates nothing.
type Cache = HashMap<String, Vec<(String, HeaderValue, Instant)>>;

/// Mints and caches forwarded tokens. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    auth: Arc<Auth>,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    pub fn new(auth: Arc<Auth>) -> Self {
        Self { auth, cache: Arc::default() }
    }

    /// The `authorization` value to send to a service of `namespace` for a caller presenting
    /// `caller_token`, verified as `account`; `None` when the call goes on anonymous.
    pub fn bearer(&self, caller_token: &str, account: &Account, namespace: &str) -> Option<HeaderValue> {
        if !account.may_act_in(namespace) {
            return None;
        }
        let now = Instant::now();
        let cached = self.cache.lock().expect("forward cache lock").get(caller_token).and_then(|minted| {
            minted
                .iter()
                .find(|(ns, _, fresh_until)| ns == namespace && *fresh_until > now)
                .map(|(_, v, _)| v.clone())
        });
        if cached.is_some() {
            return cached;
        }
        let token = match self.auth.mint(&scoped(account, namespace), FORWARDED_TOKEN_LIFETIME) {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot sign a forwarded token; the call goes on anonymous");
                return None;
            }
        };
        let value = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
        let mut cache = self.cache.lock().expect("forward cache lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        let minted = cache.entry(caller_token.to_string()).or_default();
        minted.retain(|(ns, _, fresh_until)| ns != namespace && *fresh_until > now);
        minted.push((namespace.to_string(), value.clone(), now + FORWARDED_TOKEN_LIFETIME / 2));
        Some(value)
    }

    /// The forwarded token itself ([`Forwarder::bearer`] without `Bearer `), for tests.
    #[cfg(test)]
    fn token(&self, caller_token: &str, account: &Account, namespace: &str) -> Option<String> {
        let value = self.bearer(caller_token, account, namespace)?;
        value.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
    }
}

/// `account` as issued by `namespace` (where [`Account::may_act_in`] allowed it).
fn scoped(account: &Account, namespace: &str) -> Account {
    let mut scoped = account.clone();
    if account.issuer != namespace {
        scoped.metadata.insert(FORWARDED_FROM.to_string(), account.issuer.clone());
        scoped.issuer = namespace.to_string();
    }
    scoped
}

#[cfg(test)]
mod tests {
    use micro_auth::AuthOptions;

    use super::*;

    #[tokio::test]
    async fn forwarded_tokens_are_scoped_short_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(micro_store::memory::MemoryStore::new());
        let options = AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
        let auth = Arc::new(Auth::open(store, dir.path(), options).await.unwrap());
        let forwarder = Forwarder::new(auth.clone());
        let admin = Account {
            id: "admin".into(),
            name: "admin".into(),
            kind: "user".into(),
            issuer: "micro".into(),
            scopes: vec!["admin".into()],
            ..Account::default()
        };
        let token = forwarder.token("caller", &admin, "foo").unwrap();
        let seen = auth.inspect(&token).unwrap();
        assert_eq!((seen.id.as_str(), seen.issuer.as_str()), ("admin", "foo"), "valid in foo only");
        assert_eq!(seen.metadata[FORWARDED_FROM], "micro");
        assert_eq!(forwarder.token("caller", &admin, "foo").unwrap(), token, "cached");
        assert_ne!(forwarder.token("caller", &admin, "bar").unwrap(), token, "one per namespace");

        let bob = Account { id: "bob".into(), issuer: "foo".into(), ..Account::default() };
        let own = auth.inspect(&forwarder.token("bob's", &bob, "foo").unwrap()).unwrap();
        assert_eq!((own.issuer.as_str(), own.metadata.get(FORWARDED_FROM)), ("foo", None));
        assert_eq!(forwarder.token("bob's", &bob, "bar"), None, "a foreign tenant goes on anonymous");
    }
}
