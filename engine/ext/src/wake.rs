//! Event-driven wake: a committed change to a captured source sets the
//! scheduler's latch through shared memory, so the scheduler need not wait
//! for its poll interval. A background worker cannot `LISTEN`; this is the
//! path instead. A statement-level trigger on each source marks the
//! transaction, and one transaction callback per backend sets the latch
//! when a marked transaction commits; rolled-back transactions never wake
//! the scheduler (which spaces the runs wakes start; see
//! `pg_trickle.wake_min_interval_ms`). Needs `shared_preload_libraries = 'pg_trickle'` (the
//! scheduler needs it anyway); without it nothing is woken and the
//! scheduler polls.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};

use crate::gucs;

/// The scheduler's `pgprocno + 1`, or 0 when no scheduler runs.
static SCHEDULER: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"pg_trickle_scheduler_proc") };

/// Whether this process has the shared memory (the library was preloaded).
static mut SHMEM_READY: bool = false;

thread_local! {
    /// Whether this transaction wrote a captured source and wakes the
    /// scheduler when it commits.
    static WAKE_AT_COMMIT: Cell<bool> = const { Cell::new(false) };
    /// Whether [`at_transaction_end`] is registered in this backend.
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn ready() -> bool {
    // SAFETY: written once in _PG_init of the postmaster, before any fork.
    unsafe { SHMEM_READY }
}

/// Reserve the shared memory; call from `_PG_init` while preloading.
pub fn init_shmem() {
    pg_shmem_init!(SCHEDULER);
    // SAFETY: single-threaded postmaster start-up.
    unsafe { SHMEM_READY = true };
}

/// Publish the calling process (the scheduler) as the one to wake.
pub fn register_scheduler() {
    if ready() {
        // SAFETY: MyProc is set for every initialised backend and worker.
        let procno = unsafe { (*pg_sys::MyProc).pgprocno };
        SCHEDULER.get().store(procno + 1, Ordering::SeqCst);
    }
}

/// Stop publishing the scheduler (it is exiting).
pub fn unregister_scheduler() {
    if ready() {
        SCHEDULER.get().store(0, Ordering::SeqCst);
    }
}

fn wake_scheduler() {
    if !ready() {
        return;
    }
    let p = SCHEDULER.get().load(Ordering::SeqCst);
    if p > 0 {
        // SAFETY: pgprocno indexes ProcGlobal->allProcs; SetLatch on another
        // process's latch is the documented way to wake it.
        unsafe {
            let proc_ = (*pg_sys::ProcGlobal).allProcs.add((p - 1) as usize);
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

/// The version-1 calling convention record of [`wake_on_commit_wrapper`].
#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_wake_on_commit_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `pgtrickle.wake_on_commit()`, the statement-level trigger of every
/// captured source and member: note the write (see
/// `wal_capture::note_write`) and, with event-driven wake on, wake the
/// scheduler when this transaction commits.
///
/// A plain C function with nothing to register per transaction: one
/// transaction callback per backend does the wake and the forgetting.
/// Every statement that writes a source runs it, so it costs a writer
/// what a function call costs.
///
/// # Safety
/// Called by PostgreSQL's function manager as a trigger.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn wake_on_commit_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the function manager passes a valid fcinfo; the firing
    // relation is open while its trigger runs.
    let relid = unsafe {
        (*crate::triggers::trigger_data(fcinfo, "pgtrickle.wake_on_commit()").tg_relation).rd_id
    };
    if !CALLBACK.with(Cell::get) {
        // SAFETY: registers a callback that lives as long as the library.
        unsafe { pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut()) };
        CALLBACK.with(|c| c.set(true));
    }
    crate::wal_capture::note_write(relid.to_u32());
    if gucs::EVENT_DRIVEN_WAKE.get() && ready() {
        WAKE_AT_COMMIT.with(|w| w.set(true));
    }
    pg_sys::Datum::from(0)
}

/// The transaction callback of this backend: at commit, wake the
/// scheduler if the transaction wrote a source; at the end of any
/// transaction (commit, abort, or PREPARE, whose changes commit later in
/// whatever session runs COMMIT PREPARED: the scheduler finds them by
/// polling), forget what it noted.
#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    let commit = matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
    );
    let end = commit
        || matches!(
            event,
            pg_sys::XactEvent::XACT_EVENT_ABORT
                | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
                | pg_sys::XactEvent::XACT_EVENT_PREPARE
        );
    if !end {
        return;
    }
    if WAKE_AT_COMMIT.with(|w| w.replace(false)) && commit {
        wake_scheduler();
    }
    crate::wal_capture::forget_writes();
}

pgrx::extension_sql!(
    r#"
-- Statement trigger of every captured source and member: wakes the
-- scheduler when the writing transaction commits (see engine/ext/src/wake.rs).
CREATE FUNCTION "wake_on_commit"()
	RETURNS TRIGGER
	LANGUAGE c
	AS 'MODULE_PATHNAME', 'wake_on_commit_wrapper';
"#,
    name = "wake_on_commit",
    requires = ["catalog"]
);
