//! The Accounts and rules page (`/accounts`, docs/web.md#accounts-and-rules): what
//! `micro auth list accounts|rules`, `micro auth create account|rule` and
//! `micro auth delete account|rule` do (crates/micro-cli/src/auth.rs), with their sentences.
//!
//! Like the Runtime and Data pages ([`super::runtime`], [`super::data`]) it is a frame rendered
//! here and filled by `assets/admin.js` through `/api/call/auth/...`: `auth.Accounts/List`,
//! `Delete`; `auth.Auth/Generate`; `auth.Rules/List`, `Create`, `Delete`. Each call gets the
//! gateway's admission decision; the page itself is shown after the decision for the read it
//! starts with (`auth.Accounts/List`), so an account the namespace's rules keep out of the auth
//! service gets the gateway's refusal sentence here too.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use micro_core::{ADMIN_SCOPE, Account};

use super::pages::{self, Frame, esc};
use super::{PageQuery, Web, route};

/// The page's routes.
pub fn routes() -> Router<Web> {
    Router::new().route("/accounts", get(accounts_page))
}

/// Whether the top bar links to this page for `account`: it has the `admin` scope. Only a
/// hint: who may call the auth service is the namespace's rules' decision, made by the gateway
/// for every call.
pub fn shows_link(account: &Account) -> bool {
    account.scopes.iter().any(|scope| scope == ADMIN_SCOPE)
}

async fn accounts_page(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    web.frame_page(&headers, query.namespace, route("auth", "Accounts", "List"), page).await
}

/// The page's frame: the accounts table and the form that creates one, the rules table and the
/// form that creates one. `admin.js` fills the tables.
pub fn page(frame: &Frame<'_>) -> String {
    let main = format!(
        r#"<h1>Accounts and rules <small>in {namespace}</small></h1>
<section id="accounts" class="panel">
<h2>Accounts</h2>
<p class="error" id="accounts-error" role="alert" hidden></p>
<table class="accounts" id="accounts-table"><thead><tr><th>id</th><th>name</th><th>type</th><th>scopes</th><th>issuer</th><th>metadata</th><th></th></tr></thead>
<tbody><tr class="placeholder"><td colspan="7">Loading <code>micro auth list accounts</code>…</td></tr></tbody></table>
<form id="account-create" class="inline" autocomplete="off">
<label>ID <input id="account-id" required size="14" spellcheck="false"></label>
<label>Secret <input id="account-secret" type="password" size="14" autocomplete="new-password" placeholder="random, shown once"></label>
<label>Scopes <input id="account-scopes" size="16" spellcheck="false" placeholder="admin,dev"></label>
<label>Type <input id="account-type" size="8" spellcheck="false" placeholder="user"></label>
<button type="submit">Create</button>
</form>
<p class="error" id="account-error" role="alert" hidden></p>
<p class="ok" id="account-done" hidden></p>
<p class="hint">As <code>micro auth create account ID [--secret S] [--scopes a,b]</code>: the secret is shown once, here, when the server made it.</p>
</section>
<section id="rules" class="panel">
<h2>Rules</h2>
<p class="error" id="rules-error" role="alert" hidden></p>
<table class="rules" id="rules-table"><thead><tr><th>id</th><th>scope</th><th>access</th><th>resource</th><th>priority</th><th></th></tr></thead>
<tbody><tr class="placeholder"><td colspan="6">Loading <code>micro auth list rules</code>…</td></tr></tbody></table>
<form id="rule-create" class="inline" autocomplete="off">
<label>ID <input id="rule-id" required size="12" spellcheck="false"></label>
<label>Scope <input id="rule-scope" size="10" spellcheck="false" placeholder="blank: public"></label>
<label>Type <input id="rule-type" size="8" spellcheck="false" value="service" required></label>
<label>Name <input id="rule-name" size="10" spellcheck="false" value="*" required></label>
<label>Endpoint <input id="rule-endpoint" size="12" spellcheck="false" value="*" required></label>
<label>Access <select id="rule-access"><option value="GRANTED">granted</option><option value="DENIED">denied</option></select></label>
<label>Priority <input id="rule-priority" type="number" value="0" size="5"></label>
<button type="submit">Create</button>
</form>
<p class="error" id="rule-error" role="alert" hidden></p>
<p class="ok" id="rule-done" hidden></p>
<p class="hint">As <code>micro auth create rule ID --scope S --resource type:name:endpoint --access granted|denied --priority N</code>: a blank scope is everyone (public), <code>*</code> any account; higher priorities are considered first.</p>
</section>"#,
        namespace = esc(frame.namespace),
    );
    pages::layout_with(frame, "Accounts and rules", "accounts", &main, Some("admin.js"))
}
