//! `.proto` source rebuilt from descriptors, for `micro proto <service>` (docs/clients.md,
//! "Getting the protos"): [`files_of`] picks the files a service's endpoints need (imports
//! included, the standard `google/protobuf/*` files left out: every protobuf compiler has them),
//! [`to_source`] prints one file so that `protoc` or protox compiles it back to the same
//! descriptor. No maintained crate prints descriptors as `.proto` text (prost-reflect and
//! protox read `.proto` files, but do not write them), hence this module.
//!
//! What is printed: syntax (proto2 or proto3), package, imports (public and weak too), the
//! standard file, message, field, enum, service and method options, messages with nested
//! types, maps, oneofs, proto3 `optional`, reserved numbers and names, extension ranges,
//! extensions and proto2 defaults. Types are referred to by their fully qualified names
//! (`.helloworld.Request`), so no scope rule can change what a name means. Not kept: comments
//! (registered descriptors carry no source info), custom options, groups, and editions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

/// The files every protobuf compiler ships, which are not written out.
pub const STANDARD_FILES: &[&str] = &[
    "google/protobuf/any.proto",
    "google/protobuf/api.proto",
    "google/protobuf/descriptor.proto",
    "google/protobuf/duration.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/field_mask.proto",
    "google/protobuf/source_context.proto",
    "google/protobuf/struct.proto",
    "google/protobuf/timestamp.proto",
    "google/protobuf/type.proto",
    "google/protobuf/wrappers.proto",
    "google/protobuf/compiler/plugin.proto",
];

/// The files of `set` that declare `services` (full names, e.g. `helloworld.Helloworld`) and
/// every file they import, transitively, without the [`STANDARD_FILES`]; in `set`'s order.
pub fn files_of<'a>(set: &'a FileDescriptorSet, services: &BTreeSet<String>) -> Vec<&'a FileDescriptorProto> {
    let by_name: BTreeMap<&str, &FileDescriptorProto> =
        set.file.iter().map(|file| (file.name(), file)).collect();
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    let mut queue: Vec<&str> = set
        .file
        .iter()
        .filter(|file| {
            file.service.iter().any(|service| services.contains(&qualified(file.package(), service.name())))
        })
        .map(|file| file.name())
        .collect();
    while let Some(name) = queue.pop() {
        if !wanted.insert(name) {
            continue;
        }
        if let Some(file) = by_name.get(name) {
            queue.extend(file.dependency.iter().map(String::as_str));
        }
    }
    set.file
        .iter()
        .filter(|file| wanted.contains(file.name()) && !STANDARD_FILES.contains(&file.name()))
        .collect()
}

/// Why the `.proto` files of a registered service cannot be given ([`service_protos`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceProtosError {
    #[error("service {0} registered no protobuf descriptors")]
    NoDescriptors(String),
    #[error("service {service} registered invalid descriptors: {detail}")]
    Invalid { service: String, detail: String },
    #[error("service {0} has no endpoints in its descriptors")]
    NoEndpoints(String),
}

/// The `.proto` files of service `name`, as `micro proto` writes them and the dashboard offers
/// them: from the first of `versions` (the registry's answer for the name) that registered
/// descriptors, the files declaring its endpoints ([`crate::dynamic::endpoints`]) and their
/// imports ([`files_of`]), each as (import path, [`to_source`]). Every path is relative, with
/// no `.`, `..` or empty segment (descriptors come from whoever registered the service), or
/// the descriptors count as invalid.
pub fn service_protos(
    name: &str,
    versions: &[crate::registry::Service],
) -> Result<Vec<(String, String)>, ServiceProtosError> {
    use prost::Message as _;
    let Some(service) = versions.iter().find(|service| !service.descriptors.is_empty()) else {
        return Err(ServiceProtosError::NoDescriptors(name.to_string()));
    };
    let invalid = |detail: String| ServiceProtosError::Invalid { service: name.to_string(), detail };
    let set =
        FileDescriptorSet::decode(service.descriptors.as_slice()).map_err(|err| invalid(err.to_string()))?;
    let pool = prost_reflect::DescriptorPool::decode(service.descriptors.as_slice())
        .map_err(|err| invalid(err.to_string()))?;
    let handlers: BTreeSet<String> = crate::dynamic::endpoints(name, service, &pool)
        .values()
        .map(|method| method.parent_service().full_name().to_string())
        .collect();
    let files = files_of(&set, &handlers);
    if files.is_empty() {
        return Err(ServiceProtosError::NoEndpoints(name.to_string()));
    }
    files
        .into_iter()
        .map(|file| {
            let path = file.name();
            let relative = !path.is_empty()
                && !path.starts_with('/')
                && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
            if !relative {
                return Err(invalid(format!("the file name {path:?} is not a relative path")));
            }
            Ok((path.to_string(), to_source(file)))
        })
        .collect()
}

/// The full name of `name` declared at the top of a file of `package`: `package.name`, or
/// `name` alone in a file without a package.
pub fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() { name.to_string() } else { format!("{package}.{name}") }
}

/// `file` as [`to_source`] keeps it, for comparing a rebuilt file with the original: without
/// source info (comments, positions) and with nested types in name order (map entries are made
/// where their field is; nested messages are printed first).
pub fn comparable(file: &FileDescriptorProto) -> FileDescriptorProto {
    fn sort(message: &mut DescriptorProto) {
        message.nested_type.sort_by(|a, b| a.name().cmp(b.name()));
        message.nested_type.iter_mut().for_each(sort);
    }
    let mut file = file.clone();
    file.source_code_info = None;
    file.message_type.iter_mut().for_each(sort);
    file
}

/// `file` as `.proto` source.
pub fn to_source(file: &FileDescriptorProto) -> String {
    let mut out = String::new();
    let proto3 = file.syntax() == "proto3";
    let _ = writeln!(out, "// {}: rebuilt from registered descriptors by `micro proto`.\n", file.name());
    let _ = writeln!(out, "syntax = \"{}\";\n", if proto3 { "proto3" } else { "proto2" });
    if !file.package().is_empty() {
        let _ = writeln!(out, "package {};\n", file.package());
    }
    for (index, dependency) in file.dependency.iter().enumerate() {
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        let kind = if file.public_dependency.contains(&index) {
            "public "
        } else if file.weak_dependency.contains(&index) {
            "weak "
        } else {
            ""
        };
        let _ = writeln!(out, "import {kind}{};", quote(dependency));
    }
    if !file.dependency.is_empty() {
        out.push('\n');
    }
    if let Some(options) = &file.options {
        let text = |value: &Option<String>| value.as_deref().map(quote);
        let flag = |value: Option<bool>| value.map(|value| value.to_string());
        let options_list = [
            ("java_package", text(&options.java_package)),
            ("java_outer_classname", text(&options.java_outer_classname)),
            ("java_multiple_files", flag(options.java_multiple_files)),
            (
                "optimize_for",
                options.optimize_for.map(|value| {
                    match value {
                        2 => "CODE_SIZE",
                        3 => "LITE_RUNTIME",
                        _ => "SPEED",
                    }
                    .to_string()
                }),
            ),
            ("go_package", text(&options.go_package)),
            ("cc_generic_services", flag(options.cc_generic_services)),
            ("java_generic_services", flag(options.java_generic_services)),
            ("py_generic_services", flag(options.py_generic_services)),
            ("deprecated", flag(options.deprecated)),
            ("cc_enable_arenas", flag(options.cc_enable_arenas)),
            ("objc_class_prefix", text(&options.objc_class_prefix)),
            ("csharp_namespace", text(&options.csharp_namespace)),
            ("swift_prefix", text(&options.swift_prefix)),
            ("php_class_prefix", text(&options.php_class_prefix)),
            ("php_namespace", text(&options.php_namespace)),
            ("php_metadata_namespace", text(&options.php_metadata_namespace)),
            ("ruby_package", text(&options.ruby_package)),
        ];
        let mut any = false;
        for (name, value) in options_list {
            if let Some(value) = value {
                let _ = writeln!(out, "option {name} = {value};");
                any = true;
            }
        }
        if any {
            out.push('\n');
        }
    }
    let printer = Printer { proto3 };
    for message in &file.message_type {
        printer.message(&mut out, message, 0);
        out.push('\n');
    }
    for enumeration in &file.enum_type {
        printer.enumeration(&mut out, enumeration, 0);
        out.push('\n');
    }
    printer.extensions(&mut out, &file.extension, 0);
    for service in &file.service {
        printer.service(&mut out, service);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

struct Printer {
    proto3: bool,
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// `option name = value;` on a line of its own, when the option is set.
fn option(out: &mut String, depth: usize, name: &str, value: Option<bool>) {
    if let Some(value) = value {
        indent(out, depth);
        let _ = writeln!(out, "option {name} = {value};");
    }
}

impl Printer {
    fn message(&self, out: &mut String, message: &DescriptorProto, depth: usize) {
        indent(out, depth);
        let _ = writeln!(out, "message {} {{", message.name());
        let inner = depth + 1;
        if let Some(options) = &message.options {
            option(out, inner, "deprecated", options.deprecated);
            option(out, inner, "message_set_wire_format", options.message_set_wire_format);
        }
        // Map entries are the compiler's, made again from the `map<…>` fields.
        let entries: BTreeMap<&str, &DescriptorProto> = message
            .nested_type
            .iter()
            .filter(|nested| nested.options.as_ref().is_some_and(|options| options.map_entry()))
            .map(|nested| (nested.name(), nested))
            .collect();
        for nested in message.nested_type.iter().filter(|nested| !entries.contains_key(nested.name())) {
            self.message(out, nested, inner);
        }
        for enumeration in &message.enum_type {
            self.enumeration(out, enumeration, inner);
        }
        // Real oneofs group their fields; proto3 `optional` makes synthetic ones, not printed.
        let mut printed_oneofs: BTreeSet<i32> = BTreeSet::new();
        for field in &message.field {
            let oneof = field.oneof_index.filter(|_| !field.proto3_optional());
            match oneof {
                Some(index) => {
                    if !printed_oneofs.insert(index) {
                        continue;
                    }
                    let name = message.oneof_decl.get(index as usize).map_or("", |oneof| oneof.name());
                    indent(out, inner);
                    let _ = writeln!(out, "oneof {name} {{");
                    for member in
                        message.field.iter().filter(|f| f.oneof_index == Some(index) && !f.proto3_optional())
                    {
                        self.field(out, member, inner + 1, &entries, false);
                    }
                    indent(out, inner);
                    out.push_str("}\n");
                }
                None => self.field(out, field, inner, &entries, true),
            }
        }
        for range in &message.extension_range {
            indent(out, inner);
            let _ = writeln!(out, "extensions {};", range_text(range.start(), range.end() - 1));
        }
        self.extensions(out, &message.extension, inner);
        self.reserved(
            out,
            inner,
            message.reserved_range.iter().map(|range| (range.start(), range.end() - 1)),
            &message.reserved_name,
        );
        indent(out, depth);
        out.push_str("}\n");
    }

    /// One field; `labelled`: outside a oneof, where proto2 fields need their label.
    fn field(
        &self,
        out: &mut String,
        field: &FieldDescriptorProto,
        depth: usize,
        entries: &BTreeMap<&str, &DescriptorProto>,
        labelled: bool,
    ) {
        indent(out, depth);
        let entry = (field.r#type() == Type::Message && field.label() == Label::Repeated)
            .then(|| field.type_name().rsplit('.').next().and_then(|name| entries.get(name)))
            .flatten();
        if let Some(entry) = entry {
            let key = entry.field.iter().find(|f| f.number() == 1);
            let value = entry.field.iter().find(|f| f.number() == 2);
            if let (Some(key), Some(value)) = (key, value) {
                let _ = write!(
                    out,
                    "map<{}, {}> {} = {}",
                    type_text(key),
                    type_text(value),
                    field.name(),
                    field.number()
                );
                self.field_options(out, field);
                out.push_str(";\n");
                return;
            }
        }
        let label = match field.label() {
            Label::Repeated => "repeated ",
            Label::Required => "required ",
            Label::Optional if field.proto3_optional() => "optional ",
            Label::Optional if labelled && !self.proto3 => "optional ",
            Label::Optional => "",
        };
        let _ = write!(out, "{label}{} {} = {}", type_text(field), field.name(), field.number());
        self.field_options(out, field);
        out.push_str(";\n");
    }

    fn field_options(&self, out: &mut String, field: &FieldDescriptorProto) {
        let mut options: Vec<String> = Vec::new();
        if let Some(default) = &field.default_value {
            let value = match field.r#type() {
                Type::String => quote(default),
                // Already C-escaped in the descriptor.
                Type::Bytes => format!("\"{default}\""),
                _ => default.clone(),
            };
            options.push(format!("default = {value}"));
        }
        if let Some(json_name) = &field.json_name
            && *json_name != default_json_name(field.name())
        {
            options.push(format!("json_name = {}", quote(json_name)));
        }
        if let Some(field_options) = &field.options {
            if let Some(packed) = field_options.packed {
                options.push(format!("packed = {packed}"));
            }
            if let Some(lazy) = field_options.lazy {
                options.push(format!("lazy = {lazy}"));
            }
            if let Some(deprecated) = field_options.deprecated {
                options.push(format!("deprecated = {deprecated}"));
            }
            if let Some(jstype) = field_options.jstype {
                let name = match jstype {
                    1 => "JS_STRING",
                    2 => "JS_NUMBER",
                    _ => "JS_NORMAL",
                };
                options.push(format!("jstype = {name}"));
            }
        }
        if !options.is_empty() {
            let _ = write!(out, " [{}]", options.join(", "));
        }
    }

    fn enumeration(&self, out: &mut String, enumeration: &EnumDescriptorProto, depth: usize) {
        indent(out, depth);
        let _ = writeln!(out, "enum {} {{", enumeration.name());
        let inner = depth + 1;
        if let Some(options) = &enumeration.options {
            option(out, inner, "allow_alias", options.allow_alias);
            option(out, inner, "deprecated", options.deprecated);
        }
        for value in &enumeration.value {
            indent(out, inner);
            let _ = write!(out, "{} = {}", value.name(), value.number());
            if let Some(deprecated) = value.options.as_ref().and_then(|options| options.deprecated) {
                let _ = write!(out, " [deprecated = {deprecated}]");
            }
            out.push_str(";\n");
        }
        // Enum reserved ranges are inclusive.
        self.reserved(
            out,
            inner,
            enumeration.reserved_range.iter().map(|range| (range.start(), range.end())),
            &enumeration.reserved_name,
        );
        indent(out, depth);
        out.push_str("}\n");
    }

    fn reserved(
        &self,
        out: &mut String,
        depth: usize,
        ranges: impl Iterator<Item = (i32, i32)>,
        names: &[String],
    ) {
        let ranges: Vec<String> = ranges.map(|(start, end)| range_text(start, end)).collect();
        if !ranges.is_empty() {
            indent(out, depth);
            let _ = writeln!(out, "reserved {};", ranges.join(", "));
        }
        if !names.is_empty() {
            indent(out, depth);
            let names: Vec<String> = names.iter().map(|name| quote(name)).collect();
            let _ = writeln!(out, "reserved {};", names.join(", "));
        }
    }

    /// `extend` blocks, one per extended message, in the order first met.
    fn extensions(&self, out: &mut String, extensions: &[FieldDescriptorProto], depth: usize) {
        let mut extendees: Vec<&str> = Vec::new();
        for extension in extensions {
            if !extendees.contains(&extension.extendee()) {
                extendees.push(extension.extendee());
            }
        }
        for extendee in extendees {
            indent(out, depth);
            let _ = writeln!(out, "extend {extendee} {{");
            for extension in extensions.iter().filter(|e| e.extendee() == extendee) {
                self.field(out, extension, depth + 1, &BTreeMap::new(), true);
            }
            indent(out, depth);
            out.push_str("}\n");
            if depth == 0 {
                out.push('\n');
            }
        }
    }

    fn service(&self, out: &mut String, service: &ServiceDescriptorProto) {
        let _ = writeln!(out, "service {} {{", service.name());
        option(out, 1, "deprecated", service.options.as_ref().and_then(|options| options.deprecated));
        for method in &service.method {
            let stream = |streaming: bool| if streaming { "stream " } else { "" };
            let _ = write!(
                out,
                "  rpc {}({}{}) returns ({}{})",
                method.name(),
                stream(method.client_streaming()),
                method.input_type(),
                stream(method.server_streaming()),
                method.output_type()
            );
            let mut options: Vec<String> = Vec::new();
            if let Some(method_options) = &method.options {
                if let Some(deprecated) = method_options.deprecated {
                    options.push(format!("option deprecated = {deprecated};"));
                }
                if let Some(level) = method_options.idempotency_level {
                    let name = match level {
                        1 => "NO_SIDE_EFFECTS",
                        2 => "IDEMPOTENT",
                        _ => "IDEMPOTENCY_UNKNOWN",
                    };
                    options.push(format!("option idempotency_level = {name};"));
                }
            }
            if options.is_empty() {
                out.push_str(";\n");
            } else {
                let _ = writeln!(out, " {{ {} }}", options.join(" "));
            }
        }
        out.push_str("}\n");
    }
}

/// A field's type as written: a scalar keyword or the fully qualified message or enum name.
fn type_text(field: &FieldDescriptorProto) -> String {
    scalar_keyword(field.r#type()).map_or_else(|| field.type_name().to_string(), str::to_string)
}

/// The `.proto` keyword of a scalar type (`int64`, `string` ...); `None` for messages, enums
/// and groups, which are written by name.
pub fn scalar_keyword(scalar: Type) -> Option<&'static str> {
    Some(match scalar {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Message | Type::Enum | Type::Group => return None,
    })
}

/// `5`, `5 to 9`, `5 to max`: an inclusive range of field numbers.
fn range_text(start: i32, end: i32) -> String {
    const MAX_FIELD: i32 = 536_870_911;
    match end {
        _ if end == start => start.to_string(),
        MAX_FIELD | i32::MAX => format!("{start} to max"),
        _ => format!("{start} to {end}"),
    }
}

/// The JSON name protobuf compilers give a field: lowerCamel, underscores dropped.
fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A protobuf string literal.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for byte in text.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(byte as char),
            other => {
                let _ = write!(out, "\\{other:03o}");
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
