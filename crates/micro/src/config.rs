//! The platform's configuration for the service's namespace: dotted paths into one JSON
//! document (docs/compatibility.md §8).
//!
//! ```no_run
//! # async fn example() -> micro::Result<()> {
//! use tokio_stream::StreamExt;
//!
//! let greeting = micro::config::get("helloworld.greeting").await?.string("Hello");
//! let retries = micro::config::get("helloworld.retries").await?.int(3);
//! micro::config::set("helloworld.greeting", "Hi").await?;
//!
//! let mut changes = micro::config::watch("helloworld").await?;
//! while let Some(value) = changes.next().await {
//!     println!("helloworld is now {}", value?.json());
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use micro_proto::config::config_client::ConfigClient;
use micro_proto::config::{DeleteRequest, GetRequest, Options, SetRequest, Value as WireValue, WatchRequest};
use tokio_stream::{Stream, StreamExt};

use crate::platform::Platform;
use crate::{Error, Result};

/// A configuration value. Missing paths give a value whose [`Value::exists`] is false and whose
/// typed getters return their defaults. Getters coerce where it is unambiguous (`"42"` → 42).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Value(serde_json::Value);

impl Value {
    /// Wraps a JSON value.
    pub fn new(json: serde_json::Value) -> Self {
        Self(json)
    }

    /// Whether the path was set (to anything but `null`).
    pub fn exists(&self) -> bool {
        !self.0.is_null()
    }

    /// The value as JSON.
    pub fn json(&self) -> &serde_json::Value {
        &self.0
    }

    /// A string, or `default`. Numbers and booleans are given as their text.
    pub fn string(&self, default: &str) -> String {
        match &self.0 {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Bool(flag) => flag.to_string(),
            _ => default.to_string(),
        }
    }

    /// An integer, or `default`; `"42"` counts, fractions do not.
    pub fn int(&self, default: i64) -> i64 {
        match &self.0 {
            serde_json::Value::Number(number) => number.as_i64().unwrap_or(default),
            serde_json::Value::String(text) => text.trim().parse().unwrap_or(default),
            _ => default,
        }
    }

    /// A number, or `default`.
    pub fn float(&self, default: f64) -> f64 {
        match &self.0 {
            serde_json::Value::Number(number) => number.as_f64().unwrap_or(default),
            serde_json::Value::String(text) => text.trim().parse().unwrap_or(default),
            _ => default,
        }
    }

    /// A boolean, or `default`; `"true"`/`"false"` count.
    pub fn bool(&self, default: bool) -> bool {
        match &self.0 {
            serde_json::Value::Bool(flag) => *flag,
            serde_json::Value::String(text) => text.trim().parse().unwrap_or(default),
            _ => default,
        }
    }

    /// A duration written Go-style (`"1m30s"`) or as a number of seconds, or `default`.
    pub fn duration(&self, default: Duration) -> Duration {
        match &self.0 {
            serde_json::Value::String(text) => micro_core::duration::parse(text).unwrap_or(default),
            serde_json::Value::Number(number) => {
                number.as_f64().and_then(|secs| Duration::try_from_secs_f64(secs).ok()).unwrap_or(default)
            }
            _ => default,
        }
    }

    /// A list of strings, or `default` when the value is not a list.
    pub fn strings(&self, default: &[&str]) -> Vec<String> {
        match &self.0 {
            serde_json::Value::Array(items) => {
                items.iter().map(|item| Value(item.clone()).string("")).collect()
            }
            _ => default.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The value as `T` (strict: types must match).
    pub fn scan<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_value(self.0.clone())?)
    }
}

fn from_wire(value: Option<WireValue>) -> Result<Value> {
    match value {
        Some(value) if !value.data.is_empty() => Ok(Value(serde_json::from_str(&value.data)?)),
        _ => Ok(Value::default()),
    }
}

/// The value at `path` (dot-separated; empty for the whole document). Secrets read as `[secret]`.
pub async fn get(path: &str) -> Result<Value> {
    get_with(path, false).await
}

/// Like [`get`], with secrets decrypted.
pub async fn get_secret(path: &str) -> Result<Value> {
    get_with(path, true).await
}

async fn get_with(path: &str, secret: bool) -> Result<Value> {
    let platform = Platform::global()?;
    let request = GetRequest {
        namespace: platform.namespace.clone(),
        path: path.to_string(),
        options: Some(Options { secret }),
    };
    let request = platform.request(request).await;
    match ConfigClient::new(platform.channel.clone()).get(request).await {
        Ok(reply) => from_wire(reply.into_inner().value),
        // No document for the namespace yet: nothing is set.
        Err(status) if status.code() == tonic::Code::NotFound => Ok(Value::default()),
        Err(status) => Err(platform.error(status)),
    }
}

/// Sets `path` to `value`; objects merge into what is there (docs/compatibility.md §8).
pub async fn set(path: &str, value: impl serde::Serialize) -> Result<()> {
    set_with(path, value, false).await
}

/// Sets `path` to `value`, sealed as a secret.
pub async fn set_secret(path: &str, value: impl serde::Serialize) -> Result<()> {
    set_with(path, value, true).await
}

async fn set_with(path: &str, value: impl serde::Serialize, secret: bool) -> Result<()> {
    let platform = Platform::global()?;
    let data = serde_json::to_string(&value)?;
    let request = SetRequest {
        namespace: platform.namespace.clone(),
        path: path.to_string(),
        value: Some(WireValue { data, format: "json".to_string() }),
        options: Some(Options { secret }),
    };
    let request = platform.request(request).await;
    ConfigClient::new(platform.channel.clone())
        .set(request)
        .await
        .map_err(|status| platform.error(status))?;
    Ok(())
}

/// Removes `path` and everything under it.
pub async fn delete(path: &str) -> Result<()> {
    let platform = Platform::global()?;
    let request = DeleteRequest { namespace: platform.namespace.clone(), path: path.to_string() };
    let request = platform.request(request).await;
    ConfigClient::new(platform.channel.clone())
        .delete(request)
        .await
        .map_err(|status| platform.error(status))?;
    Ok(())
}

/// The value at `path` each time it changes. The stream ends when the server closes it;
/// call `watch` again to resume.
pub async fn watch(path: &str) -> Result<impl Stream<Item = Result<Value>> + Send + 'static> {
    let platform = Platform::global()?;
    let request = WatchRequest {
        namespace: platform.namespace.clone(),
        path: path.to_string(),
        options: Some(Options { secret: false }),
    };
    let request = platform.stream_request(request).await;
    let stream = ConfigClient::new(platform.channel.clone())
        .watch(request)
        .await
        .map_err(|status| platform.error(status))?
        .into_inner();
    Ok(stream.map(|change| match change {
        Ok(change) => from_wire(change.value),
        Err(status) => Err(Error::Status(status)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_getters_coerce_and_default() {
        let missing = Value::default();
        assert!(!missing.exists());
        assert_eq!(missing.string("Hello"), "Hello");
        assert_eq!(missing.int(7), 7);
        assert!(missing.bool(true));
        assert_eq!(missing.duration(Duration::from_secs(1)), Duration::from_secs(1));

        assert_eq!(Value::new(json!("42")).int(0), 42);
        assert_eq!(Value::new(json!(42)).string(""), "42");
        assert_eq!(Value::new(json!(4.5)).int(0), 0, "fractions are not integers");
        assert_eq!(Value::new(json!(4.5)).float(0.0), 4.5);
        assert!(Value::new(json!("true")).bool(false));
        assert_eq!(Value::new(json!("1m30s")).duration(Duration::ZERO), Duration::from_secs(90));
        assert_eq!(Value::new(json!(2)).duration(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(Value::new(json!(["a", 1])).strings(&[]), ["a", "1"]);
        assert_eq!(Value::new(json!("x")).strings(&["d"]), ["d"]);
        assert_eq!(Value::new(json!({"a": 1})).string("obj"), "obj");

        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Conf {
            a: i64,
        }
        assert_eq!(Value::new(json!({"a": 1})).scan::<Conf>().unwrap(), Conf { a: 1 });
        assert!(Value::new(json!({"a": "1"})).scan::<Conf>().is_err(), "scan is strict");
    }

    #[test]
    fn wire_values_are_json_text() {
        let value =
            from_wire(Some(WireValue { data: r#""Micro <m@m3o.com>""#.into(), format: "json".into() }))
                .unwrap();
        assert_eq!(value.string(""), "Micro <m@m3o.com>");
        assert!(!from_wire(Some(WireValue { data: "null".into(), format: "json".into() })).unwrap().exists());
        assert!(!from_wire(None).unwrap().exists());
    }
}
