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
use pg_trickle_core::ir::{Mode, RequestedMode};
use pg_trickle_core::OpNode;

use crate::capture;
use crate::catalog::{change_buffers, history, owner_of, resolve, sources, stream_tables};
use crate::security::{self, as_extension, Owner};

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
    let mut out = Vec::new();
    for st in stream_tables::status_visible_to(me, all) {
        let mut lag = pg_trickle_core::backpressure::Lag::default();
        let (mut discarding, mut engaged, mut blocked) = (None, None, None);
        for src in change_buffers::capture_of_sources(st.id) {
            let l = capture::lag_for(st.id, src.relid);
            lag.rows += l.rows;
            lag.bytes += l.bytes;
            lag.age_seconds = lag.age_seconds.max(l.age_seconds);
            let name = &src.name;
            if src.discarding && discarding.is_none() {
                discarding = Some(format!(
                    "capture discarded on {name}: {}",
                    src.capture_reason.unwrap_or_default()
                ));
            }
            if src.engaged && engaged.is_none() {
                engaged = Some(format!(
                    "{name}: {}",
                    src.backpressure_reason.unwrap_or_default()
                ));
            }
            if let (Some(b), None) = (&src.write_block, &blocked) {
                blocked = Some(format!("{name}: {b}"));
            }
        }
        let (cdc_state, cdc_reason) = match (&discarding, st.held) {
            (Some(d), _) => ("discarding", Some(d.clone())),
            (None, true) => ("holding", st.held_because),
            (None, false) => ("capturing", None),
        };
        let (bp, bp_reason) = match (blocked, engaged) {
            (Some(b), _) => ("writes blocked", Some(b)),
            (None, Some(e)) => ("engaged", Some(e)),
            (None, None) => ("released", None),
        };
        out.push((
            st.name,
            st.requested_mode
                .map(RequestedMode::name)
                .unwrap_or_default()
                .to_string(),
            st.effective_mode
                .map(Mode::name)
                .unwrap_or_default()
                .to_string(),
            st.schedule,
            st.last_refresh_at,
            st.last_refresh_mode,
            lag.rows,
            st.needs_reinit,
            st.reinit_reason,
            st.fallback_reason,
            st.last_error_sqlstate,
            st.last_error_message,
            st.frontier,
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
    requested: Option<RequestedMode>,
    effective: Option<Mode>,
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
    let definition = stream_tables::definition(st.id).unwrap_or_default();
    let owner = owner_of(st.id);
    // Names in the defining query resolve as they did at creation.
    let analysis = crate::planning::analyze_query(&definition.query, &owner, Some(st.relid));
    Explained {
        st,
        query: definition.query,
        requested: definition.requested_mode,
        effective: definition.effective_mode,
        fallback_reason: definition.fallback_reason,
        analysis,
        storage: definition.name,
        owner,
    }
}

impl Explained {
    /// The mode asked for, as the catalog spells it.
    fn requested_name(&self) -> &'static str {
        self.requested.map(RequestedMode::name).unwrap_or_default()
    }

    /// The mode the engine chose, as the catalog spells it.
    fn effective_name(&self) -> &'static str {
        self.effective.map(Mode::name).unwrap_or_default()
    }

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
        if self.effective != Some(Mode::Full) {
            // What the next refresh would run: specialised to the sources
            // with changes to consume now.
            if let Some(fingerprint) = stream_tables::differential_fingerprint(self.st.id) {
                let target = crate::specialise::Target {
                    id: self.st.id,
                    fingerprint: Some(&fingerprint),
                    query: &self.query,
                    owner: &self.owner,
                    relid: self.st.relid,
                    storage: &self.storage,
                };
                let pending = capture::pending_sources(
                    self.st.id,
                    analysis.sources.iter().map(|s| s.oid),
                    None,
                );
                if let Some(s) = crate::specialise::specialised(&target, &pending) {
                    return s.phases;
                }
            }
        }
        let columns = crate::planning::storage_columns(self.st.relid);
        let mut phases = plan_refresh(analysis, &self.query, &self.storage, &columns).phases;
        if self.effective == Some(Mode::Full) {
            // A FULL stream table never runs its differential phases.
            phases.retain(|p| !p.parameterized);
        }
        phases
    }

    fn json(&self) -> serde_json::Value {
        let sources: Vec<serde_json::Value> = sources::listed_of(self.st.id)
            .into_iter()
            .map(|s| serde_json::json!({ "relation": s.relation, "captured": s.captured }))
            .collect();
        let stored = stream_tables::stored_sql(self.st.id);
        let phases: Vec<serde_json::Value> = self
            .phases()
            .iter()
            .map(|p| serde_json::json!({ "phase": p.name, "hash": p.hash(), "writes": p.writes }))
            .collect();
        serde_json::json!({
            "name": self.st.name,
            "query": self.query,
            "requested_mode": self.requested_name(),
            "effective_mode": self.effective_name(),
            "fallback_reason": self.fallback_reason,
            "sources": sources,
            "operator_tree": serde_json::to_value(self.tree()).unwrap_or(serde_json::Value::Null),
            "sql": { "differential": stored.differential, "full": stored.full },
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
            requested: e.requested_name(),
            effective: e.effective_name(),
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
    let mut params: Vec<Option<String>> = stream_tables::frontier(e.st.id)
        .map(|f| vec![f.snapshot, f.xid])
        .unwrap_or_default();
    params.extend(
        sources::captured_in_param_order(e.st.id)
            .into_iter()
            .map(|s| Some(s.own_change_id.to_string())),
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
/// since 0.40.0.
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
        history::of(st.id)
    })
    .into_iter()
    .map(|h| {
        (
            h.started_at,
            h.finished_at,
            h.mode,
            h.initiated_by,
            h.rows_deleted,
            h.rows_inserted,
            h.reason,
            h.error_sqlstate,
            h.error_message,
            h.refresh_id,
        )
    })
    .collect();
    TableIterator::new(out)
}
