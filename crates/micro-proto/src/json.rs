//! The one mapping between text, JSON and protobuf messages, shared by every edge that takes
//! requests as text or JSON: the HTTP gateway (query strings, form and JSON bodies, websocket
//! messages) and the CLI (`micro call`, the generated `micro <service> --flag=value` commands).
//!
//! - [`query_fields`] and [`insert`] type text by the message descriptor into protobuf-JSON
//!   (see [`insert`] for the rules per field kind); [`key_path`] splits `a.b.c` / `a[b][c]` keys.
//! - [`json_object`] parses a JSON body, [`merge`] lays it over fields given as text.
//! - [`to_message`] builds the [`DynamicMessage`], with errors that name the field.
//! - [`to_json`] / [`to_json_indented`] write a message as protobuf-JSON.
//!
//! Limits ([`MAX_KEY_SEGMENTS`], [`MAX_JSON_DEPTH`]) hold for every caller, and their errors name
//! them (docs/security.md).

#![warn(clippy::all)]

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

/// Most segments in one key (`a.b.c` has 3): deeper keys are refused naming this limit, before
/// anything recurses (docs/security.md).
pub const MAX_KEY_SEGMENTS: usize = 32;
/// Deepest nesting of a JSON body or JSON text value (objects and arrays): deeper ones are
/// refused naming this limit.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why text or JSON does not fit a message. `key` is the key or flag as the caller gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{message} has no field \"{name}\"")]
    UnknownField { message: String, name: String },
    #[error("field \"{key}\": \"{value}\" is not {}", expected(kind))]
    InvalidValue { key: String, value: String, kind: Kind },
    #[error("field \"{key}\" needs a value")]
    MissingValue { key: String },
    #[error("{}", not_an_object(key, *map))]
    NotAnObject { key: String, map: bool },
    #[error("field \"{key}\" goes deeper than its message")]
    TooDeep { key: String },
    #[error("field \"{key}\": repeated messages cannot be given as query parameters; send a JSON body")]
    RepeatedByParts { key: String },
    #[error("field \"{key}\" given both whole and by parts")]
    Conflict { key: String },
    #[error("invalid query parameter \"{key}\"")]
    InvalidKey { key: String },
    #[error("query parameter key has {segments} segments: at most {MAX_KEY_SEGMENTS} (MAX_KEY_SEGMENTS)")]
    TooManySegments { segments: usize },
    #[error("query parameter \"{text}\" is not UTF-8")]
    NotUtf8 { text: String },
    #[error("invalid JSON body: {reason}")]
    InvalidJson { reason: String },
    #[error("the body must be a JSON object, got {got}")]
    NotJsonObject { got: &'static str },
    #[error("the JSON is nested deeper than {MAX_JSON_DEPTH} levels (MAX_JSON_DEPTH)")]
    JsonTooDeep,
    /// A value protobuf-JSON refuses, found when the message is built.
    #[error("field \"{key}\": {reason}")]
    Field { key: String, reason: String },
    /// The message as a whole does not deserialize (after every field alone did).
    #[error("{reason}")]
    Message { reason: String },
    /// A message protobuf-JSON cannot show: an `Any` of an unknown type, a timestamp or duration
    /// out of range.
    #[error("the answer cannot be shown as JSON: {reason}")]
    Unrepresentable { reason: String },
}

/// What a value of `kind` must be, for error messages.
fn expected(kind: &Kind) -> String {
    match kind {
        Kind::String => "a string".into(),
        Kind::Bytes => "base64".into(),
        Kind::Bool => "a boolean (true or false)".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "a 32-bit integer".into(),
        Kind::Uint32 | Kind::Fixed32 => "an unsigned 32-bit integer".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "a 64-bit integer".into(),
        Kind::Uint64 | Kind::Fixed64 => "an unsigned 64-bit integer".into(),
        Kind::Double => "a number".into(),
        Kind::Float => "a 32-bit float".into(),
        Kind::Enum(desc) => format!("a value of {}", desc.full_name()),
        Kind::Message(desc) => format!("JSON of {}", desc.full_name()),
    }
}

fn not_an_object(key: &str, map: bool) -> String {
    match map {
        true => format!("field \"{key}\" is a map: give a JSON object or entries as {key}.KEY=VALUE"),
        false => format!("field \"{key}\": expected a JSON object"),
    }
}

/// Turns a query string or form body (`a=1&b.c=x&d[]=1&d[]=2`) into a JSON object shaped like
/// `desc`, by [`insert`]ing each pair; `a` without `=` is a key given no value (true for a bool).
pub fn query_fields(desc: &MessageDescriptor, query: &str) -> Result<Map<String, Value>, Error> {
    let mut fields = Map::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (pair, None),
        };
        let key = percent_decode(key)?;
        let path = key_path(&key)?;
        let value = value.map(percent_decode).transpose()?;
        insert(desc, &mut fields, &path, value.as_deref(), &key)?;
    }
    Ok(fields)
}

/// `a.b`, `a[b]`, `a[b][]` → `["a", "b"]`: a key's path of field names (and map keys). A
/// trailing `[]` is allowed (repeated fields); at most [`MAX_KEY_SEGMENTS`] segments.
pub fn key_path(key: &str) -> Result<Vec<&str>, Error> {
    let segments = key.bytes().filter(|b| *b == b'.' || *b == b'[').count() + 1;
    if segments > MAX_KEY_SEGMENTS {
        return Err(Error::TooManySegments { segments });
    }
    let trimmed = key.strip_suffix("[]").unwrap_or(key);
    let path: Vec<&str> =
        trimmed.split(['.', '[']).map(|part| part.strip_suffix(']').unwrap_or(part)).collect();
    if path.iter().any(|part| part.is_empty()) {
        return Err(Error::InvalidKey { key: key.to_string() });
    }
    Ok(path)
}

/// Sets the field `path` reaches (field names by proto name or lowerCamel JSON name; map keys
/// after a map field) from `text`, in `object`, a protobuf-JSON object of `desc` stored under
/// proto names. `None` is a key given without a value. By the field's kind:
///
/// - string: the text as is; bytes: base64 (standard or URL-safe, padding optional), as in
///   protobuf-JSON, so any bytes can be given and a response's value can be sent back;
/// - bool: `true`/`false`/`1`/`0` (any case); no value is `true`;
/// - integers must parse (surrounding blanks ignored); 64-bit ones become JSON strings, as
///   protobuf-JSON writes them; floats also take `NaN`, `Infinity` and `-Infinity`;
/// - enums: a value's name, in any case (one that matches exactly wins), or its number;
/// - messages given whole take JSON, which must be an object for messages of one's own; the
///   well-known types take their JSON form: a timestamp, duration or field mask its text (no
///   quotes needed), a wrapper (`Int64Value` …) its value's text, `Value` JSON or else text;
///   a message given whole over one given by parts is merged into it;
/// - repeated fields collect every occurrence, and a scalar occurrence may be a comma list
///   (`1,2,3`); other fields keep the last;
/// - maps take `KEY=VALUE` entries by path (`labels.env=prod`) or a JSON object whole.
pub fn insert(
    desc: &MessageDescriptor,
    object: &mut Map<String, Value>,
    path: &[&str],
    text: Option<&str>,
    key: &str,
) -> Result<(), Error> {
    let Some((first, rest)) = path.split_first() else {
        return Err(Error::InvalidKey { key: key.to_string() });
    };
    let field = field_of(desc, first)?;
    let name = field.name().to_string();
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else { unreachable!("map fields are entry messages") };
        let key_kind = entry.map_entry_key_field().kind();
        let Some((map_key, rest)) = rest.split_first() else {
            let entries = match text.map(|text| json_text(text, key)) {
                Some(Ok(Value::Object(entries))) => entries,
                Some(Err(Error::JsonTooDeep)) => return Err(Error::JsonTooDeep),
                _ => return Err(Error::NotAnObject { key: key.to_string(), map: true }),
            };
            let map = child_object(object, name, key)?;
            for (map_key, value) in entries {
                map.insert(typed_map_key(&key_kind, &map_key, key)?, value);
            }
            return Ok(());
        };
        let map_key = typed_map_key(&key_kind, map_key, key)?;
        let value_kind = entry.map_entry_value_field().kind();
        let map = child_object(object, name, key)?;
        if rest.is_empty() {
            map.insert(map_key, leaf(&value_kind, text, key)?);
            return Ok(());
        }
        let Some(value_desc) = by_parts(&value_kind) else {
            return Err(Error::TooDeep { key: key.to_string() });
        };
        return insert(&value_desc, child_object(map, map_key, key)?, rest, text, key);
    }
    let kind = field.kind();
    if !rest.is_empty() {
        let Some(child) = by_parts(&kind) else { return Err(Error::TooDeep { key: key.to_string() }) };
        if field.is_list() {
            return Err(Error::RepeatedByParts { key: key.to_string() });
        }
        return insert(&child, child_object(object, name, key)?, rest, text, key);
    }
    if field.is_list() {
        let items = match (&kind, text) {
            (Kind::Message(_), _) | (_, None) => vec![leaf(&kind, text, key)?],
            (_, Some(text)) => {
                text.split(',').map(|item| leaf(&kind, Some(item), key)).collect::<Result<_, _>>()?
            }
        };
        return match object.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(existing) => {
                existing.extend(items);
                Ok(())
            }
            _ => Err(Error::Conflict { key: key.to_string() }),
        };
    }
    let value = leaf(&kind, text, key)?;
    match (by_parts(&kind), object.get_mut(&name), value) {
        (Some(child), Some(Value::Object(existing)), Value::Object(patch)) => merge(&child, existing, patch),
        (_, _, value) => {
            object.insert(name, value);
        }
    }
    Ok(())
}

/// The message a field of `kind` is, when its fields can be given by parts: messages of one's
/// own, not the well-known types (whose JSON is not their fields).
fn by_parts(kind: &Kind) -> Option<MessageDescriptor> {
    match kind {
        Kind::Message(desc) if !is_well_known(desc) => Some(desc.clone()),
        _ => None,
    }
}

fn is_well_known(desc: &MessageDescriptor) -> bool {
    desc.package_name() == "google.protobuf"
}

fn field_of(desc: &MessageDescriptor, name: &str) -> Result<FieldDescriptor, Error> {
    desc.get_field_by_name(name)
        .or_else(|| desc.get_field_by_json_name(name))
        .ok_or_else(|| Error::UnknownField { message: desc.full_name().to_string(), name: name.to_string() })
}

fn child_object<'a>(
    object: &'a mut Map<String, Value>,
    name: String,
    key: &str,
) -> Result<&'a mut Map<String, Value>, Error> {
    match object.entry(name).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(child) => Ok(child),
        _ => Err(Error::Conflict { key: key.to_string() }),
    }
}

/// A map key as protobuf-JSON writes it (always a string), checked against the key's kind.
fn typed_map_key(kind: &Kind, text: &str, key: &str) -> Result<String, Error> {
    Ok(match scalar(kind, text, key)? {
        Value::String(text) => text,
        other => other.to_string(),
    })
}

/// The JSON a field of `kind` takes for `text` (see [`insert`]).
fn leaf(kind: &Kind, text: Option<&str>, key: &str) -> Result<Value, Error> {
    match (kind, text) {
        (Kind::Message(desc), _) => message_value(desc, text, key),
        (Kind::Bool, None) => Ok(Value::Bool(true)),
        (_, None) => Err(Error::MissingValue { key: key.to_string() }),
        (kind, Some(text)) => scalar(kind, text, key),
    }
}

/// A message field given whole.
fn message_value(desc: &MessageDescriptor, text: Option<&str>, key: &str) -> Result<Value, Error> {
    let name = desc.full_name();
    let wrapper =
        name.starts_with("google.protobuf.") && name.ends_with("Value") && name != "google.protobuf.Value";
    if wrapper && let Some(inner) = desc.get_field_by_name("value") {
        return leaf(&inner.kind(), text, key);
    }
    let Some(text) = text else { return Err(Error::MissingValue { key: key.to_string() }) };
    let value = match name {
        // JSON strings; quotes are not needed, but allowed.
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
            match serde_json::from_str::<Value>(text) {
                Ok(string @ Value::String(_)) => string,
                _ => Value::String(text.to_string()),
            }
        }
        "google.protobuf.Value" => match json_text(text, key) {
            Err(Error::JsonTooDeep) => return Err(Error::JsonTooDeep),
            Ok(value) => value,
            Err(_) => Value::String(text.to_string()),
        },
        _ if is_well_known(desc) => json_text(text, key)?,
        _ => match json_text(text, key) {
            Ok(object @ Value::Object(_)) => object,
            Err(Error::JsonTooDeep) => return Err(Error::JsonTooDeep),
            _ => return Err(Error::NotAnObject { key: key.to_string(), map: false }),
        },
    };
    // Checked now, so that the error names the key it came from.
    DynamicMessage::deserialize(desc.clone(), &value)
        .map_err(|err| Error::Field { key: key.to_string(), reason: err.to_string() })?;
    Ok(value)
}

/// Text that must be JSON, nested at most [`MAX_JSON_DEPTH`] deep.
fn json_text(text: &str, key: &str) -> Result<Value, Error> {
    let value = serde_json::from_str::<Value>(text)
        .map_err(|err| Error::Field { key: key.to_string(), reason: format!("invalid JSON: {err}") })?;
    check_depth(&value)?;
    Ok(value)
}

/// One scalar's text as the protobuf-JSON of `kind`.
fn scalar(kind: &Kind, text: &str, key: &str) -> Result<Value, Error> {
    let invalid =
        || Error::InvalidValue { key: key.to_string(), value: text.to_string(), kind: kind.clone() };
    let trimmed = text.trim();
    let value = match kind {
        Kind::String => Value::String(text.to_string()),
        Kind::Bytes => {
            if !is_base64(trimmed) {
                return Err(invalid());
            }
            Value::String(trimmed.to_string())
        }
        Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(invalid()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::from(trimmed.parse::<i32>().map_err(|_| invalid())?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::from(trimmed.parse::<u32>().map_err(|_| invalid())?),
        // 64-bit integers travel as strings in protobuf-JSON, so no reader loses precision.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::String(trimmed.parse::<i64>().map_err(|_| invalid())?.to_string())
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::String(trimmed.parse::<u64>().map_err(|_| invalid())?.to_string())
        }
        Kind::Double | Kind::Float => {
            let number = trimmed.parse::<f64>().map_err(|_| invalid())?;
            let spelled_out = !trimmed.bytes().any(|b| b.is_ascii_digit());
            match serde_json::Number::from_f64(number) {
                Some(_) if matches!(kind, Kind::Float) && number.abs() > f64::from(f32::MAX) => {
                    return Err(invalid());
                }
                Some(finite) => Value::Number(finite),
                // `NaN`, `inf`, `-Infinity` …, but not a number too large to hold.
                None if !spelled_out => return Err(invalid()),
                None if number.is_nan() => Value::String("NaN".into()),
                None if number > 0.0 => Value::String("Infinity".into()),
                None => Value::String("-Infinity".into()),
            }
        }
        Kind::Enum(desc) => match trimmed.parse::<i32>() {
            Ok(number) => Value::from(number),
            Err(_) => {
                let exact = desc.get_value_by_name(trimmed);
                let mut folded = desc.values().filter(|value| value.name().eq_ignore_ascii_case(trimmed));
                let only = match (folded.next(), folded.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                };
                Value::String(exact.or(only).ok_or_else(invalid)?.name().to_string())
            }
        },
        Kind::Message(desc) => message_value(desc, Some(text), key)?,
    };
    Ok(value)
}

/// Whether `text` is base64 as protobuf-JSON reads it: the standard or URL-safe alphabet,
/// padding optional.
fn is_base64(text: &str) -> bool {
    use base64::Engine as _;
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [GeneralPurpose::new(&STANDARD, CONFIG), GeneralPurpose::new(&URL_SAFE, CONFIG)]
        .iter()
        .any(|engine| engine.decode(text).is_ok())
}

/// `application/x-www-form-urlencoded` decoding of one key or value: `+` is a space, `%XX` a
/// byte (a `%` not followed by two hex digits stays as it is), and the bytes must be UTF-8
/// (`form_urlencoded` would replace bad bytes silently; a wrong value must be refused).
fn percent_decode(input: &str) -> Result<String, Error> {
    let spaced = input.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Error::NotUtf8 { text: input.to_string() })
}

/// Merges `patch` (a JSON body) over `base` (fields given as text) as a JSON merge patch: objects
/// of message fields merge key by key, `null` removes, anything else replaces. Keys are brought
/// to proto field names on the way, so `userName` in the body meets `user_name` from the query.
pub fn merge(desc: &MessageDescriptor, base: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        let field = field_of(desc, &key).ok();
        let name = field.as_ref().map_or(key, |field| field.name().to_string());
        let child = field
            .as_ref()
            .filter(|field| !field.is_map() && !field.is_list())
            .and_then(|field| by_parts(&field.kind()));
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
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    // serde_json itself stops at 128 levels ("recursion limit exceeded"); ours is lower.
    let value = serde_json::from_slice::<Value>(body)
        .map_err(|err| Error::InvalidJson { reason: err.to_string() })?;
    check_depth(&value)?;
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(Error::NotJsonObject { got: kind_of(&other) }),
    }
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`], without recursing.
pub fn check_depth(value: &Value) -> Result<(), Error> {
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        if !(value.is_array() || value.is_object()) {
            continue;
        }
        if depth > MAX_JSON_DEPTH {
            return Err(Error::JsonTooDeep);
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|child| (child, depth + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|child| (child, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// `an array`, `a string` …: what a JSON value is, for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds a message of `desc` from protobuf-JSON fields (proto or lowerCamel names); the error
/// names the field that does not fit.
pub fn to_message(desc: &MessageDescriptor, fields: Map<String, Value>) -> Result<DynamicMessage, Error> {
    let whole = Value::Object(fields);
    let error = match DynamicMessage::deserialize(desc.clone(), &whole) {
        Ok(message) => return Ok(message),
        Err(err) => err,
    };
    // Field by field only when the whole fails, so the error can say which field it is about.
    for (name, value) in whole.as_object().into_iter().flatten() {
        field_of(desc, name)?;
        let single = Value::Object([(name.clone(), value.clone())].into_iter().collect());
        DynamicMessage::deserialize(desc.clone(), single)
            .map_err(|err| Error::Field { key: name.clone(), reason: err.to_string() })?;
    }
    Err(Error::Message { reason: error.to_string() })
}

/// How every edge writes messages: proto field names, defaults left out, 64-bit integers as
/// strings (bytes as base64, enums by name, as protobuf-JSON always does).
fn serialize_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true)
}

/// A message as protobuf-JSON on one line (see [`serialize_options`]).
pub fn to_json(message: &DynamicMessage) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    message
        .serialize_with_options(&mut serde_json::Serializer::new(&mut bytes), &serialize_options())
        .map_err(|err| Error::Unrepresentable { reason: err.to_string() })?;
    Ok(bytes)
}

/// A message as protobuf-JSON, one field a line, indented by `indent` a level.
pub fn to_json_indented(message: &DynamicMessage, indent: &[u8]) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
    message
        .serialize_with_options(
            &mut serde_json::Serializer::with_formatter(&mut bytes, formatter),
            &serialize_options(),
        )
        .map_err(|err| Error::Unrepresentable { reason: err.to_string() })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
