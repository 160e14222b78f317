//! The Data pages (docs/web.md#store, docs/web.md#config): the store browser (`/store`) and
//! the config editor (`/config`).
//!
//! Like the Runtime page ([`super::runtime`]) each is a frame rendered here and filled by
//! `assets/data.js` through `/api/call/<service>/...`: `store.Store/Databases`, `Tables`,
//! `List`, `Read`, `Write`, `Delete`; `config.Config/Get` (secrets revealed only when asked,
//! `options.secret`, as `micro config get --secret`), `Set`, `Delete`. Each call gets the
//! gateway's admission decision; the page itself is shown after the decision for the read it
//! starts with (`store.Store/List`, `config.Config/Get`).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::pages::{self, Frame, esc};
use super::{PageQuery, Web, route, web_error};

/// Keys listed per page of the store browser.
pub const KEYS_PER_PAGE: u64 = 25;

/// The pages' routes.
pub fn routes() -> Router<Web> {
    Router::new()
        .route("/store", get(store_page))
        .route("/config", get(config_page))
        .route("/events", get(events_page))
}

/// Where the store browser opens: `?database=&table=&prefix=` (empty: the store's defaults,
/// the namespace's database and table `micro`, as `micro store` takes them).
#[derive(Debug, Default, Deserialize)]
pub struct StoreQuery {
    namespace: Option<String>,
    #[serde(default)]
    database: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    prefix: String,
}

/// Where the events page opens: `?topic=`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    namespace: Option<String>,
    #[serde(default)]
    topic: String,
}

/// The longest database, table or prefix a store page opens with.
const MAX_SCOPE: usize = 256;

async fn store_page(State(web): State<Web>, headers: HeaderMap, Query(query): Query<StoreQuery>) -> Response {
    if [&query.database, &query.table, &query.prefix].iter().any(|part| part.len() > MAX_SCOPE) {
        return web_error(StatusCode::BAD_REQUEST, "the database, table or prefix is too long");
    }
    let render = |frame: &Frame<'_>| store(frame, &query.database, &query.table, &query.prefix);
    web.frame_page(&headers, query.namespace.clone(), route("store", "Store", "List"), render).await
}

async fn config_page(State(web): State<Web>, headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    web.frame_page(&headers, query.namespace, route("config", "Config", "Get"), config).await
}

async fn events_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Response {
    if query.topic.len() > MAX_SCOPE {
        return web_error(StatusCode::BAD_REQUEST, "the topic is too long");
    }
    let render = |frame: &Frame<'_>| events(frame, &query.topic);
    web.frame_page(&headers, query.namespace.clone(), route("events", "Store", "Read"), render).await
}

/// The events and broker page: read a topic's stored events from an offset and publish one
/// (`events.Store/Read`, `events.Stream/Publish`); publish to the broker and subscribe to it
/// live (`broker.Broker/Publish`, `Subscribe`). `data.js` fills it.
pub fn events(frame: &Frame<'_>, topic: &str) -> String {
    let main = format!(
        r#"<h1>Events <small>in {namespace}</small></h1>
<section id="events" class="panel">
<h2>Stored events</h2>
<form id="events-read" class="inline" autocomplete="off">
<label>Topic <input id="events-topic" value="{topic}" required size="18" spellcheck="false"></label>
<label>Offset <input id="events-offset" type="number" min="0" value="0" size="6"></label>
<label>Limit <input id="events-limit" type="number" min="1" value="25" size="6"></label>
<button type="submit">Read</button>
</form>
<p class="error" id="events-error" role="alert" hidden></p>
<ol id="events-list" class="logs" hidden></ol>
<form id="events-publish" class="inline" autocomplete="off">
<label>Payload (JSON) <input id="events-payload" size="40" spellcheck="false" placeholder='{{"id": 1}}'></label>
<button type="submit">Publish</button><span class="ok" id="events-done" hidden></span>
</form>
<p class="hint">As <code>micro events read TOPIC --offset N --limit N</code> and <code>micro events publish TOPIC PAYLOAD</code>: stored, in publish order.</p>
</section>
<section id="broker" class="panel">
<h2>Broker</h2>
<form id="broker-subscribe" class="inline" autocomplete="off">
<label>Topic <input id="broker-topic" value="{topic}" required size="18" spellcheck="false"></label>
<button type="submit">Subscribe</button><button type="button" id="broker-stop" disabled>Stop</button><small id="broker-state"></small>
</form>
<form id="broker-publish" class="inline" autocomplete="off">
<label>Message <input id="broker-body" size="40" spellcheck="false"></label>
<button type="submit">Publish</button>
</form>
<p class="error" id="broker-error" role="alert" hidden></p>
<ol id="broker-list" class="logs" hidden></ol>
<p class="hint">As <code>micro broker subscribe TOPIC</code> and <code>micro broker publish TOPIC MESSAGE</code>: nothing is kept, a subscriber gets what is published while it listens.</p>
</section>"#,
        namespace = esc(frame.namespace),
        topic = esc(topic),
    );
    pages::layout_with(frame, "Events", "events", &main, Some("data.js"))
}

/// The store browser: database and table pickers, the keys (prefix search, paging), the record
/// read, and the form that writes one. `data.js` fills it.
pub fn store(frame: &Frame<'_>, database: &str, table: &str, prefix: &str) -> String {
    let main = format!(
        r#"<h1>Store <small>in {namespace}</small></h1>
<section id="store" class="panel" data-database="{database}" data-table="{table}" data-per-page="{KEYS_PER_PAGE}">
<form id="store-scope" class="inline" autocomplete="off">
<label>Database <select id="store-database"><option value="{database}">{database_label}</option></select></label>
<label>Table <select id="store-table"><option value="{table}">{table_label}</option></select></label>
<label>Prefix <input id="store-prefix" value="{prefix}" size="16" spellcheck="false"></label>
<button type="submit">Search</button>
</form>
<p class="error" id="store-error" role="alert" hidden></p>
<div class="split">
<div><table class="keys" id="keys"><thead><tr><th>key</th></tr></thead><tbody></tbody></table>
<div class="pager"><button type="button" id="keys-prev" disabled>← Previous</button><span id="keys-range"></span><button type="button" id="keys-next" disabled>Next →</button></div></div>
<div id="record" class="record" hidden><h2><code id="record-key"></code></h2>
<dl class="metadata"><dt>expiry</dt><dd id="record-ttl"></dd><dt>bytes</dt><dd id="record-size"></dd></dl>
<pre id="record-value"></pre>
<div class="actions"><button type="button" id="record-edit">Edit</button><button type="button" id="record-delete" class="danger">Delete</button></div></div>
</div>
</section>
<section class="panel">
<h2>Write a record</h2>
<form id="store-write" class="stacked" autocomplete="off">
<label>Key <input id="write-key" required spellcheck="false"></label>
<label>Value <textarea id="write-value" rows="3" spellcheck="false"></textarea></label>
<label>Expiry <input id="write-expiry" size="10" spellcheck="false" placeholder="1h30m, none"></label>
<div class="actions"><button type="submit">Write</button><span class="ok" id="write-done" hidden></span></div>
<p class="error" id="write-error" role="alert" hidden></p>
</form>
<p class="hint">As <code>micro store write KEY VALUE [--expiry D] [--database DB] [--table T]</code>; the database defaults to the namespace, the table to <code>micro</code>.</p>
</section>"#,
        namespace = esc(frame.namespace),
        database = esc(database),
        table = esc(table),
        prefix = esc(prefix),
        database_label = if database.is_empty() { "(default)".to_string() } else { esc(database) },
        table_label = if table.is_empty() { "(default)".to_string() } else { esc(table) },
    );
    pages::layout_with(frame, "Store", "store", &main, Some("data.js"))
}

/// The config editor: the namespace's tree (secrets masked until revealed) and the form that
/// sets a value. `data.js` fills it.
pub fn config(frame: &Frame<'_>) -> String {
    let main = format!(
        r#"<h1>Config <small>in {namespace}</small></h1>
<section id="config" class="panel">
<div class="actions"><button type="button" id="config-reveal" aria-pressed="false">Reveal secrets</button><button type="button" id="config-reload">Reload</button></div>
<p class="error" id="config-error" role="alert" hidden></p>
<table class="config" id="config-tree"><thead><tr><th>path</th><th>value</th><th></th></tr></thead><tbody><tr class="placeholder"><td colspan="3">Loading…</td></tr></tbody></table>
</section>
<section class="panel">
<h2>Set a value</h2>
<form id="config-set" class="stacked" autocomplete="off">
<label>Path <input id="set-path" required spellcheck="false" placeholder="database.address"></label>
<label>Value <textarea id="set-value" rows="2" spellcheck="false" placeholder="JSON when it parses, else a string"></textarea></label>
<label class="check"><input type="checkbox" id="set-secret"> secret (stored encrypted, shown as <code>[secret]</code>)</label>
<div class="actions"><button type="submit">Set</button><span class="ok" id="set-done" hidden></span></div>
<p class="error" id="set-error" role="alert" hidden></p>
</form>
<p class="hint">As <code>micro config set PATH VALUE [--secret]</code>; objects merge.</p>
</section>"#,
        namespace = esc(frame.namespace),
    );
    pages::layout_with(frame, "Config", "config", &main, Some("data.js"))
}
