//! Run reports: one model, four renderings. The console summary, then
//! `report.json` (machine-readable), `junit.xml` (CI systems) and a
//! self-contained `report.html` (inline CSS and SVG, no network) in the
//! run directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use oracles::outcome::{Outcome, Tally};
use serde::{Serialize, Serializer};

mod gate_section;
mod html;
mod junit;

pub use junit::xml;

/// One reported case: a workload, a tampering, a demo.
///
/// A case either ran, and `outcome` says how it ended, or was skipped
/// (`skipped` holds the reason): a skipped case did not run, so it is
/// neither a pass nor a failure and has no checks. Its `outcome` stays
/// `Pass` only because it failed nothing; read [`CaseReport::status`] or
/// `skipped` before `outcome`. In `report.json` its `outcome` is `"skipped"`.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Case name, unique within its suite.
    pub name: String,
    /// How it ended (`Pass` for a skipped case; see [`CaseReport::skipped`]).
    pub outcome: Outcome,
    /// Why the case did not run, when it was skipped.
    pub skipped: Option<String>,
    /// Its checks by outcome (none for a skipped case).
    pub checks: Tally,
    /// Wall time.
    pub millis: u128,
    /// One-line failure summary.
    pub message: Option<String>,
    /// Full failure report: seed, queries, trace, row diff.
    pub details: Option<String>,
    /// Replay files written for this case.
    pub replay_files: Vec<PathBuf>,
    /// The one-line runner command that reproduces it.
    pub reproduce: Option<String>,
    /// Case-specific facts (seed, operators, shrink figures, ...).
    pub facts: serde_json::Value,
}

impl CaseReport {
    /// A case with no failure details yet.
    pub fn new(name: &str, outcome: Outcome, checks: Tally, millis: u128) -> Self {
        CaseReport {
            name: name.into(),
            outcome,
            skipped: None,
            checks,
            millis,
            message: None,
            details: None,
            replay_files: Vec::new(),
            reproduce: None,
            facts: serde_json::Value::Null,
        }
    }

    /// A case that did not run, and why: neither a pass nor a failure.
    pub fn skip(name: &str, reason: &str) -> Self {
        CaseReport {
            skipped: Some(reason.into()),
            ..CaseReport::new(name, Outcome::Pass, Tally::default(), 0)
        }
    }

    /// Whether it was skipped.
    pub fn is_skipped(&self) -> bool {
        self.skipped.is_some()
    }

    /// Whether it ran and did not pass.
    pub fn failed(&self) -> bool {
        !self.is_skipped() && self.outcome != Outcome::Pass
    }

    /// `skipped`, or the outcome's name.
    pub fn status(&self) -> &'static str {
        if self.is_skipped() {
            "skipped"
        } else {
            self.outcome.name()
        }
    }
}

impl Serialize for CaseReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            outcome: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<&'a str>,
            checks: Tally,
            millis: u128,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
            #[serde(skip_serializing_if = "no_files")]
            replay_files: &'a [PathBuf],
            #[serde(skip_serializing_if = "Option::is_none")]
            reproduce: Option<&'a str>,
            #[serde(skip_serializing_if = "no_facts")]
            facts: &'a serde_json::Value,
        }
        fn no_files(f: &&[PathBuf]) -> bool {
            f.is_empty()
        }
        fn no_facts(f: &&serde_json::Value) -> bool {
            f.is_null()
        }
        Json {
            name: &self.name,
            outcome: self.status(),
            skipped: self.skipped.as_deref(),
            // A skipped case has no checks, whatever was put there.
            checks: if self.is_skipped() {
                Tally::default()
            } else {
                self.checks
            },
            millis: self.millis,
            message: self.message.as_deref(),
            details: self.details.as_deref(),
            replay_files: &self.replay_files,
            reproduce: self.reproduce.as_deref(),
            facts: &self.facts,
        }
        .serialize(serializer)
    }
}

/// A group of cases: the oracle corpus, the negative control, ...
#[derive(Debug, Clone)]
pub struct Suite {
    /// Suite name.
    pub name: String,
    /// Its cases, in run order.
    pub cases: Vec<CaseReport>,
    /// Wall time.
    pub seconds: f64,
    /// Time budget, when it has one.
    pub budget_seconds: Option<f64>,
    /// Optional figures to plot per case: `(case, [(series, value)])`, with
    /// the unit in `plot_unit`.
    pub plot: Vec<(String, Vec<(String, f64)>)>,
    /// Unit of the plotted values.
    pub plot_unit: String,
}

/// `report.json`'s suite: its fields and how many cases were skipped.
impl Serialize for Suite {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            skipped: usize,
            cases: &'a [CaseReport],
            seconds: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            budget_seconds: Option<f64>,
            #[serde(skip_serializing_if = "no_plot")]
            plot: &'a [(String, Vec<(String, f64)>)],
            #[serde(skip_serializing_if = "no_unit")]
            plot_unit: &'a str,
        }
        fn no_plot(p: &&[(String, Vec<(String, f64)>)]) -> bool {
            p.is_empty()
        }
        fn no_unit(u: &&str) -> bool {
            u.is_empty()
        }
        Json {
            name: &self.name,
            skipped: self.skipped(),
            cases: &self.cases,
            seconds: self.seconds,
            budget_seconds: self.budget_seconds,
            plot: &self.plot,
            plot_unit: &self.plot_unit,
        }
        .serialize(serializer)
    }
}

impl Suite {
    /// A suite with no plot.
    pub fn new(
        name: &str,
        cases: Vec<CaseReport>,
        seconds: f64,
        budget_seconds: Option<f64>,
    ) -> Self {
        Suite {
            name: name.into(),
            cases,
            seconds,
            budget_seconds,
            plot: Vec::new(),
            plot_unit: String::new(),
        }
    }

    /// A suite that did not run, and why: one skipped case named after it.
    pub fn skip(name: &str, reason: &str) -> Self {
        Suite::new(name, vec![CaseReport::skip(name, reason)], 0.0, None)
    }

    /// Cases that ran and did not pass.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| c.failed()).count()
    }

    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.cases.iter().filter(|c| c.is_skipped()).count()
    }

    /// Cases that ran, by outcome.
    pub fn outcomes(&self) -> Tally {
        let mut t = Tally::default();
        for c in self.cases.iter().filter(|c| !c.is_skipped()) {
            t.add(c.outcome);
        }
        t
    }

    /// Checks of every case that ran, by outcome.
    pub fn checks(&self) -> Tally {
        let mut t = Tally::default();
        for c in self.cases.iter().filter(|c| !c.is_skipped()) {
            t.merge(&c.checks);
        }
        t
    }

    /// The checks for a summary: `none run` when no case ran (a suite of
    /// skipped cases never shows as passing checks).
    fn checks_text(&self) -> String {
        if self.cases.iter().all(|c| c.is_skipped()) {
            "none run".into()
        } else {
            self.checks().to_string()
        }
    }

    /// `, N skipped (why)` when cases were skipped, else nothing. The
    /// reasons alone when every case was skipped, else `case: reason`.
    fn skipped_text(&self) -> String {
        let skipped: Vec<&CaseReport> = self.cases.iter().filter(|c| c.is_skipped()).collect();
        if skipped.is_empty() {
            return String::new();
        }
        let all = skipped.len() == self.cases.len();
        let mut why: Vec<String> = Vec::new();
        for c in &skipped {
            let reason = c.skipped.as_deref().unwrap_or("");
            let line = if all {
                reason.to_string()
            } else {
                format!("{}: {reason}", c.name)
            };
            if !why.contains(&line) {
                why.push(line);
            }
        }
        format!(", {} skipped ({})", skipped.len(), why.join("; "))
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The subcommand, e.g. `pr`.
    pub command: String,
    /// Runner version.
    pub version: String,
    /// Start, Unix seconds.
    pub started_unix: u64,
    /// Wall time.
    pub seconds: f64,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Suites in run order.
    pub suites: Vec<Suite>,
}

/// `report.json`: the run's fields and how many cases were skipped.
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            command: &'a str,
            version: &'a str,
            started_unix: u64,
            seconds: f64,
            run_dir: &'a Path,
            skipped: usize,
            suites: &'a [Suite],
        }
        Json {
            command: &self.command,
            version: &self.version,
            started_unix: self.started_unix,
            seconds: self.seconds,
            run_dir: &self.run_dir,
            skipped: self.skipped(),
            suites: &self.suites,
        }
        .serialize(serializer)
    }
}

impl Report {
    /// Whether no case of any suite failed. Skipped cases neither pass nor
    /// fail, so they do not change this.
    pub fn passed(&self) -> bool {
        self.suites.iter().all(|s| s.failed() == 0)
    }

    /// Checks of every suite, by outcome (skipped cases have none).
    pub fn checks(&self) -> Tally {
        let mut t = Tally::default();
        for s in &self.suites {
            t.merge(&s.checks());
        }
        t
    }

    /// Cases that ran, by outcome (skipped cases are not counted).
    pub fn cases(&self) -> Tally {
        let mut t = Tally::default();
        for s in &self.suites {
            t.merge(&s.outcomes());
        }
        t
    }

    /// Cases that were skipped.
    pub fn skipped(&self) -> usize {
        self.suites.iter().map(Suite::skipped).sum()
    }

    /// The checks for a summary: `none run` when no case ran.
    fn checks_text(&self) -> String {
        if self
            .suites
            .iter()
            .flat_map(|s| &s.cases)
            .all(|c| c.is_skipped())
        {
            "none run".into()
        } else {
            self.checks().to_string()
        }
    }

    /// `, N skipped` when cases were skipped, else nothing.
    fn skipped_count(&self) -> String {
        match self.skipped() {
            0 => String::new(),
            n => format!(", {n} skipped"),
        }
    }

    /// The console summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{} summary ({:.1} s)", self.command, self.seconds);
        for s in &self.suites {
            let _ = writeln!(
                out,
                "  {:<20} {:>3} cases, {:>3} failed{}; checks: {}; {:.1} s{}",
                s.name,
                s.cases.len(),
                s.failed(),
                s.skipped_text(),
                s.checks_text(),
                s.seconds,
                s.budget_seconds
                    .map(|b| format!(" (budget {b:.0} s)"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "  cases:  {}{}", self.cases(), self.skipped_count());
        let _ = writeln!(out, "  checks: {}", self.checks_text());
        let _ = writeln!(
            out,
            "  {}{}; reports in {}",
            if self.passed() { "PASSED" } else { "FAILED" },
            match self.skipped() {
                0 => String::new(),
                n => format!(" ({n} skipped)"),
            },
            self.run_dir.display()
        );
        out
    }

    /// Write `report.json`, `junit.xml` and `report.html` into the run directory.
    pub fn write(&self) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(self.run_dir.join("report.json"), json)?;
        std::fs::write(self.run_dir.join("junit.xml"), self.junit())?;
        std::fs::write(self.run_dir.join("report.html"), self.html())?;
        Ok(())
    }
}

/// A fresh run directory: `dir` if given, else `runs/<unix seconds>`
/// (with a suffix if that exists already).
pub fn run_dir(dir: Option<&Path>) -> std::io::Result<PathBuf> {
    let path = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut p = PathBuf::from("runs").join(secs.to_string());
            let mut n = 1;
            while p.exists() {
                p = PathBuf::from("runs").join(format!("{secs}-{n}"));
                n += 1;
            }
            p
        }
    };
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// Details, replay files and the command, as one text block.
fn full_text(c: &CaseReport) -> String {
    let mut t = c.details.clone().unwrap_or_default();
    for f in &c.replay_files {
        let _ = write!(t, "\nreplay file: {}", f.display());
    }
    if let Some(cmd) = &c.reproduce {
        let _ = write!(t, "\nreproduce: {cmd}");
    }
    t
}

#[cfg(test)]
mod tests;
