//! The operator's controls over capture and refresh: hold (capture goes on,
//! refreshes pause), discard (capture stops, changes are dropped, readers
//! must reinitialise) and backpressure (writes to a lagging source are
//! rejected or warned about, with hysteresis). The state lives in the
//! catalog so that `stream_table_status()` and `change_buffer_status()`
//! can say, from status alone, what is captured, held or dropped and why.
//!
//! Per-stream-table controls need ownership of the stream table; the
//! `*_all` holds act on the caller's own stream tables; discarding or
//! resuming capture everywhere and evaluating backpressure act on every
//! source and are for superusers.

use pg_trickle_core::backpressure::{self, Action, Lag, State, Watermark, Watermarks};
use pgrx::prelude::*;

use crate::capture;
use crate::catalog::{change_buffers, controlled, sources, stream_tables};
use crate::gucs;
use crate::security::{self, as_extension};
use crate::spi::{raise, run};

fn reason_or(reason: Option<&str>, default: &str) -> String {
    reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or(default)
        .to_string()
}

/// Hold a stream table: its sources keep being captured, its refreshes
/// (scheduled and manual) pause until `resume_stream_table`.
#[pg_extern]
fn hold_stream_table(name: &str, reason: default!(Option<&str>, "NULL")) {
    controlled(name, |st| {
        stream_tables::hold(st.id, &reason_or(reason, "held by an operator"))
    });
}

/// Resume a held stream table; its next refresh catches up DIFFERENTIALLY.
#[pg_extern]
fn resume_stream_table(name: &str) {
    controlled(name, |st| {
        stream_tables::resume(st.id);
        evaluate_captured(sources::captured_of(st.id));
    });
}

/// Hold every stream table the caller owns (every one, for a superuser);
/// returns how many were not held before.
#[pg_extern]
fn hold_all_stream_tables(reason: default!(Option<&str>, "NULL")) -> i64 {
    let me = security::caller();
    as_extension(|| {
        crate::compat::require_current_sql();
        stream_tables::hold_all_owned_by(
            me,
            &reason_or(reason, "held by an operator (all stream tables)"),
        )
    })
}

/// Resume every held stream table the caller owns (every one, for a
/// superuser); returns how many were held.
#[pg_extern]
fn resume_all_stream_tables() -> i64 {
    let me = security::caller();
    as_extension(|| {
        crate::compat::require_current_sql();
        let n = stream_tables::resume_all_owned_by(me);
        evaluate_all();
        n
    })
}

/// Stop capture on one source: disable its capture trigger, drop its
/// buffered changes, and mark every stream table reading it for
/// reinitialisation. Returns false when it was already discarding.
pub(crate) fn discard_source(relid: u32, reason: &str) -> bool {
    let Some(buffer) = change_buffers::set_discarding(relid, reason) else {
        return false;
    };
    let table = switch_capture_trigger(relid, "DISABLE", "capture discarded on source %s");
    run(&format!("TRUNCATE {buffer}"), &[]);
    pgrx::log!("pg_trickle: capture discarded on {table}: {reason}");
    true
}

/// Enable or disable a source's capture trigger and mark its readers for
/// reinitialisation with `reason_format` (`%s` is the source); returns the
/// source's name.
fn switch_capture_trigger(relid: u32, action: &str, reason_format: &str) -> String {
    let table = crate::spi::relation_name(relid).unwrap_or_default();
    // A source captured from the WAL has its row trigger disabled anyway.
    if crate::catalog::wal_capture::of(relid).is_none() {
        crate::triggers::set_capture_enabled(relid, action == "ENABLE");
    }
    stream_tables::mark_readers_for_reinit(relid, reason_format);
    table
}

/// Resume capture on one source; its readers stay marked for
/// reinitialisation until a FULL refresh. Returns false when it was capturing.
fn resume_source(relid: u32) -> bool {
    if !change_buffers::set_capturing(relid) {
        return false;
    }
    let table = switch_capture_trigger(
        relid,
        "ENABLE",
        "capture resumed on source %s after a discard",
    );
    pgrx::log!("pg_trickle: capture resumed on {table}");
    true
}

/// Stop capturing the sources of a stream table and drop their buffered
/// changes (an emergency measure for write overhead or disk pressure).
/// Every stream table reading those sources is marked for reinitialisation;
/// its refreshes are FULL until capture resumes. Returns the number of
/// sources that stopped.
///
/// A source that other roles' stream tables also read is discarded only
/// by its table's owner (or a superuser): it forces their refreshes FULL.
#[pg_extern]
fn discard_changes(name: &str, reason: default!(Option<&str>, "NULL")) -> i64 {
    let me = security::caller();
    controlled(name, |st| {
        let reason = reason_or(reason, &format!("discarded for stream table {}", st.name));
        let captured = sources::captured_of(st.id);
        for relid in &captured {
            require_may_discard(me, *relid);
        }
        captured
            .into_iter()
            .filter(|relid| discard_source(*relid, &reason))
            .count() as i64
    })
}

/// Raise 42501 when `me` may not stop capture on `relid`: another role's
/// stream table reads it and `me` does not own the table.
fn require_may_discard(me: pgrx::pg_sys::Oid, relid: u32) {
    let Some(check) = sources::other_readers(me, relid) else {
        return;
    };
    if let (Some(others), false) = (&check.names, check.owns_source) {
        raise(
            "42501",
            format!(
                "permission denied to discard changes of {}: stream tables of other roles read it ({others})",
                check.source
            ),
            Some("Only the table's owner or a superuser may stop capture that other roles' stream tables rely on.".into()),
        );
    }
}

/// Stop capture on every source; returns how many stopped. Superusers only.
#[pg_extern]
fn discard_all_changes(reason: default!(Option<&str>, "NULL")) -> i64 {
    security::require_superuser("discard_all_changes()");
    as_extension(|| {
        crate::compat::require_current_sql();
        let reason = reason_or(reason, "discarded on all sources");
        change_buffers::all_sources()
            .into_iter()
            .filter(|relid| discard_source(*relid, &reason))
            .count() as i64
    })
}

/// Resume capture on the sources of a stream table; returns how many resumed.
#[pg_extern]
fn resume_capture(name: &str) -> i64 {
    controlled(name, |st| {
        sources::captured_of(st.id)
            .into_iter()
            .filter(|relid| resume_source(*relid))
            .count() as i64
    })
}

/// Resume capture on every source; returns how many resumed. Superusers only.
#[pg_extern]
fn resume_all_capture() -> i64 {
    security::require_superuser("resume_all_capture()");
    as_extension(|| {
        crate::compat::require_current_sql();
        change_buffers::all_sources()
            .into_iter()
            .filter(|relid| resume_source(*relid))
            .count() as i64
    })
}

/// Refuse a manual refresh of a held stream table (SQLSTATE 55000).
pub fn refuse_if_held(st_id: i64, name: &str) {
    if let Some(hold) = stream_tables::hold_of(st_id) {
        raise(
            "55000",
            format!(
                "stream table {name} is held since {} ({}); its changes are being captured",
                hold.since.unwrap_or_default(),
                hold.reason.unwrap_or_default()
            ),
            Some(format!(
                "Resume it with SELECT pgtrickle.resume_stream_table('{name}'); its next refresh catches up."
            )),
        );
    }
}

fn watermarks() -> Watermarks {
    if !gucs::ENFORCE_BACKPRESSURE.get() {
        return Watermarks::default();
    }
    let w = |high: &pgrx::GucSetting<i32>, low: &pgrx::GucSetting<i32>, scale: f64| Watermark {
        high: f64::from(high.get()) * scale,
        low: f64::from(low.get()) * scale,
    };
    Watermarks {
        rows: w(
            &gucs::BACKPRESSURE_HIGH_ROWS,
            &gucs::BACKPRESSURE_LOW_ROWS,
            1.0,
        ),
        bytes: w(
            &gucs::BACKPRESSURE_HIGH_KB,
            &gucs::BACKPRESSURE_LOW_KB,
            1024.0,
        ),
        age_seconds: w(
            &gucs::BACKPRESSURE_HIGH_AGE_S,
            &gucs::BACKPRESSURE_LOW_AGE_S,
            1.0,
        ),
    }
}

/// The configured backpressure action.
pub fn action() -> Action {
    Action::parse(&gucs::text(&gucs::BACKPRESSURE_ACTION)).unwrap_or(Action::RejectWrites)
}

/// One reader of a source: its name, whether it is held, its backlog.
struct Reader {
    name: String,
    held: bool,
    lag: Lag,
}

/// Every capturing reader of a source with its backlog, measured once.
fn readers(relid: u32) -> Vec<Reader> {
    sources::capturing_readers(relid)
        .into_iter()
        .map(|r| Reader {
            lag: capture::lag_for(r.id, relid),
            name: r.name,
            held: r.held,
        })
        .collect()
}

/// The lag of a source: the largest backlog any of its readers has.
fn largest(readers: &[Reader]) -> Lag {
    let mut lag = Lag::default();
    for r in readers {
        lag.rows = lag.rows.max(r.lag.rows);
        lag.bytes = lag.bytes.max(r.lag.bytes);
        lag.age_seconds = lag.age_seconds.max(r.lag.age_seconds);
    }
    lag
}

/// The lag of a source: the largest backlog any of its readers has.
pub fn source_lag(relid: u32) -> Lag {
    with_slot_lag(relid, largest(&readers(relid)))
}

/// `lag` plus, for a source captured from the WAL, what its slot holds
/// that is not decoded yet.
fn with_slot_lag(relid: u32, mut lag: Lag) -> Lag {
    if let Some((bytes, seconds)) = crate::wal_capture::slot_lag(relid) {
        lag.bytes += bytes;
        lag.age_seconds = lag.age_seconds.max(seconds);
    }
    lag
}

fn describe_lag(l: &Lag) -> String {
    format!(
        "{} unconsumed change rows, {} bytes, oldest {:.0} s",
        l.rows, l.bytes, l.age_seconds
    )
}

/// Re-evaluate backpressure and the held-backlog cap of one source;
/// returns the new state and the transition's reason when it changed.
fn evaluate_source(relid: u32) -> Option<(String, State, Option<String>)> {
    let change_buffers::Backpressure { state, source } = change_buffers::backpressure_of(relid)?;
    let readers = readers(relid);
    let lag = with_slot_lag(relid, largest(&readers));
    let (next, why) = backpressure::next(state, &lag, &watermarks());
    if let Some(why) = &why {
        let reason = match next {
            State::Engaged => Some(format!(
                "{why} ({}; pg_trickle.enforce_backpressure = on, action {})",
                describe_lag(&lag),
                action().name()
            )),
            State::Released => None,
        };
        change_buffers::set_backpressure(relid, next, reason);
        pgrx::log!(
            "pg_trickle: backpressure on {source} {}: {why} ({})",
            next.name(),
            describe_lag(&lag)
        );
    }
    // The held-backlog cap: writes stop before a held reader's backlog passes it.
    let cap = i64::from(gucs::MAX_HELD_BACKLOG_ROWS.get());
    let block = if cap > 0 {
        readers
            .iter()
            .find(|r| r.held && r.lag.rows >= cap)
            .map(|r| {
                format!(
                    "held stream table {} has {} unconsumed change rows on {source}, \
                     at the cap pg_trickle.max_held_backlog_rows = {cap}",
                    r.name, r.lag.rows
                )
            })
    } else {
        None
    };
    change_buffers::set_write_block(relid, block);
    Some((source, next, why))
}

/// Of `candidates`, the sources worth evaluating: all while enforcing,
/// else those still engaged or blocked. Keeps the scheduler tick and every
/// refresh free of backlog counting when the features are off.
fn worth_evaluating(candidates: Vec<u32>) -> Vec<u32> {
    // When neither is on, only sources still marked need a look (to release them).
    if crate::write_guard::enforcing() {
        return candidates;
    }
    let marked = change_buffers::engaged_or_blocked();
    candidates
        .into_iter()
        .filter(|c| marked.contains(c))
        .collect()
}

/// Re-evaluate every source; returns the transitions.
pub fn evaluate_all() -> Vec<(String, State, String)> {
    worth_evaluating(change_buffers::all_sources())
        .into_iter()
        .filter_map(evaluate_source)
        .filter_map(|(s, st, why)| why.map(|w| (s, st, w)))
        .collect()
}

/// Re-evaluate `captured`, the sources a stream table captures (after
/// its refresh, which has just read them). With the features off, each
/// source's marks are read by key rather than by scanning every buffer
/// row: a refresh then runs no statement here.
pub fn evaluate_captured(captured: Vec<u32>) {
    let worth: Vec<u32> = if crate::write_guard::enforcing() {
        captured
    } else {
        captured
            .into_iter()
            .filter(|&relid| change_buffers::is_engaged_or_blocked(relid))
            .collect()
    };
    for relid in worth {
        evaluate_source(relid);
    }
}

/// Re-evaluate backpressure and the held-backlog cap on every source now;
/// one row per state change.
#[pg_extern]
fn evaluate_backpressure() -> TableIterator<
    'static,
    (
        name!(source, String),
        name!(backpressure, String),
        name!(reason, String),
    ),
> {
    security::require_superuser("evaluate_backpressure()");
    TableIterator::new(
        as_extension(evaluate_all)
            .into_iter()
            .map(|(s, st, why)| (s, st.name().to_string(), why)),
    )
}

/// One row per captured source: capture state, backlog, backpressure and
/// whether writes are blocked, each with its reason.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn change_buffer_status() -> TableIterator<
    'static,
    (
        name!(source, String),
        name!(buffer, String),
        name!(capture_state, String),
        name!(capture_reason, Option<String>),
        name!(readers, i64),
        name!(pending_rows, i64),
        name!(pending_bytes, i64),
        name!(oldest_pending_age_s, f64),
        name!(backpressure, String),
        name!(backpressure_reason, Option<String>),
        name!(backpressure_since, Option<String>),
        name!(backpressure_transitions, i64),
        name!(write_block, Option<String>),
    ),
> {
    let me = security::caller();
    let all = security::is_monitor(me);
    // Backlogs are measured as the extension, before the rows are returned.
    let rows: Vec<_> = as_extension(|| {
        change_buffers::listing_visible_to(me, all)
            .into_iter()
            .map(|b| {
                let lag = source_lag(b.relid);
                (
                    b.source,
                    b.buffer_name,
                    b.capture_state,
                    b.capture_reason,
                    b.readers,
                    lag.rows,
                    lag.bytes,
                    lag.age_seconds,
                    b.backpressure,
                    b.backpressure_reason,
                    b.backpressure_since,
                    b.backpressure_transitions,
                    b.write_block,
                )
            })
            .collect()
    });
    TableIterator::new(rows)
}
