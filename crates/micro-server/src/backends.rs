//! The one backend factory: typed config in, trait objects out.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use micro_core::task::AbortOnDrop;

use crate::config::{
    AuthConfig, BrokerConfig, EventsConfig, RegistryConfig, RuntimeConfig, Secret, StoreConfig, is_nats_url,
};

/// Opens the store backend `config` names; `server_dir` is `MICRO_HOME/server`.
pub async fn store(config: &StoreConfig, server_dir: &Path) -> anyhow::Result<Arc<dyn micro_store::Store>> {
    match config.backend.as_str() {
        "memory" => Ok(Arc::new(micro_store::memory::MemoryStore::new())),
        "file" => {
            let path = server_dir.join("store").join("store.redb");
            let store = micro_store::file::FileStore::open(&path)
                .with_context(|| format!("cannot open the store file {}", path.display()))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        url if is_postgres_url(url) => {
            // The error names the server (never the password) and the cause in one line.
            let store = micro_backend_postgres::PostgresStore::connect(url).await?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "postgres"))]
        url if is_postgres_url(url) => anyhow::bail!(
            "the postgres store backend is not compiled into this build: rebuild with --features postgres"
        ),
        other => anyhow::bail!("unknown store backend {other:?}: use file, memory or a postgres:// URL"),
    }
}

fn is_postgres_url(backend: &str) -> bool {
    backend.starts_with("postgres://") || backend.starts_with("postgresql://")
}

/// Whether servers may share `config`'s store (then they share its secrets too).
pub fn store_is_shared(config: &StoreConfig) -> bool {
    is_postgres_url(&config.backend)
}

/// Where the server's secrets (the JWT signing key, the config secret key) come from, in
/// order: the setting (`--auth-key`/`MICRO_AUTH_KEY`, `--config-secret-key`/
/// `MICRO_CONFIG_SECRET_KEY`), when given; else, on a store servers share, the store's
/// internal database (created by the first server to boot, read by the others); else a file
/// in `server_dir`, created (0600) on first boot.
pub struct Secrets<'a> {
    pub store: &'a dyn micro_store::Store,
    pub shared: bool,
    pub server_dir: &'a Path,
}

/// The table of [`micro_store::INTERNAL_DATABASE`] shared secrets live in.
const SECRETS_TABLE: &str = "secrets";

impl Secrets<'_> {
    /// The secret `name` of the store, created with `generate()` when no server has yet; of
    /// several servers booting at once, one's secret wins and all use it.
    async fn shared(
        &self,
        name: &str,
        generate: impl Fn() -> anyhow::Result<String>,
    ) -> anyhow::Result<String> {
        use micro_store::{INTERNAL_DATABASE, ReadOptions, Record, StoreError};
        for _ in 0..3 {
            match self.store.read(INTERNAL_DATABASE, SECRETS_TABLE, name, ReadOptions::default()).await {
                Ok(records) if !records.is_empty() => {
                    return String::from_utf8(records[0].value.clone())
                        .with_context(|| format!("the shared {name} in the store is not text"));
                }
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(err) => return Err(err).with_context(|| format!("cannot read the shared {name}")),
            }
            let secret = generate()?;
            let record = Record::new(name, secret.clone());
            if self.store.create(INTERNAL_DATABASE, SECRETS_TABLE, record).await? {
                tracing::info!(secret = name, "generated a secret shared by every server on this store");
                return Ok(secret);
            }
            // Another server created it first: read theirs.
        }
        anyhow::bail!("cannot agree on the shared {name} with the other servers of this store")
    }

    /// The key config secrets are sealed with: `given` (the config's `config_secret_key`, base64
    /// of 32 bytes), else shared through the store, else `server_dir/config_secret_key`.
    pub async fn config_secret_key(&self, given: Option<&Secret>) -> anyhow::Result<micro_config::SecretKey> {
        if let Some(encoded) = given {
            return micro_config::SecretKey::from_base64(encoded.expose()).context(
                "the config secret key (MICRO_CONFIG_SECRET_KEY) must be the base64 of 32 random bytes",
            );
        }
        if self.shared {
            let generate = || Ok(micro_config::SecretKey::generate()?.to_base64());
            let encoded = self.shared("config_secret_key", generate).await?;
            return micro_config::SecretKey::from_base64(&encoded)
                .context("the shared config secret key in the store is not base64 of 32 bytes");
        }
        let path = self.server_dir.join("config_secret_key");
        micro_config::SecretKey::load_or_create(&path)
            .with_context(|| format!("cannot load the config secret key {}", path.display()))
    }

    /// Opens auth over `store` with the signing key `config.key` (a PKCS#8 PEM or the base64 of
    /// the 32-byte Ed25519 seed), else shared through the store, else the file
    /// `server_dir/auth_key`. The default admin's password is `config.admin_password`, else
    /// `micro` while every listener is on loopback, else generated and logged once.
    pub async fn auth(
        &self,
        store: Arc<dyn micro_store::Store>,
        config: &AuthConfig,
        loopback_only: bool,
    ) -> anyhow::Result<Arc<micro_auth::Auth>> {
        let admin_password = config.admin_password.as_ref().map(|password| password.expose().to_string());
        let options =
            micro_auth::AuthOptions { disable_admin: config.disable_admin, admin_password, loopback_only };
        let auth = if let Some(key) = &config.key {
            micro_auth::Auth::open_with_key(store, key.expose(), options)
                .await
                .context("the auth key (MICRO_AUTH_KEY)")?
        } else if self.shared {
            let generate = || Ok(micro_auth::generate_signing_key()?);
            let key = self.shared("auth_key", generate).await?;
            micro_auth::Auth::open_with_key(store, &key, options).await.context("the shared auth key")?
        } else {
            micro_auth::Auth::open(store, self.server_dir, options)
                .await
                .with_context(|| format!("cannot open auth (keys in {})", self.server_dir.display()))?
        };
        if let Some(password) = auth.generated_admin_password() {
            tracing::warn!(
                username = "admin",
                password,
                "generated a password for the default admin account; it is shown only this once. \
                 Log in with `micro login --username admin` and change it with `micro user set password`"
            );
        } else if config.disable_admin {
            tracing::info!("default admin account disabled");
        }
        Ok(Arc::new(auth))
    }
}

/// Opens the local runtime over `store`: sources, builds and logs under `home`; persisted
/// services are loaded here and started by [`crate::Platform::serve`]. `config.build_dir`
/// moves the per-namespace cargo target dirs (default `home/build/targets/<namespace>`), e.g. to
/// keep them warm across test homes; `config.sdk_dir` moves the framework's source every build
/// uses (default `home/sdk`).
///
/// On a `shared` store the desired state goes to a table of this server's own
/// (`runtime-<server id>`, the id kept in `home/server/server_id`), so every server restores
/// only the services it ran.
///
/// `sandbox` confines every build and service process (logged here, once).
pub async fn runtime(
    store: Arc<dyn micro_store::Store>,
    auth: Arc<micro_auth::Auth>,
    home: &Path,
    config: &RuntimeConfig,
    shared: bool,
    sandbox: micro_runtime::Sandbox,
    registry: Arc<dyn micro_registry::Registry>,
) -> anyhow::Result<micro_runtime::Runtime> {
    let mut options = micro_runtime::RuntimeOptions::new(home);
    options.sandbox = sandbox;
    options.ready = Some(ready_probe(registry));
    match sandbox {
        micro_runtime::Sandbox::Landlock { .. } => {
            tracing::info!(sandbox = %sandbox.summary(), "runtime sandbox")
        }
        _ => tracing::warn!(sandbox = %sandbox.summary(), "runtime sandbox"),
    }
    if shared {
        let id = server_id(&home.join("server"))?;
        options.table = format!("{}-{id}", micro_runtime::TABLE);
        tracing::info!(server_id = %id, table = %options.table, "runtime state of this server");
    }
    if !config.build_dir.is_empty() {
        options.target_dir = config.build_dir.clone().into();
    }
    if !config.sdk_dir.is_empty() {
        options.sdk_dir = config.sdk_dir.clone().into();
    }
    let builds = options.target_dir.clone();
    let runtime =
        micro_runtime::Runtime::open(store, auth, options).await.context("cannot load the runtime state")?;
    tracing::info!(sources = %home.join("sources").display(), builds = %builds.display(), "runtime (local processes)");
    Ok(runtime)
}

/// The runtime's readiness probe (docs/runtime.md, zero-downtime update): a launch is ready
/// when `registry` lists a node of its service in its namespace whose metadata `launch` is the
/// launch's id, and that node answers a gRPC health check.
fn ready_probe(registry: Arc<dyn micro_registry::Registry>) -> micro_runtime::ReadyProbe {
    micro_runtime::ReadyProbe::new(move |launch: micro_runtime::Launch| {
        let node = registry.nodes(&launch.namespace, &launch.name).and_then(|nodes| {
            nodes
                .into_iter()
                .find(|node| node.metadata.get(micro_core::service_env::LAUNCH_METADATA) == Some(&launch.id))
        });
        async move {
            let Some(node) = node else { return false };
            let Ok(channel) =
                tonic::transport::Endpoint::from_shared(format!("http://{}", crate::nodes::address(&node)))
            else {
                return false;
            };
            let Ok(channel) = channel.connect().await else { return false };
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            matches!(
                tonic_health::pb::health_client::HealthClient::new(channel).check(request).await,
                Ok(response) if response.get_ref().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            )
        }
    })
}

/// This server's id: random, created once in `server_dir/server_id`.
pub(crate) fn server_id(server_dir: &Path) -> anyhow::Result<String> {
    let path = server_dir.join("server_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let id = hex::encode(bytes);
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// How often events past their retention are removed.
pub const EVENTS_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens the events backend `config` names: the embedded log (`file`: one redb file at
/// `server_dir/events/events.redb`; `memory`) with its retention sweeper (stopped when the
/// returned guard is dropped), or JetStream at a `nats://` URL, which applies retention itself.
pub async fn events(
    config: &EventsConfig,
    server_dir: &Path,
) -> anyhow::Result<(Arc<dyn micro_events::Events>, Option<AbortOnDrop>)> {
    let events: Arc<dyn micro_events::Events> = match config.backend.as_str() {
        "memory" => Arc::new(micro_events::memory::MemoryEvents::default()),
        "file" => {
            let dir = server_dir.join("events");
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join("events.redb");
            Arc::new(
                micro_events::file::FileEvents::open(&path)
                    .with_context(|| format!("cannot open the event log {}", path.display()))?,
            )
        }
        url if is_nats_url(url) => return Ok((nats_events(url).await?, None)),
        other => anyhow::bail!("unknown events backend {other:?}: use file, memory or a nats:// URL"),
    };
    let sweeping = events.clone();
    let sweeper = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVENTS_SWEEP_INTERVAL);
        loop {
            ticks.tick().await;
            match sweeping.sweep().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "events: removed events past their retention"),
                Err(err) => tracing::warn!(%err, "events: retention sweep failed"),
            }
        }
    });
    Ok((events, Some(AbortOnDrop::from(sweeper))))
}

#[cfg(feature = "nats")]
async fn nats_events(url: &str) -> anyhow::Result<Arc<dyn micro_events::Events>> {
    let events =
        micro_backend_nats::NatsEvents::connect(url).await.context("cannot open the nats events backend")?;
    Ok(Arc::new(events))
}

#[cfg(not(feature = "nats"))]
async fn nats_events(_url: &str) -> anyhow::Result<Arc<dyn micro_events::Events>> {
    anyhow::bail!("the nats events backend is not compiled into this build: rebuild with --features nats")
}

/// Opens the broker backend `config` names: `memory` (this process) or core NATS at a
/// `nats://` URL (shared by every server on it).
pub async fn broker(config: &BrokerConfig) -> anyhow::Result<Arc<dyn micro_broker::Broker>> {
    match config.backend.as_str() {
        "memory" => Ok(Arc::new(micro_broker::MemoryBroker::new())),
        url if is_nats_url(url) => nats_broker(url).await,
        other => anyhow::bail!("unknown broker backend {other:?}: use memory or a nats:// URL"),
    }
}

#[cfg(feature = "nats")]
async fn nats_broker(url: &str) -> anyhow::Result<Arc<dyn micro_broker::Broker>> {
    let broker =
        micro_backend_nats::NatsBroker::connect(url).await.context("cannot open the nats broker backend")?;
    Ok(Arc::new(broker))
}

#[cfg(not(feature = "nats"))]
async fn nats_broker(_url: &str) -> anyhow::Result<Arc<dyn micro_broker::Broker>> {
    anyhow::bail!("the nats broker backend is not compiled into this build: rebuild with --features nats")
}

/// Opens the registry backend `config` names, listing `builtins` (the core services) in every
/// domain: `memory` (this server only) or JetStream KV at a `nats://` URL (every server on it
/// sees every registration).
pub async fn registry(
    config: &RegistryConfig,
    builtins: Vec<micro_proto::registry::Service>,
) -> anyhow::Result<Arc<dyn micro_registry::Registry>> {
    match config.backend.as_str() {
        "memory" => Ok(Arc::new(micro_registry::MemoryRegistry::new(builtins))),
        url if is_nats_url(url) => nats_registry(url, builtins).await,
        other => anyhow::bail!("unknown registry backend {other:?}: use memory or a nats:// URL"),
    }
}

#[cfg(feature = "nats")]
async fn nats_registry(
    url: &str,
    builtins: Vec<micro_proto::registry::Service>,
) -> anyhow::Result<Arc<dyn micro_registry::Registry>> {
    let registry = micro_backend_nats::NatsRegistry::connect(url, builtins)
        .await
        .context("cannot open the nats registry backend")?;
    Ok(Arc::new(registry))
}

#[cfg(not(feature = "nats"))]
async fn nats_registry(
    _url: &str,
    _builtins: Vec<micro_proto::registry::Service>,
) -> anyhow::Result<Arc<dyn micro_registry::Registry>> {
    anyhow::bail!("the nats registry backend is not compiled into this build: rebuild with --features nats")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A postgres URL opens the PostgreSQL store when the feature is compiled in (here failing
    /// to connect, with the reason), and says how to get it when not: scripts/test runs this
    /// module both ways.
    #[tokio::test]
    async fn postgres_urls_need_the_feature_and_a_reachable_server() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig { backend: "postgres://nobody@127.0.0.1:1/x".into(), ..Default::default() };
        let Err(err) = store(&config, dir.path()).await else { panic!("nothing listens on port 1") };
        let message = format!("{err:#}");
        if cfg!(feature = "postgres") {
            assert!(message.contains("cannot connect to PostgreSQL at nobody@127.0.0.1:1/x"), "{message}");
        } else {
            assert!(
                message.contains("not compiled into this build: rebuild with --features postgres"),
                "{message}"
            );
        }
        assert!(!dir.path().join("store").exists(), "no file store is created instead");
    }

    #[tokio::test]
    async fn embedded_events_broker_and_registry() {
        let dir = tempfile::tempdir().unwrap();
        let file = EventsConfig { backend: "file".into() };
        let (log, sweeper) = events(&file, dir.path()).await.unwrap();
        assert!(log.summary().contains("events.redb") && sweeper.is_some(), "{}", log.summary());
        let memory = broker(&BrokerConfig::default()).await.unwrap();
        assert!(memory.summary().starts_with("memory"), "{}", memory.summary());
        let memory = registry(&RegistryConfig::default(), crate::registry::builtins()).await.unwrap();
        assert!(memory.summary().starts_with("memory"), "{}", memory.summary());
        assert_eq!(memory.list("micro").len(), crate::registry::CORE_SERVICES.len(), "built-ins listed");
    }

    /// Built without `nats` (scripts/test runs `cargo test -p micro-server --lib backends`, which
    /// leaves the feature off): every `nats://` backend says how to get it.
    #[cfg(not(feature = "nats"))]
    #[tokio::test]
    async fn nats_urls_say_the_feature_is_missing_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let nats = "nats://127.0.0.1:4222".to_string();
        let err = events(&EventsConfig { backend: nats.clone() }, dir.path()).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "the nats events backend is not compiled into this build: rebuild with --features nats"
        );
        let err = broker(&BrokerConfig { backend: nats.clone() }).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "the nats broker backend is not compiled into this build: rebuild with --features nats"
        );
        let err = registry(&RegistryConfig { backend: nats }, Vec::new()).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "the nats registry backend is not compiled into this build: rebuild with --features nats"
        );
    }

    /// Built with `nats` (the workspace build): a `nats://` URL opens the NATS backend, here
    /// failing to connect (nothing listens on port 1) with the reason, not "not compiled".
    #[cfg(feature = "nats")]
    #[tokio::test]
    async fn nats_urls_open_the_nats_backends_with_the_feature() {
        let dir = tempfile::tempdir().unwrap();
        let nats = "nats://127.0.0.1:1".to_string();
        let err = events(&EventsConfig { backend: nats.clone() }, dir.path()).await.err().unwrap();
        assert!(format!("{err:#}").starts_with("cannot open the nats events backend: "), "{err:#}");
        let err = broker(&BrokerConfig { backend: nats.clone() }).await.err().unwrap();
        assert!(format!("{err:#}").starts_with("cannot open the nats broker backend: "), "{err:#}");
        let err = registry(&RegistryConfig { backend: nats }, Vec::new()).await.err().unwrap();
        assert!(format!("{err:#}").starts_with("cannot open the nats registry backend: "), "{err:#}");
    }
}
