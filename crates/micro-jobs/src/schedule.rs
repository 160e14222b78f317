//! When a job fires: a cron expression, a fixed period, or one time; and which firings are due
//! between the last one a server looked at and now. Pure computation over unix milliseconds, no
//! I/O and no clock: the scheduler passes `now` in, so every rule here is tested with fixed times.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::JobError;

/// The shortest period of `--every`: shorter would turn the scheduler into a busy loop and the
/// run history into a log. Cron expressions have minutes as their finest field.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Longest period of `--every` (a year): the arithmetic stays far from overflow.
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Longest cron expression accepted.
pub const MAX_CRON_BYTES: usize = 256;

/// Most occurrences of a cron expression walked to count the firings due; past it, the count
/// says "at least this many" and the latest due firing is found by searching backwards.
pub const MAX_CRON_SCAN: u64 = 10_000;

/// A job's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A standard 5-field cron expression, in UTC.
    Cron(Box<Cron>),
    /// Every `period`, counted from `anchor` (the job's creation, unix ms): the first firing is
    /// one period after it.
    Every { period: u64, anchor: u64 },
    /// Once, at this unix millisecond.
    At(u64),
}

/// The firings due in `(after, now]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The earliest due firing.
    pub first: u64,
    /// The latest due firing.
    pub latest: u64,
    /// How many are due (at least [`MAX_CRON_SCAN`] when a cron scan stopped there).
    pub count: u64,
}

/// Parses a cron expression: exactly five fields (minute hour day-of-month month day-of-week,
/// names like `MON` and `JAN` allowed), no seconds field and no year field.
pub fn parse_cron(expression: &str) -> Result<Cron, JobError> {
    if expression.len() > MAX_CRON_BYTES {
        return Err(JobError::Invalid(format!("the cron expression is longer than {MAX_CRON_BYTES} bytes")));
    }
    let fields = expression.split_whitespace().count();
    if fields != 5 {
        return Err(JobError::Invalid(format!(
            "invalid cron expression {expression:?}: use five fields, minute hour day-of-month month \
             day-of-week, e.g. \"*/5 * * * *\" (seconds are not accepted; use --every for those)"
        )));
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
    parser
        .parse(expression)
        .map_err(|err| JobError::Invalid(format!("invalid cron expression {expression:?}: {err}")))
}

/// Checks a period for `--every`: between [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
pub fn check_period(period: Duration) -> Result<u64, JobError> {
    if period < MIN_INTERVAL || period > MAX_INTERVAL {
        return Err(JobError::Invalid(format!(
            "the period {period:?} is out of range: use at least {MIN_INTERVAL:?} and at most {} days",
            MAX_INTERVAL.as_secs() / 86_400
        )));
    }
    Ok(u64::try_from(period.as_millis()).unwrap_or(u64::MAX))
}

fn datetime(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

fn millis(time: DateTime<Utc>) -> Option<u64> {
    u64::try_from(time.timestamp_millis()).ok()
}

impl Schedule {
    /// The first firing strictly after `after`; `None` when there is none (a one-off in the
    /// past, a cron expression that never matches again).
    pub fn next_after(&self, after: u64) -> Option<u64> {
        match self {
            Self::Cron(cron) => millis(cron.find_next_occurrence(&datetime(after)?, false).ok()?),
            Self::Every { period, anchor } => {
                if after < *anchor {
                    return anchor.checked_add(*period);
                }
                let periods = (after - anchor) / period + 1;
                anchor.checked_add(periods.checked_mul(*period)?)
            }
            Self::At(at) => (*at > after).then_some(*at),
        }
    }

    /// The firings due in `(after, now]`, or `None` when none is.
    pub fn due(&self, after: u64, now: u64) -> Option<Due> {
        let first = self.next_after(after)?;
        if first > now {
            return None;
        }
        match self {
            Self::Every { period, .. } => {
                let count = (now - first) / period + 1;
                Some(Due { first, latest: first + (count - 1) * period, count })
            }
            Self::At(_) => Some(Due { first, latest: first, count: 1 }),
            Self::Cron(cron) => {
                let (mut latest, mut count) = (first, 1);
                while count < MAX_CRON_SCAN {
                    match self.next_after(latest) {
                        Some(next) if next <= now => {
                            latest = next;
                            count += 1;
                        }
                        _ => return Some(Due { first, latest, count }),
                    }
                }
                // Too many to walk: the latest is the last occurrence at or before now.
                let before = datetime(now).and_then(|now| cron.find_previous_occurrence(&now, true).ok());
                latest = before.and_then(millis).unwrap_or(latest).max(latest);
                Some(Due { first, latest, count })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z in unix milliseconds.
    const JAN1: u64 = 1_767_225_600_000;
    const MIN: u64 = 60_000;

    #[test]
    fn cron_expressions_are_five_standard_fields() {
        for good in ["*/5 * * * *", "0 0 * * FRI", "30 2 1 JAN *", "0-10/2 * * * 1-5"] {
            assert!(parse_cron(good).is_ok(), "{good}");
        }
        for bad in ["", "* * * *", "*/5 * * * * *", "0 0 * * * 2030", "61 * * * *", "* * * * MOON", "x"] {
            let err = parse_cron(bad).unwrap_err();
            assert!(matches!(err, JobError::Invalid(_)), "{bad}: {err}");
            assert!(err.to_string().contains("cron expression"), "{err}");
        }
        assert!(parse_cron(&"* ".repeat(200)).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn cron_firings_and_due_windows() {
        let every5 = Schedule::Cron(Box::new(parse_cron("*/5 * * * *").unwrap()));
        assert_eq!(every5.next_after(JAN1), Some(JAN1 + 5 * MIN), "strictly after");
        assert_eq!(every5.next_after(JAN1 + 1), Some(JAN1 + 5 * MIN));
        assert_eq!(every5.due(JAN1, JAN1 + 4 * MIN), None);
        assert_eq!(
            every5.due(JAN1, JAN1 + 17 * MIN),
            Some(Due { first: JAN1 + 5 * MIN, latest: JAN1 + 15 * MIN, count: 3 })
        );
        // A long outage: the walk stops at MAX_CRON_SCAN and the latest is still exact.
        let every_minute = Schedule::Cron(Box::new(parse_cron("* * * * *").unwrap()));
        let due = every_minute.due(JAN1, JAN1 + 20_000 * MIN + 30_000).unwrap();
        assert_eq!((due.first, due.latest, due.count), (JAN1 + MIN, JAN1 + 20_000 * MIN, MAX_CRON_SCAN));
    }

    #[test]
    fn periods_count_from_their_anchor() {
        assert!(check_period(Duration::from_millis(999)).is_err());
        assert!(check_period(MAX_INTERVAL + Duration::from_secs(1)).is_err());
        let every = Schedule::Every { period: check_period(Duration::from_secs(30)).unwrap(), anchor: JAN1 };
        assert_eq!(every.next_after(JAN1 - 5), Some(JAN1 + 30_000), "the first firing is a period in");
        assert_eq!(every.next_after(JAN1), Some(JAN1 + 30_000));
        assert_eq!(every.next_after(JAN1 + 30_000), Some(JAN1 + 60_000));
        assert_eq!(every.due(JAN1, JAN1 + 29_999), None);
        assert_eq!(
            every.due(JAN1, JAN1 + 30_000),
            Some(Due { first: JAN1 + 30_000, latest: JAN1 + 30_000, count: 1 })
        );
        assert_eq!(
            every.due(JAN1 + 30_000, JAN1 + 10 * MIN + 1),
            Some(Due { first: JAN1 + 60_000, latest: JAN1 + 10 * MIN, count: 19 })
        );
    }

    #[test]
    fn one_offs_fire_once() {
        let at = Schedule::At(JAN1);
        assert_eq!(at.next_after(JAN1 - 1), Some(JAN1));
        assert_eq!(at.next_after(JAN1), None);
        assert_eq!(at.due(JAN1 - 1, JAN1 - 1), None);
        assert_eq!(at.due(JAN1 - 1, JAN1 + MIN), Some(Due { first: JAN1, latest: JAN1, count: 1 }));
        assert_eq!(at.due(JAN1, JAN1 + MIN), None, "already past the cursor");
    }
}
