//! The runtime: turns source into running, supervised services (docs/runtime.md; docs/compatibility.md §9).
//!
//! - [`Runtime`]: desired state persisted in the store (database `micro`, table `runtime`,
//!   key `service/<ns>/<name>/<version>`), one supervisor task per service, restored on open.
//! - [`source`]: uploaded tarballs (`source://…`, unpacked safely), git sources, path checks.
//! - `cargo`: `cargo fetch`, then `cargo build --release --offline` into the namespace's
//!   target dir under `MICRO_HOME/build/targets`.
//! - `sandbox`: the Landlock box of every build and service process.
//! - `supervisor`: runs a service's child process in its own process group, restarts it
//!   on crash with exponential backoff, stops it with SIGTERM then SIGKILL.
//! - [`logs`]: the per-service log file under `MICRO_HOME/logs/<ns>/<name>.log`.
//! - [`grpc`]: the `runtime.Runtime` and `runtime.Source` services.
//!
//! Status lifecycle (metadata `status` and the proto's `status` enum): pending → building →
//! starting → running, or error (metadata `error`) / stopped.

mod cargo;
pub mod grpc;
pub mod logs;
mod sandbox;
pub mod source;
mod supervisor;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_core::{Context, Denied, time};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::{Stream, StreamExt};

use crate::logs::{DEFAULT_LOG_COUNT, LogLine, MAX_LOG_COUNT};
use crate::source::{GitSource, UploadId, validate_name, validate_relative};

pub use crate::logs::MAX_LOG_LINE_BYTES;
pub use crate::sandbox::Sandbox;
pub use crate::source::{MAX_NAME_BYTES, MAX_UPLOAD_BYTES, SWEEP_INTERVAL, UPLOAD_GRACE};

/// Most services one namespace may run.
pub const MAX_SERVICES: usize = 100;
/// Longest `K=V` environment entry, and most entries.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
pub const MAX_ENV_ENTRIES: usize = 256;
/// The version of a service created without one.
pub const DEFAULT_VERSION: &str = "latest";
/// How long a stopped service gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// First delay before restarting a crashed service; doubled per crash up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run lasting this long resets the backoff to [`BACKOFF_INITIAL`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// A service that logs neither `Registered` nor `Listening on` counts as running after this long alive.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);
/// Builds running at once: cargo already uses every core.
pub const CONCURRENT_BUILDS: usize = 1;

const DATABASE: &str = "micro";
/// The table of database `micro` the desired state lives in, unless
/// [`RuntimeOptions::table`] names another.
pub const TABLE: &str = "runtime";

/// Why a runtime operation failed; messages are safe to send to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A limit such as [`MAX_SERVICES`] or [`MAX_UPLOAD_BYTES`] was reached.
    #[error("{0}")]
    Full(String),
    #[error("{0}")]
    Denied(Denied),
    /// The caller may act in the namespace but not ask for this (a tenant asking for a command
    /// or a server-local source, docs/security.md); the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// A build failed (shown as the service's error).
    #[error("{0}")]
    Build(String),
    #[error("{0}")]
    Internal(String),
}

impl From<micro_store::StoreError> for RuntimeError {
    fn from(err: micro_store::StoreError) -> Self {
        RuntimeError::Internal(format!("runtime state: {err}"))
    }
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Building,
    Starting,
    Running,
    Stopping,
    Stopped,
    Error,
}

impl Status {
    /// The name in metadata `status` and `micro status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Building => "building",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Error => "error",
        }
    }

    /// The proto's enum number (0 unknown, 1 pending … 7 error).
    pub fn code(self) -> i32 {
        match self {
            Status::Pending => 1,
            Status::Building => 2,
            Status::Starting => 3,
            Status::Running => 4,
            Status::Stopping => 5,
            Status::Stopped => 6,
            Status::Error => 7,
        }
    }
}

/// What `Runtime.Create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateSpec {
    pub name: String,
    /// Empty = [`DEFAULT_VERSION`].
    pub version: String,
    /// A `source://` id from upload, a git source, or an absolute path on the server machine.
    pub source: String,
    /// Kept as given; `source` (the human-readable source) is shown by `micro status`.
    pub metadata: BTreeMap<String, String>,
    /// Run this instead of building (`python3 app.py`): program and its first arguments.
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `K=V` entries.
    pub env: Vec<String>,
    /// The folder inside the source to build and run in.
    pub entrypoint: String,
    pub kind: String,
    /// `GIT_CREDENTIALS`: a token for the git host. Not persisted.
    pub secrets: BTreeMap<String, String>,
}

/// A service as `Runtime.Read` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub source: String,
    pub status: Status,
    /// status, owner, group, started, build, source, restarts, error (+ the caller's metadata).
    pub metadata: BTreeMap<String, String>,
}

/// Tunables; [`RuntimeOptions::new`] gives the production values.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// `MICRO_HOME`: `sources/`, `build/`, `logs/` live below it.
    pub home: PathBuf,
    /// Where the cargo target dirs go, one per namespace (`<target_dir>/<namespace>`); default
    /// `home/build/targets`.
    pub target_dir: PathBuf,
    pub stop_grace: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
    pub startup_grace: Duration,
    /// The store table of this runtime's desired state (database `micro`). Servers sharing a
    /// store each use their own, so each restores only the services it ran.
    pub table: String,
    /// How long an upload no service uses is kept ([`UPLOAD_GRACE`]).
    pub upload_grace: Duration,
    /// How often unused uploads are swept ([`SWEEP_INTERVAL`]).
    pub sweep_interval: Duration,
    /// How builds and services are confined; default [`Sandbox::detect`].
    pub sandbox: Sandbox,
}

impl RuntimeOptions {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self {
            target_dir: home.join("build").join("targets"),
            home,
            stop_grace: STOP_GRACE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            backoff_reset: BACKOFF_RESET,
            startup_grace: STARTUP_GRACE,
            table: TABLE.to_string(),
            upload_grace: UPLOAD_GRACE,
            sweep_interval: SWEEP_INTERVAL,
            sandbox: Sandbox::detect(),
        }
    }
}

/// The persisted desired state of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Desired {
    namespace: String,
    name: String,
    version: String,
    source: String,
    metadata: BTreeMap<String, String>,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<String>,
    entrypoint: String,
    kind: String,
    owner: String,
    created: String,
    /// The checked-out source (git clones), reused on restore.
    #[serde(default)]
    checkout: Option<PathBuf>,
    /// The short build id of the checked-out source.
    #[serde(default)]
    build: String,
    /// The process group of the last process started, so a server that was killed (no clean
    /// shutdown) can stop it before starting the service again.
    #[serde(default)]
    pid: Option<u32>,
}

impl Desired {
    fn key(&self) -> String {
        store_key(&self.namespace, &self.name, &self.version)
    }
}

fn store_key(namespace: &str, name: &str, version: &str) -> String {
    format!("service/{namespace}/{name}/{version}")
}

/// What is live about a service (not persisted).
#[derive(Debug, Clone)]
struct Live {
    status: Status,
    error: String,
    started: String,
    restarts: u32,
    pid: Option<u32>,
}

type Key = (String, String, String);

struct Managed {
    desired: Mutex<Desired>,
    live: Mutex<Live>,
    run: tokio::sync::Mutex<Option<Run>>,
}

struct Run {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Managed {
    fn set_status(&self, status: Status, error: &str) {
        let mut live = self.live.lock().expect("live state lock is never poisoned");
        live.status = status;
        live.error = error.to_string();
    }

    fn desired(&self) -> Desired {
        self.desired.lock().expect("desired state lock is never poisoned").clone()
    }

    /// Stops the running supervisor (and its process), waiting for it to finish.
    async fn stop(&self) {
        let run = self.run.lock().await.take();
        if let Some(run) = run {
            let _ = run.stop.send(true);
            let _ = run.task.await;
        }
    }
}

struct Inner {
    options: RuntimeOptions,
    store: Arc<dyn micro_store::Store>,
    auth: Arc<micro_auth::Auth>,
    services: Mutex<HashMap<Key, Arc<Managed>>>,
    /// Create/update/delete of one runtime happen one at a time (cheap; builds run in the background).
    writes: tokio::sync::Mutex<()>,
    builds: Semaphore,
    server_address: Mutex<String>,
    closed: AtomicBool,
    /// Set when the server starts draining: followed log streams end so the drain can finish.
    streams_closed: watch::Sender<bool>,
    /// The periodic sweep of unused uploads, started by [`Runtime::start`]; stopped by
    /// [`Runtime::shutdown`] or when the runtime is dropped.
    sweeper: Mutex<Option<AbortOnDrop>>,
}

impl Inner {
    /// Writes a service's desired state to this runtime's table ([`RuntimeOptions::table`]):
    /// the one writer of runtime state, for the API calls and the supervisor alike.
    async fn persist(&self, desired: &Desired) -> Result<(), RuntimeError> {
        let value = serde_json::to_vec(desired).map_err(|err| RuntimeError::Internal(err.to_string()))?;
        let record = micro_store::Record::new(desired.key(), value);
        self.store.write(DATABASE, &self.options.table, record).await?;
        Ok(())
    }
}

/// Aborts its task when dropped, so a background loop ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The runtime service: a cheap handle, clone freely.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("home", &self.inner.options.home).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads the persisted services (they start with [`Runtime::start`]).
    pub async fn open(
        store: Arc<dyn micro_store::Store>,
        auth: Arc<micro_auth::Auth>,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let records = store
            .read(
                DATABASE,
                &options.table,
                "service/",
                micro_store::ReadOptions { prefix: true, ..Default::default() },
            )
            .await?;
        let mut services = HashMap::new();
        for record in records {
            match serde_json::from_slice::<Desired>(&record.value) {
                Ok(desired) => {
                    let key = (desired.namespace.clone(), desired.name.clone(), desired.version.clone());
                    services.insert(key, Arc::new(managed(desired, Status::Pending)));
                }
                Err(err) => {
                    tracing::warn!(key = %record.key, cause = %err, "skipping unreadable runtime record")
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                store,
                auth,
                services: Mutex::new(services),
                writes: tokio::sync::Mutex::new(()),
                builds: Semaphore::new(CONCURRENT_BUILDS),
                server_address: Mutex::new(String::new()),
                closed: AtomicBool::new(false),
                streams_closed: watch::channel(false).0,
                sweeper: Mutex::new(None),
            }),
        })
    }

    /// Tells services where the server is (`MICRO_SERVER_ADDRESS`) and starts every restored
    /// service in the background.
    pub fn start(&self, server_address: impl Into<String>) {
        *self.inner.server_address.lock().expect("address lock is never poisoned") = server_address.into();
        let restored: Vec<Arc<Managed>> =
            self.inner.services.lock().expect("services lock").values().cloned().collect();
        if !restored.is_empty() {
            tracing::info!(services = restored.len(), "restoring services");
        }
        for managed in restored {
            let runtime = self.clone();
            tokio::spawn(async move { runtime.launch(managed, None, false).await });
        }
        // The sweeper holds the runtime weakly: dropping the last handle ends it too.
        let inner = Arc::downgrade(&self.inner);
        let every = self.inner.options.sweep_interval;
        let sweeper = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                Runtime { inner }.sweep_uploads().await;
            }
        });
        *self.inner.sweeper.lock().expect("sweeper lock is never poisoned") = Some(AbortOnDrop(sweeper));
    }

    /// Removes unpacked uploads (and leftover checkouts and partial uploads) under
    /// `MICRO_HOME/sources/` that no service's desired state references and that are older than
    /// [`RuntimeOptions::upload_grace`]; returns how many it removed. Runs every
    /// [`RuntimeOptions::sweep_interval`] once the runtime is started.
    pub async fn sweep_uploads(&self) -> usize {
        // One write at a time: a create or update cannot start using a folder being removed,
        // and an upload re-using a folder marks it fresh first.
        let _guard = self.inner.writes.lock().await;
        let sources = self.inner.options.home.join("sources");
        let in_use: std::collections::HashSet<PathBuf> = self
            .inner
            .services
            .lock()
            .expect("services lock")
            .values()
            .flat_map(|managed| {
                let desired = managed.desired();
                let upload =
                    UploadId::parse(&desired.source).ok().map(|id| id.dir(Path::new(""), &desired.namespace));
                // `<namespace>/<folder>`, whatever `MICRO_HOME` was when it was recorded.
                let checkout = desired.checkout.as_ref().and_then(|checkout| {
                    let folder = checkout.file_name()?;
                    Some(Path::new(checkout.parent()?.file_name()?).join(folder))
                });
                upload.into_iter().chain(checkout)
            })
            .collect();
        let grace = self.inner.options.upload_grace;
        tokio::task::spawn_blocking(move || source::sweep_sources(&sources, &in_use, grace))
            .await
            .unwrap_or(0)
    }

    /// Ends every followed log stream (`Logs` with `stream`), e.g. when the server starts to drain.
    pub fn close_streams(&self) {
        self.inner.streams_closed.send_replace(true);
    }

    /// Stops every service (SIGTERM, grace, SIGKILL); their desired state stays persisted.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        drop(self.inner.sweeper.lock().expect("sweeper lock is never poisoned").take());
        let all: Vec<Arc<Managed>> =
            self.inner.services.lock().expect("services lock").values().cloned().collect();
        let mut runs = Vec::new();
        for managed in &all {
            if let Some(run) = managed.run.lock().await.take() {
                let _ = run.stop.send(true);
                runs.push(run.task);
            }
        }
        for task in runs {
            let _ = task.await;
        }
    }

    /// The version a request means: as given; when blank, `latest` if it exists, else the only
    /// version of that name (so `micro kill svc` works for a service run at a git ref).
    fn resolve_version(&self, namespace: &str, name: &str, version: &str) -> String {
        if !version.is_empty() {
            return version.to_string();
        }
        let services = self.inner.services.lock().expect("services lock");
        let versions: Vec<&String> =
            services.keys().filter(|(ns, n, _)| ns == namespace && n == name).map(|(_, _, v)| v).collect();
        match versions.as_slice() {
            [only] => (*only).clone(),
            _ => DEFAULT_VERSION.to_string(),
        }
    }

    fn lookup(&self, namespace: &str, name: &str, version: &str) -> Option<Arc<Managed>> {
        let key = (namespace.to_string(), name.to_string(), version.to_string());
        self.inner.services.lock().expect("services lock").get(&key).cloned()
    }

    /// Starts a new supervisor for `managed` (replacing none: callers stop the old one first).
    async fn launch(&self, managed: Arc<Managed>, secrets: Option<BTreeMap<String, String>>, refetch: bool) {
        let mut run = managed.run.lock().await;
        let current = {
            let desired = managed.desired();
            self.lookup(&desired.namespace, &desired.name, &desired.version)
                .is_some_and(|m| Arc::ptr_eq(&m, &managed))
        };
        // A restore racing a delete, or a shutdown, starts nothing.
        if self.inner.closed.load(Ordering::SeqCst) || run.is_some() || !current {
            return;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervisor::supervise(
            self.inner.clone(),
            managed.clone(),
            stopped,
            secrets.unwrap_or_default(),
            refetch,
        ));
        *run = Some(Run { stop, task });
    }

    /// Stores an uploaded gzip'd tar of a service's source; returns its `source://` id.
    pub async fn upload<S>(
        &self,
        context: &Context,
        name: &str,
        version: &str,
        mut chunks: S,
    ) -> Result<String, RuntimeError>
    where
        S: Stream<Item = Result<Vec<u8>, RuntimeError>> + Unpin,
    {
        let namespace = scope(context, "")?;
        validate_name("name", name)?;
        let version = if version.is_empty() { DEFAULT_VERSION } else { version };
        validate_name("version", version)?;
        let sources = self.inner.options.home.join("sources");
        tokio::fs::create_dir_all(&sources).await.map_err(internal)?;
        let temp = sources.join(format!(".upload-{}", random_hex(8)));
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await.map_err(internal)?;
            let mut hash = sha2::Sha256::new();
            let mut total: u64 = 0;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                if total > MAX_UPLOAD_BYTES {
                    return Err(RuntimeError::Full(format!(
                        "the source is larger than {} MiB: leave build output (target/) and large files out",
                        MAX_UPLOAD_BYTES / 1024 / 1024
                    )));
                }
                hash.update(&chunk);
                file.write_all(&chunk).await.map_err(internal)?;
            }
            file.flush().await.map_err(internal)?;
            if total == 0 {
                return Err(RuntimeError::Invalid("the uploaded source is empty".into()));
            }
            let digest = hex(&hash.finalize());
            let id = UploadId {
                name: name.to_string(),
                version: version.to_string(),
                id: digest[..16].to_string(),
            };
            let dir = id.dir(&sources, &namespace);
            // Unpacked aside and moved into place whole, so two uploads of the same source never
            // write into one folder, and the sweep never sees a half-unpacked one as in use.
            let staging = sources.join(&namespace).join(format!(".unpacking-{}", random_hex(8)));
            let (archive, dest) = (temp.clone(), staging.clone());
            tokio::task::spawn_blocking(move || source::unpack(&archive, &dest))
                .await
                .map_err(|err| RuntimeError::Internal(format!("unpack task failed: {err}")))??;
            let placed = {
                let _guard = self.inner.writes.lock().await;
                if dir.is_dir() {
                    // Uploaded before: mark it fresh so the sweep gives it a full grace period.
                    std::fs::File::open(&dir)
                        .and_then(|folder| folder.set_modified(std::time::SystemTime::now()))
                } else {
                    tokio::fs::rename(&staging, &dir).await
                }
            };
            let _ = tokio::fs::remove_dir_all(&staging).await;
            placed.map_err(internal)?;
            Ok(id.to_source())
        }
        .await;
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    /// Creates (and starts, in the background) a service.
    pub async fn create(
        &self,
        context: &Context,
        namespace: &str,
        spec: CreateSpec,
    ) -> Result<(), RuntimeError> {
        let namespace = scope(context, namespace)?;
        validate_name("name", &spec.name)?;
        let version =
            if spec.version.is_empty() { DEFAULT_VERSION.to_string() } else { spec.version.clone() };
        validate_name("version", &version)?;
        validate_relative("entrypoint", &spec.entrypoint)?;
        validate_env(&spec.env)?;
        if spec.source.is_empty() && spec.command.is_empty() {
            return Err(RuntimeError::Invalid(
                "blank resource: a service needs a source or a command".into(),
            ));
        }
        // Refused now rather than at launch, so the caller hears why.
        self.inner.options.sandbox.admit_namespace(&namespace)?;
        if !spec.command.is_empty() && !context.is_platform_admin() {
            return Err(RuntimeError::Forbidden(
                "only an admin of the micro namespace may run a command (--command): \
                 tenants run uploaded sources and remote git repositories"
                    .into(),
            ));
        }
        self.check_source(context, &namespace, &spec.source)?;

        let _guard = self.inner.writes.lock().await;
        {
            let services = self.inner.services.lock().expect("services lock");
            if services.contains_key(&(namespace.clone(), spec.name.clone(), version.clone())) {
                return Err(RuntimeError::AlreadyExists(format!("service {} already exists", spec.name)));
            }
            if services.keys().filter(|(ns, _, _)| *ns == namespace).count() >= MAX_SERVICES {
                return Err(RuntimeError::Full(format!(
                    "namespace {namespace} already runs {MAX_SERVICES} services: kill one first"
                )));
            }
        }
        let owner = context.account.as_ref().map_or_else(|| "micro".to_string(), |a| a.name.clone());
        let mut metadata = spec.metadata.clone();
        metadata.retain(|k, _| !RESERVED_METADATA.contains(&k.as_str()));
        if !metadata.contains_key("source") {
            metadata.insert("source".into(), spec.source.clone());
        }
        let desired = Desired {
            namespace: namespace.clone(),
            name: spec.name.clone(),
            version: version.clone(),
            source: spec.source.clone(),
            metadata,
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            entrypoint: spec.entrypoint.clone(),
            kind: spec.kind.clone(),
            owner,
            created: time::rfc3339_now(),
            checkout: None,
            build: String::new(),
            pid: None,
        };
        self.inner.persist(&desired).await?;
        let managed = Arc::new(managed(desired, Status::Pending));
        self.inner
            .services
            .lock()
            .expect("services lock")
            .insert((namespace, spec.name, version), managed.clone());
        self.launch(managed, Some(spec.secrets), true).await;
        Ok(())
    }

    /// Checks that a source can be used by `namespace`, and by the caller, before anything is
    /// stored: folders and `file://` repositories on the server's own disk are for platform
    /// admins only (docs/security.md).
    fn check_source(&self, context: &Context, namespace: &str, source: &str) -> Result<(), RuntimeError> {
        if source.is_empty() {
            return Ok(());
        }
        let server_local = source.starts_with("file://") || Path::new(source).is_absolute();
        if server_local && !context.is_platform_admin() {
            return Err(RuntimeError::Forbidden(format!(
                "only an admin of the micro namespace may run {source:?} from the server's own disk: \
                 upload the source (micro run ./dir) or name a remote git repository"
            )));
        }
        if source.starts_with(source::UPLOAD_SCHEME) {
            let id = UploadId::parse(source)?;
            if !id.dir(&self.inner.options.home.join("sources"), namespace).is_dir() {
                return Err(RuntimeError::NotFound(format!("source {source} not found: upload it again")));
            }
        } else if source::is_git(source) {
            GitSource::parse(source, DEFAULT_VERSION)?;
        } else if Path::new(source).is_absolute() {
            if !Path::new(source).is_dir() {
                return Err(RuntimeError::NotFound(format!(
                    "source folder {source} not found on the server"
                )));
            }
        } else {
            return Err(RuntimeError::Invalid(format!(
                "invalid source {source:?}: use an uploaded source, a git repository or an absolute path"
            )));
        }
        Ok(())
    }

    /// The services of `namespace`, filtered by name and version when given, sorted by name.
    pub fn read(
        &self,
        context: &Context,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<Vec<ServiceInfo>, RuntimeError> {
        let namespace = scope(context, namespace)?;
        let services: Vec<Arc<Managed>> = self
            .inner
            .services
            .lock()
            .expect("services lock")
            .iter()
            .filter(|((ns, n, v), _)| {
                *ns == namespace && (name.is_empty() || n == name) && (version.is_empty() || v == version)
            })
            .map(|(_, m)| m.clone())
            .collect();
        let mut infos: Vec<ServiceInfo> = services.iter().map(|m| info(m)).collect();
        infos.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(infos)
    }

    /// Re-fetches the source (a new `source` when given), rebuilds and restarts a service.
    pub async fn update(
        &self,
        context: &Context,
        namespace: &str,
        spec: CreateSpec,
    ) -> Result<(), RuntimeError> {
        let namespace = scope(context, namespace)?;
        let version = self.resolve_version(&namespace, &spec.name, &spec.version);
        validate_name("name", &spec.name)?;
        validate_name("version", &version)?;
        validate_relative("entrypoint", &spec.entrypoint)?;
        self.check_source(context, &namespace, &spec.source)?;
        let _guard = self.inner.writes.lock().await;
        let managed = self
            .lookup(&namespace, &spec.name, &version)
            .ok_or_else(|| RuntimeError::NotFound(format!("service {} not found", spec.name)))?;
        managed.stop().await;
        let (old, new) = {
            let mut desired = managed.desired.lock().expect("desired lock");
            let old = desired.clone();
            if !spec.source.is_empty() {
                desired.source = spec.source.clone();
                desired.metadata.insert("source".into(), spec.source.clone());
            }
            if let Some(display) = spec.metadata.get("source") {
                desired.metadata.insert("source".into(), display.clone());
            }
            if !spec.entrypoint.is_empty() {
                desired.entrypoint = spec.entrypoint.clone();
            }
            desired.checkout = None;
            (old, desired.clone())
        };
        if old.source != new.source {
            self.remove_owned_source(&old).await;
        } else if let Some(checkout) = &old.checkout {
            let _ = tokio::fs::remove_dir_all(checkout).await;
        }
        self.inner.persist(&new).await?;
        {
            let mut live = managed.live.lock().expect("live lock");
            live.status = Status::Starting;
            live.error.clear();
            live.restarts = 0;
        }
        self.launch(managed, Some(spec.secrets), true).await;
        Ok(())
    }

    /// Stops and forgets a service: its record, account, uploaded source, build copy and log.
    pub async fn delete(
        &self,
        context: &Context,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<(), RuntimeError> {
        let namespace = scope(context, namespace)?;
        let version = &self.resolve_version(&namespace, name, version);
        let _guard = self.inner.writes.lock().await;
        let managed = self
            .lookup(&namespace, name, version)
            .ok_or_else(|| RuntimeError::NotFound(format!("service {name} not found")))?;
        managed.set_status(Status::Stopping, "");
        managed.stop().await;
        let desired = managed.desired();
        self.inner.store.delete(DATABASE, &self.inner.options.table, &desired.key()).await?;
        self.inner.services.lock().expect("services lock").remove(&(
            namespace.clone(),
            name.to_string(),
            version.to_string(),
        ));
        delete_service_account(&self.inner.auth, &namespace, name, version).await;
        self.remove_owned_source(&desired).await;
        let _ = tokio::fs::remove_dir_all(self.binary_dir(&namespace, name, version)).await;
        let still_named = self
            .inner
            .services
            .lock()
            .expect("services lock")
            .keys()
            .any(|(ns, n, _)| *ns == namespace && n == name);
        if !still_named {
            let log = self.log_path(&namespace, name);
            let _ = tokio::fs::remove_file(logs::rotated(&log)).await;
            let _ = tokio::fs::remove_file(log).await;
        }
        tracing::info!(namespace, name, version, "service deleted");
        Ok(())
    }

    /// Removes what the runtime itself put under `sources/` for `desired` (never a user's folder).
    async fn remove_owned_source(&self, desired: &Desired) {
        if let Some(checkout) = &desired.checkout {
            let _ = tokio::fs::remove_dir_all(checkout).await;
        }
        if let Ok(id) = UploadId::parse(&desired.source) {
            let _ = tokio::fs::remove_dir_all(
                id.dir(&self.inner.options.home.join("sources"), &desired.namespace),
            )
            .await;
        }
    }

    /// The last `count` lines (0 = [`DEFAULT_LOG_COUNT`]) of a service's log; with `follow`,
    /// new lines too until the receiver is dropped.
    pub async fn logs(
        &self,
        context: &Context,
        namespace: &str,
        name: &str,
        count: i64,
        follow: bool,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError> {
        let namespace = scope(context, namespace)?;
        let not_found = || RuntimeError::NotFound(format!("Logs not found for service {name}"));
        validate_name("name", name).map_err(|_| not_found())?;
        let path = self.log_path(&namespace, name);
        let known = self
            .inner
            .services
            .lock()
            .expect("services lock")
            .keys()
            .any(|(ns, n, _)| *ns == namespace && n == name);
        let count = match usize::try_from(count) {
            Ok(0) | Err(_) => DEFAULT_LOG_COUNT,
            Ok(n) => n.min(MAX_LOG_COUNT),
        };
        let (lines, offset) = match logs::tail(&path, count).await {
            Ok(found) => found,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && known => (Vec::new(), 0),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(err) => return Err(RuntimeError::Internal(format!("cannot read the log of {name}: {err}"))),
        };
        let (tx, rx) = mpsc::channel(lines.len().max(64));
        for line in lines {
            let _ = tx.try_send(line);
        }
        if follow {
            tokio::spawn(logs::follow(path, offset, tx, self.inner.streams_closed.subscribe()));
        }
        Ok(rx)
    }

    fn log_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.inner.options.home.join("logs").join(namespace).join(format!("{name}.log"))
    }

    fn binary_dir(&self, namespace: &str, name: &str, version: &str) -> PathBuf {
        binary_dir(&self.inner.options.home, namespace, name, version)
    }

    /// The pid of a service's current process (tests, diagnostics).
    pub fn pid(&self, namespace: &str, name: &str, version: &str) -> Option<u32> {
        self.lookup(namespace, name, version).and_then(|m| m.live.lock().expect("live lock").pid)
    }
}

/// Metadata keys the runtime owns; callers' values for them are dropped.
const RESERVED_METADATA: &[&str] =
    &["status", "owner", "group", "started", "build", "restarts", "error", "sandbox"];

fn managed(desired: Desired, status: Status) -> Managed {
    Managed {
        desired: Mutex::new(desired),
        live: Mutex::new(Live {
            status,
            error: String::new(),
            started: String::new(),
            restarts: 0,
            pid: None,
        }),
        run: tokio::sync::Mutex::new(None),
    }
}

fn info(managed: &Managed) -> ServiceInfo {
    let desired = managed.desired();
    let live = managed.live.lock().expect("live lock").clone();
    let mut metadata = desired.metadata.clone();
    metadata.insert("status".into(), live.status.as_str().into());
    metadata.insert("owner".into(), desired.owner.clone());
    metadata.insert("group".into(), desired.namespace.clone());
    metadata.insert(
        "started".into(),
        if live.started.is_empty() { desired.created.clone() } else { live.started },
    );
    metadata.insert("build".into(), desired.build.clone());
    metadata.insert("restarts".into(), live.restarts.to_string());
    if !live.error.is_empty() {
        metadata.insert("error".into(), live.error);
    }
    ServiceInfo {
        namespace: desired.namespace,
        name: desired.name,
        version: desired.version,
        source: desired.source,
        status: live.status,
        metadata,
    }
}

/// The namespace a request acts in (`requested`, else the caller's), after authorisation.
fn scope(context: &Context, requested: &str) -> Result<String, RuntimeError> {
    let namespace = if requested.is_empty() { context.namespace.as_str() } else { requested };
    micro_core::validate_namespace(namespace).map_err(|err| RuntimeError::Invalid(err.to_string()))?;
    context.authorize(namespace).map_err(RuntimeError::Denied)?;
    Ok(namespace.to_string())
}

fn validate_env(env: &[String]) -> Result<(), RuntimeError> {
    if env.len() > MAX_ENV_ENTRIES {
        return Err(RuntimeError::Invalid(format!("at most {MAX_ENV_ENTRIES} environment variables")));
    }
    for entry in env {
        let ok = entry.len() <= MAX_ENV_BYTES
            && entry.split_once('=').is_some_and(|(k, _)| !k.is_empty() && !k.contains('\0'))
            && !entry.contains('\0');
        if !ok {
            return Err(RuntimeError::Invalid(format!(
                "invalid environment variable {:?}: use KEY=VALUE",
                entry.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Metadata keys marking an account as the one the runtime made for a service version.
const ACCOUNT_SERVICE: &str = "runtime.service";
const ACCOUNT_VERSION: &str = "runtime.version";

/// The id (and name) of a service's account in its namespace: `svc.<name>.<version>` with the
/// version escaped by [`source::service_key`], so no two (name, version) pairs share one.
fn account_id(name: &str, version: &str) -> String {
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
async fn delete_service_account(auth: &micro_auth::Auth, namespace: &str, name: &str, version: &str) {
    let id = account_id(name, version);
    let accounts = match auth.list_accounts(namespace).await {
        Ok(accounts) => accounts,
        Err(err) => {
            tracing::warn!(namespace, name, version, cause = %err, "cannot list accounts to remove a service's");
            return;
        }
    };
    let ours = accounts.iter().any(|account| {
        account.id == id
            && account.kind == micro_auth::service::SERVICE
            && account.metadata.get(ACCOUNT_SERVICE).map(String::as_str) == Some(name)
            && account.metadata.get(ACCOUNT_VERSION).map(String::as_str) == Some(version)
    });
    if ours && let Err(err) = auth.delete_account(namespace, &id, None).await {
        tracing::warn!(namespace, name, version, cause = %err, "cannot delete a service's account");
    }
}

/// The private copy of a service version's binary: `build/services/<ns>/<name>.<version>`
/// ([`source::service_key`], one folder per pair).
fn binary_dir(home: &Path, namespace: &str, name: &str, version: &str) -> PathBuf {
    home.join("build").join("services").join(namespace).join(source::service_key(name, version))
}

fn internal(err: std::io::Error) -> RuntimeError {
    RuntimeError::Internal(format!("runtime storage: {err}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex(&bytes)
}
