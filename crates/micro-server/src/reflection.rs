//! gRPC server reflection on :8081, v1 and v1alpha (docs/clients.md, "buf curl / grpcurl"):
//! the core services served here and the services registered in the caller's namespace, so
//! that `buf curl`, grpcurl and Postman list and call user services by name with no `.proto`
//! files at hand.
//!
//! tonic-reflection serves a set fixed at start-up; here each answer is drawn from the core
//! descriptors (decoded once) and from the registry at the time of the request, so a service
//! that deregisters disappears. A registered set is decoded once too, cached by its bytes
//! ([`DescriptorCache`]). Which registered services a caller sees is exactly what it
//! could list with `Registry.ListServices`: the stream's headers go through the [`Gate`] for
//! that path (namespace, token, the namespace's rules) and the registry service's own read
//! check, nothing decided a second time here.
//!
//! A file is answered with its transitive imports, as the reflection protocol asks. Where a
//! registered file or symbol has the name of a core one, the core one wins.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use micro_core::Context;
use micro_proto::registry::registry_server::Registry as _;
use micro_proto::registry::{ListRequest, Service};
use micro_registry::grpc::RegistryService;
use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::gate::Gate;
use crate::gateway::call::DescriptorCache;

/// The path whose admission decides which registered services a caller sees.
const LIST_PATH: &str = "/registry.Registry/ListServices";

/// The reflection service, served as v1 ([`Reflection::v1`]) and v1alpha ([`Reflection::v1alpha`]).
#[derive(Clone)]
pub struct Reflection {
    inner: Arc<Inner>,
}

struct Inner {
    core: Files,
    /// The core services listed, the reflection services among them.
    listed: Vec<String>,
    gate: Gate,
    registry: RegistryService,
    /// Registered sets decoded; `None` for one that does not decode.
    decoded: DescriptorCache<Option<Arc<Registered>>>,
}

/// One registered descriptor set, decoded.
struct Registered {
    pool: prost_reflect::DescriptorPool,
    files: Files,
}

impl Registered {
    fn decode(descriptors: &[u8]) -> Option<Self> {
        let pool = prost_reflect::DescriptorPool::decode(descriptors).ok()?;
        let mut files = Files::default();
        files.add_set(descriptors).ok()?;
        Some(Self { pool, files })
    }
}

/// What a reflection request asks, whichever version it came in.
enum Query {
    ListServices,
    FileByFilename(String),
    FileContainingSymbol(String),
    FileContainingExtension,
    AllExtensionNumbersOfType(String),
}

/// The answer to a [`Query`], whichever version it goes out in.
enum Answer {
    Services(Vec<String>),
    /// Encoded `FileDescriptorProto`s, the one asked for first.
    Files(Vec<Vec<u8>>),
    ExtensionNumbers(String),
    NotFound(String),
}

/// Reflection's error code for a file or symbol it does not know (`google.rpc.Code.NOT_FOUND`).
const NOT_FOUND: i32 = tonic::Code::NotFound as i32;

impl Reflection {
    /// Reflection over the encoded descriptor sets `core` (first file of a name wins), listing
    /// the services named `listed` and the two reflection services; registered services come
    /// from `registry`, admitted by `gate`.
    pub fn new(
        core: &[&[u8]],
        listed: &[&str],
        gate: Gate,
        registry: Arc<dyn micro_registry::Registry>,
    ) -> Result<Self, prost::DecodeError> {
        let mut files = Files::default();
        for set in core.iter().chain([
            &tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            &tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]) {
            files.add_set(set)?;
        }
        let listed = listed
            .iter()
            .copied()
            .chain([
                tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
                tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
            ])
            .map(str::to_string)
            .collect();
        let inner = Inner {
            core: files,
            listed,
            gate,
            registry: RegistryService::new(registry),
            decoded: DescriptorCache::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The `grpc.reflection.v1.ServerReflection` service.
    pub fn v1(&self) -> v1::Server<Self> {
        v1::Server::new(self.clone())
    }

    /// The `grpc.reflection.v1alpha.ServerReflection` service.
    pub fn v1alpha(&self) -> v1alpha::Server<Self> {
        v1alpha::Server::new(self.clone())
    }

    /// The context a caller with `headers` lists the registry with, `None` when it may not.
    async fn lister(&self, headers: &http::HeaderMap) -> Option<Context> {
        self.inner.gate.admit(headers, LIST_PATH).await.ok().map(|admitted| admitted.context)
    }

    /// The registered services `lister` can list now, with their descriptors decoded, in the
    /// registry's order; those without descriptors or whose descriptors do not decode are left
    /// out.
    async fn registered(&self, lister: Option<&Context>) -> Vec<(Service, Arc<Registered>)> {
        let Some(context) = lister else { return Vec::new() };
        let mut request = Request::new(ListRequest::default());
        request.extensions_mut().insert(context.clone());
        let Ok(listed) = self.inner.registry.list_services(request).await else { return Vec::new() };
        listed
            .into_inner()
            .services
            .into_iter()
            .filter(|service| {
                let builtin = service.metadata.get("core").is_some_and(|core| core == "true");
                !builtin && !service.descriptors.is_empty()
            })
            .filter_map(|service| {
                // Descriptors come from whoever registered: a set that does not decode is skipped.
                let decoded = self.inner.decoded.get_or_decode(&service.descriptors, |bytes| {
                    Ok::<_, std::convert::Infallible>(Registered::decode(bytes).map(Arc::new))
                });
                let Ok(decoded) = decoded;
                decoded.map(|decoded| (service, decoded))
            })
            .collect()
    }

    /// Answers one query for `lister`.
    async fn answer(&self, query: Query, lister: Option<&Context>) -> Answer {
        let registered = match query {
            Query::FileContainingExtension | Query::AllExtensionNumbersOfType(_) => Vec::new(),
            _ => self.registered(lister).await,
        };
        let mut schema = vec![&self.inner.core];
        schema.extend(registered.iter().map(|(_, decoded)| &decoded.files));
        match query {
            Query::ListServices => {
                let listed = &self.inner.listed;
                let mut services = BTreeSet::new();
                for (service, decoded) in &registered {
                    services.extend(
                        micro_proto::dynamic::endpoints(&service.name, service, &decoded.pool)
                            .values()
                            .map(|method| method.parent_service().full_name().to_string())
                            .filter(|name| !listed.contains(name)),
                    );
                }
                Answer::Services(listed.iter().cloned().chain(services).collect())
            }
            Query::FileByFilename(name) => with_imports(&schema, &name)
                .map_or_else(|| Answer::NotFound(format!("file {name:?} not found")), Answer::Files),
            Query::FileContainingSymbol(symbol) => declaring(&schema, &symbol)
                .and_then(|name| with_imports(&schema, name))
                .map_or_else(|| Answer::NotFound(format!("symbol {symbol:?} not found")), Answer::Files),
            Query::FileContainingExtension => Answer::NotFound("extensions are not supported".into()),
            // Some clients (grpcurl) give up when this fails: no type here declares extensions.
            Query::AllExtensionNumbersOfType(name) => Answer::ExtensionNumbers(name),
        }
    }

    /// The replies to the queries of one reflection stream, each answered with the registry
    /// as it is when the query arrives.
    fn replies<Q, R>(
        &self,
        request: Request<Streaming<Q>>,
        query: fn(&Q) -> Option<Query>,
        reply: fn(Q, Answer) -> R,
    ) -> Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>
    where
        Q: Send + 'static,
        R: Send + 'static,
    {
        let headers = request.metadata().clone().into_headers();
        let queries = request.into_inner();
        let this = self.clone();
        let lister = Arc::new(tokio::sync::OnceCell::new());
        Box::pin(queries.then(move |message| {
            let (this, headers, lister) = (this.clone(), headers.clone(), lister.clone());
            async move {
                let message = message?;
                let Some(asked) = query(&message) else {
                    return Err(Status::invalid_argument("a reflection request needs a message_request"));
                };
                let lister = lister.get_or_init(|| this.lister(&headers)).await;
                let answer = this.answer(asked, lister.as_ref()).await;
                Ok(reply(message, answer))
            }
        }))
    }
}

/// The file of `schema` that declares `symbol`. A file of a name an earlier set of `schema`
/// has is not served (the first of a name wins, see [`find`]), so neither are its symbols.
fn declaring<'a>(schema: &[&'a Files], symbol: &str) -> Option<&'a str> {
    schema.iter().enumerate().find_map(|(index, files)| {
        let name = files.symbols.get(symbol)?;
        let shadowed = schema[..index].iter().any(|earlier| earlier.files.contains_key(name));
        (!shadowed).then_some(name.as_str())
    })
}

/// The file named `name` in `schema`: the first set's that has one (core files before
/// registered ones, then the registry's order).
fn find<'a>(schema: &[&'a Files], name: &str) -> Option<&'a File> {
    schema.iter().find_map(|files| files.files.get(name))
}

/// The file named `name` in `schema` and everything it imports, transitively, each once.
fn with_imports(schema: &[&Files], name: &str) -> Option<Vec<Vec<u8>>> {
    let find = |name: &str| find(schema, name);
    find(name)?;
    let mut seen = HashSet::from([name.to_string()]);
    let mut pending = vec![name.to_string()];
    let mut answer = Vec::new();
    while let Some(next) = pending.pop() {
        // An import the set lacks (a registered set without its `google/protobuf` files) is
        // left out: the client reports what it misses.
        let Some(file) = find(&next) else { continue };
        answer.push(file.encoded.to_vec());
        for import in &file.imports {
            if seen.insert(import.clone()) {
                pending.push(import.clone());
            }
        }
    }
    Some(answer)
}

/// Descriptor files by name and the symbols they declare.
#[derive(Default)]
struct Files {
    files: HashMap<String, File>,
    /// Fully qualified symbol (package, message, field, enum, value, service, method) → file.
    symbols: HashMap<String, String>,
}

struct File {
    /// The file as it was registered, custom options included.
    encoded: Arc<[u8]>,
    imports: Vec<String>,
}

/// A `FileDescriptorSet` with each file left encoded, so that the bytes served are those
/// registered (decoding into `prost_types` drops custom options).
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

impl Files {
    /// Adds the files of the encoded set `set` that this does not have yet.
    fn add_set(&mut self, set: &[u8]) -> Result<(), prost::DecodeError> {
        let decoded: Vec<(Vec<u8>, FileDescriptorProto)> = EncodedSet::decode(set)?
            .file
            .into_iter()
            .map(|encoded| FileDescriptorProto::decode(encoded.as_slice()).map(|file| (encoded, file)))
            .collect::<Result<_, _>>()?;
        for (encoded, file) in decoded {
            let name = file.name().to_string();
            if self.files.contains_key(&name) {
                continue;
            }
            let mut symbols = Vec::new();
            declared(&file, &mut symbols);
            for symbol in symbols {
                self.symbols.entry(symbol).or_insert_with(|| name.clone());
            }
            self.files.insert(name, File { encoded: encoded.into(), imports: file.dependency });
        }
        Ok(())
    }
}

/// Every fully qualified name `file` declares.
fn declared(file: &FileDescriptorProto, out: &mut Vec<String>) {
    let package = file.package();
    let qualified = |name: &str| micro_proto::proto_file::qualified(package, name);
    fn message(prefix: &str, descriptor: &DescriptorProto, out: &mut Vec<String>) {
        let name = format!("{prefix}.{}", descriptor.name());
        out.extend(descriptor.field.iter().map(|field| format!("{name}.{}", field.name())));
        out.extend(descriptor.oneof_decl.iter().map(|oneof| format!("{name}.{}", oneof.name())));
        out.extend(descriptor.extension.iter().map(|field| format!("{name}.{}", field.name())));
        descriptor.enum_type.iter().for_each(|nested| enumeration(&name, nested, out));
        descriptor.nested_type.iter().for_each(|nested| message(&name, nested, out));
        out.push(name);
    }
    fn enumeration(prefix: &str, descriptor: &EnumDescriptorProto, out: &mut Vec<String>) {
        // Enum values are scoped like their enum's siblings (protobuf's C++ scoping rule).
        out.extend(descriptor.value.iter().map(|value| format!("{prefix}.{}", value.name())));
        out.push(format!("{prefix}.{}", descriptor.name()));
    }
    if !package.is_empty() {
        out.push(package.to_string());
    }
    // Top-level declarations hang off the package, or off nothing: strip the leading dot then.
    let top = |name: String| name.strip_prefix('.').map(str::to_string).unwrap_or(name);
    let mut nested = Vec::new();
    file.message_type.iter().for_each(|each| message(package, each, &mut nested));
    file.enum_type.iter().for_each(|each| enumeration(package, each, &mut nested));
    out.extend(nested.into_iter().map(top));
    out.extend(file.extension.iter().map(|field| qualified(field.name())));
    for service in &file.service {
        let name = qualified(service.name());
        out.extend(service.method.iter().map(|method| format!("{name}.{}", method.name())));
        out.push(name);
    }
}

/// The two protocol versions differ only in their generated types' module.
macro_rules! version {
    ($version:ident) => {
        pub mod $version {
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            use tonic_reflection::pb::$version::{
                ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse, ListServiceResponse,
                ServerReflectionRequest, ServerReflectionResponse, ServiceResponse,
            };
            pub use tonic_reflection::pb::$version::server_reflection_server::ServerReflectionServer as Server;
            use tonic_reflection::pb::$version::server_reflection_server::ServerReflection;

            use super::*;

            fn query(request: &ServerReflectionRequest) -> Option<Query> {
                Some(match request.message_request.clone()? {
                    MessageRequest::ListServices(_) => Query::ListServices,
                    MessageRequest::FileByFilename(name) => Query::FileByFilename(name),
                    MessageRequest::FileContainingSymbol(symbol) => Query::FileContainingSymbol(symbol),
                    MessageRequest::FileContainingExtension(_) => Query::FileContainingExtension,
                    MessageRequest::AllExtensionNumbersOfType(name) => Query::AllExtensionNumbersOfType(name),
                })
            }

            fn reply(request: ServerReflectionRequest, answer: Answer) -> ServerReflectionResponse {
                let response = match answer {
                    Answer::Services(names) => MessageResponse::ListServicesResponse(ListServiceResponse {
                        service: names.into_iter().map(|name| ServiceResponse { name }).collect(),
                    }),
                    Answer::Files(files) => MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                        file_descriptor_proto: files,
                    }),
                    Answer::ExtensionNumbers(base_type_name) => {
                        MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                            base_type_name,
                            extension_number: Vec::new(),
                        })
                    }
                    Answer::NotFound(error_message) => {
                        MessageResponse::ErrorResponse(ErrorResponse { error_code: NOT_FOUND, error_message })
                    }
                };
                ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request),
                    message_response: Some(response),
                }
            }

            #[tonic::async_trait]
            impl ServerReflection for Reflection {
                type ServerReflectionInfoStream =
                    Pin<Box<dyn Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    Ok(Response::new(self.replies(request, query, reply)))
                }
            }
        }
    };
}

version!(v1);
version!(v1alpha);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use micro_auth::{Auth, AuthOptions};
    use micro_core::{Account, NAMESPACE_HEADER};
    use micro_proto::registry::Service;
    use prost_types::{FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto};

    use super::*;

    /// The descriptors of a service `package.Handler` with one method `Call`, its request and
    /// response in their own file, imported.
    fn descriptors(package: &str, handler: &str) -> Vec<u8> {
        let messages = FileDescriptorProto {
            name: Some(format!("{package}/messages.proto")),
            package: Some(package.into()),
            message_type: vec![DescriptorProto { name: Some("Request".into()), ..Default::default() }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        let service = FileDescriptorProto {
            name: Some(format!("{package}/{package}.proto")),
            package: Some(package.into()),
            dependency: vec![messages.name().into()],
            service: vec![ServiceDescriptorProto {
                name: Some(handler.into()),
                method: vec![MethodDescriptorProto {
                    name: Some("Call".into()),
                    input_type: Some(format!(".{package}.Request")),
                    output_type: Some(format!(".{package}.Request")),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        FileDescriptorSet { file: vec![service, messages] }.encode_to_vec()
    }

    fn service(name: &str, handler: &str) -> Service {
        Service {
            name: name.into(),
            version: "latest".into(),
            descriptors: descriptors(name, handler),
            nodes: vec![micro_proto::registry::Node {
                id: format!("{name}-1"),
                address: "127.0.0.1:1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    async fn ask(reflection: &Reflection, headers: &http::HeaderMap, query: Query) -> Answer {
        let lister = reflection.lister(headers).await;
        reflection.answer(query, lister.as_ref()).await
    }

    async fn listed(reflection: &Reflection, headers: &http::HeaderMap) -> Vec<String> {
        match ask(reflection, headers, Query::ListServices).await {
            Answer::Services(names) => names,
            _ => panic!("ListServices answers a list"),
        }
    }

    /// The names of the files an answer carries, `None` for not found.
    async fn files(reflection: &Reflection, headers: &http::HeaderMap, query: Query) -> Option<Vec<String>> {
        match ask(reflection, headers, query).await {
            Answer::Files(files) => Some(
                files
                    .iter()
                    .map(|file| FileDescriptorProto::decode(file.as_slice()).unwrap().name().to_string())
                    .collect(),
            ),
            Answer::NotFound(_) => None,
            _ => panic!("a file query answers files"),
        }
    }

    #[tokio::test]
    async fn each_namespace_reflects_its_own_services_and_the_core_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(micro_store::memory::MemoryStore::new());
        let options = AuthOptions { disable_admin: true, admin_password: None, loopback_only: true };
        let auth = Arc::new(Auth::open(store, dir.path(), options).await.unwrap());
        let registry: Arc<dyn micro_registry::Registry> =
            Arc::new(micro_registry::MemoryRegistry::new(crate::registry::builtins()));
        let ttl = Duration::from_secs(60);
        registry.register("micro", service("hello", "Greeter"), ttl).await.unwrap();
        registry.register("foo", service("vault", "Secrets"), ttl).await.unwrap();
        let gate = Gate::new(auth.clone(), &["registry.Registry", "store.Store"], None);
        let reflection = Reflection::new(
            &[micro_proto::FILE_DESCRIPTOR_SET],
            &["registry.Registry", "store.Store"],
            gate,
            registry.clone(),
        )
        .unwrap();

        let anonymous = headers(&[]);
        let core = ["registry.Registry", "store.Store", "grpc.reflection.v1.ServerReflection"];
        let micro = listed(&reflection, &anonymous).await;
        assert!(core.iter().all(|name| micro.iter().any(|listed| listed == name)), "{micro:?}");
        assert!(micro.contains(&"hello.Greeter".to_string()), "micro's services are public: {micro:?}");
        assert!(!micro.contains(&"vault.Secrets".to_string()), "never another namespace's: {micro:?}");
        assert_eq!(
            files(&reflection, &anonymous, Query::FileContainingSymbol("hello.Greeter.Call".into())).await,
            Some(vec!["hello/hello.proto".to_string(), "hello/messages.proto".to_string()]),
            "a file comes with its imports"
        );
        assert_eq!(
            files(&reflection, &anonymous, Query::FileContainingSymbol("vault.Secrets".into())).await,
            None,
            "nor its types"
        );
        assert!(
            files(&reflection, &anonymous, Query::FileByFilename("store/store.proto".into())).await.is_some()
        );

        // Naming foo is not enough: its registry is readable by its accounts only.
        let named = headers(&[(NAMESPACE_HEADER, "foo")]);
        assert!(!listed(&reflection, &named).await.contains(&"vault.Secrets".to_string()));
        assert_eq!(files(&reflection, &named, Query::FileByFilename("vault/vault.proto".into())).await, None);

        let tenant = Account {
            id: "ann".into(),
            name: "ann".into(),
            kind: "user".into(),
            issuer: "foo".into(),
            ..Account::default()
        };
        let token = format!("Bearer {}", auth.mint(&tenant, Duration::from_secs(60)).unwrap());
        let foo = headers(&[("authorization", &token)]);
        let theirs = listed(&reflection, &foo).await;
        assert!(theirs.contains(&"vault.Secrets".to_string()), "{theirs:?}");
        assert!(!theirs.contains(&"hello.Greeter".to_string()), "a tenant never sees micro's: {theirs:?}");
        assert!(core.iter().all(|name| theirs.iter().any(|listed| listed == name)), "{theirs:?}");
        assert_eq!(
            files(&reflection, &foo, Query::FileByFilename("vault/vault.proto".into()))
                .await
                .map(|names| names.len()),
            Some(2)
        );
        // Its token cannot act in micro: there it reflects the core services only.
        let elsewhere = headers(&[("authorization", &token), (NAMESPACE_HEADER, "micro")]);
        let refused = listed(&reflection, &elsewhere).await;
        assert!(
            !refused.iter().any(|name| name == "hello.Greeter" || name == "vault.Secrets"),
            "{refused:?}"
        );

        // A service that deregisters disappears.
        registry.deregister("foo", &service("vault", "Secrets")).await.unwrap();
        assert!(!listed(&reflection, &foo).await.contains(&"vault.Secrets".to_string()));
        assert_eq!(files(&reflection, &foo, Query::FileContainingSymbol("vault.Request".into())).await, None);
    }
}
