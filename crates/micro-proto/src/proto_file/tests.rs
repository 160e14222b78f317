use prost::Message as _;

use super::*;

const KITCHEN: &str = r#"
syntax = "proto3";
package k.v1;
import "google/protobuf/timestamp.proto";
import "google/protobuf/struct.proto";
option go_package = "example.com/k/v1;kv1";
option java_multiple_files = true;
option csharp_namespace = "K.V1";

enum Level { option allow_alias = true; LEVEL_UNSPECIFIED = 0; LOW = 1; SMALL = 1; HIGH = 2 [deprecated = true]; reserved 5 to 7, 9; reserved "OLD"; }
message Outer {
  message Inner { string a_b = 1; repeated Inner more = 2; }
  enum Kind { KIND_UNSPECIFIED = 0; ONE = 1; }
  map<string, Inner> inners = 1;
  map<int64, Level> levels = 2;
  oneof pick { string name = 3; int64 id = 4; Inner inner = 5; }
  optional int32 maybe = 6;
  repeated double values = 7 [packed = false];
  google.protobuf.Timestamp at = 8;
  google.protobuf.Struct meta = 9 [deprecated = true];
  Kind kind = 10;
  bytes raw = 11 [json_name = "RAW"];
  reserved 20, 30 to max;
  reserved "gone";
}
service Things {
  rpc Get(Outer) returns (Outer.Inner);
  rpc Watch(Outer) returns (stream Outer) { option deprecated = true; }
  rpc Talk(stream Outer.Inner) returns (stream Outer.Inner) { option idempotency_level = NO_SIDE_EFFECTS; }
}
"#;

const OLD: &str = r#"
syntax = "proto2";
package k.old;
import public "k/v1/kitchen.proto";
message Legacy {
  required string id = 1;
  optional int32 count = 2 [default = -3];
  optional string text = 3 [default = "a \"q\"\n"];
  optional bytes blob = 4 [default = "\001\377"];
  optional k.v1.Level level = 5 [default = HIGH];
  repeated int32 packed = 6 [packed = true];
  extensions 100 to 199;
}
extend Legacy { optional string note = 100; }
"#;

fn compile(dir: &std::path::Path, files: &[&str]) -> FileDescriptorSet {
    protox::Compiler::new([dir])
        .unwrap()
        .include_imports(true)
        .open_files(files)
        .unwrap_or_else(|err| panic!("{err:?}"))
        .file_descriptor_set()
}

/// Writes `files` as source, compiles them again with protox and compares.
fn round_trip(files: &[&FileDescriptorProto]) {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        let path = dir.path().join(file.name());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, to_source(file)).unwrap();
    }
    let names: Vec<&str> = files.iter().map(|file| file.name()).collect();
    let again = compile(dir.path(), &names);
    for file in files {
        let rebuilt = again.file.iter().find(|f| f.name() == file.name()).unwrap();
        assert_eq!(comparable(rebuilt), comparable(file), "{}:\n{}", file.name(), to_source(file));
    }
}

#[test]
fn every_construct_prints_back_to_the_same_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("k/v1")).unwrap();
    std::fs::create_dir_all(dir.path().join("k/old")).unwrap();
    std::fs::write(dir.path().join("k/v1/kitchen.proto"), KITCHEN).unwrap();
    std::fs::write(dir.path().join("k/old/old.proto"), OLD).unwrap();
    let set = compile(dir.path(), &["k/v1/kitchen.proto", "k/old/old.proto"]);
    let files: Vec<&FileDescriptorProto> =
        set.file.iter().filter(|file| !STANDARD_FILES.contains(&file.name())).collect();
    assert_eq!(files.len(), 2);
    round_trip(&files);

    let source = to_source(files[0]);
    assert!(source.contains("map<string, .k.v1.Outer.Inner> inners = 1;"), "{source}");
    assert!(source.contains("optional int32 maybe = 6;"), "{source}");
    assert!(source.contains("oneof pick {"), "{source}");
    assert!(!source.contains("InnersEntry"), "map entries are the compiler's: {source}");
}

#[test]
fn a_services_files_are_its_own_and_their_imports_without_the_standard_ones() {
    let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
    let wanted: BTreeSet<String> = ["store.Store".to_string()].into();
    let files = files_of(&set, &wanted);
    let names: Vec<&str> = files.iter().map(|file| file.name()).collect();
    assert!(names.iter().any(|name| name.ends_with("store.proto")), "{names:?}");
    assert!(!names.iter().any(|name| name.starts_with("google/protobuf/")), "{names:?}");
    assert!(!names.iter().any(|name| name.contains("auth")), "only what store needs: {names:?}");
    // Every core proto prints back to its descriptor.
    let all: Vec<&FileDescriptorProto> =
        set.file.iter().filter(|file| !STANDARD_FILES.contains(&file.name())).collect();
    round_trip(&all);
}
