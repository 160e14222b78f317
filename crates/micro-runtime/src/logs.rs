//! Service log files: appended line by line (length-capped) from a child's stdout/stderr and
//! from builds, rotated by size; read back as the last N lines, optionally followed.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

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
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// One line of a service's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Unix seconds: when the line was read while following, else the file's modification time.
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

    /// Appends `line` and a newline; logging failures are reported once through tracing only.
    pub async fn write_line(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
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
pub async fn pump(mut reader: impl AsyncBufRead + Unpin, log: &LogFile, mut on_line: impl FnMut(&str)) {
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
            emit(&mut line, &mut truncated, log, &mut on_line).await;
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut truncated, log, &mut on_line).await;
    }
}

async fn emit(line: &mut Vec<u8>, truncated: &mut bool, log: &LogFile, on_line: &mut impl FnMut(&str)) {
    let mut text = String::from_utf8_lossy(line).trim_end_matches('\r').to_string();
    if *truncated {
        text.push_str(" [truncated]");
    }
    on_line(&text);
    log.write_line(&text).await;
    line.clear();
    *truncated = false;
}

/// The last `count` lines of `path`, and the file length they were read up to.
pub async fn tail(path: &Path, count: usize) -> std::io::Result<(Vec<LogLine>, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    let len = meta.len();
    let stamp = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or_else(micro_core::time::unix_seconds, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let window = u64::try_from(count.saturating_mul(MAX_LOG_LINE_BYTES + 16))
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
    let skip = lines.len().saturating_sub(count);
    let records =
        lines[skip..].iter().map(|line| LogLine { timestamp: stamp, message: (*line).to_string() }).collect();
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
            let message = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
            if tx.send(LogLine { timestamp: micro_core::time::unix_seconds(), message }).await.is_err() {
                return;
            }
        }
        if partial.len() > MAX_LOG_LINE_BYTES {
            partial.clear();
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
        let (lines, len) = tail(&path, 2).await.unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].message.ends_with(" [truncated]"));
        assert_eq!(lines[0].message.len(), MAX_LOG_LINE_BYTES + " [truncated]".len());
        assert_eq!(lines[1].message, "last");
        let (all, _) = tail(&path, 100).await.unwrap();
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
        let (lines, _) = tail(&path, 100).await.unwrap();
        assert_eq!(lines.last().unwrap().message, "line 29 ........", "the newest lines are in the file");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
