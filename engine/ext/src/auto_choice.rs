//! What an `AUTO` refresh needs from the server to choose between
//! DIFFERENTIAL and FULL: the `pg_trickle.adaptive_*` settings, the
//! backlog as counted, and the sources' row estimates. The choice itself
//! is `pg_trickle_core::adaptive`; counting the pending changes is
//! `capture::pending_counts`.

use pg_trickle_core::adaptive::{AdaptiveSettings, Pending};

use crate::capture::PendingCount;
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

/// The backlog that per-source `counts` make.
pub fn backlog(counts: &[PendingCount]) -> Pending {
    Pending {
        changes: counts.iter().map(|c| c.changes).sum(),
        complete: counts.iter().all(|c| c.exact),
        source_rows: None,
    }
}

/// The planner's row estimate (`pg_class.reltuples`) summed over `relids`
/// and their partitions and inheritance children, leaving out relations
/// with no estimate (never analysed or vacuumed) and partitioned tables
/// (whose partitions hold their rows); None when no relation has one.
/// Read only for a backlog worth weighing.
pub fn source_rows(relids: &[u32]) -> Option<f64> {
    let mut all: Vec<String> = Vec::new();
    for relid in relids {
        all.push(relid.to_string());
        all.extend(crate::sources::members(*relid).iter().map(u32::to_string));
    }
    crate::spi::value(
        "SELECT sum(c.reltuples)::float8::text FROM pg_class c \
         WHERE c.oid = ANY ($1::text::oid[]) AND c.reltuples >= 0 AND c.relkind <> 'p'",
        &[Some(format!("{{{}}}", all.join(",")))],
    )
    .and_then(|v| v.parse().ok())
}
