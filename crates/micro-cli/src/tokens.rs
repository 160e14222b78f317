//! Saved logins: `$MICRO_HOME/tokens.json` (0600), one entry per environment and namespace,
//! holding the access token, the refresh token that replaces it, and who it belongs to. The
//! file's format and the rule for a file that cannot be read (an error, never overwritten) live
//! in [`micro_core::cli_files`], shared with the `micro` framework, which refreshes the same
//! logins for services started by hand.

use std::path::PathBuf;

use micro_core::cli_files;
pub use micro_core::cli_files::Login as Saved;

use crate::error::{CliError, Result};

/// Lifetime the CLI asks for when it logs in or refreshes (seconds).
pub const TOKEN_EXPIRY_SECS: i64 = 600;

/// The login a token the server issued stands for, with the account read from its claims.
pub fn from_token(token: &micro_proto::auth::Token) -> Saved {
    let claims = claims(&token.access_token).unwrap_or_default();
    let text =
        |key: &str| claims.get(key).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let account_id = text("sub");
    let name = text("name");
    Saved {
        access_token: token.access_token.clone(),
        refresh_token: token.refresh_token.clone(),
        expiry: token.expiry,
        account_name: if name.is_empty() { account_id.clone() } else { name },
        account_id,
    }
}

/// The saved logins file.
pub struct Tokens {
    path: PathBuf,
    file: cli_files::Tokens,
}

impl Tokens {
    /// Loads `$MICRO_HOME/tokens.json`; missing is no logins, unreadable or corrupt an error.
    pub fn load() -> Result<Self> {
        Self::open(cli_files::tokens_path(&micro_core::home::dir()))
    }

    /// Waits for the lock one refresh of a saved login holds ([`cli_files::lock_tokens`]);
    /// held until the returned file is dropped.
    pub async fn lock() -> Result<std::fs::File> {
        let path = cli_files::tokens_path(&micro_core::home::dir());
        tokio::task::spawn_blocking(move || cli_files::lock_tokens(&path))
            .await
            .map_err(|err| CliError::new(format!("cannot lock the saved logins: {err}")))?
            .map_err(|err| CliError::new(err.to_string()))
    }

    fn open(path: PathBuf) -> Result<Self> {
        let file = cli_files::read_tokens(&path).map_err(|err| CliError::new(err.to_string()))?;
        Ok(Self { path, file })
    }

    pub fn get(&self, env: &str, namespace: &str) -> Option<&Saved> {
        self.file.get(env, namespace)
    }

    pub fn set(&mut self, env: &str, namespace: &str, saved: Saved) -> Result<()> {
        self.file.set(env, namespace, saved);
        self.save()
    }

    /// Forgets the login for `env`/`namespace`; true when there was one.
    pub fn remove(&mut self, env: &str, namespace: &str) -> Result<bool> {
        let removed = self.file.remove(env, namespace);
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// Forgets every login for `env` (when the environment is deleted).
    pub fn remove_env(&mut self, env: &str) -> Result<()> {
        if self.file.remove_env(env) { self.save() } else { Ok(()) }
    }

    /// Writes the file readable by its owner only, replacing it atomically.
    fn save(&self) -> Result<()> {
        cli_files::write_tokens(&self.path, &self.file).map_err(|err| CliError::new(err.to_string()))
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
        let saved = from_token(&token);
        assert_eq!((saved.account_id.as_str(), saved.account_name.as_str()), ("id1", "bob"));
        assert!(saved.needs_refresh(50));
        assert!(!saved.needs_refresh(39));
        assert!(claims("not-a-jwt").is_none());
    }

    fn saved(token: &str) -> Saved {
        Saved {
            access_token: token.into(),
            refresh_token: "r".into(),
            expiry: 100,
            account_id: "id1".into(),
            account_name: "bob".into(),
        }
    }

    /// What the CLI writes; crates/micro/src/login.rs reads the same text.
    const WRITTEN: &str = r#"{
  "local/micro": {
    "access_token": "a",
    "refresh_token": "r",
    "expiry": 100,
    "account_id": "id1",
    "account_name": "bob"
  },
  "other/micro": {
    "access_token": "o",
    "refresh_token": "r",
    "expiry": 100,
    "account_id": "id1",
    "account_name": "bob"
  }
}
"#;

    #[test]
    fn logins_persist_per_env_and_namespace() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let mut tokens = Tokens::open(path.clone()).unwrap();
        assert!(tokens.get("local", "micro").is_none());
        tokens.set("local", "micro", saved("a")).unwrap();
        tokens.set("other", "micro", saved("o")).unwrap();
        tokens.set("staging", "foo", saved("s")).unwrap();
        tokens.set("staging", "bar", saved("s")).unwrap();
        assert!(tokens.remove("staging", "bar").unwrap());
        assert!(!tokens.remove("staging", "bar").unwrap());
        let tokens = Tokens::open(path.clone()).unwrap();
        assert_eq!(tokens.get("staging", "foo"), Some(&saved("s")));
        assert_eq!(tokens.get("staging", "micro"), None);
        Tokens::open(path.clone()).unwrap().remove_env("staging").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), WRITTEN);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_corrupt_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, "{\"local/micro\": {").unwrap();
        let Err(err) = Tokens::open(path.clone()) else { panic!("a corrupt file must not load") };
        assert!(
            err.message.starts_with("Cannot read ") && err.message.ends_with("fix or remove it"),
            "{err:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"local/micro\": {", "nothing overwrote it");

        // Entries this version cannot read, and unknown members, survive a save.
        std::fs::write(&path, r#"{"x/micro":{"token":"t"},"local/micro":{"access_token":"a","refresh_token":"r","expiry":1,"new":true}}"#).unwrap();
        let mut tokens = Tokens::open(path.clone()).unwrap();
        assert_eq!(tokens.get("local", "micro").unwrap().account_id, "", "missing account fields default");
        tokens.set("staging", "micro", saved("s")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((&json["x/micro"]["token"], &json["local/micro"]["new"]), (&"t".into(), &true.into()));
    }
}
