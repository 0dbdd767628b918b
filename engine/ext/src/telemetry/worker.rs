//! The telemetry background worker: drains the shared-memory queue and
//! hands each batch to the export thread (`pg_trickle_otlp`), which does
//! the network I/O and touches nothing of PostgreSQL. The worker itself
//! never waits on the network: while a batch is on its way, spans wait in
//! the queue, and once the queue is full refreshes drop and count them.
//! It publishes the exporter's counters for `pgtrickle.telemetry_status()`
//! and logs export failures at most once per [`LOG_EVERY`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pg_trickle_core::telemetry::ring::LogLimit;
use pg_trickle_otlp::{Config, ExportThread, Protocol, Stats};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use super::queue::{self, ExportCounters};
use crate::gucs;

/// At most one log line about failed exports per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(30);
/// Spans handed over per request.
const BATCH: u32 = 512;

/// Register the worker; called from `_PG_init` during preload.
pub fn register_worker() {
    BackgroundWorkerBuilder::new("pg_trickle telemetry")
        .set_type("pg_trickle telemetry")
        .set_function("pg_trickle_telemetry_main")
        .set_library("pg_trickle")
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn micros(t: Option<SystemTime>) -> Option<i64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64)
}

/// The export settings as they are now.
fn config() -> Config {
    Config {
        endpoint: gucs::text(&gucs::OTEL_ENDPOINT),
        // SET and the configuration file refuse any other name.
        protocol: Protocol::parse(&gucs::text(&gucs::OTEL_PROTOCOL))
            .unwrap_or(Protocol::HttpProtobuf),
        timeout: Duration::from_millis(gucs::OTEL_TIMEOUT_MS.get().max(1) as u64),
    }
}

/// Start the export thread with every signal blocked in it: PostgreSQL's
/// handlers must run on this process's main thread alone.
fn spawn_export_thread() -> std::io::Result<ExportThread> {
    // SAFETY: plain signal-mask calls on the calling thread; the mask is
    // restored before returning, the new thread keeps the blocked one.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let thread = ExportThread::spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        thread
    }
}

/// Clear the worker's pid in the status however the worker exits.
#[pg_guard]
unsafe extern "C-unwind" fn forget_worker(_code: i32, _arg: pg_sys::Datum) {
    queue::set_worker(0);
}

/// What `now` adds to `before` (the same export thread's stats).
fn delta(before: &Stats, now: &Stats) -> ExportCounters {
    let newer = |a: Option<SystemTime>, b: Option<SystemTime>| if a != b { b } else { None };
    let error_at = newer(before.last_error_at, now.last_error_at);
    ExportCounters {
        exported_spans: now.exported_spans - before.exported_spans,
        failed_spans: now.failed_spans - before.failed_spans,
        failed_requests: now.failed_requests - before.failed_requests,
        last_error: error_at.and(now.last_error.clone()),
        last_error_at_us: micros(error_at),
        last_ok_at_us: micros(newer(before.last_ok_at, now.last_ok_at)),
    }
}

/// Worker entry point.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_telemetry_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: MyProcPid is set for every process; the callback is a
    // plain function, registered once.
    unsafe {
        queue::set_worker(pg_sys::MyProcPid);
        // Before shared memory is detached: the lock needs this process's PGPROC.
        pg_sys::before_shmem_exit(Some(forget_worker), pg_sys::Datum::from(0));
    }
    let mut thread: Option<ExportThread> = None;
    // The current thread's stats as last published.
    let mut published = Stats::default();
    let mut limit = LogLimit::default();
    loop {
        let enabled = gucs::OTEL_ENABLED.get();
        let nap = Duration::from_millis(if enabled { 100 } else { 1000 });
        if !BackgroundWorker::wait_latch(Some(nap)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a worker to reload its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let queued = queue::queued();
        if thread.is_none() && (enabled || queued > 0) {
            match spawn_export_thread() {
                Ok(t) => {
                    thread = Some(t);
                    published = Stats::default();
                }
                Err(e) => {
                    log!("pg_trickle telemetry: could not start the export thread: {e}");
                    continue;
                }
            }
        }
        let Some(t) = &thread else {
            continue;
        };
        let stats = t.stats();
        if stats != published {
            let new = delta(&published, &stats);
            note_failures(&new, stats.failed_spans, &mut limit);
            queue::publish(&new);
            published = stats;
        }
        if t.busy() || queued == 0 {
            continue;
        }
        let batch = queue::take(BATCH);
        if batch.is_empty() {
            continue;
        }
        if let Err(back) = t.try_submit(config(), batch) {
            // Idle but not taking: the thread is gone. Count and start anew.
            let lost: u64 = back.iter().map(|r| r.span_count()).sum();
            queue::publish(&ExportCounters {
                failed_spans: lost,
                ..ExportCounters::default()
            });
            log!(
                "pg_trickle telemetry: the export thread stopped; {} spans lost, starting it again",
                back.len()
            );
            thread = None;
        }
    }
}

/// Log new export failures, at most once per [`LOG_EVERY`], saying how
/// many went unlogged since the last line.
fn note_failures(new: &ExportCounters, lost_so_far: u64, limit: &mut LogLimit) {
    if new.failed_requests == 0 {
        return;
    }
    let now = micros(Some(SystemTime::now())).unwrap_or(0);
    match limit.allow(now, LOG_EVERY.as_micros() as i64) {
        Some(unlogged) => log!(
            "pg_trickle telemetry: exporting spans failed: {} ({} failed requests since the last such line; spans this export thread lost so far: {})",
            new.last_error.as_deref().unwrap_or("unknown error"),
            unlogged + new.failed_requests,
            lost_so_far
        ),
        // `allow` counted one of them.
        None => limit.suppressed += new.failed_requests - 1,
    }
}
