//! The framework travels with the server (docs/runtime.md, "The framework travels with the
//! server"): the source of the crates a service written with `micro` needs, embedded in this
//! binary at its exact version, and [`install`]ed into a directory where `micro new` projects
//! and the runtime's builds depend on it by path. A project therefore builds wherever this
//! binary runs, without the checkout it was built from and without crates.io's `micro`.
//!
//! Layout of an installed SDK (`<root>/<VERSION>/`): `crates/<name>/` for each of [`CRATES`]
//! (standalone manifests: no workspace inheritance, siblings by relative path), `proto/` (which
//! `micro-proto`'s build script reads as `../../proto`), `Cargo.lock` (the versions this binary
//! was tested with, a starting point for new projects) and `.digest`, written last.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/sdk.rs"));
}

/// The version of the framework embedded here: the workspace's, this binary's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The crates of the SDK, each installed as `crates/<name>`.
pub const CRATES: &[&str] = &["micro", "micro-access", "micro-core", "micro-proto"];

/// The file of an installed SDK that holds its [`digest`]; written last, so an SDK with it is
/// complete.
const DIGEST_FILE: &str = ".digest";

/// The hex SHA-256 of every path and content of the embedded SDK: two binaries with the same
/// digest install the same files.
pub fn digest() -> &'static str {
    embedded::DIGEST
}

/// Every embedded file: its path inside the SDK and its bytes.
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FILES
}

/// The directory of crate `name` (one of [`CRATES`]) in the installed SDK `sdk`
/// (`<root>/<VERSION>`, as [`install`] returns it).
pub fn crate_dir(sdk: &Path, name: &str) -> PathBuf {
    sdk.join("crates").join(name)
}

/// Makes sure `<root>/<VERSION>/` holds exactly this binary's SDK, and returns that directory.
///
/// If its `.digest` equals [`digest`] it returns at once. Otherwise it writes every file into a
/// fresh temporary directory beside it (files 0644, directories 0755), writes `.digest` last,
/// and renames it into place; an outdated or damaged SDK there is renamed away first and
/// removed. Safe when several processes race: one that loses the rename to an SDK with the
/// right digest succeeds too.
pub fn install(root: &Path) -> io::Result<PathBuf> {
    let dir = root.join(VERSION);
    if installed(&dir) {
        return Ok(dir);
    }
    fs::DirBuilder::new().recursive(true).mode(0o755).create(root)?;
    let temp = unique(root, "tmp");
    let written = write_all(&temp);
    if let Err(err) = written {
        let _ = fs::remove_dir_all(&temp);
        return Err(err);
    }
    for _ in 0..3 {
        match fs::rename(&temp, &dir) {
            Ok(()) => return Ok(dir),
            Err(_) if installed(&dir) => {
                // Another process installed the same SDK meanwhile.
                let _ = fs::remove_dir_all(&temp);
                return Ok(dir);
            }
            Err(err) if dir.exists() => {
                // An outdated or damaged SDK: moved away, then removed.
                let old = unique(root, "old");
                match fs::rename(&dir, &old) {
                    Ok(()) => {
                        let _ = fs::remove_dir_all(&old);
                    }
                    Err(_) if !dir.exists() => {} // someone else moved it
                    Err(_) => {
                        let _ = fs::remove_dir_all(&temp);
                        return Err(err);
                    }
                }
            }
            Err(err) => {
                let _ = fs::remove_dir_all(&temp);
                return Err(err);
            }
        }
    }
    let _ = fs::remove_dir_all(&temp);
    if installed(&dir) {
        Ok(dir)
    } else {
        Err(io::Error::other(format!("cannot install the micro SDK into {}", dir.display())))
    }
}

/// Whether `dir` holds this binary's SDK, complete.
fn installed(dir: &Path) -> bool {
    fs::read_to_string(dir.join(DIGEST_FILE)).is_ok_and(|found| found.trim() == digest())
}

/// A name beside the SDKs in `root` no other process or call uses: `.<VERSION>.<pid>.<n>.<what>`.
fn unique(root: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    root.join(format!(".{VERSION}.{}.{n}.{what}", std::process::id()))
}

/// Writes every embedded file below `dir` (which must not exist), then the digest.
fn write_all(dir: &Path) -> io::Result<()> {
    let mkdir = |path: &Path| fs::DirBuilder::new().recursive(true).mode(0o755).create(path);
    mkdir(dir)?;
    let write = |path: &Path, bytes: &[u8]| -> io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    for (relative, bytes) in files() {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        write(&path, bytes)?;
    }
    write(&dir.join(DIGEST_FILE), digest().as_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn installs_once_and_repairs_a_tampered_digest() {
        let root = tempfile::tempdir().unwrap();
        let sdk = install(root.path()).unwrap();
        assert_eq!(sdk, root.path().join(VERSION));
        assert_eq!(fs::read_to_string(sdk.join(".digest")).unwrap(), digest());
        for name in CRATES {
            assert!(crate_dir(&sdk, name).join("Cargo.toml").is_file(), "{name}");
            assert!(crate_dir(&sdk, name).join("src/lib.rs").is_file(), "{name}");
        }
        assert!(sdk.join("crates/micro-proto/build.rs").is_file());
        assert!(sdk.join("proto/store/store.proto").is_file());
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sdk.join("crates/micro/src/lib.rs")), 0o644);
        assert_eq!(mode(&sdk.join("crates/micro/src")), 0o755);

        // A second install is a no-op: a file changed by hand stays changed.
        let lib = sdk.join("crates/micro/src/lib.rs");
        fs::write(&lib, "// mine").unwrap();
        assert_eq!(install(root.path()).unwrap(), sdk);
        assert_eq!(fs::read_to_string(&lib).unwrap(), "// mine");

        // A digest that does not match: everything is written anew.
        fs::write(sdk.join(".digest"), "tampered").unwrap();
        assert_eq!(install(root.path()).unwrap(), sdk);
        assert_ne!(fs::read_to_string(&lib).unwrap(), "// mine");
        assert_eq!(fs::read_to_string(sdk.join(".digest")).unwrap(), digest());
        let left: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [VERSION], "no temporary or old dir is left");
    }

    #[test]
    fn racing_installs_all_succeed() {
        let root = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let root = root.path().to_path_buf();
                std::thread::spawn(move || install(&root).unwrap())
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), root.path().join(VERSION));
        }
        assert_eq!(fs::read_to_string(root.path().join(VERSION).join(".digest")).unwrap(), digest());
    }

    #[test]
    fn manifests_are_standalone() {
        let root = tempfile::tempdir().unwrap();
        let sdk = install(root.path()).unwrap();
        for name in CRATES {
            let text = fs::read_to_string(crate_dir(&sdk, name).join("Cargo.toml")).unwrap();
            assert!(!text.contains("workspace = true") && !text.contains(".workspace"), "{name}:\n{text}");
            let doc: toml_edit::DocumentMut = text.parse().unwrap();
            assert_eq!(doc["package"]["version"].as_str(), Some(VERSION), "{name}");
            assert!(doc["package"]["edition"].as_str().is_some(), "{name}");
            assert_eq!(doc["package"]["publish"].as_bool(), Some(false), "{name}");
            assert!(doc.get("dev-dependencies").is_none() && doc.get("lints").is_none(), "{name}");
            assert!(doc["workspace"].is_table(), "{name} is a workspace of its own");
        }
        let micro: toml_edit::DocumentMut =
            fs::read_to_string(crate_dir(&sdk, "micro").join("Cargo.toml")).unwrap().parse().unwrap();
        let core = &micro["dependencies"]["micro-core"];
        assert_eq!(core["path"].as_str(), Some("../micro-core"));
        assert_eq!(core["version"].as_str(), Some(format!("={VERSION}").as_str()));
        assert_eq!(micro["dependencies"]["protox"]["optional"].as_bool(), Some(true));
        assert!(micro["dependencies"]["tokio"]["version"].as_str().is_some());
        let core: toml_edit::DocumentMut =
            fs::read_to_string(crate_dir(&sdk, "micro-core").join("Cargo.toml")).unwrap().parse().unwrap();
        let features: Vec<_> = core["dependencies"]["tonic"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert_eq!(features, ["tls-ring"], "a member's features are kept");
    }
}
