//! `MICRO_HOME`: the one directory all state lives under (DESIGN §2).

use std::path::PathBuf;

/// The state directory: `$MICRO_HOME`, else `$HOME/.micro`, else `./.micro`.
pub fn dir() -> PathBuf {
    if let Some(home) = std::env::var_os("MICRO_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".micro"),
        None => PathBuf::from(".micro"),
    }
}
