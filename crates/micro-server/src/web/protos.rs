//! The `.proto` files of a service, downloaded from its page (docs/web.md#protos): what `micro
//! proto <service>` writes, built by the same function
//! ([`micro_proto::proto_file::service_protos`]) from the descriptors the service registered.
//!
//! - `GET /protos/{service}`: every file, as `<service>-protos.tar.gz` (import paths kept, so
//!   it unpacks to the folder `micro proto --out` writes);
//! - `GET /protos/{service}/{*file}`: one file, as text.
//!
//! Both are reads, like the pages: the session cookie is the credential (a link cannot carry
//! the CSRF header, and another origin cannot read the answer), and the admission decision is
//! the gateway's for `registry.Registry/GetService` in the namespace asked for (`?namespace=`),
//! as for the service's page: a tenant gets only its own namespace's services.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use micro_proto::proto_file::{ServiceProtosError, service_protos};

use super::{PageQuery, Web, registry_route, web_error};
use crate::gateway::ApiError;

/// The routes of the downloads.
pub fn routes() -> Router<Web> {
    Router::new().route("/protos/{service}", get(archive)).route("/protos/{service}/{*file}", get(one_file))
}

/// The files of `service` in the namespace the request asks for, after the admission decision;
/// or the answer to give instead (the login page without a session, the page with the
/// gateway's refusal, 404), as for the service's page ([`Web::viewer_of`]).
async fn files(
    web: &Web,
    headers: &HeaderMap,
    namespace: Option<String>,
    service: &str,
) -> Result<Vec<(String, String)>, Response> {
    let viewer = web.viewer_of(headers, namespace, registry_route("GetService")).await?;
    let namespace = viewer.namespace;
    let versions = web.inner.registry.get(&namespace, service);
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("service {service} not found")).into_response());
    }
    service_protos(service, &versions).map_err(|err| {
        let status = match err {
            ServiceProtosError::NoDescriptors(_) | ServiceProtosError::NoEndpoints(_) => {
                StatusCode::NOT_FOUND
            }
            ServiceProtosError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        web_error(status, err.to_string())
    })
}

/// A download: `body` as `content_type`, saved as `filename`, never cached.
fn download(body: Vec<u8>, content_type: &'static str, filename: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Service and file names are ASCII identifiers and paths; anything else is left to the
    // browser to name.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    out.insert(header::CONTENT_DISPOSITION, disposition);
    response
}

/// `GET /protos/{service}`: every file as a gzipped tar.
async fn archive(
    State(web): State<Web>,
    Path(service): Path<String>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let files = match files(&web, &headers, query.namespace, &service).await {
        Ok(files) => files,
        Err(response) => return response,
    };
    match tarball(&files) {
        Ok(bytes) => download(bytes, "application/gzip", &format!("{}-protos.tar.gz", safe_name(&service))),
        Err(err) => web_error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot pack the protos: {err}")),
    }
}

/// `GET /protos/{service}/{*file}`: one file, by its import path.
async fn one_file(
    State(web): State<Web>,
    Path((service, file)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let files = match files(&web, &headers, query.namespace, &service).await {
        Ok(files) => files,
        Err(response) => return response,
    };
    match files.into_iter().find(|(name, _)| *name == file) {
        Some((name, source)) => {
            let base = name.rsplit('/').next().unwrap_or(&name);
            download(source.into_bytes(), "text/plain; charset=utf-8", &safe_name(base))
        }
        None => ApiError::not_found(format!("service {service} has no proto file {file}")).into_response(),
    }
}

/// `name` with anything but ASCII letters, digits, `.`, `-` and `_` replaced by `_`: safe in a
/// `Content-Disposition` file name.
fn safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// `files` (import path, source) as a gzipped tar: regular files, mode 0644, time 0, so the
/// same descriptors give the same bytes.
pub fn tarball(files: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    for (name, source) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(source.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        tar.append_data(&mut header, name, source.as_bytes())?;
    }
    tar.into_inner()?.finish()
}
