//! What a service tells the registry about itself: one node (this process), one endpoint per
//! rpc of every handler, and the descriptors the gateway and CLI translate JSON with.

use std::collections::HashMap;
use std::time::Duration;

use micro_proto::proto_file::{qualified, scalar_keyword};
use micro_proto::registry::{Endpoint, Node, Options, Service, Value};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

/// How deep request/response schemas are described (the original stopped at 3).
const MAX_DEPTH: usize = 3;

/// A served gRPC service: its full name (`helloworld.Helloworld`) and the encoded descriptor
/// set that describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handler {
    pub name: &'static str,
    pub descriptors: &'static [u8],
}

/// Everything the registry gets, but the parts that change per registration.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub name: String,
    pub version: String,
    pub node_id: String,
    pub address: String,
    pub namespace: String,
    pub ttl: Duration,
    pub endpoints: Vec<Endpoint>,
    pub descriptors: Vec<u8>,
    /// The runtime's id of this process (`MICRO_LAUNCH_ID`), put in the node's metadata
    /// (`launch`) so the runtime knows when this very process is registered.
    pub launch: Option<String>,
}

impl Registration {
    /// Describes `handlers` served at `address`.
    pub fn new(
        name: &str,
        version: &str,
        address: std::net::SocketAddr,
        namespace: &str,
        ttl: Duration,
        handlers: &[Handler],
    ) -> Self {
        let set = merged(handlers);
        let endpoints = handlers.iter().flat_map(|handler| endpoints(&set, handler.name)).collect();
        Self {
            name: name.to_string(),
            version: version.to_string(),
            node_id: format!("{name}-{}", crate::uuid()),
            address: address.to_string(),
            namespace: namespace.to_string(),
            ttl,
            endpoints,
            descriptors: set.encode_to_vec(),
            launch: None,
        }
    }

    /// The `registry.Service` to register (and, without endpoints, to deregister).
    pub fn service(&self) -> Service {
        let mut metadata: HashMap<String, String> =
            [("transport", "grpc"), ("protocol", "grpc"), ("server", "grpc"), ("registry", "service")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        if let Some(launch) = &self.launch {
            metadata.insert(micro_core::service_env::LAUNCH_METADATA.to_string(), launch.clone());
        }
        let port = self.address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or_default();
        Service {
            name: self.name.clone(),
            version: self.version.clone(),
            metadata: HashMap::new(),
            endpoints: self.endpoints.clone(),
            nodes: vec![Node { id: self.node_id.clone(), address: self.address.clone(), port, metadata }],
            options: Some(Options {
                ttl: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
                domain: self.namespace.clone(),
            }),
            descriptors: self.descriptors.clone(),
        }
    }
}

/// The union of every handler's descriptor set, each file once.
fn merged(handlers: &[Handler]) -> FileDescriptorSet {
    let mut set = FileDescriptorSet::default();
    for handler in handlers {
        let Ok(decoded) = FileDescriptorSet::decode(handler.descriptors) else {
            tracing::warn!(
                handler = handler.name,
                "the handler's descriptor set does not decode; its endpoints are not described"
            );
            continue;
        };
        for file in decoded.file {
            if !set.file.iter().any(|known| known.name == file.name) {
                set.file.push(file);
            }
        }
    }
    set
}

/// One endpoint per rpc of `service` (`package.Service`): `Service.Method`, its request and
/// response schemas, and `stream: "true"` for streaming rpcs.
pub(crate) fn endpoints(set: &FileDescriptorSet, service: &str) -> Vec<Endpoint> {
    let messages = messages(set);
    let Some(found) = set
        .file
        .iter()
        .find_map(|file| file.service.iter().find(|s| qualified(file.package(), s.name()) == service))
    else {
        return Vec::new();
    };
    found
        .method
        .iter()
        .map(|method| {
            let mut metadata = HashMap::new();
            if method.client_streaming() || method.server_streaming() {
                metadata.insert("stream".to_string(), "true".to_string());
            }
            Endpoint {
                name: format!("{}.{}", found.name(), method.name()),
                request: Some(value(&messages, method.input_type(), 0)),
                response: Some(value(&messages, method.output_type(), 0)),
                metadata,
            }
        })
        .collect()
}

/// Every message of the set by its full name with a leading dot, as fields refer to them.
fn messages(set: &FileDescriptorSet) -> HashMap<String, &DescriptorProto> {
    fn add<'a>(map: &mut HashMap<String, &'a DescriptorProto>, scope: &str, message: &'a DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            add(map, &name, nested);
        }
        map.insert(name, message);
    }
    let mut map = HashMap::new();
    for file in &set.file {
        let scope = if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
        for message in &file.message_type {
            add(&mut map, &scope, message);
        }
    }
    map
}

fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

/// The schema of message `type_name`: its name and, down to [`MAX_DEPTH`], its fields.
fn value(messages: &HashMap<String, &DescriptorProto>, type_name: &str, depth: usize) -> Value {
    let name = short(type_name).to_string();
    let values = match messages.get(type_name) {
        Some(message) if depth < MAX_DEPTH => {
            message.field.iter().map(|field| field_value(messages, field, depth + 1)).collect()
        }
        _ => Vec::new(),
    };
    Value { name: name.clone(), r#type: name, values }
}

fn field_value(
    messages: &HashMap<String, &DescriptorProto>,
    field: &FieldDescriptorProto,
    depth: usize,
) -> Value {
    let repeated = field.label() == Label::Repeated;
    if field.r#type() == Type::Message
        && let Some(entry) = messages.get(field.type_name())
        && entry.options.as_ref().is_some_and(|options| options.map_entry())
    {
        let kind = |number: i32| {
            entry
                .field
                .iter()
                .find(|f| f.number() == number)
                .map(|f| scalar(messages, f, depth).r#type)
                .unwrap_or_default()
        };
        return Value {
            name: field.name().to_string(),
            r#type: format!("map[{}]{}", kind(1), kind(2)),
            values: Vec::new(),
        };
    }
    let mut value = scalar(messages, field, depth);
    value.name = field.name().to_string();
    if repeated {
        value.r#type = format!("[]{}", value.r#type);
    }
    value
}

fn scalar(messages: &HashMap<String, &DescriptorProto>, field: &FieldDescriptorProto, depth: usize) -> Value {
    let name = field.name().to_string();
    let kind = match field.r#type() {
        Type::Message | Type::Group => {
            let mut nested = value(messages, field.type_name(), depth);
            nested.name = name;
            return nested;
        }
        Type::Enum => short(field.type_name()),
        scalar => scalar_keyword(scalar).expect("messages, groups and enums are above"),
    };
    Value { name, r#type: kind.to_string(), values: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> FileDescriptorSet {
        FileDescriptorSet { file: vec![descriptor()] }
    }

    /// The descriptor protox makes of this proto, built by hand to keep protox out of the tests:
    ///
    /// ```text
    /// syntax = "proto3";
    /// package helloworld;
    /// service Helloworld {
    ///     rpc Call(Request) returns (Response) {}
    ///     rpc Stream(StreamingRequest) returns (stream StreamingResponse) {}
    ///     rpc PingPong(stream Ping) returns (stream Pong) {}
    /// }
    /// message Request { string name = 1; repeated string tags = 2; map<string, int64> counts = 3; Inner inner = 4; }
    /// message Inner { Deeper deeper = 1; Kind kind = 2; }
    /// message Deeper { Deepest deepest = 1; }
    /// message Deepest { string x = 1; }
    /// enum Kind { A = 0; }
    /// message Response { string msg = 1; }
    /// message StreamingRequest { int64 count = 1; }
    /// message StreamingResponse { int64 count = 1; }
    /// message Ping { int64 stroke = 1; }
    /// message Pong { int64 stroke = 1; }
    /// ```
    ///
    /// What protox really emits is checked in `endpoints_of_a_compiled_descriptor_set` (the
    /// core protos, compiled by micro-proto's build) and `maps_are_built_as_protox_builds_them`.
    fn descriptor() -> prost_types::FileDescriptorProto {
        use prost_types::{
            DescriptorProto as M, EnumDescriptorProto, FieldDescriptorProto as F, FileDescriptorProto,
            MessageOptions, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let field = |name: &str, number: i32, kind: Type, label: Label, type_name: &str| F {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            label: Some(label as i32),
            type_name: (!type_name.is_empty()).then(|| type_name.to_string()),
            ..Default::default()
        };
        let one = Label::Optional;
        let message =
            |name: &str, fields: Vec<F>| M { name: Some(name.into()), field: fields, ..Default::default() };
        let method = |name: &str, input: &str, output: &str, cs: bool, ss: bool| MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(format!(".helloworld.{input}")),
            output_type: Some(format!(".helloworld.{output}")),
            client_streaming: Some(cs),
            server_streaming: Some(ss),
            ..Default::default()
        };
        let mut request = message(
            "Request",
            vec![
                field("name", 1, Type::String, one, ""),
                field("tags", 2, Type::String, Label::Repeated, ""),
                field("counts", 3, Type::Message, Label::Repeated, ".helloworld.Request.CountsEntry"),
                field("inner", 4, Type::Message, one, ".helloworld.Inner"),
            ],
        );
        let mut entry = message(
            "CountsEntry",
            vec![field("key", 1, Type::String, one, ""), field("value", 2, Type::Int64, one, "")],
        );
        entry.options = Some(MessageOptions { map_entry: Some(true), ..Default::default() });
        request.nested_type.push(entry);
        FileDescriptorProto {
            name: Some("helloworld.proto".into()),
            package: Some("helloworld".into()),
            message_type: vec![
                request,
                message(
                    "Inner",
                    vec![
                        field("deeper", 1, Type::Message, one, ".helloworld.Deeper"),
                        field("kind", 2, Type::Enum, one, ".helloworld.Kind"),
                    ],
                ),
                message("Deeper", vec![field("deepest", 1, Type::Message, one, ".helloworld.Deepest")]),
                message("Deepest", vec![field("x", 1, Type::String, one, "")]),
                message("Response", vec![field("msg", 1, Type::String, one, "")]),
                message("StreamingRequest", vec![field("count", 1, Type::Int64, one, "")]),
                message("StreamingResponse", vec![field("count", 1, Type::Int64, one, "")]),
                message("Ping", vec![field("stroke", 1, Type::Int64, one, "")]),
                message("Pong", vec![field("stroke", 1, Type::Int64, one, "")]),
            ],
            enum_type: vec![EnumDescriptorProto { name: Some("Kind".into()), ..Default::default() }],
            service: vec![ServiceDescriptorProto {
                name: Some("Helloworld".into()),
                method: vec![
                    method("Call", "Request", "Response", false, false),
                    method("Stream", "StreamingRequest", "StreamingResponse", false, true),
                    method("PingPong", "Ping", "Pong", true, true),
                ],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        }
    }

    #[test]
    fn one_endpoint_per_rpc_with_schemas_and_stream_metadata() {
        let endpoints = endpoints(&set(), "helloworld.Helloworld");
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Helloworld.Call", "Helloworld.Stream", "Helloworld.PingPong"]);
        assert!(endpoints[0].metadata.is_empty());
        assert_eq!(endpoints[1].metadata.get("stream").map(String::as_str), Some("true"));
        assert_eq!(endpoints[2].metadata.get("stream").map(String::as_str), Some("true"));

        let request = endpoints[0].request.as_ref().unwrap();
        assert_eq!((request.name.as_str(), request.r#type.as_str()), ("Request", "Request"));
        let fields: Vec<(&str, &str)> =
            request.values.iter().map(|v| (v.name.as_str(), v.r#type.as_str())).collect();
        assert_eq!(
            fields,
            [("name", "string"), ("tags", "[]string"), ("counts", "map[string]int64"), ("inner", "Inner")]
        );
        let inner = &request.values[3];
        assert_eq!(inner.values[1].r#type, "Kind");
        let deeper = &inner.values[0];
        assert_eq!(deeper.r#type, "Deeper");
        let deepest = &deeper.values[0];
        assert_eq!(deepest.r#type, "Deepest");
        assert!(deepest.values.is_empty(), "schemas describe three levels of fields");
        assert_eq!(endpoints[0].response.as_ref().unwrap().values[0].name, "msg");

        assert!(super::endpoints(&set(), "helloworld.Other").is_empty());
    }

    /// The core protos as micro-proto's build compiled them (protox): what a real service's
    /// descriptors look like, not a hand-built copy.
    fn compiled() -> FileDescriptorSet {
        FileDescriptorSet::decode(micro_proto::FILE_DESCRIPTOR_SET).expect("micro-proto embeds a valid set")
    }

    #[test]
    fn endpoints_of_a_compiled_descriptor_set() {
        let set = compiled();
        let blobs = endpoints(&set, "store.BlobStore");
        let names: Vec<&str> = blobs.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["BlobStore.Read", "BlobStore.Write", "BlobStore.Delete"]);
        let streams: Vec<Option<&str>> =
            blobs.iter().map(|e| e.metadata.get("stream").map(String::as_str)).collect();
        assert_eq!(streams, [Some("true"), Some("true"), None], "server, client and no streaming");

        let store = endpoints(&set, "store.Store");
        let read = store.iter().find(|e| e.name == "Store.Read").expect("Store.Read is an endpoint");
        let response = read.response.as_ref().unwrap();
        assert_eq!((response.name.as_str(), response.r#type.as_str()), ("ReadResponse", "ReadResponse"));
        let records = &response.values[0];
        assert_eq!((records.name.as_str(), records.r#type.as_str()), ("records", "[]Record"));
        let fields: Vec<(&str, &str)> =
            records.values.iter().map(|v| (v.name.as_str(), v.r#type.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("key", "string"),
                ("value", "bytes"),
                ("expiry", "int64"),
                ("metadata", "map[string]Field"),
                ("expiry_ms", "int64")
            ]
        );
        let list = store.iter().find(|e| e.name == "Store.List").unwrap();
        assert_eq!(list.metadata.get("stream").map(String::as_str), Some("true"));

        let broker = endpoints(&set, "broker.Broker");
        let subscribe = broker.iter().find(|e| e.name == "Broker.Subscribe").unwrap();
        let message = subscribe.response.as_ref().unwrap();
        assert_eq!(message.values[0].r#type, "map[string]string", "{message:?}");
    }

    /// The hand-built map field of [`descriptor`] has the shape protox gives a map: a repeated
    /// message field naming a nested `<Field>Entry` that is marked `map_entry`, with `key` and
    /// `value` fields.
    #[test]
    fn maps_are_built_as_protox_builds_them() {
        let shape = |file: &prost_types::FileDescriptorProto, message: &str, field: &str| {
            let message = file.message_type.iter().find(|m| m.name() == message).unwrap();
            let field = message.field.iter().find(|f| f.name() == field).unwrap();
            let entry =
                message.nested_type.iter().find(|n| field.type_name().ends_with(&format!(".{}", n.name())));
            let entry = entry.expect("the entry type is nested in the message");
            (
                field.label(),
                field.r#type(),
                entry.options.as_ref().and_then(|o| o.map_entry),
                entry.field.iter().map(|f| (f.name().to_string(), f.number())).collect::<Vec<_>>(),
            )
        };
        let compiled = compiled();
        let broker = compiled.file.iter().find(|f| f.package() == "broker").unwrap();
        assert_eq!(shape(broker, "Message", "header"), shape(&descriptor(), "Request", "counts"));
    }

    #[test]
    fn registration_carries_node_options_and_descriptors() {
        let bytes: &'static [u8] = Box::leak(set().encode_to_vec().into_boxed_slice());
        let handlers = [
            Handler { name: "helloworld.Helloworld", descriptors: bytes },
            Handler { name: "helloworld.Helloworld", descriptors: bytes },
        ];
        let registration = Registration::new(
            "helloworld",
            "latest",
            "127.0.0.1:4321".parse().unwrap(),
            "foo",
            Duration::from_secs(90),
            &handlers[..1],
        );
        let service = registration.service();
        assert_eq!((service.name.as_str(), service.version.as_str()), ("helloworld", "latest"));
        assert_eq!(service.endpoints.len(), 3);
        let node = &service.nodes[0];
        assert!(
            node.id.starts_with("helloworld-") && node.id.len() == "helloworld-".len() + 36,
            "{}",
            node.id
        );
        assert_eq!((node.address.as_str(), node.port), ("127.0.0.1:4321", 4321));
        assert_eq!(node.metadata.get("transport").map(String::as_str), Some("grpc"));
        assert_eq!(node.metadata.get("launch"), None, "started by hand: no launch id");
        let launched = Registration { launch: Some("0123abcd".into()), ..registration.clone() }.service();
        assert_eq!(launched.nodes[0].metadata.get("launch").map(String::as_str), Some("0123abcd"));
        assert_eq!(service.options, Some(Options { ttl: 90, domain: "foo".into() }));
        assert_eq!(FileDescriptorSet::decode(service.descriptors.as_slice()).unwrap().file.len(), 1);
        assert_eq!(merged(&handlers).file.len(), 1, "shared files are kept once");
    }
}
