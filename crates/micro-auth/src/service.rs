//! [`Auth`]: accounts, tokens and rules over a [`Store`], independent of any wire protocol.
//!
//! Everything lives in store database `micro`, table `auth`:
//!
//! | key | value |
//! |---|---|
//! | `account/<ns>/<id>` | the account as JSON, with its argon2id secret hash and token epoch |
//! | `name/<ns>/<name>` | the id of the account called `<name>` |
//! | `refresh/<ns>/<sha256 hex of token>` | `{id, epoch, expires}` of a refresh token (store TTL = its lifetime) |
//! | `rule/<ns>/<id>` | a rule as JSON |
//! | `rules-initialised/<ns>` | marker: the namespace's rule set exists (the default rule was installed once) |
//!
//! Each account carries a random *epoch* (128 random bits: it never repeats), made when the
//! account is created and replaced when its secret changes; a refresh token is honoured only
//! while its account exists with the epoch it was issued under, so changing the secret or
//! deleting (even re-creating under the same id) the account revokes every refresh token at once.
//! Mutations are serialised by one lock per process, never held while hashing; several servers
//! sharing a store may race on the same id (the store has no compare-and-swap).
//!
//! `Auth.Token` takes an account secret or a refresh token, never an access token: a token seen
//! once must not be a way to more tokens. Credential logins pass the limits of
//! [`crate::throttle`] and the bounded hashing queue of `secret`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use micro_core::{Account, DEFAULT_NAMESPACE, validate_namespace};
use micro_store::{ReadOptions, Record, Store, StoreError};

use crate::error::*;
use crate::keys::{Keys, now};
use crate::peer::PeerKey;
use crate::rules::Rule;
use crate::secret::{Hasher, random_password, random_token, random_uuid, token_digest};
use crate::throttle::Throttle;
use crate::{
    DEFAULT_TOKEN_EXPIRY, MAX_ACCOUNTS, MAX_ID_BYTES, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_RULES,
    MAX_SCOPE_BYTES, MAX_SCOPES, MAX_SECRET_BYTES, MAX_TOKEN_EXPIRY, REFRESH_TOKEN_LIFETIME, RULES_CACHE_TTL,
};

/// The store database holding auth data.
pub const DATABASE: &str = "micro";
/// The store table holding auth data.
pub const TABLE: &str = "auth";
/// The id and name of the default administrator.
pub const ADMIN_ID: &str = "admin";
/// The default administrator's password while every listener is on loopback.
pub const DEFAULT_ADMIN_PASSWORD: &str = "micro";
/// The account type of people.
pub const USER: &str = "user";
/// The account type of programs.
pub const SERVICE: &str = "service";

/// How many namespaces' rule sets [`Auth::verify`] keeps in memory before it starts evicting.
const MAX_CACHED_NAMESPACES: usize = 1024;

/// How [`Auth::open`] sets up the default administrator.
#[derive(Clone, Default)]
pub struct AuthOptions {
    /// Never create the default `admin` account. (An existing `admin` is still secured as
    /// described for the other two options.)
    pub disable_admin: bool,
    /// The admin's password: used when creating it, and set on an existing `admin` at boot.
    pub admin_password: Option<String>,
    /// Every listener is on loopback, so the well-known default password `micro` is acceptable.
    /// When false and no `admin_password` is given, a random password is generated instead (and
    /// an existing admin still on `micro` is rotated to it).
    pub loopback_only: bool,
}

impl std::fmt::Debug for AuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthOptions")
            .field("disable_admin", &self.disable_admin)
            .field("admin_password", &self.admin_password.as_ref().map(|_| "<redacted>"))
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

/// What [`Auth::generate`] creates. Empty strings take the defaults.
#[derive(Clone, Default)]
pub struct NewAccount {
    /// Default: a random UUID.
    pub id: String,
    /// Default: the id.
    pub name: String,
    /// `user` (default) or `service`.
    pub kind: String,
    pub scopes: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Default: a random UUID (returned once by [`Auth::generate`]).
    pub secret: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("scopes", &self.scopes)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// How a caller proves who it is to [`Auth::token`].
#[derive(Clone)]
pub enum Credentials {
    /// An account id or name with its secret. (Never an access token: those are not secrets.)
    Secret { id: String, secret: String },
    /// A refresh token from an earlier [`Token`]; it is used up by the call.
    RefreshToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Secret { id, .. } => {
                f.debug_struct("Secret").field("id", id).finish_non_exhaustive()
            }
            Credentials::RefreshToken(_) => f.write_str("RefreshToken(<redacted>)"),
        }
    }
}

/// An access token and the refresh token to get the next one.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The EdDSA JWT to send as `Authorization: Bearer`.
    pub access_token: String,
    /// Single use: exchanging it for a new [`Token`] invalidates it.
    pub refresh_token: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds when `access_token` stops being accepted.
    pub expiry: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("created", &self.created)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// An account as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAccount {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    issuer: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// argon2id PHC string.
    secret_hash: String,
    /// Replaced whenever the secret changes; refresh tokens carry the epoch they were issued in.
    epoch: String,
}

impl StoredAccount {
    fn account(&self) -> Account {
        Account {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind.clone(),
            issuer: self.issuer.clone(),
            scopes: self.scopes.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// A refresh token as stored (under the digest of the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRefresh {
    id: String,
    epoch: String,
    /// Unix seconds.
    expires: u64,
}

fn account_key(ns: &str, id: &str) -> String {
    format!("account/{ns}/{id}")
}
fn name_key(ns: &str, name: &str) -> String {
    format!("name/{ns}/{name}")
}
fn refresh_key(ns: &str, token: &str) -> String {
    format!("refresh/{ns}/{}", token_digest(token))
}
fn rule_key(ns: &str, id: &str) -> String {
    format!("rule/{ns}/{id}")
}
fn rules_marker(ns: &str) -> String {
    format!("rules-initialised/{ns}")
}

/// Each namespace's rules with the time they were loaded.
type RulesCache = HashMap<String, (Instant, Arc<Vec<Rule>>)>;

/// The auth service: accounts, tokens and rules of every namespace. Cheap to share as
/// `Arc<Auth>`; [`Auth::inspect`] is local and never touches the store.
pub struct Auth {
    store: Arc<dyn Store>,
    keys: Keys,
    hasher: Hasher,
    /// Verified against when an account does not exist, so unknown accounts cost the same time
    /// as wrong secrets. Computed on first use to keep start-up fast.
    dummy_hash: tokio::sync::OnceCell<String>,
    generated_admin_password: Option<String>,
    /// Serialises read-check-write sequences (duplicate checks, refresh rotation). Never held
    /// while hashing: one slow hash would stall every account change and refresh behind it.
    writes: tokio::sync::Mutex<()>,
    /// Failed-login limits per account and per peer.
    throttle: Throttle,
    /// Proves the gateway named the HTTP client of a call ([`crate::peer`]).
    peer_key: PeerKey,
    rules_cache: Mutex<RulesCache>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("store", &self.store.summary()).finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the signing key pair from `key_dir/auth_key` (PEM, created 0600 on first boot),
    /// and ensures the default admin of namespace `micro` (see [`AuthOptions`]).
    /// [`Auth::generated_admin_password`] then holds a password generated here, to print once.
    pub async fn open(
        store: Arc<dyn Store>,
        key_dir: &Path,
        options: AuthOptions,
    ) -> Result<Self, AuthError> {
        let dir = key_dir.to_path_buf();
        let keys = tokio::task::spawn_blocking(move || Keys::load_or_create(&dir))
            .await
            .map_err(|err| AuthError::Internal(format!("key loading task failed: {err}")))??;
        Self::with_keys(store, keys, options).await
    }

    /// As [`Auth::open`] with the signing key given as text (a PKCS#8 PEM, or the base64 of
    /// the 32-byte seed) instead of a key file — for servers sharing one key.
    pub async fn open_with_key(
        store: Arc<dyn Store>,
        key: &str,
        options: AuthOptions,
    ) -> Result<Self, AuthError> {
        Self::with_keys(store, Keys::from_text(key)?, options).await
    }

    async fn with_keys(store: Arc<dyn Store>, keys: Keys, options: AuthOptions) -> Result<Self, AuthError> {
        let mut auth = Auth {
            store,
            keys,
            hasher: Hasher::new()?,
            dummy_hash: tokio::sync::OnceCell::new(),
            generated_admin_password: None,
            writes: tokio::sync::Mutex::new(()),
            throttle: Throttle::new(),
            peer_key: PeerKey::generate(),
            rules_cache: Mutex::new(HashMap::new()),
        };
        auth.generated_admin_password = auth.ensure_admin(&options).await?;
        Ok(auth)
    }

    /// The admin password [`Auth::open`] generated, if it did: show it to the operator once.
    pub fn generated_admin_password(&self) -> Option<&str> {
        self.generated_admin_password.as_deref()
    }

    /// The public half of the signing key as an SPKI PEM, for verifying tokens elsewhere.
    pub fn public_key_pem(&self) -> String {
        self.keys.public_key_pem()
    }

    /// Verifies an access token locally (signature, expiry) and returns its account.
    /// Never does I/O, so a deleted account's tokens stay valid until they expire.
    pub fn inspect(&self, token: &str) -> Result<Account, AuthError> {
        self.keys.inspect(token)
    }

    /// Signs an access token for `account` (issuer = `account.issuer`) valid for `ttl`, with no
    /// upper bound: for in-process services minting their own credentials.
    pub fn mint(&self, account: &Account, ttl: Duration) -> Result<String, AuthError> {
        let now = now();
        self.keys.issue(account, &account.issuer, now, now.saturating_add(ttl.as_secs()))
    }

    /// The peer a login came from, for its failed-login limit: the client the gateway named in
    /// `metadata` when the call came over loopback with this boot's key, else `remote`.
    pub fn peer(
        &self,
        remote: Option<SocketAddr>,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Option<IpAddr> {
        self.peer_key.peer(remote, metadata)
    }

    /// Names `client` in the metadata of a call the HTTP gateway makes to this server's core
    /// services (so the login limits count the client, not the gateway); `None` removes any such
    /// names. Only for calls to this server: the metadata then carries this boot's secret key.
    pub fn forward_peer(&self, metadata: &mut tonic::metadata::MetadataMap, client: Option<IpAddr>) {
        self.peer_key.forward(metadata, client);
    }

    /// The rules of `namespace` that calls acting in it are judged by (docs/compatibility.md
    /// §6.5; the default public rule while it has never had rules), for
    /// [`micro_access::admit`]. Rule sets are cached for [`RULES_CACHE_TTL`]. A store failure or
    /// an invalid namespace gives no rules, which deny every call.
    pub async fn rules(&self, namespace: &str) -> Arc<Vec<Rule>> {
        if validate_namespace(namespace).is_err() {
            return Arc::default();
        }
        self.cached_rules(namespace).await.unwrap_or_else(|err| {
            tracing::error!(cause = %err, namespace, "cannot load rules; denying");
            Arc::default()
        })
    }

    // ---- accounts ----

    /// Creates an account in `namespace` and returns it with its plain secret (the only time
    /// the secret is ever revealed).
    pub async fn generate(&self, namespace: &str, new: NewAccount) -> Result<(Account, String), AuthError> {
        validate_namespace(namespace)?;
        let id = if new.id.is_empty() { random_uuid() } else { new.id };
        check_text("account id", &id, MAX_ID_BYTES)?;
        let name = if new.name.is_empty() { id.clone() } else { new.name };
        check_text("account name", &name, MAX_ID_BYTES)?;
        let kind = match new.kind.as_str() {
            "" | USER => USER,
            SERVICE => SERVICE,
            other => {
                return Err(AuthError::Invalid(format!(
                    "account type {other:?} must be \"user\" or \"service\""
                )));
            }
        };
        check_scopes(&new.scopes)?;
        check_metadata(&new.metadata)?;
        let secret = if new.secret.is_empty() { random_uuid() } else { new.secret };
        check_secret("secret", &secret)?;

        let stored = StoredAccount {
            id,
            name,
            kind: kind.to_string(),
            issuer: namespace.to_string(),
            scopes: new.scopes,
            metadata: new.metadata,
            secret_hash: self.hasher.hash(&secret).await?,
            epoch: random_token(16),
        };
        let _guard = self.writes.lock().await;
        self.insert_account(&stored).await?;
        Ok((stored.account(), secret))
    }

    async fn insert_account(&self, stored: &StoredAccount) -> Result<(), AuthError> {
        let ns = &stored.issuer;
        if self.load_account(ns, &stored.id).await?.is_some() {
            return Err(AuthError::AlreadyExists(DUPLICATE_ID));
        }
        if self.account_by_name(ns, &stored.name).await?.is_some() {
            return Err(AuthError::AlreadyExists(DUPLICATE_NAME));
        }
        let counted =
            micro_store::ListOptions { limit: MAX_ACCOUNTS as u64, ..list_prefix(&account_key(ns, "")) };
        if self.store.list(DATABASE, TABLE, counted).await?.len() >= MAX_ACCOUNTS {
            return Err(AuthError::Invalid(format!(
                "a namespace holds at most {MAX_ACCOUNTS} accounts (MAX_ACCOUNTS)"
            )));
        }
        self.write_json(&account_key(ns, &stored.id), stored, None).await?;
        if let Err(err) = self.write(&name_key(ns, &stored.name), stored.id.as_bytes().to_vec(), None).await {
            // Keep "a failed request changes nothing": undo the account.
            let _ = self.store.delete(DATABASE, TABLE, &account_key(ns, &stored.id)).await;
            return Err(err);
        }
        Ok(())
    }

    /// The account with id `id` of `namespace`, without its secret; `None` when it does not
    /// exist (any more). For the server acting as an account later, e.g. a scheduled job.
    pub async fn account(&self, namespace: &str, id: &str) -> Result<Option<Account>, AuthError> {
        validate_namespace(namespace)?;
        Ok(self.load_account(namespace, id).await?.as_ref().map(StoredAccount::account))
    }

    /// Every account of `namespace`, ordered by id, without secrets.
    pub async fn list_accounts(&self, namespace: &str) -> Result<Vec<Account>, AuthError> {
        validate_namespace(namespace)?;
        Ok(self.stored_accounts(namespace).await?.iter().map(StoredAccount::account).collect())
    }

    /// Deletes the account with id (or else name) `id_or_name`, which revokes its refresh
    /// tokens. `caller` may not delete itself.
    pub async fn delete_account(
        &self,
        namespace: &str,
        id_or_name: &str,
        caller: Option<&Account>,
    ) -> Result<(), AuthError> {
        validate_namespace(namespace)?;
        let _guard = self.writes.lock().await;
        let stored =
            self.find_account(namespace, id_or_name).await?.ok_or(AuthError::NotFound(ACCOUNT_NOT_FOUND))?;
        if caller.is_some_and(|caller| caller.id == stored.id && caller.issuer == namespace) {
            return Err(AuthError::CannotDeleteSelf);
        }
        self.remove_account(namespace, &stored).await
    }

    /// Deletes the account with id `id` (never one found by name) when `ours` accepts it, which
    /// revokes its refresh tokens; returns whether it deleted one. One key read, under the write
    /// lock, so what `ours` judged is what goes: for a caller that made an account and must not
    /// delete one that merely shares its id, such as the runtime with its service accounts.
    pub async fn delete_account_if(
        &self,
        namespace: &str,
        id: &str,
        ours: impl FnOnce(&Account) -> bool,
    ) -> Result<bool, AuthError> {
        validate_namespace(namespace)?;
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return Ok(false);
        }
        let _guard = self.writes.lock().await;
        match self.load_account(namespace, id).await? {
            Some(stored) if ours(&stored.account()) => {
                self.remove_account(namespace, &stored).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes `stored` and its name entry; the caller holds the write lock.
    async fn remove_account(&self, namespace: &str, stored: &StoredAccount) -> Result<(), AuthError> {
        // Account first: a dangling name entry is ignored by lookups, a nameless account is not.
        self.store.delete(DATABASE, TABLE, &account_key(namespace, &stored.id)).await?;
        if self.read_string(&name_key(namespace, &stored.name)).await?.as_deref() == Some(stored.id.as_str())
        {
            self.store.delete(DATABASE, TABLE, &name_key(namespace, &stored.name)).await?;
        }
        tracing::info!(namespace, id = %stored.id, "account deleted");
        Ok(())
    }

    /// Replaces the secret of the account with id (or else name) `id_or_name` after checking
    /// `old_secret`; revokes its refresh tokens.
    pub async fn change_secret(
        &self,
        namespace: &str,
        id_or_name: &str,
        old_secret: &str,
        new_secret: &str,
    ) -> Result<(), AuthError> {
        validate_namespace(namespace)?;
        if new_secret.is_empty() {
            return Err(AuthError::Invalid("a new secret is required".into()));
        }
        check_secret("new secret", new_secret)?;
        check_secret("old secret", old_secret)?;
        // Both hashes first, without the lock; then, under it, the account must still be the one
        // checked (same secret hash and epoch), or the old secret was checked against a stale hash.
        let new_hash = self.hasher.hash(new_secret).await?;
        let checked =
            self.find_account(namespace, id_or_name).await?.ok_or(AuthError::NotFound(ACCOUNT_NOT_FOUND))?;
        if !self.hasher.verify(old_secret, &checked.secret_hash).await? {
            return Err(AuthError::SecretNotCorrect);
        }
        let _guard = self.writes.lock().await;
        let mut stored =
            self.load_account(namespace, &checked.id).await?.ok_or(AuthError::NotFound(ACCOUNT_NOT_FOUND))?;
        if stored.secret_hash != checked.secret_hash || stored.epoch != checked.epoch {
            return Err(AuthError::SecretNotCorrect);
        }
        stored.secret_hash = new_hash;
        stored.epoch = random_token(16);
        self.write_json(&account_key(namespace, &stored.id), &stored, None).await?;
        Ok(())
    }

    // ---- tokens ----

    /// Logs in (docs/compatibility.md §6.3, with rotating refresh tokens) and returns a fresh [`Token`].
    /// `expiry` is the access token's lifetime: `None` or zero means [`DEFAULT_TOKEN_EXPIRY`],
    /// longer than [`MAX_TOKEN_EXPIRY`] is capped. Unknown accounts and wrong secrets fail
    /// alike with [`AuthError::InvalidCredentials`]. For callers in this process: no peer
    /// limit applies (see [`Auth::token_from`]).
    pub async fn token(
        &self,
        namespace: &str,
        credentials: Credentials,
        expiry: Option<Duration>,
    ) -> Result<Token, AuthError> {
        self.token_from(namespace, credentials, expiry, None).await
    }

    /// [`Auth::token`] for a caller at `peer` ([`Auth::peer`]). A login with credentials is
    /// refused with [`AuthError::Throttled`] while its account or its peer is over its
    /// failed-login limit ([`crate::throttle`]) or the hashing queue is full.
    pub async fn token_from(
        &self,
        namespace: &str,
        credentials: Credentials,
        expiry: Option<Duration>,
        peer: Option<IpAddr>,
    ) -> Result<Token, AuthError> {
        validate_namespace(namespace)?;
        let lifetime = match expiry {
            None | Some(Duration::ZERO) => DEFAULT_TOKEN_EXPIRY,
            Some(requested) => requested.min(MAX_TOKEN_EXPIRY),
        };
        match credentials {
            Credentials::RefreshToken(token) => self.refresh(namespace, &token, lifetime).await,
            Credentials::Secret { id, secret } => {
                if id.is_empty() || secret.is_empty() {
                    return Err(AuthError::Invalid(CREDENTIALS_REQUIRED.into()));
                }
                if id.len() > MAX_ID_BYTES || secret.len() > MAX_SECRET_BYTES {
                    return Err(AuthError::InvalidCredentials);
                }
                let stored = self.login(namespace, &id, &secret, peer).await?;
                self.issue(namespace, &stored, lifetime).await
            }
        }
    }

    /// Checks `secret` against the account `id` names (its id, else its name), within the limits:
    /// the peer's first (refused before even a store read), then the account's. An unknown
    /// account costs one hash like a known one and counts toward both limits alike, so neither
    /// the time nor a refusal tells whether it exists.
    async fn login(
        &self,
        namespace: &str,
        id: &str,
        secret: &str,
        peer: Option<IpAddr>,
    ) -> Result<StoredAccount, AuthError> {
        let peer_attempt = peer.map(|peer| self.throttle.peers.begin(peer, Instant::now())).transpose()?;
        let found = self.find_account(namespace, id).await?;
        let key = (namespace.to_string(), found.as_ref().map_or(id, |stored| stored.id.as_str()).to_string());
        let account_attempt = self.throttle.accounts.begin(key, Instant::now())?;
        let matched = match &found {
            Some(stored) => self.hasher.verify(secret, &stored.secret_hash).await?,
            None => {
                let dummy = self
                    .dummy_hash
                    .get_or_try_init(|| async { self.hasher.hash(&random_token(16)).await })
                    .await?;
                self.hasher.verify(secret, dummy).await?;
                false
            }
        };
        let now = Instant::now();
        account_attempt.finish(matched, now);
        if let Some(attempt) = peer_attempt {
            attempt.finish(matched, now);
        }
        match found {
            Some(stored) if matched => Ok(stored),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    async fn refresh(&self, namespace: &str, token: &str, lifetime: Duration) -> Result<Token, AuthError> {
        if token.is_empty() || token.len() > MAX_SECRET_BYTES {
            return Err(AuthError::InvalidRefreshToken);
        }
        let key = refresh_key(namespace, token);
        let _guard = self.writes.lock().await;
        let Some(record) = self.read_json::<StoredRefresh>(&key).await? else {
            return Err(AuthError::InvalidRefreshToken);
        };
        // Used up whatever happens next.
        self.store.delete(DATABASE, TABLE, &key).await?;
        if record.expires <= now() {
            return Err(AuthError::InvalidRefreshToken);
        }
        match self.load_account(namespace, &record.id).await? {
            Some(stored) if stored.epoch == record.epoch => self.issue(namespace, &stored, lifetime).await,
            _ => Err(AuthError::InvalidRefreshToken),
        }
    }

    async fn issue(
        &self,
        namespace: &str,
        stored: &StoredAccount,
        lifetime: Duration,
    ) -> Result<Token, AuthError> {
        let created = now();
        let expiry = created + lifetime.as_secs();
        let access_token = self.keys.issue(&stored.account(), namespace, created, expiry)?;
        let refresh_token = random_token(32);
        let record = StoredRefresh {
            id: stored.id.clone(),
            epoch: stored.epoch.clone(),
            expires: created + REFRESH_TOKEN_LIFETIME.as_secs(),
        };
        self.write_json(&refresh_key(namespace, &refresh_token), &record, Some(REFRESH_TOKEN_LIFETIME))
            .await?;
        Ok(Token {
            access_token,
            refresh_token,
            created: i64::try_from(created).unwrap_or(i64::MAX),
            expiry: i64::try_from(expiry).unwrap_or(i64::MAX),
        })
    }

    // ---- rules ----

    /// Adds `rule` to `namespace`'s rules (which start as the default rule).
    pub async fn create_rule(&self, namespace: &str, rule: Rule) -> Result<(), AuthError> {
        validate_namespace(namespace)?;
        check_text("rule id", &rule.id, MAX_ID_BYTES)?;
        if !rule.scope.is_empty() {
            check_text("rule scope", &rule.scope, MAX_SCOPE_BYTES)?;
        }
        check_text("resource type", &rule.resource.kind, MAX_ID_BYTES)?;
        check_text("resource name", &rule.resource.name, MAX_ID_BYTES)?;
        check_text("resource endpoint", &rule.resource.endpoint, MAX_ID_BYTES)?;
        let _guard = self.writes.lock().await;
        self.initialise_rules(namespace).await?;
        let key = rule_key(namespace, &rule.id);
        if self.read_string(&key).await?.is_some() {
            return Err(AuthError::AlreadyExists(DUPLICATE_RULE));
        }
        if self.store.list(DATABASE, TABLE, list_prefix(&rule_key(namespace, ""))).await?.len() >= MAX_RULES {
            return Err(AuthError::Invalid(format!("a namespace holds at most {MAX_RULES} rules")));
        }
        self.write_json(&key, &rule, None).await?;
        self.forget_rules(namespace);
        Ok(())
    }

    /// Removes rule `id` from `namespace` (the default rule too: it then stays removed).
    pub async fn delete_rule(&self, namespace: &str, id: &str) -> Result<(), AuthError> {
        validate_namespace(namespace)?;
        check_text("rule id", id, MAX_ID_BYTES)?;
        let _guard = self.writes.lock().await;
        self.initialise_rules(namespace).await?;
        // Deleting a rule that is not there succeeds quietly, as other deletes do.
        let key = rule_key(namespace, id);
        if self.read_string(&key).await?.is_none() {
            return Ok(());
        }
        self.store.delete(DATABASE, TABLE, &key).await?;
        self.forget_rules(namespace);
        Ok(())
    }

    /// The rules of `namespace` ordered by id, installing the default rule the first time.
    pub async fn list_rules(&self, namespace: &str) -> Result<Vec<Rule>, AuthError> {
        validate_namespace(namespace)?;
        if self.read_string(&rules_marker(namespace)).await?.is_none() {
            let _guard = self.writes.lock().await;
            self.initialise_rules(namespace).await?;
        }
        self.load_rules(namespace).await
    }

    /// Persists the default rule once per namespace; a marker remembers that it was done, so
    /// deleting the default later is permanent.
    async fn initialise_rules(&self, namespace: &str) -> Result<(), AuthError> {
        if self.read_string(&rules_marker(namespace)).await?.is_some() {
            return Ok(());
        }
        let default = Rule::default_rule();
        self.write_json(&rule_key(namespace, &default.id), &default, None).await?;
        self.write(&rules_marker(namespace), Vec::new(), None).await?;
        self.forget_rules(namespace);
        Ok(())
    }

    /// The stored rules, or the default rule alone while the namespace was never initialised
    /// (without persisting anything: anonymous requests must not create store keys).
    async fn load_rules(&self, namespace: &str) -> Result<Vec<Rule>, AuthError> {
        if self.read_string(&rules_marker(namespace)).await?.is_none() {
            return Ok(vec![Rule::default_rule()]);
        }
        self.read_prefix(&rule_key(namespace, "")).await
    }

    async fn cached_rules(&self, namespace: &str) -> Result<Arc<Vec<Rule>>, AuthError> {
        {
            let cache = self.rules_cache.lock().expect("the rules cache lock is never poisoned");
            if let Some((loaded, rules)) = cache.get(namespace)
                && loaded.elapsed() < RULES_CACHE_TTL
            {
                return Ok(rules.clone());
            }
        }
        let rules = Arc::new(self.load_rules(namespace).await?);
        let mut cache = self.rules_cache.lock().expect("the rules cache lock is never poisoned");
        if cache.len() >= MAX_CACHED_NAMESPACES {
            cache.retain(|_, (loaded, _)| loaded.elapsed() < RULES_CACHE_TTL);
            if cache.len() >= MAX_CACHED_NAMESPACES {
                cache.clear();
            }
        }
        cache.insert(namespace.to_string(), (Instant::now(), rules.clone()));
        Ok(rules)
    }

    fn forget_rules(&self, namespace: &str) {
        self.rules_cache.lock().expect("the rules cache lock is never poisoned").remove(namespace);
    }

    // ---- the default admin ----

    /// Creates or secures `admin` in namespace `micro`; returns a password it generated.
    async fn ensure_admin(&self, options: &AuthOptions) -> Result<Option<String>, AuthError> {
        if let Some(password) = &options.admin_password {
            if password.is_empty() {
                return Err(AuthError::Invalid("the admin password must not be empty".into()));
            }
            check_secret("admin password", password)?;
        }
        let ns = DEFAULT_NAMESPACE;
        let accounts = self.stored_accounts(ns).await?;
        let admin = accounts.iter().find(|account| account.id == ADMIN_ID);
        let has_user = accounts.iter().any(|account| account.kind == USER);

        if !has_user && !options.disable_admin && admin.is_none() {
            let (password, generated) = match (&options.admin_password, options.loopback_only) {
                (Some(password), _) => (password.clone(), false),
                (None, true) => (DEFAULT_ADMIN_PASSWORD.to_string(), false),
                (None, false) => (random_password(24), true),
            };
            let new = NewAccount {
                id: ADMIN_ID.into(),
                name: ADMIN_ID.into(),
                kind: USER.into(),
                scopes: vec!["admin".into()],
                secret: password.clone(),
                ..NewAccount::default()
            };
            return match self.generate(ns, new).await {
                Ok(_) => {
                    tracing::info!(namespace = ns, id = ADMIN_ID, "created the default admin account");
                    Ok(generated.then_some(password))
                }
                // Another server sharing the store created it first; it reports the password.
                Err(AuthError::AlreadyExists(_)) => Ok(None),
                Err(err) => Err(err),
            };
        }

        let Some(admin) = admin else { return Ok(None) };
        let (password, generated) = match &options.admin_password {
            Some(password) if !self.hasher.verify(password, &admin.secret_hash).await? => {
                (password.clone(), false)
            }
            Some(_) => return Ok(None),
            None if !options.loopback_only
                && self.hasher.verify(DEFAULT_ADMIN_PASSWORD, &admin.secret_hash).await? =>
            {
                tracing::warn!(
                    "the admin account still had the default password while listening beyond loopback; rotated it"
                );
                (random_password(24), true)
            }
            None => return Ok(None),
        };
        let mut admin = admin.clone();
        admin.secret_hash = self.hasher.hash(&password).await?;
        admin.epoch = random_token(16);
        self.write_json(&account_key(ns, ADMIN_ID), &admin, None).await?;
        Ok(generated.then_some(password))
    }

    // ---- store helpers ----

    async fn stored_accounts(&self, namespace: &str) -> Result<Vec<StoredAccount>, AuthError> {
        self.read_prefix(&account_key(namespace, "")).await
    }

    async fn load_account(&self, namespace: &str, id: &str) -> Result<Option<StoredAccount>, AuthError> {
        self.read_json(&account_key(namespace, id)).await
    }

    async fn account_by_name(&self, namespace: &str, name: &str) -> Result<Option<StoredAccount>, AuthError> {
        match self.read_string(&name_key(namespace, name)).await? {
            Some(id) => self.load_account(namespace, &id).await,
            None => Ok(None),
        }
    }

    /// The account with id `id_or_name`, else the one named so.
    async fn find_account(
        &self,
        namespace: &str,
        id_or_name: &str,
    ) -> Result<Option<StoredAccount>, AuthError> {
        if id_or_name.is_empty() {
            return Err(AuthError::Invalid("an account id or name is required".into()));
        }
        if id_or_name.len() > MAX_ID_BYTES {
            return Ok(None);
        }
        match self.load_account(namespace, id_or_name).await? {
            Some(found) => Ok(Some(found)),
            None => self.account_by_name(namespace, id_or_name).await,
        }
    }

    async fn read_string(&self, key: &str) -> Result<Option<String>, AuthError> {
        match self.store.read(DATABASE, TABLE, key, ReadOptions::default()).await {
            Ok(mut records) if !records.is_empty() => {
                let value = records.swap_remove(0).value;
                String::from_utf8(value)
                    .map(Some)
                    .map_err(|_| AuthError::Internal(format!("{key} is not UTF-8")))
            }
            Ok(_) | Err(StoreError::NotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn read_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AuthError> {
        match self.read_string(key).await? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|err| AuthError::Internal(format!("{key} is corrupt: {err}"))),
            None => Ok(None),
        }
    }

    async fn read_prefix<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, AuthError> {
        let options = ReadOptions { prefix: true, ..ReadOptions::default() };
        let records = self.store.read(DATABASE, TABLE, prefix, options).await?;
        records
            .iter()
            .map(|record| {
                serde_json::from_slice(&record.value)
                    .map_err(|err| AuthError::Internal(format!("{} is corrupt: {err}", record.key)))
            })
            .collect()
    }

    async fn write(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), AuthError> {
        let mut record = Record::new(key, value);
        record.expiry = ttl;
        Ok(self.store.write(DATABASE, TABLE, record).await?)
    }

    async fn write_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), AuthError> {
        let json = serde_json::to_vec(value)
            .map_err(|err| AuthError::Internal(format!("cannot encode {key}: {err}")))?;
        self.write(key, json, ttl).await
    }
}

fn list_prefix(prefix: &str) -> micro_store::ListOptions {
    micro_store::ListOptions { prefix: prefix.to_string(), ..micro_store::ListOptions::default() }
}

/// Non-empty, at most `max` bytes, no control characters.
fn check_text(what: &str, value: &str, max: usize) -> Result<(), AuthError> {
    if value.is_empty() {
        return Err(AuthError::Invalid(format!("{what} is required")));
    }
    if value.len() > max {
        return Err(AuthError::Invalid(format!(
            "{what} is {} bytes, longer than the limit of {max}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(AuthError::Invalid(format!("{what} must not contain control characters")));
    }
    Ok(())
}

fn check_secret(what: &str, secret: &str) -> Result<(), AuthError> {
    if secret.len() > MAX_SECRET_BYTES {
        return Err(AuthError::Invalid(format!(
            "{what} is longer than the limit of {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_scopes(scopes: &[String]) -> Result<(), AuthError> {
    if scopes.len() > MAX_SCOPES {
        return Err(AuthError::Invalid(format!("an account has at most {MAX_SCOPES} scopes")));
    }
    scopes.iter().try_for_each(|scope| check_text("scope", scope, MAX_SCOPE_BYTES))
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), AuthError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(AuthError::Invalid(format!(
            "an account has at most {MAX_METADATA_ENTRIES} metadata entries"
        )));
    }
    let bytes: usize = metadata.iter().map(|(key, value)| key.len() + value.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(AuthError::Invalid(format!(
            "account metadata is {bytes} bytes, more than the limit of {MAX_METADATA_BYTES}"
        )));
    }
    metadata.keys().try_for_each(|key| check_text("metadata key", key, MAX_ID_BYTES))
}

#[cfg(test)]
impl Auth {
    /// An [`Auth`] over `store` with a fixed key, for tests.
    pub(crate) async fn for_tests(store: Arc<dyn Store>, options: AuthOptions) -> Self {
        Self::with_keys(store, Keys::from_seed(&[42; 32]), options).await.unwrap()
    }

    /// [`Auth::with_keys`] over a fresh memory store, for tests of `open` failures.
    pub(crate) async fn with_keys_for_tests(options: AuthOptions) -> Result<Self, AuthError> {
        let store: Arc<dyn Store> = Arc::new(micro_store::memory::MemoryStore::new());
        Self::with_keys(store, Keys::from_seed(&[42; 32]), options).await
    }

    /// An access token for `account` that expired an hour ago.
    pub(crate) fn expired_token(&self, account: &Account) -> String {
        let now = now();
        self.keys.issue(account, &account.issuer, now - 7200, now - 3600).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delete_account_if_goes_by_id_and_asks_first() {
        let store: Arc<dyn Store> = Arc::new(micro_store::memory::MemoryStore::new());
        let auth =
            Auth::for_tests(store, AuthOptions { loopback_only: true, ..AuthOptions::default() }).await;
        let service = |id: &str, name: &str| NewAccount {
            id: id.into(),
            name: name.into(),
            kind: SERVICE.into(),
            ..NewAccount::default()
        };
        auth.generate("foo", service("svc.a", "")).await.unwrap();
        auth.generate("foo", service("person", "svc.b")).await.unwrap();
        let is_service = |account: &Account| account.kind == SERVICE;

        assert!(!auth.delete_account_if("foo", "svc.a", |_| false).await.unwrap(), "refused: kept");
        assert!(!auth.delete_account_if("foo", "svc.b", is_service).await.unwrap(), "never by name");
        assert!(!auth.delete_account_if("bar", "svc.a", is_service).await.unwrap(), "other namespace");
        assert!(!auth.delete_account_if("foo", "", is_service).await.unwrap());
        assert!(auth.delete_account_if("foo", "svc.a", is_service).await.unwrap());
        let left: Vec<String> = auth.list_accounts("foo").await.unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(left, ["person"]);
        assert!(!auth.delete_account_if("foo", "svc.a", is_service).await.unwrap(), "already gone");
        assert!(auth.delete_account_if("Bad Namespace", "svc.a", is_service).await.is_err());
    }
}
