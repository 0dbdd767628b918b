//! The adaptive choice an `AUTO` stream table makes before each refresh:
//! apply the pending changes (DIFFERENTIAL) or recompute (FULL).
//!
//! A differential refresh costs about a fixed part plus a part per pending
//! change; a full one costs about the same whatever is pending. Past some
//! volume (a few percent of the sources, for a plain aggregate) recomputing
//! is cheaper. The extension counts the pending changes (up to the
//! [`count_limit`], so that counting never costs more than the decision is
//! worth), reads what earlier refreshes of the stream table measured, and
//! asks [`choose`]. It records every measurement with [`learn`].
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
    /// `pg_trickle.adaptive_full_fraction`: with no differential refresh
    /// measured yet, pending changes above this fraction of the sources'
    /// rows refresh FULL.
    pub full_fraction: f64,
}

/// What earlier refreshes of one stream table measured (None: never yet).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimates {
    /// Milliseconds a FULL refresh (or the population at creation) took.
    pub full_ms: Option<f64>,
    /// Milliseconds a DIFFERENTIAL refresh took per pending change, from
    /// refreshes of at least `min_changes` changes.
    pub diff_ms_per_change: Option<f64>,
}

/// What is pending for one refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// Pending changes counted over the sources (each source counted up to
    /// [`count_limit`], so this may be less than what is there).
    pub changes: u64,
    /// False when some source's count stopped at the limit: there are
    /// more than `changes`.
    pub complete: bool,
    /// The sources' rows as the planner estimates them (`reltuples`); None
    /// when no source has been analysed or vacuumed yet.
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

/// How many pending changes per source are worth counting: past this
/// many the choice is FULL whatever the exact count (or the choice is
/// DIFFERENTIAL whatever it is). 1 when the choice is off: counting then
/// only says whether anything is pending.
pub fn count_limit(
    settings: &AdaptiveSettings,
    estimates: &Estimates,
    source_rows: Option<f64>,
) -> u64 {
    if !settings.enabled {
        return 1;
    }
    let full_at = match (estimates.full_ms, estimates.diff_ms_per_change) {
        (Some(full), Some(per)) if per > 0.0 => full / per,
        _ => source_rows.map_or(0.0, |rows| rows * settings.full_fraction),
    };
    let limit = full_at.ceil().clamp(0.0, u64::MAX as f64 / 2.0) as u64;
    limit.max(settings.min_changes).saturating_add(1)
}

/// Choose the mode of one refresh of an `AUTO` stream table whose query
/// supports DIFFERENTIAL and that needs no reinitialisation.
pub fn choose(settings: &AdaptiveSettings, estimates: &Estimates, pending: &Pending) -> Choice {
    let n = pending.changes;
    if !settings.enabled || n < settings.min_changes {
        return Choice::Differential { reason: None };
    }
    let (at_least, or_more) = if pending.complete {
        ("", "")
    } else {
        ("at least ", " or more")
    };
    if let (Some(full), Some(per)) = (estimates.full_ms, estimates.diff_ms_per_change) {
        let diff = per * n as f64;
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
                 (pg_trickle.adaptive_full_fraction) of the sources' {} rows; no differential refresh measured yet",
                thousands(n),
                percent(settings.full_fraction),
                thousands(rows.round() as u64),
            ),
        },
        _ => Choice::Differential { reason: None },
    }
}

/// The estimate after one more measurement: the mean of the old estimate
/// and the new figure, so that one noisy refresh moves it only halfway.
pub fn learn(old: Option<f64>, measured: f64) -> f64 {
    if !measured.is_finite() || measured < 0.0 {
        return old.unwrap_or(0.0);
    }
    match old {
        Some(o) if o.is_finite() && o >= 0.0 => (o + measured) / 2.0,
        _ => measured,
    }
}

/// How far the per-change estimate drops each time it makes a refresh
/// FULL: a stream table whose differential refreshes got cheaper (an index
/// was added, the data changed shape) retries DIFFERENTIAL after a few
/// dozen such refreshes at most, and learns again from what that costs.
pub const FORGET: f64 = 0.95;

/// The estimates to store after a refresh that `choice` made FULL.
pub fn after_full_choice(estimates: &Estimates) -> Estimates {
    Estimates {
        diff_ms_per_change: estimates.diff_ms_per_change.map(|p| p * FORGET),
        ..*estimates
    }
}

/// The per-change figure one DIFFERENTIAL refresh of `changes` changes
/// taking `ms` gives, when it is large enough to count (None otherwise:
/// small refreshes are mostly fixed cost).
pub fn per_change(settings: &AdaptiveSettings, changes: u64, ms: f64) -> Option<f64> {
    (settings.enabled && changes >= settings.min_changes.max(1)).then(|| ms / changes as f64)
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

    #[test]
    fn few_changes_are_applied_without_weighing() {
        let e = Estimates {
            full_ms: Some(1.0),
            diff_ms_per_change: Some(10.0),
        };
        assert_eq!(
            choose(&ON, &e, &pending(999, 1000.0)),
            Choice::Differential { reason: None }
        );
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
             (pg_trickle.adaptive_full_fraction) of the sources' 1,000,000 rows; no differential refresh measured yet"
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
        let e = Estimates {
            full_ms: Some(180.0),
            diff_ms_per_change: Some(0.007),
        };
        assert_eq!(
            choose(&ON, &e, &pending(10_000, 1_000_000.0)),
            Choice::Differential {
                reason: Some(
                    "AUTO chose DIFFERENTIAL: 10,000 pending changes: DIFFERENTIAL estimated at 70.0 ms against 180 ms for FULL"
                        .into()
                )
            }
        );
        assert_eq!(
            choose(&ON, &e, &pending(50_000, 1_000_000.0)),
            Choice::Full {
                reason: "AUTO chose FULL: 50,000 pending changes: DIFFERENTIAL estimated at 350 ms against 180 ms for FULL"
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
        assert_eq!(count_limit(&off, &Estimates::default(), Some(1e9)), 1);
        assert_eq!(per_change(&off, 5000, 10.0), None);
    }

    #[test]
    fn counting_stops_where_the_choice_is_settled() {
        assert_eq!(
            count_limit(&ON, &Estimates::default(), Some(1_000_000.0)),
            20_001
        );
        assert_eq!(count_limit(&ON, &Estimates::default(), None), 1001);
        let e = Estimates {
            full_ms: Some(180.0),
            diff_ms_per_change: Some(0.01),
        };
        assert_eq!(count_limit(&ON, &e, Some(1_000_000.0)), 18_001);
    }

    #[test]
    fn a_full_choice_lowers_the_per_change_estimate_until_differential_is_tried_again() {
        let mut e = Estimates {
            full_ms: Some(180.0),
            diff_ms_per_change: Some(0.01),
        };
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

    #[test]
    fn learning_moves_halfway_and_ignores_nonsense() {
        assert_eq!(learn(None, 10.0), 10.0);
        assert_eq!(learn(Some(10.0), 20.0), 15.0);
        assert_eq!(learn(Some(10.0), f64::NAN), 10.0);
        assert_eq!(learn(Some(10.0), -1.0), 10.0);
        assert_eq!(per_change(&ON, 999, 10.0), None);
        assert_eq!(per_change(&ON, 2000, 10.0), Some(0.005));
    }

    proptest! {
        /// The exact count past the limit never changes the choice: counting
        /// up to `count_limit` is enough.
        #[test]
        fn the_count_limit_settles_the_choice(
            full in proptest::option::of(0.1f64..10_000.0),
            per in proptest::option::of(0.000_1f64..10.0),
            rows in proptest::option::of(1.0f64..1e9),
            extra in 0u64..1_000_000,
            min in 1u64..100_000,
            fraction in 0.000_1f64..1.0,
        ) {
            let s = AdaptiveSettings { enabled: true, min_changes: min, full_fraction: fraction };
            let e = Estimates { full_ms: full, diff_ms_per_change: per };
            let limit = count_limit(&s, &e, rows);
            let at = choose(&s, &e, &Pending { changes: limit, complete: false, source_rows: rows });
            let past = choose(&s, &e, &Pending { changes: limit + extra, complete: extra == 0, source_rows: rows });
            prop_assert_eq!(
                matches!(at, Choice::Full { .. }),
                matches!(past, Choice::Full { .. })
            );
        }

        /// More pending changes never turn a FULL choice back to DIFFERENTIAL.
        #[test]
        fn the_choice_is_monotone_in_the_pending_volume(
            full in proptest::option::of(0.1f64..10_000.0),
            per in proptest::option::of(0.000_1f64..10.0),
            rows in proptest::option::of(1.0f64..1e9),
            n in 0u64..10_000_000,
            more in 0u64..10_000_000,
        ) {
            let e = Estimates { full_ms: full, diff_ms_per_change: per };
            let full_at_n = matches!(choose(&ON, &e, &Pending { changes: n, complete: true, source_rows: rows }), Choice::Full { .. });
            let full_after = matches!(choose(&ON, &e, &Pending { changes: n + more, complete: true, source_rows: rows }), Choice::Full { .. });
            prop_assert!(!full_at_n || full_after);
        }
    }
}
