//! The dashboard's pages, rendered on the server as plain HTML. Every text that comes from
//! outside (service names, metadata, addresses, account ids) goes through [`esc`]. Pages carry
//! no inline script or style (the CSP forbids both): behaviour is `assets/app.js`, which finds
//! what it needs in `data-` attributes and the CSRF token in `<meta name="csrf-token">`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use micro_core::Account;
use micro_proto::registry::Node;

use super::assets;

/// HTML-escapes `text` for element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `text` for one path segment or query value.
pub fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Who is looking, in which namespace, with which CSRF token: what every page's frame shows.
pub struct Frame<'a> {
    pub csrf: &'a str,
    pub account: Option<&'a Account>,
    pub namespace: &'a str,
}

impl Frame<'_> {
    /// `path` in this frame's namespace: with `?namespace=` unless it is the account's own.
    pub fn link(&self, path: &str) -> String {
        match self.account {
            Some(account) if account.issuer == self.namespace => path.to_string(),
            _ => format!("{path}?namespace={}", url_part(self.namespace)),
        }
    }
}

/// The top bar's links: path and label.
const NAV: &[(&str, &str)] = &[
    ("/services", "Services"),
    ("/runtime", "Runtime"),
    ("/store", "Store"),
    ("/config", "Config"),
    ("/events", "Events"),
    ("/jobs", "Jobs"),
];

/// The top bar's link to the Accounts and rules page, shown to accounts that
/// [`super::admin::shows_link`] says may use it.
const ADMIN_NAV: (&str, &str) = ("/accounts", "Accounts");

/// The top bar's links for `account`.
fn nav(account: &Account) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    NAV.iter().chain(super::admin::shows_link(account).then_some(&ADMIN_NAV))
}

/// The page around `main`: head (stylesheet, script, CSRF token), the top bar, `main`.
pub fn layout(frame: &Frame<'_>, title: &str, page: &str, main: &str) -> String {
    layout_with(frame, title, page, main, None)
}

/// [`layout`] with `script`, an embedded asset of this page's own, loaded after `app.js`
/// (both `defer`: they run in order, so it may use what `app.js` exports as `window.micro`).
pub fn layout_with(frame: &Frame<'_>, title: &str, page: &str, main: &str, script: Option<&str>) -> String {
    let version = assets::version();
    let script = script
        .map(|name| format!(r#"<script src="/assets/{}?v={version}" defer></script>"#, esc(name)))
        .unwrap_or_default();
    let mut top = String::new();
    if let Some(account) = frame.account {
        let switch = if account.issuer == micro_core::DEFAULT_NAMESPACE {
            // Switching stays on the page of the top bar one is on.
            let action =
                nav(account).map(|(path, _)| *path).find(|path| page_of(path) == page).unwrap_or("/services");
            format!(
                r#"<form class="namespace" method="get" action="{action}"><label>namespace <input name="namespace" value="{}" size="12" spellcheck="false"></label><button type="submit">Switch</button></form>"#,
                esc(frame.namespace)
            )
        } else {
            format!(r#"<span class="namespace">namespace <b>{}</b></span>"#, esc(frame.namespace))
        };
        let links: String = nav(account)
            .map(|(path, label)| {
                let current = if page_of(path) == page_group(page) { r#" aria-current="page""# } else { "" };
                format!(r#"<a href="{}"{current}>{label}</a>"#, esc(&frame.link(path)))
            })
            .collect();
        let _ = write!(
            top,
            r#"<nav>{links}</nav>{switch}<span class="who" title="account">{id}</span><button id="logout" type="button">Log out</button>"#,
            id = esc(&account.id),
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · micro</title>
<link rel="stylesheet" href="/assets/app.css?v={version}">
<script src="/assets/app.js?v={version}" defer></script>
{script}
</head>
<body data-page="{page}" data-namespace="{namespace}">
<header class="top"><a class="brand" href="/">micro</a>{top}</header>
<main>
{main}
</main>
</body>
</html>
"#,
        csrf = esc(frame.csrf),
        title = esc(title),
        page = esc(page),
        namespace = esc(frame.namespace),
    )
}

/// The page name a top-bar path leads to (`/runtime` → `runtime`).
fn page_of(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The top-bar entry a page belongs to: the service and endpoint pages are under Services.
fn page_group(page: &str) -> &str {
    match page {
        "service" | "endpoint" => "services",
        page => page,
    }
}

/// The login form; `message` is shown above it (an expired session).
pub fn login(csrf: &str, namespace: &str, message: Option<&str>) -> String {
    let frame = Frame { csrf, account: None, namespace };
    let notice = message.map(|text| format!(r#"<p class="notice">{}</p>"#, esc(text))).unwrap_or_default();
    let main = format!(
        r#"<section class="login">
<h1>Log in</h1>
{notice}<form id="login" autocomplete="on">
<label>Username <input name="username" id="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<label>Namespace <input name="namespace" id="namespace" value="{namespace}" required spellcheck="false"></label>
<button type="submit">Log in</button>
<p class="error" id="login-error" role="alert" hidden></p>
</form>
<p class="hint">The accounts of <code>micro login</code>: the default is <code>admin</code> / <code>micro</code> on a local server.</p>
</section>"#,
        namespace = esc(namespace),
    );
    layout(&frame, "Log in", "login", &main)
}

/// A page that says why something cannot be shown.
pub fn error(frame: &Frame<'_>, title: &str, message: &str) -> String {
    let main = format!(
        r#"<section class="refused"><h1>{}</h1><p class="error">{}</p><p><a href="{}">Services</a></p></section>"#,
        esc(title),
        esc(message),
        esc(&frame.link("/services"))
    );
    layout(frame, title, "error", &main)
}

/// One registered version of a service, as the pages show it.
pub struct Version {
    pub version: String,
    pub metadata: BTreeMap<String, String>,
    pub nodes: Vec<Node>,
}

/// A service as the pages show it: its versions and the endpoints its descriptors describe.
pub struct ServiceView {
    pub name: String,
    /// Served by this server itself (store, config, …): listed without nodes.
    pub core: bool,
    pub versions: Vec<Version>,
    /// `Handler.Method`, and whether it streams (`client`, `server`).
    pub endpoints: Vec<(String, bool, bool)>,
}

fn kind_label(client: bool, server: bool) -> &'static str {
    match (client, server) {
        (false, false) => "",
        (false, true) => "server stream",
        (true, false) => "client stream",
        (true, true) => "bidi stream",
    }
}

/// Every service of the namespace: name, versions, nodes, endpoints.
pub fn services(frame: &Frame<'_>, services: &[ServiceView]) -> String {
    let mut rows = String::new();
    for service in services {
        let versions: Vec<String> = service.versions.iter().map(|v| esc(&v.version)).collect();
        let nodes: usize = service.versions.iter().map(|v| v.nodes.len()).sum();
        let nodes = if service.core { "built in".to_string() } else { nodes.to_string() };
        let mut endpoints = String::new();
        for (endpoint, client, server) in &service.endpoints {
            let href = frame.link(&format!("/services/{}/{}", url_part(&service.name), url_part(endpoint)));
            let label = kind_label(*client, *server);
            let tag = if label.is_empty() { String::new() } else { format!(r#" <small>{label}</small>"#) };
            let _ = write!(endpoints, r#"<li><a href="{}">{}</a>{tag}</li>"#, esc(&href), esc(endpoint));
        }
        let href = frame.link(&format!("/services/{}", url_part(&service.name)));
        let _ = write!(
            rows,
            r#"<tr data-service="{name}"><td><a class="service" href="{href}">{name}</a>{core}</td><td>{versions}</td><td>{nodes}</td><td><ul class="endpoints">{endpoints}</ul></td></tr>"#,
            name = esc(&service.name),
            href = esc(&href),
            core = if service.core { r#" <small class="core">core</small>"# } else { "" },
            versions = versions.join(", "),
        );
    }
    let main = format!(
        r#"<h1>Services <small>in {namespace}</small></h1>
<table class="services" id="services"><thead><tr><th>service</th><th>versions</th><th>nodes</th><th>endpoints</th></tr></thead>
<tbody>{rows}</tbody></table>"#,
        namespace = esc(frame.namespace),
    );
    layout(frame, "Services", "services", &main)
}

/// A service's page: its endpoints, the download of its `protos` (import paths, as `micro
/// proto` writes them; none for a service without descriptors), each version with its nodes.
pub fn service(frame: &Frame<'_>, service: &ServiceView, protos: &[String]) -> String {
    let mut versions = String::new();
    for version in &service.versions {
        let mut nodes = String::new();
        for node in &version.nodes {
            let _ = write!(
                nodes,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&node.id),
                esc(&node.address),
                metadata_list(node.metadata.iter())
            );
        }
        if service.core {
            nodes.push_str(r#"<tr><td colspan="3">served by this server</td></tr>"#);
        } else if version.nodes.is_empty() {
            nodes.push_str(r#"<tr><td colspan="3">no live nodes</td></tr>"#);
        }
        let _ = write!(
            versions,
            r#"<section class="version"><h2>version {}</h2>{}<table class="nodes"><thead><tr><th>node</th><th>address</th><th>metadata</th></tr></thead><tbody>{}</tbody></table></section>"#,
            esc(&version.version),
            metadata_list(version.metadata.iter()),
            nodes
        );
    }
    let mut endpoints = String::new();
    for (endpoint, client, server) in &service.endpoints {
        let href = frame.link(&format!("/services/{}/{}", url_part(&service.name), url_part(endpoint)));
        let label = kind_label(*client, *server);
        let tag = if label.is_empty() { String::new() } else { format!(r#" <small>{label}</small>"#) };
        let _ = write!(endpoints, r#"<li><a href="{}">{}</a>{tag}</li>"#, esc(&href), esc(endpoint));
    }
    let mut files = String::new();
    if !protos.is_empty() {
        let base = format!("/protos/{}", url_part(&service.name));
        let links: Vec<String> = protos
            .iter()
            .map(|file| {
                let path = file.split('/').map(url_part).collect::<Vec<_>>().join("/");
                format!(
                    r#"<a href="{}" download>{}</a>"#,
                    esc(&frame.link(&format!("{base}/{path}"))),
                    esc(file)
                )
            })
            .collect();
        let _ = write!(
            files,
            r#"<h2>Protos</h2><p id="protos">{} · <a href="{}" download id="protos-all">all as .tar.gz</a> <small>as <code>micro proto {}</code> writes them</small></p>"#,
            links.join(" · "),
            esc(&frame.link(&base)),
            esc(&service.name),
        );
    }
    let main = format!(
        r#"<p class="crumbs"><a href="{services}">Services</a> / {name}</p>
<h1>{name}</h1>
<h2>Endpoints</h2><ul class="endpoints" id="endpoints">{endpoints}</ul>
{files}
{versions}"#,
        services = esc(&frame.link("/services")),
        name = esc(&service.name),
    );
    layout(frame, &service.name, "service", &main)
}

fn metadata_list<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut entries: Vec<_> = entries.collect();
    entries.sort();
    let items: String =
        entries.iter().map(|(key, value)| format!("<dt>{}</dt><dd>{}</dd>", esc(key), esc(value))).collect();
    if items.is_empty() { String::new() } else { format!(r#"<dl class="metadata">{items}</dl>"#) }
}

/// An endpoint: the form `app.js` builds from `/api/describe/…`, the raw JSON editor, the
/// answer, and the commands to do the same from a terminal.
pub fn endpoint(frame: &Frame<'_>, service: &str, endpoint: &str, client: bool, server: bool) -> String {
    let label = kind_label(client, server);
    let kind = if label.is_empty() { "unary" } else { label };
    let main = format!(
        r#"<p class="crumbs"><a href="{services}">Services</a> / <a href="{service_href}">{service}</a> / {endpoint}</p>
<h1>{endpoint} <small>{kind}</small></h1>
<section id="call" data-service="{service}" data-endpoint="{endpoint}">
<div class="tabs" role="tablist"><button type="button" id="tab-form" class="on" role="tab">Form</button><button type="button" id="tab-json" role="tab">JSON</button></div>
<form id="request-form" class="request" aria-busy="true"><p class="loading">Loading the request's description…</p></form>
<textarea id="request-json" class="request" rows="12" spellcheck="false" hidden></textarea>
<div class="actions"><button type="button" id="send" disabled>Send</button>
<span class="copy">Copy as <button type="button" data-copy="curl">curl</button><button type="button" data-copy="micro">micro</button><button type="button" data-copy="buf">buf curl</button></span></div>
<pre id="command" hidden></pre>
</section>
<section id="result" hidden>
<p class="meta"><span id="status"></span> <span id="latency"></span> <span id="count"></span></p>
<pre id="response"></pre>
<ol id="messages" start="0"></ol>
</section>"#,
        services = esc(&frame.link("/services")),
        service_href = esc(&frame.link(&format!("/services/{}", url_part(service)))),
        service = esc(service),
        endpoint = esc(endpoint),
    );
    layout(frame, endpoint, "endpoint", &main)
}
