//! Embeds the framework's source at this version (see src/lib.rs): the crates of `CRATES` (each
//! `Cargo.toml`, `build.rs`, `src/**`), the root `proto/**` and the workspace's `Cargo.lock`.
//! Each manifest is rewritten into a standalone one: `workspace = true` keys resolved from the
//! root `Cargo.toml`, dependencies on the other embedded crates turned into `../<name>` paths at
//! `=<version>`, `[dev-dependencies]` and `[lints]` dropped, an empty `[workspace]` added.
//!
//! Writes `$OUT_DIR/sdk.rs`: `FILES`, a table of (path in the SDK, bytes) through
//! `include_bytes!`, and `DIGEST`, the hex SHA-256 of every path and content.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use toml_edit::{DocumentMut, InlineTable, Item, TableLike, Value};

/// Keep in step with `CRATES` in src/lib.rs.
const CRATES: &[&str] = &["micro", "micro-access", "micro-core", "micro-proto"];

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let workspace_manifest = root.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", workspace_manifest.display());
    let workspace: DocumentMut = std::fs::read_to_string(&workspace_manifest)?.parse()?;
    let version = workspace["workspace"]["package"]["version"]
        .as_str()
        .ok_or("the root Cargo.toml has no [workspace.package] version")?
        .to_string();

    // (path in the SDK, file whose bytes it holds)
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for name in CRATES {
        let dir = root.join("crates").join(name);
        let manifest = dir.join("Cargo.toml");
        println!("cargo:rerun-if-changed={}", manifest.display());
        let rewritten = standalone(&std::fs::read_to_string(&manifest)?, &workspace, &version)
            .map_err(|err| format!("{}: {err}", manifest.display()))?;
        let written = out.join("manifests").join(name).join("Cargo.toml");
        std::fs::create_dir_all(written.parent().expect("has a parent"))?;
        std::fs::write(&written, rewritten)?;
        files.push((format!("crates/{name}/Cargo.toml"), written));
        let build = dir.join("build.rs");
        println!("cargo:rerun-if-changed={}", build.display());
        if build.is_file() {
            files.push((format!("crates/{name}/build.rs"), build));
        }
        walk(&dir.join("src"), &format!("crates/{name}/src"), &mut files)?;
    }
    walk(&root.join("proto"), "proto", &mut files)?;
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    if lock.is_file() {
        files.push(("Cargo.lock".to_string(), lock));
    }
    files.sort();

    let mut hasher = Sha256::new();
    let mut table = String::new();
    for (relative, path) in &files {
        let bytes = std::fs::read(path)?;
        hasher.update((relative.len() as u64).to_le_bytes());
        hasher.update(relative.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        let absolute = std::fs::canonicalize(path)?;
        let absolute = absolute.to_str().ok_or("an embedded path is not UTF-8")?;
        writeln!(table, "    ({relative:?}, include_bytes!({absolute:?})),")?;
    }
    let digest = hex::encode(hasher.finalize());
    let code = format!(
        "/// Every file of the SDK: its path inside the SDK, and its bytes.\n\
         pub(crate) static FILES: &[(&str, &[u8])] = &[\n{table}];\n\n\
         /// The hex SHA-256 of every path and content of [`FILES`].\n\
         pub(crate) const DIGEST: &str = {digest:?};\n"
    );
    std::fs::write(out.join("sdk.rs"), code)?;
    Ok(())
}

/// Adds every file below `dir` as `prefix/<relative path>`, and asks cargo to watch each
/// directory and file.
fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) -> Result<(), Error> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|name| format!("not UTF-8: {name:?}"))?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, &format!("{prefix}/{name}"), files)?;
        } else if kind.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push((format!("{prefix}/{name}"), path));
        }
    }
    Ok(())
}

/// The manifest `text` of an embedded crate as a standalone one.
fn standalone(text: &str, workspace: &DocumentMut, version: &str) -> Result<String, Error> {
    let mut doc: DocumentMut = text.parse()?;
    let ws = workspace["workspace"].as_table().ok_or("the root Cargo.toml has no [workspace]")?;
    let ws_package = ws.get("package").and_then(Item::as_table_like).ok_or("no [workspace.package]")?;
    let ws_deps =
        ws.get("dependencies").and_then(Item::as_table_like).ok_or("no [workspace.dependencies]")?;

    let package = doc.get_mut("package").and_then(Item::as_table_like_mut).ok_or("no [package]")?;
    let inherited: Vec<String> =
        package.iter().filter(|(_, item)| inherits(item)).map(|(key, _)| key.to_string()).collect();
    for key in inherited {
        let value = ws_package
            .get(&key)
            .and_then(Item::as_value)
            .ok_or_else(|| format!("package.{key} inherits a key [workspace.package] lacks"))?;
        package.insert(&key, Item::Value(value.clone()));
    }

    doc.remove("dev-dependencies");
    doc.remove("lints");
    for section in ["dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get_mut(section).and_then(Item::as_table_like_mut) {
            resolve_deps(deps, ws_deps, version)?;
        }
    }
    if let Some(targets) = doc.get_mut("target").and_then(Item::as_table_like_mut) {
        for (_, target) in targets.iter_mut() {
            let Some(target) = target.as_table_like_mut() else { continue };
            target.remove("dev-dependencies");
            for section in ["dependencies", "build-dependencies"] {
                if let Some(deps) = target.get_mut(section).and_then(Item::as_table_like_mut) {
                    resolve_deps(deps, ws_deps, version)?;
                }
            }
        }
    }
    // A workspace of its own: cargo looks for the workspace of a path dependency upwards from
    // it, and would read the `Cargo.toml` of every folder above the SDK (which a sandboxed build
    // may not read, and which is none of the build's business).
    doc.insert("workspace", Item::Table(toml_edit::Table::new()));
    Ok(doc.to_string())
}

/// Whether `item` is `{ workspace = true, … }` (or the dotted `key.workspace = true`).
fn inherits(item: &Item) -> bool {
    item.as_table_like().and_then(|t| t.get("workspace")).and_then(Item::as_bool) == Some(true)
}

/// Resolves each `workspace = true` dependency of `deps`; an embedded crate becomes a sibling
/// path at exactly `version`.
fn resolve_deps(deps: &mut dyn TableLike, ws_deps: &dyn TableLike, version: &str) -> Result<(), Error> {
    let names: Vec<String> = deps.iter().map(|(key, _)| key.to_string()).collect();
    for name in names {
        let item = deps.get(&name).expect("listed above");
        let package = item
            .as_table_like()
            .and_then(|t| t.get("package"))
            .and_then(Item::as_str)
            .unwrap_or(&name)
            .to_string();
        let local = item
            .as_table_like()
            .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<Vec<(String, Item)>>());
        let mut resolved = InlineTable::new();
        if CRATES.contains(&package.as_str()) {
            resolved.insert("path", Value::from(format!("../{package}")));
            resolved.insert("version", Value::from(format!("={version}")));
        } else if inherits(item) {
            match ws_deps.get(&name) {
                Some(Item::Value(Value::String(req))) => {
                    resolved.insert("version", Value::from(req.value().as_str()));
                }
                Some(other) => {
                    let table = other.as_table_like().ok_or_else(|| {
                        format!("workspace dependency {name} is neither a version nor a table")
                    })?;
                    for (key, value) in table.iter() {
                        if let Some(value) = value.as_value() {
                            resolved.insert(key, value.clone());
                        }
                    }
                }
                None => {
                    return Err(
                        format!("dependency {name} inherits from the workspace, which lacks it").into()
                    );
                }
            }
        } else {
            continue; // a dependency of its own: kept as written
        }
        // The member's own keys: `features` add to the workspace's, the rest override.
        for (key, value) in local.unwrap_or_default() {
            let Some(value) = value.as_value() else { continue };
            match key.as_str() {
                "workspace" => {}
                "features" => {
                    let mut features =
                        resolved.get("features").and_then(Value::as_array).cloned().unwrap_or_default();
                    for feature in value.as_array().into_iter().flatten() {
                        features.push(feature.clone());
                    }
                    resolved.insert("features", Value::Array(features));
                }
                _ => {
                    resolved.insert(&key, value.clone());
                }
            }
        }
        resolved.fmt();
        deps.insert(&name, Item::Value(Value::InlineTable(resolved)));
    }
    Ok(())
}
