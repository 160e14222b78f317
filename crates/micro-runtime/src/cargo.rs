//! `cargo build --release` of a service into the target dir every service shares.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::RuntimeError;
use crate::logs::{LogFile, pump};

/// Builds the package in `dir` with `CARGO_TARGET_DIR=target_dir`, cargo's diagnostics going to
/// `log`, and returns the path of its executable (the bin named `prefer` when there are several).
pub async fn build(
    dir: &Path,
    target_dir: &Path,
    log: &LogFile,
    prefer: &str,
) -> Result<PathBuf, RuntimeError> {
    let cargo = std::env::var_os("CARGO").filter(|c| !c.is_empty()).unwrap_or_else(|| "cargo".into());
    let mut command = crate::supervisor::child_command(&cargo, dir);
    command
        .args(["build", "--release", "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_BUILD_TARGET_DIR");
    let mut child = command.spawn().map_err(|err| {
        RuntimeError::Build(format!(
            "cannot run {}: {err}; is the Rust toolchain installed?",
            cargo.to_string_lossy()
        ))
    })?;
    // Dropping this future (the service was deleted mid-build) takes rustc down with cargo.
    let _group = GroupGuard(child.id());
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let manifest = dir.join("Cargo.toml");
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);

    let diagnostics = pump(BufReader::new(stderr), log, |_| {});
    let artifacts = async {
        let mut found: Vec<(String, PathBuf, bool)> = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            let Some(executable) = message["executable"].as_str() else { continue };
            let name = message["target"]["name"].as_str().unwrap_or_default().to_string();
            let ours = message["manifest_path"].as_str().is_some_and(|m| Path::new(m) == manifest);
            found.push((name, PathBuf::from(executable), ours));
        }
        found
    };
    let ((), found) = tokio::join!(diagnostics, artifacts);
    let status =
        child.wait().await.map_err(|err| RuntimeError::Build(format!("cargo build failed: {err}")))?;
    if !status.success() {
        return Err(RuntimeError::Build(format!(
            "cargo build failed ({status}): see `micro logs` for the errors"
        )));
    }
    let ours: Vec<_> = found.iter().filter(|(_, _, ours)| *ours).collect();
    let candidates = if ours.is_empty() { found.iter().collect() } else { ours };
    candidates
        .iter()
        .find(|(name, _, _)| name == prefer)
        .or_else(|| candidates.last())
        .map(|(_, path, _)| path.clone())
        .ok_or_else(|| {
            RuntimeError::Build(
                "cargo build produced no executable: does the package have a bin target?".into(),
            )
        })
}

/// Kills a process group when dropped.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
