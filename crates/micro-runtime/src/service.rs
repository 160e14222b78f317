//! The runtime service: [`Runtime`], the public API behind `runtime.Runtime` and
//! `runtime.Source` (create, read, update, delete, upload, logs; start, sweep and shutdown),
//! and the checks of every request before anything is stored. Keeps its state in
//! [`crate::state`] and leaves running processes to [`crate::supervisor`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use micro_core::task::AbortOnDrop;
use micro_core::{Context, names, time};
use sha2::Digest;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use crate::error::{RuntimeError, internal};
use crate::logs::{self, DEFAULT_LOG_COUNT, LogLine, MAX_LOG_COUNT};
use crate::options::RuntimeOptions;
use crate::source::{self, GitSource, MAX_UPLOAD_BYTES, UploadId, hex, random_hex, validate_relative};
use crate::state::{Desired, Inner, Managed, ServiceInfo, Status};
use crate::supervisor;

/// Most services one namespace may run.
pub const MAX_SERVICES: usize = 100;
/// Longest `K=V` environment entry, and most entries.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
pub const MAX_ENV_ENTRIES: usize = 256;
/// The version of a service created without one.
pub const DEFAULT_VERSION: &str = names::DEFAULT_VERSION;

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
        Ok(Self { inner: Arc::new(Inner::open(store, auth, options).await?) })
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
            let inner = self.inner.clone();
            tokio::spawn(async move { supervisor::launch(&inner, managed, None, false).await });
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
        *self.inner.sweeper.lock().expect("sweeper lock is never poisoned") =
            Some(AbortOnDrop::from(sweeper));
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
            if let Some(staging) = managed.staging.lock().await.take() {
                let _ = staging.stop.send(true);
                runs.push(staging.task);
            }
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
        names::validate_name(name)?;
        let version = if version.is_empty() { DEFAULT_VERSION } else { version };
        names::validate_version(version)?;
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
            {
                // The same source uploaded again is unpacked already: nothing to unpack.
                let _guard = self.inner.writes.lock().await;
                if source::reuse_unpacked(&dir)? {
                    return Ok(id.to_source());
                }
            }
            // Unpacked aside and moved into place whole, so two uploads of the same source never
            // write into one folder, and the sweep never sees a half-unpacked one as in use.
            let staging = sources.join(&namespace).join(format!(".unpacking-{}", random_hex(8)));
            let (archive, dest) = (temp.clone(), staging.clone());
            tokio::task::spawn_blocking(move || source::unpack(&archive, &dest))
                .await
                .map_err(|err| RuntimeError::Internal(format!("unpack task failed: {err}")))??;
            let placed = {
                let _guard = self.inner.writes.lock().await;
                // Another upload of the same source may have placed it meanwhile.
                if source::reuse_unpacked(&dir)? { Ok(()) } else { tokio::fs::rename(&staging, &dir).await }
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
        names::validate_name(&spec.name)?;
        let version =
            if spec.version.is_empty() { DEFAULT_VERSION.to_string() } else { spec.version.clone() };
        names::validate_version(&version)?;
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
            spare_pid: None,
        };
        self.inner.persist(&desired).await?;
        let managed = Arc::new(Managed::new(desired, Status::Pending));
        self.inner
            .services
            .lock()
            .expect("services lock")
            .insert((namespace, spec.name, version), managed.clone());
        supervisor::launch(&self.inner, managed, Some(spec.secrets), true).await;
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
        let mut infos: Vec<ServiceInfo> = services.iter().map(|m| m.info()).collect();
        infos.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(infos)
    }

    /// Re-fetches the source (a new `source` when given), rebuilds and restarts a service.
    ///
    /// A running service is updated without downtime: the new version is built while the old
    /// process serves, started beside it, and the old process is stopped only once the new one
    /// is ready (metadata `update` shows the progress; a failed build or a new process that is
    /// never ready leaves the old one serving, with `update=failed` and `update_error`). The
    /// desired state changes when the new process takes over. A service that is not running
    /// (building, crashed, stopped) is stopped and rebuilt. A newer update replaces one in
    /// progress.
    pub async fn update(
        &self,
        context: &Context,
        namespace: &str,
        spec: CreateSpec,
    ) -> Result<(), RuntimeError> {
        let namespace = scope(context, namespace)?;
        let version = self.resolve_version(&namespace, &spec.name, &spec.version);
        names::validate_name(&spec.name)?;
        names::validate_version(&version)?;
        validate_relative("entrypoint", &spec.entrypoint)?;
        self.check_source(context, &namespace, &spec.source)?;
        let _guard = self.inner.writes.lock().await;
        let managed = self
            .inner
            .lookup(&namespace, &spec.name, &version)
            .ok_or_else(|| RuntimeError::NotFound(format!("service {} not found", spec.name)))?;
        managed.stop_staging().await;
        let apply = |desired: &mut Desired| {
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
        };
        let serving = {
            let live = managed.live.lock().expect("live lock");
            live.status == Status::Running && live.pid.is_some()
        } && managed.run.lock().await.is_some();
        if serving {
            let mut staged = managed.desired();
            apply(&mut staged);
            supervisor::stage(&self.inner, managed, staged, spec.secrets).await;
            return Ok(());
        }
        managed.stop().await;
        let (old, new) = {
            let mut desired = managed.desired.lock().expect("desired lock");
            let old = desired.clone();
            apply(&mut desired);
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
            live.update = None;
            live.update_error.clear();
        }
        supervisor::launch(&self.inner, managed, Some(spec.secrets), true).await;
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
            .inner
            .lookup(&namespace, name, version)
            .ok_or_else(|| RuntimeError::NotFound(format!("service {name} not found")))?;
        managed.set_status(Status::Stopping, "");
        managed.stop().await;
        let desired = managed.desired();
        self.inner.forget(&desired).await?;
        self.inner.services.lock().expect("services lock").remove(&(
            namespace.clone(),
            name.to_string(),
            version.to_string(),
        ));
        supervisor::delete_service_accounts(&self.inner.auth, &namespace, name, version, None).await;
        self.remove_owned_source(&desired).await;
        let _ = tokio::fs::remove_dir_all(self.binary_dir(&namespace, name, version)).await;
        let build_log = logs::build_path(&self.inner.options.home, &namespace, name, version);
        let _ = tokio::fs::remove_file(build_log).await;
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
        supervisor::remove_owned_source(&self.inner, desired).await;
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
        self.logs_since(context, namespace, name, count, 0, follow).await
    }

    /// [`Runtime::logs`] within a time window (`Runtime.Logs` with `since`): lines written more
    /// than `since` seconds ago are skipped (none when `since` is 0 or less), and `count` is the
    /// last lines within the window. Followed lines are new, so always within it.
    pub async fn logs_since(
        &self,
        context: &Context,
        namespace: &str,
        name: &str,
        count: i64,
        since: i64,
        follow: bool,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError> {
        let namespace = scope(context, namespace)?;
        let not_found = || RuntimeError::NotFound(format!("Logs not found for service {name}"));
        names::validate_name(name).map_err(|_| not_found())?;
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
        let not_before = (since > 0).then(|| time::unix_seconds().saturating_sub(since));
        let (lines, offset) = match logs::tail(&path, count, not_before).await {
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

    /// The output of the last build of a service version (`Build.Read`), in chunks: the build
    /// log whole and, while that build runs, what it writes, until it ends. A service still to
    /// be built (pending, building, or an update being built beside the running process) is
    /// waited for until its build begins, so a read right after `Create` or `Update` gets that
    /// build. A blank version is `latest`, or the only version of the name. Not found: an unknown
    /// service, or one never built (run with a command), as the stream's error.
    pub async fn build_output(
        &self,
        context: &Context,
        namespace: &str,
        name: &str,
        version: &str,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>, RuntimeError>>, RuntimeError> {
        let namespace = scope(context, namespace)?;
        let version = self.resolve_version(&namespace, name, version);
        let unknown = || {
            RuntimeError::NotFound(format!(
                "no build of service {name} {version}: there is no such service (`micro status` lists them)"
            ))
        };
        names::validate_name(name).map_err(|_| unknown())?;
        names::validate_version(&version).map_err(|_| unknown())?;
        if self.inner.lookup(&namespace, name, &version).is_none() {
            return Err(unknown());
        }
        let path = logs::build_path(&self.inner.options.home, &namespace, name, &version);
        let never = RuntimeError::NotFound(format!(
            "no build of service {name} {version}: it has not been built (a service run with --command never is)"
        ));
        let (tx, rx) = mpsc::channel(16);
        let inner = self.inner.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let mut closed = inner.streams_closed.subscribe();
            while !logs::build_running(&path) && build_ahead(&inner, &namespace, &name, &version) {
                tokio::select! {
                    () = tx.closed() => return,
                    _ = closed.wait_for(|closed| *closed) => return,
                    () = tokio::time::sleep(logs::FOLLOW_INTERVAL) => {}
                }
            }
            logs::read_build(&path, &tx, closed, || never).await;
        });
        Ok(rx)
    }

    fn log_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.inner.options.home.join("logs").join(namespace).join(format!("{name}.log"))
    }

    fn binary_dir(&self, namespace: &str, name: &str, version: &str) -> PathBuf {
        supervisor::binary_dir(&self.inner.options.home, namespace, name, version)
    }

    /// How many services are in each status, every namespace together (the metric
    /// [`SERVICES`](crate::metrics::SERVICES)); every status is named, with 0 when none is in it.
    pub fn census(&self) -> Vec<(crate::Status, usize)> {
        let services: Vec<Arc<Managed>> =
            self.inner.services.lock().expect("services lock").values().cloned().collect();
        let mut counts: Vec<(crate::Status, usize)> = crate::Status::ALL.iter().map(|s| (*s, 0)).collect();
        for managed in services {
            let status = managed.live.lock().expect("live lock").status;
            if let Some(count) = counts.iter_mut().find(|(s, _)| *s == status) {
                count.1 += 1;
            }
        }
        counts
    }

    /// The current process of every service named `name` (of every service when `None`) that
    /// has one, by namespace, name and version, with its usage read from `/proc` just now
    /// (`debug.Debug/Stats`). The process is the leader of the service's process group: the
    /// command the runtime ran, not its children. Blocking file reads: call it off async workers.
    pub fn processes(&self, name: Option<&str>) -> Vec<Process> {
        let services: Vec<Arc<Managed>> =
            self.inner.services.lock().expect("services lock").values().cloned().collect();
        let mut processes: Vec<Process> = services
            .iter()
            .filter_map(|managed| {
                let desired = managed.desired();
                if name.is_some_and(|name| name != desired.name) {
                    return None;
                }
                let pid = managed.live.lock().expect("live lock").pid?;
                let (rss, cpu) = usage(pid).unwrap_or_default();
                Some(Process {
                    namespace: desired.namespace,
                    name: desired.name,
                    version: desired.version,
                    pid,
                    rss,
                    cpu,
                })
            })
            .collect();
        processes
            .sort_by(|a, b| (&a.namespace, &a.name, &a.version).cmp(&(&b.namespace, &b.name, &b.version)));
        processes
    }

    /// The pid of a service's current process (tests, diagnostics).
    pub fn pid(&self, namespace: &str, name: &str, version: &str) -> Option<u32> {
        self.inner.lookup(namespace, name, version).and_then(|m| m.live.lock().expect("live lock").pid)
    }
}

/// A process the runtime started, and what it uses ([`Runtime::processes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub pid: u32,
    /// Resident set size in bytes; zero when it could not be read (the process just ended).
    pub rss: u64,
    /// User and system CPU time so far.
    pub cpu: Duration,
}

/// The resident set size in bytes and the CPU time of process `pid`, from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn usage(pid: u32) -> Option<(u64, Duration)> {
    use procfs::WithCurrentSystemInfo as _;
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    let cpu = Duration::from_secs_f64((stat.utime + stat.stime) as f64 / ticks as f64);
    Some((stat.rss_bytes().get(), cpu))
}

/// Process usage is read from `/proc`, which only Linux has.
#[cfg(not(target_os = "linux"))]
fn usage(_: u32) -> Option<(u64, Duration)> {
    None
}

/// Metadata keys the runtime owns; callers' values for them are dropped.
const RESERVED_METADATA: &[&str] = &[
    "status",
    "owner",
    "group",
    "started",
    "build",
    "restarts",
    "error",
    "sandbox",
    "update",
    "update_error",
];

/// Whether a service is still to be built: pending or building (fetching, waiting for its turn,
/// building), or an update of it being built beside the running process (metadata `update`).
fn build_ahead(inner: &Inner, namespace: &str, name: &str, version: &str) -> bool {
    inner.lookup(namespace, name, version).is_some_and(|managed| {
        let info = managed.info();
        matches!(info.status, Status::Pending | Status::Building)
            || info.metadata.get("update").is_some_and(|update| update == "building")
    })
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

#[cfg(all(test, target_os = "linux"))]
mod usage_tests {
    #[test]
    fn a_live_process_has_resident_memory_and_cpu_time() {
        let busy: u64 = (0..2_000_000u64).fold(0, |sum, n| sum.wrapping_add(n * n));
        assert!(busy > 0);
        let (rss, cpu) = super::usage(std::process::id()).expect("this process's /proc/<pid>/stat reads");
        assert!(rss > 1024 * 1024, "a test binary holds more than a MiB: {rss}");
        assert!(cpu > std::time::Duration::ZERO, "it has run: {cpu:?}");
        assert_eq!(super::usage(u32::MAX), None, "no such process");
    }
}
