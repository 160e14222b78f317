//! Where a service's code comes from, parsed from the argument of `micro run` and `micro update`
//! (docs/compatibility.md §2.9): a local folder, packed here as a gzip'd tarball and uploaded with
//! `Source.Upload` so the same command works against a remote server, or a git repository that
//! the server clones itself.
//!
//! For a local folder the uploaded tree is its *repository root*, so sibling path dependencies
//! build: a folder whose `Cargo.toml` declares `[workspace]` (what `micro new` generates) is its
//! own root; a workspace member's root is the nearest enclosing `[workspace]`; a folder without a
//! `Cargo.toml` (a `--command` service) has the nearest enclosing `.git` folder as its root. When
//! the service folder is below its root the relative path is sent as the entrypoint.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::{CliError, Result};

/// The version of a service run without `@ref`, and the ref of a git repository's default branch.
pub const DEFAULT_VERSION: &str = "latest";
/// Most bytes of files a local source may hold, before compression; `target/` and `.git/` are not
/// packed and do not count.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// Size of each `Source.Upload` message.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Longest service name accepted.
const MAX_NAME_BYTES: usize = 64;
/// Longest version (git ref) accepted.
const MAX_VERSION_BYTES: usize = 128;
/// Folders never packed: version control, and dependencies and caches tools recreate.
const SKIPPED_DIRS: &[&str] = &[".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"];
/// The git grammar, for error messages.
const GIT_GRAMMAR: &str = "host/org/repo[/folder][@ref]";

/// A parsed source argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The service name: the folder's name, or the repository's (or its sub-folder's).
    pub name: String,
    /// `latest`, or the `@ref` given.
    pub version: String,
    /// What `micro status` shows as SOURCE: the path as typed, normalised, or the repository URL;
    /// always one whitespace-free token.
    pub display: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on this machine.
    Local {
        /// The folder packed and uploaded (canonical).
        root: PathBuf,
        /// The service folder relative to `root`, `/`-separated; empty when it is the root.
        entrypoint: String,
    },
    /// A repository the server clones: `url` is sent as the service's source as given.
    Git { url: String, host: String },
}

impl Source {
    /// Parses `arg` (`./folder`, `/abs/folder[@ref]`, `host/org/repo[/sub][@ref]`,
    /// `file:///path/repo.git[/sub][@ref]`) relative to `cwd`. A first segment that is not a host
    /// is prefixed with `git_baseurl` when one is configured.
    pub fn parse(arg: &str, cwd: &Path, git_baseurl: Option<&str>) -> Result<Self> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(CliError::new(format!(
                "no source given: pass a service's folder or a git repository ({GIT_GRAMMAR})"
            )));
        }
        if let Some(source) = Self::local(arg, DEFAULT_VERSION, cwd)? {
            return Ok(source);
        }
        let (base, version) = match arg.rsplit_once('@') {
            Some((base, version)) if !base.is_empty() && !base.ends_with("://") => (base, version),
            _ => (arg, DEFAULT_VERSION),
        };
        validate_version(version)?;
        if base.len() < arg.len()
            && let Some(source) = Self::local(base, version, cwd)?
        {
            return Ok(source);
        }
        if base.starts_with(['.', '/', '~']) {
            return Err(CliError::new(format!("folder {base} does not exist")));
        }
        Self::git(base, version, git_baseurl)
    }

    /// A local folder source, or `None` when `path` does not exist.
    fn local(path: &str, version: &str, cwd: &Path) -> Result<Option<Self>> {
        let joined = cwd.join(path);
        if fs::symlink_metadata(&joined).is_err() {
            return Ok(None);
        }
        if !joined.is_dir() {
            return Err(CliError::new(format!("not a folder: {path}; give the folder of a service")));
        }
        let folder = joined
            .canonicalize()
            .map_err(|err| CliError::new(format!("cannot read folder {path}: {err}")))?;
        let name = folder.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        validate_name(&name).map_err(|_| {
            CliError::new(format!("cannot name a service after folder {path:?}: give a name with --name"))
        })?;
        let root = repository_root(&folder);
        let entrypoint = folder
            .strip_prefix(&root)
            .expect("the root is the folder or one of its ancestors")
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        Ok(Some(Self {
            name,
            version: version.to_string(),
            display: display_path(path),
            location: Location::Local { root, entrypoint },
        }))
    }

    fn git(base: &str, version: &str, git_baseurl: Option<&str>) -> Result<Self> {
        let not_git = || {
            CliError::new(format!(
                "no folder or git repository {base}: give a folder (./{base}) or a repository \
                 ({GIT_GRAMMAR}, file:///path/repo.git)"
            ))
        };
        let base = base.trim_end_matches('/');
        let (scheme, rest) = match base.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, base),
        };
        let (url, host, path) = match scheme {
            Some("file") => (base.to_string(), String::new(), rest.trim_start_matches('/')),
            Some("https" | "http" | "ssh" | "git") => {
                let (host, path) = rest.split_once('/').ok_or_else(not_git)?;
                let host = host.rsplit('@').next().unwrap_or(host);
                (base.to_string(), host.to_string(), path)
            }
            Some(_) => return Err(not_git()),
            None => {
                let (first, path) = rest.split_once('/').unwrap_or((rest, ""));
                let is_host = first.contains('.') || first.starts_with("localhost");
                if !is_host {
                    return match git_baseurl {
                        Some(prefix) if !prefix.is_empty() => {
                            Self::git(&format!("{}/{base}", prefix.trim_end_matches('/')), version, None)
                        }
                        _ => Err(not_git()),
                    };
                }
                if path.split('/').filter(|part| !part.is_empty()).count() < 2 {
                    return Err(not_git());
                }
                (base.to_string(), first.to_string(), path)
            }
        };
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|part| part.is_empty() || *part == "." || *part == "..") {
            return Err(CliError::new(format!(
                "invalid git source {base}: empty, `.` and `..` path segments are not allowed"
            )));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CliError::new(format!("invalid git source {base:?}: it contains spaces")));
        }
        let last = segments.last().copied().unwrap_or_default();
        let name = last.strip_suffix(".git").unwrap_or(last).to_string();
        validate_name(&name).map_err(|_| {
            CliError::new(format!("cannot name a service after {base}: give a name with --name"))
        })?;
        Ok(Self {
            name,
            version: version.to_string(),
            display: url.clone(),
            location: Location::Git { url, host },
        })
    }

    /// Whether a recorded SOURCE (metadata `source`) names a git repository rather than a path.
    pub fn is_git_display(display: &str) -> bool {
        !display.starts_with(['.', '/', '~'])
    }
}

/// Checks a service name given with `--name` or derived from a source.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "invalid service name {name:?}: use up to {MAX_NAME_BYTES} letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Checks a version (a git ref for git sources).
pub fn validate_version(version: &str) -> Result<()> {
    let valid = !version.is_empty()
        && version.len() <= MAX_VERSION_BYTES
        && !version.contains("..")
        && !version.starts_with(['-', '/'])
        && !version.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\');
    if valid {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "invalid version {version:?}: give a branch, tag or commit without spaces or '..'"
        )))
    }
}

/// The folder packed for service folder `folder` (canonical): see the module docs.
fn repository_root(folder: &Path) -> PathBuf {
    let manifest = folder.join("Cargo.toml");
    if manifest.is_file() {
        if declares_workspace(&manifest) {
            return folder.to_path_buf();
        }
        for ancestor in folder.ancestors().skip(1) {
            if declares_workspace(&ancestor.join("Cargo.toml")) {
                return ancestor.to_path_buf();
            }
            if ancestor.join(".git").exists() {
                break;
            }
        }
        return folder.to_path_buf();
    }
    folder.ancestors().find(|ancestor| ancestor.join(".git").exists()).unwrap_or(folder).to_path_buf()
}

fn declares_workspace(manifest: &Path) -> bool {
    fs::read_to_string(manifest).is_ok_and(|text| {
        text.lines().map(str::trim).any(|line| line == "[workspace]" || line.starts_with("[workspace."))
    })
}

/// `path` as typed, normalised to one whitespace-free token: `helloworld/` → `./helloworld`,
/// `./a/../b` → `./b`; `.`, `../x` and absolute paths stay as they are. Whitespace and `%` are
/// percent-encoded so the token can be turned back into the path ([`display_to_path`]).
pub fn display_path(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut absolute = false;
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.last().is_some_and(|last| last != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..".to_string());
                }
            }
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
        }
    }
    let joined = parts.join("/");
    let shown = if absolute {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else if parts[0] == ".." {
        joined
    } else {
        format!("./{joined}")
    };
    let mut token = String::with_capacity(shown.len());
    for c in shown.chars() {
        if c == '%' || c.is_whitespace() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                token.push_str(&format!("%{byte:02X}"));
            }
        } else {
            token.push(c);
        }
    }
    token
}

/// The path a [`display_path`] token stands for.
pub fn display_to_path(token: &str) -> String {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = token.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Packs `root` as a gzip'd tarball: every file and folder below it with its mode and mtime (the
/// server's cargo build compares mtimes), except [`SKIPPED_DIRS`] and Cargo `target/` folders.
/// Symbolic links are kept as links when they point inside `root`; a link out of it is refused,
/// a dangling one skipped. Fails past [`MAX_SOURCE_BYTES`].
pub fn pack(root: &Path) -> Result<Vec<u8>> {
    let root = root
        .canonicalize()
        .map_err(|err| CliError::new(format!("cannot read folder {}: {err}", root.display())))?;
    let mut packer = Packer {
        root: root.clone(),
        tar: tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default())),
        bytes: 0,
    };
    packer.tar.follow_symlinks(false);
    packer.dir(&root)?;
    let fail = |err: std::io::Error| CliError::new(format!("cannot pack {}: {err}", root.display()));
    let gzip = packer.tar.into_inner().map_err(fail)?;
    gzip.finish().map_err(fail)
}

struct Packer {
    root: PathBuf,
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    /// Bytes of files packed so far.
    bytes: u64,
}

impl Packer {
    fn dir(&mut self, dir: &Path) -> Result<()> {
        let read_fail = |path: &Path, err: std::io::Error| {
            CliError::new(format!("cannot read {}: {err}", path.display()))
        };
        let mut entries = fs::read_dir(dir)
            .map_err(|err| read_fail(dir, err))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|err| read_fail(dir, err))?;
        entries.sort();
        let is_crate = dir.join("Cargo.toml").is_file();
        for path in entries {
            let meta = fs::symlink_metadata(&path).map_err(|err| read_fail(&path, err))?;
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            let relative = path.strip_prefix(&self.root).expect("walked from the root").to_path_buf();
            let file_type = meta.file_type();
            if file_type.is_dir() {
                let cargo_target = name == "target" && (is_crate || path.join("CACHEDIR.TAG").exists());
                if SKIPPED_DIRS.contains(&name.as_str()) || cargo_target {
                    continue;
                }
                self.tar.append_dir(&relative, &path).map_err(|err| self.fail(err))?;
                self.dir(&path)?;
            } else if file_type.is_file() {
                self.bytes += meta.len();
                if self.bytes > MAX_SOURCE_BYTES {
                    return Err(CliError::new(format!(
                        "the source in {} is larger than {} MiB (not counting target/ and .git/): \
                         remove large files or run a smaller folder",
                        self.root.display(),
                        MAX_SOURCE_BYTES / 1024 / 1024
                    )));
                }
                let mut file = File::open(&path).map_err(|err| read_fail(&path, err))?;
                self.tar.append_file(&relative, &mut file).map_err(|err| self.fail(err))?;
            } else if file_type.is_symlink() {
                self.link(&path, &relative)?;
            }
            // Sockets, pipes and devices are not source.
        }
        Ok(())
    }

    fn link(&mut self, path: &Path, relative: &Path) -> Result<()> {
        let Ok(target) = path.canonicalize() else { return Ok(()) }; // dangling: nothing to pack
        let Ok(inside) = target.strip_prefix(&self.root) else {
            return Err(CliError::new(format!(
                "refusing to upload {}: it is a symbolic link to {}, outside {}",
                path.display(),
                target.display(),
                self.root.display()
            )));
        };
        // The link as a path relative to its own folder, so it resolves wherever the tree lands.
        let depth = relative.components().count().saturating_sub(1);
        let mut link = PathBuf::new();
        for _ in 0..depth {
            link.push("..");
        }
        link.push(inside);
        if link.as_os_str().is_empty() {
            link.push(".");
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        self.tar.append_link(&mut header, relative, &link).map_err(|err| self.fail(err))
    }

    fn fail(&self, err: std::io::Error) -> CliError {
        CliError::new(format!("cannot pack {}: {err}", self.root.display()))
    }
}

/// Splits `tarball` into `Source.Upload` chunks; the first also names the service.
pub fn chunks(tarball: &[u8], name: &str, version: &str) -> Vec<micro_proto::runtime::UploadRequest> {
    use micro_proto::runtime::{Service, UploadRequest};
    let service = Service { name: name.to_string(), version: version.to_string(), ..Default::default() };
    let mut requests: Vec<UploadRequest> = tarball
        .chunks(CHUNK_BYTES)
        .map(|data| UploadRequest { service: None, data: data.to_vec() })
        .collect();
    match requests.first_mut() {
        Some(first) => first.service = Some(service),
        None => requests.push(UploadRequest { service: Some(service), data: Vec::new() }),
    }
    requests
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Writes `content` to `path`, creating parent folders.
    fn write(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn local(source: &Source) -> (&Path, &str) {
        match &source.location {
            Location::Local { root, entrypoint } => (root, entrypoint),
            Location::Git { .. } => panic!("expected a local source: {source:?}"),
        }
    }

    #[test]
    fn local_folders_give_name_version_root_and_entrypoint() {
        let temp = tempfile::tempdir().unwrap();
        let base = temp.path().canonicalize().unwrap();
        write(&base.join("helloworld/Cargo.toml"), "[package]\nname = \"helloworld\"\n\n[workspace]\n");
        write(&base.join("repo/.git/HEAD"), "ref: refs/heads/main\n");
        write(&base.join("repo/services/app/app.py"), "print('hi')\n");
        write(&base.join("ws/Cargo.toml"), "[workspace]\nmembers = [\"crates/*\"]\n");
        write(&base.join("ws/crates/member/Cargo.toml"), "[package]\nname = \"member\"\n");

        let source = Source::parse("./helloworld", &base, None).unwrap();
        assert_eq!((source.name.as_str(), source.version.as_str()), ("helloworld", "latest"));
        assert_eq!(source.display, "./helloworld");
        assert_eq!(local(&source), (base.join("helloworld").as_path(), ""));

        let tagged = Source::parse("helloworld/@v2", &base, None).unwrap();
        assert_eq!((tagged.version.as_str(), tagged.display.as_str()), ("v2", "./helloworld"));

        let dot = Source::parse(".", &base.join("helloworld"), None).unwrap();
        assert_eq!((dot.name.as_str(), dot.display.as_str()), ("helloworld", "."));
        let up = Source::parse("../helloworld", &base.join("repo"), None).unwrap();
        assert_eq!((up.name.as_str(), up.display.as_str()), ("helloworld", "../helloworld"));
        let absolute = base.join("helloworld").to_string_lossy().into_owned();
        assert_eq!(Source::parse(&absolute, Path::new("/"), None).unwrap().display, absolute);

        let app = Source::parse("repo/services/app", &base, None).unwrap();
        assert_eq!(app.name, "app");
        assert_eq!(local(&app), (base.join("repo").as_path(), "services/app"));
        let member = Source::parse("./ws/crates/member", &base, None).unwrap();
        assert_eq!(local(&member), (base.join("ws").as_path(), "crates/member"));

        let missing = Source::parse("./nope", &base, None).unwrap_err();
        assert_eq!(missing.message, "Folder ./nope does not exist");
        let file = Source::parse("repo/services/app/app.py", &base, None).unwrap_err();
        assert!(file.message.starts_with("Not a folder: repo/services/app/app.py"), "{}", file.message);
    }

    #[test]
    fn git_sources_give_name_version_and_url() {
        let cwd = tempfile::tempdir().unwrap();
        let git = |arg: &str| Source::parse(arg, cwd.path(), None);
        let source = git("github.com/micro/services/helloworld@integrationtest/branch_name").unwrap();
        assert_eq!(source.name, "helloworld");
        assert_eq!(source.version, "integrationtest/branch_name");
        assert_eq!(source.display, "github.com/micro/services/helloworld");
        assert_eq!(
            source.location,
            Location::Git { url: "github.com/micro/services/helloworld".into(), host: "github.com".into() }
        );
        assert_eq!(git("gitlab.com/org/repo.git").unwrap().name, "repo");
        let bare = git("file:///tmp/repos/helloworld.git@dev").unwrap();
        assert_eq!((bare.name.as_str(), bare.version.as_str()), ("helloworld", "dev"));
        assert_eq!(bare.display, "file:///tmp/repos/helloworld.git");
        assert_eq!(git("file:///tmp/mono.git/services/foo").unwrap().name, "foo");
        let https = git("https://git.example.com/org/repo@v1.2.0").unwrap();
        assert_eq!(
            https.location,
            Location::Git { url: "https://git.example.com/org/repo".into(), host: "git.example.com".into() }
        );

        let short = Source::parse("helloworld", cwd.path(), Some("github.com/me/services")).unwrap();
        assert_eq!(short.display, "github.com/me/services/helloworld");
        assert!(
            git("helloworld")
                .unwrap_err()
                .message
                .starts_with("No folder or git repository helloworld: give a folder (./helloworld)")
        );
        assert!(git("github.com/org").is_err(), "a host and org are not a repository");
        assert!(git("github.com/org/../etc").unwrap_err().message.contains("`..`"));
        assert!(git("github.com/org/repo@a..b").unwrap_err().message.contains("Invalid version"));
        assert!(git("github.com/org/repo@").is_err());
    }

    #[test]
    fn paths_display_as_one_token_and_back() {
        assert_eq!(display_path("helloworld/"), "./helloworld");
        assert_eq!(display_path("./a/../b"), "./b");
        assert_eq!(display_path("."), ".");
        assert_eq!(display_path("../x"), "../x");
        assert_eq!(display_path("/srv/app"), "/srv/app");
        assert_eq!(display_path("./my app"), "./my%20app");
        assert_eq!(display_to_path("./my%20app"), "./my app");
        assert_eq!(display_to_path(&display_path("./50%")), "./50%");
    }

    #[test]
    fn names_and_versions_are_validated() {
        assert!(validate_name("foo-bar_1.v2").is_ok());
        for bad in ["", "../x", "a b", ".hidden", "-flag", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_version("feature/x").is_ok());
        for bad in ["", "a b", "a..b", "-x"] {
            assert!(validate_version(bad).is_err(), "{bad:?}");
        }
    }

    fn unpack(tarball: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mut content = String::new();
            if kind.is_symlink() {
                content = entry.link_name().unwrap().unwrap().to_string_lossy().into_owned();
            } else if kind.is_file() {
                entry.read_to_string(&mut content).unwrap();
            }
            out.push((path, kind, content));
        }
        out
    }

    #[test]
    fn tarballs_skip_build_output_and_vcs_and_keep_links_inside() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("svc");
        write(&root.join("Cargo.toml"), "[package]\n");
        write(&root.join("src/main.rs"), "fn main() {}\n");
        write(&root.join("src/target/mod.rs"), "// a module named target is source\n");
        write(&root.join("target/release/svc"), "binary");
        write(&root.join(".git/HEAD"), "ref");
        write(&root.join("run.sh"), "#!/bin/sh\n");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("src/main.rs", root.join("main-link.rs")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();

        let entries = unpack(&pack(&root).unwrap());
        let names: Vec<&str> = entries.iter().map(|(path, _, _)| path.trim_end_matches('/')).collect();
        assert_eq!(
            names,
            ["Cargo.toml", "main-link.rs", "run.sh", "src", "src/main.rs", "src/target", "src/target/mod.rs"]
        );
        let link = entries.iter().find(|(path, _, _)| path == "main-link.rs").unwrap();
        assert_eq!((link.1, link.2.as_str()), (tar::EntryType::Symlink, "src/main.rs"));
        assert_eq!(entries.iter().find(|(path, _, _)| path == "src/main.rs").unwrap().2, "fn main() {}\n");

        let tarball = pack(&root).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&tarball[..]));
        let script = archive
            .entries()
            .unwrap()
            .map(std::result::Result::unwrap)
            .find(|entry| entry.path().unwrap().ends_with("run.sh"))
            .unwrap();
        assert_eq!(script.header().mode().unwrap() & 0o111, 0o111, "the executable bit survives");

        let outside = temp.path().join("secret.txt");
        write(&outside, "secret");
        symlink(&outside, root.join("src/escape")).unwrap();
        let err = pack(&root).unwrap_err();
        assert!(err.message.starts_with("Refusing to upload") && err.message.contains("outside"), "{err}");
    }

    #[test]
    fn uploads_are_chunked_and_the_first_chunk_names_the_service() {
        let tarball = vec![7u8; CHUNK_BYTES * 2 + 1];
        let requests = chunks(&tarball, "helloworld", "latest");
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[0].service.as_ref().unwrap().name, "helloworld");
        assert!(requests[1..].iter().all(|request| request.service.is_none()));
        assert_eq!(requests.iter().map(|request| request.data.len()).sum::<usize>(), tarball.len());
        assert_eq!(chunks(&[], "a", "latest").len(), 1);
    }
}
