//! Event-driven wake: a committed change to a captured source sets the
//! scheduler's latch through shared memory, so the scheduler need not wait
//! for its poll interval. A background worker cannot `LISTEN`; this is the
//! path instead. A statement-level trigger on each source registers, once
//! per transaction, a commit callback; rolled-back transactions never wake
//! the scheduler. Needs `shared_preload_libraries = 'pg_trickle'` (the
//! scheduler needs it anyway); without it nothing is woken and the
//! scheduler polls.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, register_xact_callback, PgAtomic, PgXactCallbackEvent};

use crate::gucs;

/// The scheduler's `pgprocno + 1`, or 0 when no scheduler runs.
static SCHEDULER: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"pg_trickle_scheduler_proc") };

/// Whether this process has the shared memory (the library was preloaded).
static mut SHMEM_READY: bool = false;

thread_local! {
    /// Whether this transaction already registered its commit wake.
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
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

/// Statement-level trigger on captured sources: wake the scheduler when
/// this transaction commits (once per transaction).
#[pg_trigger]
fn wake_on_commit<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    if let Ok(relid) = trigger.relation().map(|r| r.oid().to_u32()) {
        crate::wal_capture::note_write(relid);
    }
    if gucs::EVENT_DRIVEN_WAKE.get() && ready() && !REGISTERED.with(Cell::get) {
        REGISTERED.with(|r| r.set(true));
        register_xact_callback(PgXactCallbackEvent::Commit, wake_scheduler);
        // A prepared transaction's changes commit later, in whatever
        // session runs COMMIT PREPARED: the scheduler finds them by polling.
        crate::xact_end::on_transaction_end(|| REGISTERED.with(|r| r.set(false)));
    }
    Ok(None)
}
