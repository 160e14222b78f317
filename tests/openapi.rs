//! The live OpenAPI document end to end: a real server with the helloworld example registered,
//! `/openapi.json` and `micro openapi` giving the same bytes, the document accepted by
//! `openapi-spec-validator`, the listing's admission, and a property check with Python's
//! `jsonschema`: random messages of every described type, written by the gateway's JSON mapping
//! (and read back by it), validate against their schemas, as do the gateway's real answers.
//! The Python tools come from the venv scripts/services installs (`MICRO_TEST_PYTHON`). Then
//! TypeScript: the types `openapi-typescript` generates from the document compile with
//! `tsc --strict`, and say what the gateway speaks (npm, `MICRO_TEST_NODE_TOOLS`).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{Server, Service, http_request, json, needed_env};
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value as Field};
use serde_json::{Value, json};

const NS: [(&str, &str); 1] = [("Micro-Namespace", "micro")];

#[test]
fn the_live_document_is_valid_and_its_schemas_hold_for_the_gateways_json() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);

    let (status, all) = http_request(&server.http, "GET", "/openapi.json", &NS, b"");
    assert_eq!(status, 200, "{all}");
    let (_, again) = http_request(&server.http, "GET", "/openapi.json", &NS, b"");
    assert_eq!(all, again, "the same registry gives the same bytes");
    assert_eq!(server.ok(&["openapi"]), all, "micro openapi prints what the gateway serves");
    let doc = json(&all);
    let paths = doc["paths"].as_object().unwrap();
    for path in
        ["/helloworld", "/helloworld/call", "/helloworld/stream", "/store/read", "/registry/listServices"]
    {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    assert!(!paths.contains_key("/helloworld/pingPong"), "a bidirectional stream is websocket-only");
    let call = &paths["/helloworld/call"]["post"];
    assert_eq!(
        call["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/helloworld.Request"
    );
    assert_eq!(paths["/helloworld/stream"]["post"]["x-micro-stream"], "server");
    let count = &doc["components"]["schemas"]["helloworld.StreamingRequest"]["properties"]["count"];
    assert_eq!(count["type"], "string", "an int64 is a string");

    let (status, one) = http_request(&server.http, "GET", "/helloworld/openapi.json", &NS, b"");
    assert_eq!(status, 200, "{one}");
    assert_eq!(server.ok(&["openapi", "helloworld"]), one);
    let one = json(&one);
    let mut own: Vec<&String> = one["paths"].as_object().unwrap().keys().collect();
    own.sort();
    assert_eq!(own, ["/helloworld", "/helloworld/call", "/helloworld/stream"]);
    let (status, missing) = http_request(&server.http, "GET", "/nope/openapi.json", &NS, b"");
    assert_eq!((status, json(&missing)["Detail"].clone()), (404, json!("service nope not found")));
    let denied = server.micro(&["openapi", "nope"]);
    assert!(!denied.status.success());

    // The document is admitted as the registry's listing is: anonymous in another namespace,
    // both refuse alike.
    let other = [("Micro-Namespace", "other")];
    let listing = http_request(&server.http, "GET", "/registry/listServices", &other, b"");
    let document = http_request(&server.http, "GET", "/openapi.json", &other, b"");
    assert_eq!(listing.0, 401, "{}", listing.1);
    assert_eq!(document, listing);

    let Some(python) = needed_env("MICRO_TEST_PYTHON", "the_live_document_is_valid") else { return };
    let dir = tempfile::tempdir().unwrap();
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, &all).unwrap();

    // Random messages of every described message type, as the gateway writes them; each must
    // also be what the gateway reads.
    let hello =
        DescriptorPool::decode(common::registered_descriptors(&server, "helloworld").as_slice()).unwrap();
    let core = DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases: Vec<Value> = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let desc = hello.get_message_by_name(name).or_else(|| core.get_message_by_name(name));
        let Some(desc) = desc else {
            assert!(schema.get("enum").is_some() || name == micro_proto::openapi::ERROR_SCHEMA, "{name}");
            continue;
        };
        for _ in 0..8 {
            let message = random_message(&desc, &mut rng, 0);
            let written = micro_proto::json::to_json(&message).unwrap();
            let value: Value = serde_json::from_slice(&written).unwrap();
            let read = micro_proto::json::to_message(&desc, value.as_object().unwrap().clone())
                .unwrap_or_else(|err| panic!("the gateway refuses its own {name} {value}: {err}"));
            let reread: Value = serde_json::from_slice(&micro_proto::json::to_json(&read).unwrap()).unwrap();
            assert_eq!(reread, value, "{name} round trips");
            cases.push(json!([name, value, true]));
        }
    }
    assert!(cases.len() > 200, "{} cases", cases.len());

    // The gateway's answers, for the requests generated above.
    for _ in 0..5 {
        let request = random_message(&hello.get_message_by_name("helloworld.Request").unwrap(), &mut rng, 0);
        let body = micro_proto::json::to_json(&request).unwrap();
        let mut headers = NS.to_vec();
        headers.push(("Content-Type", "application/json"));
        let (status, answer) = http_request(&server.http, "POST", "/helloworld/call", &headers, &body);
        assert_eq!(status, 200, "{answer}");
        cases.push(json!(["helloworld.Response", json(&answer), true]));
    }
    let (status, stream) = http_request(&server.http, "POST", "/helloworld/stream", &NS, br#"{"count":"3"}"#);
    assert_eq!(status, 200, "{stream}");
    for line in stream.lines() {
        cases.push(json!(["helloworld.StreamingResponse", json(line), true]));
    }
    let (_, listed) = http_request(&server.http, "GET", "/registry/listServices", &NS, b"");
    cases.push(json!(["registry.ListResponse", json(&listed), true]));
    server.ok(&["store", "write", "k", "v"]);
    let bearer = format!("Bearer {}", server.ok(&["user", "token"]).trim());
    let admin = [NS[0], ("Authorization", bearer.as_str())];
    let (status, read) = http_request(&server.http, "POST", "/store/read", &admin, br#"{"key":"k"}"#);
    assert_eq!(status, 200, "{read}");
    cases.push(json!(["store.ReadResponse", json(&read), true]));
    cases.push(json!([micro_proto::openapi::ERROR_SCHEMA, json(&missing), true]));
    // And the schemas are not vacuous.
    for (name, wrong) in [
        ("helloworld.Request", json!({ "name": 5 })),
        ("store.ReadResponse", json!({ "records": [{ "expiry": 5 }] })),
        ("store.ReadResponse", json!({ "records": [{ "value": "not base64!" }] })),
        (micro_proto::openapi::ERROR_SCHEMA, json!({ "Id": "x" })),
    ] {
        cases.push(json!([name, wrong, false]));
    }
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&cases).unwrap()).unwrap();
    check_with_python(&python, &doc_file, &cases_file);
}

/// `openapi-spec-validator` on the document, then `jsonschema` (draft 2020-12, OpenAPI 3.1's
/// dialect) on every case `[component, instance, valid]`.
fn check_with_python(python: &str, doc: &Path, cases: &Path) {
    const SCRIPT: &str = r##"
import json, sys
from openapi_spec_validator import validate
from jsonschema import Draft202012Validator, FormatChecker
doc = json.load(open(sys.argv[1]))
validate(doc)
failures = []
for name, instance, valid in json.load(open(sys.argv[2])):
    schema = dict(doc)
    schema["$ref"] = "#/components/schemas/" + name
    errors = list(Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(instance))
    if valid and errors:
        failures.append(f"{name} {json.dumps(instance)[:300]}: {errors[0].message[:300]}")
    if not valid and not errors:
        failures.append(f"{name} {json.dumps(instance)}: accepted, but is invalid")
for failure in failures:
    print(failure)
sys.exit(1 if failures else 0)
"##;
    let output = std::process::Command::new(python)
        .args(["-c", SCRIPT])
        .arg(doc)
        .arg(cases)
        .output()
        .expect("the venv's python runs");
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Uses the types openapi-typescript writes (`types.ts`) as a TypeScript client would: the
/// schemas of helloworld and a core service, an operation's body and answer, the error shape.
/// Each `@ts-expect-error` line must be an error, so types that degrade to `any` fail too.
const TYPESCRIPT_USE: &str = r#"
import type { components, operations, paths } from "./types";

type Schemas = components["schemas"];
const request: Schemas["helloworld.Request"] = { name: "Jane" };
const stream: Schemas["helloworld.StreamingRequest"] = { count: "3" };
// @ts-expect-error an int64 is a decimal string in protobuf-JSON
const wrong: Schemas["helloworld.StreamingRequest"] = { count: 3 };
type Call = paths["/helloworld/call"]["post"];
const body: NonNullable<Call["requestBody"]>["content"]["application/json"] = request;
const answer: Call["responses"][200]["content"]["application/json"] = { msg: "Hello Jane" };
// @ts-expect-error the answer has no such field
const unknownField: Call["responses"][200]["content"]["application/json"] = { message: "Hello" };
const failed: Schemas["micro.Error"] = { Id: "helloworld", Code: 500, Detail: "boom", Status: "Internal Server Error" };
const read: operations[keyof operations] | undefined = undefined;
const record: Schemas["store.Record"] = { key: "k", value: "dg==" };
export const used = [request, stream, wrong, body, answer, unknownField, failed, read, record];
"#;

#[test]
fn typescript_types_generated_from_the_live_document_compile() {
    let test = "typescript_types_generated_from_the_live_document_compile";
    let Some(tools) = needed_env("MICRO_TEST_NODE_TOOLS", test) else { return };
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);
    let (status, document) = http_request(&server.http, "GET", "/openapi.json", &NS, b"");
    assert_eq!(status, 200, "{document}");
    assert!(json(&document)["paths"].get("/helloworld/call").is_some(), "helloworld is described");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openapi.json"), &document).unwrap();
    std::fs::write(dir.path().join("use.ts"), TYPESCRIPT_USE).unwrap();
    let bin = Path::new(&tools).join("node_modules/.bin");
    let run = |program: &str, args: &[&str]| {
        let output = std::process::Command::new(bin.join(program))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|err| panic!("{program} does not run: {err}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{program} {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    };
    run("openapi-typescript", &["openapi.json", "--output", "types.ts"]);
    let types = std::fs::read_to_string(dir.path().join("types.ts")).unwrap();
    assert!(types.contains("\"helloworld.Request\""), "the types name the schemas");
    run(
        "tsc",
        &[
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            "types.ts",
            "use.ts",
        ],
    );
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn text(&mut self) -> String {
        const CHARS: &[char] = &['a', 'Z', '0', ' ', '"', '\\', '/', 'é', '✓', '\n', '_', '-'];
        (0..self.below(8)).map(|_| CHARS[self.below(CHARS.len() as u64) as usize]).collect()
    }
}

const MAX_DEPTH: usize = 3;

/// A message of `desc` with some of its fields set to random values of their kind (well-known
/// types within the ranges their JSON form can hold; no `Any`, whose JSON needs its type known).
fn random_message(desc: &MessageDescriptor, rng: &mut Rng, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    let set = |message: &mut DynamicMessage, name: &str, value: Field| {
        message.set_field_by_name(name, value);
    };
    match desc.full_name() {
        "google.protobuf.Timestamp" => {
            set(&mut message, "seconds", Field::I64(rng.below(253_402_300_799) as i64));
            set(&mut message, "nanos", Field::I32(rng.below(1_000_000_000) as i32));
            return message;
        }
        "google.protobuf.Duration" => {
            let seconds = rng.below(315_576_000_000) as i64;
            let nanos = rng.below(1_000_000_000) as i32;
            let sign = if rng.below(2) == 0 { 1 } else { -1 };
            set(&mut message, "seconds", Field::I64(sign * seconds));
            set(&mut message, "nanos", Field::I32(sign as i32 * nanos));
            return message;
        }
        "google.protobuf.Value" => {
            // Any JSON but the non-finite numbers, which a Value cannot hold.
            let (name, value) = match rng.below(if depth >= MAX_DEPTH { 4 } else { 6 }) {
                0 => ("null_value", Field::EnumNumber(0)),
                1 => ("number_value", Field::F64((rng.next() as i64) as f64 / 1e3)),
                2 => ("string_value", Field::String(rng.text())),
                3 => ("bool_value", Field::Bool(rng.below(2) == 0)),
                4 => (
                    "struct_value",
                    Field::Message(random_message(
                        &desc.parent_pool().get_message_by_name("google.protobuf.Struct").unwrap(),
                        rng,
                        depth + 1,
                    )),
                ),
                _ => (
                    "list_value",
                    Field::Message(random_message(
                        &desc.parent_pool().get_message_by_name("google.protobuf.ListValue").unwrap(),
                        rng,
                        depth + 1,
                    )),
                ),
            };
            set(&mut message, name, value);
            return message;
        }
        "google.protobuf.FieldMask" => {
            set(
                &mut message,
                "paths",
                Field::List(vec![Field::String("a".into()), Field::String("b_c.d".into())]),
            );
            return message;
        }
        _ => {}
    }
    for field in desc.fields() {
        if rng.below(3) == 0 {
            continue;
        }
        let kind = field.kind();
        if let Kind::Message(inner) = &kind
            && (inner.full_name() == "google.protobuf.Any" || (depth >= MAX_DEPTH && !field.is_map()))
        {
            continue;
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = &kind else { unreachable!("map fields are entry messages") };
            let value_kind = entry.map_entry_value_field().kind();
            if matches!(&value_kind, Kind::Message(_)) && depth >= MAX_DEPTH {
                continue;
            }
            let mut map = HashMap::new();
            for _ in 0..rng.below(3) {
                let key = match entry.map_entry_key_field().kind() {
                    Kind::String => MapKey::String(rng.text()),
                    Kind::Bool => MapKey::Bool(rng.below(2) == 0),
                    Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(rng.next() as i32),
                    Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(rng.next() as i64),
                    Kind::Uint32 | Kind::Fixed32 => MapKey::U32(rng.next() as u32),
                    _ => MapKey::U64(rng.next()),
                };
                map.insert(key, single(&value_kind, rng, depth));
            }
            Field::Map(map)
        } else if field.is_list() {
            Field::List((0..rng.below(3)).map(|_| single(&kind, rng, depth)).collect())
        } else {
            single(&kind, rng, depth)
        };
        message.set_field(&field, value);
    }
    message
}

fn single(kind: &Kind, rng: &mut Rng, depth: usize) -> Field {
    match kind {
        Kind::Double => Field::F64(match rng.below(8) {
            0 => f64::NAN,
            1 => f64::NEG_INFINITY,
            _ => (rng.next() as i64) as f64 / 1e6,
        }),
        Kind::Float => {
            Field::F32(if rng.below(8) == 0 { f32::INFINITY } else { rng.below(1 << 20) as f32 / 8.0 })
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Field::I32(rng.next() as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Field::I64(rng.next() as i64),
        Kind::Uint32 | Kind::Fixed32 => Field::U32(rng.next() as u32),
        Kind::Uint64 | Kind::Fixed64 => Field::U64(rng.next()),
        Kind::Bool => Field::Bool(rng.below(2) == 0),
        Kind::String => Field::String(rng.text()),
        Kind::Bytes => Field::Bytes((0..rng.below(6)).map(|_| rng.next() as u8).collect::<Vec<_>>().into()),
        Kind::Enum(desc) => {
            let values: Vec<i32> = desc.values().map(|value| value.number()).collect();
            Field::EnumNumber(values[rng.below(values.len() as u64) as usize])
        }
        Kind::Message(desc) => Field::Message(random_message(desc, rng, depth + 1)),
    }
}
