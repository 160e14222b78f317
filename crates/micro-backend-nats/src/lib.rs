//! NATS backends: `micro server --events nats://… --broker nats://… --registry nats://…`.
//!
//! - [`connect`] opens a [`Connection`]: it fails within [`CONNECT_TIMEOUT`] with a clear
//!   [`ConnectError`] for a bad URL or an unreachable server, and reconnects by itself later.
//!   While it is down, operations fail at once or within [`OPERATION_TIMEOUT`] as unavailable.
//! - [`NatsEvents`] (`events`, `consumer`): [`micro_events::Events`] on JetStream — a stream
//!   per topic, durable pull consumers for groups.
//! - [`NatsBroker`] (`broker`): [`micro_broker::Broker`] on core NATS — a subject per topic,
//!   NATS queue groups for queues.
//! - [`NatsRegistry`] (`registry`): [`micro_registry::Registry`] on a JetStream KV bucket — a
//!   key per node, a per-node expiry in each value, a local cache fed by a watch of the bucket.
//! - `names`: how namespaces, topics, groups, headers and registry nodes become NATS names.
//!
//! Each runs its trait's conformance suite (`tests/conformance.rs`) against the server named
//! by `MICRO_TEST_NATS_URL`. The server needs JetStream (`-js`) and, for the largest events
//! and messages micro accepts, `max_payload: 2MB` (NATS' default is 1 MiB).

mod broker;
mod connection;
mod consumer;
mod events;
mod names;
mod registry;

pub use broker::NatsBroker;
pub use connection::{CONNECT_TIMEOUT, ConnectError, Connection, OPERATION_TIMEOUT, connect};
pub use events::{EventsOptions, MAX_REPLAY_EVENTS, NatsEvents};
pub use registry::{DEFAULT_BUCKET, NatsRegistry, RegistryOptions};
