//! The redb file a previous release wrote still opens, reads and takes writes: an upgrade of
//! micro (or of redb, whose major versions may change the file format) must not lose what was
//! acknowledged before it. `fixtures/store-redb4.redb` was written by micro 0.1.0 on redb 4.6
//! with [`fill`]; `fixture_was_written_by_fill` pins it to that content, so a new format can
//! be added beside it (never a regenerated copy in its place) when the engine changes again.

use std::path::Path;
use std::time::Duration;

use micro_store::file::FileStore;
use micro_store::{Field, ListOptions, ReadOptions, Record, Store};

const FIXTURE: &str = "tests/fixtures/store-redb4.redb";
/// The TTL of the record that expires: long enough to outlive any fixture.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What the fixture holds: two databases, metadata, a TTL.
async fn fill(store: &dyn Store) {
    store.write("micro", "default", Record::new("greeting", "hello")).await.unwrap();
    let with_metadata = Record::new("user/1", "alice").with_metadata("role", Field::new("string", "admin"));
    store.write("micro", "default", with_metadata).await.unwrap();
    store
        .write("micro", "sessions", Record::new("s1", vec![0u8, 1, 2, 255]).with_expiry(CENTURY))
        .await
        .unwrap();
    store.write("foo", "items", Record::new("a", "1")).await.unwrap();
    store.write("foo", "items", Record::new("b", "2")).await.unwrap();
}

/// Everything [`fill`] wrote, read back through `store`.
async fn check(store: &dyn Store) {
    let read = |database: &'static str, table: &'static str, key: &'static str| async move {
        let mut records = store.read(database, table, key, ReadOptions::default()).await.unwrap();
        assert_eq!(records.len(), 1, "{database}/{table}/{key}");
        records.remove(0)
    };
    assert_eq!(read("micro", "default", "greeting").await.value, b"hello");
    let user = read("micro", "default", "user/1").await;
    assert_eq!(user.value, b"alice");
    assert_eq!(user.metadata.get("role"), Some(&Field::new("string", "admin")));
    let session = read("micro", "sessions", "s1").await;
    assert_eq!(session.value, [0u8, 1, 2, 255]);
    let left = session.expiry.expect("the TTL survives");
    assert!(left > Duration::from_secs(50 * 365 * 24 * 3600), "{left:?} left of a century");
    assert_eq!(store.databases().await.unwrap(), ["foo", "micro"]);
    assert_eq!(store.tables("micro").await.unwrap(), ["default", "sessions"]);
    assert_eq!(store.list("foo", "items", ListOptions::default()).await.unwrap(), ["a", "b"]);
}

#[tokio::test]
async fn a_file_written_by_redb_4_opens_reads_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE), &path).unwrap();
    {
        let store = FileStore::open(&path).unwrap();
        check(&store).await;
        store.write("micro", "default", Record::new("after", "upgrade")).await.unwrap();
        store.delete("foo", "items", "a").await.unwrap();
    }
    let store = FileStore::open(&path).unwrap();
    let after = store.read("micro", "default", "after", ReadOptions::default()).await.unwrap();
    assert_eq!(after[0].value, b"upgrade");
    assert_eq!(store.list("foo", "items", ListOptions::default()).await.unwrap(), ["b"]);
}

#[tokio::test]
async fn fixture_was_written_by_fill() {
    // The same content written by this build reads back the same way: `check` is a test of
    // `fill`'s content, not of one file.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(&dir.path().join("store.redb")).unwrap();
    fill(&store).await;
    check(&store).await;
}

/// Writes the fixture (run once, by hand, on the release that is to be pinned:
/// `cargo test -p micro-store --test file_format -- --ignored`). Never overwrite an existing
/// fixture: add one for the new format beside it.
#[tokio::test]
#[ignore = "writes the fixture; run by hand"]
async fn write_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    assert!(!path.exists(), "{FIXTURE} exists: add a new fixture beside it instead");
    let store = FileStore::open(&path).unwrap();
    fill(&store).await;
}
