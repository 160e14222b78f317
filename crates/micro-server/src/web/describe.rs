//! What the dashboard shows of a registered service: its endpoints (the ones `micro <service>`
//! offers, by the CLI's rule) and, for one endpoint, a JSON description of its request message,
//! from which the page builds the endpoint's form.
//!
//! The description (`GET /api/describe/{service}/{endpoint}`) names the input message and lists
//! every message and enum the form can reach, each once, so recursive messages stay finite:
//!
//! ```json
//! {"service": "helloworld", "endpoint": "Helloworld.Call", "input": "helloworld.Request",
//!  "messages": {"helloworld.Request": {"fields": [{"name": "name", "kind": "string"}]}},
//!  "enums": {}, "server_streaming": false, "client_streaming": false, ...}
//! ```
//!
//! A field has a `kind`: a scalar (`string`, `bool`, `bytes` as base64, `double`, `float`,
//! `int32`…`sfixed64`; the 64-bit ones are strings in protobuf-JSON), `enum` or `message` (with
//! `type`, the full name to look up), or one of the well-known types given as text:
//! `timestamp` (RFC 3339), `duration` (`1.5s`), `field_mask` (`a,b.c`) and `json` (`Struct`,
//! `Value`, `ListValue`, `Any`: raw JSON). Wrappers (`google.protobuf.StringValue`…) are their
//! scalar with `wrapper: true`. `repeated: true` marks a list; a map has `map: {key, value}`,
//! each a type as above; `oneof` names the oneof a field is part of, `optional: true` a proto3
//! `optional` field.

use std::collections::VecDeque;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

/// The gateway path that reaches `method` of service `name` (docs/compatibility.md §4.2):
/// the service's dotted name as segments, then handler and method,
/// `/helloworld/Helloworld/Call`, `/foo/bar/Baz/Cat` for service `foo.bar`.
pub fn gateway_path(name: &str, method: &MethodDescriptor) -> String {
    let mut path = String::new();
    for part in name.split('.') {
        path.push('/');
        path.push_str(part);
    }
    format!("{path}/{}/{}", method.parent_service().name(), method.name())
}

/// How `micro <service>` names the command of `endpoint`: `Helloworld.Call` of `helloworld` →
/// `call`, `BlobStore.Read` of `store` → `blob-store read` (the CLI matches words ignoring
/// case, `-` and `_`).
pub fn cli_command(name: &str, endpoint: &str) -> String {
    let (handler, method) = endpoint.split_once('.').unwrap_or((endpoint, ""));
    let normalise = |text: &str| text.replace(['-', '_'], "").to_ascii_lowercase();
    let word = |text: &str| {
        let mut word = String::new();
        for (i, c) in text.char_indices() {
            if c.is_ascii_uppercase() && i > 0 {
                word.push('-');
            }
            word.push(c.to_ascii_lowercase());
        }
        word
    };
    if normalise(handler) == normalise(name) {
        word(method)
    } else {
        format!("{} {}", word(handler), word(method))
    }
}

/// The description of `method`'s request (see the module docs), without the fields the caller
/// adds about where it is reached.
pub fn describe(method: &MethodDescriptor) -> Map<String, Value> {
    let input = method.input();
    let mut messages = Map::new();
    let mut enums = Map::new();
    let mut queue = VecDeque::from([input.clone()]);
    while let Some(message) = queue.pop_front() {
        if messages.contains_key(message.full_name()) {
            continue;
        }
        let fields: Vec<Value> = message
            .fields()
            .map(|field| Value::Object(field_entry(&field, &mut queue, &mut enums)))
            .collect();
        messages.insert(message.full_name().to_string(), json!({ "fields": fields }));
    }
    let mut description = Map::new();
    description.insert("input".into(), json!(input.full_name()));
    description.insert("output".into(), json!(method.output().full_name()));
    description.insert("client_streaming".into(), json!(method.is_client_streaming()));
    description.insert("server_streaming".into(), json!(method.is_server_streaming()));
    description.insert("grpc_path".into(), json!(crate::gateway::resolve::grpc_path(method)));
    description.insert("proto_file".into(), json!(method.parent_file().name()));
    description.insert("messages".into(), Value::Object(messages));
    description.insert("enums".into(), Value::Object(enums));
    description
}

/// One field: its names, its type, and how it repeats.
fn field_entry(
    field: &FieldDescriptor,
    queue: &mut VecDeque<MessageDescriptor>,
    enums: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut entry = Map::new();
    entry.insert("name".into(), json!(field.name()));
    entry.insert("json_name".into(), json!(field.json_name()));
    if field.is_map() {
        let Kind::Message(map_entry) = field.kind() else { unreachable!("map fields are entry messages") };
        let key = type_of(&map_entry.map_entry_key_field().kind(), queue, enums);
        let value = type_of(&map_entry.map_entry_value_field().kind(), queue, enums);
        entry.insert("kind".into(), json!("map"));
        entry.insert("map".into(), json!({ "key": key, "value": value }));
        return entry;
    }
    entry.extend(type_of(&field.kind(), queue, enums));
    if field.is_list() {
        entry.insert("repeated".into(), json!(true));
    }
    match field.containing_oneof() {
        Some(oneof) if oneof.is_synthetic() => {
            entry.insert("optional".into(), json!(true));
        }
        Some(oneof) => {
            entry.insert("oneof".into(), json!(oneof.name()));
        }
        None => {}
    }
    entry
}

/// The `kind` (and `type`, `wrapper`) of a value of `kind`; messages and enums it names are
/// queued to be described.
fn type_of(
    kind: &Kind,
    queue: &mut VecDeque<MessageDescriptor>,
    enums: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let scalar = |name: &str| {
        let mut out = Map::new();
        out.insert("kind".into(), json!(name));
        out
    };
    match kind {
        Kind::Double => return scalar("double"),
        Kind::Float => return scalar("float"),
        Kind::Int32 => return scalar("int32"),
        Kind::Int64 => return scalar("int64"),
        Kind::Uint32 => return scalar("uint32"),
        Kind::Uint64 => return scalar("uint64"),
        Kind::Sint32 => return scalar("sint32"),
        Kind::Sint64 => return scalar("sint64"),
        Kind::Fixed32 => return scalar("fixed32"),
        Kind::Fixed64 => return scalar("fixed64"),
        Kind::Sfixed32 => return scalar("sfixed32"),
        Kind::Sfixed64 => return scalar("sfixed64"),
        Kind::Bool => return scalar("bool"),
        Kind::String => return scalar("string"),
        Kind::Bytes => return scalar("bytes"),
        Kind::Enum(descriptor) => {
            add_enum(descriptor, enums);
            out.insert("kind".into(), json!("enum"));
            out.insert("type".into(), json!(descriptor.full_name()));
        }
        Kind::Message(descriptor) => match well_known(descriptor) {
            Some(WellKnown::Text(name)) => return scalar(name),
            Some(WellKnown::Wrapper(inner)) => {
                let mut out = type_of(&inner, queue, enums);
                out.insert("wrapper".into(), json!(true));
                return out;
            }
            None => {
                queue.push_back(descriptor.clone());
                out.insert("kind".into(), json!("message"));
                out.insert("type".into(), json!(descriptor.full_name()));
            }
        },
    }
    out
}

fn add_enum(descriptor: &EnumDescriptor, enums: &mut Map<String, Value>) {
    if enums.contains_key(descriptor.full_name()) {
        return;
    }
    let values: Vec<Value> =
        descriptor.values().map(|value| json!({ "name": value.name(), "number": value.number() })).collect();
    enums.insert(descriptor.full_name().to_string(), Value::Array(values));
}

/// How a well-known type is entered in a form.
enum WellKnown {
    /// As text of this kind: `timestamp`, `duration`, `field_mask`, `json`.
    Text(&'static str),
    /// As the scalar it wraps.
    Wrapper(Kind),
}

fn well_known(descriptor: &MessageDescriptor) -> Option<WellKnown> {
    Some(match descriptor.full_name() {
        "google.protobuf.Timestamp" => WellKnown::Text("timestamp"),
        "google.protobuf.Duration" => WellKnown::Text("duration"),
        "google.protobuf.FieldMask" => WellKnown::Text("field_mask"),
        "google.protobuf.Struct"
        | "google.protobuf.Value"
        | "google.protobuf.ListValue"
        | "google.protobuf.Any" => WellKnown::Text("json"),
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => {
            WellKnown::Wrapper(descriptor.get_field_by_name("value").map(|field| field.kind())?)
        }
        _ => return None,
    })
}
