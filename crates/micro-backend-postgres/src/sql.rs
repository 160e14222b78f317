//! The schema and the SQL of [`crate::PostgresStore`], and the key arithmetic that lets prefix
//! scans use the primary key.
//!
//! Keys and names are `text COLLATE "C"`: PostgreSQL then compares them byte by byte, which for
//! UTF-8 is the byte-lexicographic order the store contract asks for, and its btree indexes are
//! in that same order. Expiry is absolute unix milliseconds taken from the database's clock, so
//! every server sharing the database agrees on what has expired.

use std::time::Duration;

/// Serialises schema creation between servers booting at the same moment: `CREATE TABLE IF NOT
/// EXISTS` alone can still fail with a unique violation in the catalog when two sessions race.
/// The number is arbitrary but fixed ("micro_st" in ASCII).
pub(crate) const SCHEMA_LOCK: i64 = 0x6d69_6372_6f5f_7374;

/// Whether the schema is already complete: the index is created last, so its presence means
/// every earlier statement ran. Checked first so a normal boot takes no lock at all.
pub(crate) const SCHEMA_EXISTS: &str = "SELECT to_regclass('micro_store_records_expires_at') IS NOT NULL";

/// Creates the schema if any of it is missing; run as one simple-protocol batch, which
/// PostgreSQL executes as one transaction, so the advisory lock is held to the end of it.
pub(crate) fn create_schema() -> String {
    format!(
        r#"
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
-- One row per record. expires_at is unix milliseconds (database clock); NULL never expires.
CREATE TABLE IF NOT EXISTS micro_store_records (
    database_name text COLLATE "C" NOT NULL,
    table_name    text COLLATE "C" NOT NULL,
    key           text COLLATE "C" NOT NULL,
    value         bytea NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{{}}',
    expires_at    bigint,
    PRIMARY KEY (database_name, table_name, key)
);
-- Every (database, table) ever written: listed even once its records are gone.
CREATE TABLE IF NOT EXISTS micro_store_tables (
    database_name text COLLATE "C" NOT NULL,
    table_name    text COLLATE "C" NOT NULL,
    PRIMARY KEY (database_name, table_name)
);
-- Lets the sweep find expired records without reading the ones that never expire.
CREATE INDEX IF NOT EXISTS micro_store_records_expires_at
    ON micro_store_records (expires_at) WHERE expires_at IS NOT NULL;
"#
    )
}

/// Now, in unix milliseconds by the database's clock; the same value throughout one statement.
macro_rules! now_ms {
    () => {
        "(floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint)"
    };
}

/// `$1` database, `$2` table, `$3` key → value, metadata, remaining TTL in ms (NULL = none).
pub(crate) const READ_EXACT: &str = concat!(
    "SELECT value, metadata, expires_at - ",
    now_ms!(),
    " FROM micro_store_records WHERE database_name = $1 AND table_name = $2 AND key = $3",
    " AND (expires_at IS NULL OR expires_at > ",
    now_ms!(),
    ")"
);

/// `$1` database, `$2` table, `$3` key, `$4` value, `$5` metadata, `$6` TTL in ms (NULL =
/// never). One statement, so the record and the table's catalog row commit together.
pub(crate) const WRITE: &str = concat!(
    "WITH known AS (INSERT INTO micro_store_tables (database_name, table_name) VALUES ($1, $2)",
    " ON CONFLICT DO NOTHING)",
    " INSERT INTO micro_store_records (database_name, table_name, key, value, metadata, expires_at)",
    " VALUES ($1, $2, $3, $4, $5, ",
    now_ms!(),
    " + $6)",
    " ON CONFLICT (database_name, table_name, key) DO UPDATE",
    " SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, expires_at = EXCLUDED.expires_at"
);

/// As [`WRITE`], but only when no live record is under the key (an expired one is replaced);
/// one row affected = written.
pub(crate) const CREATE: &str = concat!(
    "WITH known AS (INSERT INTO micro_store_tables (database_name, table_name) VALUES ($1, $2)",
    " ON CONFLICT DO NOTHING)",
    " INSERT INTO micro_store_records AS old (database_name, table_name, key, value, metadata, expires_at)",
    " VALUES ($1, $2, $3, $4, $5, ",
    now_ms!(),
    " + $6)",
    " ON CONFLICT (database_name, table_name, key) DO UPDATE",
    " SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, expires_at = EXCLUDED.expires_at",
    " WHERE old.expires_at IS NOT NULL AND old.expires_at <= ",
    now_ms!()
);

/// `$1` database, `$2` table, `$3` key.
pub(crate) const DELETE: &str =
    "DELETE FROM micro_store_records WHERE database_name = $1 AND table_name = $2 AND key = $3";

pub(crate) const DATABASES: &str =
    "SELECT DISTINCT database_name FROM micro_store_tables ORDER BY database_name";

/// `$1` database.
pub(crate) const TABLES: &str =
    "SELECT table_name FROM micro_store_tables WHERE database_name = $1 ORDER BY table_name";

/// Expired records removed per statement, so a large sweep never holds many row locks (and
/// delays writers) for long.
pub(crate) const SWEEP_BATCH: i64 = 1000;

/// `$1` batch size: deletes up to that many expired records. `SKIP LOCKED` lets several servers sweep the
/// same database at once without waiting on each other; the outer condition re-checks expiry
/// so a record rewritten in between is kept.
pub(crate) const SWEEP: &str = concat!(
    "DELETE FROM micro_store_records WHERE (database_name, table_name, key) IN (",
    "SELECT database_name, table_name, key FROM micro_store_records WHERE expires_at <= ",
    now_ms!(),
    " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) AND expires_at <= ",
    now_ms!()
);

/// What a prefix/suffix scan returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columns {
    /// key, value, metadata, remaining TTL (reads).
    Records,
    /// key alone (lists).
    Keys,
}

/// The SQL of a scan over live records of one table in key order. Parameters: `$1` database,
/// `$2` table, `$3` offset, `$4` limit (NULL = all), then, each only when `true` here and in
/// this order: the prefix (lower bound), the end of the prefix range (exclusive upper bound),
/// and the suffix's length in characters followed by the suffix.
///
/// The prefix becomes a key range rather than `LIKE`, so it needs no escaping and uses the
/// primary key even in a generic (parameterised) plan. Clauses are left out rather than
/// switched off with `$n IS NULL OR ...`, which would keep the planner from using the range.
pub(crate) fn scan(columns: Columns, prefix: bool, end: bool, suffix: bool) -> String {
    let mut sql = String::from(match columns {
        Columns::Records => concat!("SELECT key, value, metadata, expires_at - ", now_ms!()),
        Columns::Keys => "SELECT key",
    });
    sql.push_str(concat!(
        " FROM micro_store_records WHERE database_name = $1 AND table_name = $2",
        " AND (expires_at IS NULL OR expires_at > ",
        now_ms!(),
        ")"
    ));
    let mut next = 5;
    if prefix {
        sql.push_str(&format!(" AND key >= ${next}"));
        next += 1;
    }
    if end {
        sql.push_str(&format!(" AND key < ${next}"));
        next += 1;
    }
    if suffix {
        sql.push_str(&format!(" AND right(key, ${next}) = ${}", next + 1));
    }
    sql.push_str(" ORDER BY key OFFSET $3 LIMIT $4");
    sql
}

/// The smallest string greater than every string that starts with `prefix`, in byte (=
/// code point) order: the prefix with its last character incremented, after dropping trailing
/// `char::MAX`s. `None` when no such bound exists (empty, or only `char::MAX`s): the scan then
/// has no upper bound.
///
/// Why it is exact: a key starting with `prefix` is below it because it agrees with it up to
/// the incremented character, where it is smaller; a key at or above `prefix` that does not
/// start with it first differs from `prefix` at some character where it is larger, so it is at
/// or above the bound. UTF-8 preserves code point order in its byte order.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            // Surrogates are not chars; the next scalar value after U+D7FF is U+E000.
            '\u{D7FF}' => Some('\u{E000}'),
            char::MAX => None,
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The longest TTL stored, in milliseconds: about 146 million years. Large enough to mean
/// "practically never" and small enough that adding it to the current time cannot overflow a
/// `bigint`.
const MAX_TTL_MS: i64 = i64::MAX / 2;

/// A record's TTL as the milliseconds to add to now, as the other backends count it: `None`
/// or zero never expires; a sub-millisecond TTL rounds up to 1 ms so it still expires; a TTL
/// too long to store saturates.
pub(crate) fn ttl_millis(ttl: Option<Duration>) -> Option<i64> {
    let ttl = ttl.filter(|ttl| !ttl.is_zero())?;
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    Some(i64::try_from(millis).unwrap_or(MAX_TTL_MS).min(MAX_TTL_MS))
}

/// A paging value for SQL's `bigint` OFFSET/LIMIT; beyond `i64::MAX` means the same as it (no
/// table holds that many rows).
pub(crate) fn paging(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `key` falls in the range the scan uses for `prefix`.
    fn in_range(key: &str, prefix: &str) -> bool {
        key >= prefix && prefix_end(prefix).is_none_or(|end| key < end.as_str())
    }

    #[test]
    fn prefix_end_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("a\u{10FFFF}\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(prefix_end("ü").as_deref(), Some("ý"));
        assert_eq!(prefix_end("a\u{7F}").as_deref(), Some("a\u{80}"), "crosses from 1 to 2 UTF-8 bytes");

        // Every string of up to three characters over an alphabet of boundary characters
        // (byte-length changes, surrogate gap, the maximum) against every such prefix: in the
        // range exactly when it starts with the prefix. Rust's `str` order is byte order, as
        // PostgreSQL's "C" collation is.
        let alphabet =
            ['\u{1}', 'a', 'b', '\u{7F}', '\u{80}', '\u{D7FF}', '\u{E000}', '\u{FFFF}', '\u{10FFFF}'];
        let mut strings = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..3 {
            level = level.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            strings.extend(level.iter().cloned());
        }
        assert_eq!(strings.len(), 1 + 9 + 81 + 729);
        for prefix in strings.iter().filter(|s| s.chars().count() <= 2) {
            for key in &strings {
                assert_eq!(in_range(key, prefix), key.starts_with(prefix.as_str()), "{key:?} / {prefix:?}");
            }
        }
    }

    #[test]
    fn ttl_and_paging_arithmetic() {
        assert_eq!(ttl_millis(None), None);
        assert_eq!(ttl_millis(Some(Duration::ZERO)), None, "zero means never");
        assert_eq!(ttl_millis(Some(Duration::from_millis(150))), Some(150));
        assert_eq!(ttl_millis(Some(Duration::from_nanos(1))), Some(1), "rounds up");
        assert_eq!(ttl_millis(Some(Duration::from_micros(1_500))), Some(2), "rounds up");
        assert_eq!(ttl_millis(Some(Duration::MAX)), Some(MAX_TTL_MS), "saturates");
        assert!(MAX_TTL_MS.checked_add(4_000_000_000_000).is_some(), "now + the longest TTL fits");

        assert_eq!(paging(0), 0);
        assert_eq!(paging(7), 7);
        assert_eq!(paging(u64::MAX), i64::MAX);
    }

    #[test]
    fn scan_sql_numbers_only_the_clauses_it_uses() {
        let all = scan(Columns::Records, true, true, true);
        assert!(all.starts_with("SELECT key, value, metadata, expires_at - "), "{all}");
        assert!(all.contains("key >= $5 AND key < $6 AND right(key, $7) = $8"), "{all}");
        assert!(all.ends_with("ORDER BY key OFFSET $3 LIMIT $4"), "{all}");

        let suffix_only = scan(Columns::Keys, false, false, true);
        assert!(suffix_only.starts_with("SELECT key FROM"), "{suffix_only}");
        assert!(suffix_only.contains("right(key, $5) = $6"), "{suffix_only}");
        assert!(!suffix_only.contains("key >="), "{suffix_only}");

        let prefix_only = scan(Columns::Keys, true, false, false);
        assert!(prefix_only.contains("key >= $5") && !prefix_only.contains("$6"), "{prefix_only}");
        assert!(!scan(Columns::Keys, false, false, false).contains("$5"));
    }
}
