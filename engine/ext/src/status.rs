//! What operators look at: `stream_table_status()`, `explain_stream_table()`,
//! `stream_table_sql()` and `refresh_history()`.
//!
//! A role sees the stream tables it owns (or whose owner it is a member
//! of); superusers and members of `pg_read_all_stats` see all of them. The
//! definition (query text, generated SQL) and history of another role's
//! stream table are refused with 42501, as a query's text is hidden from
//! other roles in `pg_stat_activity`.

use pgrx::prelude::*;
use pgrx::JsonB;

use pg_trickle_core::delta::{plan_refresh, SqlPhase};
use pg_trickle_core::explain;
use pg_trickle_core::ir::Mode;
use pg_trickle_core::OpNode;

use crate::capture;
use crate::catalog::{owner_of, resolve};
use crate::security::{self, as_extension, Owner};
use crate::spi::{first_column, row, rows};

/// One row per stream table: modes, schedule, last refresh, what happens
/// to its changes (captured, held or discarded) and why, its backlog,
/// backpressure on its sources, reinitialisation state and the last error.
#[pg_extern(name = "stream_table_status")]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn stream_table_status_v2() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(requested_mode, String),
        name!(effective_mode, String),
        name!(schedule, Option<String>),
        name!(last_refresh_at, Option<String>),
        name!(last_refresh_mode, Option<String>),
        name!(pending_changes, i64),
        name!(needs_reinit, bool),
        name!(reinit_reason, Option<String>),
        name!(fallback_reason, Option<String>),
        name!(last_error_sqlstate, Option<String>),
        name!(last_error_message, Option<String>),
        name!(frontier, Option<String>),
        name!(cdc_state, String),
        name!(cdc_reason, Option<String>),
        name!(pending_bytes, i64),
        name!(oldest_pending_age_s, f64),
        name!(backpressure, String),
        name!(backpressure_reason, Option<String>),
    ),
> {
    let me = security::caller();
    let all = security::is_monitor(me);
    TableIterator::new(as_extension(|| status_rows(me, all)))
}

type StatusRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    i64,
    f64,
    String,
    Option<String>,
);

/// Status of the stream tables `me` may see (all of them with `all`).
fn status_rows(me: pgrx::pg_sys::Oid, all: bool) -> Vec<StatusRow> {
    let sts = rows(
        "SELECT st.id::text, st.name, st.requested_mode, st.effective_mode, st.schedule, st.last_refresh_at::text, \
         st.last_refresh_mode, st.needs_reinit::text, st.reinit_reason, st.fallback_reason, st.last_error_sqlstate, \
         st.last_error_message, st.frontier::text, st.held::text, \
         CASE WHEN st.held THEN format('held since %s: %s', st.held_since, st.held_reason) END \
         FROM pgtrickle.pgt_stream_tables st JOIN pg_class c ON c.oid = st.relid \
         WHERE $2::boolean OR pg_has_role($1::text::oid, c.relowner, 'USAGE') ORDER BY st.name",
        &[Some(me.to_u32().to_string()), Some(all.to_string())],
    );
    let mut out = Vec::new();
    for r in sts {
        let id: i64 = r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        let sources = rows(
            "SELECT s.source_relid::text, s.source_relid::regclass::text, b.capture_state, b.capture_reason, \
             b.backpressure, b.backpressure_reason, b.write_block FROM pgtrickle.pgt_sources s \
             JOIN pgtrickle.pgt_change_buffers b ON b.source_relid = s.source_relid \
             WHERE s.st_id = $1::text::bigint AND s.captured ORDER BY 2",
            &[Some(id.to_string())],
        );
        let mut lag = pg_trickle_core::backpressure::Lag::default();
        let (mut discarding, mut engaged, mut blocked) = (None, None, None);
        for src in &sources {
            let relid: u32 = src[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
            let l = capture::lag_for(id, relid);
            lag.rows += l.rows;
            lag.bytes += l.bytes;
            lag.age_seconds = lag.age_seconds.max(l.age_seconds);
            let name = src[1].clone().unwrap_or_default();
            if src[2].as_deref() == Some("discarding") && discarding.is_none() {
                discarding = Some(format!(
                    "capture discarded on {name}: {}",
                    src[3].clone().unwrap_or_default()
                ));
            }
            if src[4].as_deref() == Some("engaged") && engaged.is_none() {
                engaged = Some(format!("{name}: {}", src[5].clone().unwrap_or_default()));
            }
            if let (Some(b), None) = (&src[6], &blocked) {
                blocked = Some(format!("{name}: {b}"));
            }
        }
        let held = r[13].as_deref() == Some("true");
        let (cdc_state, cdc_reason) = match (&discarding, held) {
            (Some(d), _) => ("discarding", Some(d.clone())),
            (None, true) => ("holding", r[14].clone()),
            (None, false) => ("capturing", None),
        };
        let (bp, bp_reason) = match (blocked, engaged) {
            (Some(b), _) => ("writes blocked", Some(b)),
            (None, Some(e)) => ("engaged", Some(e)),
            (None, None) => ("released", None),
        };
        out.push((
            r[1].clone().unwrap_or_default(),
            r[2].clone().unwrap_or_default(),
            r[3].clone().unwrap_or_default(),
            r[4].clone(),
            r[5].clone(),
            r[6].clone(),
            lag.rows,
            r[7].as_deref() == Some("true"),
            r[8].clone(),
            r[9].clone(),
            r[10].clone(),
            r[11].clone(),
            r[12].clone(),
            cdc_state.to_string(),
            cdc_reason,
            lag.bytes,
            lag.age_seconds,
            bp.to_string(),
            bp_reason,
        ));
    }
    out
}

/// What explain and the SQL listing need about one stream table.
struct Explained {
    st: crate::catalog::StreamTableRef,
    query: String,
    requested: String,
    effective: String,
    fallback_reason: Option<String>,
    analysis: Result<pg_trickle_core::Analysis, String>,
    /// The recorded storage name the SQL was generated for.
    storage: String,
    /// Its owner and the search_path it was created under.
    owner: Owner,
}

/// Look a stream table up as the caller and run `f` on what explain needs,
/// as the extension, once the caller may read its definition.
fn with_explained<R>(name: &str, f: impl FnOnce(&Explained) -> R) -> R {
    let me = security::caller();
    let st = resolve(name);
    as_extension(|| {
        st.require_reader(me);
        f(&explained(st))
    })
}

fn explained(st: crate::catalog::StreamTableRef) -> Explained {
    let r = row(
        "SELECT query, requested_mode, effective_mode, fallback_reason, search_path, name \
         FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[Some(st.id.to_string())],
    )
    .unwrap_or_default();
    let query = r[0].clone().unwrap_or_default();
    let owner = owner_of(st.id);
    // Names in the defining query resolve as they did at creation.
    let analysis = crate::planning::analyze_query(&query, &owner);
    Explained {
        st,
        query,
        requested: r[1].clone().unwrap_or_default(),
        effective: r[2].clone().unwrap_or_default(),
        fallback_reason: r[3].clone(),
        analysis,
        storage: r[5].clone().unwrap_or_default(),
        owner,
    }
}

impl Explained {
    fn tree(&self) -> OpNode {
        match &self.analysis {
            Ok(a) => a.tree.clone(),
            Err(e) => OpNode::new("Query", "", vec![]).unsupported(e.clone()),
        }
    }

    fn phases(&self) -> Vec<SqlPhase> {
        let Ok(analysis) = &self.analysis else {
            return Vec::new();
        };
        if Mode::parse(&self.effective) != Some(Mode::Full) {
            // What the next refresh would run: specialised to the sources
            // with changes to consume now.
            let fingerprint = crate::spi::value(
                "SELECT plan_fingerprint FROM pgtrickle.pgt_stream_tables \
                 WHERE id = $1::text::bigint AND diff_sql IS NOT NULL",
                &[Some(self.st.id.to_string())],
            );
            if let Some(fingerprint) = fingerprint {
                let target = crate::specialise::Target {
                    id: self.st.id,
                    fingerprint: Some(&fingerprint),
                    query: &self.query,
                    owner: &self.owner,
                    relid: self.st.relid,
                    storage: &self.storage,
                };
                let pending =
                    capture::pending_sources(self.st.id, analysis.sources.iter().map(|s| s.oid));
                if let Some(s) = crate::specialise::specialised(&target, &pending) {
                    return s.phases;
                }
            }
        }
        let columns = crate::planning::storage_columns(self.st.relid);
        let mut phases = plan_refresh(analysis, &self.query, &self.storage, &columns).phases;
        if Mode::parse(&self.effective) == Some(Mode::Full) {
            // A FULL stream table never runs its differential phases.
            phases.retain(|p| !p.parameterized);
        }
        phases
    }

    fn json(&self) -> serde_json::Value {
        let sources: Vec<serde_json::Value> = rows(
            "SELECT source_relid::regclass::text, captured::text FROM pgtrickle.pgt_sources \
             WHERE st_id = $1::text::bigint ORDER BY 1",
            &[Some(self.st.id.to_string())],
        )
        .into_iter()
        .map(|s| serde_json::json!({ "relation": s[0], "captured": s[1].as_deref() == Some("true") }))
        .collect();
        let stored = row(
            "SELECT diff_sql, full_sql FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
            &[Some(self.st.id.to_string())],
        )
        .unwrap_or_default();
        let phases: Vec<serde_json::Value> = self
            .phases()
            .iter()
            .map(|p| serde_json::json!({ "phase": p.name, "hash": p.hash(), "writes": p.writes }))
            .collect();
        serde_json::json!({
            "name": self.st.name,
            "query": self.query,
            "requested_mode": self.requested,
            "effective_mode": self.effective,
            "fallback_reason": self.fallback_reason,
            "sources": sources,
            "operator_tree": serde_json::to_value(self.tree()).unwrap_or(serde_json::Value::Null),
            "sql": { "differential": stored.first().cloned().flatten(), "full": stored.get(1).cloned().flatten() },
            "phases": phases,
        })
    }
}

/// The operator tree, chosen mode, FULL reason and generated SQL of a
/// stream table, as JSON.
#[pg_extern]
fn explain_stream_table(name: &str) -> JsonB {
    JsonB(with_explained(name, Explained::json))
}

/// The same in a chosen format: `json`, `text` (reads like EXPLAIN) or
/// `dot` (Graphviz).
#[pg_extern(name = "explain_stream_table")]
fn explain_stream_table_as(name: &str, format: &str) -> String {
    let Some(f) = explain::Format::parse(format) else {
        crate::spi::raise(
            "22023",
            format!("unknown explain format \"{format}\" for stream table {name}"),
            Some("Use 'json', 'text' or 'dot'.".into()),
        )
    };
    with_explained(name, |e| {
        let header = explain::Header {
            name: &e.st.name,
            requested: &e.requested,
            effective: &e.effective,
            fallback_reason: e.fallback_reason.as_deref(),
        };
        match f {
            explain::Format::Json => serde_json::to_string_pretty(&e.json()).unwrap_or_default(),
            explain::Format::Text => explain::text(&header, &e.tree()),
            explain::Format::Dot => explain::dot(&header, &e.tree()),
        }
    })
}

/// Every generated SQL fragment of a stream table's current definition,
/// one row per phase, with a stable hash. Parameterized phases take `$1`
/// the previous frontier (`pg_snapshot`), `$2` the xid8 that took it and
/// `$3…` the change ids consumed per source, all as text; `parameters`
/// holds the values the next refresh would bind, so a read-only phase can
/// be run or EXPLAINed as it is (`PREPARE p(text, ...) AS sql`).
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn stream_table_sql(
    name: &str,
) -> TableIterator<
    'static,
    (
        name!(phase, String),
        name!(sql, String),
        name!(hash, String),
        name!(parameterized, bool),
        name!(writes, bool),
        name!(parameters, Option<Vec<Option<String>>>),
    ),
> {
    TableIterator::new(with_explained(name, sql_rows))
}

/// One row of `stream_table_sql`.
type SqlRow = (
    String,
    String,
    String,
    bool,
    bool,
    Option<Vec<Option<String>>>,
);

fn sql_rows(e: &Explained) -> Vec<SqlRow> {
    let id = Some(e.st.id.to_string());
    let mut params: Vec<Option<String>> = row(
        "SELECT frontier::text, frontier_xid::text FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        std::slice::from_ref(&id),
    )
    .unwrap_or_default();
    params.extend(
        first_column::<String>(
            "SELECT own_change_id::text FROM pgtrickle.pgt_sources \
         WHERE st_id = $1::text::bigint AND captured ORDER BY param_position",
            &[id],
        )
        .into_iter()
        .map(Some),
    );
    e.phases()
        .into_iter()
        .map(|p| {
            let hash = p.hash();
            let bind = p.parameterized.then(|| params.clone());
            (
                p.name.to_string(),
                p.sql,
                hash,
                p.parameterized,
                p.writes,
                bind,
            )
        })
        .collect()
}

/// The refresh history of a stream table, newest first: when each refresh
/// ran, the mode that actually ran (or ERROR), who started it, rows
/// deleted and inserted, why FULL ran, and the SQLSTATE and message of a
/// failure, and `refresh_id`, which grows with every refresh recorded (so
/// a reader can ask what ran after a point it noted, even after old rows
/// were pruned). For its owner (and monitors), since 0.39.1; `refresh_id`
/// since 0.39.2.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn refresh_history(
    name: &str,
) -> TableIterator<
    'static,
    (
        name!(started_at, String),
        name!(finished_at, String),
        name!(mode, String),
        name!(initiated_by, String),
        name!(rows_deleted, Option<i64>),
        name!(rows_inserted, Option<i64>),
        name!(reason, Option<String>),
        name!(error_sqlstate, Option<String>),
        name!(error_message, Option<String>),
        name!(refresh_id, i64),
    ),
> {
    let me = security::caller();
    let st = resolve(name);
    let out: Vec<_> = as_extension(|| {
        st.require_reader(me);
        rows(
            "SELECT started_at::text, finished_at::text, mode, initiated_by, rows_deleted::text, \
             rows_inserted::text, reason, error_sqlstate, error_message, id::text \
             FROM pgtrickle.pgt_refresh_history WHERE st_id = $1::text::bigint ORDER BY id DESC",
            &[Some(st.id.to_string())],
        )
    })
    .into_iter()
    .map(|r| {
        let num = |v: &Option<String>| v.as_deref().and_then(|x| x.parse().ok());
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
            r[2].clone().unwrap_or_default(),
            r[3].clone().unwrap_or_default(),
            num(&r[4]),
            num(&r[5]),
            r[6].clone(),
            r[7].clone(),
            r[8].clone(),
            num(&r[9]).unwrap_or_default(),
        )
    })
    .collect();
    TableIterator::new(out)
}
