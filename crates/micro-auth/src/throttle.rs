//! Failed-login limits: per account and per peer, with a backoff that grows while failures go on
//! (docs/security.md, "Logins and tokens").
//!
//! Each limited key (an account `(namespace, id)`, or a peer IP) counts the logins it has in
//! flight and the failures within [`FAILED_LOGIN_WINDOW`]. When failures and logins in flight
//! together reach the key's limit, further logins are refused at once, before any hashing: while
//! only in flight, for a second; after the limit's worth of failures, for a backoff of
//! [`LOGIN_BACKOFF`] doubled at each further block up to [`MAX_LOGIN_BACKOFF`]. Counting logins in
//! flight is what keeps a burst of concurrent guesses from all passing the check before the first
//! has failed. A successful login clears its account's record; a peer's record is not cleared by
//! a success, or an attacker holding one valid account could clear its peer's count between
//! guesses. Unknown accounts are limited exactly like known ones (the key is the id asked for),
//! so a refusal says nothing about whether an account exists.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::AuthError;

/// Failed logins (wrong secret or unknown account) one account id of one namespace may have
/// within [`FAILED_LOGIN_WINDOW`] before its logins are refused for a backoff; logins in flight
/// count toward it.
pub const MAX_FAILED_LOGINS_PER_ACCOUNT: u32 = 5;
/// Failed logins one peer IP may have within [`FAILED_LOGIN_WINDOW`] before its logins are
/// refused for a backoff; logins in flight count toward it. (Through the HTTP gateway the peer is
/// the HTTP client, not the gateway.)
pub const MAX_FAILED_LOGINS_PER_PEER: u32 = 20;
/// How long a failed login is remembered toward the limits above.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long an account or peer is refused after reaching its limit the first time; each further
/// block while failures go on doubles it.
pub const LOGIN_BACKOFF: Duration = Duration::from_secs(30);
/// The longest backoff.
pub const MAX_LOGIN_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Most accounts (and, separately, peers) whose failures are remembered at once. Past it, records
/// with nothing left to remember are dropped; a new key that still does not fit goes untracked
/// (filling the table takes this many hashed failures within the window, far beyond what the
/// hashing threads do in [`FAILED_LOGIN_WINDOW`]).
pub const MAX_TRACKED_LOGIN_KEYS: usize = 65_536;

/// How long a key at its limit with logins only in flight (no block yet) is told to wait.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// An account key: namespace and account id (or the id asked for, when no account has it).
pub(crate) type AccountKey = (String, String);

/// The two limits every credential login passes.
#[derive(Debug)]
pub(crate) struct Throttle {
    pub(crate) accounts: Limiter<AccountKey>,
    pub(crate) peers: Limiter<IpAddr>,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Self {
            accounts: Limiter::new(
                MAX_FAILED_LOGINS_PER_ACCOUNT,
                true,
                "too many failed logins for this account: MAX_FAILED_LOGINS_PER_ACCOUNT",
            ),
            peers: Limiter::new(
                MAX_FAILED_LOGINS_PER_PEER,
                false,
                "too many failed logins from this address: MAX_FAILED_LOGINS_PER_PEER",
            ),
        }
    }
}

#[derive(Debug)]
struct Entry {
    in_flight: u32,
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    /// Refused until then.
    blocked_until: Option<Instant>,
    /// Blocks in a row, for the backoff.
    strikes: u32,
    /// The record matters until [`FAILED_LOGIN_WINDOW`] after this: the last failure or the end
    /// of the last block.
    last_event: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            in_flight: 0,
            failures: 0,
            window_start: now,
            blocked_until: None,
            strikes: 0,
            last_event: now,
        }
    }

    /// Starts a new window when the current one has passed: its failures no longer count.
    fn roll_window(&mut self, now: Instant) {
        if now.saturating_duration_since(self.window_start) >= FAILED_LOGIN_WINDOW {
            self.failures = 0;
            self.window_start = now;
        }
    }

    /// Nothing in flight, not blocked, and nothing within the window: forgettable.
    fn idle(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self.blocked_until.is_none_or(|until| until <= now)
            && now.saturating_duration_since(self.last_event) >= FAILED_LOGIN_WINDOW
    }
}

/// One limit: at most `max` failures plus logins in flight per key.
#[derive(Debug)]
pub(crate) struct Limiter<K> {
    max: u32,
    /// Whether a successful login clears the key's record.
    reset_on_success: bool,
    /// What the refusal says: the reason and the limit's name.
    reason: &'static str,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Limiter<K> {
    fn new(max: u32, reset_on_success: bool, reason: &'static str) -> Self {
        Self { max, reset_on_success, reason, entries: Mutex::new(HashMap::new()) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.entries.lock().expect("the login limiter lock is never poisoned")
    }

    /// Starts a login for `key`, or refuses it with [`AuthError::Throttled`]. The login counts as
    /// in flight until the [`Attempt`] is finished or dropped.
    pub(crate) fn begin(&self, key: K, now: Instant) -> Result<Attempt<'_, K>, AuthError> {
        let mut entries = self.entries();
        if !entries.contains_key(&key) && entries.len() >= MAX_TRACKED_LOGIN_KEYS {
            entries.retain(|_, entry| !entry.idle(now));
            if entries.len() >= MAX_TRACKED_LOGIN_KEYS {
                tracing::warn!(limit = self.reason, "too many login records to track another");
                return Ok(Attempt { limiter: self, key: None });
            }
        }
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry::new(now));
        if entry.idle(now) {
            *entry = Entry::new(now); // A quiet window forgets the strikes too.
        }
        if let Some(until) = entry.blocked_until {
            if until > now {
                return Err(self.refusal(until - now));
            }
            entry.blocked_until = None;
        }
        entry.roll_window(now);
        if entry.failures + entry.in_flight >= self.max {
            return Err(self.refusal(IN_FLIGHT_RETRY));
        }
        entry.in_flight += 1;
        Ok(Attempt { limiter: self, key: Some(key) })
    }

    fn refusal(&self, wait: Duration) -> AuthError {
        let window = FAILED_LOGIN_WINDOW.as_secs();
        AuthError::Throttled {
            limit: format!("{} = {} within {window} s", self.reason, self.max),
            // Whole seconds, rounded up: retrying at the announced time must not be early.
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    }

    fn end(&self, key: &K, success: Option<bool>, now: Instant) {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(key) else { return };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match success {
            Some(true) if self.reset_on_success => {
                entries.remove(key);
            }
            Some(false) => {
                entry.roll_window(now);
                entry.failures += 1;
                entry.last_event = now;
                if entry.failures >= self.max {
                    entry.strikes = entry.strikes.saturating_add(1);
                    let backoff = backoff(entry.strikes);
                    entry.blocked_until = Some(now + backoff);
                    entry.last_event = now + backoff;
                    entry.failures = 0;
                    entry.window_start = now + backoff;
                    tracing::warn!(key = ?key, limit = self.reason, ?backoff, "too many failed logins: refusing for a while");
                }
            }
            Some(true) | None => {}
        }
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.entries().len()
    }
}

/// The backoff of the `strikes`-th block in a row.
fn backoff(strikes: u32) -> Duration {
    let doublings = strikes.saturating_sub(1).min(16);
    LOGIN_BACKOFF.saturating_mul(1 << doublings).min(MAX_LOGIN_BACKOFF)
}

/// One login in flight for a key; dropped unfinished (an error, or the caller left) it counts as
/// neither success nor failure.
#[must_use = "an attempt counts as in flight until finished or dropped"]
pub(crate) struct Attempt<'a, K: Hash + Eq + Clone + std::fmt::Debug> {
    limiter: &'a Limiter<K>,
    /// `None` when the key went untracked.
    key: Option<K>,
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Attempt<'_, K> {
    /// Records the outcome: a failure counts toward the limit, a success may clear the record.
    pub(crate) fn finish(mut self, success: bool, now: Instant) {
        if let Some(key) = self.key.take() {
            self.limiter.end(&key, Some(success), now);
        }
    }
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Drop for Attempt<'_, K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.limiter.end(&key, None, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttled(result: Result<Attempt<'_, IpAddr>, AuthError>) -> u64 {
        match result {
            Err(AuthError::Throttled { retry_after_secs, limit }) => {
                assert!(limit.contains("MAX_FAILED_LOGINS_PER_PEER = 20"), "{limit}");
                retry_after_secs
            }
            Err(other) => panic!("not throttled: {other:?}"),
            Ok(_) => panic!("admitted"),
        }
    }

    #[test]
    fn failures_block_a_peer_with_a_growing_backoff() {
        let throttle = Throttle::new();
        let peers = &throttle.peers;
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILED_LOGINS_PER_PEER - 1 {
            peers.begin(peer, t0).unwrap().finish(false, t0);
        }
        // A success does not clear a peer's count.
        peers.begin(peer, t0).unwrap().finish(true, t0);
        peers.begin(peer, t0).unwrap().finish(false, t0);
        assert_eq!(throttled(peers.begin(peer, t0)), LOGIN_BACKOFF.as_secs());
        peers.begin(other, t0).expect("another peer is not affected").finish(true, t0);

        // The backoff passes; failing again to the limit blocks for twice as long.
        let t1 = t0 + LOGIN_BACKOFF;
        assert_eq!(throttled(peers.begin(peer, t1 - Duration::from_millis(1500))), 2, "rounded up");
        for _ in 0..MAX_FAILED_LOGINS_PER_PEER {
            peers.begin(peer, t1).unwrap().finish(false, t1);
        }
        assert_eq!(throttled(peers.begin(peer, t1)), 2 * LOGIN_BACKOFF.as_secs());
        assert_eq!(backoff(30), MAX_LOGIN_BACKOFF, "capped");

        // A quiet window after the block forgets everything: the next block is short again.
        let t2 = t1 + 2 * LOGIN_BACKOFF + FAILED_LOGIN_WINDOW;
        for _ in 0..MAX_FAILED_LOGINS_PER_PEER {
            peers.begin(peer, t2).unwrap().finish(false, t2);
        }
        assert_eq!(throttled(peers.begin(peer, t2)), LOGIN_BACKOFF.as_secs());
    }

    #[test]
    fn logins_in_flight_count_and_a_success_clears_an_account() {
        let throttle = Throttle::new();
        let accounts = &throttle.accounts;
        let key = || ("foo".to_string(), "bob".to_string());
        let now = Instant::now();
        // A burst: only the limit's worth get through before any has failed.
        let attempts: Vec<_> =
            (0..MAX_FAILED_LOGINS_PER_ACCOUNT).map(|_| accounts.begin(key(), now).unwrap()).collect();
        let Err(AuthError::Throttled { limit, retry_after_secs }) = accounts.begin(key(), now) else {
            panic!("the limit holds with logins in flight")
        };
        assert!(limit.contains("MAX_FAILED_LOGINS_PER_ACCOUNT = 5 within 300 s"), "{limit}");
        assert_eq!(retry_after_secs, 1);
        // Dropped attempts (errors, callers gone) count as nothing.
        drop(attempts);
        for _ in 0..MAX_FAILED_LOGINS_PER_ACCOUNT - 1 {
            accounts.begin(key(), now).unwrap().finish(false, now);
        }
        accounts.begin(key(), now).unwrap().finish(true, now);
        assert_eq!(accounts.tracked(), 0, "a success clears the account's record");
        for _ in 0..MAX_FAILED_LOGINS_PER_ACCOUNT {
            accounts.begin(key(), now).unwrap().finish(false, now);
        }
        assert!(accounts.begin(key(), now).is_err());
        // Old failures leave the window.
        let later = now + LOGIN_BACKOFF + FAILED_LOGIN_WINDOW;
        accounts.begin(key(), later).unwrap().finish(false, later);
        assert!(accounts.begin(key(), later).is_ok());
    }
}
