//! The dashboard's static files, embedded in the binary (`assets/`): the script every page
//! loads (`app.js`), one per group of pages (`runtime.js`, `data.js`, `admin.js`), one
//! stylesheet. No framework, no bundler: what is in the folder is what the browser gets.
//!
//! Each is served with its content type, gzipped (once, on first use) when the browser accepts
//! gzip, with an `ETag`. Pages link them as `/assets/NAME?v=VERSION`, a hash of every asset,
//! so a versioned URL may be cached for a year (`immutable`) and a new binary's assets get new
//! URLs; an unversioned request must revalidate.

use std::io::Write as _;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// `assets/<name>`, embedded, served as `content_type`.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset { name: $name, content_type: $content_type, body: include_bytes!(concat!("assets/", $name)) }
    };
}

const SCRIPT: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("app.js", SCRIPT),
    asset!("runtime.js", SCRIPT),
    asset!("data.js", SCRIPT),
    asset!("admin.js", SCRIPT),
    asset!("app.css", "text/css; charset=utf-8"),
];

/// How long a versioned asset URL may be cached.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Bodies shorter than this are sent as they are: gzip would not pay for its header.
const MIN_GZIP_BYTES: usize = 512;

/// A short hash of every asset, the `v` of their URLs.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a over names and bodies: a cache key, not a security measure.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for asset in ASSETS {
            for byte in asset.name.bytes().chain(asset.body.iter().copied()) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    })
}

/// The answer to `GET /assets/{name}`: the file, gzipped when accepted, or 404.
pub fn serve(name: &str, versioned: bool, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let asset = &ASSETS[index];
    let etag = format!("\"{}\"", version());
    let cache = if versioned { IMMUTABLE } else { "no-cache" };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut response = Response::new(Body::from(gzipped(index)));
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        Response::new(Body::from(asset.body))
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    out.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex in quotes"));
    response
}

/// Asset `index`, gzipped once for the life of the process.
fn gzipped(index: usize) -> &'static [u8] {
    static GZIPPED: [OnceLock<Vec<u8>>; ASSETS.len()] = [const { OnceLock::new() }; ASSETS.len()];
    GZIPPED[index].get_or_init(|| gzip(ASSETS[index].body))
}

/// Whether the request accepts a gzip body (`Accept-Encoding: gzip`, not refused with `q=0`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let gzip = parts.next().is_some_and(|name| name.eq_ignore_ascii_case("gzip"));
            let quality = parts
                .find_map(|param| param.strip_prefix("q="))
                .and_then(|quality| quality.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            gzip && quality > 0.0
        })
}

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 3), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

/// An HTML page: never cached (it carries the session's CSRF token), gzipped when accepted.
pub fn html(status: StatusCode, page: String, headers: &HeaderMap) -> Response {
    let mut response = if page.len() >= MIN_GZIP_BYTES && accepts_gzip(headers) {
        let mut response = (status, gzip(page.as_bytes())).into_response();
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        (status, page).into_response()
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}
