//! Access tokens: EdDSA (Ed25519) JWTs whose claims describe an [`Account`]. The server signs
//! them (micro-auth); everyone verifies them with the server's public key, which it hands out
//! as an SPKI PEM (`Auth.PublicKey`). Verification is local and costs tens of microseconds, so
//! callers keep verified tokens in a [`micro_core::tokens::VerifiedTokens`].

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use micro_core::Account;

/// How far a verifier tolerates clocks that disagree, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The claims of an access token. `sub`/`iss`/`exp`/`iat` are the registered JWT claims; the
/// rest are the original's custom claims (docs/compatibility.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id.
    pub sub: String,
    /// The namespace that issued the account.
    pub iss: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Issued at, unix seconds.
    #[serde(default)]
    pub iat: u64,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub name: String,
}

impl Claims {
    /// The claims of a token for `account`, issued by `issuer`, valid from `iat` until `exp`.
    pub fn new(account: &Account, issuer: &str, iat: u64, exp: u64) -> Self {
        Claims {
            sub: account.id.clone(),
            iss: issuer.to_string(),
            exp,
            iat,
            kind: account.kind.clone(),
            scopes: account.scopes.clone(),
            metadata: account.metadata.clone(),
            name: account.name.clone(),
        }
    }

    /// The account the claims describe (a missing name is the id).
    pub fn into_account(self) -> Account {
        let name = if self.name.is_empty() { self.sub.clone() } else { self.name };
        Account {
            id: self.sub,
            name,
            kind: self.kind,
            issuer: self.iss,
            scopes: self.scopes,
            metadata: self.metadata,
        }
    }
}

/// Why a token did not verify; the display text is what clients are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("expired")]
    Expired,
    /// Signed by another key: the caller's, or the server's previous one.
    #[error("bad signature")]
    BadSignature,
    #[error("unexpected algorithm")]
    UnexpectedAlgorithm,
    #[error("bad claims")]
    BadClaims,
    #[error("malformed")]
    Malformed,
}

/// Verifies tokens against one Ed25519 public key.
#[derive(Clone)]
pub struct Verifier {
    key: [u8; 32],
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithm", &"EdDSA").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for the raw 32-byte Ed25519 public `key`.
    pub fn new(key: [u8; 32]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Self { key, decoding: DecodingKey::from_ed_der(&key), validation }
    }

    /// A verifier for the key in an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as
    /// `Auth.PublicKey` returns it; `None` when it is no Ed25519 public key.
    pub fn from_pem(pem: &str) -> Option<Self> {
        let body: String = pem.lines().map(str::trim).filter(|line| !line.starts_with("-----")).collect();
        let der = STANDARD.decode(body).ok()?;
        let key = der.strip_prefix(&SPKI_PREFIX[..])?;
        Some(Self::new(key.try_into().ok()?))
    }

    /// The raw public key.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The key as an SPKI PEM, the form [`Verifier::from_pem`] reads.
    pub fn public_key_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.key);
        pem("PUBLIC KEY", &der)
    }

    /// The account `token` describes and its expiry (unix seconds), once its signature, its
    /// algorithm (EdDSA only) and its expiry check out.
    pub fn verify(&self, token: &str) -> Result<(Account, u64), TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| {
                match err.kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::UnexpectedAlgorithm,
                    // Claims that are missing or of the wrong type fail as JSON that is no `Claims`.
                    ErrorKind::MissingRequiredClaim(_)
                    | ErrorKind::InvalidClaimFormat(_)
                    | ErrorKind::Json(_) => TokenError::BadClaims,
                    _ => TokenError::Malformed,
                }
            })?
            .claims;
        let expires_at = claims.exp;
        Ok((claims.into_account(), expires_at))
    }
}

/// `der` as PEM text with the given label, 64 base64 characters per line.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 test 1: the seed and its public key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn hex(text: &str) -> [u8; 32] {
        let bytes: Vec<u8> =
            (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect();
        bytes.try_into().unwrap()
    }

    fn sign(claims: &serde_json::Value) -> String {
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&hex(SEED));
        let key = jsonwebtoken::EncodingKey::from_ed_der(&pkcs8);
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::EdDSA), claims, &key).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn tokens_verify_with_the_public_key_pem() {
        let verifier = Verifier::new(hex(PUBLIC));
        let pem = verifier.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert_eq!(Verifier::from_pem(&pem).unwrap().key(), &hex(PUBLIC));
        assert!(Verifier::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_none());

        let exp = now() + 60;
        let claims = serde_json::json!({
            "sub": "bob-id", "iss": "foo", "exp": exp, "type": "user", "scopes": ["admin"], "name": "bob"
        });
        let (account, expires_at) = verifier.verify(&sign(&claims)).unwrap();
        assert_eq!(expires_at, exp);
        assert_eq!(
            (account.id.as_str(), account.name.as_str(), account.issuer.as_str(), account.kind.as_str()),
            ("bob-id", "bob", "foo", "user")
        );
        assert_eq!(account.scopes, ["admin"]);
        let nameless = serde_json::json!({"sub": "x", "iss": "foo", "exp": exp});
        assert_eq!(verifier.verify(&sign(&nameless)).unwrap().0.name, "x", "the name defaults to the id");
    }

    #[test]
    fn bad_tokens_say_why() {
        let verifier = Verifier::new(hex(PUBLIC));
        let expired = serde_json::json!({"sub": "x", "iss": "foo", "exp": now() - 3600});
        assert_eq!(verifier.verify(&sign(&expired)), Err(TokenError::Expired));
        let fresh = sign(&serde_json::json!({"sub": "x", "iss": "foo", "exp": now() + 60}));
        // RFC 8032 test 2's public key: a valid key, not the signer's.
        let other = Verifier::new(hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"));
        assert_eq!(other.verify(&fresh), Err(TokenError::BadSignature));
        let no_issuer = serde_json::json!({"sub": "x", "exp": now() + 60});
        assert_eq!(verifier.verify(&sign(&no_issuer)), Err(TokenError::BadClaims));
        assert_eq!(verifier.verify("not-a-token"), Err(TokenError::Malformed));

        let unsigned = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"sub":"admin","iss":"micro","exp":99999999999,"scopes":["admin"]}"#)
        );
        assert!(verifier.verify(&unsigned).is_err(), "alg none is never accepted");
    }

    #[test]
    fn claims_round_trip_an_account() {
        let account = Account {
            id: "svc-1".into(),
            name: "svc".into(),
            kind: "service".into(),
            issuer: "foo".into(),
            scopes: vec!["service".into()],
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        };
        let claims = Claims::new(&account, "foo", 1, 2);
        assert_eq!((claims.iat, claims.exp), (1, 2));
        assert_eq!(claims.into_account(), account);
    }
}
