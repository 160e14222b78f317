//! `micro server`: the composition root of the platform.
//!
//! - [`config`]: the typed config tree (defaults → `micro.toml` → `MICRO_*` env → flags).
//! - [`backends`]: the one factory that turns config into backend trait objects.
//! - [`gate`]: the auth gate on :8081 — token → account, namespace, rule check, per call.
//! - [`grpc`]: the :8081 listener — the gate, core services, reflection, health, the proxy.
//! - [`proxy`]: forwards gRPC calls for registered (non-core) services to their nodes.
//! - [`nodes`]: the node pool both the proxy and the gateway call through: node addresses,
//!   channels, round robin, failover past nodes that cannot be reached.
//! - [`forward`]: the identity a call carries into a user service (a token scoped to its
//!   namespace, never the caller's own).
//! - [`gateway`]: the HTTP API gateway — path → service endpoint, JSON ↔ protobuf, CORS.
//! - [`http`]: the :8080 listener: fixed routes, `GET /metrics` and the gateway.
//! - [`metrics`]: Prometheus metrics: the recorder, every metric's name, the request metrics of
//!   both listeners (docs/observability.md).
//! - [`events_metrics`]: the events backend's consumer groups (lag, unacked, dead letters) as
//!   gauges, read before each `GET /metrics` render.
//! - [`jobs`]: how scheduled jobs act: as their account, through the gateway's call path.
//! - [`web`]: the :8082 listener: the web dashboard, calling through the gateway.
//! - [`tls`]: the certificate and key (`--tls-cert`/`--tls-key`) and TLS listeners for both.
//! - [`Platform`]: the running set of core services, served by [`Platform::serve`] on listeners
//!   the caller bound, until a shutdown future resolves (tests bind `127.0.0.1:0`).

pub mod backends;
pub mod config;
pub mod events_metrics;
pub mod forward;
pub mod gate;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod nodes;
pub mod proxy;
pub mod reflection;
pub mod registry;
pub mod tls;
pub mod traces;
pub mod web;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use config::Config;

/// How often nodes whose registry TTL passed are dropped (reads never show them either way).
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// Flags of `micro server`: the settings of the config tree ([`config::Overrides`], each with its
/// `MICRO_*` variable), then those that only steer this run.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Args {
    #[command(flatten)]
    pub settings: config::Overrides,
    /// Server config file [default: $MICRO_HOME/micro.toml when it exists]
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Run builds and services without the Landlock sandbox, with the server's own access to
    /// every file (docs/security.md); without it, a kernel with no Landlock runs only services
    /// of the micro namespace
    #[arg(long)]
    pub unsandboxed_runtime: bool,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub dump_config: bool,
    /// How log lines are written: text, or json (one object per line; docs/observability.md).
    /// The services the runtime starts log in the same format
    #[arg(long, env = micro_core::logging::FORMAT_VAR, value_name = "FORMAT", default_value_t)]
    pub log_format: micro_core::logging::Format,
}

/// Runs `micro server` until SIGINT/SIGTERM: loads config, opens backends, binds, serves, drains.
///
/// Every setting arrives through `args` (clap read the flags and their `MICRO_*` variables);
/// the environment is read directly only for `MICRO_HOME` ([`micro_core::home::dir`]) and
/// `MICRO_LOG` (the log filter, [`micro_core::logging`]), which the CLI and services share and
/// which are needed before any config exists.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let home = micro_core::home::dir();
    let config = Config::load(&home, args.config_file.as_deref(), &args.settings)?;
    if args.dump_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    // Checked before anything binds: a bad certificate or key stops the boot with one line.
    let tls = if config.tls.enabled() {
        Some(tls::Tls::load(Path::new(&config.tls.cert), Path::new(&config.tls.key))?)
    } else {
        None
    };
    micro_core::logging::init(micro_core::logging::Role::Server, args.log_format);

    let grpc = bind(&config.proxy_address, "--proxy-address").await?;
    let http = bind(&config.api_address, "--api-address").await?;
    let web = match config.web() {
        Some(address) => Some(bind(address, "--web-address (or --web-address off)").await?),
        None => None,
    };
    let loopback_only = [Some(&grpc), Some(&http), web.as_ref()]
        .iter()
        .flatten()
        .all(|l| l.local_addr().is_ok_and(|a| a.ip().is_loopback()));
    let sandbox = if args.unsandboxed_runtime {
        micro_runtime::Sandbox::Disabled
    } else {
        micro_runtime::Sandbox::detect()
    };
    let platform = Platform::open_with_sandbox(&home, &config, loopback_only, sandbox)
        .await?
        .with_tls(tls)
        .with_web(web);
    // Spans of every call, kept in the trace ring and exported when OTEL_* says so
    // (docs/observability.md#traces).
    let tracing = micro_core::trace::init("micro", traces::options());
    let served = platform.serve(grpc, http, micro_core::shutdown::signal(), config.grace()?).await;
    let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    served
}

async fn bind(address: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {address}: is another micro server running? Choose another address with {flag}"
        )
    })
}

/// The core services of one server, with the backends they were opened on.
pub struct Platform {
    home: PathBuf,
    store: Arc<dyn micro_store::Store>,
    config: Arc<micro_config::Config>,
    auth: Arc<micro_auth::Auth>,
    registry: Arc<dyn micro_registry::Registry>,
    runtime: micro_runtime::Runtime,
    broker: Arc<dyn micro_broker::Broker>,
    events: Arc<dyn micro_events::Events>,
    /// Applies retention to the embedded event log; `None` when the backend does it itself.
    _events_sweeper: Option<micro_core::task::AbortOnDrop>,
    /// `--api-domain`, empty when unset.
    api_domain: String,
    /// `--cors-origin`s and `--allowed-host`s of the HTTP gateway.
    cors_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    /// When set, both listeners serve TLS (see [`Platform::with_tls`]).
    tls: Option<tls::Tls>,
    /// The web dashboard's listener, when it is on (see [`Platform::with_web`]).
    web: Option<TcpListener>,
    /// This server's id (`server/server_id`), named in the job runs it records.
    server_id: String,
    _sweeper: micro_store::Sweeper,
    _reaper: micro_registry::Reaper,
}

impl Platform {
    /// Opens every backend `config` names, creating `home/server` on first boot.
    /// `loopback_only` says whether every listener is on loopback, which decides whether the
    /// default admin may keep the well-known password.
    pub async fn open(home: &Path, config: &Config, loopback_only: bool) -> anyhow::Result<Self> {
        Self::open_with_sandbox(home, config, loopback_only, micro_runtime::Sandbox::detect()).await
    }

    /// [`Platform::open`], with the runtime confining the builds and services it starts with
    /// `sandbox` (`Sandbox::Disabled` for `--unsandboxed-runtime`).
    pub async fn open_with_sandbox(
        home: &Path,
        config: &Config,
        loopback_only: bool,
        sandbox: micro_runtime::Sandbox,
    ) -> anyhow::Result<Self> {
        let server_dir = home.join("server");
        // Owner only (docs/security.md): keys, every tenant's data, logs and sources live here.
        for dir in [home.to_path_buf(), server_dir.clone()] {
            micro_core::home::private_dir(&dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        info!(home = %home.display(), "state directory");

        let store = backends::store(&config.store, &server_dir).await?;
        info!(backend = %store.summary(), "store");
        // Production backends first: an unreachable one stops the boot before anything else starts.
        let (events, events_sweeper) = backends::events(&config.events, &server_dir).await?;
        info!(backend = %events.summary(), "events");
        let broker = backends::broker(&config.broker).await?;
        info!(backend = %broker.summary(), "broker");
        let registry = backends::registry(&config.registry, registry::builtins()).await?;
        info!(backend = %registry.summary(), "registry");
        let sweeper = micro_store::spawn_sweeper(store.clone(), config.sweep_interval()?);

        let shared = backends::store_is_shared(&config.store);
        let secrets = backends::Secrets { store: &*store, shared, server_dir: &server_dir };
        let secret_key = secrets.config_secret_key(config.config_secret_key.as_ref()).await?;
        let config_service = Arc::new(micro_config::Config::new(store.clone(), secret_key));
        info!(documents = "store database micro, table config", "config");

        let auth = secrets.auth(store.clone(), &config.auth, loopback_only).await?;
        if shared {
            info!("signing and config keys shared through the store with the other servers");
        }

        let reaper = micro_registry::spawn_reaper(registry.clone(), REAP_INTERVAL);

        let runtime = backends::runtime(
            store.clone(),
            auth.clone(),
            home,
            &config.runtime,
            shared,
            sandbox,
            registry.clone(),
        )
        .await?;
        let server_id = backends::server_id(&server_dir)?;
        restrict_state(home, &server_dir)?;

        Ok(Self {
            home: home.to_path_buf(),
            store,
            config: config_service,
            auth,
            registry,
            runtime,
            broker,
            events,
            _events_sweeper: events_sweeper,
            api_domain: config.api_domain.clone(),
            cors_origins: config.cors_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            tls: None,
            web: None,
            server_id,
            _sweeper: sweeper,
            _reaper: reaper,
        })
    }

    /// Serves both listeners over TLS with `tls` (plain text when `None`).
    ///
    /// The gateway and the services the runtime starts then reach the core services on an extra
    /// plain-text gRPC listener on loopback (an ephemeral port), so they need neither the CA nor
    /// a certificate valid for a loopback name; it has the same auth gate as the public one.
    pub fn with_tls(mut self, tls: Option<tls::Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// Also serves the web dashboard ([`web`]) on `listener` (none when `None`), over TLS when
    /// the other listeners serve TLS.
    pub fn with_web(mut self, listener: Option<TcpListener>) -> Self {
        self.web = listener;
        self
    }

    /// Serves gRPC on `grpc` and HTTP on `http` until `shutdown` resolves, then stops accepting
    /// and gives in-flight requests `grace` to finish. Services the runtime restores start once
    /// the gRPC address is known, and are stopped (not forgotten) on the way out.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let local = match &self.tls {
            Some(_) => Some(
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .context("cannot listen on loopback for the gateway and local services")?,
            ),
            None => None,
        };
        let core_address = match &local {
            Some(local) => local.local_addr()?,
            None => loopback_if_unspecified(grpc.local_addr()?),
        };
        let runtime = self.runtime.clone();
        runtime.start(core_address.to_string());
        // `micro logs -f` streams end when the drain begins, or they would hold it for `grace`.
        let closing = runtime.clone();
        let shutdown = async move {
            shutdown.await;
            closing.close_streams();
        };
        let outcome = self.serve_inner(grpc, local, http, core_address, shutdown, grace).await;
        runtime.shutdown().await;
        outcome
    }

    async fn serve_inner(
        mut self,
        grpc: TcpListener,
        local: Option<TcpListener>,
        http: TcpListener,
        core_address: std::net::SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> anyhow::Result<()> {
        use tokio_stream::wrappers::TcpListenerStream;
        let grpc_addr = grpc.local_addr()?;
        let http_addr = http.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        // Before the first request, so that every request is recorded.
        metrics::Metrics::install();
        // The runtime's services by status, counted at each scrape while this server serves.
        let _runtime_metrics = metrics::collect_runtime(self.runtime.clone());
        // One node pool for the proxy and the gateway.
        let nodes = nodes::Nodes::new();
        let api_domain = Some(self.api_domain.clone()).filter(|domain| !domain.is_empty());
        let http_ip = http.local_addr()?.ip();
        // Only a loopback bind is guarded by name: there, any other name is a rebinding page.
        let host_check = http_ip.is_loopback().then(|| {
            gateway::browser::HostCheck::new(Some(http_ip), api_domain.clone(), self.allowed_hosts.clone())
        });
        let gateway = gateway::Gateway::new(
            self.registry.clone(),
            self.auth.clone(),
            gateway::Options {
                core_address: Some(core_address),
                api_domain,
                cors_origins: self.cors_origins.clone(),
                host_check,
                nodes: nodes.clone(),
                ..gateway::Options::default()
            },
        );
        // Scheduled jobs act through the gateway's call path.
        let executor = Arc::new(jobs::Executor::new(gateway.clone(), self.auth.clone()));
        let jobs = Arc::new(micro_jobs::Jobs::new(self.store.clone(), executor, self.server_id.clone()));
        let core = grpc::Core {
            store: self.store.clone(),
            config: self.config.clone(),
            auth: self.auth.clone(),
            registry: self.registry.clone(),
            runtime: self.runtime.clone(),
            broker: self.broker.clone(),
            events: self.events.clone(),
            jobs: Some(jobs.clone()),
        };
        let service = grpc::Service::new(core, nodes).await?;
        let dashboard = match self.web.take() {
            Some(listener) => {
                let web_ip = listener.local_addr()?.ip();
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let options = web::Options {
                    api_url: format!("{scheme}://{}", loopback_if_unspecified(http_addr)),
                    proxy_url: format!("{scheme}://{}", loopback_if_unspecified(grpc_addr)),
                    secure: self.tls.is_some(),
                    host_check: web_ip.is_loopback().then(|| {
                        gateway::browser::HostCheck::new(Some(web_ip), None, self.allowed_hosts.clone())
                    }),
                };
                let web = web::Web::new(gateway.clone(), self.registry.clone(), self.auth.clone(), options);
                Some((listener, web::router(web)))
            }
            None => None,
        };
        let router = http::router_with_events(gateway, self.events.clone());
        let mut tasks: Vec<(&str, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();
        let mut web_log = None;
        match &self.tls {
            None => {
                let grpc = grpc::nodelay(TcpListenerStream::new(grpc));
                tasks.push(("gRPC", tokio::spawn(service.clone().serve(grpc, stopped()))));
                let http = axum::serve::ListenerExt::tap_io(http, |tcp: &mut tokio::net::TcpStream| {
                    grpc::set_nodelay(tcp)
                });
                tasks.push(("HTTP", tokio::spawn(http::serve(router, http, stopped()))));
                if let Some((listener, router)) = dashboard {
                    let web_addr = listener.local_addr()?;
                    let listener =
                        axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                            grpc::set_nodelay(tcp)
                        });
                    tasks.push(("web", tokio::spawn(http::serve(router, listener, stopped()))));
                    web_log = Some((web_addr, "http"));
                }
            }
            Some(tls) => {
                let grpc = tls.incoming(grpc, tls::GRPC_ALPN);
                tasks.push(("gRPC", tokio::spawn(service.clone().serve(grpc, stopped()))));
                let http = tls.incoming(http, tls::HTTP_ALPN);
                tasks.push(("HTTP", tokio::spawn(http::serve(router, http, stopped()))));
                if let Some((listener, router)) = dashboard {
                    let web_addr = listener.local_addr()?;
                    let listener = tls.incoming(listener, tls::HTTP_ALPN);
                    tasks.push(("web", tokio::spawn(http::serve(router, listener, stopped()))));
                    web_log = Some((web_addr, "https"));
                }
                info!(cert = %tls.cert_path().display(), "TLS on: gRPC (h2) and HTTP (h2, http/1.1) serve TLS");
            }
        }
        if let Some(local) = local {
            let local = grpc::nodelay(TcpListenerStream::new(local));
            tasks.push(("local gRPC", tokio::spawn(service.serve(local, stopped()))));
            info!(addr = %core_address, "plain-text gRPC on loopback for the gateway and local services");
        }
        // Once the listeners serve: the scheduler stops with this function (its guard is
        // dropped on the way out, also when a listener fails).
        let _scheduler = jobs.spawn_scheduler();
        info!(addr = %grpc_addr, "gRPC listening");
        info!(addr = %http_addr, "HTTP listening");
        if let Some((address, scheme)) = web_log {
            web_listening(address, scheme);
        }
        info!(home = %self.home.display(), "micro server ready");

        let names: Vec<&str> = tasks.iter().map(|(name, _)| *name).collect();
        tokio::select! {
            () = shutdown => {}
            (result, index, _) = futures::future::select_all(tasks.iter_mut().map(|(_, task)| task)) => {
                return task_outcome(names[index], result);
            }
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(grace, async {
            let mut outcome = Ok(());
            for (name, task) in &mut tasks {
                let result = task_outcome(name, task.await);
                outcome = outcome.and(result);
            }
            outcome
        })
        .await;
        match drained {
            Ok(result) => {
                info!("micro server stopped");
                result
            }
            Err(_) => {
                warn!(grace = ?grace, "requests still running after the grace period; stopping anyway");
                for (_, task) in &tasks {
                    task.abort();
                }
                Ok(())
            }
        }
    }
}

/// Logs the dashboard's address and URL; a dashboard reachable beyond loopback without TLS
/// is worth a warning (passwords and session cookies would cross the network in clear).
fn web_listening(address: std::net::SocketAddr, scheme: &str) {
    let url = format!("{scheme}://{}", loopback_if_unspecified(address));
    info!(addr = %address, %url, "web listening");
    if !address.ip().is_loopback() && scheme == "http" {
        warn!(addr = %address, "the web dashboard is reachable beyond loopback without TLS: logins cross the network in clear (docs/web.md)");
    }
}

/// Narrows what earlier versions (or a wide umask) left readable by others, once the backends
/// have created their files: `server/` and `logs/` wholly owner-only (data, keys, logs), the
/// runtime's `sources/` and `build/` closed at the top (their programs keep their modes).
fn restrict_state(home: &Path, server_dir: &Path) -> anyhow::Result<()> {
    for tree in [server_dir.to_path_buf(), home.join("logs")] {
        micro_core::home::restrict_tree(&tree)
            .with_context(|| format!("cannot make {} private to its owner", tree.display()))?;
    }
    for dir in ["sources", "build"] {
        micro_core::home::private_dir(&home.join(dir))
            .with_context(|| format!("cannot make {} private to its owner", home.join(dir).display()))?;
    }
    Ok(())
}

/// The gateway reaches the core services on this server's own gRPC listener; one bound to
/// every interface is reached on loopback.
fn loopback_if_unspecified(mut address: std::net::SocketAddr) -> std::net::SocketAddr {
    if address.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        address.set_ip(loopback);
    }
    address
}

fn task_outcome(
    name: &str,
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match result {
        Ok(outcome) => outcome.with_context(|| format!("{name} server failed")),
        Err(err) => Err(anyhow::anyhow!("{name} server task ended abnormally: {err}")),
    }
}
