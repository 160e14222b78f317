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

/// Resolves a path of the gRPC form `/{package}.{Service}/{Method}` (gRPC-Web and Connect
/// requests): the service registered under the proto package, handler and method as written.
/// `None` for any other shape. The method found must then have exactly this gRPC path
/// (see [`super::call::Connector::target_exact`]).
pub fn resolve_grpc(path: &str) -> Option<Route> {
    let (qualified, method) = path.strip_prefix('/')?.split_once('/')?;
    let (package, handler) = qualified.rsplit_once('.')?;
    let name = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let package_ok = package.split('.').all(name);
    (package_ok && name(handler) && name(method)).then(|| Route {
        service: package.to_string(),
        handler: handler.to_string(),
        method: method.to_string(),
    })
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

/// The paths that reach `method` of the registered service `service` (whose descriptors are
/// `pool`), derived from the table above rather than a second copy of it: the shortest of the
/// table's forms (`/{service}/{method}`, `/{service}/{handler}/{method}`, the service's dotted
/// parts as segments) that [`resolve`] and [`find_method`] lead back to `method`, then the Call
/// shortcut `/{service}` when it leads there too (flagged `true`). Handler and method are
/// written lowerCamel (`/registry/listServices`). Empty when no path of those forms reaches the
/// method (another handler of the same name wins it).
pub fn paths_of(pool: &DescriptorPool, service: &str, method: &MethodDescriptor) -> Vec<(String, bool)> {
    let handler = lower_first(method.parent_service().name());
    let name = lower_first(method.name());
    let reaches = |path: &str| {
        resolve(path)
            .filter(|route| route.service == service)
            .and_then(|route| find_method(pool, &route))
            .is_some_and(|found| found.full_name() == method.full_name())
    };
    let candidates = [
        format!("/{service}/{name}"),
        format!("/{service}/{handler}/{name}"),
        format!("/{}/{handler}/{name}", service.replace('.', "/")),
    ];
    let mut paths: Vec<(String, bool)> =
        candidates.into_iter().find(|path| reaches(path)).map(|path| (path, false)).into_iter().collect();
    let shortcut = format!("/{service}");
    if !paths.is_empty() && reaches(&shortcut) {
        paths.push((shortcut, true));
    }
    paths
}

/// `ListServices` → `listServices`.
fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
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
    fn the_paths_of_a_method_resolve_back_to_it() {
        let pool = DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
        let method = |name: &str| {
            let (service, method) = name.rsplit_once('.').unwrap();
            pool.get_service_by_name(service).unwrap().methods().find(|m| m.name() == method).unwrap()
        };
        let paths = |service: &str, name: &str| paths_of(&pool, service, &method(name));
        let one = |path: &str| vec![(path.to_string(), false)];
        assert_eq!(paths("store", "store.Store.Read"), one("/store/read"));
        assert_eq!(paths("registry", "registry.Registry.ListServices"), one("/registry/listServices"));
        assert_eq!(paths("store", "store.BlobStore.Read"), one("/store/blobStore/read"));
        assert_eq!(paths("auth", "auth.Accounts.List"), one("/auth/accounts/list"));
        // A dotted or versioned service name: its parts as segments where that is what resolves.
        assert_eq!(paths("v1.store", "store.BlobStore.Read"), one("/v1.store/blobStore/read"));
        // Outside its own package a handler name is ambiguous: `/v1.store/store/read` reaches
        // events.Store.Read, so no path is listed for store.Store.Read there.
        assert_eq!(paths("v1.store", "store.Store.Read"), []);
        assert_eq!(paths("foo.bar", "store.BlobStore.Read"), one("/foo.bar/blobStore/read"));
        // Every path of a service named `v1` with a handler reads as a version: none reaches it.
        assert_eq!(paths("v1", "store.Store.Read"), []);
        for (service, name) in
            [("a.b.c", "auth.Rules.Create"), ("my-svc", "config.Config.Get"), ("v2.x", "store.Store.List")]
        {
            for (path, _) in paths(service, name) {
                let route = resolve(&path).unwrap();
                assert_eq!(route.service, service, "{path}");
                assert_eq!(find_method(&pool, &route).unwrap().full_name(), name, "{path}");
            }
            assert!(!paths(service, name).is_empty(), "{service} {name}");
        }
        // The Call shortcut: a handler named after the service with a Call method.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("h.proto"),
            "syntax = \"proto3\"; package helloworld; message M {} \
             service Helloworld { rpc Call(M) returns (M); rpc Stream(M) returns (stream M); }",
        )
        .unwrap();
        let set = protox::compile([dir.path().join("h.proto")], [dir.path()]).unwrap();
        let hello = DescriptorPool::decode(prost::Message::encode_to_vec(&set).as_slice()).unwrap();
        let method = |name: &str| {
            hello
                .get_service_by_name("helloworld.Helloworld")
                .unwrap()
                .methods()
                .find(|m| m.name() == name)
                .unwrap()
        };
        assert_eq!(
            paths_of(&hello, "helloworld", &method("Call")),
            [("/helloworld/call".to_string(), false), ("/helloworld".to_string(), true)]
        );
        assert_eq!(paths_of(&hello, "helloworld", &method("Stream")), one("/helloworld/stream"));
        assert_eq!(
            paths_of(&hello, "greeter", &method("Call")),
            one("/greeter/helloworld/call"),
            "no shortcut: another handler"
        );
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
