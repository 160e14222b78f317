//! The dashboard's session: two cookies, set at login and cleared at logout (docs/web.md).
//!
//! - [`TOKEN_COOKIE`] holds the access token `Auth.Token` returned, exactly as a CLI login
//!   gets it; the gateway's admission reads it when the CSRF proof below comes with it.
//! - [`CSRF_COOKIE`] holds a random token the page repeats in [`CSRF_HEADER`] on every API
//!   request (double submit). The page learns it from the HTML the server renders (a `<meta>`),
//!   so both cookies are `HttpOnly`: no script reads either.
//!
//! Both are `HttpOnly; SameSite=Strict; Path=/` (and `Secure` when the listener serves TLS).
//! The session lives as long as its access token, [`SESSION_TTL`]; there is no refresh: once
//! it expires the next page or request goes to the login page, which says so. A refresh token
//! in a cookie would be a 30-day credential sent to every port of the host (cookies are not
//! scoped by port), so the dashboard keeps none.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use micro_auth::Auth;
use micro_core::Account;

pub use crate::gateway::auth::{CSRF_COOKIE, CSRF_HEADER, TOKEN_COOKIE};

/// How long a dashboard login lasts: the lifetime of the access token it is given.
pub const SESSION_TTL: Duration = Duration::from_secs(60 * 60);

/// Random bytes in a CSRF token.
const CSRF_BYTES: usize = 32;

/// A logged-in browser: the token of its cookie, verified.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub account: Account,
}

/// The session the request's token cookie carries, if it verifies (signature and expiry).
pub fn session(auth: &Auth, headers: &HeaderMap) -> Option<Session> {
    let token = crate::gateway::auth::cookie(headers, TOKEN_COOKIE)?;
    let account = auth.inspect(&token).ok()?;
    Some(Session { token, account })
}

/// The request's CSRF cookie, if it has one.
pub fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    crate::gateway::auth::cookie(headers, CSRF_COOKIE)
}

/// Whether the request repeats its CSRF cookie in [`CSRF_HEADER`]: only a page this server
/// rendered knows the value, and only a page of this origin may send the header (another
/// origin would need a CORS grant, which this listener never gives).
pub fn csrf_checked(headers: &HeaderMap) -> bool {
    crate::gateway::auth::csrf_checked(headers)
}

/// A new random CSRF token (hex).
pub fn new_csrf() -> String {
    let mut bytes = [0u8; CSRF_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// The `Set-Cookie` value that stores `value` in cookie `name` for `max_age` (a session cookie
/// when `None`).
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(max_age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", max_age.as_secs()));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("cookie names and values are ASCII tokens")
}

/// The `Set-Cookie` value that deletes cookie `name`.
pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", Some(Duration::ZERO), secure)
}
