//! The config service core over a real (in-memory) store: documents per namespace, secrets at
//! rest, serialised writers, failed writes, and watchers.

use std::sync::Arc;
use std::time::Duration;

use micro_config::{
    Action, Config, ConfigError, DATABASE, SecretKey, TABLE, WATCH_BUFFER, WatchError, Watcher,
};
use micro_store::memory::MemoryStore;
use micro_store::{ListOptions, ReadOptions, Record, Result as StoreResult, Store};
use serde_json::{Value, json};

/// A store that yields to the scheduler before every call, so concurrent read-modify-write
/// cycles really interleave (the memory store never suspends on its own).
struct YieldingStore(MemoryStore);

#[async_trait::async_trait]
impl Store for YieldingStore {
    async fn read(
        &self,
        database: &str,
        table: &str,
        key: &str,
        options: ReadOptions,
    ) -> StoreResult<Vec<Record>> {
        tokio::task::yield_now().await;
        self.0.read(database, table, key, options).await
    }
    async fn write(&self, database: &str, table: &str, record: Record) -> StoreResult<()> {
        tokio::task::yield_now().await;
        self.0.write(database, table, record).await
    }
    async fn create(&self, database: &str, table: &str, record: Record) -> StoreResult<bool> {
        tokio::task::yield_now().await;
        self.0.create(database, table, record).await
    }
    async fn delete(&self, database: &str, table: &str, key: &str) -> StoreResult<()> {
        tokio::task::yield_now().await;
        self.0.delete(database, table, key).await
    }
    async fn list(&self, database: &str, table: &str, options: ListOptions) -> StoreResult<Vec<String>> {
        self.0.list(database, table, options).await
    }
    async fn databases(&self) -> StoreResult<Vec<String>> {
        self.0.databases().await
    }
    async fn tables(&self, database: &str) -> StoreResult<Vec<String>> {
        self.0.tables(database).await
    }
    async fn sweep_expired(&self) -> StoreResult<u64> {
        self.0.sweep_expired().await
    }
    fn summary(&self) -> String {
        format!("yielding {}", self.0.summary())
    }
}

fn config_on(store: Arc<dyn Store>) -> Config {
    Config::new(store, SecretKey::generate().expect("the OS has randomness"))
}

fn config() -> (Config, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    (config_on(store.clone()), store)
}

/// The raw stored document of `namespace`, if any.
async fn stored(store: &Arc<dyn Store>, namespace: &str) -> Option<Vec<u8>> {
    let records = store.read(DATABASE, TABLE, namespace, ReadOptions::default()).await.ok()?;
    records.into_iter().find(|record| record.key == namespace).map(|record| record.value)
}

async fn next(watcher: &mut Watcher) -> Result<micro_config::Change, WatchError> {
    tokio::time::timeout(Duration::from_secs(5), watcher.recv())
        .await
        .expect("a change arrives in time")
        .expect("the watcher is open")
}

async fn nothing_pending(watcher: &mut Watcher) {
    let pending = tokio::time::timeout(Duration::from_millis(50), watcher.recv()).await;
    assert!(pending.is_err(), "unexpected change: {pending:?}");
}

#[tokio::test]
async fn documents_are_per_namespace_with_not_found_and_null() {
    let (config, store) = config();
    assert!(matches!(config.get("micro", "", false).await, Err(ConfigError::NotFound)));
    assert!(matches!(config.delete("micro", "a").await, Err(ConfigError::NotFound)));

    config.set("micro", "a.b", json!({"c": 1}), false).await.unwrap();
    assert_eq!(config.get("micro", "a", false).await.unwrap(), json!({"b": {"c": 1}}));
    assert_eq!(config.get("micro", "a.b.c", false).await.unwrap(), json!(1));
    assert_eq!(config.get("micro", "a.nope", false).await.unwrap(), Value::Null, "missing path is null");
    assert_eq!(config.get("micro", "", false).await.unwrap(), json!({"a": {"b": {"c": 1}}}));
    assert!(
        matches!(config.get("foo", "a", false).await, Err(ConfigError::NotFound)),
        "namespaces are apart"
    );

    config.set("micro", "a.b", json!({"d": "two"}), false).await.unwrap();
    assert_eq!(config.get("micro", "a.b", false).await.unwrap(), json!({"c": 1, "d": "two"}));

    config.delete("micro", "a.b").await.unwrap();
    assert_eq!(config.get("micro", "a.b", false).await.unwrap(), Value::Null);
    assert_eq!(config.get("micro", "a", false).await.unwrap(), json!({}));
    config.delete("micro", "no.such.path").await.unwrap();

    // The stored form is the wrapped-leaf document under micro/config/<namespace>.
    config.set("foo", "n", json!(1.5), false).await.unwrap();
    let raw: Value = serde_json::from_slice(&stored(&store, "foo").await.unwrap()).unwrap();
    assert_eq!(raw, json!({"n": {"value": "1.5", "leaf": true}}));

    // Text survives without HTML escaping.
    config.set("micro", "mail", json!("Micro Team <support@m3o.com>"), false).await.unwrap();
    let got = config.get("micro", "mail", false).await.unwrap();
    assert_eq!(serde_json::to_string(&got).unwrap(), r#""Micro Team <support@m3o.com>""#);
}

#[tokio::test]
async fn bad_input_is_invalid_and_changes_nothing() {
    let (config, store) = config();
    config.set("micro", "keep", json!({"x": 1}), false).await.unwrap();
    let before = stored(&store, "micro").await.unwrap();

    let huge = json!("x".repeat(micro_config::document::MAX_VALUE_BYTES + 1));
    let failures = [
        config.set("micro", "a..b", json!(1), false).await,
        config.set("micro", "", json!(1), false).await,
        config.set("micro", "k", json!({"dotted.key": 1}), false).await,
        config.set("micro", "k", huge, false).await,
        config.set("Bad Namespace", "k", json!(1), false).await,
        config.delete("micro", "").await,
        config.delete("micro", ".").await,
    ];
    for result in failures {
        let err = result.unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    }
    assert!(matches!(config.get("micro", "a..b", false).await, Err(ConfigError::Invalid(_))));
    assert!(matches!(config.delete("nothing-here", "").await, Err(ConfigError::Invalid(_))));

    // Values that fit one by one until the document does not.
    let chunk = json!("y".repeat(200 * 1024));
    let mut too_large = None;
    for i in 0..8 {
        if let Err(err) = config.set("micro", &format!("chunk{i}"), chunk.clone(), false).await {
            too_large = Some((i, err));
            break;
        }
    }
    let (i, err) = too_large.expect("the document limit is reached");
    assert!(matches!(err, ConfigError::DocumentTooLarge(_)), "{err:?}");
    assert!(err.to_string().contains("over the limit of 1048576 bytes"), "{err}");
    assert_eq!(config.get("micro", &format!("chunk{i}"), false).await.unwrap(), Value::Null);
    for j in 0..i {
        config.delete("micro", &format!("chunk{j}")).await.unwrap();
    }
    let after: Value = serde_json::from_slice(&stored(&store, "micro").await.unwrap()).unwrap();
    assert_eq!(
        after,
        serde_json::from_slice::<Value>(&before).unwrap(),
        "only the successful writes left a trace"
    );
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_need_the_key() {
    let (config, store) = config();
    config.set("micro", "key.subkey", json!("val1"), false).await.unwrap();
    config.set("micro", "key.password", json!("hunter2"), true).await.unwrap();
    config.set("micro", "key.pin", json!(42), true).await.unwrap();
    config.set("micro", "db", json!({"user": "admin", "port": 5432}), true).await.unwrap();

    let raw = stored(&store, "micro").await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    for plaintext in ["hunter2", "admin", "5432"] {
        assert!(!text.contains(plaintext), "{plaintext} is sealed at rest: {text}");
    }

    assert_eq!(
        config.get("micro", "", false).await.unwrap(),
        json!({"key": {"subkey": "val1", "password": "[secret]", "pin": "[secret]"},
               "db": {"user": "[secret]", "port": "[secret]"}})
    );
    assert_eq!(config.get("micro", "key.pin", true).await.unwrap(), json!(42));
    assert_eq!(config.get("micro", "db", true).await.unwrap(), json!({"user": "admin", "port": 5432}));

    // Another server key over the same store can mask, but not open.
    let stranger = config_on(store.clone());
    assert_eq!(stranger.get("micro", "key.password", false).await.unwrap(), json!("[secret]"));
    let err = stranger.get("micro", "key.password", true).await.unwrap_err();
    assert!(matches!(err, ConfigError::Secret(_)), "{err:?}");
    assert!(err.to_string().contains("key.password") && err.to_string().contains("different key"), "{err}");
    assert_eq!(stranger.get("micro", "key.subkey", true).await.unwrap(), json!("val1"));
}

#[tokio::test]
async fn corrupt_documents_are_reported_and_never_overwritten() {
    let (config, store) = config();
    let garbage = br#"{"a":1}"#.to_vec();
    store.write(DATABASE, TABLE, Record::new("micro", garbage.clone())).await.unwrap();
    let failures = [
        config.get("micro", "a", false).await.unwrap_err(),
        config.set("micro", "b", json!(2), false).await.unwrap_err(),
        config.delete("micro", "a").await.unwrap_err(),
    ];
    for err in failures {
        assert!(matches!(err, ConfigError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains(r#"namespace "micro""#), "{err}");
    }
    assert_eq!(stored(&store, "micro").await.unwrap(), garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sets_never_lose_updates() {
    let config = Arc::new(config_on(Arc::new(YieldingStore(MemoryStore::new()))));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let namespace = if i % 2 == 0 { "micro" } else { "foo" };
            config.set(namespace, &format!("keys.k{i}"), json!(i), i % 3 == 0).await
        }));
    }
    for task in tasks {
        task.await.expect("no task panics").expect("every set succeeds");
    }
    for (namespace, parity) in [("micro", 0), ("foo", 1)] {
        let keys = config.get(namespace, "keys", true).await.unwrap();
        let keys = keys.as_object().unwrap();
        assert_eq!(keys.len(), 50, "{namespace}: every concurrent set survived");
        for i in (parity..100).step_by(2) {
            assert_eq!(keys[&format!("k{i}")], json!(i));
        }
    }
}

#[tokio::test]
async fn watchers_see_changes_at_above_and_under_their_path() {
    let (config, _store) = config();
    let mut watcher = config.watch("micro", "a.b", false).unwrap();
    let mut everything = config.watch("micro", "", false).unwrap();
    let mut other_namespace = config.watch("foo", "", false).unwrap();

    config.set("micro", "a.b.c", json!(1), false).await.unwrap();
    let change = next(&mut watcher).await.unwrap();
    assert_eq!(
        (change.namespace.as_str(), change.path.as_str(), change.action),
        ("micro", "a.b.c", Action::Set)
    );
    assert_eq!(change.value, json!({"c": 1}), "the value at the watched path");
    assert!(change.timestamp.elapsed().unwrap() < Duration::from_secs(60));
    assert_eq!(next(&mut everything).await.unwrap().value, json!({"a": {"b": {"c": 1}}}));

    config.set("micro", "a", json!({"b": {"d": 2}}), false).await.unwrap();
    assert_eq!(next(&mut watcher).await.unwrap().value, json!({"c": 1, "d": 2}), "a change above");

    config.set("micro", "a.bc", json!(3), false).await.unwrap();
    config.set("micro", "x", json!(4), false).await.unwrap();
    config.set("micro", "a.b", json!("leaf"), true).await.unwrap();
    let change = next(&mut watcher).await.unwrap();
    assert_eq!(change.path, "a.b", "unrelated changes were skipped");
    assert_eq!(change.value, json!("[secret]"), "masked unless revealed");

    let mut revealing = config.watch("micro", "a", true).unwrap();
    config.set("micro", "a.b", json!("open"), true).await.unwrap();
    assert_eq!(next(&mut revealing).await.unwrap().value, json!({"b": "open", "bc": 3}));
    assert_eq!(next(&mut watcher).await.unwrap().value, json!("[secret]"));

    config.delete("micro", "a").await.unwrap();
    let change = next(&mut watcher).await.unwrap();
    assert_eq!((change.path.as_str(), change.action, change.value), ("a", Action::Delete, Value::Null));
    config.delete("micro", "a").await.unwrap();
    nothing_pending(&mut watcher).await;

    for _ in 0..6 {
        next(&mut everything).await.unwrap();
    }
    nothing_pending(&mut everything).await;
    nothing_pending(&mut other_namespace).await;
    assert!(matches!(config.watch("micro", "a..b", false), Err(ConfigError::Invalid(_))));
}

#[tokio::test]
async fn lagging_watchers_are_told_and_never_block_setters() {
    let (config, _store) = config();
    let mut watcher = config.watch("micro", "n", false).unwrap();
    let total = WATCH_BUFFER as u64 + 10;
    for i in 0..total {
        // Completes although nobody reads the watcher.
        tokio::time::timeout(Duration::from_secs(5), config.set("micro", "n", json!(i), false))
            .await
            .expect("setters never wait for watchers")
            .unwrap();
    }
    match next(&mut watcher).await {
        Err(WatchError::Lagged { missed }) => assert_eq!(missed, 10),
        other => panic!("expected a lag notice, got {other:?}"),
    }
    let err = WatchError::Lagged { missed: 10 };
    assert!(err.to_string().contains("skipped 10 changes"), "{err}");
    for i in 10..total {
        assert_eq!(next(&mut watcher).await.unwrap().value, json!(i), "the retained changes follow in order");
    }
    nothing_pending(&mut watcher).await;
}

#[tokio::test]
async fn watchers_end_with_the_service() {
    let (config, _store) = config();
    let mut watcher = config.watch("micro", "", false).unwrap();
    drop(config);
    let end = tokio::time::timeout(Duration::from_secs(5), watcher.recv()).await.unwrap();
    assert!(end.is_none());
}
