//! [`Config`]: the config service core over the platform store.
//!
//! Each operation loads the namespace's document from the store (nothing is cached, so several
//! servers sharing one store backend see each other's writes). Set and Delete are
//! read-modify-write under a per-namespace async lock held across the store round trip, so
//! concurrent writers in this process never lose an update; a write that fails validation or
//! limits returns before the store is touched. After a successful write the change is broadcast
//! to that namespace's [`Watcher`]s without waiting for them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use micro_store::{ReadOptions, Record, Store, StoreError};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, broadcast};
use tokio_stream::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::document::{Document, DocumentError, Path, Sealer};
use crate::secret::SecretKey;

/// The store database config documents live in.
pub const DATABASE: &str = "micro";

/// The store table config documents live in; the record key is the namespace.
pub const TABLE: &str = "config";

/// Changes buffered per namespace for a watcher that has not read them yet. A watcher further
/// behind than this gets [`WatchError::Lagged`]; setters never wait for watchers.
pub const WATCH_BUFFER: usize = 64;

/// Why a config operation failed. Map to the wire with `From<ConfigError> for tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The namespace has no config document at all.
    #[error("not found")]
    NotFound,
    /// The namespace, path or value was rejected; the caller should fix the request.
    #[error("{0}")]
    Invalid(String),
    /// The document would exceed [`crate::document::MAX_DOCUMENT_BYTES`].
    #[error("{0}")]
    DocumentTooLarge(String),
    /// A stored secret could not be opened (the server key changed, or the store was altered).
    #[error("{0}")]
    Secret(String),
    /// The stored document is not in the expected format.
    #[error("{0}")]
    Corrupt(String),
    /// The store failed.
    #[error("config store: {0}")]
    Store(#[from] StoreError),
}

impl From<DocumentError> for ConfigError {
    fn from(err: DocumentError) -> Self {
        match err {
            DocumentError::InvalidPath { .. }
            | DocumentError::InvalidValue { .. }
            | DocumentError::ValueTooLarge { .. } => ConfigError::Invalid(err.to_string()),
            DocumentError::DocumentTooLarge { .. } => ConfigError::DocumentTooLarge(err.to_string()),
            DocumentError::Secret { .. } => ConfigError::Secret(err.to_string()),
            DocumentError::Corrupt(_) => ConfigError::Corrupt(err.to_string()),
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Set,
    Delete,
}

impl Action {
    /// `"set"` or `"delete"`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Set => "set",
            Action::Delete => "delete",
        }
    }
}

/// One change a [`Watcher`] sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The namespace changed.
    pub namespace: String,
    /// The path that was set or deleted (not necessarily the watched one).
    pub path: String,
    /// What happened at `path`.
    pub action: Action,
    /// The value at the *watched* path after the change (`null` when nothing is there), secrets
    /// masked unless the watcher was opened with `reveal_secrets`.
    pub value: Value,
    /// When the change was applied.
    pub timestamp: SystemTime,
}

/// Why a [`Watcher`] yielded no [`Change`] this time. The watcher stays usable after either.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watcher fell more than [`WATCH_BUFFER`] changes behind and the oldest were dropped.
    /// Later changes still arrive; read the current value to catch up on what was skipped.
    #[error("the watcher fell behind and skipped {missed} changes: read the current value to catch up")]
    Lagged { missed: u64 },
    /// The value could not be produced (a revealed secret failed to open).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A change as broadcast: the whole new document, so each watcher extracts its own path.
#[derive(Debug)]
struct Notice {
    namespace: String,
    path: Path,
    action: Action,
    timestamp: SystemTime,
    document: Document,
}

/// The config service core. See the crate docs for the storage format and the module docs for
/// the concurrency model.
pub struct Config {
    store: Arc<dyn Store>,
    key: Arc<SecretKey>,
    locks: NamespaceLocks,
    watchers: Mutex<HashMap<String, broadcast::Sender<Arc<Notice>>>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("database", &DATABASE).field("table", &TABLE).finish_non_exhaustive()
    }
}

impl Config {
    /// A config service keeping documents in `store` and sealing secrets with `key`.
    pub fn new(store: Arc<dyn Store>, key: SecretKey) -> Self {
        Self { store, key: Arc::new(key), locks: NamespaceLocks::default(), watchers: Mutex::default() }
    }

    /// The value at `path` (empty = the whole document), `null` when nothing is there. Secret
    /// leaves read as `"[secret]"` unless `reveal_secrets`. [`ConfigError::NotFound`] when the
    /// namespace has no document.
    pub async fn get(&self, namespace: &str, path: &str, reveal_secrets: bool) -> Result<Value, ConfigError> {
        check_namespace(namespace)?;
        let path = Path::parse(path)?;
        let document = self.load(namespace).await?.ok_or(ConfigError::NotFound)?;
        Ok(document.get(&path, self.sealer(reveal_secrets))?)
    }

    /// Sets `value` at `path` with the merge rules of docs/compatibility.md §8 (objects merge leaf by leaf,
    /// anything else replaces the node), creating the namespace's document if needed. With
    /// `secret`, every leaf written is sealed. On error nothing is stored.
    pub async fn set(
        &self,
        namespace: &str,
        path: &str,
        value: Value,
        secret: bool,
    ) -> Result<(), ConfigError> {
        check_namespace(namespace)?;
        let path = Path::parse(path)?;
        let _guard = self.locks.lock(namespace).await;
        let mut document = self.load(namespace).await?.unwrap_or_default();
        document.set(&path, &value, self.sealer(secret))?;
        let bytes = document.encode_bounded()?;
        self.store(namespace, bytes).await?;
        tracing::debug!(namespace, path = %path, secret, "config set");
        self.notify(namespace, path, Action::Set, document);
        Ok(())
    }

    /// Deletes the leaf or subtree at `path` (not the root). Deleting a path that holds nothing
    /// succeeds; [`ConfigError::NotFound`] when the namespace has no document.
    pub async fn delete(&self, namespace: &str, path: &str) -> Result<(), ConfigError> {
        check_namespace(namespace)?;
        let path = Path::parse(path)?;
        if path.is_root() {
            // Checked before the lookup, so the answer does not depend on the document existing.
            return Err(DocumentError::root_delete().into());
        }
        let _guard = self.locks.lock(namespace).await;
        let mut document = self.load(namespace).await?.ok_or(ConfigError::NotFound)?;
        if document.delete(&path)? {
            // Unbounded: a delete only shrinks the document, and must work even on one stored
            // under a larger limit.
            self.store(namespace, document.encode()).await?;
            tracing::debug!(namespace, path = %path, "config delete");
            self.notify(namespace, path, Action::Delete, document);
        }
        Ok(())
    }

    /// Watches `path` (empty = the whole document) in `namespace`: the watcher yields a
    /// [`Change`] for every set or delete at, above or under `path`, carrying the value at `path`
    /// afterwards. Secrets are masked unless `reveal_secrets`. Only changes made after this call
    /// are seen; read the current value after subscribing to start from a known state.
    pub fn watch(&self, namespace: &str, path: &str, reveal_secrets: bool) -> Result<Watcher, ConfigError> {
        check_namespace(namespace)?;
        let path = Path::parse(path)?;
        let receiver = {
            let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
            watchers
                .entry(namespace.to_string())
                .or_insert_with(|| broadcast::channel(WATCH_BUFFER).0)
                .subscribe()
        };
        Ok(Watcher {
            changes: BroadcastStream::new(receiver),
            path,
            reveal: reveal_secrets.then(|| self.key.clone()),
        })
    }

    fn sealer(&self, wanted: bool) -> Option<&dyn Sealer> {
        wanted.then_some(&*self.key as &dyn Sealer)
    }

    async fn load(&self, namespace: &str) -> Result<Option<Document>, ConfigError> {
        let records = match self.store.read(DATABASE, TABLE, namespace, ReadOptions::default()).await {
            Ok(records) => records,
            Err(StoreError::NotFound) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let Some(record) = records.into_iter().find(|record| record.key == namespace) else {
            return Ok(None);
        };
        Document::decode(&record.value)
            .map(Some)
            .map_err(|err| ConfigError::Corrupt(format!("namespace {namespace:?}: {err}")))
    }

    async fn store(&self, namespace: &str, value: Vec<u8>) -> Result<(), ConfigError> {
        Ok(self.store.write(DATABASE, TABLE, Record::new(namespace, value)).await?)
    }

    /// Broadcasts a stored change; called with the namespace lock held so watchers see changes
    /// in store order.
    fn notify(&self, namespace: &str, path: Path, action: Action, document: Document) {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = watchers.get(namespace) else {
            return;
        };
        if sender.receiver_count() == 0 {
            watchers.remove(namespace);
            return;
        }
        let notice =
            Notice { namespace: namespace.to_string(), path, action, timestamp: SystemTime::now(), document };
        // Sending never blocks; it only fails when every receiver is gone, which is fine.
        let _ = sender.send(Arc::new(notice));
    }
}

fn check_namespace(namespace: &str) -> Result<(), ConfigError> {
    micro_core::validate_namespace(namespace).map_err(|err| ConfigError::Invalid(err.to_string()))
}

/// A stream of the [`Change`]s affecting one watched path, from [`Config::watch`]. Ends when the
/// [`Config`] is dropped. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Watcher {
    changes: BroadcastStream<Arc<Notice>>,
    path: Path,
    reveal: Option<Arc<SecretKey>>,
}

impl Watcher {
    /// The next change, or `None` once the service is gone.
    pub async fn recv(&mut self) -> Option<Result<Change, WatchError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    fn change(&self, notice: &Notice) -> Result<Change, WatchError> {
        let reveal = self.reveal.as_deref().map(|key| key as &dyn Sealer);
        let value = notice.document.get(&self.path, reveal).map_err(ConfigError::from)?;
        Ok(Change {
            namespace: notice.namespace.clone(),
            path: notice.path.to_string(),
            action: notice.action,
            value,
            timestamp: notice.timestamp,
        })
    }
}

impl Stream for Watcher {
    type Item = Result<Change, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let notice = match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                    return Poll::Ready(Some(Err(WatchError::Lagged { missed })));
                }
                Poll::Ready(Some(Ok(notice))) => notice,
            };
            if notice.path.overlaps(&self.path) {
                return Poll::Ready(Some(self.change(&notice)));
            }
        }
    }
}

/// One async lock per namespace with a writer, dropped again when no one holds or awaits it.
#[derive(Default)]
struct NamespaceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl NamespaceLocks {
    async fn lock(&self, namespace: &str) -> NamespaceGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(namespace.to_string()).or_default().clone()
        };
        NamespaceGuard { locks: self, namespace: namespace.to_string(), guard: Some(lock.lock_owned().await) }
    }
}

struct NamespaceGuard<'a> {
    locks: &'a NamespaceLocks,
    namespace: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for NamespaceGuard<'_> {
    fn drop(&mut self) {
        // Release first, then forget the lock if the map holds its only handle. Handles are only
        // cloned under the map lock, so a count of 1 here means no one else holds or awaits it.
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.get(&self.namespace).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespace_locks_serialise_and_are_forgotten_when_idle() {
        let locks = NamespaceLocks::default();
        let first = locks.lock("a").await;
        let other = locks.lock("b").await;
        assert_eq!(locks.locks.lock().unwrap().len(), 2);

        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("a")).await;
        assert!(waiting.is_err(), "a second writer in the same namespace waits");
        drop(first);
        drop(other);
        assert!(locks.locks.lock().unwrap().is_empty(), "idle locks are dropped");
        let _again = locks.lock("a").await;
    }

    #[test]
    fn document_errors_map_to_actionable_variants() {
        let invalid = Path::parse("a..b").unwrap_err();
        assert!(matches!(ConfigError::from(invalid), ConfigError::Invalid(_)));
        let big = DocumentError::DocumentTooLarge { size: 2, max: 1 };
        assert!(matches!(ConfigError::from(big), ConfigError::DocumentTooLarge(_)));
        assert_eq!(Action::Set.as_str(), "set");
        assert_eq!(Action::Delete.as_str(), "delete");
    }
}
