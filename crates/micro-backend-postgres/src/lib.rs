//! [`PostgresStore`]: the [`micro_store::Store`] contract on PostgreSQL, for servers that share
//! one database (`micro server --store postgres://...`).
//!
//! Layout:
//! - this file: connecting (URL parsing, the connection pool, schema creation), the [`Store`]
//!   implementation and the mapping of PostgreSQL errors to [`StoreError`];
//! - [`mod@sql`]: the schema, every statement, and the key-range arithmetic of prefix scans.
//!
//! Data lives in two tables created on connect (see [`mod@sql`] for the DDL):
//! `micro_store_records` (one row per record, primary key `(database_name, table_name, key)`,
//! all `text COLLATE "C"` so order is byte order) and `micro_store_tables` (every pair ever
//! written). Expiry is absolute unix milliseconds on the database's clock, so servers with
//! skewed clocks still agree on it.
//!
//! Durability: every write is one autocommit statement, acknowledged once PostgreSQL has
//! committed it, which with the default `synchronous_commit = on` means it is in the WAL on
//! disk. Connections are plain TCP (no TLS yet): keep the database on a trusted network.

mod sql;

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use micro_store::{Field, ListOptions, ReadOptions, Record, Result, Store, StoreError, validate};
use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};

use crate::sql::Columns;

/// How long opening one connection may take (TCP connect, startup, authentication), unless the
/// URL sets `connect_timeout`. Also bounds how long `connect` takes to fail on an unreachable
/// server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one operation may wait for PostgreSQL to answer before it fails as
/// [`StoreError::Unavailable`]; its connection is then discarded, since a connection that
/// stopped answering (a network partition, a frozen server) would otherwise be reused.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per store. Each server holds one store, so this is per server.
pub const MAX_CONNECTIONS: usize = 16;

/// How long an operation waits for a free connection when all are busy.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`Store`] in a PostgreSQL database, through a pool of connections that reopens them as
/// needed: when the database goes away, operations fail with [`StoreError::Unavailable`]; when
/// it comes back, they succeed again without a restart.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// `user@host:port/dbname`: where the data is, never the password.
    target: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("target", &self.target).finish_non_exhaustive()
    }
}

/// A record's metadata entry as stored in the `metadata` jsonb column:
/// `{"name": {"type": "...", "value": "..."}}`, the wire's `store.Field` shape.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoredField {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

type Metadata = Json<BTreeMap<String, StoredField>>;

impl PostgresStore {
    /// Runs `statement` (`WRITE` or `CREATE`: `$1` database, `$2` table, `$3` key, `$4` value,
    /// `$5` metadata, `$6` TTL in ms) for `record`; returns the rows it affected.
    async fn put(&self, statement: &'static str, database: &str, table: &str, record: Record) -> Result<u64> {
        validate::write(database, table, &record)?;
        let ttl = sql::ttl_millis(record.expiry);
        let metadata: Metadata = Json(
            record
                .metadata
                .into_iter()
                .map(|(name, field)| (name, StoredField { kind: field.kind, value: field.value }))
                .collect(),
        );
        let (key, value) = (record.key, record.value);
        self.with_client(async |client| {
            let statement = client.prepare_cached(statement).await?;
            client.execute(&statement, &[&database, &table, &key, &value, &metadata, &ttl]).await
        })
        .await
    }

    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or any
    /// form tokio-postgres accepts), checks that it answers and creates the schema if it is
    /// missing. Fails within [`CONNECT_TIMEOUT`] (or the URL's `connect_timeout`) with
    /// [`StoreError::Unavailable`] when the server cannot be reached or refuses the login, and
    /// with [`StoreError::Invalid`] when the URL cannot be parsed or asks for TLS.
    pub async fn connect(url: &str) -> Result<Self> {
        // tokio-postgres's parse errors name the option, never echo the URL (or its password).
        let config = tokio_postgres::Config::from_str(url).map_err(|err| {
            StoreError::Invalid(format!(
                "invalid PostgreSQL URL ({}): use postgres://user:password@host:port/dbname",
                cause(&err)
            ))
        })?;
        Self::connect_with(config).await
    }

    /// [`PostgresStore::connect`] with an already built configuration.
    pub async fn connect_with(mut config: tokio_postgres::Config) -> Result<Self> {
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Invalid(
                "TLS connections to PostgreSQL are not supported yet: remove sslmode=require from the URL"
                    .into(),
            ));
        }
        let target = describe(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("micro");
        }
        let create_timeout = config.get_connect_timeout().copied().unwrap_or(CONNECT_TIMEOUT);
        // `Fast` recycling reuses a pooled connection unless its socket has closed; a server
        // restart closes every socket, so the next operations open fresh connections.
        let manager =
            Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(create_timeout))
            .recycle_timeout(Some(create_timeout))
            .build()
            .map_err(|err| StoreError::Internal(format!("cannot build the PostgreSQL pool: {err}")))?;
        let store = PostgresStore { pool, target };

        let client = store.pool.get().await.map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {}",
                store.target,
                pool_cause(&err)
            ))
        })?;
        store.create_schema(&client).await?;
        Ok(store)
    }

    /// Creates the tables and index unless they all exist (see [`sql::create_schema`]).
    async fn create_schema(&self, client: &ClientWrapper) -> Result<()> {
        let exists: bool = tokio::time::timeout(OPERATION_TIMEOUT, client.query_one(sql::SCHEMA_EXISTS, &[]))
            .await
            .map_err(|_| self.timed_out())?
            .and_then(|row| row.try_get(0))
            .map_err(|err| self.schema_error(&err))?;
        if !exists {
            tokio::time::timeout(OPERATION_TIMEOUT, client.batch_execute(&sql::create_schema()))
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|err| self.schema_error(&err))?;
            tracing::info!(target = %self.target, "created the store schema in PostgreSQL");
        }
        Ok(())
    }

    fn schema_error(&self, err: &tokio_postgres::Error) -> StoreError {
        let cause = cause(err);
        match self.query_error(err) {
            StoreError::Unavailable(_) => {
                StoreError::Unavailable(format!("cannot create the store schema at {}: {cause}", self.target))
            }
            _ => StoreError::Internal(format!(
                "cannot create the store schema at {}: {cause} (the user needs CREATE on the database's schema)",
                self.target
            )),
        }
    }

    /// Runs `op` on a pooled connection within [`OPERATION_TIMEOUT`], mapping its errors.
    async fn with_client<T>(
        &self,
        op: impl AsyncFnOnce(&ClientWrapper) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let client = self.pool.get().await.map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot reach PostgreSQL at {}: {}",
                self.target,
                pool_cause(&err)
            ))
        })?;
        match tokio::time::timeout(OPERATION_TIMEOUT, op(&client)).await {
            Ok(Ok(value)) => Ok(value),
            // A connection that broke is closed by now; the pool drops it on its next checkout.
            Ok(Err(err)) => Err(self.query_error(&err)),
            Err(_) => {
                // Take the connection out of the pool so it is closed rather than reused.
                drop(Object::take(client));
                Err(self.timed_out())
            }
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "PostgreSQL at {} did not answer within {}s",
            self.target,
            OPERATION_TIMEOUT.as_secs()
        ))
    }

    /// Maps an error of a statement: lost connections and the server's transient conditions
    /// (shutting down, starting up, out of connections, a read-only replica after failover,
    /// serialization failures) are worth retrying, so [`StoreError::Unavailable`]; anything
    /// else is a bug or a broken schema, [`StoreError::Internal`].
    fn query_error(&self, err: &tokio_postgres::Error) -> StoreError {
        let cause = cause(err);
        if is_transient(err) {
            StoreError::Unavailable(format!("PostgreSQL at {}: {cause}", self.target))
        } else {
            StoreError::Internal(format!("PostgreSQL at {}: {cause}", self.target))
        }
    }

    /// A prefix/suffix scan of one table's live records in key order, paged.
    #[allow(clippy::too_many_arguments, reason = "one private helper shared by read and list")]
    async fn scan(
        &self,
        columns: Columns,
        database: &str,
        table: &str,
        prefix: &str,
        suffix: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<tokio_postgres::Row>> {
        let end = sql::prefix_end(prefix);
        let statement = sql::scan(columns, !prefix.is_empty(), end.is_some(), !suffix.is_empty());
        let offset = sql::paging(offset);
        let limit = (limit > 0).then(|| sql::paging(limit));
        // Suffixes are at most MAX_KEY_BYTES long, so their length always fits.
        let suffix_chars = i32::try_from(suffix.chars().count()).unwrap_or(i32::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&database, &table, &offset, &limit];
        if !prefix.is_empty() {
            params.push(&prefix);
        }
        if let Some(end) = &end {
            params.push(end);
        }
        if !suffix.is_empty() {
            params.push(&suffix_chars);
            params.push(&suffix);
        }
        self.with_client(async |client| {
            let statement = client.prepare_cached(&statement).await?;
            client.query(&statement, &params).await
        })
        .await
    }
}

/// Whether retrying `err` later may succeed (see [`PostgresStore::query_error`]).
fn is_transient(err: &tokio_postgres::Error) -> bool {
    let Some(code) = err.code() else {
        // No SQL state: the connection failed (I/O error, closed socket, timeout) or a value
        // did not convert. Only the first kind carries an I/O error or a closed client.
        return err.is_closed()
            || std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>());
    };
    let class = &code.code()[..2];
    // 08: connection exception; 53: insufficient resources; 57P0x: shutting down / starting up.
    matches!(class, "08" | "53")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
        ]
        .contains(code)
}

/// The message of `err` with its cause: tokio-postgres's own `Display` says only "db error"
/// or "error connecting to server" and keeps the detail in the source.
fn cause(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

fn pool_cause(err: &PoolError) -> String {
    match err {
        PoolError::Backend(err) => cause(err),
        PoolError::Timeout(_) => "timed out".into(),
        other => other.to_string(),
    }
}

/// `user@host:port/dbname` of `config`, for logs and errors: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_string() } else { hosts.join(",") };
    let user = config.get_user().map(|user| format!("{user}@")).unwrap_or_default();
    let dbname = config.get_dbname().or(config.get_user()).unwrap_or_default();
    format!("{user}{hosts}/{dbname}")
}

/// Builds a [`Record`] from a row of `value, metadata, remaining` starting at column `first`.
/// Rows fetched by the first query of a read with a byte budget ([`ReadOptions::max_bytes`]);
/// each further query fetches twice as many.
const BUDGET_PAGE: u64 = 16;

fn record_from(
    row: &tokio_postgres::Row,
    key: String,
    first: usize,
) -> Result<Record, tokio_postgres::Error> {
    let value: Vec<u8> = row.try_get(first)?;
    let Json(metadata): Metadata = row.try_get(first + 1)?;
    let remaining: Option<i64> = row.try_get(first + 2)?;
    Ok(Record {
        key,
        value,
        metadata: metadata
            .into_iter()
            .map(|(name, field)| (name, Field::new(field.kind, field.value)))
            .collect(),
        // Only live rows are returned, so the remaining time is positive.
        expiry: remaining.map(|millis| Duration::from_millis(u64::try_from(millis).unwrap_or(1))),
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn read(
        &self,
        database: &str,
        table: &str,
        key: &str,
        options: ReadOptions,
    ) -> Result<Vec<Record>> {
        validate::read(database, table, key, &options)?;
        if !options.prefix && !options.suffix {
            let row = self
                .with_client(async |client| {
                    let statement = client.prepare_cached(sql::READ_EXACT).await?;
                    let row = client.query_opt(&statement, &[&database, &table, &key]).await?;
                    row.map(|row| record_from(&row, key.to_string(), 0)).transpose()
                })
                .await?;
            return row.map(|record| vec![record]).ok_or(StoreError::NotFound);
        }

        let prefix = if options.prefix { key } else { "" };
        let suffix = if options.suffix { key } else { "" };
        let decode = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|row| {
                    let key: String = row.try_get(0)?;
                    record_from(row, key, 1)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| self.query_error(&err))
        };
        if options.max_bytes == 0 {
            let rows = self
                .scan(Columns::Records, database, table, prefix, suffix, options.offset, options.limit)
                .await?;
            return decode(rows);
        }
        // A byte budget: pages of BUDGET_PAGE rows until it is spent, so no more than a page of
        // values beyond it is ever held.
        let mut records = Vec::new();
        let (mut spent, wanted) = (0u64, if options.limit == 0 { u64::MAX } else { options.limit });
        let mut page_size = BUDGET_PAGE;
        loop {
            let taken = records.len() as u64;
            let page = page_size.min(wanted - taken);
            // Small values spend the budget slowly: each page twice the last, so a large read
            // takes a few queries, not one per BUDGET_PAGE rows.
            page_size = page_size.saturating_mul(2);
            let offset = options.offset.saturating_add(taken);
            let rows = self.scan(Columns::Records, database, table, prefix, suffix, offset, page).await?;
            let short = (rows.len() as u64) < page;
            for record in decode(rows)? {
                spent = spent.saturating_add(record.value.len() as u64);
                records.push(record);
                if spent >= options.max_bytes {
                    return Ok(records);
                }
            }
            if short || records.len() as u64 >= wanted {
                return Ok(records);
            }
        }
    }

    async fn write(&self, database: &str, table: &str, record: Record) -> Result<()> {
        self.put(sql::WRITE, database, table, record).await.map(drop)
    }

    async fn create(&self, database: &str, table: &str, record: Record) -> Result<bool> {
        Ok(self.put(sql::CREATE, database, table, record).await? == 1)
    }

    async fn delete(&self, database: &str, table: &str, key: &str) -> Result<()> {
        validate::delete(database, table, key)?;
        self.with_client(async |client| {
            let statement = client.prepare_cached(sql::DELETE).await?;
            client.execute(&statement, &[&database, &table, &key]).await
        })
        .await?;
        Ok(())
    }

    async fn list(&self, database: &str, table: &str, options: ListOptions) -> Result<Vec<String>> {
        validate::list(database, table, &options)?;
        let rows = self
            .scan(
                Columns::Keys,
                database,
                table,
                &options.prefix,
                &options.suffix,
                options.offset,
                options.limit,
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|err| self.query_error(&err))
    }

    async fn databases(&self) -> Result<Vec<String>> {
        let rows = self
            .with_client(async |client| {
                let statement = client.prepare_cached(sql::DATABASES).await?;
                client.query(&statement, &[]).await
            })
            .await?;
        rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>().map_err(|err| self.query_error(&err))
    }

    async fn tables(&self, database: &str) -> Result<Vec<String>> {
        validate::database(database)?;
        let rows = self
            .with_client(async |client| {
                let statement = client.prepare_cached(sql::TABLES).await?;
                client.query(&statement, &[&database]).await
            })
            .await?;
        rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>().map_err(|err| self.query_error(&err))
    }

    async fn sweep_expired(&self) -> Result<u64> {
        let mut removed = 0u64;
        loop {
            let batch = self
                .with_client(async |client| {
                    let statement = client.prepare_cached(sql::SWEEP).await?;
                    client.execute(&statement, &[&sql::SWEEP_BATCH]).await
                })
                .await?;
            removed += batch;
            // A short batch means nothing more was due (or the rest is locked by another
            // server's sweep, which removes it).
            if batch < sql::SWEEP_BATCH.unsigned_abs() {
                return Ok(removed);
            }
        }
    }

    fn summary(&self) -> String {
        format!("postgres at {} (max {MAX_CONNECTIONS} connections, no TLS)", self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(url: &str) -> String {
        describe(&tokio_postgres::Config::from_str(url).unwrap())
    }

    #[test]
    fn descriptions_name_the_place_never_the_password() {
        assert_eq!(
            described("postgres://micro:hunter2@db.example.com:6543/prod"),
            "micro@db.example.com:6543/prod"
        );
        assert_eq!(described("postgresql://micro:hunter2@10.0.0.1/prod"), "micro@10.0.0.1:5432/prod");
        assert_eq!(described("postgres://app@a,b:5433/x"), "app@a:5432,b:5433/x");
        assert_eq!(described("postgres://app@[::1]:5433/x"), "app@[::1]:5433/x");
        assert_eq!(
            described("postgres://app@localhost"),
            "app@localhost:5432/app",
            "dbname defaults to the user"
        );
        assert!(!described("host=h user=u password=hunter2 dbname=d").contains("hunter2"));
    }
}
