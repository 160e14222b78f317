//! The one retry pacing of micro: exponential backoff with jitter, used by every loop that
//! retries a failed connection, subscription or restart (the framework's subscribers and
//! registration, the runtime's supervisor, the NATS backends).
//!
//! A [`Backoff`] holds a *step* that starts at `initial` and doubles after each wait, up to
//! `max`. Each wait is drawn uniformly from `[step, min(2 × step, max)]`: never shorter than the
//! plain doubling schedule (so `initial` stays the shortest wait) and never longer than `max`
//! (the longest wait). The random part keeps many clients that failed together (a server
//! restart) from retrying in lockstep. Waiting is the caller's: it sleeps the returned
//! duration inside its own `select!` with its shutdown signal, so cancellation stays where it
//! is. No crate fit that shape (the maintained ones wrap the retried future themselves).

use std::time::Duration;

/// Exponential backoff with jitter; see the module docs for the bounds.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Waits from `initial` (the shortest) up to `max` (the longest); `max` below `initial`
    /// is taken as `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self { initial, max, step: initial }
    }

    /// The wait before the next attempt; the step then doubles (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        let upper = step.saturating_mul(2).min(self.max);
        self.step = upper;
        let spread = upper.saturating_sub(step);
        let jitter = Duration::try_from_secs_f64(spread.as_secs_f64() * unit_random()).unwrap_or(spread);
        step.saturating_add(jitter).min(upper.max(step))
    }

    /// Back to `initial`, after an attempt succeeded.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// A uniform draw from `[0, 1)`; `0` (no jitter) if the OS has no randomness to give.
fn unit_random() -> f64 {
    let bits = getrandom::u64().unwrap_or(0);
    // The top 53 bits fill an f64's mantissa exactly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_doubling_schedule_and_the_cap() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut backoff = Backoff::new(initial, max);
        let mut seen = std::collections::HashSet::new();
        for round in 0..50 {
            let mut step = initial;
            for attempt in 0..8 {
                let delay = backoff.next_delay();
                let upper = (step * 2).min(max);
                assert!(
                    delay >= step && delay <= upper,
                    "round {round} attempt {attempt}: {delay:?} not in [{step:?}, {upper:?}]"
                );
                seen.insert(delay);
                step = (step * 2).min(max);
            }
            assert_eq!(backoff.next_delay(), max, "at the cap the wait is the cap");
            backoff.reset();
        }
        assert!(seen.len() > 100, "the waits are jittered, not a fixed schedule: {} distinct", seen.len());
    }

    #[test]
    fn degenerate_bounds_are_safe() {
        let mut fixed = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(
            (fixed.next_delay(), fixed.next_delay()),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        let mut inverted = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(inverted.next_delay(), Duration::from_secs(2), "max below initial is initial");
        let mut huge = Backoff::new(Duration::MAX / 2, Duration::MAX);
        for _ in 0..4 {
            assert!(huge.next_delay() >= Duration::MAX / 2, "no overflow");
        }
        let mut zero = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(zero.next_delay(), Duration::ZERO, "a zero step stays zero");
    }
}
