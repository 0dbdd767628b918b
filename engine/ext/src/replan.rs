//! Re-planning a stream table after its definition's world changed (a
//! refresh mode change, an altered source, row-level security appearing, an
//! upgrade): analyse the query again, store the new statements and sources,
//! and mark the stream table for reinitialisation. Also records a stream
//! table's sources and their capture ([`record_sources`]), which creation
//! shares.

use pg_trickle_core::ir::{Mode, RequestedMode};

use crate::capture;
use crate::catalog::stream_tables::{self, Definition};
use crate::catalog::{owner_of, sources};
use crate::planning::{self, Planned};
use crate::spi::{in_subtransaction, prepare_only, raise};

pub(crate) fn parse_mode(mode: &str) -> RequestedMode {
    RequestedMode::parse(mode).unwrap_or_else(|e| raise(e.sqlstate(), e.to_string(), None))
}

/// Write the catalog rows for a planned stream table's sources and set up capture.
pub(crate) fn record_sources(id: i64, planned: &Planned) {
    let before = sources::delete_of(id);
    let diff = planned.effective_mode == Mode::Differential;
    for (i, src) in planned.analysis.sources.iter().enumerate() {
        let position = planned.plan.diff_sources.iter().position(|s| *s == i);
        let captured = diff && position.is_some();
        if captured {
            capture::ensure_capture(src);
        }
        let param = position.and_then(|p| i32::try_from(p + 3).ok());
        sources::insert(id, src, param, captured);
    }
    let Definition {
        relid: storage,
        query,
        ..
    } = stream_tables::definition(id).unwrap_or_default();
    let now = planning::relations_read(&query, &owner_of(id));
    crate::depend::set(storage, &now, &before);
}

/// Plan stream table `id` again from its defining query (with `requested`,
/// or the mode recorded), rewrite its SQL, sources and capture, and mark it
/// for reinitialisation so its next refresh is FULL. Runs as the extension;
/// the query itself is checked and planned as its owner.
pub fn replan(id: i64, requested: Option<RequestedMode>, reason: &str) {
    let Some(Definition {
        name,
        query,
        requested_mode,
        relid,
        ..
    }) = stream_tables::definition(id)
    else {
        return;
    };
    let requested = requested.or(requested_mode).unwrap_or(RequestedMode::Auto);
    let owner = owner_of(id);
    // The name as the refresh statements print it under the recorded path.
    let storage = owner
        .resolve_names(|| crate::spi::relation_name(relid))
        .unwrap_or_default();
    // The defining query must still work over the current sources.
    let check = query.clone();
    let as_owner = owner.clone();
    if let Err(f) = in_subtransaction(move || as_owner.run(|| prepare_only(&check, 0))) {
        // A lock timeout, a deadlock or a cancel says nothing about the query.
        f.reraise_if_transient();
        raise(
            &f.sqlstate,
            format!(
                "the defining query of stream table {} no longer works after {reason}: {}",
                name, f.message
            ),
            Some("Drop the stream table first, or keep what its query uses.".into()),
        );
    }
    // Its next refresh is FULL: the time to add support columns a stream
    // table created before 0.40.0 lacks.
    let planned =
        planning::plan_adding_support(&storage, &query, requested, relid, &storage, &owner);
    let old_sources = sources::captured_of(id);
    stream_tables::store_replan(id, requested, &planned.stored(), reason);
    record_sources(id, &planned);
    for relid in old_sources {
        capture::drop_capture_if_unused(relid);
    }
}
