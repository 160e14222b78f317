//! TLS for the server's listeners: the certificate and key loaded once at boot ([`Tls::load`],
//! every problem one clear error), and [`TlsIncoming`], a listener whose connections are TLS
//! streams — a `Stream` for tonic's `serve_with_incoming_shutdown` and an axum
//! [`Listener`](axum::serve::Listener) for the gateway.
//!
//! Handshakes run concurrently inside the listener (a slow or silent client never holds up the
//! next one), each bounded by [`HANDSHAKE_TIMEOUT`]; a failed handshake drops that connection
//! only, logged at debug level.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// ALPN protocols of the gRPC listener: HTTP/2 only.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN protocols of the HTTP gateway: HTTP/2 preferred, HTTP/1.1 for everything else.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How long a client gets to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in flight per listener; past it, accepting waits for one to finish.
const MAX_PENDING_HANDSHAKES: usize = 512;
/// Most handshakes in flight from one IP address: one more connection from it is closed at
/// once, so a single client holding silent connections cannot fill [`MAX_PENDING_HANDSHAKES`]
/// and keep everyone else out (docs/security.md).
pub const MAX_PENDING_HANDSHAKES_PER_IP: usize = 16;
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // `cause` is shown in the message rather than as a source: the boot error is one line.
    #[error("cannot read TLS {what} {path}: {cause}")]
    Read { what: &'static str, path: PathBuf, cause: io::Error },
    #[error("TLS {what} {path} is not valid PEM: {message}")]
    Pem { what: &'static str, path: PathBuf, message: String },
    #[error("TLS certificate file {0} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NoCertificate(PathBuf),
    #[error("TLS key file {0} holds no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    NoKey(PathBuf),
    #[error("TLS key {key} does not match the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use TLS certificate {cert} with key {key}: {message}")]
    Unusable { cert: PathBuf, key: PathBuf, message: String },
}

/// The server's TLS identity, checked and ready to accept with.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    cert: PathBuf,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.cert).finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the PEM certificate chain `cert` (leaf first) and its private key `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|cause| TlsError::Read { what, path: path.to_path_buf(), cause })
        };
        let pem_error = |what: &'static str, path: &Path, err: rustls::pki_types::pem::Error| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            message: err.to_string(),
        };
        let cert_pem = read("certificate", cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| pem_error("certificate", cert, err))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_path_buf()));
        }
        let key_pem = read("key", key)?;
        let private_key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(private_key) => private_key,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                return Err(TlsError::NoKey(key.to_path_buf()));
            }
            Err(err) => return Err(pem_error("key", key, err)),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private_key))
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => {
                    TlsError::Mismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
                }
                other => TlsError::Unusable {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    message: other.to_string(),
                },
            })?;
        Ok(Self { config: Arc::new(config), cert: cert.to_path_buf() })
    }

    /// The certificate file, for the start-up log.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// `listener`, its connections wrapped in TLS offering the `alpn` protocols.
    pub fn incoming(&self, listener: TcpListener, alpn: &[&[u8]]) -> TlsIncoming {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        TlsIncoming {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshakes: FuturesUnordered::new(),
            pending: HashMap::new(),
            backoff: None,
        }
    }
}

/// A handshake in flight: its client's address, and the stream once it completed.
type Handshake = Pin<Box<dyn Future<Output = (IpAddr, Option<TlsStream<TcpStream>>)> + Send>>;

/// A TCP listener whose accepted connections come out as completed TLS streams.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<Handshake>,
    /// Handshakes in flight per client address.
    pending: HashMap<IpAddr, usize>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TlsIncoming {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Handshake {
        crate::grpc::set_nodelay(&stream);
        let accept = self.acceptor.accept(stream);
        Box::pin(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(err)) => {
                    tracing::debug!(%peer, cause = %err, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            };
            (peer.ip(), stream)
        })
    }
}

/// Whether an accept error concerns only the connection being accepted (the next accept may
/// well succeed at once) rather than the listener or the process.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

impl futures::Stream for TlsIncoming {
    type Item = io::Result<TlsStream<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(backoff) = &mut this.backoff
            && backoff.as_mut().poll(cx).is_ready()
        {
            this.backoff = None;
        }
        while this.backoff.is_none() && this.handshakes.len() < MAX_PENDING_HANDSHAKES {
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, peer))) => {
                    let pending = this.pending.entry(peer.ip()).or_default();
                    if *pending >= MAX_PENDING_HANDSHAKES_PER_IP {
                        tracing::debug!(%peer, "too many TLS handshakes in flight from this address; closed");
                        drop(stream);
                        continue;
                    }
                    *pending += 1;
                    let _ = stream.set_nodelay(true);
                    let handshake = this.handshake(stream, peer);
                    this.handshakes.push(handshake);
                }
                Poll::Ready(Err(err)) if is_connection_error(&err) => {}
                Poll::Ready(Err(err)) => {
                    tracing::warn!(cause = %err, "accepting a connection failed");
                    let mut backoff = Box::pin(tokio::time::sleep(ACCEPT_BACKOFF));
                    // Registers the waker, so accepting resumes when the pause is over.
                    let _ = backoff.as_mut().poll(cx);
                    this.backoff = Some(backoff);
                }
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_next_unpin(cx) {
                Poll::Ready(Some((ip, stream))) => {
                    if let Some(pending) = this.pending.get_mut(&ip) {
                        *pending -= 1;
                        if *pending == 0 {
                            this.pending.remove(&ip);
                        }
                    }
                    match stream {
                        Some(stream) => return Poll::Ready(Some(Ok(stream))),
                        None => continue,
                    }
                }
                // No handshake in flight: the listener (or the backoff) has registered the waker.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The stream never ends and reports no errors it has not handled itself.
            if let Some(Ok(stream)) = self.next().await {
                let peer = stream.get_ref().0.peer_addr();
                match peer {
                    Ok(peer) => return (stream, peer),
                    Err(err) => tracing::debug!(cause = %err, "a TLS connection closed before it was served"),
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
