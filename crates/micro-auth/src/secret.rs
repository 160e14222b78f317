//! Secrets: argon2id hashing (off the async runtime) and random strings.

use argon2::{Argon2, Params, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::AuthError;

/// argon2id with a cost profile. Production uses the crate's recommended parameters
/// (19 MiB, 2 passes); tests use the minimum so they stay fast in debug builds.
#[derive(Debug, Clone)]
pub(crate) struct Hasher {
    params: Params,
}

impl Hasher {
    pub(crate) fn new() -> Self {
        #[cfg(not(test))]
        let params = Params::default();
        // The minimum cost: tests check behaviour, not strength.
        #[cfg(test)]
        let params =
            Params::new(Params::MIN_M_COST, Params::MIN_T_COST, 1, None).expect("minimum params are valid");
        Self { params }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, self.params.clone())
    }

    /// The PHC string (`$argon2id$v=19$...`) of `secret` with a fresh random salt.
    pub(crate) async fn hash(&self, secret: &str) -> Result<String, AuthError> {
        let argon2 = self.argon2();
        let secret = secret.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || {
            argon2
                .hash_password(&secret)
                .map(|hash| hash.to_string())
                .map_err(|err| AuthError::Internal(format!("cannot hash a secret: {err}")))
        })
        .await
        .map_err(|err| AuthError::Internal(format!("hashing task failed: {err}")))?
    }

    /// Whether `secret` matches the PHC string `hash`, in time independent of where they differ.
    /// A malformed hash never matches.
    pub(crate) async fn verify(&self, secret: &str, hash: &str) -> Result<bool, AuthError> {
        let argon2 = self.argon2();
        let secret = secret.as_bytes().to_vec();
        let hash = hash.to_string();
        tokio::task::spawn_blocking(move || argon2.verify_password(&secret, hash.as_str()).is_ok())
            .await
            .map_err(|err| AuthError::Internal(format!("hashing task failed: {err}")))
    }
}

/// `bytes` random bytes as unpadded URL-safe base64.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    URL_SAFE_NO_PAD.encode(buf)
}

/// A random password of `len` letters and digits: nothing a shell or a flag parser treats
/// specially (a generated password starting with `-` read as a flag in `--password -x...`).
pub(crate) fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut buf = [0u8; 32];
        getrandom::fill(&mut buf).expect("the OS random source is available");
        // 248 = 4 × 62: rejecting larger bytes keeps every character equally likely.
        for byte in buf.into_iter().filter(|byte| *byte < 248).take(len - out.len()) {
            out.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
        }
    }
    out
}

/// A random version-4 UUID in its usual text form, the original's default secret and id.
pub(crate) fn random_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The hex SHA-256 of a refresh token: the store keeps only this, so a leaked store does not
/// leak usable refresh tokens (they have 256 random bits, so no slow hash is needed).
pub(crate) fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let hasher = Hasher::new();
        let a = hasher.hash("s3cret").await.unwrap();
        let b = hasher.hash("s3cret").await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(hasher.verify("s3cret", &a).await.unwrap());
        assert!(!hasher.verify("s3creT", &a).await.unwrap());
        assert!(!hasher.verify("s3cret", "not a hash").await.unwrap());
    }

    #[test]
    fn random_strings() {
        let uuid = random_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(random_uuid(), uuid);
        assert_eq!(random_token(32).len(), 43);
        let password = random_password(24);
        assert_eq!(password.len(), 24);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
        assert_ne!(random_password(24), password);
        assert_eq!(token_digest("abc").len(), 64);
    }
}
