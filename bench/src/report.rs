//! What a run found, in two forms: `BENCHMARKS.json` (every figure of the last run of each
//! section, with its baseline and the target it is held to) and the budget table at the top of
//! `BENCHMARKS.md`, rendered from that JSON so a run of one section keeps the others' figures.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use serde_json::{Value, json};

/// A figure the performance budget sets a bound on.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The value is at most this.
    AtMost(f64),
    /// The value is at least this.
    AtLeast(f64),
    /// The value divided by its baseline is at least this.
    RatioAtLeast(f64),
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    /// What the value is compared with, measured in the same run.
    pub baseline: Option<(String, f64)>,
    pub target: Option<Target>,
}

impl Figure {
    pub fn new(name: impl Into<String>, unit: &'static str, value: f64) -> Self {
        Self { name: name.into(), unit, value, baseline: None, target: None }
    }

    pub fn against(mut self, baseline: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((baseline.into(), value));
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().filter(|(_, base)| *base > 0.0).map(|(_, base)| self.value / base)
    }

    fn met(&self) -> Option<bool> {
        Some(match self.target? {
            Target::AtMost(bound) => self.value <= bound,
            Target::AtLeast(bound) => self.value >= bound,
            Target::RatioAtLeast(bound) => self.ratio()? >= bound,
        })
    }

    fn to_json(&self) -> Value {
        let target = self.target.map(|target| match target {
            Target::AtMost(bound) => json!({ "at_most": bound }),
            Target::AtLeast(bound) => json!({ "at_least": bound }),
            Target::RatioAtLeast(bound) => json!({ "ratio_at_least": bound }),
        });
        json!({
            "name": self.name,
            "unit": self.unit,
            "value": round(self.value),
            "baseline": self.baseline.as_ref().map(|(name, value)| json!({ "name": name, "value": round(*value) })),
            "ratio": self.ratio().map(|ratio| (ratio * 1000.0).round() / 1000.0),
            "target": target,
            "met": self.met(),
        })
    }
}

fn round(value: f64) -> f64 {
    if value.abs() >= 100.0 { value.round() } else { (value * 100.0).round() / 100.0 }
}

/// Where and when a run happened.
pub struct Run {
    pub machine: String,
    pub date: String,
    pub commit: String,
    pub quick: bool,
}

impl Run {
    pub fn describe(root: &Path, quick: bool) -> Self {
        Self { machine: machine(), date: micro_core::time::rfc3339_now(), commit: commit(root), quick }
    }
}

/// Records `figures` as the latest of `section` in `BENCHMARKS.json` and re-renders the
/// budget table of `BENCHMARKS.md` from the whole file.
pub fn record(root: &Path, run: &Run, section: &str, figures: &[Figure]) -> anyhow::Result<()> {
    let json_path = root.join("BENCHMARKS.json");
    let mut all: Value = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    all[section] = json!({
        "machine": run.machine,
        "date": run.date,
        "commit": run.commit,
        "quick": run.quick,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&all).context("encoding BENCHMARKS.json")?;
    std::fs::write(&json_path, text + "\n").with_context(|| format!("writing {}", json_path.display()))?;
    crate::runtime::write_section(&root.join("BENCHMARKS.md"), "budget", &render_budget(&all))
}

/// Section order in the budget table; sections not listed follow in name order.
const ORDER: &[&str] = &["calls", "overhead", "connect", "store", "events", "boot", "backends", "runtime"];

fn render_budget(all: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Budget: each figure against its target\n");
    let _ = writeln!(
        md,
        "Rendered from `BENCHMARKS.json`, which holds every figure of the latest run of each section. A \
         ratio divides a figure by its baseline measured in the same run, on the same machine; the targets \
         are issue 8's budget. Nothing here is asserted by a test.\n"
    );
    let mut sections: Vec<(&String, &Value)> =
        all.as_object().map(|o| o.iter().collect()).unwrap_or_default();
    sections.sort_by_key(|(name, _)| (ORDER.iter().position(|o| o == name).unwrap_or(ORDER.len()), *name));
    for (name, section) in sections {
        let text = |key: &str| section[key].as_str().unwrap_or("?").to_string();
        let quick = if section["quick"].as_bool() == Some(true) { " (--quick)" } else { "" };
        let _ = writeln!(
            md,
            "**{name}** — {} · {} · commit {}{quick}\n",
            text("date"),
            text("machine"),
            text("commit")
        );
        let _ = writeln!(md, "| figure | value | baseline | ratio | target | met |");
        let _ = writeln!(md, "|---|---:|---|---:|---|:---:|");
        for figure in section["figures"].as_array().into_iter().flatten() {
            let unit = figure["unit"].as_str().unwrap_or("");
            let value = figure["value"].as_f64().map_or("—".into(), |v| with_unit(v, unit));
            let baseline = match (&figure["baseline"]["name"], figure["baseline"]["value"].as_f64()) {
                (Value::String(name), Some(v)) => format!("{} ({name})", with_unit(v, unit)),
                _ => "—".into(),
            };
            let ratio = figure["ratio"].as_f64().map_or("—".into(), |r| format!("{r:.2}×"));
            let target = &figure["target"];
            let target = if let Some(bound) = target["at_most"].as_f64() {
                format!("≤ {}", with_unit(bound, unit))
            } else if let Some(bound) = target["at_least"].as_f64() {
                format!("≥ {}", with_unit(bound, unit))
            } else if let Some(bound) = target["ratio_at_least"].as_f64() {
                format!("≥ {bound:.2}×")
            } else {
                String::new()
            };
            let met = match figure["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(
                md,
                "| {} | {value} | {baseline} | {ratio} | {target} | {met} |",
                figure["name"].as_str().unwrap_or("?")
            );
        }
        let _ = writeln!(md);
    }
    md
}

fn with_unit(value: f64, unit: &str) -> String {
    let number = if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    if unit.is_empty() { number } else { format!("{number} {unit}") }
}

/// `2 cores, 23.5 GiB, <cpu model>`.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(String::new, |kib| format!(", {:.1} GiB", kib / 1024.0 / 1024.0));
    format!("{} cores{memory}, {model}", crate::cores())
}

/// The checked-out commit, `+dirty` when the work tree has changes.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short=10", "HEAD"]) else { return "unknown".into() };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+dirty") } else { head }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_judge_values_and_ratios() {
        let added = Figure::new("added", "µs", 40.0).target(Target::AtMost(50.0));
        assert_eq!(added.met(), Some(true));
        let kept =
            Figure::new("kept", "req/s", 50.0).against("direct", 100.0).target(Target::RatioAtLeast(0.6));
        assert_eq!(kept.ratio(), Some(0.5));
        assert_eq!(kept.met(), Some(false));
        assert_eq!(Figure::new("free", "", 1.0).met(), None);
        let json = kept.to_json();
        assert_eq!(json["met"], false);
        assert_eq!(json["baseline"]["value"], 100.0);
        let all = json!({ "calls": { "date": "d", "machine": "m", "commit": "c", "figures": [json] } });
        let md = render_budget(&all);
        assert!(md.contains("| kept | 50 req/s | 100 req/s (direct) | 0.50× | ≥ 0.60× | **no** |"), "{md}");
    }
}
