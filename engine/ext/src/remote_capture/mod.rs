//! Capture on other nodes: a source whose rows live on other nodes has its
//! changes captured from the WAL of the nodes that hold those rows, one
//! slot per (node, source), into the source's own change buffer. Refresh
//! then works as for any source. Two kinds of source are sharded: a
//! partitioned table whose partitions are `postgres_fdw` foreign tables,
//! and a Citus table (see `citus`).
//!
//! Exactness across nodes rests on one rule (see
//! `pg_trickle_core::wal::remote`): a statement that reads a node's rows
//! reads them in one snapshot of that node (postgres_fdw keeps one
//! REPEATABLE READ transaction per node and local transaction), and the
//! buffer then holds exactly the node's transactions that snapshot sees.
//! So before a refresh (or the populate at creation) reads, it locks each
//! (source, node) row, which keeps every other drain of that slot out
//! until it commits, reads the node's snapshot through the
//! `pgtrickle_changes.node_<server>` foreign table (on the owner's user
//! mapping, the connection the partitions are read on, so it is the
//! snapshot their reads use), and drains the slot up to it. The scheduler
//! drains every slot each tick as well, under a lease, so that refreshes
//! find little left to decode and slots advance.
//!
//! A Citus table is read through Citus's own connections, whose snapshots
//! on a node no query of pg_trickle can share. So a refresh of a Citus
//! source takes a SHARE lock on it first, which Citus takes on every node
//! as well: writes through Citus wait until the refresh commits, every
//! write before it is committed, and the drain up to each node's present
//! snapshot is exactly what every read of the refresh sees.
//!
//! Rows a drain writes carry the draining transaction's own id: for the
//! coordinator they are changes made by that transaction, visible when it
//! commits, and consumed by the snapshot frontier like trigger-captured
//! ones.

use std::collections::BTreeMap;

use pg_trickle_core::wal::capture::{
    buffer_record, column_map, lsn_text, parse_lsn, widen_xid, Snapshot,
};
use pg_trickle_core::wal::remote::{decide_lease, Decoded, LeaseDecision, Progress};
use pg_trickle_core::wal::{decode, Assembler, ChangeKind};
use pgrx::prelude::*;

use crate::security::Owner;
use crate::spi::{first_column, qi, raise, row, rows, run, value};

pub mod citus;
mod node;
mod status;

pub use node::{dblink_schema, Link};

/// A node that holds rows of a sharded source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its key in the capture catalog: `server:<oid>` or `citus:<nodeid>`.
    pub key: String,
    /// The foreign server, for a postgres_fdw node.
    pub server_oid: Option<u32>,
    /// How to reach it.
    pub link: Link,
}

/// Where some rows of a sharded source live: a foreign partition (at any
/// level) or a Citus shard.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The coordinator's name for it (foreign table or shard relation).
    pub member: String,
    /// The node holding it.
    pub node: Node,
    /// The table on the node: schema and name.
    pub remote: (String, String),
    /// The Citus placement id (a shard that leaves a node and comes back
    /// is a new relation under the same name, and a new placement).
    pub placement: Option<i64>,
}

/// The link of the node a catalog key names, if it still exists.
fn resolve(key: &str) -> Option<Link> {
    if let Some(oid) = key.strip_prefix("server:") {
        return value(
            "SELECT srvname::text FROM pg_catalog.pg_foreign_server WHERE oid::text = $1",
            &[Some(oid.to_string())],
        )
        .map(Link::Server);
    }
    citus::resolve(key)
}

/// The link of `key`, or an error naming the node that is gone.
fn link_of(key: &str) -> Link {
    resolve(key).unwrap_or_else(|| {
        raise(
            "55000",
            format!("node {key} is no longer known to this database"),
            None,
        )
    })
}

/// Where `source`'s rows live on other nodes (its foreign members on
/// postgres_fdw servers, or a Citus table's shards), and the first foreign
/// member whose server is not a postgres_fdw server (which cannot be
/// captured).
pub fn shards(source: u32) -> (Vec<Shard>, Option<(String, String)>) {
    if citus::is_citus_table(source) {
        return (citus::shards(source), None);
    }
    let members = crate::sources::members(source);
    if members.is_empty() {
        return (Vec::new(), None);
    }
    let list = format!(
        "{{{}}}",
        members
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut out = Vec::new();
    let mut other = None;
    for r in rows(
        "SELECT c.oid::text, s.oid::text, s.srvname::text, w.fdwname::text, n.nspname::text, c.relname::text, \
                (SELECT pg_catalog.substr(o, 13) FROM pg_catalog.unnest(f.ftoptions) o WHERE o LIKE 'schema_name=%'), \
                (SELECT pg_catalog.substr(o, 12) FROM pg_catalog.unnest(f.ftoptions) o WHERE o LIKE 'table_name=%'), \
                c.oid::regclass::text \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = c.oid \
         JOIN pg_catalog.pg_foreign_server s ON s.oid = f.ftserver \
         JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw \
         WHERE c.oid = ANY ($1::text::oid[]) ORDER BY c.oid",
        &[Some(list)],
    ) {
        let get = |i: usize| r[i].clone().unwrap_or_default();
        if get(3) != "postgres_fdw" {
            other.get_or_insert((get(8), get(2)));
            continue;
        }
        out.push(Shard {
            member: get(8),
            node: Node {
                key: format!("server:{}", get(1)),
                server_oid: get(1).parse().ok(),
                link: Link::Server(get(2)),
            },
            remote: (
                r[6].clone().unwrap_or_else(|| get(4)),
                r[7].clone().unwrap_or_else(|| get(5)),
            ),
            placement: None,
        });
    }
    (out, other)
}

/// Why `source`'s foreign members cannot be captured on their nodes, if
/// they cannot (None also when it has none).
pub fn problem(source: u32) -> Option<String> {
    if citus::is_citus_table(source) {
        return citus::problem(source);
    }
    let (shards, other) = shards(source);
    if let Some((member, server)) = other {
        return Some(format!(
            "its partition or child {member} is a foreign table on server {server}, which is not a postgres_fdw server: its writes are not captured"
        ));
    }
    if shards.is_empty() {
        return None;
    }
    if dblink_schema().is_none() {
        let first = &shards[0];
        return Some(format!(
            "its partition or child {} is a foreign table on {}; capture on that node needs the dblink extension in this database (CREATE EXTENSION dblink)",
            first.member, first.node.link
        ));
    }
    None
}

/// The prefix of this database's slots on every node.
pub fn slot_prefix() -> String {
    let sysid: u64 = value(
        "SELECT system_identifier::text FROM pg_catalog.pg_control_system()",
        &[],
    )
    .and_then(|s| s.parse().ok())
    .unwrap_or(0);
    // SAFETY: MyDatabaseId is set once a backend is connected.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    pg_trickle_core::wal::remote::slot_prefix(sysid, db)
}

/// The slot (and publication) name of `source` on every node.
pub fn slot_for(source: u32) -> String {
    format!("{}{source}", slot_prefix())
}

/// The foreign table a reading transaction learns a node's snapshot from.
fn state_table(server: u32) -> String {
    format!("pgtrickle_changes.node_{server}")
}

/// One (source, node) row, locked.
struct Capture {
    key: String,
    link: Link,
    slot: String,
    progress: Progress,
    lease: Option<pg_trickle_core::wal::remote::Lease>,
    /// The node snapshot the last committed drain wrote up to.
    last_snapshot: Option<String>,
}

fn written_text(w: &BTreeMap<u64, u64>) -> String {
    w.iter()
        .map(|(x, l)| format!("{x}@{}", lsn_text(*l)))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_written(text: &str) -> BTreeMap<u64, u64> {
    text.split(',')
        .filter_map(|p| {
            let (x, l) = p.split_once('@')?;
            Some((x.parse().ok()?, parse_lsn(l)?))
        })
        .collect()
}

/// Lock and read the (source, node) row; `skip_locked`: None when
/// another drain holds it.
fn lock(source: u32, key: &str, skip_locked: bool) -> Option<Capture> {
    let r = row(
        &format!(
            "SELECT r.slot_name::text, r.settled_lsn::text, r.written, NULL::text, r.lease_holder, \
                    (extract(epoch FROM r.lease_acquired_at) * 1e6)::bigint::text, \
                    (extract(epoch FROM r.lease_expires_at) * 1e6)::bigint::text, r.last_snapshot \
             FROM pgtrickle.pgt_remote_capture r \
             WHERE r.source_relid = $1::text::oid AND r.node = $2 FOR UPDATE OF r{}",
            if skip_locked { " SKIP LOCKED" } else { "" }
        ),
        &[Some(source.to_string()), Some(key.to_string())],
    )?;
    let get = |i: usize| r[i].clone().unwrap_or_default();
    let lease = r[4]
        .clone()
        .map(|holder| pg_trickle_core::wal::remote::Lease {
            holder,
            acquired_at: get(5).parse().unwrap_or(0),
            expires_at: get(6).parse().unwrap_or(0),
        });
    Some(Capture {
        key: key.to_string(),
        link: link_of(key),
        slot: get(0),
        progress: Progress {
            settled: parse_lsn(&get(1)).unwrap_or(0),
            written: parse_written(&get(2)),
        },
        lease,
        last_snapshot: r[7].clone(),
    })
}

/// Forget the nodes that no longer hold rows of `source` (a partition
/// detached or moved, a server dropped, Citus shards moved away or a
/// Citus node removed): their slots go (when the node answers) and so do
/// their rows. Readers of a source whose partitions changed are already
/// marked for reinitialisation by the structure change itself; readers
/// of a Citus table are marked here, since nothing proves that the
/// changes around the move reached the buffer exactly once.
fn forget_stale(source: u32, shards: &[Shard], owner: &Owner) {
    let live: Vec<String> = shards.iter().map(|s| s.node.key.clone()).collect();
    // Read by key, without SQL (see `catalog::direct`): every refresh asks.
    let stale: Vec<_> = crate::catalog::direct::lookup(
        c"pgtrickle",
        c"pgt_remote_capture",
        &[(c"source_relid", crate::catalog::direct::Key::Oid(source))],
        &[c"node", c"slot_name"],
    )
    .into_iter()
    .filter(|r| !live.iter().any(|key| r[0].as_deref() == Some(key.as_str())))
    .collect();
    for r in stale {
        let key = r[0].clone().unwrap_or_default();
        if key.starts_with("citus:") {
            crate::catalog::stream_tables::mark_readers_for_reinit(
                source,
                &format!("Citus node {key} no longer holds shards of %s"),
            );
        }
        if let (Some(link), Some(slot)) = (resolve(&key), r[1].clone()) {
            let (l, sl) = (link.clone(), slot.clone());
            let own = owner.clone();
            if let Err(f) =
                crate::spi::in_subtransaction(move || own.run(|| node::tear_down(&l, &sl)))
            {
                pgrx::warning!(
                    "pg_trickle: {link} no longer holds rows of source {source}; dropping its slot {slot} failed ({}): {}; drop_orphaned_remote_slots() removes it later",
                    f.sqlstate,
                    f.message
                );
            }
        }
        run(
            "DELETE FROM pgtrickle.pgt_remote_capture WHERE source_relid = $1::text::oid AND node = $2",
            &[Some(source.to_string()), Some(key)],
        );
    }
}

/// Make sure every node holding rows of `source` has its slot, and the
/// coordinator its state table and catalog row (a node added since is set
/// up here, at the next read). Runs as the owner for the nodes.
fn ensure(source: u32, owner: &Owner, shards: &[Shard]) {
    let mut by_node: BTreeMap<String, Vec<&Shard>> = BTreeMap::new();
    for s in shards {
        by_node.entry(s.node.key.clone()).or_default().push(s);
    }
    let citus = shards.iter().any(|s| s.node.server_oid.is_none());
    let captured_before = value(
        "SELECT 'true' FROM pgtrickle.pgt_remote_capture WHERE source_relid = $1::text::oid LIMIT 1",
        &[Some(source.to_string())],
    )
    .is_some();
    let slot = slot_for(source);
    for (key, list) in by_node {
        let node = list[0].node.clone();
        let mut remote: Vec<(String, String)> = list.iter().map(|s| s.remote.clone()).collect();
        remote.sort();
        let tables = remote
            .iter()
            .map(|(s, t)| format!("{}.{}", qi(s), qi(t)))
            .collect::<Vec<_>>()
            .join(", ");
        // Citus placements too: the same shard name back on a node is a
        // new relation its publication does not hold.
        let mut placements: Vec<i64> = list.iter().filter_map(|s| s.placement).collect();
        placements.sort_unstable();
        let tables = if placements.is_empty() {
            tables
        } else {
            let ids: Vec<String> = placements.iter().map(i64::to_string).collect();
            format!("{tables} (placements {})", ids.join(", "))
        };
        let recorded = value(
            "SELECT shard_tables FROM pgtrickle.pgt_remote_capture WHERE source_relid = $1::text::oid AND node = $2",
            &[Some(source.to_string()), Some(key.clone())],
        );
        match recorded {
            Some(r) if r == tables => continue,
            Some(_) => {
                // A shard joined or left this node (a partition attached,
                // moved or detached, a Citus shard moved or split): the
                // publication follows, and the changes from then on are
                // decoded. A partition's structure change already marked
                // the readers for reinitialisation; a Citus move is marked
                // here.
                if citus {
                    crate::catalog::stream_tables::mark_readers_for_reinit(
                        source,
                        &format!("the shards of %s on {} changed", node.link),
                    );
                }
                let slot_c = slot.clone();
                owner.run(|| node::set_up(&node.link, &slot_c, &remote));
                run(
                    "UPDATE pgtrickle.pgt_remote_capture SET shard_tables = $3 \
                     WHERE source_relid = $1::text::oid AND node = $2",
                    &[Some(source.to_string()), Some(key.clone()), Some(tables)],
                );
                continue;
            }
            None => {}
        }
        if citus && captured_before {
            crate::catalog::stream_tables::mark_readers_for_reinit(
                source,
                &format!("shards of %s moved to {}", node.link),
            );
        }
        let slot_c = slot.clone();
        let start = owner.run(|| node::set_up(&node.link, &slot_c, &remote));
        if let (Some(server), Link::Server(name)) = (node.server_oid, &node.link) {
            let table = state_table(server);
            if value(
                "SELECT (pg_catalog.to_regclass($1) IS NOT NULL)::text",
                &[Some(table.clone())],
            )
            .as_deref()
                != Some("true")
            {
                run(
                    &format!(
                        "CREATE FOREIGN TABLE {table} (snapshot text, lsn text, own_xact text) SERVER {} \
                         OPTIONS (schema_name 'pgtrickle_node', table_name 'state')",
                        qi(name)
                    ),
                    &[],
                );
                run(&format!("GRANT SELECT ON {table} TO PUBLIC"), &[]);
            }
        }
        run(
            "INSERT INTO pgtrickle.pgt_remote_capture \
               (source_relid, node, node_label, server_oid, slot_name, settled_lsn, confirmed_lsn, shard_tables) \
             VALUES ($1::text::oid, $2, $3, $4::text::oid, $5, $6::pg_lsn, $6::pg_lsn, $7)",
            &[
                Some(source.to_string()),
                Some(key.clone()),
                Some(node.link.to_string()),
                node.server_oid.map(|o| o.to_string()),
                Some(slot.clone()),
                Some(start),
                Some(tables),
            ],
        );
    }
}

/// Decode `cap`'s slot up to `upto` and write the transactions `snapshot`
/// sees that are not written yet into `source`'s buffer; record progress.
/// Returns how many changes were written.
fn drain_to(source: u32, cap: &Capture, owner: &Owner, snapshot: &str, upto: &str) -> usize {
    let snap = Snapshot::parse(snapshot).unwrap_or_else(|| {
        raise(
            "XX000",
            format!("{} sent no pg_snapshot: {snapshot}", cap.link),
            None,
        )
    });
    let (server, slot, up) = (cap.link.clone(), cap.slot.clone(), upto.to_string());
    let messages = owner.run(|| node::peek(&server, &slot, &up));
    let upto_lsn = parse_lsn(upto).unwrap_or(0);
    // Every decoded id is below the node's next id; a snapshot's xmax can
    // be below a transaction whose commit is already in the WAL.
    let next = snap.xmax + (1 << 20);
    let columns = crate::capture::buffer_columns(source);
    let mut assembler = Assembler::new();
    let mut decoded: BTreeMap<u64, Decoded> = BTreeMap::new();
    let mut records: Vec<(u64, String)> = Vec::new();
    let mut truncated: Vec<(u64, String)> = Vec::new();
    for (lsn, hex) in &messages {
        let bytes = hex_bytes(hex);
        let message = decode(&bytes).unwrap_or_else(|e| {
            raise(
                "XX001",
                format!("slot {slot} on {server} sent a message this version cannot decode: {e}"),
                None,
            )
        });
        let changes = assembler
            .push(&message)
            .unwrap_or_else(|e| raise("55000", format!("slot {slot} on {server}: {e}"), None));
        for change in changes {
            let Some(xid) = widen_xid(change.xid, next) else {
                raise(
                    "XX000",
                    format!(
                        "slot {slot} on {server}: transaction {} is not before {next}",
                        change.xid
                    ),
                    None,
                )
            };
            decoded.insert(
                xid,
                Decoded {
                    xid,
                    commit_lsn: change.commit_lsn,
                },
            );
            // The slot's publication holds this source's shards on the
            // node and nothing else: every change decoded is one of
            // them (a shard that has just moved away included, whose
            // changes from before the move are still the source's).
            let Some(rel) = assembler.relation(change.relation) else {
                continue;
            };
            if change.kind == ChangeKind::Truncate {
                truncated.push((xid, format!("{}.{}", rel.namespace, rel.name)));
                continue;
            }
            let record = column_map(&columns, rel)
                .and_then(|map| buffer_record(Some(*lsn), xid, &change, &map))
                .unwrap_or_else(|e| raise("55000", format!("slot {slot} on {server}: {e}"), None));
            records.push((xid, record));
        }
    }
    let list: Vec<Decoded> = decoded.into_values().collect();
    let plan = cap.progress.drain(&list, &snap, upto_lsn);
    let keep: std::collections::BTreeSet<u64> = plan.write.iter().copied().collect();
    // A TRUNCATE of a shard removes rows without row changes: its
    // readers are recomputed (FULL) at their next refresh.
    if let Some((_, shard)) = truncated.iter().find(|(x, _)| keep.contains(x)) {
        crate::catalog::stream_tables::mark_readers_for_reinit(
            source,
            &format!("TRUNCATE of shard {shard} on {} (a source of %s)", cap.link),
        );
    }
    let chosen: Vec<String> = records
        .into_iter()
        .filter(|(x, _)| keep.contains(x))
        .map(|(_, r)| r)
        .collect();
    if !chosen.is_empty() {
        let n = columns.len();
        let olds: Vec<String> = (1..=n).map(|k| format!("__o{k}")).collect();
        let news: Vec<String> = (1..=n).map(|k| format!("__n{k}")).collect();
        let cols = format!(
            "op, captured_at, {}, {}, traceparent",
            olds.join(", "),
            news.join(", ")
        );
        run(
            &format!(
                "INSERT INTO pgtrickle_changes.changes_{source} ({cols}) \
                 SELECT {cols} FROM pg_catalog.unnest($1::text::text[]::pgtrickle_changes.changes_{source}[])"
            ),
            &[Some(crate::wal_capture::text_array(&chosen))],
        );
    }
    run(
        "UPDATE pgtrickle.pgt_remote_capture SET settled_lsn = $3::pg_lsn, written = $4, last_drain_at = now(), \
         last_error = NULL, failed_ticks = 0, retry_after = NULL, last_snapshot = $5 \
         WHERE source_relid = $1::text::oid AND node = $2",
        &[
            Some(source.to_string()),
            Some(cap.key.clone()),
            Some(lsn_text(plan.progress.settled)),
            Some(written_text(&plan.progress.written)),
            Some(snapshot.to_string()),
        ],
    );
    chosen.len()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Before a statement reads the sharded sources among `relids` (refresh,
/// FULL, populate): lock each (source, node) row, learn the snapshot this
/// transaction reads the node in, and drain the slot up to it. Runs as
/// the extension; node calls and reads run as `owner`. Returns the
/// sources drained: their buffers may now hold rows with this
/// transaction's own id (see `drain_to`).
pub fn before_read(relids: &[u32], owner: &Owner) -> Vec<u32> {
    let mut drained = Vec::new();
    // Citus tables first, in oid order (two refreshes lock them alike):
    // writers held out before where the shards live is read, so that the
    // list read next is the one every read of this refresh sees.
    let mut citus_sources: Vec<u32> = relids
        .iter()
        .copied()
        .filter(|r| citus::is_citus_table(*r))
        .collect();
    citus_sources.sort_unstable();
    citus_sources.dedup();
    for &source in &citus_sources {
        hold_citus_writers(source, owner);
    }
    for &source in relids {
        let (shards, _) = shards(source);
        forget_stale(source, &shards, owner);
        if shards.is_empty() {
            continue;
        }
        drained.push(source);
        ensure(source, owner, &shards);
        let citus = citus_sources.contains(&source);
        let keys: std::collections::BTreeSet<String> =
            shards.iter().map(|s| s.node.key.clone()).collect();
        for key in keys {
            let Some(cap) = lock(source, &key, false) else {
                raise(
                    "XX000",
                    format!("source {source} has no capture row for node {key} after set-up"),
                    None,
                )
            };
            let (snapshot, lsn) = if citus {
                citus_state(source, &cap, owner, &shards)
            } else {
                fdw_state(source, &cap, owner)
            };
            wait_flushed(&cap, owner, &lsn);
            drain_to(source, &cap, owner, &snapshot, &lsn);
        }
        if citus && signature(&shards) != signature(&self::shards(source).0) {
            // A shard move committed while this refresh set up: its reads
            // could meet a placement no drain covered. The next attempt
            // sees the move (and reinitialises).
            raise(
                "40001",
                format!(
                    "the shards of {} moved while this refresh drained them; retry the refresh",
                    crate::spi::relation_name(source).unwrap_or_default()
                ),
                None,
            );
        }
    }
    drained
}

/// Where `shards` live, comparable across two reads of the metadata.
fn signature(shards: &[Shard]) -> Vec<(String, String, String, Option<i64>)> {
    let mut v: Vec<_> = shards
        .iter()
        .map(|s| {
            (
                s.node.key.clone(),
                s.remote.0.clone(),
                s.remote.1.clone(),
                s.placement,
            )
        })
        .collect();
    v.sort();
    v
}

/// The node snapshot this transaction's postgres_fdw reads use, and the
/// node's WAL insert position then; refused when the transaction wrote on
/// the node or read it before a committed drain.
fn fdw_state(source: u32, cap: &Capture, owner: &Owner) -> (String, String) {
    let server: u32 = cap
        .key
        .strip_prefix("server:")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let table = state_table(server);
    let state = owner.run(|| row(&format!("SELECT snapshot, lsn, own_xact FROM {table}"), &[]));
    let (snapshot, lsn, own_xact) = match state {
        Some(r) => (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
            r[2].clone(),
        ),
        None => raise("55000", format!("{} returned no state", cap.link), None),
    };
    if own_xact.is_some() {
        // Its own writes on the node are in what it reads but reach the
        // buffer only after it commits: counted twice.
        raise(
            "0A000",
            format!(
                "this transaction wrote on {} through postgres_fdw; a stream table over {} is refreshed or created in a transaction of its own",
                cap.link,
                crate::spi::relation_name(source).unwrap_or_default()
            ),
            None,
        );
    }
    let now = Snapshot::parse(&snapshot).unwrap_or_else(|| {
        raise(
            "XX000",
            format!("{} sent no pg_snapshot: {snapshot}", cap.link),
            None,
        )
    });
    if let Some(last) = cap.last_snapshot.as_deref().and_then(Snapshot::parse) {
        if !now.includes(&last) {
            raise(
                "40001",
                format!(
                    "this transaction reads {} in a snapshot older than changes already captured from it (it read the node before this refresh); retry the refresh in a transaction of its own",
                    cap.link
                ),
                None,
            );
        }
    }
    (snapshot, lsn)
}

/// Keep writes to Citus table `source` out until this transaction ends:
/// a SHARE lock, which Citus takes on every node with its metadata too,
/// taken as `owner` (it needs UPDATE, DELETE or TRUNCATE on the table,
/// as any role holding writers out should) and waiting 10 s at most (a
/// lock request queued behind a long writer holds later writers too).
/// Refused when this transaction wrote the table (its writes would be
/// read now and decoded again after it commits) or reads at an isolation
/// level whose node snapshots may predate the lock.
fn hold_citus_writers(source: u32, owner: &Owner) {
    let name = crate::spi::relation_name(source).unwrap_or_default();
    let wrote = value(
        "SELECT 'true' FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid() \
         AND locktype = 'relation' AND relation = $1::text::oid AND mode = 'RowExclusiveLock'",
        &[Some(source.to_string())],
    );
    if wrote.is_some() {
        raise(
            "0A000",
            format!("this transaction wrote {name}; a stream table over this Citus table is refreshed or created in a transaction of its own"),
            None,
        );
    }
    let isolation = value(
        "SELECT pg_catalog.current_setting('transaction_isolation')",
        &[],
    );
    if isolation.as_deref() != Some("read committed") {
        raise(
            "0A000",
            format!(
                "a stream table over the Citus table {name} is refreshed or created at READ COMMITTED, not {}",
                isolation.unwrap_or_default().to_uppercase()
            ),
            None,
        );
    }
    let may = owner.run(|| {
        value(
            "SELECT pg_catalog.has_table_privilege($1::text::pg_catalog.oid, 'UPDATE, DELETE, TRUNCATE')::pg_catalog.text",
            &[Some(source.to_string())],
        )
    });
    if may.as_deref() != Some("true") {
        raise(
            "42501",
            format!(
                "a refresh over the Citus table {name} holds its writers out, which needs UPDATE, DELETE or TRUNCATE on it; the stream table's owner has none"
            ),
            Some(format!("GRANT UPDATE ON {name} TO <the stream table's owner>, or let its owner create the stream table")),
        );
    }
    // Citus takes the lock on its other nodes only with DDL propagation
    // on, which pg_trickle's own work otherwise turns off.
    crate::security::set_citus_ddl_propagation(true);
    let previous = value("SELECT pg_catalog.current_setting('lock_timeout')", &[]);
    run(
        "SELECT pg_catalog.set_config('lock_timeout', '10s', true)",
        &[],
    );
    owner.run(|| run(&format!("LOCK TABLE {name} IN SHARE MODE"), &[]));
    run(
        "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
        &[Some(previous.unwrap_or_else(|| "0".into()))],
    );
    crate::security::set_citus_ddl_propagation(false);
}

/// A Citus node's present snapshot and WAL insert position, with writes
/// held out (see `hold_citus_writers`). Refused while a prepared
/// transaction holds one of `source`'s shards on the node (a distributed
/// transaction being committed or recovered: it would become visible to
/// the refresh's reads after the drain).
fn citus_state(source: u32, cap: &Capture, owner: &Owner, shards: &[Shard]) -> (String, String) {
    let names: Vec<String> = shards
        .iter()
        .filter(|s| s.node.key == cap.key)
        .map(|s| node::lit(&format!("{}.{}", qi(&s.remote.0), qi(&s.remote.1))))
        .collect();
    let sql = format!(
        "SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text, pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text, \
                (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks l WHERE l.pid IS NULL AND l.locktype = 'relation' \
                 AND l.relation = ANY (ARRAY[{}]::pg_catalog.regclass[]::pg_catalog.oid[]))::pg_catalog.text",
        names.join(", ")
    );
    let link = cap.link.clone();
    let Some(r) = owner.run(|| node::query(&link, &sql, 3)).into_iter().next() else {
        raise("55000", format!("{} returned no state", cap.link), None)
    };
    let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    if get(2) != "0" {
        raise(
            "40001",
            format!(
                "a prepared transaction on {} holds shards of {}; retry the refresh when it is committed or rolled back",
                cap.link,
                crate::spi::relation_name(source).unwrap_or_default()
            ),
            None,
        );
    }
    if Snapshot::parse(&get(0)).is_none() {
        raise("55000", format!("{} returned no snapshot", cap.link), None);
    }
    (get(0), get(1))
}

/// Wait (a few seconds at most) until the node has flushed its WAL to
/// `lsn`: a commit is visible before it is flushed with
/// `synchronous_commit = off`, and decoding reads flushed WAL only.
fn wait_flushed(cap: &Capture, owner: &Owner, lsn: &str) {
    let want = parse_lsn(lsn).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let link = cap.link.clone();
        let have = owner
            .run(|| node::flushed(&link))
            .as_deref()
            .and_then(parse_lsn)
            .unwrap_or(0);
        if have >= want {
            return;
        }
        // SAFETY: a plain sleep of this backend, which checks for interrupts.
        unsafe { pg_sys::pg_usleep(10_000) };
        pgrx::check_for_interrupts!();
    }
    raise(
        "55000",
        format!("{} did not flush its WAL to {lsn} within 5 s", cap.link),
        None,
    );
}

/// Whether stream table `id` is marked for reinitialisation now, when
/// one of `relids` is sharded (a drain may have just marked it).
pub fn marked_for_reinit(id: i64, relids: &[u32]) -> bool {
    let sharded = relids.iter().any(|r| !shards(*r).0.is_empty());
    sharded
        && value(
            "SELECT needs_reinit::text FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
            &[Some(id.to_string())],
        )
        .as_deref()
            == Some("true")
}

/// The lease holder name of this backend's drains.
fn holder() -> String {
    // SAFETY: MyProcPid is set for every backend.
    let pid = unsafe { pg_sys::MyProcPid };
    if crate::scheduler::is_scheduler() {
        "scheduler".into()
    } else {
        format!("session {pid}")
    }
}

/// Drain every (source, node) row this backend may (the scheduler's tick,
/// and `drain_remote_capture()`): skip rows another drain has locked or
/// another holder leases; advance each slot to what committed drains
/// wrote; decode up to the node's flushed WAL. A failing node is recorded
/// and retried later with backoff; the others go on. Returns the changes
/// written.
pub fn drain_all() -> usize {
    drain_list()
        .into_iter()
        .map(|(source, node, owner)| drain_entry(source, &node, &owner))
        .sum()
}

/// The (source, node, source owner) rows due for a drain.
pub fn drain_list() -> Vec<(u32, String, String)> {
    rows(
        "SELECT r.source_relid::text, r.node, st.owner::text FROM pgtrickle.pgt_remote_capture r \
         CROSS JOIN LATERAL (SELECT c.relowner AS owner FROM pg_catalog.pg_class c WHERE c.oid = r.source_relid) st \
         WHERE r.retry_after IS NULL OR r.retry_after <= now() ORDER BY 1, 2",
        &[],
    )
    .into_iter()
    .filter_map(|r| Some((r[0].as_ref()?.parse().ok()?, r[1].clone()?, r[2].clone()?)))
    .collect()
}

/// Drain one (source, node) row as the source's owner (`owner_oid`);
/// a failure is recorded, never raised. The scheduler runs each in a
/// transaction of its own, so a slow node holds up only its own row.
pub fn drain_entry(source: u32, node: &str, owner_oid: &str) -> usize {
    let owner = Owner {
        role: pg_sys::Oid::from(owner_oid.parse::<u32>().unwrap_or(0)),
        search_path: "pg_catalog, pg_temp".into(),
    };
    let own = owner.clone();
    let _ = crate::spi::in_subtransaction(move || forget_stale(source, &shards(source).0, &own));
    let key = node.to_string();
    match crate::spi::in_subtransaction(move || drain_one(source, &key, &owner)) {
        Ok(n) => n,
        Err(f) => {
            record_failure(source, node, &format!("{}: {}", f.sqlstate, f.message));
            0
        }
    }
}

fn drain_one(source: u32, key: &str, owner: &Owner) -> usize {
    let Some(cap) = lock(source, key, true) else {
        return 0;
    };
    let me = holder();
    let now = value(
        "SELECT (extract(epoch FROM now()) * 1e6)::bigint::text",
        &[],
    )
    .and_then(|s| s.parse::<i64>().ok())
    .unwrap_or(0);
    let length = i64::from(crate::gucs::REMOTE_LEASE_SECONDS.get()) * 1_000_000;
    let lease = match decide_lease(cap.lease.as_ref(), &me, now, length) {
        LeaseDecision::Wait { .. } => return 0,
        LeaseDecision::Hold(l) => (l, None),
        LeaseDecision::TakeOver { lease, from } => (lease, Some(from)),
    };
    let (link, slot, settled) = (
        cap.link.clone(),
        cap.slot.clone(),
        lsn_text(cap.progress.settled),
    );
    let confirmed = owner.run(|| node::advance(&link, &slot, &settled));
    let (snapshot, flushed) = owner.run(|| node::own_snapshot(&link));
    let n = drain_to(source, &cap, owner, &snapshot, &flushed);
    let taken_over = lease.1.clone();
    let lapsed_at = cap.lease.as_ref().map(|l| l.expires_at.to_string());
    let new_holder = cap.lease.as_ref().map(|l| l.holder.as_str()) != Some(lease.0.holder.as_str());
    run(
        "UPDATE pgtrickle.pgt_remote_capture SET confirmed_lsn = coalesce($3::pg_lsn, confirmed_lsn), lease_holder = $4, \
         lease_acquired_at = to_timestamp($5::float8 / 1e6), lease_expires_at = to_timestamp($6::float8 / 1e6) \
         WHERE source_relid = $1::text::oid AND node = $2",
        &[
            Some(source.to_string()),
            Some(key.to_string()),
            confirmed,
            Some(lease.0.holder.clone()),
            Some(lease.0.acquired_at.to_string()),
            Some(lease.0.expires_at.to_string()),
        ],
    );
    if new_holder {
        run(
            "INSERT INTO pgtrickle.pgt_remote_lease_history \
               (source_relid, node, server_oid, holder, acquired_at, expires_at, taken_from, taken_from_expired_at) \
             VALUES ($1::text::oid, $2, $8::text::oid, $3, to_timestamp($4::float8 / 1e6), to_timestamp($5::float8 / 1e6), $6, \
                     CASE WHEN $6 IS NULL THEN NULL ELSE to_timestamp($7::float8 / 1e6) END)",
            &[
                Some(source.to_string()),
                Some(key.to_string()),
                Some(lease.0.holder.clone()),
                Some(lease.0.acquired_at.to_string()),
                Some(lease.0.expires_at.to_string()),
                taken_over,
                lapsed_at,
                key.strip_prefix("server:").map(str::to_string),
            ],
        );
    }
    n
}

/// Record a failed drain of (source, node): the error, one more failed
/// tick, and when to try again (backoff doubling to a minute).
fn record_failure(source: u32, node: &str, error: &str) {
    run(
        "UPDATE pgtrickle.pgt_remote_capture SET last_error = $3, failed_ticks = failed_ticks + 1, \
         retry_after = now() + least(60, power(2, least(failed_ticks, 6))) * interval '1 second' \
         WHERE source_relid = $1::text::oid AND node = $2",
        &[Some(source.to_string()), Some(node.to_string()), Some(error.to_string())],
    );
    let r = row(
        "SELECT failed_ticks::text, node_label FROM pgtrickle.pgt_remote_capture WHERE source_relid = $1::text::oid AND node = $2",
        &[Some(source.to_string()), Some(node.to_string())],
    )
    .unwrap_or_default();
    let failed: i64 = r
        .first()
        .cloned()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let label = r
        .get(1)
        .cloned()
        .flatten()
        .unwrap_or_else(|| node.to_string());
    if failed >= i64::from(crate::gucs::REMOTE_FAILED_TICKS_WARNING.get()) {
        pgrx::warning!(
            "pg_trickle: capture of source {source} on {label} failed {failed} times in a row: {error}"
        );
    }
}

/// Remove `source`'s capture on every node (its last reader is gone, or
/// it is being dropped). A node that cannot be reached keeps its slot;
/// `drop_orphaned_remote_slots()` removes it later.
pub fn drop_for(source: u32) {
    let owner_oid = value(
        "SELECT relowner::text FROM pg_catalog.pg_class WHERE oid = $1::text::oid",
        &[Some(source.to_string())],
    );
    for r in rows(
        "SELECT r.node, r.slot_name::text, r.node_label FROM pgtrickle.pgt_remote_capture r WHERE r.source_relid = $1::text::oid",
        &[Some(source.to_string())],
    ) {
        let (key, slot) = (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default());
        let Some(link) = resolve(&key) else {
            pgrx::warning!(
                "pg_trickle: {} is gone; its capture slot {slot} stays on it",
                r[2].clone().unwrap_or(key)
            );
            continue;
        };
        let owner = owner_oid.as_deref().and_then(|o| o.parse::<u32>().ok()).map(|o| Owner {
            role: pg_sys::Oid::from(o),
            search_path: "pg_catalog, pg_temp".into(),
        });
        let teardown = move || match &owner {
            Some(o) => o.run(|| node::tear_down(&link, &slot)),
            None => node::tear_down(&link, &slot),
        };
        if let Err(f) = crate::spi::in_subtransaction(teardown) {
            pgrx::warning!("pg_trickle: could not drop a capture slot on its node ({}): {}", f.sqlstate, f.message);
        }
    }
    run(
        "DELETE FROM pgtrickle.pgt_remote_capture WHERE source_relid = $1::text::oid",
        &[Some(source.to_string())],
    );
}

/// Drain every node slot now, as a holder of its own: a slot whose lease
/// another holder (the scheduler) still holds is skipped; a lapsed lease is
/// taken over.
/// Superuser only. Returns the changes written.
#[pg_extern]
fn drain_remote_capture() -> i64 {
    crate::security::require_superuser("drain_remote_capture");
    crate::security::as_extension(|| {
        crate::compat::require_current_sql();
        drain_all() as i64
    })
}

/// Drop capture slots of this database on the nodes of its postgres_fdw
/// servers and on the Citus nodes that no sharded source uses (left by a
/// creation that failed after making its slot, or a node unreachable at
/// drop). Superuser only. Returns `node/slot` of each dropped slot.
#[pg_extern]
fn drop_orphaned_remote_slots() -> Vec<String> {
    crate::security::require_superuser("drop_orphaned_remote_slots");
    crate::security::as_extension(|| {
        let prefix = slot_prefix();
        let known: Vec<String> = first_column(
            "SELECT slot_name::text FROM pgtrickle.pgt_remote_capture",
            &[],
        );
        let mut dropped = Vec::new();
        let links = node::mapped_servers()
            .into_iter()
            .map(Link::Server)
            .chain(citus::nodes());
        for server in links {
            let s = server.clone();
            let p = prefix.clone();
            let Ok(slots) = crate::spi::in_subtransaction(move || node::slots_with_prefix(&s, &p))
            else {
                continue;
            };
            for slot in slots.into_iter().filter(|s| !known.contains(s)) {
                let (sv, sl) = (server.clone(), slot.clone());
                match crate::spi::in_subtransaction(move || node::tear_down(&sv, &sl)) {
                    Ok(()) => dropped.push(format!("{server}/{slot}")),
                    Err(f) => pgrx::warning!(
                        "pg_trickle: could not drop slot {slot} on {server} ({}): {}",
                        f.sqlstate,
                        f.message
                    ),
                }
            }
        }
        dropped
    })
}
