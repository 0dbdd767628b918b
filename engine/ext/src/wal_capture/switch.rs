//! Switching a source between trigger capture and capture from the WAL
//! (`set_capture_mode`), with the cut that loses and duplicates nothing.

use super::decode::install_read_function;
use super::*;

/// Why `relid` cannot be captured from the WAL, if it cannot.
pub(super) fn wal_problem(relid: u32) -> Option<String> {
    let source = crate::sources::source_by_oid(relid)?;
    if source.kind != SourceKind::Table {
        return Some(format!(
            "it is {}; capture from the WAL supports ordinary tables",
            source.kind.described()
        ));
    }
    if let Some(p) = source.capture_problem {
        return Some(p);
    }
    let generated = value(
        "SELECT string_agg(attname::text, ', ' ORDER BY attnum) FROM pg_attribute \
         WHERE attrelid = $1::text::oid AND attnum > 0 AND NOT attisdropped AND attgenerated <> ''",
        &[Some(relid.to_string())],
    );
    generated.map(|cols| {
        format!("it has generated columns ({cols}), which logical decoding does not send")
    })
}

/// Switch `relid` (captured, by triggers) to capture from the WAL.
///
/// PostgreSQL creates a logical replication slot only in a transaction
/// without an xid, so everything before the slot reads without writing
/// (`read_value`), and what can only be checked afterwards drops the new
/// slot again when it fails.
pub(super) fn switch_to_wal(relid: u32, table: &str) {
    let level = crate::spi::read_value("SELECT pg_catalog.current_setting('wal_level')", &[])
        .unwrap_or_default();
    if level != "logical" {
        raise(
            "55000",
            format!("capture mode wal needs wal_level = logical; this server runs with wal_level = {level}"),
            Some("Set wal_level = logical in postgresql.conf and restart the server, or keep trigger capture.".into()),
        );
    }
    // SAFETY: reads this backend's transaction state.
    if unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId {
        raise(
            "25000",
            format!("switching {table} to capture from the WAL must be the first write of its transaction"),
            Some("PostgreSQL creates a logical replication slot only in a transaction that has written nothing yet: call set_capture_mode in a transaction of its own.".into()),
        );
    }
    if crate::spi::read_value(
        "SELECT 'yes' FROM pg_catalog.pg_publication WHERE pubname = $1",
        &[Some(PUBLICATION.into())],
    )
    .is_none()
    {
        raise(
            "55000",
            format!("publication {PUBLICATION}, which capture from the WAL reads, is missing"),
            Some("Re-create it: CREATE PUBLICATION pgtrickle_capture WITH (publish = 'insert, update, delete').".into()),
        );
    }
    let slot = slot_name(relid);
    if crate::spi::read_value(
        "SELECT 'yes' FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        &[Some(slot.clone())],
    )
    .is_some()
    {
        raise(
            "55006",
            format!("replication slot {slot} already exists"),
            Some("It is left from an earlier switch of this table or in use by one now; when no switch is running, drop it with pgtrickle.drop_orphaned_capture_slots().".into()),
        );
    }
    create_slot(&slot);
    let for_switch = slot.clone();
    let table_name = table.to_string();
    let switched = crate::spi::in_subtransaction(move || {
        complete_switch_to_wal(relid, &table_name, &for_switch)
    });
    if let Err(f) = switched {
        run(
            "SELECT pg_catalog.pg_drop_replication_slot($1)",
            &[Some(slot)],
        );
        raise(&f.sqlstate, f.message, None);
    }
}

/// Create logical slot `slot` (a generated name: letters, digits and
/// `_`) with pgoutput. Run through SPI as a writing statement (which takes
/// a snapshot of its own) without marking the transaction as writing: the
/// slot's creation waits for running transactions and must not run on the
/// calling statement's snapshot, and PostgreSQL refuses it in a
/// transaction that has an xid.
pub(super) fn create_slot(slot: &str) {
    assert!(
        slot.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "generated slot name"
    );
    let sql = std::ffi::CString::new(format!(
        "SELECT pg_catalog.pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .unwrap_or_else(|_| raise("XX000", "slot name contains a NUL byte", None));
    // In a subtransaction: when the creation had to wait for running
    // transactions, PostgreSQL 15 can fail the statement that created the
    // slot at its end ("snapshot reference ... is not owned by resource
    // owner"), after the slot was made. That failure is rolled back here
    // and the slot, which is complete, is kept.
    let made = crate::spi::in_subtransaction(move || {
        // SAFETY: a plain SPI session around one statement; errors are
        // raised by PostgreSQL and unwind through pgrx's guard.
        unsafe {
            pg_sys::SPI_connect();
            pg_sys::SPI_execute(sql.as_ptr(), false, 0);
            pg_sys::SPI_finish();
        }
    });
    if let Err(f) = made {
        let exists = crate::spi::read_value(
            "SELECT 'yes' FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 \
             AND confirmed_flush_lsn IS NOT NULL",
            &[Some(slot.to_string())],
        )
        .is_some();
        if !exists {
            raise(&f.sqlstate, f.message, None);
        }
        pgrx::debug1!(
            "pg_trickle: creating slot {slot} reported \"{}\" after the slot was made; kept",
            f.message
        );
    }
}

/// The part of [`switch_to_wal`] after its slot exists.
pub(super) fn complete_switch_to_wal(relid: u32, table: &str, slot: &str) {
    lock_slot(relid);
    if let Some(problem) = wal_problem(relid) {
        raise(
            "0A000",
            format!("{table} cannot be captured from the WAL: {problem}"),
            None,
        );
    }
    // Writers wait from here to commit: every write before is captured by
    // the trigger and committed below `start`, every write after commits
    // after this transaction and comes from the slot.
    run(
        &format!("LOCK TABLE ONLY {table} IN SHARE ROW EXCLUSIVE MODE"),
        &[],
    );
    let prior = value(
        "SELECT relreplident::text FROM pg_class WHERE oid = $1::text::oid",
        &[Some(relid.to_string())],
    )
    .unwrap_or_else(|| "d".into());
    if prior != "f" {
        run(
            &format!("ALTER TABLE ONLY {table} REPLICA IDENTITY FULL"),
            &[],
        );
    }
    run(
        &format!("ALTER PUBLICATION {PUBLICATION} ADD TABLE ONLY {table}"),
        &[],
    );
    crate::triggers::set_capture_enabled(relid, false);
    let start = value("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
        .unwrap_or_else(|| raise("XX000", "could not read the WAL position", None));
    wal_capture::insert(relid, slot, &start, &prior);
    install_read_function(relid);
    regenerate_readers(relid);
    pgrx::log!("pg_trickle: {table} is captured from the WAL (slot {slot}, from {start})");
}

/// Start switching `relid` back to trigger capture: the trigger captures
/// from now on, the slot supplies what committed before, and the slot
/// goes once drained that far.
pub(super) fn switch_to_trigger(relid: u32, table: &str) {
    // SAFETY: reads this backend's transaction state.
    if unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId {
        // Its earlier writes went to no trigger, and commit after the cut,
        // past what the slot supplies: they would be lost.
        raise(
            "25000",
            format!("switching {table} back to trigger capture must be the first write of its transaction"),
            Some("Call set_capture_mode in a transaction of its own.".into()),
        );
    }
    lock_slot(relid);
    run(
        &format!("LOCK TABLE ONLY {table} IN SHARE ROW EXCLUSIVE MODE"),
        &[],
    );
    if change_buffers::is_discarding(relid) {
        // Discarded capture keeps its trigger disabled until resumed.
    } else {
        crate::triggers::set_capture_enabled(relid, true);
    }
    let stop = value("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
        .unwrap_or_else(|| raise("XX000", "could not read the WAL position", None));
    // A transaction that refreshed before this switch recorded its own
    // position as a WAL position, below the cut; the trigger's ids from
    // here on start past the cut, so that its rows written after the
    // switch are not taken as consumed by that position.
    run(
        &format!(
            "SELECT pg_catalog.setval(s.seq, GREATEST(\
               coalesce(pg_catalog.pg_sequence_last_value(s.seq), 1), \
               ($1::pg_catalog.pg_lsn OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8)) \
             FROM (SELECT pg_catalog.pg_get_serial_sequence('pgtrickle_changes.changes_{relid}', 'change_id')\
                   ::pg_catalog.regclass AS seq) s"
        ),
        &[Some(stop.clone())],
    );
    wal_capture::set_stop(relid, &stop);
    pgrx::log!(
        "pg_trickle: {table} is captured by triggers again; its slot is drained until {stop}"
    );
}

/// Regenerate the statements of every stream table that captures `relid`
/// (what a refresh reads its changes from changed; nothing else did, so
/// they keep their frontier and stay DIFFERENTIAL).
pub(super) fn regenerate_readers(relid: u32) {
    for id in sources::capturing_reader_ids(relid) {
        crate::regenerate::regenerate_one(id);
    }
}

/// Switch a captured source between `trigger` and `wal` capture (see
/// docs/DIFFERENTIAL.md). Only the source's owner (or a superuser) may;
/// switching to `wal` must be the first write of its transaction. Returns
/// the mode now in effect.
#[pg_extern]
fn set_capture_mode(source: &str, mode: &str) -> String {
    let me = security::caller();
    // The name resolves under the caller's search_path.
    let relid = crate::spi::relation_oid_of(source);
    as_extension(|| {
        crate::compat::require_current_sql();
        let table = crate::spi::read_value(
            "SELECT $1::pg_catalog.text::pg_catalog.oid::pg_catalog.regclass::pg_catalog.text",
            &[Some(relid.to_string())],
        )
        .unwrap_or_else(|| source.to_string());
        let wanted = pg_trickle_core::catalog::Capture::parse(mode).unwrap_or_else(|| {
            raise(
                "22023",
                format!("unknown capture mode \"{mode}\""),
                Some("Capture modes are trigger and wal.".into()),
            )
        });
        security::require_owner(
            me,
            security::relation_owner(relid),
            &format!("table {table}"),
        );
        let captured = crate::spi::read_value(
            "SELECT 'yes' FROM pgtrickle.pgt_change_buffers WHERE source_relid = $1::text::oid",
            &[Some(relid.to_string())],
        );
        if captured.is_none() {
            raise(
                "55000",
                format!("{table} is not captured: no DIFFERENTIAL stream table reads it"),
                Some("Create the stream table first; its sources are captured by triggers until switched.".into()),
            );
        }
        let current = crate::spi::read_value(
            "SELECT coalesce(stop_lsn::text, '') FROM pgtrickle.pgt_wal_capture WHERE source_relid = $1::text::oid",
            &[Some(relid.to_string())],
        )
        .map(|stop| (!stop.is_empty()).then_some(stop));
        match (wanted, current) {
            (pg_trickle_core::catalog::Capture::Wal, None) => switch_to_wal(relid, &table),
            (pg_trickle_core::catalog::Capture::Wal, Some(Some(stop))) => raise(
                "55006",
                format!(
                    "{table} is still switching back to trigger capture (its slot is drained until {stop})"
                ),
                Some("Wait for the scheduler to drain it (pgtrickle.wal_capture_status()), or run pgtrickle.drain_wal_capture().".into()),
            ),
            (pg_trickle_core::catalog::Capture::Trigger, Some(None)) => {
                switch_to_trigger(relid, &table)
            }
            _ => {}
        }
        wanted.name().to_string()
    })
}
