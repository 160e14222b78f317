use prost::Message as _;
use prost_reflect::DescriptorPool;
use serde_json::json;

use super::*;

const KINDS: &str = r#"
syntax = "proto3";
package t;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; DARK_BLUE = 2; }
message Tree { string name = 1; repeated Tree children = 2; Tree parent = 3; }
message All {
  string text = 1; bytes data = 2; bool flag = 3;
  int32 i32 = 4; sint32 s32 = 5; sfixed32 sf32 = 6; uint32 u32 = 7; fixed32 fx32 = 8;
  int64 i64 = 9; sint64 s64 = 10; sfixed64 sf64 = 11; uint64 u64 = 12; fixed64 fx64 = 13;
  float real32 = 14; double real64 = 15;
  Color color = 16; Tree tree = 17;
  repeated string names = 18; repeated int64 ids = 19; repeated Color colors = 20;
  map<string, int64> counts = 21; map<int32, Tree> by_id = 22; map<bool, string> by_flag = 23;
  map<uint64, bytes> by_u64 = 24;
  google.protobuf.Timestamp at = 25; google.protobuf.Duration ttl = 26;
  google.protobuf.FieldMask mask = 27; google.protobuf.Struct meta = 28;
  google.protobuf.Value any_value = 29; google.protobuf.ListValue list = 30;
  google.protobuf.Any packed = 31; google.protobuf.Empty nothing = 32;
  google.protobuf.Int64Value big = 33; google.protobuf.UInt32Value small = 34;
  google.protobuf.StringValue label = 35; google.protobuf.BoolValue on = 36;
  google.protobuf.BytesValue blob = 37; google.protobuf.DoubleValue ratio = 38;
  google.protobuf.NullValue null = 39;
  oneof choice { string by_name = 40; int64 by_number = 41; Tree by_tree = 42; }
  optional string maybe = 43;
}
service Things {
  rpc Get(All) returns (Tree);
  rpc Watch(Tree) returns (stream Tree);
  rpc Upload(stream Tree) returns (google.protobuf.Empty);
}
"#;

fn pool() -> DescriptorPool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.proto"), KINDS).unwrap();
    let set = protox::compile([dir.path().join("t.proto")], [dir.path()]).unwrap();
    DescriptorPool::decode(set.encode_to_vec().as_slice()).unwrap()
}

#[test]
fn every_kind_of_field_has_its_protobuf_json_schema() {
    let pool = pool();
    let mut schemas = Schemas::default();
    let all = pool.get_message_by_name("t.All").unwrap();
    assert_eq!(schemas.message(&all), json!({ "$ref": "#/components/schemas/t.All" }));
    let components = schemas.finish();
    let properties = &components["t.All"]["properties"];
    let int64 = json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" });
    let uint64 = json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" });
    let int32 = json!({ "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX });
    let uint32 = json!({ "type": "integer", "format": "uint32", "minimum": 0, "maximum": u32::MAX });
    let bytes = json!({
        "type": "string",
        "format": "byte",
        "contentEncoding": "base64",
        "pattern": "^[A-Za-z0-9+/_-]*={0,2}$",
    });
    let tree = json!({ "$ref": "#/components/schemas/t.Tree" });
    let color = json!({ "$ref": "#/components/schemas/t.Color" });
    let expected = [
        ("text", json!({ "type": "string" })),
        ("data", bytes.clone()),
        ("flag", json!({ "type": "boolean" })),
        ("i32", int32.clone()),
        ("s32", int32.clone()),
        ("sf32", int32),
        ("u32", uint32.clone()),
        ("fx32", uint32.clone()),
        ("i64", int64.clone()),
        ("s64", int64.clone()),
        ("sf64", int64.clone()),
        ("u64", uint64.clone()),
        ("fx64", uint64.clone()),
        ("color", color.clone()),
        ("tree", tree.clone()),
        ("names", json!({ "type": "array", "items": { "type": "string" } })),
        ("ids", json!({ "type": "array", "items": int64.clone() })),
        ("colors", json!({ "type": "array", "items": color })),
        ("counts", json!({ "type": "object", "additionalProperties": int64.clone() })),
        (
            "by_id",
            json!({ "type": "object", "additionalProperties": tree, "propertyNames": { "pattern": "^-?[0-9]+$" } }),
        ),
        (
            "by_flag",
            json!({
                "type": "object",
                "additionalProperties": { "type": "string" },
                "propertyNames": { "enum": ["true", "false"] },
            }),
        ),
        (
            "by_u64",
            json!({ "type": "object", "additionalProperties": bytes.clone(), "propertyNames": { "pattern": "^[0-9]+$" } }),
        ),
        ("at", json!({ "type": "string", "format": "date-time" })),
        ("meta", json!({ "type": "object", "additionalProperties": true })),
        ("list", json!({ "type": "array", "items": {} })),
        ("nothing", json!({ "type": "object", "additionalProperties": false })),
        ("big", int64.clone()),
        ("small", uint32),
        ("label", json!({ "type": "string" })),
        ("on", json!({ "type": "boolean" })),
        ("blob", bytes),
        ("null", json!({ "type": "null" })),
        ("by_number", int64),
        ("maybe", json!({ "type": "string" })),
    ];
    for (field, schema) in expected {
        assert_eq!(properties[field], schema, "{field}");
    }
    assert_eq!(properties["ttl"]["type"], "string");
    assert!(properties["ttl"]["pattern"].as_str().unwrap().ends_with("s$"), "a duration is seconds");
    assert_eq!(properties["mask"]["type"], "string");
    assert_eq!(properties["any_value"].get("type"), None, "a Value is any JSON");
    assert_eq!(properties["packed"]["required"], json!(["@type"]));
    let double = &properties["real64"]["oneOf"];
    assert_eq!(double[0], json!({ "type": "number", "format": "double" }));
    assert_eq!(double[1]["enum"], json!(["NaN", "Infinity", "-Infinity"]));
    assert_eq!(properties["real32"]["oneOf"][0]["format"], "float");
    assert_eq!(properties["ratio"], properties["real64"], "a wrapper is its value");
    // Properties keep the proto field names, in field order, as the gateway writes them.
    let names: Vec<&String> = properties.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 43);

    // Enums by name; one real oneof (not `optional`'s synthetic one): one member or none.
    assert_eq!(
        components["t.Color"],
        json!({ "type": "string", "enum": ["COLOR_UNSPECIFIED", "RED", "DARK_BLUE"] })
    );
    let members =
        json!([{ "required": ["by_name"] }, { "required": ["by_number"] }, { "required": ["by_tree"] }]);
    let mut choices = members.as_array().unwrap().clone();
    choices.push(json!({ "not": { "anyOf": members } }));
    assert_eq!(components["t.All"]["allOf"], json!([{ "oneOf": choices }]));

    // A recursive message refers to its own component; well-known types have none.
    let tree = &components["t.Tree"]["properties"];
    assert_eq!(tree["parent"], json!({ "$ref": "#/components/schemas/t.Tree" }));
    assert_eq!(tree["children"]["items"], json!({ "$ref": "#/components/schemas/t.Tree" }));
    assert_eq!(components.keys().collect::<Vec<_>>(), ["t.All", "t.Color", "t.Tree"]);
}

#[test]
fn the_document_describes_operations_deterministically() {
    let pool = pool();
    let service = pool.get_service_by_name("t.Things").unwrap();
    let method = |name: &str| service.methods().find(|m| m.name() == name).unwrap();
    let operation = |path: &str, name: &str, shortcut: bool| Operation {
        path: path.into(),
        service: "things".into(),
        method: method(name),
        shortcut,
    };
    let operations = vec![
        operation("/things/watch", "Watch", false),
        operation("/things/get", "Get", false),
        operation("/things", "Get", true),
        operation("/things/upload", "Upload", false),
    ];
    let info = Info { title: "t".into(), version: "1".into(), description: "d".into() };
    let doc = document(&info, &operations);
    let mut reversed = operations.clone();
    reversed.reverse();
    let again = serde_json::to_vec(&document(&info, &reversed)).unwrap();
    assert_eq!(serde_json::to_vec(&doc).unwrap(), again, "same operations, same bytes");

    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/things", "/things/get", "/things/watch"], "client streams are websocket-only");
    let get = &doc["paths"]["/things/get"]["post"];
    assert_eq!(get["operationId"], "things.Things.Get");
    assert_eq!(doc["paths"]["/things"]["post"]["operationId"], "things");
    assert_eq!(
        get["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/t.All"
    );
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/t.Tree"
    );
    assert!(get["requestBody"]["content"].get("application/protobuf").is_some());
    assert_eq!(get["responses"]["default"]["$ref"], "#/components/responses/error");
    assert_eq!(get["parameters"][0]["$ref"], "#/components/parameters/namespace");
    let watch = &doc["paths"]["/things/watch"]["post"];
    assert_eq!(watch["x-micro-stream"], "server");
    assert!(watch["requestBody"]["content"].get("application/protobuf").is_none(), "streams take JSON only");

    let components = &doc["components"];
    assert_eq!(components["parameters"]["namespace"]["name"], "Micro-Namespace");
    assert_eq!(components["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(components["schemas"][ERROR_SCHEMA]["required"], json!(["Id", "Code", "Detail", "Status"]));
    assert_eq!(doc["security"], json!([{ "bearer": [] }, {}]), "a token is optional");
    assert_eq!(doc["tags"], json!([{ "name": "things" }]));
}

#[test]
fn core_messages_have_schemas() {
    let pool = DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
    let mut schemas = Schemas::default();
    for message in pool.all_messages() {
        schemas.message(&message);
    }
    let components = schemas.finish();
    assert!(components.values().all(|schema| !schema.is_null()), "every reserved component is built");
    let record = &components["store.Record"]["properties"];
    assert_eq!(record["value"]["contentEncoding"], "base64");
    assert_eq!(record["expiry"]["format"], "int64");
}
