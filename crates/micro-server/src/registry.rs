//! The core services this server hosts, as the registry lists them in every domain.

use micro_proto::registry::Service;

/// Names of the core services hosted in this process, in `micro services` order.
pub const CORE_SERVICES: &[&str] =
    &["auth", "broker", "config", "events", "jobs", "registry", "runtime", "store"];

/// Registry entries for the core services. They carry the core descriptors so tools that
/// discover services through the registry (the CLI, the gateway) can encode their requests.
pub fn builtins() -> Vec<Service> {
    CORE_SERVICES
        .iter()
        .map(|name| Service {
            name: (*name).to_string(),
            version: micro_core::VERSION.to_string(),
            metadata: [("core".to_string(), "true".to_string())].into(),
            descriptors: micro_proto::FILE_DESCRIPTOR_SET.to_vec(),
            ..Default::default()
        })
        .collect()
}
