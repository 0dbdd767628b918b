//! What `DROP EXTENSION pg_trickle` must not leave behind: the logical
//! replication slots of sources captured from the WAL (a slot keeps WAL on
//! disk until it is dropped) and the `pgtrickle_capture` publication.
//! Neither belongs to the extension in PostgreSQL's eyes, so a
//! `ProcessUtility` hook notes the slots of this database before the drop
//! and, once the drop succeeded, drops them and the publication.
//!
//! A slot drop cannot be rolled back: when the transaction that dropped
//! the extension rolls back, the extension comes back without its slots,
//! and the next drain discards capture on those sources (their stream
//! tables are recomputed FULL), never silently wrong.

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::PgList;

static mut PREVIOUS_HOOK: pg_sys::ProcessUtility_hook_type = None;

/// Install the hook; called once from `_PG_init`.
pub fn install() {
    // SAFETY: _PG_init runs once per process, before any statement.
    unsafe {
        PREVIOUS_HOOK = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Whether `stmt` is a `DROP EXTENSION` naming pg_trickle.
///
/// # Safety
/// `stmt` is a valid utility statement node.
unsafe fn drops_pg_trickle(stmt: *mut pg_sys::Node) -> bool {
    if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_DropStmt {
        return false;
    }
    let drop = stmt as *mut pg_sys::DropStmt;
    if (*drop).removeType != pg_sys::ObjectType::OBJECT_EXTENSION {
        return false;
    }
    let objects = PgList::<pg_sys::Node>::from_pg((*drop).objects);
    let named = objects.iter_ptr().any(|node| {
        !node.is_null()
            && (*node).type_ == pg_sys::NodeTag::T_String
            && CStr::from_ptr((*(node as *mut pg_sys::String)).sval).to_bytes() == b"pg_trickle"
    });
    named
}

/// The capture slots of this database's pg_trickle (None: it is not installed).
fn capture_slots() -> Option<Vec<String>> {
    crate::spi::read_value(
        "SELECT 'yes' FROM pg_catalog.pg_extension WHERE extname = 'pg_trickle'",
        &[],
    )?;
    Some(crate::spi::first_column(
        "SELECT s.slot_name::text FROM pg_catalog.pg_replication_slots s \
         WHERE s.database = pg_catalog.current_database() \
         AND pg_catalog.left(s.slot_name, pg_catalog.length($1)) = $1",
        &[Some(crate::wal_capture::slot_prefix())],
    ))
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let slots = if drops_pg_trickle((*pstmt).utilityStmt) {
        capture_slots()
    } else {
        None
    };
    // pgrx wraps standard_ProcessUtility as a Rust function, so the two
    // cannot share one function pointer.
    match PREVIOUS_HOOK {
        Some(previous) => previous(
            pstmt,
            query,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
        None => pg_sys::standard_ProcessUtility(
            pstmt,
            query,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        ),
    }
    if let Some(slots) = slots {
        for slot in &slots {
            crate::spi::run(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
                &[Some(slot.clone())],
            );
        }
        crate::spi::run(
            &format!(
                "DROP PUBLICATION IF EXISTS {}",
                crate::wal_capture::PUBLICATION
            ),
            &[],
        );
        if !slots.is_empty() {
            pgrx::log!(
                "pg_trickle: dropped the capture slots {} with the extension",
                slots.join(", ")
            );
        }
    }
}
