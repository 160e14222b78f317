//! `micro new <name>`: creates a Rust service in `./<name>` that builds and runs as is, the same
//! project as the repository's `examples/helloworld` (docs/compatibility.md §2.10, in Rust: a build script
//! instead of protoc and a Makefile).

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// Longest service name accepted.
const MAX_NAME_BYTES: usize = 64;

/// Names Cargo or the generated code cannot use as a package.
const RESERVED: &[&str] =
    &["micro", "test", "core", "std", "alloc", "proc-macro", "self", "super", "crate", "build"];

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// Name of the service, e.g. helloworld or foo-bar; the project is created in ./<name>
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// The names one service name turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The service and Cargo package name: `foo-bar`.
    pub name: String,
    /// The protobuf package, hyphens removed: `foobar`.
    pub package: String,
    /// The protobuf service and handler type, Title-case without hyphens: `FooBar`.
    pub service: String,
    /// The generated server module's prefix, as tonic names it: `foo_bar` (`foo_bar_server`).
    pub service_snake: String,
}

impl Names {
    /// Checks `name` and derives the rest from it.
    pub fn new(name: &str) -> Result<Self> {
        validate(name)?;
        let words: Vec<&str> = name.split('-').collect();
        let service: String = words
            .iter()
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        // tonic-build puts an underscore before every upper-case letter but the first.
        let mut service_snake = String::new();
        for (i, c) in service.chars().enumerate() {
            if i > 0 && c.is_ascii_uppercase() {
                service_snake.push('_');
            }
            service_snake.push(c.to_ascii_lowercase());
        }
        Ok(Self { name: name.to_string(), package: name.replace('-', ""), service, service_snake })
    }
}

fn validate(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(CliError::new("specify service name"));
    }
    if Path::new(name).is_absolute() || name.contains(['/', '\\']) || name.contains("..") {
        return Err(CliError::new(format!(
            "invalid service name {name:?}: give a name, not a path — the service is created in ./<name>"
        )));
    }
    let well_formed = name.len() <= MAX_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !well_formed {
        return Err(CliError::new(format!(
            "invalid service name {name:?}: use up to {MAX_NAME_BYTES} lowercase letters, digits and single hyphens, \
             starting with a letter, e.g. helloworld or foo-bar"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(CliError::new(format!(
            "invalid service name {name:?}: it is reserved by Cargo or micro"
        )));
    }
    Ok(())
}

/// How the generated project depends on the `micro` crate: the framework's source embedded in
/// this binary (`micro_sdk`), installed under `MICRO_SDK_DIR` (else `$MICRO_HOME/sdk`), at this
/// binary's version. A server builds the project against its own copy whatever path is written
/// here (docs/runtime.md, "The framework travels with the server").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicroDependency {
    /// The version required, this binary's: `micro_sdk::VERSION`.
    pub version: String,
    /// The installed `crates/micro` of the SDK.
    pub path: PathBuf,
}

impl MicroDependency {
    /// Installs this binary's SDK (a no-op when it is there) and depends on its `micro`.
    pub fn install() -> Result<Self> {
        let root = std::env::var_os("MICRO_SDK_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| micro_core::home::sdk_dir(&micro_core::home::dir()));
        Self::install_into(&root)
    }

    /// Installs this binary's SDK below `root` and depends on its `micro`.
    pub fn install_into(root: &Path) -> Result<Self> {
        let sdk = micro_sdk::install(root).map_err(|err| {
            CliError::new(format!("cannot install the micro SDK into {}: {err}", root.display()))
        })?;
        Ok(Self { version: micro_sdk::VERSION.to_string(), path: micro_sdk::crate_dir(&sdk, "micro") })
    }

    fn toml(&self, features: &[&str]) -> String {
        let features = if features.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = features.iter().map(|f| format!("{f:?}")).collect();
            format!(", features = [{}]", list.join(", "))
        };
        format!(
            "{{ version = {}, path = {}{features} }}",
            toml_string(&self.version),
            toml_string(&self.path.to_string_lossy())
        )
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The project's files: path relative to the project directory, and content.
pub fn files(names: &Names, micro: &MicroDependency) -> Vec<(String, String)> {
    let fill = |template: &str| {
        template
            .replace("{{micro_build}}", &micro.toml(&["build"]))
            .replace("{{micro}}", &micro.toml(&[]))
            .replace("{{name}}", &names.name)
            .replace("{{package}}", &names.package)
            .replace("{{Service}}", &names.service)
            .replace("{{service_snake}}", &names.service_snake)
    };
    vec![
        ("Cargo.toml".to_string(), fill(include_str!("../templates/Cargo.toml.tmpl"))),
        ("build.rs".to_string(), fill(include_str!("../templates/build.rs.tmpl"))),
        (format!("proto/{}.proto", names.name), fill(include_str!("../templates/service.proto.tmpl"))),
        ("src/main.rs".to_string(), fill(include_str!("../templates/main.rs.tmpl"))),
        ("src/handler.rs".to_string(), fill(include_str!("../templates/handler.rs.tmpl"))),
        ("README.md".to_string(), fill(include_str!("../templates/README.md.tmpl"))),
        (".gitignore".to_string(), fill(include_str!("../templates/gitignore.tmpl"))),
        // Pins rustfmt's defaults, so `cargo fmt` leaves the code as it is, in or out of a repo
        // with a style of its own.
        ("rustfmt.toml".to_string(), fill(include_str!("../templates/rustfmt.toml.tmpl"))),
    ]
}

/// Writes the project for `names` into `dir`, which must not exist yet.
pub fn create(dir: &Path, names: &Names, micro: &MicroDependency) -> Result<Vec<String>> {
    if dir.exists() {
        return Err(CliError::with_code(
            format!("{} already exists", names.name),
            crate::error::EXIT_FAILURE,
        ));
    }
    let fail =
        |path: &Path, err: std::io::Error| CliError::new(format!("cannot write {}: {err}", path.display()));
    let files = files(names, micro);
    for (relative, content) in &files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| fail(parent, err))?;
        }
        std::fs::write(&path, content).map_err(|err| fail(&path, err))?;
    }
    let mut created: Vec<String> = files.into_iter().map(|(relative, _)| relative).collect();
    // Start from the SDK's lockfile: the dependency versions this micro was tested with, likely
    // already downloaded (and, in a shared target dir, already compiled).
    if let Some(lock) = micro.path.parent().and_then(Path::parent).map(|root| root.join("Cargo.lock"))
        && lock.is_file()
    {
        let target = dir.join("Cargo.lock");
        std::fs::copy(&lock, &target).map_err(|err| fail(&target, err))?;
        created.push("Cargo.lock".to_string());
    }
    Ok(created)
}

pub fn run(args: NewArgs) -> Result<()> {
    let names = Names::new(&args.name)?;
    let dir = PathBuf::from(&names.name);
    if dir.exists() {
        return Err(CliError::with_code(
            format!("{} already exists", names.name),
            crate::error::EXIT_FAILURE,
        ));
    }
    crate::out(&format!("Creating service {}\n\n", names.name));
    let created = create(&dir, &names, &MicroDependency::install()?)?;
    let mut listing = String::from(".\n");
    for (i, file) in created.iter().enumerate() {
        let branch = if i + 1 == created.len() { "└──" } else { "├──" };
        listing.push_str(&format!("{branch} {}/{file}\n", names.name));
    }
    crate::out(&listing);
    crate::out(&format!(
        "\nRun it:\n\n    cd {name}\n    micro run .     # on the platform\n    cargo run       # or by hand\n\n\
         Call it:\n\n    micro call {name} {service}.Call '{{\"name\": \"Alice\"}}'\n",
        name = names.name,
        service = names.service,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_packages_services_and_modules() {
        let names = |name: &str| {
            let n = Names::new(name).unwrap();
            (n.package, n.service, n.service_snake)
        };
        assert_eq!(names("helloworld"), ("helloworld".into(), "Helloworld".into(), "helloworld".into()));
        assert_eq!(names("foobar"), ("foobar".into(), "Foobar".into(), "foobar".into()));
        assert_eq!(names("foo-bar"), ("foobar".into(), "FooBar".into(), "foo_bar".into()));
        assert_eq!(names("foo-bar-baz"), ("foobarbaz".into(), "FooBarBaz".into(), "foo_bar_baz".into()));
        assert_eq!(names("v2-api"), ("v2api".into(), "V2Api".into(), "v2_api".into()));
    }

    #[test]
    fn bad_names_are_refused_clearly() {
        let message = |name: &str| Names::new(name).unwrap_err().message;
        assert_eq!(message(""), "Specify service name");
        for path in ["/tmp/x", "a/b", "..", "../x", "x/.."] {
            assert!(message(path).contains("not a path"), "{path}: {}", message(path));
        }
        for bad in ["Foo", "foo_bar", "-foo", "foo-", "foo--bar", "1foo", "foo bar", "föö", &"a".repeat(65)]
        {
            assert!(message(bad).starts_with("Invalid service name"), "{bad}");
        }
        assert!(message("micro").contains("reserved"));
        assert!(message("test").contains("reserved"));
    }

    #[test]
    fn creates_a_project_and_never_overwrites() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("foo-bar");
        let names = Names::new("foo-bar").unwrap();
        let micro =
            MicroDependency { version: "0.1.0".into(), path: PathBuf::from("/sdk/0.1.0/crates/micro") };
        let created = create(&dir, &names, &micro).unwrap();
        assert_eq!(
            created,
            [
                "Cargo.toml",
                "build.rs",
                "proto/foo-bar.proto",
                "src/main.rs",
                "src/handler.rs",
                "README.md",
                ".gitignore",
                "rustfmt.toml"
            ]
        );
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        let cargo = read("Cargo.toml");
        assert!(cargo.contains("name = \"foo-bar\""));
        assert!(
            cargo.contains("micro = { version = \"0.1.0\", path = \"/sdk/0.1.0/crates/micro\" }"),
            "{cargo}"
        );
        assert!(
            cargo.contains(
                "micro = { version = \"0.1.0\", path = \"/sdk/0.1.0/crates/micro\", features = [\"build\"] }"
            ),
            "{cargo}"
        );
        assert!(cargo.contains("\n[workspace]\n"), "the project is not swallowed by an enclosing workspace");
        assert!(read("build.rs").contains("micro::build::compile(\"proto/foo-bar.proto\")"));
        let proto = read("proto/foo-bar.proto");
        assert!(proto.contains("package foobar;") && proto.contains("service FooBar {"));
        let main = read("src/main.rs");
        assert!(main.contains("micro::include_proto!(\"foobar\");"));
        assert!(main.contains("micro::Service::new(\"foo-bar\")"));
        assert!(main.contains("foo_bar_server::FooBarServer::new("));
        assert!(main.contains("handler::FooBar,"));
        assert!(read("src/handler.rs").contains("impl foo_bar_server::FooBar for FooBar {"));
        assert!(read("README.md").contains("micro call foo-bar FooBar.Call"));
        assert_eq!(read(".gitignore"), "/target\n");
        assert!(!read("src/handler.rs").contains("{{"), "every placeholder is filled");

        std::fs::write(dir.join("src/main.rs"), "mine").unwrap();
        assert_eq!(create(&dir, &names, &micro).unwrap_err().message, "foo-bar already exists");
        assert_eq!(read("src/main.rs"), "mine");
    }

    #[test]
    fn the_project_depends_on_the_installed_sdk() {
        let sdk = tempfile::tempdir().unwrap();
        let micro = MicroDependency::install_into(sdk.path()).unwrap();
        assert_eq!(micro.version, micro_sdk::VERSION);
        assert_eq!(micro.path, sdk.path().join(micro_sdk::VERSION).join("crates/micro"));
        assert!(micro.path.join("Cargo.toml").is_file(), "the SDK is installed");
        let path = toml_string(&micro.path.to_string_lossy());
        assert_eq!(micro.toml(&[]), format!("{{ version = \"{}\", path = {path} }}", micro_sdk::VERSION));
        assert_eq!(
            micro.toml(&["build"]),
            format!("{{ version = \"{}\", path = {path}, features = [\"build\"] }}", micro_sdk::VERSION)
        );
        assert_eq!(toml_string("a\"b\\c"), r#""a\"b\\c""#);

        // A project created against it starts from the SDK's lock file.
        let dir = sdk.path().join("project");
        let created = create(&dir, &Names::new("foo").unwrap(), &micro).unwrap();
        assert_eq!(created.last().map(String::as_str), Some("Cargo.lock"));
        assert!(dir.join("Cargo.lock").is_file());
    }

    /// `examples/helloworld` is what `micro new helloworld` makes; keep them the same.
    #[test]
    fn the_helloworld_example_is_the_template() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/helloworld");
        let names = Names::new("helloworld").unwrap();
        let micro =
            MicroDependency { version: "0.1.0".into(), path: PathBuf::from("/sdk/0.1.0/crates/micro") };
        for (file, content) in files(&names, &micro) {
            if file == "Cargo.toml" {
                continue; // the example takes its dependencies from the workspace
            }
            let actual = std::fs::read_to_string(example.join(&file)).unwrap_or_default();
            assert_eq!(actual, content, "examples/helloworld/{file} differs from the template");
        }
    }
}
