//! `GET /openapi.json` and `GET /{service}/openapi.json`: the OpenAPI 3.1 document of what the
//! gateway serves, live from the registry (docs/clients.md, "OpenAPI").
//!
//! Who sees what is the decision of listing the registry through the gateway: the document is
//! built from the answer of `Registry.ListServices`, called as `/registry/listServices` would
//! call it (the namespace's rules, then the :8081 gate and the registry's own check), so a
//! caller sees exactly the services it could list. The paths are the resolution table's
//! ([`resolve::paths_of`]), the endpoints of each service the ones its descriptors let a caller
//! encode ([`micro_proto::dynamic::endpoints`]), the schemas micro-proto's
//! ([`micro_proto::openapi`]). `micro openapi` builds the same bytes with [`document`] from the
//! same `ListServices` answer, over gRPC.

use std::collections::HashMap;

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;
use micro_proto::openapi::{Info, Operation};
use micro_proto::registry::{ListResponse, Service};
use prost_reflect::{DescriptorPool, DynamicMessage};

use super::errors::ApiError;
use super::resolve::{self, Route};
use super::{Gateway, json_response};

/// The file name of the document, at the root and under each service.
pub const DOCUMENT: &str = "openapi.json";

/// Which document a request asks for: `Some(None)` for every service (`/openapi.json`),
/// `Some(Some(name))` for one (`/{name}/openapi.json`), `None` when it asks for none (another
/// path, or a method other than `GET` and `HEAD`, which the gateway routes as usual).
pub fn requested(method: &Method, path: &str) -> Option<Option<String>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let rest = path.strip_prefix('/')?.strip_suffix(DOCUMENT)?;
    match rest {
        "" => Some(None),
        service => {
            let service = service.strip_suffix('/')?;
            (!service.is_empty() && !service.contains('/')).then(|| Some(service.to_string()))
        }
    }
}

/// The HTTP operations the gateway serves for `services`: for every endpoint of every version
/// with descriptors, its paths by the resolution table. Versions whose descriptors do not
/// decode are left out (the gateway cannot call them either).
pub fn operations<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<Operation> {
    let mut sorted: Vec<&Service> = services.into_iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let mut pools: HashMap<&[u8], Option<DescriptorPool>> = HashMap::new();
    let mut operations = Vec::new();
    for service in sorted {
        if service.descriptors.is_empty() {
            continue;
        }
        let pool = pools
            .entry(service.descriptors.as_slice())
            .or_insert_with(|| DescriptorPool::decode(service.descriptors.as_slice()).ok());
        let Some(pool) = pool else { continue };
        for method in micro_proto::dynamic::endpoints(&service.name, service, pool).into_values() {
            for (path, shortcut) in resolve::paths_of(pool, &service.name, &method) {
                operations.push(Operation {
                    path,
                    service: service.name.clone(),
                    method: method.clone(),
                    shortcut,
                });
            }
        }
    }
    operations
}

/// The document of `services` (as `Registry.ListServices` answered in `namespace`), or of the
/// one named `only`, as pretty JSON ending in a newline; `None` when `only` is not among them.
pub fn document(namespace: &str, services: &[Service], only: Option<&str>) -> Option<Vec<u8>> {
    let (title, description, services) = match only {
        None => (
            format!("micro API: namespace {namespace}"),
            format!(
                "Every service of namespace {namespace}, as the micro gateway serves it: POST a JSON (or \
                 protobuf) request body; query parameters are fields too. Built from the registry."
            ),
            services.iter().collect(),
        ),
        Some(name) => {
            let own: Vec<&Service> = services.iter().filter(|service| service.name == name).collect();
            if own.is_empty() {
                return None;
            }
            (
                format!("micro API: {name}"),
                format!(
                    "Service {name} of namespace {namespace}, as the micro gateway serves it: POST a JSON \
                     (or protobuf) request body; query parameters are fields too. Built from the registry."
                ),
                own,
            )
        }
    };
    let info = Info { title, version: micro_core::VERSION.to_string(), description };
    let document = micro_proto::openapi::document(&info, &operations(services));
    let mut bytes = serde_json::to_vec_pretty(&document).expect("a JSON value serialises");
    bytes.push(b'\n');
    Some(bytes)
}

impl Gateway {
    /// Answers `/openapi.json` (`only` = `None`) or `/{only}/openapi.json`.
    pub(super) async fn openapi(&self, only: Option<String>, request: Request) -> Result<Response, ApiError> {
        let (parts, _) = request.into_parts();
        // Exactly what `/registry/listServices` does, up to the answer.
        let route =
            Route { service: "registry".into(), handler: "Registry".into(), method: "ListServices".into() };
        let (target, metadata, namespace) = self.admit(&route, &parts, None).await?;
        let message = DynamicMessage::new(target.method.input());
        let listed: ListResponse =
            self.unary(&target, metadata, message).await?.transcode_to().map_err(|err| {
                ApiError::unshowable_answer(
                    &target.service,
                    &super::body::Error::Message { reason: err.to_string() },
                )
            })?;
        let bytes = document(&namespace, &listed.services, only.as_deref())
            .ok_or_else(|| ApiError::not_found(format!("service {} not found", only.unwrap_or_default())))?;
        Ok(json_response(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_the_document_paths_ask_for_it() {
        let get = |path: &str| requested(&Method::GET, path);
        assert_eq!(get("/openapi.json"), Some(None));
        assert_eq!(get("/helloworld/openapi.json"), Some(Some("helloworld".into())));
        assert_eq!(requested(&Method::HEAD, "/store/openapi.json"), Some(Some("store".into())));
        assert_eq!(requested(&Method::POST, "/openapi.json"), None);
        for other in ["/", "/openapi", "/a/b/openapi.json", "//openapi.json", "/xopenapi.json", "/helloworld"]
        {
            assert_eq!(get(other), None, "{other}");
        }
    }

    #[test]
    fn core_services_are_described_by_their_gateway_paths() {
        let services = crate::registry::builtins();
        let operations = operations(&services);
        let paths: Vec<&str> = operations.iter().map(|op| op.path.as_str()).collect();
        for path in [
            "/store/read",
            "/store/blobStore/read",
            "/registry/listServices",
            "/auth/accounts/list",
            "/auth/token",
        ] {
            assert!(paths.contains(&path), "{path} in {paths:?}");
        }
        // Every path leads back, through the gateway's own resolution, to its operation.
        let pool = DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
        for operation in &operations {
            let route = resolve::resolve(&operation.path).unwrap();
            assert_eq!(route.service, operation.service);
            let found = resolve::find_method(&pool, &route).unwrap();
            assert_eq!(found.full_name(), operation.method.full_name(), "{}", operation.path);
        }
        // Core services list their own package's handlers only.
        assert!(!paths.iter().any(|path| path.starts_with("/store/auth")), "{paths:?}");

        let all = document("micro", &services, None).unwrap();
        assert_eq!(all, document("micro", &services, None).unwrap(), "deterministic");
        let json: serde_json::Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(json["info"]["title"], "micro API: namespace micro");
        assert!(json["paths"]["/store/read"]["post"].is_object());
        let store: serde_json::Value =
            serde_json::from_slice(&document("micro", &services, Some("store")).unwrap()).unwrap();
        assert!(store["paths"].as_object().unwrap().keys().all(|path| path.starts_with("/store/")));
        assert_eq!(document("micro", &services, Some("nope")), None);
    }
}
