//! The Ed25519 signing key and the access tokens (EdDSA JWTs) it signs.
//!
//! The key lives in `<key_dir>/`[`KEY_FILE`] as a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`,
//! the format `openssl genpkey -algorithm ed25519` writes), created with mode 0600 on first
//! boot and reused afterwards. Only the 32-byte seed matters; the public key is derived. Keys
//! are read and written by `ed25519-dalek`'s PKCS#8 support, which also reads the v2 form (with
//! the public key, RFC 5958) other tools write, and refuses one whose public key does not match.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use micro_access::token::{Claims, Verifier};

use micro_core::Account;

use crate::AuthError;

/// The key file's name inside the key directory.
pub const KEY_FILE: &str = "auth_key";

/// The key pair that signs and verifies access tokens.
pub(crate) struct Keys {
    signing: SigningKey,
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
        let signing = SigningKey::from_bytes(seed);
        Keys {
            verifier: Verifier::new(signing.verifying_key()),
            signing,
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
        Ok(micro_access::token::sign(&self.signing, &Claims::new(account, issuer, iat, exp)))
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
    to_pem(&seed)
}

/// `seed` as a PKCS#8 v1 PEM (no public key), byte for byte what openssl and earlier
/// releases write, so key files keep one form.
fn to_pem(seed: &[u8; 32]) -> Result<String, AuthError> {
    let key = KeypairBytes { secret_key: *seed, public_key: None };
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| AuthError::Key(format!("cannot encode a key: {err}")))?;
    Ok(pem.to_string())
}

/// The seed of an Ed25519 PKCS#8 PEM (v1, or v2 with a matching public key). Text before the
/// `-----BEGIN` line (as some tools write) is skipped.
fn parse_pem(pem: &str) -> Result<[u8; 32], String> {
    let Some(start) = pem.find("-----BEGIN PRIVATE KEY-----") else {
        return Err("not a PEM private key (expected -----BEGIN PRIVATE KEY-----)".into());
    };
    SigningKey::from_pkcs8_pem(pem[start..].trim_end())
        .map(|key| key.to_bytes())
        .map_err(|err| format!("not an Ed25519 PKCS#8 private key: {err}"))
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
        assert_eq!(
            to_pem(&parse_pem(private).unwrap()).unwrap(),
            private,
            "the key file keeps openssl's form"
        );
        assert!(parse_pem(public).is_err(), "a public key is not a signing key");
    }

    #[test]
    fn pkcs8_v2_keys_are_read_and_malformed_ones_say_why() {
        // PKCS#8 v2 (RFC 5958: the public key follows the seed), as ed25519-dalek writes it.
        let signing = SigningKey::from_bytes(&[9u8; 32]);
        let v2 = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(v2.len() > to_pem(&[9u8; 32]).unwrap().len(), "the v2 form is the longer one:\n{}", *v2);
        let keys = Keys::from_text(&v2).unwrap();
        assert_eq!(keys.verifier.key(), signing.verifying_key().as_bytes());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), format!("an explanatory line\n{}", *v2)).unwrap();
        assert_eq!(Keys::load_or_create(dir.path()).unwrap().verifier.key(), keys.verifier.key());

        // A v2 key whose public key is another key's: refused, not silently re-derived.
        let mismatched = KeypairBytes {
            secret_key: [9u8; 32],
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes([1u8; 32])),
        };
        let mismatched = mismatched.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(Keys::from_text(&mismatched).is_err());

        for (bad, why) in [
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "not an Ed25519 PKCS#8 private key",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBSPjjcddNCbIi4ZfID2JQN3QfnMhs2JuR1kg0LrGGK5\n",
                "not an Ed25519 PKCS#8",
            ),
            ("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----", "not an Ed25519 PKCS#8"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
                "expected -----BEGIN PRIVATE KEY-----",
            ),
        ] {
            match Keys::from_text(bad) {
                Err(AuthError::Key(message)) => assert!(message.contains(why), "{bad:?}: {message}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        std::fs::write(
            dir.path().join(KEY_FILE),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let Err(AuthError::Key(message)) = Keys::load_or_create(dir.path()) else {
            panic!("a malformed key file loads")
        };
        assert!(
            message.contains(KEY_FILE) && message.contains("not an Ed25519 PKCS#8 private key"),
            "{message}"
        );
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
