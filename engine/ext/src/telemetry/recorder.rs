//! The span of the refresh running in this backend: the executor marks
//! its phases and what it consumed as it goes, and at the end the span is
//! built, sampled and queued. Nothing is kept or timed while exporting is
//! off (`pg_trickle.otel_enabled`), or the library was not preloaded: the
//! executor then calls [`active`] once per refresh and nothing else here.
//!
//! Idle refreshes (the scheduler's check that finds nothing to consume)
//! and refreshes that were skipped record nothing; a refresh that ran a
//! statement, or failed, records one span. A failed refresh's span is
//! queued at once; a successful one's when its transaction commits (or,
//! marked failed, when it or the savepoint the refresh ran in rolls back),
//! so that a span never reports a change that did not stay.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use pg_trickle_core::telemetry::sampling::Sampler;
use pg_trickle_core::telemetry::span::{Link, Phase, PhaseKind, SpanRecord, MAX_LINKS};
use pg_trickle_core::telemetry::traceparent::TraceParent;
use pgrx::prelude::*;
use pgrx::{
    register_subxact_callback, register_xact_callback, PgSubXactCallbackEvent, PgXactCallbackEvent,
};

use crate::gucs;

/// A refresh being recorded.
struct Open {
    start_ns: u64,
    initiator: &'static str,
    stream_table: String,
    mode: String,
    phases: Vec<Phase>,
    current: Option<Phase>,
    changes_in: i64,
    consumed: Vec<TraceParent>,
    links_dropped: u32,
    ran: bool,
}

thread_local! {
    /// Refreshes being recorded, innermost last (a refresh may start another).
    static OPEN: RefCell<Vec<Open>> = const { RefCell::new(Vec::new()) };
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `N` random bytes, never all zero (an all-zero id is invalid).
fn random_id<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    loop {
        // SAFETY: writes N bytes into `out`.
        let ok = unsafe { pg_sys::pg_strong_random(out.as_mut_ptr().cast(), N) };
        if !ok {
            // No strong randomness: fall back to the clock, still unique enough for span ids.
            let t = now_ns().to_le_bytes();
            for (i, b) in out.iter_mut().enumerate() {
                *b = t[i % 8] ^ (i as u8);
            }
        }
        if out.iter().any(|b| *b != 0) {
            return out;
        }
    }
}

/// Whether refreshes are being recorded now.
pub fn active() -> bool {
    gucs::OTEL_ENABLED.get() && super::queue::ready()
}

/// Start recording a refresh (its first phase is planning).
pub fn begin(initiator: &'static str) {
    let start_ns = now_ns();
    OPEN.with(|o| {
        o.borrow_mut().push(Open {
            start_ns,
            initiator,
            stream_table: String::new(),
            mode: String::new(),
            phases: Vec::new(),
            current: Some(Phase {
                kind: PhaseKind::Plan,
                span_id: random_id(),
                start_ns,
                end_ns: start_ns,
            }),
            changes_in: 0,
            consumed: Vec::new(),
            links_dropped: 0,
            ran: false,
        })
    });
}

fn with_open(f: impl FnOnce(&mut Open)) {
    OPEN.with(|o| {
        if let Some(open) = o.borrow_mut().last_mut() {
            f(open)
        }
    });
}

fn close_phase(open: &mut Open, at: u64) {
    if let Some(mut p) = open.current.take() {
        p.end_ns = at;
        open.phases.push(p);
    }
}

/// The refresh enters `kind` (the previous phase ends now).
pub fn phase(kind: PhaseKind) {
    with_open(|open| {
        let at = now_ns();
        close_phase(open, at);
        if matches!(kind, PhaseKind::DeltaApply | PhaseKind::FullRecompute) {
            open.ran = true;
        }
        open.current = Some(Phase {
            kind,
            span_id: random_id(),
            start_ns: at,
            end_ns: at,
        });
    });
}

/// Whether the refresh running now is recorded (worth reading what it consumes).
pub fn recording() -> bool {
    OPEN.with(|o| !o.borrow().is_empty())
}

/// Which stream table is refreshed.
pub fn note_stream_table(name: &str) {
    with_open(|open| open.stream_table = name.to_string());
}

/// The mode about to run.
pub fn note_mode(mode: &str) {
    with_open(|open| open.mode = mode.to_string());
}

/// What the refresh is about to consume from one source: change rows,
/// how many distinct trace contexts they carry, and the first of those,
/// earliest first. Malformed ones are skipped: `SET` refuses them once the
/// library is loaded, but a value set before that is a placeholder nobody
/// checked.
pub fn note_changes(rows: i64, distinct: i64, traceparents: &[String]) {
    with_open(|open| {
        open.changes_in += rows;
        let unread = distinct.saturating_sub(traceparents.len() as i64).max(0);
        open.links_dropped = open.links_dropped.saturating_add(unread as u32);
        for text in traceparents {
            let Ok(tp) = TraceParent::parse(text) else {
                continue;
            };
            if open.consumed.contains(&tp) {
                continue;
            }
            if open.consumed.len() < MAX_LINKS {
                open.consumed.push(tp);
            } else {
                open.links_dropped += 1;
            }
        }
    });
}

/// How a recorded refresh ended.
pub enum Ending<'a> {
    /// It ran: the mode and the rows deleted and inserted.
    Ran(&'a str, i64, i64),
    /// It ran nothing (idle, skipped, held).
    Nothing,
    /// It failed with this SQLSTATE and message.
    Failed([u8; 5], &'a str),
}

/// Stop recording the innermost refresh and queue its span unless it ran
/// nothing or sampling leaves it out.
pub fn finish(ending: Ending<'_>) {
    let Some(mut open) = OPEN.with(|o| o.borrow_mut().pop()) else {
        return;
    };
    let end_ns = now_ns();
    close_phase(&mut open, end_ns);
    let (mode, deleted, inserted, sqlstate, message) = match ending {
        Ending::Nothing => return,
        Ending::Ran(..) if !open.ran => return,
        Ending::Ran(mode, d, i) => (mode.to_string(), d, i, None, String::new()),
        Ending::Failed(state, message) => {
            (open.mode.clone(), 0, 0, Some(state), message.to_string())
        }
    };
    // The refresh continues the trace of the earliest change it consumed
    // that had one, and links to all of them.
    let parent = open.consumed.first().copied();
    let own_trace = random_id::<16>();
    let sampler = Sampler {
        ratio: gucs::OTEL_SAMPLING_RATIO.get(),
    };
    if !sampler.decide(parent.as_ref(), &own_trace) {
        return;
    }
    let record = SpanRecord {
        trace_id: parent.map(|p| p.trace_id).unwrap_or(own_trace),
        span_id: random_id(),
        parent_span_id: parent.map(|p| p.parent_id).unwrap_or([0; 8]),
        flags: parent.map(|p| p.flags).unwrap_or(1) | 1,
        start_ns: open.start_ns,
        end_ns,
        stream_table: open.stream_table,
        mode,
        initiator: open.initiator.to_string(),
        changes_in: open.changes_in,
        rows_inserted: inserted,
        rows_deleted: deleted,
        sqlstate,
        message,
        phases: open.phases,
        links: open
            .consumed
            .iter()
            .map(|c| Link {
                trace_id: c.trace_id,
                span_id: c.parent_id,
                flags: c.flags,
            })
            .collect(),
        links_dropped: open.links_dropped,
    };
    if record.sqlstate.is_some() {
        // The transaction is aborting with this error.
        super::queue::push(&record);
    } else {
        queue_at_transaction_end(record);
    }
}

/// Queue a refresh's span when its work is settled: as it is when the
/// transaction commits or is prepared; as failed (40000) when the
/// transaction, or a savepoint the refresh ran in, rolls back, since
/// nothing of the refresh then stays.
fn queue_at_transaction_end(record: SpanRecord) {
    /// The span, and the subtransaction whose fate it shares.
    struct Pending {
        record: Option<SpanRecord>,
        subid: pg_sys::SubTransactionId,
    }
    fn settle(pending: &RefCell<Pending>, rolled_back: bool) {
        let Some(mut record) = pending.borrow_mut().record.take() else {
            return;
        };
        if rolled_back {
            record.sqlstate = Some(*b"40000");
            record.message = "the transaction of the refresh rolled back".into();
        }
        super::queue::push(&record);
    }
    // SAFETY: inside a transaction (a refresh just ran in it).
    let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let pending = std::rc::Rc::new(RefCell::new(Pending {
        record: Some(record),
        subid,
    }));
    for event in [
        PgXactCallbackEvent::Commit,
        PgXactCallbackEvent::Prepare,
        PgXactCallbackEvent::Abort,
    ] {
        let pending = std::panic::AssertUnwindSafe(pending.clone());
        register_xact_callback(event, move || {
            settle(&pending, event == PgXactCallbackEvent::Abort)
        });
    }
    // PostgreSQL's TopSubTransactionId (a macro, not in the bindings).
    const TOP_SUBTRANSACTION: pg_sys::SubTransactionId = 1;
    if subid != TOP_SUBTRANSACTION {
        // A savepoint released: the span now shares its parent's fate.
        let on_commit = std::panic::AssertUnwindSafe(pending.clone());
        register_subxact_callback(PgSubXactCallbackEvent::CommitSub, move |mine, parent| {
            let mut p = on_commit.borrow_mut();
            if p.subid == mine {
                p.subid = parent;
            }
        });
        let on_abort = std::panic::AssertUnwindSafe(pending);
        register_subxact_callback(PgSubXactCallbackEvent::AbortSub, move |mine, _| {
            if on_abort.borrow().subid == mine {
                settle(&on_abort, true);
            }
        });
    }
}
