//! Run reports: one model, four renderings. The console summary, then
//! `report.json` (machine-readable), `junit.xml` (CI systems) and a
//! self-contained `report.html` (inline CSS and SVG, no network) in the
//! run directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use oracles::outcome::{Outcome, Tally};
use serde::{Serialize, Serializer};

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

    /// JUnit XML: one `testsuite` per suite, one `testcase` per case; a
    /// mismatch is a `failure`, an engine or harness error an `error`, a
    /// skipped case `skipped` with its reason.
    pub fn junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        // `tests` (every case, skipped ones too), `failures`, `errors` and
        // `skipped` attributes from case outcomes.
        let counts = |t: Tally, skipped: usize| {
            format!(
                "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{skipped}\"",
                t.total() + skipped,
                t.mismatch,
                t.engine_error + t.harness_error
            )
        };
        let _ = writeln!(
            out,
            "<testsuites name=\"harness {}\" {} time=\"{:.3}\">",
            xml(&self.command),
            counts(self.cases(), self.skipped()),
            self.seconds
        );
        for s in &self.suites {
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" {} time=\"{:.3}\">",
                xml(&s.name),
                counts(s.outcomes(), s.skipped()),
                s.seconds
            );
            for c in &s.cases {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                    xml(&s.name),
                    xml(&c.name),
                    c.millis as f64 / 1000.0
                );
                if let Some(reason) = &c.skipped {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(reason)
                    );
                    continue;
                }
                let tag = match c.outcome {
                    Outcome::Pass => {
                        out.push_str("/>\n");
                        continue;
                    }
                    Outcome::Mismatch => "failure",
                    Outcome::EngineError | Outcome::HarnessError => "error",
                };
                let _ = writeln!(
                    out,
                    ">\n      <{tag} type=\"{}\" message=\"{}\">{}</{tag}>\n    </testcase>",
                    c.outcome.name(),
                    xml(c.message.as_deref().unwrap_or("")),
                    xml(&full_text(c))
                );
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }

    /// A self-contained HTML page: summary, a per-suite table and a bar
    /// chart of case times, failure details folded open, skipped cases
    /// labelled with their reason.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>harness {cmd}</title>\n<style>\
             body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}.pass{{color:#1a7f37}}.fail{{color:#cf222e;font-weight:bold}}\
             .skip{{color:#9a6700;font-weight:bold}}\
             pre{{background:#f6f8fa;padding:8px;overflow:auto;max-height:40em}}svg text{{font-size:11px}}</style></head><body>\n\
             <h1>harness {cmd}: <span class=\"{cls}\">{verdict}</span>{skipped_label}</h1>\n<p>{secs:.1} s; cases: {cases}{skipped}; checks: {checks}; run directory <code>{dir}</code></p>\n",
            cmd = xml(&self.command),
            cls = if self.passed() { "pass" } else { "fail" },
            verdict = if self.passed() { "passed" } else { "FAILED" },
            skipped_label = match self.skipped() {
                0 => String::new(),
                n => format!(" <span class=\"skip\">({n} skipped)</span>"),
            },
            secs = self.seconds,
            cases = self.cases(),
            skipped = self.skipped_count(),
            checks = xml(&self.checks_text()),
            dir = xml(&self.run_dir.display().to_string()),
        );
        for s in &self.suites {
            let _ = write!(
                out,
                "<h2>{}</h2>\n<p>{} cases, {} failed{}; checks: {}; {:.1} s</p>\n{}",
                xml(&s.name),
                s.cases.len(),
                s.failed(),
                match s.skipped() {
                    0 => String::new(),
                    _ => format!("<span class=\"skip\">{}</span>", xml(&s.skipped_text())),
                },
                xml(&s.checks_text()),
                s.seconds,
                bar_chart(&s.cases)
            );
            out.push_str(&series_chart(&s.plot, &s.plot_unit));
            if let Some(gate) = crate::gate_html::gate_section(&s.cases) {
                out.push_str(&gate);
            }
            out.push_str(
                "<table><tr><th>case</th><th>outcome</th><th>checks passed</th><th>ms</th><th>reproduce</th></tr>\n",
            );
            for c in &s.cases {
                if let Some(reason) = &c.skipped {
                    let _ = writeln!(
                        out,
                        "<tr><td>{}</td><td class=\"skip\">skipped: {}</td><td>not run</td><td>{}</td><td><code>{}</code></td></tr>",
                        xml(&c.name),
                        xml(reason),
                        c.millis,
                        xml(c.reproduce.as_deref().unwrap_or(""))
                    );
                    continue;
                }
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}/{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    xml(&c.name),
                    if c.outcome == Outcome::Pass { "pass" } else { "fail" },
                    c.outcome.name(),
                    c.checks.pass,
                    c.checks.total(),
                    c.millis,
                    xml(c.reproduce.as_deref().unwrap_or(""))
                );
            }
            out.push_str("</table>\n");
            for c in s.cases.iter().filter(|c| c.failed()) {
                let _ = writeln!(
                    out,
                    "<details open><summary class=\"fail\">{}: {}</summary><pre>{}</pre></details>",
                    xml(&c.name),
                    xml(c.message.as_deref().unwrap_or("")),
                    xml(&full_text(c))
                );
            }
        }
        out.push_str("</body></html>\n");
        out
    }
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

/// An inline SVG bar chart of case wall times.
fn bar_chart(cases: &[CaseReport]) -> String {
    if cases.is_empty() {
        return String::new();
    }
    let max = cases.iter().map(|c| c.millis).max().unwrap_or(1).max(1) as f64;
    let row = 14;
    let mut svg = format!(
        "<svg width=\"760\" height=\"{}\" role=\"img\" aria-label=\"case wall time\">",
        cases.len() * row + 4
    );
    for (i, c) in cases.iter().enumerate() {
        let y = i * row;
        let w = (c.millis as f64 / max * 420.0).max(1.0);
        let color = if c.is_skipped() {
            "#d4a72c"
        } else if c.outcome == Outcome::Pass {
            "#54aeff"
        } else {
            "#cf222e"
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"260\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{}\">{} ms</text>",
            y + 11,
            xml(&c.name),
            y + 2,
            row - 3,
            264.0 + w,
            y + 11,
            c.millis
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// An inline SVG of grouped horizontal bars: per case, one bar per series.
fn series_chart(plot: &[(String, Vec<(String, f64)>)], unit: &str) -> String {
    if plot.is_empty() {
        return String::new();
    }
    const COLORS: [&str; 4] = ["#54aeff", "#bf8700", "#8250df", "#1a7f37"];
    let max = plot
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, x)| *x))
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    // Every series any case has, in first-seen order: a case without one
    // (a FULL query has no DIFF statement) leaves its slot empty rather
    // than drawing a bar of 0.
    let mut series: Vec<&str> = Vec::new();
    for (_, values) in plot {
        for (n, _) in values {
            if !series.contains(&n.as_str()) {
                series.push(n);
            }
        }
    }
    let bar = 10;
    let group = bar * series.len() + 6;
    let mut svg = format!(
        "<p>{}</p><svg width=\"760\" height=\"{}\" role=\"img\" aria-label=\"per-case figures\">",
        series
            .iter()
            .enumerate()
            .map(|(i, n)| format!(
                "<span style=\"color:{}\">&#9632;</span> {} ({unit})",
                COLORS[i % 4],
                xml(n)
            ))
            .collect::<Vec<_>>()
            .join(" &nbsp; "),
        plot.len() * group + 4
    );
    for (i, (case, values)) in plot.iter().enumerate() {
        let y = i * group;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text>",
            y + bar + 2,
            xml(case)
        );
        for (name, v) in values {
            let j = series.iter().position(|s| s == name).unwrap_or(0);
            let w = (v / max * 420.0).max(1.0);
            let yy = y + j * bar;
            let _ = write!(
                svg,
                "<rect x=\"120\" y=\"{yy}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\">{v:.1}</text>",
                bar - 2,
                COLORS[j % 4],
                124.0 + w,
                yy + bar - 2
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Escape text for XML and HTML (and drop characters XML 1.0 forbids).
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn passing(name: &str, checks: usize) -> CaseReport {
        let t = Tally {
            pass: checks,
            ..Tally::default()
        };
        CaseReport::new(name, Outcome::Pass, t, 12)
    }

    /// A passing oracle suite, an upgrade suite of one skipped case, and a
    /// suite with a pass and a skipped case.
    fn report_with_skips() -> Report {
        let mut slice = CaseReport::skip(
            "slice",
            "none of the 3 changed file(s) touches SQL scripts <&>",
        );
        // Checks on a skipped case never count, however they got there.
        slice.checks.pass = 7;
        Report {
            command: "pr".into(),
            version: "0".into(),
            started_unix: 0,
            seconds: 1.0,
            run_dir: PathBuf::from("runs/test"),
            suites: vec![
                Suite::new("oracle", vec![passing("select_star", 4)], 0.5, None),
                Suite::new("upgrade", vec![slice], 0.0, None),
                Suite::new(
                    "mixed",
                    vec![
                        passing("a", 2),
                        CaseReport::skip("operator_coverage", "--workload given"),
                    ],
                    0.1,
                    None,
                ),
            ],
        }
    }

    #[test]
    fn a_skipped_case_is_neither_a_pass_nor_a_failure() {
        let r = report_with_skips();
        let c = &r.suites[1].cases[0];
        assert!(c.is_skipped() && !c.failed());
        assert_eq!(c.status(), "skipped");
        assert_eq!((r.suites[1].failed(), r.suites[1].skipped()), (0, 1));
        assert_eq!(r.suites[1].outcomes(), Tally::default());
        assert_eq!(r.suites[1].checks(), Tally::default());
        // Cases that ran: select_star and a; two skipped.
        assert_eq!((r.cases().pass, r.cases().total(), r.skipped()), (2, 2, 2));
        assert_eq!(r.checks().pass, 6);
        assert!(r.passed(), "a skip does not fail the run");
        let mut failing = r.clone();
        failing.suites[0].cases[0].outcome = Outcome::Mismatch;
        assert!(!failing.passed(), "nor does it hide a failure");
    }

    #[test]
    fn the_summary_shows_skipped_suites_with_their_reason_and_no_checks() {
        let text = report_with_skips().summary();
        let line = |suite: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(suite))
                .unwrap_or_else(|| panic!("no {suite} line in:\n{text}"))
                .to_string()
        };
        let upgrade = line("upgrade");
        assert!(
            upgrade.contains(
                "1 cases,   0 failed, 1 skipped (none of the 3 changed file(s) touches SQL scripts <&>); checks: none run;"
            ),
            "{upgrade}"
        );
        assert!(!upgrade.contains("pass"), "{upgrade}");
        let mixed = line("mixed");
        assert!(
            mixed.contains(
                "2 cases,   0 failed, 1 skipped (operator_coverage: --workload given); checks: 2 pass,"
            ),
            "{mixed}"
        );
        let oracle = line("oracle");
        assert!(
            oracle.contains("1 cases,   0 failed; checks: 4 pass,"),
            "{oracle}"
        );
        assert!(
            text.contains("cases:  2 pass, 0 mismatch, 0 engine error, 0 harness error, 2 skipped"),
            "{text}"
        );
        assert!(text.contains("checks: 6 pass,"), "{text}");
        assert!(text.contains("PASSED (2 skipped); reports in"), "{text}");
    }

    #[test]
    fn a_run_of_skipped_suites_passes_without_passing_checks() {
        let r = Report {
            suites: vec![
                Suite::skip("tpch", "--no-tpch given"),
                Suite::skip("upgrade", "--no-upgrade given"),
            ],
            ..report_with_skips()
        };
        assert!(r.passed());
        let text = r.summary();
        assert!(!text.contains("checks: 0 pass"), "{text}");
        assert!(text.contains("  checks: none run\n"), "{text}");
        assert!(
            text.contains(
                "  cases:  0 pass, 0 mismatch, 0 engine error, 0 harness error, 2 skipped\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("tpch                   1 cases,   0 failed, 1 skipped (--no-tpch given); checks: none run;"),
            "{text}"
        );
        assert!(text.contains("PASSED (2 skipped)"), "{text}");
        assert!(r.html().contains("checks: none run; run directory"));
    }

    #[test]
    fn report_json_names_the_reason_and_counts_skipped_cases() {
        let json = serde_json::to_value(report_with_skips()).expect("serializes");
        assert_eq!(json["skipped"], 2);
        let upgrade = &json["suites"][1];
        assert_eq!(upgrade["skipped"], 1);
        let slice = &upgrade["cases"][0];
        assert_eq!(slice["outcome"], "skipped");
        assert_eq!(slice["checks"]["pass"], 0);
        assert_eq!(
            slice["skipped"],
            "none of the 3 changed file(s) touches SQL scripts <&>"
        );
        assert_eq!(json["suites"][0]["skipped"], 0);
        let ran = &json["suites"][0]["cases"][0];
        assert_eq!(ran["outcome"], "pass");
        assert!(ran.get("skipped").is_none(), "{ran}");
        assert_eq!(ran["checks"]["pass"], 4);
    }

    #[test]
    fn junit_marks_skipped_cases_skipped_with_their_reason() {
        let report = report_with_skips();
        let text = report.junit();
        assert!(text.contains("<skipped message=\"none of the 3 changed file(s) touches SQL scripts &lt;&amp;&gt;\"/>"), "{text}");
        let doc = roxmltree::Document::parse(&text).expect("junit.xml is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(root.attribute("tests"), Some("4"));
        assert_eq!(root.attribute("failures"), Some("0"));
        assert_eq!(root.attribute("errors"), Some("0"));
        assert_eq!(root.attribute("skipped"), Some("2"));
        let suites: Vec<_> = root
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect();
        assert_eq!(suites.len(), 3);
        let upgrade = suites[1];
        assert_eq!(upgrade.attribute("name"), Some("upgrade"));
        assert_eq!(upgrade.attribute("tests"), Some("1"));
        assert_eq!(upgrade.attribute("skipped"), Some("1"));
        assert_eq!(upgrade.attribute("failures"), Some("0"));
        let case = upgrade
            .children()
            .find(|n| n.has_tag_name("testcase"))
            .expect("a testcase");
        assert_eq!(case.attribute("name"), Some("slice"));
        let skipped = case
            .children()
            .find(|n| n.has_tag_name("skipped"))
            .expect("a skipped element");
        assert_eq!(
            skipped.attribute("message"),
            Some("none of the 3 changed file(s) touches SQL scripts <&>")
        );
        assert!(!case
            .children()
            .any(|n| n.has_tag_name("failure") || n.has_tag_name("error")));
        assert_eq!(suites[0].attribute("skipped"), Some("0"));
        let passing = suites[0]
            .children()
            .find(|n| n.has_tag_name("testcase"))
            .expect("a testcase");
        assert!(passing.children().all(|n| !n.is_element()));
    }

    #[test]
    fn html_labels_skipped_cases_with_their_reason() {
        let html = report_with_skips().html();
        assert!(
            html.contains("<td class=\"skip\">skipped: none of the 3 changed file(s) touches SQL scripts &lt;&amp;&gt;</td><td>not run</td>"),
            "{html}"
        );
        assert!(html.contains("checks: none run"), "{html}");
        assert!(
            html.contains("<span class=\"skip\">(2 skipped)</span>"),
            "{html}"
        );
        assert!(html.contains("passed") && !html.contains("FAILED"));
        assert!(
            !html.contains("<details"),
            "a skip is not a failure: {html}"
        );
    }

    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(
            xml("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
    }
}
