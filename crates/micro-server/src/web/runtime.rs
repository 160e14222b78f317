//! The Runtime page (`/runtime`, docs/web.md#runtime): `micro status` as a live table, and per
//! service its logs (followed), update and kill; a form runs a service from a git URL.
//!
//! The page is a frame rendered here; `assets/runtime.js` fills it by calling the runtime's
//! own endpoints through `/api/call/runtime/Runtime/...` (`Read` every two seconds, `Logs` with
//! `stream: true`, `Update`, `Delete`, `Create`), so every call gets the gateway's admission
//! decision and no second one lives here. The page itself is shown after the decision the
//! gateway would make for `runtime.Runtime/Read` in its namespace. A run without a name asks
//! `/api/service-name` for the one the source gives, so the rule lives in one Rust function.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::pages::{self, Frame, esc};
use super::{PageQuery, Web, api_session, route};

/// How often the status table asks the runtime again, in milliseconds.
pub const POLL_MS: u64 = 2000;

/// The page's routes.
pub fn routes() -> Router<Web> {
    Router::new().route("/runtime", get(runtime_page)).route("/api/service-name", get(service_name))
}

async fn runtime_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    web.frame_page(&headers, query.namespace, route("runtime", "Runtime", "Read"), page).await
}

#[derive(Debug, Deserialize)]
struct ServiceNameQuery {
    #[serde(default)]
    source: String,
}

/// `GET /api/service-name?source=URL`: the name of a service run from `URL` without one
/// ([`micro_core::names::service_name`], the rule the CLI reads names by), for the run form.
async fn service_name(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<ServiceNameQuery>,
) -> Response {
    if let Err(error) = api_session(&web, &headers) {
        return error.into_response();
    }
    axum::Json(json!({ "name": micro_core::names::service_name(&query.source) })).into_response()
}

/// The Runtime page's frame: the status table (filled and refreshed by `runtime.js`), the logs
/// panel, and the form that runs a service from a git repository.
pub fn page(frame: &Frame<'_>) -> String {
    let main = format!(
        r#"<h1>Runtime <small>in {namespace}</small></h1>
<section id="runtime" class="panel" data-poll="{POLL_MS}">
<table class="status" id="status"><thead><tr><th>service</th><th>version</th><th>source</th><th>status</th><th>restarts</th><th>updated</th><th>last error</th><th>metadata</th><th></th></tr></thead>
<tbody><tr class="placeholder"><td colspan="9">Loading <code>micro status</code>…</td></tr></tbody></table>
<p class="error" id="runtime-error" role="alert" hidden></p>
<p class="hint">Refreshed every {seconds} s, as <code>micro status</code> shows it.</p>
</section>
<section id="logs-panel" class="panel" hidden>
<h2>Logs of <span id="logs-service"></span> <small id="logs-state"></small></h2>
<div class="actions"><button type="button" id="logs-stop">Stop following</button><button type="button" id="logs-close">Close</button></div>
<ol id="logs" class="logs"></ol>
</section>
<section class="panel">
<h2>Run a service from git</h2>
<form id="run-form" class="inline" autocomplete="off">
<label>Source <input name="source" id="run-source" required size="44" spellcheck="false" placeholder="github.com/org/repo[/folder][@ref], file:///path/repo.git"></label>
<label>Name <input name="name" id="run-name" size="14" spellcheck="false" placeholder="from the source"></label>
<label>Command <input name="command" id="run-command" size="16" spellcheck="false" placeholder="e.g. sh run.sh"></label>
<button type="submit">Run</button>
</form>
<p class="hint">As <code>micro run SOURCE [--name NAME] [--command CMD]</code>: the server clones the repository at <code>@ref</code> (the VERSION; <code>latest</code> without one), builds it and runs it. A command runs instead of a build, for admins of <code>micro</code> only.</p>
<p class="error" id="run-error" role="alert" hidden></p>
<p class="ok" id="run-done" hidden></p>
</section>"#,
        namespace = esc(frame.namespace),
        seconds = POLL_MS / 1000,
    );
    pages::layout_with(frame, "Runtime", "runtime", &main, Some("runtime.js"))
}
