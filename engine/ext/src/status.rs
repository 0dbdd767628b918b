//! What operators look at: `stream_table_status()` and `explain_stream_table()`.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::api::resolve;
use crate::capture;
use crate::util::{first_column, row, rows};

/// One row per stream table: modes, schedule, last refresh, pending changes,
/// reinitialisation state and the last error.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn stream_table_status() -> TableIterator<
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
    ),
> {
    let sts = rows(
        "SELECT id::text, name, requested_mode, effective_mode, schedule, last_refresh_at::text, \
         last_refresh_mode, needs_reinit::text, reinit_reason, fallback_reason, last_error_sqlstate, \
         last_error_message, frontier::text FROM pgtrickle.pgt_stream_tables ORDER BY name",
        &[],
    );
    let mut out = Vec::new();
    for r in sts {
        let id: i64 = r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
        let pending: i64 = first_column::<u32>(
            "SELECT source_relid::text FROM pgtrickle.pgt_sources WHERE st_id = $1::text::bigint AND captured",
            &[Some(id.to_string())],
        )
        .into_iter()
        .map(|relid| capture::pending_for(id, relid))
        .sum();
        out.push((
            r[1].clone().unwrap_or_default(),
            r[2].clone().unwrap_or_default(),
            r[3].clone().unwrap_or_default(),
            r[4].clone(),
            r[5].clone(),
            r[6].clone(),
            pending,
            r[7].as_deref() == Some("true"),
            r[8].clone(),
            r[9].clone(),
            r[10].clone(),
            r[11].clone(),
            r[12].clone(),
        ));
    }
    TableIterator::new(out)
}

/// The operator tree, chosen mode, FULL reason and generated SQL of a stream table.
#[pg_extern]
fn explain_stream_table(name: &str) -> JsonB {
    let st = resolve(name);
    let r = row(
        "SELECT query, requested_mode, effective_mode, fallback_reason, diff_sql, full_sql, search_path \
         FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[Some(st.id.to_string())],
    )
    .unwrap_or_default();
    let query = r[0].clone().unwrap_or_default();
    let search_path = r[6].clone().unwrap_or_default();
    let analysis = crate::util::with_setting("search_path", &search_path, || {
        crate::planning::analyze_query(&query)
    });
    let tree = match analysis {
        Ok(a) => serde_json::to_value(&a.tree).unwrap_or(serde_json::Value::Null),
        Err(e) => serde_json::json!({ "op": "Query", "diff_supported": false, "reason": e }),
    };
    let sources: Vec<serde_json::Value> = rows(
        "SELECT source_relid::regclass::text, captured::text FROM pgtrickle.pgt_sources \
         WHERE st_id = $1::text::bigint ORDER BY 1",
        &[Some(st.id.to_string())],
    )
    .into_iter()
    .map(|s| serde_json::json!({ "relation": s[0], "captured": s[1].as_deref() == Some("true") }))
    .collect();
    JsonB(serde_json::json!({
        "name": st.name,
        "query": query,
        "requested_mode": r[1],
        "effective_mode": r[2],
        "fallback_reason": r[3],
        "sources": sources,
        "operator_tree": tree,
        "sql": { "differential": r[4], "full": r[5] },
    }))
}
