//! The registry: which services run where, per namespace (the registry *domain*).
//!
//! A service registers one or more nodes with a TTL and re-registers (heartbeats) before it
//! runs out; a node that stops heartbeating disappears from every read as soon as its TTL has
//! passed, and a periodic reap turns that into a `delete` event for watchers. Registrations of
//! one name and version are merged: each node keeps its own deadline, and the latest
//! registration's endpoints, metadata and descriptors win.
//!
//! The server's own core services are listed in every domain as [`Registry::builtins`], so
//! `micro services` shows them beside user services.
//!
//! - [`Registry`]: the in-memory registry of one server (several servers share a NATS-backed
//!   registry in a later backend).
//! - [`grpc`]: the `registry.Registry` service, with namespace authorisation (reference §6.6).

pub mod grpc;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use micro_proto::registry::{Node, Result as WatchResult, Service};
use tokio::sync::broadcast;

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
/// How many watch events a slow watcher may fall behind before it misses some.
pub const WATCH_BUFFER: usize = 1024;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Full(String),
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The domain (namespace) the service is registered in.
    pub domain: String,
    pub result: WatchResult,
}

#[derive(Debug)]
struct Entry {
    /// The latest registration, without nodes.
    service: Service,
    nodes: BTreeMap<String, (Node, Instant)>,
}

type Key = (String, String); // (domain, name)

/// The in-memory registry.
pub struct Registry {
    entries: Mutex<HashMap<Key, BTreeMap<String, Entry>>>, // version -> entry
    builtins: Vec<Service>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("builtins", &self.builtins.len()).finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry whose every domain also lists `builtins` (the server's core services).
    pub fn new(builtins: Vec<Service>) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Self { entries: Mutex::new(HashMap::new()), builtins, events }
    }

    /// The core services listed in every domain.
    pub fn builtins(&self) -> &[Service] {
        &self.builtins
    }

    /// Registers (or heartbeats) `service`'s nodes in `domain` for `ttl` (zero: [`DEFAULT_TTL`]).
    pub fn register(&self, domain: &str, mut service: Service, ttl: Duration) -> Result<(), RegistryError> {
        validate(&service)?;
        if self.builtins.iter().any(|builtin| builtin.name == service.name) {
            return Err(RegistryError::Invalid(format!(
                "{:?} is a core service name and cannot be registered",
                service.name
            )));
        }
        let ttl = if ttl.is_zero() { DEFAULT_TTL } else { ttl.min(MAX_TTL) };
        let deadline = Instant::now() + ttl;
        let nodes = std::mem::take(&mut service.nodes);
        service.options = None;

        let mut entries = self.entries.lock().expect("registry lock poisoned");
        let domain_size: usize =
            entries.iter().filter(|((d, _), _)| d == domain).map(|(_, versions)| versions.len()).sum();
        let versions = entries.entry((domain.to_string(), service.name.clone())).or_default();
        let action = if versions.contains_key(&service.version) { "update" } else { "create" };
        if action == "create" && domain_size >= MAX_SERVICES_PER_DOMAIN {
            if versions.is_empty() {
                entries.remove(&(domain.to_string(), service.name.clone()));
            }
            return Err(RegistryError::Full(format!(
                "domain {domain:?} already holds {MAX_SERVICES_PER_DOMAIN} services, the limit"
            )));
        }
        let entry = versions
            .entry(service.version.clone())
            .or_insert_with(|| Entry { service: service.clone(), nodes: BTreeMap::new() });
        let new_nodes = nodes.iter().filter(|node| !entry.nodes.contains_key(&node.id)).count();
        if entry.nodes.len() + new_nodes > MAX_NODES {
            return Err(RegistryError::Full(format!(
                "{} already has {MAX_NODES} nodes, the limit",
                service.name
            )));
        }
        entry.service = service;
        for node in nodes {
            entry.nodes.insert(node.id.clone(), (node, deadline));
        }
        let snapshot = with_nodes(entry, Instant::now());
        drop(entries);
        self.emit(domain, action, snapshot);
        Ok(())
    }

    /// Removes `service`'s nodes (all of that version's nodes when it names none).
    pub fn deregister(&self, domain: &str, service: &Service) {
        let mut entries = self.entries.lock().expect("registry lock poisoned");
        let key = (domain.to_string(), service.name.clone());
        let Some(versions) = entries.get_mut(&key) else { return };
        let Some(entry) = versions.get_mut(&service.version) else { return };
        if service.nodes.is_empty() {
            entry.nodes.clear();
        } else {
            for node in &service.nodes {
                entry.nodes.remove(&node.id);
            }
        }
        let snapshot = with_nodes(entry, Instant::now());
        let gone = entry.nodes.is_empty();
        if gone {
            versions.remove(&service.version);
            if versions.is_empty() {
                entries.remove(&key);
            }
        }
        drop(entries);
        self.emit(domain, if gone { "delete" } else { "update" }, snapshot);
    }

    /// Every version of `name` in `domain` with live nodes (the built-in entry for core services).
    pub fn get(&self, domain: &str, name: &str) -> Vec<Service> {
        if let Some(builtin) = self.builtins.iter().find(|builtin| builtin.name == name) {
            return vec![builtin.clone()];
        }
        let now = Instant::now();
        let entries = self.entries.lock().expect("registry lock poisoned");
        let Some(versions) = entries.get(&(domain.to_string(), name.to_string())) else { return Vec::new() };
        versions
            .values()
            .map(|entry| with_nodes(entry, now))
            .filter(|service| !service.nodes.is_empty())
            .collect()
    }

    /// The live nodes of every version of `name` in `domain`, without cloning the rest of the
    /// entry (descriptors can be large): the proxy's per-call lookup. `None` when `name` is
    /// neither registered nor built in; built-ins have no nodes (they are served in-process).
    pub fn nodes(&self, domain: &str, name: &str) -> Option<Vec<Node>> {
        if self.builtins.iter().any(|builtin| builtin.name == name) {
            return Some(Vec::new());
        }
        let now = Instant::now();
        let entries = self.entries.lock().expect("registry lock poisoned");
        let versions = entries.get(&(domain.to_string(), name.to_string()))?;
        let nodes: Vec<Node> = versions
            .values()
            .flat_map(|entry| entry.nodes.values())
            .filter(|(_, deadline)| *deadline > now)
            .map(|(node, _)| node.clone())
            .collect();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// Every service in `domain` with live nodes, plus the built-ins, sorted by name then version.
    pub fn list(&self, domain: &str) -> Vec<Service> {
        let now = Instant::now();
        let entries = self.entries.lock().expect("registry lock poisoned");
        let mut services: Vec<Service> = entries
            .iter()
            .filter(|((d, _), _)| d == domain)
            .flat_map(|(_, versions)| versions.values())
            .map(|entry| with_nodes(entry, now))
            .filter(|service| !service.nodes.is_empty())
            .collect();
        drop(entries);
        services.extend(self.builtins.iter().cloned());
        services.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.version.cmp(&b.version)));
        services
    }

    /// Drops nodes whose TTL has passed and tells watchers; returns how many were dropped.
    pub fn reap(&self) -> usize {
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut dropped = 0;
        let mut entries = self.entries.lock().expect("registry lock poisoned");
        entries.retain(|(domain, _), versions| {
            versions.retain(|_, entry| {
                let before = entry.nodes.len();
                let mut expired = entry.service.clone();
                expired.nodes = entry
                    .nodes
                    .values()
                    .filter(|(_, deadline)| *deadline <= now)
                    .map(|(node, _)| node.clone())
                    .collect();
                entry.nodes.retain(|_, (_, deadline)| *deadline > now);
                if entry.nodes.len() != before {
                    dropped += before - entry.nodes.len();
                    let action = if entry.nodes.is_empty() { "delete" } else { "update" };
                    changed.push((domain.clone(), action, expired));
                }
                !entry.nodes.is_empty()
            });
            !versions.is_empty()
        });
        drop(entries);
        for (domain, action, service) in changed {
            self.emit(&domain, action, service);
        }
        dropped
    }

    /// Changes from now on, in every domain (filter by [`Event::domain`]).
    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, domain: &str, action: &str, service: Service) {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let result = WatchResult { action: action.to_string(), service: Some(service), timestamp };
        // No watchers is fine.
        let _ = self.events.send(Event { domain: domain.to_string(), result });
    }
}

/// The entry as a wire service with its live nodes.
fn with_nodes(entry: &Entry, now: Instant) -> Service {
    let mut service = entry.service.clone();
    service.nodes =
        entry.nodes.values().filter(|(_, deadline)| *deadline > now).map(|(node, _)| node.clone()).collect();
    service
}

fn validate(service: &Service) -> Result<(), RegistryError> {
    let invalid = |message: String| Err(RegistryError::Invalid(message));
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if !name_ok(&service.name) {
        return invalid(format!(
            "invalid service name {:?}: use 1-{MAX_NAME_BYTES} letters, digits, '-', '_' or '.'",
            service.name
        ));
    }
    if service.version.len() > MAX_NAME_BYTES || service.version.chars().any(char::is_control) {
        return invalid(format!("invalid version {:?}", service.version));
    }
    if service.nodes.is_empty() {
        return invalid("a registration needs at least one node".to_string());
    }
    if service.nodes.len() > MAX_NODES {
        return invalid(format!(
            "{} nodes in one registration; the limit is {MAX_NODES}",
            service.nodes.len()
        ));
    }
    for node in &service.nodes {
        if node.id.is_empty() || node.id.len() > MAX_NAME_BYTES || node.id.chars().any(char::is_control) {
            return invalid(format!("invalid node id {:?}", node.id));
        }
        let address_ok = node.address.len() <= MAX_NAME_BYTES
            && node
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !address_ok {
            return invalid(format!("invalid node address {:?}: expected HOST:PORT", node.address));
        }
    }
    if service.endpoints.len() > MAX_ENDPOINTS {
        return invalid(format!("{} endpoints; the limit is {MAX_ENDPOINTS}", service.endpoints.len()));
    }
    if let Some(endpoint) =
        service.endpoints.iter().find(|e| e.name.is_empty() || e.name.len() > MAX_NAME_BYTES)
    {
        return invalid(format!("invalid endpoint name {:?}", endpoint.name));
    }
    if service.descriptors.len() > MAX_DESCRIPTOR_BYTES {
        return invalid(format!(
            "the descriptor set is {} bytes; the limit is {MAX_DESCRIPTOR_BYTES}",
            service.descriptors.len()
        ));
    }
    Ok(())
}

/// Reaps expired nodes every `every` until dropped.
pub struct Reaper(tokio::task::JoinHandle<()>);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts reaping `registry` every `every`.
pub fn spawn_reaper(registry: Arc<Registry>, every: Duration) -> Reaper {
    Reaper(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let dropped = registry.reap();
            if dropped > 0 {
                tracing::info!(nodes = dropped, "registry: dropped nodes whose TTL passed");
            }
        }
    }))
}

#[cfg(test)]
mod tests;
