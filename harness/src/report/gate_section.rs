//! The TPC-H gate's page section: what the gate judged per query, as
//! `harness/src/checks/tpch/gate.rs` records it in each case's facts. Kept apart
//! from the rest of the report, which knows nothing of TPC-H.

use std::fmt::Write;

use serde_json::Value;

use super::{xml, CaseReport};

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The absolute time against its baseline: `2.61 ms (+4% vs 2.51)`.
fn absolute(v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!(
        "{} ms ({:+.0}% vs {})",
        num(&v["measured"], 2),
        v["change_pct"].as_f64().unwrap_or(f64::NAN),
        num(&v["baseline"], 2)
    )
}

/// An inline SVG per query: the baseline band of the ratio (shaded), its
/// limit (a line), and the run's ratio (a dot, red when the query failed),
/// on a log scale so that halving and doubling look alike.
fn ratio_chart(rows: &[(&CaseReport, &Value)]) -> String {
    let plotted: Vec<&(&CaseReport, &Value)> =
        rows.iter().filter(|(_, f)| f["ratio"].is_f64()).collect();
    if plotted.is_empty() {
        return String::new();
    }
    let values: Vec<f64> = plotted
        .iter()
        .flat_map(|(_, f)| {
            [
                f["ratio"].as_f64(),
                f["ratio_baseline"]["min"].as_f64(),
                f["ratio_baseline"]["limit"].as_f64(),
            ]
        })
        .flatten()
        .filter(|v| *v > 0.0)
        .collect();
    let lo = values.iter().copied().fold(1.0, f64::min).ln() - 0.2;
    let hi = values.iter().copied().fold(1.0, f64::max).ln() + 0.2;
    let (left, width, row) = (60.0, 600.0, 18usize);
    let x = |v: f64| left + (v.ln() - lo) / (hi - lo) * width;
    let mut svg = format!(
        "<svg width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"DIFF/FULL ratio against the baseline band\">",
        left + width + 20.0,
        plotted.len() * row + 20
    );
    let one = x(1.0);
    let _ = write!(
        svg,
        "<line x1=\"{one:.1}\" y1=\"0\" x2=\"{one:.1}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"3,3\"/>\
         <text x=\"{:.1}\" y=\"{}\">DIFF = FULL</text>",
        plotted.len() * row,
        one + 3.0,
        plotted.len() * row + 14
    );
    for (i, (c, f)) in plotted.iter().enumerate() {
        let y = (i * row) as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text>",
            y + 13.0,
            xml(&c.name)
        );
        let b = &f["ratio_baseline"];
        if let (Some(min), Some(max)) = (b["min"].as_f64(), b["max"].as_f64()) {
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" fill=\"#b6e3ff\"/>",
                x(min),
                y + 3.0,
                (x(max) - x(min)).max(2.0)
            );
        }
        if let Some(limit) = b["limit"].as_f64() {
            let _ = write!(
                svg,
                "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"#cf222e\" stroke-width=\"2\"/>",
                x(limit),
                y + 1.0,
                y + 17.0
            );
        }
        if let Some(r) = f["ratio"].as_f64() {
            let color = if c.failed() { "#cf222e" } else { "#1a7f37" };
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{color}\"/>",
                x(r),
                y + 9.0
            );
        }
    }
    svg.push_str("</svg>\n");
    format!(
        "<p><span style=\"color:#b6e3ff\">&#9632;</span> baseline band (runs' medians) &nbsp; \
         <span style=\"color:#cf222e\">|</span> limit &nbsp; \
         <span style=\"color:#1a7f37\">&#9679;</span> this run (red: the query failed), DIFF/FULL CPU-time ratio, log scale</p>{svg}"
    )
}

/// The gate's table and chart for a suite whose cases carry gate facts;
/// None for any other suite.
pub fn gate_section(cases: &[CaseReport]) -> Option<String> {
    let rows: Vec<(&CaseReport, &Value)> = cases
        .iter()
        .filter(|c| c.facts.get("verdicts").is_some() && c.facts.get("ratio_baseline").is_some())
        .map(|c| (c, &c.facts))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut out = String::from(
        "<p>What the gate judges: the DIFF/FULL CPU-time ratio (measured side by side in this run) \
         against its baseline band and limit, DIFF becoming slower than FULL, the refresh mode, plan \
         shapes and temp blocks. Absolute times are shown against the baseline but not judged.</p>\n",
    );
    out.push_str(&ratio_chart(&rows));
    out.push_str(
        "<table><tr><th>query</th><th>mode</th><th>DIFF/FULL ratio</th><th>baseline median (band)</th>\
         <th>limit</th><th>verdict</th><th>what moved</th><th>DIFF (not judged)</th><th>FULL (not judged)</th></tr>\n",
    );
    for (c, f) in &rows {
        let mode = match (f["mode"].as_str(), f["fallback_reason"].as_str()) {
            (Some(m), Some(why)) => format!("{} <small>({})</small>", xml(m), xml(why)),
            (Some(m), None) => xml(m),
            _ => "-".into(),
        };
        let b = &f["ratio_baseline"];
        let band = if b.is_null() {
            "-".to_string()
        } else {
            format!(
                "{} ({}..{})",
                num(&b["median"], 3),
                num(&b["min"], 3),
                num(&b["max"], 3)
            )
        };
        let moved: Vec<String> = f["verdicts"]
            .as_array()
            .map(|v| v.iter().filter_map(|l| l.as_str()).map(xml).collect())
            .unwrap_or_default();
        let note = f["note"].as_str().map(xml);
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{mode}</td><td>{}</td><td>{band}</td><td>{}</td><td class=\"{}\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&c.name),
            num(&f["ratio"], 3),
            num(&b["limit"], 3),
            if c.failed() { "fail" } else { "pass" },
            if c.failed() { "FAIL" } else { "pass" },
            if moved.is_empty() {
                note.unwrap_or_default()
            } else {
                moved.join("<br>")
            },
            absolute(&f["diff_ms"]),
            absolute(&f["full_ms"]),
        );
    }
    out.push_str("</table>\n");
    Some(out)
}
