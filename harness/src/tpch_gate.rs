//! Baselines and the TPC-H regression gate. A baseline is measured by
//! running the TPC-H suite several times: per query, the DIFF/FULL time
//! ratio (measured side by side, interleaved, in each run) with its
//! spread, the refresh mode, the most temp blocks seen, every plan shape
//! seen per phase, and, for reports only, the absolute times.
//!
//! The gate judges one run against it by what stays stable within a run on
//! a busy machine, and so carries from one machine to another of its kind:
//! a ratio above the limit its recorded spread allows (with a floor), DIFF
//! becoming slower than FULL, another refresh mode, more temp blocks than
//! ever seen, or a plan shape never seen is a regression, named with the
//! figure and the move. A ratio regression must be confirmed by a second
//! measurement. Absolute times move with the machine's load: they are
//! reported against the baseline, never judged. Thresholds come from
//! `tpch::gate`; there are no per-query numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tpch::gate::{
    judge_plan, judge_ratio, judge_temp_blocks, ratio_limit, summarize, summarize_ratios, Figure,
    RatioFigure, RatioThresholds, Verdict,
};

use oracles::outcome::{Outcome, Tally};

use crate::report::{CaseReport, Suite};
use crate::tpch_suite::QueryFigures;

/// One query's baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryBaseline {
    /// The mode the engine chose.
    pub mode: String,
    /// DIFF/FULL CPU-time ratio: each run's median over its interleaved
    /// pairs, summarised over the runs (absent for FULL stream tables, and
    /// in baselines older than the ratio gate).
    #[serde(default)]
    pub ratio: Option<RatioFigure>,
    /// DIFFERENTIAL statement execution, ms (absent for FULL stream
    /// tables); reported, not judged.
    pub diff_ms: Option<Figure>,
    /// FULL recompute execution, ms; reported, not judged.
    pub full_ms: Figure,
    /// Most temp blocks (read + written) any phase used.
    pub temp_blocks_max: u64,
    /// Every plan shape seen, per phase.
    pub plan_shapes: BTreeMap<String, BTreeSet<String>>,
}

/// The machine a baseline was measured on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Memory, kB.
    pub memory_kb: u64,
    /// `SELECT version()`.
    pub postgres: String,
}

/// A stored baseline (`baselines/<profile>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Profile name.
    pub profile: String,
    /// Where it was measured.
    pub machine: Machine,
    /// The commit measured.
    pub commit: String,
    /// Scale factor.
    pub sf: f64,
    /// Refresh cycles per run.
    pub cycles: u64,
    /// Runs measured.
    pub runs: usize,
    /// How many of them ran under the runner's CPU hog.
    #[serde(default)]
    pub runs_under_load: usize,
    /// Change-set seed.
    pub seed: u64,
    /// Per query.
    pub queries: BTreeMap<String, QueryBaseline>,
}

impl Baseline {
    /// Options that repeat the measured runs (scale, cycles, seed, queries),
    /// with `settings` applied (an injected regression, say).
    pub fn run_options(&self, settings: Vec<String>) -> crate::tpch_suite::TpchOptions {
        crate::tpch_suite::TpchOptions {
            sf: self.sf,
            cycles: self.cycles,
            fraction: 0.001,
            seed: self.seed,
            only: self.queries.keys().cloned().collect(),
            settings,
            database: "tpch".into(),
        }
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

/// A query's absolute times of one kind: from the interleaved pairs where
/// it has them, from the single EXPLAIN of each cycle otherwise.
fn times(f: &QueryFigures, phase: &str) -> Vec<f64> {
    if !f.pairs.is_empty() {
        return f
            .pairs
            .iter()
            .map(|p| match phase {
                "differential" => p.diff_ms,
                _ => p.full_ms,
            })
            .collect();
    }
    f.explains
        .iter()
        .filter(|e| e.phase == phase)
        .map(|e| e.facts.execution_ms)
        .collect()
}

/// Fold several runs' figures into per-query baselines.
pub fn measure(runs: &[Vec<QueryFigures>]) -> BTreeMap<String, QueryBaseline> {
    let mut out = BTreeMap::new();
    let Some(first) = runs.first() else {
        return out;
    };
    for q in first {
        let all: Vec<&QueryFigures> = runs
            .iter()
            .filter_map(|r| r.iter().find(|f| f.query == q.query))
            .collect();
        let collect =
            |phase: &str| -> Vec<f64> { all.iter().flat_map(|f| times(f, phase)).collect() };
        let diff = collect("differential");
        // The gate judges a run's median ratio: the band is that of the
        // runs' medians, not of single pairs (a sub-millisecond statement's
        // CPU time is noisy alone; the median of a run's pairs is not).
        let ratios: Vec<f64> = all.iter().filter_map(|f| f.ratio_p50).collect();
        let mut shapes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &all {
            for e in &f.explains {
                shapes
                    .entry(e.phase.clone())
                    .or_default()
                    .insert(e.facts.fingerprint.clone());
            }
        }
        out.insert(
            q.query.clone(),
            QueryBaseline {
                mode: q.mode.clone(),
                ratio: (!ratios.is_empty()).then(|| summarize_ratios(&ratios)),
                diff_ms: (!diff.is_empty()).then(|| summarize(&diff)),
                full_ms: summarize(&collect("full_recompute")),
                temp_blocks_max: all.iter().map(|f| f.temp_blocks).max().unwrap_or(0),
                plan_shapes: shapes,
            },
        );
    }
    out
}

/// Every regression of one run against a baseline; empty when it passes.
pub fn judge(
    base: &Baseline,
    run: &[QueryFigures],
    t: &RatioThresholds,
) -> BTreeMap<String, Vec<Verdict>> {
    let mut out = BTreeMap::new();
    for f in run {
        let mut v = Vec::new();
        match base.queries.get(&f.query) {
            None => v.push(Verdict::Regressed {
                figure: format!("{} baseline", f.query),
                baseline: "absent".into(),
                measured: "present".into(),
                why: format!(
                    "the baseline has no entry for {}; run `harness baseline refresh`",
                    f.query
                ),
            }),
            Some(b) => {
                if b.mode != f.mode {
                    v.push(Verdict::Regressed {
                        figure: format!("{} mode", f.query),
                        baseline: b.mode.clone(),
                        measured: f.mode.clone(),
                        why: "the engine chose another refresh mode".into(),
                    });
                }
                match (&b.ratio, f.ratio_p50) {
                    (Some(r), Some(measured)) => v.push(judge_ratio(&f.query, r, measured, t)),
                    (None, Some(_)) => v.push(Verdict::Regressed {
                        figure: format!("{} baseline ratio", f.query),
                        baseline: "absent".into(),
                        measured: "present".into(),
                        why: format!(
                            "the baseline has no DIFF/FULL ratio for {} (measured before the ratio \
                             gate, or while it ran FULL); run `harness baseline refresh`",
                            f.query
                        ),
                    }),
                    // FULL now: the mode verdict above says so.
                    (_, None) => {}
                }
                v.push(judge_temp_blocks(
                    &format!("{} temp blocks", f.query),
                    b.temp_blocks_max,
                    f.temp_blocks,
                ));
                for e in &f.explains {
                    let seen = b.plan_shapes.get(&e.phase);
                    if !seen.is_some_and(|s| s.contains(&e.facts.fingerprint)) {
                        // Show where it departs from the closest known shape.
                        let closest = seen
                            .and_then(|s| {
                                s.iter().max_by_key(|k| {
                                    k.chars()
                                        .zip(e.facts.fingerprint.chars())
                                        .take_while(|(a, b)| a == b)
                                        .count()
                                })
                            })
                            .cloned()
                            .unwrap_or_default();
                        let (was, now) =
                            tpch::plans::shape_difference(&closest, &e.facts.fingerprint);
                        v.push(judge_plan(
                            &format!("{} {} plan shape (cycle {})", f.query, e.phase, e.cycle),
                            &was,
                            &now,
                        ));
                    }
                }
            }
        }
        v.retain(|x| *x != Verdict::Ok);
        if !v.is_empty() {
            out.insert(f.query.clone(), v);
        }
    }
    for q in base.queries.keys() {
        if !run.iter().any(|f| &f.query == q) {
            out.insert(
                q.clone(),
                vec![Verdict::Regressed {
                    figure: format!("{q} measured"),
                    baseline: "present".into(),
                    measured: "absent".into(),
                    why: format!("{q} is in the baseline but the run did not measure it"),
                }],
            );
        }
    }
    out
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

/// One verdict as a line.
pub fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Ok => "ok".into(),
        Verdict::Regressed {
            figure,
            baseline,
            measured,
            why,
        } => format!("{figure}: {why} (baseline {baseline}, measured {measured})"),
    }
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
    let timing_only: Vec<String> = verdicts
        .iter()
        .filter(|(_, v)| v.iter().all(tpch::gate::is_timing))
        .map(|(q, _)| q.clone())
        .collect();
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
    use crate::tpch_suite::{PhaseExplain, TimedPair};
    use tpch::plans::PlanFacts;

    fn figures(diff: f64, full: f64, shape: &str) -> QueryFigures {
        let e = |phase: &str, ms: f64, fp: &str| PhaseExplain {
            cycle: 1,
            phase: phase.into(),
            facts: PlanFacts {
                execution_ms: ms,
                temp_read_blocks: 0,
                temp_written_blocks: 0,
                fingerprint: fp.into(),
            },
        };
        QueryFigures {
            query: "q05".into(),
            mode: "DIFFERENTIAL".into(),
            fallback_reason: None,
            refresh_ms: vec![diff],
            p50_ms: diff,
            p99_ms: diff,
            phases: Vec::new(),
            explains: vec![
                e("differential", diff, shape),
                e("full_recompute", full, "Seq Scan"),
            ],
            pairs: vec![TimedPair {
                cycle: 1,
                full_ms: full,
                diff_ms: diff,
                full_elapsed_ms: full,
                diff_elapsed_ms: diff,
            }],
            ratio_p50: Some(diff / full),
            full_p50_ms: full,
            diff_p50_ms: diff,
            temp_blocks: 0,
            last_plans: Vec::new(),
        }
    }

    fn baseline() -> Baseline {
        let runs: Vec<Vec<QueryFigures>> = [10.0, 11.0, 9.0, 10.5]
            .iter()
            .map(|d| vec![figures(*d, 20.0, "Hash Join")])
            .collect();
        Baseline {
            profile: "t".into(),
            machine: machine("pg".into()),
            commit: "x".into(),
            sf: 0.01,
            cycles: 1,
            runs: 4,
            runs_under_load: 0,
            seed: 1,
            queries: measure(&runs),
        }
    }

    #[test]
    fn an_unchanged_run_passes() {
        let b = baseline();
        assert!(judge(
            &b,
            &[figures(10.8, 21.0, "Hash Join")],
            &RatioThresholds::default()
        )
        .is_empty());
    }

    #[test]
    fn a_slower_plan_is_named_with_its_figures() {
        let b = baseline();
        let v = judge(
            &b,
            &[figures(45.0, 20.0, "Nested Loop")],
            &RatioThresholds::default(),
        );
        let lines: Vec<String> = v["q05"].iter().map(describe).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("q05 DIFF vs FULL") && l.contains("became slower")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("differential plan shape") && l.contains("Nested Loop")),
            "{lines:?}"
        );
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
    fn a_busy_machine_slowing_diff_and_full_together_passes() {
        let b = baseline();
        // Three times slower, both: the ratio holds, absolute times are not judged.
        assert!(judge(
            &b,
            &[figures(31.0, 61.0, "Hash Join")],
            &RatioThresholds::default()
        )
        .is_empty());
    }

    #[test]
    fn a_query_missing_from_the_run_or_its_ratio_from_the_baseline_fails() {
        let mut b = baseline();
        b.queries.insert("q07".into(), b.queries["q05"].clone());
        let v = judge(
            &b,
            &[figures(10.0, 20.0, "Hash Join")],
            &RatioThresholds::default(),
        );
        assert!(
            describe(&v["q07"][0]).contains("did not measure it"),
            "{v:?}"
        );
        b.queries.get_mut("q05").unwrap().ratio = None;
        let v = judge(
            &b,
            &[figures(10.0, 20.0, "Hash Join")],
            &RatioThresholds::default(),
        );
        assert!(describe(&v["q05"][0]).contains("baseline refresh"), "{v:?}");
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
