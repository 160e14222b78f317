//! The platform's key-value store, scoped to the service's namespace (its database).
//!
//! ```no_run
//! # async fn example() -> micro::Result<()> {
//! micro::store::write("greeting", "hello").await?;
//! let value = micro::store::read("greeting").await?;          // Some(b"hello".to_vec())
//! let keys = micro::store::list().await?;                     // ["greeting"]
//! micro::store::delete("greeting").await?;
//!
//! // Another table, prefix reads, expiry:
//! let users = micro::store::Store::table("users");
//! users.write_record(micro::store::Record::new("u/1", "alice").expiry(std::time::Duration::from_secs(60))).await?;
//! let records = users.read_prefix("u/").await?;
//! # Ok(()) }
//! ```
//!
//! The module-level functions use the table named after the running service (as the original
//! framework did), or `default` before a service runs.

use std::collections::HashMap;
use std::time::Duration;

use micro_proto::store::store_client::StoreClient;
use micro_proto::store::{
    DeleteOptions, DeleteRequest, ListOptions, ListRequest, ReadOptions, ReadRequest, WriteOptions,
    WriteRequest,
};

use crate::Result;
use crate::platform::Platform;

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    /// Time left before the record expires; `None` keeps it forever.
    pub expiry: Option<Duration>,
    /// Free-form metadata stored beside the value.
    pub metadata: HashMap<String, String>,
}

impl Record {
    /// A record that never expires.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into(), value: value.into(), ..Self::default() }
    }

    /// Expires the record after `ttl`.
    pub fn expiry(mut self, ttl: Duration) -> Self {
        self.expiry = Some(ttl);
        self
    }
}

/// A table of the store. `Store::default()` is the service's own table.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// Empty: the service's namespace.
    database: String,
    /// Empty: the service's name.
    table: String,
}

impl Store {
    /// The table `name` in the service's namespace.
    pub fn table(name: impl Into<String>) -> Self {
        Self { database: String::new(), table: name.into() }
    }

    /// The same table in another database (namespace); the server checks the service may.
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    fn resolved_table(&self, platform: &Platform) -> String {
        if !self.table.is_empty() {
            return self.table.clone();
        }
        platform.service.get().cloned().unwrap_or_default()
    }

    /// The value at `key`, `None` when there is none (or it expired).
    pub async fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.read_with(key, ReadOptions::default()).await?.into_iter().next().map(|record| record.value))
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub async fn read_prefix(&self, prefix: &str) -> Result<Vec<Record>> {
        self.read_with(prefix, ReadOptions { prefix: true, ..Default::default() }).await
    }

    /// Every record whose key ends with `suffix`, in key order.
    pub async fn read_suffix(&self, suffix: &str) -> Result<Vec<Record>> {
        self.read_with(suffix, ReadOptions { suffix: true, ..Default::default() }).await
    }

    async fn read_with(&self, key: &str, mut options: ReadOptions) -> Result<Vec<Record>> {
        let platform = Platform::global()?;
        options.database = self.database.clone();
        options.table = self.resolved_table(&platform);
        let request = platform.request(ReadRequest { key: key.to_string(), options: Some(options) }).await;
        match StoreClient::new(platform.channel.clone()).read(request).await {
            Ok(reply) => Ok(reply.into_inner().records.into_iter().map(from_wire).collect()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(Vec::new()),
            Err(status) => Err(platform.error(status)),
        }
    }

    /// Stores `value` at `key`, replacing what was there.
    pub async fn write(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<()> {
        self.write_record(Record::new(key, value)).await
    }

    /// Stores `record` with its expiry and metadata.
    pub async fn write_record(&self, record: Record) -> Result<()> {
        let platform = Platform::global()?;
        let options = WriteOptions { database: self.database.clone(), table: self.resolved_table(&platform) };
        let expiry_ms =
            record.expiry.map_or(0, |ttl| i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1));
        let wire = micro_proto::store::Record {
            key: record.key,
            value: record.value,
            expiry: (expiry_ms + 999) / 1000,
            metadata: record
                .metadata
                .into_iter()
                .map(|(k, v)| (k, micro_proto::store::Field { r#type: "string".into(), value: v }))
                .collect(),
            expiry_ms,
        };
        let request = platform.request(WriteRequest { record: Some(wire), options: Some(options) }).await;
        StoreClient::new(platform.channel.clone())
            .write(request)
            .await
            .map_err(|status| platform.error(status))?;
        Ok(())
    }

    /// Removes `key`; removing a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let platform = Platform::global()?;
        let options =
            DeleteOptions { database: self.database.clone(), table: self.resolved_table(&platform) };
        let request = platform.request(DeleteRequest { key: key.to_string(), options: Some(options) }).await;
        match StoreClient::new(platform.channel.clone()).delete(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(platform.error(status)),
        }
    }

    /// Every key of the table, in order.
    pub async fn list(&self) -> Result<Vec<String>> {
        self.list_prefix("").await
    }

    /// The keys starting with `prefix`, in order.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let platform = Platform::global()?;
        let options = ListOptions {
            database: self.database.clone(),
            table: self.resolved_table(&platform),
            prefix: prefix.to_string(),
            ..Default::default()
        };
        let request = platform.request(ListRequest { options: Some(options) }).await;
        let mut stream = StoreClient::new(platform.channel.clone())
            .list(request)
            .await
            .map_err(|status| platform.error(status))?
            .into_inner();
        let mut keys = Vec::new();
        while let Some(page) = stream.message().await.map_err(|status| platform.error(status))? {
            keys.extend(page.keys);
        }
        Ok(keys)
    }
}

fn from_wire(record: micro_proto::store::Record) -> Record {
    let expiry = match (record.expiry_ms, record.expiry) {
        (ms, _) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        (_, secs) if secs > 0 => Some(Duration::from_secs(secs.unsigned_abs())),
        _ => None,
    };
    Record {
        key: record.key,
        value: record.value,
        expiry,
        metadata: record.metadata.into_iter().map(|(k, field)| (k, field.value)).collect(),
    }
}

/// The value at `key` in the service's table.
pub async fn read(key: &str) -> Result<Option<Vec<u8>>> {
    Store::default().read(key).await
}

/// Every record whose key starts with `prefix` in the service's table.
pub async fn read_prefix(prefix: &str) -> Result<Vec<Record>> {
    Store::default().read_prefix(prefix).await
}

/// Stores `value` at `key` in the service's table.
pub async fn write(key: &str, value: impl Into<Vec<u8>>) -> Result<()> {
    Store::default().write(key, value).await
}

/// Stores `record` in the service's table.
pub async fn write_record(record: Record) -> Result<()> {
    Store::default().write_record(record).await
}

/// Removes `key` from the service's table.
pub async fn delete(key: &str) -> Result<()> {
    Store::default().delete(key).await
}

/// Every key of the service's table.
pub async fn list() -> Result<Vec<String>> {
    Store::default().list().await
}
