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
use ignore::WalkBuilder;

use crate::error::{CliError, Result};

/// The version of a service run without `@ref`, and the ref of a git repository's default branch.
pub use micro_core::names::DEFAULT_VERSION;
/// Most bytes of files a local source may hold, before compression; `target/`, `.git/` and ignored
/// files are not packed and do not count.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// Size of each `Source.Upload` message.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// micro's own ignore file, beside `.gitignore` and `.ignore`: what git keeps but the server need
/// not get (docs/runtime.md#what-is-uploaded).
pub const MICRO_IGNORE_FILE: &str = ".microignore";
/// Files of the packed root uploaded even when an ignore file names them: the manifest is what the
/// server builds, and the lock file pins the versions built here (libraries often git-ignore it).
const ALWAYS_PACKED: &[&str] = &["Cargo.toml", "Cargo.lock"];
/// Folders never packed, whatever the ignore files say: version control, and dependencies and
/// caches tools recreate.
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
        let name = micro_core::names::service_name(path).to_string();
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

/// Checks a service name given with `--name` or derived from a source, by the runtime's own
/// rule ([`micro_core::names`]), so what the server would refuse is refused before uploading.
pub fn validate_name(name: &str) -> Result<()> {
    micro_core::names::validate_name(name).map_err(|err| CliError::new(err.to_string()))
}

/// Checks a version (a git ref for git sources) by the runtime's rule, as [`validate_name`].
pub fn validate_version(version: &str) -> Result<()> {
    micro_core::names::validate_version(version).map_err(|err| CliError::new(err.to_string()))
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
    percent_encoding::percent_decode_str(token).decode_utf8_lossy().into_owned()
}

/// Packs `root` as a gzip'd tarball (docs/runtime.md#what-is-uploaded): every file and folder
/// below it with its mode and mtime (the server's cargo build compares mtimes), in sorted order
/// so the same tree gives the same bytes, except
/// - what `.gitignore`, `.ignore` and `.microignore` files exclude (git's pattern rules, `!`
///   re-includes; `.microignore` wins over `.ignore`, which wins over `.gitignore`), read in
///   `root` and below whether or not it is a git repository, and, when `root` lies inside one, in
///   the folders from that repository's root down (as git reads them: none from further up, and
///   no user-wide `core.excludesFile`, so the upload depends on the tree alone);
/// - [`SKIPPED_DIRS`] and Cargo `target/` folders, whatever the ignore files say.
///
/// [`ALWAYS_PACKED`] files are packed even when an ignore file names them. Hidden files are
/// packed unless ignored (`.cargo/config.toml` is source). Symbolic links are kept as links when
/// they point inside `root`; a link out of it is refused unless ignored, a dangling one skipped.
/// Fails past [`MAX_SOURCE_BYTES`] of files packed.
pub fn pack(root: &Path) -> Result<Tarball> {
    let root = root
        .canonicalize()
        .map_err(|err| CliError::new(format!("cannot read folder {}: {err}", root.display())))?;
    let (paths, warnings) = walk(&root)?;
    let mut packer = Packer {
        root: root.clone(),
        tar: tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default())),
        bytes: 0,
        files: 0,
    };
    packer.tar.follow_symlinks(false);
    for relative in &paths {
        packer.entry(relative)?;
    }
    let files = packer.files;
    let fail = |err: std::io::Error| CliError::new(format!("cannot pack {}: {err}", root.display()));
    let gzip = packer.tar.into_inner().map_err(fail)?;
    Ok(Tarball { bytes: gzip.finish().map_err(fail)?, files, warnings })
}

/// What [`pack`] would upload from `root`, files and folders, relative to `root` and sorted:
/// the same walk with the same ignore rules, for `micro run --watch` to tell a change that
/// matters from one in `target/`, `.git/` or an ignored path.
pub fn packed_paths(root: &Path) -> Result<Vec<PathBuf>> {
    let root = root
        .canonicalize()
        .map_err(|err| CliError::new(format!("cannot read folder {}: {err}", root.display())))?;
    Ok(walk(&root)?.0)
}

/// A packed local source.
#[derive(Debug)]
pub struct Tarball {
    /// The gzip'd tar, as uploaded.
    pub bytes: Vec<u8>,
    /// Files and symbolic links packed; folders do not count.
    pub files: usize,
    /// Ignore-file patterns that could not be parsed, one line each: the rest of those files
    /// still applies, so the upload goes on and the user is told.
    pub warnings: Vec<String>,
}

impl Tarball {
    /// The line shown before uploading: `Uploading helloworld (12.3 KiB compressed, 41 files)`.
    pub fn summary(&self, name: &str) -> String {
        let files = match self.files {
            1 => "1 file".to_string(),
            n => format!("{n} files"),
        };
        format!("Uploading {name} ({} compressed, {files})", human_size(self.bytes.len()))
    }
}

/// `bytes` in B, KiB, MiB or GiB with one decimal.
fn human_size(bytes: usize) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision lost past 2^52 bytes does not show at one decimal.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The paths to pack, relative to `root` (canonical) and sorted, and the warnings of
/// [`Tarball::warnings`]; see [`pack`] for what is left out.
fn walk(root: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    // The walk starts at the enclosing repository's root so that its ignore files above `root`
    // apply with git's precedence (a deeper file wins); `parents(false)` reads none above that.
    let start = root.ancestors().find(|dir| dir.join(".git").exists()).unwrap_or(root);
    let wanted_root = root.to_path_buf();
    let mut walker = WalkBuilder::new(start);
    walker
        .standard_filters(true)
        .hidden(false)
        .parents(false)
        .require_git(false)
        .git_global(false)
        .follow_links(false)
        .add_custom_ignore_filename(MICRO_IGNORE_FILE)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| wanted(&wanted_root, entry));

    let mut paths = Vec::new();
    let mut warnings = Vec::new();
    let mut reached_root = false;
    for entry in walker.build() {
        let entry = match entry {
            Ok(entry) => entry,
            // Without a depth the error is about an ignore file above the start, which is unused.
            Err(err) if err.depth().is_none() => continue,
            Err(err) => return Err(CliError::new(format!("cannot pack {}: {err}", root.display()))),
        };
        if let Some(err) = entry.error() {
            if has_io_error(err) {
                // An ignore file that cannot be read might have excluded a secret: stop.
                return Err(CliError::new(format!("cannot read an ignore file: {err}")));
            }
            warnings
                .extend(err.to_string().lines().map(|line| format!("{line} (the pattern is not applied)")));
        }
        match entry.path().strip_prefix(root) {
            Ok(relative) if relative.as_os_str().is_empty() => reached_root = true,
            Ok(relative) => paths.push(relative.to_path_buf()),
            Err(_) => {} // a folder on the way down from the repository's root
        }
    }
    if !reached_root {
        return Err(CliError::new(format!(
            "{} is excluded by an ignore file of the repository in {}: nothing to upload",
            root.display(),
            start.display()
        )));
    }
    for name in ALWAYS_PACKED {
        let path = PathBuf::from(name);
        if !paths.contains(&path) && fs::symlink_metadata(root.join(name)).is_ok() {
            paths.push(path);
        }
    }
    // Component-wise order: the walk's own (each folder sorted, parents first), extras in place.
    paths.sort();
    Ok((paths, warnings))
}

/// Whether the walk keeps and enters `entry`: the folders from the walk's start down to `root`,
/// and everything in `root` but [`SKIPPED_DIRS`] and Cargo `target/` folders (one beside a
/// `Cargo.toml` or holding a `CACHEDIR.TAG`; a module folder `src/target/` is source).
fn wanted(root: &Path, entry: &ignore::DirEntry) -> bool {
    let path = entry.path();
    if !path.starts_with(root) {
        return root.starts_with(path);
    }
    if path == root || !entry.file_type().is_some_and(|kind| kind.is_dir()) {
        return true;
    }
    let name = entry.file_name().to_string_lossy();
    let cargo_target = name == "target"
        && (path.parent().is_some_and(|parent| parent.join("Cargo.toml").is_file())
            || path.join("CACHEDIR.TAG").exists());
    !SKIPPED_DIRS.contains(&name.as_ref()) && !cargo_target
}

/// Whether `err` (about reading ignore files) includes failing to read one.
fn has_io_error(err: &ignore::Error) -> bool {
    match err {
        ignore::Error::Io(_) => true,
        ignore::Error::Partial(errs) => errs.iter().any(has_io_error),
        ignore::Error::WithLineNumber { err, .. }
        | ignore::Error::WithPath { err, .. }
        | ignore::Error::WithDepth { err, .. } => has_io_error(err),
        _ => false,
    }
}

struct Packer {
    root: PathBuf,
    tar: tar::Builder<GzEncoder<Vec<u8>>>,
    /// Bytes of files packed so far.
    bytes: u64,
    /// Files and links packed so far.
    files: usize,
}

impl Packer {
    /// Appends the folder, file or link at `relative`; sockets, pipes and devices are not source.
    fn entry(&mut self, relative: &Path) -> Result<()> {
        let path = self.root.join(relative);
        let read_fail = |err: std::io::Error| CliError::new(format!("cannot read {}: {err}", path.display()));
        let meta = fs::symlink_metadata(&path).map_err(read_fail)?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            self.tar.append_dir(relative, &path).map_err(|err| self.fail(err))?;
        } else if file_type.is_file() {
            self.bytes += meta.len();
            if self.bytes > MAX_SOURCE_BYTES {
                return Err(CliError::new(format!(
                    "the source in {} is larger than {} MiB (not counting target/, .git/ and ignored \
                     files): list large files in {MICRO_IGNORE_FILE} or run a smaller folder",
                    self.root.display(),
                    MAX_SOURCE_BYTES / 1024 / 1024
                )));
            }
            let mut file = File::open(&path).map_err(read_fail)?;
            self.tar.append_file(relative, &mut file).map_err(|err| self.fail(err))?;
            self.files += 1;
        } else if file_type.is_symlink() {
            self.link(&path, relative)?;
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
        self.tar.append_link(&mut header, relative, &link).map_err(|err| self.fail(err))?;
        self.files += 1;
        Ok(())
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
    fn names_and_versions_are_refused_as_the_runtime_refuses_them() {
        // The rule itself is tested in micro_core::names; here: the CLI refuses with the
        // runtime's sentence (capitalised, as the CLI shows every message, the server's too).
        let same = |cli: CliError, core: micro_core::names::InvalidName| {
            let core = core.to_string();
            assert_eq!(cli.to_string(), format!("{}{}", core[..1].to_uppercase(), &core[1..]));
        };
        assert!(validate_name("foo-bar_1.v2").is_ok());
        for bad in ["", "../x", "a b", ".hidden", "-flag", "Upper", &"x".repeat(65)] {
            same(validate_name(bad).unwrap_err(), micro_core::names::validate_name(bad).unwrap_err());
        }
        assert!(validate_version("feature/x").is_ok());
        for bad in ["", "a b", "a..b", "-x", &"v".repeat(65)] {
            same(validate_version(bad).unwrap_err(), micro_core::names::validate_version(bad).unwrap_err());
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

        let packed = pack(&root).unwrap();
        let entries = unpack(&packed.bytes);
        let names: Vec<&str> = entries.iter().map(|(path, _, _)| path.trim_end_matches('/')).collect();
        assert_eq!(
            names,
            ["Cargo.toml", "main-link.rs", "run.sh", "src", "src/main.rs", "src/target", "src/target/mod.rs"]
        );
        assert_eq!(packed.files, 5, "four files and a link; folders do not count");
        assert_eq!(pack(&root).unwrap().bytes, packed.bytes, "the same tree packs to the same bytes");
        let link = entries.iter().find(|(path, _, _)| path == "main-link.rs").unwrap();
        assert_eq!((link.1, link.2.as_str()), (tar::EntryType::Symlink, "src/main.rs"));
        assert_eq!(entries.iter().find(|(path, _, _)| path == "src/main.rs").unwrap().2, "fn main() {}\n");

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&packed.bytes[..]));
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

    /// The paths in `tarball`, folders with a trailing `/`.
    fn paths(tarball: &[u8]) -> Vec<String> {
        let path = |(path, kind, _): (String, tar::EntryType, String)| match kind.is_dir() {
            true => format!("{}/", path.trim_end_matches('/')),
            false => path,
        };
        unpack(tarball).into_iter().map(path).collect()
    }

    #[test]
    fn ignore_files_decide_what_is_packed_even_outside_git() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("svc");
        write(&root.join("Cargo.toml"), "[package]\n");
        write(&root.join("Cargo.lock"), "# pinned\n");
        write(&root.join("src/main.rs"), "fn main() {}\n");
        write(&root.join("src/generated.rs"), "// made by build.rs, wanted by the server\n");
        write(
            &root.join(".gitignore"),
            "*.log\n!keep.log\nbuild/\n.env\nCargo.lock\ngenerated.rs\nbad[z-a]\n",
        );
        write(&root.join(".ignore"), "scratch.txt\n");
        write(&root.join(".microignore"), "data/\n!generated.rs\n");
        write(&root.join("debug.log"), "noise");
        write(&root.join("keep.log"), "wanted");
        write(&root.join("build/out.bin"), "output");
        write(&root.join(".env"), "SECRET=1");
        write(&root.join(".cargo/config.toml"), "[build]\n");
        write(&root.join("scratch.txt"), "notes");
        write(&root.join("data/big.csv"), "1,2,3");
        write(&root.join("docs/.gitignore"), "local.txt\n");
        write(&root.join("docs/local.txt"), "only in docs");
        write(&root.join("local.txt"), "at the root");

        let packed = pack(&root).unwrap();
        assert_eq!(
            paths(&packed.bytes),
            [
                ".cargo/",
                ".cargo/config.toml",
                ".gitignore",
                ".ignore",
                ".microignore",
                "Cargo.lock",
                "Cargo.toml",
                "docs/",
                "docs/.gitignore",
                "keep.log",
                "local.txt",
                "src/",
                "src/generated.rs",
                "src/main.rs",
            ],
            "ignored: *.log but the negated keep.log, build/, .env (hidden files are not skipped as \
             such), .ignore's scratch.txt, .microignore's data/ (and its !generated.rs wins over \
             .gitignore), docs/local.txt by the nested .gitignore; Cargo.lock is always packed"
        );
        assert_eq!(packed.files, 11);
        assert_eq!(packed.warnings.len(), 1, "{:?}", packed.warnings);
        assert!(packed.warnings[0].contains("bad["), "the bad line is named: {:?}", packed.warnings);
        assert!(packed.summary("svc").starts_with("Uploading svc ("), "{}", packed.summary("svc"));
        assert!(packed.summary("svc").ends_with(" compressed, 11 files)"), "{}", packed.summary("svc"));

        // The byte cap counts what is packed: an ignored file past it does not count.
        let huge = File::create(root.join("huge.log")).unwrap();
        huge.set_len(MAX_SOURCE_BYTES + 1).unwrap(); // sparse: nothing is written
        assert!(pack(&root).is_ok(), "huge.log is ignored");
        fs::rename(root.join("huge.log"), root.join("huge.bin")).unwrap();
        let err = pack(&root).unwrap_err();
        assert!(
            err.message.contains("is larger than 64 MiB") && err.message.contains(".microignore"),
            "{err}"
        );
    }

    #[test]
    fn a_repositorys_ignore_files_apply_from_its_root_and_none_above_it() {
        let temp = tempfile::tempdir().unwrap();
        write(&temp.path().join(".gitignore"), "*\n"); // above the repository: not read
        let repo = temp.path().join("repo");
        write(&repo.join(".git/HEAD"), "ref: refs/heads/main\n");
        write(&repo.join(".git/info/exclude"), "notes.md\n");
        write(&repo.join(".gitignore"), "*.secret\n/services/app/out/\nskipped/\n");
        write(&repo.join("services/.ignore"), "*.tmp\n");
        let app = repo.join("services/app");
        write(&app.join("Cargo.toml"), "[package]\n\n[workspace]\n");
        write(&app.join("src/main.rs"), "fn main() {}\n");
        write(&app.join("key.secret"), "k");
        write(&app.join("out/x"), "x");
        write(&app.join("src/out/mod.rs"), "// not /services/app/out/: anchored at the repository root\n");
        write(&app.join("notes.md"), "n");
        write(&app.join("a.tmp"), "t");

        assert_eq!(
            paths(&pack(&app).unwrap().bytes),
            ["Cargo.toml", "src/", "src/main.rs", "src/out/", "src/out/mod.rs"]
        );

        write(&repo.join("services/skipped/run.sh"), "echo hi\n");
        let err = pack(&repo.join("services/skipped")).unwrap_err();
        assert!(
            err.message.contains("is excluded by an ignore file") && err.message.contains("repo"),
            "{err}"
        );
    }

    #[test]
    fn upload_sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12_600), "12.3 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_size(3 << 40), "3072.0 GiB");
        let one = Tarball { bytes: vec![0; 2048], files: 1, warnings: Vec::new() };
        assert_eq!(one.summary("helloworld"), "Uploading helloworld (2.0 KiB compressed, 1 file)");
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
