//! Service names and versions: the rule the runtime enforces (docs/runtime.md), checked by the
//! CLI with the same function before it uploads anything, so both refuse the same input with
//! the same sentence.
//!
//! A name becomes a file name (`logs/<ns>/<name>.log`), part of a service account id and a
//! registry key, so its alphabet is narrow; a version is often a git ref, so it also takes
//! upper case letters and `/`.

/// Longest service name.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest service version.
pub const MAX_VERSION_BYTES: usize = 64;
/// The version of a service run without one, and the ref of a git repository's default branch.
pub const DEFAULT_VERSION: &str = "latest";

/// Why a service name or version was refused; the message is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error(
        "invalid service name {0:?}: use 1-{max} lowercase letters, digits, '.', '_' or '-', \
         starting with a letter or digit, without '..'",
        max = MAX_NAME_BYTES
    )]
    Name(String),
    #[error(
        "invalid version {0:?}: use 1-{max} letters, digits, '.', '_', '-' or '/', \
         starting with a letter or digit, without '..'",
        max = MAX_VERSION_BYTES
    )]
    Version(String),
}

/// Checks a service name: 1–[`MAX_NAME_BYTES`] of `[a-z0-9._-]`, starting with a letter or
/// digit, without `..`.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-');
    if well_formed(name, MAX_NAME_BYTES, allowed) { Ok(()) } else { Err(InvalidName::Name(name.to_string())) }
}

/// Checks a service version: 1–[`MAX_VERSION_BYTES`] of `[A-Za-z0-9._/-]`, starting with a
/// letter or digit, without `..` (so a version used in a path never leaves its folder).
pub fn validate_version(version: &str) -> Result<(), InvalidName> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/');
    if well_formed(version, MAX_VERSION_BYTES, allowed) {
        Ok(())
    } else {
        Err(InvalidName::Version(version.to_string()))
    }
}

/// The service name a path or URL gives: its last segment without `.git`
/// (`./helloworld/` → `helloworld`, `file:///repos/ticker.git` → `ticker`). `micro kill`,
/// `micro logs` and `micro update` read a name this way, and the dashboard's Runtime page names
/// a service run from a git URL with it (docs/web.md#runtime).
pub fn service_name(source: &str) -> &str {
    let trimmed = source.trim_end_matches('/');
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    last.strip_suffix(".git").unwrap_or(last)
}

fn well_formed(value: &str, max: usize, allowed: impl Fn(u8) -> bool) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.bytes().all(allowed)
        && !value.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_names_its_service_by_its_last_segment() {
        assert_eq!(service_name("./services/helloworld/"), "helloworld");
        assert_eq!(service_name("github.com/org/repo.git"), "repo");
        assert_eq!(service_name("file:///tmp/repos/ticker.git//"), "ticker");
        assert_eq!(service_name("helloworld"), "helloworld");
    }

    #[test]
    fn names_and_versions() {
        let longest = "a".repeat(MAX_NAME_BYTES);
        let too_long = "a".repeat(MAX_NAME_BYTES + 1);
        // (input, valid as a name, valid as a version)
        let cases: &[(&str, bool, bool)] = &[
            ("helloworld", true, true),
            ("a", true, true),
            ("my-svc_2.0", true, true),
            ("9lives", true, true),
            (&longest, true, true),
            ("latest", true, true),
            ("v1.2.3", true, true),
            ("feature/x", false, true),
            ("Main", false, true),
            ("", false, false),
            ("-a", false, false),
            ("_a", false, false),
            (".hidden", false, false),
            ("/x", false, false),
            ("a..b", false, false),
            ("..", false, false),
            ("../x", false, false),
            ("a b", false, false),
            ("a\\b", false, false),
            ("a\nb", false, false),
            ("a@b", false, false),
            ("é", false, false),
            (&too_long, false, false),
        ];
        for &(input, name, version) in cases {
            assert_eq!(validate_name(input).is_ok(), name, "name {input:?}");
            assert_eq!(validate_version(input).is_ok(), version, "version {input:?}");
        }
        assert_eq!(
            validate_name("A").unwrap_err().to_string(),
            "invalid service name \"A\": use 1-64 lowercase letters, digits, '.', '_' or '-', \
             starting with a letter or digit, without '..'"
        );
        assert_eq!(
            validate_version("a b").unwrap_err().to_string(),
            "invalid version \"a b\": use 1-64 letters, digits, '.', '_', '-' or '/', \
             starting with a letter or digit, without '..'"
        );
    }
}
