//! Talking to a node. A node is reached one of two ways:
//!
//! - **a postgres_fdw server** ([`Link::Server`]): through `dblink` with the
//!   server's name, so libpq options come from the server and the
//!   credentials from the calling role's user mapping, exactly as the
//!   stream table's `postgres_fdw` reads get them. dblink then requires a
//!   password for a role that is not a superuser, as postgres_fdw does.
//! - **a Citus node** ([`Link::Citus`]): through Citus's own
//!   `master_run_on_worker`, which connects as the calling role with the
//!   connection settings and credentials Citus uses for its own queries
//!   (`citus.node_conninfo`, `pg_dist_authinfo`). It returns one value per
//!   command, so a query's rows travel as one JSON array.
//!
//! Calls run as the stream table's owner. On the node pg_trickle needs no
//! extension: a publication and a logical slot per sharded source,
//! `REPLICA IDENTITY FULL` on the shards (old rows carry every column),
//! and the view `pgtrickle_node.state` that tells a reading transaction
//! which snapshot of the node it reads.

use crate::spi::{first_column, qi, raise, row, rows, run, value};

/// How the coordinator reaches one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The node of a postgres_fdw server of this name.
    Server(String),
    /// A Citus node (from `pg_dist_node`).
    Citus {
        /// Its host name as Citus records it.
        host: String,
        /// Its port.
        port: i32,
    },
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Server(name) => write!(f, "server {name}"),
            Link::Citus { host, port } => write!(f, "Citus node {host}:{port}"),
        }
    }
}

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

/// Run `statements` (no result) on the node, in one transaction.
pub fn exec(link: &Link, statements: &[String]) {
    match link {
        Link::Server(server) => {
            run(
                &format!("SELECT {}.dblink_exec($1, $2)", dblink_for(server)),
                &[Some(server.clone()), Some(statements.join("; "))],
            );
        }
        Link::Citus { .. } => {
            // One command per call (Citus reports the first result of
            // a call only): several statements go in one block, so that
            // any of them failing fails the call.
            match statements {
                [one] => citus_run(link, one),
                _ => {
                    let body: String = statements.iter().map(|s| format!("{s}; ")).collect();
                    citus_run(link, &format!("DO $pgt_exec$BEGIN {body}END$pgt_exec$"))
                }
            };
        }
    }
}

/// Run one command on a Citus node; its one result value.
fn citus_run(link: &Link, command: &str) -> Option<String> {
    let Link::Citus { host, port } = link else {
        unreachable!("citus_run on {link}")
    };
    let r = row(
        "SELECT success::pg_catalog.text, result FROM pg_catalog.master_run_on_worker( \
           ARRAY[$1]::pg_catalog.text[], ARRAY[$2::pg_catalog.text::pg_catalog.int4], ARRAY[$3]::pg_catalog.text[], false)",
        &[
            Some(host.clone()),
            Some(port.to_string()),
            Some(command.to_string()),
        ],
    );
    match r {
        Some(r) if r[0].as_deref() == Some("true") => r[1].clone().filter(|v| !v.is_empty()),
        Some(r) => {
            // Citus passes on the node's message without its SQLSTATE:
            // a failure to reach the node is a connection failure (retried
            // as transient), anything else the node refused.
            let text = r[1].clone().unwrap_or_default();
            let unreachable = [
                "could not connect",
                "connection to the remote node",
                "failed to connect",
                "could not establish",
            ]
            .iter()
            .any(|m| text.contains(m));
            raise(
                if unreachable { "08000" } else { "55000" },
                format!("{link}: {text}"),
                None,
            )
        }
        None => raise("08000", format!("{link} returned no result"), None),
    }
}

/// Rows of `sql` on the node, every column as text (`columns` of them).
pub fn query(link: &Link, sql: &str, columns: usize) -> Vec<Vec<Option<String>>> {
    let defs: Vec<String> = (1..=columns).map(|k| format!("c{k}")).collect();
    match link {
        Link::Server(server) => {
            let typed: Vec<String> = defs.iter().map(|c| format!("{c} text")).collect();
            rows(
                &format!(
                    "SELECT * FROM {}.dblink($1, $2) AS t({})",
                    dblink_for(server),
                    typed.join(", ")
                ),
                &[Some(server.clone()), Some(sql.to_string())],
            )
        }
        Link::Citus { .. } => {
            // One value per call: the rows as a JSON array, in the order
            // `sql` returns them (kept by numbering them as they come).
            let wrapped = format!(
                "SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_array({cols}) ORDER BY t.pgt_ord)::pg_catalog.text, '[]') \
                 FROM (SELECT q.*, pg_catalog.row_number() OVER () AS pgt_ord FROM ({sql}) AS q({cols})) AS t",
                cols = defs.join(", ")
            );
            let json = citus_run(link, &wrapped).unwrap_or_else(|| "[]".into());
            let picks: Vec<String> = (0..columns)
                .map(|k| format!("e OPERATOR(pg_catalog.->>) {k}"))
                .collect();
            rows(
                &format!(
                    "SELECT {} FROM pg_catalog.json_array_elements($1::pg_catalog.text::pg_catalog.json) e",
                    picks.join(", ")
                ),
                &[Some(json)],
            )
        }
    }
}

/// The node's first row of `sql`, one text column.
pub fn query_value(link: &Link, sql: &str) -> Option<String> {
    query(link, sql, 1)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

/// Set up capture on the node for `shards` (`schema.table` as the node
/// names them): full replica identity on a postgres_fdw node (a Citus
/// table gets it from the coordinator, which passes it to its shards), the
/// publication `slot` and the slot itself (after the publication: pgoutput
/// on PostgreSQL 15 cannot read through a publication created after its
/// slot), and the state view. Returns the slot's confirmed position. The
/// slot is not transactional: see `drop_orphaned_remote_slots`.
pub fn set_up(link: &Link, slot: &str, shards: &[(String, String)]) -> String {
    if let Some((s, t)) = shards
        .iter()
        .find(|(s, t)| s.contains('$') || t.contains('$'))
    {
        raise(
            "0A000",
            format!("shard {s}.{t} on {link}: capture on other nodes does not support '$' in shard names"),
            None,
        );
    }
    let tables: Vec<String> = shards
        .iter()
        .map(|(s, t)| format!("{}.{}", qi(s), qi(t)))
        .collect();
    // The shards may be held by the very transaction setting this up
    // (it wrote them through postgres_fdw): wait a bounded time. On a
    // Citus node nothing here is passed on to other nodes.
    let mut sql = vec![
        "SET LOCAL lock_timeout = '10s'".to_string(),
        "SET LOCAL citus.enable_ddl_propagation = off".to_string(),
    ];
    // The state view serves postgres_fdw reads; a Citus node is asked
    // directly (and the view's owner would be the first owner only).
    if matches!(link, Link::Server(_)) {
        sql.push("CREATE SCHEMA IF NOT EXISTS pgtrickle_node".to_string());
        sql.push(
            "CREATE OR REPLACE VIEW pgtrickle_node.state AS \
               SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text AS snapshot, \
                      pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text AS lsn, \
                      pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text AS own_xact"
                .to_string(),
        );
        for t in &tables {
            sql.push(format!("ALTER TABLE {t} REPLICA IDENTITY FULL"));
        }
    }
    // An existing publication is altered, never created again: the slot
    // may already read through it.
    sql.push(format!(
        "IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {name}) \
         THEN ALTER PUBLICATION {pub_} SET TABLE {list}; \
         ELSE CREATE PUBLICATION {pub_} FOR TABLE {list}; END IF",
        name = lit(slot),
        list = tables.join(", "),
        pub_ = qi(slot)
    ));
    if let Err(f) = crate::spi::in_subtransaction(|| exec(link, &[block(&sql)])) {
        raise(
            &f.sqlstate,
            format!(
                "setting up capture on {link} failed: {} (a transaction holding its shards, this one included if it wrote them through postgres_fdw, must end first)",
                f.message
            ),
            None,
        );
    }
    let existing = query_value(
        link,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            lit(slot)
        ),
    );
    if let Some(lsn) = existing {
        return lsn;
    }
    // Creating a slot waits for every transaction with an id on the node
    // to end, this one's own included (through Citus or postgres_fdw):
    // 10 s at most. The lateral reference makes the setting come first.
    query_value(
        link,
        &format!(
            "SELECT s.lsn::pg_catalog.text \
             FROM (SELECT pg_catalog.set_config('lock_timeout', '10s', false) AS t) c \
             CROSS JOIN LATERAL pg_catalog.pg_create_logical_replication_slot( \
               CASE WHEN c.t IS NOT NULL THEN {} END, 'pgoutput') s",
            lit(slot)
        ),
    )
    .unwrap_or_else(|| {
        raise(
            "55000",
            format!("creating slot {slot} on {link} returned nothing"),
            None,
        )
    })
}

/// `statements` as one PL/pgSQL block (SET, DDL and IF alike).
fn block(statements: &[String]) -> String {
    let body: String = statements.iter().map(|s| format!("{s}; ")).collect();
    format!("DO $pgt$BEGIN {body}END$pgt$")
}

/// Drop the slot and publication `slot` on the node (if they exist).
pub fn tear_down(link: &Link, slot: &str) {
    exec(
        link,
        &[block(&[
            "SET LOCAL citus.enable_ddl_propagation = off".to_string(),
            format!(
                "PERFORM pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = {}",
                lit(slot)
            ),
            format!("DROP PUBLICATION IF EXISTS {}", qi(slot)),
        ])],
    );
}

/// The node's snapshot and flushed WAL position, read on a connection of
/// its own (a drain on a schedule, which no read of the node shares).
pub fn own_snapshot(link: &Link) -> (String, String) {
    let r = query(
        link,
        "SELECT pg_catalog.pg_current_snapshot()::text, pg_catalog.pg_current_wal_flush_lsn()::text",
        2,
    );
    let r = r.into_iter().next().unwrap_or_default();
    match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
        (Some(s), Some(l)) => (s, l),
        _ => raise("55000", format!("{link} returned no snapshot"), None),
    }
}

/// The node's flushed WAL position.
pub fn flushed(link: &Link) -> Option<String> {
    query_value(link, "SELECT pg_catalog.pg_current_wal_flush_lsn()::text")
}

/// An LSN as this side prints it (what a node sent is parsed first).
fn clean_lsn(lsn: &str) -> String {
    pg_trickle_core::wal::capture::parse_lsn(lsn)
        .map(pg_trickle_core::wal::capture::lsn_text)
        .unwrap_or_else(|| raise("22P02", format!("not an LSN: {lsn}"), None))
}

/// Peek `slot` up to `upto`: (WAL position, message bytes as hex).
pub fn peek(link: &Link, slot: &str, upto: &str) -> Vec<(i64, String)> {
    let upto = clean_lsn(upto);
    query(
        link,
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
pub fn advance(link: &Link, slot: &str, to: &str) -> Option<String> {
    let to = clean_lsn(to);
    query_value(
        link,
        &format!(
            "SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance({}, {}::pg_catalog.pg_lsn)",
            lit(slot),
            lit(&to)
        ),
    )
}

/// Slots on the node whose names start with `prefix`.
pub fn slots_with_prefix(link: &Link, prefix: &str) -> Vec<String> {
    query(
        link,
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
