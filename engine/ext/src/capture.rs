//! Trigger change capture into durable change buffers.
//!
//! Each captured source gets one buffer table `pgtrickle_changes.changes_<oid>`
//! shared by every stream table that reads it: a change id from a sequence
//! (no hot counter row), the writing transaction's top-level xid, the
//! operation, and the old and new row images as typed columns. An AFTER row
//! trigger (`pgtrickle._capture_row`, see `capture_row`) writes one buffer
//! row per changed row; an AFTER TRUNCATE trigger
//! marks dependent stream tables for reinitialisation. Writers never take a
//! table-level lock on the buffer. The triggers themselves, on the source
//! and on its partitions or inheritance children, are set by `triggers`.

use pg_trickle_core::backpressure::Lag;
use pg_trickle_core::catalog::SourceTable;

use crate::catalog::{change_buffers, sources};
use crate::spi::{qi, raise, row, rows, run, value};

/// Column names and storage types of a source, in attribute order.
fn source_columns(oid: u32) -> Vec<(String, String)> {
    source_columns_with_collation(oid)
        .into_iter()
        .map(|(n, t, _)| (n, t))
        .collect()
}

/// Column names, storage types and, where the column's collation is not
/// its type's default, a `COLLATE` clause: the buffer's columns compare
/// (in joins and grouping) as the source's do.
fn source_columns_with_collation(oid: u32) -> Vec<(String, String, String)> {
    rows(
        "SELECT a.attname::text, CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) \
         ELSE format_type(a.atttypid, a.atttypmod) END, \
         CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
              THEN ' COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(c.collname) ELSE '' END \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_collation c ON c.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = c.collnamespace \
         WHERE a.attrelid = $1::text::oid AND a.attnum > 0 AND NOT a.attisdropped \
         AND left(a.attname, 6) <> '__pgt_' ORDER BY a.attnum",
        &[Some(oid.to_string())],
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
            r[2].clone().unwrap_or_default(),
        )
    })
    .collect()
}

/// The names of a source's columns, as its change buffer holds them
/// (`__o<k>`/`__n<k>` is the k-th).
pub fn buffer_columns(oid: u32) -> Vec<String> {
    source_columns(oid).into_iter().map(|(n, _)| n).collect()
}

/// The `name type` list a buffer is built for, compared to detect column changes.
fn column_signature(cols: &[(String, String)]) -> Vec<String> {
    cols.iter().map(|(n, t)| format!("{n} {t}")).collect()
}

/// Make sure `source` has a change buffer and capture triggers whose columns
/// match what the core planned against.
pub fn ensure_capture(source: &SourceTable) {
    let existing = change_buffers::recorded_columns(source.oid);
    let cols = source_columns(source.oid);
    let names = column_signature(&cols);
    if let Some(existing) = existing {
        if existing != names.join(",") {
            raise(
                "55000",
                format!(
                    "the change buffer of {} was created for columns ({existing}), but the table now has ({})",
                    source.qualified(),
                    names.join(",")
                ),
                Some("Drop and re-create the stream tables that read this table.".into()),
            );
        }
        return;
    }
    let oid = source.oid;
    let buffer = source.buffer_table();
    let mut defs = vec![
        // Each draw of the sequence numbers a block of captured rows (see
        // `pg_trickle_core::change_ids`).
        format!(
            "change_id bigint GENERATED ALWAYS AS IDENTITY (INCREMENT BY {})",
            pg_trickle_core::change_ids::BLOCK
        ),
        "xid xid8 NOT NULL DEFAULT pg_current_xact_id()".to_string(),
        "op \"char\" NOT NULL".to_string(),
        "captured_at timestamptz NOT NULL DEFAULT now()".to_string(),
    ];
    let collated = source_columns_with_collation(source.oid);
    for (k, (_, ty, coll)) in collated.iter().enumerate() {
        defs.push(format!("__o{} {ty}{coll}", k + 1));
    }
    for (k, (_, ty, coll)) in collated.iter().enumerate() {
        defs.push(format!("__n{} {ty}{coll}", k + 1));
    }
    // Last, where an upgrade adds it to older buffers too: WAL and remote
    // capture write rows as composite literals in this column order.
    defs.push(TRACEPARENT_COLUMN.to_string());
    // A heap table whatever default_table_access_method says: capture
    // writes its heap directly (see `capture_row`).
    run(
        &format!("CREATE TABLE {buffer} ({}) USING heap", defs.join(", ")),
        &[],
    );
    run(&format!("REVOKE ALL ON {buffer} FROM PUBLIC"), &[]);
    change_buffers::insert(oid, &buffer, &names);
    crate::triggers::install_on_source(oid, source.kind);
    crate::triggers::sync_members(oid);
}

/// The buffer column that keeps the writing session's trace context
/// (`pg_trickle.traceparent`, checked when it was set), filled by its
/// default so that the capture functions stay as they are. NULL when the
/// session set none.
const TRACEPARENT_COLUMN: &str = "traceparent text DEFAULT \
     NULLIF(pg_catalog.current_setting('pg_trickle.traceparent', true), '')";

/// Bring every existing capture up to this version: regenerate each
/// capture function (a 0.39.0 one resolved its operators through the
/// writer's search_path with definer rights), and give the buffers and
/// functions to the extension owner with no rights for anyone else. Run
/// by `regenerate::_regenerate`, as the extension owner. Returns how many
/// sources were brought up to date, and those found with partitions or
/// inheritance children (whose changes versions before 0.40.0 could miss).
pub fn regenerate_all() -> (i64, Vec<u32>) {
    let owner = crate::security::extension_owner()
        .map(crate::security::role_name)
        .unwrap_or_else(|| {
            raise(
                "55000",
                "pg_trickle is not installed in this database",
                None,
            )
        });
    let captured = change_buffers::all_sources();
    let mut done = 0;
    let mut with_members = Vec::new();
    for oid in &captured {
        let recorded = change_buffers::recorded_columns(*oid).unwrap_or_default();
        let cols = source_columns(*oid);
        if recorded != column_signature(&cols).join(",") {
            // The table changed since its buffer was made: 0.39.0 would have
            // rebuilt it on that ALTER, so this only happens to a source that
            // is gone; its buffer goes with the next drop.
            pgrx::warning!(
                "pg_trickle: the change buffer of source {oid} no longer matches its table; its capture function is left as it was"
            );
            continue;
        }
        let buffer = format!("pgtrickle_changes.changes_{oid}");
        // Buffers made before 0.40.0 gain the trace context column.
        run(
            &format!("ALTER TABLE {buffer} ADD COLUMN IF NOT EXISTS {TRACEPARENT_COLUMN}"),
            &[],
        );
        // Buffers made before 0.40.0 drew one change id per captured row.
        run(
            &format!(
                "ALTER TABLE {buffer} ALTER COLUMN change_id SET INCREMENT BY {}",
                pg_trickle_core::change_ids::BLOCK
            ),
            &[],
        );
        run(
            &format!("ALTER TABLE {buffer} OWNER TO {}", qi(&owner)),
            &[],
        );
        run(&format!("REVOKE ALL ON {buffer} FROM PUBLIC"), &[]);
        // The triggers as this version sets them, on the source and on
        // every partition or inheritance child.
        if let Some(source) = crate::sources::source_by_oid(*oid) {
            crate::triggers::drop_on_source(*oid);
            // Versions before 0.40.0 captured through a PL/pgSQL function
            // per source; the triggers now share `pgtrickle._capture_row`.
            drop_old_capture_function(*oid);
            crate::triggers::install_on_source(*oid, source.kind);
            if !crate::triggers::sync_members(*oid).added.is_empty() {
                with_members.push(*oid);
            }
        }
        done += 1;
    }
    (done, with_members)
}

/// Drop a source's buffer and triggers once no stream table captures it.
pub fn drop_capture_if_unused(source_relid: u32) {
    if !sources::captured_by_any(source_relid) {
        drop_capture(source_relid);
    }
}

/// Whether the source's current columns differ from those its buffer was built for.
pub fn columns_changed(source_relid: u32) -> bool {
    let recorded = change_buffers::recorded_columns(source_relid);
    let current = column_signature(&source_columns(source_relid));
    recorded.is_some_and(|r| r != current.join(","))
}

/// Drop a source's buffer, trigger function and triggers unconditionally.
pub fn drop_capture(source_relid: u32) {
    // Its slots (capture from the WAL, here and on other nodes) and read
    // function go first.
    crate::wal_capture::drop_wal_capture(source_relid);
    crate::remote_capture::drop_for(source_relid);
    // Member triggers are found through the recorded members, before the row goes.
    crate::triggers::drop_members(source_relid);
    let Some(buffer) = change_buffers::delete(source_relid) else {
        return;
    };
    // The source may already be gone (DROP ... CASCADE of both).
    crate::triggers::drop_on_source(source_relid);
    run(&format!("DROP TABLE IF EXISTS {buffer}"), &[]);
    // A source whose capture the upgrade to 0.40.0 left alone (its table
    // no longer matched its buffer) may still have its old function.
    drop_old_capture_function(source_relid);
}

/// Drop the PL/pgSQL capture function versions before 0.40.0 made for
/// source `oid` (`pgtrickle_changes.capture_<oid>`), once no trigger uses it.
fn drop_old_capture_function(oid: u32) {
    run(
        &format!("DROP FUNCTION IF EXISTS pgtrickle_changes.capture_{oid}()"),
        &[],
    );
}

/// Delete buffered changes every consumer has already consumed.
pub fn prune(source_relid: u32) {
    let buffer = format!("pgtrickle_changes.changes_{source_relid}");
    // A statement on the source's own buffer table (generated per source);
    // it names the catalog only to read each consumer's position.
    // While a reader has snapshots, the pruned transactions one of them
    // may not have seen (at or above its frontier's xmin) are recorded: a
    // restore that needs them is refused (see `snapshot`). Older records
    // no snapshot can need go, in the same statement: the records deleted
    // (below the horizon, or all without one) and those inserted (at or
    // above it) are never the same rows.
    let horizon = "(SELECT min(pg_snapshot_xmin(sn.frontier)) FROM pgtrickle.pgt_snapshots sn \
                   JOIN pgtrickle.pgt_sources s ON s.st_id = sn.st_id \
                   WHERE s.source_relid = $1::text::oid AND s.captured)";
    run(
        &format!(
            "WITH pruned AS (DELETE FROM {buffer} b WHERE NOT EXISTS (\
             SELECT 1 FROM pgtrickle.pgt_sources s JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id \
             WHERE s.source_relid = $1::text::oid AND s.captured AND NOT coalesce(\
               CASE WHEN b.xid = st.frontier_xid THEN b.change_id <= s.own_change_id \
                    ELSE pg_visible_in_snapshot(b.xid, st.frontier) END, false)) RETURNING b.xid), \
             horizon AS (SELECT {horizon} AS h), \
             forgotten AS (DELETE FROM pgtrickle.pgt_pruned_xids x WHERE x.source_relid = $1::text::oid \
             AND (x.xid < (SELECT h FROM horizon) OR (SELECT h FROM horizon) IS NULL) RETURNING 1) \
             INSERT INTO pgtrickle.pgt_pruned_xids (source_relid, xid) \
             SELECT DISTINCT $1::text::oid, p.xid FROM pruned p WHERE p.xid >= (SELECT h FROM horizon) \
             ON CONFLICT DO NOTHING"
        ),
        &[Some(source_relid.to_string())],
    );
}

/// `FROM ... WHERE ...` of the rows in `source_relid`'s buffer (alias `b`)
/// that stream table `$1` has not consumed yet (`$2` is the source).
fn unconsumed(source_relid: u32) -> String {
    unconsumed_in(&format!("pgtrickle_changes.changes_{source_relid}"))
}

/// `FROM ... WHERE ...` of the rows of `changes` (a source's changes,
/// alias `b`) that stream table `$1` has not consumed yet (`$2` is the
/// source).
fn unconsumed_in(changes: &str) -> String {
    // Generated into the statements below, per source buffer.
    format!(
        "FROM {changes} b, pgtrickle.pgt_stream_tables st, pgtrickle.pgt_sources s \
         WHERE st.id = $1::text::bigint AND s.st_id = st.id AND s.source_relid = $2::text::oid \
         AND NOT coalesce(CASE WHEN b.xid = st.frontier_xid THEN b.change_id <= s.own_change_id \
              ELSE pg_visible_in_snapshot(b.xid, st.frontier) END, false)"
    )
}

/// What stream table `st_id` is about to consume from `source_relid`'s
/// buffer, for the refresh's span: the change rows, how many distinct
/// trace contexts they carry, and the first few of those (earliest change
/// first), in one pass over the unconsumed rows. Read only while exporting
/// is on. Telemetry never fails a refresh: a buffer this version has not
/// brought up to date yet (no `traceparent` column before `ALTER
/// EXTENSION ... UPDATE`) reads as nothing; any other error goes on.
pub fn consumed_trace_context(st_id: i64, source_relid: u32) -> TraceContexts {
    let from = unconsumed(source_relid);
    let sql = format!(
        "SELECT g.total::text, g.traces::text, g.tp FROM (\
           SELECT b.traceparent AS tp, min(b.change_id) AS first, \
                  sum(count(*)) OVER () AS total, count(b.traceparent) OVER () AS traces \
           {from} GROUP BY b.traceparent) g \
         ORDER BY g.tp IS NULL, g.first LIMIT {}",
        pg_trickle_core::telemetry::span::MAX_LINKS + 1
    );
    let args = [Some(st_id.to_string()), Some(source_relid.to_string())];
    let read = crate::spi::in_rolled_back_subtransaction(|| rows(&sql, &args));
    let found = match read {
        Ok(found) => found,
        Err(f) if f.sqlstate == "42703" => Vec::new(),
        Err(f) => raise(&f.sqlstate, f.message, None),
    };
    let Some(first) = found.first() else {
        return TraceContexts::default();
    };
    TraceContexts {
        rows: crate::spi::number_at(first, 0) as i64,
        distinct: crate::spi::number_at(first, 1) as i64,
        first: found.iter().filter_map(|r| r[2].clone()).collect(),
    }
}

/// The trace contexts a refresh consumes from one source.
#[derive(Debug, Clone, Default)]
pub struct TraceContexts {
    /// Change rows.
    pub rows: i64,
    /// Distinct trace contexts among them.
    pub distinct: i64,
    /// The first few, earliest change first.
    pub first: Vec<String>,
}

/// The backlog `st_id` has on `source_relid`: rows it has not consumed,
/// their bytes, and the age of the oldest.
pub fn lag_for(st_id: i64, source_relid: u32) -> Lag {
    let r = row(
        &format!(
            "SELECT count(*)::text, coalesce(sum(pg_column_size(b.*)), 0)::text, \
             coalesce(extract(epoch FROM clock_timestamp() - min(b.captured_at)), 0)::text {}",
            unconsumed(source_relid)
        ),
        &[Some(st_id.to_string()), Some(source_relid.to_string())],
    )
    .unwrap_or_default();
    let num = |i| crate::spi::number_at(&r, i);
    Lag {
        rows: num(0) as i64,
        bytes: num(1) as i64,
        age_seconds: num(2),
    }
}

/// The sources among `relids` on which `st_id` has anything left to
/// consume: what a refresh specialises its statement to, and the
/// scheduler's idle check when there are none.
pub fn pending_sources(
    st_id: i64,
    relids: impl IntoIterator<Item = u32>,
    token: Option<&str>,
) -> Vec<u32> {
    pending_counts(st_id, relids, token, 1)
        .into_iter()
        .filter(|c| c.changes > 0)
        .map(|c| c.relid)
        .collect()
}

/// What [`pending_counts`] found on one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCount {
    /// The source.
    pub relid: u32,
    /// Changes counted, at most the limit.
    pub changes: u64,
    /// Whether `changes` is all there is: below the limit, and nothing
    /// left uncounted (changes of a WAL-captured source not decoded yet).
    pub exact: bool,
}

/// How many changes `st_id` has left to consume on each of `relids`,
/// counting at most `limit` per source (so 1 only says whether there are
/// any, stopping at the first row). A source captured from the WAL also
/// has changes that committed but are not decoded yet, read with the
/// refresh's `token`: with a limit above 1 only what its buffer holds is
/// counted, and the count is not exact.
pub fn pending_counts(
    st_id: i64,
    relids: impl IntoIterator<Item = u32>,
    token: Option<&str>,
    limit: u64,
) -> Vec<PendingCount> {
    let limit = limit.max(1);
    relids
        .into_iter()
        .map(|relid| {
            let (changes, all) = count_pending(st_id, relid, token, limit);
            PendingCount {
                relid,
                changes,
                exact: all && changes < limit,
            }
        })
        .collect()
}

/// The count, and whether it covers every kind of pending change.
fn count_pending(st_id: i64, source_relid: u32, token: Option<&str>, limit: u64) -> (u64, bool) {
    let wal = token.is_some() && crate::catalog::wal_capture::of(source_relid).is_some();
    if wal && limit > 1 {
        // What is not decoded yet would be decoded here and again by the
        // refresh statement: count what the buffer holds (the scheduler
        // drains the slot into it), and check for the rest only when the
        // buffer holds nothing. Either way more may be waiting.
        let drained = count_from(&unconsumed(source_relid), st_id, source_relid, None, limit);
        if drained > 0 {
            return (drained, false);
        }
        let (any, _) = count_pending(st_id, source_relid, token, 1);
        return (any, any == 0);
    }
    let from = if wal {
        // The token is the third parameter of the statement below.
        unconsumed_in(&pg_trickle_core::catalog::wal_changes_relation(
            source_relid,
            3,
        ))
    } else {
        unconsumed(source_relid)
    };
    (count_from(&from, st_id, source_relid, token, limit), true)
}

/// The rows `from` (an [`unconsumed_in`] clause) yields, counted up to `limit`.
fn count_from(from: &str, st_id: i64, source_relid: u32, token: Option<&str>, limit: u64) -> u64 {
    value(
        &format!("SELECT count(*)::text FROM (SELECT 1 {from} LIMIT $4::text::bigint) p"),
        &[
            Some(st_id.to_string()),
            Some(source_relid.to_string()),
            token.map(str::to_string),
            Some(limit.min(i64::MAX as u64).to_string()),
        ],
    )
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}
