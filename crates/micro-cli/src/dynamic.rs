//! Dynamic per-service commands (docs/compatibility.md §2.15):
//! `micro <service> [words...] [--flag=value...]` for any service in the registry, typed by the
//! descriptors the service registered.
//!
//! - Endpoint: no word → `<Service>.Call` (`micro helloworld` is `Helloworld.Call`); one word →
//!   `<Service>.<Word>` (`micro registry getService`); two words → `<Word1>.<Word2>`; more is an
//!   error. Words match endpoint names ignoring case, `-` and `_` (`get-service`, `get_service`).
//! - Flags: `--name=value` or `--name value`; a bare `--name` is `true`. `--a_b=x` sets field `b`
//!   of message field `a` (`{"a":{"b":"x"}}`) unless `a_b` is itself a field; `-` may stand for
//!   `_`; the gateway's keys (`--a.b=x`, `--labels.env=prod`, `--a[b]=x`) work too. Values are
//!   typed by the request's descriptor with the gateway's rules for query parameters
//!   (`micro_proto::json::insert`): repeated fields take repeated flags or comma lists; message
//!   and map fields take JSON; enums a name in any case or a number; bytes base64.
//! - `--help` anywhere prints the generated usage: the service's commands, or one command's flags.

use std::collections::BTreeMap;

use micro_proto::json;
use micro_proto::registry::registry_client::RegistryClient;
use micro_proto::registry::{GetRequest, Options, Service};
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use serde_json::{Map, Value};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

use crate::call::{self, Output, Responses, Target};
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::{Global, out};

/// Core service names, looked up in domain `micro` only (docs/compatibility.md §2.15 step 1).
const CORE_NAMES: &[&str] =
    &["network", "runtime", "registry", "config", "store", "broker", "router", "auth", "proxy", "api"];
/// How deep nested message fields are offered as `--a_b_c` flags in help.
const MAX_FLAG_DEPTH: usize = 3;

/// Runs `micro <service> <args...>` when `service` is registered. `Ok(false)` means there is no
/// such service (or no server to ask), so the caller reports an unrecognized command.
pub async fn run(global: &Global, service: &str, args: &[String]) -> Result<bool> {
    let Ok(client) = global.connect().await else { return Ok(false) };
    let Some(catalog) = lookup(&client, service).await? else { return Ok(false) };
    let parsed = parse_args(args)?;
    if parsed.help {
        match parsed.words.is_empty() {
            true => out(&catalog.help()),
            false => out(&catalog.command_help(&parsed.words)?),
        }
        return Ok(true);
    }
    let endpoint = catalog.endpoint(&parsed.words)?;
    let method = catalog.endpoints[&endpoint].clone();
    let json = request_json(&method.input(), &parsed.flags)?;
    let message = call::request_message(&method.input(), &json.to_string())
        .map_err(|reason| CliError::new(format!("Error creating request: {reason}")))?;
    let target = target(&catalog.name, &method)?;
    match target.send(&client, client.request(message)).await? {
        Responses::One(response) => out(&call::format_response(&response, Output::Json)?),
        Responses::Stream(mut stream) => {
            while let Some(response) =
                stream.message().await.map_err(|status| target.error(&client, status))?
            {
                out(&call::format_response(&response, Output::Json)?);
            }
        }
    }
    Ok(true)
}

/// Where a registered service's method is called: `/<package>.<Handler>/<Method>`, the path its
/// own gRPC server routes on; the proxy finds the service from it.
pub(crate) fn target(service: &str, method: &MethodDescriptor) -> Result<Target> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = path.parse::<PathAndQuery>().map_err(|_| CliError::unknown_service(service))?;
    Ok(Target { service: service.to_string(), path, method: method.clone() })
}

/// A registered service and the endpoints its descriptors let us encode.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub name: String,
    pub version: String,
    /// `Handler.Method` → its descriptor.
    pub endpoints: BTreeMap<String, MethodDescriptor>,
}

/// Fetches `name` from the registry: core names from domain `micro`, others from the current
/// namespace, falling back to `micro`. `None` when it is not registered.
pub(crate) async fn lookup(client: &Client, name: &str) -> Result<Option<Catalog>> {
    let mut domains = vec![micro_core::DEFAULT_NAMESPACE.to_string()];
    if !CORE_NAMES.contains(&name) && client.namespace != micro_core::DEFAULT_NAMESPACE {
        domains.insert(0, client.namespace.clone());
    }
    let mut registry = RegistryClient::new(client.channel.clone());
    for domain in domains {
        let request = client.request(GetRequest {
            service: name.to_string(),
            options: Some(Options { domain, ..Default::default() }),
        });
        match registry.get_service(request).await {
            Ok(reply) => return Catalog::new(name, reply.into_inner().services).map(Some),
            // Not here, or not readable by this caller: try the next domain.
            Err(status)
                if matches!(
                    status.code(),
                    Code::NotFound | Code::Unauthenticated | Code::PermissionDenied
                ) => {}
            Err(status) => return Err(client.error(status)),
        }
    }
    Ok(None)
}

impl Catalog {
    /// Builds the catalog of `name` from its registry entries (the newest version that carries
    /// descriptors).
    pub(crate) fn new(name: &str, services: Vec<Service>) -> Result<Self> {
        let Some(service) = services.iter().rev().find(|service| !service.descriptors.is_empty()) else {
            return Err(CliError::new(format!(
                "Service {name} registered no descriptors, so its requests cannot be encoded"
            )));
        };
        let pool = DescriptorPool::decode(service.descriptors.as_slice()).map_err(|err| {
            CliError::new(format!("Service {name} registered descriptors that cannot be read: {err}"))
        })?;
        Ok(Self {
            name: name.to_string(),
            version: service.version.clone(),
            endpoints: micro_proto::dynamic::endpoints(name, service, &pool),
        })
    }

    /// The generated `micro <service> --help`.
    pub(crate) fn help(&self) -> String {
        let mut commands: Vec<String> =
            self.endpoints.keys().map(|endpoint| self.command_name(endpoint)).collect();
        commands.sort();
        let name = &self.name;
        let mut help = format!(
            "NAME:\n\tmicro {name}\n\nVERSION:\n\t{}\n\nUSAGE:\n\tmicro {name} [command]\n\nCOMMANDS:\n",
            self.version
        );
        for command in commands {
            help.push_str(&format!("\t{command}\n"));
        }
        help
    }

    /// The generated `micro <service> <command> --help`.
    pub(crate) fn command_help(&self, words: &[String]) -> Result<String> {
        let endpoint = self.endpoint(words)?;
        let command = self.command_name(&endpoint);
        let name = &self.name;
        let mut help = format!(
            "NAME:\n\tmicro {name} {command}\n\nUSAGE:\n\tmicro {name} {command} [flags]\n\nFLAGS:\n"
        );
        for (flag, kind) in flags(&self.endpoints[&endpoint].input()) {
            help.push_str(&format!("\t--{flag} {kind}\n"));
        }
        Ok(help)
    }

    /// `Registry.GetService` of service `registry` → `getService`; `Foo.Bar` → `foo bar`.
    fn command_name(&self, endpoint: &str) -> String {
        let (handler, method) = endpoint.split_once('.').unwrap_or((endpoint, ""));
        if normalise(handler) == normalise(&self.name) {
            lower_camel(method)
        } else {
            format!("{} {}", lower_camel(handler), lower_camel(method))
        }
    }

    /// The endpoint the command words name (see the module docs).
    pub(crate) fn endpoint(&self, words: &[String]) -> Result<String> {
        let (handler, method) = match words {
            [] => (self.name.as_str(), "Call"),
            [method] => (self.name.as_str(), method.as_str()),
            [handler, method] => (handler.as_str(), method.as_str()),
            _ => return Err(CliError::usage("Incorrect number of arguments")),
        };
        let matches = |endpoint: &str, handler: &str| {
            let (h, m) = endpoint.split_once('.').unwrap_or((endpoint, ""));
            normalise(h) == normalise(handler) && normalise(m) == normalise(method)
        };
        if let Some(endpoint) = self.endpoints.keys().find(|endpoint| matches(endpoint, handler)) {
            return Ok(endpoint.clone());
        }
        // A service whose one handler is not named after it: `micro greeter` → `Hello.Call`.
        if words.len() < 2 {
            let mut handlers =
                self.endpoints.keys().filter_map(|endpoint| endpoint.split_once('.')).map(|(h, _)| h);
            if let Some(only) = handlers.next()
                && handlers.all(|other| other == only)
                && let Some(endpoint) = self.endpoints.keys().find(|endpoint| matches(endpoint, only))
            {
                return Ok(endpoint.clone());
            }
        }
        Err(CliError::new(format!(
            "Endpoint {}.{} not found for service {}",
            upper_camel(handler),
            upper_camel(method),
            self.name
        )))
    }
}

/// Command-line words and flags, split.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub words: Vec<String>,
    /// Flag name (without `--`) and value; `None` for a bare flag.
    pub flags: Vec<(String, Option<String>)>,
    pub help: bool,
}

/// Splits arguments into endpoint words and flags: `--k=v`, `--k v`, bare `--k`.
pub(crate) fn parse_args(args: &[String]) -> Result<Parsed> {
    let mut parsed = Parsed::default();
    let mut pending: Option<String> = None;
    for arg in args {
        if let Some(flag) = arg.strip_prefix("--") {
            if let Some(name) = pending.take() {
                parsed.flags.push((name, None));
            }
            if flag == "help" {
                parsed.help = true;
                continue;
            }
            match flag.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    parsed.flags.push((name.to_string(), Some(value.to_string())))
                }
                None if !flag.is_empty() => pending = Some(flag.to_string()),
                _ => return Err(CliError::usage(format!("Invalid flag: {arg}. Expected format: --foo=bar"))),
            }
        } else if arg == "-h" {
            parsed.help = true;
        } else if let Some(name) = pending.take() {
            parsed.flags.push((name, Some(arg.clone())));
        } else {
            parsed.words.push(arg.clone());
        }
    }
    if let Some(name) = pending {
        parsed.flags.push((name, None));
    }
    Ok(parsed)
}

/// Turns flags into the JSON request for `input` (see the module docs for the mapping). The
/// text of each flag is typed by `micro_proto::json::insert`, as the gateway types a query
/// parameter; only the flag names (`--a_b`) are the CLI's own.
pub(crate) fn request_json(input: &MessageDescriptor, flags: &[(String, Option<String>)]) -> Result<Value> {
    let mut root = Map::new();
    for (name, value) in flags {
        let fields = field_path(input, &name.replace('-', "_"), 0);
        let path: Vec<&str> = match &fields {
            Some(fields) => fields.iter().map(FieldDescriptor::name).collect(),
            None if name.contains(['.', '[']) => json::key_path(name).map_err(|err| flag_error(name, err))?,
            None => return Err(CliError::usage(format!("Unknown flag: {name}"))),
        };
        json::insert(input, &mut root, &path, value.as_deref(), name).map_err(|err| flag_error(name, err))?;
    }
    Ok(Value::Object(root))
}

/// A mapping error in the CLI's words, naming the flag: a usage error.
fn flag_error(flag: &str, error: json::Error) -> CliError {
    CliError::usage(match error {
        json::Error::UnknownField { .. } => format!("Unknown flag: {flag}"),
        json::Error::InvalidValue { value, kind, .. } => {
            format!("Invalid value {value:?} for --{flag}: expected {}", kind_name(&kind))
        }
        json::Error::MissingValue { .. } => format!("Flag --{flag} needs a value, e.g. --{flag}=..."),
        json::Error::NotAnObject { .. } => format!("Invalid value for --{flag}: expected a JSON object"),
        json::Error::Conflict { .. } => format!("Flag --{flag} conflicts with another flag"),
        json::Error::InvalidKey { .. } => format!("Invalid flag: --{flag}"),
        json::Error::Field { reason, .. } => format!("Invalid value for --{flag}: {reason}"),
        other => format!("Invalid flag --{flag}: {other}"),
    })
}

/// The fields a flag name reaches: the field named so, else `<message field>_<rest>`.
fn field_path(message: &MessageDescriptor, name: &str, depth: usize) -> Option<Vec<FieldDescriptor>> {
    if let Some(field) = message.get_field_by_name(name) {
        return Some(vec![field]);
    }
    if depth >= MAX_FLAG_DEPTH {
        return None;
    }
    name.match_indices('_').find_map(|(at, _)| {
        let field = message.get_field_by_name(&name[..at])?;
        let Kind::Message(inner) = field.kind() else { return None };
        if field.is_list() || field.is_map() {
            return None;
        }
        let mut path = field_path(&inner, &name[at + 1..], depth + 1)?;
        path.insert(0, field);
        Some(path)
    })
}

/// Every flag a request takes, with its type, nested fields flattened (`--options_limit int64`).
pub(crate) fn flags(message: &MessageDescriptor) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect_flags(message, "", 0, &mut out);
    out
}

fn collect_flags(message: &MessageDescriptor, prefix: &str, depth: usize, out: &mut Vec<(String, String)>) {
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() && depth + 1 < MAX_FLAG_DEPTH => {
                collect_flags(&inner, &format!("{name}_"), depth + 1, out);
            }
            _ => out.push((name, type_name(&field))),
        }
    }
}

/// The type shown in help, in the original's Go-like spelling: `string`, `int64`, `[]string`.
fn type_name(field: &FieldDescriptor) -> String {
    if field.is_map() {
        return "map".to_string();
    }
    let kind = kind_name(&field.kind());
    if field.is_list() { format!("[]{kind}") } else { kind.to_string() }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Double => "float64",
        Kind::Float => "float32",
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "int32",
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "int64",
        Kind::Uint32 | Kind::Fixed32 => "uint32",
        Kind::Uint64 | Kind::Fixed64 => "uint64",
        Kind::Bool => "bool",
        Kind::String | Kind::Enum(_) => "string",
        Kind::Bytes => "bytes",
        Kind::Message(_) => "json",
    }
}

/// Lower-cased, without `-` and `_`: how command words are compared with endpoint names.
fn normalise(word: &str) -> String {
    word.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect()
}

/// `GetService` → `getService`.
fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// `getService`, `get-service`, `get_service` → `GetService`.
fn upper_camel(word: &str) -> String {
    word.split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests;
