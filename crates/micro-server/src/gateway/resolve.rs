//! Path → service and endpoint: the original's default `micro` resolver (docs/compatibility.md §4.2), and
//! finding the resolved endpoint in the descriptors a service registered.

use prost_reflect::{DescriptorPool, MethodDescriptor};

/// Where a request path leads: a service name and an endpoint `Handler.Method`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    pub handler: String,
    pub method: String,
}

impl Route {
    /// The endpoint as rules and errors name it, e.g. `Helloworld.Call`.
    pub fn endpoint(&self) -> String {
        format!("{}.{}", self.handler, self.method)
    }
}

/// Resolves a request path by the table of docs/compatibility.md §4.2. `None` for paths that name no
/// service (`/`, or segments that clean away to nothing).
///
/// - one part: `/foo` → `foo`, `Foo.Call` (the Call shortcut);
/// - two parts: `/foo/bar` → `foo`, `Foo.Bar`;
/// - three parts with a `vN` first part: `/v1/foo/bar` → `v1.foo`, `Foo.Bar`;
/// - otherwise the last two parts are handler and method, everything before them the service,
///   joined with `.` (`/foo/bar/baz/cat` → `foo.bar`, `Baz.Cat`; `/foo/foo/bar` → `foo`, `Foo.Bar`).
///
/// Handler and method parts are Title-cased word by word on `-` (`baz-xyz` → `BazXyz`),
/// keeping camel case after the first letter (`fooBar` → `FooBar`).
pub fn resolve(path: &str) -> Option<Route> {
    let parts = clean(path);
    let route = |service: String, handler: &str, method: &str| Route {
        service,
        handler: title_case(handler),
        method: title_case(method),
    };
    match parts.as_slice() {
        [] => None,
        [service] => Some(route(service.to_string(), service, "call")),
        [service, method] => Some(route(service.to_string(), service, method)),
        [version, service, method] if is_version(version) => {
            Some(route(format!("{version}.{service}"), service, method))
        }
        [service @ .., handler, method] => Some(route(service.join("."), handler, method)),
    }
}

/// The path's segments after cleaning (`.` dropped, `..` pops, empty segments dropped), as
/// Go's `path.Clean` would leave them.
fn clean(path: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts
}

/// `v` followed by one or more digits.
fn is_version(part: &str) -> bool {
    part.strip_prefix('v')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// `baz-xyz` → `BazXyz`, `fooBar` → `FooBar`, `call` → `Call`.
pub fn title_case(part: &str) -> String {
    part.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// Finds `route`'s endpoint among the gRPC services of `pool`, comparing handler and method
/// names case-insensitively (`/registry/listservices` reaches `ListServices`). A handler in the
/// proto package named after the service wins over a same-named handler of another package, so
/// core services, whose descriptor set holds every core proto, resolve to their own.
pub fn find_method(pool: &DescriptorPool, route: &Route) -> Option<MethodDescriptor> {
    let matching = |own_package: bool| {
        pool.services()
            .filter(move |service| {
                service.name().eq_ignore_ascii_case(&route.handler)
                    && (service.package_name() == route.service) == own_package
            })
            .find_map(|service| {
                // An exact method name first: protos may hold methods differing only in case.
                let methods = || service.methods();
                methods()
                    .find(|method| method.name() == route.method)
                    .or_else(|| methods().find(|method| method.name().eq_ignore_ascii_case(&route.method)))
            })
    };
    matching(true).or_else(|| matching(false))
}

/// The gRPC path of `method`: `/<package>.<Service>/<Method>`, which tonic servers dispatch on
/// (and Go services, which dispatch on the endpoint alone, accept too).
pub fn grpc_path(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(service: &str, endpoint: &str) -> Option<Route> {
        let (handler, method) = endpoint.split_once('.').unwrap();
        Some(Route { service: service.into(), handler: handler.into(), method: method.into() })
    }

    #[test]
    fn every_row_of_the_resolution_table() {
        let table = [
            ("/foo", "foo", "Foo.Call"),
            ("/foo/bar", "foo", "Foo.Bar"),
            ("/foo/foo/bar", "foo", "Foo.Bar"),
            ("/foo/bar/baz", "foo", "Bar.Baz"),
            ("/foo/bar/baz-xyz", "foo", "Bar.BazXyz"),
            ("/foo/fooBar/bazCat", "foo", "FooBar.BazCat"),
            ("/foo/bar/baz/cat", "foo.bar", "Baz.Cat"),
            ("/foo/bar/baz/cat/car", "foo.bar.baz", "Cat.Car"),
            ("/v1/foo/bar", "v1.foo", "Foo.Bar"),
            ("/v1/foo/bar/baz", "v1.foo", "Bar.Baz"),
            ("/v1/foo/bar/baz/cat", "v1.foo.bar", "Baz.Cat"),
        ];
        for (path, service, endpoint) in table {
            assert_eq!(resolve(path), route(service, endpoint), "{path}");
        }
    }

    #[test]
    fn paths_are_cleaned_and_parts_title_cased() {
        assert_eq!(resolve("/"), None);
        assert_eq!(resolve(""), None);
        assert_eq!(resolve("/foo/.."), None);
        assert_eq!(resolve("//foo//bar/"), route("foo", "Foo.Bar"));
        assert_eq!(resolve("/foo/./x/../bar"), route("foo", "Foo.Bar"));
        assert_eq!(resolve("/helloworld"), route("helloworld", "Helloworld.Call"));
        assert_eq!(resolve("/registry/listServices"), route("registry", "Registry.ListServices"));
        assert_eq!(resolve("/my-service/do-it"), route("my-service", "MyService.DoIt"));
        // Only `v` and digits make a version: `vx` is a service.
        assert_eq!(resolve("/vx/foo/bar"), route("vx", "Foo.Bar"));
        assert_eq!(resolve("/v/foo/bar"), route("v", "Foo.Bar"));
        assert_eq!(resolve("/v2/foo"), route("v2", "V2.Foo"));

        assert_eq!(title_case("baz-xyz"), "BazXyz");
        assert_eq!(title_case("fooBar"), "FooBar");
        assert_eq!(title_case("a--b"), "AB");
        assert_eq!(route("x", "A.B").unwrap().endpoint(), "A.B");
    }

    #[test]
    fn endpoints_are_found_in_descriptors_case_insensitively() {
        let pool = DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
        let find = |path: &str| find_method(&pool, &resolve(path).unwrap()).map(|m| grpc_path(&m));
        assert_eq!(find("/store/read").as_deref(), Some("/store.Store/Read"));
        assert_eq!(find("/registry/listservices").as_deref(), Some("/registry.Registry/ListServices"));
        assert_eq!(find("/auth/accounts/list").as_deref(), Some("/auth.Accounts/List"));
        // `Read` exists on store.BlobStore too; the path names the handler.
        assert_eq!(find("/store/blob-store/read").as_deref(), Some("/store.BlobStore/Read"));
        assert_eq!(find("/store"), None, "store has no Store.Call");
        assert_eq!(find("/store/nope"), None);
    }
}
