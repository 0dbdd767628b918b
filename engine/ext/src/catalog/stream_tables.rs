//! A stream table's row in `pgt_stream_tables`, typed: what a refresh
//! reads ([`lock_for_refresh`]) and what creation ([`insert`]), a re-plan
//! ([`store_replan`]) and regeneration ([`store_statements`]) write. The
//! plan's statements and its fingerprint are always written together, so
//! a stored statement never outlives the identity it was generated from.

use pg_trickle_core::ir::{Mode, RequestedMode};
use pgrx::prelude::*;

use crate::planning::Planned;
use crate::security::Owner;
use crate::spi::{raise, row, run, value};

/// What a refresh needs of a stream table's catalog row, typed.
#[derive(Debug, Clone)]
pub struct StreamTableRow {
    /// Name as recorded.
    pub name: String,
    /// The mode the engine chose (None: a value this build does not know).
    pub effective_mode: Option<Mode>,
    /// Marked for reinitialisation: the next refresh is FULL.
    pub needs_reinit: bool,
    /// Why it was marked.
    pub reinit_reason: Option<String>,
    /// The stored differential statement (DIFFERENTIAL stream tables).
    pub diff_sql: Option<String>,
    /// The FULL refresh statement.
    pub full_sql: String,
    /// The statement that populates it at creation.
    pub populate_sql: String,
    /// The frontier of the last refresh (`pg_snapshot` text), once refreshed.
    pub frontier: Option<String>,
    /// The xid of the transaction that took that frontier.
    pub frontier_xid: Option<String>,
    /// Held: refreshes wait for resume.
    pub held: bool,
    /// The defining query.
    pub query: String,
    /// Storage relation oid.
    pub relid: u32,
    /// Its owner and the search_path recorded at creation.
    pub owner: Owner,
    /// The fingerprint of the plan the stored statements came from (None
    /// before 0.39.2's regeneration, or for a FULL stream table).
    pub plan_fingerprint: Option<String>,
}

/// Lock stream table `id`'s row for a refresh and read it (`skip_locked`:
/// None when another session holds it; None too when it does not exist).
pub fn lock_for_refresh(id: i64, skip_locked: bool) -> Option<StreamTableRow> {
    let lock = if skip_locked {
        "FOR UPDATE SKIP LOCKED"
    } else {
        "FOR UPDATE"
    };
    let r = row(
        &format!(
            "SELECT name, effective_mode, needs_reinit::text, diff_sql, full_sql, populate_sql, \
             frontier::text, frontier_xid::text, reinit_reason, search_path, held::text, \
             query, relid::text, (SELECT c.relowner FROM pg_class c WHERE c.oid = relid)::text, \
             plan_fingerprint FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint {lock}"
        ),
        &[Some(id.to_string())],
    )?;
    let text = |i: usize| r[i].clone().unwrap_or_default();
    let flag = |i: usize| r[i].as_deref() == Some("true");
    Some(StreamTableRow {
        name: text(0),
        effective_mode: r[1].as_deref().and_then(Mode::parse),
        needs_reinit: flag(2),
        diff_sql: r[3].clone(),
        full_sql: text(4),
        populate_sql: text(5),
        frontier: r[6].clone(),
        frontier_xid: r[7].clone(),
        reinit_reason: r[8].clone(),
        held: flag(10),
        query: text(11),
        relid: r[12].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        owner: Owner {
            role: pg_sys::Oid::from(
                r[13]
                    .as_deref()
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0),
            ),
            search_path: text(9),
        },
        plan_fingerprint: r[14].clone(),
    })
}

/// What creation records of a new stream table besides its plan.
pub struct NewStreamTable<'a> {
    /// Storage relation oid.
    pub relid: u32,
    /// Name as recorded (schema-qualified).
    pub name: &'a str,
    /// The defining query.
    pub query: &'a str,
    /// The mode asked for.
    pub requested: RequestedMode,
    /// The schedule as written and in seconds, when it has one.
    pub schedule: Option<(String, u64)>,
    /// The search_path its statements run under.
    pub search_path: &'a str,
}

/// Record a new stream table and its plan; its catalog id.
pub fn insert(new: &NewStreamTable, planned: &Planned) -> i64 {
    value(
        "INSERT INTO pgtrickle.pgt_stream_tables (relid, name, query, requested_mode, effective_mode, \
         fallback_reason, schedule, schedule_seconds, grouped, populate_sql, full_sql, diff_sql, search_path, \
         plan_fingerprint) \
         VALUES ($1::text::oid, $2, $3, $4, $5, $6, $7, $8::bigint, $9::boolean, $10, $11, $12, $13, $14) \
         RETURNING id::text",
        &[
            Some(new.relid.to_string()),
            Some(new.name.to_string()),
            Some(new.query.to_string()),
            Some(new.requested.name().to_string()),
            Some(planned.effective_mode.name().to_string()),
            planned.fallback_reason.clone(),
            new.schedule.as_ref().map(|s| s.0.clone()),
            new.schedule.as_ref().map(|s| s.1.to_string()),
            Some(planned.plan.grouped.to_string()),
            Some(planned.plan.populate_sql.clone()),
            Some(planned.plan.full_sql.clone()),
            planned.stored_diff_sql(),
            Some(new.search_path.to_string()),
            planned.stored_fingerprint(),
        ],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("XX000", "could not record the stream table", None))
}

/// Store a re-plan of stream table `id` and mark it for reinitialisation
/// with `reason`.
pub fn store_replan(id: i64, requested: RequestedMode, planned: &Planned, reason: &str) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET requested_mode = $2, effective_mode = $3, fallback_reason = $4, \
         grouped = $5::boolean, populate_sql = $6, full_sql = $7, diff_sql = $8, needs_reinit = true, \
         reinit_reason = $9, plan_fingerprint = $10 WHERE id = $1::text::bigint",
        &[
            Some(id.to_string()),
            Some(requested.name().to_string()),
            Some(planned.effective_mode.name().to_string()),
            planned.fallback_reason.clone(),
            Some(planned.plan.grouped.to_string()),
            Some(planned.plan.populate_sql.clone()),
            Some(planned.plan.full_sql.clone()),
            planned.stored_diff_sql(),
            Some(reason.to_string()),
            planned.stored_fingerprint(),
        ],
    );
}

/// Store the statements of a plan whose mode and sources did not change
/// (regeneration by an upgrade).
pub fn store_statements(id: i64, planned: &Planned) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET populate_sql = $2, full_sql = $3, diff_sql = $4, \
         plan_fingerprint = $5 WHERE id = $1::text::bigint",
        &[
            Some(id.to_string()),
            Some(planned.plan.populate_sql.clone()),
            Some(planned.plan.full_sql.clone()),
            planned.stored_diff_sql(),
            planned.stored_fingerprint(),
        ],
    );
}
