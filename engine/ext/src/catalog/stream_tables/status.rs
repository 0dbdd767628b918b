//! What operators control and see of a stream table's row in
//! `pgt_stream_tables`: holds, the scheduler's view (which schedules are
//! due, the last failure), and what `stream_table_status()`, explain and
//! `stream_table_sql()` read. Kept apart from the row as refreshes,
//! creation and re-plans use it (the parent module) to keep both short.

use pg_trickle_core::ir::{Mode, RequestedMode};
use pgrx::prelude::*;

use crate::catalog::{arg, decoded, decoded_row, OWNED_BY_CALLER};
use crate::spi::{run, value};

/// Hold stream table `id` with `reason` (kept since the first hold).
pub fn hold(id: i64, reason: &str) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET held = true, held_since = coalesce(held_since, now()), \
         held_reason = $2 WHERE id = $1::text::bigint",
        &[arg(id), arg(reason)],
    );
}

/// Resume stream table `id`.
pub fn resume(id: i64) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET held = false, held_since = NULL, held_reason = NULL \
         WHERE id = $1::text::bigint",
        &[arg(id)],
    );
}

/// Hold every stream table `role` owns (or is a member of the owner of)
/// that is not held; how many.
pub fn hold_all_owned_by(role: pg_sys::Oid, reason: &str) -> i64 {
    value(
        &format!(
            "WITH h AS (UPDATE pgtrickle.pgt_stream_tables st SET held = true, held_since = now(), held_reason = $2 \
             WHERE NOT held AND {OWNED_BY_CALLER} RETURNING 1) SELECT count(*)::text FROM h"
        ),
        &[arg(role.to_u32()), arg(reason)],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0)
}

/// Resume every held stream table `role` owns (or is a member of the
/// owner of); how many.
pub fn resume_all_owned_by(role: pg_sys::Oid) -> i64 {
    value(
        &format!(
            "WITH h AS (UPDATE pgtrickle.pgt_stream_tables st SET held = false, held_since = NULL, held_reason = NULL \
             WHERE held AND {OWNED_BY_CALLER} RETURNING 1) SELECT count(*)::text FROM h"
        ),
        &[arg(role.to_u32())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0)
}

/// Since when and why a stream table is held.
pub struct Hold {
    /// When it was held (`timestamptz` text).
    pub since: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// Stream table `id`'s hold, if it is held.
pub fn hold_of(id: i64) -> Option<Hold> {
    let r = decoded_row(
        "SELECT held_since::text, held_reason FROM pgtrickle.pgt_stream_tables \
         WHERE id = $1::text::bigint AND held",
        &[arg(id)],
    )?;
    Some(Hold {
        since: r.opt(0),
        reason: r.opt(1),
    })
}
/// Record a failed scheduled refresh of `id`; with `retry_next_tick` its
/// error time is left as it was, so it stays due.
pub fn record_failure(id: i64, sqlstate: &str, message: &str, retry_next_tick: bool) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET last_error_sqlstate = $2, last_error_message = $3, \
         last_error_at = CASE WHEN $4::boolean THEN last_error_at ELSE now() END \
         WHERE id = $1::text::bigint",
        &[arg(id), arg(sqlstate), arg(message), arg(retry_next_tick)],
    );
}
/// Whether a stream table's schedule is due now.
pub struct Schedule {
    /// Catalog id.
    pub id: i64,
    /// It has a schedule, is not held, and its interval has passed since
    /// its last refresh, error or creation.
    pub due: bool,
}

/// Every stream table with whether its schedule is due.
pub fn schedules() -> Vec<Schedule> {
    decoded(
        "SELECT id::text, (schedule_seconds IS NOT NULL AND NOT held AND \
           greatest(last_refresh_at, last_error_at, created_at) + schedule_seconds * interval '1 second' <= now())::text \
         FROM pgtrickle.pgt_stream_tables",
        &[],
    )
    .into_iter()
    .filter_map(|r| {
        Some(Schedule {
            id: r.parsed(0)?,
            due: r.flag(1),
        })
    })
    .collect()
}
/// The fingerprint of the plan behind stream table `id`'s stored
/// differential statement, if it has one.
pub fn differential_fingerprint(id: i64) -> Option<String> {
    value(
        "SELECT plan_fingerprint FROM pgtrickle.pgt_stream_tables \
         WHERE id = $1::text::bigint AND diff_sql IS NOT NULL",
        &[arg(id)],
    )
}

/// A stream table's stored refresh statements.
#[derive(Debug, Clone, Default)]
pub struct StoredSql {
    /// The differential statement (DIFFERENTIAL stream tables).
    pub differential: Option<String>,
    /// The FULL statement.
    pub full: Option<String>,
}

/// Stream table `id`'s stored statements (neither when it does not exist).
pub fn stored_sql(id: i64) -> StoredSql {
    decoded_row(
        "SELECT diff_sql, full_sql FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[arg(id)],
    )
    .map(|r| StoredSql {
        differential: r.opt(0),
        full: r.opt(1),
    })
    .unwrap_or_default()
}

/// Where a stream table's last refresh left off.
pub struct Frontier {
    /// The `pg_snapshot` it took (None before its first refresh).
    pub snapshot: Option<String>,
    /// The xid8 of the transaction that took it.
    pub xid: Option<String>,
}

/// Stream table `id`'s frontier, if it exists.
pub fn frontier(id: i64) -> Option<Frontier> {
    let r = decoded_row(
        "SELECT frontier::text, frontier_xid::text FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[arg(id)],
    )?;
    Some(Frontier {
        snapshot: r.opt(0),
        xid: r.opt(1),
    })
}

/// What `stream_table_status()` shows of a stream table's own row.
pub struct Status {
    /// Catalog id.
    pub id: i64,
    /// Name as recorded.
    pub name: String,
    /// The mode asked for (None: a value this build does not know).
    pub requested_mode: Option<RequestedMode>,
    /// The mode the engine chose (None: a value this build does not know).
    pub effective_mode: Option<Mode>,
    /// The schedule as written (None: manual only).
    pub schedule: Option<String>,
    /// When it was last refreshed (`timestamptz` text).
    pub last_refresh_at: Option<String>,
    /// The mode its last refresh ran.
    pub last_refresh_mode: Option<String>,
    /// Marked for reinitialisation.
    pub needs_reinit: bool,
    /// Why.
    pub reinit_reason: Option<String>,
    /// Why the engine chose FULL over a requested AUTO.
    pub fallback_reason: Option<String>,
    /// SQLSTATE of the last failed scheduled refresh.
    pub last_error_sqlstate: Option<String>,
    /// Its message.
    pub last_error_message: Option<String>,
    /// The frontier of the last refresh (`pg_snapshot` text).
    pub frontier: Option<String>,
    /// Held.
    pub held: bool,
    /// When held: `held since <time>: <reason>`.
    pub held_because: Option<String>,
}

/// The status rows of the stream tables `role` may see (owned by it or a
/// role it is a member of; every one with `all`), by name.
pub fn status_visible_to(role: pg_sys::Oid, all: bool) -> Vec<Status> {
    decoded(
        "SELECT st.id::text, st.name, st.requested_mode, st.effective_mode, st.schedule, st.last_refresh_at::text, \
         st.last_refresh_mode, st.needs_reinit::text, st.reinit_reason, st.fallback_reason, st.last_error_sqlstate, \
         st.last_error_message, st.frontier::text, st.held::text, \
         CASE WHEN st.held THEN format('held since %s: %s', st.held_since, st.held_reason) END \
         FROM pgtrickle.pgt_stream_tables st JOIN pg_class c ON c.oid = st.relid \
         WHERE $2::boolean OR pg_has_role($1::text::oid, c.relowner, 'USAGE') ORDER BY st.name",
        &[arg(role.to_u32()), arg(all)],
    )
    .into_iter()
    .map(|r| Status {
        id: r.num(0),
        name: r.text(1),
        requested_mode: r.opt(2).and_then(|m| RequestedMode::parse(&m).ok()),
        effective_mode: r.opt(3).as_deref().and_then(Mode::parse),
        schedule: r.opt(4),
        last_refresh_at: r.opt(5),
        last_refresh_mode: r.opt(6),
        needs_reinit: r.flag(7),
        reinit_reason: r.opt(8),
        fallback_reason: r.opt(9),
        last_error_sqlstate: r.opt(10),
        last_error_message: r.opt(11),
        frontier: r.opt(12),
        held: r.flag(13),
        held_because: r.opt(14),
    })
    .collect()
}
