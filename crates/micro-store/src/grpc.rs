//! The `store.Store` gRPC service (docs/compatibility.md §3.3) over any [`Store`].
//!
//! - **Database and table.** `options.database` when set, else the request [`Context`]'s
//!   namespace (inserted by the server's interceptor; `micro` without one); `options.table`
//!   when set, else [`DEFAULT_TABLE`]. A caller whose context is in a namespace other than
//!   `micro` may only use its own namespace's database.
//! - **Expiry on the wire.** On write `expiry_ms` wins when above zero, else `expiry` (whole
//!   seconds); zero or negative means never. On read both are filled with the remaining TTL,
//!   rounded up so a live record never shows 0.
//! - **Errors** become [`Status`] in one place, `From<StoreError> for Status`: not found →
//!   `NOT_FOUND "not found"`, bad input → `INVALID_ARGUMENT` with the limit, anything else →
//!   `UNAVAILABLE`/`INTERNAL` with a message that names no internals (the cause is logged).

use std::sync::Arc;

use micro_core::Context;
use micro_proto::store::store_server::{self, StoreServer};
use micro_proto::store::{
    DatabasesRequest, DatabasesResponse, DeleteRequest, DeleteResponse, Field as WireField, ListRequest,
    ListResponse, ReadRequest, ReadResponse, Record as WireRecord, TablesRequest, TablesResponse,
    WriteRequest, WriteResponse,
};
use tonic::{Request, Response, Status};

use crate::{Field, ListOptions, ReadOptions, Record, Store, StoreError};

/// The table used when a request names none.
pub const DEFAULT_TABLE: &str = "micro";

/// The gRPC face of a [`Store`].
#[derive(Clone)]
pub struct StoreService {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreService").field("store", &self.store.summary()).finish()
    }
}

impl StoreService {
    /// Serves `store` over gRPC.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// The ready-to-mount tonic server for `store`.
pub fn server(store: Arc<dyn Store>) -> StoreServer<StoreService> {
    StoreServer::new(StoreService::new(store))
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Status::not_found("not found"),
            StoreError::Invalid(message) => Status::invalid_argument(message),
            StoreError::Unavailable(cause) => {
                tracing::error!(%cause, "store unavailable");
                Status::unavailable("the store is unavailable; see the server log")
            }
            StoreError::Internal(cause) => {
                tracing::error!(%cause, "store failed");
                Status::internal("the store failed; see the server log")
            }
        }
    }
}

/// The database and table a request acts on.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn location<T>(request: &Request<T>, database: &str, table: &str) -> Result<(String, String), Status> {
    let database = database_for(request, database)?;
    let table = if table.is_empty() { DEFAULT_TABLE.to_string() } else { table.to_string() };
    Ok((database, table))
}

/// The database a request acts on: the one it names, else its context's namespace; the caller
/// must be authorised for it (docs/compatibility.md §6.6).
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn database_for<T>(request: &Request<T>, requested: &str) -> Result<String, Status> {
    let context = context(request);
    let database = if requested.is_empty() { context.namespace.clone() } else { requested.to_string() };
    if database.starts_with(crate::RESERVED_PREFIX) {
        return Err(Status::permission_denied(format!(
            "database {database:?} is reserved for the platform (names starting with {:?})",
            crate::RESERVED_PREFIX
        )));
    }
    context.authorize(&database).map_err(Status::from)?;
    Ok(database)
}

fn context<T>(request: &Request<T>) -> Context {
    request.extensions().get::<Context>().cloned().unwrap_or_default()
}

fn record_from_wire(record: WireRecord) -> Record {
    let expiry = record.ttl();
    Record {
        key: record.key,
        value: record.value,
        metadata: record
            .metadata
            .into_iter()
            .map(|(name, field)| (name, Field { kind: field.r#type, value: field.value }))
            .collect(),
        expiry,
    }
}

fn record_to_wire(record: Record) -> WireRecord {
    let (expiry, expiry_ms) = match record.expiry {
        Some(left) => {
            let secs = left.as_nanos().div_ceil(1_000_000_000);
            let millis = left.as_nanos().div_ceil(1_000_000);
            (saturating_i64(secs), saturating_i64(millis))
        }
        None => (0, 0),
    };
    WireRecord {
        key: record.key,
        value: record.value,
        expiry,
        metadata: record
            .metadata
            .into_iter()
            .map(|(name, field)| (name, WireField { r#type: field.kind, value: field.value }))
            .collect(),
        expiry_ms,
    }
}

/// A client's `limit` (0 = as many as there are) within the server's `cap`.
fn capped(limit: u64, cap: u64) -> u64 {
    if limit == 0 { cap } else { limit.min(cap) }
}

fn saturating_i64(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl store_server::Store for StoreService {
    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let options = request.get_ref().options.clone().unwrap_or_default();
        let (database, table) = location(&request, &options.database, &options.table)?;
        let read = ReadOptions {
            prefix: options.prefix,
            suffix: options.suffix,
            limit: capped(options.limit, crate::MAX_READ_RECORDS),
            offset: options.offset,
            max_bytes: crate::MAX_READ_BYTES,
        };
        let records = self.store.read(&database, &table, &request.get_ref().key, read).await?;
        Ok(Response::new(ReadResponse { records: records.into_iter().map(record_to_wire).collect() }))
    }

    async fn write(&self, request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let options = request.get_ref().options.clone().unwrap_or_default();
        let (database, table) = location(&request, &options.database, &options.table)?;
        let record =
            request.into_inner().record.ok_or_else(|| Status::invalid_argument("record is required"))?;
        self.store.write(&database, &table, record_from_wire(record)).await?;
        Ok(Response::new(WriteResponse {}))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let options = request.get_ref().options.clone().unwrap_or_default();
        let (database, table) = location(&request, &options.database, &options.table)?;
        self.store.delete(&database, &table, &request.get_ref().key).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    type ListStream = tokio_stream::Once<Result<ListResponse, Status>>;

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        let (database, table, options) = {
            let wire = request.get_ref().options.clone().unwrap_or_default();
            let (database, table) = location(&request, &wire.database, &wire.table)?;
            let options = ListOptions {
                prefix: wire.prefix,
                suffix: wire.suffix,
                limit: capped(wire.limit, crate::MAX_LIST_KEYS),
                offset: wire.offset,
            };
            (database, table, options)
        };
        let keys = self.store.list(&database, &table, options).await?;
        // The original sends every key in one message; clients expect exactly that.
        Ok(Response::new(tokio_stream::once(Ok(ListResponse { keys }))))
    }

    async fn databases(
        &self,
        request: Request<DatabasesRequest>,
    ) -> Result<Response<DatabasesResponse>, Status> {
        let context = context(&request);
        context.authorize(&context.namespace).map_err(Status::from)?;
        let mut databases = self.store.databases().await?;
        databases.retain(|database| {
            !database.starts_with(crate::RESERVED_PREFIX) && context.authorize(database).is_ok()
        });
        Ok(Response::new(DatabasesResponse { databases }))
    }

    async fn tables(&self, request: Request<TablesRequest>) -> Result<Response<TablesResponse>, Status> {
        let database = database_for(&request, &request.get_ref().database)?;
        let tables = self.store.tables(&database).await?;
        Ok(Response::new(TablesResponse { tables }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use micro_proto::store::store_server::Store as _;
    use micro_proto::store::{ListOptions as WireListOptions, ReadOptions as WireReadOptions, WriteOptions};
    use tokio_stream::StreamExt;
    use tonic::Code;

    use super::*;
    use crate::memory::MemoryStore;

    fn in_namespace<T>(message: T, namespace: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(Context::member(namespace));
        request
    }

    /// A request from a `micro` account, as the interceptor hands it over.
    fn admin<T>(message: T) -> Request<T> {
        in_namespace(message, "micro")
    }

    fn wire_record(key: &str, value: &str) -> WireRecord {
        WireRecord { key: key.into(), value: value.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn round_trip_with_defaults_and_expiry() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let service = StoreService::new(store.clone());

        // No context, no options: database `micro`, table `micro`.
        let mut record = wire_record("greeting", "hello");
        record.metadata.insert("lang".into(), WireField { r#type: "string".into(), value: "en".into() });
        record.expiry = 3600;
        service.write(admin(WriteRequest { record: Some(record), options: None })).await.unwrap();
        let stored = store.read("micro", DEFAULT_TABLE, "greeting", ReadOptions::default()).await.unwrap();
        assert_eq!(stored[0].value, b"hello");
        assert!(stored[0].expiry.is_some_and(|left| left <= Duration::from_secs(3600)));

        // expiry_ms wins over expiry.
        let mut short = wire_record("short", "x");
        short.expiry = 3600;
        short.expiry_ms = 1500;
        service.write(admin(WriteRequest { record: Some(short), options: None })).await.unwrap();
        let left = store.read("micro", "micro", "short", ReadOptions::default()).await.unwrap()[0].expiry;
        assert!(left.is_some_and(|left| left <= Duration::from_millis(1500)), "{left:?}");

        let read = |key: &str| ReadRequest { key: key.into(), options: None };
        let response = service.read(admin(read("greeting"))).await.unwrap().into_inner();
        let [record] = response.records.as_slice() else { panic!("one record expected: {response:?}") };
        assert_eq!(record.value, b"hello");
        assert_eq!(record.metadata["lang"], WireField { r#type: "string".into(), value: "en".into() });
        assert!((1..=3600).contains(&record.expiry), "whole seconds, rounded up: {}", record.expiry);
        assert!((1..=3_600_000).contains(&record.expiry_ms));

        let short = service.read(admin(read("short"))).await.unwrap().into_inner();
        assert!((1..=2).contains(&short.records[0].expiry), "{:?}", short.records[0]);
        assert!((1..=1500).contains(&short.records[0].expiry_ms), "{:?}", short.records[0]);

        let missing = service.read(admin(read("missing"))).await.unwrap_err();
        assert_eq!((missing.code(), missing.message()), (Code::NotFound, "not found"));

        let no_record = service.write(admin(WriteRequest::default())).await.unwrap_err();
        assert_eq!(no_record.code(), Code::InvalidArgument);

        service.delete(admin(DeleteRequest { key: "greeting".into(), options: None })).await.unwrap();
        assert_eq!(service.read(admin(read("greeting"))).await.unwrap_err().code(), Code::NotFound);
    }

    #[tokio::test]
    async fn the_platforms_database_is_out_of_reach() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store.write(crate::INTERNAL_DATABASE, "keys", Record::new("auth_key", "secret")).await.unwrap();
        store.write("micro", "t", Record::new("k", "v")).await.unwrap();
        let service = StoreService::new(store.clone());
        let internal = || {
            Some(WireReadOptions { database: "_micro".into(), table: "keys".into(), ..Default::default() })
        };
        let read = service.read(admin(ReadRequest { key: "auth_key".into(), options: internal() })).await;
        let denied = read.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "not even for micro accounts");
        assert!(denied.message().contains("reserved for the platform"), "{}", denied.message());
        let options = WriteOptions { database: "_anything".into(), table: "t".into() };
        let write = WriteRequest { record: Some(wire_record("k", "v")), options: Some(options) };
        assert_eq!(service.write(admin(write)).await.unwrap_err().code(), Code::PermissionDenied);
        let databases = service.databases(admin(DatabasesRequest {})).await.unwrap().into_inner();
        assert_eq!(databases.databases, ["micro"], "never listed");
        let tables = TablesRequest { database: "_micro".into() };
        assert_eq!(service.tables(admin(tables)).await.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(
            store.read("_micro", "keys", "auth_key", ReadOptions::default()).await.unwrap()[0].value,
            b"secret"
        );
    }

    #[tokio::test]
    async fn anonymous_callers_need_an_account() {
        let service = StoreService::new(Arc::new(MemoryStore::new()));
        let request =
            tonic::Request::new(WriteRequest { record: Some(wire_record("k", "v")), options: None });
        let denied = service.write(request).await.unwrap_err();
        assert_eq!((denied.code(), denied.message()), (Code::Unauthenticated, "An account is required"));
        let anonymous = tonic::Request::new(DatabasesRequest {});
        assert_eq!(service.databases(anonymous).await.unwrap_err().code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn namespaces_tables_list_and_errors() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let service = StoreService::new(store.clone());

        // The context's namespace is the database; options.table picks the table.
        for key in ["b", "a", "c", "x"] {
            let options = WriteOptions { database: String::new(), table: "users".into() };
            let request = WriteRequest { record: Some(wire_record(key, "v")), options: Some(options) };
            service.write(in_namespace(request, "team")).await.unwrap();
        }
        assert_eq!(store.list("team", "users", ListOptions::default()).await.unwrap(), ["a", "b", "c", "x"]);

        let list = ListRequest {
            options: Some(WireListOptions {
                table: "users".into(),
                limit: 2,
                offset: 1,
                ..Default::default()
            }),
        };
        let mut stream = service.list(in_namespace(list, "team")).await.unwrap().into_inner();
        assert_eq!(stream.next().await.unwrap().unwrap().keys, ["b", "c"]);
        assert!(stream.next().await.is_none(), "exactly one ListResponse");

        let prefix = ReadRequest {
            key: String::new(),
            options: Some(WireReadOptions { table: "users".into(), prefix: true, ..Default::default() }),
        };
        let found = service.read(in_namespace(prefix, "team")).await.unwrap().into_inner();
        assert_eq!(found.records.len(), 4);

        // Another namespace may not reach into `team`; `micro` may.
        let foreign = TablesRequest { database: "team".into() };
        let denied = service.tables(in_namespace(foreign.clone(), "other")).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let tables = service.tables(in_namespace(foreign, "micro")).await.unwrap().into_inner();
        assert_eq!(tables.tables, ["users"]);
        let own = service.tables(in_namespace(TablesRequest::default(), "team")).await.unwrap().into_inner();
        assert_eq!(own.tables, ["users"]);

        store.write("micro", "micro", Record::new("k", "v")).await.unwrap();
        let all = service.databases(in_namespace(DatabasesRequest {}, "micro")).await.unwrap().into_inner();
        assert_eq!(all.databases, ["micro", "team"]);
        let scoped = service.databases(in_namespace(DatabasesRequest {}, "team")).await.unwrap().into_inner();
        assert_eq!(scoped.databases, ["team"]);

        // Validation reaches the wire as INVALID_ARGUMENT naming the limit.
        let long_key = WriteRequest {
            record: Some(wire_record(&"k".repeat(crate::MAX_KEY_BYTES + 1), "v")),
            options: None,
        };
        let invalid = service.write(admin(long_key)).await.unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(invalid.message().contains("1024"), "{}", invalid.message());
        let bad_table = DeleteRequest {
            key: "k".into(),
            options: Some(micro_proto::store::DeleteOptions { database: String::new(), table: "a/b".into() }),
        };
        assert_eq!(service.delete(admin(bad_table)).await.unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn expiry_on_the_wire_rounds_up() {
        let wire = |left: Option<Duration>| {
            let record = record_to_wire(Record { expiry: left, ..Record::new("k", "v") });
            (record.expiry, record.expiry_ms)
        };
        assert_eq!(wire(None), (0, 0));
        assert_eq!(wire(Some(Duration::from_millis(1500))), (2, 1500));
        assert_eq!(wire(Some(Duration::from_millis(1))), (1, 1), "a live record never shows 0");
        assert_eq!(wire(Some(Duration::from_secs(5))), (5, 5000));
        assert_eq!(wire(Some(Duration::MAX)), (i64::MAX, i64::MAX));

        let ttl = |expiry: i64, expiry_ms: i64| WireRecord { expiry, expiry_ms, ..Default::default() }.ttl();
        assert_eq!(ttl(0, 0), None);
        assert_eq!(ttl(-5, -5), None, "non-positive means never, as in the original");
        assert_eq!(ttl(5, 0), Some(Duration::from_secs(5)));
        assert_eq!(ttl(5, 250), Some(Duration::from_millis(250)));
    }

    #[test]
    fn internal_errors_leak_nothing() {
        for (err, code) in [
            (StoreError::Internal("/secret/path corrupt".into()), Code::Internal),
            (StoreError::Unavailable("/secret/path i/o".into()), Code::Unavailable),
        ] {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("/secret/path"), "{}", status.message());
        }
        assert_eq!(
            Status::from(StoreError::Invalid("key must not be empty".into())).message(),
            "key must not be empty"
        );
    }

    #[tokio::test]
    async fn reads_and_lists_are_capped_whatever_the_limit() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let service = StoreService::new(store.clone());
        let count = crate::MAX_LIST_KEYS + 5;
        for i in 0..count {
            store.write("team", DEFAULT_TABLE, crate::Record::new(format!("k{i:05}"), "v")).await.unwrap();
        }
        let read = |limit, offset| ReadRequest {
            key: "k".into(),
            options: Some(WireReadOptions { prefix: true, limit, offset, ..Default::default() }),
        };
        let all = service.read(in_namespace(read(0, 0), "team")).await.unwrap().into_inner();
        assert_eq!(all.records.len() as u64, crate::MAX_READ_RECORDS, "limit 0 is the cap, not the table");
        let huge = service.read(in_namespace(read(u64::MAX, 0), "team")).await.unwrap().into_inner();
        assert_eq!(huge.records.len() as u64, crate::MAX_READ_RECORDS);
        let last = service.read(in_namespace(read(0, count - 3), "team")).await.unwrap().into_inner();
        assert_eq!(last.records.len(), 3, "the rest is reached by paging");

        let list = |limit, offset| ListRequest {
            options: Some(WireListOptions { limit, offset, ..Default::default() }),
        };
        let mut stream = service.list(in_namespace(list(0, 0), "team")).await.unwrap().into_inner();
        assert_eq!(stream.next().await.unwrap().unwrap().keys.len() as u64, crate::MAX_LIST_KEYS);
        let mut rest =
            service.list(in_namespace(list(0, crate::MAX_LIST_KEYS), "team")).await.unwrap().into_inner();
        assert_eq!(rest.next().await.unwrap().unwrap().keys.len(), 5);
    }
}
