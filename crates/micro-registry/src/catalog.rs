//! [`Catalog`]: the services of every domain as one process sees them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use micro_proto::registry::{Node, Result as WatchResult, Service};
use tokio::sync::broadcast;

use crate::{
    Event, MAX_DESCRIPTOR_BYTES, MAX_DESCRIPTOR_BYTES_PER_DOMAIN, MAX_ENDPOINTS, MAX_NAME_BYTES, MAX_NODES,
    MAX_SERVICES_PER_DOMAIN, RegistryError, WATCH_BUFFER,
};

#[derive(Debug)]
struct Entry {
    /// The latest registration, without nodes.
    service: Service,
    nodes: BTreeMap<String, (Node, Instant)>,
}

type Key = (String, String); // (domain, name)

/// Services per domain with their nodes and deadlines, the built-ins listed in every domain,
/// and the watch channel that reports each change.
///
/// It is the whole state of [`crate::MemoryRegistry`] and the local cache of the NATS backend
/// (fed by its KV watch), so reads, built-ins, validation and limits behave the same on every
/// backend. Every method takes `&self` and holds one lock briefly; nothing here waits.
pub struct Catalog {
    entries: Mutex<HashMap<Key, BTreeMap<String, Entry>>>, // version -> entry
    builtins: Vec<Service>,
    events: broadcast::Sender<Event>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("builtins", &self.builtins.len()).finish_non_exhaustive()
    }
}

impl Catalog {
    /// An empty catalog whose every domain also lists `builtins` (the server's core services).
    pub fn new(builtins: Vec<Service>) -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Self { entries: Mutex::new(HashMap::new()), builtins, events }
    }

    /// The core services listed in every domain.
    pub fn builtins(&self) -> &[Service] {
        &self.builtins
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, BTreeMap<String, Entry>>> {
        // Every change below is made whole under the lock, so a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `service` may be registered in `domain` at all: a valid namespace, a well-formed
    /// service within the limits of names, nodes, endpoints and descriptors, and not a
    /// built-in's name. Says nothing about room ([`Catalog::admit`] does).
    pub fn check(&self, domain: &str, service: &Service) -> Result<(), RegistryError> {
        micro_core::validate_namespace(domain).map_err(|err| RegistryError::Invalid(err.to_string()))?;
        validate(service)?;
        if self.builtins.iter().any(|builtin| builtin.name == service.name) {
            return Err(RegistryError::Invalid(format!(
                "{:?} is a core service name and cannot be registered",
                service.name
            )));
        }
        Ok(())
    }

    /// Whether `domain` has room for `service`'s nodes: [`MAX_SERVICES_PER_DOMAIN`] services
    /// per domain, [`MAX_NODES`] nodes per service version.
    pub fn admit(&self, domain: &str, service: &Service) -> Result<(), RegistryError> {
        room(&self.entries(), domain, service, &service.nodes)
    }

    /// Registers `service`'s nodes in `domain` until `deadline`, checking room and merging in
    /// one step, and tells watchers (`create` or `update`). The caller has run [`Catalog::check`].
    pub fn register(&self, domain: &str, service: Service, deadline: Instant) -> Result<(), RegistryError> {
        self.merge(domain, service, deadline, true)
    }

    /// Mirrors nodes registered through another instance of a shared backend, as
    /// [`Catalog::register`] does but without limits: whoever wrote them checked those.
    pub fn put(&self, domain: &str, service: Service, deadline: Instant) {
        // Unlimited, so this cannot fail.
        let _ = self.merge(domain, service, deadline, false);
    }

    fn merge(
        &self,
        domain: &str,
        mut service: Service,
        deadline: Instant,
        limited: bool,
    ) -> Result<(), RegistryError> {
        let nodes = std::mem::take(&mut service.nodes);
        service.options = None;
        let mut entries = self.entries();
        if limited {
            room(&entries, domain, &service, &nodes)?;
        }
        let versions = entries.entry((domain.to_string(), service.name.clone())).or_default();
        let action = if versions.contains_key(&service.version) { "update" } else { "create" };
        let entry = versions
            .entry(service.version.clone())
            .or_insert_with(|| Entry { service: service.clone(), nodes: BTreeMap::new() });
        entry.service = service;
        for node in nodes {
            entry.nodes.insert(node.id.clone(), (node, deadline));
        }
        let snapshot = with_nodes(entry, Instant::now());
        drop(entries);
        self.emit(domain, action, snapshot);
        Ok(())
    }

    /// Removes `service`'s nodes (all of that version's nodes when it names none) and tells
    /// watchers: `delete` when the version has no nodes left, else `update`. Nothing happens
    /// when the version is not registered.
    pub fn deregister(&self, domain: &str, service: &Service) {
        let mut entries = self.entries();
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

    /// The ids of every node (live or expired) of `name` `version` in `domain`.
    pub fn node_ids(&self, domain: &str, name: &str, version: &str) -> Vec<String> {
        let entries = self.entries();
        entries
            .get(&(domain.to_string(), name.to_string()))
            .and_then(|versions| versions.get(version))
            .map(|entry| entry.nodes.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// See [`crate::Registry::get`].
    pub fn get(&self, domain: &str, name: &str) -> Vec<Service> {
        if let Some(builtin) = self.builtins.iter().find(|builtin| builtin.name == name) {
            return vec![builtin.clone()];
        }
        let now = Instant::now();
        let entries = self.entries();
        let Some(versions) = entries.get(&(domain.to_string(), name.to_string())) else { return Vec::new() };
        versions
            .values()
            .map(|entry| with_nodes(entry, now))
            .filter(|service| !service.nodes.is_empty())
            .collect()
    }

    /// See [`crate::Registry::nodes`].
    pub fn nodes(&self, domain: &str, name: &str) -> Option<Vec<Node>> {
        if self.builtins.iter().any(|builtin| builtin.name == name) {
            return Some(Vec::new());
        }
        let now = Instant::now();
        let entries = self.entries();
        let versions = entries.get(&(domain.to_string(), name.to_string()))?;
        let nodes: Vec<Node> = versions
            .values()
            .flat_map(|entry| entry.nodes.values())
            .filter(|(_, deadline)| *deadline > now)
            .map(|(node, _)| node.clone())
            .collect();
        (!nodes.is_empty()).then_some(nodes)
    }

    /// See [`crate::Registry::list`].
    pub fn list(&self, domain: &str) -> Vec<Service> {
        let now = Instant::now();
        let entries = self.entries();
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

    /// Drops nodes whose deadline has passed and tells watchers (the event carries the expired
    /// nodes); returns each changed service in its domain with just its expired nodes.
    pub fn reap(&self) -> Vec<(String, Service)> {
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut entries = self.entries();
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
                    let action = if entry.nodes.is_empty() { "delete" } else { "update" };
                    changed.push((domain.clone(), action, expired));
                }
                !entry.nodes.is_empty()
            });
            !versions.is_empty()
        });
        drop(entries);
        changed
            .into_iter()
            .map(|(domain, action, service)| {
                self.emit(&domain, action, service.clone());
                (domain, service)
            })
            .collect()
    }

    /// Changes from now on, in every domain.
    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, domain: &str, action: &str, service: Service) {
        let timestamp = micro_core::time::unix_seconds();
        let result = WatchResult { action: action.to_string(), service: Some(service), timestamp };
        // No watchers is fine.
        let _ = self.events.send(Event { domain: domain.to_string(), result });
    }
}

/// Whether `domain` has room for `nodes` of `service` (see [`Catalog::admit`]).
fn room(
    entries: &HashMap<Key, BTreeMap<String, Entry>>,
    domain: &str,
    service: &Service,
    nodes: &[Node],
) -> Result<(), RegistryError> {
    let entry = entries
        .get(&(domain.to_string(), service.name.clone()))
        .and_then(|versions| versions.get(&service.version));
    let replaced = entry.map_or(0, |entry| entry.service.descriptors.len());
    // Heartbeats re-register the same descriptors: only growth needs the domain's total.
    if service.descriptors.len() > replaced {
        let held: usize = entries
            .iter()
            .filter(|((d, _), _)| d == domain)
            .flat_map(|(_, versions)| versions.values())
            .map(|entry| entry.service.descriptors.len())
            .sum();
        if held - replaced + service.descriptors.len() > MAX_DESCRIPTOR_BYTES_PER_DOMAIN {
            return Err(RegistryError::Full(format!(
                "domain {domain:?} already holds {held} bytes of descriptors; with {} it would pass \
                 MAX_DESCRIPTOR_BYTES_PER_DOMAIN ({MAX_DESCRIPTOR_BYTES_PER_DOMAIN})",
                service.name
            )));
        }
    }
    let Some(entry) = entry else {
        let domain_size: usize =
            entries.iter().filter(|((d, _), _)| d == domain).map(|(_, versions)| versions.len()).sum();
        if domain_size >= MAX_SERVICES_PER_DOMAIN {
            return Err(RegistryError::Full(format!(
                "domain {domain:?} already holds {MAX_SERVICES_PER_DOMAIN} services, the limit"
            )));
        }
        return Ok(());
    };
    let new_nodes = nodes.iter().filter(|node| !entry.nodes.contains_key(&node.id)).count();
    if entry.nodes.len() + new_nodes > MAX_NODES {
        return Err(RegistryError::Full(format!(
            "{} already has {MAX_NODES} nodes, the limit",
            service.name
        )));
    }
    Ok(())
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
