//! The regression gate's statistics, free of I/O: summarise repeated
//! measurements into a central value and a spread, derive each figure's
//! limit from the recorded spread (with a floor, so a perfectly quiet
//! baseline does not turn noise into failures), and judge a run against a
//! baseline with a verdict that names the figure and how far it moved.

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

/// Whether a verdict is about a time (figures named `... ms`), the only
/// kind noise can produce: temp blocks and plan shapes are deterministic.
pub fn is_time(v: &Verdict) -> bool {
    matches!(v, Verdict::Regressed { figure, .. } if figure.ends_with(" ms"))
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
