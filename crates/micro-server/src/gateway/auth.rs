//! Who is calling and in which namespace (docs/compatibility.md §4.5), and whether the namespace's
//! rules let them reach the endpoint: the admission decision of micro-access, as on the :8081
//! gate ([`crate::gate`]), with HTTP's extra sources: the `micro-token` cookie and the API
//! domain's subdomains.

use axum::http::{HeaderMap, header};
use micro_access::Resource;
use micro_access::admission::{self, Refusal};
use micro_auth::Auth;
use micro_core::Account;

use super::errors::ApiError;
use super::resolve::Route;

/// The cookie the web dashboard keeps the access token in.
pub const TOKEN_COOKIE: &str = "micro-token";
/// The cookie holding the CSRF token of a cookie session (double submit, docs/security.md).
pub const CSRF_COOKIE: &str = "micro-csrf";
/// The header that must repeat [`CSRF_COOKIE`] for the [`TOKEN_COOKIE`] to count. A page of
/// another origin can neither read the cookie nor send the header without a CORS grant.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The namespace the request acts in: the registry domain its service is looked up in.
    pub namespace: String,
    pub account: Option<Account>,
    /// The bearer token, forwarded to the service.
    pub token: Option<String>,
}

/// Resolves the caller: the token from `Authorization: Bearer`, or the `micro-token` cookie when
/// the request proves it comes from a page of ours (the `X-CSRF-Token` header equals the
/// `micro-csrf` cookie; otherwise the cookie is ignored, on every method, since any method can
/// reach any endpoint); the namespace from `Micro-Namespace`, else the subdomain of `api_domain`
/// the request was sent to, else the token's issuer, else `micro`
/// ([`micro_access::admission::namespace`]). A token issued by a namespace other than `micro`
/// may act only in its own namespace.
pub fn identify(auth: &Auth, headers: &HeaderMap, api_domain: Option<&str>) -> Result<Caller, ApiError> {
    let token = match admission::bearer(headers).map_err(refused)? {
        Some(token) => Some(token.to_string()),
        None => cookie(headers, TOKEN_COOKIE).filter(|_| csrf_checked(headers)),
    };
    let account = match &token {
        Some(token) => Some(auth.inspect(token).map_err(|_| refused(Refusal::InvalidToken))?),
        None => None,
    };
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    let from_host = host.zip(api_domain).and_then(|(host, domain)| namespace_from_host(host, domain));
    let namespace = admission::namespace(headers, from_host, account.as_ref()).map_err(refused)?;
    admission::check_namespace(&namespace, account.as_ref()).map_err(refused)?;
    Ok(Caller { namespace, account, token })
}

/// The rule check ([`micro_access::admit`]) against the rules of the namespace the caller acts
/// in, for the registered service the route names.
pub async fn authorize(auth: &Auth, caller: &Caller, route: &Route) -> Result<(), ApiError> {
    let resource = Resource::new("service", route.service.clone(), route.endpoint());
    let rules = auth.rules(&caller.namespace).await;
    micro_access::admit(&caller.namespace, caller.account.as_ref(), &rules, &resource).map_err(refused)
}

/// A refusal as the gateway answers it: its HTTP status, its sentence. Counted by reason.
pub(super) fn refused(refusal: Refusal) -> ApiError {
    crate::metrics::rejected(crate::metrics::Listener::Http, &refusal);
    ApiError::new(refusal.http_status(), refusal.to_string())
}

/// `foo.example.com` under `example.com` → `foo`; deeper subdomains are joined in reverse with
/// `-` (`bar.foo.example.com` → `foo-bar`), as the original's subdomain resolver did. Hosts
/// outside the domain, the domain itself and names that are no valid namespace give `None`.
pub fn namespace_from_host(host: &str, api_domain: &str) -> Option<String> {
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let domain = api_domain.trim_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return None;
    }
    let subdomain = host.strip_suffix(&domain)?.strip_suffix('.')?;
    let namespace = subdomain.rsplit('.').collect::<Vec<_>>().join("-");
    micro_core::validate_namespace(&namespace).ok()?;
    Some(namespace)
}

/// Whether the request carries the CSRF header, equal to the CSRF cookie.
pub(crate) fn csrf_checked(headers: &HeaderMap) -> bool {
    let sent = headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok());
    match (sent, cookie(headers, CSRF_COOKIE)) {
        (Some(sent), Some(kept)) => !sent.is_empty() && sent.as_bytes() == kept.as_bytes(),
        _ => false,
    }
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_string())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_under_the_api_domain_name_namespaces() {
        assert_eq!(namespace_from_host("foo.example.com", "example.com").as_deref(), Some("foo"));
        assert_eq!(namespace_from_host("foo.example.com:8080", "example.com").as_deref(), Some("foo"));
        assert_eq!(namespace_from_host("Foo.Example.com.", ".example.com").as_deref(), Some("foo"));
        assert_eq!(namespace_from_host("bar.foo.example.com", "example.com").as_deref(), Some("foo-bar"));
        assert_eq!(namespace_from_host("example.com", "example.com"), None);
        assert_eq!(namespace_from_host("fooexample.com", "example.com"), None);
        assert_eq!(namespace_from_host("foo.other.com", "example.com"), None);
        assert_eq!(namespace_from_host("_x.example.com", "example.com"), None, "not a valid namespace");
        assert_eq!(namespace_from_host("foo.example.com", ""), None);
    }

    #[test]
    fn the_token_cookie_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=b; micro-token=tok; c=d".parse().unwrap());
        assert_eq!(cookie(&headers, TOKEN_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, "nope"), None);
    }

    #[test]
    fn the_token_cookie_counts_only_with_the_csrf_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "micro-token=tok; micro-csrf=abc".parse().unwrap());
        assert!(!csrf_checked(&headers), "a cross-site form sends the cookies but not the header");
        headers.insert(CSRF_HEADER, "abd".parse().unwrap());
        assert!(!csrf_checked(&headers), "the header must repeat the cookie");
        headers.insert(CSRF_HEADER, "abc".parse().unwrap());
        assert!(csrf_checked(&headers));
        let mut no_cookie = HeaderMap::new();
        no_cookie.insert(CSRF_HEADER, "".parse().unwrap());
        no_cookie.insert(header::COOKIE, "micro-csrf=".parse().unwrap());
        assert!(!csrf_checked(&no_cookie));
    }
}
