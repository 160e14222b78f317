//! The `MICRO_*` environment a service runs with: what `micro run` injects, or what a developer
//! sets by hand. Parsed once, validated before anything binds.

use std::path::PathBuf;
use std::time::Duration;

use micro_core::service_env;

use crate::{Error, Result};

/// The micro server's gRPC address when nothing else names one.
pub const DEFAULT_SERVER_ADDRESS: &str = "127.0.0.1:8081";
/// Where a service listens when `MICRO_SERVICE_ADDRESS` is unset: loopback, any free port.
pub const DEFAULT_SERVICE_ADDRESS: &str = "127.0.0.1:0";
/// The version a service registers when `MICRO_SERVICE_VERSION` is unset.
pub const DEFAULT_VERSION: &str = micro_core::names::DEFAULT_VERSION;
/// How long the registry keeps a node that stopped heartbeating (docs/compatibility.md §10).
pub const DEFAULT_REGISTER_TTL: Duration = Duration::from_secs(90);
/// How often a service re-registers (docs/compatibility.md §10).
pub const DEFAULT_REGISTER_INTERVAL: Duration = Duration::from_secs(30);

/// The parsed `MICRO_*` variables. `None` means unset (or set to the empty string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Env {
    /// `MICRO_SERVICE_NAME`: overrides the name given to [`Service::new`](crate::Service::new).
    pub name: Option<String>,
    /// `MICRO_SERVICE_VERSION`, default `latest`.
    pub version: String,
    /// `MICRO_SERVICE_ADDRESS`, default `127.0.0.1:0`.
    pub address: String,
    /// `MICRO_SERVER_ADDRESS`, else `MICRO_PROXY`: the micro server's gRPC address, as given
    /// (`https://` or port 443 mean TLS; see `micro_core::tls::ServerAddress`).
    pub server: Option<String>,
    /// `MICRO_TLS_CA`: a CA certificate file (PEM) to trust besides the system's authorities
    /// when the server is reached over TLS.
    pub tls_ca: Option<PathBuf>,
    /// `MICRO_NAMESPACE`.
    pub namespace: Option<String>,
    /// `MICRO_AUTH_ID` and `MICRO_AUTH_SECRET`, only when both are set.
    pub credentials: Option<(String, String)>,
    /// `MICRO_REGISTER_TTL` (Go duration), default 90s.
    pub register_ttl: Duration,
    /// `MICRO_REGISTER_INTERVAL` (Go duration), default 30s.
    pub register_interval: Duration,
    /// `MICRO_ENV`: the CLI environment whose login a hand-started service borrows.
    pub cli_env: Option<String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Parses the variables `lookup` returns; unit tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |key: &str| lookup(key).map(|value| value.trim().to_string()).filter(|v| !v.is_empty());
        let duration = |key: &str, default: Duration| -> Result<Duration> {
            match get(key) {
                None => Ok(default),
                Some(text) => match micro_core::duration::parse(&text) {
                    Ok(value) if !value.is_zero() => Ok(value),
                    Ok(_) => Err(Error::Config(format!("{key} must be longer than 0s"))),
                    Err(err) => Err(Error::Config(format!("{key}: {err}"))),
                },
            }
        };
        let namespace = get(service_env::NAMESPACE);
        if let Some(namespace) = &namespace {
            micro_core::validate_namespace(namespace)
                .map_err(|err| Error::Config(format!("{}: {err}", service_env::NAMESPACE)))?;
        }
        let (id, secret) = (service_env::AUTH_ID, service_env::AUTH_SECRET);
        let credentials = match (get(id), get(secret)) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) => None,
            (Some(_), None) => return Err(Error::Config(format!("{id} is set but {secret} is not"))),
            (None, Some(_)) => return Err(Error::Config(format!("{secret} is set but {id} is not"))),
        };
        let register_ttl = duration("MICRO_REGISTER_TTL", DEFAULT_REGISTER_TTL)?;
        let register_interval = duration("MICRO_REGISTER_INTERVAL", DEFAULT_REGISTER_INTERVAL)?;
        if register_interval >= register_ttl {
            return Err(Error::Config(format!(
                "MICRO_REGISTER_INTERVAL ({register_interval:?}) must be shorter than MICRO_REGISTER_TTL ({register_ttl:?}), \
                 or the registry forgets the service between heartbeats"
            )));
        }
        let name = get(service_env::SERVICE_NAME);
        if let Some(name) = &name {
            validate_name(name)?;
        }
        Ok(Self {
            name,
            version: get(service_env::SERVICE_VERSION).unwrap_or_else(|| DEFAULT_VERSION.to_string()),
            address: get(service_env::SERVICE_ADDRESS).unwrap_or_else(|| DEFAULT_SERVICE_ADDRESS.to_string()),
            server: get(service_env::SERVER_ADDRESS).or_else(|| get("MICRO_PROXY")),
            tls_ca: get("MICRO_TLS_CA").map(PathBuf::from),
            namespace,
            credentials,
            register_ttl,
            register_interval,
            cli_env: get("MICRO_ENV"),
        })
    }
}

/// A service name, by the runtime's rule (`micro_core::names`, docs/runtime.md): it becomes a
/// registry key, a resource name in rules and part of account ids, so a service started by hand
/// takes no name the runtime would refuse.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    micro_core::names::validate_name(name).map_err(|err| Error::Config(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Env> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(|key| map.get(key).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let env = parse(&[]).unwrap();
        assert_eq!(env.name, None);
        assert_eq!(env.version, "latest");
        assert_eq!(env.address, "127.0.0.1:0");
        assert_eq!(env.server, None);
        assert_eq!(env.tls_ca, None);
        assert_eq!(env.namespace, None);
        assert_eq!(env.credentials, None);
        assert_eq!(env.register_ttl, Duration::from_secs(90));
        assert_eq!(env.register_interval, Duration::from_secs(30));
        assert_eq!(parse(&[("MICRO_SERVICE_NAME", " "), ("MICRO_PROXY", "")]).unwrap().name, None);
    }

    #[test]
    fn variables_override_defaults() {
        let env = parse(&[
            ("MICRO_SERVICE_NAME", "greeter"),
            ("MICRO_SERVICE_VERSION", "v2"),
            ("MICRO_SERVICE_ADDRESS", "0.0.0.0:9000"),
            ("MICRO_PROXY", "10.0.0.1:8081"),
            ("MICRO_NAMESPACE", "foo"),
            ("MICRO_AUTH_ID", "greeter-v2"),
            ("MICRO_AUTH_SECRET", "s3cret"),
            ("MICRO_REGISTER_TTL", "1m"),
            ("MICRO_REGISTER_INTERVAL", "15s"),
            ("MICRO_TLS_CA", "/etc/micro/ca.pem"),
        ])
        .unwrap();
        assert_eq!(env.name.as_deref(), Some("greeter"));
        assert_eq!(env.version, "v2");
        assert_eq!(env.address, "0.0.0.0:9000");
        assert_eq!(env.server.as_deref(), Some("10.0.0.1:8081"));
        assert_eq!(env.namespace.as_deref(), Some("foo"));
        assert_eq!(env.tls_ca.as_deref(), Some(std::path::Path::new("/etc/micro/ca.pem")));
        assert_eq!(env.credentials, Some(("greeter-v2".into(), "s3cret".into())));
        assert_eq!(
            (env.register_ttl, env.register_interval),
            (Duration::from_secs(60), Duration::from_secs(15))
        );

        let both = parse(&[("MICRO_SERVER_ADDRESS", "a:1"), ("MICRO_PROXY", "b:2")]).unwrap();
        assert_eq!(both.server.as_deref(), Some("a:1"), "MICRO_SERVER_ADDRESS wins over MICRO_PROXY");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let message = |pairs: &[(&str, &str)]| parse(pairs).unwrap_err().to_string();
        assert!(message(&[("MICRO_REGISTER_TTL", "soon")]).contains("MICRO_REGISTER_TTL"));
        assert!(message(&[("MICRO_REGISTER_INTERVAL", "0")]).contains("longer than 0s"));
        assert!(message(&[("MICRO_REGISTER_INTERVAL", "2m")]).contains("shorter than MICRO_REGISTER_TTL"));
        assert!(message(&[("MICRO_NAMESPACE", "Bad!")]).contains("MICRO_NAMESPACE"));
        assert!(message(&[("MICRO_AUTH_ID", "x")]).contains("MICRO_AUTH_SECRET is not"));
        assert!(message(&[("MICRO_SERVICE_NAME", "../x")]).contains("invalid service name"));
        // The runtime's rule, not a looser one of the framework's own.
        assert!(message(&[("MICRO_SERVICE_NAME", "Upper")]).contains("invalid service name"));
        assert!(message(&[("MICRO_SERVICE_NAME", &"x".repeat(65))]).contains("invalid service name"));
    }
}
