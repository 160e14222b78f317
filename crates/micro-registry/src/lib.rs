//! The registry: which services run where, per namespace (the registry *domain*).
//!
//! A service registers one or more nodes with a TTL and re-registers (heartbeats) before it
//! runs out; a node that stops heartbeating disappears from every read as soon as its TTL has
//! passed, and a periodic reap turns that into a `delete` event for watchers. Registrations of
//! one name and version are merged: each node keeps its own deadline, and the latest
//! registration's endpoints, metadata and descriptors win.
//!
//! The server's own core services are listed in every domain as built-ins, so `micro services`
//! shows them beside user services.
//!
//! Layout:
//! - this file: [`Registry`], the backend trait with its contract, [`RegistryError`],
//!   [`Event`], the limits, and [`spawn_reaper`];
//! - [`Catalog`] (`catalog`): services per domain as one server sees them, with the built-ins
//!   and the validation rules — the whole state of [`MemoryRegistry`] and the local cache of the
//!   NATS backend (`micro-backend-nats`), so both read, validate and list built-ins alike;
//! - [`MemoryRegistry`] (`memory`): the registry of one server, in its memory;
//! - [`grpc`]: the `registry.Registry` service over any [`Registry`], with namespace
//!   authorisation (docs/compatibility.md §6.6);
//! - `conformance` (under `cfg(test)` or the `conformance` feature): the shared suite.

mod catalog;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod grpc;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use micro_proto::registry::{Node, Result as WatchResult, Service};
use tokio::sync::broadcast;

pub use catalog::Catalog;
pub use memory::MemoryRegistry;

/// TTL given to a registration that asks for none (the original's `RegisterTTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(90);
/// Longest TTL a registration may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(60 * 60);
/// Longest service name, node id, node address, version or endpoint name.
pub const MAX_NAME_BYTES: usize = 256;
/// Most nodes one service version may have.
pub const MAX_NODES: usize = 1024;
/// Most endpoints one service may declare.
pub const MAX_ENDPOINTS: usize = 1024;
/// Most distinct services (name + version) one domain may hold.
pub const MAX_SERVICES_PER_DOMAIN: usize = 4096;
/// Largest encoded descriptor set a service may register.
pub const MAX_DESCRIPTOR_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Most descriptor bytes all services of one domain hold together (the registry keeps them in
/// memory): past it a registration is refused as full (docs/security.md).
pub const MAX_DESCRIPTOR_BYTES_PER_DOMAIN: usize = 64 * 1024 * 1024;
/// How many watch events a slow watcher may fall behind before it misses some.
pub const WATCH_BUFFER: usize = 1024;

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registration is malformed or breaks a limit; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A domain or service already holds as many services or nodes as allowed.
    #[error("{0}")]
    Full(String),
    /// The backend cannot take writes right now (e.g. its NATS server is unreachable); retrying
    /// may succeed. The message may name internals: log it, do not send it to clients.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The domain (namespace) the service is registered in.
    pub domain: String,
    pub result: WatchResult,
}

/// A pluggable registry backend, held as `Arc<dyn Registry>` and chosen once by the server's
/// backend factory: [`MemoryRegistry`] (one server) or `micro_backend_nats::NatsRegistry`
/// (every server on one NATS sees every registration).
///
/// # Contract
///
/// Checked for every backend by `conformance`.
///
/// - **Nodes live by TTL.** [`register`](Self::register) lists each node of the service in
///   `domain` until it is deregistered or its TTL passes without a re-register of that node;
///   re-registering (a heartbeat) restarts the node's TTL. A zero TTL means [`DEFAULT_TTL`]; a
///   TTL above [`MAX_TTL`] is cut to it. Reads never show a node whose TTL has passed, whether
///   or not it was reaped yet.
/// - **Merging.** Registrations of one name and version are one service: each node keeps its
///   own TTL, and the latest registration's endpoints, metadata and descriptors describe it.
///   Versions of one name are separate services. A service whose nodes are all gone is gone.
/// - **Domains** are separate: nothing registered in one is seen in another. The built-ins
///   given at construction (the server's core services) are listed in every domain, have no
///   nodes (they are served in-process), and their names cannot be registered.
/// - **Validation.** A registration that breaks a rule of [`Catalog::check`] fails with
///   [`RegistryError::Invalid`], one past [`MAX_SERVICES_PER_DOMAIN`] or [`MAX_NODES`] with
///   [`RegistryError::Full`]; a refused registration changes nothing.
/// - **Reads are local.** [`get`](Self::get), [`nodes`](Self::nodes) and
///   [`list`](Self::list) answer from this process's memory and never wait on a network:
///   `nodes` is the proxy's per-request lookup.
/// - **Visibility.** A write is seen by reads of the same instance when it returns. Other
///   instances on the same backend see it shortly after (NATS: when their KV watch delivers
///   it, normally within milliseconds).
/// - **Watch.** [`watch`](Self::watch) streams every change this instance sees, in the order
///   it applies them: `create` (a version's first node), `update` (a node added, refreshed or
///   removed while others remain), `delete` (the version's last node deregistered or reaped).
///   A watcher more than [`WATCH_BUFFER`] events behind misses some.
/// - **Failures.** A write the backend cannot take fails with [`RegistryError::Unavailable`],
///   promptly (NATS: within its operation timeout); reads keep answering from what this
///   instance last knew, and TTLs keep running. Deregistering what is not registered succeeds.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Registers (or heartbeats) `service`'s nodes in `domain` for `ttl`.
    async fn register(&self, domain: &str, service: Service, ttl: Duration) -> Result<(), RegistryError>;

    /// Removes `service`'s nodes (every node of that version when it names none).
    async fn deregister(&self, domain: &str, service: &Service) -> Result<(), RegistryError>;

    /// Every version of `name` in `domain` with live nodes (the built-in entry for core services).
    fn get(&self, domain: &str, name: &str) -> Vec<Service>;

    /// The live nodes of every version of `name` in `domain`, without cloning the rest of the
    /// entry (descriptors can be large): the proxy's per-call lookup. `None` when `name` is
    /// neither registered nor built in; built-ins have no nodes.
    fn nodes(&self, domain: &str, name: &str) -> Option<Vec<Node>>;

    /// Every service in `domain` with live nodes, plus the built-ins, sorted by name then version.
    fn list(&self, domain: &str) -> Vec<Service>;

    /// Changes from now on, in every domain (filter by [`Event::domain`]).
    fn watch(&self) -> broadcast::Receiver<Event>;

    /// Drops nodes whose TTL has passed, telling watchers; returns how many this instance
    /// dropped. [`spawn_reaper`] runs it periodically. Reads hide such nodes either way; the
    /// reap is what turns them into `delete` events and frees their storage.
    async fn reap(&self) -> Result<usize, RegistryError>;

    /// One line for start-up logs.
    fn summary(&self) -> String;
}

/// The TTL a registration gets for asking `ttl`: zero is [`DEFAULT_TTL`], at most [`MAX_TTL`].
pub fn effective_ttl(ttl: Duration) -> Duration {
    if ttl.is_zero() { DEFAULT_TTL } else { ttl.min(MAX_TTL) }
}

/// Reaps expired nodes every `every` until dropped.
pub struct Reaper(tokio::task::JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reaping `registry` every `every`. A failing reap (a backend that is away) is logged
/// once when it starts failing and once when it works again.
pub fn spawn_reaper(registry: Arc<dyn Registry>, every: Duration) -> Reaper {
    Reaper(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match registry.reap().await {
                Ok(dropped) => {
                    if failing {
                        tracing::info!("registry: reaping works again");
                        failing = false;
                    }
                    if dropped > 0 {
                        tracing::info!(nodes = dropped, "registry: dropped nodes whose TTL passed");
                    }
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(%err, "registry: reaping expired nodes failed; retrying");
                        failing = true;
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests;
