//! Access tokens: EdDSA (Ed25519) JWTs whose claims describe an [`Account`]. The server signs
//! them (micro-auth, through [`sign`]); everyone verifies them with the server's public key,
//! which it hands out as an SPKI PEM (`Auth.PublicKey`). Verification is local and costs tens
//! of microseconds, so callers keep verified tokens in a [`micro_core::tokens::VerifiedTokens`].
//!
//! The compact JWS (RFC 7515) is read and written here on `ed25519-dalek` alone, not through a
//! general JWT library, whose pure-Rust backend would bring RSA and NIST-curve code into every
//! service built with the framework (docs/security.md, "Access tokens"). Only one form is
//! accepted: header `alg` `EdDSA`, `typ` `JWT` if present, no `crit`; a strict Ed25519
//! signature (`verify_strict`); `exp` not passed and `nbf` (if any) reached, with
//! [`LEEWAY_SECS`] either way.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use micro_core::Account;

/// How far a verifier tolerates clocks that disagree, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The JOSE header of every token the server signs, byte for byte what earlier releases
/// wrote, so their tokens and these are one format.
const HEADER: &str = r#"{"typ":"JWT","alg":"EdDSA"}"#;

/// The only `alg` accepted (RFC 8037 §3.1).
const ALGORITHM: &str = "EdDSA";

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
    /// Not before, unix seconds: the server never sets it, but a token that names it is not
    /// accepted earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
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
            nbf: None,
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

/// The JOSE header fields a verifier looks at; others (`kid`, …) are ignored.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11): none are, so any is refused.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Why a token did not verify; the display text is what clients are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("expired")]
    Expired,
    /// Its `nbf` lies ahead (beyond [`LEEWAY_SECS`]).
    #[error("not yet valid")]
    NotYetValid,
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

/// Signs `claims` with the server's `key`: `base64url(header).base64url(claims).base64url(sig)`.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let payload = serde_json::to_vec(claims).expect("claims are strings, numbers and string maps");
    let mut token = URL_SAFE_NO_PAD.encode(HEADER);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    token
}

/// Verifies tokens against one Ed25519 public key.
#[derive(Clone)]
pub struct Verifier {
    key: VerifyingKey,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithm", &ALGORITHM).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for the Ed25519 public `key`.
    pub fn new(key: VerifyingKey) -> Self {
        Self { key }
    }

    /// A verifier for the key in an SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as
    /// `Auth.PublicKey` returns it; `None` when it is no Ed25519 public key.
    pub fn from_pem(pem: &str) -> Option<Self> {
        VerifyingKey::from_public_key_pem(pem.trim()).ok().map(Self::new)
    }

    /// The raw public key.
    pub fn key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The key as an SPKI PEM, the form [`Verifier::from_pem`] reads.
    pub fn public_key_pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).expect("an Ed25519 SPKI always encodes")
    }

    /// The account `token` describes and its expiry (unix seconds), once its signature, its
    /// algorithm (EdDSA only) and its validity period check out.
    pub fn verify(&self, token: &str) -> Result<(Account, u64), TokenError> {
        self.verify_at(token, u64::try_from(micro_core::time::unix_seconds()).unwrap_or(0))
    }

    /// [`Verifier::verify`] as of `now` (unix seconds). The signature is checked before the
    /// claims are read, so nothing of an unsigned payload is parsed.
    fn verify_at(&self, token: &str, now: u64) -> Result<(Account, u64), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = decode_json(header).ok_or(TokenError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(TokenError::UnexpectedAlgorithm);
        }
        if header.typ.is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT")) || header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
        let signed = &token[..header_and_payload_len(token)];
        self.key.verify_strict(signed.as_bytes(), &signature).map_err(|_| TokenError::BadSignature)?;

        let claims: Claims = decode_json(payload).ok_or(TokenError::BadClaims)?;
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
            return Err(TokenError::NotYetValid);
        }
        let expires_at = claims.exp;
        Ok((claims.into_account(), expires_at))
    }
}

/// The length of `header.payload`, the signed part of a three-part token.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').expect("the token has three parts")
}

/// The JSON value a base64url part (unpadded, as RFC 7515 §2 requires) holds.
fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 test 1: the seed and its public key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    /// A token jsonwebtoken 11 signed with [`SEED`] for [`reference_claims`] (the library this
    /// module replaced): tokens issued before the change must still verify, and the same claims
    /// must give the same bytes.
    const REFERENCE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9.eyJzdWIiOiJib2ItaWQiLCJpc3MiOiJmb28iLCJleHAiOjQxMDI0NDQ4MDAsImlhdCI6MTcwMDAwMDAwMCwidHlwZSI6InVzZXIiLCJzY29wZXMiOlsiYWRtaW4iXSwibWV0YWRhdGEiOnsiayI6InYifSwibmFtZSI6ImJvYiJ9.NzcikOCxi3Fdb8xhBziumkGEqSCnv1awjcHs4ZMm90-J8N5geX3Y5I362QQ-ZAo4G_s7eeXGHllIoNeP3CKODw";

    fn bytes32(text: &str) -> [u8; 32] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    fn signing_key() -> SigningKey {
        SigningKey::from_bytes(&bytes32(SEED))
    }

    fn verifier() -> Verifier {
        Verifier::new(VerifyingKey::from_bytes(&bytes32(PUBLIC)).unwrap())
    }

    fn reference_claims() -> Claims {
        let account = Account {
            id: "bob-id".into(),
            name: "bob".into(),
            kind: "user".into(),
            issuer: "foo".into(),
            scopes: vec!["admin".into()],
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        };
        Claims::new(&account, "foo", 1_700_000_000, 4_102_444_800)
    }

    /// A token of any header and payload, signed with [`SEED`].
    fn sign_raw(header: &str, claims: &serde_json::Value) -> String {
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = signing_key().sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn sign_claims(claims: &serde_json::Value) -> String {
        sign_raw(HEADER, claims)
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn tokens_of_earlier_releases_verify_and_signing_is_byte_compatible() {
        assert_eq!(sign(&signing_key(), &reference_claims()), REFERENCE);
        let (account, expires_at) = verifier().verify_at(REFERENCE, 1_700_000_000).unwrap();
        assert_eq!((account, expires_at), (reference_claims().into_account(), 4_102_444_800));
        assert_eq!(verifier().verify(REFERENCE).unwrap().1, 4_102_444_800, "valid until 2100");
    }

    #[test]
    fn tokens_verify_with_the_public_key_pem() {
        let verifier = verifier();
        let pem = verifier.public_key_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert_eq!(Verifier::from_pem(&pem).unwrap().key(), &bytes32(PUBLIC));
        // `openssl pkey -pubout` of an `openssl genpkey -algorithm ed25519` key, CRLF and all.
        let openssl = "-----BEGIN PUBLIC KEY-----\r\nMCowBQYDK2VwAyEA3DvUfan9T7iFYU8Fdu9n/26u963L6czM9lDwgIqZKjQ=\r\n-----END PUBLIC KEY-----\r\n";
        assert!(Verifier::from_pem(openssl).is_some());
        for bad in [
            "",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBSPjjcddNCbIi4ZfID2JQN3QfnMhs2JuR1kg0LrGGK5\n-----END PRIVATE KEY-----",
            "MCowBQYDK2VwAyEA3DvUfan9T7iFYU8Fdu9n/26u963L6czM9lDwgIqZKjQ=",
        ] {
            assert!(Verifier::from_pem(bad).is_none(), "{bad:?}");
        }

        let exp = now() + 60;
        let claims = serde_json::json!({
            "sub": "bob-id", "iss": "foo", "exp": exp, "type": "user", "scopes": ["admin"], "name": "bob"
        });
        let (account, expires_at) = verifier.verify(&sign_claims(&claims)).unwrap();
        assert_eq!(expires_at, exp);
        assert_eq!(
            (account.id.as_str(), account.name.as_str(), account.issuer.as_str(), account.kind.as_str()),
            ("bob-id", "bob", "foo", "user")
        );
        assert_eq!(account.scopes, ["admin"]);
        let nameless = serde_json::json!({"sub": "x", "iss": "foo", "exp": exp, "kid": "ignored"});
        assert_eq!(
            verifier.verify(&sign_claims(&nameless)).unwrap().0.name,
            "x",
            "the name defaults to the id"
        );
    }

    #[test]
    fn bad_tokens_say_why() {
        let verifier = verifier();
        let now = now();
        let claims = |exp: u64| serde_json::json!({"sub": "x", "iss": "foo", "exp": exp});
        let refusal = |token: &str| verifier.verify_at(token, now).map(|_| ()).unwrap_err();

        assert_eq!(refusal(&sign_claims(&claims(now - 3600))), TokenError::Expired);
        assert_eq!(refusal(&sign_claims(&claims(now - LEEWAY_SECS - 1))), TokenError::Expired);
        assert!(
            verifier.verify_at(&sign_claims(&claims(now - LEEWAY_SECS)), now).is_ok(),
            "within the leeway"
        );
        let early =
            serde_json::json!({"sub": "x", "iss": "foo", "exp": now + 60, "nbf": now + LEEWAY_SECS + 1});
        assert_eq!(refusal(&sign_claims(&early)), TokenError::NotYetValid);
        let nearly = serde_json::json!({"sub": "x", "iss": "foo", "exp": now + 60, "nbf": now + LEEWAY_SECS});
        assert!(verifier.verify_at(&sign_claims(&nearly), now).is_ok(), "nbf within the leeway");

        let fresh = sign_claims(&claims(now + 60));
        // RFC 8032 test 2's public key: a valid key, not the signer's.
        let other = Verifier::new(
            VerifyingKey::from_bytes(&bytes32(
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            ))
            .unwrap(),
        );
        assert_eq!(other.verify(&fresh), Err(TokenError::BadSignature));
        // Another payload under the first token's signature.
        let parts: Vec<&str> = fresh.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(claims(now + 3600).to_string());
        assert_eq!(refusal(&format!("{}.{forged}.{}", parts[0], parts[2])), TokenError::BadSignature);

        let no_issuer = serde_json::json!({"sub": "x", "exp": now + 60});
        assert_eq!(refusal(&sign_claims(&no_issuer)), TokenError::BadClaims);
        let text_expiry = serde_json::json!({"sub": "x", "iss": "foo", "exp": "never"});
        assert_eq!(refusal(&sign_claims(&text_expiry)), TokenError::BadClaims);

        // Only EdDSA, even when the signature is a good Ed25519 one over the rest.
        for header in [r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"alg":"none"}"#, r#"{"alg":"eddsa"}"#] {
            assert_eq!(
                refusal(&sign_raw(header, &claims(now + 60))),
                TokenError::UnexpectedAlgorithm,
                "{header}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"admin","iss":"micro","exp":99999999999,"scopes":["admin"]}"#)
        );
        assert_eq!(refusal(&unsigned), TokenError::UnexpectedAlgorithm, "alg none is never accepted");
        let no_signature = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(refusal(&no_signature), TokenError::Malformed);

        for header in [
            r#"{"alg":"EdDSA","typ":"JWT","crit":["b64"]}"#,
            r#"{"alg":"EdDSA","typ":"at+jwt"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"EdDSA","alg":"none"}"#,
        ] {
            assert_eq!(refusal(&sign_raw(header, &claims(now + 60))), TokenError::Malformed, "{header}");
        }
        assert!(
            verifier.verify_at(&sign_raw(r#"{"alg":"EdDSA"}"#, &claims(now + 60)), now).is_ok(),
            "typ is optional"
        );
        for malformed in [
            "not-a-token",
            "",
            "..",
            &format!("{fresh}.x"),
            &format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        ] {
            assert_eq!(refusal(malformed), TokenError::Malformed, "{malformed:?}");
        }
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
