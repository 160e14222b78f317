//! [`VerifiedTokens`]: access tokens whose signature and expiry were already checked, with the
//! account each describes, so a token presented on every call is verified once, not per call.
//!
//! An Ed25519 signature check costs tens of microseconds, most of the auth gate's and the
//! framework's time per call. A cached token is a pure function of its bytes and the clock: the
//! same string always carries the same claims, so a hit answers exactly what verifying again
//! would until the token's own expiry, after which it is dropped and must verify afresh (and
//! fail). Nothing else about a token is ever cached.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::Account;

/// Tokens kept at most. A cache that fills drops its expired entries, and all of them if that
/// frees nothing, so memory stays bounded (tokens are ~0.5 KiB) whatever callers present.
pub const MAX_VERIFIED_TOKENS: usize = 1024;

/// A bounded map of verified token → (account, expiry in unix seconds).
#[derive(Debug, Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, (Account, u64)>>,
}

impl VerifiedTokens {
    pub fn new() -> Self {
        Self::default()
    }

    /// The account of `token` if it was verified and is still unexpired at `now` (unix seconds).
    pub fn get(&self, token: &str, now: u64) -> Option<Account> {
        let mut entries = self.lock();
        match entries.get(token) {
            Some((account, expires_at)) if now < *expires_at => Some(account.clone()),
            Some(_) => {
                entries.remove(token);
                None
            }
            None => None,
        }
    }

    /// Remembers that `token` verified as `account` and is valid until `expires_at`.
    pub fn insert(&self, token: &str, account: &Account, expires_at: u64, now: u64) {
        if expires_at <= now {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_VERIFIED_TOKENS && !entries.contains_key(token) {
            entries.retain(|_, (_, at)| now < *at);
            if entries.len() >= MAX_VERIFIED_TOKENS {
                entries.clear();
            }
        }
        entries.insert(token.into(), (account.clone(), expires_at));
    }

    /// Forgets every token (e.g. after the verifying key changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (Account, u64)>> {
        // Every critical section is a single map operation; a panic inside one leaves the map
        // valid, so a poisoned lock is still safe to use.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> Account {
        Account { id: id.into(), ..Account::default() }
    }

    #[test]
    fn hits_until_expiry_then_forgets() {
        let tokens = VerifiedTokens::new();
        assert_eq!(tokens.get("t", 100), None);
        tokens.insert("t", &account("a"), 110, 100);
        assert_eq!(tokens.get("t", 109), Some(account("a")));
        assert_eq!(tokens.get("other", 109), None);
        assert_eq!(tokens.get("t", 110), None, "a token is not served at or past its expiry");
        assert!(tokens.is_empty(), "the expired entry was dropped");
        tokens.insert("late", &account("b"), 100, 100);
        assert!(tokens.is_empty(), "an already expired token is never cached");
    }

    #[test]
    fn stays_bounded() {
        let tokens = VerifiedTokens::new();
        for n in 0..MAX_VERIFIED_TOKENS {
            // Half of them expire at 50.
            let expires_at = if n % 2 == 0 { 50 } else { 1000 };
            tokens.insert(&format!("t{n}"), &account("a"), expires_at, 10);
        }
        assert_eq!(tokens.len(), MAX_VERIFIED_TOKENS);
        tokens.insert("new", &account("b"), 1000, 60);
        assert_eq!(tokens.len(), MAX_VERIFIED_TOKENS / 2 + 1, "a full cache drops what expired");
        assert_eq!(tokens.get("t1", 60), Some(account("a")));
        for n in 0..MAX_VERIFIED_TOKENS {
            tokens.insert(&format!("u{n}"), &account("c"), 1000, 60);
        }
        assert!(tokens.len() <= MAX_VERIFIED_TOKENS, "never past the bound: {}", tokens.len());
        let last = format!("u{}", MAX_VERIFIED_TOKENS - 1);
        assert_eq!(tokens.get(&last, 60).map(|a| a.id), Some("c".into()), "the newest is kept");
        tokens.clear();
        assert!(tokens.is_empty());
    }
}
