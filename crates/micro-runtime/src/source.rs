//! Where a service's source comes from: an uploaded tarball (`source://…`), a git repository
//! cloned with the system `git`, or a folder on the server machine; and the checks that keep
//! every path inside the source.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use micro_core::names;

use crate::error::RuntimeError;

/// Largest uploaded (compressed) source tarball.
pub const MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;
/// Largest total size a source tarball may unpack to (a gzip bomb stops here).
pub const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;
/// Most entries a source tarball may hold.
pub const MAX_ARCHIVE_ENTRIES: usize = 200_000;
/// Largest payload of one GNU long-name or long-link entry or PAX extension entry in a source
/// tarball: the tar reader holds each in memory whole, so a tiny gzip must not declare gigabytes.
pub const MAX_EXTENSION_BYTES: u64 = 64 * 1024;
/// How long an unpacked upload that no service uses is kept before the sweep removes it: time
/// enough for `micro run` to upload and then create the service.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(60 * 60);
/// How often the runtime sweeps unused uploads (see [`UPLOAD_GRACE`]).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// The scheme of uploaded source ids.
pub const UPLOAD_SCHEME: &str = "source://";

/// `bytes` in lower-case hex (upload digests, build ids).
pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// `len` random bytes in hex: names of temporary files and checkouts under `sources/`.
pub(crate) fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex(&bytes)
}

/// A version as a file-name component (`feature/x` → `feature_x`). Not one-to-one (`x/y` and
/// `x_y` meet): name nothing by it that two services could share; see [`service_key`].
pub fn file_safe(version: &str) -> String {
    version.replace('/', "_")
}

/// A service's (name, version) as one file-name component and account-id part,
/// `<name>.<version>`, different for every pair: in the version every byte other than an ASCII
/// letter, digit or '-' is written `_xx` (hex), so it holds no '.' and the last '.' always
/// separates the two (`greeter`, `latest` → `greeter.latest`; `feature/x` → `feature_2fx`;
/// `v1.2` → `v1_2e2`).
pub fn service_key(name: &str, version: &str) -> String {
    let mut key = format!("{name}.");
    for byte in version.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            key.push(char::from(byte));
        } else {
            key.push_str(&format!("_{byte:02x}"));
        }
    }
    key
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
        names::validate_name(name)?;
        names::validate_version(version)?;
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

/// The caps [`unpack_with`] enforces; [`UnpackLimits::default`] gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes the archive's entries may hold: checked against every entry's (PAX aware)
    /// size before it is read, and counted again on the bytes actually written.
    pub unpacked_bytes: u64,
    /// Most entries.
    pub entries: usize,
    /// Largest payload of one GNU long-name or long-link entry or PAX extension entry.
    pub extension_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            unpacked_bytes: MAX_UNPACKED_BYTES,
            entries: MAX_ARCHIVE_ENTRIES,
            extension_bytes: MAX_EXTENSION_BYTES,
        }
    }
}

/// Unpacks the gzip'd tar `archive` into `dest` within the production [`UnpackLimits`]; see
/// [`unpack_with`].
pub fn unpack(archive: &Path, dest: &Path) -> Result<(), RuntimeError> {
    unpack_with(archive, dest, &UnpackLimits::default())
}

/// Unpacks the gzip'd tar `archive` into `dest`, a folder this call creates (it must not exist
/// yet). Only regular files, folders and links are unpacked; a link is refused when any hop of it
/// leads outside `dest` or its target is absolute; nothing is ever written through a link; files
/// keep their executable bits but lose setuid, setgid and sticky bits; and no more than
/// `limits.unpacked_bytes` reach the disk, whatever the headers say. On error `dest` is removed
/// again.
pub fn unpack_with(archive: &Path, dest: &Path, limits: &UnpackLimits) -> Result<(), RuntimeError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(storage)?;
    }
    make_dir(dest)?;
    let result = unpack_inner(archive, dest, limits);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

/// Permissions of every unpacked folder.
const DIR_MODE: u32 = 0o755;
/// Permissions of every unpacked file, plus the executable bits the archive gives it.
const FILE_MODE: u32 = 0o644;
/// Most links followed while resolving one link (the kernel's own limit is 40).
const MAX_LINK_HOPS: usize = 40;
/// The size of a tar header and the unit entries are padded to.
const BLOCK: usize = 512;

fn unpack_inner(archive: &Path, dest: &Path, limits: &UnpackLimits) -> Result<(), RuntimeError> {
    let file = std::fs::File::open(archive).map_err(storage)?;
    let guard = HeaderGuard::new(flate2::read::GzDecoder::new(file), limits.extension_bytes);
    let mut tar = tar::Archive::new(guard);
    // What may still be unpacked (or skipped over, for entries whose data is not written).
    let mut left = limits.unpacked_bytes;
    for (count, entry) in tar.entries().map_err(archive_error)?.enumerate() {
        if count >= limits.entries {
            return Err(RuntimeError::Invalid(format!(
                "the source archive has more than {} entries",
                limits.entries
            )));
        }
        let mut entry = entry.map_err(archive_error)?;
        // The PAX-aware size: what the tar reader will stream (or skip) for this entry.
        let size = entry.size();
        if size > left {
            return Err(too_large(limits.unpacked_bytes));
        }
        let kind = entry.header().entry_type();
        // A PAX global header (or an extension header the tar reader did not take in as one, not
        // being in a GNU or ustar header): its data is skipped, whatever it is named.
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            left -= size;
            continue;
        }
        let path = entry.path().map_err(archive_error)?.into_owned();
        let relative = safe_entry_path(&path)?;
        if relative.as_os_str().is_empty() {
            if kind == tar::EntryType::Directory {
                left -= size;
                continue;
            }
            return Err(RuntimeError::Invalid("the source archive has an entry without a name".into()));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let executable = entry.header().mode().unwrap_or(0) & 0o111;
                let mtime = entry.header().mtime().ok();
                let target = prepare(dest, &relative, &path, false)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(FILE_MODE | executable)
                    .open(&target)
                    .map_err(storage)?;
                copy_capped(&mut entry, &mut file, &mut left, limits.unpacked_bytes)?;
                // Set again: the umask may have taken bits away.
                file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE | executable))
                    .map_err(storage)?;
                // Cargo compares source mtimes with its build's, so keep the archive's.
                if let Some(mtime) = mtime {
                    let _ = file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(mtime));
                }
            }
            tar::EntryType::Directory => {
                left -= size;
                let target = prepare(dest, &relative, &path, true)?;
                if !target.is_dir() {
                    make_dir(&target)?;
                }
            }
            tar::EntryType::Symlink => {
                left -= size;
                let target = link_target(&entry, &path)?;
                let base = relative.parent().unwrap_or(Path::new(""));
                if resolve(dest, base, &target).is_none() {
                    return Err(link_outside(&path));
                }
                let at = prepare(dest, &relative, &path, false)?;
                std::os::unix::fs::symlink(&target, at).map_err(storage)?;
            }
            tar::EntryType::Link => {
                left -= size;
                let target = link_target(&entry, &path)?;
                let target = safe_entry_path(&target)?;
                let original = resolve(dest, Path::new(""), &target)
                    .filter(|original| *original != relative)
                    .ok_or_else(|| link_outside(&path))?;
                let original = dest.join(original);
                if !std::fs::symlink_metadata(&original).is_ok_and(|meta| meta.is_file()) {
                    return Err(RuntimeError::Invalid(format!(
                        "the source archive's hard link {} does not point to a file unpacked before it",
                        path.display()
                    )));
                }
                let at = prepare(dest, &relative, &path, false)?;
                std::fs::hard_link(original, at).map_err(storage)?;
            }
            other => {
                return Err(RuntimeError::Invalid(format!(
                    "the source archive's entry {} is a {other:?}, which a source may not contain",
                    path.display()
                )));
            }
        }
    }
    check_links(dest)
}

/// The source archive grew past `cap`.
fn too_large(cap: u64) -> RuntimeError {
    const MIB: u64 = 1024 * 1024;
    let cap = if cap >= MIB && cap.is_multiple_of(MIB) {
        format!("{} MiB", cap / MIB)
    } else {
        format!("{cap} bytes")
    };
    RuntimeError::Invalid(format!("the source archive unpacks to more than {cap}"))
}

fn link_outside(path: &Path) -> RuntimeError {
    RuntimeError::Invalid(format!(
        "the source archive's link {} points outside the source (or to an absolute path)",
        path.display()
    ))
}

/// A failure to write the unpacked source on the server's disk; the message holds no path.
fn storage(err: std::io::Error) -> RuntimeError {
    RuntimeError::Internal(format!("cannot store the unpacked source: {err}"))
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, path: &Path) -> Result<PathBuf, RuntimeError> {
    match entry.link_name().map_err(archive_error)? {
        Some(target) if !target.as_os_str().is_empty() => Ok(target.into_owned()),
        _ => {
            Err(RuntimeError::Invalid(format!("the source archive's link {} has no target", path.display())))
        }
    }
}

/// Makes the folders above `relative` inside `dest`, each of which must be a real folder (never a
/// link, so nothing is written through one), and clears the way for the entry itself: a file or
/// link already there is replaced; a folder stays when `folder` is asked for and is refused
/// otherwise. Returns the entry's path on disk.
fn prepare(dest: &Path, relative: &Path, shown: &Path, folder: bool) -> Result<PathBuf, RuntimeError> {
    let mut here = dest.to_path_buf();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        here.push(part);
        let last = parts.peek().is_none();
        match std::fs::symlink_metadata(&here) {
            Ok(meta) if meta.is_dir() => {
                if last && !folder {
                    return Err(RuntimeError::Invalid(format!(
                        "the source archive's entry {} replaces a folder",
                        shown.display()
                    )));
                }
            }
            Ok(_) if last => std::fs::remove_file(&here).map_err(storage)?,
            Ok(_) => {
                return Err(RuntimeError::Invalid(format!(
                    "the source archive's entry {} lies below a link or a file",
                    shown.display()
                )));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if !last {
                    make_dir(&here)?;
                }
            }
            Err(err) => return Err(storage(err)),
        }
    }
    Ok(here)
}

/// Creates the folder `path` (which must not exist) with [`DIR_MODE`], whatever the umask.
fn make_dir(path: &Path) -> Result<(), RuntimeError> {
    std::fs::DirBuilder::new().mode(DIR_MODE).create(path).map_err(storage)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE)).map_err(storage)
}

/// Copies `reader` to `out`, counting the bytes written against `left`: at most `left` bytes
/// ever reach `out`, and a reader with more fails the copy once `left` is used up, whatever the
/// archive's headers promised.
fn copy_capped(
    reader: &mut impl Read,
    out: &mut impl Write,
    left: &mut u64,
    cap: u64,
) -> Result<(), RuntimeError> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(archive_error(err)),
        };
        let allowed = usize::try_from(*left).unwrap_or(usize::MAX).min(read);
        out.write_all(&buffer[..allowed]).map_err(storage)?;
        *left -= allowed as u64;
        if allowed < read {
            return Err(too_large(cap));
        }
    }
}

/// Where `target`, a link's target as seen from the folder `base` (both relative to `root`),
/// leads when followed the way the kernel does, through the links already in `root`: the path
/// relative to `root`, or `None` when any hop leaves `root`, a target is absolute, or links
/// loop. A `..` after a part that does not exist is taken lexically (the kernel would fail
/// there instead). Every path it looks at is `root` joined with parts that are not links, so it
/// never reads outside.
fn resolve(root: &Path, base: &Path, target: &Path) -> Option<PathBuf> {
    // `base` is a real folder (entries are never written through links), so it needs no resolving.
    let mut reached: Vec<OsString> = Vec::new();
    push_parts(&mut reached, base)?;
    if reached.iter().any(|part| part == "..") {
        return None;
    }
    // A stack: the next part to follow is last.
    let mut todo: Vec<OsString> = Vec::new();
    push_parts(&mut todo, target)?;
    todo.reverse();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            reached.pop()?;
            continue;
        }
        reached.push(part);
        let here = root.join(reached.iter().collect::<PathBuf>());
        if std::fs::symlink_metadata(&here).is_ok_and(|meta| meta.file_type().is_symlink()) {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return None;
            }
            let next = std::fs::read_link(&here).ok()?;
            reached.pop();
            let mut parts = Vec::new();
            push_parts(&mut parts, &next)?;
            todo.extend(parts.into_iter().rev());
        }
    }
    Some(reached.iter().collect())
}

/// Appends the components of a relative path (`..` as itself, `.` dropped); `None` when it is
/// absolute.
fn push_parts(parts: &mut Vec<OsString>, path: &Path) -> Option<()> {
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::ParentDir => parts.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(())
}

/// Checks every link in the unpacked tree once more now that all are in place: a link unpacked
/// later can make an earlier one lead outside (`a/esc -> p/../..`, then `a/p -> ..`).
fn check_links(root: &Path) -> Result<(), RuntimeError> {
    let mut folders = vec![PathBuf::new()];
    while let Some(folder) = folders.pop() {
        for child in std::fs::read_dir(root.join(&folder)).map_err(storage)? {
            let child = child.map_err(storage)?;
            let relative = folder.join(child.file_name());
            let kind = child.file_type().map_err(storage)?;
            if kind.is_dir() {
                folders.push(relative);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(child.path()).map_err(storage)?;
                if resolve(root, &folder, &target).is_none() {
                    return Err(link_outside(&relative));
                }
            }
        }
    }
    Ok(())
}

/// Why the archive was refused, carried through the tar reader as an [`std::io::Error`] so the
/// message reaches the caller as written.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, Refused(message))
}

/// An error reading the archive, as a message safe for the client.
fn archive_error(err: std::io::Error) -> RuntimeError {
    match err.get_ref().and_then(|inner| inner.downcast_ref::<Refused>()) {
        Some(refused) => RuntimeError::Invalid(refused.0.clone()),
        None => RuntimeError::Invalid(format!("the source archive is not a readable gzip'd tar: {err}")),
    }
}

/// Reads the decompressed tar stream one step ahead of the tar crate and frames it the way
/// `tar::Archive` does (a PAX `size` overriding the next entry's header), so it sees every
/// 512-byte header before the tar crate does. The tar crate reads the payload of a GNU long-name
/// (`L`) or long-link (`K`) entry or a PAX extension (`x`) whole into memory before the unpack
/// loop sees anything, so the read that would hand it such a header with a payload over
/// `max_extension` bytes fails instead; as does a GNU sparse entry, whose extra headers this
/// framing does not follow (and which a source never needs).
struct HeaderGuard<R> {
    inner: R,
    max_extension: u64,
    header: [u8; BLOCK],
    /// Bytes of `header` read so far.
    filled: usize,
    /// Bytes of the current entry's payload still to come, then of its padding.
    data_left: u64,
    padding_left: u64,
    /// The payload of the PAX extension entry being read, to learn the next entry's size.
    pax: Option<Vec<u8>>,
    /// The `size` the last PAX extension gave the entry it describes.
    pax_size: Option<u64>,
    /// Past the end of the archive, or past a header the tar crate fails on: nothing to frame.
    done: bool,
}

impl<R> HeaderGuard<R> {
    fn new(inner: R, max_extension: u64) -> Self {
        Self {
            inner,
            max_extension,
            header: [0; BLOCK],
            filled: 0,
            data_left: 0,
            padding_left: 0,
            pax: None,
            pax_size: None,
            done: false,
        }
    }

    fn inspect(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() && !self.done {
            if self.data_left > 0 {
                let take = usize::try_from(self.data_left).unwrap_or(usize::MAX).min(bytes.len());
                if let Some(pax) = &mut self.pax {
                    pax.extend_from_slice(&bytes[..take]);
                }
                self.data_left -= take as u64;
                bytes = &bytes[take..];
                if self.data_left == 0
                    && let Some(pax) = self.pax.take()
                {
                    self.pax_size = pax_size(&pax);
                }
            } else if self.padding_left > 0 {
                let take = usize::try_from(self.padding_left).unwrap_or(usize::MAX).min(bytes.len());
                self.padding_left -= take as u64;
                bytes = &bytes[take..];
            } else {
                let take = (BLOCK - self.filled).min(bytes.len());
                self.header[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
                self.filled += take;
                bytes = &bytes[take..];
                if self.filled == BLOCK {
                    self.filled = 0;
                    self.on_header()?;
                }
            }
        }
        Ok(())
    }

    /// Frames the entry whose header was just read, mirroring `tar::Archive`'s `next_entry`.
    fn on_header(&mut self) -> std::io::Result<()> {
        // An all-zero block ends the archive for the tar crate.
        if self.header.iter().all(|&byte| byte == 0) {
            self.done = true;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.header);
        let sum =
            self.header[..148].iter().chain(&self.header[156..]).map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
        let (Ok(cksum), Ok(size)) = (header.cksum(), header.entry_size()) else {
            self.done = true; // the tar crate fails on this header
            return Ok(());
        };
        if cksum != sum {
            self.done = true; // likewise
            return Ok(());
        }
        let kind = header.entry_type();
        if kind.is_gnu_sparse() {
            return Err(refuse(
                "the source archive holds a sparse file, which a source may not contain".into(),
            ));
        }
        let consumable = kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions();
        let extension = consumable || kind.is_pax_global_extensions();
        if extension && size > self.max_extension {
            return Err(refuse(format!(
                "the source archive has a long-name or extension header of {size} bytes, more than the {} KiB allowed",
                self.max_extension / 1024
            )));
        }
        let size = match self.pax_size {
            Some(pax_size) if !extension => pax_size,
            _ => size,
        };
        // The tar crate takes an `L`, `K` or `x` entry in as part of the next one only in a
        // GNU or ustar header; any other header is an entry of its own and ends the PAX
        // extension's reach.
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        if !(recognized && consumable) {
            self.pax_size = None;
        }
        if recognized && kind.is_pax_local_extensions() {
            self.pax_size = None;
            self.pax = (size > 0).then(Vec::new);
        }
        self.data_left = size;
        self.padding_left = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        Ok(())
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.inspect(&buffer[..read])?;
        Ok(read)
    }
}

/// The PAX `size` record as the tar crate reads it: the first `size` key, if its value parses.
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse().ok();
    }
    None
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

/// Whether the upload whose folder is `dir` ([`UploadId::dir`], named by the digest of its
/// archive) is unpacked there already, so that uploading the same source again need not unpack
/// it: then `dir` is marked fresh, and the sweep gives it a whole grace period again. A folder
/// under that name is always whole: an upload is unpacked aside and renamed into place, and
/// [`sweep_sources`] moves a folder aside before it removes it. The caller holds the lock the
/// sweep takes, so the folder cannot go in between.
pub fn reuse_unpacked(dir: &Path) -> Result<bool, RuntimeError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    std::fs::File::open(dir).and_then(|folder| folder.set_modified(SystemTime::now())).map_err(storage)?;
    Ok(true)
}

/// Removes what uploads left under `sources` that no service uses: folders under
/// `sources/<namespace>/` (unpacked uploads, git checkouts, interrupted unpacks and removals)
/// not named in `in_use` (as `<namespace>/<folder>`) and last modified more than `grace` ago,
/// and interrupted `.upload-*` files. Returns how many it removed.
pub fn sweep_sources(sources: &Path, in_use: &HashSet<PathBuf>, grace: Duration) -> usize {
    let now = SystemTime::now();
    let stale = |path: &Path| {
        std::fs::symlink_metadata(path)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| now.duration_since(modified).unwrap_or(Duration::ZERO) >= grace)
    };
    let mut removed = 0;
    let Ok(namespaces) = std::fs::read_dir(sources) else { return 0 };
    for namespace in namespaces.flatten() {
        let path = namespace.path();
        let Ok(kind) = namespace.file_type() else { continue };
        if kind.is_file() && namespace.file_name().to_string_lossy().starts_with(".upload-") {
            if stale(&path) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
            continue;
        }
        if !kind.is_dir() {
            continue;
        }
        let Ok(folders) = std::fs::read_dir(&path) else { continue };
        for folder in folders.flatten() {
            let relative = Path::new(&namespace.file_name()).join(folder.file_name());
            if in_use.contains(&relative) || !folder.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            if stale(&folder.path()) && remove_folder(&path, &folder.file_name()) {
                tracing::info!(source = %relative.display(), "removed an upload no service uses");
                removed += 1;
            }
        }
    }
    removed
}

/// Removes the folder `name` in `parent`, first moving it aside (to `.removing-<name>`) unless
/// its name starts with a dot (staging, leftovers): a removal cut short then never leaves part
/// of a folder under its own name, where [`reuse_unpacked`] would take it for whole.
fn remove_folder(parent: &Path, name: &OsStr) -> bool {
    let mut folder = parent.join(name);
    if !name.as_encoded_bytes().starts_with(b".") {
        let mut aside = OsString::from(".removing-");
        aside.push(name);
        let aside = parent.join(aside);
        if std::fs::rename(&folder, &aside).is_err() {
            return false;
        }
        folder = aside;
    }
    std::fs::remove_dir_all(folder).is_ok()
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

    /// Shallow-clones the repository at the ref into `dest`; returns the commit checked out. A
    /// token for a private repository reaches git through a credential helper reading it from
    /// the environment ([`git`]): never in the URL, an argument or the checkout's `.git/config`.
    pub async fn clone_into(&self, dest: &Path, token: Option<&str>) -> Result<String, RuntimeError> {
        let url = self.url.clone();
        let token = token.filter(|token| !token.is_empty() && self.url.starts_with("https://"));
        let _ = tokio::fs::remove_dir_all(dest).await;
        let dest_str = dest.to_string_lossy().to_string();
        let mut args = vec!["clone", "--quiet", "--depth", "1"];
        if let Some(reference) = &self.reference {
            args.extend(["--branch", reference.as_str()]);
        }
        args.extend(["--", url.as_str(), dest_str.as_str()]);
        let cloned = git_with(None, &args, token).await;
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
                git_with(Some(dest), step, token)
                    .await
                    .map_err(|e| RuntimeError::Invalid(redact(&e, token)))?;
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

/// The environment variable the credential helper reads a clone's token from.
const TOKEN_ENV: &str = "MICRO_GIT_TOKEN";
/// A credential helper (`git -c credential.helper=…`, kept for that one command) answering
/// with the token from [`TOKEN_ENV`] as the password, `x-access-token` as the user name (what
/// GitHub, GitLab and Gitea take with a personal access token).
const CREDENTIAL_HELPER: &str =
    "!f() { test \"$1\" = get && echo username=x-access-token && echo \"password=$MICRO_GIT_TOKEN\"; }; f";

async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    git_with(dir, args, None).await
}

/// Runs git; with a `token`, through [`CREDENTIAL_HELPER`] with the token in its environment.
async fn git_with(dir: Option<&Path>, args: &[&str], token: Option<&str>) -> Result<String, String> {
    let mut command = tokio::process::Command::new("git");
    if let Some(token) = token {
        // An empty helper first drops any the system or user configured.
        command
            .args(["-c", "credential.helper=", "-c"])
            .arg(format!("credential.helper={CREDENTIAL_HELPER}"));
        command.env(TOKEN_ENV, token);
    } else {
        command.env_remove(TOKEN_ENV);
    }
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

    /// A ustar header for `path` of `kind`, declaring `size` bytes, with a valid checksum.
    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = if matches!(kind, tar::EntryType::GNULongName | tar::EntryType::GNULongLink) {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_cksum();
        header
    }

    /// Every regular file under `root` with its length.
    fn files(root: &Path) -> Vec<(PathBuf, u64)> {
        let mut found = Vec::new();
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for child in std::fs::read_dir(folder).unwrap() {
                let child = child.unwrap();
                let meta = std::fs::symlink_metadata(child.path()).unwrap();
                if meta.is_dir() {
                    folders.push(child.path());
                } else if meta.is_file() {
                    found.push((child.path(), meta.len()));
                }
            }
        }
        found
    }

    fn invalid(result: Result<(), RuntimeError>) -> String {
        match result {
            Err(RuntimeError::Invalid(message)) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn unpack_counts_pax_sizes_and_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // A PAX record makes a 0-byte header an 8 GiB file; only a little data follows.
        let pax_bomb = archive(|b| {
            let records = b"19 size=8589934592\n";
            b.append(
                &header("PaxHeaders/big", tar::EntryType::XHeader, records.len() as u64, 0o644),
                &records[..],
            )
            .unwrap();
            b.append(&header("big", tar::EntryType::Regular, 0, 0o644), &[b'a'; 4096][..]).unwrap();
        });
        let dest = dir.path().join("pax");
        let message = invalid(unpack(pax_bomb.path(), &dest));
        assert_eq!(message, "the source archive unpacks to more than 1024 MiB");
        assert!(!dest.exists(), "a refused unpack leaves nothing");
        // What the refused unpack wrote before it stopped: nothing of the file.
        let partial = dir.path().join("pax-partial");
        std::fs::create_dir(&partial).unwrap();
        assert!(unpack_inner(pax_bomb.path(), &partial, &UnpackLimits::default()).is_err());
        assert_eq!(files(&partial), Vec::new());

        // An archive over a (small) cap is refused before anything past the cap is written.
        let over = archive(|b| {
            raw_file(b, "a.txt", &[b'a'; 600]);
            raw_file(b, "b.txt", &[b'b'; 600]);
        });
        let limits = UnpackLimits { unpacked_bytes: 1000, ..UnpackLimits::default() };
        let dest = dir.path().join("over");
        assert_eq!(
            invalid(unpack_with(over.path(), &dest, &limits)),
            "the source archive unpacks to more than 1000 bytes"
        );
        assert!(!dest.exists());
        let partial = dir.path().join("over-partial");
        std::fs::create_dir(&partial).unwrap();
        assert!(unpack_inner(over.path(), &partial, &limits).is_err());
        assert_eq!(files(&partial).iter().map(|(_, len)| len).sum::<u64>(), 600);

        // Whatever the header said, the copy stops at the cap: a body longer than promised is cut.
        let mut body = std::io::repeat(b'x').take(10_000);
        let mut written = Vec::new();
        let mut left = 4096;
        let result = copy_capped(&mut body, &mut written, &mut left, 4096);
        assert_eq!(invalid(result), "the source archive unpacks to more than 4096 bytes");
        assert_eq!((written.len(), left), (4096, 0));
        let mut short = std::io::repeat(b'x').take(100);
        let mut left = 4096;
        copy_capped(&mut short, &mut Vec::new(), &mut left, 4096).unwrap();
        assert_eq!(left, 3996);
    }

    #[test]
    fn oversized_extension_headers_are_refused_before_they_are_read() {
        // A GNU long name declaring 1 TiB followed by endless data: refused at its header, after
        // the tar reader asked for nothing more than that header.
        struct Counting<R>(R, std::rc::Rc<std::cell::Cell<u64>>);
        impl<R: Read> Read for Counting<R> {
            fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
                let read = self.0.read(buffer)?;
                self.1.set(self.1.get() + read as u64);
                Ok(read)
            }
        }
        for kind in [tar::EntryType::GNULongName, tar::EntryType::GNULongLink, tar::EntryType::XHeader] {
            let long = header("././@LongLink", kind, 1 << 40, 0o644);
            let consumed = std::rc::Rc::new(std::cell::Cell::new(0));
            let stream = Counting(long.as_bytes().chain(std::io::repeat(b'a')), consumed.clone());
            let mut tar = tar::Archive::new(HeaderGuard::new(stream, MAX_EXTENSION_BYTES));
            let err = tar.entries().unwrap().next().unwrap().err().expect("refused");
            assert_eq!(
                invalid(Err(archive_error(err))),
                "the source archive has a long-name or extension header of 1099511627776 bytes, more than the 64 KiB allowed"
            );
            assert!(consumed.get() <= 512, "{kind:?}: read {} bytes", consumed.get());
        }

        // Through `unpack`: a tiny gzip declaring a 4 GiB long name.
        let dir = tempfile::tempdir().unwrap();
        let bomb = archive(|b| {
            b.append(
                &header("././@LongLink", tar::EntryType::GNULongName, 4 << 30, 0o644),
                &[b'a'; 1024][..],
            )
            .unwrap();
        });
        let dest = dir.path().join("long");
        assert!(
            invalid(unpack(bomb.path(), &dest)).contains("long-name or extension header of 4294967296 bytes")
        );
        assert!(!dest.exists());

        // Long names within the limit still work, as does a PAX path.
        let long_path = format!("{}/main.rs", "deep".repeat(40));
        let fine = archive(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o644);
            b.append_data(&mut h, &long_path, &b"ok"[..]).unwrap();
            b.append_pax_extensions([("path", b"pax/named.rs".as_slice())]).unwrap();
            b.append(&header("ignored", tar::EntryType::Regular, 3, 0o644), &b"pax"[..]).unwrap();
        });
        let dest = dir.path().join("fine");
        unpack(fine.path(), &dest).unwrap();
        assert_eq!(std::fs::read(dest.join(&long_path)).unwrap(), b"ok");
        assert_eq!(std::fs::read(dest.join("pax/named.rs")).unwrap(), b"pax");
    }

    #[test]
    fn links_are_resolved_hop_by_hop() {
        let dir = tempfile::tempdir().unwrap();
        let hard = |b: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>, path: &str, target: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        };
        let cases: Vec<(&str, tempfile::NamedTempFile, &str)> = vec![
            (
                "chained",
                archive(|b| {
                    link(b, "a/b/up", "../..");
                    link(b, "a/b/esc", "up/..");
                }),
                "link a/b/esc points outside",
            ),
            (
                // Fine when unpacked; `a/p` later makes the first link lead out.
                "later hop",
                archive(|b| {
                    link(b, "a/esc", "p/../..");
                    link(b, "a/p", "..");
                }),
                "link a/esc points outside",
            ),
            (
                "loop",
                archive(|b| {
                    link(b, "x", "y/z");
                    link(b, "y", "x");
                }),
                "points outside the source",
            ),
            (
                "write through a link",
                archive(|b| {
                    link(b, "a", ".");
                    raw_file(b, "a/x", b"evil");
                }),
                "entry a/x lies below a link or a file",
            ),
            (
                "hard link with dotdot",
                archive(|b| {
                    raw_file(b, "f", b"data");
                    hard(b, "h", "d/../f");
                }),
                "path d/../f is absolute or contains '..'",
            ),
            (
                "hard link to nothing",
                archive(|b| hard(b, "h", "missing")),
                "hard link h does not point to a file",
            ),
            (
                "hard link to a folder",
                archive(|b| {
                    raw_file(b, "d/f", b"x");
                    hard(b, "h", "d");
                }),
                "hard link h does not point to a file",
            ),
        ];
        for (what, file, says) in cases {
            let dest = dir.path().join(what.replace(' ', "-"));
            let message = invalid(unpack(file.path(), &dest));
            assert!(message.contains(says), "{what}: {message}");
            assert!(!dest.exists(), "{what}: a failed unpack leaves nothing");
        }

        // Links that stay inside, through other links, and hard links to files are kept.
        let good = archive(|b| {
            raw_file(b, "src/main.rs", b"fn main() {}");
            link(b, "a/b/up", "../..");
            link(b, "a/b/main", "up/src/main.rs");
            link(b, "root", ".");
            hard(b, "copy.rs", "src/main.rs");
        });
        let dest = dir.path().join("good");
        unpack(good.path(), &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("a/b/main")).unwrap(), b"fn main() {}");
        assert_eq!(std::fs::read(dest.join("copy.rs")).unwrap(), b"fn main() {}");
    }

    #[test]
    fn unpacked_modes_lose_setuid_setgid_and_sticky() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let modes = archive(|b| {
            b.append(&header("tool", tar::EntryType::Regular, 2, 0o4755), &b"#!"[..]).unwrap();
            b.append(&header("group", tar::EntryType::Regular, 1, 0o2750), &b"x"[..]).unwrap();
            b.append(&header("open", tar::EntryType::Regular, 1, 0o666), &b"x"[..]).unwrap();
            b.append(&header("shared", tar::EntryType::Directory, 0, 0o1777), &[][..]).unwrap();
        });
        let dest = dir.path().join("modes");
        unpack(modes.path(), &dest).unwrap();
        let mode = |path: &str| std::fs::metadata(dest.join(path)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("tool"), 0o755, "setuid goes, the executable bits stay");
        assert_eq!(mode("group"), 0o754);
        assert_eq!(mode("open"), 0o644);
        assert_eq!(mode("shared"), 0o755);
    }

    #[test]
    fn an_upload_unpacked_before_is_reused_and_a_swept_one_is_not() {
        let sources = tempfile::tempdir().unwrap();
        let id = UploadId::parse("source://app:latest:0123456789abcdef").unwrap();
        let dir = id.dir(sources.path(), "micro");
        assert!(!reuse_unpacked(&dir).unwrap(), "nothing unpacked yet");

        // Unpacked aside and renamed into place, as an upload does.
        let source = archive(|b| raw_file(b, "src/main.rs", b"fn main() {}"));
        let staging = sources.path().join("micro/.unpacking-1");
        unpack(source.path(), &staging).unwrap();
        std::fs::rename(&staging, &dir).unwrap();
        let past = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&dir).unwrap().set_modified(past).unwrap();
        assert!(reuse_unpacked(&dir).unwrap());
        let modified = std::fs::metadata(&dir).unwrap().modified().unwrap();
        assert!(modified > past + Duration::from_secs(3000), "marked fresh for the sweep");
        assert_eq!(std::fs::read(dir.join("src/main.rs")).unwrap(), b"fn main() {}");

        // The sweep moves a folder aside before removing it, and removes what an interrupted
        // removal left aside; nothing stays under the upload's name.
        std::fs::File::open(&dir).unwrap().set_modified(past).unwrap();
        let leftover = sources.path().join("micro/.removing-old-latest-00");
        std::fs::create_dir_all(leftover.join("src")).unwrap();
        std::fs::File::open(&leftover).unwrap().set_modified(past).unwrap();
        assert_eq!(sweep_sources(sources.path(), &HashSet::new(), Duration::from_secs(60)), 2);
        assert_eq!(std::fs::read_dir(sources.path().join("micro")).unwrap().count(), 0);
        assert!(!reuse_unpacked(&dir).unwrap(), "a swept upload is unpacked again");
    }

    #[test]
    fn service_keys_differ_for_every_pair() {
        assert_eq!(service_key("greeter", "latest"), "greeter.latest");
        assert_eq!(service_key("greeter", "feature/x"), "greeter.feature_2fx");
        let pairs = [
            ("a-b", "c"),
            ("a", "b-c"),
            ("x", "y/z"),
            ("x", "y_z"),
            ("a.b", "c"),
            ("a", "b.c"),
            ("a", "b_2ec"),
        ];
        let keys: HashSet<String> = pairs.iter().map(|(name, version)| service_key(name, version)).collect();
        assert_eq!(keys.len(), pairs.len(), "{keys:?}");
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
    fn ids_and_entrypoints() {
        let id = UploadId::parse("source://helloworld:latest:abc123").unwrap();
        assert_eq!(id.to_source(), "source://helloworld:latest:abc123");
        assert!(UploadId::parse("source://../x:latest:abc").is_err());
        assert!(UploadId::parse("source://x:latest:../../").is_err());
        assert_eq!(validate_relative("entrypoint", "a/b/").unwrap(), PathBuf::from("a/b"));
        assert!(validate_relative("entrypoint", "../x").is_err());
    }

    /// The token reaches git only through the helper and its environment: `git credential fill`
    /// run the way a clone runs answers with it, and a clone of a local repository with a token
    /// leaves no trace of it in the checkout.
    #[tokio::test]
    async fn git_tokens_go_through_a_credential_helper_never_the_url_or_disk() {
        let mut fill = tokio::process::Command::new("git");
        fill.args(["-c", "credential.helper=", "-c"])
            .arg(format!("credential.helper={CREDENTIAL_HELPER}"))
            .args(["credential", "fill"])
            .env(TOKEN_ENV, "s3cr3t-token")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = fill.spawn().unwrap();
        use tokio::io::AsyncWriteExt as _;
        child.stdin.take().unwrap().write_all(b"protocol=https\nhost=git.example.com\n\n").await.unwrap();
        let output = child.wait_with_output().await.unwrap();
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(answer.contains("username=x-access-token"), "{answer}");
        assert!(answer.contains("password=s3cr3t-token"), "{answer}");

        let work = tempfile::tempdir().unwrap();
        let repo = work.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("README"), "hi").unwrap();
        for args in [
            &["init", "--quiet"][..],
            &["add", "."],
            &["-c", "user.email=t@t", "-c", "user.name=t", "commit", "--quiet", "-m", "one"],
        ] {
            git(Some(&repo), args).await.unwrap();
        }
        let source = GitSource::parse(&format!("file://{}", repo.display()), "latest").unwrap();
        let dest = work.path().join("checkout");
        source.clone_into(&dest, Some("s3cr3t-token")).await.unwrap();
        let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
        assert!(!config.contains("s3cr3t"), "{config}");
    }
}
