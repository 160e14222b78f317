//! The Redis baseline of the store section: a `redis-server` of the machine's, started on an
//! ephemeral loopback port with `appendonly yes` and `appendfsync always` (a `SET` is answered
//! after its append is fsync'd, the promise our store makes), and a minimal RESP client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::load::Work;

/// How long redis-server gets to answer `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The `redis-server` on the PATH, or a clear error naming how to get one.
pub fn binary() -> anyhow::Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
        .context("--with-redis needs redis-server on the PATH (Debian: apt-get install redis-server)")
}

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    pub address: String,
}

impl RedisServer {
    /// Starts `binary` with its append-only file in `dir`.
    pub async fn start(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // redis-server has no "port 0": take a free port and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?;
        let server = Self { child, address: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(mut client) = RedisClient::connect(&server.address).await
                && client.command(&[b"PING"]).await.is_ok()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("redis-server on {} never answered PING", server.address);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One connection, one command in flight.
pub struct RedisClient {
    stream: BufReader<TcpStream>,
    line: String,
}

impl RedisClient {
    pub async fn connect(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: BufReader::new(stream), line: String::new() })
    }

    /// Sends one command and reads its reply; a Redis error reply is an error.
    pub async fn command(&mut self, parts: &[&[u8]]) -> anyhow::Result<()> {
        let mut request = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            request.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            request.extend_from_slice(part);
            request.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&request).await?;
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            bail!("redis closed the connection");
        }
        match self.line.as_bytes().first() {
            Some(b'+' | b':') => Ok(()),
            Some(b'-') => bail!("redis: {}", self.line.trim_end()),
            Some(b'$') => {
                let length: i64 = self.line[1..].trim_end().parse()?;
                if length >= 0 {
                    // The value and its CRLF.
                    let mut value = vec![0; length as usize + 2];
                    self.stream.read_exact(&mut value).await?;
                }
                Ok(())
            }
            _ => bail!("unexpected redis reply {:?}", self.line),
        }
    }
}

/// A `SET` or `GET` of one of `keys` keys, in a closed loop: the same access pattern as the
/// store rows.
pub struct RedisOp {
    pub client: RedisClient,
    pub write: bool,
    pub n: usize,
    pub keys: usize,
    pub value: &'static [u8],
}

impl Work for RedisOp {
    async fn once(&mut self) -> bool {
        self.n = (self.n + 7) % self.keys;
        let key = format!("key-{:04}", self.n);
        if self.write {
            self.client.command(&[b"SET", key.as_bytes(), self.value]).await.is_ok()
        } else {
            self.client.command(&[b"GET", key.as_bytes()]).await.is_ok()
        }
    }
}
