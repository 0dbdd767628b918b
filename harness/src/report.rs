//! Run reports: one model, four renderings. The console summary, then
//! `report.json` (machine-readable), `junit.xml` (CI systems) and a
//! self-contained `report.html` (inline CSS and SVG, no network) in the
//! run directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use oracles::outcome::{Outcome, Tally};
use serde::Serialize;

/// One reported case: a workload, a tampering, a demo.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// Case name, unique within its suite.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Its checks by outcome.
    pub checks: Tally,
    /// Wall time.
    pub millis: u128,
    /// One-line failure summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Full failure report: seed, queries, trace, row diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Replay files written for this case.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replay_files: Vec<PathBuf>,
    /// The one-line runner command that reproduces it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reproduce: Option<String>,
    /// Case-specific facts (seed, operators, shrink figures, ...).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub facts: serde_json::Value,
}

impl CaseReport {
    /// A case with no failure details yet.
    pub fn new(name: &str, outcome: Outcome, checks: Tally, millis: u128) -> Self {
        CaseReport {
            name: name.into(),
            outcome,
            checks,
            millis,
            message: None,
            details: None,
            replay_files: Vec::new(),
            reproduce: None,
            facts: serde_json::Value::Null,
        }
    }
}

/// A group of cases: the oracle corpus, the negative control, ...
#[derive(Debug, Clone, Serialize)]
pub struct Suite {
    /// Suite name.
    pub name: String,
    /// Its cases, in run order.
    pub cases: Vec<CaseReport>,
    /// Wall time.
    pub seconds: f64,
    /// Time budget, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_seconds: Option<f64>,
    /// Optional figures to plot per case: `(case, [(series, value)])`, with
    /// the unit in `plot_unit`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub plot: Vec<(String, Vec<(String, f64)>)>,
    /// Unit of the plotted values.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub plot_unit: String,
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

    /// Cases that did not pass.
    pub fn failed(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| c.outcome != Outcome::Pass)
            .count()
    }

    /// Checks of every case, by outcome.
    pub fn checks(&self) -> Tally {
        let mut t = Tally::default();
        for c in &self.cases {
            t.merge(&c.checks);
        }
        t
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
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

impl Report {
    /// Whether every case of every suite passed.
    pub fn passed(&self) -> bool {
        self.suites.iter().all(|s| s.failed() == 0)
    }

    /// Checks of every suite, by outcome.
    pub fn checks(&self) -> Tally {
        let mut t = Tally::default();
        for s in &self.suites {
            t.merge(&s.checks());
        }
        t
    }

    /// Cases by outcome.
    pub fn cases(&self) -> Tally {
        let mut t = Tally::default();
        for c in self.suites.iter().flat_map(|s| &s.cases) {
            t.add(c.outcome);
        }
        t
    }

    /// The console summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{} summary ({:.1} s)", self.command, self.seconds);
        for s in &self.suites {
            let _ = writeln!(
                out,
                "  {:<20} {:>3} cases, {:>3} failed; checks: {}; {:.1} s{}",
                s.name,
                s.cases.len(),
                s.failed(),
                s.checks(),
                s.seconds,
                s.budget_seconds
                    .map(|b| format!(" (budget {b:.0} s)"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "  cases:  {}", self.cases());
        let _ = writeln!(out, "  checks: {}", self.checks());
        let _ = writeln!(
            out,
            "  {}; reports in {}",
            if self.passed() { "PASSED" } else { "FAILED" },
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
    /// mismatch is a `failure`, an engine or harness error an `error`.
    pub fn junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        // `tests`, `failures` and `errors` attributes from case outcomes.
        let counts = |t: Tally| {
            format!(
                "tests=\"{}\" failures=\"{}\" errors=\"{}\"",
                t.total(),
                t.mismatch,
                t.engine_error + t.harness_error
            )
        };
        let _ = writeln!(
            out,
            "<testsuites name=\"harness {}\" {} time=\"{:.3}\">",
            xml(&self.command),
            counts(self.cases()),
            self.seconds
        );
        for s in &self.suites {
            let mut t = Tally::default();
            for c in &s.cases {
                t.add(c.outcome);
            }
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" {} time=\"{:.3}\">",
                xml(&s.name),
                counts(t),
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
    /// chart of case times, failure details folded open.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>harness {cmd}</title>\n<style>\
             body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}.pass{{color:#1a7f37}}.fail{{color:#cf222e;font-weight:bold}}\
             pre{{background:#f6f8fa;padding:8px;overflow:auto;max-height:40em}}svg text{{font-size:11px}}</style></head><body>\n\
             <h1>harness {cmd}: <span class=\"{cls}\">{verdict}</span></h1>\n<p>{secs:.1} s; cases: {cases}; checks: {checks}; run directory <code>{dir}</code></p>\n",
            cmd = xml(&self.command),
            cls = if self.passed() { "pass" } else { "fail" },
            verdict = if self.passed() { "passed" } else { "FAILED" },
            secs = self.seconds,
            cases = self.cases(),
            checks = self.checks(),
            dir = xml(&self.run_dir.display().to_string()),
        );
        for s in &self.suites {
            let _ = write!(
                out,
                "<h2>{}</h2>\n<p>{} cases, {} failed; checks: {}; {:.1} s</p>\n{}\
                 <table><tr><th>case</th><th>outcome</th><th>checks passed</th><th>ms</th><th>reproduce</th></tr>\n",
                xml(&s.name),
                s.cases.len(),
                s.failed(),
                s.checks(),
                s.seconds,
                bar_chart(&s.cases)
            );
            out.push_str(&series_chart(&s.plot, &s.plot_unit));
            for c in &s.cases {
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
            for c in s.cases.iter().filter(|c| c.outcome != Outcome::Pass) {
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
        let color = if c.outcome == Outcome::Pass {
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
    let series: Vec<&str> = plot[0].1.iter().map(|(n, _)| n.as_str()).collect();
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
        for (j, (_, v)) in values.iter().enumerate() {
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

    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(
            xml("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
    }
}
