//! `micro call <service> <Endpoint.Method> [json...]`: call any endpoint with a JSON request and
//! print the JSON response (docs/compatibility.md §2.11).
//!
//! The request and response types come from protobuf descriptors, so one generic path serves
//! every method: [`resolve`] finds the method in a [`DescriptorPool`], [`request_message`] turns
//! JSON into a [`DynamicMessage`], [`DynamicCodec`] puts it on the wire, and [`format_response`]
//! prints the answer as protobuf-JSON. Core services are resolved in the descriptors compiled
//! into the binary ([`core_descriptors`]); any other service in the descriptors it registered
//! ([`resolve_registered`]), and is called at `/<package>.<Handler>/<Method>` through the proxy.

use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use micro_proto::dynamic::DynamicCodec;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::{Code, Status};

use crate::client::Client;
use crate::error::{CliError, EXIT_INVALID_TIMEOUT, Result};
use crate::{Global, out};

#[derive(Args, Debug)]
pub struct CallArgs {
    /// The service to call, e.g. store
    service: String,
    /// The endpoint to call, as Handler.Method, e.g. Store.Read
    #[arg(value_name = "ENDPOINT")]
    endpoint: String,
    /// The request as a JSON object; the arguments are joined with spaces [default: {}]
    #[arg(value_name = "JSON", allow_negative_numbers = true)]
    request: Vec<String>,
    /// Output format: json (indented with tabs) or raw (compact, one line per message)
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
    /// Request metadata as KEY=VALUE; repeat for more
    #[arg(long, value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Give up after this long, e.g. 500ms or 5s
    #[arg(long = "request_timeout", visible_alias = "request-timeout", value_name = "DURATION")]
    request_timeout: Option<String>,
}

/// How responses are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Protobuf-JSON indented with tabs
    #[default]
    Json,
    /// Protobuf-JSON on one line
    Raw,
}

pub async fn run(global: &Global, args: CallArgs) -> Result<()> {
    // Everything that can be checked locally is, before connecting.
    let endpoint = Endpoint::from_str(&args.endpoint)?;
    let metadata = parse_metadata(&args.metadata)?;
    let timeout = args.request_timeout.as_deref().map(parse_timeout).transpose()?;
    let pool = core_descriptors();
    let core = pool.services().any(|candidate| candidate.package_name() == args.service);
    let json = args.request.join(" ");
    let build = |target: Target| -> Result<(Target, DynamicMessage)> {
        let message = request_message(&target.method.input(), &json)
            .map_err(|reason| CliError::new(format!("Error creating request: {reason}")))?;
        Ok((target, message))
    };
    // Core services are checked before connecting; others need their registered descriptors.
    let local = if core { Some(build(resolve(&pool, &args.service, &endpoint)?)?) } else { None };
    let client = global.connect().await?;
    let (target, message) = match local {
        Some(local) => local,
        None => build(resolve_registered(&client, &args.service, &endpoint).await?)?,
    };

    let mut request = client.request(message);
    for (key, value) in metadata {
        request.metadata_mut().insert(key, value);
    }
    if let Some(timeout) = timeout {
        // Sent as `grpc-timeout`; the channel also enforces it locally.
        request.set_timeout(timeout);
    }
    match target.send(&client, request).await? {
        Responses::One(response) => out(&format_response(&response, args.output)?),
        Responses::Stream(mut stream) => {
            while let Some(response) =
                stream.message().await.map_err(|status| target.error(&client, status))?
            {
                out(&format_response(&response, args.output)?);
            }
        }
    }
    Ok(())
}

/// The descriptors of the core services, compiled into the binary by `micro-proto`.
pub(crate) fn core_descriptors() -> DescriptorPool {
    DescriptorPool::decode(micro_proto::FILE_DESCRIPTOR_SET)
        .expect("micro-proto's build script encodes a valid FileDescriptorSet of the protos it compiled")
}

/// An endpoint as `micro call` takes it: `Handler.Method`, e.g. `Store.Read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub handler: String,
    pub method: String,
}

impl FromStr for Endpoint {
    type Err = CliError;

    /// Exactly one dot with a name either side, as the original's router required.
    fn from_str(endpoint: &str) -> Result<Self> {
        match endpoint.split_once('.') {
            Some((handler, method)) if !handler.is_empty() && !method.is_empty() && !method.contains('.') => {
                Ok(Self { handler: handler.to_string(), method: method.to_string() })
            }
            _ => Err(CliError::malformed_method(endpoint)),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.handler, self.method)
    }
}

/// A method found in the descriptors: where to send a request and what types it exchanges.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub service: String,
    pub path: PathAndQuery,
    pub method: MethodDescriptor,
}

/// Finds `endpoint` of `service` in `pool`.
///
/// A service's descriptors are those in the proto package named after it (`store` →
/// `store.Store`), which holds for every core service. The gRPC path is
/// `/<service>.<Handler>/<Method>` (docs/compatibility.md §3.1): the receiving server dispatches on the
/// endpoint, so the prefix is the service name even where a package is named differently.
pub(crate) fn resolve(pool: &DescriptorPool, service: &str, endpoint: &Endpoint) -> Result<Target> {
    if !pool.services().any(|candidate| candidate.package_name() == service) {
        return Err(CliError::unknown_service(service));
    }
    let method = pool
        .services()
        .filter(|candidate| candidate.package_name() == service && candidate.name() == endpoint.handler)
        .find_map(|candidate| candidate.methods().find(|method| method.name() == endpoint.method))
        .ok_or_else(|| CliError::unknown_method(&endpoint.to_string()))?;
    let path = format!("/{service}.{}/{}", endpoint.handler, endpoint.method);
    let path = PathAndQuery::from_str(&path).map_err(|_| CliError::unknown_service(service))?;
    Ok(Target { service: service.to_string(), path, method })
}

/// Finds `endpoint` of a service that is not a core service in the descriptors it registered.
pub(crate) async fn resolve_registered(
    client: &Client,
    service: &str,
    endpoint: &Endpoint,
) -> Result<Target> {
    let catalog =
        crate::dynamic::lookup(client, service).await?.ok_or_else(|| CliError::unknown_service(service))?;
    let method = catalog
        .endpoints
        .get(&endpoint.to_string())
        .ok_or_else(|| CliError::unknown_method(&endpoint.to_string()))?;
    crate::dynamic::target(service, method)
}

/// What a call returned: one message, or a stream of them for server-streaming methods.
pub(crate) enum Responses {
    One(DynamicMessage),
    Stream(Streaming<DynamicMessage>),
}

impl Target {
    /// Sends `request` over the client's channel. Client-streaming methods get it as a stream
    /// of one message, which is the same bytes on the wire as a unary call.
    pub(crate) async fn send(
        &self,
        client: &Client,
        request: tonic::Request<DynamicMessage>,
    ) -> Result<Responses> {
        let mut grpc = tonic::client::Grpc::new(client.channel.clone());
        grpc.ready().await.map_err(|_| CliError::unreachable(&client.address))?;
        let codec = DynamicCodec::new(self.method.output());
        let path = self.path.clone();
        let sent = if self.method.is_server_streaming() {
            grpc.server_streaming(request, path, codec)
                .await
                .map(|response| Responses::Stream(response.into_inner()))
        } else {
            grpc.unary(request, path, codec).await.map(|response| Responses::One(response.into_inner()))
        };
        sent.map_err(|status| self.error(client, status))
    }

    /// Maps a failed call to the CLI's message and exit code.
    pub(crate) fn error(&self, client: &Client, status: Status) -> CliError {
        match status.code() {
            // tonic's router answers an unknown service path with a bare UNIMPLEMENTED; the
            // server's proxy with `service <name> not found`.
            Code::Unimplemented
                if status.message().is_empty() || status.message().ends_with(" not found") =>
            {
                CliError::route_not_found(&self.service)
            }
            // The channel's own deadline (`--request_timeout`) surfaces as CANCELLED.
            Code::Cancelled if status.message() == "Timeout expired" => CliError::new("Request timed out"),
            _ => client.error(status),
        }
    }
}

/// Builds a request of type `desc` from the JSON object `json` (blank means `{}`). Fields may be
/// named as in the proto (`snake_case`) or in lowerCamel JSON style. The error names the
/// offending field (the mapping is `micro_proto::json`, the gateway's too).
pub(crate) fn request_message(
    desc: &MessageDescriptor,
    json: &str,
) -> std::result::Result<DynamicMessage, String> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|err| err.to_string())?;
    let serde_json::Value::Object(fields) = value else {
        return Err(format!("expected a JSON object, got {value}"));
    };
    micro_proto::json::to_message(desc, fields).map_err(|err| err.to_string())
}

/// Prints a response as the original did: protobuf-JSON with the proto's field names, default
/// values left out and 64-bit integers as strings (`micro_proto::json`, as the gateway answers);
/// indented with tabs, or on one line for `raw`. Ends with a newline.
pub(crate) fn format_response(message: &DynamicMessage, output: Output) -> Result<String> {
    let written = match output {
        Output::Json => micro_proto::json::to_json_indented(message, b"\t"),
        Output::Raw => micro_proto::json::to_json(message),
    };
    let bytes = written.map_err(|err| {
        let reason = match err {
            micro_proto::json::Error::Unrepresentable { reason } => reason,
            other => other.to_string(),
        };
        CliError::new(format!("Error formatting the response: {reason}"))
    })?;
    let mut text = String::from_utf8(bytes).expect("serde_json writes UTF-8");
    text.push('\n');
    Ok(text)
}

/// Parses `--metadata KEY=VALUE` entries into gRPC metadata (ASCII; keys are case-insensitive).
fn parse_metadata(entries: &[String]) -> Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>> {
    entries
        .iter()
        .map(|entry| {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(CliError::new(format!("Invalid metadata {entry:?}: expected KEY=VALUE")));
            };
            let key = AsciiMetadataKey::from_str(key.trim()).map_err(|_| {
                CliError::new(format!(
                    "Invalid metadata key {key:?}: use letters, digits and -_. (and no -bin suffix)"
                ))
            })?;
            // HTTP allows some non-ASCII bytes in header values; gRPC metadata does not.
            let printable = value.chars().all(|c| c == ' ' || c.is_ascii_graphic());
            let value = AsciiMetadataValue::try_from(value).ok().filter(|_| printable).ok_or_else(|| {
                CliError::new(format!("Invalid metadata value for {key}: use printable ASCII characters"))
            })?;
            Ok((key, value))
        })
        .collect()
}

/// Parses `--request_timeout`; the message and exit code are the original's.
fn parse_timeout(input: &str) -> Result<Duration> {
    match micro_core::duration::parse(input) {
        Ok(timeout) if !timeout.is_zero() => Ok(timeout),
        _ => Err(CliError::with_code(
            "Invalid format for request_timeout duration. Try 500ms or 5s",
            EXIT_INVALID_TIMEOUT,
        )),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::error::{EXIT_FAILURE, EXIT_MALFORMED_METHOD, EXIT_UNKNOWN_SERVICE};

    fn target(service: &str, endpoint: &str) -> Result<Target> {
        resolve(&core_descriptors(), service, &endpoint.parse()?)
    }

    #[test]
    fn endpoints_resolve_to_grpc_paths_of_core_services() {
        let read = target("store", "Store.Read").unwrap();
        assert_eq!(read.path.as_str(), "/store.Store/Read");
        assert_eq!(read.method.input().full_name(), "store.ReadRequest");
        assert!(!read.method.is_server_streaming());
        assert_eq!(target("auth", "Auth.Token").unwrap().path.as_str(), "/auth.Auth/Token");
        assert!(target("store", "Store.List").unwrap().method.is_server_streaming());

        for malformed in ["StoreRead", "Store.", ".Read", "Store.Read.Again", ""] {
            let err = target("store", malformed).unwrap_err();
            assert_eq!(err.code, EXIT_MALFORMED_METHOD, "{malformed}");
            assert_eq!(
                err.message,
                format!("Method name \"{malformed}\" invalid format. Expecting service.endpoint")
            );
        }
        let unknown = target("nope", "Nope.Call").unwrap_err();
        assert_eq!(
            (unknown.message.as_str(), unknown.code),
            ("Service \"nope\" not found", EXIT_UNKNOWN_SERVICE)
        );
        let method = target("store", "Store.Nope").unwrap_err();
        assert_eq!(
            (method.message.as_str(), method.code),
            ("Service method \"Store.Nope\" not found", EXIT_UNKNOWN_SERVICE)
        );
        let handler = target("store", "Config.Read").unwrap_err();
        assert_eq!(handler.message, "Service method \"Config.Read\" not found");
    }

    #[test]
    fn json_requests_accept_proto_and_camel_names_and_errors_name_the_field() {
        let read = target("store", "Store.Read").unwrap().method.input();
        let message = request_message(&read, r#"{"key": "x", "options": {"database": "db"}}"#).unwrap();
        assert_eq!(message.get_field_by_name("key").unwrap().as_str(), Some("x"));
        assert_eq!(request_message(&read, "").unwrap(), DynamicMessage::new(read.clone()));
        assert_eq!(request_message(&read, "  ").unwrap(), DynamicMessage::new(read.clone()));

        let token = target("auth", "Auth.Token").unwrap().method.input();
        let snake = request_message(&token, r#"{"refresh_token": "r"}"#).unwrap();
        let camel = request_message(&token, r#"{"refreshToken": "r"}"#).unwrap();
        assert_eq!(snake, camel);

        let unknown = request_message(&read, r#"{"kee": "x"}"#).unwrap_err();
        assert_eq!(unknown, "store.ReadRequest has no field \"kee\"");
        let wrong_type = request_message(&read, r#"{"key": 5}"#).unwrap_err();
        assert!(wrong_type.starts_with("field \"key\": "), "{wrong_type}");
        let nested = request_message(&read, r#"{"options": {"nope": 1}}"#).unwrap_err();
        assert!(nested.starts_with("field \"options\": ") && nested.contains("nope"), "{nested}");
        let not_json = request_message(&read, "{key: x}").unwrap_err();
        assert!(not_json.contains("line 1"), "{not_json}");
        assert_eq!(request_message(&read, "[1]").unwrap_err(), "expected a JSON object, got [1]");
    }

    #[test]
    fn responses_print_as_protobuf_json_with_tabs_and_string_int64s() {
        let output = target("auth", "Auth.Token").unwrap().method.output();
        let message = request_message(
            &output,
            r#"{"token": {"access_token": "a", "refresh_token": "", "created": "1700000000", "expiry": 1700000600}}"#,
        )
        .unwrap();
        assert_eq!(
            format_response(&message, Output::Json).unwrap(),
            "{\n\t\"token\": {\n\t\t\"access_token\": \"a\",\n\t\t\"created\": \"1700000000\",\n\t\t\"expiry\": \"1700000600\"\n\t}\n}\n"
        );
        assert_eq!(
            format_response(&message, Output::Raw).unwrap(),
            "{\"token\":{\"access_token\":\"a\",\"created\":\"1700000000\",\"expiry\":\"1700000600\"}}\n"
        );
        assert_eq!(format_response(&DynamicMessage::new(output), Output::Json).unwrap(), "{}\n");
    }

    #[test]
    fn the_codec_round_trips_messages() {
        let output = target("auth", "Auth.Token").unwrap().method.output();
        let message = request_message(&output, r#"{"token": {"access_token": "a", "expiry": "9"}}"#).unwrap();
        let bytes = message.encode_to_vec();
        assert_eq!(DynamicMessage::decode(output, bytes.as_slice()).unwrap(), message);
    }

    #[test]
    fn metadata_and_timeouts_are_validated() {
        let entries = ["Foo=bar".to_string(), "x-trace=a=b".to_string()];
        let parsed = parse_metadata(&entries).unwrap();
        let parsed: Vec<(&str, &str)> =
            parsed.iter().map(|(key, value)| (key.as_str(), value.to_str().unwrap())).collect();
        assert_eq!(parsed, [("foo", "bar"), ("x-trace", "a=b")]);
        for bad in ["novalue", "bad key=1", "=1", "key-bin=1", "key=caf\u{e9}"] {
            let err = parse_metadata(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.code, EXIT_FAILURE, "{bad}");
            assert!(err.message.starts_with("Invalid metadata"), "{bad}: {}", err.message);
        }

        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("5s").unwrap(), Duration::from_secs(5));
        for bad in ["soon", "5", "0", ""] {
            let err = parse_timeout(bad).unwrap_err();
            assert_eq!(err.code, EXIT_INVALID_TIMEOUT, "{bad}");
            assert_eq!(err.message, "Invalid format for request_timeout duration. Try 500ms or 5s");
        }
    }
}
