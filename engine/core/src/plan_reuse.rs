//! When a DIFFERENTIAL refresh runs its statement with a kept plan.
//!
//! Planning a generated statement costs more than running it when few
//! changes are pending: 1.6 ms of a 2.3 ms statement for one changed row
//! of a 1,000-group aggregate. A custom plan per run sees the relations'
//! current sizes and so suits any backlog; a generic plan, built once and
//! kept by the backend, sees the sizes of the run that built it. With a
//! few changes pending, every plan of a delta is small work, and the kept
//! one is used; past [`MAX_CHANGES`], or when a count is not exact (a
//! source captured from the WAL with changes pending is never counted
//! exactly: some may not be decoded yet), the statement is planned for
//! its run.
//!
//! A kept plan is dropped after [`MAX_RUNS`] runs, so that the sizes it
//! assumed are read again now and then even where nothing invalidates it
//! (PostgreSQL re-plans a kept plan itself when a relation it reads is
//! altered or analysed).

/// Most pending changes, over all sources, a refresh applies with the
/// statement's kept plan.
pub const MAX_CHANGES: u64 = 64;

/// Runs after which a kept plan is dropped and built again.
pub const MAX_RUNS: u32 = 256;

/// How many changes per source the extension counts to decide: one past
/// [`MAX_CHANGES`].
pub const COUNT_LIMIT: u64 = MAX_CHANGES + 1;

/// Whether a refresh whose sources have the pending `counts` (changes
/// counted, whether that count is all there is) runs the kept plan.
pub fn reuses_plan(counts: impl IntoIterator<Item = (u64, bool)>) -> bool {
    let mut total: u64 = 0;
    for (changes, exact) in counts {
        if !exact {
            return false;
        }
        total = total.saturating_add(changes);
    }
    total <= MAX_CHANGES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_changes_counted_exactly_reuse_the_plan() {
        assert!(reuses_plan([(1, true)]));
        assert!(reuses_plan([(40, true), (24, true)]));
        assert!(reuses_plan([(0, true), (0, true)]));
    }

    #[test]
    fn more_changes_than_the_bound_over_all_sources_plan_afresh() {
        assert!(!reuses_plan([(MAX_CHANGES + 1, true)]));
        assert!(!reuses_plan([(40, true), (25, true)]));
    }

    #[test]
    fn a_count_that_stopped_short_plans_afresh() {
        // A count at its limit, or a WAL source's undecoded changes.
        assert!(!reuses_plan([(1, true), (3, false)]));
        assert!(!reuses_plan([(COUNT_LIMIT - 1, false)]));
    }
}
