//! Stream table snapshots: an archival copy of a stream table's rows (every
//! column, the hidden row identity included, in order) in a table of the
//! owner's, with its frontier recorded in `pgt_snapshots`; and the restore,
//! which puts those rows back and realigns the frontier so that the next
//! refresh is DIFFERENTIAL over only the changes after the snapshot.
//!
//! A restore is refused, with the reason, whenever that refresh could not
//! be exact: a change it would need was pruned from a change buffer (a
//! pruned transaction at or above the snapshot frontier's xmin), the
//! stream table was reinitialised since (a TRUNCATE, a discard or a
//! re-plan broke the continuity of its changes), its plan changed, or the
//! snapshot table's columns are not the stream table's.

use pg_trickle_core::snapshot::{copy_rows_sql, default_name, qualified};
use pg_trickle_core::sql::split_qualified_name;
use pgrx::prelude::*;

use crate::catalog::{controlled, lock_for_refresh, owner_of, snapshots, StreamTableRef};
use crate::spi::{first_column, qi, raise, rows, run, value};

/// Every column of relation `relid` (hidden ones included) as
/// `(name, type)`, in attribute order.
fn all_columns(relid: u32) -> Vec<(String, String)> {
    rows(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = $1::text::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        &[Some(relid.to_string())],
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
        )
    })
    .collect()
}

/// The names of `cols`.
fn names(cols: &[(String, String)]) -> Vec<String> {
    cols.iter().map(|(n, _)| n.clone()).collect()
}

/// Copy every row of `from` into `to` with `columns` (see
/// `pg_trickle_core::snapshot`); the number copied.
fn copy_rows(from: &str, to: &str, columns: &[String]) -> i64 {
    first_column(&copy_rows_sql(from, to, columns), &[])
        .into_iter()
        .next()
        .unwrap_or(0)
}

/// The default snapshot name (`<name>_snapshot_<n>`, within 63 bytes) with
/// the first `n` that names no relation in `schema`.
fn default_target(schema: &str, name: &str) -> String {
    for n in 1.. {
        let candidate = default_name(name, n);
        let taken = value(
            "SELECT 1::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[Some(schema.to_string()), Some(candidate.clone())],
        );
        if taken.is_none() {
            return candidate;
        }
    }
    unreachable!("some snapshot number is free")
}

/// The schema and name of the stream table's storage.
fn storage_schema_and_name(relid: u32) -> (String, String) {
    let r = crate::spi::row(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = $1::text::oid",
        &[Some(relid.to_string())],
    )
    .unwrap_or_default();
    (
        r.first().cloned().flatten().unwrap_or_default(),
        r.get(1).cloned().flatten().unwrap_or_default(),
    )
}

/// Copy stream table `name`'s rows and frontier into a new table `target`
/// (any identifier, schema-qualified or not; default
/// `<name>_snapshot_<n>` beside the stream table), created by and for the
/// stream table's owner. Returns the snapshot table's name.
#[pg_extern]
fn snapshot_stream_table(name: &str, target: default!(Option<&str>, "NULL")) -> String {
    let target = target.map(|t| {
        split_qualified_name(t).unwrap_or_else(|| {
            raise(
                "42602",
                format!("invalid snapshot table name \"{t}\""),
                Some("Name it like a table: name, schema.name, or \"Quoted Name\".".into()),
            )
        })
    });
    controlled(name, |st| {
        lock_for_refresh(st.id, false);
        let (st_schema, st_table) = storage_schema_and_name(st.relid);
        let (schema, table) = match target {
            Some((schema, table)) => (schema.unwrap_or_else(|| st_schema.clone()), table),
            None => {
                let t = default_target(&st_schema, &st_table);
                (st_schema.clone(), t)
            }
        };
        let qualified = qualified(&schema, &table);
        let cols = names(&all_columns(st.relid));
        let storage = st.name_sql();
        let owner = owner_of(st.id);
        owner.run(|| {
            run(&format!("CREATE TABLE {qualified} (LIKE {storage})"), &[]);
            copy_rows(&storage, &qualified, &cols);
        });
        let relid: u32 = value(
            "SELECT pg_catalog.to_regclass($1)::oid::text",
            &[Some(qualified.clone())],
        )
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            raise(
                "XX000",
                format!("snapshot table {qualified} was not created"),
                None,
            )
        });
        snapshots::insert(relid, st.id);
        crate::spi::relation_name(relid).unwrap_or(qualified)
    })
}

/// Why snapshot `snap` of stream table `st` cannot be restored exactly,
/// if it cannot.
fn restore_problem(
    st: &StreamTableRef,
    snap: &snapshots::Snapshot,
    snap_relid: u32,
) -> Option<String> {
    let want = all_columns(st.relid);
    let have = all_columns(snap_relid);
    if want != have {
        let show = |c: &[(String, String)]| {
            c.iter()
                .map(|(n, t)| format!("{} {t}", qi(n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Some(format!(
            "its columns ({}) are not the stream table's ({})",
            show(&have),
            show(&want)
        ));
    }
    let (fingerprint, generation) = snapshots::current_plan_and_generation(st.id);
    if fingerprint != snap.plan_fingerprint {
        return Some("the stream table was planned again since (its query, its sources or their capture changed)".into());
    }
    if generation != snap.reinit_generation {
        return Some(
            "the stream table was reinitialised since (a TRUNCATE of a source, discarded capture or a re-plan broke the continuity of its changes)"
                .into(),
        );
    }
    if let Some(source) = snapshots::pruned_source_after(st.id, snap) {
        return Some(format!(
            "changes of source {source} made after the snapshot were pruned from its change buffer once every reader had consumed them"
        ));
    }
    None
}

/// Replace stream table `name`'s rows with those of snapshot table
/// `source` (taken of it by `snapshot_stream_table`) and realign its
/// frontier: the next refresh is DIFFERENTIAL over only the changes made
/// after the snapshot. Refused (55000) when that refresh could not be
/// exact. Returns the rows restored.
#[pg_extern]
fn restore_from_snapshot(name: &str, source: &str) -> i64 {
    let snap_relid = crate::spi::relation_oid_of(source);
    controlled(name, |st| {
        lock_for_refresh(st.id, false);
        let snap_name = crate::spi::relation_name(snap_relid).unwrap_or_else(|| source.to_string());
        let Some(snap) = snapshots::of(snap_relid) else {
            raise(
                "22023",
                format!("{snap_name} is not a snapshot of a stream table"),
                Some("Take one with pgtrickle.snapshot_stream_table(name, target).".into()),
            )
        };
        if snap.st_id != st.id {
            let of = crate::catalog::stream_tables::name_of(snap.st_id).unwrap_or_default();
            raise(
                "22023",
                format!(
                    "{snap_name} is a snapshot of stream table {of}, not of {}",
                    st.name
                ),
                None,
            );
        }
        if let Some(why) = restore_problem(st, &snap, snap_relid) {
            raise(
                "55000",
                format!("cannot restore stream table {} from snapshot {snap_name}: {why}", st.name),
                Some("Refresh the stream table instead; a snapshot can be restored only while every change since it is still buffered.".into()),
            );
        }
        let cols = names(&all_columns(st.relid));
        let storage = st.name_sql();
        let snap_sql = crate::spi::relation_name(snap_relid).unwrap_or_default();
        let owner = owner_of(st.id);
        let restored: i64 = owner.run(|| {
            let _applying = crate::readonly::Applying::begin();
            run(&format!("DELETE FROM {storage}"), &[]);
            copy_rows(&snap_sql, &storage, &cols)
        });
        snapshots::restore_frontier(st.id, &snap);
        // With an outbox: the restore changed the stream table, so it
        // writes its message too, in this transaction.
        crate::outbox::publish::after_refresh(st.id, st.relid, &st.name, "RESTORE");
        pgrx::notice!(
            "stream table {} restored from {snap_name} ({restored} rows); its next refresh applies the changes made since",
            st.name
        );
        restored
    })
}
