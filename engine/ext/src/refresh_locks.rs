//! The refresh's lock order: the relations a stream table reads first, its
//! catalog row after.
//!
//! DDL on a source (an operator moving a partition: `LOCK TABLE`, then
//! `ATTACH`/`DETACH`) holds the source's lock and then, in pg_trickle's
//! event trigger, updates the catalog rows of the stream tables that read
//! it (marking them for reinitialisation). A refresh that locked its row
//! first and then waited for the source waited for the DDL while the DDL
//! waited for it, and PostgreSQL killed one of them with 40P01. Locking
//! the sources (and their partitions and children, as reading them does)
//! before the row makes the refresh wait for the DDL holding nothing the
//! DDL needs. The scheduler does not wait at all: a source locked against
//! reading skips the stream table until the next tick.
//!
//! The other order exists too: a session holding the row may go on to need
//! a source exclusively (a refresh-mode change or a drop removes the
//! source's capture trigger). So a refresh never waits for the row while
//! holding its sources: it takes them and tries the row in a
//! subtransaction, and when the row is busy it gives the sources back,
//! waits for the row's holder holding nothing, and starts again.
//! `alter_stream_table`, which locks the row and then re-plans (reading
//! the sources), takes them the same way first.
//!
//! What this does not cover: sources are taken one after another (in oid
//! order), so DDL that locks a later source exclusively and then an
//! earlier one can still meet a refresh holding the earlier one.

use pgrx::pg_sys;
use pgrx::PgList;

use crate::catalog::{lock_for_refresh, StreamTableRow};
use crate::spi::in_subtransaction_kept_if;

/// Lock what a refresh of stream table `id` reads, then its catalog row,
/// and read the row (see the module comment). `wait` false (the
/// scheduler): None at once when another session holds a source against
/// reading or holds the row. None too when the stream table is gone.
pub fn lock_for_refresh_in_order(id: i64, wait: bool) -> Option<StreamTableRow> {
    if !wait {
        if !lock_sources(id, false) {
            return None;
        }
        return lock_for_refresh(id, true);
    }
    loop {
        let (row, got) = in_subtransaction_kept_if(|| {
            lock_sources(id, true);
            let row = lock_for_refresh(id, true);
            let got = row.is_some();
            (row, got)
        });
        if got {
            return row;
        }
        // Busy or gone: wait for the row's holder with nothing held (the
        // subtransaction gave the sources back, and this one gives the row
        // back), then start again; gone ends it.
        let (exists, _) =
            in_subtransaction_kept_if(|| (lock_for_refresh(id, false).is_some(), false));
        if !exists {
            return None;
        }
    }
}

unsafe extern "C-unwind" {
    /// `parent` and every partition or inheritance child below it,
    /// children locked with `lockmode` (catalog/pg_inherits.h; the same
    /// signature in every supported major). Not in pgrx's bindings; call
    /// it through [`members`], which guards the FFI boundary.
    fn find_all_inheritors(
        parent: pg_sys::Oid,
        lockmode: pg_sys::LOCKMODE,
        numparents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// `parent` first, then its partitions and children, the members locked
/// with `lockmode`.
fn members(parent: pg_sys::Oid, lockmode: pg_sys::LOCKMODE) -> Vec<pg_sys::Oid> {
    // SAFETY: a catalog scan that may raise an ERROR, which the boundary
    // guard turns into a Rust panic; the list is read right away.
    unsafe {
        let list = pg_sys::ffi::pg_guard_ffi_boundary(|| {
            find_all_inheritors(parent, lockmode, std::ptr::null_mut())
        });
        PgList::<std::ffi::c_void>::from_pg(list)
            .iter_oid()
            .collect()
    }
}

/// Lock, for reading, every relation stream table `st_id` reads, with its
/// partitions and children (in oid order of the sources, each parent
/// before its members, as `LOCK TABLE` does). `wait`: false returns false
/// at the first relation another session holds against reading (or is
/// queued to), true waits for each. Locks are kept to the end of the
/// transaction.
fn lock_sources(st_id: i64, wait: bool) -> bool {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    for source in crate::catalog::sources::all_of(st_id) {
        let oid = pg_sys::Oid::from(source);
        if wait {
            // SAFETY: relation locks by oid need no open relation; a
            // dropped oid only locks a tag nobody else uses.
            unsafe { pg_sys::LockRelationOid(oid, lock) };
            members(oid, lock);
            continue;
        }
        // SAFETY: as above.
        if !unsafe { pg_sys::ConditionalLockRelationOid(oid, lock) } {
            return false;
        }
        for member in members(oid, pg_sys::NoLock as pg_sys::LOCKMODE)
            .into_iter()
            .skip(1)
        {
            // SAFETY: as above.
            if !unsafe { pg_sys::ConditionalLockRelationOid(member, lock) } {
                return false;
            }
        }
    }
    true
}
