//! The conformance suite: the [`Store`] contract as executable checks, run by every backend.
//!
//! Compiled for this crate's tests and, with the `conformance` feature, for backends in other
//! crates:
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     micro_store::conformance::run_all(Arc::new(MyStore::connect(url).await?)).await;
//! }
//! ```
//!
//! Each case is also public, taking the store and a database name to work in, so a failing
//! case can be run alone. Cases panic (with the case and the finding) on a violation.
//!
//! Requirements on the store under test: real time (the TTL case sleeps a few hundred
//! milliseconds of wall-clock time, so no paused tokio clock), and no other writer adding
//! expiring records while [`expiry`] runs (it counts what [`Store::sweep_expired`] removes).
//! [`run_all`] works in databases named `conformance-<run id>-<case>`, so it can run against
//! a persistent store that already holds data, including data from earlier runs.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{
    Field, ListOptions, MAX_KEY_BYTES, MAX_METADATA_BYTES, MAX_NAME_BYTES, MAX_VALUE_BYTES, ReadOptions,
    Record, Result, Store, StoreError,
};

/// The table most cases work in.
const TABLE: &str = "conformance";

/// Runs every case against `store`, each in its own fresh database.
pub async fn run_all(store: Arc<dyn Store>) {
    let store = &*store;
    let run = run_id();
    let db = |case: &str| format!("conformance-{run}-{case}");

    write_read_exact(store, &db("exact")).await;
    overwrite_replaces(store, &db("overwrite")).await;
    create_only_if_absent(store, &db("create")).await;
    concurrent_writers(store, &db("concurrent")).await;
    delete(store, &db("delete")).await;
    metadata_round_trip(store, &db("metadata")).await;
    ordering_and_prefix(store, &db("prefix")).await;
    suffix(store, &db("suffix")).await;
    prefix_and_suffix(store, &db("both")).await;
    read_paging(store, &db("readpage")).await;
    read_byte_budget(store, &db("readbudget")).await;
    list_paging(store, &db("listpage")).await;
    isolation(store, &db("isolation")).await;
    databases_and_tables(store, &db("catalog")).await;
    expiry(store, &db("expiry")).await;
    validation(store, &db("validation")).await;
}

/// A name no earlier run in this or another process used.
fn run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}{}", RUNS.fetch_add(1, Ordering::Relaxed))
}

/// `create` writes only when nothing live is under the key: the first of many concurrent
/// creates wins and the others see `false`; an expired record counts as absent; a failed
/// create changes nothing.
pub async fn create_only_if_absent(store: &dyn Store, db: &str) {
    let attempts = (0..16).map(|n| store.create(db, TABLE, Record::new("leader", format!("candidate-{n}"))));
    let won: Vec<bool> =
        futures::future::join_all(attempts).await.into_iter().map(|r| r.expect("create succeeds")).collect();
    assert_eq!(won.iter().filter(|won| **won).count(), 1, "exactly one concurrent create wins: {won:?}");
    let winner = format!("candidate-{}", won.iter().position(|won| *won).unwrap_or_default());
    let stored = store.read(db, TABLE, "leader", exact()).await.unwrap();
    assert_eq!(stored[0].value, winner.as_bytes(), "the winner's value is kept");
    assert!(!store.create(db, TABLE, Record::new("leader", "late")).await.unwrap());
    assert_eq!(store.read(db, TABLE, "leader", exact()).await.unwrap()[0].value, winner.as_bytes());

    let short = Record::new("lease", "first").with_expiry(Duration::from_millis(200));
    assert!(store.create(db, TABLE, short).await.unwrap());
    assert!(!store.create(db, TABLE, Record::new("lease", "second")).await.unwrap(), "still live");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.create(db, TABLE, Record::new("lease", "second")).await.unwrap(), "expired = absent");
    assert_eq!(store.read(db, TABLE, "lease", exact()).await.unwrap()[0].value, b"second");
    assert_eq!(store.read(db, TABLE, "lease", exact()).await.unwrap()[0].expiry, None);

    let bad = store.create(db, TABLE, Record::new("", "v")).await.unwrap_err();
    assert!(matches!(bad, StoreError::Invalid(_)), "{bad:?}");
}

/// Many concurrent writers, each with its own sequence of writes, deletes and creates on keys
/// of its own and keys shared with all: every acknowledged result holds afterwards. Each
/// writer's own keys end exactly as its sequence left them; of the creates of one shared key
/// exactly one won, and its value is stored; a key all of them overwrite ends with some
/// writer's last value for it.
pub async fn concurrent_writers(store: &dyn Store, db: &str) {
    const WRITERS: usize = 64;
    const OPS: usize = 50;
    const SHARED: usize = 8;
    const HOT: usize = 4;

    /// What one writer was told: its own keys' final values, its create results, and its
    /// last value for each hot key.
    #[derive(Default)]
    struct Acked {
        own: BTreeMap<String, String>,
        creates: Vec<(String, String, bool)>,
        hot: BTreeMap<String, String>,
    }

    let writer = |w: usize| async move {
        let mut acked = Acked::default();
        for i in 0..OPS {
            let value = format!("w{w}-op{i}");
            match i % 5 {
                0 | 1 => {
                    let key = format!("own-{w:02}-{}", i % 7);
                    store.write(db, TABLE, Record::new(&key, value.as_str())).await.expect("write");
                    acked.own.insert(key, value);
                }
                2 => {
                    let key = format!("own-{w:02}-{}", (i / 5) % 7);
                    store.delete(db, TABLE, &key).await.expect("delete");
                    acked.own.remove(&key);
                }
                3 => {
                    let key = format!("shared-{}", i % SHARED);
                    let won =
                        store.create(db, TABLE, Record::new(&key, value.as_str())).await.expect("create");
                    acked.creates.push((key, value, won));
                }
                _ => {
                    let key = format!("hot-{}", i % HOT);
                    store.write(db, TABLE, Record::new(&key, value.as_str())).await.expect("write");
                    acked.hot.insert(key, value);
                }
            }
        }
        acked
    };
    let acked = futures::future::join_all((0..WRITERS).map(writer)).await;

    let own: BTreeMap<&String, &String> = acked.iter().flat_map(|acked| &acked.own).collect();
    let listed = store.list(db, TABLE, list_prefix("own-", 0, 0)).await.expect("list");
    assert_eq!(listed.iter().collect::<Vec<_>>(), own.keys().copied().collect::<Vec<_>>(), "own keys");
    for (key, value) in own {
        assert_eq!(read_one(store, db, TABLE, key).await.value, value.as_bytes(), "the last write to {key}");
    }

    for shared in 0..SHARED {
        let key = format!("shared-{shared}");
        let winners: Vec<&String> = acked
            .iter()
            .flat_map(|acked| &acked.creates)
            .filter(|(created, _, won)| *created == key && *won)
            .map(|(_, value, _)| value)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one create of {key} wins: {winners:?}");
        assert_eq!(
            read_one(store, db, TABLE, &key).await.value,
            winners[0].as_bytes(),
            "the winner of {key}"
        );
    }

    for hot in 0..HOT {
        let key = format!("hot-{hot}");
        let value = String::from_utf8(read_one(store, db, TABLE, &key).await.value).expect("utf-8");
        assert!(
            acked.iter().any(|acked| acked.hot.get(&key) == Some(&value)),
            "{key} holds some writer's last value, not {value:?}"
        );
    }
}

fn exact() -> ReadOptions {
    ReadOptions::default()
}

fn prefix(limit: u64, offset: u64) -> ReadOptions {
    ReadOptions { prefix: true, limit, offset, ..ReadOptions::default() }
}

fn keys(records: &[Record]) -> Vec<&str> {
    records.iter().map(|record| record.key.as_str()).collect()
}

fn list_prefix(prefix: &str, limit: u64, offset: u64) -> ListOptions {
    ListOptions { prefix: prefix.into(), suffix: String::new(), limit, offset }
}

async fn write_all(store: &dyn Store, db: &str, table: &str, keys: &[&str]) {
    for key in keys {
        store
            .write(db, table, Record::new(*key, format!("value of {key}")))
            .await
            .unwrap_or_else(|err| panic!("writing {key:?} to {db}/{table}: {err}"));
    }
}

async fn read_one(store: &dyn Store, db: &str, table: &str, key: &str) -> Record {
    let mut records = store
        .read(db, table, key, exact())
        .await
        .unwrap_or_else(|err| panic!("reading {key:?} in {db}/{table}: {err}"));
    assert_eq!(records.len(), 1, "an exact read of {key:?} returns one record: {records:?}");
    records.remove(0)
}

async fn assert_not_found(store: &dyn Store, db: &str, table: &str, key: &str) {
    match store.read(db, table, key, exact()).await {
        Err(StoreError::NotFound) => {}
        other => panic!("reading {key:?} in {db}/{table}: expected NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: Debug>(result: Result<T>, mentions: &str, what: &str) {
    match result {
        Err(StoreError::Invalid(message)) => {
            assert!(
                message.contains(mentions),
                "{what}: the message {message:?} should mention {mentions:?}"
            );
            assert!(
                message.chars().next().is_some_and(|c| !c.is_uppercase()) && !message.ends_with('.'),
                "{what}: messages are lowercase without a trailing period: {message:?}"
            );
        }
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

/// Write then exact read returns the record; a missing key is NotFound; empty values work.
pub async fn write_read_exact(store: &dyn Store, db: &str) {
    let record = Record::new("greeting", "hello world");
    store.write(db, TABLE, record.clone()).await.expect("write");
    assert_eq!(read_one(store, db, TABLE, "greeting").await, record, "exact read returns what was written");

    assert_not_found(store, db, TABLE, "missing").await;
    assert_not_found(store, db, TABLE, "greeting-not").await;
    assert_not_found(store, db, TABLE, "greet").await;
    assert_not_found(store, &format!("{db}-never"), TABLE, "greeting").await;

    store.write(db, TABLE, Record::new("empty", Vec::<u8>::new())).await.expect("write an empty value");
    assert!(read_one(store, db, TABLE, "empty").await.value.is_empty());

    let binary: Vec<u8> = (0..=255).collect();
    store.write(db, TABLE, Record::new("binary", binary.clone())).await.expect("write binary");
    assert_eq!(read_one(store, db, TABLE, "binary").await.value, binary, "values are opaque bytes");
}

/// A write replaces the whole record: value, metadata and expiry.
pub async fn overwrite_replaces(store: &dyn Store, db: &str) {
    let first = Record::new("k", "first")
        .with_metadata("a", Field::new("string", "1"))
        .with_metadata("shared", Field::new("int", "1"))
        .with_expiry(Duration::from_secs(3600));
    store.write(db, TABLE, first).await.expect("first write");
    assert!(read_one(store, db, TABLE, "k").await.expiry.is_some());

    let second = Record::new("k", "second").with_metadata("shared", Field::new("string", "2"));
    store.write(db, TABLE, second.clone()).await.expect("second write");
    let read = read_one(store, db, TABLE, "k").await;
    assert_eq!(read, second, "no merge: old metadata and expiry are gone");
    assert_eq!(store.list(db, TABLE, ListOptions::default()).await.expect("list"), ["k"], "still one record");
}

/// Delete removes; deleting a missing key (or in a missing table) is Ok.
pub async fn delete(store: &dyn Store, db: &str) {
    write_all(store, db, TABLE, &["a", "b"]).await;
    store.delete(db, TABLE, "a").await.expect("delete");
    assert_not_found(store, db, TABLE, "a").await;
    assert_eq!(store.list(db, TABLE, ListOptions::default()).await.expect("list"), ["b"]);
    assert!(store.read(db, TABLE, "a", prefix(0, 0)).await.expect("prefix read").is_empty());

    store.delete(db, TABLE, "a").await.expect("deleting again is Ok");
    store.delete(db, TABLE, "never-written").await.expect("deleting a missing key is Ok");
    store.delete(db, "no-such-table", "a").await.expect("deleting in a missing table is Ok");
    store.delete(&format!("{db}-never"), TABLE, "a").await.expect("deleting in a missing database is Ok");

    store.write(db, TABLE, Record::new("a", "again")).await.expect("write after delete");
    assert_eq!(read_one(store, db, TABLE, "a").await.value, b"again");
}

/// Metadata comes back exactly as written, from exact and prefix reads.
pub async fn metadata_round_trip(store: &dyn Store, db: &str) {
    let metadata: BTreeMap<String, Field> = [
        ("content-type", Field::new("string", "application/json")),
        ("count", Field::new("int64", "42")),
        ("empty", Field::new("", "")),
        ("ünïcode ✓", Field::new("string", "värde ✓")),
    ]
    .into_iter()
    .map(|(name, field)| (name.to_string(), field))
    .collect();
    let record = Record { metadata: metadata.clone(), ..Record::new("with-metadata", "v") };
    store.write(db, TABLE, record).await.expect("write");

    assert_eq!(read_one(store, db, TABLE, "with-metadata").await.metadata, metadata);
    let found = store.read(db, TABLE, "with", prefix(0, 0)).await.expect("prefix read");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].metadata, metadata, "prefix reads return metadata too");
}

/// Results come in byte-lexicographic key order; a prefix read returns exactly the keys with
/// that prefix, and nothing (not an error) when none match.
pub async fn ordering_and_prefix(store: &dyn Store, db: &str) {
    // Written out of order; 'B' < 'Z' < 'a' < 'b' < 'é' (0xC3 0xA9) in bytes.
    write_all(store, db, TABLE, &["ab", "aé", "B", "a", "a0", "aZ", "b", "a/x"]).await;
    let all = store.list(db, TABLE, ListOptions::default()).await.expect("list");
    assert_eq!(all, ["B", "a", "a/x", "a0", "aZ", "ab", "aé", "b"], "byte order, not locale order");

    let found = store.read(db, TABLE, "a", prefix(0, 0)).await.expect("prefix read");
    assert_eq!(keys(&found), ["a", "a/x", "a0", "aZ", "ab", "aé"]);
    for record in &found {
        assert_eq!(
            record.value,
            format!("value of {}", record.key).into_bytes(),
            "prefix reads return values"
        );
    }

    let everything = store.read(db, TABLE, "", prefix(0, 0)).await.expect("empty prefix");
    assert_eq!(keys(&everything), ["B", "a", "a/x", "a0", "aZ", "ab", "aé", "b"]);

    assert_eq!(
        store.read(db, TABLE, "zzz", prefix(0, 0)).await.expect("no match"),
        vec![],
        "empty is not an error"
    );
    assert_eq!(store.read(db, "empty-table", "", prefix(0, 0)).await.expect("empty table"), vec![]);
    assert_eq!(
        store.list(db, "empty-table", ListOptions::default()).await.expect("empty table"),
        Vec::<String>::new()
    );
}

/// A suffix read and a suffix list keep keys ending with the pattern.
pub async fn suffix(store: &dyn Store, db: &str) {
    write_all(store, db, TABLE, &["foo.txt", "bar.txt", "baz.md", "txt", "x.txt.md"]).await;
    let suffix = ReadOptions { suffix: true, ..Default::default() };
    let found = store.read(db, TABLE, ".txt", suffix).await.expect("suffix read");
    assert_eq!(keys(&found), ["bar.txt", "foo.txt"]);

    let listed = ListOptions { suffix: "txt".into(), ..Default::default() };
    assert_eq!(store.list(db, TABLE, listed).await.expect("list"), ["bar.txt", "foo.txt", "txt"]);

    let paged = ReadOptions { suffix: true, limit: 1, offset: 1, ..Default::default() };
    assert_eq!(keys(&store.read(db, TABLE, ".txt", paged).await.expect("paged")), ["foo.txt"]);
    assert_eq!(store.read(db, TABLE, ".rs", suffix).await.expect("no match"), vec![]);
}

/// Prefix and suffix together mean both (docs/compatibility.md §5: `foo` over three keys → 1).
pub async fn prefix_and_suffix(store: &dyn Store, db: &str) {
    write_all(store, db, TABLE, &["foofoobarbar", "foofoo", "barbar"]).await;
    let both = ReadOptions { prefix: true, suffix: true, ..Default::default() };
    assert_eq!(keys(&store.read(db, TABLE, "foo", both).await.expect("read")), ["foofoo"]);

    let listed = ListOptions { prefix: "foo".into(), suffix: "foo".into(), ..Default::default() };
    assert_eq!(store.list(db, TABLE, listed).await.expect("list"), ["foofoo"]);
    let listed = ListOptions { prefix: "foo".into(), suffix: "bar".into(), ..Default::default() };
    assert_eq!(store.list(db, TABLE, listed).await.expect("list"), ["foofoobarbar"]);
}

/// Offset then limit on reads (docs/compatibility.md §5: `a*` limit 5, then offset 5 limit 30 → 5 + 5),
/// and offset really is an offset: the pages are consecutive and disjoint.
pub async fn read_paging(store: &dyn Store, db: &str) {
    let names: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let mut written: Vec<&str> = names.iter().map(String::as_str).collect();
    written.reverse();
    written.extend(["b0", "Z9"]);
    write_all(store, db, TABLE, &written).await;

    let first = store.read(db, TABLE, "a", prefix(5, 0)).await.expect("first page");
    assert_eq!(keys(&first), ["a0", "a1", "a2", "a3", "a4"]);
    let second = store.read(db, TABLE, "a", prefix(30, 5)).await.expect("second page");
    assert_eq!(keys(&second), ["a5", "a6", "a7", "a8", "a9"]);

    assert_eq!(keys(&store.read(db, TABLE, "a", prefix(2, 3)).await.expect("middle")), ["a3", "a4"]);
    assert_eq!(keys(&store.read(db, TABLE, "a", prefix(0, 8)).await.expect("tail")), ["a8", "a9"]);
    assert_eq!(store.read(db, TABLE, "a", prefix(0, 10)).await.expect("past the end"), vec![]);
    assert_eq!(store.read(db, TABLE, "a", prefix(0, u64::MAX)).await.expect("huge offset"), vec![]);
    assert_eq!(store.read(db, TABLE, "a", prefix(u64::MAX, 0)).await.expect("huge limit").len(), 10);
}

/// A read with a byte budget stops after the record that spends it, so a page always makes
/// progress, and paging on with `offset` reads the rest; `limit` still applies.
pub async fn read_byte_budget(store: &dyn Store, db: &str) {
    // 40 records of 100 bytes: more than one internal page of any backend.
    for i in 0..40 {
        let record = Record::new(format!("r{i:02}"), vec![b'x'; 100]);
        store.write(db, TABLE, record).await.expect("write");
    }
    let budget = |max_bytes, limit, offset| ReadOptions {
        prefix: true,
        limit,
        offset,
        max_bytes,
        ..ReadOptions::default()
    };
    let first = store.read(db, TABLE, "r", budget(2050, 0, 0)).await.expect("budgeted read");
    assert_eq!(first.len(), 21, "20 records are 2000 bytes; the 21st crosses the budget");
    assert_eq!(keys(&first)[..2], ["r00", "r01"]);
    let rest = store.read(db, TABLE, "r", budget(1_000_000, 0, 21)).await.expect("the next page");
    assert_eq!(rest.len(), 19);
    assert_eq!(rest[0].key, "r21");
    let tiny = store.read(db, TABLE, "r", budget(1, 0, 5)).await.expect("a one-byte budget");
    assert_eq!(keys(&tiny), ["r05"], "a page holds at least one record");
    let limited = store.read(db, TABLE, "r", budget(1_000_000, 3, 0)).await.expect("limit and budget");
    assert_eq!(keys(&limited), ["r00", "r01", "r02"]);
}

/// Offset then limit on lists (docs/compatibility.md §5: 10 keys → 10, limit 5 → 5, offset 6 → 4,
/// offset 6 + limit 2 → 2).
pub async fn list_paging(store: &dyn Store, db: &str) {
    let names: Vec<String> = (0..10).map(|i| format!("List{i}")).collect();
    let written: Vec<&str> = names.iter().map(String::as_str).chain(["Lis", "Other", "list0"]).collect();
    write_all(store, db, TABLE, &written).await;

    let all = store.list(db, TABLE, list_prefix("List", 0, 0)).await.expect("list");
    assert_eq!(all, names, "10 keys with the prefix, in order");
    assert_eq!(store.list(db, TABLE, list_prefix("List", 5, 0)).await.expect("limit"), names[..5]);
    assert_eq!(store.list(db, TABLE, list_prefix("List", 0, 6)).await.expect("offset"), names[6..]);
    assert_eq!(store.list(db, TABLE, list_prefix("List", 2, 6)).await.expect("both"), ["List6", "List7"]);
    assert_eq!(
        store.list(db, TABLE, list_prefix("List", 0, 10)).await.expect("past the end"),
        Vec::<String>::new()
    );

    let everything = store.list(db, TABLE, ListOptions::default()).await.expect("no filter");
    assert_eq!(everything.len(), 13);
    assert_eq!(everything.first().map(String::as_str), Some("Lis"));
    assert_eq!(everything.last().map(String::as_str), Some("list0"));
}

/// The same key in another table or database is an independent record.
pub async fn isolation(store: &dyn Store, db: &str) {
    let other_db = format!("{db}-other");
    let places = [(db, "one"), (db, "two"), (other_db.as_str(), "one")];
    for (i, (database, table)) in places.iter().enumerate() {
        store.write(database, table, Record::new("key", format!("value {i}"))).await.expect("write");
    }
    for (i, (database, table)) in places.iter().enumerate() {
        assert_eq!(read_one(store, database, table, "key").await.value, format!("value {i}").into_bytes());
    }

    store.delete(db, "one", "key").await.expect("delete");
    assert_not_found(store, db, "one", "key").await;
    assert_eq!(read_one(store, db, "two", "key").await.value, b"value 1", "other tables are untouched");
    assert_eq!(
        read_one(store, &other_db, "one", "key").await.value,
        b"value 2",
        "other databases are untouched"
    );

    // Scans do not run into the neighbouring table or database (names share a prefix).
    store.write(db, "on", Record::new("key-on", "v")).await.expect("write");
    store.write(db, "one0", Record::new("key-one0", "v")).await.expect("write");
    assert_eq!(store.list(db, "two", ListOptions::default()).await.expect("list"), ["key"]);
    assert_eq!(store.list(db, "on", ListOptions::default()).await.expect("list"), ["key-on"]);
    assert_eq!(keys(&store.read(db, "one0", "", prefix(0, 0)).await.expect("read")), ["key-one0"]);
    assert_eq!(store.list(db, "one", ListOptions::default()).await.expect("list"), Vec::<String>::new());
}

/// Databases and tables are listed sorted, once each, from their first write on, and stay
/// listed when their records are gone.
pub async fn databases_and_tables(store: &dyn Store, db: &str) {
    let second = format!("{db}-b");
    store.write(db, "zeta", Record::new("k", "v")).await.expect("write");
    store.write(db, "alpha", Record::new("k", "v")).await.expect("write");
    store.write(db, "alpha", Record::new("k2", "v")).await.expect("write");
    store.write(&second, "only", Record::new("k", "v")).await.expect("write");

    let databases = store.databases().await.expect("databases");
    assert!(databases.windows(2).all(|pair| pair[0] < pair[1]), "sorted without duplicates: {databases:?}");
    for expected in [db, second.as_str()] {
        assert!(databases.iter().any(|name| name == expected), "{expected} in {databases:?}");
    }
    assert!(!databases.iter().any(|name| name == &format!("{db}-never")), "only written databases");

    assert_eq!(store.tables(db).await.expect("tables"), ["alpha", "zeta"]);
    assert_eq!(store.tables(&second).await.expect("tables"), ["only"]);
    assert_eq!(store.tables(&format!("{db}-never")).await.expect("unknown database"), Vec::<String>::new());

    store.delete(db, "zeta", "k").await.expect("delete");
    assert_eq!(store.tables(db).await.expect("tables"), ["alpha", "zeta"], "tables outlive their records");
}

/// Expired records are invisible at once to reads and lists, do not count towards offsets,
/// report their remaining TTL while live, and are removed (and counted) by `sweep_expired`.
/// Rewriting a record without a TTL makes it permanent again, and vice versa.
pub async fn expiry(store: &dyn Store, db: &str) {
    const TTL: Duration = Duration::from_millis(300);
    // Clear anything already expired so the sweep count below is ours alone.
    store.sweep_expired().await.expect("initial sweep");

    let start = Instant::now();
    store.write(db, TABLE, Record::new("expiring", "v").with_expiry(TTL)).await.expect("write");
    store.write(db, TABLE, Record::new("kept", "v")).await.expect("write");
    store.write(db, TABLE, Record::new("made-permanent", "v1").with_expiry(TTL)).await.expect("write");
    store.write(db, TABLE, Record::new("made-permanent", "v2")).await.expect("write");
    store.write(db, TABLE, Record::new("made-expiring", "v1")).await.expect("write");
    store.write(db, TABLE, Record::new("made-expiring", "v2").with_expiry(TTL)).await.expect("write");
    store.write(db, TABLE, Record::new("deleted", "v").with_expiry(TTL)).await.expect("write");
    store.delete(db, TABLE, "deleted").await.expect("delete");
    store
        .write(db, TABLE, Record::new("long", "v").with_expiry(Duration::from_secs(3600)))
        .await
        .expect("write");
    let all_expired_at = Instant::now() + TTL;

    // Readable with its remaining TTL until it expires. Only a lower bound on time is sound:
    // on a slow machine the TTL may already have passed, which is then not a failure.
    match store.read(db, TABLE, "expiring", exact()).await {
        Ok(records) => {
            let left = records[0].expiry.expect("a record written with a TTL reports one");
            assert!(!left.is_zero() && left <= TTL, "remaining TTL {left:?} within (0, {TTL:?}]");
        }
        Err(StoreError::NotFound) => assert!(start.elapsed() >= TTL, "expired before its TTL"),
        Err(err) => panic!("reading a live record: {err}"),
    }
    let long = read_one(store, db, TABLE, "long").await.expiry.expect("TTL reported");
    assert!(long > Duration::from_secs(3000) && long <= Duration::from_secs(3600), "{long:?}");

    tokio::time::sleep_until((all_expired_at + Duration::from_millis(50)).into()).await;

    let visible = |what: &'static str| async move {
        assert_not_found(store, db, TABLE, "expiring").await;
        assert_not_found(store, db, TABLE, "made-expiring").await;
        assert_eq!(read_one(store, db, TABLE, "made-permanent").await.expiry, None, "{what}");
        assert_eq!(read_one(store, db, TABLE, "made-permanent").await.value, b"v2", "{what}");
        assert!(read_one(store, db, TABLE, "long").await.expiry.is_some(), "{what}");
        let listed = store.list(db, TABLE, ListOptions::default()).await.expect("list");
        assert_eq!(listed, ["kept", "long", "made-permanent"], "{what}: lists skip expired records");
        let read = store.read(db, TABLE, "", prefix(0, 0)).await.expect("prefix read");
        assert_eq!(
            keys(&read),
            ["kept", "long", "made-permanent"],
            "{what}: prefix reads skip expired records"
        );
        let page = store.read(db, TABLE, "", prefix(1, 0)).await.expect("paged read");
        assert_eq!(keys(&page), ["kept"], "{what}: expired records do not count towards offset or limit");
        let page = store.list(db, TABLE, list_prefix("", 1, 1)).await.expect("paged list");
        assert_eq!(page, ["long"], "{what}: expired records do not count towards offset or limit");
        let made = store.read(db, TABLE, "made-", prefix(0, 0)).await.expect("prefix read");
        assert_eq!(keys(&made), ["made-permanent"], "{what}");
    };
    visible("before the sweep").await;

    assert_eq!(
        store.sweep_expired().await.expect("sweep"),
        2,
        "the sweep removes exactly the two expired records"
    );
    assert_eq!(store.sweep_expired().await.expect("second sweep"), 0, "nothing left to sweep");
    visible("after the sweep").await;

    store.write(db, TABLE, Record::new("expiring", "back")).await.expect("rewrite a swept key");
    assert_eq!(read_one(store, db, TABLE, "expiring").await.value, b"back");
}

/// Every limit of [`crate::validate`] is enforced, with a message naming it, and a rejected
/// write changes nothing.
pub async fn validation(store: &dyn Store, db: &str) {
    let record = || Record::new("k", "v");
    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    let max = MAX_NAME_BYTES.to_string();

    // Database and table names, on every operation that takes them.
    for (database, table, mentions) in [
        ("", TABLE, "database name must not be empty"),
        (db, "", "table name must not be empty"),
        (long_name.as_str(), TABLE, max.as_str()),
        (db, long_name.as_str(), max.as_str()),
        ("a/b", TABLE, "database name"),
        (db, "a b", "table name"),
        (db, "..", "table name"),
        ("ünï", TABLE, "database name"),
    ] {
        let what = format!("location {database:?}/{table:?}");
        assert_invalid(store.write(database, table, record()).await, mentions, &format!("write at {what}"));
        assert_invalid(store.read(database, table, "k", exact()).await, mentions, &format!("read at {what}"));
        assert_invalid(
            store.read(database, table, "k", prefix(0, 0)).await,
            mentions,
            &format!("prefix read at {what}"),
        );
        assert_invalid(store.delete(database, table, "k").await, mentions, &format!("delete at {what}"));
        assert_invalid(
            store.list(database, table, ListOptions::default()).await,
            mentions,
            &format!("list at {what}"),
        );
        if table == TABLE {
            assert_invalid(store.tables(database).await, mentions, &format!("tables of {database:?}"));
        }
    }
    let mut longest_name = format!("{db}-");
    longest_name.extend(std::iter::repeat_n('n', MAX_NAME_BYTES.saturating_sub(longest_name.len())));
    assert_eq!(longest_name.len(), MAX_NAME_BYTES, "the case's database name leaves room to pad");
    store.write(&longest_name, &longest_name, record()).await.expect("names of exactly the limit are fine");
    store.write(db, "Mixed_Case-1.2", record()).await.expect("letters, digits, '_', '.' and '-' are fine");

    // Keys.
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let max_key = MAX_KEY_BYTES.to_string();
    assert_invalid(
        store.write(db, TABLE, Record::new("", "v")).await,
        "key must not be empty",
        "write of an empty key",
    );
    assert_invalid(
        store.read(db, TABLE, "", exact()).await,
        "key must not be empty",
        "exact read of an empty key",
    );
    assert_invalid(store.delete(db, TABLE, "").await, "key must not be empty", "delete of an empty key");
    assert_invalid(
        store.write(db, TABLE, Record::new(long_key.clone(), "v")).await,
        &max_key,
        "write of a long key",
    );
    assert_invalid(store.read(db, TABLE, &long_key, exact()).await, &max_key, "read of a long key");
    assert_invalid(
        store.read(db, TABLE, &long_key, prefix(0, 0)).await,
        &max_key,
        "prefix read of a long pattern",
    );
    assert_invalid(store.delete(db, TABLE, &long_key).await, &max_key, "delete of a long key");
    assert_invalid(
        store.list(db, TABLE, list_prefix(&long_key, 0, 0)).await,
        &max_key,
        "list of a long prefix",
    );
    let long_suffix = ListOptions { suffix: long_key.clone(), ..Default::default() };
    assert_invalid(store.list(db, TABLE, long_suffix).await, &max_key, "list of a long suffix");
    assert_invalid(store.write(db, TABLE, Record::new("a\0b", "v")).await, "NUL", "write of a key with NUL");
    let longest_key = "k".repeat(MAX_KEY_BYTES);
    store
        .write(db, TABLE, Record::new(longest_key.clone(), "v"))
        .await
        .expect("a key of exactly the limit is fine");
    assert_eq!(read_one(store, db, TABLE, &longest_key).await.key, longest_key);

    // Values and metadata; a rejected overwrite leaves the old record.
    store.write(db, TABLE, Record::new("kept", "original")).await.expect("write");
    let too_big = Record::new("kept", vec![7u8; MAX_VALUE_BYTES + 1]);
    assert_invalid(
        store.write(db, TABLE, too_big).await,
        &MAX_VALUE_BYTES.to_string(),
        "write of a large value",
    );
    let metadata = Field::new("string", "x".repeat(MAX_METADATA_BYTES));
    let too_much = Record::new("kept", "new").with_metadata("m", metadata);
    assert_invalid(
        store.write(db, TABLE, too_much).await,
        &MAX_METADATA_BYTES.to_string(),
        "write of large metadata",
    );
    let nul = Record::new("kept", "new").with_metadata("m", Field::new("string", "a\0"));
    assert_invalid(store.write(db, TABLE, nul).await, "NUL", "write of metadata with NUL");
    assert_eq!(
        read_one(store, db, TABLE, "kept").await.value,
        b"original",
        "a rejected write changes nothing"
    );

    let largest = Record::new("largest", vec![7u8; MAX_VALUE_BYTES]).with_metadata(
        "m",
        Field::new("string", "x".repeat(MAX_METADATA_BYTES - "m".len() - "string".len())),
    );
    store.write(db, TABLE, largest.clone()).await.expect("a record of exactly the limits is fine");
    assert_eq!(read_one(store, db, TABLE, "largest").await, largest);
}
