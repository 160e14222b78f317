//! What a runtime knows about its services.
//!
//! - Desired state ([`Desired`]): what each service should run, persisted in the store
//!   (database `micro`, table [`RuntimeOptions::table`], key `service/<ns>/<name>/<version>`)
//!   and restored when the runtime opens. [`Inner::persist`] is its one writer, for the API
//!   calls and the supervisors alike; [`Inner::forget`] removes a deleted service's record.
//! - Observed state ([`Live`]): status, error, start time, restarts and pid, never persisted.
//! - [`Inner`]: the state shared by the `Runtime` handle and its supervisor tasks.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use micro_core::task::AbortOnDrop;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::error::RuntimeError;
use crate::options::RuntimeOptions;

/// Builds running at once: cargo already uses every core.
pub const CONCURRENT_BUILDS: usize = 1;

/// The store database of the desired state.
pub(crate) const DATABASE: &str = "micro";

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
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Building,
        Status::Starting,
        Status::Running,
        Status::Stopping,
        Status::Stopped,
        Status::Error,
    ];

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

/// The persisted desired state of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Desired {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub source: String,
    pub metadata: BTreeMap<String, String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub entrypoint: String,
    pub kind: String,
    pub owner: String,
    pub created: String,
    /// The checked-out source (git clones), reused on restore.
    #[serde(default)]
    pub checkout: Option<PathBuf>,
    /// The short build id of the checked-out source.
    #[serde(default)]
    pub build: String,
    /// The process group of the last process started, so a server that was killed (no clean
    /// shutdown) can stop it before starting the service again.
    #[serde(default)]
    pub pid: Option<u32>,
    /// A second process group of this service that may be running during an update: the new
    /// process being readied beside the old one, then the old one being stopped. A restore
    /// stops it too, so a server killed mid-update comes back with one running version.
    #[serde(default)]
    pub spare_pid: Option<u32>,
}

impl Desired {
    fn key(&self) -> String {
        store_key(&self.namespace, &self.name, &self.version)
    }
}

/// The store key of a service's desired state.
pub(crate) fn store_key(namespace: &str, name: &str, version: &str) -> String {
    format!("service/{namespace}/{name}/{version}")
}

/// Where a zero-downtime update (built and started beside the running process) is: shown as
/// metadata `update`, while the service keeps its status (docs/runtime.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdatePhase {
    /// The new version is being fetched and built; the old process serves.
    Building,
    /// The new process runs and the runtime waits until it is ready; the old process serves.
    Starting,
    /// The build failed or the new process never got ready: the old process still serves, the
    /// reason is metadata `update_error`.
    Failed,
}

impl UpdatePhase {
    /// The value of metadata `update`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePhase::Building => "building",
            UpdatePhase::Starting => "starting",
            UpdatePhase::Failed => "failed",
        }
    }
}

/// What is live about a service (not persisted).
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub status: Status,
    pub error: String,
    pub started: String,
    pub restarts: u32,
    pub pid: Option<u32>,
    /// A zero-downtime update in progress, or the last one, failed (none once one succeeded).
    pub update: Option<UpdatePhase>,
    /// Why the last update failed.
    pub update_error: String,
}

/// A service's (namespace, name, version).
pub(crate) type Key = (String, String, String);

/// One service: its desired and observed state, and its supervisor while one runs.
pub(crate) struct Managed {
    pub desired: Mutex<Desired>,
    pub live: Mutex<Live>,
    pub run: tokio::sync::Mutex<Option<Run>>,
    /// A zero-downtime update being built and readied beside `run` (`Runtime::update`).
    pub staging: tokio::sync::Mutex<Option<Run>>,
}

/// A running supervisor: told to stop through `stop`, awaited through `task`.
pub(crate) struct Run {
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    /// Whether this supervisor owns the service's observed state (status, pid): false for the
    /// new process of an update until it is ready, and for the old one once it is replaced.
    pub current: Arc<AtomicBool>,
}

impl Managed {
    pub fn new(desired: Desired, status: Status) -> Self {
        Self {
            desired: Mutex::new(desired),
            live: Mutex::new(Live {
                status,
                error: String::new(),
                started: String::new(),
                restarts: 0,
                pid: None,
                update: None,
                update_error: String::new(),
            }),
            run: tokio::sync::Mutex::new(None),
            staging: tokio::sync::Mutex::new(None),
        }
    }

    pub fn set_status(&self, status: Status, error: &str) {
        let mut live = self.live.lock().expect("live state lock is never poisoned");
        live.status = status;
        live.error = error.to_string();
    }

    pub fn desired(&self) -> Desired {
        self.desired.lock().expect("desired state lock is never poisoned").clone()
    }

    /// Stops an update being staged (and its new process), waiting for it to finish.
    pub async fn stop_staging(&self) {
        let staging = self.staging.lock().await.take();
        if let Some(staging) = staging {
            let _ = staging.stop.send(true);
            let _ = staging.task.await;
        }
    }

    /// Stops the running supervisor (and its process) and any update being staged, waiting
    /// for them to finish.
    pub async fn stop(&self) {
        self.stop_staging().await;
        let run = self.run.lock().await.take();
        if let Some(run) = run {
            let _ = run.stop.send(true);
            let _ = run.task.await;
        }
    }

    /// The service as `Runtime.Read` shows it: desired state, with the observed state in its
    /// metadata.
    pub fn info(&self) -> ServiceInfo {
        let desired = self.desired();
        let live = self.live.lock().expect("live lock").clone();
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
        if let Some(update) = live.update {
            metadata.insert("update".into(), update.as_str().into());
        }
        if !live.update_error.is_empty() {
            metadata.insert("update_error".into(), live.update_error);
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
}

/// The state of one runtime, shared by its `Runtime` handles and its supervisors.
pub(crate) struct Inner {
    pub options: RuntimeOptions,
    pub store: Arc<dyn micro_store::Store>,
    pub auth: Arc<micro_auth::Auth>,
    pub services: Mutex<HashMap<Key, Arc<Managed>>>,
    /// Create/update/delete of one runtime happen one at a time (cheap; builds run in the background).
    pub writes: tokio::sync::Mutex<()>,
    pub builds: Semaphore,
    pub server_address: Mutex<String>,
    pub closed: AtomicBool,
    /// Set when the server starts draining: followed log streams end so the drain can finish.
    pub streams_closed: watch::Sender<bool>,
    /// The periodic sweep of unused uploads, started by `Runtime::start`; stopped by
    /// `Runtime::shutdown` or when the runtime is dropped.
    pub sweeper: Mutex<Option<AbortOnDrop>>,
}

impl Inner {
    /// Loads the persisted services of `options.table`, each [`Status::Pending`] until started.
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
                    services.insert(key, Arc::new(Managed::new(desired, Status::Pending)));
                }
                Err(err) => {
                    tracing::warn!(key = %record.key, cause = %err, "skipping unreadable runtime record")
                }
            }
        }
        Ok(Self {
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
        })
    }

    /// Writes a service's desired state to this runtime's table ([`RuntimeOptions::table`]):
    /// the one writer of runtime state, for the API calls and the supervisor alike.
    pub async fn persist(&self, desired: &Desired) -> Result<(), RuntimeError> {
        let value = serde_json::to_vec(desired).map_err(|err| RuntimeError::Internal(err.to_string()))?;
        let record = micro_store::Record::new(desired.key(), value);
        self.store.write(DATABASE, &self.options.table, record).await?;
        Ok(())
    }

    /// Removes a deleted service's desired state, so it is not restored.
    pub async fn forget(&self, desired: &Desired) -> Result<(), RuntimeError> {
        self.store.delete(DATABASE, &self.options.table, &desired.key()).await?;
        Ok(())
    }

    /// The service `(namespace, name, version)`, when this runtime has it.
    pub fn lookup(&self, namespace: &str, name: &str, version: &str) -> Option<Arc<Managed>> {
        let key = (namespace.to_string(), name.to_string(), version.to_string());
        self.services.lock().expect("services lock").get(&key).cloned()
    }
}
