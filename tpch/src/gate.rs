//! The regression gate's statistics, free of I/O: summarise repeated
//! measurements into a central value and a spread, derive each figure's
//! limit from the recorded spread (with a floor, so a perfectly quiet
//! baseline does not turn noise into failures), and judge a run against a
//! baseline with a verdict that names the figure and how far it moved.
//!
//! What the gate judges is what stays stable within one run on a busy,
//! shared machine: the DIFF/FULL time *ratio* (both measured side by side,
//! interleaved, on the same cluster and data, so that load hits both),
//! plan shapes, temp blocks and the refresh mode. Absolute times move with
//! the machine and its load; they are summarised here for reports and
//! judged by [`judge_time`] only where a caller asks.

use serde::{Deserialize, Serialize};

/// Repeated measurements of one figure, summarised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Median.
    pub median: f64,
    /// Robust spread: the median absolute deviation scaled to a standard
    /// deviation (× 1.4826).
    pub spread: f64,
    /// Largest value seen.
    pub max: f64,
    /// Number of measurements.
    pub n: usize,
}

/// The `p`-th percentile (0–100) by linear interpolation; NaN for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Summarise measurements of one figure.
pub fn summarize(values: &[f64]) -> Figure {
    let median = percentile(values, 50.0);
    let deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    Figure {
        median,
        spread: percentile(&deviations, 50.0) * 1.4826,
        max: values.iter().copied().fold(f64::NAN, f64::max),
        n: values.len(),
    }
}

/// How far a figure may move before it is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Allowed rise in recorded spreads.
    pub spreads: f64,
    /// Floor as a fraction of the baseline median.
    pub floor_ratio: f64,
    /// Floor in the figure's unit (milliseconds for times).
    pub floor_abs: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            spreads: 4.0,
            floor_ratio: 0.25,
            floor_abs: 0.5,
        }
    }
}

/// The largest acceptable value of a figure with baseline `base`.
pub fn limit(base: &Figure, t: &Thresholds) -> f64 {
    base.median
        + (t.spreads * base.spread)
            .max(t.floor_ratio * base.median)
            .max(t.floor_abs)
}

/// Repeated DIFF/FULL time ratios, summarised in log space (a ratio that
/// halves moves as far as one that doubles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioFigure {
    /// Median ratio.
    pub median: f64,
    /// Robust spread of the natural log of the ratios (MAD × 1.4826): 0.1
    /// means about ±10 %.
    pub log_spread: f64,
    /// Smallest ratio seen.
    pub min: f64,
    /// Largest ratio seen.
    pub max: f64,
    /// Number of ratios.
    pub n: usize,
}

/// Summarise DIFF/FULL ratios (non-positive or non-finite values are left
/// out: a ratio needs two measured times).
pub fn summarize_ratios(values: &[f64]) -> RatioFigure {
    let logs: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.ln())
        .collect();
    let median = percentile(&logs, 50.0);
    let deviations: Vec<f64> = logs.iter().map(|v| (v - median).abs()).collect();
    RatioFigure {
        median: median.exp(),
        log_spread: percentile(&deviations, 50.0) * 1.4826,
        min: logs.iter().copied().fold(f64::NAN, f64::min).exp(),
        max: logs.iter().copied().fold(f64::NAN, f64::max).exp(),
        n: logs.len(),
    }
}

/// How far a ratio may move before it is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioThresholds {
    /// Allowed rise in recorded log spreads.
    pub spreads: f64,
    /// Smallest allowed rise, as a factor (1.3: DIFF may become 30 %
    /// slower relative to FULL before the gate fails). The CPU-time ratios
    /// of one build moved by under 5 % between quiet runs and runs under a
    /// CPU hog on these machines; the floor leaves room for another
    /// machine of the kind.
    pub floor_factor: f64,
    /// Smallest rise that counts as DIFF becoming slower than FULL, as a
    /// factor: below it a ratio near 1 crossing 1 is noise, not a change.
    pub crossing_factor: f64,
}

impl Default for RatioThresholds {
    fn default() -> Self {
        RatioThresholds {
            spreads: 4.0,
            floor_factor: 1.3,
            crossing_factor: 1.1,
        }
    }
}

/// The largest acceptable ratio against baseline `base`.
pub fn ratio_limit(base: &RatioFigure, t: &RatioThresholds) -> f64 {
    base.median * (t.spreads * base.log_spread).max(t.floor_factor.ln()).exp()
}

/// Judge a run's DIFF/FULL ratio for query `query` against its baseline:
/// a regression in kind when DIFF was faster than FULL and now is slower
/// (beyond noise), a regression in degree when the ratio exceeds its limit.
pub fn judge_ratio(query: &str, base: &RatioFigure, measured: f64, t: &RatioThresholds) -> Verdict {
    let crossing = base.median
        * (t.spreads * base.log_spread)
            .max(t.crossing_factor.ln())
            .exp();
    let lim = ratio_limit(base, t);
    let baseline = format!(
        "{:.3} (log spread {:.3}, n {}, band {:.3}..{:.3})",
        base.median, base.log_spread, base.n, base.min, base.max
    );
    if base.median < 1.0 && measured > 1.0 && measured > crossing {
        return Verdict::Regressed {
            figure: format!("{query} DIFF vs FULL"),
            baseline,
            measured: format!("{measured:.3}"),
            why: format!(
                "the DIFF statement became slower than the FULL recompute (ratio {measured:.3}, was {:.3})",
                base.median
            ),
        };
    }
    if measured <= lim {
        return Verdict::Ok;
    }
    Verdict::Regressed {
        figure: format!("{query} DIFF/FULL ratio"),
        baseline,
        measured: format!("{measured:.3}"),
        why: format!(
            "exceeds its limit {lim:.3} ({:+.0}% against the baseline median)",
            (measured / base.median - 1.0) * 100.0
        ),
    }
}

/// A judgement of one figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    /// Within its limit.
    Ok,
    /// Regressed: which figure, from what, to what, against which limit.
    Regressed {
        /// The figure, e.g. `q05 differential p50 ms`.
        figure: String,
        /// Baseline central value (or the baseline value for counts and shapes).
        baseline: String,
        /// The run's value.
        measured: String,
        /// Why it fails.
        why: String,
    },
}

/// Judge a time-like figure (lower is better).
pub fn judge_time(figure: &str, base: &Figure, measured: f64, t: &Thresholds) -> Verdict {
    let lim = limit(base, t);
    if measured <= lim {
        return Verdict::Ok;
    }
    Verdict::Regressed {
        figure: figure.into(),
        baseline: format!(
            "{:.3} (spread {:.3}, n {})",
            base.median, base.spread, base.n
        ),
        measured: format!("{measured:.3}"),
        why: format!(
            "exceeds its limit {lim:.3} by {:.3} ({:+.0}% against the baseline median)",
            measured - lim,
            (measured / base.median - 1.0) * 100.0
        ),
    }
}

/// Whether a verdict is about measured time (absolute times, DIFF/FULL
/// ratios), the only kind noise can produce and so the only kind a second
/// measurement must confirm: modes, temp blocks and plan shapes are
/// deterministic.
pub fn is_timing(v: &Verdict) -> bool {
    matches!(v, Verdict::Regressed { figure, .. }
        if figure.ends_with(" ms") || figure.ends_with(" ratio") || figure.ends_with(" DIFF vs FULL"))
}

/// Judge temp blocks: any growth over the most the baseline saw regresses.
pub fn judge_temp_blocks(figure: &str, baseline_max: u64, measured: u64) -> Verdict {
    if measured <= baseline_max {
        Verdict::Ok
    } else {
        Verdict::Regressed {
            figure: figure.into(),
            baseline: baseline_max.to_string(),
            measured: measured.to_string(),
            why: format!("temp blocks grew by {}", measured - baseline_max),
        }
    }
}

/// Judge a plan-shape fingerprint: any change regresses.
pub fn judge_plan(figure: &str, baseline: &str, measured: &str) -> Verdict {
    if baseline == measured {
        Verdict::Ok
    } else {
        Verdict::Regressed {
            figure: figure.into(),
            baseline: baseline.into(),
            measured: measured.into(),
            why: "the plan shape changed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn spread_is_robust_to_one_outlier() {
        let f = summarize(&[10.0, 10.5, 9.5, 10.2, 9.8, 500.0]);
        assert!((f.median - 10.1).abs() < 1e-9);
        assert!(f.spread < 1.0, "{f:?}");
        assert_eq!(f.max, 500.0);
        assert_eq!(f.n, 6);
    }

    #[test]
    fn the_limit_comes_from_the_spread_with_floors() {
        let t = Thresholds::default();
        let noisy = Figure {
            median: 10.0,
            spread: 2.0,
            max: 15.0,
            n: 10,
        };
        assert_eq!(limit(&noisy, &t), 18.0); // 4 spreads
        let quiet = Figure {
            median: 10.0,
            spread: 0.0,
            max: 10.0,
            n: 10,
        };
        assert_eq!(limit(&quiet, &t), 12.5); // 25% floor
        let tiny = Figure {
            median: 0.1,
            spread: 0.0,
            max: 0.1,
            n: 10,
        };
        assert_eq!(limit(&tiny, &t), 0.6); // absolute floor
    }

    #[test]
    fn ratios_are_summarised_in_log_space() {
        let r = summarize_ratios(&[0.5, 2.0, 1.0, 0.0, f64::NAN]);
        assert_eq!(r.n, 3);
        assert!((r.median - 1.0).abs() < 1e-9);
        assert!((r.min - 0.5).abs() < 1e-9 && (r.max - 2.0).abs() < 1e-9);
        assert!((r.log_spread - 2f64.ln() * 1.4826).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn ratio_verdicts_in_degree_and_in_kind() {
        let t = RatioThresholds::default();
        let quiet = RatioFigure {
            median: 0.2,
            log_spread: 0.02,
            min: 0.19,
            max: 0.21,
            n: 15,
        };
        assert!((ratio_limit(&quiet, &t) - 0.26).abs() < 1e-9); // the 1.3x floor
        assert_eq!(judge_ratio("q05", &quiet, 0.25, &t), Verdict::Ok);
        match judge_ratio("q05", &quiet, 0.45, &t) {
            Verdict::Regressed { figure, why, .. } => {
                assert_eq!(figure, "q05 DIFF/FULL ratio");
                assert!(why.contains("+125%"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // DIFF was 5x faster and is now slower: a regression in kind.
        match judge_ratio("q05", &quiet, 1.3, &t) {
            Verdict::Regressed { figure, why, .. } => {
                assert_eq!(figure, "q05 DIFF vs FULL");
                assert!(why.contains("became slower"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        // Near 1, crossing 1 by noise is not a change in kind.
        let near = RatioFigure {
            median: 0.95,
            log_spread: 0.01,
            min: 0.94,
            max: 0.96,
            n: 15,
        };
        assert_eq!(judge_ratio("q06", &near, 1.02, &t), Verdict::Ok);
        assert!(matches!(
            judge_ratio("q06", &near, 1.1, &t),
            Verdict::Regressed { figure, .. } if figure == "q06 DIFF vs FULL"
        ));
        assert!(is_timing(&judge_ratio("q06", &near, 1.1, &t)));
        assert!(!is_timing(&judge_plan("q06 plan", "a", "b")));
    }

    #[test]
    fn verdicts_name_the_figure_and_the_move() {
        let t = Thresholds::default();
        let base = Figure {
            median: 10.0,
            spread: 1.0,
            max: 12.0,
            n: 5,
        };
        assert_eq!(
            judge_time("q05 differential p50 ms", &base, 13.9, &t),
            Verdict::Ok
        );
        match judge_time("q05 differential p50 ms", &base, 30.0, &t) {
            Verdict::Regressed { figure, why, .. } => {
                assert_eq!(figure, "q05 differential p50 ms");
                assert!(why.contains("+200%"), "{why}");
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(judge_temp_blocks("q09 temp blocks", 10, 10), Verdict::Ok);
        assert!(matches!(
            judge_temp_blocks("q09 temp blocks", 0, 8),
            Verdict::Regressed { .. }
        ));
        assert_eq!(
            judge_plan("q04 plan", "HashJoin(Seq,Seq)", "HashJoin(Seq,Seq)"),
            Verdict::Ok
        );
        assert!(matches!(
            judge_plan("q04 plan", "HashJoin", "NestLoop"),
            Verdict::Regressed { .. }
        ));
    }
}
