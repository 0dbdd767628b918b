//! `pgt_snapshots`: the archival copies of stream tables, with what a
//! restore needs to make the next refresh DIFFERENTIAL over only later
//! changes: the frontier, its transaction, the change ids that
//! transaction had consumed per source, the plan and the reinitialisation
//! generation at the time.

use super::{arg, decoded_row};
use crate::spi::{run, value};

/// A snapshot as recorded.
pub struct Snapshot {
    /// The stream table it was taken of.
    pub st_id: i64,
    /// Its frontier (`pg_snapshot` text).
    pub frontier: String,
    /// The transaction that took that frontier.
    pub frontier_xid: Option<String>,
    /// Per captured source, the change id its transaction had consumed
    /// (`{"<oid>": <id>, ...}`).
    pub own_change_ids: serde_json::Value,
    /// The plan the stream table was maintained by.
    pub plan_fingerprint: Option<String>,
    /// How many times it had been reinitialised.
    pub reinit_generation: i64,
}

/// Record snapshot table `snapshot` of stream table `st_id`, taken now:
/// the stream table's frontier and generation, and its sources' consumed
/// change ids, as they are in this transaction.
pub fn insert(snapshot: u32, st_id: i64) {
    run(
        "INSERT INTO pgtrickle.pgt_snapshots (snapshot_relid, st_id, frontier, frontier_xid, own_change_ids, \
         plan_fingerprint, reinit_generation) \
         SELECT $1::text::oid, st.id, st.frontier, st.frontier_xid, \
           coalesce((SELECT jsonb_object_agg(s.source_relid::text, s.own_change_id) FROM pgtrickle.pgt_sources s \
                     WHERE s.st_id = st.id AND s.captured), '{}'::jsonb), \
           st.plan_fingerprint, st.reinit_generation \
         FROM pgtrickle.pgt_stream_tables st WHERE st.id = $2::text::bigint",
        &[arg(snapshot), arg(st_id)],
    );
}

/// The snapshot recorded for table `snapshot`, if it is one.
pub fn of(snapshot: u32) -> Option<Snapshot> {
    let r = decoded_row(
        "SELECT st_id::text, frontier::text, frontier_xid::text, own_change_ids::text, plan_fingerprint, \
         reinit_generation::text FROM pgtrickle.pgt_snapshots WHERE snapshot_relid = $1::text::oid",
        &[arg(snapshot)],
    )?;
    Some(Snapshot {
        st_id: r.num(0),
        frontier: r.text(1),
        frontier_xid: r.opt(2),
        own_change_ids: serde_json::from_str(&r.text(3)).unwrap_or_default(),
        plan_fingerprint: r.opt(4),
        reinit_generation: r.num(5),
    })
}

/// The stream table's current plan fingerprint and reinitialisation
/// generation, as a restore compares them.
pub fn current_plan_and_generation(st_id: i64) -> (Option<String>, i64) {
    let r = decoded_row(
        "SELECT plan_fingerprint, reinit_generation::text FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[arg(st_id)],
    );
    r.map(|r| (r.opt(0), r.num(1))).unwrap_or((None, -1))
}

/// The first (by name) captured source of `st_id` whose buffer has lost,
/// to pruning, a change that a stream table at snapshot `s`'s frontier
/// had not consumed: a pruned transaction the frontier does not see (its
/// own transaction's counts, whose later changes it did not consume).
pub fn pruned_source_after(st_id: i64, s: &Snapshot) -> Option<String> {
    value(
        "SELECT x.source_relid::regclass::text FROM pgtrickle.pgt_pruned_xids x \
         JOIN pgtrickle.pgt_sources s ON s.source_relid = x.source_relid \
         WHERE s.st_id = $1::text::bigint AND s.captured \
         AND (NOT pg_visible_in_snapshot(x.xid, $2::pg_snapshot) OR x.xid = $3::xid8) ORDER BY 1 LIMIT 1",
        &[arg(st_id), arg(&s.frontier), s.frontier_xid.clone()],
    )
}

/// Give stream table `st_id` the snapshot's frontier and, per source, the
/// change ids its transaction had consumed.
pub fn restore_frontier(st_id: i64, s: &Snapshot) {
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET frontier = $2::pg_snapshot, frontier_xid = $3::xid8 \
         WHERE id = $1::text::bigint",
        &[arg(st_id), arg(&s.frontier), s.frontier_xid.clone()],
    );
    run(
        "UPDATE pgtrickle.pgt_sources s SET own_change_id = coalesce(($2::jsonb ->> s.source_relid::text)::bigint, 0) \
         WHERE s.st_id = $1::text::bigint AND s.captured",
        &[arg(st_id), arg(&s.own_change_ids)],
    );
}
