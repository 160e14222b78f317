//! Which `Host` a loopback-bound listener answers (docs/security.md: DNS rebinding, a hostile
//! name that resolves to 127.0.0.1, must not let a web page read what the listener serves).
//! The gateway and the dashboard check it ([`HostCheck`]), and so does a framework service's
//! `GET /metrics`.

use std::net::IpAddr;

/// Which `Host` names a loopback-bound listener answers (docs/security.md). The default answers
/// loopback names only.
#[derive(Debug, Clone, Default)]
pub struct HostCheck {
    /// The address the listener is bound to (always accepted as a host).
    bind: Option<IpAddr>,
    /// With `example.com`, the domain and its subdomains are accepted: lowercase, without
    /// leading or trailing dots.
    api_domain: Option<String>,
    /// Configured names (`--allowed-host`), lowercase, accepted exactly.
    allowed: Vec<String>,
}

impl HostCheck {
    /// Answers loopback names, `bind`, `api_domain` and its subdomains, and the `allowed`
    /// names; each name is compared without case and without a trailing dot.
    pub fn new(bind: Option<IpAddr>, api_domain: Option<String>, allowed: Vec<String>) -> Self {
        Self {
            bind,
            // Normalised once here rather than for every request.
            api_domain: api_domain.map(|domain| domain.trim_matches('.').to_ascii_lowercase()),
            allowed: allowed.iter().map(|host| host.trim_end_matches('.').to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request naming `host` (with or without a port) is answered.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(&name);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return ip.is_loopback() || Some(ip) == self.bind;
        }
        if let Some(domain) = &self.api_domain
            && (name == *domain || name.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.')))
        {
            return true;
        }
        self.allowed.contains(&name)
    }
}

/// `host:port` → `host`, `[::1]:80` → `[::1]`; a bare IPv6 literal is left whole.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit()) && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}
