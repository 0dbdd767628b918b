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
use crate::catalog::controlled;
use crate::gucs;
use crate::security::{self, as_extension};
use crate::spi::{first_column, raise, row, rows, run, value};

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
        run(
        "UPDATE pgtrickle.pgt_stream_tables SET held = true, held_since = coalesce(held_since, now()), \
         held_reason = $2 WHERE id = $1::text::bigint",
        &[
            Some(st.id.to_string()),
            Some(reason_or(reason, "held by an operator")),
        ],
    )
    });
}

/// Resume a held stream table; its next refresh catches up DIFFERENTIALLY.
#[pg_extern]
fn resume_stream_table(name: &str) {
    controlled(name, |st| {
        run(
            "UPDATE pgtrickle.pgt_stream_tables SET held = false, held_since = NULL, held_reason = NULL \
             WHERE id = $1::text::bigint",
            &[Some(st.id.to_string())],
        );
        evaluate_sources_of(st.id);
    });
}

/// `WHERE` clause term: the stream table `st` is owned by role `$1` (or a
/// role `$1` is a member of).
const OWNED_BY_CALLER: &str =
    "pg_has_role($1::text::oid, (SELECT c.relowner FROM pg_class c WHERE c.oid = st.relid), 'USAGE')";

/// Hold every stream table the caller owns (every one, for a superuser);
/// returns how many were not held before.
#[pg_extern]
fn hold_all_stream_tables(reason: default!(Option<&str>, "NULL")) -> i64 {
    let me = security::caller();
    as_extension(|| {
        crate::compat::require_current_sql();
        value(
            &format!(
                "WITH h AS (UPDATE pgtrickle.pgt_stream_tables st SET held = true, held_since = now(), held_reason = $2 \
                 WHERE NOT held AND {OWNED_BY_CALLER} RETURNING 1) SELECT count(*)::text FROM h"
            ),
            &[
                Some(me.to_u32().to_string()),
                Some(reason_or(reason, "held by an operator (all stream tables)")),
            ],
        )
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
    })
}

/// Resume every held stream table the caller owns (every one, for a
/// superuser); returns how many were held.
#[pg_extern]
fn resume_all_stream_tables() -> i64 {
    let me = security::caller();
    as_extension(|| {
        crate::compat::require_current_sql();
        let n = value(
            &format!(
                "WITH h AS (UPDATE pgtrickle.pgt_stream_tables st SET held = false, held_since = NULL, held_reason = NULL \
                 WHERE held AND {OWNED_BY_CALLER} RETURNING 1) SELECT count(*)::text FROM h"
            ),
            &[Some(me.to_u32().to_string())],
        )
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
        evaluate_all();
        n
    })
}

/// Captured sources of a stream table.
fn sources_of(st_id: i64) -> Vec<u32> {
    first_column(
        "SELECT source_relid::text FROM pgtrickle.pgt_sources WHERE st_id = $1::text::bigint AND captured \
         ORDER BY source_relid",
        &[Some(st_id.to_string())],
    )
}

fn all_captured_sources() -> Vec<u32> {
    first_column(
        "SELECT source_relid::text FROM pgtrickle.pgt_change_buffers ORDER BY source_relid",
        &[],
    )
}

/// Stop capture on one source: disable its capture trigger, drop its
/// buffered changes, and mark every stream table reading it for
/// reinitialisation. Returns false when it was already discarding.
fn discard_source(relid: u32, reason: &str) -> bool {
    let changed = value(
        "UPDATE pgtrickle.pgt_change_buffers SET capture_state = 'discarding', capture_reason = $2, \
         capture_changed_at = now(), backpressure = 'released', backpressure_reason = NULL, write_block = NULL \
         WHERE source_relid = $1::text::oid AND capture_state <> 'discarding' RETURNING buffer_name",
        &[Some(relid.to_string()), Some(reason.to_string())],
    );
    let Some(buffer) = changed else {
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
    let table = value(
        "SELECT $1::text::oid::regclass::text",
        &[Some(relid.to_string())],
    )
    .unwrap_or_default();
    crate::triggers::set_capture_enabled(relid, action == "ENABLE");
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET needs_reinit = true, \
         reinit_reason = format($2, $1::text::oid::regclass) \
         WHERE id IN (SELECT st_id FROM pgtrickle.pgt_sources WHERE source_relid = $1::text::oid AND captured)",
        &[Some(relid.to_string()), Some(reason_format.to_string())],
    );
    table
}

/// Resume capture on one source; its readers stay marked for
/// reinitialisation until a FULL refresh. Returns false when it was capturing.
fn resume_source(relid: u32) -> bool {
    let changed = value(
        "UPDATE pgtrickle.pgt_change_buffers SET capture_state = 'capturing', capture_reason = NULL, \
         capture_changed_at = now() WHERE source_relid = $1::text::oid AND capture_state = 'discarding' \
         RETURNING buffer_name",
        &[Some(relid.to_string())],
    );
    if changed.is_none() {
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
        let sources = sources_of(st.id);
        for relid in &sources {
            require_may_discard(me, *relid);
        }
        sources
            .into_iter()
            .filter(|relid| discard_source(*relid, &reason))
            .count() as i64
    })
}

/// Raise 42501 when `me` may not stop capture on `relid`: another role's
/// stream table reads it and `me` does not own the table.
fn require_may_discard(me: pgrx::pg_sys::Oid, relid: u32) {
    let r = row(
        &format!(
            "SELECT $2::text::oid::regclass::text, pg_has_role($1::text::oid, c.relowner, 'USAGE')::text, \
             (SELECT string_agg(st.name, ', ' ORDER BY st.name) FROM pgtrickle.pgt_sources s \
              JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id \
              WHERE s.source_relid = c.oid AND s.captured AND NOT {OWNED_BY_CALLER}) \
             FROM pg_class c WHERE c.oid = $2::text::oid"
        ),
        &[Some(me.to_u32().to_string()), Some(relid.to_string())],
    )
    .unwrap_or_default();
    let owns_table = r.get(1).cloned().flatten().as_deref() == Some("true");
    if let (Some(others), false) = (r.get(2).cloned().flatten(), owns_table) {
        raise(
            "42501",
            format!(
                "permission denied to discard changes of {}: stream tables of other roles read it ({others})",
                r[0].clone().unwrap_or_default()
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
        all_captured_sources()
            .into_iter()
            .filter(|relid| discard_source(*relid, &reason))
            .count() as i64
    })
}

/// Resume capture on the sources of a stream table; returns how many resumed.
#[pg_extern]
fn resume_capture(name: &str) -> i64 {
    controlled(name, |st| {
        sources_of(st.id)
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
        all_captured_sources()
            .into_iter()
            .filter(|relid| resume_source(*relid))
            .count() as i64
    })
}

/// Refuse a manual refresh of a held stream table (SQLSTATE 55000).
pub fn refuse_if_held(st_id: i64, name: &str) {
    if let Some(r) = row(
        "SELECT held_since::text, held_reason FROM pgtrickle.pgt_stream_tables \
         WHERE id = $1::text::bigint AND held",
        &[Some(st_id.to_string())],
    ) {
        raise(
            "55000",
            format!(
                "stream table {name} is held since {} ({}); its changes are being captured",
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default()
            ),
            Some(format!(
                "Resume it with SELECT pgtrickle.resume_stream_table('{name}'); its next refresh catches up."
            )),
        );
    }
}

/// Whether any captured source of the stream table is discarding.
pub fn discarding_source(st_id: i64) -> Option<String> {
    value(
        "SELECT b.source_relid::regclass::text FROM pgtrickle.pgt_change_buffers b \
         JOIN pgtrickle.pgt_sources s ON s.source_relid = b.source_relid \
         WHERE s.st_id = $1::text::bigint AND s.captured AND b.capture_state = 'discarding' \
         ORDER BY 1 LIMIT 1",
        &[Some(st_id.to_string())],
    )
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
    rows(
        "SELECT st.id::text, st.name, st.held::text FROM pgtrickle.pgt_stream_tables st \
         JOIN pgtrickle.pgt_sources s ON s.st_id = st.id \
         WHERE s.source_relid = $1::text::oid AND s.captured ORDER BY st.name",
        &[Some(relid.to_string())],
    )
    .into_iter()
    .map(|r| {
        let id: i64 = r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        Reader {
            name: r[1].clone().unwrap_or_default(),
            held: r[2].as_deref() == Some("true"),
            lag: capture::lag_for(id, relid),
        }
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
    largest(&readers(relid))
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
    let r = row(
        "SELECT backpressure, capture_state, source_relid::regclass::text FROM pgtrickle.pgt_change_buffers \
         WHERE source_relid = $1::text::oid",
        &[Some(relid.to_string())],
    )?;
    let state = State::parse(r[0].as_deref().unwrap_or("released"));
    let source = r[2].clone().unwrap_or_default();
    let readers = readers(relid);
    let lag = largest(&readers);
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
        run(
            "UPDATE pgtrickle.pgt_change_buffers SET backpressure = $2, backpressure_reason = $3, \
             backpressure_since = now(), backpressure_transitions = backpressure_transitions + 1 \
             WHERE source_relid = $1::text::oid",
            &[Some(relid.to_string()), Some(next.name().into()), reason],
        );
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
    run(
        "UPDATE pgtrickle.pgt_change_buffers SET write_block = $2 \
         WHERE source_relid = $1::text::oid AND write_block IS DISTINCT FROM $2",
        &[Some(relid.to_string()), block],
    );
    Some((source, next, why))
}

/// Whether backpressure or the held-backlog cap is switched on; when
/// neither is, only sources still marked need a look (to release them).
fn enforcing() -> bool {
    gucs::ENFORCE_BACKPRESSURE.get() || gucs::MAX_HELD_BACKLOG_ROWS.get() > 0
}

/// Of `candidates`, the sources worth evaluating: all while enforcing,
/// else those still engaged or blocked. Keeps the scheduler tick and every
/// refresh free of backlog counting when the features are off.
fn worth_evaluating(candidates: Vec<u32>) -> Vec<u32> {
    if enforcing() {
        return candidates;
    }
    let marked: Vec<u32> = first_column(
        "SELECT source_relid::text FROM pgtrickle.pgt_change_buffers \
         WHERE backpressure = 'engaged' OR write_block IS NOT NULL",
        &[],
    );
    candidates
        .into_iter()
        .filter(|c| marked.contains(c))
        .collect()
}

/// Re-evaluate every source; returns the transitions.
pub fn evaluate_all() -> Vec<(String, State, String)> {
    worth_evaluating(all_captured_sources())
        .into_iter()
        .filter_map(evaluate_source)
        .filter_map(|(s, st, why)| why.map(|w| (s, st, w)))
        .collect()
}

/// Re-evaluate the sources of one stream table (after its refresh).
pub fn evaluate_sources_of(st_id: i64) {
    for relid in worth_evaluating(sources_of(st_id)) {
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
    TableIterator::new(as_extension(|| buffer_rows(me, all)))
}

type BufferRow = (
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    f64,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
);

/// The change buffers of the sources `me` may read (all of them with `all`).
fn buffer_rows(me: pgrx::pg_sys::Oid, all: bool) -> Vec<BufferRow> {
    rows(
        "SELECT b.source_relid::text, b.source_relid::regclass::text, b.buffer_name, b.capture_state, \
         b.capture_reason, (SELECT count(*) FROM pgtrickle.pgt_sources s WHERE s.source_relid = b.source_relid \
         AND s.captured)::text, b.backpressure, b.backpressure_reason, b.backpressure_since::text, \
         b.backpressure_transitions::text, b.write_block FROM pgtrickle.pgt_change_buffers b \
         WHERE $2::boolean OR has_table_privilege($1::text::oid, b.source_relid, 'SELECT') ORDER BY 2",
        &[Some(me.to_u32().to_string()), Some(all.to_string())],
    )
    .into_iter()
    .map(|r| {
        let relid: u32 = r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        let lag = source_lag(relid);
        let num = |v: &Option<String>| v.as_deref().and_then(|x| x.parse().ok()).unwrap_or(0);
        (
            r[1].clone().unwrap_or_default(),
            r[2].clone().unwrap_or_default(),
            r[3].clone().unwrap_or_default(),
            r[4].clone(),
            num(&r[5]),
            lag.rows,
            lag.bytes,
            lag.age_seconds,
            r[6].clone().unwrap_or_default(),
            r[7].clone(),
            r[8].clone(),
            num(&r[9]),
            r[10].clone(),
        )
    })
    .collect()
}
