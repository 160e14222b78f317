//! Request and response bodies (reference §4.3): query parameters become typed fields of the
//! request message, a JSON body is merged over them, and the result is checked against the
//! method's descriptor so that a wrong field or value is a 400 that names it. Responses are
//! protobuf-JSON with the proto's field names, defaults left out and 64-bit integers as strings,
//! as the original's services answered.

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

/// Most segments in one query key (`a.b.c` has 3): deeper keys get a 400 that names this limit,
/// before anything recurses (docs/security.md).
pub const MAX_KEY_SEGMENTS: usize = 32;
/// Deepest nesting of a JSON body or JSON query value (objects and arrays): deeper ones get a
/// 400 that names this limit.
pub const MAX_JSON_DEPTH: usize = 64;

/// Turns a query string (`a=1&b.c=x&d[]=1&d[]=2`) into a JSON object shaped like `desc`:
///
/// - keys name fields by proto name or lowerCamel JSON name; `a.b.c` and `a[b][c]` reach into
///   nested messages and maps (`labels.env=prod`); a trailing `[]` is allowed on repeated fields;
/// - values are typed by the field: integers and floats must parse, booleans are
///   `true`/`false`/`1`/`0` (a bare `?flag` is true), enums take a name or number, message fields
///   given whole take JSON;
/// - repeated fields collect every occurrence; for other fields the last occurrence wins.
pub fn query_fields(desc: &MessageDescriptor, query: &str) -> Result<Map<String, Value>, String> {
    let mut fields = Map::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        let segments = key.bytes().filter(|b| *b == b'.' || *b == b'[').count() + 1;
        if segments > MAX_KEY_SEGMENTS {
            return Err(format!(
                "query parameter key has {segments} segments: at most {MAX_KEY_SEGMENTS} (MAX_KEY_SEGMENTS)"
            ));
        }
        let value = percent_decode(value)?;
        let path = key_path(&key);
        if path.iter().any(|part| part.is_empty()) {
            return Err(format!("invalid query parameter \"{key}\""));
        }
        insert(desc, &mut fields, &path, &value, &key)?;
    }
    Ok(fields)
}

/// `a.b`, `a[b]`, `a[b][]` → `["a", "b"]`.
fn key_path(key: &str) -> Vec<&str> {
    let key = key.strip_suffix("[]").unwrap_or(key);
    key.split(['.', '[']).map(|part| part.strip_suffix(']').unwrap_or(part)).collect()
}

fn field_of(desc: &MessageDescriptor, name: &str) -> Result<FieldDescriptor, String> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
        .ok_or_else(|| format!("{} has no field \"{name}\"", desc.full_name()))
}

fn insert(
    desc: &MessageDescriptor,
    object: &mut Map<String, Value>,
    path: &[&str],
    raw: &str,
    key: &str,
) -> Result<(), String> {
    let field = field_of(desc, path[0])?;
    let name = field.name().to_string();
    let rest = &path[1..];
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!("map fields are entry messages") };
        let value_field = entry.map_entry_value_field();
        let Some((map_key, rest)) = rest.split_first() else {
            return Err(format!("field \"{key}\" is a map: give entries as {key}.KEY=VALUE"));
        };
        let map = child_object(object, name, key)?;
        if rest.is_empty() {
            map.insert(map_key.to_string(), scalar(&value_field.kind(), raw, key)?);
            return Ok(());
        }
        let Kind::Message(value_desc) = value_field.kind() else {
            return Err(format!("field \"{key}\" goes deeper than its message"));
        };
        let entry_object = child_object(map, map_key.to_string(), key)?;
        return insert(&value_desc, entry_object, rest, raw, key);
    }
    if !rest.is_empty() {
        let Kind::Message(child) = field.kind() else {
            return Err(format!("field \"{key}\" goes deeper than its message"));
        };
        if field.is_list() {
            return Err(format!(
                "field \"{key}\": repeated messages cannot be given as query parameters; send a JSON body"
            ));
        }
        return insert(&child, child_object(object, name, key)?, rest, raw, key);
    }
    let value = scalar(&field.kind(), raw, key)?;
    if field.is_list() {
        match object.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(items) => items.push(value),
            _ => return Err(format!("field \"{key}\" given both whole and by parts")),
        }
    } else {
        object.insert(name, value);
    }
    Ok(())
}

fn child_object<'a>(
    object: &'a mut Map<String, Value>,
    name: String,
    key: &str,
) -> Result<&'a mut Map<String, Value>, String> {
    match object.entry(name).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(child) => Ok(child),
        _ => Err(format!("field \"{key}\" given both whole and by parts")),
    }
}

/// One query value as the JSON the field's kind takes.
fn scalar(kind: &Kind, raw: &str, key: &str) -> Result<Value, String> {
    let not = |what: &str| format!("field \"{key}\": \"{raw}\" is not {what}");
    let value = match kind {
        Kind::String | Kind::Bytes => Value::String(raw.to_string()),
        Kind::Bool => match raw {
            "" | "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(not("a boolean (true or false)")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::from(raw.parse::<i32>().map_err(|_| not("a 32-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => {
            Value::from(raw.parse::<u32>().map_err(|_| not("an unsigned 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::from(raw.parse::<i64>().map_err(|_| not("a 64-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::from(raw.parse::<u64>().map_err(|_| not("an unsigned 64-bit integer"))?)
        }
        Kind::Float | Kind::Double => match raw {
            "NaN" | "Infinity" | "-Infinity" => Value::String(raw.to_string()),
            _ => raw
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| not("a number"))?,
        },
        Kind::Enum(desc) => match raw.parse::<i32>() {
            Ok(number) => Value::from(number),
            Err(_) if desc.get_value_by_name(raw).is_some() => Value::String(raw.to_string()),
            Err(_) => return Err(not(&format!("a value of {}", desc.full_name()))),
        },
        // Whole messages (timestamps, structs, wrappers …) take their JSON form; a value that is
        // not JSON is taken as a string, which is what timestamps and durations are.
        Kind::Message(_) => match serde_json::from_str::<Value>(raw) {
            Ok(value) => {
                check_depth(&value)?;
                value
            }
            Err(_) => Value::String(raw.to_string()),
        },
    };
    Ok(value)
}

/// `application/x-www-form-urlencoded` decoding of one key or value.
fn percent_decode(input: &str) -> Result<String, String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                match byte {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query parameter \"{input}\" is not UTF-8"))
}

/// Merges `patch` (the body) over `base` (the query fields) as a JSON merge patch: objects of
/// message fields merge key by key, `null` removes, anything else replaces. Keys are brought to
/// proto field names on the way, so `userName` in the body meets `user_name` from the query.
pub fn merge(desc: &MessageDescriptor, base: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        let field = field_of(desc, &key).ok();
        let name = field.as_ref().map_or(key, |field| field.name().to_string());
        let child = field.as_ref().and_then(|field| match field.kind() {
            Kind::Message(child) if !field.is_map() && !field.is_list() => Some(child),
            _ => None,
        });
        match (value, child, base.get_mut(&name)) {
            (Value::Null, _, _) => {
                base.remove(&name);
            }
            (Value::Object(patch), Some(child), Some(Value::Object(existing))) => {
                merge(&child, existing, patch)
            }
            (value, _, _) => {
                base.insert(name, value);
            }
        }
    }
}

/// Parses a JSON request body; it must be an object nested at most [`MAX_JSON_DEPTH`] deep.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    // serde_json itself stops at 128 levels ("recursion limit exceeded"); ours is lower.
    let value = serde_json::from_slice::<Value>(body).map_err(|err| format!("invalid JSON body: {err}"))?;
    check_depth(&value)?;
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(format!("the body must be a JSON object, got {}", kind_of(&other))),
    }
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`], without recursing.
fn check_depth(value: &Value) -> Result<(), String> {
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        if depth > MAX_JSON_DEPTH {
            return Err(format!("the JSON is nested deeper than {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH)"));
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds the request message; the error names the field that does not fit.
pub fn to_message(desc: &MessageDescriptor, fields: Map<String, Value>) -> Result<DynamicMessage, String> {
    // Field by field first, so an error can say which field it is about.
    for (name, value) in &fields {
        field_of(desc, name)?;
        let single = Value::Object([(name.clone(), value.clone())].into_iter().collect());
        DynamicMessage::deserialize(desc.clone(), single)
            .map_err(|err| format!("field \"{name}\": {err}"))?;
    }
    DynamicMessage::deserialize(desc.clone(), Value::Object(fields)).map_err(|err| err.to_string())
}

/// A response as protobuf-JSON: proto field names, defaults left out, 64-bit integers as strings.
/// Fails for messages protobuf-JSON cannot show: an `Any` of an unknown type, a timestamp or
/// duration out of range.
pub fn to_json(message: &DynamicMessage) -> Result<Vec<u8>, String> {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true);
    let mut bytes = Vec::new();
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut bytes), &options)
        .map_err(|err| format!("the answer cannot be shown as JSON: {err}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;
    use serde_json::json;

    use super::*;

    fn message(name: &str) -> MessageDescriptor {
        let pool = DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
        pool.get_message_by_name(name).unwrap()
    }

    #[test]
    fn query_parameters_become_typed_fields() {
        let read = message("store.ReadRequest");
        let fields =
            query_fields(&read, "key=a%20b+c&options.prefix=true&options[limit]=5&options.offset=7").unwrap();
        assert_eq!(
            Value::Object(fields),
            json!({"key": "a b c", "options": {"prefix": true, "limit": 5, "offset": 7}})
        );
        assert_eq!(query_fields(&read, "").unwrap(), Map::new());
        let flag = query_fields(&read, "options.suffix").unwrap();
        assert_eq!(Value::Object(flag), json!({"options": {"suffix": true}}), "a bare flag is true");

        let generate = message("auth.GenerateRequest");
        let fields =
            query_fields(&generate, "id=bob&scopes[]=admin&scopes=dev&metadata.team=core&metadata[env]=prod")
                .unwrap();
        assert_eq!(
            Value::Object(fields),
            json!({"id": "bob", "scopes": ["admin", "dev"], "metadata": {"team": "core", "env": "prod"}})
        );

        let consume = message("events.ConsumeRequest");
        let fields =
            query_fields(&consume, "topic=t&autoAck=false&retry_limit=-1&sequence=18446744073709551615")
                .unwrap();
        assert_eq!(
            Value::Object(fields.clone()),
            json!({"topic": "t", "auto_ack": false, "retry_limit": -1, "sequence": 18446744073709551615u64}),
            "lowerCamel names are accepted and stored under proto names"
        );
        let decoded = to_message(&consume, fields).unwrap();
        assert_eq!(decoded.get_field_by_name("retry_limit").unwrap().as_i64(), Some(-1));

        let err = |desc: &MessageDescriptor, query: &str| query_fields(desc, query).unwrap_err();
        assert_eq!(err(&read, "nope=1"), "store.ReadRequest has no field \"nope\"");
        assert_eq!(
            err(&read, "options.limit=abc"),
            "field \"options.limit\": \"abc\" is not an unsigned 64-bit integer"
        );
        assert_eq!(
            err(&read, "options.prefix=maybe"),
            "field \"options.prefix\": \"maybe\" is not a boolean (true or false)"
        );
        assert_eq!(err(&read, "key.x=1"), "field \"key.x\" goes deeper than its message");
        assert_eq!(err(&consume, "offset=1.5"), "field \"offset\": \"1.5\" is not a 64-bit integer");
        assert_eq!(
            err(&generate, "metadata=x"),
            "field \"metadata\" is a map: give entries as metadata.KEY=VALUE"
        );
        assert_eq!(err(&read, "options..limit=1"), "invalid query parameter \"options..limit\"");
    }

    #[test]
    fn the_body_merges_over_query_fields() {
        let read = message("store.ReadRequest");
        let mut fields = query_fields(&read, "key=from-query&options.limit=5&options.table=t").unwrap();
        let body = json_object(br#"{"options": {"limit": 9, "database": "db", "table": null}}"#).unwrap();
        merge(&read, &mut fields, body);
        assert_eq!(
            Value::Object(fields.clone()),
            json!({"key": "from-query", "options": {"limit": 9, "database": "db"}})
        );
        let message = to_message(&read, fields).unwrap();
        assert_eq!(message.get_field_by_name("key").unwrap().as_str(), Some("from-query"));

        let token = message_with_camel();
        let mut fields = query_fields(&token, "refresh_token=q").unwrap();
        merge(&token, &mut fields, json_object(br#"{"refreshToken": "b"}"#).unwrap());
        assert_eq!(Value::Object(fields), json!({"refresh_token": "b"}), "names meet as proto names");

        assert!(json_object(b"{nope").unwrap_err().starts_with("invalid JSON body: "));
        assert_eq!(json_object(b"[1]").unwrap_err(), "the body must be a JSON object, got an array");
        let unknown = to_message(&read, json_object(br#"{"kee": 1}"#).unwrap()).unwrap_err();
        assert_eq!(unknown, "store.ReadRequest has no field \"kee\"");
        let wrong = to_message(&read, json_object(br#"{"key": 5}"#).unwrap()).unwrap_err();
        assert!(wrong.starts_with("field \"key\": "), "{wrong}");
        let nested = to_message(&read, json_object(br#"{"options": {"nope": 1}}"#).unwrap()).unwrap_err();
        assert!(nested.starts_with("field \"options\": ") && nested.contains("nope"), "{nested}");
    }

    fn message_with_camel() -> MessageDescriptor {
        message("auth.TokenRequest")
    }

    #[test]
    fn responses_are_protobuf_json_with_proto_names() {
        let event = message("events.Event");
        let fields = json!({"id": "1", "timestamp_ms": 1700000000000i64, "sequence": 0, "payload": "aGk="});
        let message = to_message(&event, fields.as_object().unwrap().clone()).unwrap();
        let json: Value = serde_json::from_slice(&to_json(&message).unwrap()).unwrap();
        assert_eq!(json, json!({"id": "1", "payload": "aGk=", "timestamp_ms": "1700000000000"}));
    }

    #[test]
    fn deep_keys_and_deep_json_are_refused_naming_the_limit() {
        let read = message("store.ReadRequest");
        let deep = "a.".repeat(100_000) + "b=1";
        let err = query_fields(&read, &deep).unwrap_err();
        assert!(err.contains("MAX_KEY_SEGMENTS") && err.contains("100001"), "{err}");
        let at_limit = format!("{}=1", vec!["options"; MAX_KEY_SEGMENTS].join("."));
        let err = query_fields(&read, &at_limit).unwrap_err();
        assert!(!err.contains("MAX_KEY_SEGMENTS"), "32 segments pass the cap: {err}");

        let nested =
            |depth: usize| format!("{{\"key\":{}1{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        assert!(json_object(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let err = json_object(nested(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(err.contains("MAX_JSON_DEPTH"), "{err}");
        let err = json_object(nested(100_000).as_bytes()).unwrap_err();
        assert!(err.contains("invalid JSON body"), "serde_json's own limit stops it first: {err}");
    }
}
