//! `report.html`: one self-contained page with the summary, a table and
//! charts per suite, failure details, and the TPC-H gate's section.

use std::fmt::Write as _;

use oracles::outcome::Outcome;

use super::{full_text, xml, CaseReport, Report};

impl Report {
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
            if let Some(gate) = super::gate_section::gate_section(&s.cases) {
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
