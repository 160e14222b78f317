//! `micro run --watch <folder>` and `micro dev [folder]` (docs/runtime.md#watch-mode): run a
//! service from a local folder, then watch the folder and, on every change that `micro run`
//! would upload, upload it again and update the service (`Runtime.Update`, as `micro update`
//! does). The server builds the new version while the old one serves and swaps them once the
//! new one is ready, so callers never see a failed call; a build that fails leaves the old
//! version serving, and its compiler errors are printed here.
//!
//! What counts as a change is decided by the upload's own walk ([`source::packed_paths`]):
//! `target/`, `.git/` and what `.gitignore`, `.ignore` and `.microignore` exclude are never
//! watched. Events are taken once the folder has been quiet for [`QUIET`]; changes made during
//! a rebuild make one more rebuild after it. Everything is printed on stderr, like the progress
//! of `micro run`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use clap::Args;
use micro_proto::runtime::Service;
use micro_proto::runtime::build_client::BuildClient;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Global;
use crate::client::Client;
use crate::error::{CliError, Result};
use crate::runtime::{self, RunArgs};
use crate::source::{self, Location, Source};

/// How long the folder must be quiet before its changes are taken (an editor's save, a `git
/// checkout`, a formatter run over many files each arrive as one burst).
pub const QUIET: Duration = Duration::from_millis(100);
/// How often the server is asked how a rebuild is going.
const POLL: Duration = Duration::from_millis(100);
/// Lines of a failed build's output printed at most (the first errors matter most).
const MAX_ERROR_LINES: usize = 60;
/// Lines of the service's log read to find a failed build's output.
const LOG_LINES: u32 = 5000;

#[derive(Args, Debug)]
pub struct DevArgs {
    /// The service's folder
    #[arg(value_name = "FOLDER", default_value = ".")]
    folder: String,
    /// Name of the service [default: the folder's name]
    #[arg(long)]
    name: Option<String>,
    /// Arguments for the service (split on spaces)
    #[arg(long, allow_hyphen_values = true)]
    args: Option<String>,
    /// Environment variables for the service: K=V[,K=V]; may be repeated
    #[arg(long = "env_vars", alias = "env-vars", value_name = "K=V[,K=V]")]
    env_vars: Vec<String>,
}

impl From<DevArgs> for RunArgs {
    fn from(dev: DevArgs) -> Self {
        RunArgs {
            source: dev.folder,
            name: dev.name,
            args: dev.args,
            env_vars: dev.env_vars,
            watch: true,
            ..RunArgs::default()
        }
    }
}

/// `micro run --watch <folder>` / `micro dev [folder]`: until SIGINT or SIGTERM, which stop the
/// watching and leave the service running.
pub async fn run(global: &Global, args: RunArgs) -> Result<()> {
    let planned = runtime::plan(global, &args).await?;
    let Location::Local { root, .. } = &planned.source.location else {
        return Err(CliError::new(format!(
            "--watch watches a local folder, and {} is a git repository: run it without --watch",
            planned.arg
        )));
    };
    let (name, version) = (planned.source.name.clone(), planned.source.version.clone());
    // Watching starts before the first upload, so no change made meanwhile is missed.
    let mut folder = Folder::watch(root)?;
    let mut shutdown = pin!(micro_core::shutdown::signal());

    let began = Instant::now();
    let first = tokio::select! {
        () = &mut shutdown => return stopped(&name),
        result = deploy(global, &args, true) => result,
    };
    match first {
        Ok((planned, created)) => {
            let outcome = tokio::select! {
                () = &mut shutdown => return stopped(&name),
                outcome = outcome(&planned.client, &name, &version, began) => outcome,
            };
            let (done, step) = if created { ("Started", "start") } else { ("Updated", "swap") };
            report(&planned.client, &name, &version, outcome, done, step).await;
        }
        Err(err) => eprintln!("Cannot run {name}: {err}"),
    }
    eprintln!("Watching {} for changes (Ctrl-C stops watching)", root.display());

    loop {
        let changed = tokio::select! {
            () = &mut shutdown => break,
            changed = folder.changes() => changed,
        };
        let changed = match changed {
            Ok(changed) => changed,
            Err(err) => {
                eprintln!("Warning: {err}");
                continue;
            }
        };
        eprintln!("Changed {} — rebuilding", describe(&changed));
        let began = Instant::now();
        let reload = async {
            let (planned, _) = deploy(global, &args, false).await?;
            outcome(&planned.client, &name, &version, began).await.map(|outcome| (planned, outcome))
        };
        let reloaded = tokio::select! {
            () = &mut shutdown => break,
            reloaded = reload => reloaded,
        };
        match reloaded {
            Ok((planned, outcome)) => {
                report(&planned.client, &name, &version, Ok(outcome), "Reloaded", "swap").await
            }
            Err(err) => eprintln!("Reload of {name} failed: {err}"),
        }
    }
    stopped(&name)
}

/// Says that the watching stopped and the service runs on.
fn stopped(name: &str) -> Result<()> {
    eprintln!("Stopped watching; {name} keeps running (`micro kill {name}` stops it)");
    Ok(())
}

/// Uploads the folder and creates the service, or updates it when it exists; returns once the
/// server has accepted it, and whether it created it. Connects afresh each time, so a long
/// session's login is refreshed.
async fn deploy(global: &Global, args: &RunArgs, first: bool) -> Result<(runtime::Planned, bool)> {
    let planned = runtime::plan(global, args).await?;
    let Source { name, version, display, .. } = &planned.source;
    let created = match runtime::find(&planned.client, name, version).await? {
        Some(_) => {
            if first {
                eprintln!("Updating {name} from {display}");
            }
            runtime::upload_and_update(&planned.client, planned.source.clone()).await?;
            false
        }
        None => {
            eprintln!("Running {name} from {display}");
            runtime::create(&planned).await?;
            true
        }
    };
    Ok((planned, created))
}

/// How a create or update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The new version runs: how long the build took (from the change, upload included), and
    /// the start or swap after it.
    Running { build: Duration, swap: Duration },
    /// It failed; `serving` when the previous version still runs.
    Failed { error: String, serving: bool },
    /// The process exited by itself.
    Exited,
    /// The service is gone (killed meanwhile).
    Gone,
}

/// Polls the service until the create or update just accepted has an outcome.
///
/// A running service's update is metadata `update` (`building`, `starting`, then gone once the
/// new process took over, or `failed` with the reason in `update_error`) while `status` stays
/// the serving process's; a service that was not running goes through `status` (`pending`,
/// `building`, `starting`, then `running` or `error`).
async fn outcome(client: &Client, name: &str, version: &str, began: Instant) -> Result<Outcome> {
    let mut built: Option<Instant> = None;
    loop {
        let Some(service) = runtime::find(client, name, version).await? else { return Ok(Outcome::Gone) };
        let (status, update) = (runtime::service_status(&service), runtime::metadata(&service, "update"));
        let building =
            update == "building" || (update.is_empty() && matches!(status, "pending" | "building"));
        if !building && built.is_none() {
            built = Some(Instant::now());
        }
        let error = || {
            let error = runtime::metadata(&service, "update_error");
            let error = if error.is_empty() { runtime::metadata(&service, "error") } else { error };
            if error.is_empty() { "unknown error".to_string() } else { error.to_string() }
        };
        match (update, status) {
            ("building" | "starting", _) => {}
            (_, "pending" | "building" | "starting" | "stopping") => {}
            ("failed", status) => {
                return Ok(Outcome::Failed { error: error(), serving: status == "running" });
            }
            (_, "error") => return Ok(Outcome::Failed { error: error(), serving: false }),
            (_, "running") => {
                let built = built.unwrap_or_else(Instant::now);
                return Ok(Outcome::Running { build: built - began, swap: built.elapsed() });
            }
            (_, "stopped") => return Ok(Outcome::Exited),
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints an outcome: `<done> <name> in 9.1s (build 8.4s, <step> 0.7s)`, or the failure with
/// the build's errors.
async fn report(
    client: &Client,
    name: &str,
    version: &str,
    outcome: Result<Outcome>,
    done: &str,
    step: &str,
) {
    match outcome {
        Ok(Outcome::Running { build, swap }) => eprintln!(
            "{done} {name} in {:.1}s (build {:.1}s, {step} {:.1}s)",
            (build + swap).as_secs_f64(),
            build.as_secs_f64(),
            swap.as_secs_f64()
        ),
        Ok(Outcome::Failed { error, serving }) => {
            let still = if serving { " — the previous version keeps serving" } else { "" };
            eprintln!("Build of {name} failed{still}:");
            let output = build_output(client, name, version).await;
            for line in &output {
                eprintln!("{line}");
            }
            if !output.iter().any(|line| line.contains(&error)) {
                eprintln!("{error}");
            }
        }
        Ok(Outcome::Exited) => eprintln!("{name} exited; `micro logs {name}` shows why"),
        Ok(Outcome::Gone) => eprintln!("{name} is gone (killed meanwhile); the next change runs it again"),
        Err(err) => eprintln!("Cannot tell how {name} is doing: {err}"),
    }
}

/// The output of the service's last build: `Build.Read` when the server serves it, else the
/// build's lines in the service's log (cargo's rendered diagnostics; the running process's own
/// lines, which interleave with them, left out).
async fn build_output(client: &Client, name: &str, version: &str) -> Vec<String> {
    if let Some(lines) = build_read(client, name, version).await
        && lines.iter().any(|line| line.starts_with("error"))
    {
        return tail_errors(lines, name);
    }
    match runtime::log_tail(client, name, LOG_LINES).await {
        Ok(lines) => tail_errors(last_build(&lines), name),
        Err(_) => Vec::new(),
    }
}

/// `Build.Read` of the service, as text; `None` when the server does not serve it or it is not
/// text.
async fn build_read(client: &Client, name: &str, version: &str) -> Option<Vec<String>> {
    let service = Service {
        name: name.to_string(),
        version: version.to_string(),
        metadata: [("namespace".to_string(), client.namespace.clone())].into(),
        ..Default::default()
    };
    let mut stream =
        BuildClient::new(client.channel.clone()).read(client.request(service)).await.ok()?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.ok()? {
        bytes.extend_from_slice(&chunk.data);
    }
    let text = String::from_utf8(bytes).ok()?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    (!lines.is_empty()).then_some(lines)
}

/// The lines of the last build in a service's log: after its last `micro: building` line,
/// without the runtime's own `micro:` lines and without the lines the running process logged
/// meanwhile (they start with a timestamp, the framework's log format).
fn last_build(log: &[String]) -> Vec<String> {
    let start = log.iter().rposition(|line| line.starts_with("micro: building")).map_or(0, |at| at + 1);
    log[start..]
        .iter()
        .filter(|line| !line.starts_with("micro: ") && !starts_with_timestamp(line))
        .cloned()
        .collect()
}

/// Whether `line` starts like `2026-05-01T10:00:00`, as tracing's lines do.
fn starts_with_timestamp(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() >= 11
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-'
        && bytes[8..10].iter().all(u8::is_ascii_digit)
        && bytes[10] == b'T'
}

/// From the first error on (cargo's `Compiling …` lines before it say nothing), at most
/// [`MAX_ERROR_LINES`].
fn tail_errors(lines: Vec<String>, name: &str) -> Vec<String> {
    let first = lines.iter().position(|line| line.starts_with("error")).unwrap_or(0);
    let mut errors: Vec<String> = lines.into_iter().skip(first).collect();
    if errors.len() > MAX_ERROR_LINES {
        let more = errors.len() - MAX_ERROR_LINES;
        errors.truncate(MAX_ERROR_LINES);
        errors.push(format!("… {more} more lines: `micro logs --build {name}` shows them all"));
    }
    errors
}

/// `src/main.rs`, `src/a.rs, src/b.rs`, or `src/a.rs, src/b.rs, src/c.rs and 4 more`.
fn describe(changed: &[PathBuf]) -> String {
    const SHOWN: usize = 3;
    let names: Vec<String> = changed.iter().take(SHOWN).map(|path| path.display().to_string()).collect();
    match changed.len() {
        n if n > SHOWN => format!("{} and {} more", names.join(", "), n - SHOWN),
        _ => names.join(", "),
    }
}

/// The watched folder: one (non-recursive) watch per folder the upload would pack, so
/// `target/`, `.git/` and ignored folders cost nothing however busy they are.
struct Folder {
    root: PathBuf,
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    /// What the upload packs, relative to `root`, as of the last walk.
    packed: BTreeSet<PathBuf>,
    /// The folders watched.
    watched: HashSet<PathBuf>,
}

impl Folder {
    fn watch(root: &Path) -> Result<Self> {
        let root = root
            .canonicalize()
            .map_err(|err| CliError::new(format!("cannot read folder {}: {err}", root.display())))?;
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|err| CliError::new(format!("cannot watch {}: {err}", root.display())))?;
        let packed = source::packed_paths(&root)?.into_iter().collect();
        let mut folder = Self { root, watcher, events, packed: BTreeSet::new(), watched: HashSet::new() };
        folder.rewatch(packed);
        Ok(folder)
    }

    /// Watches the root and every packed folder (not through symbolic links), and stops
    /// watching folders no longer packed.
    fn rewatch(&mut self, packed: BTreeSet<PathBuf>) {
        let folders: HashSet<PathBuf> = std::iter::once(self.root.clone())
            .chain(
                packed
                    .iter()
                    .map(|path| self.root.join(path))
                    .filter(|path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir())),
            )
            .collect();
        for gone in self.watched.difference(&folders) {
            let _ = self.watcher.unwatch(gone);
        }
        for new in folders.difference(&self.watched) {
            if let Err(err) = self.watcher.watch(new, RecursiveMode::NonRecursive) {
                eprintln!("Warning: cannot watch {}: {err}", new.display());
            }
        }
        self.watched = folders;
        self.packed = packed;
    }

    /// Waits for changes to what the upload packs: events until the folder has been quiet for
    /// [`QUIET`], then the upload's walk again, which decides. The changed paths, relative to
    /// the root, sorted.
    async fn changes(&mut self) -> Result<Vec<PathBuf>> {
        loop {
            let mut touched = BTreeSet::new();
            let first =
                self.events.recv().await.ok_or_else(|| CliError::new("the folder watcher stopped"))?;
            self.collect(first, &mut touched);
            while let Ok(Some(event)) = tokio::time::timeout(QUIET, self.events.recv()).await {
                self.collect(event, &mut touched);
            }
            if touched.is_empty() {
                continue;
            }
            let root = self.root.clone();
            let packed: BTreeSet<PathBuf> = tokio::task::spawn_blocking(move || source::packed_paths(&root))
                .await
                .map_err(|err| CliError::new(format!("walking the folder failed: {err}")))??
                .into_iter()
                .collect();
            let changed: Vec<PathBuf> = touched
                .into_iter()
                .filter(|path| self.packed.contains(path) || packed.contains(path))
                .collect();
            self.rewatch(packed);
            if !changed.is_empty() {
                return Ok(changed);
            }
        }
    }

    /// Adds the paths (relative to the root) an event touched; reads (access events) touch
    /// nothing, or packing would trigger itself.
    fn collect(&self, event: notify::Result<notify::Event>, touched: &mut BTreeSet<PathBuf>) {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                eprintln!("Warning: watching {}: {err}", self.root.display());
                return;
            }
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            if let Ok(relative) = path.strip_prefix(&self.root)
                && !relative.as_os_str().is_empty()
            {
                touched.insert(relative.to_path_buf());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_last_build_is_cargo_output_without_the_services_lines() {
        let log = lines(
            "micro: building hello latest\n   Compiling hello v0.1.0\nerror: old\nmicro: build finished\n\
             2026-05-01T10:00:00.000Z  INFO hello: Listening on 127.0.0.1:1\n\
             micro: building hello latest\n   Compiling hello v0.1.0 (/src)\n\
             2026-05-01T10:00:01.000Z  INFO hello: Received Helloworld.Call request name=Jo\n\
             error: expected one of `,`, `.`, `?`, `}`, or an operator, found `oops`\n \
             --> src/handler.rs:19:9\n\
             micro: cargo build failed (exit status: 101): see `micro logs` for the errors",
        );
        let build = tail_errors(last_build(&log), "hello");
        assert_eq!(
            build,
            [
                "error: expected one of `,`, `.`, `?`, `}`, or an operator, found `oops`",
                " --> src/handler.rs:19:9"
            ]
        );
        assert!(starts_with_timestamp("2026-05-01T10:00:00Z x"));
        assert!(!starts_with_timestamp("error: 2026-05-01T"));
    }

    #[test]
    fn long_build_output_is_cut() {
        let many: Vec<String> = (0..100).map(|n| format!("error: {n}")).collect();
        let cut = tail_errors(many, "hello");
        assert_eq!(cut.len(), MAX_ERROR_LINES + 1);
        assert!(cut.last().unwrap().starts_with("… 40 more lines"), "{cut:?}");
    }

    #[test]
    fn changes_are_named_briefly() {
        let paths = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(describe(&paths(&["src/main.rs"])), "src/main.rs");
        assert_eq!(describe(&paths(&["a", "b", "c"])), "a, b, c");
        assert_eq!(describe(&paths(&["a", "b", "c", "d", "e"])), "a, b, c and 2 more");
    }

    /// A change to a packed file is reported once the folder is quiet; changes in `target/`,
    /// `.git/` and ignored paths are not.
    #[tokio::test]
    async fn only_packed_paths_count_as_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("target/release")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        let mut folder = Folder::watch(root).unwrap();
        assert!(!folder.watched.contains(&folder.root.join("target")), "target/ is not watched");

        std::fs::write(root.join("target/release/x"), "binary").unwrap();
        std::fs::write(root.join(".git/index"), "index").unwrap();
        std::fs::write(root.join("debug.log"), "noise").unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() { println!(); }\n").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), folder.changes()).await.unwrap().unwrap();
        assert_eq!(changed, [PathBuf::from("src/main.rs")]);

        // A new folder is watched from the walk after it appears; a file in it is a change.
        std::fs::create_dir_all(root.join("src/api")).unwrap();
        std::fs::write(root.join("src/api/mod.rs"), "").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), folder.changes()).await.unwrap().unwrap();
        assert!(changed.contains(&PathBuf::from("src/api")), "{changed:?}");
        std::fs::write(root.join("src/api/mod.rs"), "pub fn x() {}\n").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(10), folder.changes()).await.unwrap().unwrap();
        assert_eq!(changed, [PathBuf::from("src/api/mod.rs")]);

        // Only ignored changes: nothing is reported.
        std::fs::write(root.join("other.log"), "noise").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(600), folder.changes()).await.is_err());
    }
}
