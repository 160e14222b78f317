//! The micro CLI's two files under `MICRO_HOME`, defined once for the CLI (`micro env`,
//! `micro login`, `micro user`) and for services built with the `micro` framework, which borrow
//! the developer's login when started by hand:
//!
//! - [`CONFIG_FILE`] (`config.json`, [`Config`]): `env`, the selected environment (default
//!   [`LOCAL_ENV`]); `envs.<name>`, the environments the user added (`name`, `proxy_address`,
//!   `description`, `tls`, `ca`); `namespaces.<env>`, the namespace chosen per environment
//!   (default [`crate::DEFAULT_NAMESPACE`]); any other top-level key is a user setting
//!   (`micro user config set git.baseurl …`).
//! - [`TOKENS_FILE`] (`tokens.json`, [`Tokens`]): `"<env>/<namespace>"` → a [`Login`]
//!   (`access_token`, `refresh_token`, `expiry`, `account_id`, `account_name`).
//!
//! Both are pretty-printed JSON written with [`home::write_private`]: atomically, readable by
//! their owner only (config.json may hold git credentials, tokens.json holds logins). A refresh
//! of a saved login holds `tokens.json.lock` ([`lock_tokens`]) from reading the login to saving
//! the new one.
//!
//! # A file that cannot be read
//!
//! One rule for both files and both readers. A missing file is an empty one. A file that exists
//! but cannot be read or parsed is an [`Error`], never taken for an empty file, so nothing is
//! written over it: a corrupt tokens.json read as empty would lose every other environment's
//! login at the next save. The CLI stops with the error, which names the file to fix or remove;
//! the framework starts without the login and does not save refreshed tokens into that file.
//! (A file of whitespace only holds nothing to lose and counts as empty.)
//!
//! # What this version does not know
//!
//! Is written back as it was read: unknown top-level keys of config.json ([`Config::other`]),
//! entries of tokens.json that are not logins this version can read, and unknown fields of a
//! login entry until that login is replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::home;

/// The CLI's settings file in `MICRO_HOME` (the CLI's `-c FILE` may name another).
pub const CONFIG_FILE: &str = "config.json";
/// The saved logins in `MICRO_HOME`.
pub const TOKENS_FILE: &str = "tokens.json";

/// The built-in environment, used when none was selected; it cannot be changed or removed.
pub const LOCAL_ENV: &str = "local";
/// Where [`LOCAL_ENV`] points: `micro server`'s default proxy address.
pub const LOCAL_ADDRESS: &str = "127.0.0.1:8081";
/// How `micro env` describes [`LOCAL_ENV`].
pub const LOCAL_DESCRIPTION: &str = "Local running Micro Server";

/// A saved login whose access token expires within this many seconds is refreshed before use.
pub const REFRESH_MARGIN_SECS: i64 = 60;

/// Extra JSON object members, kept as read.
pub type Members = serde_json::Map<String, serde_json::Value>;

/// `home`'s [`CONFIG_FILE`].
pub fn config_path(home: &Path) -> PathBuf {
    home.join(CONFIG_FILE)
}

/// `home`'s [`TOKENS_FILE`].
pub fn tokens_path(home: &Path) -> PathBuf {
    home.join(TOKENS_FILE)
}

/// Why a CLI file could not be read or written. A file in error is never written over (see the
/// module docs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: it is not a valid micro CLI file ({source}); fix or remove it", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {}: {source}", path.display())]
    Unwritable { path: PathBuf, source: std::io::Error },
}

/// `config.json`. Missing members take their defaults; see [`Config::selected`],
/// [`Config::env`] and [`Config::namespace`] for what an absent entry means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The selected environment; `None` means [`LOCAL_ENV`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The environments the user added, by name ([`LOCAL_ENV`] is never stored).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, Env>,
    /// The namespace to act in, per environment; absent means [`crate::DEFAULT_NAMESPACE`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, String>,
    /// User settings and anything a newer CLI wrote, kept as is.
    #[serde(flatten)]
    pub other: Members,
}

impl Config {
    /// The top-level keys with a meaning of their own: not user settings.
    pub const MANAGED_KEYS: [&str; 3] = ["env", "envs", "namespaces"];

    /// The selected environment, [`LOCAL_ENV`] when none was.
    pub fn selected(&self) -> &str {
        self.env.as_deref().unwrap_or(LOCAL_ENV)
    }

    /// Environment `name`: [`Env::local`] for [`LOCAL_ENV`], else the stored one.
    pub fn env(&self, name: &str) -> Option<Env> {
        if name == LOCAL_ENV { Some(Env::local()) } else { self.envs.get(name).cloned() }
    }

    /// Every environment, [`LOCAL_ENV`] included, sorted by name.
    pub fn envs(&self) -> Vec<Env> {
        let mut envs = self.envs.clone();
        envs.insert(LOCAL_ENV.to_string(), Env::local());
        envs.into_values().collect()
    }

    /// The namespace to act in against `env`.
    pub fn namespace(&self, env: &str) -> String {
        self.namespaces.get(env).cloned().unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string())
    }
}

/// One environment: a name for a server's proxy address, and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    pub name: String,
    /// `host:port` of the server's gRPC proxy (a bare host means port 443); empty when added
    /// without one.
    #[serde(default)]
    pub proxy_address: String,
    #[serde(default)]
    pub description: String,
    /// Connect with TLS (`micro env add --tls` or `--ca`); see [`Env::uses_tls`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// A CA certificate file (PEM, absolute path) trusted besides the system's authorities.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca: String,
}

impl Env {
    /// The built-in [`LOCAL_ENV`] at [`LOCAL_ADDRESS`], without TLS.
    pub fn local() -> Self {
        Self {
            name: LOCAL_ENV.to_string(),
            proxy_address: LOCAL_ADDRESS.to_string(),
            description: LOCAL_DESCRIPTION.to_string(),
            tls: false,
            ca: String::new(),
        }
    }

    /// Whether clients reach this environment with TLS: it has an address, and either `tls` is
    /// stored or the address is on port 443 ([`crate::tls::default_tls`]), which also covers
    /// entries written before `tls` existed.
    pub fn uses_tls(&self) -> bool {
        !self.proxy_address.is_empty() && (self.tls || crate::tls::default_tls(&self.proxy_address))
    }

    /// The extra CA to trust, if one was given.
    pub fn ca_path(&self) -> Option<&Path> {
        (!self.ca.is_empty()).then(|| Path::new(&self.ca))
    }
}

/// One saved login, an entry of `tokens.json`. Entries written before the account fields
/// existed read with them empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds when the access token expires.
    pub expiry: i64,
    /// The account's id and display name, from the access token's claims.
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub account_name: String,
}

impl Login {
    /// The JSON members of a [`Login`] entry; any other member is kept as unknown.
    const FIELDS: [&str; 5] = ["access_token", "refresh_token", "expiry", "account_id", "account_name"];

    /// Whether the access token expires within [`REFRESH_MARGIN_SECS`] of `now` (unix seconds).
    pub fn needs_refresh(&self, now: i64) -> bool {
        self.expiry - now < REFRESH_MARGIN_SECS
    }
}

/// `tokens.json`: logins by environment and namespace, plus whatever this version cannot read
/// as a login, which is written back untouched (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    logins: BTreeMap<String, Login>,
    /// Unknown members of a login's entry, by key, dropped when that login is replaced.
    unknown_members: BTreeMap<String, Members>,
    /// Entries that are not logins this version can read, by key.
    other: Members,
}

impl Tokens {
    /// The key of `env`'s login in `namespace`: `<env>/<namespace>`.
    pub fn key(env: &str, namespace: &str) -> String {
        format!("{env}/{namespace}")
    }

    pub fn get(&self, env: &str, namespace: &str) -> Option<&Login> {
        self.logins.get(&Self::key(env, namespace))
    }

    /// Saves `login` for `env`/`namespace`, replacing the whole entry there was.
    pub fn set(&mut self, env: &str, namespace: &str, login: Login) {
        let key = Self::key(env, namespace);
        self.unknown_members.remove(&key);
        self.other.remove(&key);
        self.logins.insert(key, login);
    }

    /// Forgets the entry for `env`/`namespace`, readable or not; true when there was one.
    pub fn remove(&mut self, env: &str, namespace: &str) -> bool {
        let key = Self::key(env, namespace);
        self.unknown_members.remove(&key);
        let login = self.logins.remove(&key).is_some();
        self.other.remove(&key).is_some() || login
    }

    /// Forgets every entry of `env` (when the environment is deleted); true when there was one.
    pub fn remove_env(&mut self, env: &str) -> bool {
        let prefix = Self::key(env, "");
        let before = self.logins.len() + self.other.len();
        self.logins.retain(|key, _| !key.starts_with(&prefix));
        self.unknown_members.retain(|key, _| !key.starts_with(&prefix));
        self.other.retain(|key, _| !key.starts_with(&prefix));
        self.logins.len() + self.other.len() != before
    }
}

impl Serialize for Tokens {
    /// One object sorted by key: logins with their unknown members after the known ones, and
    /// the other entries as read.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            login: &'a Login,
            #[serde(flatten)]
            unknown: Option<&'a Members>,
        }
        let keys: BTreeSet<&String> = self.logins.keys().chain(self.other.keys()).collect();
        let mut map = serializer.serialize_map(Some(keys.len()))?;
        for key in keys {
            if let Some(login) = self.logins.get(key) {
                map.serialize_entry(key, &Entry { login, unknown: self.unknown_members.get(key) })?;
            } else if let Some(value) = self.other.get(key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Tokens {
    /// Any JSON object: members that read as a [`Login`] are logins, the rest is kept aside.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut tokens = Tokens::default();
        for (key, value) in Members::deserialize(deserializer)? {
            // Only objects: derived structs would also accept a JSON array of the fields.
            let login = value.as_object().and_then(|_| Login::deserialize(&value).ok());
            match (login, value) {
                (Some(login), serde_json::Value::Object(members)) => {
                    let unknown: Members = members
                        .into_iter()
                        .filter(|(name, _)| !Login::FIELDS.contains(&name.as_str()))
                        .collect();
                    if !unknown.is_empty() {
                        tokens.unknown_members.insert(key.clone(), unknown);
                    }
                    tokens.logins.insert(key, login);
                }
                (_, value) => {
                    tokens.other.insert(key, value);
                }
            }
        }
        Ok(tokens)
    }
}

/// Reads a `config.json` at `path`; missing is empty, unreadable or corrupt is an error.
pub fn read_config(path: &Path) -> Result<Config, Error> {
    read(path)
}

/// Replaces `path` with `config`, atomically, readable by its owner only.
pub fn write_config(path: &Path, config: &Config) -> Result<(), Error> {
    write(path, config)
}

/// Reads a `tokens.json` at `path`; missing is empty, unreadable or corrupt is an error.
pub fn read_tokens(path: &Path) -> Result<Tokens, Error> {
    read(path)
}

/// Replaces `path` with `tokens`, atomically, readable by its owner only.
pub fn write_tokens(path: &Path, tokens: &Tokens) -> Result<(), Error> {
    write(path, tokens)
}

/// Waits for and takes the lock of the tokens file at `path` (an advisory lock on
/// `<path>.lock`, released when the returned file is dropped or the process dies). Whoever
/// refreshes a saved login holds it from reading the login to saving the new one: a refresh
/// token is used up by its refresh, so two processes refreshing the same login at once would
/// leave one of them with a token the server refuses.
pub fn lock_tokens(path: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let lock = path.with_file_name(format!(
        "{}.lock",
        path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let unwritable = |source| Error::Unwritable { path: lock.clone(), source };
    if let Some(parent) = lock.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(unwritable)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(home::PRIVATE_FILE_MODE)
        .open(&lock)
        .map_err(unwritable)?;
    file.lock().map_err(unwritable)?;
    Ok(file)
}

fn read<T: DeserializeOwned + Default>(path: &Path) -> Result<T, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => return Err(Error::Unreadable { path: path.to_path_buf(), source }),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|source| Error::Corrupt { path: path.to_path_buf(), source })
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let mut json =
        serde_json::to_vec_pretty(value).expect("CLI files always serialise: string keys, JSON values");
    json.push(b'\n');
    home::write_private(path, &json).map_err(|source| Error::Unwritable { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn login(token: &str) -> Login {
        Login {
            access_token: token.into(),
            refresh_token: format!("{token}-refresh"),
            expiry: 100,
            account_id: "id1".into(),
            account_name: "bob".into(),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn config_round_trips_with_defaults_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_path(dir.path());
        let empty = read_config(&path).unwrap();
        assert_eq!(empty, Config::default(), "a missing file is empty");
        assert_eq!((empty.selected(), empty.namespace("local").as_str()), (LOCAL_ENV, "micro"));
        assert_eq!(empty.envs(), [Env::local()]);
        assert_eq!(empty.env(LOCAL_ENV).unwrap().proxy_address, LOCAL_ADDRESS);

        std::fs::write(
            &path,
            r#"{"env":"prod","future":{"x":1},
                "envs":{"prod":{"name":"prod","proxy_address":"h.example.com"},
                        "dev":{"name":"dev","proxy_address":"10.0.0.1:8443","tls":true,"ca":"/ca.pem"},
                        "none":{"name":"none","tls":true}},
                "namespaces":{"prod":"foo"}}"#,
        )
        .unwrap();
        let mut config = read_config(&path).unwrap();
        assert_eq!((config.selected(), config.namespace("prod").as_str()), ("prod", "foo"));
        let env = |name: &str| config.env(name).unwrap();
        assert!(env("prod").uses_tls(), "a bare host is port 443");
        assert!(env("dev").uses_tls() && env("dev").ca_path() == Some(Path::new("/ca.pem")));
        assert!(!env("none").uses_tls(), "no address, nothing to reach");
        assert!(!env(LOCAL_ENV).uses_tls());
        assert_eq!(env("prod").description, "", "missing fields default");

        config.namespaces.insert("dev".into(), "bar".into());
        write_config(&path, &config).unwrap();
        assert_eq!(mode(&path), 0o600);
        let again = read_config(&path).unwrap();
        assert_eq!(again, config);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["future"]["x"], 1, "unknown keys are kept");
        assert_eq!(json["envs"]["prod"].get("tls"), None, "false and empty are left out");
        assert_eq!(json["envs"]["prod"]["description"], "");
        assert_eq!(Config::MANAGED_KEYS.map(|key| json.get(key).is_some()), [true; 3]);
    }

    #[test]
    fn tokens_round_trip_and_keep_what_they_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = tokens_path(dir.path());
        let mut tokens = read_tokens(&path).unwrap();
        assert_eq!(tokens, Tokens::default());
        tokens.set("local", "micro", login("a"));
        write_tokens(&path, &tokens).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_tokens(&path).unwrap(), tokens);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \"local/micro\": {\n    \"access_token\": \"a\",\n    \"refresh_token\""),
            "pretty, in the struct's order: {text}"
        );
        let members: Vec<String> =
            serde_json::to_value(login("a")).unwrap().as_object().unwrap().keys().cloned().collect();
        assert_eq!(BTreeSet::from_iter(members), BTreeSet::from(Login::FIELDS.map(String::from)));

        // Written by an older CLI (no account), a newer one (an extra member), or something else.
        std::fs::write(
            &path,
            r#"{"old/micro":{"access_token":"o","refresh_token":"r","expiry":5},
                "new/micro":{"access_token":"n","refresh_token":"r","expiry":5,"account_id":"i",
                             "account_name":"n","scopes":["admin"]},
                "odd/micro":{"token":"t"},
                "arr/micro":["a","r",1,"i","n"]}"#,
        )
        .unwrap();
        let mut tokens = read_tokens(&path).unwrap();
        let old = tokens.get("old", "micro").unwrap();
        assert_eq!((old.account_id.as_str(), old.expiry), ("", 5), "missing account fields default");
        assert!(old.needs_refresh(0) && !login("a").needs_refresh(39) && login("a").needs_refresh(41));
        assert_eq!(tokens.get("new", "micro").unwrap().account_name, "n");
        assert_eq!((tokens.get("odd", "micro"), tokens.get("arr", "micro")), (None, None));
        tokens.set("local", "micro", login("b"));
        write_tokens(&path, &tokens).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["new/micro"]["scopes"][0], "admin", "unknown members of a login are kept");
        assert_eq!(json["odd/micro"]["token"], "t", "entries that are not logins are kept");
        assert_eq!(json["arr/micro"][2], 1);
        assert_eq!(json["local/micro"]["access_token"], "b");

        tokens.set("new", "micro", login("c"));
        assert!(tokens.remove("odd", "micro"), "an unreadable entry can be removed");
        assert!(!tokens.remove("odd", "micro"));
        assert!(tokens.remove_env("arr") && !tokens.remove_env("arr"));
        write_tokens(&path, &tokens).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["new/micro"].get("scopes"), None, "a replaced login starts afresh");
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["local/micro", "new/micro", "old/micro"]);
    }

    #[test]
    fn corrupt_files_are_errors_and_blank_ones_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = tokens_path(dir.path());
        for corrupt in ["not json", "[]", "{\"a\":", "null"] {
            std::fs::write(&path, corrupt).unwrap();
            let err = read_tokens(&path).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{corrupt:?}: {err}");
            assert!(err.to_string().contains("fix or remove it"), "{err}");
            assert!(matches!(read_config(&path), Err(Error::Corrupt { .. })), "{corrupt:?}");
        }
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(read_tokens(&path).unwrap(), Tokens::default());
        assert!(matches!(read_config(dir.path()), Err(Error::Unreadable { .. })), "a directory");
        let blocked = dir.path().join("file/tokens.json");
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(matches!(write_tokens(&blocked, &Tokens::default()), Err(Error::Unwritable { .. })));
    }
}
