//! `pgt_stream_tables`: a stream table's own row, typed. What a refresh
//! reads ([`lock_for_refresh`]) and writes after it ([`store_refresh`]),
//! what creation ([`insert`]), a re-plan ([`store_replan`]) and
//! regeneration ([`store_statements`]) write, the definition they start
//! from ([`definition`]), and marks for reinitialisation. The plan's
//! statements and its fingerprint are always written together, so a
//! stored statement never outlives the identity it was generated from.
//!
//! [`status`] holds what operators control and see of the same row
//! (holds, schedules, errors, the status listing); its functions are
//! re-exported here.

pub mod status;

pub use status::{
    differential_fingerprint, frontier, hold, hold_all_owned_by, hold_of, record_failure, resume,
    resume_all_owned_by, schedules, status_visible_to, stored_sql, Frontier, Hold, Schedule,
    Status, StoredSql,
};

use pg_trickle_core::adaptive::Estimates;
use pg_trickle_core::ir::{Mode, RequestedMode};

use super::{arg, decoded_row, StreamTableRef};
use crate::security::Owner;
use crate::spi::{first_column, raise, run, value};

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
    /// before 0.40.0's regeneration, or for a FULL stream table).
    pub plan_fingerprint: Option<String>,
    /// The mode its creator asked for (None: a value this build does not know).
    pub requested_mode: Option<RequestedMode>,
    /// What its earlier refreshes measured, for AUTO's choice.
    pub estimates: Estimates,
    /// The differential statement specialised to every captured source
    /// having changes, stored with the plan (None: specialise at refresh).
    pub all_changed_sql: Option<String>,
}

/// Lock stream table `id`'s row for a refresh and read it (`skip_locked`:
/// None when another session holds it; None too when it does not exist).
pub fn lock_for_refresh(id: i64, skip_locked: bool) -> Option<StreamTableRow> {
    let lock = if skip_locked {
        "FOR UPDATE SKIP LOCKED"
    } else {
        "FOR UPDATE"
    };
    let r = decoded_row(
        &format!(
            "SELECT name, effective_mode, needs_reinit::text, \
             frontier::text, frontier_xid::text, reinit_reason, search_path, held::text, \
             query, relid::text, (SELECT c.relowner FROM pg_class c WHERE c.oid = relid)::text, \
             plan_fingerprint, requested_mode, full_ms_estimate::text, diff_fixed_ms_estimate::text, \
             diff_ms_per_change_estimate::text, all_changed_sql \
             FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint {lock}"
        ),
        &[arg(id)],
    )?;
    Some(StreamTableRow {
        name: r.text(0),
        effective_mode: r.opt(1).as_deref().and_then(Mode::parse),
        needs_reinit: r.flag(2),
        frontier: r.opt(3),
        frontier_xid: r.opt(4),
        reinit_reason: r.opt(5),
        held: r.flag(7),
        query: r.text(8),
        relid: r.num(9),
        owner: Owner {
            role: r.oid(10),
            search_path: r.text(6),
        },
        plan_fingerprint: r.opt(11),
        requested_mode: r
            .opt(12)
            .as_deref()
            .and_then(|m| RequestedMode::parse(m).ok()),
        estimates: Estimates {
            full_ms: r.opt(13).and_then(|v| v.parse().ok()),
            diff_fixed_ms: r.opt(14).and_then(|v| v.parse().ok()),
            diff_ms_per_change: r.opt(15).and_then(|v| v.parse().ok()),
        },
        all_changed_sql: r.opt(16),
    })
}

/// A stored statement of a stream table, read only when a refresh runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The general differential statement (every source's changes).
    Differential,
    /// The FULL refresh.
    Full,
    /// The population at creation.
    Populate,
}

/// Stored statement `which` of stream table `id` (empty when it has none).
/// A refresh reads its row without the statements (several kilobytes
/// each, compressed: reading all of them cost about 3% of a single-row
/// refresh) and the one it runs from here, under the lock it holds.
pub fn stored_statement(id: i64, which: Stored) -> String {
    let column = match which {
        Stored::Differential => "diff_sql",
        Stored::Full => "full_sql",
        Stored::Populate => "populate_sql",
    };
    value(
        &format!("SELECT {column} FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint"),
        &[arg(id)],
    )
    .unwrap_or_default()
}

/// The stream table whose storage is `relid`, if it is one.
pub fn by_relid(relid: u32) -> Option<StreamTableRef> {
    // Read by key (see `direct`), the owner from the relation cache.
    let r = super::by_key(
        c"pgt_stream_tables",
        &[(c"relid", super::direct::Key::Oid(relid))],
        &[c"id", c"name"],
    )
    .into_iter()
    .next()?;
    let facts = super::direct::relation_facts(relid)?;
    Some(StreamTableRef {
        id: r.num(0),
        relid,
        name: r.text(1),
        owner: facts.owner,
    })
}

/// Whether relation `oid` is the storage of a stream table.
pub fn is_storage(oid: u32) -> bool {
    value(
        "SELECT EXISTS (SELECT 1 FROM pgtrickle.pgt_stream_tables s WHERE s.relid = $1::text::oid)::text",
        &[arg(oid)],
    )
    .as_deref()
        == Some("true")
}

/// The owner and recorded search_path of stream table `id`, if it exists.
pub fn owner(id: i64) -> Option<Owner> {
    let r = decoded_row(
        "SELECT c.relowner::text, st.search_path FROM pgtrickle.pgt_stream_tables st \
         JOIN pg_class c ON c.oid = st.relid WHERE st.id = $1::text::bigint",
        &[arg(id)],
    )?;
    Some(Owner {
        role: r.oid(0),
        search_path: r.text(1),
    })
}

/// A stream table's definition: what a re-plan, regeneration and explain
/// start from.
#[derive(Debug, Clone, Default)]
pub struct Definition {
    /// Name as recorded (the storage, schema-qualified at creation).
    pub name: String,
    /// The defining query.
    pub query: String,
    /// The mode asked for (None: a value this build does not know).
    pub requested_mode: Option<RequestedMode>,
    /// The mode the engine chose (None: a value this build does not know).
    pub effective_mode: Option<Mode>,
    /// Why the engine chose FULL over a requested AUTO.
    pub fallback_reason: Option<String>,
    /// Storage relation oid.
    pub relid: u32,
}

/// Stream table `id`'s definition, if it exists.
pub fn definition(id: i64) -> Option<Definition> {
    let r = decoded_row(
        "SELECT name, query, requested_mode, effective_mode, fallback_reason, relid::text \
         FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[arg(id)],
    )?;
    Some(Definition {
        name: r.text(0),
        query: r.text(1),
        requested_mode: r.opt(2).and_then(|m| RequestedMode::parse(&m).ok()),
        effective_mode: r.opt(3).as_deref().and_then(Mode::parse),
        fallback_reason: r.opt(4),
        relid: r.num(5),
    })
}

/// The name of stream table `id`, if it exists.
pub fn name_of(id: i64) -> Option<String> {
    value(
        "SELECT name FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[arg(id)],
    )
}

/// Every stream table's id, in id order.
pub fn ids() -> Vec<i64> {
    first_column(
        "SELECT s.id::text FROM pgtrickle.pgt_stream_tables s ORDER BY s.id",
        &[],
    )
}

/// What the catalog stores of a plan: the mode chosen and why, and the
/// statements with the fingerprint of the plan they came from (built by
/// `planning::Planned::stored`).
pub struct StoredPlan {
    /// DIFFERENTIAL or FULL.
    pub effective_mode: Mode,
    /// Why FULL was chosen, when it was.
    pub fallback_reason: Option<String>,
    /// One row per group (a grouped query) or a bag of rows.
    pub grouped: bool,
    /// Populates the stream table at creation.
    pub populate_sql: String,
    /// The FULL refresh.
    pub full_sql: String,
    /// The general differential statement (DIFFERENTIAL stream tables only).
    pub diff_sql: Option<String>,
    /// The plan's fingerprint, beside `diff_sql`.
    pub fingerprint: Option<String>,
    /// The differential statement specialised to every captured source
    /// having changes (`crate::specialise`), when it validated.
    pub all_changed_sql: Option<String>,
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
pub fn insert(new: &NewStreamTable, plan: &StoredPlan) -> i64 {
    value(
        "INSERT INTO pgtrickle.pgt_stream_tables (relid, name, query, requested_mode, effective_mode, \
         fallback_reason, schedule, schedule_seconds, grouped, populate_sql, full_sql, diff_sql, search_path, \
         plan_fingerprint, all_changed_sql) \
         VALUES ($1::text::oid, $2, $3, $4, $5, $6, $7, $8::bigint, $9::boolean, $10, $11, $12, $13, $14, $15) \
         RETURNING id::text",
        &[
            arg(new.relid),
            arg(new.name),
            arg(new.query),
            arg(new.requested.name()),
            arg(plan.effective_mode.name()),
            plan.fallback_reason.clone(),
            new.schedule.as_ref().map(|s| s.0.clone()),
            new.schedule.as_ref().map(|s| s.1.to_string()),
            arg(plan.grouped),
            Some(plan.populate_sql.clone()),
            Some(plan.full_sql.clone()),
            plan.diff_sql.clone(),
            arg(new.search_path),
            plan.fingerprint.clone(),
            plan.all_changed_sql.clone(),
        ],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("XX000", "could not record the stream table", None))
}

/// Store a re-plan of stream table `id` and mark it for reinitialisation
/// with `reason`.
pub fn store_replan(id: i64, requested: RequestedMode, plan: &StoredPlan, reason: &str) {
    run(
        &format!("UPDATE pgtrickle.pgt_stream_tables SET requested_mode = $2, effective_mode = $3, fallback_reason = $4, \
         grouped = $5::boolean, populate_sql = $6, full_sql = $7, diff_sql = $8, needs_reinit = true, \
         reinit_reason = $9, plan_fingerprint = $10, all_changed_sql = $11, {NO_ESTIMATES} WHERE id = $1::text::bigint"),
        &[
            arg(id),
            arg(requested.name()),
            arg(plan.effective_mode.name()),
            plan.fallback_reason.clone(),
            arg(plan.grouped),
            Some(plan.populate_sql.clone()),
            Some(plan.full_sql.clone()),
            plan.diff_sql.clone(),
            arg(reason),
            plan.fingerprint.clone(),
            plan.all_changed_sql.clone(),
        ],
    );
}

/// What AUTO's estimates become when the statements they measured are
/// replaced: nothing (see `pg_trickle_core::adaptive`).
const NO_ESTIMATES: &str =
    "full_ms_estimate = NULL, diff_fixed_ms_estimate = NULL, diff_ms_per_change_estimate = NULL";

/// Store the statements of a plan whose mode and sources did not change
/// (regeneration by an upgrade).
pub fn store_statements(id: i64, plan: &StoredPlan) {
    run(
        &format!(
            "UPDATE pgtrickle.pgt_stream_tables SET populate_sql = $2, full_sql = $3, diff_sql = $4, \
             plan_fingerprint = $5, all_changed_sql = $6, {NO_ESTIMATES} WHERE id = $1::text::bigint"
        ),
        &[
            arg(id),
            Some(plan.populate_sql.clone()),
            Some(plan.full_sql.clone()),
            plan.diff_sql.clone(),
            plan.fingerprint.clone(),
            plan.all_changed_sql.clone(),
        ],
    );
}

/// Record why stream table `id` is refreshed FULL.
pub fn set_fallback_reason(id: i64, reason: &str) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET fallback_reason = $2 WHERE id = $1::text::bigint",
        &[arg(id), Some(reason.to_string())],
    );
}

/// Set the mode stream table `id` asks for (after a re-plan planned it as another).
pub fn set_requested_mode(id: i64, requested: RequestedMode) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET requested_mode = $2 WHERE id = $1::text::bigint",
        &[arg(id), arg(requested.name())],
    );
}

/// Forget stream table `id`'s row (its sources and history go with it).
pub fn delete(id: i64) {
    run(
        "DELETE FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[arg(id)],
    );
}

/// Set stream table `id`'s schedule, as written and in seconds (None: manual only).
pub fn set_schedule(id: i64, schedule: Option<&(String, u64)>) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET schedule = $2, schedule_seconds = $3::bigint WHERE id = $1::text::bigint",
        &[
            arg(id),
            schedule.map(|s| s.0.clone()),
            schedule.map(|s| s.1.to_string()),
        ],
    );
}

/// Mark stream table `id` for reinitialisation (its next refresh is FULL) with `reason`.
pub fn mark_for_reinit(id: i64, reason: &str) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET needs_reinit = true, reinit_reason = $2 \
         WHERE id = $1::text::bigint",
        &[arg(id), arg(reason)],
    );
}

/// Mark every stream table capturing `source` for reinitialisation, the
/// reason being `reason_format` with `%s` the source's name; their names.
pub fn mark_readers_for_reinit(source: u32, reason_format: &str) -> Vec<String> {
    first_column(
        "UPDATE pgtrickle.pgt_stream_tables st SET needs_reinit = true, \
         reinit_reason = format($2, $1::text::oid::regclass) \
         WHERE st.id IN (SELECT s.st_id FROM pgtrickle.pgt_sources s WHERE s.source_relid = $1::text::oid AND s.captured) \
         RETURNING st.name",
        &[arg(source), arg(reason_format)],
    )
}

/// Note that a scheduled refresh of `id` found nothing to consume.
pub fn note_idle_refresh(id: i64) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = clock_timestamp() WHERE id = $1::text::bigint",
        &[arg(id)],
    );
}

/// Store what a refresh of `id` reached: the frontier and the xid that
/// took it, the mode that ran, the reason it stays marked for
/// reinitialisation (None: no longer marked); clears the last error.
pub fn store_refresh(
    id: i64,
    frontier: Option<String>,
    frontier_xid: Option<String>,
    mode: Mode,
    still_reinit: Option<String>,
    learned: Option<&Estimates>,
) {
    // Only an AUTO stream table's refreshes write what they measured; a
    // value that is no duration is stored as none (infinity, FULL failed
    // when chosen, is kept: see `adaptive::after_failed_full`).
    let figure = |v: Option<f64>| {
        v.filter(|v| !v.is_nan() && *v >= 0.0).map(|v| {
            if v.is_finite() {
                v.to_string()
            } else {
                "Infinity".into()
            }
        })
    };
    let e = learned.copied().unwrap_or_default();
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET frontier = $2::pg_snapshot, frontier_xid = $3::xid8, \
         reinit_generation = reinit_generation + CASE WHEN needs_reinit AND $4 = 'FULL' THEN 1 ELSE 0 END, \
         needs_reinit = $5 IS NOT NULL, reinit_reason = $5, last_refresh_at = clock_timestamp(), \
         last_refresh_mode = $4, last_error_sqlstate = NULL, last_error_message = NULL, last_error_at = NULL, \
         full_ms_estimate = CASE WHEN $6::boolean THEN $7::float8 ELSE full_ms_estimate END, \
         diff_fixed_ms_estimate = CASE WHEN $6::boolean THEN $8::float8 ELSE diff_fixed_ms_estimate END, \
         diff_ms_per_change_estimate = CASE WHEN $6::boolean THEN $9::float8 ELSE diff_ms_per_change_estimate END \
         WHERE id = $1::text::bigint",
        &[
            arg(id),
            frontier,
            frontier_xid,
            arg(mode.name()),
            still_reinit,
            arg(learned.is_some()),
            figure(e.full_ms),
            figure(e.diff_fixed_ms),
            figure(e.diff_ms_per_change),
        ],
    );
}
