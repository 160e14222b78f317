//! A remote environment over TLS: `micro server --tls-cert --tls-key` serves TLS on the gRPC
//! listener and the HTTP gateway; the CLI reaches it through `micro env add … --tls --ca`, a
//! service started by hand through `MICRO_SERVER_ADDRESS=https://…` and `MICRO_TLS_CA`.
//!
//! Each test makes a throwaway CA and a server certificate for `localhost`/`127.0.0.1` with rcgen.

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Server, Service, eventually, micro_in, stderr, stdout};

/// PEM files of a throwaway CA and a server certificate it signed.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The CA's own key: a well-formed key that does not match `cert`.
    other_key: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "micro test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let ca_pem_key = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&server_key, &issuer).unwrap();

    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", server_key.serialize_pem()),
        other_key: write("ca.key", ca_pem_key),
        _dir: dir,
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Completes a TLS handshake with `addr` (as host `127.0.0.1`) and returns the stream.
fn tls_connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(config, name).unwrap();
    let socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).expect("the TLS handshake completes");
    }
    stream
}

/// An HTTP/1.1 GET over TLS; returns (status code, body).
fn https_get(addr: &str, ca: &Path, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = tls_connect(addr, common::tls_client(ca, &[b"http/1.1"]));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    // A server may close without a TLS close_notify once the response is complete.
    if let Err(err) = stream.read_to_end(&mut response) {
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

#[test]
fn a_tls_server_is_driven_like_a_local_one() {
    let pki = pki();
    let home = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(home.path(), &["--tls-cert", path(&pki.cert), "--tls-key", path(&pki.key)]);
    assert!(server.log().contains("TLS on"), "the server says TLS is on:\n{}", server.log());

    // The harness's env `e2e` is plain text: against a TLS port that fails with a hint.
    let plain = server.micro(&["-e", "e2e", "login", "--username", "admin", "--password", "micro"]);
    assert_eq!(plain.status.code(), Some(4), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("if it serves TLS, add the environment with --tls"),
        "{}",
        stderr(&plain)
    );
    assert_eq!(stderr(&plain).lines().count(), 1, "one line: {}", stderr(&plain));

    // Without the CA the certificate is not trusted.
    server.ok(&["env", "add", "noca", &server.grpc, "--tls"]);
    let untrusted = server.micro(&["-e", "noca", "login", "--username", "admin", "--password", "micro"]);
    assert_eq!(untrusted.status.code(), Some(4), "{}", stderr(&untrusted));
    let message = stderr(&untrusted);
    assert!(
        message.starts_with(&format!("Failed to connect to micro server at {}: its TLS certificate is not signed by a trusted authority", server.grpc)),
        "{message}"
    );
    assert!(message.contains("--ca FILE") && message.lines().count() == 1, "{message}");

    // With it, the remote environment works like a local one.
    server.ok(&["env", "add", "tls", &server.grpc, "--tls", "--ca", path(&pki.ca)]);
    let listing = server.ok(&["env"]);
    let line = listing.lines().find(|line| line[2..].starts_with("tls ")).unwrap();
    assert!(line.contains(&format!("{} (TLS, CA {})", server.grpc, pki.ca.display())), "{listing}");
    assert!(
        server
            .ok(&["-e", "tls", "login", "--username", "admin", "--password", "micro"])
            .contains("Successfully logged in.")
    );
    server.ok(&["-e", "tls", "store", "write", "greeting", "hello over TLS"]);
    assert_eq!(server.ok(&["-e", "tls", "store", "read", "greeting"]).trim(), "hello over TLS");

    // The gateway serves HTTPS: HTTP/2 by ALPN, and HTTP/1.1.
    let h2 = tls_connect(&server.http, common::tls_client(&pki.ca, &[b"h2", b"http/1.1"]));
    assert_eq!(h2.conn.alpn_protocol(), Some(&b"h2"[..]), "the gateway prefers h2");
    let grpc = tls_connect(&server.grpc, common::tls_client(&pki.ca, &[b"h2"]));
    assert_eq!(grpc.conn.alpn_protocol(), Some(&b"h2"[..]), "gRPC negotiates h2");
    let (status, body) = https_get(&server.http, &pki.ca, "/", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\""), "{body}");

    // A service started by hand reaches the server over TLS with MICRO_TLS_CA, borrowing the
    // `tls` environment's login; it is then callable through the TLS proxy and gateway.
    let https_address = format!("https://{}", server.grpc);
    let hello = Service::start_example(
        "helloworld",
        &server,
        &[("MICRO_SERVER_ADDRESS", &https_address), ("MICRO_TLS_CA", path(&pki.ca)), ("MICRO_ENV", "tls")],
    );
    assert!(hello.log().contains("tls=true"), "{}", hello.log());
    let reply: serde_json::Value =
        serde_json::from_str(&server.ok(&["-e", "tls", "helloworld", "--name=Alice"])).unwrap();
    assert_eq!(reply["msg"], "Hello Alice");
    let (status, body) =
        https_get(&server.http, &pki.ca, "/helloworld?name=Jane", &[("Micro-Namespace", "micro")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"], "Hello Jane");

    // Without a CA (env `noca` stored none) a service says what to set.
    let lost = Service::spawn_example(
        "helloworld",
        &server,
        &[("MICRO_SERVER_ADDRESS", &https_address), ("MICRO_ENV", "noca")],
    );
    let warning = lost.wait_for("Registration failed");
    assert!(warning.contains("set MICRO_TLS_CA"), "{warning}");
    drop(lost);

    // `micro run` uploads over TLS; the runtime gives services the plain loopback listener.
    let work = tempfile::tempdir().unwrap();
    let probe = work.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    std::fs::write(probe.join("run.sh"), "echo \"server=$MICRO_SERVER_ADDRESS\"\nexec sleep 60\n").unwrap();
    server.ok_at(work.path(), &["-e", "tls", "run", "./probe", "--command", "sh run.sh"]);
    let mut logs = String::new();
    let logged = eventually(Duration::from_secs(30), || {
        logs = stdout(&server.micro(&["-e", "tls", "logs", "probe"]));
        logs.contains("server=")
    });
    assert!(logged, "logs: {logs}\nserver log:\n{}", server.log());
    let injected = logs.lines().find_map(|line| line.split("server=").nth(1)).unwrap().trim().to_string();
    assert!(injected.starts_with("127.0.0.1:") && injected != server.grpc, "{injected}");
    server.ok(&["-e", "tls", "kill", "probe"]);
    drop(hello);
}

#[test]
fn unusable_certificates_stop_the_boot_with_one_line() {
    let pki = pki();
    let home = tempfile::tempdir().unwrap();
    let missing = pki.cert.with_file_name("missing.pem");
    let cases: [(&Path, &Path, String); 3] = [
        (&missing, &pki.key, format!("Error: cannot read TLS certificate {}: ", missing.display())),
        (
            &pki.cert,
            &pki.other_key,
            format!(
                "Error: TLS key {} does not match the certificate {}",
                pki.other_key.display(),
                pki.cert.display()
            ),
        ),
        (
            &pki.key,
            &pki.key,
            format!("Error: TLS certificate file {} holds no certificate", pki.key.display()),
        ),
    ];
    for (cert, key, expected) in cases {
        let output = micro_in(
            home.path(),
            &[
                "server",
                "--proxy-address",
                "127.0.0.1:0",
                "--api-address",
                "127.0.0.1:0",
                "--tls-cert",
                path(cert),
                "--tls-key",
                path(key),
            ],
        );
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(message.starts_with(&expected), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
}
