//! The developer's CLI login, borrowed by a service started by hand (`cargo run`): the files
//! `micro env` and `micro login` keep under `MICRO_HOME`, read and written through
//! [`micro_core::cli_files`], which defines their format for the CLI and the framework alike.
//!
//! - `config.json`: the selected environment (default `local`, built in at `127.0.0.1:8081`),
//!   each environment's address and TLS settings, the namespace per environment (default
//!   `micro`).
//! - `tokens.json` (0600): `"<env>/<namespace>"` → the login, refreshed here and saved back.
//!
//! A file that cannot be read means "no login" here (a service never fails to start over the
//! developer's CLI state) and is never written over ([`cli_files`'s rule](micro_core::cli_files)).

use std::path::{Path, PathBuf};

use micro_core::cli_files;
pub(crate) use micro_core::cli_files::Login as Saved;

/// What the CLI files say about the environment a service should use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliEnv {
    pub env: String,
    /// The environment's server address; empty when the environment has none.
    pub proxy_address: String,
    /// Whether the CLI reaches it with TLS ([`cli_files::Env::uses_tls`]).
    pub tls: bool,
    /// The CA file `micro env add --ca` stored for it.
    pub ca: Option<PathBuf>,
    pub namespace: String,
    /// The login for `env`/`namespace`, when the developer has one.
    pub login: Option<Saved>,
}

/// Reads the CLI files under `home`. `env` overrides the selected environment (`MICRO_ENV`),
/// `namespace` the environment's namespace (`MICRO_NAMESPACE`). Missing or unreadable files
/// mean "no login".
pub(crate) fn load(home: &Path, env: Option<&str>, namespace: Option<&str>) -> CliEnv {
    let config = cli_files::read_config(&cli_files::config_path(home)).unwrap_or_else(|err| {
        tracing::warn!(cause = %err, "ignoring an unreadable micro CLI file");
        cli_files::Config::default()
    });
    let env = env.map_or_else(|| config.selected().to_string(), str::to_string);
    let entry = config.env(&env).unwrap_or_default();
    let namespace = namespace.map_or_else(|| config.namespace(&env), str::to_string);
    let login = match cli_files::read_tokens(&cli_files::tokens_path(home)) {
        Ok(tokens) => tokens.get(&env, &namespace).cloned(),
        Err(err) => {
            tracing::warn!(cause = %err, "ignoring an unreadable micro CLI file");
            None
        }
    };
    CliEnv {
        tls: entry.uses_tls(),
        ca: entry.ca_path().map(Path::to_path_buf),
        proxy_address: entry.proxy_address,
        env,
        namespace,
        login,
    }
}

/// Waits for the lock a refresh of a saved login holds ([`cli_files::lock_tokens`], shared
/// with the CLI); `None` when it cannot be taken (logged), and the refresh goes on without it.
pub(crate) async fn lock(home: &Path) -> Option<std::fs::File> {
    let path = cli_files::tokens_path(home);
    let locked = tokio::task::spawn_blocking(move || cli_files::lock_tokens(&path))
        .await
        .map_err(|err| err.to_string())
        .and_then(|locked| locked.map_err(|err| err.to_string()));
    locked.inspect_err(|cause| tracing::warn!(%cause, "cannot lock the micro CLI logins")).ok()
}

/// The login saved now for `env`/`namespace` (another process may have refreshed it).
pub(crate) fn saved(home: &Path, env: &str, namespace: &str) -> Option<Saved> {
    cli_files::read_tokens(&cli_files::tokens_path(home)).ok()?.get(env, namespace).cloned()
}

/// Saves a refreshed login back, so the CLI keeps working after the refresh token rotated.
/// Every other entry is kept as it is; a file that cannot be read is left alone (an error).
pub(crate) fn save(home: &Path, env: &str, namespace: &str, saved: &Saved) -> Result<(), cli_files::Error> {
    let path = cli_files::tokens_path(home);
    let mut tokens = cli_files::read_tokens(&path)?;
    tokens.set(env, namespace, saved.clone());
    cli_files::write_tokens(&path, &tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(token: &str) -> Saved {
        Saved {
            access_token: token.into(),
            refresh_token: format!("{token}-refresh"),
            expiry: 100,
            account_id: "admin".into(),
            account_name: "admin".into(),
        }
    }

    #[test]
    fn reads_the_selected_env_namespace_and_login() {
        let home = tempfile::tempdir().unwrap();
        let none = load(home.path(), None, None);
        assert_eq!(
            none,
            CliEnv {
                env: "local".into(),
                proxy_address: "127.0.0.1:8081".into(),
                tls: false,
                ca: None,
                namespace: "micro".into(),
                login: None
            }
        );

        std::fs::write(
            home.path().join("config.json"),
            r#"{"env":"staging","envs":{"staging":{"name":"staging","proxy_address":"10.0.0.1:8081"},
                  "prod":{"name":"prod","proxy_address":"10.0.0.2:8443","tls":true,"ca":"/ca.pem"},
                  "web":{"name":"web","proxy_address":"micro.example.com"}},
                "namespaces":{"staging":"foo"}}"#,
        )
        .unwrap();
        save(home.path(), "staging", "foo", &saved("tok")).unwrap();
        save(home.path(), "local", "micro", &saved("local-tok")).unwrap();
        let staging = load(home.path(), None, None);
        assert_eq!((staging.env.as_str(), staging.proxy_address.as_str()), ("staging", "10.0.0.1:8081"));
        assert_eq!(staging.namespace, "foo");
        assert_eq!(staging.login, Some(saved("tok")));
        assert!(!staging.tls);
        let prod = load(home.path(), Some("prod"), None);
        assert!(prod.tls);
        assert_eq!(prod.ca.as_deref(), Some(Path::new("/ca.pem")));
        assert!(load(home.path(), Some("web"), None).tls, "a bare host is port 443: TLS");

        let local = load(home.path(), Some("local"), None);
        assert_eq!(local.login, Some(saved("local-tok")), "MICRO_ENV picks another environment");
        assert_eq!(load(home.path(), Some("local"), Some("bar")).login, None, "no login for that namespace");
        assert_eq!(load(home.path(), Some("gone"), None).proxy_address, "");

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("tokens.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unreadable_files_mean_no_login_and_are_not_overwritten() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.json"), "not json").unwrap();
        std::fs::write(home.path().join("tokens.json"), "[]").unwrap();
        let cli = load(home.path(), None, None);
        assert_eq!(cli.env, "local");
        assert_eq!(cli.login, None);
        assert!(save(home.path(), "local", "micro", &saved("tok")).is_err());
        assert_eq!(std::fs::read_to_string(home.path().join("tokens.json")).unwrap(), "[]");
    }

    /// Exactly what the CLI writes (pinned by micro-cli's settings.rs and tokens.rs tests).
    const CLI_CONFIG: &str = r#"{
  "env": "staging",
  "envs": {
    "prod": {
      "name": "prod",
      "proxy_address": "proxy.example.com:443",
      "description": "",
      "tls": true
    },
    "staging": {
      "name": "staging",
      "proxy_address": "10.0.0.1:8081",
      "description": ""
    }
  },
  "namespaces": {
    "staging": "foo"
  },
  "git": {
    "baseurl": "github.com/x"
  }
}
"#;
    const CLI_TOKENS: &str = r#"{
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
    fn reads_what_the_cli_wrote_and_saves_without_losing_the_rest() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.json"), CLI_CONFIG).unwrap();
        std::fs::write(home.path().join("tokens.json"), CLI_TOKENS).unwrap();
        let staging = load(home.path(), None, None);
        assert_eq!((staging.env.as_str(), staging.namespace.as_str()), ("staging", "foo"));
        assert_eq!(
            (staging.proxy_address.as_str(), staging.tls, staging.login),
            ("10.0.0.1:8081", false, None)
        );
        assert!(load(home.path(), Some("prod"), None).tls);
        let local = load(home.path(), Some("local"), None).login.unwrap();
        assert_eq!((local.access_token.as_str(), local.account_name.as_str()), ("a", "bob"));

        let refreshed = Saved { access_token: "a2".into(), expiry: 200, ..local };
        save(home.path(), "local", "micro", &refreshed).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.path().join("tokens.json")).unwrap(),
            CLI_TOKENS.replacen("\"a\"", "\"a2\"", 1).replacen("100", "200", 1),
            "the same layout, the other login untouched"
        );
    }
}
