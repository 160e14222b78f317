//! The server's one typed config tree, layered defaults → `micro.toml` → `MICRO_*` env → flags
//! (docs/architecture.md, "Boot"), validated before anything binds.
//!
//! - [`Config`]: the tree, as `micro.toml` and `--dump-config` spell it.
//! - [`Overrides`]: every setting `micro server` takes from its command line or environment,
//!   each spelled once there: its flag and its `MICRO_*` variable, read by clap.
//! - [`Config::load`]: the layering, the one place an override becomes a field of the tree.
//!
//! `MICRO_HOME` (where state lives, [`micro_core::home::dir`]) and `MICRO_LOG` (the log filter)
//! are not settings of the tree: the CLI and services read them too, before any config exists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded; each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// Effective server configuration.
///
/// Each setting takes, in order of precedence: its flag (`--proxy-address`), else its
/// environment variable (`MICRO_PROXY_ADDRESS`), both read by clap into [`Overrides`]; else
/// `micro.toml` (`$MICRO_HOME/micro.toml`, or `--config FILE`); else the default below. An empty
/// value counts as not given. [`Secret`]s come from a flag or the environment only: `micro.toml`
/// cannot hold them and `--dump-config` never prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC address: core services and the proxy; what an environment points at.
    pub proxy_address: String,
    /// HTTP API gateway address.
    pub api_address: String,
    /// The web dashboard's address (docs/web.md); `off` serves none.
    pub web_address: String,
    /// With `example.com`, the gateway serves namespace `foo` at `foo.example.com`; empty: off.
    pub api_domain: String,
    /// How long in-flight requests get to finish after SIGINT/SIGTERM (Go duration).
    pub shutdown_grace: String,
    /// Origins (`https://app.example.com`) whose pages may call the HTTP gateway with
    /// credentials and read its answers; none by default (docs/security.md).
    pub cors_origins: Vec<String>,
    /// Host names the HTTP gateway answers on a loopback bind, beside loopback names, the bind
    /// address and `api_domain`; other `Host`s get 421 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    pub store: StoreConfig,
    pub events: EventsConfig,
    pub broker: BrokerConfig,
    pub registry: RegistryConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub runtime: RuntimeConfig,
    /// The key config secrets are sealed with (base64 of 32 bytes); unset: shared through a
    /// shared store, else `$MICRO_HOME/server/config_secret_key` ([`crate::backends::Secrets`]).
    #[serde(skip)]
    pub config_secret_key: Option<Secret>,
}

/// A secret setting (a signing key, a password). `Debug` shows `***` and the fields holding one
/// are `#[serde(skip)]`, so no log line, `--dump-config` or `micro.toml` carries it; `--help`
/// leaves its variable's value out (`hide_env_values`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// TLS for the gRPC listener and the HTTP API gateway: both PEM files, or neither (plain text).
/// The files are read and checked at boot, before anything binds ([`crate::tls::Tls::load`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert: String,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty()
    }
}

/// Auth settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Do not create the default `admin` account in namespace `micro`.
    pub disable_admin: bool,
    /// The password the default admin is created with; unset: `micro` while every listener is
    /// on loopback, else generated and logged once.
    #[serde(skip)]
    pub admin_password: Option<Secret>,
    /// The JWT signing key (a PKCS#8 PEM or the base64 of the 32-byte Ed25519 seed); unset:
    /// shared through a shared store, else `$MICRO_HOME/server/auth_key`.
    #[serde(skip)]
    pub key: Option<Secret>,
}

/// Settings of the local runtime (builds and service processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where the per-namespace cargo target dirs go (`<build_dir>/<namespace>`); empty:
    /// `$MICRO_HOME/build/targets`. The end-to-end tests share one to keep builds warm.
    pub build_dir: String,
    /// Where the framework's source is installed, which every build uses
    /// (`<sdk_dir>/<version>/crates/micro`); empty: `$MICRO_HOME/sdk`. The end-to-end tests
    /// share one, so its crates compile once.
    pub sdk_dir: String,
}

/// Which store backend holds store, config (and later auth) data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `file` (redb under `MICRO_HOME/server/store`), `memory`, or a `postgres://` URL.
    pub backend: String,
    /// How often expired records are swept (Go duration).
    pub sweep_interval: String,
}

/// Which backend holds the event streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// `file` (redb under `MICRO_HOME/server/events`), `memory`, or a `nats://` URL (JetStream).
    pub backend: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { backend: "file".into() }
    }
}

/// Which backend carries broker messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `memory` (this process only) or a `nats://` URL (shared by every server on it).
    pub backend: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self { backend: "memory".into() }
    }
}

/// Which backend holds the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `memory` (this server only) or a `nats://` URL (JetStream KV, shared by every server on it).
    pub backend: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { backend: "memory".into() }
    }
}

/// The `web_address` that serves no dashboard.
pub const WEB_OFF: &str = "off";

/// A NATS URL (`nats://` or `tls://`, comma-separated for a cluster)?
pub fn is_nats_url(value: &str) -> bool {
    value.starts_with("nats://") || value.starts_with("tls://")
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proxy_address: "127.0.0.1:8081".into(),
            api_address: "127.0.0.1:8080".into(),
            web_address: "127.0.0.1:8082".into(),
            api_domain: String::new(),
            shutdown_grace: "10s".into(),
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            store: StoreConfig::default(),
            events: EventsConfig::default(),
            broker: BrokerConfig::default(),
            registry: RegistryConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            runtime: RuntimeConfig::default(),
            config_secret_key: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { backend: "file".into(), sweep_interval: "30s".into() }
    }
}

/// A switch given as `--disable-admin`, `--disable-admin=false` or its variable; `None` inside
/// is an empty variable, which leaves the lower layers in force like any empty setting.
pub type Switch = Option<bool>;

/// Every setting `micro server` takes from its command line or environment, each spelled once
/// here: its flag and its `MICRO_*` variable. clap gives the flag precedence over the variable;
/// `None`, an empty value or an empty list leaves `micro.toml` and the defaults in force
/// ([`Config::load`]). The defaults in the help text are [`Config::default`]'s, not clap
/// defaults, which would hide the file's values.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Overrides {
    /// gRPC address for core services and the proxy [default: 127.0.0.1:8081]
    #[arg(long, env = "MICRO_PROXY_ADDRESS", value_name = "HOST:PORT")]
    pub proxy_address: Option<String>,
    /// HTTP API gateway address [default: 127.0.0.1:8080]
    #[arg(long, env = "MICRO_API_ADDRESS", value_name = "HOST:PORT")]
    pub api_address: Option<String>,
    /// Web dashboard address, or `off` [default: 127.0.0.1:8082]
    #[arg(long, env = "MICRO_WEB_ADDRESS", value_name = "HOST:PORT|off")]
    pub web_address: Option<String>,
    /// Serve namespace NAME at NAME.DOMAIN on the API gateway
    #[arg(long, env = "MICRO_API_DOMAIN", value_name = "DOMAIN")]
    pub api_domain: Option<String>,
    // A backend URL may carry a password: `--help` leaves the variables' values out.
    /// Store backend: file, memory or a postgres:// URL [default: file]
    #[arg(long, env = "MICRO_STORE", value_name = "BACKEND", hide_env_values = true)]
    pub store: Option<String>,
    /// Events backend: file, memory or a nats:// URL (JetStream) [default: file]
    #[arg(long, env = "MICRO_EVENTS", value_name = "BACKEND", hide_env_values = true)]
    pub events: Option<String>,
    /// Broker backend: memory or a nats:// URL [default: memory]
    #[arg(long, env = "MICRO_BROKER", value_name = "BACKEND", hide_env_values = true)]
    pub broker: Option<String>,
    /// Registry backend: memory or a nats:// URL (JetStream KV) [default: memory]
    #[arg(long, env = "MICRO_REGISTRY", value_name = "BACKEND", hide_env_values = true)]
    pub registry: Option<String>,
    /// Serve TLS on the gRPC and HTTP listeners with this PEM certificate chain (and --tls-key)
    #[arg(long, env = "MICRO_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "MICRO_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Do not create the default admin account
    #[arg(
        long,
        env = "MICRO_AUTH_DISABLE_ADMIN",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_switch,
    )]
    pub disable_admin: Option<Switch>,
    /// Let pages of this origin (https://app.example.com) call the HTTP gateway with
    /// credentials; repeatable or comma-separated [default: none]
    #[arg(long = "cors-origin", env = "MICRO_CORS_ORIGINS", value_name = "ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Answer HTTP requests for this host name on a loopback bind (others get 421); repeatable
    /// or comma-separated
    #[arg(long = "allowed-host", env = "MICRO_ALLOWED_HOSTS", value_name = "NAME", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    // Secrets: a command line is visible to every user of the machine, the environment is not.
    /// The password the default admin is created with; prefer the variable [default: micro
    /// while every listener is on loopback, else generated and logged once]
    #[arg(long, env = "MICRO_AUTH_ADMIN_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,
    /// The JWT signing key, a PKCS#8 PEM or the base64 of a 32-byte Ed25519 seed; prefer the
    /// variable [default: $MICRO_HOME/server/auth_key, or shared through a PostgreSQL store]
    #[arg(long, env = "MICRO_AUTH_KEY", value_name = "KEY", hide_env_values = true)]
    pub auth_key: Option<Secret>,
    /// The key sealing config secrets, the base64 of 32 bytes; prefer the variable [default:
    /// $MICRO_HOME/server/config_secret_key, or shared through a PostgreSQL store]
    #[arg(long, env = "MICRO_CONFIG_SECRET_KEY", value_name = "KEY", hide_env_values = true)]
    pub config_secret_key: Option<Secret>,
    /// Where the per-namespace cargo target dirs go [default: $MICRO_HOME/build/targets]
    #[arg(long, env = "MICRO_BUILD_DIR", value_name = "DIR")]
    pub build_dir: Option<String>,
    /// Where the framework's source every build uses is installed [default: $MICRO_HOME/sdk]
    #[arg(long, env = "MICRO_SDK_DIR", value_name = "DIR")]
    pub sdk_dir: Option<String>,
}

impl Config {
    /// Builds the effective config for `home`: defaults, then `file` (or `home/micro.toml` when it
    /// exists), then `overrides` (flags over their `MICRO_*` variables, as clap resolved them).
    /// An explicitly named file must exist; the default one is optional.
    pub fn load(home: &Path, file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let default_file = home.join("micro.toml");
        let (path, required) = match file {
            Some(path) => (path.to_path_buf(), true),
            None => (default_file, false),
        };
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<Config>(&text).map_err(|err| ConfigError::Parse {
                path: path.clone(),
                message: err.message().to_string(),
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => Config::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };

        let given = overrides;
        let layer = |target: &mut String, value: &Option<String>| {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                value.clone_into(target);
            }
        };
        layer(&mut config.proxy_address, &given.proxy_address);
        layer(&mut config.api_address, &given.api_address);
        layer(&mut config.web_address, &given.web_address);
        layer(&mut config.api_domain, &given.api_domain);
        layer(&mut config.store.backend, &given.store);
        layer(&mut config.events.backend, &given.events);
        layer(&mut config.broker.backend, &given.broker);
        layer(&mut config.registry.backend, &given.registry);
        layer(&mut config.tls.cert, &given.tls_cert);
        layer(&mut config.tls.key, &given.tls_key);
        layer(&mut config.runtime.build_dir, &given.build_dir);
        layer(&mut config.runtime.sdk_dir, &given.sdk_dir);
        // A given list replaces the file's (`a, b` in a variable: items are trimmed).
        let list = |target: &mut Vec<String>, values: &[String]| {
            let items: Vec<String> =
                values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string).collect();
            if !items.is_empty() {
                *target = items;
            }
        };
        list(&mut config.cors_origins, &given.cors_origins);
        list(&mut config.allowed_hosts, &given.allowed_hosts);
        for host in &mut config.allowed_hosts {
            *host = host.trim_end_matches('.').to_ascii_lowercase();
        }
        if let Some(Some(disable)) = given.disable_admin {
            config.auth.disable_admin = disable;
        }
        let secret = |value: &Option<Secret>| value.clone().filter(|secret| !secret.0.is_empty());
        config.auth.admin_password = secret(&given.admin_password);
        config.auth.key = secret(&given.auth_key);
        config.config_secret_key = secret(&given.config_secret_key);

        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_address("proxy_address", &self.proxy_address)?;
        validate_address("api_address", &self.api_address)?;
        if let Some(web) = self.web() {
            validate_address("web_address", web)?;
        }
        validate_domain("api_domain", &self.api_domain)?;
        for origin in &self.cors_origins {
            crate::gateway::browser::validate_origin(origin)
                .map_err(|message| ConfigError::Invalid { field: "cors_origins", message })?;
        }
        for host in &self.allowed_hosts {
            if host.is_empty() {
                return Err(ConfigError::Invalid {
                    field: "allowed_hosts",
                    message: "a host name is empty".into(),
                });
            }
            validate_domain("allowed_hosts", host)?;
        }
        self.grace()?;
        self.sweep_interval()?;
        match (self.tls.cert.is_empty(), self.tls.key.is_empty()) {
            (false, true) => {
                return Err(ConfigError::Invalid {
                    field: "tls.key",
                    message: "a TLS certificate is set but no key: give both --tls-cert and --tls-key".into(),
                });
            }
            (true, false) => {
                return Err(ConfigError::Invalid {
                    field: "tls.cert",
                    message: "a TLS key is set but no certificate: give both --tls-cert and --tls-key".into(),
                });
            }
            _ => {}
        }
        match self.events.backend.as_str() {
            "file" | "memory" => {}
            url if is_nats_url(url) => {}
            other => {
                return Err(ConfigError::Invalid {
                    field: "events.backend",
                    message: format!("{other:?} is not an events backend: use file, memory or a nats:// URL"),
                });
            }
        }
        match self.broker.backend.as_str() {
            "memory" => {}
            url if is_nats_url(url) => {}
            other => {
                return Err(ConfigError::Invalid {
                    field: "broker.backend",
                    message: format!("{other:?} is not a broker backend: use memory or a nats:// URL"),
                });
            }
        }
        match self.registry.backend.as_str() {
            "memory" => {}
            url if is_nats_url(url) => {}
            other => {
                return Err(ConfigError::Invalid {
                    field: "registry.backend",
                    message: format!("{other:?} is not a registry backend: use memory or a nats:// URL"),
                });
            }
        }
        match self.store.backend.as_str() {
            "file" | "memory" => Ok(()),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(()),
            other => Err(ConfigError::Invalid {
                field: "store.backend",
                message: format!("{other:?} is not a store backend: use file, memory or a postgres:// URL"),
            }),
        }
    }

    /// The web dashboard's address; `None` when `web_address` is `off`.
    pub fn web(&self) -> Option<&str> {
        Some(self.web_address.as_str()).filter(|address| !address.eq_ignore_ascii_case(WEB_OFF))
    }

    /// The shutdown grace period.
    pub fn grace(&self) -> Result<Duration, ConfigError> {
        parse_duration("shutdown_grace", &self.shutdown_grace)
    }

    /// The interval of the store's expiry sweeper; never zero.
    pub fn sweep_interval(&self) -> Result<Duration, ConfigError> {
        let interval = parse_duration("store.sweep_interval", &self.store.sweep_interval)?;
        if interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "store.sweep_interval",
                message: "must be above zero".into(),
            });
        }
        Ok(interval)
    }

    /// The effective config as TOML, for `micro server --dump-config`: passwords in backend URLs
    /// show as `***` (`postgres://micro:***@db/micro`) and [`Secret`]s are left out, so the dump
    /// can be pasted anywhere.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for url in [
            &mut shown.store.backend,
            &mut shown.events.backend,
            &mut shown.broker.backend,
            &mut shown.registry.backend,
        ] {
            *url = redact_url(url);
        }
        toml::to_string_pretty(&shown).expect("the config tree only holds strings, which always serialise")
    }
}

/// `scheme://user:password@host/…` → `scheme://user:***@host/…` (and a NATS token,
/// `nats://token@host`, → `nats://***@host`), for each comma-separated URL (a NATS cluster);
/// anything without a secret is returned as it is.
pub fn redact_url(value: &str) -> String {
    let redact_one = |url: &str| -> String {
        let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
        match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            // NATS takes a bare token as the user part.
            None if is_nats_url(url) => format!("{scheme}://***@{host}{tail}"),
            None => url.to_string(),
        }
    };
    value.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

/// `--disable-admin[=BOOL]` and `MICRO_AUTH_DISABLE_ADMIN`: `1`, `true`, `yes`, `on` or `0`,
/// `false`, `no`, `off`; empty is "not given".
fn parse_switch(value: &str) -> Result<Switch, String> {
    match value.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" => Ok(Some(false)),
        _ => Err(format!("{value:?} is not a boolean: use true or false")),
    }
}

fn parse_duration(field: &'static str, value: &str) -> Result<Duration, ConfigError> {
    micro_core::duration::parse(value).map_err(|err| ConfigError::Invalid { field, message: err.to_string() })
}

/// A DNS name: dot-separated labels of letters, digits and `-`; empty means unset.
fn validate_domain(field: &'static str, value: &str) -> Result<(), ConfigError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.is_empty() || (value.len() <= 253 && value.split('.').all(label_ok)) {
        return Ok(());
    }
    Err(ConfigError::Invalid { field, message: format!("{value:?} is not a domain name, e.g. example.com") })
}

fn validate_address(field: &'static str, value: &str) -> Result<(), ConfigError> {
    let invalid = |message: &str| ConfigError::Invalid { field, message: format!("{value:?} {message}") };
    let (host, port) =
        value.rsplit_once(':').ok_or_else(|| invalid("must be HOST:PORT, e.g. 127.0.0.1:8081"))?;
    if host.is_empty() {
        return Err(invalid("has no host: use 0.0.0.0:PORT to listen on every interface"));
    }
    port.parse::<u16>().map_err(|_| invalid("has no valid port (0-65535)"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_and_overrides_in_order() {
        let home = tempfile::tempdir().unwrap();
        let defaults = Config::load(home.path(), None, &Overrides::default()).unwrap();
        assert_eq!(defaults, Config::default());

        std::fs::write(
            home.path().join("micro.toml"),
            "proxy_address = \"127.0.0.1:9001\"\napi_address = \"127.0.0.1:9002\"\n[store]\nbackend = \"memory\"\n",
        )
        .unwrap();
        let from_file = Config::load(home.path(), None, &Overrides::default()).unwrap();
        assert_eq!(
            (from_file.events.backend.as_str(), from_file.broker.backend.as_str()),
            ("file", "memory")
        );
        assert_eq!(from_file.proxy_address, "127.0.0.1:9001");
        assert_eq!(from_file.store.backend, "memory");
        assert_eq!(from_file.store.sweep_interval, "30s", "unset keys keep their defaults");

        let overrides = Overrides {
            proxy_address: Some("127.0.0.1:9201".into()),
            api_address: Some(String::new()),
            api_domain: Some("flag.example".into()),
            events: Some("memory".into()),
            broker: Some("tls://nats.example:4222".into()),
            registry: Some("memory".into()),
            tls_cert: Some("flag-cert.pem".into()),
            tls_key: Some("flag-key.pem".into()),
            cors_origins: vec!["https://a.example".into(), " http://localhost:3000".into()],
            allowed_hosts: vec!["Micro.Lan.".into(), String::new()],
            build_dir: Some("/tmp/targets".into()),
            sdk_dir: Some("/tmp/sdk".into()),
            ..Default::default()
        };
        let overridden = Config::load(home.path(), None, &overrides).unwrap();
        assert_eq!(overridden.proxy_address, "127.0.0.1:9201");
        assert_eq!(overridden.api_address, "127.0.0.1:9002", "an empty value leaves the file's");
        assert_eq!(overridden.api_domain, "flag.example");
        assert_eq!(overridden.store.backend, "memory");
        assert_eq!(overridden.events.backend, "memory");
        assert_eq!(overridden.broker.backend, "tls://nats.example:4222");
        assert_eq!(overridden.registry.backend, "memory");
        assert_eq!(
            (overridden.tls.cert.as_str(), overridden.tls.key.as_str()),
            ("flag-cert.pem", "flag-key.pem")
        );
        assert!(overridden.tls.enabled());
        assert_eq!(overridden.cors_origins, ["https://a.example", "http://localhost:3000"]);
        assert_eq!(overridden.allowed_hosts, ["micro.lan"]);
        assert_eq!(overridden.runtime.build_dir, "/tmp/targets");
        assert_eq!(overridden.runtime.sdk_dir, "/tmp/sdk");

        let dumped = overridden.to_toml();
        let reparsed: Config = toml::from_str(&dumped).unwrap();
        assert_eq!(reparsed, overridden, "--dump-config output is itself a valid micro.toml");

        let secret = Overrides {
            store: Some("postgres://micro:hunter2@db.example:5432/micro?sslmode=disable".into()),
            events: Some("nats://u:p%40ss@n1:4222,nats://u:p@n2:4222".into()),
            admin_password: Some(Secret::from("admin-hunter2".to_string())),
            auth_key: Some(Secret::from("key-hunter2".to_string())),
            config_secret_key: Some(Secret::from("sealing-hunter2".to_string())),
            ..Default::default()
        };
        let config = Config::load(home.path(), None, &secret).unwrap();
        assert_eq!(config.auth.admin_password.as_ref().map(Secret::expose), Some("admin-hunter2"));
        assert_eq!(config.auth.key.as_ref().map(Secret::expose), Some("key-hunter2"));
        assert_eq!(config.config_secret_key.as_ref().map(Secret::expose), Some("sealing-hunter2"));
        let dumped = config.to_toml();
        assert!(dumped.contains("postgres://micro:***@db.example:5432/micro?sslmode=disable"), "{dumped}");
        assert!(dumped.contains("nats://u:***@n1:4222,nats://u:***@n2:4222"), "{dumped}");
        assert!(!dumped.contains("hunter2") && !dumped.contains("p%40ss"), "{dumped}");
        let debug = format!("{config:?}");
        assert!(debug.contains("Secret(***)"), "{debug}");
        for secret in ["admin-hunter2", "key-hunter2", "sealing-hunter2"] {
            assert!(!debug.contains(secret), "Debug hides secrets too: {debug}");
        }
        assert_eq!(
            redact_url("nats://token@host:4222"),
            "nats://***@host:4222",
            "no password, nothing hidden"
        );
        assert_eq!(redact_url("file"), "file");
        std::fs::write(home.path().join("micro.toml"), "[auth]\nkey = \"in the file\"\n").unwrap();
        let err = Config::load(home.path(), None, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unknown field `key`"), "secrets have no place in the file: {err}");
    }

    /// Every variable, each overriding the file, each overridden by its flag; secrets never
    /// shown by `--help`.
    #[test]
    fn env_overrides_the_file_and_flags_override_env() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("micro.toml"),
            r#"
proxy_address = "127.0.0.1:9001"
api_address = "127.0.0.1:9002"
api_domain = "file.example"
cors_origins = ["https://file.example"]
allowed_hosts = ["file.lan"]
[store]
backend = "memory"
[events]
backend = "memory"
[auth]
disable_admin = true
[tls]
cert = "file-cert.pem"
key = "file-key.pem"
[runtime]
build_dir = "/file/targets"
sdk_dir = "/file/sdk"
"#,
        )
        .unwrap();
        let vars = [
            ("MICRO_PROXY_ADDRESS", "127.0.0.1:9101"),
            ("MICRO_API_ADDRESS", "127.0.0.1:9102"),
            ("MICRO_API_DOMAIN", "env.example"),
            ("MICRO_STORE", "postgres://micro:hunter2@db.example/micro"),
            ("MICRO_EVENTS", "nats://127.0.0.1:4222"),
            ("MICRO_BROKER", "nats://127.0.0.1:4222"),
            ("MICRO_REGISTRY", "nats://127.0.0.1:4222"),
            ("MICRO_TLS_CERT", "env-cert.pem"),
            ("MICRO_TLS_KEY", "env-key.pem"),
            ("MICRO_CORS_ORIGINS", "https://a.example, http://localhost:3000"),
            ("MICRO_ALLOWED_HOSTS", "Micro.Lan.,other.lan"),
            ("MICRO_AUTH_DISABLE_ADMIN", "false"),
            ("MICRO_AUTH_ADMIN_PASSWORD", "env-admin-password"),
            ("MICRO_AUTH_KEY", "env-auth-key"),
            ("MICRO_CONFIG_SECRET_KEY", "env-config-key"),
            ("MICRO_BUILD_DIR", "/env/targets"),
            ("MICRO_SDK_DIR", "/env/sdk"),
        ];
        let from_env = load_in_child(home.path(), &vars, &[]);
        let config = from_env.config.unwrap();
        assert_eq!(config.proxy_address, "127.0.0.1:9101");
        assert_eq!(config.api_address, "127.0.0.1:9102");
        assert_eq!(config.api_domain, "env.example");
        assert_eq!(config.store.backend, "postgres://micro:hunter2@db.example/micro");
        assert_eq!(config.events.backend, "nats://127.0.0.1:4222");
        assert_eq!(config.broker.backend, "nats://127.0.0.1:4222");
        assert_eq!(config.registry.backend, "nats://127.0.0.1:4222");
        assert_eq!((config.tls.cert.as_str(), config.tls.key.as_str()), ("env-cert.pem", "env-key.pem"));
        assert_eq!(config.cors_origins, ["https://a.example", "http://localhost:3000"]);
        assert_eq!(config.allowed_hosts, ["micro.lan", "other.lan"]);
        assert!(!config.auth.disable_admin, "false in the environment beats true in the file");
        assert_eq!(config.runtime.build_dir, "/env/targets");
        assert_eq!(config.runtime.sdk_dir, "/env/sdk");
        assert_eq!(
            from_env.secrets.each_ref().map(Option::as_deref),
            [Some("env-admin-password"), Some("env-auth-key"), Some("env-config-key")]
        );
        let help = from_env.help;
        assert!(help.contains("[env: MICRO_PROXY_ADDRESS=127.0.0.1:9101]"), "{help}");
        for (name, _) in &vars {
            assert!(help.contains(&format!("[env: {name}")), "{name} missing from --help: {help}");
        }
        for hidden in ["hunter2", "env-admin-password", "env-auth-key", "env-config-key", "4222"] {
            assert!(!help.contains(hidden), "--help shows {hidden}: {help}");
        }

        let flags = [
            "--proxy-address=127.0.0.1:9201",
            "--api-address=127.0.0.1:9202",
            "--api-domain=flag.example",
            "--store=file",
            "--events=file",
            "--broker=memory",
            "--registry=memory",
            "--tls-cert=flag-cert.pem",
            "--tls-key=flag-key.pem",
            "--cors-origin=https://b.example",
            "--allowed-host=flag.lan",
            "--disable-admin",
            "--admin-password=flag-admin-password",
            "--auth-key=flag-auth-key",
            "--config-secret-key=flag-config-key",
            "--build-dir=/flag/targets",
            "--sdk-dir=/flag/sdk",
        ];
        let from_flags = load_in_child(home.path(), &vars, &flags);
        let config = from_flags.config.unwrap();
        assert_eq!(config.proxy_address, "127.0.0.1:9201");
        assert_eq!(config.api_address, "127.0.0.1:9202");
        assert_eq!(config.api_domain, "flag.example");
        assert_eq!(config.store.backend, "file");
        assert_eq!(config.events.backend, "file");
        assert_eq!(config.broker.backend, "memory");
        assert_eq!(config.registry.backend, "memory");
        assert_eq!((config.tls.cert.as_str(), config.tls.key.as_str()), ("flag-cert.pem", "flag-key.pem"));
        assert_eq!(config.cors_origins, ["https://b.example"], "a flag replaces the variable's list");
        assert_eq!(config.allowed_hosts, ["flag.lan"]);
        assert!(config.auth.disable_admin);
        assert_eq!(config.runtime.build_dir, "/flag/targets");
        assert_eq!(config.runtime.sdk_dir, "/flag/sdk");
        assert_eq!(
            from_flags.secrets.each_ref().map(Option::as_deref),
            [Some("flag-admin-password"), Some("flag-auth-key"), Some("flag-config-key")]
        );

        let empty = [("MICRO_API_DOMAIN", ""), ("MICRO_AUTH_DISABLE_ADMIN", ""), ("MICRO_CORS_ORIGINS", "")];
        let config = load_in_child(home.path(), &empty, &["--disable-admin=no"]).config.unwrap();
        assert_eq!(config.api_domain, "file.example", "an empty variable leaves the file's value");
        assert_eq!(config.cors_origins, ["https://file.example"]);
        assert!(!config.auth.disable_admin, "--disable-admin=no");
        let err =
            load_in_child(home.path(), &[("MICRO_AUTH_DISABLE_ADMIN", "maybe")], &[]).config.unwrap_err();
        assert!(err.contains("--disable-admin") && err.contains("not a boolean"), "{err}");
    }

    /// What [`child_loads_config`] reports: the config or the error, the secrets (which the
    /// config's serialisation leaves out) and the rendered `micro server --help`.
    #[derive(Serialize, Deserialize)]
    struct Loaded {
        config: Result<Config, String>,
        secrets: [Option<String>; 3],
        help: String,
    }

    const CHILD_ARGS: &str = "CONFIG_TESTS_CHILD_ARGS";
    const CHILD_HOME: &str = "CONFIG_TESTS_CHILD_HOME";

    /// What `micro server args…` loads with `vars` as its `MICRO_*` environment. clap reads the
    /// process environment, which a test must not change (other tests run in the same process,
    /// and `set_var` is unsafe), so this runs this test binary again, with `vars` and only
    /// [`child_loads_config`], and reads back what that wrote.
    fn load_in_child(home: &Path, vars: &[(&str, &str)], args: &[&str]) -> Loaded {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MICRO_") {
                child.env_remove(key);
            }
        }
        let status = child
            .args(["config::tests::child_loads_config", "--exact", "--ignored", "--quiet"])
            .env(CHILD_ARGS, serde_json::to_string(args).unwrap())
            .env(CHILD_HOME, home)
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the child test failed: {status}");
        let loaded = std::fs::read(home.join("loaded.json")).unwrap();
        std::fs::remove_file(home.join("loaded.json")).unwrap();
        serde_json::from_slice(&loaded).unwrap()
    }

    /// The child half of [`load_in_child`]: parses the arguments as `micro server` does and
    /// writes what it loaded to `loaded.json` in the home. Does nothing when run otherwise.
    #[test]
    #[ignore = "run by load_in_child, in a process with its own environment"]
    fn child_loads_config() {
        use clap::{CommandFactory as _, Parser as _};
        #[derive(clap::Parser)]
        #[command(name = "micro server")]
        struct Server {
            #[command(flatten)]
            args: crate::Args,
        }
        let (Some(args), Some(home)) = (std::env::var_os(CHILD_ARGS), std::env::var_os(CHILD_HOME)) else {
            return;
        };
        let args: Vec<String> = serde_json::from_str(args.to_str().unwrap()).unwrap();
        let home = PathBuf::from(home);
        let config = Server::try_parse_from(std::iter::once("micro-server".to_string()).chain(args))
            .map_err(|err| err.to_string())
            .and_then(|server| {
                let args = server.args;
                Config::load(&home, args.config_file.as_deref(), &args.settings)
                    .map_err(|err| err.to_string())
            });
        let expose = |secret: &Option<Secret>| secret.as_ref().map(|secret| secret.expose().to_string());
        let secrets = match &config {
            Ok(config) => [
                expose(&config.auth.admin_password),
                expose(&config.auth.key),
                expose(&config.config_secret_key),
            ],
            Err(_) => Default::default(),
        };
        let help = Server::command().render_long_help().to_string();
        let loaded = Loaded { config, secrets, help };
        std::fs::write(home.join("loaded.json"), serde_json::to_vec(&loaded).unwrap()).unwrap();
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        let home = tempfile::tempdir().unwrap();
        let load = |flags: Overrides| Config::load(home.path(), None, &flags);
        let err = load(Overrides { proxy_address: Some("8081".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
        let err = load(Overrides { api_address: Some("127.0.0.1:99999".into()), ..Default::default() })
            .unwrap_err();
        assert!(err.to_string().contains("valid port"), "{err}");
        let err =
            load(Overrides { api_domain: Some("not a domain".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("api_domain"), "{err}");
        let err = load(Overrides { store: Some("mongo".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("not a store backend"), "{err}");
        let err = load(Overrides { events: Some("kafka://x".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("invalid events.backend:"), "{err}");
        let err = load(Overrides { broker: Some("file".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("invalid broker.backend:"), "{err}");
        assert!(err.to_string().contains("nats://"), "{err}");
        let err = load(Overrides { registry: Some("etcd://x".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("invalid registry.backend:"), "{err}");
        let err = load(Overrides { tls_cert: Some("cert.pem".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let err = load(Overrides { tls_key: Some("key.pem".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("invalid tls.cert:"), "{err}");
        let err = load(Overrides { cors_origins: vec!["*".into()], ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("invalid cors_origins:"), "{err}");
        let err =
            load(Overrides { cors_origins: vec!["https://a.example/app".into()], ..Default::default() })
                .unwrap_err();
        assert!(err.to_string().contains("no path"), "{err}");
        let err =
            load(Overrides { allowed_hosts: vec!["bad host".into()], ..Default::default() }).unwrap_err();
        assert!(err.to_string().starts_with("invalid allowed_hosts:"), "{err}");

        std::fs::write(home.path().join("micro.toml"), "proxy_adress = \"x\"\n").unwrap();
        let err = load(Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("micro.toml"), "{err}");

        let missing = home.path().join("nope.toml");
        let err = Config::load(home.path(), Some(&missing), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn the_web_dashboard_is_on_8082_or_off() {
        let home = tempfile::tempdir().unwrap();
        let load = |web: &str| {
            let overrides = Overrides { web_address: Some(web.into()), ..Default::default() };
            Config::load(home.path(), None, &overrides)
        };
        assert_eq!(Config::default().web(), Some("127.0.0.1:8082"));
        assert_eq!(load("127.0.0.1:0").unwrap().web(), Some("127.0.0.1:0"));
        assert_eq!(load("off").unwrap().web(), None);
        assert_eq!(load("OFF").unwrap().web(), None);
        let err = load("8082").unwrap_err();
        assert!(err.to_string().starts_with("invalid web_address:"), "{err}");
        std::fs::write(home.path().join("micro.toml"), "web_address = \"off\"\n").unwrap();
        let config = Config::load(home.path(), None, &Overrides::default()).unwrap();
        assert_eq!(config.web(), None);
        let reparsed: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(reparsed.web_address, "off");
    }
}
