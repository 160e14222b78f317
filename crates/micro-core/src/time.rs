//! Wall-clock time: unix seconds and milliseconds, and RFC 3339 timestamps (UTC out, any offset
//! in) without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in seconds since the Unix epoch. A clock before 1970 reads as 0.
pub fn unix_seconds() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// Now, in milliseconds since the Unix epoch. A clock before 1970 reads as 0 (so everything
/// with a deadline looks live until the clock is fixed, rather than everything looking expired).
pub fn unix_millis() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_now() -> String {
    rfc3339(u64::try_from(unix_seconds()).unwrap_or(0))
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2026-11-23T16:05:40Z`,
/// `2026-11-23T17:05:40.123+01:00`); `None` when `text` is not one. Fractions of a second are
/// dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.trim();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = rest[1..].split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            sign * (hours.parse::<i64>().ok()? * 3600 + minutes.parse::<i64>().ok()? * 60)
        }
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days-from-civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        // (unix seconds, RFC 3339 in UTC)
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_449_599, "2026-11-23T15:59:59Z"),
            (1_795_449_940, "2026-11-23T16:05:40Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(rfc3339(secs), text);
            assert_eq!(parse_rfc3339(text), Some(i64::try_from(secs).unwrap()), "{text}");
        }
        for secs in (0..4_000_000_000_u64).step_by(86_399 * 997) {
            assert_eq!(
                parse_rfc3339(&rfc3339(secs)),
                Some(i64::try_from(secs).unwrap()),
                "round trip {secs}"
            );
        }
        let now = unix_seconds();
        assert_eq!(parse_rfc3339(&rfc3339_now()).map(|parsed| (parsed - now).abs() <= 1), Some(true));
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-11-23T17:05:40.123456+01:00"), Some(1_795_449_940));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00-00:30"), Some(951_784_200));
        assert_eq!(parse_rfc3339(" 2026-11-23t16:05:40z "), Some(1_795_449_940));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-23T16:05:40",
            "2026-11-23T16:05:40+1",
            "2026-11-23T16:05:40.Z",
            "2026-11-23T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn clocks_read_unix_time() {
        let (secs, millis) = (unix_seconds(), unix_millis());
        assert!(secs > 1_600_000_000, "seconds since 1970");
        assert!(millis / 1000 >= u64::try_from(secs).unwrap(), "milliseconds of the same clock");
    }
}
