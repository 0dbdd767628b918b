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

use std::cell::RefCell;
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

mod decode;
mod drain;
mod status;
mod switch;

pub use drain::{drain, drain_all, drop_wal_capture, text_array};
pub use status::slot_lag;

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
/// one backend at a time), until the transaction ends. Drains, switches
/// and drops hold it that long; a refresh's peek takes it in a
/// subtransaction it rolls back, so a transaction that refreshes never
/// holds up the scheduler or other readers' refreshes.
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
/// every captured source has, `wake::wake_on_commit_wrapper`, whose
/// transaction callback calls [`forget_writes`] when the transaction
/// ends): its changes reach a WAL-captured buffer only after commit, so
/// this transaction may not refresh its readers.
pub fn note_write(relid: u32) {
    WRITTEN.with(|w| {
        if !w.borrow().contains(&relid) {
            w.borrow_mut().insert(relid);
        }
    });
}

/// Forget the writes noted in the transaction that is ending.
pub fn forget_writes() {
    WRITTEN.with(|w| {
        if let Ok(mut w) = w.try_borrow_mut() {
            w.clear();
        }
    });
}

/// The first of `wal_sources` (sources captured from the WAL) that this
/// transaction wrote: its own changes are decoded only after it commits,
/// so a refresh in it must recompute FULL.
pub fn written_wal_source(wal_sources: &[u32]) -> Option<u32> {
    WRITTEN.with(|w| {
        let written = w.borrow();
        wal_sources.iter().copied().find(|s| written.contains(s))
    })
}

/// Why a refresh in a transaction that wrote `source` (captured from the
/// WAL) ran FULL.
pub fn own_write_reason(source: u32) -> String {
    let src = crate::spi::relation_name(source).unwrap_or_default();
    format!(
        "this transaction wrote source {src}, which is captured from the WAL, where its own changes appear only after it commits; recomputed FULL"
    )
}
