//! `cargo run --release -p micro-bench -- runtime`: how long `micro run` takes from source to the
//! first successful call, cold (no dependency compiled yet) and warm (a second service reusing
//! the shared build dir), each next to a plain `cargo build --release` of the same kind of crate;
//! and, under `micro run --watch`, how long an edit of the handler takes to be served, next to an
//! incremental `cargo build --release` of the same edit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a build plus start may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(1800);
/// The greetings the handler is edited through, one reload each after the first.
const GREETINGS: [&str; 4] = ["Hello", "Hi", "Hey", "Howdy"];
/// The budget: an edit is served within this much of an incremental `cargo build` of it.
const WATCH_OVERHEAD_TARGET_S: f64 = 1.0;

pub struct Figures {
    pub cold_run: Duration,
    pub warm_run: Duration,
    pub cold_cargo: Duration,
    pub warm_cargo: Duration,
    /// Edit to the new greeting served, one per reload under `micro run --watch`.
    pub reloads: Vec<Duration>,
    /// `cargo build --release` of the same edits, in a target dir that built the crate before.
    pub rebuilds: Vec<Duration>,
}

/// The median of `durations` (the middle one; the upper of the two middle ones).
fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

impl Figures {
    pub fn reload(&self) -> Duration {
        median(&self.reloads)
    }

    pub fn rebuild(&self) -> Duration {
        median(&self.rebuilds)
    }
}

/// Replaces greeting `from` with `to` in the handler `micro new` wrote in `project`.
fn edit_greeting(project: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let handler = project.join("src/handler.rs");
    let text = std::fs::read_to_string(&handler)?;
    let (old, new) = (format!("\"{from} {{name}}\""), format!("\"{to} {{name}}\""));
    if !text.contains(&old) {
        bail!("{} has no {old}", handler.display());
    }
    std::fs::write(&handler, text.replace(&old, &new))?;
    Ok(())
}

/// `micro` commands against the bench's server, run in `work`.
struct Cli<'a> {
    micro: &'a Path,
    home: &'a Path,
    work: &'a Path,
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.micro);
        command.env("MICRO_HOME", self.home).current_dir(self.work).args(args);
        command
    }

    fn output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(self.command(args).output()?)
    }

    /// Runs a command that must succeed.
    fn ok(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = self.output(args)?;
        if !output.status.success() {
            bail!("micro {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Whether `micro <name> --name=bench` answers with `greeting` (any greeting when `None`).
    fn answers(&self, name: &str, greeting: Option<&str>) -> anyhow::Result<bool> {
        let output = self.output(&[name, "--name=bench"])?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(output.status.success()
            && greeting.is_none_or(|greeting| text.contains(&format!("{greeting} bench"))))
    }
}

/// Asks `until` every `interval` until it says yes; gives up after [`DEADLINE`] with `what`
/// and `context()` in the error.
fn poll(
    what: &str,
    interval: Duration,
    until: &dyn Fn() -> anyhow::Result<bool>,
    context: &dyn Fn() -> String,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while !until()? {
        if started.elapsed() > DEADLINE {
            bail!("{what} never happened{}", context());
        }
        std::thread::sleep(interval);
    }
    Ok(())
}

/// `cargo build --release --quiet` of the crate in `dir` into `target`, timed.
fn cargo_build(dir: &Path, target: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .context("cargo")?;
    if !status.success() {
        bail!("cargo build --release of {} failed", dir.display());
    }
    Ok(started.elapsed())
}

pub async fn measure(micro: &Path, home: &Path) -> anyhow::Result<Figures> {
    let work = home.join("work");
    std::fs::create_dir_all(&work)?;
    let cli = Cli { micro, home, work: &work };
    let run_to_first_call = |name: &str| -> anyhow::Result<Duration> {
        cli.ok(&["new", name])?;
        let started = Instant::now();
        cli.ok(&["run", &format!("./{name}")])?;
        poll(
            &format!("an answer of {name}"),
            Duration::from_millis(100),
            &|| cli.answers(name, None),
            &String::new,
        )?;
        Ok(started.elapsed())
    };
    let cold_run = run_to_first_call("coldservice")?;
    eprintln!("micro run, cold, to first call: {cold_run:?}");
    let warm_run = run_to_first_call("warmservice")?;
    eprintln!("micro run, warm, to first call: {warm_run:?}");

    // The same crates built by hand, in a target dir of their own.
    let target = home.join("plain-target");
    let plain_build = |name: &str| -> anyhow::Result<Duration> {
        cli.ok(&["new", name])?;
        cargo_build(&work.join(name), &target)
    };
    let cold_cargo = plain_build("coldplain")?;
    eprintln!("cargo build --release, cold: {cold_cargo:?}");
    let warm_cargo = plain_build("warmplain")?;
    eprintln!("cargo build --release, warm: {warm_cargo:?}");

    // The same edits built by hand: an incremental build of the crate built just before.
    let mut rebuilds = Vec::new();
    for pair in GREETINGS.windows(2) {
        edit_greeting(&work.join("warmplain"), pair[0], pair[1])?;
        let rebuild = cargo_build(&work.join("warmplain"), &target)?;
        eprintln!("cargo build --release of an edit: {rebuild:?}");
        rebuilds.push(rebuild);
    }

    let reloads = watch_reloads(&cli, "watchservice")?;
    Ok(Figures { cold_run, warm_run, cold_cargo, warm_cargo, reloads, rebuilds })
}

/// `micro run --watch` of a new service: once it answers, each edit of its greeting is timed
/// from the file written to the first call that answers with the new greeting.
fn watch_reloads(cli: &Cli<'_>, name: &str) -> anyhow::Result<Vec<Duration>> {
    cli.ok(&["new", name])?;
    let output_path = cli.home.join(format!("{name}.watch.log"));
    let output_file = std::fs::File::create(&output_path)?;
    let mut watcher = cli
        .command(&["run", "--watch", &format!("./{name}")])
        .stdout(output_file.try_clone()?)
        .stderr(output_file)
        .spawn()
        .context("micro run --watch")?;
    let watched = (|| -> anyhow::Result<Vec<Duration>> {
        let output = || std::fs::read_to_string(&output_path).unwrap_or_default();
        let said = || format!("; the watcher said:\n{}", output());
        let every = Duration::from_millis(50);
        poll("the first answer", every, &|| cli.answers(name, Some(GREETINGS[0])), &said)?;
        poll("the watch", every, &|| Ok(output().contains("Watching ")), &said)?;
        let mut reloads = Vec::new();
        for (reload, pair) in GREETINGS.windows(2).enumerate() {
            edit_greeting(&cli.work.join(name), pair[0], pair[1])?;
            let started = Instant::now();
            poll("the new greeting", every, &|| cli.answers(name, Some(pair[1])), &said)?;
            reloads.push(started.elapsed());
            eprintln!("micro run --watch, edit to new response: {:?}", started.elapsed());
            // The swap is done (the old process stopped) before the next edit.
            poll("the reload", every, &|| Ok(output().matches("Reloaded ").count() > reload), &said)?;
        }
        Ok(reloads)
    })();
    let _ = watcher.kill();
    let _ = watcher.wait();
    let _ = cli.output(&["kill", name]);
    watched
}

/// The cold and warm `micro run` times against plain cargo builds.
pub fn figures(figures: &Figures) -> Vec<crate::report::Figure> {
    use crate::report::{Figure, Target};
    vec![
        Figure::new("micro run → first call, cold", "s", figures.cold_run.as_secs_f64())
            .against("cargo build --release, cold", figures.cold_cargo.as_secs_f64()),
        Figure::new("micro run → first call, warm", "s", figures.warm_run.as_secs_f64())
            .against("cargo build --release, warm", figures.warm_cargo.as_secs_f64()),
        Figure::new(
            "micro run --watch: edit → new response (median of 3)",
            "s",
            figures.reload().as_secs_f64(),
        )
        .against("cargo build --release of the edit", figures.rebuild().as_secs_f64()),
        Figure::new(
            "micro run --watch: edit → new response, over cargo build",
            "s",
            figures.reload().as_secs_f64() - figures.rebuild().as_secs_f64(),
        )
        .target(Target::AtMost(WATCH_OVERHEAD_TARGET_S)),
    ]
}

pub fn render(figures: &Figures) -> String {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    format!(
        "## `micro run`: source to first successful call\n\n\
         A fresh `micro new` service, run with `micro run ./<name>` against a fresh server (its build dir \
         `MICRO_HOME/build` empty), timed until `micro <name> --name=bench` answers; then a second service \
         reusing the compiled dependencies. Beside each, a plain `cargo build --release` of the same kind of \
         crate in an empty (cold) and then reused (warm) target dir.\n\n\
         | | `micro run` → first call | `cargo build --release` | overhead |\n\
         |---|---:|---:|---:|\n\
         | cold (no dependency built) | {} | {} | {} |\n\
         | warm (second service) | {} | {} | {} |\n\n\
         Under `micro run --watch` (a third new service): the handler's greeting edited {edits} times, each \
         timed from the file written to the first `micro <name> --name=bench` answering with the new \
         greeting (a call every 50 ms), against `cargo build --release` of the same edits in the plain \
         crate's reused target dir. Target: within {target} s of the build.\n\n\
         | | each edit | median |\n\
         |---|---:|---:|\n\
         | `micro run --watch`: edit → new response | {reloads} | {reload} |\n\
         | `cargo build --release` of the edit | {rebuilds} | {rebuild} |\n\
         | overhead | | {overhead:+.2} s |\n",
        secs(figures.cold_run),
        secs(figures.cold_cargo),
        secs(figures.cold_run.saturating_sub(figures.cold_cargo)),
        secs(figures.warm_run),
        secs(figures.warm_cargo),
        secs(figures.warm_run.saturating_sub(figures.warm_cargo)),
        edits = figures.reloads.len(),
        target = WATCH_OVERHEAD_TARGET_S,
        reloads = figures.reloads.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", "),
        reload = secs(figures.reload()),
        rebuilds = figures.rebuilds.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", "),
        rebuild = secs(figures.rebuild()),
        overhead = figures.reload().as_secs_f64() - figures.rebuild().as_secs_f64(),
    )
}

/// Replaces the section marked `name` in `BENCHMARKS.md` (appending it when absent).
pub fn write_section(path: &PathBuf, name: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- section:{name} -->");
    let end = format!("<!-- /section:{name} -->");
    let block = format!("{begin}\n{body}{end}\n");
    let mut current = std::fs::read_to_string(path).unwrap_or_default();
    if !current.starts_with("# Benchmarks") {
        current = format!(
            "# Benchmarks\n\nWritten by `cargo run --release -p micro-bench` (bench/, see its `--help`); each \
                           section names the command that wrote it.\n\n{current}"
        );
    }
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{block}{}", &current[..start], current[stop + end.len()..].trim_start_matches('\n'))
        }
        _ => format!("{}\n{block}", current.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
