//! OpenAPI 3.1 documents built from protobuf descriptors: the schema of each message as the one
//! JSON mapping ([`crate::json`]) writes and reads it, and the document around the HTTP
//! operations a caller names. Which paths exist is not decided here: the gateway's resolution
//! table does that (`crates/micro-server/src/gateway/openapi.rs`), and both the gateway's
//! `/openapi.json` and `micro openapi` hand their operations to [`document`].
//!
//! The schemas follow protobuf-JSON as [`crate::json::to_json`] writes it: proto field names,
//! 64-bit integers as decimal strings, enums by name, bytes as base64, the well-known types in
//! their JSON form (a timestamp is an RFC 3339 string, a `Struct` any object …), at most one
//! member of a oneof. Messages are components (`#/components/schemas/<full name>`), so recursive
//! messages are references to themselves. Requests may also use lowerCamel names and numbers
//! for 64-bit integers and enums, which the gateway accepts but the schemas do not spell out.
//!
//! The output is deterministic: the same operations over the same descriptors give the same
//! document (components, paths and tags sorted; properties in field order).

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value, json};

/// The component naming the gateway's error body.
pub const ERROR_SCHEMA: &str = "micro.Error";
/// The security scheme of bearer access tokens.
pub const BEARER_SCHEME: &str = "bearer";
/// The header parameter naming the namespace a request acts in.
pub const NAMESPACE_PARAMETER: &str = "namespace";
/// The response every operation may answer with instead: the gateway's error.
pub const ERROR_RESPONSE: &str = "error";

/// One HTTP operation: a path that reaches `method` of the registered service `service`.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The request path, e.g. `/helloworld/call`.
    pub path: String,
    /// The registered service's name; the operation's tag.
    pub service: String,
    pub method: MethodDescriptor,
    /// Whether the path is the `Call` shortcut `/{service}` of another listed path.
    pub shortcut: bool,
}

/// What the document says about itself.
#[derive(Debug, Clone)]
pub struct Info {
    pub title: String,
    pub version: String,
    pub description: String,
}

/// The OpenAPI 3.1 document of `operations`: a `POST` per path (the request message as a JSON
/// or protobuf body, the response message as the answer; a server stream answers one JSON
/// object per line), the gateway's error as every operation's `default` answer, bearer tokens
/// and the `Micro-Namespace` header. Client-streaming methods, which the gateway serves only over
/// websockets, are left out.
pub fn document(info: &Info, operations: &[Operation]) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Value> = BTreeMap::new();
    let mut tags: BTreeSet<String> = BTreeSet::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut sorted: Vec<&Operation> =
        operations.iter().filter(|op| !op.method.is_client_streaming()).collect();
    sorted.sort_by(|a, b| (&a.path, a.shortcut).cmp(&(&b.path, b.shortcut)));
    for operation in sorted {
        if paths.contains_key(&operation.path) {
            continue;
        }
        tags.insert(operation.service.clone());
        let id = unique_id(&mut ids, operation);
        let item = json!({ "post": operation_object(&mut schemas, operation, id) });
        paths.insert(operation.path.clone(), item);
    }
    let mut components = schemas.finish();
    components.insert(ERROR_SCHEMA.to_string(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": info.title,
            "version": info.version,
            "description": info.description,
        },
        "security": [{ BEARER_SCHEME: [] }, {}],
        "tags": tags.iter().map(|tag| json!({ "name": tag })).collect::<Vec<_>>(),
        "paths": to_object(paths),
        "components": {
            "schemas": to_object(components),
            "securitySchemes": {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from Auth.Token (`micro login`); without one the call is anonymous, as the namespace's rules allow",
                },
            },
            "parameters": {
                NAMESPACE_PARAMETER: {
                    "name": "Micro-Namespace",
                    "in": "header",
                    "required": false,
                    "description": "The namespace the request acts in; by default the API domain's subdomain, the token's issuer, or micro",
                    "schema": { "type": "string" },
                },
            },
            "responses": {
                ERROR_RESPONSE: {
                    "description": "The request failed: Code is the HTTP status, Id the service (or go.micro.api for the gateway)",
                    "content": { "application/json": { "schema": reference(ERROR_SCHEMA) } },
                },
            },
        },
    })
}

fn unique_id(ids: &mut BTreeSet<String>, operation: &Operation) -> String {
    let method = &operation.method;
    let base = if operation.shortcut {
        operation.service.clone()
    } else {
        format!("{}.{}.{}", operation.service, method.parent_service().name(), method.name())
    };
    let mut id = base.clone();
    let mut n = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}_{n}");
        n += 1;
    }
    id
}

fn operation_object(schemas: &mut Schemas, operation: &Operation, id: String) -> Value {
    let method = &operation.method;
    let endpoint = format!("{}.{}", method.parent_service().name(), method.name());
    let streaming = method.is_server_streaming();
    let input = schemas.message(&method.input());
    let output = schemas.message(&method.output());
    let mut description =
        format!("Calls {} (gRPC `/{}/{}`).", endpoint, method.parent_service().full_name(), method.name());
    if operation.shortcut {
        description.push_str(" The Call shortcut: the service's name alone.");
    }
    if streaming {
        description.push_str(
            " A server stream: the answer is one JSON object per line; an error after the first \
             message ends it with an error line.",
        );
    }
    let mut request_content = Map::new();
    request_content.insert("application/json".into(), json!({ "schema": input }));
    let mut response_content = Map::new();
    response_content.insert("application/json".into(), json!({ "schema": output }));
    if !streaming {
        // The gateway takes and answers protobuf bodies for unary calls.
        request_content.insert("application/protobuf".into(), json!({}));
        response_content.insert("application/protobuf".into(), json!({}));
    }
    let mut object = json!({
        "operationId": id,
        "summary": endpoint,
        "description": description,
        "tags": [operation.service],
        "parameters": [{ "$ref": format!("#/components/parameters/{NAMESPACE_PARAMETER}") }],
        "requestBody": { "required": false, "content": request_content },
        "responses": {
            "200": {
                "description": if streaming { "The stream's messages" } else { "The response message" },
                "content": response_content,
            },
            "default": { "$ref": format!("#/components/responses/{ERROR_RESPONSE}") },
        },
    });
    if streaming {
        object["x-micro-stream"] = json!("server");
    }
    object
}

/// `{"Id","Code","Detail","Status"}`, the gateway's `ApiError` body.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "Id": { "type": "string", "description": "The service that failed, or go.micro.api" },
            "Code": { "type": "integer", "description": "The HTTP status" },
            "Detail": { "type": "string" },
            "Status": { "type": "string", "description": "The HTTP status's reason phrase" },
        },
        "required": ["Id", "Code", "Detail", "Status"],
    })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn to_object(map: BTreeMap<String, Value>) -> Value {
    Value::Object(map.into_iter().collect())
}

/// The schemas of messages and enums, built as they are first referenced.
#[derive(Debug, Default)]
pub struct Schemas {
    components: BTreeMap<String, Value>,
}

impl Schemas {
    /// The schema of a value of message `desc`: the well-known types inline, other messages as
    /// a reference to their component (built now if new).
    pub fn message(&mut self, desc: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(desc) {
            return schema;
        }
        let name = desc.full_name().to_string();
        if !self.components.contains_key(&name) {
            // Reserved first: a recursive message meets itself while being built.
            self.components.insert(name.clone(), Value::Null);
            let schema = self.message_object(desc);
            self.components.insert(name.clone(), schema);
        }
        reference(&name)
    }

    /// Every component built so far, by full name.
    pub fn finish(self) -> BTreeMap<String, Value> {
        self.components
    }

    fn message_object(&mut self, desc: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        for field in desc.fields() {
            properties.insert(field.name().to_string(), self.field(&field));
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        // At most one member of each (real) oneof may be given: exactly one of "this member
        // alone" per member, or "none of them".
        let oneofs: Vec<Value> = desc
            .oneofs()
            .filter(|oneof| !oneof.is_synthetic())
            .map(|oneof| {
                let members: Vec<Value> =
                    oneof.fields().map(|field| json!({ "required": [field.name()] })).collect();
                let mut choices = members.clone();
                choices.push(json!({ "not": { "anyOf": members } }));
                json!({ "oneOf": choices })
            })
            .collect();
        if !oneofs.is_empty() {
            schema["allOf"] = Value::Array(oneofs);
        }
        schema
    }

    /// The schema of field `field`'s value (a list or a map as a whole).
    pub fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else { unreachable!("map fields are entry messages") };
            let key = entry.map_entry_key_field().kind();
            let value = self.kind(&entry.map_entry_value_field().kind());
            let mut schema = json!({ "type": "object", "additionalProperties": value });
            if let Some(names) = map_key_names(&key) {
                schema["propertyNames"] = names;
            }
            return schema;
        }
        let single = self.kind(&field.kind());
        if field.is_list() { json!({ "type": "array", "items": single }) } else { single }
    }

    /// The schema of one value of `kind`.
    pub fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Message(desc) => self.message(desc),
            Kind::Enum(desc) => self.enumeration(desc),
            scalar => scalar_schema(scalar),
        }
    }

    fn enumeration(&mut self, desc: &EnumDescriptor) -> Value {
        if desc.full_name() == "google.protobuf.NullValue" {
            return json!({ "type": "null" });
        }
        let name = desc.full_name().to_string();
        self.components.entry(name.clone()).or_insert_with(|| {
            let names: Vec<String> = desc.values().map(|value| value.name().to_string()).collect();
            json!({ "type": "string", "enum": names })
        });
        reference(&name)
    }
}

/// The schema of a scalar kind (not a message or enum).
fn scalar_schema(kind: &Kind) -> Value {
    match kind {
        Kind::Double | Kind::Float => {
            let format = if matches!(kind, Kind::Float) { "float" } else { "double" };
            // Not-a-number and the infinities are strings in protobuf-JSON.
            json!({
                "oneOf": [
                    { "type": "number", "format": format },
                    { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] },
                ],
            })
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX })
        }
        // 64-bit integers are decimal strings, so that no JSON reader loses precision.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        // Standard or URL-safe base64, padding optional: what protobuf-JSON reads.
        Kind::Bytes => json!({
            "type": "string",
            "format": "byte",
            "contentEncoding": "base64",
            "pattern": "^[A-Za-z0-9+/_-]*={0,2}$",
        }),
        Kind::Message(_) | Kind::Enum(_) => unreachable!("scalar kinds only"),
    }
}

/// Map keys are JSON object keys, so always strings; those of integer and bool maps are their
/// values' text.
fn map_key_names(kind: &Kind) -> Option<Value> {
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Some(json!({ "pattern": "^-?[0-9]+$" }))
        }
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => Some(json!({ "pattern": "^[0-9]+$" })),
        Kind::Bool => Some(json!({ "enum": ["true", "false"] })),
        _ => None,
    }
}

/// The JSON form of the well-known types that protobuf-JSON writes specially; `None` for other
/// messages (`google.protobuf` messages without a special form among them).
fn well_known(desc: &MessageDescriptor) -> Option<Value> {
    let wrapped = |kind: Kind| Some(scalar_schema(&kind));
    match desc.full_name() {
        "google.protobuf.Timestamp" => Some(json!({ "type": "string", "format": "date-time" })),
        "google.protobuf.Duration" => {
            // Seconds with an `s` (`1.5s`), not JSON Schema's ISO 8601 `duration` format.
            Some(json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$" }))
        }
        "google.protobuf.FieldMask" => Some(
            json!({ "type": "string", "description": "Field paths in lowerCamel case, comma separated" }),
        ),
        "google.protobuf.Struct" => Some(json!({ "type": "object", "additionalProperties": true })),
        "google.protobuf.Value" => Some(json!({ "description": "Any JSON value" })),
        "google.protobuf.ListValue" => Some(json!({ "type": "array", "items": {} })),
        "google.protobuf.Any" => Some(json!({
            "type": "object",
            "properties": { "@type": { "type": "string", "description": "The type URL of the packed message" } },
            "required": ["@type"],
            "additionalProperties": true,
        })),
        "google.protobuf.Empty" => Some(json!({ "type": "object", "additionalProperties": false })),
        "google.protobuf.DoubleValue" => wrapped(Kind::Double),
        "google.protobuf.FloatValue" => wrapped(Kind::Float),
        "google.protobuf.Int64Value" => wrapped(Kind::Int64),
        "google.protobuf.UInt64Value" => wrapped(Kind::Uint64),
        "google.protobuf.Int32Value" => wrapped(Kind::Int32),
        "google.protobuf.UInt32Value" => wrapped(Kind::Uint32),
        "google.protobuf.BoolValue" => wrapped(Kind::Bool),
        "google.protobuf.StringValue" => wrapped(Kind::String),
        "google.protobuf.BytesValue" => wrapped(Kind::Bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
