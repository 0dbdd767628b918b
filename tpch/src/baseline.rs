//! Baselines and the gate's judging rule, free of I/O. A baseline holds,
//! per query, the DIFF/FULL ratio band over several runs (each run's median
//! of its interleaved pairs), the refresh mode, the most temp blocks seen,
//! every plan shape per phase and, for reports only, the absolute times.
//! [`judge`] names every regression of one run against it: a ratio above
//! its limit or DIFF becoming slower than FULL ([`crate::gate`]), another
//! mode, more temp blocks, a new plan shape, a query not measured. The
//! runner's `checks::tpch::gate` turns verdicts into report cases and applies the
//! confirmation rule ([`needs_confirmation`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::figures::QueryFigures;
use crate::gate::{
    judge_plan, judge_ratio, judge_temp_blocks, summarize, summarize_ratios, Figure, RatioFigure,
    RatioThresholds, Verdict,
};

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
                            crate::plans::shape_difference(&closest, &e.facts.fingerprint);
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

/// The queries whose every regression is about measured time, the only
/// kind noise can produce: they are measured once more, and fail only if
/// that measurement regresses too. Modes, plan shapes and temp blocks are
/// deterministic and fail at once.
pub fn needs_confirmation(verdicts: &BTreeMap<String, Vec<Verdict>>) -> Vec<String> {
    verdicts
        .iter()
        .filter(|(_, v)| v.iter().all(crate::gate::is_timing))
        .map(|(q, _)| q.clone())
        .collect()
}

/// A baseline measured from one run per value of `diffs` (each run made by
/// `run`): for tests of the gate.
pub fn synthetic_baseline(diffs: &[f64], run: impl Fn(f64) -> QueryFigures) -> Baseline {
    let runs: Vec<Vec<QueryFigures>> = diffs.iter().map(|d| vec![run(*d)]).collect();
    Baseline {
        profile: "t".into(),
        machine: Machine {
            cpus: 2,
            cpu_model: "test".into(),
            memory_kb: 0,
            postgres: "test".into(),
        },
        commit: "x".into(),
        sf: 0.01,
        cycles: 1,
        runs: runs.len(),
        runs_under_load: 0,
        seed: 1,
        queries: measure(&runs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(diff: f64, full: f64, shape: &str) -> QueryFigures {
        QueryFigures::synthetic("q05", diff, full, shape)
    }

    fn baseline() -> Baseline {
        synthetic_baseline(&[10.0, 11.0, 9.0, 10.5], |d| figures(d, 20.0, "Hash Join"))
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
}
