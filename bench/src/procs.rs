//! The processes under test: release builds of `micro` and `helloworld`, started in a temp
//! `MICRO_HOME` on ephemeral loopback ports and killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a process gets to say it is listening.
const READY_DEADLINE: Duration = Duration::from_secs(60);

pub struct Binaries {
    pub micro: PathBuf,
    pub helloworld: PathBuf,
}

/// Builds both binaries in release mode and returns their paths.
pub fn build(root: &Path) -> anyhow::Result<Binaries> {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // `cargo run` hands this process the bench package's own variables; a nested build that
    // inherits them differs from a plain one (ring's build script reruns on
    // CARGO_MANIFEST_DIR), so every run would rebuild half the tree twice.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_", "CARGO_CRATE_", "CARGO_PRIMARY_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            cargo.env_remove(name.as_ref());
        }
    }
    let status = cargo
        .current_dir(root)
        .args(["build", "--release", "-p", "micro-bin", "-p", "helloworld"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building micro and helloworld failed");
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release");
    Ok(Binaries { micro: dir.join("micro"), helloworld: dir.join("helloworld") })
}

/// A child process and the lines it printed to stderr.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        let mut child =
            command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("cannot spawn")?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("  [process] {line}");
                }
                let _ = tx.send(line);
            }
        });
        Ok(Self { child, lines })
    }

    /// Waits for a line containing `needle` and returns it.
    fn wait_for(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("no {needle:?} line within {READY_DEADLINE:?}"),
            }
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    /// SIGTERM first, so a server stops the services its runtime started; SIGKILL if it has not
    /// exited within the grace period.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|f| f.strip_prefix(key)).map(|v| v.trim_matches('"').to_string())
}

pub struct Server {
    proc: Proc,
    pub grpc: String,
    pub http: String,
    /// From spawning the process to `grpc.health.v1` answering `SERVING`.
    pub ready_in: Duration,
}

impl Server {
    pub async fn start(micro: &Path, home: &Path) -> anyhow::Result<Self> {
        Self::start_with(micro, home, &[]).await
    }

    /// Starts a server with `extra` flags (e.g. `--store postgres://…`) and logs the CLI in.
    pub async fn start_with(micro: &Path, home: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(micro, home, extra, &[]).await
    }

    /// [`Self::start_with`] with the variables `env` set for the server process.
    pub async fn start_with_env(
        micro: &Path,
        home: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let server = Self::boot_with_env(micro, home, extra, env).await?;
        let cli = |args: &[&str]| -> anyhow::Result<()> {
            let output = Command::new(micro).env("MICRO_HOME", home).args(args).output()?;
            if !output.status.success() {
                bail!("micro {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            }
            Ok(())
        };
        cli(&["env", "add", "bench", &server.grpc])?;
        cli(&["env", "set", "bench"])?;
        cli(&["login", "--username", "admin", "--password", "micro"])?;
        Ok(server)
    }

    /// Starts a server and returns once its health service answers `SERVING`.
    pub async fn boot(micro: &Path, home: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::boot_with_env(micro, home, extra, &[]).await
    }

    /// [`Self::boot`] with the variables `env` set for the server process.
    async fn boot_with_env(
        micro: &Path,
        home: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let started = Instant::now();
        let proc = Proc::spawn(
            Command::new(micro)
                .env("MICRO_HOME", home)
                .args(["server", "--proxy-address", "127.0.0.1:0", "--api-address", "127.0.0.1:0"])
                // The dashboard too: not on :8082, which another server may hold.
                .args(["--web-address", "127.0.0.1:0"])
                .args(extra)
                .envs(env.iter().copied()),
        )?;
        // The address is ephemeral, so the log line naming it comes first; then the health
        // check, polled with a deadline, says the server is ready.
        let grpc = field(&proc.wait_for("gRPC listening")?, "addr=").context("gRPC address")?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?;
        let deadline = started + READY_DEADLINE;
        loop {
            let check = async {
                let mut client = HealthClient::new(endpoint.connect().await?);
                let reply = client.check(HealthCheckRequest { service: String::new() }).await?;
                anyhow::Ok(reply.into_inner().status == ServingStatus::Serving as i32)
            };
            match check.await {
                Ok(true) => break,
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(1)).await,
                other => bail!("{grpc} never answered SERVING: {other:?}"),
            }
        }
        let ready_in = started.elapsed();
        let http = field(&proc.wait_for("HTTP listening")?, "addr=").context("HTTP address")?;
        Ok(Self { proc, grpc, http, ready_in })
    }

    /// An access token of the default admin account.
    pub async fn token(&self) -> anyhow::Result<String> {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))?.connect().await?;
        crate::events::admin_token(channel).await
    }

    pub fn rss_kib(&self) -> u64 {
        self.proc.rss_kib()
    }
}

pub struct Helloworld {
    proc: Proc,
    pub address: String,
}

impl Helloworld {
    /// Starts the example against `server`, using the CLI login in `home` to register.
    pub async fn start(bin: &Path, home: &Path, server: &Server) -> anyhow::Result<Self> {
        Self::start_with_env(bin, home, server, &[]).await
    }

    /// [`Self::start`] with the variables `env` set for the service process.
    pub async fn start_with_env(
        bin: &Path,
        home: &Path,
        server: &Server,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let proc = Proc::spawn(
            Command::new(bin)
                .env("MICRO_HOME", home)
                .env("MICRO_SERVER_ADDRESS", &server.grpc)
                .env("MICRO_SERVICE_ADDRESS", "127.0.0.1:0")
                .envs(env.iter().copied()),
        )?;
        let line = proc.wait_for("Listening on")?;
        let address = line
            .split_whitespace()
            .skip_while(|word| *word != "on")
            .nth(1)
            .map(|addr| addr.trim_matches('"').to_string())
            .context("the Listening on line names the address")?;
        Ok(Self { proc, address })
    }

    pub fn rss_kib(&self) -> u64 {
        self.proc.rss_kib()
    }
}
