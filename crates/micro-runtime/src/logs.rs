//! Service log files: appended line by line (length-capped, each line stamped with its time)
//! from a child's stdout/stderr and from builds, rotated by size; read back as the last N lines
//! (within a time window), optionally followed.
//!
//! And build logs: the output of a service version's last build (`cargo fetch` and `cargo
//! build`), kept apart from the service log, emptied when a build begins and locked (`flock`)
//! while it runs, so a reader knows whether to follow it ([`BuildLog`], [`read_build`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::error::RuntimeError;

/// Longest log line kept; the rest of a longer line is dropped and marked.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// Most lines one `Logs` call returns from the end of the file.
pub const MAX_LOG_COUNT: usize = 10_000;
/// Largest a service's log grows before it is rotated: the file becomes `NAME.log.1` (replacing
/// the one before) and a new one starts, so a service keeps at most twice this on disk.
pub const MAX_LOG_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most bytes one `Logs` call reads from the end of a log to find its lines.
pub const MAX_LOG_READ_BYTES: u64 = 4 * 1024 * 1024;
/// Lines a `Logs` call returns when it asks for none.
pub const DEFAULT_LOG_COUNT: usize = 15;
/// How often a followed log file is checked for new lines.
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// Bytes a log line takes on disk besides its message: the time stamp
/// (`2026-11-23T16:05:40Z `, [`STAMP_BYTES`]) and the newline, with room to spare.
const LINE_OVERHEAD: usize = 32;
/// The length of the stamp that starts each line of a service log: `YYYY-MM-DDTHH:MM:SSZ`.
const STAMP_BYTES: usize = 20;
/// Largest piece of a build log one `Build.Read` message carries.
pub const BUILD_CHUNK_BYTES: usize = 64 * 1024;

/// One line of a service's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Unix seconds: when the line was written (its stamp); for a line written before lines
    /// were stamped, the file's modification time (or, while following, when it was read).
    pub timestamp: i64,
    pub message: String,
}

/// An append-only log file shared by the writers of one service, rotated at `limit` bytes.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    limit: u64,
    /// The open file and its length.
    file: tokio::sync::Mutex<Option<(tokio::fs::File, u64)>>,
}

/// Where a log's previous generation is kept.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

impl LogFile {
    pub fn new(path: PathBuf) -> Self {
        Self::with_limit(path, MAX_LOG_FILE_BYTES)
    }

    /// A log rotated at `limit` bytes instead of [`MAX_LOG_FILE_BYTES`] (tests).
    pub fn with_limit(path: PathBuf, limit: u64) -> Self {
        Self { path, limit, file: tokio::sync::Mutex::new(None) }
    }

    /// Appends `line`, stamped with the current time (`2026-11-23T16:05:40Z line`), and a
    /// newline; logging failures are reported once through tracing only.
    pub async fn write_line(&self, line: &str) {
        let stamp = micro_core::time::rfc3339_now();
        let mut bytes = Vec::with_capacity(stamp.len() + line.len() + 2);
        bytes.extend_from_slice(stamp.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let mut guard = self.file.lock().await;
        if guard.as_ref().is_some_and(|(_, len)| *len > 0 && len + bytes.len() as u64 > self.limit) {
            // Rotate: the file below is opened afresh.
            *guard = None;
            if let Err(err) = tokio::fs::rename(&self.path, rotated(&self.path)).await {
                tracing::warn!(path = %self.path.display(), cause = %err, "cannot rotate the service log");
            }
        }
        if guard.is_none() {
            if let Some(parent) = self.path.parent() {
                let _ = tokio::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(micro_core::home::PRIVATE_DIR_MODE)
                    .create(parent)
                    .await;
            }
            let mut options = tokio::fs::OpenOptions::new();
            options.create(true).append(true).mode(micro_core::home::PRIVATE_FILE_MODE);
            let opened = match options.open(&self.path).await {
                Ok(file) => file.metadata().await.map(|meta| (file, meta.len())),
                Err(err) => Err(err),
            };
            match opened {
                Ok(opened) => *guard = Some(opened),
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), cause = %err, "cannot open the service log");
                    return;
                }
            }
        }
        if let Some((file, len)) = guard.as_mut() {
            match file.write_all(&bytes).await {
                Ok(()) => *len += bytes.len() as u64,
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), cause = %err, "cannot write the service log");
                    *guard = None;
                }
            }
        }
    }
}

/// Copies `reader` into `log` line by line (capping each at [`MAX_LOG_LINE_BYTES`]), calling
/// `on_line` for each; returns at end of stream.
pub async fn pump(reader: impl AsyncBufRead + Unpin, log: &LogFile, on_line: impl FnMut(&str)) {
    pump_into(reader, log, None, on_line).await;
}

/// Copies a build's output from `reader` line by line into the service's `log` and into the
/// build's own log `build`, each line capped as [`pump`] caps it.
pub async fn pump_build(reader: impl AsyncBufRead + Unpin, log: &LogFile, build: &BuildLog) {
    pump_into(reader, log, Some(build), |_| {}).await;
}

async fn pump_into(
    mut reader: impl AsyncBufRead + Unpin,
    log: &LogFile,
    build: Option<&BuildLog>,
    mut on_line: impl FnMut(&str),
) {
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Ok(chunk) = reader.fill_buf().await {
        if chunk.is_empty() {
            break;
        }
        let (take, complete) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let data = if complete { &chunk[..take - 1] } else { &chunk[..take] };
        let room = MAX_LOG_LINE_BYTES.saturating_sub(line.len());
        if data.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&data[..data.len().min(room)]);
        reader.consume(take);
        if complete {
            emit(&mut line, &mut truncated, log, build, &mut on_line).await;
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut truncated, log, build, &mut on_line).await;
    }
}

async fn emit(
    line: &mut Vec<u8>,
    truncated: &mut bool,
    log: &LogFile,
    build: Option<&BuildLog>,
    on_line: &mut impl FnMut(&str),
) {
    let mut text = String::from_utf8_lossy(line).trim_end_matches('\r').to_string();
    if *truncated {
        text.push_str(" [truncated]");
    }
    on_line(&text);
    log.write_line(&text).await;
    if let Some(build) = build {
        build.write_line(&text).await;
    }
    line.clear();
    *truncated = false;
}

/// One line of a service log as stored (`2026-11-23T16:05:40Z message`) as a [`LogLine`]; a
/// line without the stamp (written before lines were stamped) gets `fallback`.
fn parse_line(stored: &str, fallback: i64) -> LogLine {
    let stamped = stored
        .get(..STAMP_BYTES)
        .filter(|stamp| stamp.ends_with('Z') && stored.as_bytes().get(STAMP_BYTES) == Some(&b' '))
        .and_then(micro_core::time::parse_rfc3339);
    match stamped {
        Some(timestamp) => LogLine { timestamp, message: stored[STAMP_BYTES + 1..].to_string() },
        None => LogLine { timestamp: fallback, message: stored.to_string() },
    }
}

/// The last `count` lines of `path` stamped `not_before` (unix seconds) or later (every line
/// when `None`), and the file length they were read up to. Lines without a stamp count as
/// written when the file was last modified.
pub async fn tail(
    path: &Path,
    count: usize,
    not_before: Option<i64>,
) -> std::io::Result<(Vec<LogLine>, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    let len = meta.len();
    let stamp = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or_else(micro_core::time::unix_seconds, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let window = u64::try_from(count.saturating_mul(MAX_LOG_LINE_BYTES + LINE_OVERHEAD))
        .unwrap_or(u64::MAX)
        .min(MAX_LOG_READ_BYTES);
    let start = len.saturating_sub(window);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes).await?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably a partial line
    }
    let mut records: Vec<LogLine> = lines
        .iter()
        .map(|line| parse_line(line, stamp))
        .filter(|line| not_before.is_none_or(|not_before| line.timestamp >= not_before))
        .collect();
    let skip = records.len().saturating_sub(count);
    records.drain(..skip);
    Ok((records, len))
}

/// Sends the lines appended to `path` after `offset` to `tx` until the receiver goes away or
/// `closed` turns true.
pub async fn follow(
    path: PathBuf,
    mut offset: u64,
    tx: mpsc::Sender<LogLine>,
    mut closed: watch::Receiver<bool>,
) {
    let mut partial: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = closed.wait_for(|closed| *closed) => return,
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
        let Ok(meta) = tokio::fs::metadata(&path).await else { continue };
        if meta.len() < offset {
            // Truncated or replaced: start over.
            offset = 0;
            partial.clear();
        }
        if meta.len() == offset {
            continue;
        }
        let Ok(mut file) = tokio::fs::File::open(&path).await else { continue };
        if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            continue;
        }
        let mut bytes = Vec::new();
        let Ok(read) = (&mut file).take(meta.len() - offset).read_to_end(&mut bytes).await else { continue };
        offset += read as u64;
        partial.extend_from_slice(&bytes);
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            let stored = String::from_utf8_lossy(&line[..line.len() - 1]);
            if tx.send(parse_line(&stored, micro_core::time::unix_seconds())).await.is_err() {
                return;
            }
        }
        if partial.len() > MAX_LOG_LINE_BYTES + LINE_OVERHEAD {
            partial.clear();
        }
    }
}

/// Where the output of the last build of service `name` at `version` in `namespace` is kept:
/// `MICRO_HOME/logs/<namespace>/build/<name>.<version>.log` (the pair as one file name,
/// [`crate::source::service_key`]), beside the service logs, in a folder of its own so no
/// service's log name can meet it.
pub(crate) fn build_path(home: &Path, namespace: &str, name: &str, version: &str) -> PathBuf {
    home.join("logs")
        .join(namespace)
        .join("build")
        .join(format!("{}.log", crate::source::service_key(name, version)))
}

/// The log of one build: cargo's output as it comes, plain lines (no time stamps), each capped
/// like a service log's line. [`BuildLog::begin`] truncates the file; from then until the
/// `BuildLog` is dropped the file is locked (`flock`), which is how readers know the build is
/// still running ([`build_running`]), also across a server that died mid-build (the lock goes
/// with the process). It grows to at most [`MAX_LOG_FILE_BYTES`]; the rest of a longer build's
/// output is only in the service log.
#[derive(Debug)]
pub struct BuildLog {
    path: PathBuf,
    /// The open file and its length; none when it could not be opened.
    file: tokio::sync::Mutex<Option<(tokio::fs::File, u64)>>,
    /// Held while the build runs; released when dropped.
    _lock: Option<Flock<std::fs::File>>,
}

impl BuildLog {
    /// Starts the log of a build at `path`: locks it and empties it. Failures are logged through
    /// tracing, and the build runs without its own log.
    pub async fn begin(path: PathBuf) -> Self {
        let opened = tokio::task::spawn_blocking({
            let path = path.clone();
            move || open_locked(&path)
        })
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err)));
        match opened {
            Ok((lock, file)) => Self {
                path,
                file: tokio::sync::Mutex::new(Some((tokio::fs::File::from_std(file), 0))),
                _lock: Some(lock),
            },
            Err(err) => {
                tracing::warn!(path = %path.display(), cause = %err, "cannot open the build log");
                Self { path, file: tokio::sync::Mutex::new(None), _lock: None }
            }
        }
    }

    /// Appends `line` and a newline (written through before it returns, so a reader that sees
    /// the build end has every line); past [`MAX_LOG_FILE_BYTES`] a last line says the log is
    /// cut, and nothing more is written.
    pub async fn write_line(&self, line: &str) {
        let mut guard = self.file.lock().await;
        let Some((file, len)) = guard.as_mut() else { return };
        let cut = *len + line.len() as u64 + 1 > MAX_LOG_FILE_BYTES;
        let bytes = if cut {
            format!(
                "micro: the build log stops here ({} MiB); `micro logs` has the rest\n",
                MAX_LOG_FILE_BYTES / 1024 / 1024
            )
        } else {
            format!("{line}\n")
        };
        let written = async {
            file.write_all(bytes.as_bytes()).await?;
            file.flush().await
        }
        .await;
        match written {
            Ok(()) if !cut => *len += bytes.len() as u64,
            // Cut: nothing more is written (the lock stays until the build ends).
            Ok(()) => *guard = None,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), cause = %err, "cannot write the build log");
                *guard = None;
            }
        }
    }
}

/// Opens (creating it and its folder, owner-only) and locks the build log at `path`, then
/// empties it: locked first, so no reader ever sees an emptied log that is not locked. Readers
/// take the lock only for an instant ([`build_running`]), so a busy lock is tried again.
fn open_locked(path: &Path) -> std::io::Result<(Flock<std::fs::File>, std::fs::File)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(micro_core::home::PRIVATE_DIR_MODE).create(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(micro_core::home::PRIVATE_FILE_MODE)
        .open(path)?;
    let mut tries = 0;
    let lock = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => break lock,
            Err((back, Errno::EWOULDBLOCK)) if tries < 100 => {
                file = back;
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, errno)) => return Err(std::io::Error::from(errno)),
        }
    };
    lock.set_len(0)?;
    // Writes go through a second handle of the same open file (and its lock).
    let writer = lock.try_clone()?;
    Ok((lock, writer))
}

/// Whether a build is writing the build log at `path` now (it holds the log's lock).
pub(crate) fn build_running(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else { return false };
    matches!(Flock::lock(file, FlockArg::LockSharedNonblock), Err((_, Errno::EWOULDBLOCK)))
}

/// Sends the build log at `path` to `tx` in chunks of at most [`BUILD_CHUNK_BYTES`]: what it
/// holds, then, while the build that writes it runs, what it appends, until that build ends,
/// the receiver goes away or `closed` turns true. No log: a not-found error, from `missing`.
pub(crate) async fn read_build(
    path: &Path,
    tx: &mpsc::Sender<Result<Vec<u8>, RuntimeError>>,
    mut closed: watch::Receiver<bool>,
    missing: impl FnOnce() -> RuntimeError,
) {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let _ = tx.send(Err(missing())).await;
            return;
        }
        Err(err) => {
            let _ = tx.send(Err(crate::error::internal(err))).await;
            return;
        }
    };
    let mut offset = 0u64;
    loop {
        // Asked before reading: once the build is seen to have ended, everything it wrote is
        // in the file and the read below gets it all.
        let running = build_running(path);
        let len = match file.metadata().await {
            Ok(meta) => meta.len(),
            Err(err) => {
                let _ = tx.send(Err(crate::error::internal(err))).await;
                return;
            }
        };
        if len < offset {
            // Emptied: another build began. Its output, from the start.
            offset = 0;
        }
        while offset < len {
            let want = usize::try_from(len - offset).unwrap_or(BUILD_CHUNK_BYTES).min(BUILD_CHUNK_BYTES);
            let mut chunk = vec![0; want];
            let read = async {
                file.seek(std::io::SeekFrom::Start(offset)).await?;
                file.read(&mut chunk).await
            }
            .await;
            match read {
                Ok(0) => break,
                Ok(read) => {
                    chunk.truncate(read);
                    offset += read as u64;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    let _ = tx.send(Err(crate::error::internal(err))).await;
                    return;
                }
            }
        }
        if !running {
            return;
        }
        tokio::select! {
            () = tx.closed() => return,
            _ = closed.wait_for(|closed| *closed) => return,
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pump_caps_lines_and_tail_reads_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/x.log");
        let log = LogFile::new(path.clone());
        let long = "y".repeat(MAX_LOG_LINE_BYTES + 10);
        let input = format!("one\ntwo\r\n{long}\nlast");
        let mut seen = Vec::new();
        pump(tokio::io::BufReader::with_capacity(7, input.as_bytes()), &log, |l| seen.push(l.len())).await;
        assert_eq!(seen.len(), 4);
        let (lines, len) = tail(&path, 2, None).await.unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].message.ends_with(" [truncated]"));
        assert_eq!(lines[0].message.len(), MAX_LOG_LINE_BYTES + " [truncated]".len());
        assert_eq!(lines[1].message, "last");
        let (all, _) = tail(&path, 100, None).await.unwrap();
        assert_eq!(all[..2].iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["one", "two"]);

        let (tx, mut rx) = mpsc::channel(8);
        let (close, closed) = watch::channel(false);
        let follower = tokio::spawn(follow(path.clone(), len, tx, closed.clone()));
        log.write_line("new").await;
        let line = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(line.message, "new");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), follower).await.unwrap().unwrap();

        // Closing ends a follower whose client is still there.
        let (tx, rx) = mpsc::channel(8);
        let follower = tokio::spawn(follow(path.clone(), len, tx, closed));
        close.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), follower).await.unwrap().unwrap();
        drop(rx);
    }

    #[tokio::test]
    async fn logs_rotate_by_size_and_keep_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let log = LogFile::with_limit(path.clone(), 100);
        for i in 0..30 {
            log.write_line(&format!("line {i:02} ........")).await; // 20 bytes with the newline
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(size(&path) <= 100, "{}", size(&path));
        assert!(size(&rotated(&path)) <= 100 && size(&rotated(&path)) > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "one old generation only");
        let (lines, _) = tail(&path, 100, None).await.unwrap();
        assert_eq!(lines.last().unwrap().message, "line 29 ........", "the newest lines are in the file");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// A service log with lines stamped at `times` (unix seconds), `line <i>` each.
    fn stamped_log(path: &Path, times: &[i64]) {
        let text: String = times
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{} line {i}\n", micro_core::time::rfc3339(u64::try_from(*t).unwrap())))
            .collect();
        std::fs::write(path, text).unwrap();
    }

    fn messages(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|line| line.message.as_str()).collect()
    }

    #[tokio::test]
    async fn since_skips_older_lines_with_and_without_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let now = micro_core::time::unix_seconds();
        stamped_log(&path, &[now - 7200, now - 3600, now - 90, now - 30, now - 5, now]);

        // Without a window: the last `count` lines, their own times read back.
        let (all, len) = tail(&path, 100, None).await.unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].timestamp, now - 7200);
        assert_eq!(all[5].timestamp, now);
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());

        // The last minute: lines 3, 4 and 5; with a count, the last `count` of those.
        let (recent, _) = tail(&path, 100, Some(now - 60)).await.unwrap();
        assert_eq!(messages(&recent), ["line 3", "line 4", "line 5"]);
        let (last_two, _) = tail(&path, 2, Some(now - 60)).await.unwrap();
        assert_eq!(messages(&last_two), ["line 4", "line 5"]);
        // A count larger than the window holds gives the window.
        let (hour, _) = tail(&path, 15, Some(now - 3600)).await.unwrap();
        assert_eq!(messages(&hour), ["line 1", "line 2", "line 3", "line 4", "line 5"]);
        // A window nothing is in.
        let (none, _) = tail(&path, 15, Some(now + 60)).await.unwrap();
        assert!(none.is_empty());

        // Lines from before stamps (and a stamp-like message) keep their text, dated by the
        // file's modification time.
        std::fs::write(&path, "plain old line\n2026-11-23T16:05:40Z\n").unwrap();
        let (old, _) = tail(&path, 10, Some(now - 60)).await.unwrap();
        assert_eq!(messages(&old), ["plain old line", "2026-11-23T16:05:40Z"]);
        assert!(old.iter().all(|line| line.timestamp >= now - 60));
    }

    #[tokio::test]
    async fn written_lines_are_stamped_and_read_back_without_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let log = LogFile::new(path.clone());
        let before = micro_core::time::unix_seconds();
        log.write_line("hello").await;
        log.write_line("").await;
        let stored = std::fs::read_to_string(&path).unwrap();
        let first = stored.lines().next().unwrap();
        assert!(first.ends_with("Z hello") && first.len() == STAMP_BYTES + 1 + 5, "{stored:?}");
        let (lines, len) = tail(&path, 10, Some(before)).await.unwrap();
        assert_eq!(messages(&lines), ["hello", ""]);
        assert!(lines[0].timestamp >= before);

        // Followed lines lose their stamp too.
        let (tx, mut rx) = mpsc::channel(8);
        let (_close, closed) = watch::channel(false);
        let follower = tokio::spawn(follow(path.clone(), len, tx, closed));
        log.write_line("later").await;
        let line = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(line.message, "later");
        assert!(line.timestamp >= before);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), follower).await.unwrap().unwrap();
    }

    /// Everything [`read_build`] sends until it ends, as text (an error as `ERR <message>`).
    async fn collect_build(mut rx: mpsc::Receiver<Result<Vec<u8>, RuntimeError>>) -> String {
        let mut text = String::new();
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(bytes) => text.push_str(&String::from_utf8(bytes).unwrap()),
                Err(err) => text.push_str(&format!("ERR {err}")),
            }
        }
        text
    }

    #[tokio::test]
    async fn a_build_log_is_followed_while_the_build_runs_and_read_once_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = build_path(dir.path(), "micro", "svc", "feature/x");
        assert!(path.ends_with("logs/micro/build/svc.feature_2fx.log"), "{}", path.display());
        let missing = || RuntimeError::NotFound("no build".into());
        let (_close, closed) = watch::channel(false);

        // Never built: not found.
        let (tx, rx) = mpsc::channel(8);
        read_build(&path, &tx, closed.clone(), missing).await;
        drop(tx);
        assert_eq!(collect_build(rx).await, "ERR no build");
        assert!(!build_running(&path));

        // A build running: what it wrote, then what it writes, until it ends.
        let build = BuildLog::begin(path.clone()).await;
        assert!(build_running(&path), "a running build holds the lock");
        build.write_line("   Compiling svc v0.1.0").await;
        let (tx, rx) = mpsc::channel(8);
        let reader = tokio::spawn({
            let (path, closed) = (path.clone(), closed.clone());
            async move { read_build(&path, &tx, closed, missing).await }
        });
        let collected = tokio::spawn(collect_build(rx));
        tokio::time::sleep(FOLLOW_INTERVAL * 2).await;
        assert!(!reader.is_finished(), "the reader follows a running build");
        build.write_line("error[E0308]: mismatched types").await;
        drop(build);
        assert!(!build_running(&path));
        tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
        assert_eq!(collected.await.unwrap(), "   Compiling svc v0.1.0\nerror[E0308]: mismatched types\n");

        // Ended: read once, whole. The next build starts the log afresh.
        let (tx, rx) = mpsc::channel(8);
        read_build(&path, &tx, closed.clone(), missing).await;
        drop(tx);
        assert!(collect_build(rx).await.ends_with("mismatched types\n"));
        let next = BuildLog::begin(path.clone()).await;
        next.write_line("fresh").await;
        drop(next);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fresh\n");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[tokio::test]
    async fn build_output_goes_to_both_logs_capped_like_service_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(dir.path().join("svc.log"));
        let build_log = dir.path().join("build/svc.latest.log");
        let build = BuildLog::begin(build_log.clone()).await;
        let long = "z".repeat(MAX_LOG_LINE_BYTES + 5);
        let input = format!("   Compiling svc v0.1.0\n{long}\n");
        pump_build(tokio::io::BufReader::new(input.as_bytes()), &log, &build).await;
        drop(build);
        let built = std::fs::read_to_string(&build_log).unwrap();
        let lines: Vec<&str> = built.lines().collect();
        assert_eq!(lines[0], "   Compiling svc v0.1.0", "plain lines, no stamps");
        assert_eq!(lines[1].len(), MAX_LOG_LINE_BYTES + " [truncated]".len());
        let (logged, _) = tail(&dir.path().join("svc.log"), 10, None).await.unwrap();
        assert_eq!(logged[0].message, "   Compiling svc v0.1.0", "the service log has it too");
    }
}
