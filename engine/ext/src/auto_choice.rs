//! What an `AUTO` refresh needs from the server to choose between
//! DIFFERENTIAL and FULL: the `pg_trickle.adaptive_*` settings and the
//! sources' row estimates. The choice itself is
//! `pg_trickle_core::adaptive`; counting the pending changes is
//! `capture::pending_counts`.

use pg_trickle_core::adaptive::AdaptiveSettings;
use pgrx::pg_sys;

use crate::gucs;

/// The settings as this session has them; disabled unless `applies`
/// (an AUTO stream table about to refresh DIFFERENTIAL).
pub fn settings(applies: bool) -> AdaptiveSettings {
    AdaptiveSettings {
        enabled: applies && gucs::ADAPTIVE_AUTO.get(),
        min_changes: u64::try_from(gucs::ADAPTIVE_MIN_CHANGES.get())
            .unwrap_or(1)
            .max(1),
        full_fraction: gucs::ADAPTIVE_FULL_FRACTION.get(),
    }
}

/// The planner's row estimate (`reltuples`) summed over `relids` and their
/// partitions and inheritance children; None when none of them has one
/// (never analysed or vacuumed). The relations are locked by the refresh.
pub fn source_rows(relids: &[u32]) -> Option<f64> {
    let mut total: Option<f64> = None;
    for relid in relids {
        let members = crate::sources::members(*relid);
        for oid in std::iter::once(*relid).chain(members) {
            if let Some(rows) = reltuples(oid) {
                *total.get_or_insert(0.0) += rows;
            }
        }
    }
    total
}

/// `pg_class.reltuples` of `oid` from the relation cache; None for a
/// relation that no longer exists, has no estimate (-1) or no storage of
/// its own (a partitioned table, whose rows its partitions count).
fn reltuples(oid: u32) -> Option<f64> {
    // SAFETY: a relcache lookup of a relation the refresh holds a lock on
    // (or of its member, read only); the reference is closed at once, and
    // an ERROR is turned into a Rust panic by the boundary guard.
    let rows = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            let rel = pg_sys::RelationIdGetRelation(pg_sys::Oid::from(oid));
            if rel.is_null() {
                return -1.0;
            }
            let class = &*(*rel).rd_rel;
            let rows = if class.relkind as u8 == pg_sys::RELKIND_PARTITIONED_TABLE {
                -1.0
            } else {
                class.reltuples
            };
            pg_sys::RelationClose(rel);
            rows
        })
    };
    (rows >= 0.0).then_some(f64::from(rows))
}
