//! Draining slots into change buffers (the scheduler's tick and
//! `drain_wal_capture`), advancing them, finishing switches back to
//! triggers, and removing a source's WAL capture.

use super::decode::{decode_slot, next_full_xid};
use super::status::report_orphans;
use super::*;

/// Decode every WAL-captured source's slot into its buffer now (the
/// scheduler does this every tick) and finish switches back to triggers
/// that are drained. Superuser only. Returns the changes written.
#[pg_extern]
fn drain_wal_capture() -> i64 {
    security::require_superuser("drain_wal_capture");
    as_extension(|| {
        crate::compat::require_current_sql();
        wal_capture::all()
            .into_iter()
            .map(|c| drain(&c) as i64)
            .sum()
    })
}

/// The oldest xmin of any backend in the cluster, as a full xid: every
/// transaction below it is finished in every snapshot.
pub(super) fn horizon() -> u64 {
    let next = next_full_xid();
    crate::spi::first_column::<u32>(
        "SELECT backend_xmin::text FROM pg_catalog.pg_stat_activity WHERE backend_xmin IS NOT NULL",
        &[],
    )
    .into_iter()
    // An xmin that does not widen cannot be: count it as the most careful
    // horizon there is.
    .map(|x| widen_xid(x, next).unwrap_or(0))
    .min()
    .unwrap_or(next)
}

/// Decode `capture`'s slot into its buffer up to the flushed WAL, advance
/// the slot as far as every snapshot allows, and finish a switch back to
/// triggers once drained; returns how many changes were written.
pub fn drain(capture: &wal_capture::WalSource) -> usize {
    let relid = capture.relid;
    lock_slot(relid);
    let Some(drained) = wal_capture::progress(relid).as_deref().and_then(parse_lsn) else {
        return 0;
    };
    let stop = capture.stop_lsn.as_deref().and_then(parse_lsn);
    let slot_exists = value(
        "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[Some(capture.slot.clone())],
    );
    let Some(confirmed) = slot_exists else {
        let table = crate::spi::relation_name(relid).unwrap_or_default();
        crate::operations::discard_source(
            relid,
            &format!("its capture slot {} is missing", capture.slot),
        );
        raise(
            "55000",
            format!("capture slot {} of {table} is missing; capture was discarded and its readers will be recomputed", capture.slot),
            None,
        );
    };
    // Advance the slot to what every snapshot sees (it never needs to go back).
    let settled = wal_capture::settled_progress(relid, horizon());
    if let Some(settled) = &settled {
        if parse_lsn(settled) > parse_lsn(&confirmed) {
            run(
                "SELECT 1 FROM pg_catalog.pg_replication_slot_advance($1::text::name, $2::pg_lsn)",
                &[Some(capture.slot.clone()), Some(settled.clone())],
            );
        }
        wal_capture::forget_progress_before(relid, settled);
    }
    if let Some(stop) = stop {
        // Switching back: the slot goes once every snapshot sees the drain
        // that reached the cut (a refresh may still read the slot until then).
        if settled
            .as_deref()
            .and_then(parse_lsn)
            .is_some_and(|s| s >= stop)
        {
            finish_switch_back(capture);
            return 0;
        }
        if drained >= stop {
            return 0;
        }
    }
    let flushed = value("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[])
        .as_deref()
        .and_then(parse_lsn)
        .unwrap_or(drained);
    let upto = stop.map_or(flushed, |s| s.min(flushed));
    if upto <= drained {
        return 0;
    }
    let records = decode_slot(relid, &capture.slot, drained, upto, |_| true);
    let discarding = change_buffers::is_discarding(relid);
    if !records.is_empty() && !discarding {
        let columns = crate::capture::buffer_columns(relid);
        let olds: Vec<String> = (1..=columns.len()).map(|k| format!("__o{k}")).collect();
        let news: Vec<String> = (1..=columns.len()).map(|k| format!("__n{k}")).collect();
        // Change ids are the changes' WAL positions (see `decode_slot`).
        let targets = format!(
            "change_id, xid, op, captured_at, {}, {}, traceparent",
            olds.join(", "),
            news.join(", ")
        );
        run(
            &format!(
                "INSERT INTO pgtrickle_changes.changes_{relid} ({targets}) OVERRIDING SYSTEM VALUE \
                 SELECT {targets} FROM unnest($1::text::text[]::pgtrickle_changes.changes_{relid}[])"
            ),
            &[Some(text_array(&records))],
        );
    }
    wal_capture::record_progress(relid, &lsn_text(upto));
    if discarding {
        0
    } else {
        records.len()
    }
}

/// A `text[]` literal of `items`.
pub fn text_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// The switch back to triggers is drained: drop the slot, take the source
/// out of the publication, restore its replica identity, forget the
/// capture and plan its readers again.
pub(super) fn finish_switch_back(capture: &wal_capture::WalSource) {
    let relid = capture.relid;
    release_slot_and_publication(capture);
    wal_capture::delete(relid);
    switch::regenerate_readers(relid);
    let table = crate::spi::relation_name(relid).unwrap_or_default();
    pgrx::log!("pg_trickle: the switch of {table} back to trigger capture is complete");
}

/// Drop `capture`'s slot (when it exists), take its source out of the
/// publication and give it back its replica identity.
pub(super) fn release_slot_and_publication(capture: &wal_capture::WalSource) {
    let relid = capture.relid;
    run(
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[Some(capture.slot.clone())],
    );
    if let Some(table) = crate::spi::relation_name(relid) {
        let member = value(
            "SELECT 1::text FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid \
             WHERE p.pubname = $1 AND r.prrelid = $2::text::oid",
            &[Some(PUBLICATION.into()), Some(relid.to_string())],
        );
        if member.is_some() {
            run(
                &format!("ALTER PUBLICATION {PUBLICATION} DROP TABLE ONLY {table}"),
                &[],
            );
        }
        let identity = match capture.prior_identity.as_str() {
            "n" => Some("NOTHING"),
            "d" => Some("DEFAULT"),
            // FULL stays; an index identity must be named again by its owner.
            _ => None,
        };
        if let Some(identity) = identity {
            run(
                &format!("ALTER TABLE ONLY {table} REPLICA IDENTITY {identity}"),
                &[],
            );
        }
    }
}

/// Remove `relid`'s WAL capture with its buffer (the source is no longer
/// captured, or is being dropped): its slot, publication membership and
/// read function go at once.
pub fn drop_wal_capture(relid: u32) {
    let Some(capture) = wal_capture::of(relid) else {
        return;
    };
    lock_slot(relid);
    release_slot_and_publication(&capture);
    wal_capture::delete(relid);
    run(
        &format!("DROP FUNCTION IF EXISTS pgtrickle_changes.wal_changes_{relid}(pg_catalog.text, pg_catalog.pg_snapshot)"),
        &[],
    );
}

/// Drain every WAL-captured source (the scheduler's tick); a failure is
/// recorded on its capture and logged, never fatal, and the others go on.
pub fn drain_all() {
    if !crate::compat::sql_matches_library() {
        return;
    }
    for capture in wal_capture::all() {
        let relid = capture.relid;
        if let Err(f) = crate::spi::in_subtransaction(move || {
            drain(&capture);
        }) {
            pgrx::warning!(
                "pg_trickle: draining the capture slot of source {relid} failed ({}): {}",
                f.sqlstate,
                f.message
            );
            wal_capture::record_error(relid, &format!("{}: {}", f.sqlstate, f.message));
        }
    }
    report_orphans();
}
