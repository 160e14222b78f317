//! Sealing secret config values: XChaCha20-Poly1305 under one 32-byte server key.
//!
//! A sealed value is `base64(nonce || ciphertext)` (standard alphabet, padded) with a fresh
//! random 24-byte nonce per seal; the 16-byte Poly1305 tag ends the ciphertext, so a wrong key
//! or any altered byte fails to open instead of yielding garbage.
//!
//! The key comes from `MICRO_CONFIG_SECRET_KEY` ([`SecretKey::from_base64`]) or from a key file
//! ([`SecretKey::load_or_create`]) that is generated on first boot and reused afterwards. Losing
//! the key makes the stored secrets unreadable; it is never rotated silently.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

use crate::document::Sealer;

/// Length of the key in bytes.
pub const KEY_BYTES: usize = 32;

const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The operating system gave no randomness for a nonce.
    #[error("no secure randomness available: {0}")]
    Random(getrandom::Error),
    /// The cipher refused the plaintext (only possible for absurdly long input).
    #[error("the value could not be sealed")]
    Seal,
    /// The sealed text is not base64 of a nonce followed by a ciphertext.
    #[error("the sealed value is malformed")]
    Malformed,
    /// Authentication failed.
    #[error(
        "the sealed value cannot be opened: it was sealed with a different key or has been tampered with"
    )]
    Rejected,
    /// It opened, but what was sealed is not JSON text.
    #[error("the opened value is not JSON")]
    NotJson,
}

/// Why a secret key could not be loaded, created or parsed.
#[derive(Debug, thiserror::Error)]
pub enum SecretKeyError {
    /// The key file or its directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The key file exists but does not hold a key.
    #[error(
        "the config secret key file {} is malformed: it must hold the base64 encoding of {KEY_BYTES} bytes. \
         Restore the original file, or delete it to generate a new key (secrets sealed with the old key become unreadable)",
        path.display()
    )]
    Malformed { path: PathBuf },
    /// A key given as text is not the base64 encoding of 32 bytes.
    #[error("a config secret key must be the base64 encoding of {KEY_BYTES} bytes: {0}")]
    Invalid(String),
    /// The operating system gave no randomness for a new key.
    #[error("no secure randomness available to generate a key: {0}")]
    Random(getrandom::Error),
}

/// The server key config secrets are sealed with. Its `Debug` output never shows the key.
pub struct SecretKey {
    bytes: [u8; KEY_BYTES],
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, SecretKeyError> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(SecretKeyError::Random)?;
        Ok(Self { bytes })
    }

    /// Parses the base64 (standard alphabet, padded) of 32 bytes, as in `MICRO_CONFIG_SECRET_KEY`
    /// (e.g. the output of `openssl rand -base64 32`). Surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, SecretKeyError> {
        let decoded = BASE64
            .decode(text.trim())
            .map_err(|err| SecretKeyError::Invalid(format!("not base64 ({err})")))?;
        let bytes: [u8; KEY_BYTES] = decoded
            .try_into()
            .map_err(|wrong: Vec<u8>| SecretKeyError::Invalid(format!("got {} bytes", wrong.len())))?;
        Ok(Self { bytes })
    }

    /// The key as base64, the format [`SecretKey::from_base64`] and the key file use.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.bytes)
    }

    /// Loads the key file at `path`, or, when there is none, generates a key and writes it there
    /// atomically: parent directories are created with mode 0700, the file with mode 0600 (written
    /// to a temporary file, synced, then linked into place so a concurrent creator cannot be
    /// overwritten). A malformed file is an error, never replaced.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretKeyError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse_file(path, &text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Self::create(path),
            Err(source) => {
                Err(SecretKeyError::Io { action: "read the config secret key", path: path.into(), source })
            }
        }
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self, SecretKeyError> {
        let key = Self::from_base64(text).map_err(|_| SecretKeyError::Malformed { path: path.into() })?;
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", metadata.permissions().mode() & 0o777),
                "the config secret key file is readable by other users; chmod 600 it"
            );
        }
        Ok(key)
    }

    fn create(path: &Path) -> Result<Self, SecretKeyError> {
        let io_error = |action: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source| SecretKeyError::Io { action, path: at, source }
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error("create the directory", dir))?;

        let key = Self::generate()?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(SecretKeyError::Random)?;
        let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = dir.join(format!(".{file_name}.{}.tmp", u64::from_le_bytes(suffix)));

        let written = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
            file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
            file.sync_all()
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&temp);
            return Err(SecretKeyError::Io { action: "write the config secret key", path: temp, source });
        }

        // A hard link fails if the file appeared meanwhile (another process booting against the
        // same MICRO_HOME); then that key wins and ours is discarded. Filesystems without hard
        // links fall back to rename, which is still atomic for readers.
        let placed = match fs::hard_link(&temp, path) {
            Ok(()) => {
                let _ = fs::remove_file(&temp);
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&temp);
                Ok(false)
            }
            Err(_) => fs::rename(&temp, path).map(|()| true),
        };
        match placed {
            Ok(true) => {
                // Make the new directory entry durable; failing to is not fatal for this boot.
                if let Ok(dir) = File::open(dir) {
                    let _ = dir.sync_all();
                }
                tracing::info!(path = %path.display(), "generated a new config secret key");
                Ok(key)
            }
            Ok(false) => {
                let text = fs::read_to_string(path).map_err(io_error("read the config secret key", path))?;
                Self::parse_file(path, &text)
            }
            Err(source) => {
                let _ = fs::remove_file(&temp);
                Err(SecretKeyError::Io { action: "write the config secret key", path: path.into(), source })
            }
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

impl Sealer for SecretKey {
    fn seal(&self, plaintext: &[u8]) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(SecretError::Random)?;
        let ciphertext =
            self.cipher().encrypt(&XNonce::from(nonce), plaintext).map_err(|_| SecretError::Seal)?;
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(BASE64.encode(sealed))
    }

    fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = BASE64.decode(sealed).map_err(|_| SecretError::Malformed)?;
        if bytes.len() < NONCE_BYTES + TAG_BYTES {
            return Err(SecretError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| SecretError::Malformed)?;
        self.cipher().decrypt(&nonce, ciphertext).map_err(|_| SecretError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_with_fresh_nonces() {
        let key = SecretKey::generate().unwrap();
        let one = key.seal(b"\"hunter2\"").unwrap();
        let two = key.seal(b"\"hunter2\"").unwrap();
        assert_ne!(one, two, "every seal draws a new nonce");
        assert!(!one.contains("hunter2"));
        assert_eq!(BASE64.decode(&one).unwrap().len(), NONCE_BYTES + 9 + TAG_BYTES);
        assert_eq!(key.open(&one).unwrap(), b"\"hunter2\"");
        assert_eq!(key.open(&two).unwrap(), b"\"hunter2\"");
        assert_eq!(key.open(&key.seal(b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn wrong_keys_and_tampering_are_detected() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let sealed = key.seal(b"42").unwrap();

        let err = other.open(&sealed).unwrap_err();
        assert!(matches!(err, SecretError::Rejected));
        assert!(err.to_string().contains("sealed with a different key or has been tampered with"), "{err}");

        let mut bytes = BASE64.decode(&sealed).unwrap();
        for index in [0, NONCE_BYTES, bytes.len() - 1] {
            bytes[index] ^= 1;
            assert!(matches!(key.open(&BASE64.encode(&bytes)), Err(SecretError::Rejected)), "byte {index}");
            bytes[index] ^= 1;
        }
        bytes.pop();
        assert!(matches!(key.open(&BASE64.encode(&bytes)), Err(SecretError::Rejected)), "truncated");

        for malformed in ["", "not base64!", &BASE64.encode([0u8; NONCE_BYTES + TAG_BYTES - 1])] {
            assert!(matches!(key.open(malformed), Err(SecretError::Malformed)), "{malformed:?}");
        }
    }

    #[test]
    fn keys_parse_from_base64_of_exactly_32_bytes() {
        let key = SecretKey::generate().unwrap();
        let text = key.to_base64();
        let parsed = SecretKey::from_base64(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed.open(&key.seal(b"1").unwrap()).unwrap(), b"1");
        assert_eq!(format!("{parsed:?}"), "SecretKey([redacted])");
        assert!(!format!("{parsed:?}").contains(&text));

        let err = SecretKey::from_base64(&BASE64.encode([7u8; 16])).unwrap_err();
        assert!(err.to_string().contains("base64 encoding of 32 bytes: got 16 bytes"), "{err}");
        let err = SecretKey::from_base64("%%%").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        assert!(SecretKey::from_base64("").is_err());
    }

    #[test]
    fn key_files_are_created_private_and_reused() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("server/keys/config_secret_key");
        let key = SecretKey::load_or_create(&path).unwrap();

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&home.path().join("server")), 0o700);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");

        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.to_base64(), key.to_base64(), "the next boot reuses the key");
        assert_eq!(again.open(&key.seal(b"\"s\"").unwrap()).unwrap(), b"\"s\"");
    }

    #[test]
    fn malformed_key_files_are_errors_and_left_alone() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("config_secret_key");
        for content in ["", "garbage", &BASE64.encode([1u8; 31])] {
            fs::write(&path, content).unwrap();
            let err = SecretKey::load_or_create(&path).unwrap_err();
            assert!(matches!(err, SecretKeyError::Malformed { .. }), "{err}");
            let message = err.to_string();
            assert!(message.contains("is malformed") && message.contains("delete it"), "{message}");
            assert_eq!(fs::read_to_string(&path).unwrap(), content, "never overwritten");
        }

        let unreadable = home.path().join("a-directory");
        fs::create_dir(&unreadable).unwrap();
        let err = SecretKey::load_or_create(&unreadable).unwrap_err();
        assert!(matches!(err, SecretKeyError::Io { .. }), "{err}");
    }
}
