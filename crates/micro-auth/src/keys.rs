//! The Ed25519 signing key and the access tokens (EdDSA JWTs) it signs.
//!
//! The key lives in `<key_dir>/`[`KEY_FILE`] as a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`,
//! the format `openssl genpkey -algorithm ed25519` writes), created with mode 0600 on first
//! boot and reused afterwards. Only the 32-byte seed matters; the public key is derived.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use micro_access::token::{Claims, Verifier, pem};

use micro_core::Account;

use crate::AuthError;

/// The key file's name inside the key directory.
pub const KEY_FILE: &str = "auth_key";

/// The DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410 §7); the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The key pair that signs and verifies access tokens.
pub(crate) struct Keys {
    encoding: EncodingKey,
    /// Checks tokens as every other verifier does (micro-access).
    verifier: Verifier,
    /// Tokens already verified, so one presented on every call is checked once.
    verified: micro_core::tokens::VerifiedTokens,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("algorithm", &"EdDSA").finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads `<dir>/auth_key`, creating the directory and a fresh key (mode 0600) when missing.
    pub(crate) fn load_or_create(dir: &Path) -> Result<Self, AuthError> {
        let path = dir.join(KEY_FILE);
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => {
                warn_if_readable_by_others(&path);
                pem
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(dir, &path)?,
            Err(err) => return Err(AuthError::Key(format!("cannot read {}: {err}", path.display()))),
        };
        let seed = parse_pem(&pem).map_err(|why| AuthError::Key(format!("{}: {why}", path.display())))?;
        Ok(Self::from_seed(&seed))
    }

    /// A key given as text: a PKCS#8 PEM (as in the key file), or the base64 of the 32-byte
    /// Ed25519 seed.
    pub(crate) fn from_text(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        let seed = if text.starts_with("-----BEGIN") {
            parse_pem(text).map_err(AuthError::Key)?
        } else {
            let bytes = STANDARD
                .decode(text)
                .map_err(|_| AuthError::Key("not a PEM private key nor base64 of a 32-byte seed".into()))?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| AuthError::Key(format!("a seed is 32 bytes, not {}", bytes.len())))?
        };
        Ok(Self::from_seed(&seed))
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().to_bytes();
        Keys {
            encoding: EncodingKey::from_ed_der(&pkcs8_der(seed)),
            verifier: Verifier::new(public),
            verified: micro_core::tokens::VerifiedTokens::new(),
        }
    }

    /// The public key as an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), for verifiers elsewhere.
    pub(crate) fn public_key_pem(&self) -> String {
        self.verifier.public_key_pem()
    }

    /// Signs an access token for `account` in `issuer`, valid from `iat` until `exp` (unix secs).
    pub(crate) fn issue(
        &self,
        account: &Account,
        issuer: &str,
        iat: u64,
        exp: u64,
    ) -> Result<String, AuthError> {
        let claims = Claims::new(account, issuer, iat, exp);
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|err| AuthError::Internal(format!("cannot sign a token: {err}")))
    }

    /// Verifies `token`'s signature and expiry and returns the account it describes.
    pub(crate) fn inspect(&self, token: &str) -> Result<Account, AuthError> {
        let now = now();
        if let Some(account) = self.verified.get(token, now) {
            return Ok(account);
        }
        let (account, expires_at) =
            self.verifier.verify(token).map_err(|err| AuthError::InvalidToken(err.to_string()))?;
        self.verified.insert(token, &account, expires_at, now);
        Ok(account)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    u64::try_from(micro_core::time::unix_seconds()).unwrap_or(0)
}

/// A fresh signing key as a PKCS#8 PEM, the form [`Keys::from_text`] and the key file take.
pub fn generate_pem() -> Result<String, AuthError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|err| AuthError::Key(format!("no randomness: {err}")))?;
    Ok(pem("PRIVATE KEY", &pkcs8_der(&seed)))
}

fn pkcs8_der(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(seed);
    der
}

fn parse_pem(pem: &str) -> Result<[u8; 32], String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err("not a PEM private key (expected -----BEGIN PRIVATE KEY-----)".into());
    }
    let der = STANDARD.decode(body).map_err(|err| format!("bad PEM base64: {err}"))?;
    match der.strip_prefix(PKCS8_PREFIX.as_slice()) {
        Some(seed) if seed.len() == 32 => Ok(seed.try_into().expect("length checked above")),
        _ => Err("not an Ed25519 PKCS#8 private key".into()),
    }
}

/// Writes a fresh key to a temporary file (0600, fsync'd), then links it into place so a crash
/// never leaves a half-written key and two processes booting at once agree on one key.
fn create(dir: &Path, path: &Path) -> Result<String, AuthError> {
    let fail =
        |what: &str, err: std::io::Error| AuthError::Key(format!("cannot {what} {}: {err}", dir.display()));
    std::fs::create_dir_all(dir).map_err(|err| fail("create", err))?;
    let pem = generate_pem()?;

    let tmp = dir.join(format!("{KEY_FILE}.{}.tmp", crate::secret::random_token(8)));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new auth signing key");
            Ok(pem)
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .map_err(|err| AuthError::Key(format!("cannot read {}: {err}", path.display()))),
        Err(err) => Err(fail("write a key into", err)),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the auth signing key is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn account() -> Account {
        Account {
            id: "svc-1".into(),
            name: "svc".into(),
            kind: "service".into(),
            issuer: "foo".into(),
            scopes: vec!["service".into()],
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        }
    }

    #[test]
    fn keys_given_as_text() {
        let pem = generate_pem().unwrap();
        let from_pem = Keys::from_text(&pem).unwrap();
        let seed = parse_pem(&pem).unwrap();
        let from_seed = Keys::from_text(&format!("  {}\n", STANDARD.encode(seed))).unwrap();
        assert_eq!(
            from_pem.verifier.key(),
            from_seed.verifier.key(),
            "the PEM and its base64 seed are one key"
        );
        let now = now();
        let token = from_pem.issue(&account(), "foo", now, now + 60).unwrap();
        assert_eq!(from_seed.inspect(&token).unwrap(), account(), "either verifies the other's tokens");
        assert_ne!(
            Keys::from_text(&generate_pem().unwrap()).unwrap().verifier.key(),
            from_pem.verifier.key()
        );
        for bad in [
            "",
            "not base64!",
            &STANDARD.encode([1u8; 31]),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            assert!(matches!(Keys::from_text(bad), Err(AuthError::Key(_))), "{bad:?}");
        }
    }

    #[test]
    fn round_trip_expiry_and_tampering() {
        let keys = Keys::from_seed(&[7u8; 32]);
        let now = now();
        let token = keys.issue(&account(), "foo", now, now + 60).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(keys.inspect(&token).unwrap(), account());

        let expired = keys.issue(&account(), "foo", now - 3600, now - 600).unwrap();
        assert_eq!(keys.inspect(&expired), Err(AuthError::InvalidToken("expired".into())));

        // Flip a character of the payload: the signature no longer matches.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut payload = parts[1].clone().into_bytes();
        payload[5] = if payload[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(payload).unwrap();
        assert!(matches!(keys.inspect(&parts.join(".")), Err(AuthError::InvalidToken(_))));

        // Another key's token is rejected.
        let other = Keys::from_seed(&[8u8; 32]).issue(&account(), "foo", now, now + 60).unwrap();
        assert_eq!(keys.inspect(&other), Err(AuthError::InvalidToken("bad signature".into())));
        assert!(keys.inspect("not-a-token").is_err());
        assert!(keys.inspect("").is_err());
    }

    #[test]
    fn openssl_keys_are_interchangeable() {
        // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` of it.
        let private = "-----BEGIN PRIVATE KEY-----\n\
            MC4CAQAwBQYDK2VwBCIEIBSPjjcddNCbIi4ZfID2JQN3QfnMhs2JuR1kg0LrGGK5\n\
            -----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEA3DvUfan9T7iFYU8Fdu9n/26u963L6czM9lDwgIqZKjQ=\n\
            -----END PUBLIC KEY-----\n";
        let keys = Keys::from_seed(&parse_pem(private).unwrap());
        assert_eq!(keys.public_key_pem(), public);
        assert_eq!(pem("PRIVATE KEY", &pkcs8_der(&parse_pem(private).unwrap())), private);
        assert!(parse_pem(public).is_err(), "a public key is not a signing key");
    }

    #[test]
    fn key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let first = Keys::load_or_create(&nested).unwrap();
        let path = nested.join(KEY_FILE);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let second = Keys::load_or_create(&nested).unwrap();
        assert_eq!(first.verifier.key(), second.verifier.key(), "the second boot reuses the key");
        assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 1, "no temporary files left behind");
        let now = now();
        let token = first.issue(&account(), "foo", now, now + 60).unwrap();
        assert_eq!(second.inspect(&token).unwrap().id, "svc-1");
        assert!(first.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));

        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(Keys::load_or_create(&nested), Err(AuthError::Key(_))));
    }
}
