//! Re-planning a stream table after its definition's world changed (a
//! refresh mode change, an altered source, row-level security appearing, an
//! upgrade): analyse the query again, store the new statements and sources,
//! and mark the stream table for reinitialisation. Also records a stream
//! table's sources and their capture ([`record_sources`]), which creation
//! shares.

use pg_trickle_core::ir::{Mode, RequestedMode};

use crate::capture;
use crate::catalog::{owner_of, StreamTableRef};
use crate::planning::{self, Planned};
use crate::spi::{first_column, in_subtransaction, prepare_only, raise, row, run, value};

pub(crate) fn parse_mode(mode: &str) -> RequestedMode {
    RequestedMode::parse(mode).unwrap_or_else(|e| raise(e.sqlstate(), e.to_string(), None))
}

/// Write the catalog rows for a planned stream table's sources and set up capture.
pub(crate) fn record_sources(id: i64, planned: &Planned) {
    let before: Vec<u32> = first_column(
        "DELETE FROM pgtrickle.pgt_sources WHERE st_id = $1::text::bigint RETURNING source_relid::text",
        &[Some(id.to_string())],
    );
    let diff = planned.effective_mode == Mode::Differential;
    for (i, src) in planned.analysis.sources.iter().enumerate() {
        let position = planned.plan.diff_sources.iter().position(|s| *s == i);
        let captured = diff && position.is_some();
        if captured {
            capture::ensure_capture(src);
        }
        run(
            "INSERT INTO pgtrickle.pgt_sources (st_id, source_relid, source_name, param_position, captured) \
             VALUES ($1::text::bigint, $2::text::oid, $3, $4::int, $5::boolean)",
            &[
                Some(id.to_string()),
                Some(src.oid.to_string()),
                Some(src.qualified()),
                position.map(|p| (p + 3).to_string()),
                Some(captured.to_string()),
            ],
        );
    }
    let storage: u32 = value(
        "SELECT relid::text FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[Some(id.to_string())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(0);
    let query = value(
        "SELECT query FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[Some(id.to_string())],
    )
    .unwrap_or_default();
    let now = planning::relations_read(&query, &owner_of(id));
    crate::depend::set(storage, &now, &before);
}

/// Plan stream table `id` again from its defining query (with `requested`,
/// or the mode recorded), rewrite its SQL, sources and capture, and mark it
/// for reinitialisation so its next refresh is FULL. Runs as the extension;
/// the query itself is checked and planned as its owner.
pub fn replan(id: i64, requested: Option<RequestedMode>, reason: &str) {
    let Some(r) = row(
        "SELECT query, requested_mode, relid::text, search_path, name FROM pgtrickle.pgt_stream_tables \
         WHERE id = $1::text::bigint",
        &[Some(id.to_string())],
    ) else {
        return;
    };
    replan_with(id, requested, reason, r)
}

fn replan_with(id: i64, requested: Option<RequestedMode>, reason: &str, r: Vec<Option<String>>) {
    let query = r[0].clone().unwrap_or_default();
    let requested = requested.unwrap_or_else(|| parse_mode(r[1].as_deref().unwrap_or("AUTO")));
    let relid: u32 = r[2].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let owner = owner_of(id);
    let st = StreamTableRef {
        id,
        relid,
        name: String::new(),
        owner: owner.role,
    };
    // The name as the refresh statements print it under the recorded path.
    let storage = owner.resolve_names(|| st.name_sql());
    // The defining query must still work over the current sources.
    let check = query.clone();
    let as_owner = owner.clone();
    if let Err(f) = in_subtransaction(move || as_owner.run(|| prepare_only(&check, 0))) {
        raise(
            &f.sqlstate,
            format!(
                "the defining query of stream table {} no longer works after {reason}: {}",
                r[4].clone().unwrap_or_default(),
                f.message
            ),
            Some("Drop the stream table first, or keep what its query uses.".into()),
        );
    }
    let planned = planning::plan(&storage, &query, requested, relid, &storage, &owner);
    let old_sources: Vec<u32> = first_column(
        "SELECT source_relid::text FROM pgtrickle.pgt_sources WHERE st_id = $1::text::bigint AND captured",
        &[Some(id.to_string())],
    );
    crate::catalog::stream_tables::store_replan(id, requested, &planned, reason);
    record_sources(id, &planned);
    for relid in old_sources {
        capture::drop_capture_if_unused(relid);
    }
}
