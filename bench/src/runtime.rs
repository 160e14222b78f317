//! `cargo run --release -p micro-bench -- runtime`: how long `micro run` takes from source to the
//! first successful call, cold (no dependency compiled yet) and warm (a second service reusing
//! the shared build dir), each next to a plain `cargo build --release` of the same kind of crate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a build plus start may take before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(1800);

pub struct Figures {
    pub cold_run: Duration,
    pub warm_run: Duration,
    pub cold_cargo: Duration,
    pub warm_cargo: Duration,
}

pub async fn measure(micro: &Path, home: &Path) -> anyhow::Result<Figures> {
    let work = home.join("work");
    std::fs::create_dir_all(&work)?;
    let cli = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(micro).env("MICRO_HOME", home).current_dir(&work).args(args).output()?)
    };
    let ok = |args: &[&str]| -> anyhow::Result<()> {
        let output = cli(args)?;
        if !output.status.success() {
            bail!("micro {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    };
    let run_to_first_call = |name: &str| -> anyhow::Result<Duration> {
        ok(&["new", name])?;
        let started = Instant::now();
        ok(&["run", &format!("./{name}")])?;
        loop {
            if cli(&[name, "--name=bench"])?.status.success() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > DEADLINE {
                bail!("{name} never answered");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let cold_run = run_to_first_call("coldservice")?;
    eprintln!("micro run, cold, to first call: {cold_run:?}");
    let warm_run = run_to_first_call("warmservice")?;
    eprintln!("micro run, warm, to first call: {warm_run:?}");

    // The same crates built by hand, in a target dir of their own.
    let target = home.join("plain-target");
    let cargo_build = |name: &str| -> anyhow::Result<Duration> {
        ok(&["new", name])?;
        let started = Instant::now();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet"])
            .current_dir(work.join(name))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .context("cargo")?;
        if !status.success() {
            bail!("cargo build --release of {name} failed");
        }
        Ok(started.elapsed())
    };
    let cold_cargo = cargo_build("coldplain")?;
    eprintln!("cargo build --release, cold: {cold_cargo:?}");
    let warm_cargo = cargo_build("warmplain")?;
    eprintln!("cargo build --release, warm: {warm_cargo:?}");
    Ok(Figures { cold_run, warm_run, cold_cargo, warm_cargo })
}

/// The cold and warm `micro run` times against plain cargo builds.
pub fn figures(figures: &Figures) -> Vec<crate::report::Figure> {
    use crate::report::Figure;
    vec![
        Figure::new("micro run → first call, cold", "s", figures.cold_run.as_secs_f64())
            .against("cargo build --release, cold", figures.cold_cargo.as_secs_f64()),
        Figure::new("micro run → first call, warm", "s", figures.warm_run.as_secs_f64())
            .against("cargo build --release, warm", figures.warm_cargo.as_secs_f64()),
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
         | warm (second service) | {} | {} | {} |\n",
        secs(figures.cold_run),
        secs(figures.cold_cargo),
        secs(figures.cold_run.saturating_sub(figures.cold_cargo)),
        secs(figures.warm_run),
        secs(figures.warm_cargo),
        secs(figures.warm_run.saturating_sub(figures.warm_cargo)),
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
