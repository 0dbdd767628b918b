//! Capture from the WAL: a source in capture mode `wal` has no row
//! trigger; a logical replication slot (`pgoutput`, publication
//! `pgtrickle_capture`) carries its changes instead, and the scheduler
//! decodes them (with `pg_trickle_core::wal`) into the same change buffer
//! trigger capture writes. Refresh does not care where a change came from,
//! with one addition that keeps the snapshot frontier exact:
//!
//! A refresh consumes every change of the transactions its statement's
//! snapshot sees, and reads the sources in that snapshot. A transaction can
//! commit after the last drain and before that snapshot; its changes are in
//! the source but not yet in the buffer. So a refresh reads a source's
//! changes as the buffer *plus* `pgtrickle_changes.wal_changes_<oid>`: the
//! changes the statement's snapshot sees that committed at or after the
//! drain position that snapshot sees (the buffer rows and the position are
//! written by one transaction, so they always agree), decoded from the slot
//! on the spot. The slot is advanced only to a position every snapshot in
//! the cluster already sees, so nothing a refresh may still need is gone.
//! See docs/DIFFERENTIAL.md ("Capture from the WAL").
//!
//! `wal_changes_<oid>` is callable only with the read token of the refresh
//! running in this backend, passed as a statement parameter: a function in
//! a defining query cannot call it to read the source's history.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use pg_trickle_core::catalog::SourceKind;
use pg_trickle_core::wal::capture::{
    buffer_record, column_map, lsn_text, parse_lsn, widen_xid, Snapshot,
};
use pg_trickle_core::wal::{decode, Assembler, Change, ChangeKind};
use pgrx::prelude::*;

use crate::catalog::{change_buffers, sources, wal_capture};
use crate::security::{self, as_extension};
use crate::spi::{raise, run, value};

/// The publication every WAL-captured source of a database belongs to
/// (created with the extension: pgoutput on PostgreSQL 15 cannot read a
/// publication created after its slot).
pub const PUBLICATION: &str = "pgtrickle_capture";

/// The prefix of this database's capture slot names.
pub fn slot_prefix() -> String {
    // SAFETY: MyDatabaseId is set once a backend is connected.
    format!("pgtrickle_{}_", unsafe { pg_sys::MyDatabaseId }.to_u32())
}

/// The slot that captures `relid`.
pub fn slot_name(relid: u32) -> String {
    format!("{}{relid}", slot_prefix())
}

/// The advisory lock key of `relid`'s slot.
fn slot_lock_key(relid: u32) -> String {
    const CLASS: i64 = 0x7067_745f_0000_0000; // "pgt_" in the high bytes
    (CLASS | i64::from(relid)).to_string()
}

/// Serialise everything that reads or moves `relid`'s slot (a slot serves
/// one backend at a time), until the transaction ends.
fn lock_slot(relid: u32) {
    run(
        "SELECT pg_catalog.pg_advisory_xact_lock($1::text::bigint)",
        &[Some(slot_lock_key(relid))],
    );
}

/// Whether nothing holds the lock of the slot named `slot` (taking it
/// until the transaction ends).
fn slot_free(slot: &str) -> bool {
    let Some(relid) = slot
        .strip_prefix(&slot_prefix())
        .and_then(|r| r.parse::<u32>().ok())
    else {
        return true;
    };
    value(
        "SELECT pg_catalog.pg_try_advisory_xact_lock($1::text::bigint)::text",
        &[Some(slot_lock_key(relid))],
    )
    .as_deref()
        == Some("true")
}

thread_local! {
    static TOKEN: RefCell<Option<String>> = const { RefCell::new(None) };
    static WRITTEN: RefCell<BTreeSet<u32>> = const { RefCell::new(BTreeSet::new()) };
    static WRITES_TRACKED: Cell<bool> = const { Cell::new(false) };
}

/// The read token of the refresh running in this backend, valid until dropped.
pub struct ReadToken(pub String);

impl ReadToken {
    /// Issue a fresh random token.
    pub fn issue() -> ReadToken {
        let mut bytes = [0u8; 16];
        // SAFETY: writes exactly `len` bytes into the buffer.
        let ok = unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) };
        if !ok {
            raise("XX000", "could not generate a random read token", None);
        }
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        TOKEN.with(|t| *t.borrow_mut() = Some(token.clone()));
        ReadToken(token)
    }
}

impl Drop for ReadToken {
    fn drop(&mut self) {
        TOKEN.with(|t| t.borrow_mut().take());
    }
}

/// Note that this transaction wrote `relid` (from the statement trigger
/// every captured source has): its changes reach a WAL-captured buffer
/// only after commit, so this transaction may not refresh its readers.
pub fn note_write(relid: u32) {
    WRITTEN.with(|w| w.borrow_mut().insert(relid));
    if !WRITES_TRACKED.with(Cell::get) {
        WRITES_TRACKED.with(|t| t.set(true));
        let forget = || {
            WRITTEN.with(|w| w.borrow_mut().clear());
            WRITES_TRACKED.with(|t| t.set(false));
        };
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, forget);
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, forget);
    }
}

/// The first of `sources` that this transaction wrote and that is
/// captured from the WAL: its own changes are decoded only after it
/// commits, so a refresh in it must recompute FULL.
pub fn written_wal_source(sources: &[u32]) -> Option<u32> {
    let written: Vec<u32> = WRITTEN.with(|w| {
        sources
            .iter()
            .copied()
            .filter(|s| w.borrow().contains(s))
            .collect()
    });
    if written.is_empty() {
        return None;
    }
    wal_capture::among(&written).first().copied()
}

/// Why a refresh in a transaction that wrote `source` (captured from the
/// WAL) ran FULL.
pub fn own_write_reason(source: u32) -> String {
    let src = crate::spi::relation_name(source).unwrap_or_default();
    format!(
        "this transaction wrote source {src}, which is captured from the WAL, where its own changes appear only after it commits; recomputed FULL"
    )
}

/// Lock the slots of the WAL-captured sources among `sources`, in oid
/// order (a refresh reads them all; one order avoids deadlocks).
pub fn lock_slots_of(sources: &[u32]) -> Vec<u32> {
    let wal = wal_capture::among(sources);
    for relid in &wal {
        lock_slot(*relid);
    }
    wal
}

/// The next full transaction id, to widen decoded 32-bit ids with.
fn next_full_xid() -> u64 {
    value(
        "SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text",
        &[],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("XX000", "could not read the next transaction id", None))
}

/// The changes to `relid` of transactions committing in `[from, upto)`
/// that `keep` accepts, decoded from its slot (peeked, not consumed), as
/// records of the buffer's row type. A change's id is its WAL position:
/// a transaction's changes before and after a refresh in it are told
/// apart by the WAL position that refresh recorded.
fn decode_slot(
    relid: u32,
    slot: &str,
    from: u64,
    upto: u64,
    keep: impl Fn(u64) -> bool,
) -> Vec<String> {
    let columns: Vec<String> = crate::capture::buffer_columns(relid);
    let next = next_full_xid();
    let messages: Vec<(i64, Vec<u8>)> = Spi::connect(|client| {
        let args: Vec<pgrx::datum::DatumWithOid> = vec![slot.into(), lsn_text(upto).into()];
        client
            .select(
                "SELECT (lsn OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8, data \
                 FROM pg_catalog.pg_logical_slot_peek_binary_changes($1::text::name, $2::text::pg_lsn, NULL, \
                 'proto_version', '1', 'publication_names', 'pgtrickle_capture')",
                None,
                &args,
            )
            .unwrap_or_else(|e| raise("55000", format!("reading capture slot {slot} failed: {e}"), None))
            .map(|row| {
                (
                    row.get::<i64>(1).ok().flatten().unwrap_or_default(),
                    row.get::<Vec<u8>>(2).ok().flatten().unwrap_or_default(),
                )
            })
            .collect()
    });
    let source = || crate::spi::relation_name(relid).unwrap_or_else(|| relid.to_string());
    let mut assembler = Assembler::new();
    let mut out = Vec::new();
    for (lsn, bytes) in &messages {
        let message = decode(bytes).unwrap_or_else(|e| {
            raise(
                "XX001",
                format!(
                    "capture slot {slot} of {} sent a message this version cannot decode: {e}",
                    source()
                ),
                None,
            )
        });
        let changes: Vec<Change> = assembler
            .push(&message)
            .unwrap_or_else(|e| raise("55000", format!("capture slot {slot}: {e}"), None));
        for change in changes {
            if change.relation != relid
                || change.commit_lsn < from
                || change.commit_lsn >= upto
                || change.kind == ChangeKind::Truncate
            {
                continue;
            }
            let xid = widen_xid(change.xid, next);
            if !keep(xid) {
                continue;
            }
            let relation = assembler
                .relation(relid)
                .unwrap_or_else(|| raise("XX000", "a change to an undescribed relation", None));
            let record = column_map(&columns, relation)
                .and_then(|map| buffer_record(Some(*lsn), xid, &change, &map))
                .unwrap_or_else(|e| raise("55000", format!("capture slot {slot}: {e}"), None));
            out.push(record);
        }
    }
    out
}

/// The end of the WAL inserted so far, flushed: every commit record a
/// snapshot taken before this call sees is readable by decoding (a commit
/// with `synchronous_commit = off` is visible before it is flushed).
fn flushed_insert_lsn() -> u64 {
    // SAFETY: plain calls into the WAL module of a normal backend.
    unsafe {
        let mut lsn = pg_sys::GetXLogInsertRecPtr();
        // At the start of a page the insert position is past the page's
        // header, which is not written until a record follows: what is
        // inserted ends at the page boundary.
        const SHORT_HEADER: u64 = 24;
        const LONG_HEADER: u64 = 40;
        let segment = pg_sys::wal_segment_size as u64;
        if segment > 0 && lsn % segment == LONG_HEADER {
            lsn -= LONG_HEADER;
        } else if lsn % u64::from(pg_sys::XLOG_BLCKSZ) == SHORT_HEADER {
            lsn -= SHORT_HEADER;
        }
        pg_sys::XLogFlush(lsn);
        lsn
    }
}

/// The committed changes to `source` that snapshot `snapshot` sees and
/// that are not in its buffer yet (committed at or after `drained`, and
/// before `stop` while switching back), as buffer records. Only the
/// refresh holding `token` may ask; see the module comment.
#[pg_extern(volatile, parallel_unsafe)]
fn _wal_pending(
    token: &str,
    source: pg_sys::Oid,
    snapshot: &str,
    drained: Option<&str>,
    stop: Option<&str>,
) -> Vec<String> {
    let valid = TOKEN.with(|t| t.borrow().as_deref() == Some(token)) && !token.is_empty();
    if !valid {
        raise(
            "42501",
            "the changes of a source captured from the WAL are read only by the refresh statements of pg_trickle",
            None,
        );
    }
    let relid = source.to_u32();
    let Some(from) = drained.and_then(parse_lsn) else {
        return Vec::new();
    };
    let snapshot = Snapshot::parse(snapshot)
        .unwrap_or_else(|| raise("22023", format!("not a pg_snapshot: {snapshot}"), None));
    let mut upto = flushed_insert_lsn();
    if let Some(stop) = stop.and_then(parse_lsn) {
        upto = upto.min(stop);
    }
    if upto <= from {
        return Vec::new();
    }
    let Some(capture) = wal_capture::of(relid) else {
        return Vec::new();
    };
    lock_slot(relid);
    decode_slot(relid, &capture.slot, from, upto, |xid| snapshot.sees(xid))
}

/// Create `relid`'s function a refresh reads undrained changes through.
fn install_read_function(relid: u32) {
    let func = format!("pgtrickle_changes.wal_changes_{relid}");
    run(
        &format!(
            "CREATE OR REPLACE FUNCTION {func}(token pg_catalog.text, snap pg_catalog.pg_snapshot) \
             RETURNS SETOF pgtrickle_changes.changes_{relid} LANGUAGE sql STABLE SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp AS $pgt$\n\
             SELECT c.* FROM pg_catalog.unnest(pgtrickle._wal_pending($1, {relid}::pg_catalog.oid, $2::pg_catalog.text, \
               (SELECT pg_catalog.max(p.drained_upto) FROM pgtrickle.pgt_wal_progress p \
                WHERE p.source_relid OPERATOR(pg_catalog.=) {relid}::pg_catalog.oid)::pg_catalog.text, \
               (SELECT w.stop_lsn FROM pgtrickle.pgt_wal_capture w \
                WHERE w.source_relid OPERATOR(pg_catalog.=) {relid}::pg_catalog.oid)::pg_catalog.text\
             )::pgtrickle_changes.changes_{relid}[]) c\n$pgt$"
        ),
        &[],
    );
    run(
        &format!(
            "GRANT EXECUTE ON FUNCTION {func}(pg_catalog.text, pg_catalog.pg_snapshot) TO PUBLIC"
        ),
        &[],
    );
}

/// Why `relid` cannot be captured from the WAL, if it cannot.
fn wal_problem(relid: u32) -> Option<String> {
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
fn switch_to_wal(relid: u32, table: &str) {
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
fn create_slot(slot: &str) {
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
fn complete_switch_to_wal(relid: u32, table: &str, slot: &str) {
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
    replan_readers(relid, "capture mode changed to wal");
    pgrx::log!("pg_trickle: {table} is captured from the WAL (slot {slot}, from {start})");
}

/// Start switching `relid` back to trigger capture: the trigger captures
/// from now on, the slot supplies what committed before, and the slot
/// goes once drained that far.
fn switch_to_trigger(relid: u32, table: &str) {
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
    wal_capture::set_stop(relid, &stop);
    pgrx::log!(
        "pg_trickle: {table} is captured by triggers again; its slot is drained until {stop}"
    );
}

/// Plan every stream table that captures `relid` again (what a refresh
/// reads its changes from changed).
fn replan_readers(relid: u32, reason: &str) {
    for id in sources::capturing_reader_ids(relid) {
        crate::regenerate::regenerate_one(id);
        let _ = reason;
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
    let relid: u32 = crate::spi::read_value(
        "SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::pg_catalog.text",
        &[Some(source.to_string())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| {
        raise(
            "42P01",
            format!("relation \"{source}\" does not exist"),
            None,
        )
    });
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
fn horizon() -> u64 {
    let next = next_full_xid();
    crate::spi::first_column::<u32>(
        "SELECT backend_xmin::text FROM pg_catalog.pg_stat_activity WHERE backend_xmin IS NOT NULL",
        &[],
    )
    .into_iter()
    .map(|x| widen_xid(x, next))
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
    if stop.is_some_and(|s| drained >= s) {
        finish_switch_back(capture);
        return 0;
    }
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
    if let Some(settled) = wal_capture::settled_progress(relid, horizon()) {
        if parse_lsn(&settled) > parse_lsn(&confirmed) {
            run(
                "SELECT 1 FROM pg_catalog.pg_replication_slot_advance($1::text::name, $2::pg_lsn)",
                &[Some(capture.slot.clone()), Some(settled.clone())],
            );
        }
        wal_capture::forget_progress_before(relid, &settled);
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
            "change_id, xid, op, captured_at, {}, {}",
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
fn text_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// The switch back to triggers is drained: drop the slot, take the source
/// out of the publication, restore its replica identity, forget the
/// capture and plan its readers again.
fn finish_switch_back(capture: &wal_capture::WalSource) {
    let relid = capture.relid;
    release_slot_and_publication(capture);
    wal_capture::delete(relid);
    replan_readers(relid, "capture mode changed to trigger");
    let table = crate::spi::relation_name(relid).unwrap_or_default();
    pgrx::log!("pg_trickle: the switch of {table} back to trigger capture is complete");
}

/// Drop `capture`'s slot (when it exists), take its source out of the
/// publication and give it back its replica identity.
fn release_slot_and_publication(capture: &wal_capture::WalSource) {
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

thread_local! {
    static REPORTED: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// Log (once per slot and process) every capture slot of this database
/// that no capture owns.
fn report_orphans() {
    for l in wal_capture::listing(pg_sys::Oid::INVALID, true, &slot_prefix()) {
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
        for l in wal_capture::listing(pg_sys::Oid::INVALID, true, &slot_prefix()) {
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
    let rows = as_extension(|| wal_capture::listing(me, all, &slot_prefix()));
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
/// writes do not count) and seconds since that drain.
pub fn slot_lag(relid: u32) -> Option<(i64, f64)> {
    let _ = wal_capture::of(relid)?;
    let r = crate::spi::row(
        "SELECT greatest(coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), \
                greatest(max(p.drained_upto), max(w.drain_end_lsn))), 0), 0)::bigint::text, \
         CASE WHEN pg_current_wal_lsn() > greatest(max(p.drained_upto), max(w.drain_end_lsn)) \
              THEN coalesce(extract(epoch FROM now() - max(w.last_drain_at)), 0) ELSE 0 END::text \
         FROM pgtrickle.pgt_wal_progress p JOIN pgtrickle.pgt_wal_capture w ON w.source_relid = p.source_relid \
         WHERE p.source_relid = $1::text::oid",
        &[Some(relid.to_string())],
    )?;
    let num = |i: usize| {
        r.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((num(0) as i64, num(1)))
}
