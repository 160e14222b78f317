//! Secrets: argon2id hashing (off the async runtime) and random strings.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use micro_core::workers::{WorkerError, Workers};
use sha2::{Digest, Sha256};

use crate::AuthError;

/// Hashes run at most this many at a time, each on a thread of its own kept for hashing only.
/// Two: a hash is CPU-bound (tens of milliseconds) and logins are rare next to calls (a token is
/// refreshed without one), but under a flood of bad logins one thread made a good login wait
/// for every hash queued before it; each thread holds [`MEMORY_KIB`] for good.
///
/// One argon2id hash works in [`MEMORY_KIB`] of 64-byte-aligned memory. Allocated afresh per
/// hash (what `argon2`'s own `hash_password` does), glibc never reused the freed aligned block,
/// and the server's resident memory grew by the full cost with every login attempt, good or
/// bad (16 MiB idle, 90 MiB after ten logins at 7 MiB each); a burst of concurrent logins could
/// also claim the cost once per login. Each hashing thread instead keeps one block of memory
/// and reuses it, so hashing holds at most `HASH_THREADS × MEMORY_KIB` however many logins come,
/// and logins beyond `HASH_THREADS` at a time wait their turn.
pub const HASH_THREADS: usize = 2;

/// Most hashes waiting for a hashing thread. One more is refused at once with
/// [`AuthError::Throttled`] (gRPC `RESOURCE_EXHAUSTED`, HTTP 429 with `Retry-After`) instead of
/// queueing: a login at the back of a full queue waits about `MAX_QUEUED_HASHES / HASH_THREADS`
/// hash times (about a second), and a flood past that is answered fast rather than late. Larger
/// than what two peers at [`MAX_FAILED_LOGINS_PER_PEER`](crate::throttle::MAX_FAILED_LOGINS_PER_PEER)
/// can hold in flight, so two flooding addresses alone cannot shut out a third. A waiting hash
/// whose caller left is skipped, not computed.
pub const MAX_QUEUED_HASHES: usize = 64;

/// How long a login refused for a full hashing queue is told to wait.
const BUSY_RETRY_SECS: u64 = 1;

/// argon2id memory cost in KiB, with [`PASSES`]: OWASP's "m=7 MiB, t=5, p=1" profile, which
/// it rates as strong as the argon2 crate's default of m=19 MiB, t=2 at the same CPU time, with
/// a third of the memory held per hash. Hashes made with other parameters (they are in the PHC
/// string) still verify.
const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;

/// argon2id with a cost profile, run on the hashing threads (never on the async runtime).
/// Production uses [`MEMORY_KIB`] and [`PASSES`]; tests use the minimum so they stay fast in
/// debug builds. Clones share the threads.
#[derive(Debug, Clone)]
pub(crate) struct Hasher {
    params: Params,
    pool: Workers,
}

impl Hasher {
    pub(crate) fn new() -> Result<Self, AuthError> {
        Self::with_limits(HASH_THREADS, MAX_QUEUED_HASHES)
    }

    /// A hasher of `threads` threads and at most `capacity` waiting hashes.
    pub(crate) fn with_limits(threads: usize, capacity: usize) -> Result<Self, AuthError> {
        #[cfg(not(test))]
        let params = Params::new(MEMORY_KIB, PASSES, 1, None).expect("the production params are valid");
        // The minimum cost: tests check behaviour, not strength.
        #[cfg(test)]
        let params =
            Params::new(Params::MIN_M_COST, Params::MIN_T_COST, 1, None).expect("minimum params are valid");
        let pool = Workers::start_bounded("hash", threads, capacity)
            .map_err(|err| AuthError::Internal(format!("cannot start the password hashing thread: {err}")))?;
        Ok(Self { params, pool })
    }

    /// The PHC string (`$argon2id$v=19$...`) of `secret` with a fresh random salt.
    pub(crate) async fn hash(&self, secret: &str) -> Result<String, AuthError> {
        let params = self.params.clone();
        let secret = secret.as_bytes().to_vec();
        let failed =
            |err: &dyn std::fmt::Display| AuthError::Internal(format!("cannot hash a secret: {err}"));
        self.run(move || {
            let mut salt = [0u8; SALT_BYTES];
            getrandom::fill(&mut salt).map_err(|err| failed(&err))?;
            let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            with_memory(&params, |memory| {
                argon2.hash_password_into_with_memory(&secret, &salt, &mut output, memory)
            })
            .map_err(|err| failed(&err))?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params).map_err(|err| failed(&err))?,
                salt: Some(Salt::new(&salt).map_err(|err| failed(&err))?),
                hash: Some(Output::new(&output).map_err(|err| failed(&err))?),
            };
            Ok(phc.to_string())
        })
        .await?
    }

    /// Whether `secret` matches the PHC string `hash`, in time independent of where they differ.
    /// A malformed hash never matches.
    pub(crate) async fn verify(&self, secret: &str, hash: &str) -> Result<bool, AuthError> {
        let secret = secret.as_bytes().to_vec();
        let hash = hash.to_string();
        self.run(move || matches(&secret, &hash).unwrap_or(false)).await
    }

    /// Runs `work` on a hashing thread; a panic in it is an error, and the thread lives on. A
    /// full queue refuses at once; dropping the future before a thread took the job skips it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        self.pool.run(work).await.map_err(|err| match err {
            WorkerError::Full { capacity, .. } => AuthError::Throttled {
                limit: format!(
                    "the server is busy checking other logins: MAX_QUEUED_HASHES = {capacity} may wait"
                ),
                retry_after_secs: BUSY_RETRY_SECS,
            },
            WorkerError::Failed(_) => AuthError::Internal(err.to_string()),
        })
    }
}

/// Salt of new hashes, the argon2 crate's recommended length.
const SALT_BYTES: usize = 16;

/// Whether `secret` hashes to the PHC string `hash` under the parameters the string names;
/// `None` when the string is not a usable argon2 hash.
fn matches(secret: &[u8], hash: &str) -> Option<bool> {
    let phc = PasswordHash::new(hash).ok()?;
    let algorithm = Algorithm::try_from(phc.algorithm.as_str()).ok()?;
    let version = phc.version.map_or(Some(Version::default()), |v| Version::try_from(v).ok())?;
    let params = Params::try_from(&phc).ok()?;
    let (salt, expected) = (phc.salt?, phc.hash?);
    let mut output = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    with_memory(&params, |memory| argon2.hash_password_into_with_memory(secret, &salt, &mut output, memory))
        .ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&output).ok()? == expected)
}

thread_local! {
    /// The working memory of the hashing thread it lives on, kept between hashes.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `hash` with the `params.block_count()` blocks of memory it needs: this thread's kept
/// block, grown once to the production cost, or for a costlier stored hash a block of its own.
fn with_memory<T>(params: &Params, hash: impl FnOnce(&mut [Block]) -> T) -> T {
    let blocks = params.block_count();
    if blocks > MEMORY_KIB as usize {
        return hash(&mut vec![Block::new(); blocks]);
    }
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        hash(&mut memory[..blocks])
    })
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
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// The hex SHA-256 of a refresh token: the store keeps only this, so a leaked store does not
/// leak usable refresh tokens (they have 256 random bits, so no slow hash is needed).
pub(crate) fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let hasher = Hasher::new().unwrap();
        let a = hasher.hash("s3cret").await.unwrap();
        let b = hasher.hash("s3cret").await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(hasher.verify("s3cret", &a).await.unwrap());
        assert!(!hasher.verify("s3creT", &a).await.unwrap());
        assert!(!hasher.verify("s3cret", "not a hash").await.unwrap());
    }

    #[tokio::test]
    async fn hashing_is_bounded_and_survives_a_panic() {
        let hasher = Hasher::new().unwrap();
        // More concurrent hashes than threads: the rest queue, all finish.
        let mut hashes = tokio::task::JoinSet::new();
        for n in 0..4 * HASH_THREADS {
            let hasher = hasher.clone();
            hashes.spawn(async move { (n, hasher.hash(&format!("secret-{n}")).await.unwrap()) });
        }
        let hashes = hashes.join_all().await;
        assert_eq!(hashes.len(), 4 * HASH_THREADS);
        for (n, hash) in &hashes {
            assert!(hasher.verify(&format!("secret-{n}"), hash).await.unwrap());
        }
        let panicked = hasher.run(|| panic!("inside a hash")).await;
        assert!(matches!(panicked, Err(AuthError::Internal(_))), "{panicked:?}");
        for _ in 0..HASH_THREADS {
            assert!(hasher.hash("after").await.is_ok(), "every thread still hashes");
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_naming_the_limit() {
        use std::future::Future;
        let hasher = Hasher::with_limits(1, 1).unwrap();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                hasher
                    .run(move || {
                        let _ = started_tx.send(());
                        let _ = released.recv();
                    })
                    .await
            }
        });
        started.await.unwrap();
        // One hash waits (polled once, so it is queued) ...
        let mut waiting = Box::pin(hasher.hash("waiting"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        // ... so the next is refused without waiting.
        let refused = hasher.verify("x", "y").await.unwrap_err();
        assert_eq!(
            refused,
            AuthError::Throttled {
                limit: "the server is busy checking other logins: MAX_QUEUED_HASHES = 1 may wait".into(),
                retry_after_secs: 1,
            }
        );
        assert!(refused.to_string().ends_with("; retry in 1 s"), "{refused}");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert!(waiting.await.unwrap().starts_with("$argon2id$"));
    }

    #[test]
    fn production_params_are_valid() {
        let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap();
        assert_eq!(params.m_cost(), 7168);
    }

    #[tokio::test]
    async fn hashes_of_the_argon2_crate_still_verify() {
        use argon2::{PasswordHasher, PasswordVerifier};
        // Made by the crate's own hasher with its default (19 MiB) parameters, as every hash
        // before the hashing threads was: costlier than the kept memory.
        let stored = Argon2::default().hash_password(b"old secret").unwrap().to_string();
        let hasher = Hasher::new().unwrap();
        assert!(hasher.verify("old secret", &stored).await.unwrap());
        assert!(!hasher.verify("old secreT", &stored).await.unwrap());
        // And ours verify with the crate's verifier: the same PHC format.
        let ours = hasher.hash("new secret").await.unwrap();
        assert!(Argon2::default().verify_password(b"new secret", ours.as_str()).is_ok());
        assert!(!hasher.verify("new secret", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$").await.unwrap());
        assert!(!hasher.verify("x", "$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA").await.unwrap());
    }

    #[test]
    fn random_strings() {
        let uuid = random_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "{uuid}");
        assert_ne!(random_uuid(), uuid);
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "FIPS 180-2's SHA-256 of abc, in lower-case hex: the keys of stored refresh tokens"
        );
        assert_eq!(random_token(32).len(), 43);
        let password = random_password(24);
        assert_eq!(password.len(), 24);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
        assert_ne!(random_password(24), password);
        assert_eq!(token_digest("abc").len(), 64);
    }
}
