//! Hand-written helpers on generated messages, for rules of the wire format every side shares.

use std::time::Duration;

impl crate::store::Record {
    /// The time to live a record carries: `expiry_ms` when above zero, else `expiry` (whole
    /// seconds); `None` (never expires) when neither is.
    pub fn ttl(&self) -> Option<Duration> {
        if self.expiry_ms > 0 {
            Some(Duration::from_millis(self.expiry_ms.unsigned_abs()))
        } else if self.expiry > 0 {
            Some(Duration::from_secs(self.expiry.unsigned_abs()))
        } else {
            None
        }
    }
}
