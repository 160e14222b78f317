//! Reaching a micro server over TLS, the same way from the CLI and from services built with the
//! `micro` framework:
//!
//! - which addresses use TLS: an explicit `https://` (or `http://`) says so, otherwise any
//!   address on port [`TLS_PORT`] does ([`ServerAddress::parse`]);
//! - whom a client trusts: the system's certificate authorities (`rustls-native-certs`) plus an
//!   optional CA file, for a self-signed or private CA ([`endpoint`]);
//! - what went wrong, in words, when a connection fails during the TLS handshake ([`Failure`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// The port on which clients use TLS without being told.
pub const TLS_PORT: u16 = 443;

/// A micro server's gRPC address as a user or a `MICRO_*` variable gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// `host:port` (a bare host gets port 443).
    pub address: String,
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None` without a scheme.
    pub scheme_tls: Option<bool>,
}

impl ServerAddress {
    /// Splits an optional `https://`/`http://` scheme (and any trailing `/`) off `text`.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let (rest, scheme_tls) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (rest, Some(true))
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (rest, Some(false))
        } else {
            (text, None)
        };
        Self { address: crate::with_port(rest.trim_end_matches('/')), scheme_tls }
    }

    /// Whether to connect with TLS: the scheme if there was one, else `tls` (a stored setting such
    /// as `micro env add --tls`), else whether the port is 443.
    pub fn tls(&self, tls: bool) -> bool {
        self.scheme_tls.unwrap_or(tls || default_tls(&self.address))
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Whether `address` (`host:port`, or a bare host meaning port 443) is reached with TLS unless
/// told otherwise: it is on port [`TLS_PORT`].
pub fn default_tls(address: &str) -> bool {
    crate::with_port(address).rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>() == Ok(TLS_PORT))
}

/// Why a client could not be set up to reach a server over TLS.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("cannot read the CA file {path}: {cause}")]
    ReadCa { path: PathBuf, cause: std::io::Error },
    #[error("the CA file {0} holds no PEM certificate")]
    NoCaCertificate(PathBuf),
    #[error("no trusted certificate authorities: the system has none and no CA file was given")]
    NoRoots,
    #[error("invalid server address {0:?}")]
    InvalidAddress(String),
}

/// A lazily connecting endpoint for `address` (`host:port`): plain HTTP/2 when `tls` is false;
/// otherwise TLS, verifying the server's certificate for `host` against the system's
/// authorities plus the PEM certificates in `ca`.
pub fn endpoint(address: &str, tls: bool, ca: Option<&Path>) -> Result<Endpoint, ClientTlsError> {
    let scheme = if tls { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|_| ClientTlsError::InvalidAddress(address.to_string()))?;
    if !tls {
        return Ok(endpoint);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(native_roots().iter().cloned());
    if let Some(ca) = ca {
        let (added, _) = roots.add_parsable_certificates(read_ca(ca)?);
        if added == 0 {
            return Err(ClientTlsError::NoCaCertificate(ca.to_path_buf()));
        }
    }
    if roots.is_empty() {
        return Err(ClientTlsError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|_| ClientTlsError::NoRoots)?;
    endpoint
        .tls_config_with_verifier(ClientTlsConfig::new(), verifier)
        .map_err(|_| ClientTlsError::InvalidAddress(address.to_string()))
}

/// The PEM certificates in the CA file `path`; at least one.
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let pem =
        std::fs::read(path).map_err(|cause| ClientTlsError::ReadCa { path: path.to_path_buf(), cause })?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(ClientTlsError::NoCaCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The system's certificate authorities, read once per process (unreadable ones are skipped).
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// Why a connection failed in its TLS handshake, found in an error's source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The certificate is not signed by an authority the client trusts.
    Untrusted,
    /// The certificate does not name the host the client connected to.
    WrongName,
    /// The certificate has expired or is not valid yet.
    Expired,
    /// The certificate was refused for another reason (named).
    BadCertificate(String),
    /// The peer answered with something that is not TLS.
    NotTls,
    /// The server ended the handshake with an alert (named).
    Refused(String),
    /// The handshake succeeded but the server does not offer HTTP/2 (not a gRPC server).
    NoHttp2,
    /// The handshake failed for another reason (named), e.g. no protocol version in common.
    Handshake(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Untrusted => f.write_str("its TLS certificate is not signed by a trusted authority"),
            Failure::WrongName => f.write_str("its TLS certificate is not valid for that address"),
            Failure::Expired => f.write_str("its TLS certificate has expired or is not valid yet"),
            Failure::BadCertificate(why) => write!(f, "its TLS certificate was refused ({why})"),
            Failure::NotTls => f.write_str("it does not speak TLS on that port"),
            Failure::Refused(alert) => write!(f, "it refused the TLS handshake ({alert})"),
            Failure::NoHttp2 => f.write_str("it does not offer HTTP/2 over TLS, so it is not a gRPC server"),
            Failure::Handshake(why) => write!(f, "the TLS handshake failed ({why})"),
        }
    }
}

impl Failure {
    /// The TLS failure behind `err`, if the chain holds one.
    pub fn find(err: &(dyn std::error::Error + 'static)) -> Option<Failure> {
        if let Some(failure) = Self::from_one(err) {
            return Some(failure);
        }
        // `io::Error::source` skips the error it wraps: look inside it first.
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(failure) = Self::find(inner)
        {
            return Some(failure);
        }
        err.source().and_then(Self::find)
    }

    fn from_one(err: &(dyn std::error::Error + 'static)) -> Option<Failure> {
        if let Some(err) = err.downcast_ref::<rustls::Error>() {
            return Some(Self::from_rustls(err));
        }
        // tonic's own (private) error when ALPN did not settle on h2.
        (err.to_string() == "HTTP/2 was not negotiated.").then_some(Failure::NoHttp2)
    }

    fn from_rustls(err: &rustls::Error) -> Failure {
        use rustls::CertificateError as Cert;
        match err {
            rustls::Error::InvalidCertificate(cert) => match cert {
                Cert::UnknownIssuer | Cert::BadSignature | Cert::InvalidPurpose => Failure::Untrusted,
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => Failure::WrongName,
                Cert::Expired
                | Cert::ExpiredContext { .. }
                | Cert::NotValidYet
                | Cert::NotValidYetContext { .. } => Failure::Expired,
                other => Failure::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => Failure::NotTls,
            rustls::Error::AlertReceived(alert) => Failure::Refused(format!("{alert:?}")),
            other => Failure::Handshake(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_443_and_https_mean_tls() {
        assert!(default_tls("proxy.example.com:443"));
        assert!(default_tls("proxy.example.com"), "a bare host means port 443");
        assert!(default_tls("[::1]:443"));
        assert!(!default_tls("127.0.0.1:8081"));
        assert!(!default_tls("example.com:4430"));

        let parse = ServerAddress::parse;
        assert_eq!(parse("proxy.example.com").address, "proxy.example.com:443");
        assert!(parse("proxy.example.com").tls(false));
        assert!(parse("10.0.0.1:443").tls(false));
        assert!(!parse("10.0.0.1:8081").tls(false));
        assert!(parse("10.0.0.1:8081").tls(true), "a stored --tls forces it on another port");

        let https = parse("https://10.0.0.1:8081/");
        assert_eq!((https.address.as_str(), https.scheme_tls), ("10.0.0.1:8081", Some(true)));
        assert!(https.tls(false));
        assert_eq!(parse("HTTPS://example.com").address, "example.com:443");
        let http = parse("http://example.com:443");
        assert!(!http.tls(true), "an explicit http:// wins over the port and the setting");
    }

    #[test]
    fn a_tls_endpoint_needs_a_readable_ca_with_certificates() {
        let dir = std::env::temp_dir().join(format!("micro-core-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = endpoint("127.0.0.1:1", true, Some(&empty)).unwrap_err();
        assert!(matches!(err, ClientTlsError::NoCaCertificate(_)), "{err}");
        let err = endpoint("127.0.0.1:1", true, Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(err.to_string().starts_with("cannot read the CA file"), "{err}");
        assert!(endpoint("127.0.0.1:1", false, Some(&dir.join("missing.pem"))).is_ok(), "plain ignores it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handshake_failures_are_found_through_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let wrapped = std::io::Error::other(io);
        assert_eq!(Failure::find(&wrapped), Some(Failure::Untrusted));
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert_eq!(Failure::find(&name), Some(Failure::WrongName));
        assert_eq!(Failure::find(&std::io::Error::other("connection refused")), None);
    }
}
