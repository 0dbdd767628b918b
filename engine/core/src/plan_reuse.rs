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

use crate::adaptive::Pending;

/// Whether a refresh with the `pending` changes its sources were counted
/// to (the same count AUTO's choice reads) runs the kept plan: a count
/// that is all there is, and at most [`MAX_CHANGES`].
pub fn reuses_plan(pending: &Pending) -> bool {
    pending.complete && pending.changes <= MAX_CHANGES
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The changes counted over all sources, and whether that is all.
    fn counted(changes: u64, complete: bool) -> Pending {
        Pending {
            changes,
            complete,
            source_rows: None,
        }
    }

    #[test]
    fn a_few_changes_counted_exactly_reuse_the_plan() {
        assert!(reuses_plan(&counted(1, true)));
        assert!(reuses_plan(&counted(40 + 24, true)));
        assert!(reuses_plan(&counted(0, true)));
    }

    #[test]
    fn more_changes_than_the_bound_over_all_sources_plan_afresh() {
        assert!(!reuses_plan(&counted(MAX_CHANGES + 1, true)));
        assert!(!reuses_plan(&counted(40 + 25, true)));
    }

    #[test]
    fn a_count_that_stopped_short_plans_afresh() {
        // A count at its limit, or a WAL source's undecoded changes.
        assert!(!reuses_plan(&counted(1 + 3, false)));
        assert!(!reuses_plan(&counted(COUNT_LIMIT - 1, false)));
    }
}
