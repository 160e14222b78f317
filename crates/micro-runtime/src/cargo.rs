//! The build of a service: its manifests pointed at this server's SDK (src/manifest.rs), then
//! `cargo fetch` and `cargo build --release --offline` into its namespace's target dir, each in
//! the service's sandbox (src/sandbox.rs); and the copy of the executable out of a target dir the
//! tenant's code could write.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::RuntimeError;
use crate::logs::{BuildLog, LogFile, pump_build};
use crate::sandbox::Cell;

/// Builds the package in `dir` with `CARGO_TARGET_DIR=target_dir`, cargo's output (its status
/// lines and rendered diagnostics) going to `log` and to the build log at `build_log` (emptied
/// first, locked while the build runs: [`BuildLog`]), and returns the path of its executable
/// (the bin named `prefer`, the service's name, when there are several).
///
/// Two steps: `cargo fetch` downloads the dependencies with the registry writable (no code of
/// the tenant runs there), then `cargo build --offline` runs build scripts and proc macros with
/// the registry read-only and write access only to the source and `target_dir`.
pub async fn build(
    dir: &Path,
    target_dir: &Path,
    cell: &Cell,
    log: &LogFile,
    build_log: &Path,
    prefer: &str,
) -> Result<PathBuf, RuntimeError> {
    let cargo = std::env::var_os("CARGO").filter(|c| !c.is_empty()).unwrap_or_else(|| "cargo".into());
    tokio::fs::create_dir_all(target_dir).await.map_err(crate::error::internal)?;
    let build_log = BuildLog::begin(build_log.to_path_buf()).await;
    if let Err(err) = use_sdk(dir, cell, log, &build_log).await {
        // Before cargo runs, so `micro logs --build` says why (a version mismatch) too.
        build_log.write_line(&format!("micro: {err}")).await;
        return Err(err);
    }
    fetch(&cargo, dir, cell, log, &build_log, prefer).await?;
    let mut command = crate::sandbox::child_command(&cargo, dir);
    command
        .args(["build", "--release", "--offline", "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_BUILD_TARGET_DIR");
    cell.confine_build(&mut command, target_dir)?;
    let mut child = spawn(&mut command, &cargo)?;
    // Dropping this future (the service was deleted mid-build) takes rustc down with cargo.
    let _group = GroupGuard(child.id());
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let manifest = dir.join("Cargo.toml");
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);

    let diagnostics = pump_build(BufReader::new(stderr), log, &build_log);
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
        return Err(failed(&build_log, format!("cargo build failed ({status})"), prefer).await);
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

/// Installs this binary's SDK (a no-op when it is there) and points the source's manifests at
/// it. Only the server's own copies are rewritten (an upload, a git checkout, below
/// `MICRO_HOME/sources`); an admin's server-local folder builds as it is.
async fn use_sdk(dir: &Path, cell: &Cell, log: &LogFile, build_log: &BuildLog) -> Result<(), RuntimeError> {
    let tree = cell.source.clone().unwrap_or_else(|| dir.to_path_buf());
    let sdk_dir = cell.sdk.clone();
    let owned = tree.starts_with(cell.home.join("sources"));
    let done = tokio::task::spawn_blocking(move || {
        let sdk = micro_sdk::install(&sdk_dir).map_err(|err| {
            RuntimeError::Internal(format!("cannot install the micro SDK into {}: {err}", sdk_dir.display()))
        })?;
        if !owned {
            return Ok(None);
        }
        crate::manifest::rewrite(&tree, &sdk, micro_sdk::VERSION).map(Some)
    })
    .await
    .map_err(|err| RuntimeError::Internal(format!("SDK task failed: {err}")))??;
    let line = match done {
        Some(crate::manifest::Rewritten::OwnFramework(name)) => {
            format!(
                "micro: the source defines {name} itself, so it builds with its own copy of the framework"
            )
        }
        Some(crate::manifest::Rewritten::Manifests(changed)) if !changed.is_empty() => {
            format!("micro: building with micro {} of this server", micro_sdk::VERSION)
        }
        _ => return Ok(()),
    };
    log.write_line(&line).await;
    build_log.write_line(&line).await;
    Ok(())
}

/// Starts a cargo command; a missing cargo is a build error that says so.
fn spawn(
    command: &mut tokio::process::Command,
    cargo: &std::ffi::OsStr,
) -> Result<tokio::process::Child, RuntimeError> {
    plain_output(command);
    command.spawn().map_err(|err| {
        RuntimeError::Build(format!(
            "cannot run {}: {err}; is the Rust toolchain installed?",
            cargo.to_string_lossy()
        ))
    })
}

/// Cargo's output as the logs keep it, whatever the server's environment says: its status lines
/// (`Compiling foo v0.1.0`, printed whether or not stderr is a terminal, and what `micro run`
/// shows as progress), rendered diagnostics without colour codes, and no progress bar.
fn plain_output(command: &mut tokio::process::Command) {
    command
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .env_remove("CARGO_TERM_QUIET");
}

/// A failed step of the build: `what` (with cargo's exit status), also as the build log's last
/// line; the message names the command that shows cargo's errors.
async fn failed(build_log: &BuildLog, what: String, name: &str) -> RuntimeError {
    build_log.write_line(&format!("micro: {what}")).await;
    RuntimeError::Build(format!("{what}: see `micro logs --build {name}` for the errors"))
}

/// `cargo fetch` of the package in `dir` (service `name`), output to `log` and `build_log`. It
/// runs from `/`, not from the source: cargo reads `.cargo/config.toml` from its working dir
/// upwards, and one in the source could name a `rustc-wrapper` that cargo runs even to fetch,
/// here where the registry is writable.
async fn fetch(
    cargo: &std::ffi::OsStr,
    dir: &Path,
    cell: &Cell,
    log: &LogFile,
    build_log: &BuildLog,
    name: &str,
) -> Result<(), RuntimeError> {
    let mut command = crate::sandbox::child_command(cargo, Path::new("/"));
    command.arg("fetch").arg("--manifest-path").arg(dir.join("Cargo.toml"));
    cell.confine_fetch(&mut command)?;
    let mut child = spawn(&mut command, cargo)?;
    let _group = GroupGuard(child.id());
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    tokio::join!(
        pump_build(BufReader::new(stdout), log, build_log),
        pump_build(BufReader::new(stderr), log, build_log)
    );
    let status =
        child.wait().await.map_err(|err| RuntimeError::Build(format!("cargo fetch failed: {err}")))?;
    if !status.success() {
        return Err(failed(build_log, format!("cargo fetch failed ({status})"), name).await);
    }
    Ok(())
}

/// Copies the executable cargo reported at `built` to `dest` (mode 0755). The tenant's build
/// could write `target_dir`, and a process it left behind could swap a symlink or a FIFO in at
/// `built` after cargo exits, so the path is not trusted: the file is opened without following a
/// final symlink and without blocking, and must be a regular file really inside `target_dir`.
pub async fn copy_executable(built: &Path, target_dir: &Path, dest: &Path) -> Result<(), RuntimeError> {
    let (built, target_dir, dest) = (built.to_path_buf(), target_dir.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        use nix::fcntl::OFlag;

        let refuse = || {
            RuntimeError::Build(format!(
                "the build's executable {} is not a file of the target dir",
                built.display()
            ))
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
            .open(&built)
            .map_err(|_| refuse())?;
        // Where the opened file really is (every directory on the way resolved).
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| std::fs::canonicalize(&built))
            .map_err(|_| refuse())?;
        let inside = std::fs::canonicalize(&target_dir).is_ok_and(|target| real.starts_with(target));
        if !inside || !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(refuse());
        }
        let mut out = std::fs::File::create(&dest).map_err(crate::error::internal)?;
        std::io::copy(&mut file, &mut out).map_err(crate::error::internal)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .map_err(crate::error::internal)
    })
    .await
    .map_err(|err| RuntimeError::Internal(format!("copy task failed: {err}")))?
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
