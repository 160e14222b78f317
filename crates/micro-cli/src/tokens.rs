//! Saved logins: `$MICRO_HOME/tokens.json` (0600), one entry per environment and namespace,
//! holding the access token, the refresh token that replaces it, and who it belongs to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

/// Refresh an access token that expires within this many seconds before using it.
pub const REFRESH_MARGIN_SECS: i64 = 60;
/// Lifetime the CLI asks for when it logs in or refreshes (seconds).
pub const TOKEN_EXPIRY_SECS: i64 = 600;

/// One login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds when the access token expires.
    pub expiry: i64,
    /// The account's id and name, from the token's claims.
    pub account_id: String,
    pub account_name: String,
}

impl Saved {
    /// Builds an entry from a token the server issued, reading the account from its claims.
    pub fn from_token(token: &micro_proto::auth::Token) -> Self {
        let claims = claims(&token.access_token).unwrap_or_default();
        let text =
            |key: &str| claims.get(key).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let account_id = text("sub");
        let name = text("name");
        Self {
            access_token: token.access_token.clone(),
            refresh_token: token.refresh_token.clone(),
            expiry: token.expiry,
            account_name: if name.is_empty() { account_id.clone() } else { name },
            account_id,
        }
    }

    pub fn needs_refresh(&self, now: i64) -> bool {
        self.expiry - now < REFRESH_MARGIN_SECS
    }
}

/// The saved logins file.
pub struct Tokens {
    path: PathBuf,
    entries: BTreeMap<String, Saved>,
}

fn key(env: &str, namespace: &str) -> String {
    format!("{env}/{namespace}")
}

impl Tokens {
    pub fn load() -> Result<Self> {
        let path = micro_core::home::dir().join("tokens.json");
        let entries = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(CliError::new(format!("cannot read {}: {err}", path.display()))),
        };
        Ok(Self { path, entries })
    }

    pub fn get(&self, env: &str, namespace: &str) -> Option<&Saved> {
        self.entries.get(&key(env, namespace))
    }

    pub fn set(&mut self, env: &str, namespace: &str, saved: Saved) -> Result<()> {
        self.entries.insert(key(env, namespace), saved);
        self.save()
    }

    /// Forgets the login for `env`/`namespace`; true when there was one.
    pub fn remove(&mut self, env: &str, namespace: &str) -> Result<bool> {
        let removed = self.entries.remove(&key(env, namespace)).is_some();
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// Forgets every login for `env` (when the environment is deleted).
    pub fn remove_env(&mut self, env: &str) -> Result<()> {
        let prefix = format!("{env}/");
        let before = self.entries.len();
        self.entries.retain(|key, _| !key.starts_with(&prefix));
        if self.entries.len() != before { self.save() } else { Ok(()) }
    }

    /// Writes the file readable by its owner only, replacing it atomically.
    fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.entries).expect("tokens always serialise");
        micro_core::home::write_private(&self.path, &json)
            .map_err(|err| CliError::new(format!("cannot write {}: {err}", self.path.display())))
    }
}

/// The claims of a JWT, read without verifying it (the server verifies; the CLI only displays).
pub fn claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn now() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn account_comes_from_the_token_claims() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let jwt = format!("{}.{}.sig", encode(r#"{"alg":"EdDSA"}"#), encode(r#"{"sub":"id1","name":"bob"}"#));
        let token = micro_proto::auth::Token {
            access_token: jwt,
            refresh_token: "r".into(),
            created: 1,
            expiry: 100,
        };
        let saved = Saved::from_token(&token);
        assert_eq!((saved.account_id.as_str(), saved.account_name.as_str()), ("id1", "bob"));
        assert!(saved.needs_refresh(50));
        assert!(!saved.needs_refresh(39));
        assert!(claims("not-a-jwt").is_none());
    }
}
