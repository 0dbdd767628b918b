//! What an operator sees of capture from the WAL: `wal_capture_status()`,
//! slot lag for backpressure, and orphaned slots (reported, and dropped on
//! request).

use super::*;

thread_local! {
    static REPORTED: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// Log (once per slot and process) every capture slot of this database
/// that no capture owns.
pub(super) fn report_orphans() {
    for l in wal_capture::listing(pg_sys::Oid::INVALID, true, &slot_prefix(), None) {
        // A switch in progress holds its slot's lock while the slot is new.
        if l.state == "orphaned"
            && slot_free(&l.slot)
            && REPORTED.with(|r| r.borrow_mut().insert(l.slot.clone()))
        {
            pgrx::warning!(
                "pg_trickle: replication slot {} looks like a capture slot of this database but no source uses it; \
                 it retains WAL until dropped (pgtrickle.drop_orphaned_capture_slots())",
                l.slot
            );
        }
    }
}

/// Drop every capture slot of this database that no capture owns and no
/// backend is using; superuser only. Returns their names.
#[pg_extern]
fn drop_orphaned_capture_slots() -> Vec<String> {
    security::require_superuser("drop_orphaned_capture_slots");
    as_extension(|| {
        let mut dropped = Vec::new();
        for l in wal_capture::listing(pg_sys::Oid::INVALID, true, &slot_prefix(), None) {
            if l.state != "orphaned" {
                continue;
            }
            // A switch in progress holds this lock while its slot is new.
            let free = slot_free(&l.slot);
            let active = value(
                "SELECT active::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[Some(l.slot.clone())],
            )
            .as_deref()
                == Some("true");
            if free && !active {
                run(
                    "SELECT pg_catalog.pg_drop_replication_slot($1)",
                    &[Some(l.slot.clone())],
                );
                dropped.push(l.slot);
            }
        }
        dropped
    })
}

/// Capture from the WAL, one row per source (and per orphaned capture
/// slot, for a superuser or pg_monitor): its slot, state, the slot's
/// confirmed position, how far changes are decoded into the buffer, and
/// the lag behind the WAL in bytes and seconds.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn wal_capture_status() -> TableIterator<
    'static,
    (
        name!(source, Option<String>),
        name!(slot_name, String),
        name!(state, String),
        name!(confirmed_lsn, Option<String>),
        name!(drained_lsn, Option<String>),
        name!(lag_bytes, i64),
        name!(lag_seconds, f64),
        name!(last_drain_at, Option<String>),
        name!(last_error, Option<String>),
    ),
> {
    let me = security::caller();
    let all = security::is_superuser(me) || security::is_monitor(me);
    let rows = as_extension(|| wal_capture::listing(me, all, &slot_prefix(), None));
    TableIterator::new(rows.into_iter().map(|l| {
        (
            l.source,
            l.slot,
            l.state,
            l.confirmed_lsn,
            l.drained_lsn,
            l.lag_bytes,
            l.lag_seconds,
            l.last_drain_at,
            l.last_error,
        )
    }))
}

/// The slot lag of `relid` if it is captured from the WAL: WAL written
/// since its last drain (which it has not decoded yet; the drain's own
/// writes do not count) and seconds since that drain, as
/// `wal_capture_status()` shows them.
pub fn slot_lag(relid: u32) -> Option<(i64, f64)> {
    wal_capture::listing(pg_sys::Oid::INVALID, true, &slot_prefix(), Some(relid))
        .into_iter()
        .next()
        .map(|l| (l.lag_bytes, l.lag_seconds))
}
