//! The input limits of the store, checked in one place so every backend accepts and rejects
//! exactly the same requests. Each backend calls the check for an operation before touching
//! anything; `crate::conformance` verifies that it does.
//!
//! Why these numbers: a whole record (key, value, metadata, names and protobuf framing) must
//! fit in one gRPC message, whose default size limit is 4 MiB, and every field must fit a
//! PostgreSQL `text`/`bytea` column, which cannot hold NUL characters in text.

use crate::{ListOptions, ReadOptions, Record, Result, StoreError};

/// Longest key (and read/list pattern), in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Largest value, in bytes: 4 MiB (the default gRPC message limit) minus 64 KiB of headroom
/// for the key, [`MAX_METADATA_BYTES`] of metadata, names and protobuf framing.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// Largest total metadata of one record: the sum of the bytes of every entry's name, type and
/// value.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;

/// Longest database or table name, in bytes. Names are 1 to this many of `[A-Za-z0-9_.-]`,
/// other than `.` and `..`.
pub const MAX_NAME_BYTES: usize = 128;

/// Checks the database and table names of any operation.
pub fn location(database: &str, table: &str) -> Result<()> {
    name("database", database)?;
    name("table", table)
}

/// Checks a database name alone (for [`crate::Store::tables`]).
pub fn database(database: &str) -> Result<()> {
    name("database", database)
}

/// Checks the arguments of [`crate::Store::read`]: an exact read needs a key; a prefix or
/// suffix read may use an empty pattern (it matches every key).
pub fn read(database: &str, table: &str, key: &str, options: &ReadOptions) -> Result<()> {
    location(database, table)?;
    if options.prefix || options.suffix { pattern("key", key) } else { self::key(key) }
}

/// Checks the arguments of [`crate::Store::write`].
pub fn write(database: &str, table: &str, record: &Record) -> Result<()> {
    location(database, table)?;
    key(&record.key)?;
    if record.value.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!(
            "value of {} bytes is larger than the limit of {MAX_VALUE_BYTES} bytes",
            record.value.len()
        )));
    }
    let mut metadata_bytes = 0usize;
    for (name, field) in &record.metadata {
        for text in [name, &field.kind, &field.value] {
            if text.contains('\0') {
                return Err(invalid(format!("metadata {name:?} must not contain NUL characters")));
            }
            metadata_bytes = metadata_bytes.saturating_add(text.len());
        }
    }
    if metadata_bytes > MAX_METADATA_BYTES {
        return Err(invalid(format!(
            "metadata of {metadata_bytes} bytes is larger than the limit of {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks the arguments of [`crate::Store::delete`].
pub fn delete(database: &str, table: &str, key: &str) -> Result<()> {
    location(database, table)?;
    self::key(key)
}

/// Checks the arguments of [`crate::Store::list`].
pub fn list(database: &str, table: &str, options: &ListOptions) -> Result<()> {
    location(database, table)?;
    pattern("prefix", &options.prefix)?;
    pattern("suffix", &options.suffix)
}

/// A record key: 1 to [`MAX_KEY_BYTES`] bytes, no NUL.
pub fn key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid("key must not be empty"));
    }
    pattern("key", key)
}

/// A key pattern (prefix or suffix): up to [`MAX_KEY_BYTES`] bytes, no NUL; may be empty.
fn pattern(what: &str, pattern: &str) -> Result<()> {
    if pattern.len() > MAX_KEY_BYTES {
        return Err(invalid(format!(
            "{what} of {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes",
            pattern.len()
        )));
    }
    if pattern.contains('\0') {
        return Err(invalid(format!("{what} must not contain NUL characters")));
    }
    Ok(())
}

fn name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid(format!("{what} name must not be empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "{what} name of {} bytes is longer than the limit of {MAX_NAME_BYTES} bytes",
            name.len()
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !name.chars().all(allowed) || name == "." || name == ".." {
        return Err(invalid(format!(
            "{what} name {name:?} is not allowed: use letters, digits, '_', '.' and '-' (not just '.' or '..')"
        )));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Field;

    fn message(result: Result<()>) -> String {
        match result {
            Err(StoreError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn names() {
        for good in ["micro", "a", "go.micro.srv", "team_9", "A-b", &"n".repeat(MAX_NAME_BYTES)] {
            assert!(location(good, good).is_ok(), "{good}");
        }
        assert_eq!(message(location("", "t")), "database name must not be empty");
        assert_eq!(message(location("d", "")), "table name must not be empty");
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(message(location(&long, "t")).contains("limit of 128 bytes"));
        for bad in ["a/b", "a b", "ü", ".", "..", "a\0"] {
            assert!(message(location("d", bad)).starts_with("table name"), "{bad:?}");
        }
        assert!(message(database("..")).starts_with("database name"));
    }

    #[test]
    fn keys_and_patterns() {
        assert!(key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(message(key("")), "key must not be empty");
        assert!(message(key(&"k".repeat(MAX_KEY_BYTES + 1))).contains("limit of 1024 bytes"));
        assert!(message(key("a\0b")).contains("NUL"));

        let prefix = ReadOptions { prefix: true, ..Default::default() };
        assert!(read("d", "t", "", &prefix).is_ok(), "an empty pattern matches everything");
        assert_eq!(message(read("d", "t", "", &ReadOptions::default())), "key must not be empty");
        assert_eq!(message(delete("d", "t", "")), "key must not be empty");

        let list_ok = ListOptions { prefix: "p".into(), suffix: String::new(), ..Default::default() };
        assert!(list("d", "t", &list_ok).is_ok());
        let too_long = ListOptions { suffix: "s".repeat(MAX_KEY_BYTES + 1), ..Default::default() };
        assert!(message(list("d", "t", &too_long)).starts_with("suffix of 1025 bytes"));
    }

    #[test]
    fn records() {
        assert!(write("d", "t", &Record::new("k", vec![0; MAX_VALUE_BYTES])).is_ok());
        let big = Record::new("k", vec![0; MAX_VALUE_BYTES + 1]);
        assert!(message(write("d", "t", &big)).contains(&format!("limit of {MAX_VALUE_BYTES} bytes")));
        assert_eq!(message(write("d", "t", &Record::new("", "v"))), "key must not be empty");

        let fits = Record::new("k", "v")
            .with_metadata("m", Field::new("string", "x".repeat(MAX_METADATA_BYTES - 7)));
        assert!(write("d", "t", &fits).is_ok());
        let over = Record::new("k", "v")
            .with_metadata("m", Field::new("string", "x".repeat(MAX_METADATA_BYTES - 6)));
        assert!(message(write("d", "t", &over)).contains("limit of 32768 bytes"));
        let nul = Record::new("k", "v").with_metadata("m", Field::new("string", "a\0"));
        assert!(message(write("d", "t", &nul)).contains("NUL"));

        const {
            assert!(
                MAX_KEY_BYTES + MAX_VALUE_BYTES + MAX_METADATA_BYTES + 2 * MAX_NAME_BYTES
                    < 4 * 1024 * 1024 - 16 * 1024
            )
        };
    }
}
