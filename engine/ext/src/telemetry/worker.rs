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

/// Worker entry point.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_telemetry_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // SAFETY: MyProcPid is set for every process.
    queue::set_worker(unsafe { pg_sys::MyProcPid });
    let mut thread: Option<ExportThread> = None;
    let mut limit = LogLimit::default();
    let mut logged_failures = 0u64;
    // Spans lost by a thread that died (only a panic in it could).
    let mut lost = 0u64;
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
        let queued = queue::status().map(|s| s.queued).unwrap_or(0);
        if thread.is_none() && (enabled || queued > 0) {
            match spawn_export_thread() {
                Ok(t) => thread = Some(t),
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
        note_failures(&stats, &mut logged_failures, &mut limit);
        queue::publish(&ExportCounters {
            exported_spans: stats.exported_spans,
            failed_spans: stats.failed_spans + lost,
            failed_requests: stats.failed_requests,
            last_error: stats.last_error.clone(),
            last_error_at_us: micros(stats.last_error_at),
            last_ok_at_us: micros(stats.last_ok_at),
        });
        if t.busy() || queued == 0 {
            continue;
        }
        let batch = queue::take(BATCH);
        if batch.is_empty() {
            continue;
        }
        if let Err(back) = t.try_submit(config(), batch) {
            // Idle but not taking: the thread is gone. Count and start anew.
            lost += back.len() as u64;
            log!(
                "pg_trickle telemetry: the export thread stopped; {} spans lost, starting it again",
                back.len()
            );
            thread = None;
        }
    }
    queue::set_worker(0);
}

/// Log new export failures, at most once per [`LOG_EVERY`], saying how
/// many went unlogged since the last line.
fn note_failures(stats: &Stats, logged: &mut u64, limit: &mut LogLimit) {
    if stats.failed_requests <= *logged {
        return;
    }
    let new = stats.failed_requests - *logged;
    *logged = stats.failed_requests;
    let now = micros(Some(SystemTime::now())).unwrap_or(0);
    match limit.allow(now, LOG_EVERY.as_micros() as i64) {
        Some(unlogged) => log!(
            "pg_trickle telemetry: exporting spans failed: {} ({} failed requests since the last such line; spans lost so far: {})",
            stats.last_error.as_deref().unwrap_or("unknown error"),
            unlogged + new,
            stats.failed_spans
        ),
        // `allow` counted one of them.
        None => limit.suppressed += new - 1,
    }
}
