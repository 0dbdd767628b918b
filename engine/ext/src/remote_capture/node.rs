//! Talking to a node: every call goes through `dblink` with the node's
//! foreign server name, so libpq options come from the server and the
//! credentials from the calling role's user mapping, exactly as the
//! stream table's `postgres_fdw` reads get them. Calls run as the stream
//! table's owner; dblink then requires a password for a role that is not
//! a superuser, as postgres_fdw does.
//!
//! On the node pg_trickle needs no extension: a publication and a logical
//! slot per sharded source, `REPLICA IDENTITY FULL` on the shards (old rows
//! carry every column), and the view `pgtrickle_node.state` that tells a
//! reading transaction which snapshot of the node it reads.

use crate::spi::{first_column, qi, raise, rows, run, value};

/// The schema dblink is installed in, if it is.
pub fn dblink_schema() -> Option<String> {
    value(
        "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
         WHERE e.extname OPERATOR(pg_catalog.=) 'dblink'",
        &[],
    )
}

fn dblink() -> String {
    dblink_schema().map(|s| qi(&s)).unwrap_or_else(|| {
        raise(
            "55000",
            "capture on other nodes needs the dblink extension in this database",
            Some("CREATE EXTENSION dblink;".into()),
        )
    })
}

/// The dblink schema, after making sure `server` reaches the server of
/// that name: dblink prefers a session's named connection to a server
/// of the same name, which would let a session feed forged changes into
/// a shared change buffer.
fn dblink_for(server: &str) -> String {
    let schema = dblink();
    let shadowed = value(
        &format!("SELECT 1::text FROM pg_catalog.unnest({schema}.dblink_get_connections()) c WHERE c = $1"),
        &[Some(server.to_string())],
    );
    if shadowed.is_some() {
        raise(
            "42501",
            format!("this session has a dblink connection named {server}, which hides the foreign server of that name from capture"),
            Some(format!("SELECT dblink_disconnect('{server}');")),
        );
    }
    schema
}

/// A SQL string literal.
pub fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Run `sql` (statements, no result) on the node of `server`.
pub fn exec(server: &str, sql: &str) {
    run(
        &format!("SELECT {}.dblink_exec($1, $2)", dblink_for(server)),
        &[Some(server.to_string()), Some(sql.to_string())],
    );
}

/// Rows of `sql` on the node of `server`, every column as text (`columns`
/// of them).
pub fn query(server: &str, sql: &str, columns: usize) -> Vec<Vec<Option<String>>> {
    let defs: Vec<String> = (1..=columns).map(|k| format!("c{k} text")).collect();
    rows(
        &format!(
            "SELECT * FROM {}.dblink($1, $2) AS t({})",
            dblink_for(server),
            defs.join(", ")
        ),
        &[Some(server.to_string()), Some(sql.to_string())],
    )
}

/// The node's first row of `sql`, one text column.
pub fn query_value(server: &str, sql: &str) -> Option<String> {
    query(server, sql, 1)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

/// Set up capture on the node for `shards` (`schema.table` as the node
/// names them): full replica identity, the publication `slot` and the
/// slot itself (after the publication: pgoutput on PostgreSQL 15 cannot
/// read through a publication created after its slot), and the state
/// view. Returns the slot's confirmed position. The slot is not
/// transactional: see `drop_orphans`.
pub fn set_up(server: &str, slot: &str, shards: &[(String, String)]) -> String {
    if let Some((s, t)) = shards
        .iter()
        .find(|(s, t)| s.contains('$') || t.contains('$'))
    {
        raise(
            "0A000",
            format!("shard {s}.{t} on server {server}: capture on other nodes does not support '$' in shard names"),
            None,
        );
    }
    let tables: Vec<String> = shards
        .iter()
        .map(|(s, t)| format!("{}.{}", qi(s), qi(t)))
        .collect();
    // The shards may be held by the very transaction setting this up
    // (it wrote them through postgres_fdw): wait a bounded time.
    let mut sql = String::from(
        "SET lock_timeout = '10s'; CREATE SCHEMA IF NOT EXISTS pgtrickle_node; \
         CREATE OR REPLACE VIEW pgtrickle_node.state AS \
           SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text AS snapshot, \
                  pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text AS lsn, \
                  pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text AS own_xact; ",
    );
    for t in &tables {
        sql.push_str(&format!("ALTER TABLE {t} REPLICA IDENTITY FULL; "));
    }
    // An existing publication is altered, never created again: the slot
    // may already read through it.
    sql.push_str(&format!(
        "DO $pgt$BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {name}) \
         THEN ALTER PUBLICATION {pub_} SET TABLE {list}; \
         ELSE CREATE PUBLICATION {pub_} FOR TABLE {list}; END IF; END$pgt$;",
        name = lit(slot),
        list = tables.join(", "),
        pub_ = qi(slot)
    ));
    if let Err(f) = crate::spi::in_subtransaction(|| exec(server, &sql)) {
        raise(
            &f.sqlstate,
            format!(
                "setting up capture on the node of server {server} failed: {} (a transaction holding its shards, this one included if it wrote them through postgres_fdw, must end first)",
                f.message
            ),
            None,
        );
    }
    let existing = query_value(
        server,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            lit(slot)
        ),
    );
    if let Some(lsn) = existing {
        return lsn;
    }
    query_value(
        server,
        &format!(
            "SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot({}, 'pgoutput')",
            lit(slot)
        ),
    )
    .unwrap_or_else(|| {
        raise(
            "55000",
            format!("creating slot {slot} on server {server} returned nothing"),
            None,
        )
    })
}

/// Drop the slot and publication `slot` on the node (if they exist).
pub fn tear_down(server: &str, slot: &str) {
    exec(
        server,
        &format!(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = {}; DROP PUBLICATION IF EXISTS {};",
            lit(slot),
            qi(slot)
        ),
    );
}

/// The node's snapshot and flushed WAL position, read on a connection of
/// its own (a drain on a schedule, which no read of the node shares).
pub fn own_snapshot(server: &str) -> (String, String) {
    let r = query(
        server,
        "SELECT pg_catalog.pg_current_snapshot()::text, pg_catalog.pg_current_wal_flush_lsn()::text",
        2,
    );
    let r = r.into_iter().next().unwrap_or_default();
    match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
        (Some(s), Some(l)) => (s, l),
        _ => raise(
            "55000",
            format!("server {server} returned no snapshot"),
            None,
        ),
    }
}

/// The node's flushed WAL position.
pub fn flushed(server: &str) -> Option<String> {
    query_value(server, "SELECT pg_catalog.pg_current_wal_flush_lsn()::text")
}

/// An LSN as this side prints it (what a node sent is parsed first).
fn clean_lsn(lsn: &str) -> String {
    pg_trickle_core::wal::capture::parse_lsn(lsn)
        .map(pg_trickle_core::wal::capture::lsn_text)
        .unwrap_or_else(|| raise("22P02", format!("not an LSN: {lsn}"), None))
}

/// Peek `slot` up to `upto`: (WAL position, message bytes as hex).
pub fn peek(server: &str, slot: &str, upto: &str) -> Vec<(i64, String)> {
    let upto = clean_lsn(upto);
    query(
        server,
        &format!(
            "SELECT (lsn OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8::text, \
                    pg_catalog.encode(data, 'hex') \
             FROM pg_catalog.pg_logical_slot_peek_binary_changes({s}, {u}::pg_catalog.pg_lsn, NULL, \
               'proto_version', '1', 'publication_names', {p})",
            s = lit(slot),
            u = lit(&upto),
            p = lit(slot)
        ),
        2,
    )
    .into_iter()
    .map(|r| {
        (
            r.first()
                .cloned()
                .flatten()
                .and_then(|x| x.parse().ok())
                .unwrap_or_default(),
            r.get(1).cloned().flatten().unwrap_or_default(),
        )
    })
    .collect()
}

/// Advance `slot` to `to` (what committed drains wrote); returns its
/// confirmed position.
pub fn advance(server: &str, slot: &str, to: &str) -> Option<String> {
    let to = clean_lsn(to);
    query_value(
        server,
        &format!(
            "SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance({}, {}::pg_catalog.pg_lsn)",
            lit(slot),
            lit(&to)
        ),
    )
}

/// Slots on the node whose names start with `prefix`.
pub fn slots_with_prefix(server: &str, prefix: &str) -> Vec<String> {
    query(
        server,
        &format!(
            "SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE {}",
            lit(&format!("{}%", prefix.replace('_', "\\_")))
        ),
        1,
    )
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect()
}

/// postgres_fdw servers of this database that have a user mapping.
pub fn mapped_servers() -> Vec<String> {
    first_column(
        "SELECT DISTINCT s.srvname::text FROM pg_catalog.pg_foreign_server s \
         JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid OPERATOR(pg_catalog.=) s.srvfdw \
         JOIN pg_catalog.pg_user_mappings m ON m.srvid OPERATOR(pg_catalog.=) s.oid \
         WHERE w.fdwname OPERATOR(pg_catalog.=) 'postgres_fdw' ORDER BY 1",
        &[],
    )
}
