//! The server's one typed config tree, layered defaults → `micro.toml` → `MICRO_*` env → flags
//! (docs/architecture.md, "Boot"), validated before anything binds.

use std::collections::HashMap;
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC address: core services and the proxy; what an environment points at.
    pub proxy_address: String,
    /// HTTP API gateway address.
    pub api_address: String,
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
}

/// TLS for the gRPC listener and the HTTP API gateway: both PEM files, or neither (plain text).
/// The files are read and checked at boot, before anything binds ([`crate::tls::load`]).
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

/// Auth settings. The admin password itself is never part of the config tree: it comes from
/// `MICRO_AUTH_ADMIN_PASSWORD` only, so `--dump-config` cannot print it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Do not create the default `admin` account in namespace `micro`.
    pub disable_admin: bool,
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

/// A NATS URL (`nats://` or `tls://`, comma-separated for a cluster)?
pub fn is_nats_url(value: &str) -> bool {
    value.starts_with("nats://") || value.starts_with("tls://")
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proxy_address: "127.0.0.1:8081".into(),
            api_address: "127.0.0.1:8080".into(),
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
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { backend: "file".into(), sweep_interval: "30s".into() }
    }
}

/// Values given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub proxy_address: Option<String>,
    pub api_address: Option<String>,
    pub api_domain: Option<String>,
    pub store: Option<String>,
    pub events: Option<String>,
    pub broker: Option<String>,
    pub registry: Option<String>,
    pub disable_admin: bool,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// `--cors-origin`, repeatable; given, it replaces the lower layers' list.
    pub cors_origins: Vec<String>,
    /// `--allowed-host`, repeatable; given, it replaces the lower layers' list.
    pub allowed_hosts: Vec<String>,
}

impl Config {
    /// Builds the effective config for `home`: defaults, then `file` (or `home/micro.toml` when it
    /// exists), then `env` (`MICRO_PROXY_ADDRESS`, `MICRO_API_ADDRESS`, `MICRO_API_DOMAIN`,
    /// `MICRO_STORE`, `MICRO_EVENTS`, `MICRO_BROKER`, `MICRO_REGISTRY`, `MICRO_TLS_CERT`,
    /// `MICRO_TLS_KEY`, and the comma-separated lists `MICRO_CORS_ORIGINS`,
    /// `MICRO_ALLOWED_HOSTS`), then
    /// `flags`. An explicitly named file must exist; the default one is optional.
    pub fn load(
        home: &Path,
        file: Option<&Path>,
        env: &HashMap<String, String>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
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

        let layer = |target: &mut String, value: Option<&String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                value.clone_into(target);
            }
        };
        layer(&mut config.proxy_address, env.get("MICRO_PROXY_ADDRESS"));
        layer(&mut config.api_address, env.get("MICRO_API_ADDRESS"));
        layer(&mut config.api_domain, env.get("MICRO_API_DOMAIN"));
        layer(&mut config.store.backend, env.get("MICRO_STORE"));
        layer(&mut config.events.backend, env.get("MICRO_EVENTS"));
        layer(&mut config.broker.backend, env.get("MICRO_BROKER"));
        layer(&mut config.registry.backend, env.get("MICRO_REGISTRY"));
        layer(&mut config.tls.cert, env.get("MICRO_TLS_CERT"));
        layer(&mut config.tls.key, env.get("MICRO_TLS_KEY"));
        layer(&mut config.proxy_address, flags.proxy_address.as_ref());
        layer(&mut config.api_address, flags.api_address.as_ref());
        layer(&mut config.api_domain, flags.api_domain.as_ref());
        layer(&mut config.store.backend, flags.store.as_ref());
        layer(&mut config.events.backend, flags.events.as_ref());
        layer(&mut config.broker.backend, flags.broker.as_ref());
        layer(&mut config.registry.backend, flags.registry.as_ref());
        layer(&mut config.tls.cert, flags.tls_cert.as_ref());
        layer(&mut config.tls.key, flags.tls_key.as_ref());
        let list = |target: &mut Vec<String>, value: Option<&String>| {
            if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
                *target =
                    value.split(',').map(|item| item.trim().to_string()).filter(|i| !i.is_empty()).collect();
            }
        };
        list(&mut config.cors_origins, env.get("MICRO_CORS_ORIGINS"));
        list(&mut config.allowed_hosts, env.get("MICRO_ALLOWED_HOSTS"));
        if !flags.cors_origins.is_empty() {
            config.cors_origins.clone_from(&flags.cors_origins);
        }
        if !flags.allowed_hosts.is_empty() {
            config.allowed_hosts.clone_from(&flags.allowed_hosts);
        }
        for host in &mut config.allowed_hosts {
            *host = host.trim_end_matches('.').to_ascii_lowercase();
        }
        if let Some(value) = env.get("MICRO_AUTH_DISABLE_ADMIN").filter(|v| !v.is_empty()) {
            config.auth.disable_admin = parse_bool("MICRO_AUTH_DISABLE_ADMIN", value)?;
        }
        config.auth.disable_admin |= flags.disable_admin;

        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_address("proxy_address", &self.proxy_address)?;
        validate_address("api_address", &self.api_address)?;
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
    /// show as `***` (`postgres://micro:***@db/micro`), so the dump can be pasted anywhere.
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

fn parse_bool(field: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            field,
            message: format!("{value:?} is not a boolean: use true or false"),
        }),
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

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn layers_defaults_file_env_flags_in_order() {
        let home = tempfile::tempdir().unwrap();
        let defaults = Config::load(home.path(), None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(defaults, Config::default());

        std::fs::write(
            home.path().join("micro.toml"),
            "proxy_address = \"127.0.0.1:9001\"\napi_address = \"127.0.0.1:9002\"\n[store]\nbackend = \"memory\"\n",
        )
        .unwrap();
        let from_file = Config::load(home.path(), None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            (from_file.events.backend.as_str(), from_file.broker.backend.as_str()),
            ("file", "memory")
        );
        assert_eq!(from_file.proxy_address, "127.0.0.1:9001");
        assert_eq!(from_file.store.backend, "memory");
        assert_eq!(from_file.store.sweep_interval, "30s", "unset keys keep their defaults");

        let vars = env(&[
            ("MICRO_PROXY_ADDRESS", "127.0.0.1:9101"),
            ("MICRO_API_ADDRESS", "127.0.0.1:9102"),
            ("MICRO_API_DOMAIN", "env.example"),
            ("MICRO_EVENTS", "nats://127.0.0.1:4222"),
            ("MICRO_BROKER", "nats://127.0.0.1:4222"),
            ("MICRO_REGISTRY", "nats://127.0.0.1:4222"),
            ("MICRO_TLS_CERT", "env-cert.pem"),
            ("MICRO_TLS_KEY", "env-key.pem"),
        ]);
        let from_env = Config::load(home.path(), None, &vars, &Overrides::default()).unwrap();
        assert_eq!(from_env.proxy_address, "127.0.0.1:9101");
        assert_eq!(from_env.api_address, "127.0.0.1:9102");
        assert_eq!(from_env.api_domain, "env.example");
        assert_eq!(from_env.events.backend, "nats://127.0.0.1:4222");
        assert_eq!(from_env.broker.backend, "nats://127.0.0.1:4222");
        assert_eq!(from_env.registry.backend, "nats://127.0.0.1:4222");
        assert_eq!((from_env.tls.cert.as_str(), from_env.tls.key.as_str()), ("env-cert.pem", "env-key.pem"));
        assert!(from_env.tls.enabled());
        let lists = env(&[
            ("MICRO_CORS_ORIGINS", "https://a.example, http://localhost:3000"),
            ("MICRO_ALLOWED_HOSTS", "Micro.Lan."),
        ]);
        let from_lists = Config::load(home.path(), None, &lists, &Overrides::default()).unwrap();
        assert_eq!(from_lists.cors_origins, ["https://a.example", "http://localhost:3000"]);
        assert_eq!(from_lists.allowed_hosts, ["micro.lan"]);
        let flagged = Overrides { cors_origins: vec!["https://b.example".into()], ..Default::default() };
        let from_flag = Config::load(home.path(), None, &lists, &flagged).unwrap();
        assert_eq!(from_flag.cors_origins, ["https://b.example"], "flags replace the env's list");
        assert_eq!(from_flag.allowed_hosts, ["micro.lan"]);
        let reparsed: Config = toml::from_str(&from_flag.to_toml()).unwrap();
        assert_eq!(reparsed, from_flag);

        let flags = Overrides {
            proxy_address: Some("127.0.0.1:9201".into()),
            api_domain: Some("flag.example".into()),
            events: Some("memory".into()),
            broker: Some("tls://nats.example:4222".into()),
            registry: Some("memory".into()),
            tls_cert: Some("flag-cert.pem".into()),
            ..Default::default()
        };
        let from_flags = Config::load(home.path(), None, &vars, &flags).unwrap();
        assert_eq!(from_flags.proxy_address, "127.0.0.1:9201");
        assert_eq!(from_flags.api_domain, "flag.example");
        assert_eq!(from_flags.api_address, "127.0.0.1:9102");
        assert_eq!(from_flags.events.backend, "memory");
        assert_eq!(from_flags.broker.backend, "tls://nats.example:4222");
        assert_eq!(from_flags.registry.backend, "memory", "flags beat env");
        assert_eq!(
            (from_flags.tls.cert.as_str(), from_flags.tls.key.as_str()),
            ("flag-cert.pem", "env-key.pem")
        );

        let dumped = from_flags.to_toml();
        let reparsed: Config = toml::from_str(&dumped).unwrap();
        assert_eq!(reparsed, from_flags, "--dump-config output is itself a valid micro.toml");

        let secret = Overrides {
            store: Some("postgres://micro:hunter2@db.example:5432/micro?sslmode=disable".into()),
            events: Some("nats://u:p%40ss@n1:4222,nats://u:p@n2:4222".into()),
            ..Default::default()
        };
        let dumped = Config::load(home.path(), None, &env(&[]), &secret).unwrap().to_toml();
        assert!(dumped.contains("postgres://micro:***@db.example:5432/micro?sslmode=disable"), "{dumped}");
        assert!(dumped.contains("nats://u:***@n1:4222,nats://u:***@n2:4222"), "{dumped}");
        assert!(!dumped.contains("hunter2") && !dumped.contains("p%40ss"), "{dumped}");
        assert_eq!(
            redact_url("nats://token@host:4222"),
            "nats://***@host:4222",
            "no password, nothing hidden"
        );
        assert_eq!(redact_url("file"), "file");
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        let home = tempfile::tempdir().unwrap();
        let load = |flags: Overrides| Config::load(home.path(), None, &env(&[]), &flags);
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
        let err = Config::load(home.path(), Some(&missing), &env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }
}
