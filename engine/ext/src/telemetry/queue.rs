//! The bounded queue between refreshes and the telemetry worker, in shared
//! memory: a header (the ring's indexes, the exporter's counters and last
//! error, one LWLock) followed by `pg_trickle.otel_queue_size` slots of
//! [`SLOT_BYTES`]. A refresh encodes its span on its own stack and holds
//! the lock only to copy it in; when the queue is full the span is
//! dropped and counted, so a refresh never waits for the exporter. Which
//! slot is used is decided by `pg_trickle_core::telemetry::ring`.
//!
//! Shared memory is sized once, at server start, from the setting; it
//! exists only when the library is preloaded.

use std::ffi::CStr;
use std::ptr::null_mut;

use pg_trickle_core::telemetry::ring::RingState;
use pg_trickle_core::telemetry::span::{SpanRecord, SLOT_BYTES};
use pgrx::prelude::*;

const NAME: &CStr = c"pg_trickle telemetry queue";
const ERROR_BYTES: usize = 512;

/// The shared header; the slots follow it.
#[repr(C)]
struct Header {
    lock: *mut pg_sys::LWLock,
    ring: RingState,
    /// Whether the telemetry worker runs.
    worker_pid: i32,
    exported_spans: u64,
    failed_spans: u64,
    failed_requests: u64,
    /// Slots that did not decode (only a bug could leave one).
    torn_spans: u64,
    /// Microseconds since the Unix epoch, 0 for never.
    last_error_at_us: i64,
    last_ok_at_us: i64,
    last_error_len: u32,
    last_error: [u8; ERROR_BYTES],
}

static mut HEADER: *mut Header = null_mut();
static mut CAPACITY: u32 = 0;
static mut PREV_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP: pg_sys::shmem_startup_hook_type = None;

fn total_bytes(capacity: u32) -> usize {
    size_of::<Header>() + capacity as usize * SLOT_BYTES
}

/// Reserve the queue; call from `_PG_init` while preloading, after the
/// settings are registered (the size is read now, once).
pub fn init_shmem() {
    // SAFETY: single-threaded postmaster start-up; the hooks are chained.
    unsafe {
        CAPACITY = crate::gucs::OTEL_QUEUE_SIZE.get().max(1) as u32;
        PREV_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(on_request);
        PREV_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_request() {
    // SAFETY: called by the postmaster in its shared-memory request phase.
    unsafe {
        if let Some(prev) = PREV_REQUEST {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(total_bytes(CAPACITY));
        pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), 1);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_startup() {
    // SAFETY: the documented start-up protocol: under AddinShmemInitLock,
    // find or create the segment; the first process initialises it.
    unsafe {
        if let Some(prev) = PREV_STARTUP {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let header = pg_sys::ShmemInitStruct(NAME.as_ptr(), total_bytes(CAPACITY), &mut found)
            .cast::<Header>();
        if !found {
            header.write(Header {
                lock: &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock,
                ring: RingState::new(CAPACITY),
                worker_pid: 0,
                exported_spans: 0,
                failed_spans: 0,
                failed_requests: 0,
                torn_spans: 0,
                last_error_at_us: 0,
                last_ok_at_us: 0,
                last_error_len: 0,
                last_error: [0; ERROR_BYTES],
            });
        }
        HEADER = header;
        pg_sys::LWLockRelease(init_lock);
    }
}

/// Whether the queue exists (the library was preloaded).
pub fn ready() -> bool {
    // SAFETY: set once at start-up, before any backend forks.
    unsafe { !HEADER.is_null() }
}

/// The header, locked until the guard drops.
struct Locked(*mut Header);

impl Locked {
    fn new(mode: pg_sys::LWLockMode::Type) -> Option<Locked> {
        if !ready() {
            return None;
        }
        // SAFETY: HEADER points at the initialised segment.
        unsafe {
            pg_sys::LWLockAcquire((*HEADER).lock, mode);
            Some(Locked(HEADER))
        }
    }

    fn header(&mut self) -> &mut Header {
        // SAFETY: held under the lock for the guard's life.
        unsafe { &mut *self.0 }
    }

    fn read(&self) -> &Header {
        // SAFETY: held (at least shared) for the guard's life.
        unsafe { &*self.0 }
    }

    fn slot(&mut self, i: u32) -> &mut [u8] {
        // SAFETY: i < capacity (the ring hands out only such slots) and
        // the slots follow the header in the segment.
        unsafe {
            let base = self
                .0
                .cast::<u8>()
                .add(size_of::<Header>() + i as usize * SLOT_BYTES);
            std::slice::from_raw_parts_mut(base, SLOT_BYTES)
        }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: acquired in `new`; nothing between can raise.
        unsafe { pg_sys::LWLockRelease((*self.0).lock) }
    }
}

/// Queue a span; false when it was dropped (queue full, or no queue).
pub fn push(record: &SpanRecord) -> bool {
    let mut bytes = [0u8; SLOT_BYTES];
    record.encode(&mut bytes);
    let Some(mut locked) = Locked::new(pg_sys::LWLockMode::LW_EXCLUSIVE) else {
        return false;
    };
    match locked.header().ring.reserve() {
        Some(i) => {
            locked.slot(i).copy_from_slice(&bytes);
            true
        }
        None => false,
    }
}

/// Take up to `max` spans, oldest first. A slot that does not decode
/// (which only a bug could leave) is counted as failed.
pub fn take(max: u32) -> Vec<SpanRecord> {
    let raw: Vec<[u8; SLOT_BYTES]> = {
        let Some(mut locked) = Locked::new(pg_sys::LWLockMode::LW_EXCLUSIVE) else {
            return Vec::new();
        };
        let slots = locked.header().ring.take(max);
        slots
            .into_iter()
            .map(|i| {
                let mut b = [0u8; SLOT_BYTES];
                b.copy_from_slice(locked.slot(i));
                b
            })
            .collect()
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut torn = 0;
    for b in &raw {
        match SpanRecord::decode(b) {
            Ok(r) => out.push(r),
            Err(_) => torn += 1,
        }
    }
    if torn > 0 {
        if let Some(mut locked) = Locked::new(pg_sys::LWLockMode::LW_EXCLUSIVE) {
            locked.header().torn_spans += torn;
        }
    }
    out
}

/// The exporter's counters (or what to add to them).
#[derive(Debug, Clone, Default)]
pub struct ExportCounters {
    /// Spans the collector accepted.
    pub exported_spans: u64,
    /// Spans lost to failed requests.
    pub failed_spans: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When, in microseconds since the Unix epoch.
    pub last_error_at_us: Option<i64>,
    /// When a request last succeeded.
    pub last_ok_at_us: Option<i64>,
}

/// Add what the exporter did since the last call (the telemetry worker,
/// each round): counts are added, so they run from server start across
/// export threads and worker restarts; the last error and the times are
/// replaced when given.
pub fn publish(delta: &ExportCounters) {
    let Some(mut locked) = Locked::new(pg_sys::LWLockMode::LW_EXCLUSIVE) else {
        return;
    };
    let h = locked.header();
    h.exported_spans += delta.exported_spans;
    h.failed_spans += delta.failed_spans;
    h.failed_requests += delta.failed_requests;
    if let Some(at) = delta.last_ok_at_us {
        h.last_ok_at_us = at;
    }
    if let (Some(e), Some(at)) = (&delta.last_error, delta.last_error_at_us) {
        h.last_error_at_us = at;
        let e = pg_trickle_core::telemetry::span::truncate(e, ERROR_BYTES);
        h.last_error[..e.len()].copy_from_slice(e.as_bytes());
        h.last_error_len = e.len() as u32;
    }
}

/// Record whether the telemetry worker runs (its pid, or 0).
pub fn set_worker(pid: i32) {
    if let Some(mut locked) = Locked::new(pg_sys::LWLockMode::LW_EXCLUSIVE) {
        locked.header().worker_pid = pid;
    }
}

/// Spans waiting in the queue (0 without a queue).
pub fn queued() -> u32 {
    Locked::new(pg_sys::LWLockMode::LW_SHARED)
        .map(|locked| locked.read().ring.len)
        .unwrap_or(0)
}

/// Everything the status shows, read at once.
#[derive(Debug, Clone, Default)]
pub struct QueueStatus {
    /// Slots in the queue.
    pub capacity: u32,
    /// Spans waiting.
    pub queued: u32,
    /// Spans queued, ever.
    pub accepted: u64,
    /// Spans dropped because the queue was full.
    pub dropped: u64,
    /// The telemetry worker's pid, 0 when it does not run.
    pub worker_pid: i32,
    /// The exporter's counters.
    pub export: ExportCounters,
}

/// The queue's state, or None when the library was not preloaded.
pub fn status() -> Option<QueueStatus> {
    let locked = Locked::new(pg_sys::LWLockMode::LW_SHARED)?;
    let h = locked.read();
    let nonzero = |v: i64| (v != 0).then_some(v);
    Some(QueueStatus {
        capacity: h.ring.capacity,
        queued: h.ring.len,
        accepted: h.ring.accepted,
        dropped: h.ring.dropped,
        worker_pid: h.worker_pid,
        export: ExportCounters {
            exported_spans: h.exported_spans,
            failed_spans: h.failed_spans + h.torn_spans,
            failed_requests: h.failed_requests,
            last_error: (h.last_error_len > 0).then(|| {
                String::from_utf8_lossy(&h.last_error[..h.last_error_len as usize]).into_owned()
            }),
            last_error_at_us: nonzero(h.last_error_at_us),
            last_ok_at_us: nonzero(h.last_ok_at_us),
        },
    })
}
