//! [`MemoryRegistry`]: the registry of one server, in its memory.

use std::time::{Duration, Instant};

use micro_proto::registry::{Node, Service};
use tokio::sync::broadcast;

use crate::{Catalog, Event, Registry, RegistryError, effective_ttl};

/// The in-memory registry: a [`Catalog`] and nothing else. Every write is synchronous and
/// cannot be unavailable; other servers never see it.
///
/// Its inherent methods are the [`Registry`] operations without `async` (tests and callers
/// holding the concrete type use them directly).
#[derive(Debug)]
pub struct MemoryRegistry {
    catalog: Catalog,
}

impl MemoryRegistry {
    /// An empty registry whose every domain also lists `builtins` (the server's core services).
    pub fn new(builtins: Vec<Service>) -> Self {
        Self { catalog: Catalog::new(builtins) }
    }

    /// The core services listed in every domain.
    pub fn builtins(&self) -> &[Service] {
        self.catalog.builtins()
    }

    /// See [`Registry::register`].
    pub fn register(&self, domain: &str, service: Service, ttl: Duration) -> Result<(), RegistryError> {
        self.catalog.check(domain, &service)?;
        self.catalog.register(domain, service, Instant::now() + effective_ttl(ttl))
    }

    /// See [`Registry::deregister`].
    pub fn deregister(&self, domain: &str, service: &Service) {
        self.catalog.deregister(domain, service);
    }

    /// See [`Registry::get`].
    pub fn get(&self, domain: &str, name: &str) -> Vec<Service> {
        self.catalog.get(domain, name)
    }

    /// See [`Registry::nodes`].
    pub fn nodes(&self, domain: &str, name: &str) -> Option<Vec<Node>> {
        self.catalog.nodes(domain, name)
    }

    /// See [`Registry::list`].
    pub fn list(&self, domain: &str) -> Vec<Service> {
        self.catalog.list(domain)
    }

    /// Drops nodes whose TTL has passed and tells watchers; returns how many were dropped.
    pub fn reap(&self) -> usize {
        self.catalog.reap().iter().map(|(_, service)| service.nodes.len()).sum()
    }

    /// See [`Registry::watch`].
    pub fn watch(&self) -> broadcast::Receiver<Event> {
        self.catalog.watch()
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, domain: &str, service: Service, ttl: Duration) -> Result<(), RegistryError> {
        MemoryRegistry::register(self, domain, service, ttl)
    }

    async fn deregister(&self, domain: &str, service: &Service) -> Result<(), RegistryError> {
        MemoryRegistry::deregister(self, domain, service);
        Ok(())
    }

    fn get(&self, domain: &str, name: &str) -> Vec<Service> {
        self.catalog.get(domain, name)
    }

    fn nodes(&self, domain: &str, name: &str) -> Option<Vec<Node>> {
        self.catalog.nodes(domain, name)
    }

    fn list(&self, domain: &str) -> Vec<Service> {
        self.catalog.list(domain)
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.catalog.watch()
    }

    async fn reap(&self) -> Result<usize, RegistryError> {
        Ok(MemoryRegistry::reap(self))
    }

    fn summary(&self) -> String {
        "memory (this server only)".to_string()
    }
}
