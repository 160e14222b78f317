//! `micro proto` end to end: the `.proto` files of helloworld (as it registered them) and of a
//! core service, written by the real binary, compile again with protox to the descriptors the
//! registry holds.

mod common;

use std::path::Path;

use common::{Server, Service};
use micro_proto::proto_file::comparable;
use prost::Message as _;
use prost_types::FileDescriptorSet;

/// Runs `micro proto service --out dir`, compiles what it wrote and compares each file with
/// the registered one; returns the written file names.
fn written_and_compiled(server: &Server, service: &str, registered: &FileDescriptorSet) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("protos");
    let printed = server.ok(&["proto", service, "--out", out.to_str().unwrap()]);
    let names: Vec<String> = printed
        .lines()
        .map(|line| Path::new(line).strip_prefix(&out).unwrap().to_str().unwrap().to_string())
        .collect();
    assert!(!names.is_empty(), "{printed}");
    let compiled = protox::Compiler::new([&out])
        .unwrap()
        .include_imports(true)
        .open_files(&names)
        .unwrap_or_else(|err| panic!("{service}'s protos do not compile: {err:?}"))
        .file_descriptor_set();
    for name in &names {
        let original = registered.file.iter().find(|file| file.name() == name).unwrap();
        let rebuilt = compiled.file.iter().find(|file| file.name() == name).unwrap();
        assert_eq!(comparable(rebuilt), comparable(original), "{name}");
    }
    names
}

#[test]
fn protos_written_from_the_registry_compile_back_to_its_descriptors() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());
    let _hello = Service::start_helloworld(&server, &[]);

    let hello =
        FileDescriptorSet::decode(common::registered_descriptors(&server, "helloworld").as_slice()).unwrap();
    let names = written_and_compiled(&server, "helloworld", &hello);
    assert!(names.iter().all(|name| !name.starts_with("google/protobuf/")), "{names:?}");

    let core = FileDescriptorSet::decode(micro_proto::FILE_DESCRIPTOR_SET).unwrap();
    let names = written_and_compiled(&server, "store", &core);
    assert!(names.iter().any(|name| name.contains("store")), "{names:?}");
    assert!(!names.iter().any(|name| name.contains("auth")), "only store's files: {names:?}");

    let missing = server.micro(&["proto", "nope", "--out", home.path().to_str().unwrap()]);
    assert!(!missing.status.success());
}
