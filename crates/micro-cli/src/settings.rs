//! The CLI's own settings: `$MICRO_HOME/config.json` (or `-c FILE`), holding the selected
//! environment, user-added environments, the namespace chosen per environment and user settings.
//! The file's format, its defaults and the rule for a file that cannot be read live in
//! [`micro_core::cli_files`], shared with the `micro` framework; this module is what the CLI's
//! commands may change in it.
//!
//! The built-in `local` environment is always present and cannot be changed or removed. Writes
//! go to a temporary file renamed over the old one, so an interrupted command never leaves half a
//! file.

use std::path::{Path, PathBuf};

use micro_core::cli_files::{self, Config};
pub use micro_core::cli_files::{Env, LOCAL_ENV};

use crate::error::{CliError, Result};

/// Longest environment name accepted by `micro env add`.
pub const MAX_ENV_NAME_BYTES: usize = 64;

/// How `micro env add` connects to an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    /// `--tls`: use TLS even though the port is not 443.
    pub tls: bool,
    /// `--ca FILE`: trust this CA as well (implies TLS).
    pub ca: Option<PathBuf>,
}

/// The loaded settings file.
#[derive(Debug)]
pub struct Settings {
    path: PathBuf,
    file: Config,
}

impl Settings {
    /// The default location: `$MICRO_HOME/config.json`.
    pub fn default_path() -> PathBuf {
        cli_files::config_path(&micro_core::home::dir())
    }

    /// Loads `path`; a missing file is an empty configuration, one that cannot be read or
    /// parsed an error (and is left as it is).
    pub fn load(path: &Path) -> Result<Self> {
        let file = cli_files::read_config(path).map_err(|err| CliError::new(err.to_string()))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Every environment, built-ins included, sorted by name.
    pub fn envs(&self) -> Vec<Env> {
        self.file.envs()
    }

    pub fn env(&self, name: &str) -> Option<Env> {
        self.file.env(name)
    }

    /// The saved selection, `local` when none was made.
    pub fn selected(&self) -> &str {
        self.file.selected()
    }

    pub fn select(&mut self, name: &str) -> Result<()> {
        if self.env(name).is_none() {
            return Err(CliError::new(format!("Environment '{name}' does not exist")));
        }
        self.file.env = Some(name.to_string());
        self.save()
    }

    /// Adds `name` or re-points it at `address`, reached as `transport` says. A CA file must
    /// hold a PEM certificate; its absolute path is stored.
    pub fn add(&mut self, name: &str, address: &str, transport: &Transport) -> Result<()> {
        validate_env_name(name)?;
        if name == LOCAL_ENV {
            return Err(CliError::new(format!(
                "Environment '{LOCAL_ENV}' is built in and cannot be changed"
            )));
        }
        if !address.is_empty() {
            validate_address(address)?;
        }
        let ca = match &transport.ca {
            Some(ca) => {
                let absolute = std::path::absolute(ca).map_err(|err| {
                    CliError::new(format!("cannot read the CA file {}: {err}", ca.display()))
                })?;
                // Reading it now turns a typo into an error here rather than at every command.
                micro_core::tls::read_ca(&absolute).map_err(|err| CliError::new(err.to_string()))?;
                absolute.to_string_lossy().into_owned()
            }
            None => String::new(),
        };
        let tls = transport.tls || transport.ca.is_some() || micro_core::tls::default_tls(address);
        let env = Env {
            name: name.to_string(),
            proxy_address: address.to_string(),
            description: String::new(),
            tls: tls && !address.is_empty(),
            ca,
        };
        self.file.envs.insert(name.to_string(), env);
        self.save()
    }

    pub fn delete(&mut self, name: &str) -> Result<()> {
        if name == LOCAL_ENV {
            return Err(CliError::new(format!(
                "Environment '{LOCAL_ENV}' is built in and cannot be deleted"
            )));
        }
        if self.file.envs.remove(name).is_none() {
            return Err(CliError::new(format!("Environment '{name}' does not exist")));
        }
        if self.file.env.as_deref() == Some(name) {
            self.file.env = None;
        }
        self.file.namespaces.remove(name);
        self.save()
    }

    /// The namespace commands act in against `env`.
    pub fn namespace(&self, env: &str) -> String {
        self.file.namespace(env)
    }

    /// Makes `namespace` the one commands act in against `env`.
    pub fn set_namespace(&mut self, env: &str, namespace: &str) -> Result<()> {
        micro_core::validate_namespace(namespace).map_err(|err| CliError::new(err.to_string()))?;
        if namespace == micro_core::DEFAULT_NAMESPACE {
            self.file.namespaces.remove(env);
        } else {
            self.file.namespaces.insert(env.to_string(), namespace.to_string());
        }
        self.save()
    }

    /// A user setting at a dotted path (`git.credentials.github`), as set by [`Self::set_user`].
    pub fn user(&self, path: &str) -> Option<String> {
        let mut parts = path.split('.');
        let mut node = self.file.other.get(parts.next()?)?;
        for part in parts {
            node = node.get(part)?;
        }
        match node {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Sets a user setting at a dotted path; an empty value clears it.
    pub fn set_user(&mut self, path: &str, value: &str) -> Result<()> {
        let parts: Vec<&str> = path.split('.').collect();
        if parts.iter().any(|part| part.is_empty()) || parts.len() > 8 {
            return Err(CliError::new(format!(
                "invalid key {path:?}: use dotted names, e.g. git.credentials.github"
            )));
        }
        if Config::MANAGED_KEYS.contains(&parts[0]) {
            return Err(CliError::new(format!(
                "{:?} is managed by `micro env` and `micro user namespace`",
                parts[0]
            )));
        }
        let (last, parents) = parts.split_last().expect("split yields at least one part");
        let mut node = &mut self.file.other;
        for part in parents {
            let child = node.entry((*part).to_string()).or_insert_with(|| serde_json::json!({}));
            if !child.is_object() {
                *child = serde_json::json!({});
            }
            node = child.as_object_mut().expect("made an object above");
        }
        if value.is_empty() {
            node.remove(*last);
        } else {
            node.insert((*last).to_string(), serde_json::Value::String(value.to_string()));
        }
        self.save()
    }

    /// Writes the file readable by its owner only (it holds git credentials), atomically.
    fn save(&self) -> Result<()> {
        cli_files::write_config(&self.path, &self.file).map_err(|err| CliError::new(err.to_string()))
    }
}

fn validate_env_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENV_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "invalid environment name {name:?}: use 1-{MAX_ENV_NAME_BYTES} letters, digits, '-', '_' or '.'"
        )))
    }
}

/// An environment address is `host:port` (or a bare host, which means port 443).
fn validate_address(address: &str) -> Result<()> {
    let invalid =
        || CliError::new(format!("invalid address {address:?}: expected HOST:PORT, e.g. 127.0.0.1:8081"));
    if address.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(invalid());
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        Some(_) => Err(invalid()),
        None if !address.is_empty() => Ok(()),
        None => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envs_persist_and_local_is_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut settings = Settings::load(&path).unwrap();
        assert_eq!(settings.selected(), LOCAL_ENV);
        assert_eq!(settings.envs(), [Env::local()]);

        settings.add("staging", "10.0.0.1:8081", &Transport::default()).unwrap();
        settings.select("staging").unwrap();
        let mut settings = Settings::load(&path).unwrap();
        assert_eq!(settings.selected(), "staging");
        assert_eq!(settings.env("staging").unwrap().proxy_address, "10.0.0.1:8081");
        assert_eq!(settings.namespace("staging"), "micro");

        assert!(settings.delete(LOCAL_ENV).is_err());
        assert!(settings.add(LOCAL_ENV, "1.2.3.4:1", &Transport::default()).is_err());
        assert_eq!(settings.select("nope").unwrap_err().message, "Environment 'nope' does not exist");
        settings.delete("staging").unwrap();
        assert_eq!(Settings::load(&path).unwrap().selected(), LOCAL_ENV, "deleting the selection resets it");
    }

    #[test]
    fn bad_names_and_addresses_are_rejected_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut settings = Settings::load(&path).unwrap();
        for (name, address) in
            [("", "a:1"), ("a b", "a:1"), ("ok", "a:b"), ("ok", ":80"), ("ok", "http://x:1")]
        {
            assert!(settings.add(name, address, &Transport::default()).is_err(), "{name:?} {address:?}");
        }
        assert!(!path.exists());
        settings.add("ok", "", &Transport::default()).unwrap();
        settings.add("host", "proxy.example.com", &Transport::default()).unwrap();
    }

    #[test]
    fn port_443_or_tls_flags_make_an_env_use_tls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut settings = Settings::load(&path).unwrap();
        let plain = Transport::default();
        settings.add("prod", "proxy.example.com:443", &plain).unwrap();
        settings.add("bare", "proxy.example.com", &plain).unwrap();
        settings.add("dev", "10.0.0.1:8081", &plain).unwrap();
        settings.add("forced", "10.0.0.1:8443", &Transport { tls: true, ca: None }).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "no certificate here\n").unwrap();
        let err = settings.add("bad-ca", "10.0.0.1:8443", &Transport { tls: true, ca: Some(ca.clone()) });
        assert!(err.unwrap_err().message.contains("holds no PEM certificate"));
        let missing = Transport { tls: false, ca: Some(dir.path().join("missing.pem")) };
        assert!(settings.add("no-ca", "10.0.0.1:8443", &missing).unwrap_err().message.contains("CA file"));

        let settings = Settings::load(&path).unwrap();
        let uses_tls = |name: &str| settings.env(name).unwrap().uses_tls();
        assert!(uses_tls("prod") && uses_tls("bare") && uses_tls("forced"));
        assert!(!uses_tls("dev") && !uses_tls(LOCAL_ENV));
        assert!(settings.env("bad-ca").is_none(), "a failed add changes nothing");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["envs"]["prod"]["tls"], true, "stored in the env entry");
        assert_eq!(json["envs"]["dev"].get("tls"), None);

        // Entries written before TLS existed still use it on port 443.
        std::fs::write(&path, r#"{"envs":{"old":{"name":"old","proxy_address":"h.example.com:443"}}}"#)
            .unwrap();
        assert!(Settings::load(&path).unwrap().env("old").unwrap().uses_tls());
    }

    #[test]
    fn namespaces_and_user_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut settings = Settings::load(&path).unwrap();
        settings.set_namespace("local", "foo").unwrap();
        assert!(settings.set_namespace("local", "Bad!").is_err());
        settings.set_user("git.credentials.github", "tok").unwrap();
        let mut settings = Settings::load(&path).unwrap();
        assert_eq!(settings.namespace("local"), "foo");
        assert_eq!(settings.user("git.credentials.github").as_deref(), Some("tok"));
        assert!(settings.user("git.credentials").unwrap().contains("tok"));
        settings.set_user("git.credentials.github", "").unwrap();
        assert_eq!(settings.user("git.credentials.github"), None);
        assert!(settings.set_user("env", "x").is_err());
        assert!(settings.set_user("a..b", "x").is_err());
    }

    #[test]
    fn unknown_keys_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"env":"local","future":{"x":1}}"#).unwrap();
        Settings::load(&path).unwrap().add("x", "h:1", &Transport::default()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["future"]["x"], 1);
        assert!(Settings::load(&dir.path().join("missing.json")).is_ok());
        std::fs::write(&path, "not json").unwrap();
        assert!(Settings::load(&path).is_err());
    }

    /// What the CLI writes; crates/micro/src/login.rs reads the same text.
    const WRITTEN: &str = r#"{
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

    #[test]
    fn the_file_layout_is_stable_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut settings = Settings::load(&path).unwrap();
        settings.add("staging", "10.0.0.1:8081", &Transport::default()).unwrap();
        settings.add("prod", "proxy.example.com:443", &Transport::default()).unwrap();
        settings.select("staging").unwrap();
        settings.set_namespace("staging", "foo").unwrap();
        settings.set_user("git.baseurl", "github.com/x").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), WRITTEN);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::write(&path, "{\"env\":").unwrap();
        let err = Settings::load(&path).unwrap_err();
        assert!(
            err.message.starts_with("Cannot read ") && err.message.ends_with("fix or remove it"),
            "{err:?}"
        );
    }
}
