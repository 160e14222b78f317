//! Code generation for a service's `build.rs` (feature `build`): protobuf → Rust with protox and
//! tonic-prost-build, so no `protoc` is needed anywhere.
//!
//! ```text
//! // build.rs
//! fn main() {
//!     micro::build::compile("proto/helloworld.proto").unwrap();
//! }
//! ```
//!
//! For each protobuf package, `$OUT_DIR/<package>.rs` holds the messages, a tonic client
//! (`<service>_client`) and server (`<service>_server`), and `FILE_DESCRIPTOR_SET`: the encoded
//! `google.protobuf.FileDescriptorSet` that [`Service`](crate::Service) registers so the gateway and
//! CLI can speak JSON to the service. Include it with [`include_proto!`](crate::include_proto).
//!
//! The generated code refers to tonic and prost through `::micro::codegen`, so a service's
//! `Cargo.toml` needs no dependency but `micro`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why code generation failed; build scripts print it and fail the build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `.proto` file could not be read or parsed; the message names file, line and column.
    #[error("cannot compile protos: {0}")]
    Proto(String),
    /// Writing the generated code failed.
    #[error("cannot write generated code: {0}")]
    Io(#[from] std::io::Error),
    /// Not run from a build script (`OUT_DIR` is unset).
    #[error("micro::build must run from a build script: OUT_DIR is not set")]
    NoOutDir,
}

/// Compiles one `.proto` file, importing from its own directory.
///
/// `proto/helloworld.proto` with `package helloworld;` becomes `$OUT_DIR/helloworld.rs`.
/// Emits `cargo:rerun-if-changed` for the file and its directory.
pub fn compile(proto: impl AsRef<Path>) -> Result<(), BuildError> {
    let proto = proto.as_ref();
    let dir = match proto.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    compile_protos(&[proto], &[dir.as_path()])
}

/// Compiles several `.proto` files that import from `includes`.
pub fn compile_protos(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), BuildError> {
    for path in protos.iter().map(AsRef::as_ref).chain(includes.iter().map(AsRef::as_ref)) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or(BuildError::NoOutDir)?);
    let fds = protox::compile(protos, includes).map_err(|err| BuildError::Proto(err.to_string()))?;
    let encoded = prost::Message::encode_to_vec(&fds);

    // The packages of the files asked for (not of their imports) get a descriptor constant.
    let asked: Vec<PathBuf> = protos.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let mut packages: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for file in &fds.file {
        let package = file.package().to_string();
        let wanted = asked.iter().any(|p| p.ends_with(file.name()));
        let entry = match packages.iter_mut().find(|(name, _)| *name == package) {
            Some(entry) => entry,
            None if wanted => {
                packages.push((package.clone(), Vec::new()));
                packages.last_mut().expect("just pushed")
            }
            None => continue,
        };
        for service in &file.service {
            entry.1.push((service.name().to_string(), format!("{package}.{}", service.name())));
        }
    }

    let mut config = tonic_prost_build::Config::new();
    config.prost_path("::micro::codegen::prost");
    config.prost_types_path("::micro::codegen::prost_types");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("::micro::codegen::tonic_prost::ProstCodec")
        .compile_fds_with_config(fds, config)?;

    for (package, services) in &packages {
        let file_name = if package.is_empty() { "_".to_string() } else { package.clone() };
        let descriptor_file = format!("{file_name}.micro-descriptor.bin");
        std::fs::write(out_dir.join(&descriptor_file), &encoded)?;
        let generated_path = out_dir.join(format!("{file_name}.rs"));
        let generated = std::fs::read_to_string(&generated_path)?;
        std::fs::write(&generated_path, wrap(package, &generated, services, &descriptor_file))?;
    }
    Ok(())
}

/// Fences the generated code in a module (lints off, tonic reached through `::micro`) and
/// re-exports it, adding the descriptor constant and [`Described`](crate::codegen::Described)
/// for each server.
fn wrap(package: &str, generated: &str, services: &[(String, String)], descriptor_file: &str) -> String {
    let module = format!("__micro_{}", package.replace(['.', '-'], "_"));
    // tonic-build writes `use tonic::codegen::*;` in every client and server module and then
    // names `tonic::...`; a local `tonic` import lets those paths resolve without the dependency.
    let body = generated
        .replace("use tonic::codegen::*;", "use ::micro::codegen::tonic;\n    use tonic::codegen::*;");
    let mut out = String::new();
    let _ = writeln!(out, "// @generated by micro::build for protobuf package `{package}`.");
    let _ = writeln!(
        out,
        "#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs, unused_imports, unreachable_pub)]"
    );
    let _ = writeln!(out, "pub mod {module} {{");
    out.push_str(&body);
    let _ = writeln!(
        out,
        "\n/// The encoded `google.protobuf.FileDescriptorSet` of package `{package}` and its imports."
    );
    let _ = writeln!(
        out,
        "pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{descriptor_file}\"));"
    );
    for (service, _) in services {
        let snake = snake_case(service);
        let _ = writeln!(
            out,
            "impl<T> ::micro::codegen::Described for {snake}_server::{service}Server<T> {{\n    \
             const FILE_DESCRIPTOR_SET: &'static [u8] = FILE_DESCRIPTOR_SET;\n}}"
        );
    }
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "#[allow(unused_imports)]\npub use {module}::*;");
    out
}

/// `HelloWorld` → `hello_world`, exactly as tonic-build names its `<service>_server` modules
/// (an underscore before every upper-case letter but the first: `HTTPApi` → `h_t_t_p_api`).
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c.to_ascii_lowercase());
        if chars.peek().is_some_and(|next| next.is_uppercase()) {
            out.push('_');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_modules_are_snake_case() {
        assert_eq!(snake_case("Helloworld"), "helloworld");
        assert_eq!(snake_case("FooBar"), "foo_bar");
        assert_eq!(snake_case("FooBarBaz"), "foo_bar_baz");
    }

    #[test]
    fn wrapping_reaches_tonic_through_micro() {
        let generated = "pub mod x_server {\n    use tonic::codegen::*;\n}\n";
        let wrapped = wrap("foo.v1", generated, &[("FooBar".into(), "foo.v1.FooBar".into())], "d.bin");
        assert!(wrapped.contains("pub mod __micro_foo_v1 {"));
        assert!(wrapped.contains("use ::micro::codegen::tonic;\n    use tonic::codegen::*;"));
        assert!(wrapped.contains("for foo_bar_server::FooBarServer<T>"));
        assert!(wrapped.contains("pub use __micro_foo_v1::*;"));
    }
}
