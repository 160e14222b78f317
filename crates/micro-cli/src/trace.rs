//! `micro trace [ID]`: the traces the server keeps in its ring (docs/observability.md#traces),
//! read through `debug.Debug/Trace`. Without an id, the recent traces, newest first, one a
//! line; with one, that trace as a tree of spans with their timings. `--output json` prints
//! the spans as the server sent them.

use std::collections::{HashMap, HashSet};

use clap::Args;
use micro_proto::debug::debug_client::DebugClient;
use micro_proto::debug::{Span, TraceRequest};

use crate::error::{CliError, Result};
use crate::table::{self, Output};
use crate::{Global, out};

/// The metadata key of a listed trace's span count (the server's `traces::SPANS_KEY`).
const SPANS_KEY: &str = "trace.spans";

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The trace to show as a tree (32 hexadecimal digits); without it, the recent traces
    id: Option<String>,
    /// Output format: a table (or tree), or JSON
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(global: &Global, args: TraceArgs) -> Result<()> {
    let client = global.connect().await?;
    let id = args.id.unwrap_or_default();
    let request = client.request(TraceRequest { id: id.clone() });
    let spans = DebugClient::new(client.channel.clone())
        .trace(request)
        .await
        .map_err(|status| client.error(status))?
        .into_inner()
        .spans;
    if args.output == Output::Json {
        let spans: Vec<serde_json::Value> = spans.iter().map(json).collect();
        out(&table::json(&spans));
        return Ok(());
    }
    if id.is_empty() {
        out(&list(&spans));
    } else if spans.is_empty() {
        return Err(CliError::new(format!("Trace {id} not found: the server keeps only its last traces")));
    } else {
        out(&tree(&spans));
    }
    Ok(())
}

fn json(span: &Span) -> serde_json::Value {
    serde_json::json!({
        "trace": span.trace,
        "id": span.id,
        "parent": span.parent,
        "name": span.name,
        "started": span.started.to_string(),
        "duration": span.duration.to_string(),
        "metadata": span.metadata,
    })
}

/// A duration in nanoseconds as people read it: `850µs`, `12.3ms`, `1.25s`.
pub(crate) fn duration(nanos: u64) -> String {
    match nanos {
        0..1_000_000 => format!("{}µs", nanos / 1_000),
        1_000_000..1_000_000_000 => format!("{:.1}ms", nanos as f64 / 1e6),
        _ => format!("{:.2}s", nanos as f64 / 1e9),
    }
}

/// The recent traces: id, start, duration of the root, span count, root's name.
fn list(spans: &[Span]) -> String {
    let mut rows = vec![["TRACE", "STARTED", "DURATION", "SPANS", "NAME"].map(String::from).to_vec()];
    for span in spans {
        rows.push(vec![
            span.trace.clone(),
            micro_core::time::rfc3339(span.started / 1_000_000_000),
            duration(span.duration),
            span.metadata.get(SPANS_KEY).cloned().unwrap_or_default(),
            span.name.clone(),
        ]);
    }
    table::render(&rows)
}

/// One trace as a tree: each span under its parent, by start time, with its service, duration
/// and start after the trace's first span. A span whose parent the ring lacks (another
/// process's span, or one evicted) is shown at the top level.
fn tree(spans: &[Span]) -> String {
    let ids: HashSet<&str> = spans.iter().map(|span| span.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
    for span in spans {
        let parent = if ids.contains(span.parent.as_str()) { span.parent.as_str() } else { "" };
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|span| span.started);
    }
    let start = spans.iter().map(|span| span.started).min().unwrap_or(0);
    let mut rows = Vec::new();
    for root in children.get("").into_iter().flatten() {
        branch(root, "", None, &children, start, &mut rows);
    }
    table::render(&rows)
}

/// Adds `span` (drawn after `prefix`, as the last of its siblings or not; `None` for a root)
/// and its descendants to `rows`.
fn branch(
    span: &Span,
    prefix: &str,
    last: Option<bool>,
    children: &HashMap<&str, Vec<&Span>>,
    start: u64,
    rows: &mut Vec<Vec<String>>,
) {
    let (mark, inner) = match last {
        None => ("", String::new()),
        Some(true) => ("└─ ", format!("{prefix}   ")),
        Some(false) => ("├─ ", format!("{prefix}│  ")),
    };
    let mut name = format!("{prefix}{mark}{}", span.name);
    if let Some(error) = span.metadata.get("error") {
        name.push_str(&format!(" [{error}]"));
    }
    rows.push(vec![
        name,
        span.metadata.get("service").cloned().unwrap_or_default(),
        duration(span.duration),
        format!("+{}", duration(span.started.saturating_sub(start))),
    ]);
    let kids = children.get(span.id.as_str()).map(Vec::as_slice).unwrap_or_default();
    for (index, child) in kids.iter().enumerate() {
        branch(child, &inner, Some(index + 1 == kids.len()), children, start, rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, name: &str, started: u64, duration: u64) -> Span {
        Span {
            trace: "t".into(),
            id: id.into(),
            parent: parent.into(),
            name: name.into(),
            started,
            duration,
            metadata: [("service".to_string(), "micro".to_string())].into(),
            ..Span::default()
        }
    }

    #[test]
    fn a_trace_prints_as_a_tree_with_timings() {
        let spans = [
            span("c", "b", "store.Store/Write", 3_000_000, 500_000),
            span("b", "a", "debug.Debug/Health", 1_000_000, 5_000_000),
            span("a", "caller", "GET /tracer/Debug.Health", 0, 7_250_000),
            span("d", "b", "events.Stream/Publish", 4_000_000, 2_000_000_000),
        ];
        assert_eq!(
            tree(&spans),
            "GET /tracer/Debug.Health     micro  7.2ms  +0µs\n\
             └─ debug.Debug/Health        micro  5.0ms  +1.0ms\n\
             \x20  ├─ store.Store/Write      micro  500µs  +3.0ms\n\
             \x20  └─ events.Stream/Publish  micro  2.00s  +4.0ms\n"
        );
    }
}
