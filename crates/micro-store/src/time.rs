//! Expiry arithmetic shared by the backends: absolute expiry is unix milliseconds, so it means
//! the same after a restart and across server instances sharing a database. Now is
//! [`micro_core::time::unix_millis`].

use std::time::Duration;

/// The absolute expiry of a record written at `now` with time to live `ttl`; `None` when it
/// never expires. A sub-millisecond TTL rounds up to 1 ms so it still expires; a TTL too long
/// to represent saturates (it then never expires in practice).
pub(crate) fn expires_at(ttl: Option<Duration>, now: u64) -> Option<u64> {
    let ttl = ttl.filter(|ttl| !ttl.is_zero())?;
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    Some(now.saturating_add(u64::try_from(millis).unwrap_or(u64::MAX)))
}

/// Whether a record with absolute expiry `expires_at` is still visible at `now`.
pub(crate) fn is_live(expires_at: Option<u64>, now: u64) -> bool {
    expires_at.is_none_or(|at| at > now)
}

/// The TTL a live record has left at `now`, as [`crate::Record::expiry`] reports it.
pub(crate) fn remaining(expires_at: Option<u64>, now: u64) -> Option<Duration> {
    expires_at.map(|at| Duration::from_millis(at.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_arithmetic() {
        assert_eq!(expires_at(None, 1_000), None);
        assert_eq!(expires_at(Some(Duration::ZERO), 1_000), None, "zero means never");
        assert_eq!(expires_at(Some(Duration::from_millis(150)), 1_000), Some(1_150));
        assert_eq!(expires_at(Some(Duration::from_nanos(1)), 1_000), Some(1_001), "rounds up");
        assert_eq!(expires_at(Some(Duration::MAX), 1_000), Some(u64::MAX), "saturates");

        assert!(is_live(None, u64::MAX));
        assert!(is_live(Some(1_150), 1_149));
        assert!(!is_live(Some(1_150), 1_150), "expired at the instant itself");
        assert_eq!(remaining(Some(1_150), 1_000), Some(Duration::from_millis(150)));
        assert_eq!(remaining(None, 1_000), None);
    }
}
