//! How TLS fails, as a user meets it: a CLI that trusts the wrong CA, a certificate for another
//! name, TLS against a plain-text server and plain text against a TLS one each end with one
//! clear line and exit 4 (unreachable); and a client that connects and never finishes its
//! handshake neither holds up other clients nor keeps its connection past the server's
//! handshake timeout (10 s, `HANDSHAKE_TIMEOUT` in crates/micro-server/src/tls.rs).
//!
//! Each test makes throwaway CAs and certificates with rcgen.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Server, stderr};

/// The server's handshake timeout (crates/micro-server/src/tls.rs `HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A throwaway certificate authority writing its PEM files into a temp dir.
struct Ca {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM), for `--ca`.
    cert: PathBuf,
}

impl Ca {
    fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        Self { dir, issuer: rcgen::Issuer::new(params, key), cert: path }
    }

    /// A server certificate for `names` and its key: (cert file, key file).
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A TLS server whose certificate `ca` issued for `names`.
fn tls_server(home: &Path, ca: &Ca, names: &[&str]) -> Server {
    let (cert, key) = ca.issue("server", names);
    Server::start_with(home, &["--tls-cert", path(&cert), "--tls-key", path(&key)])
}

/// `micro -e env login` as the default admin, which must fail with exit 4 (unreachable) and
/// exactly one line on stderr; returns that line.
fn refused_login(server: &Server, env: &str) -> String {
    let output = server.micro(&["-e", env, "login", "--username", "admin", "--password", "micro"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert_eq!(common::stdout(&output), "", "nothing on stdout");
    message.trim_end().to_string()
}

/// Trusting another CA than the one that signed the server's certificate is refused with the
/// reason and the fix; the right CA then works, so the refusal was about the CA alone.
#[test]
fn a_cli_trusting_another_ca_refuses_the_server() {
    let (ca, stranger) = (Ca::new("server-ca"), Ca::new("stranger-ca"));
    let home = tempfile::tempdir().unwrap();
    let server = tls_server(home.path(), &ca, &["localhost", "127.0.0.1"]);

    server.ok(&["env", "add", "wrongca", &server.grpc, "--ca", path(&stranger.cert)]);
    assert_eq!(
        refused_login(&server, "wrongca"),
        format!(
            "Failed to connect to micro server at {0}: its TLS certificate is not signed by a trusted \
             authority — if it uses a private CA, trust it with `micro env add ENV {0} --ca FILE`",
            server.grpc
        )
    );
    // Nothing was stored for the refused environment.
    let tokens = std::fs::read_to_string(home.path().join("tokens.json")).unwrap_or_default();
    assert!(!tokens.contains("wrongca"), "no token for a refused server: {tokens}");

    server.ok(&["env", "add", "rightca", &server.grpc, "--ca", path(&ca.cert)]);
    server.ok(&["-e", "rightca", "login", "--username", "admin", "--password", "micro"]);
    server.ok(&["-e", "rightca", "store", "write", "k", "v"]);
    assert_eq!(server.ok(&["-e", "rightca", "store", "read", "k"]).trim(), "v");
}

/// A certificate from a trusted CA that does not name the dialled address is refused.
#[test]
fn a_certificate_for_another_name_is_refused() {
    let ca = Ca::new("server-ca");
    let home = tempfile::tempdir().unwrap();
    let server = tls_server(home.path(), &ca, &["elsewhere.example"]);

    server.ok(&["env", "add", "misnamed", &server.grpc, "--ca", path(&ca.cert)]);
    assert_eq!(
        refused_login(&server, "misnamed"),
        format!(
            "Failed to connect to micro server at {}: its TLS certificate is not valid for that address \
             — connect by a name or IP address the certificate lists",
            server.grpc
        )
    );
    // A raw TLS client checking the name the same way agrees: the server's certificate, not
    // the CLI, is what is wrong.
    let err = tls_handshake(&server.grpc, &ca.cert).expect_err("the name check fails");
    assert!(err.contains("NotValidForName"), "{err}");
}

/// TLS against a plain-text server, and plain text against a TLS server: each says what is
/// wrong and which flag fixes it; the servers go on serving.
#[test]
fn tls_and_plain_text_mismatches_fail_clearly() {
    let ca = Ca::new("server-ca");

    // A TLS client to a plain-text server.
    let plain_home = tempfile::tempdir().unwrap();
    let plain = Server::start(plain_home.path());
    plain.ok(&["env", "add", "wants-tls", &plain.grpc, "--ca", path(&ca.cert)]);
    assert_eq!(
        refused_login(&plain, "wants-tls"),
        format!(
            "Failed to connect to micro server at {}: it does not speak TLS on that port — if it \
             serves plain gRPC, add the environment again without --tls or --ca",
            plain.grpc
        )
    );
    plain.ok(&["env", "add", "wants-tls-only", &plain.grpc, "--tls"]);
    assert!(
        refused_login(&plain, "wants-tls-only").contains(": it does not speak TLS on that port — "),
        "--tls alone fails the same way"
    );
    assert_eq!(plain.ok(&["store", "list"]), "", "the plain server still serves plain clients");

    // A plain client to a TLS server (the harness's env `e2e` is plain text).
    let tls_home = tempfile::tempdir().unwrap();
    let tls = tls_server(tls_home.path(), &ca, &["localhost", "127.0.0.1"]);
    let message = refused_login(&tls, "e2e");
    assert!(
        message.starts_with(&format!("The connection to micro server at {} failed (", tls.grpc))
            && message.ends_with(") — if it serves TLS, add the environment with --tls"),
        "{message}"
    );
    // Plain HTTP to the TLS gateway gets no HTTP answer: the connection is dropped.
    let mut socket = TcpStream::connect(&tls.http).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    socket.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    match socket.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the plain-text request was neither answered nor dropped: {err}"),
    }
    assert!(!answer.starts_with(b"HTTP/"), "no plain-text answer: {:?}", String::from_utf8_lossy(&answer));
    tls.ok(&["env", "add", "tls", &tls.grpc, "--ca", path(&ca.cert)]);
    tls.ok(&["-e", "tls", "login", "--username", "admin", "--password", "micro"]);
    assert_eq!(tls.ok(&["-e", "tls", "store", "list"]), "", "the TLS server still serves TLS clients");
}

/// Clients that connect and never finish their handshake — one silent, one that sent half a
/// ClientHello — do not hold up anyone else on either listener, and each is disconnected once
/// the handshake timeout has passed, not before.
#[test]
fn a_stalled_handshake_blocks_no_one_and_is_cut_off_after_the_timeout() {
    let ca = Ca::new("server-ca");
    let home = tempfile::tempdir().unwrap();
    let server = tls_server(home.path(), &ca, &["localhost", "127.0.0.1"]);
    server.ok(&["env", "add", "tls", &server.grpc, "--ca", path(&ca.cert)]);
    // Logged in first: an argon2 login need not share the handshake timeout below.
    server.ok(&["-e", "tls", "login", "--username", "admin", "--password", "micro"]);

    let opened = Instant::now();
    let mut stalled = Vec::new();
    for addr in [&server.grpc, &server.http] {
        stalled.push(TcpStream::connect(addr).unwrap());
        let mut partial = TcpStream::connect(addr).unwrap();
        let hello = client_hello(&ca.cert);
        partial.write_all(&hello[..hello.len() / 2]).unwrap();
        stalled.push(partial);
    }

    // Everyone else is served meanwhile: the CLI over gRPC, a raw TLS client on the gateway.
    server.ok(&["-e", "tls", "store", "write", "greeting", "hello"]);
    assert_eq!(server.ok(&["-e", "tls", "store", "read", "greeting"]).trim(), "hello");
    tls_handshake(&server.http, &ca.cert).expect("the gateway completes a new handshake");
    assert!(
        opened.elapsed() < HANDSHAKE_TIMEOUT,
        "the other clients were served while the stalled handshakes were still pending ({:?})",
        opened.elapsed()
    );

    // Each stalled connection is closed by the server: EOF (or a reset), never data, and not
    // before the timeout. The read timeout only bounds the wait if the server never closes it.
    for mut socket in stalled {
        socket.set_read_timeout(Some(HANDSHAKE_TIMEOUT * 3)).unwrap();
        let mut buffer = [0u8; 1024];
        let read = socket.read(&mut buffer);
        let closed_after = opened.elapsed();
        match read {
            Ok(0) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("a stalled handshake got {n} bytes instead of being closed"),
            Err(err) => panic!("the stalled connection was not closed within {:?}: {err}", closed_after),
        }
        assert!(
            closed_after >= HANDSHAKE_TIMEOUT - Duration::from_millis(500),
            "closed only once the handshake timeout passed, not after {closed_after:?}"
        );
    }
    // And the server still takes new clients afterwards.
    assert_eq!(server.ok(&["-e", "tls", "store", "read", "greeting"]).trim(), "hello");
}

/// One address holding MAX_PENDING_HANDSHAKES_PER_IP silent connections gets its next one
/// closed at once, while a client from another address completes its handshake: one client
/// cannot fill the listener's handshake slots and keep everyone out.
#[test]
fn one_address_cannot_hold_every_handshake_slot() {
    const PER_IP: usize = 16; // micro_server::tls::MAX_PENDING_HANDSHAKES_PER_IP
    let ca = Ca::new("server-ca");
    let home = tempfile::tempdir().unwrap();
    let server = tls_server(home.path(), &ca, &["localhost", "127.0.0.1"]);
    let silent: Vec<TcpStream> = (0..PER_IP).map(|_| connect_from("127.0.0.3", &server.http)).collect();
    // The server takes the silent ones in the order they came; one round trip from another
    // address makes sure it has seen them all.
    tls_handshake_over(connect_from("127.0.0.4", &server.http), &ca.cert).expect("another address is served");
    let mut one_more = connect_from("127.0.0.3", &server.http);
    one_more.set_read_timeout(Some(HANDSHAKE_TIMEOUT / 2)).unwrap();
    let mut buffer = [0u8; 16];
    match one_more.read(&mut buffer) {
        Ok(0) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection past the per-address cap was not closed at once: {other:?}"),
    }
    tls_handshake_over(connect_from("127.0.0.5", &server.http), &ca.cert).expect("others are still served");
    drop(silent);
}

/// A complete TLS handshake with `addr` as host `127.0.0.1`, trusting `ca`; the error's debug
/// text when it fails.
fn tls_handshake(addr: &str, ca: &Path) -> Result<(), String> {
    tls_handshake_over(TcpStream::connect(addr).unwrap(), ca)
}

/// A TCP connection to `addr` from the loopback address `from`.
fn connect_from(from: &str, addr: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

fn tls_handshake_over(mut socket: TcpStream, ca: &Path) -> Result<(), String> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection =
        rustls::ClientConnection::new(common::tls_client(ca, &[b"h2", b"http/1.1"]), name).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(|err| format!("{err:?}"))?;
    }
    Ok(())
}

/// The first flight of a TLS client (its ClientHello record).
fn client_hello(ca: &Path) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut connection =
        rustls::ClientConnection::new(common::tls_client(ca, &[b"h2", b"http/1.1"]), name).unwrap();
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 10, "a ClientHello was written");
    hello
}
