//! `MICRO_HOME`: the one directory all state lives under (docs/architecture.md, "Where state
//! lives"), and how private files in it are written: readable by their owner only
//! (docs/security.md).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of private directories: the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of private files (keys, data, logs, the CLI's settings and logins).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

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

/// Where the framework's source is installed for builds (docs/runtime.md, "The framework
/// travels with the server"): `<home>/sdk`, one `<version>/` below it per binary's version.
/// The server's `--sdk-dir` and `micro new`'s `MICRO_SDK_DIR` move it.
pub fn sdk_dir(home: &Path) -> PathBuf {
    home.join("sdk")
}

/// Creates `dir` (and missing parents) and narrows it to [`PRIVATE_DIR_MODE`], also when it
/// already existed with a wider mode.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// Narrows everything under `dir` (itself included) to the owner: directories
/// [`PRIVATE_DIR_MODE`], files [`PRIVATE_FILE_MODE`]. Symlinks are not followed. For trees that
/// hold data only (never programs): executable bits go too.
pub fn restrict_tree(dir: &Path) -> io::Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if meta.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else if meta.is_file() && meta.permissions().mode() & 0o7777 != PRIVATE_FILE_MODE {
            fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically (a synced temporary file renamed over it), readable
/// by its owner only. The parent directory is created if missing.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file =
            fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE_FILE_MODE).open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_files_and_trees_are_the_owners_only() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a/b/settings.json");
        write_private(&file, b"one").unwrap();
        write_private(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_dir(file.parent().unwrap()).unwrap().count(), 1, "no temporary file is left");

        let tree = root.path().join("server");
        fs::create_dir_all(tree.join("store")).unwrap();
        fs::write(tree.join("store/store.redb"), b"x").unwrap();
        fs::set_permissions(tree.join("store/store.redb"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(tree.join("store"), fs::Permissions::from_mode(0o755)).unwrap();
        let outside = root.path().join("outside.txt");
        fs::write(&outside, b"y").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
        restrict_tree(&tree).unwrap();
        assert_eq!(mode(&tree), 0o700);
        assert_eq!(mode(&tree.join("store")), 0o700);
        assert_eq!(mode(&tree.join("store/store.redb")), 0o600);
        assert_eq!(mode(&outside), 0o644, "links are not followed");

        let wide = root.path().join("wide");
        fs::create_dir(&wide).unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&wide).unwrap();
        private_dir(&root.path().join("new/deeper")).unwrap();
        assert_eq!((mode(&wide), mode(&root.path().join("new/deeper"))), (0o700, 0o700));
    }
}
