//! The developer's CLI login, borrowed by a service started by hand (`cargo run`): the files
//! `micro env` and `micro login` keep under `MICRO_HOME` (see micro-cli's `settings.rs` and
//! `tokens.rs`, whose formats these mirror).
//!
//! - `config.json`: `env` (selected environment, default `local`), `envs.<name>.proxy_address`
//!   (with `tls` and `ca` when the CLI reaches it over TLS), `namespaces.<env>` (default `micro`). The `local` environment is built in: `127.0.0.1:8081`.
//! - `tokens.json` (0600): `"<env>/<namespace>"` → `{access_token, refresh_token, expiry,
//!   account_id, account_name}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const LOCAL_ENV: &str = "local";
const LOCAL_ADDRESS: &str = "127.0.0.1:8081";

/// One saved login, as `tokens.json` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expiry: i64,
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub account_name: String,
}

/// What the CLI files say about the environment a service should use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliEnv {
    pub env: String,
    /// The environment's server address; empty when the environment has none.
    pub proxy_address: String,
    /// Whether the CLI reaches it with TLS (`micro env add --tls`, or port 443).
    pub tls: bool,
    /// The CA file `micro env add --ca` stored for it.
    pub ca: Option<PathBuf>,
    pub namespace: String,
    /// The login for `env`/`namespace`, when the developer has one.
    pub login: Option<Saved>,
}

#[derive(Debug, Default, Deserialize)]
struct SettingsFile {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    envs: BTreeMap<String, EnvEntry>,
    #[serde(default)]
    namespaces: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct EnvEntry {
    #[serde(default)]
    proxy_address: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    ca: String,
}

/// Reads the CLI files under `home`. `env` overrides the selected environment (`MICRO_ENV`),
/// `namespace` the environment's namespace (`MICRO_NAMESPACE`). Missing or unreadable files
/// mean "no login" — a service never fails to start over the developer's CLI state.
pub(crate) fn load(home: &Path, env: Option<&str>, namespace: Option<&str>) -> CliEnv {
    let mut settings: SettingsFile = read_json(&home.join("config.json")).unwrap_or_default();
    let env = env.map(str::to_string).or(settings.env.clone()).unwrap_or_else(|| LOCAL_ENV.to_string());
    let entry = if env == LOCAL_ENV {
        EnvEntry { proxy_address: LOCAL_ADDRESS.to_string(), ..EnvEntry::default() }
    } else {
        settings.envs.remove(&env).unwrap_or_default()
    };
    let proxy_address = entry.proxy_address;
    // The CLI's rule (micro-cli settings.rs): a stored `tls`, or an address on port 443.
    let tls = !proxy_address.is_empty() && (entry.tls || micro_core::tls::default_tls(&proxy_address));
    let ca = (!entry.ca.is_empty()).then(|| PathBuf::from(entry.ca));
    let namespace = namespace
        .map(str::to_string)
        .or_else(|| settings.namespaces.get(&env).cloned())
        .unwrap_or_else(|| micro_core::DEFAULT_NAMESPACE.to_string());
    let tokens: BTreeMap<String, Saved> = read_json(&tokens_path(home)).unwrap_or_default();
    let login = tokens.get(&format!("{env}/{namespace}")).cloned();
    CliEnv { env, proxy_address, tls, ca, namespace, login }
}

/// Saves a refreshed login back, so the CLI keeps working after the refresh token rotated.
/// Other entries are kept as they are; the file is replaced atomically, readable by its owner only.
pub(crate) fn save(home: &Path, env: &str, namespace: &str, saved: &Saved) -> std::io::Result<()> {
    let path = tokens_path(home);
    let mut entries: serde_json::Map<String, serde_json::Value> = read_json(&path).unwrap_or_default();
    entries.insert(format!("{env}/{namespace}"), serde_json::to_value(saved).map_err(std::io::Error::other)?);
    let json = serde_json::to_vec_pretty(&entries).map_err(std::io::Error::other)?;
    micro_core::home::write_private(&path, &json)
}

fn tokens_path(home: &Path) -> PathBuf {
    home.join("tokens.json")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(path = %path.display(), cause = %err, "ignoring an unreadable micro CLI file");
            None
        }
    }
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
    fn unreadable_files_mean_no_login() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("config.json"), "not json").unwrap();
        std::fs::write(home.path().join("tokens.json"), "[]").unwrap();
        let cli = load(home.path(), None, None);
        assert_eq!(cli.env, "local");
        assert_eq!(cli.login, None);
    }
}
