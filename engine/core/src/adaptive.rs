//! The adaptive choice an `AUTO` stream table makes before each refresh:
//! apply the pending changes (DIFFERENTIAL) or recompute (FULL).
//!
//! A differential refresh costs about a fixed part plus a part per pending
//! change; a full one costs about the same whatever is pending. Past some
//! volume (a few percent of the sources, for a plain aggregate) recomputing
//! is cheaper. The extension counts the pending changes, only as far as
//! the choice needs ([`count_limit`], and [`recount_limit`] when the
//! backlog is large and the stream table has not measured enough yet),
//! reads what earlier refreshes of the stream table measured, and asks
//! [`choose`]. It records every measurement with [`learn_full`] and
//! [`learn_differential`].
//!
//! The choice is an estimate: it never changes what a refresh computes,
//! only how, so a poor estimate costs time, never correctness.

/// The settings the choice reads (`pg_trickle.adaptive_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveSettings {
    /// `pg_trickle.adaptive_auto`: off, AUTO is always DIFFERENTIAL when
    /// the query supports it.
    pub enabled: bool,
    /// `pg_trickle.adaptive_min_changes`: fewer pending changes than this
    /// always refresh DIFFERENTIAL, without an estimate.
    pub min_changes: u64,
    /// `pg_trickle.adaptive_full_fraction`: with no estimates yet, pending
    /// changes above this fraction of the sources' rows refresh FULL.
    pub full_fraction: f64,
}

/// What earlier refreshes of one stream table measured (None: never yet).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimates {
    /// Milliseconds a FULL refresh took; infinite after a FULL the choice
    /// made failed ([`after_failed_full`]), until a FULL refresh succeeds.
    pub full_ms: Option<f64>,
    /// Milliseconds a DIFFERENTIAL refresh of fewer than `min_changes`
    /// changes took: the fixed part of its cost.
    pub diff_fixed_ms: Option<f64>,
    /// Milliseconds a DIFFERENTIAL refresh took per pending change beyond
    /// its fixed part, from refreshes of at least `min_changes` changes.
    pub diff_ms_per_change: Option<f64>,
}

impl Estimates {
    /// The per-change figure, when there is one to go by (a figure of 0,
    /// which a refresh faster than its fixed part measures, is none).
    fn per_change(&self) -> Option<f64> {
        self.diff_ms_per_change
            .filter(|p| p.is_finite() && *p > 0.0)
    }

    /// The fixed part of a DIFFERENTIAL refresh and a FULL refresh's time,
    /// when the fixed part alone was measured above it: then a
    /// DIFFERENTIAL refresh is slower than FULL at any volume (a query
    /// whose delta recomputes about as much as the query, say).
    ///
    /// Not below [`SMALL_FULL_MS`] of FULL: there the fixed part is the
    /// statement's planning and catalog work, a few milliseconds that a
    /// FULL refresh rewriting every row of the stream table is not worth.
    fn slower_at_any_volume(&self) -> Option<(f64, f64)> {
        let (fixed, full) = (self.diff_fixed_ms?, self.full_ms?);
        (full.is_finite() && full >= SMALL_FULL_MS && fixed.is_finite() && fixed > full)
            .then_some((fixed, full))
    }

    /// Whether a FULL the choice made failed and none has succeeded since.
    fn full_failed(&self) -> bool {
        self.full_ms == Some(f64::INFINITY)
    }

    /// The estimated time of a DIFFERENTIAL refresh of `changes` changes,
    /// and of a FULL one, once both have been measured.
    fn weigh(&self, changes: u64) -> Option<(f64, f64)> {
        let (full, per) = (self.full_ms?, self.per_change()?);
        Some((
            self.diff_fixed_ms.unwrap_or(0.0) + per * changes as f64,
            full,
        ))
    }
}

/// Milliseconds of FULL below which a small backlog is applied even when
/// small differential refreshes took longer (see
/// `Estimates::slower_at_any_volume`).
pub const SMALL_FULL_MS: f64 = 10.0;

/// What is pending for one refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// Pending changes counted over the sources (each source counted up to
    /// a limit, so this may be less than what is there).
    pub changes: u64,
    /// False when some source's count stopped at the limit: there are
    /// more than `changes`.
    pub complete: bool,
    /// The sources' rows as the planner estimates them (`reltuples`); None
    /// when not read (or no source has been analysed or vacuumed yet).
    pub source_rows: Option<f64>,
}

/// The mode a refresh runs and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Apply the changes. `reason` is set when an estimate was consulted.
    Differential {
        /// Why, when the choice weighed the two (recorded in the history).
        reason: Option<String>,
    },
    /// Recompute.
    Full {
        /// Why (recorded in the history).
        reason: String,
    },
}

/// How many times `min_changes` a large backlog is counted to, to learn
/// from, when neither estimates nor the sources' rows settle the choice.
pub const LEARN_COUNT: u64 = 100;

fn limit_at(threshold: f64, settings: &AdaptiveSettings) -> u64 {
    let at = threshold.ceil().clamp(0.0, u64::MAX as f64 / 4.0) as u64;
    at.max(settings.min_changes).saturating_add(1)
}

/// How many pending changes per source the first count goes to: with
/// both estimates, as far as settles the choice; without, one past
/// `min_changes` (whether the backlog is worth weighing). 1 when the
/// choice is off: counting then only says whether anything is pending.
pub fn count_limit(settings: &AdaptiveSettings, estimates: &Estimates) -> u64 {
    if !settings.enabled {
        return 1;
    }
    match (estimates.full_ms, estimates.per_change()) {
        (Some(full), Some(per)) if full.is_finite() => limit_at(
            (full - estimates.diff_fixed_ms.unwrap_or(0.0)) / per,
            settings,
        ),
        _ => limit_at(0.0, settings),
    }
}

/// Whether the first count leaves the choice to the fraction rule: a
/// backlog of at least `min_changes` without both estimates. Then the
/// sources' rows are read, and, when the first count stopped at its
/// limit, the changes are counted again to [`recount_limit`].
pub fn needs_rows(settings: &AdaptiveSettings, estimates: &Estimates, first: &Pending) -> bool {
    settings.enabled
        && first.changes >= settings.min_changes
        && estimates.weigh(0).is_none()
        && !estimates.full_failed()
}

/// How far the second count goes: past `adaptive_full_fraction` of the
/// sources' rows (which settles the fraction rule), or [`LEARN_COUNT`]
/// times `min_changes` when the rows are unknown (enough to learn from).
pub fn recount_limit(settings: &AdaptiveSettings, source_rows: Option<f64>) -> u64 {
    match source_rows {
        Some(rows) if rows > 0.0 => limit_at(rows * settings.full_fraction, settings),
        _ => settings
            .min_changes
            .saturating_mul(LEARN_COUNT)
            .saturating_add(1),
    }
}

/// Choose the mode of one refresh of an `AUTO` stream table whose query
/// supports DIFFERENTIAL and that needs no reinitialisation.
pub fn choose(settings: &AdaptiveSettings, estimates: &Estimates, pending: &Pending) -> Choice {
    let n = pending.changes;
    if !settings.enabled || n == 0 {
        return Choice::Differential { reason: None };
    }
    let (at_least, or_more) = if pending.complete {
        ("", "")
    } else {
        ("at least ", " or more")
    };
    if let Some((fixed, full)) = estimates.slower_at_any_volume() {
        return Choice::Full {
            reason: format!(
                "AUTO chose FULL: {at_least}{} pending changes; DIFFERENTIAL refreshes of fewer than {} changes \
                 took {}, more than FULL at {}",
                thousands(n),
                thousands(settings.min_changes),
                millis(fixed),
                millis(full)
            ),
        };
    }
    if n < settings.min_changes {
        return Choice::Differential { reason: None };
    }
    if estimates.full_failed() {
        return Choice::Differential {
            reason: Some(format!(
                "AUTO chose DIFFERENTIAL: {at_least}{} pending changes; FULL failed when last chosen \
                 (it is weighed again after a FULL refresh succeeds)",
                thousands(n)
            )),
        };
    }
    if let Some((diff, full)) = estimates.weigh(n) {
        let weighed = format!(
            "{at_least}{} pending changes: DIFFERENTIAL estimated at {}{or_more} against {} for FULL",
            thousands(n),
            millis(diff),
            millis(full)
        );
        return if diff > full {
            Choice::Full {
                reason: format!("AUTO chose FULL: {weighed}"),
            }
        } else {
            Choice::Differential {
                reason: Some(format!("AUTO chose DIFFERENTIAL: {weighed}")),
            }
        };
    }
    match pending.source_rows {
        Some(rows) if rows > 0.0 && n as f64 > rows * settings.full_fraction => Choice::Full {
            reason: format!(
                "AUTO chose FULL: {at_least}{} pending changes, more than {} \
                 (pg_trickle.adaptive_full_fraction) of the sources' {} rows; not measured enough yet to estimate",
                thousands(n),
                percent(settings.full_fraction),
                thousands(rows.round() as u64),
            ),
        },
        _ => Choice::Differential { reason: None },
    }
}

/// How far the DIFFERENTIAL estimates drop each time they make a refresh
/// FULL: a stream table whose differential refreshes got cheaper (an index
/// was added, the data changed shape) retries DIFFERENTIAL after a few
/// dozen such refreshes at most, and learns again from what that costs.
pub const FORGET: f64 = 0.95;

/// The estimates to store after a refresh that the estimates made FULL:
/// both DIFFERENTIAL figures lowered by [`FORGET`].
pub fn after_full_choice(estimates: &Estimates) -> Estimates {
    Estimates {
        diff_fixed_ms: estimates.diff_fixed_ms.map(|p| p * FORGET),
        diff_ms_per_change: estimates.diff_ms_per_change.map(|p| p * FORGET),
        ..*estimates
    }
}

/// The estimates after a FULL the choice made failed (and the changes were
/// applied instead): FULL is not chosen again until a FULL refresh (a
/// reinitialisation, say) succeeds, which [`learn_full`] measures anew.
pub fn after_failed_full(estimates: &Estimates) -> Estimates {
    Estimates {
        full_ms: Some(f64::INFINITY),
        ..*estimates
    }
}

/// The mean of the old figure and a new measurement, so that one noisy
/// refresh moves it only halfway; a measurement that is no duration
/// leaves the old figure.
fn mean_with(old: Option<f64>, measured: f64) -> Option<f64> {
    if !measured.is_finite() || measured < 0.0 {
        return old;
    }
    Some(match old {
        Some(o) if o.is_finite() && o >= 0.0 => (o + measured) / 2.0,
        _ => measured,
    })
}

/// The estimates after a FULL refresh that took `ms`.
pub fn learn_full(estimates: &Estimates, ms: f64) -> Estimates {
    Estimates {
        full_ms: mean_with(estimates.full_ms, ms),
        ..*estimates
    }
}

/// The estimates after a DIFFERENTIAL refresh of exactly `changes`
/// changes (a complete count) that took `ms`: a small one measures the
/// fixed part, a large one the part per change beyond it.
pub fn learn_differential(
    settings: &AdaptiveSettings,
    estimates: &Estimates,
    changes: u64,
    ms: f64,
) -> Estimates {
    if !settings.enabled {
        return *estimates;
    }
    if changes < settings.min_changes {
        return Estimates {
            diff_fixed_ms: mean_with(estimates.diff_fixed_ms, ms),
            ..*estimates
        };
    }
    let beyond = (ms - estimates.diff_fixed_ms.unwrap_or(0.0)).max(0.0);
    Estimates {
        diff_ms_per_change: mean_with(estimates.diff_ms_per_change, beyond / changes as f64),
        ..*estimates
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn millis(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn percent(f: f64) -> String {
    let p = f * 100.0;
    if p >= 10.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.2}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ON: AdaptiveSettings = AdaptiveSettings {
        enabled: true,
        min_changes: 1000,
        full_fraction: 0.02,
    };

    fn pending(changes: u64, rows: f64) -> Pending {
        Pending {
            changes,
            complete: true,
            source_rows: Some(rows),
        }
    }

    fn measured(full: f64, fixed: f64, per: f64) -> Estimates {
        Estimates {
            full_ms: Some(full),
            diff_fixed_ms: Some(fixed),
            diff_ms_per_change: Some(per),
        }
    }

    #[test]
    fn few_changes_are_applied_without_weighing() {
        let e = measured(6.0, 5.0, 10.0);
        assert_eq!(
            choose(&ON, &e, &pending(999, 1000.0)),
            Choice::Differential { reason: None }
        );
    }

    #[test]
    fn a_differential_refresh_slower_than_full_at_any_volume_recomputes_even_a_few_changes() {
        // Small refreshes measured 40 ms, FULL 10 ms: nothing pending is
        // worth applying, however little.
        let e = Estimates {
            full_ms: Some(10.0),
            diff_fixed_ms: Some(40.0),
            diff_ms_per_change: None,
        };
        assert_eq!(
            choose(&ON, &e, &pending(3, 1_000_000.0)),
            Choice::Full {
                reason: "AUTO chose FULL: 3 pending changes; DIFFERENTIAL refreshes of fewer than 1,000 changes \
                         took 40.0 ms, more than FULL at 10.0 ms"
                    .into()
            }
        );
        // A FULL of a few milliseconds (a small source, where the fixed
        // part is planning): the changes are applied.
        let small = Estimates {
            full_ms: Some(9.9),
            diff_fixed_ms: Some(40.0),
            diff_ms_per_change: None,
        };
        assert_eq!(
            choose(&ON, &small, &pending(3, 1000.0)),
            Choice::Differential { reason: None }
        );
        assert!(matches!(
            choose(&ON, &e, &pending(50_000, 1e9)),
            Choice::Full { .. }
        ));
        // Nothing pending: nothing to recompute for.
        assert_eq!(
            choose(&ON, &e, &pending(0, 1_000_000.0)),
            Choice::Differential { reason: None }
        );
        // Unmeasured FULL, or a FULL that failed: not chosen this way.
        for full_ms in [None, Some(f64::INFINITY)] {
            let e = Estimates { full_ms, ..e };
            assert!(!matches!(
                choose(&ON, &e, &pending(3, 1_000_000.0)),
                Choice::Full { .. }
            ));
        }
        // Each FULL so chosen lowers the fixed part: DIFFERENTIAL is tried
        // again after 28 of them, and measures afresh.
        let (mut e, mut fulls) = (e, 0);
        while matches!(choose(&ON, &e, &pending(3, 1e6)), Choice::Full { .. }) {
            e = after_full_choice(&e);
            fulls += 1;
            assert!(fulls < 100, "never retried DIFFERENTIAL");
        }
        assert_eq!(fulls, 28);
    }

    #[test]
    fn without_measurements_the_fraction_of_the_sources_decides() {
        let e = Estimates::default();
        assert_eq!(
            choose(&ON, &e, &pending(20_000, 1_000_000.0)),
            Choice::Differential { reason: None }
        );
        let Choice::Full { reason } = choose(&ON, &e, &pending(50_000, 1_000_000.0)) else {
            panic!("5% of the rows should refresh FULL");
        };
        assert_eq!(
            reason,
            "AUTO chose FULL: 50,000 pending changes, more than 2.00% \
             (pg_trickle.adaptive_full_fraction) of the sources' 1,000,000 rows; not measured enough yet to estimate"
        );
        let counted = Pending {
            complete: false,
            ..pending(20_001, 1_000_000.0)
        };
        let Choice::Full { reason } = choose(&ON, &e, &counted) else {
            panic!("past the limit");
        };
        assert!(
            reason.starts_with("AUTO chose FULL: at least 20,001 pending changes, more than"),
            "{reason}"
        );
        let unknown = Pending {
            changes: 50_000,
            complete: true,
            source_rows: None,
        };
        assert_eq!(
            choose(&ON, &e, &unknown),
            Choice::Differential { reason: None }
        );
    }

    #[test]
    fn measurements_decide_once_there_are_both() {
        let e = measured(180.0, 5.0, 0.007);
        assert_eq!(
            choose(&ON, &e, &pending(10_000, 1_000_000.0)),
            Choice::Differential {
                reason: Some(
                    "AUTO chose DIFFERENTIAL: 10,000 pending changes: DIFFERENTIAL estimated at 75.0 ms against 180 ms for FULL"
                        .into()
                )
            }
        );
        assert_eq!(
            choose(&ON, &e, &pending(50_000, 1_000_000.0)),
            Choice::Full {
                reason: "AUTO chose FULL: 50,000 pending changes: DIFFERENTIAL estimated at 355 ms against 180 ms for FULL"
                    .into()
            }
        );
    }

    #[test]
    fn off_means_differential_and_counting_only_whether_anything_is_pending() {
        let off = AdaptiveSettings {
            enabled: false,
            ..ON
        };
        assert_eq!(
            choose(&off, &Estimates::default(), &pending(u64::MAX, 1.0)),
            Choice::Differential { reason: None }
        );
        assert_eq!(count_limit(&off, &Estimates::default()), 1);
        let e = Estimates::default();
        assert_eq!(learn_differential(&off, &e, 5000, 10.0), e);
    }

    #[test]
    fn counting_stops_where_the_choice_is_settled() {
        assert_eq!(count_limit(&ON, &Estimates::default()), 1001);
        assert_eq!(count_limit(&ON, &measured(180.0, 0.0, 0.01)), 18_001);
        assert_eq!(count_limit(&ON, &measured(180.0, 80.0, 0.01)), 10_001);
        assert_eq!(recount_limit(&ON, Some(1_000_000.0)), 20_001);
        assert_eq!(recount_limit(&ON, Some(1000.0)), 1001);
        assert_eq!(recount_limit(&ON, None), 100_001);
        let first = Pending {
            changes: 1001,
            complete: false,
            source_rows: None,
        };
        assert!(needs_rows(&ON, &Estimates::default(), &first));
        assert!(!needs_rows(&ON, &measured(1.0, 1.0, 1.0), &first));
        let exactly = Pending {
            changes: 1000,
            complete: true,
            source_rows: None,
        };
        assert!(needs_rows(&ON, &Estimates::default(), &exactly));
        let small = Pending {
            changes: 999,
            ..exactly
        };
        assert!(!needs_rows(&ON, &Estimates::default(), &small));
    }

    #[test]
    fn small_refreshes_measure_the_fixed_part_and_large_ones_the_rest() {
        let e = learn_differential(&ON, &Estimates::default(), 10, 4.0);
        assert_eq!(e.diff_fixed_ms, Some(4.0));
        assert_eq!(e.diff_ms_per_change, None);
        let e = learn_differential(&ON, &e, 2000, 24.0);
        assert_eq!(e.diff_ms_per_change, Some(0.01));
        let e = learn_differential(&ON, &e, 2000, 44.0);
        assert_eq!(e.diff_ms_per_change, Some(0.015));
        let e = learn_full(&e, 100.0);
        assert_eq!(e.full_ms, Some(100.0));
        assert_eq!(learn_full(&e, f64::NAN), e);
        assert_eq!(learn_full(&e, -1.0), e);
        assert_eq!(
            learn_full(&Estimates::default(), f64::INFINITY).full_ms,
            None
        );
    }

    #[test]
    fn a_failed_full_choice_is_not_made_again_until_a_full_refresh_succeeds() {
        let e = after_failed_full(&Estimates::default());
        assert_eq!(e.diff_ms_per_change, None, "nothing made up");
        assert_eq!(count_limit(&ON, &e), 1001);
        let large = Pending {
            changes: 1001,
            complete: false,
            source_rows: None,
        };
        assert!(
            !needs_rows(&ON, &e, &large),
            "the choice is DIFFERENTIAL anyway"
        );
        for n in [1000, 1_000_000, u64::MAX / 4] {
            let Choice::Differential { reason: Some(why) } = choose(&ON, &e, &pending(n, 1000.0))
            else {
                panic!("FULL chosen again after it failed");
            };
            assert!(why.contains("FULL failed when last chosen"), "{why}");
        }
        let e = learn_full(&e, 50.0);
        assert_eq!(e.full_ms, Some(50.0));
        assert!(matches!(
            choose(
                &ON,
                &learn_differential(&ON, &e, 2000, 200.0),
                &pending(2000, 1000.0)
            ),
            Choice::Full { .. }
        ));
    }

    #[test]
    fn a_per_change_figure_of_zero_counts_as_unmeasured() {
        // A large refresh faster than the fixed part measures 0 per change:
        // the next large backlog is counted and weighed as if unmeasured,
        // so that a complete count can be learned from.
        let e = learn_differential(&ON, &measured(100.0, 10.0, 0.01), 2000, 5.0);
        let e = learn_differential(
            &ON,
            &Estimates {
                diff_ms_per_change: Some(0.0),
                ..e
            },
            2000,
            5.0,
        );
        assert_eq!(e.diff_ms_per_change, Some(0.0));
        assert_eq!(count_limit(&ON, &e), 1001);
        let large = Pending {
            changes: 1001,
            complete: false,
            source_rows: None,
        };
        assert!(needs_rows(&ON, &e, &large));
        assert_eq!(recount_limit(&ON, None), 100_001);
    }

    #[test]
    fn a_full_choice_lowers_the_per_change_estimate_until_differential_is_tried_again() {
        let mut e = measured(180.0, 0.0, 0.01);
        let p = pending(50_000, 1_000_000.0);
        let mut fulls = 0;
        while matches!(choose(&ON, &e, &p), Choice::Full { .. }) {
            e = after_full_choice(&e);
            fulls += 1;
            assert!(fulls < 100, "never retried DIFFERENTIAL");
        }
        assert_eq!(fulls, 20);
        assert_eq!(e.full_ms, Some(180.0));
    }

    fn estimates() -> impl Strategy<Value = Estimates> {
        (
            proptest::option::of(prop_oneof![9 => 0.1f64..10_000.0, 1 => Just(f64::INFINITY)]),
            proptest::option::of(0.0f64..1_000.0),
            proptest::option::of(0.000_1f64..10.0),
        )
            .prop_map(|(full_ms, diff_fixed_ms, diff_ms_per_change)| Estimates {
                full_ms,
                diff_fixed_ms,
                diff_ms_per_change,
            })
    }

    proptest! {
        /// The exact count past the limit never changes the choice:
        /// counting to `count_limit`, then (when asked) to `recount_limit`,
        /// is enough.
        #[test]
        fn the_count_limits_settle_the_choice(
            e in estimates(),
            rows in proptest::option::of(1.0f64..1e9),
            actual in prop_oneof![0u64..10_000_000, 990u64..1010],
            min in prop_oneof![1u64..100_000, Just(1000u64)],
            fraction in 0.000_1f64..1.0,
        ) {
            let s = AdaptiveSettings { enabled: true, min_changes: min, full_fraction: fraction };
            let truth = choose(&s, &e, &Pending { changes: actual, complete: true, source_rows: rows });
            let limit = count_limit(&s, &e);
            let mut seen = Pending { changes: actual.min(limit), complete: actual < limit, source_rows: None };
            if needs_rows(&s, &e, &seen) {
                seen.source_rows = rows;
                if !seen.complete {
                    let limit = recount_limit(&s, rows);
                    seen.changes = actual.min(limit);
                    seen.complete = actual < limit;
                }
            }
            let counted = choose(&s, &e, &seen);
            prop_assert_eq!(
                matches!(truth, Choice::Full { .. }),
                matches!(counted, Choice::Full { .. })
            );
        }

        /// More pending changes never turn a FULL choice back to DIFFERENTIAL.
        #[test]
        fn the_choice_is_monotone_in_the_pending_volume(
            e in estimates(),
            rows in proptest::option::of(1.0f64..1e9),
            n in 0u64..10_000_000,
            more in 0u64..10_000_000,
        ) {
            let full_at_n = matches!(choose(&ON, &e, &Pending { changes: n, complete: true, source_rows: rows }), Choice::Full { .. });
            let full_after = matches!(choose(&ON, &e, &Pending { changes: n + more, complete: true, source_rows: rows }), Choice::Full { .. });
            prop_assert!(!full_at_n || full_after);
        }
    }
}
