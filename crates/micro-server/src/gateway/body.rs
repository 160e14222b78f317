//! Request and response bodies (docs/compatibility.md §4.3): query parameters become typed fields of the
//! request message, a JSON body is merged over them, and the result is checked against the
//! method's descriptor so that a wrong field or value is a 400 that names it. Responses are
//! protobuf-JSON with the proto's field names, defaults left out and 64-bit integers as strings,
//! as the original's services answered.
//!
//! The mapping itself is `micro_proto::json`, the one the CLI uses too, so a query parameter
//! and a `--flag` take the same text; this module is the gateway's side of it: a mapping error
//! is a 400 that names the field.

pub use micro_proto::json::{
    Error, MAX_JSON_DEPTH, MAX_KEY_SEGMENTS, json_object, merge, query_fields, to_json, to_message,
};

use super::errors::ApiError;

impl From<Error> for ApiError {
    /// A request that does not fit its message is the caller's to fix: 400, naming the field
    /// (or the limit it passed).
    fn from(error: Error) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use prost_reflect::{DescriptorPool, MessageDescriptor};
    use serde_json::{Map, Value, json};

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
            json!({"key": "a b c", "options": {"prefix": true, "limit": "5", "offset": "7"}}),
            "64-bit integers are strings, as protobuf-JSON writes them"
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
            json!({"topic": "t", "auto_ack": false, "retry_limit": "-1", "sequence": "18446744073709551615"}),
            "lowerCamel names are accepted and stored under proto names"
        );
        let decoded = to_message(&consume, fields).unwrap();
        assert_eq!(decoded.get_field_by_name("retry_limit").unwrap().as_i64(), Some(-1));

        // Through the gateway's error, as a caller sees it: a 400 naming the field.
        let err = |desc: &MessageDescriptor, query: &str| {
            let error = ApiError::from(query_fields(desc, query).unwrap_err());
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
            error.detail
        };
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
            "field \"metadata\" is a map: give a JSON object or entries as metadata.KEY=VALUE"
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

        assert!(json_object(b"{nope").unwrap_err().to_string().starts_with("invalid JSON body: "));
        assert_eq!(
            json_object(b"[1]").unwrap_err().to_string(),
            "the body must be a JSON object, got an array"
        );
        let unknown = to_message(&read, json_object(br#"{"kee": 1}"#).unwrap()).unwrap_err().to_string();
        assert_eq!(unknown, "store.ReadRequest has no field \"kee\"");
        let wrong = to_message(&read, json_object(br#"{"key": 5}"#).unwrap()).unwrap_err().to_string();
        assert!(wrong.starts_with("field \"key\": "), "{wrong}");
        let nested =
            to_message(&read, json_object(br#"{"options": {"nope": 1}}"#).unwrap()).unwrap_err().to_string();
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
        let err = query_fields(&read, &deep).unwrap_err().to_string();
        assert!(err.contains("MAX_KEY_SEGMENTS") && err.contains("100001"), "{err}");
        let at_limit = format!("{}=1", vec!["options"; MAX_KEY_SEGMENTS].join("."));
        let err = query_fields(&read, &at_limit).unwrap_err().to_string();
        assert!(!err.contains("MAX_KEY_SEGMENTS"), "32 segments pass the cap: {err}");

        let nested =
            |depth: usize| format!("{{\"key\":{}1{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1));
        assert!(json_object(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let err = json_object(nested(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("MAX_JSON_DEPTH"), "{err}");
        let err = json_object(nested(100_000).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("invalid JSON body"), "serde_json's own limit stops it first: {err}");
    }
}
