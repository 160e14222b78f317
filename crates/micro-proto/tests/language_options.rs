//! Every `.proto` under the repository's `proto/` declares the file options other languages'
//! code generators expect, named by one scheme from its package (docs/clients.md, "Per-language
//! options"): a new proto without them, or with a name off the scheme, fails here.

use std::path::{Path, PathBuf};

use prost_types::FileDescriptorProto;

/// The Go import path every core package lives under: `micro.dev/proto/<package>`.
const GO_IMPORT_ROOT: &str = "micro.dev/proto";

/// The dotted Java package every core package lives under: `dev.micro.proto.<package>`.
const JAVA_PACKAGE_ROOT: &str = "dev.micro.proto";

fn proto_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

/// Every `.proto` file under `dir`, at any depth, sorted.
fn proto_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(proto_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// `store` → `Store`, `foo_bar.baz` → `FooBarBaz`: each word of the package, capitalised.
fn pascal(words: &str) -> String {
    words
        .split(['.', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The options `file` must declare, as `(option, expected value)`, from its package.
fn expected(file: &FileDescriptorProto) -> Vec<(&'static str, String)> {
    let package = file.package();
    let last = package.rsplit('.').next().unwrap_or(package);
    let name = pascal(package);
    let parts: Vec<String> = package.split('.').map(pascal).collect();
    vec![
        ("go_package", format!("{GO_IMPORT_ROOT}/{};{last}", package.replace('.', "/"))),
        ("java_package", format!("{JAVA_PACKAGE_ROOT}.{package}")),
        ("java_multiple_files", "true".to_string()),
        ("csharp_namespace", format!("Micro.Proto.{}", parts.join("."))),
        ("php_namespace", format!("Micro\\Proto\\{}", parts.join("\\"))),
        ("ruby_package", format!("Micro::Proto::{}", parts.join("::"))),
        ("objc_class_prefix", format!("Micro{name}")),
    ]
}

/// The options `file` declares, as `(option, value)`, `None` where unset.
fn declared(file: &FileDescriptorProto) -> Vec<(&'static str, Option<String>)> {
    let options = file.options.clone().unwrap_or_default();
    vec![
        ("go_package", options.go_package),
        ("java_package", options.java_package),
        ("java_multiple_files", options.java_multiple_files.map(|set| set.to_string())),
        ("csharp_namespace", options.csharp_namespace),
        ("php_namespace", options.php_namespace),
        ("ruby_package", options.ruby_package),
        ("objc_class_prefix", options.objc_class_prefix),
    ]
}

#[test]
fn every_core_proto_declares_the_options_of_other_languages() {
    let root = proto_root();
    let files = proto_files(&root);
    assert!(files.len() >= 9, "the core protos under {}: {files:?}", root.display());
    let compiled = protox::compile(&files, [&root]).unwrap();
    let mut wrong = Vec::new();
    for file in compiled.file.iter().filter(|file| !file.name().starts_with("google/protobuf/")) {
        assert!(!file.package().is_empty(), "{} declares a package", file.name());
        for ((option, want), (_, got)) in expected(file).into_iter().zip(declared(file)) {
            if got.as_deref() != Some(want.as_str()) {
                wrong.push(format!("{}: option {option} = {want:?}; (declared: {got:?})", file.name()));
            }
        }
    }
    assert!(wrong.is_empty(), "protos off the scheme of docs/clients.md:\n{}", wrong.join("\n"));
}

#[test]
fn the_scheme_names_each_language_from_the_package() {
    let file = FileDescriptorProto { package: Some("foo_bar.baz".to_string()), ..Default::default() };
    let want: Vec<(&str, String)> = vec![
        ("go_package", "micro.dev/proto/foo_bar/baz;baz".into()),
        ("java_package", "dev.micro.proto.foo_bar.baz".into()),
        ("java_multiple_files", "true".into()),
        ("csharp_namespace", "Micro.Proto.FooBar.Baz".into()),
        ("php_namespace", "Micro\\Proto\\FooBar\\Baz".into()),
        ("ruby_package", "Micro::Proto::FooBar::Baz".into()),
        ("objc_class_prefix", "MicroFooBarBaz".into()),
    ];
    assert_eq!(expected(&file), want);
    assert!(declared(&file).iter().all(|(_, value)| value.is_none()), "an options-free file declares none");
}
