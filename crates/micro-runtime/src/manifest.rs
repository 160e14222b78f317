//! Every source builds against this server's own copy of the framework (docs/runtime.md, "The
//! framework travels with the server"): before a build, each `Cargo.toml` of the source's tree
//! has its dependencies on the SDK crates (`micro`, `micro-access`, `micro-core`,
//! `micro-proto`) pointed at the SDK this binary installed, whatever they said (a path on the
//! developer's machine, crates.io, git). A version requirement written there must accept this
//! server's version, or the build fails saying which version to ask for.
//!
//! Only the server's own copies are rewritten (an unpacked upload, a git checkout), in place,
//! formatting kept (`toml_edit`).

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, InlineTable, Item, TableLike, Value};

use crate::error::RuntimeError;

/// The dependency tables of a manifest, at the top level and under `[target.<cfg>]`.
const SECTIONS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

/// The keys of an SDK dependency that survive the rewrite, besides its `version`.
const KEPT: [&str; 5] = ["package", "features", "default-features", "default_features", "optional"];

/// What [`rewrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rewritten {
    /// These manifests (relative to the tree) now depend on the SDK.
    Manifests(Vec<PathBuf>),
    /// The tree defines an SDK crate itself (micro's own repository): it builds with its own
    /// copy, as cargo cannot hold two packages of one name and version from two paths.
    OwnFramework(String),
}

/// Points every dependency on an SDK crate in the manifests below `tree` at `sdk` (an installed
/// SDK, `<sdk_dir>/<version>`), checking each version requirement against `version`; drops
/// `[patch]` entries of SDK crates.
pub(crate) fn rewrite(tree: &Path, sdk: &Path, version: &str) -> Result<Rewritten, RuntimeError> {
    let provided = semver::Version::parse(version)
        .map_err(|err| RuntimeError::Internal(format!("this server's micro version {version}: {err}")))?;
    let mut documents = Vec::new();
    for path in manifests(tree) {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        // A manifest cargo cannot read either: cargo's own error says more than ours would.
        let Ok(doc) = text.parse::<DocumentMut>() else { continue };
        if let Some(name) = doc.get("package").and_then(|p| p.get("name")).and_then(Item::as_str)
            && micro_sdk::CRATES.contains(&name)
        {
            return Ok(Rewritten::OwnFramework(name.to_string()));
        }
        documents.push((path, doc));
    }
    let mut changed = Vec::new();
    for (path, mut doc) in documents {
        if rewrite_document(&mut doc, sdk, &provided)? {
            std::fs::write(&path, doc.to_string()).map_err(crate::error::internal)?;
            changed.push(path.strip_prefix(tree).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(Rewritten::Manifests(changed))
}

/// Every `Cargo.toml` below `tree`, not in `target/` nor in hidden dirs; links not followed.
fn manifests(tree: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![tree.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() && !name.starts_with('.') && name != "target" {
                pending.push(entry.path());
            } else if kind.is_file() && name == "Cargo.toml" {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// Rewrites one manifest; whether anything changed.
fn rewrite_document(
    doc: &mut DocumentMut,
    sdk: &Path,
    provided: &semver::Version,
) -> Result<bool, RuntimeError> {
    let mut changed = false;
    let mut tables: Vec<&mut dyn TableLike> = Vec::new();
    let root = doc.as_table_mut();
    let (mut top, mut targets, mut workspace, mut patches) = (Vec::new(), None, None, None);
    for (key, item) in root.iter_mut() {
        match key.get() {
            section if SECTIONS.contains(&section) => top.extend(item.as_table_like_mut()),
            "target" => targets = item.as_table_like_mut(),
            "workspace" => workspace = item.as_table_like_mut(),
            "patch" => patches = item.as_table_like_mut(),
            _ => {}
        }
    }
    tables.extend(top);
    if let Some(targets) = targets {
        for (_, target) in targets.iter_mut() {
            let Some(target) = target.as_table_like_mut() else { continue };
            for (key, item) in target.iter_mut() {
                if SECTIONS.contains(&key.get()) {
                    tables.extend(item.as_table_like_mut());
                }
            }
        }
    }
    if let Some(deps) = workspace.and_then(|w| w.get_mut("dependencies")).and_then(Item::as_table_like_mut) {
        tables.push(deps);
    }
    for deps in tables {
        changed |= rewrite_table(deps, sdk, provided)?;
    }
    if let Some(patches) = patches {
        for (_, patch) in patches.iter_mut() {
            let Some(patch) = patch.as_table_like_mut() else { continue };
            let ours: Vec<String> = patch
                .iter()
                .filter(|(key, item)| sdk_crate(key, item).is_some())
                .map(|(key, _)| key.to_string())
                .collect();
            for key in ours {
                patch.remove(&key);
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// The SDK crate the dependency `key = item` is on, if any (the key, or `package = "…"`).
fn sdk_crate(key: &str, item: &Item) -> Option<&'static str> {
    let package = item.as_table_like().and_then(|t| t.get("package")).and_then(Item::as_str).unwrap_or(key);
    micro_sdk::CRATES.iter().copied().find(|name| *name == package)
}

/// Rewrites the SDK dependencies of one dependency table; whether any changed.
fn rewrite_table(
    deps: &mut dyn TableLike,
    sdk: &Path,
    provided: &semver::Version,
) -> Result<bool, RuntimeError> {
    let mut changed = false;
    let keys: Vec<String> = deps.iter().map(|(key, _)| key.to_string()).collect();
    for key in keys {
        let Some(item) = deps.get(&key) else { continue };
        let Some(name) = sdk_crate(&key, item) else { continue };
        let table = item.as_table_like();
        // A member's `workspace = true`: the workspace's table is rewritten instead.
        if table.and_then(|t| t.get("workspace")).and_then(Item::as_bool) == Some(true) {
            continue;
        }
        let requirement = match table {
            Some(table) => table.get("version").and_then(Item::as_str),
            None => item.as_str(),
        };
        let mut rewritten = InlineTable::new();
        if let Some(requirement) = requirement {
            check_version(name, requirement, provided)?;
            // Kept, so cargo checks it too, and a later rewrite of this tree (the service rebuilt
            // after the server was upgraded) checks it again.
            rewritten.insert("version", Value::from(requirement));
        }
        let path = micro_sdk::crate_dir(sdk, name);
        rewritten.insert("path", Value::from(path.to_string_lossy().as_ref()));
        for kept in KEPT {
            if let Some(value) = table.and_then(|t| t.get(kept)).and_then(Item::as_value) {
                let mut value = value.clone();
                value.decor_mut().clear();
                rewritten.insert(kept, value);
            }
        }
        rewritten.fmt();
        match deps.get_mut(&key) {
            // `[dependencies.micro]`: stays a table of its own.
            Some(Item::Table(table)) => {
                let decor = table.decor().clone();
                let mut new = rewritten.into_table();
                *new.decor_mut() = decor;
                *table = new;
            }
            Some(Item::Value(value)) => {
                let decor = value.decor().clone();
                *value = Value::InlineTable(rewritten);
                *value.decor_mut() = decor;
            }
            _ => continue,
        }
        changed = true;
    }
    Ok(changed)
}

/// Refuses a requirement this server's version does not meet.
fn check_version(name: &str, requirement: &str, provided: &semver::Version) -> Result<(), RuntimeError> {
    let suggestion = format!("{}.{}", provided.major, provided.minor);
    let refuse = || {
        RuntimeError::Build(format!(
            "this project needs {name} {requirement}; this server provides {name} {provided}: change the \
             {name} dependency to \"{suggestion}\""
        ))
    };
    let parsed = semver::VersionReq::parse(requirement).map_err(|_| refuse())?;
    if parsed.matches(provided) { Ok(()) } else { Err(refuse()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDK: &str = "/sdk/0.1.0";

    /// Rewrites `text` as the root manifest of a tree and returns it.
    fn rewritten(text: &str) -> Result<String, RuntimeError> {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("Cargo.toml"), text).unwrap();
        rewrite(tree.path(), Path::new(SDK), "0.1.0")?;
        Ok(std::fs::read_to_string(tree.path().join("Cargo.toml")).unwrap())
    }

    fn path(name: &str) -> String {
        format!("{SDK}/crates/{name}")
    }

    #[test]
    fn a_version_dependency_points_at_the_sdk() {
        let out = rewritten(
            "[package]\nname = \"svc\"\n\n[dependencies]\nmicro = \"0.1\" # the framework\ntokio = \"1\"\n",
        )
        .unwrap();
        assert_eq!(
            out,
            format!(
                "[package]\nname = \"svc\"\n\n[dependencies]\nmicro = {{ version = \"0.1\", path = \"{}\" }} # the framework\ntokio = \"1\"\n",
                path("micro")
            )
        );
    }

    #[test]
    fn a_missing_path_dependency_points_at_the_sdk_and_keeps_features() {
        let out = rewritten(
            "[dependencies]\nmicro = { path = \"/nonexistent/micro\", default-features = false, features = [\"x\"], optional = true }\n\
             [build-dependencies]\nmicro = { version = \"0.1.0\", path = \"/nonexistent/micro\", features = [\"build\"] }\n",
        )
        .unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        let micro = &doc["dependencies"]["micro"];
        assert_eq!(micro["path"].as_str(), Some(path("micro").as_str()));
        assert_eq!(micro["default-features"].as_bool(), Some(false));
        assert_eq!(micro["optional"].as_bool(), Some(true));
        assert_eq!(micro["features"].as_array().unwrap().len(), 1);
        let build = &doc["build-dependencies"]["micro"];
        assert_eq!(build["path"].as_str(), Some(path("micro").as_str()));
        assert_eq!(build["features"].as_array().unwrap().get(0).and_then(Value::as_str), Some("build"));
        assert_eq!(build["version"].as_str(), Some("0.1.0"), "the requirement is kept: {out}");
        assert!(micro.get("version").is_none(), "{out}");
    }

    #[test]
    fn a_renamed_dependency_keeps_its_name() {
        let out = rewritten("[dependencies]\nframework = { package = \"micro\", git = \"https://x/micro\" }\n\n[dependencies.core]\npackage = \"micro-core\"\nversion = \"0.1\"\n").unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        let framework = &doc["dependencies"]["framework"];
        assert_eq!(framework["path"].as_str(), Some(path("micro").as_str()));
        assert_eq!(framework["package"].as_str(), Some("micro"));
        assert!(framework.get("git").is_none());
        let core = &doc["dependencies"]["core"];
        assert!(core.is_table(), "a table stays a table: {out}");
        assert_eq!(core["path"].as_str(), Some(path("micro-core").as_str()));
        assert_eq!(core["package"].as_str(), Some("micro-core"));
    }

    #[test]
    fn target_specific_and_dev_dependencies_are_rewritten() {
        let out = rewritten(
            "[target.'cfg(unix)'.dependencies]\nmicro-proto = \"0.1\"\n[target.'cfg(unix)'.dev-dependencies]\nmicro-access = { path = \"../x\" }\n[dev-dependencies]\nmicro = \"*\"\n",
        )
        .unwrap();
        let doc: DocumentMut = out.parse().unwrap();
        let unix = &doc["target"]["cfg(unix)"];
        assert_eq!(unix["dependencies"]["micro-proto"]["path"].as_str(), Some(path("micro-proto").as_str()));
        assert_eq!(
            unix["dev-dependencies"]["micro-access"]["path"].as_str(),
            Some(path("micro-access").as_str())
        );
        assert_eq!(doc["dev-dependencies"]["micro"]["path"].as_str(), Some(path("micro").as_str()));
    }

    #[test]
    fn workspace_dependencies_are_rewritten_and_members_left_inheriting() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(
            tree.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"svc\"]\n\n[workspace.dependencies]\nmicro = { path = \"../micro/crates/micro\" }\n\n[patch.crates-io]\nmicro = { path = \"/elsewhere\" }\nother = { path = \"/other\" }\n",
        )
        .unwrap();
        std::fs::create_dir_all(tree.path().join("svc")).unwrap();
        let member = "[package]\nname = \"svc\"\n\n[dependencies]\nmicro = { workspace = true, features = [\"build\"] }\n";
        std::fs::write(tree.path().join("svc/Cargo.toml"), member).unwrap();
        // Not manifests of the tree: build output and hidden dirs.
        for skipped in ["target/debug", ".git"] {
            std::fs::create_dir_all(tree.path().join(skipped)).unwrap();
            std::fs::write(tree.path().join(skipped).join("Cargo.toml"), "[dependencies]\nmicro = \"9\"\n")
                .unwrap();
        }
        let done = rewrite(tree.path(), Path::new(SDK), "0.1.0").unwrap();
        assert_eq!(done, Rewritten::Manifests(vec![PathBuf::from("Cargo.toml")]));
        let doc: DocumentMut =
            std::fs::read_to_string(tree.path().join("Cargo.toml")).unwrap().parse().unwrap();
        assert_eq!(doc["workspace"]["dependencies"]["micro"]["path"].as_str(), Some(path("micro").as_str()));
        assert!(doc["patch"]["crates-io"].get("micro").is_none(), "a patch of an SDK crate is dropped");
        assert!(doc["patch"]["crates-io"].get("other").is_some());
        assert_eq!(std::fs::read_to_string(tree.path().join("svc/Cargo.toml")).unwrap(), member);
    }

    #[test]
    fn a_mismatched_version_is_refused() {
        let err = rewritten("[dependencies]\nmicro = \"0.2\"\n").unwrap_err();
        assert_eq!(
            err,
            RuntimeError::Build(
                "this project needs micro 0.2; this server provides micro 0.1.0: change the micro \
                 dependency to \"0.1\""
                    .into()
            )
        );
        let err =
            rewritten("[dependencies]\nmicro-core = { version = \">=1\", path = \"/x\" }\n").unwrap_err();
        assert!(matches!(&err, RuntimeError::Build(m) if m.contains("needs micro-core >=1")), "{err:?}");
        assert!(rewritten("[dependencies]\nmicro = \"=0.1.0\"\n").is_ok());
    }

    #[test]
    fn a_rewritten_tree_is_checked_again_by_a_later_server() {
        let tree = tempfile::tempdir().unwrap();
        let manifest = tree.path().join("Cargo.toml");
        std::fs::write(&manifest, "[dependencies]\nmicro = \"0.1\"\n").unwrap();
        rewrite(tree.path(), Path::new(SDK), "0.1.0").unwrap();
        let once = std::fs::read_to_string(&manifest).unwrap();
        rewrite(tree.path(), Path::new(SDK), "0.1.0").unwrap();
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), once, "a second rewrite changes nothing");
        let err = rewrite(tree.path(), Path::new("/sdk/0.2.0"), "0.2.0").unwrap_err();
        assert!(matches!(&err, RuntimeError::Build(m) if m.contains("needs micro 0.1;")), "{err:?}");
    }

    #[test]
    fn other_dependencies_are_untouched() {
        let text = "[package]\nname = \"svc\"\n\n[dependencies]\nmicros = \"1\"\nserde = { version = \"1\", features = [\"derive\"] } # keep\nmy-micro = { path = \"../micro\" }\n";
        assert_eq!(rewritten(text).unwrap(), text);
    }

    #[test]
    fn a_tree_with_the_framework_itself_builds_with_its_own() {
        let tree = tempfile::tempdir().unwrap();
        let root = "[workspace]\nmembers = [\"crates/micro\"]\n[workspace.dependencies]\nmicro = { path = \"crates/micro\" }\n";
        std::fs::write(tree.path().join("Cargo.toml"), root).unwrap();
        std::fs::create_dir_all(tree.path().join("crates/micro")).unwrap();
        std::fs::write(tree.path().join("crates/micro/Cargo.toml"), "[package]\nname = \"micro\"\n").unwrap();
        let done = rewrite(tree.path(), Path::new(SDK), "0.1.0").unwrap();
        assert_eq!(done, Rewritten::OwnFramework("micro".into()));
        assert_eq!(std::fs::read_to_string(tree.path().join("Cargo.toml")).unwrap(), root);
    }
}
