//! What the catalog says about a relation a defining query reads: its kind,
//! the partitions or inheritance children whose rows it includes (its
//! members), and anything that keeps trigger capture from being exact.
//!
//! A partitioned table's rows live in its partitions and an inheritance
//! parent's rows include its children's, so capture, TRUNCATE detection and
//! structure changes concern every member, at every level. A member that is
//! a foreign table (written on another server) or unlogged (emptied by a
//! crash without any change to capture) makes the whole source inexact for
//! DIFFERENTIAL refresh; so does an unlogged source itself, and a Citus
//! table among the members. Foreign partitions on postgres_fdw servers and
//! Citus tables themselves are captured on their nodes (`remote_capture`).

use pg_trickle_core::catalog::{ImageEquality, SourceKind, SourceTable};

use pgrx::pg_sys;

use crate::spi::{first_column, row, rows};

/// Every partition or inheritance descendant of `oid`, at every level, in
/// oid order (a partition being detached concurrently no longer counts).
pub fn members(oid: u32) -> Vec<u32> {
    // Most sources have none: a syscache lookup says so without a
    // statement (the flag may stay set after the last child went).
    if !has_members(oid) {
        return Vec::new();
    }
    first_column(
        "WITH RECURSIVE d(oid) AS ( \
           SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = $1::text::oid AND NOT i.inhdetachpending \
           UNION SELECT i.inhrelid FROM pg_inherits i JOIN d ON i.inhparent = d.oid WHERE NOT i.inhdetachpending) \
         SELECT d.oid::text FROM d ORDER BY d.oid",
        &[Some(oid.to_string())],
    )
}

unsafe extern "C-unwind" {
    /// Whether `pg_class.relhassubclass` is set for the relation
    /// (catalog/pg_inherits.h; the same signature in every supported
    /// major). Not in pgrx's bindings; call it through [`has_members`].
    fn has_subclass(relation: pg_sys::Oid) -> bool;
}

/// Whether `oid` may have partitions or inheritance children: false only
/// when it certainly has none, or no longer exists (as the query finds no
/// children of a dropped relation).
fn has_members(oid: u32) -> bool {
    let oid = pg_sys::Oid::from(oid);
    // SAFETY: syscache lookups; get_rel_relkind returns 0 for a missing
    // relation (has_subclass would raise), and an ERROR from either is
    // turned into a Rust panic by the boundary guard.
    unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            pg_sys::get_rel_relkind(oid) != 0 && has_subclass(oid)
        })
    }
}

/// Resolve one relation by oid, with its kind and capture problem.
pub fn source_by_oid(oid: u32) -> Option<SourceTable> {
    let r = row(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, \
         EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhparent = c.oid)::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::text::oid",
        &[Some(oid.to_string())],
    )?;
    // Each column with what tells its values apart (see ImageEquality).
    let described = rows(
        "SELECT a.attname::text, a.atttypid::text \
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::text::oid AND a.attnum > 0 \
         AND NOT a.attisdropped AND a.attname NOT LIKE '\\_\\_pgt\\_%' ORDER BY a.attnum",
        &[Some(oid.to_string())],
    );
    let columns: Vec<String> = described
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    let image_equality = described
        .iter()
        .map(|r| ImageEquality::of(r[1].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)))
        .collect();
    let flag = |i: usize| r[i].as_deref() == Some("true");
    let relkind = r[2]
        .as_deref()
        .and_then(|k| k.chars().next())
        .unwrap_or(' ');
    let is_stream_table = crate::catalog::stream_tables::is_storage(oid);
    let kind = SourceKind::from_relkind(relkind, is_stream_table, flag(4));
    let capture_problem = if kind.capturable() {
        capture_problem(oid, r[3].as_deref().unwrap_or("p"))
    } else {
        None
    };
    // An inheritance parent shows its children's rows, which its key does
    // not cover; a partitioned table's key covers its partitions.
    let key = if relkind == 'r' && flag(4) {
        Vec::new()
    } else {
        primary_key(oid)
    };
    let key = if key.iter().all(|k| columns.contains(k)) {
        key
    } else {
        Vec::new()
    };
    Some(SourceTable {
        oid,
        schema: r[0].clone().unwrap_or_default(),
        name: r[1].clone().unwrap_or_default(),
        kind,
        columns,
        capture_problem,
        capture: if crate::catalog::wal_capture::of(oid).is_some() {
            pg_trickle_core::catalog::Capture::Wal
        } else {
            pg_trickle_core::catalog::Capture::Trigger
        },
        key,
        image_equality,
    })
}

/// The columns of `oid`'s primary key, in key order, when it is not
/// deferrable and every column's type is built in (the refresh compares
/// them with `OPERATOR(pg_catalog.=)`); otherwise none. The refresh only
/// uses it to lead its search for rows, and stays exact without it.
fn primary_key(oid: u32) -> Vec<String> {
    let cols = rows(
        "SELECT a.attname::text, (t.typnamespace = 'pg_catalog'::regnamespace)::text \
         FROM pg_catalog.pg_constraint c \
         CROSS JOIN LATERAL pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         WHERE c.conrelid = $1::text::oid AND c.contype = 'p' AND NOT c.condeferrable ORDER BY k.n",
        &[Some(oid.to_string())],
    );
    if cols.iter().any(|r| r[1].as_deref() != Some("true")) {
        return Vec::new();
    }
    cols.into_iter().filter_map(|r| r[0].clone()).collect()
}

/// Why capture of a capturable relation would not be exact, if it would not.
fn capture_problem(oid: u32, persistence: &str) -> Option<String> {
    match persistence {
        "u" => {
            return Some("it is unlogged: a crash empties it without any change to capture".into())
        }
        "t" => return Some("it is a temporary table of one session".into()),
        _ => {}
    }
    // A Citus table is captured on the nodes that hold its shards (see
    // `remote_capture::citus`); a Citus table among the members is not.
    if crate::remote_capture::citus::is_citus_table(oid) {
        return crate::remote_capture::problem(oid);
    }
    let members = members(oid);
    let list = format!(
        "{{{}}}",
        std::iter::once(oid)
            .chain(members.iter().copied())
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(problem) = citus_problem(&list) {
        return Some(problem);
    }
    if members.is_empty() {
        return None;
    }
    // Foreign partitions on postgres_fdw servers are captured on their
    // nodes (see `remote_capture`); any other foreign member cannot be.
    if let Some(problem) = crate::remote_capture::problem(oid) {
        return Some(problem);
    }
    rows(
        "SELECT c.oid::regclass::text, c.relkind::text, c.relpersistence::text, s.srvname::text \
         FROM pg_class c LEFT JOIN pg_foreign_table f ON f.ftrelid = c.oid \
         LEFT JOIN pg_foreign_server s ON s.oid = f.ftserver \
         WHERE c.oid = ANY ($1::text::oid[]) AND c.relkind <> 'f' AND c.relpersistence <> 'p' ORDER BY c.oid",
        &[Some(list)],
    )
    .into_iter()
    .next()
    .map(|m| {
        let name = m[0].clone().unwrap_or_default();
        if m[1].as_deref() == Some("f") {
            let server = m[3].clone().unwrap_or_default();
            format!(
                "its partition or child {name} is a foreign table on server {server}, whose writes on that server are not captured"
            )
        } else {
            format!("its partition or child {name} is unlogged: a crash empties it without any change to capture")
        }
    })
}

/// Why a relation among `oids` (a `text` oid-array literal) that Citus
/// manages cannot be captured, when Citus is installed in this database:
/// a distributed or reference table's rows live in shards, written on the
/// worker nodes (or in shard relations on this one), where no trigger of
/// pg_trickle runs and no change buffer exists.
fn citus_problem(oids: &str) -> Option<String> {
    if !crate::remote_capture::citus::installed() {
        return None;
    }
    row(
        "SELECT p.logicalrelid::regclass::text, p.partmethod::text FROM pg_catalog.pg_dist_partition p \
         WHERE p.logicalrelid OPERATOR(pg_catalog.=) ANY ($1::text::pg_catalog.oid[]) ORDER BY p.logicalrelid LIMIT 1",
        &[Some(oids.to_string())],
    )
    .map(|r| {
        let name = r[0].clone().unwrap_or_default();
        let what = crate::remote_capture::citus::kind_label(r[1].as_deref());
        format!(
            "{name} is {what}: its rows live in shards written on the nodes that hold them, where its changes are not captured"
        )
    })
}
