//! The scheduler background worker.
//!
//! With `shared_preload_libraries = 'pg_trickle'` one worker connects to the
//! database named by `pg_trickle.database` and, every
//! `pg_trickle.scheduler_interval_ms`, refreshes the stream tables whose
//! schedule is due, upstream before downstream. Between polls it sleeps on
//! its latch, which a committed change to a captured source sets (see
//! [`crate::wake`]), so changes are picked up without waiting for the
//! interval; COMMIT PREPARED does not set it. Runs start at least
//! `pg_trickle.wake_min_interval_ms` apart, however often commits wake it. Each refresh runs in its own
//! transaction; a failure is rolled
//! back, recorded with its SQLSTATE in the catalog and history, and retried
//! when the schedule is next due. A stream table is refreshed as its owner,
//! never with the scheduler's superuser rights: a refresh its owner may not
//! run fails (42501 when a privilege was revoked), as a manual one would.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use pg_trickle_core::dag::refresh_order;
use pg_trickle_core::sqlstate::decide;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::catalog::{history, sources, stream_tables};
use crate::gucs::{DATABASE, ENABLED, SCHEDULER_INTERVAL_MS, WAKE_MIN_INTERVAL_MS};
use crate::refresh::{self, Initiator};
use crate::security::as_extension;
use crate::spi::in_subtransaction;

thread_local! {
    /// What the scheduler last reported doing (for naming a failed step).
    static DOING: RefCell<String> = const { RefCell::new(String::new()) };
    /// Whether this process is the scheduler (set when its loop starts).
    static IS_SCHEDULER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this backend is the scheduler worker.
pub fn is_scheduler() -> bool {
    IS_SCHEDULER.with(|s| s.get())
}

/// Register the worker; called from `_PG_init` during preload.
pub fn register_worker() {
    BackgroundWorkerBuilder::new("pg_trickle scheduler")
        .set_type("pg_trickle scheduler")
        .set_function("pg_trickle_scheduler_main")
        .set_library("pg_trickle")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Worker entry point.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = DATABASE
        .get()
        .and_then(|c| c.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("pg_trickle scheduler started in database \"{database}\"");
    crate::wake::register_scheduler();
    IS_SCHEDULER.with(|s| s.set(true));
    let mut last_run: Option<Instant> = None;
    loop {
        let interval = SCHEDULER_INTERVAL_MS.get().max(1) as u64;
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(interval))) {
            crate::wake::unregister_scheduler();
            break;
        }
        // Commits wake the scheduler as often as writers commit; runs are
        // spaced so that a stream of small writes costs one run per
        // interval, not one per commit.
        space_from(last_run);
        last_run = Some(Instant::now());
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if !ENABLED.get() {
            continue;
        }
        // None: pg_trickle is not installed here at this version. Every
        // transaction runs as the extension with a pinned search_path; each
        // refresh runs its stream table's statements as that table's owner.
        // Changes captured from the WAL reach their buffers first.
        report_activity(Some("draining WAL captures"));
        tick_transaction(|| as_extension(crate::wal_capture::drain_all));
        report_activity(Some("draining capture on other nodes"));
        let remote = tick_transaction(|| as_extension(remote_drains));
        for (source, node, owner) in remote {
            tick_transaction(move || {
                as_extension(|| crate::remote_capture::drain_entry(source, &node, &owner))
            });
        }
        let Some(due) = tick_transaction(|| as_extension(due_stream_tables)) else {
            report_activity(None);
            continue;
        };
        for id in due {
            tick_transaction(move || {
                as_extension(|| {
                    let name = stream_tables::name_of(id).unwrap_or_else(|| id.to_string());
                    report_activity(Some(&format!("refreshing stream table {name}")));
                    refresh_one(id)
                })
            });
        }
        // Slot lag counts the WAL written since the last drain, the
        // refreshes' own included: drain again before judging it.
        report_activity(Some("draining WAL captures"));
        tick_transaction(|| as_extension(crate::wal_capture::drain_all));
        report_activity(Some("evaluating backpressure"));
        tick_transaction(|| as_extension(evaluate_backpressure));
        report_activity(None);
    }
}

/// Sleep until `pg_trickle.wake_min_interval_ms` has passed since `last`
/// (the start of the previous run), ignoring the latch: wakes that come
/// meanwhile are served by the run that follows. Exits with the
/// postmaster.
fn space_from(last: Option<Instant>) {
    let Some(last) = last else { return };
    let min = Duration::from_millis(WAKE_MIN_INTERVAL_MS.get().max(0) as u64);
    let Some(rest) = min.checked_sub(last.elapsed()) else {
        return;
    };
    if rest.is_zero() {
        return;
    }
    // SAFETY: waiting on our own latch for a timeout only, as any
    // background worker may.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            rest.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
    }
}

/// Run `f` in a transaction of its own. An error that escapes it, or
/// that the commit itself raises (Citus committing on a node that just
/// went away), is logged and the transaction aborted: the scheduler goes
/// on with its next step instead of exiting, and what the transaction
/// did is undone (a refresh that did not commit is due again).
fn tick_transaction<R: Default>(f: impl FnOnce() -> R) -> R {
    let f = std::panic::AssertUnwindSafe(f);
    PgTryBuilder::new(move || BackgroundWorker::transaction(f))
        .catch_others(|e| {
            // SAFETY: the error is caught and its state copied by pgrx;
            // leaving every (sub)transaction is how a worker recovers from
            // an error outside a transaction block, as autovacuum does.
            unsafe { pg_sys::AbortOutOfAnyTransaction() };
            let (message, code) = match &e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    (r.message().to_string(), r.sql_error_code())
                }
            };
            let doing = DOING.with(|d| d.borrow().clone());
            warning!(
                "pg_trickle scheduler: {doing} failed and was rolled back ({code:?}): {message}"
            );
            R::default()
        })
        .execute()
}

/// Show what the scheduler is doing in `pg_stat_activity` (`state` active
/// with `query` saying what, or idle between ticks), as a backend shows
/// its statement: operators see which refresh it is in, and `harness
/// chaos` times its faults by it.
fn report_activity(doing: Option<&str>) {
    DOING.with(|d| *d.borrow_mut() = doing.unwrap_or("idle").to_string());
    let (state, text) = match doing {
        Some(what) => (
            pg_sys::BackendState::STATE_RUNNING,
            format!("pg_trickle scheduler: {what}"),
        ),
        None => (pg_sys::BackendState::STATE_IDLE, String::new()),
    };
    let text = std::ffi::CString::new(text).unwrap_or_default();
    // SAFETY: called from the worker's own process with a NUL-terminated
    // string PostgreSQL copies into shared memory.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

/// Whether pg_trickle is installed here at this library's version (an
/// older version's catalog lacks what the scheduler reads: it waits for
/// `ALTER EXTENSION pg_trickle UPDATE`).
fn extension_installed() -> bool {
    crate::compat::sql_matches_library()
}

/// The node capture slots due for a drain (sharded sources), each then
/// drained in a transaction of its own; a failing node is recorded and
/// retried with backoff, never fatal.
fn remote_drains() -> Vec<(u32, String, String)> {
    if !extension_installed() {
        return Vec::new();
    }
    in_subtransaction(crate::remote_capture::drain_list).unwrap_or_else(|f| {
        warning!(
            "pg_trickle: listing capture on other nodes failed ({}): {}",
            f.sqlstate,
            f.message
        );
        Vec::new()
    })
}

/// Re-evaluate backpressure on every source; a failure is logged, never fatal.
fn evaluate_backpressure() {
    if let Err(f) = in_subtransaction(|| {
        crate::operations::evaluate_all();
    }) {
        warning!(
            "pg_trickle: evaluating backpressure failed ({}): {}",
            f.sqlstate,
            f.message
        );
    }
}

/// Ids of stream tables whose schedule is due, upstream first; None when
/// the extension is not installed here at this library's version.
fn due_stream_tables() -> Option<Vec<i64>> {
    if !extension_installed() {
        return None;
    }
    let all = stream_tables::schedules();
    let edges: Vec<(i64, i64)> = sources::edges()
        .into_iter()
        .map(|e| (e.upstream, e.downstream))
        .collect();
    let nodes: Vec<i64> = all.iter().map(|s| s.id).collect();
    let order = refresh_order(&nodes, &edges).unwrap_or(nodes);
    Some(
        order
            .into_iter()
            .filter(|id| all.iter().any(|s| s.id == *id && s.due))
            .collect(),
    )
}

thread_local! {
    /// Consecutive transient failures per stream table (scheduler process only).
    static TRANSIENT: RefCell<HashMap<i64, u32>> = RefCell::new(HashMap::new());
}

/// Refresh one stream table, recording any failure instead of dying. What
/// happens next is decided from the SQLSTATE alone (never the message,
/// which follows lc_messages): transient failures retry on the next tick a
/// few times; others wait for the schedule.
fn refresh_one(id: i64) {
    match in_subtransaction(move || refresh::refresh_by_id(id, Initiator::Scheduler, true)) {
        Ok(_) => {
            TRANSIENT.with(|t| t.borrow_mut().remove(&id));
        }
        Err(failure) => {
            let previous = TRANSIENT.with(|t| t.borrow().get(&id).copied().unwrap_or(0));
            let decision = decide(&failure.sqlstate, previous);
            TRANSIENT.with(|t| {
                let mut t = t.borrow_mut();
                if decision.retry_next_tick {
                    t.insert(id, previous + 1);
                } else {
                    t.remove(&id);
                }
            });
            warning!(
                "pg_trickle: scheduled refresh of stream table {id} failed: {} (SQLSTATE {}); {}",
                failure.message,
                failure.sqlstate,
                decision.reason
            );
            // Without last_error_at the stream table stays due: retried next tick.
            stream_tables::record_failure(
                id,
                &failure.sqlstate,
                &failure.message,
                decision.retry_next_tick,
            );
            history::append(&history::Entry {
                st_id: id,
                started_at: None,
                mode: "ERROR",
                initiator: Initiator::Scheduler,
                rows_changed: None,
                reason: Some(&decision.reason),
                error: Some((&failure.sqlstate, &failure.message)),
            });
        }
    }
}
