//! `pgt_wal_capture` and `pgt_wal_progress`: the sources captured from the
//! WAL, their slots and cut-over positions, and how far each slot has been
//! decoded into its change buffer.
//!
//! A progress row is written in the same transaction as the buffer rows it
//! covers, so any snapshot sees a buffer and a progress position that
//! agree: every change of a transaction that committed before the
//! position is in the buffer, none after it.

use super::{arg, decoded, decoded_row};
use crate::spi::{run, value};

/// A source captured from the WAL.
pub struct WalSource {
    /// The source's oid.
    pub relid: u32,
    /// Its logical replication slot.
    pub slot: String,
    /// Changes of transactions committing at or after it come from the slot.
    pub start_lsn: String,
    /// While switching back to triggers: changes of transactions committing
    /// before it come from the slot, later ones from the trigger.
    pub stop_lsn: Option<String>,
    /// The source's replica identity before capture set it to FULL.
    pub prior_identity: String,
}

fn wal_source(r: &super::Fields) -> WalSource {
    WalSource {
        relid: r.num(0),
        slot: r.text(1),
        start_lsn: r.text(2),
        stop_lsn: r.opt(3),
        prior_identity: r.text(4),
    }
}

const COLUMNS: &str =
    "source_relid::text, slot_name::text, start_lsn::text, stop_lsn::text, prior_identity::text";

/// `source`'s WAL capture, if it has one.
pub fn of(source: u32) -> Option<WalSource> {
    decoded_row(
        &format!(
            "SELECT {COLUMNS} FROM pgtrickle.pgt_wal_capture WHERE source_relid = $1::text::oid"
        ),
        &[arg(source)],
    )
    .map(|r| wal_source(&r))
}

/// Every source captured from the WAL, in oid order.
pub fn all() -> Vec<WalSource> {
    decoded(
        &format!(
            "SELECT {COLUMNS} FROM pgtrickle.pgt_wal_capture ORDER BY pgt_wal_capture.source_relid"
        ),
        &[],
    )
    .iter()
    .map(wal_source)
    .collect()
}

/// The oids of the sources captured from the WAL among `sources`.
pub fn among(sources: &[u32]) -> Vec<u32> {
    // Read by key (see `direct`).
    let mut wal: Vec<u32> = sources
        .iter()
        .copied()
        .filter(|source| {
            !super::by_key(
                c"pgt_wal_capture",
                &[(c"source_relid", super::direct::Key::Oid(*source))],
                &[c"source_relid"],
            )
            .is_empty()
        })
        .collect();
    wal.sort_unstable();
    wal.dedup();
    wal
}

/// Record that `source` is captured from `slot` for transactions
/// committing at or after `start_lsn`, which is also its first progress.
pub fn insert(source: u32, slot: &str, start_lsn: &str, prior_identity: &str) {
    run(
        "INSERT INTO pgtrickle.pgt_wal_capture (source_relid, slot_name, start_lsn, prior_identity) \
         VALUES ($1::text::oid, $2, $3::pg_lsn, $4)",
        &[arg(source), arg(slot), arg(start_lsn), arg(prior_identity)],
    );
    record_progress(source, start_lsn);
}

/// Start switching `source` back to triggers: the slot still supplies
/// transactions committing before `stop_lsn`.
pub fn set_stop(source: u32, stop_lsn: &str) {
    run(
        "UPDATE pgtrickle.pgt_wal_capture SET stop_lsn = $2::pg_lsn WHERE source_relid = $1::text::oid",
        &[arg(source), arg(stop_lsn)],
    );
}

/// Forget `source`'s WAL capture and its progress.
pub fn delete(source: u32) {
    run(
        "DELETE FROM pgtrickle.pgt_wal_capture WHERE source_relid = $1::text::oid",
        &[arg(source)],
    );
}

/// How far `source`'s slot has been decoded into its buffer, as this
/// transaction sees it.
pub fn progress(source: u32) -> Option<String> {
    value(
        "SELECT max(drained_upto)::text FROM pgtrickle.pgt_wal_progress WHERE source_relid = $1::text::oid",
        &[arg(source)],
    )
}

/// Record that every transaction of `source` committing before `lsn` is in its buffer.
pub fn record_progress(source: u32, lsn: &str) {
    run(
        "INSERT INTO pgtrickle.pgt_wal_progress (source_relid, drained_upto) VALUES ($1::text::oid, $2::pg_lsn)",
        &[arg(source), arg(lsn)],
    );
    run(
        "UPDATE pgtrickle.pgt_wal_capture SET last_drain_at = now(), last_error = NULL, \
         drain_end_lsn = pg_current_wal_insert_lsn() WHERE source_relid = $1::text::oid",
        &[arg(source)],
    );
}

/// The furthest progress every snapshot in the cluster sees: recorded by
/// a transaction older than `horizon` (the oldest xmin of any backend, as
/// a full xid). The slot may be advanced to it: no refresh can still
/// need a change before it from the slot.
pub fn settled_progress(source: u32, horizon: u64) -> Option<String> {
    value(
        "SELECT max(drained_upto)::text FROM pgtrickle.pgt_wal_progress \
         WHERE source_relid = $1::text::oid AND drained_by < $2::text::xid8",
        &[arg(source), arg(horizon)],
    )
}

/// Drop the progress rows of `source` before `lsn` (one at `lsn` stays).
pub fn forget_progress_before(source: u32, lsn: &str) {
    run(
        "DELETE FROM pgtrickle.pgt_wal_progress WHERE source_relid = $1::text::oid AND drained_upto < $2::pg_lsn",
        &[arg(source), arg(lsn)],
    );
}

/// Record why the last drain of `source` failed.
pub fn record_error(source: u32, error: &str) {
    run(
        "UPDATE pgtrickle.pgt_wal_capture SET last_error = $2 WHERE source_relid = $1::text::oid",
        &[arg(source), arg(error)],
    );
}

/// One WAL capture as `wal_capture_status()` lists it.
pub struct Listing {
    /// The source as `regclass` prints it (None: an orphaned slot).
    pub source: Option<String>,
    /// The slot.
    pub slot: String,
    /// `wal`, `switching to trigger` or `orphaned`.
    pub state: String,
    /// The slot's confirmed position.
    pub confirmed_lsn: Option<String>,
    /// How far changes are decoded into the buffer.
    pub drained_lsn: Option<String>,
    /// WAL written since the last drain (not yet decoded), in bytes.
    pub lag_bytes: i64,
    /// Seconds since the last drain, while there is lag.
    pub lag_seconds: f64,
    /// When it was last drained.
    pub last_drain_at: Option<String>,
    /// The last drain's error.
    pub last_error: Option<String>,
}

/// Every WAL capture of a source `role` may read (every one with `all`),
/// then, with `all`, every slot named like this database's capture slots
/// that no capture owns (left behind by a crash or a failed switch). With
/// `only`, just that source's capture (no orphaned slots).
pub fn listing(
    role: pgrx::pg_sys::Oid,
    all: bool,
    slot_prefix: &str,
    only: Option<u32>,
) -> Vec<Listing> {
    decoded(
        "WITH progress AS (SELECT source_relid, max(drained_upto) AS upto FROM pgtrickle.pgt_wal_progress \
           WHERE $4::text IS NULL OR source_relid = $4::text::oid GROUP BY 1) \
         SELECT w.source_relid::regclass::text, w.slot_name::text, \
           CASE WHEN w.stop_lsn IS NULL THEN 'wal' ELSE 'switching to trigger' END, \
           s.confirmed_flush_lsn::text, p.upto::text, \
           greatest(coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), greatest(p.upto, w.drain_end_lsn)), 0), 0)::bigint::text, \
           CASE WHEN pg_current_wal_lsn() > greatest(p.upto, w.drain_end_lsn) \
                THEN coalesce(extract(epoch FROM now() - w.last_drain_at), 0) ELSE 0 END::text, \
           w.last_drain_at::text, w.last_error \
         FROM pgtrickle.pgt_wal_capture w LEFT JOIN progress p ON p.source_relid = w.source_relid \
         LEFT JOIN pg_replication_slots s ON s.slot_name = w.slot_name \
         WHERE ($2::boolean OR has_table_privilege($1::text::oid, w.source_relid, 'SELECT')) \
           AND ($4::text IS NULL OR w.source_relid = $4::text::oid) \
         UNION ALL \
         SELECT NULL, s.slot_name::text, 'orphaned', s.confirmed_flush_lsn::text, NULL, \
           greatest(coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0), 0)::bigint::text, '0', NULL, NULL \
         FROM pg_replication_slots s WHERE $2::boolean AND $4::text IS NULL AND s.database = current_database() \
           AND left(s.slot_name, length($3)) = $3 \
           AND NOT EXISTS (SELECT 1 FROM pgtrickle.pgt_wal_capture w WHERE w.slot_name = s.slot_name) \
         ORDER BY 3 DESC, 1, 2",
        &[
            arg(role.to_u32()),
            arg(all),
            arg(slot_prefix),
            only.map(|o| o.to_string()),
        ],
    )
    .into_iter()
    .map(|r| Listing {
        source: r.opt(0),
        slot: r.text(1),
        state: r.text(2),
        confirmed_lsn: r.opt(3),
        drained_lsn: r.opt(4),
        lag_bytes: r.num(5),
        lag_seconds: r.parsed(6).unwrap_or(0.0),
        last_drain_at: r.opt(7),
        last_error: r.opt(8),
    })
    .collect()
}
