//! Process handling: one supervisor task per service, which fetches the source, builds it, runs
//! the process in its own process group (in the sandbox, with the `MICRO_*` environment and an
//! account of its own), restarts it on crash with exponential backoff, and stops it (SIGTERM,
//! grace, SIGKILL) when told. Uses the state ([`crate::state`]), never the `Runtime` API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use micro_core::backoff::Backoff;
use micro_core::{service_env, time};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sha2::Digest;
use tokio::io::BufReader;
use tokio::sync::{oneshot, watch};

use crate::error::{RuntimeError, internal};
use crate::logs::{LogFile, pump};
use crate::options::Launch;
use crate::sandbox::{self, Cell};
use crate::source::{self, GitSource, UploadId, hex};
use crate::state::{Desired, Inner, Managed, Run, Status, UpdatePhase};

/// How long after `Listening on` a service that never logs `Registered` counts as running.
const REGISTER_GRACE: Duration = Duration::from_secs(1);

/// Starts a new supervisor for `managed` (replacing none: callers stop the old one first).
/// A restore racing a delete, or a shutdown, starts nothing.
pub(crate) async fn launch(
    inner: &Arc<Inner>,
    managed: Arc<Managed>,
    secrets: Option<BTreeMap<String, String>>,
    refetch: bool,
) {
    let mut run = managed.run.lock().await;
    if inner.closed.load(Ordering::SeqCst) || run.is_some() || !is_listed(inner, &managed) {
        return;
    }
    let (stop, stopped) = watch::channel(false);
    let current = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn(supervise(
        inner.clone(),
        managed.clone(),
        stopped,
        secrets.unwrap_or_default(),
        refetch,
        current.clone(),
    ));
    *run = Some(Run { stop, task, current });
}

/// Whether `managed` is still the runtime's entry for its service (not deleted meanwhile).
fn is_listed(inner: &Inner, managed: &Arc<Managed>) -> bool {
    let desired = managed.desired();
    inner
        .lookup(&desired.namespace, &desired.name, &desired.version)
        .is_some_and(|m| Arc::ptr_eq(&m, managed))
}

/// Starts a zero-downtime update of `managed` to `staged` beside its running supervisor
/// (callers stop any update being staged first): fetch and build `staged`, start the new
/// process, wait until it is ready, then make it the service's and stop the old process. A
/// failed build or a new process that never gets ready leaves the old one running, with
/// metadata `update=failed` and `update_error`. The desired state changes only when the new
/// process takes over.
pub(crate) async fn stage(
    inner: &Arc<Inner>,
    managed: Arc<Managed>,
    staged: Desired,
    secrets: BTreeMap<String, String>,
) {
    let mut staging = managed.staging.lock().await;
    if inner.closed.load(Ordering::SeqCst) || staging.is_some() || !is_listed(inner, &managed) {
        return;
    }
    {
        let mut live = managed.live.lock().expect("live lock");
        live.update = Some(UpdatePhase::Building);
        live.update_error.clear();
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(update_beside(inner.clone(), managed.clone(), staged, secrets, stopped));
    *staging = Some(Run { stop, task, current: Arc::new(AtomicBool::new(false)) });
}

fn log_file(inner: &Inner, desired: &Desired) -> LogFile {
    LogFile::new(
        inner.options.home.join("logs").join(&desired.namespace).join(format!("{}.log", desired.name)),
    )
}

fn set_update(managed: &Managed, phase: Option<UpdatePhase>, error: &str) {
    let mut live = managed.live.lock().expect("live lock");
    live.update = phase;
    live.update_error = error.to_string();
}

/// The task [`stage`] starts.
async fn update_beside(
    inner: Arc<Inner>,
    managed: Arc<Managed>,
    staged: Desired,
    secrets: BTreeMap<String, String>,
    mut stop: watch::Receiver<bool>,
) {
    let log = log_file(&inner, &staged);
    let began = Instant::now();
    log.write_line(&format!(
        "micro: updating {} {}: the running process serves until the new one is ready",
        staged.name, staged.version
    ))
    .await;
    let slot = std::sync::Mutex::new(staged);
    let prepared = tokio::select! {
        prepared = prepare(&inner, &managed, &slot, true, &log, &secrets, true) => prepared,
        () = stopped(&mut stop) => {
            discard_checkout(&managed, &slot.into_inner().expect("desired lock")).await;
            return;
        }
    };
    let staged = slot.into_inner().expect("desired lock is never poisoned");
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            let message = format!("build failed: {err}");
            tracing::warn!(namespace = %staged.namespace, name = %staged.name, cause = %err, "update failed to build; the running version keeps serving");
            log.write_line(&format!("micro: update failed: {message}; the running version keeps serving"))
                .await;
            set_update(&managed, Some(UpdatePhase::Failed), &message);
            discard_checkout(&managed, &staged).await;
            return;
        }
    };
    let built = began.elapsed();
    let program = prepared.program.clone();
    set_update(&managed, Some(UpdatePhase::Starting), "");
    let (ready_tx, ready_rx) = oneshot::channel();
    let launch = source::random_hex(8);
    let (candidate_stop, candidate_stopped) = watch::channel(false);
    let current = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(serve(
        inner.clone(),
        managed.clone(),
        staged.clone(),
        prepared,
        candidate_stopped,
        current.clone(),
        Some(Candidate { ready: ready_tx, launch: launch.clone() }),
    ));
    let candidate = Run { stop: candidate_stop, task, current };
    let ready = tokio::select! {
        ready = ready_rx => ready.unwrap_or_else(|_| Err("the new process ended before it was ready".into())),
        () = stopped(&mut stop) => {
            let _ = candidate.stop.send(true);
            let _ = candidate.task.await;
            set_spare(&inner, &managed, None).await;
            discard_candidate(&inner, &staged, &program, &launch).await;
            discard_checkout(&managed, &staged).await;
            return;
        }
    };
    let pid = match ready {
        Ok(pid) => pid,
        Err(message) => {
            let _ = candidate.stop.send(true);
            let _ = candidate.task.await;
            set_spare(&inner, &managed, None).await;
            tracing::warn!(namespace = %staged.namespace, name = %staged.name, error = %message, "update failed to start; the running version keeps serving");
            log.write_line(&format!("micro: update failed: {message}; the running version keeps serving"))
                .await;
            discard_candidate(&inner, &staged, &program, &launch).await;
            set_update(&managed, Some(UpdatePhase::Failed), &message);
            discard_checkout(&managed, &staged).await;
            return;
        }
    };

    // Ready: the new process becomes the service's, then the old one stops.
    let swap = Instant::now();
    let (old, previous) = {
        let mut run = managed.run.lock().await;
        let old = run.take();
        if let Some(old) = &old {
            old.current.store(false, Ordering::SeqCst);
        }
        let old_pid = {
            let mut live = managed.live.lock().expect("live lock");
            let old_pid = live.pid;
            live.pid = Some(pid);
            live.status = Status::Running;
            live.error.clear();
            live.restarts = 0;
            live.started = time::rfc3339_now();
            live.update = None;
            live.update_error.clear();
            old_pid
        };
        let (previous, desired) = {
            let mut desired = managed.desired.lock().expect("desired lock");
            let previous = desired.clone();
            *desired = Desired { pid: Some(pid), spare_pid: old_pid, ..staged };
            (previous, desired.clone())
        };
        persist(&inner, &desired).await;
        candidate.current.store(true, Ordering::SeqCst);
        *run = Some(candidate);
        (old, previous)
    };
    log.write_line(&format!("micro: the new version is ready (pid {pid}); stopping the old one")).await;
    if let Some(old) = old {
        let _ = old.stop.send(true);
        let _ = old.task.await;
    }
    set_spare(&inner, &managed, None).await;
    let desired = managed.desired();
    // The old process's account and binary go with it.
    let account = candidate_account_id(&desired.name, &desired.version, &launch);
    delete_service_accounts(&inner.auth, &desired.namespace, &desired.name, &desired.version, Some(&account))
        .await;
    prune_binaries(&inner, &desired, &program).await;
    if previous.checkout.is_some() && previous.checkout != desired.checkout {
        remove_owned_source(&inner, &Desired { source: String::new(), ..previous.clone() }).await;
    }
    if previous.source != desired.source {
        remove_owned_source(&inner, &Desired { checkout: None, ..previous }).await;
    }
    tracing::info!(namespace = %desired.namespace, name = %desired.name, build = ?built, swap = ?swap.elapsed(), "service updated");
}

/// Records (or clears) the second process group of a service ([`Desired::spare_pid`]).
async fn set_spare(inner: &Inner, managed: &Managed, pid: Option<u32>) {
    let desired = {
        let mut desired = managed.desired.lock().expect("desired lock");
        if desired.spare_pid == pid {
            return;
        }
        desired.spare_pid = pid;
        desired.clone()
    };
    persist(inner, &desired).await;
}

/// Removes the git checkout an update made when the update does not take over.
async fn discard_checkout(managed: &Managed, staged: &Desired) {
    if let Some(checkout) = &staged.checkout
        && managed.desired().checkout.as_ref() != Some(checkout)
    {
        let _ = tokio::fs::remove_dir_all(checkout).await;
    }
}

/// Removes what the runtime itself put under `sources/` for `desired` (never a user's folder):
/// its git checkout and its unpacked upload.
pub(crate) async fn remove_owned_source(inner: &Inner, desired: &Desired) {
    if let Some(checkout) = &desired.checkout {
        let _ = tokio::fs::remove_dir_all(checkout).await;
    }
    if let Ok(id) = UploadId::parse(&desired.source) {
        let _ =
            tokio::fs::remove_dir_all(id.dir(&inner.options.home.join("sources"), &desired.namespace)).await;
    }
}

/// Metadata keys marking an account as the one the runtime made for a service version.
const ACCOUNT_SERVICE: &str = "runtime.service";
const ACCOUNT_VERSION: &str = "runtime.version";

/// The id (and name) of a service's account in its namespace: `svc.<name>.<version>` with the
/// version escaped by [`source::service_key`], so no two (name, version) pairs share one.
pub(crate) fn account_id(name: &str, version: &str) -> String {
    format!("svc.{}", source::service_key(name, version))
}

/// The id of the account of an update's new process, made while the old process still runs
/// under its own: `svc.<name>.<version>~<launch>`. `~` never occurs in an escaped version, so
/// it names no other pair's account.
fn candidate_account_id(name: &str, version: &str, launch: &str) -> String {
    format!("{}~{launch}", account_id(name, version))
}

/// The account the supervisor creates for a launch of a service, with id `id`: of kind
/// `service`, and marked as the runtime's own by its metadata, which
/// [`delete_service_accounts`] checks.
fn service_account(id: String, name: &str, version: &str) -> micro_auth::NewAccount {
    micro_auth::NewAccount {
        id,
        kind: micro_auth::service::SERVICE.to_string(),
        scopes: vec!["service".to_string()],
        metadata: [
            (ACCOUNT_SERVICE.to_string(), name.to_string()),
            (ACCOUNT_VERSION.to_string(), version.to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

/// Whether `account` is one the runtime made for service `name` at `version`: of kind
/// `service` with metadata naming both, never an account that merely shares the id or the
/// name, such as a person's.
fn is_service_account(account: &micro_core::Account, name: &str, version: &str) -> bool {
    account.kind == micro_auth::service::SERVICE
        && account.metadata.get(ACCOUNT_SERVICE).map(String::as_str) == Some(name)
        && account.metadata.get(ACCOUNT_VERSION).map(String::as_str) == Some(version)
}

/// Deletes the accounts the runtime made for a service version ([`is_service_account`]),
/// but the one with id `keep`: the plain one and those of updates' new processes.
pub(crate) async fn delete_service_accounts(
    auth: &micro_auth::Auth,
    namespace: &str,
    name: &str,
    version: &str,
    keep: Option<&str>,
) {
    let plain = account_id(name, version);
    let candidates = format!("{plain}~");
    let ids = match auth.list_accounts(namespace).await {
        Ok(accounts) => accounts
            .into_iter()
            .filter(|account| account.id == plain || account.id.starts_with(&candidates))
            .filter(|account| Some(account.id.as_str()) != keep)
            .map(|account| account.id)
            .collect(),
        Err(err) => {
            tracing::warn!(namespace, name, version, cause = %err, "cannot list a service's accounts");
            Vec::new()
        }
    };
    for id in ids {
        if let Err(err) =
            auth.delete_account_if(namespace, &id, |account| is_service_account(account, name, version)).await
        {
            tracing::warn!(namespace, name, version, cause = %err, "cannot delete a service's account");
        }
    }
}

/// The private copy of a service version's binary: `build/services/<ns>/<name>.<version>`
/// ([`source::service_key`], one folder per pair).
pub(crate) fn binary_dir(home: &Path, namespace: &str, name: &str, version: &str) -> PathBuf {
    home.join("build").join("services").join(namespace).join(source::service_key(name, version))
}

/// Resolves once the supervisor is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn supervise(
    inner: Arc<Inner>,
    managed: Arc<Managed>,
    mut stop: watch::Receiver<bool>,
    secrets: BTreeMap<String, String>,
    refetch: bool,
    current: Arc<AtomicBool>,
) {
    let desired = managed.desired();
    let log = log_file(&inner, &desired);
    let prepared = tokio::select! {
        prepared = prepare(&inner, &managed, &managed.desired, false, &log, &secrets, refetch) => prepared,
        () = stopped(&mut stop) => {
            set_status(&managed, &current, Status::Stopped, "");
            return;
        }
    };
    match prepared {
        Ok(prepared) => {
            let desired = managed.desired();
            prune_binaries(&inner, &desired, &prepared.program).await;
            serve(inner, managed.clone(), desired, prepared, stop, current, None).await;
        }
        Err(err) => {
            tracing::warn!(namespace = %desired.namespace, name = %desired.name, cause = %err, "service failed to build");
            log.write_line(&format!("micro: {err}")).await;
            set_status(&managed, &current, Status::Error, &err.to_string());
        }
    }
}

/// Sets the service's status, when `current` says this supervisor owns it.
fn set_status(managed: &Managed, current: &AtomicBool, status: Status, error: &str) {
    if current.load(Ordering::SeqCst) {
        managed.set_status(status, error);
    }
}

/// Runs a prepared service (`desired` as built) under its account, restarting it on crash,
/// until told to stop. With `ready` (the new process of an update), the first run tells it
/// the process's pid once the process is ready, or why not; a first run that never gets ready
/// ends the supervisor.
async fn serve(
    inner: Arc<Inner>,
    managed: Arc<Managed>,
    desired: Desired,
    prepared: Prepared,
    mut stop: watch::Receiver<bool>,
    current: Arc<AtomicBool>,
    candidate: Option<Candidate>,
) {
    let log = log_file(&inner, &desired);
    let Prepared { program, args, dir, cell } = prepared;
    let (mut ready, launch_id) = match candidate {
        Some(Candidate { ready, launch }) => (Some(ready), launch),
        None => (None, source::random_hex(8)),
    };
    let is_candidate = ready.is_some();
    let launch = Launch {
        namespace: desired.namespace.clone(),
        name: desired.name.clone(),
        version: desired.version.clone(),
        id: launch_id,
    };
    // A fresh account per launch: its secret is never stored by the runtime. An update's new
    // process gets one of its own, so the old process keeps its credentials while it serves
    // (and for good when the update fails).
    let id = if is_candidate {
        candidate_account_id(&desired.name, &desired.version, &launch.id)
    } else {
        delete_service_accounts(&inner.auth, &desired.namespace, &desired.name, &desired.version, None).await;
        account_id(&desired.name, &desired.version)
    };
    let new = service_account(id.clone(), &desired.name, &desired.version);
    let secret = match inner.auth.generate(&desired.namespace, new).await {
        Ok((_, secret)) => secret,
        Err(err) => {
            let message = format!("cannot create the service account: {err}");
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(message));
            } else {
                set_status(&managed, &current, Status::Error, &message);
            }
            return;
        }
    };
    let server = inner.server_address.lock().expect("address lock").clone();
    let mut env: Vec<(String, String)> = vec![
        (service_env::SERVICE_NAME.into(), desired.name.clone()),
        (service_env::SERVICE_VERSION.into(), desired.version.clone()),
        (service_env::SERVER_ADDRESS.into(), server.clone()),
        (service_env::NAMESPACE.into(), desired.namespace.clone()),
        (service_env::AUTH_ID.into(), id.clone()),
        (service_env::AUTH_SECRET.into(), secret),
        (service_env::SERVICE_ADDRESS.into(), "127.0.0.1:0".into()),
        (service_env::LAUNCH_ID.into(), launch.id.clone()),
        // One platform, one log format: the one this server writes (`--log-format`).
        (service_env::LOG_FORMAT.into(), micro_core::logging::active_format().as_str().into()),
        // Spans go to the server's OTLP receiver (its trace ring, and on to the server's own
        // OTEL_EXPORTER_OTLP_ENDPOINT); a `--env` of the user's own comes later and wins
        // (docs/observability.md#traces).
        (micro_core::trace::OTEL_EXPORTER_OTLP_ENDPOINT.into(), format!("http://{server}")),
    ];
    for entry in &desired.env {
        if let Some((key, value)) = entry.split_once('=') {
            env.push((key.to_string(), value.to_string()));
        }
    }

    if !is_candidate {
        reap_orphan(&desired, desired.pid, inner.options.stop_grace).await;
        reap_orphan(&desired, desired.spare_pid, inner.options.stop_grace).await;
        if desired.spare_pid.is_some() {
            set_spare(&inner, &managed, None).await;
        }
    }
    let options = &inner.options;
    let mut backoff = Backoff::new(options.backoff_initial, options.backoff_max);
    loop {
        set_status(&managed, &current, Status::Starting, "");
        let began = Instant::now();
        let outcome = run_once(
            &inner,
            &managed,
            &current,
            &log,
            Spawn { program: &program, args: &args, dir: &dir, cell: &cell, env: &env, launch: &launch },
            &mut ready,
            &mut stop,
        )
        .await;
        match outcome {
            Outcome::Stopped => {
                set_status(&managed, &current, Status::Stopped, "");
                return;
            }
            Outcome::Exited(message) if message.is_empty() => {
                log.write_line("micro: the service exited").await;
                set_status(&managed, &current, Status::Stopped, "");
                return;
            }
            Outcome::Exited(message) => {
                if began.elapsed() >= options.backoff_reset {
                    backoff.reset();
                }
                let retry = backoff.next_delay();
                tracing::warn!(namespace = %desired.namespace, name = %desired.name, error = %message, retry_in = ?retry, "service crashed");
                log.write_line(&format!("micro: {message}; restarting in {}s", retry.as_secs_f32())).await;
                if current.load(Ordering::SeqCst) {
                    let mut live = managed.live.lock().expect("live lock");
                    live.status = Status::Error;
                    live.error = message;
                    live.restarts += 1;
                }
                crate::metrics::restarted();
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = stopped(&mut stop) => {
                        // Keep the error visible: the last run crashed.
                        return;
                    }
                }
            }
        }
    }
}

/// The new process of an update: told ready (its pid) or why not, and its launch id.
struct Candidate {
    ready: oneshot::Sender<Result<u32, String>>,
    launch: String,
}

/// What a service runs: its program and arguments, the folder to run in, and the sandbox of
/// its processes.
struct Prepared {
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    cell: Cell,
}

/// Fetches the source and builds it (in the sandbox): what to run, and where.
///
/// `slot` is the desired state being prepared: the service's own, or (`staged`) the one of an
/// update built beside the running process, which neither changes the service's status nor is
/// persisted here.
async fn prepare(
    inner: &Inner,
    managed: &Managed,
    slot: &std::sync::Mutex<Desired>,
    staged: bool,
    log: &LogFile,
    secrets: &BTreeMap<String, String>,
    refetch: bool,
) -> Result<Prepared, RuntimeError> {
    let snapshot = slot.lock().expect("desired lock").clone();
    let root = fetch(inner, managed, slot, staged, &snapshot, secrets, refetch).await?;
    let desired = slot.lock().expect("desired lock").clone();
    // The service's own dir (deleted with the service): `bin/` holds its binary, `data/` is
    // where it may write (and its working dir when it has no source).
    let own = binary_dir(&inner.options.home, &desired.namespace, &desired.name, &desired.version);
    let cell = Cell {
        sandbox: inner.options.sandbox,
        namespace: desired.namespace.clone(),
        home: inner.options.home.clone(),
        // A git source may run a folder of its checkout: the whole checkout is the service's.
        source: root.as_ref().map(|root| match &desired.checkout {
            Some(checkout) if root.starts_with(checkout) => checkout.clone(),
            _ => root.clone(),
        }),
        data: own.join("data"),
        sdk: inner.options.sdk_dir.clone(),
    };
    let sandbox = cell.admit()?;
    slot.lock().expect("desired lock").metadata.insert("sandbox".into(), sandbox.into());
    let entry = source::validate_relative("entrypoint", &desired.entrypoint)?;
    let dir = match &root {
        Some(root) => root.join(&entry),
        None => {
            let dir = cell.data.join(&entry);
            tokio::fs::create_dir_all(&dir).await.map_err(internal)?;
            dir
        }
    };
    if !dir.is_dir() {
        return Err(RuntimeError::NotFound(format!(
            "entrypoint {} not found in the source",
            desired.entrypoint
        )));
    }
    if let Some((program, first)) = desired.command.split_first() {
        let mut args = first.to_vec();
        args.extend(desired.args.iter().cloned());
        return Ok(Prepared { program: PathBuf::from(program), args, dir, cell });
    }
    if !dir.join("Cargo.toml").is_file() {
        return Err(RuntimeError::Invalid(format!(
            "no Cargo.toml in {}: pass --command to run a service written in another language",
            if desired.entrypoint.is_empty() { "the source" } else { desired.entrypoint.as_str() }
        )));
    }
    if !staged {
        managed.set_status(Status::Building, "");
    }
    let _permit =
        inner.builds.acquire().await.map_err(|_| RuntimeError::Internal("the runtime is closing".into()))?;
    log.write_line(&format!("micro: building {} {}", desired.name, desired.version)).await;
    // One target dir per namespace: a tenant's build can write only its own.
    let target_dir = inner.options.target_dir.join(&desired.namespace);
    let build_log =
        crate::logs::build_path(&inner.options.home, &desired.namespace, &desired.name, &desired.version);
    let began = std::time::Instant::now();
    let built = crate::cargo::build(&dir, &target_dir, &cell, log, &build_log, &desired.name).await;
    crate::metrics::build_finished(began.elapsed(), built.is_ok());
    let built = built?;
    // A private copy: another build of the namespace may replace the binary in its target dir.
    // Each build gets a folder of its own (`bin/<build>/<name>`), so the binary of a running
    // process (which a crash restarts) is never replaced by an update's, which may never take
    // over; [`prune_binaries`] removes the folders no process runs from.
    let build_dir = own.join("bin").join(source::random_hex(8));
    tokio::fs::create_dir_all(&build_dir).await.map_err(internal)?;
    let file_name = built.file_name().map_or_else(|| "service".into(), |n| n.to_os_string());
    let staged = build_dir.join(".staged");
    crate::cargo::copy_executable(&built, &target_dir, &staged).await?;
    let binary = build_dir.join(file_name);
    tokio::fs::rename(&staged, &binary).await.map_err(internal)?;
    log.write_line("micro: build finished").await;
    Ok(Prepared { program: binary, args: desired.args.clone(), dir, cell })
}

/// The build folder of `program` (`bin/<build>/` of service version `desired`), or `None` for a
/// program that is not a build's (a `--command`).
fn build_folder(inner: &Inner, desired: &Desired, program: &Path) -> Option<(PathBuf, PathBuf)> {
    let bin_dir =
        binary_dir(&inner.options.home, &desired.namespace, &desired.name, &desired.version).join("bin");
    let folder = program.parent().filter(|dir| dir.parent() == Some(bin_dir.as_path()))?.to_path_buf();
    Some((bin_dir, folder))
}

/// Removes what an update's new process that did not take over leaves: the build folder of
/// its `program` and the account of its `launch`. The old process keeps its own of both.
async fn discard_candidate(inner: &Inner, desired: &Desired, program: &Path, launch: &str) {
    if let Some((_, folder)) = build_folder(inner, desired, program) {
        let _ = tokio::fs::remove_dir_all(folder).await;
    }
    let id = candidate_account_id(&desired.name, &desired.version, launch);
    let ours = |account: &micro_core::Account| is_service_account(account, &desired.name, &desired.version);
    if let Err(err) = inner.auth.delete_account_if(&desired.namespace, &id, ours).await {
        tracing::warn!(namespace = %desired.namespace, name = %desired.name, cause = %err, "cannot delete an update's account");
    }
}

/// Removes every build folder of service version `desired` but the one of `program`: called
/// once `program` is the only binary of the version that runs (or that a crash restarts). A
/// `program` that is not a build's (a `--command`) removes nothing.
async fn prune_binaries(inner: &Inner, desired: &Desired, program: &Path) {
    let Some((bin_dir, keep)) = build_folder(inner, desired, program) else { return };
    let Ok(mut entries) = tokio::fs::read_dir(&bin_dir).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let removed = match entry.file_type().await {
            Ok(kind) if kind.is_dir() => tokio::fs::remove_dir_all(&path).await,
            _ => tokio::fs::remove_file(&path).await,
        };
        if let Err(err) = removed {
            tracing::warn!(path = %path.display(), cause = %err, "cannot remove an old service binary");
        }
    }
}

/// The root folder of the service's source (none for a bare command), fetching git sources
/// when needed.
#[allow(clippy::too_many_arguments, reason = "prepare's arguments, passed on")]
async fn fetch(
    inner: &Inner,
    managed: &Managed,
    slot: &std::sync::Mutex<Desired>,
    staged: bool,
    desired: &Desired,
    secrets: &BTreeMap<String, String>,
    refetch: bool,
) -> Result<Option<PathBuf>, RuntimeError> {
    let sources = inner.options.home.join("sources");
    let source = desired.source.as_str();
    if source.is_empty() {
        return Ok(None);
    }
    let (root, build) = if source.starts_with(source::UPLOAD_SCHEME) {
        let id = UploadId::parse(source)?;
        let dir = id.dir(&sources, &desired.namespace);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound(format!("source {source} not found: run the service again")));
        }
        (dir, id.id.chars().take(12).collect())
    } else if source::is_git(source) {
        let git = GitSource::parse(source, &desired.version)?;
        match &desired.checkout {
            Some(checkout) if !refetch && checkout.is_dir() => {
                (checkout.join(&git.folder), desired.build.clone())
            }
            _ => {
                if !staged {
                    managed.set_status(Status::Building, "");
                }
                let checkout = sources.join(&desired.namespace).join(format!(
                    "{}-{}-git-{}",
                    desired.name,
                    source::file_safe(&desired.version),
                    source::random_hex(6)
                ));
                let token = secrets.get("GIT_CREDENTIALS").map(String::as_str);
                let commit = git.clone_into(&checkout, token).await?;
                let folder = checkout.join(&git.folder);
                if !folder.is_dir() {
                    let _ = tokio::fs::remove_dir_all(&checkout).await;
                    return Err(RuntimeError::NotFound(format!(
                        "folder {} not found in {}",
                        git.folder, git.url
                    )));
                }
                slot.lock().expect("desired lock").checkout = Some(checkout);
                (folder, commit.chars().take(12).collect())
            }
        }
    } else {
        let dir = PathBuf::from(source);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound(format!("source folder {source} not found on the server")));
        }
        let digest = sha2::Sha256::digest(format!("{source}\n{}", time::rfc3339_now()).as_bytes());
        (dir, hex(&digest)[..12].to_string())
    };
    // Persisted so a restore reuses the checkout and shows the same build.
    let desired = {
        let mut d = slot.lock().expect("desired lock");
        d.build = build;
        d.clone()
    };
    if !staged {
        persist(inner, &desired).await;
    }
    Ok(Some(root))
}

async fn persist(inner: &Inner, desired: &Desired) {
    if let Err(err) = inner.persist(desired).await {
        tracing::warn!(cause = %err, "cannot persist the runtime state");
    }
}

enum Outcome {
    /// Told to stop.
    Stopped,
    /// The process ended on its own: empty message for a clean exit, else why it failed.
    Exited(String),
}

/// What one run starts: the program, its arguments, folder, sandbox and environment, and the
/// launch the environment names.
struct Spawn<'a> {
    program: &'a Path,
    args: &'a [String],
    dir: &'a Path,
    cell: &'a Cell,
    env: &'a [(String, String)],
    launch: &'a Launch,
}

/// How a run's wait ended.
enum Ended {
    Exited(std::io::Result<ExitStatus>),
    Stop,
    NotReady,
}

/// How often an update's new process is probed for readiness.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Longest one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the process once, until it exits or the supervisor is told to stop. The service's
/// observed state (status, pid) is written only while `current`. With `ready` (the first run
/// of an update's new process), tells it the pid once the process is ready, or why it never
/// got ready (it exited, or [`RuntimeOptions::ready_timeout`](crate::RuntimeOptions) passed:
/// then the process is stopped).
async fn run_once(
    inner: &Inner,
    managed: &Managed,
    current: &AtomicBool,
    log: &LogFile,
    spawn: Spawn<'_>,
    ready: &mut Option<oneshot::Sender<Result<u32, String>>>,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let Spawn { program, args, dir, cell, env, launch } = spawn;
    let options = &inner.options;
    let is_current = || current.load(Ordering::SeqCst);
    let mut command = sandbox::child_command(program, dir);
    command.args(args);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let fail_ready = |ready: &mut Option<oneshot::Sender<Result<u32, String>>>, message: String| {
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(message.clone()));
        }
        Outcome::Exited(message)
    };
    if let Err(err) = cell.confine_service(&mut command, program, dir) {
        return fail_ready(ready, err.to_string());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return fail_ready(ready, format!("cannot start {}: {err}", program.display())),
    };
    let pid = child.id();
    if is_current() {
        {
            let mut live = managed.live.lock().expect("live lock");
            live.pid = pid;
            live.started = time::rfc3339_now();
        }
        let desired = {
            let mut desired = managed.desired.lock().expect("desired lock");
            desired.pid = pid;
            desired.clone()
        };
        persist(inner, &desired).await;
    } else if ready.is_some() {
        // Recorded so a server killed mid-update stops this process too when it comes back.
        set_spare(inner, managed, pid).await;
    }
    // The last line on stderr (else stdout) explains a crash best.
    let last_lines = std::sync::Mutex::new((String::new(), String::new()));
    // `Registered` (the framework's line once the registry lists it) means running; a service
    // that only says `Listening on` is running shortly after; one that says neither, after
    // `startup_grace`. A line with `launch=<its MICRO_LAUNCH_ID>` (the framework's
    // `Listening on`) marks a micro service: an update waits until the probe finds it ready.
    let listening = tokio::sync::Notify::new();
    let registered = AtomicBool::new(false);
    let framework = AtomicBool::new(false);
    let launch_mark = format!("launch={}", launch.id);
    // The same field in a JSON line (`MICRO_LOG_FORMAT=json`).
    let json_launch_mark = format!("\"launch\":\"{}\"", launch.id);
    let mark = |line: &str, is_stderr: bool| {
        if line.contains(&launch_mark) || line.contains(&json_launch_mark) {
            framework.store(true, Ordering::SeqCst);
        }
        if line.contains("Registered") {
            registered.store(true, Ordering::SeqCst);
            if is_current() {
                mark_running(managed);
            }
        } else if line.contains("Listening on") {
            listening.notify_one();
        }
        if !line.trim().is_empty() {
            let mut last = last_lines.lock().expect("last line lock");
            let slot = if is_stderr { &mut last.1 } else { &mut last.0 };
            *slot = line.chars().take(200).collect();
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let pumps = async {
        tokio::join!(
            pump(BufReader::new(stdout), log, |line| mark(line, false)),
            pump(BufReader::new(stderr), log, |line| mark(line, true))
        );
    };
    tokio::pin!(pumps);
    let mut pumps_done = false;
    let startup = tokio::time::sleep(options.startup_grace);
    tokio::pin!(startup);
    let mut started = false;
    let ready_by = tokio::time::sleep(options.ready_timeout);
    tokio::pin!(ready_by);
    let mut probes = tokio::time::interval(PROBE_EVERY);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send_ready = |ready: &mut Option<oneshot::Sender<Result<u32, String>>>| {
        if let (Some(sender), Some(pid)) = (ready.take(), pid) {
            let _ = sender.send(Ok(pid));
        }
    };

    let ended = loop {
        tokio::select! {
            status = child.wait() => break Ended::Exited(status),
            () = stopped(stop) => break Ended::Stop,
            () = &mut pumps, if !pumps_done => pumps_done = true,
            () = &mut startup, if !started => {
                started = true;
                if is_current() {
                    mark_running(managed);
                }
                // Not a micro service: alive and quiet (or listening) for the grace, as today.
                if !framework.load(Ordering::SeqCst) {
                    send_ready(ready);
                }
            }
            () = listening.notified(), if !started => {
                startup.as_mut().reset(tokio::time::Instant::now() + REGISTER_GRACE);
            }
            // Always polled while waiting (the flags change inside the pumps, which never
            // wake this loop by themselves).
            _ = probes.tick(), if ready.is_some() => {
                // A micro service is ready once the probe finds it registered and answering;
                // without a probe, or for a process that only logs `Registered`, that line.
                let is_ready = match (&options.ready, framework.load(Ordering::SeqCst)) {
                    (Some(probe), true) => tokio::time::timeout(PROBE_TIMEOUT, probe.ready(launch.clone()))
                        .await
                        .unwrap_or(false),
                    _ => registered.load(Ordering::SeqCst),
                };
                if is_ready {
                    send_ready(ready);
                }
            }
            () = &mut ready_by, if ready.is_some() => break Ended::NotReady,
        }
    };
    let outcome = match ended {
        Ended::Stop | Ended::NotReady => {
            if matches!(ended, Ended::NotReady) {
                let _ = fail_ready(
                    ready,
                    format!(
                        "the new process was not ready (registered and answering health checks) within {}s",
                        options.ready_timeout.as_secs_f32()
                    ),
                );
            }
            if is_current() {
                managed.set_status(Status::Stopping, "");
            }
            signal_group(pid, Signal::SIGTERM);
            if tokio::time::timeout(options.stop_grace, child.wait()).await.is_err() {
                signal_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Outcome::Stopped
        }
        Ended::Exited(Ok(status)) if status.success() => Outcome::Exited(String::new()),
        Ended::Exited(Ok(status)) => {
            let mut message = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                _ => format!("exited: {status}"),
            };
            if !pumps_done && tokio::time::timeout(Duration::from_millis(200), &mut pumps).await.is_ok() {
                pumps_done = true;
            }
            let last = {
                let last = last_lines.lock().expect("last line lock");
                if last.1.is_empty() { last.0.clone() } else { last.1.clone() }
            };
            if !last.is_empty() {
                message = format!("{message}: {last}");
            }
            Outcome::Exited(message)
        }
        Ended::Exited(Err(err)) => Outcome::Exited(format!("lost track of the process: {err}")),
    };
    if ready.is_some() {
        let message = match &outcome {
            Outcome::Exited(message) if message.is_empty() => {
                "the new process exited before it was ready".into()
            }
            Outcome::Exited(message) => format!("the new process {message}"),
            Outcome::Stopped => "the update was cancelled".into(),
        };
        let _ = fail_ready(ready, message);
    }
    // Whatever the leader left behind in its group goes with it.
    signal_group(pid, Signal::SIGKILL);
    if !pumps_done {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut pumps).await;
    }
    if is_current() {
        managed.live.lock().expect("live lock").pid = None;
    }
    outcome
}

fn mark_running(managed: &Managed) {
    let mut live = managed.live.lock().expect("live lock");
    if live.status == Status::Starting {
        live.status = Status::Running;
    }
}

fn signal_group(pid: Option<u32>, signal: Signal) {
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Stops the process group a previous server left running (it was killed before it could stop
/// its services), if that pid still is this service's process: pids get reused.
async fn reap_orphan(desired: &Desired, pid: Option<u32>, grace: Duration) {
    let Some(pid) = pid else { return };
    let Ok(environ) = tokio::fs::read(format!("/proc/{pid}/environ")).await else { return };
    let ours = |needle: String| environ.split(|&b| b == 0).any(|entry| entry == needle.as_bytes());
    if !(ours(format!("{}={}", service_env::SERVICE_NAME, desired.name))
        && ours(format!("{}={}", service_env::SERVICE_VERSION, desired.version))
        && ours(format!("{}={}", service_env::NAMESPACE, desired.namespace)))
    {
        return;
    }
    tracing::warn!(namespace = %desired.namespace, name = %desired.name, pid, "stopping a process left over from a previous server");
    signal_group(Some(pid), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(Some(pid), Signal::SIGKILL);
}
