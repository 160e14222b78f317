//! Where a service's source comes from: an uploaded tarball (`source://…`), a git repository
//! cloned with the system `git`, or a folder on the server machine; and the checks that keep
//! every path inside the source.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use crate::RuntimeError;

/// Largest uploaded (compressed) source tarball.
pub const MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;
/// Largest total size a source tarball may unpack to (a gzip bomb stops here).
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;
/// Most entries a source tarball may hold.
pub const MAX_ARCHIVE_ENTRIES: usize = 200_000;
/// Longest service name or version.
pub const MAX_NAME_BYTES: usize = 64;

/// The scheme of uploaded source ids.
pub const UPLOAD_SCHEME: &str = "source://";

/// Checks a service name or version: 1–[`MAX_NAME_BYTES`] of `[a-z0-9._-]` (upper case allowed in
/// versions, which are often git refs), starting with a letter or digit.
pub fn validate_name(what: &str, value: &str) -> Result<(), RuntimeError> {
    let allowed = |b: u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'.' | b'_' | b'-')
            || (what == "version" && (b.is_ascii_uppercase() || b == b'/'))
    };
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.bytes().all(allowed)
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid {what} {value:?}: use 1-{MAX_NAME_BYTES} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// A version as a file-name component (`feature/x` → `feature_x`).
pub fn file_safe(version: &str) -> String {
    version.replace('/', "_")
}

/// Checks a relative path inside a source (an entrypoint): no absolute path, no `..`.
pub fn validate_relative(what: &str, path: &str) -> Result<PathBuf, RuntimeError> {
    let path = path.trim_matches('/');
    let mut clean = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "invalid {what} {path:?}: it must be a relative path inside the source, without '..'"
                )));
            }
        }
    }
    Ok(clean)
}

/// A parsed `source://<name>:<version>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId {
    pub name: String,
    pub version: String,
    pub id: String,
}

impl UploadId {
    pub fn parse(source: &str) -> Result<Self, RuntimeError> {
        let invalid = || RuntimeError::Invalid(format!("invalid uploaded source id {source:?}"));
        let rest = source.strip_prefix(UPLOAD_SCHEME).ok_or_else(invalid)?;
        let mut parts = rest.splitn(3, ':');
        let (name, version, id) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(v), Some(i)) => (n, v, i),
            _ => return Err(invalid()),
        };
        validate_name("name", name)?;
        validate_name("version", version)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        Ok(Self { name: name.to_string(), version: version.to_string(), id: id.to_string() })
    }

    pub fn to_source(&self) -> String {
        format!("{UPLOAD_SCHEME}{}:{}:{}", self.name, self.version, self.id)
    }

    /// The folder the upload was unpacked into, under `sources/<namespace>`.
    pub fn dir(&self, sources: &Path, namespace: &str) -> PathBuf {
        sources.join(namespace).join(format!("{}-{}-{}", self.name, file_safe(&self.version), self.id))
    }
}

/// Unpacks the gzip'd tar `archive` into `dest` (which must not exist yet), refusing absolute
/// paths, `..`, links that point outside `dest`, and device or fifo entries. On error `dest` is
/// removed again.
pub fn unpack(archive: &Path, dest: &Path) -> Result<(), RuntimeError> {
    let result = unpack_inner(archive, dest);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn unpack_inner(archive: &Path, dest: &Path) -> Result<(), RuntimeError> {
    let io = |err: std::io::Error| RuntimeError::Invalid(format!("cannot unpack the source archive: {err}"));
    std::fs::create_dir_all(dest)
        .map_err(|err| RuntimeError::Internal(format!("create {}: {err}", dest.display())))?;
    let file = std::fs::File::open(archive).map_err(io)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    let mut total: u64 = 0;
    for (count, entry) in tar.entries().map_err(io)?.enumerate() {
        if count >= MAX_ARCHIVE_ENTRIES {
            return Err(RuntimeError::Invalid(format!(
                "the source archive has more than {MAX_ARCHIVE_ENTRIES} entries"
            )));
        }
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        let relative = safe_entry_path(&path)?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io)?
                    .ok_or_else(|| RuntimeError::Invalid(format!("link {} has no target", path.display())))?;
                let base = if kind == tar::EntryType::Symlink {
                    relative.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                if !link_stays_inside(&base, &target) {
                    return Err(RuntimeError::Invalid(format!(
                        "the source archive's link {} points outside the source ({})",
                        path.display(),
                        target.display()
                    )));
                }
            }
            // PAX/GNU headers are consumed by the tar reader; anything else (devices, fifos) is refused.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(RuntimeError::Invalid(format!(
                    "the source archive's entry {} is a {other:?}, which a source may not contain",
                    path.display()
                )));
            }
        }
        total = total.saturating_add(entry.header().size().unwrap_or(0));
        if total > MAX_UNPACKED_BYTES {
            return Err(RuntimeError::Invalid(format!(
                "the source archive unpacks to more than {} MiB",
                MAX_UNPACKED_BYTES / 1024 / 1024
            )));
        }
        // `unpack_in` re-checks that nothing is written through a link outside `dest`.
        if !entry.unpack_in(dest).map_err(io)? {
            return Err(RuntimeError::Invalid(format!(
                "the source archive's entry {} escapes the source",
                path.display()
            )));
        }
    }
    Ok(())
}

fn safe_entry_path(path: &Path) -> Result<PathBuf, RuntimeError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "the source archive's path {} is absolute or contains '..'",
                    path.display()
                )));
            }
        }
    }
    Ok(clean)
}

/// Whether a link at `base` (relative to the source root) to `target` resolves inside the root.
fn link_stays_inside(base: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: usize = base.components().count();
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => return false,
        }
    }
    true
}

/// A git source: `host/org/repo[/sub][@ref]`, `https://…`, or `file:///path/repo.git[/sub][@ref]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// What `git clone` is given.
    pub url: String,
    /// The host, for credentials (empty for `file://`).
    pub host: String,
    /// The folder inside the repository (may be empty).
    pub folder: String,
    /// Branch, tag or commit; `None` = the default branch.
    pub reference: Option<String>,
}

impl GitSource {
    /// Parses `source`; `version` is the ref when the source names none (`latest` = default branch).
    pub fn parse(source: &str, version: &str) -> Result<Self, RuntimeError> {
        let invalid = |why: &str| RuntimeError::Invalid(format!("invalid git source {source:?}: {why}"));
        // Refs may contain '/' (`feature/x`), bodies never contain '@'.
        let (body, reference) = match source.rsplit_once('@') {
            Some((body, reference)) => (body, Some(reference.to_string())),
            None => (source, None),
        };
        let reference =
            reference.or_else(|| Some(version.to_string())).filter(|r| !r.is_empty() && r != "latest");
        if let Some(reference) = &reference
            && (reference.starts_with('-')
                || reference.contains("..")
                || reference.contains(char::is_whitespace))
        {
            return Err(invalid("bad ref"));
        }
        if let Some(path) = body.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid("file:// needs an absolute path"));
            }
            let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            check_segments(&segments).map_err(|_| invalid("'..' is not allowed"))?;
            let split = segments.iter().position(|s| s.ends_with(".git")).map_or(segments.len(), |i| i + 1);
            return Ok(Self {
                url: format!("file:///{}", segments[..split].join("/")),
                host: String::new(),
                folder: segments[split..].join("/"),
                reference,
            });
        }
        let (scheme, rest) = match body.split_once("://") {
            Some((scheme @ ("https" | "http"), rest)) => (scheme, rest),
            Some(_) => return Err(invalid("only https://, file:// and host/org/repo sources are supported")),
            None => ("https", body),
        };
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if segments.len() < 3 || !segments[0].contains('.') {
            return Err(invalid("expected host/org/repo[/folder][@ref]"));
        }
        check_segments(&segments).map_err(|_| invalid("'..' is not allowed"))?;
        let repo = segments[2].trim_end_matches(".git");
        Ok(Self {
            url: format!("{scheme}://{}/{}/{repo}.git", segments[0], segments[1]),
            host: segments[0].to_string(),
            folder: segments[3..].join("/"),
            reference,
        })
    }

    /// The URL with a token for the host, for private repositories.
    fn url_with_credentials(&self, token: Option<&str>) -> String {
        match token {
            Some(token) if !token.is_empty() && self.url.starts_with("https://") => {
                format!("https://{token}@{}", &self.url["https://".len()..])
            }
            _ => self.url.clone(),
        }
    }

    /// Shallow-clones the repository at the ref into `dest`; returns the commit checked out.
    pub async fn clone_into(&self, dest: &Path, token: Option<&str>) -> Result<String, RuntimeError> {
        let url = self.url_with_credentials(token);
        let _ = tokio::fs::remove_dir_all(dest).await;
        let dest_str = dest.to_string_lossy().to_string();
        let mut args = vec!["clone", "--quiet", "--depth", "1"];
        if let Some(reference) = &self.reference {
            args.extend(["--branch", reference.as_str()]);
        }
        args.extend(["--", url.as_str(), dest_str.as_str()]);
        let cloned = git(None, &args).await;
        if let Err(err) = cloned {
            // A commit id is not something `--branch` takes: fetch it by id instead.
            let Some(reference) =
                self.reference.as_ref().filter(|r| r.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                return Err(RuntimeError::Invalid(redact(&err, token)));
            };
            let _ = tokio::fs::remove_dir_all(dest).await;
            tokio::fs::create_dir_all(dest).await.map_err(|e| RuntimeError::Internal(e.to_string()))?;
            let steps: [&[&str]; 3] = [
                &["init", "--quiet"],
                &["fetch", "--quiet", "--depth", "1", "--", url.as_str(), reference.as_str()],
                &["checkout", "--quiet", "FETCH_HEAD"],
            ];
            for step in steps {
                git(Some(dest), step).await.map_err(|e| RuntimeError::Invalid(redact(&e, token)))?;
            }
        }
        let head = git(Some(dest), &["rev-parse", "HEAD"]).await.map_err(RuntimeError::Internal)?;
        Ok(head.trim().to_string())
    }
}

fn check_segments(segments: &[&str]) -> Result<(), ()> {
    if segments.iter().any(|s| *s == ".." || *s == ".") { Err(()) } else { Ok(()) }
}

fn redact(message: &str, token: Option<&str>) -> String {
    match token {
        Some(token) if !token.is_empty() => message.replace(token, "***"),
        _ => message.to_string(),
    }
}

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.output().await.map_err(|err| format!("cannot run git: {err}; is git installed?"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("git {} failed: {}", args.first().unwrap_or(&""), stderr.trim()))
    }
}

/// Whether `source` is a git source rather than an upload id or a local path.
pub fn is_git(source: &str) -> bool {
    source.starts_with("file://")
        || source.starts_with("https://")
        || source.starts_with("http://")
        || (!source.starts_with('/') && !source.starts_with(UPLOAD_SCHEME) && source.split('/').count() >= 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(
        build: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>),
    ) -> tempfile::NamedTempFile {
        let mut builder =
            tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        build(&mut builder);
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    fn raw_file(builder: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>, path: &str, data: &[u8]) {
        // `append_data` refuses `..`, so write the name bytes directly as an attacker would.
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn link(builder: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>, path: &str, target: &str) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, path, target).unwrap();
    }

    #[test]
    fn unpack_accepts_a_tree_and_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let good = archive(|b| {
            raw_file(b, "Cargo.toml", b"[package]");
            raw_file(b, "./src/main.rs", b"fn main() {}");
            link(b, "src/lib.rs", "main.rs");
            link(b, "src/up.rs", "../Cargo.toml");
        });
        let dest = dir.path().join("good");
        unpack(good.path(), &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("src/main.rs")).unwrap(), b"fn main() {}");
        assert_eq!(std::fs::read(dest.join("src/up.rs")).unwrap(), b"[package]");

        let cases: Vec<(&str, tempfile::NamedTempFile)> = vec![
            ("dotdot", archive(|b| raw_file(b, "../x", b"evil"))),
            ("nested dotdot", archive(|b| raw_file(b, "a/../../x", b"evil"))),
            ("absolute", archive(|b| raw_file(b, "/tmp/x", b"evil"))),
            ("symlink escape", archive(|b| link(b, "a/evil", "../../etc/passwd"))),
            ("absolute symlink", archive(|b| link(b, "evil", "/etc/passwd"))),
            (
                "device",
                archive(|b| {
                    let mut header = tar::Header::new_gnu();
                    header.set_entry_type(tar::EntryType::Char);
                    header.set_size(0);
                    header.set_path("dev").unwrap();
                    header.set_cksum();
                    b.append(&header, &[][..]).unwrap();
                }),
            ),
        ];
        for (what, file) in cases {
            let dest = dir.path().join(what.replace(' ', "-"));
            let err = unpack(file.path(), &dest).expect_err(what);
            assert!(matches!(err, RuntimeError::Invalid(_)), "{what}: {err}");
            assert!(!dest.exists(), "{what}: a failed unpack leaves nothing");
        }
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn git_sources_parse() {
        let github = GitSource::parse("github.com/org/repo/sub/folder@v1.2", "latest").unwrap();
        assert_eq!(github.url, "https://github.com/org/repo.git");
        assert_eq!(github.host, "github.com");
        assert_eq!(github.folder, "sub/folder");
        assert_eq!(github.reference.as_deref(), Some("v1.2"));

        let plain = GitSource::parse("github.com/org/repo", "latest").unwrap();
        assert_eq!((plain.folder.as_str(), plain.reference), ("", None));
        let by_version = GitSource::parse("github.com/org/repo", "dev").unwrap();
        assert_eq!(by_version.reference.as_deref(), Some("dev"));

        let file = GitSource::parse("file:///tmp/x.git/sub@branch", "latest").unwrap();
        assert_eq!(file.url, "file:///tmp/x.git");
        assert_eq!(file.folder, "sub");
        assert_eq!(file.reference.as_deref(), Some("branch"));
        let file = GitSource::parse("file:///tmp/x.git", "latest").unwrap();
        assert_eq!((file.folder.as_str(), file.reference), ("", None));

        assert!(GitSource::parse("github.com/org/../x", "latest").is_err());
        assert!(GitSource::parse("github.com/org/repo@--upload-pack=x", "latest").is_err());
        assert!(GitSource::parse("ssh://host/org/repo", "latest").is_err());
        assert!(GitSource::parse("file://relative/x.git", "latest").is_err());
        assert!(is_git("github.com/org/repo") && is_git("file:///x.git"));
        assert!(!is_git("/abs/path") && !is_git("source://a:b:c"));
    }

    #[test]
    fn names_ids_and_entrypoints() {
        for good in ["helloworld", "a", "my-svc_2.0"] {
            validate_name("name", good).unwrap();
        }
        for bad in ["", "-a", "A", "a/b", "a b", "..", &"a".repeat(65)] {
            assert!(validate_name("name", bad).is_err(), "{bad:?}");
        }
        validate_name("version", "feature/x").unwrap();
        let id = UploadId::parse("source://helloworld:latest:abc123").unwrap();
        assert_eq!(id.to_source(), "source://helloworld:latest:abc123");
        assert!(UploadId::parse("source://../x:latest:abc").is_err());
        assert!(UploadId::parse("source://x:latest:../../").is_err());
        assert_eq!(validate_relative("entrypoint", "a/b/").unwrap(), PathBuf::from("a/b"));
        assert!(validate_relative("entrypoint", "../x").is_err());
    }
}
