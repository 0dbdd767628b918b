//! The TPC-H gate in the runner: baseline files, this machine's
//! description, and the gate's report cases (with the confirming second
//! measurement, the per-query facts `report.html` shows, and the console
//! table). What a baseline holds and the judging rule itself live in the
//! `tpch` crate (`tpch::baseline`, `tpch::gate`), free of I/O: the gate
//! judges what stays stable within one run on a busy machine (DIFF/FULL
//! ratios measured side by side, modes, plan shapes, temp blocks), never
//! absolute times.

use std::collections::BTreeSet;
use std::path::Path;

pub use tpch::baseline::{describe, judge, measure, Baseline, Machine, QueryBaseline};
use tpch::gate::{ratio_limit, Figure, RatioThresholds, Verdict};

use oracles::outcome::{Outcome, Tally};

use crate::checks::tpch::QueryFigures;
use crate::report::{CaseReport, Suite};

/// Options that repeat the measured runs of `base` (scale, cycles, seed,
/// queries), with `settings` applied (an injected regression, say).
pub fn run_options(base: &Baseline, settings: Vec<String>) -> crate::checks::tpch::TpchOptions {
    crate::checks::tpch::TpchOptions {
        sf: base.sf,
        cycles: base.cycles,
        fraction: 0.001,
        seed: base.seed,
        only: base.queries.keys().cloned().collect(),
        settings,
        database: "tpch".into(),
    }
}

/// This machine, described.
pub fn machine(postgres: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split(':').nth(1))
            })
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        memory_kb: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        postgres,
    }
}

/// Read a baseline file.
pub fn read(path: &Path) -> Result<Baseline, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Write a baseline file.
pub fn write(path: &Path, b: &Baseline) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(path, serde_json::to_string_pretty(b).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What the gate saw for one query, for `report.json` and `report.html`:
/// the mode (and why FULL), the in-run DIFF/FULL ratio against its
/// baseline band and limit, the absolute times against theirs (reported,
/// not judged), and every verdict.
pub fn gate_facts(
    base: Option<&QueryBaseline>,
    f: &QueryFigures,
    verdicts: &[Verdict],
    note: Option<&str>,
) -> serde_json::Value {
    let t = RatioThresholds::default();
    let moved = |now: f64, was: Option<&Figure>| {
        was.map(|w| {
            serde_json::json!({"measured": now, "baseline": w.median,
            "change_pct": (now / w.median - 1.0) * 100.0})
        })
    };
    serde_json::json!({
        "query": f.query,
        "mode": f.mode,
        "baseline_mode": base.map(|b| b.mode.clone()),
        "fallback_reason": f.fallback_reason,
        "ratio": f.ratio_p50,
        "ratio_pairs": f.pairs.len(),
        "ratio_baseline": base.and_then(|b| b.ratio).map(|r| serde_json::json!({
            "median": r.median, "log_spread": r.log_spread, "min": r.min, "max": r.max,
            "n": r.n, "limit": ratio_limit(&r, &t),
        })),
        "diff_ms": (f.ratio_p50.is_some()).then(|| moved(f.diff_p50_ms, base.and_then(|b| b.diff_ms.as_ref()))).flatten(),
        "full_ms": moved(f.full_p50_ms, base.map(|b| &b.full_ms)),
        "temp_blocks": f.temp_blocks,
        "verdicts": verdicts.iter().map(describe).collect::<Vec<_>>(),
        "note": note,
    })
}

/// The gate's per-query table for the console.
pub fn gate_table(base: &Baseline, figures: &[QueryFigures], failed: &BTreeSet<String>) -> String {
    let t = RatioThresholds::default();
    let mut out = format!(
        "{:<5} {:<13} {:>7} {:>15} {:>7}  {:<8} {}\n",
        "query",
        "mode",
        "ratio",
        "baseline band",
        "limit",
        "verdict",
        "absolute DIFF / FULL ms (not judged)"
    );
    for f in figures {
        let b = base.queries.get(&f.query);
        let r = b.and_then(|b| b.ratio);
        let num = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<5} {:<13} {:>7} {:>15} {:>7}  {:<8} {}\n",
            f.query,
            f.mode,
            num(f.ratio_p50),
            r.map(|r| format!("{:.3}..{:.3}", r.min, r.max))
                .unwrap_or_else(|| "-".into()),
            num(r.map(|r| ratio_limit(&r, &t))),
            if failed.contains(&f.query) {
                "FAIL"
            } else {
                "ok"
            },
            if f.ratio_p50.is_some() {
                format!("{:.2} / {:.2}", f.diff_p50_ms, f.full_p50_ms)
            } else {
                format!("- / {:.2}", f.full_p50_ms)
            }
        ));
    }
    out
}

/// Runs the TPC-H suite again for the named queries.
pub type Remeasure<'a> = dyn FnMut(&[String]) -> (Suite, Vec<QueryFigures>) + 'a;

/// The gate's suites: one case per query, failing with every regression
/// named. A query whose only regressions are times is measured once more
/// (`remeasure`, on the same cluster) and fails only when that run exceeds
/// a limit too: noise rarely strikes twice, a real regression does. The
/// confirming run's own oracle checks are returned as a second suite.
pub fn gate_suites(
    base: &Baseline,
    figures: &[QueryFigures],
    remeasure: &mut Remeasure,
) -> Vec<Suite> {
    let t = RatioThresholds::default();
    let mut verdicts = judge(base, figures, &t);
    let timing_only = tpch::baseline::needs_confirmation(&verdicts);
    let mut notes: std::collections::BTreeMap<String, String> = Default::default();
    let mut extra = Vec::new();
    if !timing_only.is_empty() {
        println!(
            "tpch gate: {} exceeded a time limit; measuring once more to confirm",
            timing_only.join(", ")
        );
        let (mut suite, again) = remeasure(&timing_only);
        suite.name = format!("{} (confirming run)", suite.name);
        let second = judge(base, &again, &t);
        for q in &timing_only {
            match second.get(q) {
                // Confirmed: both measurements are named.
                Some(v) => verdicts
                    .entry(q.clone())
                    .or_default()
                    .extend(v.iter().cloned()),
                None if again.iter().any(|f| &f.query == q) => {
                    let first: Vec<String> = verdicts
                        .remove(q)
                        .unwrap_or_default()
                        .iter()
                        .map(describe)
                        .collect();
                    notes.insert(
                        q.clone(),
                        format!(
                            "not confirmed: the second measurement was within its limits (first: {})",
                            first.join("; ")
                        ),
                    );
                }
                None => {}
            }
        }
        extra.push(suite);
    }
    let failed: BTreeSet<String> = verdicts.keys().cloned().collect();
    println!(
        "\ntpch gate ({}):\n{}",
        base.profile,
        gate_table(base, figures, &failed)
    );
    // A baseline query the run did not measure fails too (its only verdict
    // says so).
    let unmeasured: Vec<QueryFigures> = verdicts
        .keys()
        .filter(|q| !figures.iter().any(|f| &f.query == *q))
        .map(|q| QueryFigures::unmeasured(q))
        .collect();
    let cases = figures
        .iter()
        .chain(&unmeasured)
        .map(|f| {
            let regressions = verdicts.get(&f.query);
            let outcome = if regressions.is_some() {
                Outcome::Mismatch
            } else {
                Outcome::Pass
            };
            let mut t = Tally::default();
            t.add(outcome);
            let mut c = CaseReport::new(&f.query, outcome, t, 0);
            if let Some(r) = regressions {
                let lines: Vec<String> = r.iter().map(describe).collect();
                c.message = lines.first().cloned();
                c.details = Some(lines.join("\n"));
            } else if let Some(n) = notes.get(&f.query) {
                c.details = Some(n.clone());
            }
            c.facts = gate_facts(
                base.queries.get(&f.query),
                f,
                regressions.map(Vec::as_slice).unwrap_or_default(),
                notes.get(&f.query).map(String::as_str),
            );
            c.reproduce = Some(format!(
                "harness tpch --gate --profile {} --query {}",
                base.profile, f.query
            ));
            c
        })
        .collect();
    let mut out = vec![Suite::new(
        &format!("tpch gate ({})", base.profile),
        cases,
        0.0,
        None,
    )];
    out.extend(extra);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(diff: f64, full: f64, shape: &str) -> QueryFigures {
        QueryFigures::synthetic("q05", diff, full, shape)
    }

    fn baseline() -> Baseline {
        tpch::baseline::synthetic_baseline(&[10.0, 11.0, 9.0, 10.5], |d| {
            figures(d, 20.0, "Hash Join")
        })
    }

    fn remeasured(diff: f64) -> impl FnMut(&[String]) -> (Suite, Vec<QueryFigures>) {
        move |only: &[String]| {
            assert_eq!(only, ["q05"]);
            (
                Suite::new("tpch", Vec::new(), 0.0, None),
                vec![figures(diff, 20.0, "Hash Join")],
            )
        }
    }

    #[test]
    fn a_slow_time_must_be_confirmed_by_a_second_measurement() {
        let b = baseline();
        let slow = [figures(18.0, 20.0, "Hash Join")];
        // Noise: the second measurement is fine, the case passes and says so.
        let suites = gate_suites(&b, &slow, &mut remeasured(10.2));
        assert_eq!(suites.len(), 2, "the confirming run is reported");
        let case = &suites[0].cases[0];
        assert_eq!(case.outcome, Outcome::Pass);
        assert!(case
            .details
            .as_deref()
            .unwrap_or("")
            .contains("not confirmed"));
        // A real regression: slow twice, it fails with both measurements named.
        let suites = gate_suites(&b, &slow, &mut remeasured(17.0));
        let case = &suites[0].cases[0];
        assert_eq!(case.outcome, Outcome::Mismatch);
        assert_eq!(
            case.details
                .as_deref()
                .unwrap_or("")
                .matches("DIFF/FULL ratio")
                .count(),
            2
        );
    }

    #[test]
    fn a_new_plan_shape_fails_without_a_second_measurement() {
        let b = baseline();
        let mut never = |_: &[String]| -> (Suite, Vec<QueryFigures>) {
            panic!("a plan-shape regression is not re-measured")
        };
        let suites = gate_suites(&b, &[figures(45.0, 20.0, "Nested Loop")], &mut never);
        assert_eq!(suites.len(), 1);
        assert_eq!(suites[0].cases[0].outcome, Outcome::Mismatch);
    }
}
