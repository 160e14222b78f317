//! One logging setup for `micro server` and for services written with the framework
//! (docs/observability.md, "Logs"): where logs go (stderr), which lines pass (the filter) and how
//! each line is written (the format).
//!
//! - The filter is [`FILTER_VAR`] (`MICRO_LOG`) for both, in `tracing`'s `EnvFilter` syntax
//!   (`info`, `debug,micro_server=trace`). A service falls back to [`FALLBACK_FILTER_VAR`]
//!   (`RUST_LOG`), which services read before there was one variable and which Rust programs
//!   conventionally honour; the server does not, so a `RUST_LOG` meant for a developer's cargo
//!   runs does not flood it.
//! - The format is [`FORMAT_VAR`] (`MICRO_LOG_FORMAT`, the server's `--log-format`): `text`
//!   (default) or `json`, one JSON object per line with the event's fields flattened beside
//!   `timestamp`, `level`, `target` and `message`, the innermost span as `span` and every entered
//!   span, outermost first, as `spans`, each with its fields. A request handled inside a span
//!   that carries `trace_id` and `span_id` thus carries them on each of its lines.
//!
//! The runtime gives the services it starts the format its own process logs in
//! ([`active_format`]), so one platform writes one format.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The log filter of the server and of services.
pub const FILTER_VAR: &str = "MICRO_LOG";
/// The filter a service reads when [`FILTER_VAR`] is unset.
pub const FALLBACK_FILTER_VAR: &str = "RUST_LOG";
/// The log format of the server and of services: `text` or `json`.
pub const FORMAT_VAR: &str = "MICRO_LOG_FORMAT";
/// The server's filter when [`FILTER_VAR`] is unset: the NATS client narrates its connection at
/// info; the backends log what matters.
pub const SERVER_DEFAULT_FILTER: &str = "info,async_nats=warn";
/// A service's filter when neither variable is set.
pub const SERVICE_DEFAULT_FILTER: &str = "info";

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }

    /// The format [`FORMAT_VAR`] names; `text` when it is unset or empty.
    pub fn from_env() -> Result<Self, UnknownFormat> {
        match std::env::var(FORMAT_VAR) {
            Ok(value) if !value.trim().is_empty() => value.parse(),
            _ => Ok(Format::Text),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A log format other than `text` and `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: use text or json")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(value.to_string())),
        }
    }
}

/// Who is logging: decides the default filter, the fallback variable and whether lines name
/// their target (the module that logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Service,
}

static ACTIVE: OnceLock<Format> = OnceLock::new();

/// The format this process logs in: the one the first [`init`] installed (`text` before). The
/// subscriber is process-wide by nature (`tracing`'s global default), so the format is too; the
/// runtime passes it on to the services it starts (`MICRO_LOG_FORMAT`).
pub fn active_format() -> Format {
    ACTIVE.get().copied().unwrap_or_default()
}

/// Installs the process's subscriber: stderr, the filter of `role`, lines in `format`. A second
/// call (two servers in one test process, or a program that set up tracing itself) keeps the
/// first subscriber. A filter that does not parse is reported on the first line, and the default
/// applies.
pub fn init(role: Role, format: Format) {
    let (filter, rejected) = filter(role, |name| std::env::var(name).ok());
    let stderr = std::io::stderr;
    let installed = match format {
        Format::Text => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr)
                    // Colour on a terminal, unless NO_COLOR is set non-empty (no-color.org):
                    // an explicit `with_ansi(true)` would override tracing's own NO_COLOR check.
                    .with_ansi(
                        std::io::stderr().is_terminal()
                            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
                    )
                    .with_target(role == Role::Service),
            )
            .try_init(),
        Format::Json => tracing_subscriber::registry().with(filter).with(json_layer(stderr)).try_init(),
    };
    if installed.is_ok() {
        let _ = ACTIVE.set(format);
        if let Some((variable, cause)) = rejected {
            tracing::warn!(variable, %cause, "the log filter does not parse; logging at the default level");
        }
    }
}

/// The JSON format's layer, writing to `writer` (see the module docs for its fields).
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

/// The filter of `role` from the variables `var` reads, and, when a set variable does not parse,
/// its name and why (the default applies then).
fn filter(role: Role, var: impl Fn(&str) -> Option<String>) -> (EnvFilter, Option<(&'static str, String)>) {
    let (variables, default): (&[&'static str], _) = match role {
        Role::Server => (&[FILTER_VAR], SERVER_DEFAULT_FILTER),
        Role::Service => (&[FILTER_VAR, FALLBACK_FILTER_VAR], SERVICE_DEFAULT_FILTER),
    };
    let set = variables
        .iter()
        .find_map(|name| var(name).filter(|value| !value.trim().is_empty()).map(|value| (*name, value)));
    match set {
        Some((name, value)) => match EnvFilter::builder().parse(&value) {
            Ok(filter) => (filter, None),
            Err(err) => (EnvFilter::new(default), Some((name, err.to_string()))),
        },
        None => (EnvFilter::new(default), None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("json".parse(), Ok(Format::Json));
        assert_eq!(" TEXT ".parse(), Ok(Format::Text));
        assert_eq!("yaml".parse::<Format>(), Err(UnknownFormat("yaml".into())));
        assert_eq!(
            UnknownFormat("yaml".into()).to_string(),
            r#"unknown log format "yaml": use text or json"#
        );
        assert_eq!(Format::Json.to_string(), "json");
    }

    #[test]
    fn services_fall_back_to_rust_log_and_the_server_does_not() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
        };
        let shown =
            |(filter, rejected): (EnvFilter, Option<(&'static str, String)>)| (filter.to_string(), rejected);
        assert_eq!(shown(filter(Role::Service, env(&[("RUST_LOG", "debug")]))).0, "debug");
        assert_eq!(
            shown(filter(Role::Service, env(&[("RUST_LOG", "debug"), ("MICRO_LOG", "warn")]))).0,
            "warn"
        );
        let server_default = EnvFilter::new(SERVER_DEFAULT_FILTER).to_string();
        assert_eq!(shown(filter(Role::Server, env(&[("RUST_LOG", "debug")]))).0, server_default);
        assert_eq!(shown(filter(Role::Service, env(&[]))).0, SERVICE_DEFAULT_FILTER);
        let (filter, rejected) = shown(filter(Role::Server, env(&[("MICRO_LOG", "info,[")])));
        assert_eq!(filter, server_default);
        assert_eq!(rejected.map(|(name, _)| name), Some("MICRO_LOG"));
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_parse_and_carry_the_fields_of_their_spans() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(addr = "127.0.0.1:1", "gRPC listening");
            let request = tracing::info_span!(
                "request",
                trace_id = "0af7651916cd43dd8448eb211c80319c",
                span_id = "b7ad6b7169203331"
            );
            let _entered = request.enter();
            let inner = tracing::info_span!("handler", endpoint = "Helloworld.Call");
            let _inner = inner.enter();
            tracing::warn!(name = "Alice", "Received \"call\"\nwith a newline");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).expect("each line is JSON")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "gRPC listening");
        assert_eq!(lines[0]["addr"], "127.0.0.1:1", "event fields are flattened");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].is_string());
        assert!(lines[0].get("span").is_none(), "outside a span: {text}");
        let inside = &lines[1];
        assert_eq!(inside["message"], "Received \"call\"\nwith a newline");
        assert_eq!(inside["span"]["endpoint"], "Helloworld.Call", "the innermost span");
        assert_eq!(inside["spans"][0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(inside["spans"][0]["span_id"], "b7ad6b7169203331");
        assert_eq!(inside["spans"][1]["name"], "handler");
    }
}
