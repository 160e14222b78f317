use prost::Message as _;
use prost_reflect::DescriptorPool;
use serde_json::json;

use super::*;

const KINDS: &str = r#"
syntax = "proto3";
package t;
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; DARK_BLUE = 2; }
message Inner { string name = 1; int32 n = 2; Inner next = 3; map<string, string> tags = 4; }
message All {
  string text = 1; bytes data = 2; bool flag = 3;
  int32 i32 = 4; sint32 s32 = 5; sfixed32 sf32 = 6; uint32 u32 = 7; fixed32 fx32 = 8;
  int64 i64 = 9; sint64 s64 = 10; sfixed64 sf64 = 11; uint64 u64 = 12; fixed64 fx64 = 13;
  float real32 = 14; double real64 = 15;
  Color color = 16;
  Inner inner = 17;
  repeated string names = 18; repeated int64 ids = 19; repeated bool flags = 20;
  repeated Inner items = 21; repeated Color colors = 22;
  map<string, int32> counts = 23; map<int32, string> by_id = 24; map<string, Inner> inners = 25;
  google.protobuf.Timestamp at = 26; google.protobuf.Duration ttl = 27;
  google.protobuf.Struct meta = 28; google.protobuf.Int64Value big = 29;
  google.protobuf.StringValue label = 30; google.protobuf.BoolValue on = 31;
  google.protobuf.Value any_value = 32; google.protobuf.FieldMask mask = 33;
  google.protobuf.ListValue list = 34;
  string user_name = 35;
}
"#;

fn all() -> MessageDescriptor {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.proto"), KINDS).unwrap();
    let set = protox::compile([dir.path().join("t.proto")], [dir.path()]).unwrap();
    DescriptorPool::decode(set.encode_to_vec().as_slice()).unwrap().get_message_by_name("t.All").unwrap()
}

fn core(name: &str) -> MessageDescriptor {
    DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).unwrap().get_message_by_name(name).unwrap()
}

/// One key given one text (`None`: no value) → the JSON object it makes, or the error's text.
/// Every JSON is also built into a message, so it is protobuf-JSON the message accepts.
#[test]
fn text_becomes_typed_json_per_field_kind() {
    let desc = all();
    let ok = |value: Value| Ok::<Value, &str>(value);
    #[rustfmt::skip]
    let table: Vec<(&str, Option<&str>, Result<Value, &str>)> = vec![
        // string: as is, commas and blanks kept
        ("text", Some(" a, b "), ok(json!({"text": " a, b "}))),
        ("text", Some(""), ok(json!({"text": ""}))),
        ("text", None, Err("field \"text\" needs a value")),
        ("userName", Some("jo"), ok(json!({"user_name": "jo"}))),
        ("nope", Some("1"), Err("t.All has no field \"nope\"")),
        // bytes: base64, standard or URL-safe, padding optional
        ("data", Some("aGk="), ok(json!({"data": "aGk="}))),
        ("data", Some("aGk"), ok(json!({"data": "aGk"}))),
        ("data", Some("-_8="), ok(json!({"data": "-_8="}))),
        ("data", Some("hi!"), Err("field \"data\": \"hi!\" is not base64")),
        // bool
        ("flag", Some("true"), ok(json!({"flag": true}))),
        ("flag", Some("TRUE"), ok(json!({"flag": true}))),
        ("flag", Some("1"), ok(json!({"flag": true}))),
        ("flag", Some("false"), ok(json!({"flag": false}))),
        ("flag", Some("0"), ok(json!({"flag": false}))),
        ("flag", None, ok(json!({"flag": true}))),
        ("flag", Some("maybe"), Err("field \"flag\": \"maybe\" is not a boolean (true or false)")),
        ("flag", Some(""), Err("field \"flag\": \"\" is not a boolean (true or false)")),
        // 32-bit integers: JSON numbers
        ("i32", Some("-5"), ok(json!({"i32": -5}))),
        ("i32", Some(" 7 "), ok(json!({"i32": 7}))),
        ("i32", Some("2147483648"), Err("field \"i32\": \"2147483648\" is not a 32-bit integer")),
        ("i32", Some("1.5"), Err("field \"i32\": \"1.5\" is not a 32-bit integer")),
        ("s32", Some("-2147483648"), ok(json!({"s32": -2147483648i64}))),
        ("sf32", Some("-1"), ok(json!({"sf32": -1}))),
        ("u32", Some("4294967295"), ok(json!({"u32": 4294967295u32}))),
        ("u32", Some("-1"), Err("field \"u32\": \"-1\" is not an unsigned 32-bit integer")),
        ("fx32", Some("3"), ok(json!({"fx32": 3}))),
        // 64-bit integers: JSON strings
        ("i64", Some("-9223372036854775808"), ok(json!({"i64": "-9223372036854775808"}))),
        ("i64", Some("9223372036854775808"), Err("field \"i64\": \"9223372036854775808\" is not a 64-bit integer")),
        ("s64", Some("-2"), ok(json!({"s64": "-2"}))),
        ("sf64", Some("+2"), ok(json!({"sf64": "2"}))),
        ("u64", Some("18446744073709551615"), ok(json!({"u64": "18446744073709551615"}))),
        ("u64", Some("-1"), Err("field \"u64\": \"-1\" is not an unsigned 64-bit integer")),
        ("fx64", Some("1"), ok(json!({"fx64": "1"}))),
        // float and double, with protobuf-JSON's spellings of the non-finite ones
        ("real32", Some("1.5"), ok(json!({"real32": 1.5}))),
        ("real32", Some("NaN"), ok(json!({"real32": "NaN"}))),
        ("real32", Some("Infinity"), ok(json!({"real32": "Infinity"}))),
        ("real32", Some("-Infinity"), ok(json!({"real32": "-Infinity"}))),
        ("real32", Some("1e39"), Err("field \"real32\": \"1e39\" is not a 32-bit float")),
        ("real64", Some("0.25"), ok(json!({"real64": 0.25}))),
        ("real64", Some("-inf"), ok(json!({"real64": "-Infinity"}))),
        ("real64", Some("1e308"), ok(json!({"real64": 1e308}))),
        ("real64", Some("1e400"), Err("field \"real64\": \"1e400\" is not a number")),
        ("real64", Some("x"), Err("field \"real64\": \"x\" is not a number")),
        // enums: by name in any case, or by number
        ("color", Some("RED"), ok(json!({"color": "RED"}))),
        ("color", Some("dark_blue"), ok(json!({"color": "DARK_BLUE"}))),
        ("color", Some("2"), ok(json!({"color": 2}))),
        ("color", Some("GREEN"), Err("field \"color\": \"GREEN\" is not a value of t.Color")),
        // a message given as JSON, or by parts
        ("inner", Some(r#"{"name": "x", "n": 1}"#), ok(json!({"inner": {"name": "x", "n": 1}}))),
        ("inner", Some("x"), Err("field \"inner\": expected a JSON object")),
        ("inner", Some("[1]"), Err("field \"inner\": expected a JSON object")),
        ("inner.name", Some("x"), ok(json!({"inner": {"name": "x"}}))),
        ("inner[next][n]", Some("3"), ok(json!({"inner": {"next": {"n": 3}}}))),
        ("inner.next.next.name", Some("deep"), ok(json!({"inner": {"next": {"next": {"name": "deep"}}}}))),
        ("inner.tags.k", Some("v"), ok(json!({"inner": {"tags": {"k": "v"}}}))),
        ("inner.nope", Some("1"), Err("t.Inner has no field \"nope\"")),
        ("text.x", Some("1"), Err("field \"text.x\" goes deeper than its message")),
        ("at.seconds", Some("1"), Err("field \"at.seconds\" goes deeper than its message")),
        // repeated: every occurrence, comma lists of scalars
        ("names", Some("a,b"), ok(json!({"names": ["a", "b"]}))),
        ("ids", Some("1, 2"), ok(json!({"ids": ["1", "2"]}))),
        ("ids[]", Some("1,x"), Err("field \"ids[]\": \"x\" is not a 64-bit integer")),
        ("flags", None, ok(json!({"flags": [true]}))),
        ("colors", Some("red,2"), ok(json!({"colors": ["RED", 2]}))),
        ("items", Some(r#"{"name": "a,b"}"#), ok(json!({"items": [{"name": "a,b"}]}))),
        ("items.name", Some("a"), Err("field \"items.name\": repeated messages cannot be given as query parameters; send a JSON body")),
        // maps: by entry or as a JSON object; keys checked by their kind
        ("counts.a", Some("1"), ok(json!({"counts": {"a": 1}}))),
        ("counts[a]", Some("x"), Err("field \"counts[a]\": \"x\" is not a 32-bit integer")),
        ("counts", Some(r#"{"a": 1}"#), ok(json!({"counts": {"a": 1}}))),
        ("counts", Some("a=1"), Err("field \"counts\" is a map: give a JSON object or entries as counts.KEY=VALUE")),
        ("by_id.7", Some("x"), ok(json!({"by_id": {"7": "x"}}))),
        ("by_id.x", Some("y"), Err("field \"by_id.x\": \"x\" is not a 32-bit integer")),
        ("inners.k.name", Some("n"), ok(json!({"inners": {"k": {"name": "n"}}}))),
        // well-known types: their own JSON forms
        ("at", Some("2024-01-02T03:04:05Z"), ok(json!({"at": "2024-01-02T03:04:05Z"}))),
        ("at", Some("\"2024-01-02T03:04:05Z\""), ok(json!({"at": "2024-01-02T03:04:05Z"}))),
        ("ttl", Some("1.5s"), ok(json!({"ttl": "1.5s"}))),
        ("mask", Some("a,b.c"), ok(json!({"mask": "a,b.c"}))),
        ("meta", Some(r#"{"a": [1, "x"]}"#), ok(json!({"meta": {"a": [1, "x"]}}))),
        ("list", Some(r#"[1, "a"]"#), ok(json!({"list": [1, "a"]}))),
        ("big", Some("9007199254740993"), ok(json!({"big": "9007199254740993"}))),
        ("big", Some("x"), Err("field \"big\": \"x\" is not a 64-bit integer")),
        ("label", Some("123"), ok(json!({"label": "123"}))),
        ("on", None, ok(json!({"on": true}))),
        ("any_value", Some(r#"{"a": 1}"#), ok(json!({"any_value": {"a": 1}}))),
        ("any_value", Some("3"), ok(json!({"any_value": 3}))),
        ("any_value", Some("hello"), ok(json!({"any_value": "hello"}))),
        // key syntax
        ("inner..name", Some("x"), Err("invalid query parameter \"inner..name\"")),
    ];
    for (key, text, expected) in table {
        let mut object = Map::new();
        let got = key_path(key).and_then(|path| insert(&desc, &mut object, &path, text, key));
        match (got, expected) {
            (Ok(()), Ok(expected)) => {
                let got = Value::Object(object.clone());
                assert_eq!(got, expected, "{key} = {text:?}");
                to_message(&desc, object).unwrap_or_else(|err| panic!("{key} = {text:?} → {got}: {err}"));
            }
            (Err(err), Err(expected)) => assert_eq!(err.to_string(), expected, "{key} = {text:?}"),
            (got, expected) => panic!("{key} = {text:?}: got {got:?} ({object:?}), expected {expected:?}"),
        }
    }

    // Values the text cannot refuse on its own are refused naming the key they came from.
    let mut object = Map::new();
    let err = insert(&desc, &mut object, &["at"], Some("yesterday"), "at").unwrap_err();
    assert!(matches!(&err, Error::Field { key, .. } if key == "at"), "{err}");
    let err = insert(&desc, &mut object, &["inner"], Some(r#"{"nope": 1}"#), "inner").unwrap_err();
    assert!(err.to_string().starts_with("field \"inner\": ") && err.to_string().contains("nope"), "{err}");
    let err = insert(&desc, &mut object, &["meta"], Some("x"), "meta").unwrap_err();
    assert!(err.to_string().starts_with("field \"meta\": invalid JSON"), "{err}");
}

#[test]
fn keys_given_again_collect_replace_or_merge() {
    let desc = all();
    let fields = query_fields(
        &desc,
        "names=a&names[]=b,c&text=1&text=2&inner.n=1&inner={\"name\":\"x\"}&counts.a=1&counts={\"b\":2}&flag",
    )
    .unwrap();
    assert_eq!(
        Value::Object(fields),
        json!({
            "names": ["a", "b", "c"], "text": "2", "inner": {"n": 1, "name": "x"},
            "counts": {"a": 1, "b": 2}, "flag": true,
        }),
        "repeated fields collect, others keep the last, whole messages and maps merge over parts"
    );
    let err = query_fields(&desc, "inner=%7B%7D&inner.name=x&text=a&text.b=1").unwrap_err();
    assert_eq!(err.to_string(), "field \"text.b\" goes deeper than its message");
    let err = query_fields(&desc, "names=a&names.x=1").unwrap_err();
    assert_eq!(err.to_string(), "field \"names.x\" goes deeper than its message");
    let decoded = query_fields(&desc, "text=a%20b+c%2B&data=aGk%3D").unwrap();
    assert_eq!(Value::Object(decoded), json!({"text": "a b c+", "data": "aGk="}));
    assert_eq!(query_fields(&desc, "text=%FF").unwrap_err(), Error::NotUtf8 { text: "%FF".into() });
    let loose = query_fields(&desc, "text=100%25+%zz%4%C3%A9").unwrap();
    assert_eq!(Value::Object(loose), json!({"text": "100% %zz%4é"}), "a stray % stays as it is");
}

#[test]
fn limits_are_named_in_their_errors() {
    let desc = all();
    let err = query_fields(&desc, &("a.".repeat(100_000) + "b=1")).unwrap_err();
    assert_eq!(err, Error::TooManySegments { segments: 100_001 });
    assert!(err.to_string().contains("MAX_KEY_SEGMENTS"), "{err}");
    let at_limit = vec!["inner"; MAX_KEY_SEGMENTS].join(".");
    assert!(key_path(&at_limit).is_ok(), "{MAX_KEY_SEGMENTS} segments pass the cap");

    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let mut object = Map::new();
    // Our limit lets it through; prost's own recursion limit may still refuse it.
    let at_limit = insert(&desc, &mut object, &["list"], Some(&nested(MAX_JSON_DEPTH)), "list");
    assert!(!matches!(at_limit, Err(Error::JsonTooDeep)), "{at_limit:?}");
    let err = insert(&desc, &mut object, &["list"], Some(&nested(MAX_JSON_DEPTH + 1)), "list").unwrap_err();
    assert_eq!(err, Error::JsonTooDeep);
    assert!(err.to_string().contains("MAX_JSON_DEPTH"), "{err}");
    let err = insert(&desc, &mut object, &["any_value"], Some(&nested(MAX_JSON_DEPTH + 1)), "v").unwrap_err();
    assert_eq!(err, Error::JsonTooDeep, "not taken as text instead");
    let body = format!("{{\"list\":{}}}", nested(MAX_JSON_DEPTH));
    assert_eq!(json_object(body.as_bytes()).unwrap_err(), Error::JsonTooDeep);
}

#[test]
fn json_bodies_merge_and_build_messages_naming_the_field() {
    let read = core("store.ReadRequest");
    let mut fields = query_fields(&read, "key=from-query&options.limit=5&options.table=t").unwrap();
    merge(
        &read,
        &mut fields,
        json_object(br#"{"options": {"limit": 9, "database": "db", "table": null}}"#).unwrap(),
    );
    assert_eq!(
        Value::Object(fields.clone()),
        json!({"key": "from-query", "options": {"limit": 9, "database": "db"}})
    );
    let message = to_message(&read, fields).unwrap();
    assert_eq!(message.get_field_by_name("key").unwrap().as_str(), Some("from-query"));

    let desc = all();
    let mut fields = query_fields(&desc, "user_name=q").unwrap();
    merge(&desc, &mut fields, json_object(br#"{"userName": "b"}"#).unwrap());
    assert_eq!(Value::Object(fields), json!({"user_name": "b"}), "names meet as proto names");

    assert!(matches!(json_object(b"{nope"), Err(Error::InvalidJson { .. })));
    assert_eq!(json_object(b"[1]").unwrap_err().to_string(), "the body must be a JSON object, got an array");
    let body = |text: &[u8]| to_message(&read, json_object(text).unwrap()).unwrap_err().to_string();
    assert_eq!(body(br#"{"kee": 1}"#), "store.ReadRequest has no field \"kee\"");
    assert!(body(br#"{"key": 5}"#).starts_with("field \"key\": "));
    let nested = body(br#"{"options": {"nope": 1}}"#);
    assert!(nested.starts_with("field \"options\": ") && nested.contains("nope"), "{nested}");
}

#[test]
fn messages_write_as_protobuf_json_with_proto_names() {
    let desc = all();
    let fields = query_fields(
        &desc,
        "user_name=jo&i64=-3&u64=0&data=aGk%3D&color=dark_blue&real64=NaN&at=2024-01-02T03:04:05Z&big=7",
    )
    .unwrap();
    let message = to_message(&desc, fields).unwrap();
    let written: Value = serde_json::from_slice(&to_json(&message).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({
            "user_name": "jo", "i64": "-3", "data": "aGk=", "color": "DARK_BLUE", "real64": "NaN",
            "at": "2024-01-02T03:04:05Z", "big": "7",
        }),
        "proto names, defaults left out, 64-bit integers as strings, bytes as base64"
    );
    let back = to_message(&desc, written.as_object().unwrap().clone()).unwrap();
    assert_eq!(back.get_field_by_name("data").unwrap().as_bytes().unwrap().as_ref(), b"hi", "round trip");

    let small = to_message(&desc, json!({"text": "a", "i32": 1}).as_object().unwrap().clone()).unwrap();
    assert_eq!(to_json(&small).unwrap(), br#"{"text":"a","i32":1}"#);
    assert_eq!(
        String::from_utf8(to_json_indented(&small, b"\t").unwrap()).unwrap(),
        "{\n\t\"text\": \"a\",\n\t\"i32\": 1\n}"
    );
}
