//! Process handling: one supervisor task per service, which fetches the source, builds it, runs
//! the process in its own process group (in the sandbox, with the `MICRO_*` environment and an
//! account of its own), restarts it on crash with exponential backoff, and stops it (SIGTERM,
//! grace, SIGKILL) when told. Uses the state ([`crate::state`]), never the `Runtime` API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use micro_core::{service_env, time};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sha2::Digest;
use tokio::io::BufReader;
use tokio::sync::watch;

use crate::error::{RuntimeError, internal};
use crate::logs::{LogFile, pump};
use crate::sandbox::{self, Cell};
use crate::source::{self, GitSource, UploadId, hex};
use crate::state::{Desired, Inner, Managed, Run, Status};

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
    let current = {
        let desired = managed.desired();
        inner
            .lookup(&desired.namespace, &desired.name, &desired.version)
            .is_some_and(|m| Arc::ptr_eq(&m, &managed))
    };
    if inner.closed.load(Ordering::SeqCst) || run.is_some() || !current {
        return;
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(supervise(
        inner.clone(),
        managed.clone(),
        stopped,
        secrets.unwrap_or_default(),
        refetch,
    ));
    *run = Some(Run { stop, task });
}

/// Metadata keys marking an account as the one the runtime made for a service version.
const ACCOUNT_SERVICE: &str = "runtime.service";
const ACCOUNT_VERSION: &str = "runtime.version";

/// The id (and name) of a service's account in its namespace: `svc.<name>.<version>` with the
/// version escaped by [`source::service_key`], so no two (name, version) pairs share one.
pub(crate) fn account_id(name: &str, version: &str) -> String {
    format!("svc.{}", source::service_key(name, version))
}

/// The account the supervisor creates for each launch of a service: of kind `service`, and
/// marked as the runtime's own by its metadata, which [`delete_service_account`] checks.
fn service_account(name: &str, version: &str) -> micro_auth::NewAccount {
    micro_auth::NewAccount {
        id: account_id(name, version),
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

/// Deletes the account the runtime made for a service version, if there is one: only the
/// account with its id that is of kind `service` and whose metadata names this service and
/// version; never an account that merely shares the id or the name, such as a person's.
pub(crate) async fn delete_service_account(
    auth: &micro_auth::Auth,
    namespace: &str,
    name: &str,
    version: &str,
) {
    let id = account_id(name, version);
    let ours = |account: &micro_core::Account| {
        account.kind == micro_auth::service::SERVICE
            && account.metadata.get(ACCOUNT_SERVICE).map(String::as_str) == Some(name)
            && account.metadata.get(ACCOUNT_VERSION).map(String::as_str) == Some(version)
    };
    if let Err(err) = auth.delete_account_if(namespace, &id, ours).await {
        tracing::warn!(namespace, name, version, cause = %err, "cannot delete a service's account");
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
) {
    let desired = managed.desired();
    let log = LogFile::new(
        inner.options.home.join("logs").join(&desired.namespace).join(format!("{}.log", desired.name)),
    );
    let prepared = tokio::select! {
        prepared = prepare(&inner, &managed, &log, &secrets, refetch) => prepared,
        () = stopped(&mut stop) => {
            managed.set_status(Status::Stopped, "");
            return;
        }
    };
    let Prepared { program, args, dir, cell } = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            tracing::warn!(namespace = %desired.namespace, name = %desired.name, cause = %err, "service failed to build");
            log.write_line(&format!("micro: {err}")).await;
            managed.set_status(Status::Error, &err.to_string());
            return;
        }
    };
    // A fresh account per launch: its secret is never stored by the runtime.
    let id = account_id(&desired.name, &desired.version);
    delete_service_account(&inner.auth, &desired.namespace, &desired.name, &desired.version).await;
    let new = service_account(&desired.name, &desired.version);
    let secret = match inner.auth.generate(&desired.namespace, new).await {
        Ok((_, secret)) => secret,
        Err(err) => {
            managed.set_status(Status::Error, &format!("cannot create the service account: {err}"));
            return;
        }
    };
    let server = inner.server_address.lock().expect("address lock").clone();
    let mut env: Vec<(String, String)> = vec![
        (service_env::SERVICE_NAME.into(), desired.name.clone()),
        (service_env::SERVICE_VERSION.into(), desired.version.clone()),
        (service_env::SERVER_ADDRESS.into(), server),
        (service_env::NAMESPACE.into(), desired.namespace.clone()),
        (service_env::AUTH_ID.into(), id),
        (service_env::AUTH_SECRET.into(), secret),
        (service_env::SERVICE_ADDRESS.into(), "127.0.0.1:0".into()),
    ];
    for entry in &desired.env {
        if let Some((key, value)) = entry.split_once('=') {
            env.push((key.to_string(), value.to_string()));
        }
    }

    reap_orphan(&desired, inner.options.stop_grace).await;
    let options = &inner.options;
    let mut backoff = options.backoff_initial;
    loop {
        managed.set_status(Status::Starting, "");
        let began = Instant::now();
        let outcome = run_once(
            &inner,
            &managed,
            &log,
            &program,
            &args,
            &dir,
            &cell,
            &env,
            options.stop_grace,
            options.startup_grace,
            &mut stop,
        )
        .await;
        match outcome {
            Outcome::Stopped => {
                managed.set_status(Status::Stopped, "");
                return;
            }
            Outcome::Exited(message) if message.is_empty() => {
                log.write_line("micro: the service exited").await;
                managed.set_status(Status::Stopped, "");
                return;
            }
            Outcome::Exited(message) => {
                if began.elapsed() >= options.backoff_reset {
                    backoff = options.backoff_initial;
                }
                tracing::warn!(namespace = %desired.namespace, name = %desired.name, error = %message, retry_in = ?backoff, "service crashed");
                log.write_line(&format!("micro: {message}; restarting in {}s", backoff.as_secs_f32())).await;
                {
                    let mut live = managed.live.lock().expect("live lock");
                    live.status = Status::Error;
                    live.error = message;
                    live.restarts += 1;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut stop) => {
                        // Keep the error visible: the last run crashed.
                        return;
                    }
                }
                backoff = (backoff * 2).min(options.backoff_max);
            }
        }
    }
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
async fn prepare(
    inner: &Inner,
    managed: &Managed,
    log: &LogFile,
    secrets: &BTreeMap<String, String>,
    refetch: bool,
) -> Result<Prepared, RuntimeError> {
    let root = fetch(inner, managed, &managed.desired(), secrets, refetch).await?;
    let desired = managed.desired();
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
    };
    let sandbox = cell.admit()?;
    managed.desired.lock().expect("desired lock").metadata.insert("sandbox".into(), sandbox.into());
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
    managed.set_status(Status::Building, "");
    let _permit =
        inner.builds.acquire().await.map_err(|_| RuntimeError::Internal("the runtime is closing".into()))?;
    log.write_line(&format!("micro: building {} {}", desired.name, desired.version)).await;
    // One target dir per namespace: a tenant's build can write only its own.
    let target_dir = inner.options.target_dir.join(&desired.namespace);
    let built = crate::cargo::build(&dir, &target_dir, &cell, log, &desired.name).await?;
    // A private copy: another build of the namespace may replace the binary in its target dir.
    let bin_dir = own.join("bin");
    tokio::fs::create_dir_all(&bin_dir).await.map_err(internal)?;
    let file_name = built.file_name().map_or_else(|| "service".into(), |n| n.to_os_string());
    let staged = bin_dir.join(".staged");
    crate::cargo::copy_executable(&built, &target_dir, &staged).await?;
    let binary = bin_dir.join(file_name);
    tokio::fs::rename(&staged, &binary).await.map_err(internal)?;
    log.write_line("micro: build finished").await;
    Ok(Prepared { program: binary, args: desired.args.clone(), dir, cell })
}

/// The root folder of the service's source (none for a bare command), fetching git sources
/// when needed.
async fn fetch(
    inner: &Inner,
    managed: &Managed,
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
                managed.set_status(Status::Building, "");
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
                managed.desired.lock().expect("desired lock").checkout = Some(checkout);
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
        let mut d = managed.desired.lock().expect("desired lock");
        d.build = build;
        d.clone()
    };
    persist(inner, &desired).await;
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

#[allow(clippy::too_many_arguments, reason = "one call site; a struct would only rename the arguments")]
async fn run_once(
    inner: &Inner,
    managed: &Managed,
    log: &LogFile,
    program: &Path,
    args: &[String],
    dir: &Path,
    cell: &Cell,
    env: &[(String, String)],
    grace: Duration,
    startup_grace: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let mut command = sandbox::child_command(program, dir);
    command.args(args);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Err(err) = cell.confine_service(&mut command, program, dir) {
        return Outcome::Exited(err.to_string());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Outcome::Exited(format!("cannot start {}: {err}", program.display())),
    };
    let pid = child.id();
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
    // The last line on stderr (else stdout) explains a crash best.
    let last_lines = std::sync::Mutex::new((String::new(), String::new()));
    // `Registered` (the framework's line once the registry lists it) means running; a service
    // that only says `Listening on` is running shortly after; one that says neither, after
    // `startup_grace`.
    let listening = tokio::sync::Notify::new();
    let mark = |line: &str, is_stderr: bool| {
        if line.contains("Registered") {
            mark_running(managed);
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
    let startup = tokio::time::sleep(startup_grace);
    tokio::pin!(startup);
    let mut started = false;

    let exit: Option<std::io::Result<ExitStatus>> = loop {
        tokio::select! {
            status = child.wait() => break Some(status),
            () = stopped(stop) => break None,
            () = &mut pumps, if !pumps_done => pumps_done = true,
            () = &mut startup, if !started => {
                started = true;
                mark_running(managed);
            }
            () = listening.notified(), if !started => {
                startup.as_mut().reset(tokio::time::Instant::now() + REGISTER_GRACE);
            }
        }
    };
    let outcome = match exit {
        None => {
            managed.set_status(Status::Stopping, "");
            signal_group(pid, Signal::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                signal_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Outcome::Stopped
        }
        Some(Ok(status)) if status.success() => Outcome::Exited(String::new()),
        Some(Ok(status)) => {
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
        Some(Err(err)) => Outcome::Exited(format!("lost track of the process: {err}")),
    };
    // Whatever the leader left behind in its group goes with it.
    signal_group(pid, Signal::SIGKILL);
    if !pumps_done {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut pumps).await;
    }
    managed.live.lock().expect("live lock").pid = None;
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
async fn reap_orphan(desired: &Desired, grace: Duration) {
    let Some(pid) = desired.pid else { return };
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
