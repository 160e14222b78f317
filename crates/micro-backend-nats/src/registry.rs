//! [`NatsRegistry`]: the [`Registry`] contract on a NATS JetStream KV bucket, so every server
//! on one NATS sees every registered service.
//!
//! # Layout
//!
//! - **One key per node** in the bucket `micro-registry` (history 1, file storage):
//!   `<domain>.<service>.<version>.<node id>`, each part escaped to KV key characters (see
//!   `names`). The value is that node's registration — the `registry.Service` with that one
//!   node, protobuf-encoded — behind a header with its domain and the end of its TTL:
//!   `[format = 1][expires at, unix ms, u64 BE][domain length, u16 BE][domain][Service]`.
//! - **A TTL per node.** A bucket's `max_age` is one for all its keys, so each value carries its
//!   own expiry and every reader hides a node once it has passed (by the reader's clock: keep
//!   the servers' clocks in sync, as a skew between them shifts expiries by as much). A
//!   heartbeat is a put of a fresh value. Every server reaps: it drops expired nodes from its
//!   cache (its watchers hear `delete`) and deletes their keys with
//!   `Nats-Expected-Last-Subject-Sequence` set to the revision it saw, so a key re-registered
//!   meanwhile stays, and several servers reaping one key do no harm. The bucket's `max_age`
//!   ([`MAX_TTL`] + 5 minutes) removes whatever nobody reaped; a key that still heartbeats is
//!   never that old.
//! - **A local cache.** Each instance keeps a [`Catalog`] fed by a watch of the whole bucket
//!   (each key's latest value, then every change), so `get`, `nodes` and `list` never leave the
//!   process, and watch events are the changes that watch delivers. A register or deregister
//!   returns once this instance's watch has delivered its own write (read-your-writes); other
//!   servers see it when theirs does. Limits are checked against the cache, so servers
//!   registering at the same moment can overshoot them slightly.
//!
//! # NATS going away
//!
//! Writes fail with [`RegistryError::Unavailable`] at once while the client knows it is
//! disconnected, else within [`OPERATION_TIMEOUT`]. Reads keep answering from the cache and
//! TTLs keep running, so nodes that cannot heartbeat fall out when their TTL passes. When the
//! client reconnects, the watch is created again and the cache reloaded from the bucket (which
//! is created again if the server lost it), with watch events for what changed meanwhile. A
//! registration of several nodes that fails midway leaves the nodes written so far, until their
//! TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue};
use futures::StreamExt;
use micro_core::task::AbortOnDrop;
use micro_proto::registry::{Node, Service};
use micro_registry::{Catalog, Event, MAX_NAME_BYTES, MAX_TTL, Registry, RegistryError, effective_ttl};
use prost::Message;
use tokio::sync::{broadcast, oneshot, watch};

use crate::connection::{CONNECT_TIMEOUT, ConnectError, Connection, OPERATION_TIMEOUT, connect, jetstream};
use crate::names;

/// The bucket [`NatsRegistry::connect`] uses.
pub const DEFAULT_BUCKET: &str = "micro-registry";
/// How long the bucket keeps a value nobody reaped or refreshed.
const BUCKET_MAX_AGE: Duration = Duration::from_secs(MAX_TTL.as_secs() + 5 * 60);
/// The first byte of every value we write.
const FORMAT: u8 = 1;
/// Format byte, expiry, domain length.
const HEADER_BYTES: usize = 1 + 8 + 2;
/// Room left in a NATS message for the subject and headers beside a value.
const ENVELOPE_BYTES: usize = 4 * 1024;
/// First and longest pause between attempts to watch the bucket again.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Expired keys remembered for the reaper at most; past this they wait for the bucket's
/// `max_age` or another server's reaper.
const MAX_STALE: usize = 65_536;

/// How [`NatsRegistry`] creates its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// The KV bucket; every server sharing a registry names the same one.
    pub bucket: String,
    /// Copies of the bucket in a NATS cluster (1 for a single server; 3 to survive a node).
    pub replicas: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self { bucket: DEFAULT_BUCKET.to_string(), replicas: 1 }
    }
}

/// The registry in a NATS JetStream KV bucket, with a local cache (see the module docs).
pub struct NatsRegistry {
    inner: Arc<Inner>,
    /// The task that keeps the cache current; stopped with the registry.
    _watcher: AbortOnDrop,
}

struct Inner {
    connection: Connection,
    js: jetstream::Context,
    options: RegistryOptions,
    /// The cache: what the bucket holds, as far as the watch has delivered it.
    catalog: Catalog,
    /// Per KV key in the cache: its revision and which node it is. Kept in step with
    /// `catalog`; lock this before changing either.
    known: Mutex<HashMap<String, Known>>,
    /// Keys seen already expired, `(key, revision)`, for the reaper to delete.
    stale: Mutex<Vec<(String, u64)>>,
    /// The bucket as the watcher last opened it.
    bucket: Mutex<Option<kv::Store>>,
    /// The highest revision the cache has applied.
    applied: watch::Sender<u64>,
}

/// The node one KV key holds.
struct Known {
    revision: u64,
    domain: String,
    name: String,
    version: String,
    node: String,
}

impl std::fmt::Debug for NatsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsRegistry")
            .field("url", &self.inner.connection.url())
            .field("bucket", &self.inner.options.bucket)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change under these locks is made whole, so a poisoned one still holds a consistent value.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(cause: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(cause.to_string())
}

/// When a node expiring at `expires_ms` (unix) leaves reads, on this process's clock; `None`
/// when it already has.
fn deadline(expires_ms: u64) -> Option<Instant> {
    let left = expires_ms.checked_sub(micro_core::time::unix_millis()).filter(|left| *left > 0)?;
    Some(Instant::now() + Duration::from_millis(left))
}

/// One node's registration as stored in its KV value.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    domain: String,
    expires_ms: u64,
    /// The service with exactly this node.
    service: Service,
}

fn encode(domain: &str, expires_ms: u64, service: &Service) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER_BYTES + domain.len() + service.encoded_len());
    value.push(FORMAT);
    value.extend_from_slice(&expires_ms.to_be_bytes());
    // Domains are namespaces, at most 64 bytes.
    value.extend_from_slice(&u16::try_from(domain.len()).unwrap_or(u16::MAX).to_be_bytes());
    value.extend_from_slice(domain.as_bytes());
    service.encode(&mut value).expect("a Vec grows to fit any message");
    value
}

fn decode(value: &[u8]) -> Result<Record, String> {
    if value.len() < HEADER_BYTES || value[0] != FORMAT {
        return Err("not a micro registry value".into());
    }
    let expires_ms = u64::from_be_bytes(value[1..9].try_into().expect("eight bytes by the length check"));
    let domain_len = usize::from(u16::from_be_bytes([value[9], value[10]]));
    let domain = value
        .get(HEADER_BYTES..HEADER_BYTES + domain_len)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .ok_or("a truncated or non-UTF-8 domain")?
        .to_string();
    let service = Service::decode(&value[HEADER_BYTES + domain_len..]).map_err(|err| err.to_string())?;
    if service.nodes.len() != 1 {
        return Err(format!("{} nodes where one was expected", service.nodes.len()));
    }
    Ok(Record { domain, expires_ms, service })
}

/// Why a delete did not happen.
enum DeleteFailure {
    /// The key has a newer revision than expected (re-registered, or reaped already).
    Conflict,
    Unavailable(String),
}

impl NatsRegistry {
    /// Connects to the NATS server at `url` and opens (creating it if needed) the bucket
    /// [`DEFAULT_BUCKET`]; every domain also lists `builtins`. Fails within about
    /// [`CONNECT_TIMEOUT`] + [`OPERATION_TIMEOUT`].
    pub async fn connect(url: &str, builtins: Vec<Service>) -> Result<Self, ConnectError> {
        Self::open(connect(url).await?, RegistryOptions::default(), builtins).await
    }

    /// The registry over an open connection: checks JetStream, opens the bucket and loads the
    /// cache before returning, so the first reads already see every registration.
    pub async fn open(
        connection: Connection,
        options: RegistryOptions,
        builtins: Vec<Service>,
    ) -> Result<Self, ConnectError> {
        let js = jetstream(&connection).await?;
        let url = connection.url().to_string();
        let inner = Arc::new(Inner {
            connection,
            js,
            options,
            catalog: Catalog::new(builtins),
            known: Mutex::new(HashMap::new()),
            stale: Mutex::new(Vec::new()),
            bucket: Mutex::new(None),
            applied: watch::channel(0).0,
        });
        let (loaded, first_load) = oneshot::channel();
        let watcher = AbortOnDrop::from(tokio::spawn(keep_current(inner.clone(), loaded)));
        let patience = CONNECT_TIMEOUT + OPERATION_TIMEOUT;
        let reason = match tokio::time::timeout(patience, first_load).await {
            Ok(Ok(Ok(()))) => return Ok(Self { inner, _watcher: watcher }),
            Ok(Ok(Err(reason))) => reason,
            Ok(Err(_)) => "the bucket watcher stopped".to_string(),
            Err(_) => format!("it did not load within {}s", patience.as_secs()),
        };
        Err(ConnectError::Unreachable {
            url,
            reason: format!("cannot load the registry bucket {}: {reason}", inner.options.bucket),
        })
    }
}

/// Keeps `inner`'s cache current for as long as the registry lives: loads the bucket, applies
/// what its watch delivers, and starts over (a new watch, a full reload) when the watch fails
/// or the client reconnects. Reports the first load through `loaded`; if that fails, stops.
async fn keep_current(inner: Arc<Inner>, loaded: oneshot::Sender<Result<(), String>>) {
    let mut loaded = Some(loaded);
    let mut connects = inner.connection.connects();
    let mut backoff = micro_core::backoff::Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut failing = false;
    loop {
        connects.borrow_and_update();
        let mut entries = match inner.load().await {
            Ok(entries) => entries,
            Err(err) => {
                if let Some(loaded) = loaded.take() {
                    let _ = loaded.send(Err(err));
                    return;
                }
                if !failing {
                    tracing::warn!(
                        url = %inner.connection.url(),
                        cause = %err,
                        "registry: cannot watch the NATS bucket; serving reads from the cache and retrying"
                    );
                    failing = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if let Some(loaded) = loaded.take() {
            let _ = loaded.send(Ok(()));
        } else if failing {
            tracing::info!(url = %inner.connection.url(), "registry: watching the NATS bucket again; cache reloaded");
        }
        failing = false;
        backoff.reset();
        loop {
            tokio::select! {
                entry = entries.next() => match entry {
                    Some(Ok(entry)) => inner.apply(entry),
                    Some(Err(err)) => {
                        tracing::warn!(cause = %err, "registry: the bucket watch failed; reloading");
                        tokio::time::sleep(RETRY_MIN).await;
                        break;
                    }
                    None => {
                        tracing::warn!("registry: the bucket watch ended; reloading");
                        tokio::time::sleep(RETRY_MIN).await;
                        break;
                    }
                },
                changed = connects.changed() => {
                    if changed.is_err() {
                        // The connection is gone for good (the client was dropped).
                        return;
                    }
                    tracing::info!("registry: reconnected to NATS; reloading the cache");
                    break;
                }
            }
        }
    }
}

/// Bounds `work` by [`OPERATION_TIMEOUT`], naming `what` in the error.
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what}: {err}")),
        Err(_) => Err(format!("{what}: no answer within {}s", OPERATION_TIMEOUT.as_secs())),
    }
}

impl Inner {
    fn ready(&self) -> Result<(), RegistryError> {
        self.connection.ready().map_err(unavailable)
    }

    fn bucket(&self) -> Result<kv::Store, RegistryError> {
        lock(&self.bucket).clone().ok_or_else(|| {
            unavailable(format!("the registry bucket at {} is not open yet", self.connection.url()))
        })
    }

    /// The bucket, created when it does not exist.
    async fn open_bucket(&self) -> Result<kv::Store, String> {
        let name = &self.options.bucket;
        if let Ok(bucket) = bounded("open the bucket", self.js.get_key_value(name)).await {
            return Ok(bucket);
        }
        let config = kv::Config {
            bucket: name.clone(),
            description: "micro registry: one key per service node".into(),
            history: 1,
            max_age: BUCKET_MAX_AGE,
            storage: jetstream::stream::StorageType::File,
            num_replicas: self.options.replicas,
            ..Default::default()
        };
        match bounded("create the bucket", self.js.create_key_value(config)).await {
            Ok(bucket) => Ok(bucket),
            // Another server may have created it meanwhile.
            Err(create) => bounded("open the bucket", self.js.get_key_value(name)).await.map_err(|_| create),
        }
    }

    /// Opens the bucket, starts a watch of every key (latest values first), reads those up to
    /// the present, makes the cache match them (telling watchers what changed), and returns
    /// the watch for the changes to come.
    async fn load(&self) -> Result<kv::Watch, String> {
        self.connection.ready()?;
        let bucket = self.open_bucket().await?;
        let mut entries = bounded("watch the bucket", bucket.watch_with_history(">")).await?;
        // An empty bucket delivers nothing, so there would be no last entry to wait for.
        let mut stream = bucket.stream.clone();
        let empty = bounded("read the bucket's state", stream.info()).await?.state.messages == 0;
        let mut latest: HashMap<String, kv::Entry> = HashMap::new();
        let mut last = 0;
        if !empty {
            loop {
                let entry = match tokio::time::timeout(OPERATION_TIMEOUT, entries.next()).await {
                    Ok(Some(Ok(entry))) => entry,
                    Ok(Some(Err(err))) => return Err(format!("read the bucket: {err}")),
                    Ok(None) => return Err("read the bucket: the watch ended".into()),
                    Err(_) => return Err("read the bucket: it stopped delivering entries".into()),
                };
                last = last.max(entry.revision);
                let caught_up = entry.delta == 0;
                latest.insert(entry.key.clone(), entry);
                if caught_up {
                    break;
                }
            }
        }
        *lock(&self.bucket) = Some(bucket);
        self.replace(latest, last);
        Ok(entries)
    }

    /// Makes the cache hold exactly the puts among `latest` (each key's latest entry).
    fn replace(&self, latest: HashMap<String, kv::Entry>, last: u64) {
        let mut known = lock(&self.known);
        let gone: Vec<String> = known
            .keys()
            .filter(|key| !latest.get(*key).is_some_and(|entry| entry.operation == kv::Operation::Put))
            .cloned()
            .collect();
        for key in gone {
            self.forget(&mut known, &key);
        }
        for (key, entry) in latest {
            if entry.operation == kv::Operation::Put
                && known.get(&key).map(|known| known.revision) != Some(entry.revision)
            {
                self.remember(&mut known, key, entry.revision, &entry.value);
            }
        }
        drop(known);
        // Not the maximum of old and new: a NATS server that lost its state counts from 1 again.
        self.applied.send_replace(last);
    }

    /// Applies one change the watch delivered.
    fn apply(&self, entry: kv::Entry) {
        let mut known = lock(&self.known);
        match entry.operation {
            kv::Operation::Put => self.remember(&mut known, entry.key, entry.revision, &entry.value),
            kv::Operation::Delete | kv::Operation::Purge => self.forget(&mut known, &entry.key),
        }
        drop(known);
        self.applied.send_modify(|applied| *applied = (*applied).max(entry.revision));
    }

    /// Puts the node `value` describes into the cache, or, when it already expired, hands its
    /// key to the reaper.
    fn remember(&self, known: &mut HashMap<String, Known>, key: String, revision: u64, value: &[u8]) {
        let record = match decode(value) {
            Ok(record) => record,
            Err(cause) => {
                tracing::warn!(%key, %cause, "registry: ignoring a bucket value micro did not write");
                self.forget(known, &key);
                return;
            }
        };
        let Some(deadline) = deadline(record.expires_ms) else {
            self.forget(known, &key);
            let mut stale = lock(&self.stale);
            if stale.len() < MAX_STALE {
                stale.push((key, revision));
            }
            return;
        };
        let node = record.service.nodes[0].id.clone();
        known.insert(
            key,
            Known {
                revision,
                domain: record.domain.clone(),
                name: record.service.name.clone(),
                version: record.service.version.clone(),
                node,
            },
        );
        self.catalog.put(&record.domain, record.service, deadline);
    }

    /// Drops `key`'s node from the cache, if it is there.
    fn forget(&self, known: &mut HashMap<String, Known>, key: &str) {
        if let Some(gone) = known.remove(key) {
            let service = Service {
                name: gone.name,
                version: gone.version,
                nodes: vec![Node { id: gone.node, ..Node::default() }],
                ..Service::default()
            };
            self.catalog.deregister(&gone.domain, &service);
        }
    }

    /// Waits (a bounded while) until the cache has applied `revision`, so this instance reads
    /// its own write.
    async fn seen(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        let waiting = applied.wait_for(|applied| *applied >= revision);
        if tokio::time::timeout(OPERATION_TIMEOUT, waiting).await.is_err() {
            tracing::warn!(revision, "registry: the bucket watch has not delivered a write of ours yet");
        }
    }

    /// Puts a delete marker on `key` (only if its revision is still `expected`, when given);
    /// returns the marker's revision.
    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<u64, DeleteFailure> {
        let bucket = self.bucket().map_err(|err| DeleteFailure::Unavailable(err.to_string()))?;
        // What `kv::Store::delete_expect_revision` sends, done here for the revision it does not return.
        let subject = format!("{}{key}", bucket.put_prefix.as_deref().unwrap_or(&bucket.prefix));
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        if let Some(revision) = expected {
            headers
                .insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(revision));
        }
        let sending =
            async { self.js.publish_with_headers(subject, headers, bytes::Bytes::new()).await?.await };
        match tokio::time::timeout(OPERATION_TIMEOUT, sending).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(err)) if err.kind() == PublishErrorKind::WrongLastSequence => Err(DeleteFailure::Conflict),
            Ok(Err(err)) => Err(DeleteFailure::Unavailable(format!(
                "delete {key} from the registry bucket at {}: {err}",
                self.connection.url()
            ))),
            Err(_) => Err(DeleteFailure::Unavailable(format!(
                "delete {key}: no answer from NATS at {} within {}s",
                self.connection.url(),
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Registry for NatsRegistry {
    async fn register(&self, domain: &str, mut service: Service, ttl: Duration) -> Result<(), RegistryError> {
        let inner = &self.inner;
        inner.catalog.check(domain, &service)?;
        inner.catalog.admit(domain, &service)?;
        inner.ready()?;
        let bucket = inner.bucket()?;
        let expires_ms = micro_core::time::unix_millis()
            .saturating_add(u64::try_from(effective_ttl(ttl).as_millis()).unwrap_or(u64::MAX));
        let nodes = std::mem::take(&mut service.nodes);
        service.options = None;
        let (_, max_payload) = inner.connection.server();
        let mut last = 0;
        for node in nodes {
            let key = names::registry_key(domain, &service.name, &service.version, &node.id);
            let value = encode(domain, expires_ms, &Service { nodes: vec![node], ..service.clone() });
            if value.len() + ENVELOPE_BYTES > max_payload {
                return Err(RegistryError::Invalid(format!(
                    "the registration of {} is {} bytes, more than the NATS server at {} accepts \
                     (max_payload {max_payload}): raise max_payload in nats-server.conf or register \
                     smaller descriptors",
                    service.name,
                    value.len(),
                    inner.connection.url()
                )));
            }
            let revision = bounded("register", bucket.put(&key, value.into()))
                .await
                .map_err(|cause| unavailable(format!("{cause} (NATS at {})", inner.connection.url())))?;
            last = last.max(revision);
        }
        inner.seen(last).await;
        Ok(())
    }

    async fn deregister(&self, domain: &str, service: &Service) -> Result<(), RegistryError> {
        let inner = &self.inner;
        // Nothing can be registered under names this long or a domain this malformed.
        let fits = |name: &str| name.len() <= MAX_NAME_BYTES;
        if micro_core::validate_namespace(domain).is_err() || !fits(&service.name) || !fits(&service.version)
        {
            return Ok(());
        }
        let nodes: Vec<String> = if service.nodes.is_empty() {
            inner.catalog.node_ids(domain, &service.name, &service.version)
        } else {
            service.nodes.iter().map(|node| node.id.clone()).filter(|id| !id.is_empty() && fits(id)).collect()
        };
        if nodes.is_empty() {
            return Ok(());
        }
        inner.ready()?;
        let mut last = 0;
        for node in nodes {
            let key = names::registry_key(domain, &service.name, &service.version, &node);
            match inner.delete(&key, None).await {
                Ok(revision) => last = last.max(revision),
                // Only an expected revision can conflict, and none was given.
                Err(DeleteFailure::Conflict) => {}
                Err(DeleteFailure::Unavailable(cause)) => return Err(unavailable(cause)),
            }
        }
        inner.seen(last).await;
        Ok(())
    }

    fn get(&self, domain: &str, name: &str) -> Vec<Service> {
        self.inner.catalog.get(domain, name)
    }

    fn nodes(&self, domain: &str, name: &str) -> Option<Vec<Node>> {
        self.inner.catalog.nodes(domain, name)
    }

    fn list(&self, domain: &str) -> Vec<Service> {
        self.inner.catalog.list(domain)
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.inner.catalog.watch()
    }

    /// Drops expired nodes from the cache, then deletes their keys from the bucket unless
    /// they changed since (any server may reap a key; the first delete wins, the rest
    /// conflict and are ignored). Keys it could not delete are found again by the next
    /// reload, or removed by the bucket's `max_age`.
    async fn reap(&self) -> Result<usize, RegistryError> {
        let inner = &self.inner;
        let mut targets = Vec::new();
        let dropped = {
            let mut known = lock(&inner.known);
            let mut dropped = 0;
            for (domain, service) in inner.catalog.reap() {
                for node in &service.nodes {
                    dropped += 1;
                    let key = names::registry_key(&domain, &service.name, &service.version, &node.id);
                    if let Some(gone) = known.remove(&key) {
                        targets.push((key, gone.revision));
                    }
                }
            }
            dropped
        };
        targets.append(&mut lock(&inner.stale));
        if targets.is_empty() {
            return Ok(dropped);
        }
        inner.ready()?;
        for (key, revision) in targets {
            match inner.delete(&key, Some(revision)).await {
                Ok(_) | Err(DeleteFailure::Conflict) => {}
                Err(DeleteFailure::Unavailable(cause)) => return Err(unavailable(cause)),
            }
        }
        Ok(dropped)
    }

    fn summary(&self) -> String {
        let (version, _) = self.inner.connection.server();
        format!(
            "nats {} (JetStream KV bucket {}, NATS {version})",
            self.inner.connection.url(),
            self.inner.options.bucket
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_ones_are_refused() {
        let service = Service {
            name: "greeter".into(),
            version: "1.0".into(),
            nodes: vec![Node { id: "g-1".into(), address: "127.0.0.1:1".into(), ..Node::default() }],
            descriptors: vec![7; 100],
            ..Service::default()
        };
        let value = encode("foo", 1_700_000_000_000, &service);
        let record = decode(&value).unwrap();
        assert_eq!(
            record,
            Record { domain: "foo".into(), expires_ms: 1_700_000_000_000, service: service.clone() }
        );

        assert!(decode(b"").is_err());
        assert!(decode(b"{\"json\": true}").is_err(), "not our format");
        assert!(decode(&value[..5]).is_err(), "truncated header");
        let two_nodes = Service { nodes: vec![Node::default(), Node::default()], ..service };
        assert!(decode(&encode("foo", 1, &two_nodes)).is_err(), "one node per value");
    }

    #[test]
    fn deadlines_follow_the_stored_expiry() {
        assert_eq!(deadline(0), None, "long past");
        assert_eq!(deadline(micro_core::time::unix_millis().saturating_sub(1)), None, "just past");
        let later = deadline(micro_core::time::unix_millis() + 60_000).expect("a minute ahead");
        let left = later.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60), "{left:?}");
    }
}
