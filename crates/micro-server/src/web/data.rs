//! The Data pages (docs/web.md#store, docs/web.md#config): the store browser (`/store`) and
//! the config editor (`/config`).
//!
//! The events page (docs/web.md#events-and-the-broker) lists the namespace's topics
//! (`events.Stream/Topics`), reads and publishes events, lists a
//! consumer group's dead letters and releases or drops them (`events.Stream/DeadLetters`,
//! `Release`, `DropDeadLetters`), and publishes to and subscribes to the broker.
//!
//! The jobs page (docs/web.md#jobs) lists the namespace's scheduled jobs (`jobs.Jobs/List`),
//! runs one now (`Run`), shows its recent runs (`History`), deletes one (`Delete`) and creates
//! one (`Create`), as `micro jobs` does.
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
        .route("/jobs", get(jobs_page))
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

/// Where the events page opens: `?topic=&group=` (with both, the group's dead letters are
/// listed at once).
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    namespace: Option<String>,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    group: String,
}

/// The longest database, table, prefix, topic or group a Data page opens with.
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
    if query.topic.len() > MAX_SCOPE || query.group.len() > MAX_SCOPE {
        return web_error(StatusCode::BAD_REQUEST, "the topic or group is too long");
    }
    let render = |frame: &Frame<'_>| events(frame, &query.topic, &query.group);
    web.frame_page(&headers, query.namespace.clone(), route("events", "Store", "Read"), render).await
}

async fn jobs_page(State(web): State<Web>, headers: HeaderMap, Query(query): Query<PageQuery>) -> Response {
    web.frame_page(&headers, query.namespace, route("jobs", "Jobs", "List"), jobs).await
}

/// The jobs page: the namespace's jobs with Run now, History and Delete per job
/// (`jobs.Jobs/List`, `Run`, `History`, `Delete`), a job's recent runs, and the form that
/// creates one (`Create`). `data.js` fills it.
pub fn jobs(frame: &Frame<'_>) -> String {
    let main = format!(
        r#"<h1>Jobs <small>in {namespace}</small></h1>
<section id="jobs" class="panel">
<h2>Scheduled jobs <button type="button" id="jobs-reload">Reload</button></h2>
<p class="error" id="jobs-error" role="alert" hidden></p>
<table class="jobs" id="jobs-table"><thead><tr><th>name</th><th>schedule</th><th>action</th><th>missed</th><th>next firing</th><th>owner</th><th></th></tr></thead><tbody><tr class="placeholder"><td colspan="7">Loading…</td></tr></tbody></table>
<p class="ok" id="jobs-done" role="status" hidden></p>
<p class="hint">As <code>micro jobs list</code>, <code>micro jobs run NAME</code> and <code>micro jobs delete NAME</code>: each firing runs once across the servers sharing the store, as the account that created the job.</p>
</section>
<section id="runs" class="panel" hidden>
<h2>History of <code id="runs-job"></code> <button type="button" id="runs-reload">Reload</button></h2>
<p class="error" id="runs-error" role="alert" hidden></p>
<table class="runs" id="runs-table"><thead><tr><th>scheduled</th><th>started</th><th>finished</th><th>server</th><th>trigger</th><th>outcome</th><th>error</th></tr></thead><tbody></tbody></table>
<p class="hint">As <code>micro jobs history NAME</code>: the recent runs, newest first.</p>
</section>
<section class="panel">
<h2>Create a job</h2>
<form id="job-create" class="stacked" autocomplete="off">
<label>Name <input id="job-name" required spellcheck="false" placeholder="nightly-report"></label>
<label>Schedule <span class="inline"><select id="job-kind"><option value="every">every</option><option value="cron">cron</option><option value="at">at</option></select> <input id="job-schedule" required size="24" spellcheck="false" placeholder="1h, */5 * * * *, 2030-01-02T03:04:05Z"></span></label>
<label>Publish to topic <input id="job-topic" spellcheck="false"></label>
<label>or call service <input id="job-service" spellcheck="false"></label>
<label>endpoint <input id="job-endpoint" spellcheck="false" placeholder="Greeter.Call"></label>
<label>Data (JSON) <textarea id="job-data" rows="2" spellcheck="false"></textarea></label>
<label>Missed firings <select id="job-missed"><option value="skip">skip</option><option value="catch-up">catch-up</option></select></label>
<div class="actions"><button type="submit">Create</button><span class="ok" id="job-done" hidden></span></div>
<p class="error" id="job-error" role="alert" hidden></p>
</form>
<p class="hint">As <code>micro jobs create NAME --every D | --cron EXPR | --at TIME --publish TOPIC | --call SERVICE ENDPOINT [--data JSON] [--missed skip|catch-up]</code>; cron is in UTC.</p>
</section>"#,
        namespace = esc(frame.namespace),
    );
    pages::layout_with(frame, "Jobs", "jobs", &main, Some("data.js"))
}

/// The events and broker page: the namespace's topics (`events.Stream/Topics`); read a
/// topic's stored events from an offset and publish one (`events.Store/Read`,
/// `events.Stream/Publish`); list a consumer group's dead letters and
/// release or drop them (`events.Stream/DeadLetters`, `Release`, `DropDeadLetters`); publish
/// to the broker and subscribe to it live (`broker.Broker/Publish`, `Subscribe`). `data.js`
/// fills it.
pub fn events(frame: &Frame<'_>, topic: &str, group: &str) -> String {
    let main = format!(
        r#"<h1>Events <small>in {namespace}</small></h1>
<section id="topics" class="panel">
<h2>Topics <button type="button" id="topics-reload">Reload</button></h2>
<p class="error" id="topics-error" role="alert" hidden></p>
<table class="topics" id="topics-table"><thead><tr><th>topic</th><th>events</th><th>last sequence</th><th>last event</th></tr></thead><tbody><tr class="placeholder"><td colspan="4">Loading…</td></tr></tbody></table>
<p class="hint">The namespace's topics, in name order (<code>events.Stream/Topics</code>); a topic's name fills the forms below and reads it.</p>
</section>
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
<section id="dead" class="panel">
<h2>Dead letters</h2>
<form id="dead-list" class="inline" autocomplete="off">
<label>Topic <input id="dead-topic" value="{topic}" required size="18" spellcheck="false"></label>
<label>Group <input id="dead-group" value="{group}" required size="14" spellcheck="false"></label>
<button type="submit">List</button>
</form>
<p class="error" id="dead-error" role="alert" hidden></p>
<table class="dead" id="dead-table" hidden><thead><tr><th><input type="checkbox" id="dead-every" title="choose every dead letter"></th><th>id</th><th>sequence</th><th>attempts</th><th>first delivery</th><th>last delivery</th><th>last error</th><th>payload</th></tr></thead><tbody></tbody></table>
<div class="actions" id="dead-actions" hidden><button type="button" id="dead-release">Release chosen</button><button type="button" id="dead-release-all">Release all</button><button type="button" id="dead-drop" class="danger">Drop chosen</button><button type="button" id="dead-drop-all" class="danger">Drop all</button></div>
<p class="ok" id="dead-done" role="status" hidden></p>
<p class="hint">As <code>micro events dead TOPIC --group G</code>, <code>micro events release|drop TOPIC --group G ID… | --all</code>: events the group gave up on after its retry limit, or that a consumer rejected as permanent. A released one is delivered to the group once more, its attempts reset.</p>
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
        group = esc(group),
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
