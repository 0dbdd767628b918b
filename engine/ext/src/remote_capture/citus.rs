//! Citus tables as sharded sources: which nodes hold a distributed,
//! reference or Citus local table's rows, read from Citus's metadata
//! (`pg_dist_partition`, `pg_dist_shard`, `pg_dist_placement`,
//! `pg_dist_node`), and the shard relations (`orders_102008`) those nodes
//! write, which map back to the source.
//!
//! A Citus table gets no trigger of pg_trickle (Citus refuses triggers on
//! distributed tables, or runs them on the shards where no change buffer
//! exists): its changes are captured only from the nodes' WAL. Each shard
//! is captured on one placement, the one on the lowest group among active
//! primary nodes, so a reference table (a placement on every node) is
//! decoded once.

use pg_trickle_core::wal::remote::{citus_shard_relation, NAME_LIMIT};
use pgrx::pg_sys;

use super::node::Link;
use super::{Node, Shard};
use crate::spi::{first_column, raise, row, rows, value};

/// Whether Citus's metadata exists in this database.
pub fn installed() -> bool {
    // A syscache lookup, not a statement: every refresh asks, per source.
    // SAFETY: get_relname_relid reads the syscache and returns InvalidOid
    // for a missing relation.
    let oid = unsafe {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            pg_sys::get_relname_relid(
                c"pg_dist_partition".as_ptr(),
                pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE),
            )
        })
    };
    oid != pg_sys::InvalidOid
}

/// Whether `relid` is a table Citus manages (distributed, reference or
/// Citus local).
pub fn is_citus_table(relid: u32) -> bool {
    installed()
        && value(
            "SELECT 'true' FROM pg_catalog.pg_dist_partition WHERE logicalrelid OPERATOR(pg_catalog.=) $1::text::pg_catalog.oid",
            &[Some(relid.to_string())],
        )
        .is_some()
}

/// The key of Citus node `nodeid` at `host:port` in the capture catalog:
/// a node moved to another host (`citus_update_node`, a failover) is a
/// new node, whose slot is set up again (and whose readers are
/// reinitialised).
fn key(nodeid: &str, host: &str, port: i32) -> String {
    format!("citus:{nodeid}@{host}:{port}")
}

/// The link of the node a catalog key names, if Citus still has it there.
pub fn resolve(key: &str) -> Option<Link> {
    let rest = key.strip_prefix("citus:")?;
    let (id, at) = rest.split_once('@')?;
    let (host, port) = at.rsplit_once(':')?;
    if !installed() {
        return None;
    }
    row(
        "SELECT 1::text FROM pg_catalog.pg_dist_node WHERE nodeid::text = $1 AND nodename = $2 AND nodeport::text = $3",
        &[Some(id.to_string()), Some(host.to_string()), Some(port.to_string())],
    )?;
    Some(Link::Citus {
        host: host.to_string(),
        port: port.parse().ok()?,
    })
}

/// The shards of Citus table `source`, each on the node it is captured
/// on. A shard without an active primary placement is an error: its
/// rows could not be captured anywhere.
pub fn shards(source: u32) -> Vec<Shard> {
    let list = rows(
        "SELECT s.shardid::text, ns.nspname::text, c.relname::text, n.nodeid::text, n.nodename::text, n.nodeport::text, n.placementid::text \
         FROM pg_catalog.pg_dist_shard s \
         JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid \
         JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) c.relnamespace \
         LEFT JOIN LATERAL ( \
           SELECT d.nodeid, d.nodename, d.nodeport, p.placementid FROM pg_catalog.pg_dist_placement p \
           JOIN pg_catalog.pg_dist_node d ON d.groupid OPERATOR(pg_catalog.=) p.groupid \
           WHERE p.shardid OPERATOR(pg_catalog.=) s.shardid AND d.isactive AND d.noderole OPERATOR(pg_catalog.=) 'primary' \
           ORDER BY d.groupid LIMIT 1) n ON true \
         WHERE s.logicalrelid OPERATOR(pg_catalog.=) $1::text::pg_catalog.oid ORDER BY s.shardid",
        &[Some(source.to_string())],
    );
    list.into_iter()
        .map(|r| {
            let get = |i: usize| r[i].clone().unwrap_or_default();
            let id: i64 = get(0).parse().unwrap_or(0);
            let Some(shard) = citus_shard_relation(&get(2), id) else {
                raise(
                    "0A000",
                    format!(
                        "shard {id} of {}: Citus shortens shard names longer than {NAME_LIMIT} bytes, which capture on other nodes does not follow; rename the table",
                        get(2)
                    ),
                    None,
                )
            };
            let (Some(nodeid), Some(port)) = (r[3].clone(), r[5].as_deref().and_then(|p| p.parse().ok())) else {
                raise(
                    "55000",
                    format!("shard {shard} of {} has no placement on an active primary Citus node, so its changes cannot be captured", get(2)),
                    None,
                )
            };
            Shard {
                member: shard.clone(),
                node: Node {
                    key: key(&nodeid, &get(4), port),
                    server_oid: None,
                    link: Link::Citus {
                        host: get(4),
                        port,
                    },
                },
                remote: (get(1), shard),
                placement: r[6].as_deref().and_then(|p| p.parse().ok()),
            }
        })
        .collect()
}

/// What kind of Citus table a `pg_dist_partition.partmethod` makes, for
/// messages.
pub fn kind_label(partmethod: Option<&str>) -> &'static str {
    match partmethod {
        Some("n") => "a Citus reference or local table",
        _ => "a Citus distributed table",
    }
}

/// Why Citus table `source` cannot be captured on its nodes, if it
/// cannot: a partitioned Citus table (its partitions are Citus tables of
/// their own) is not supported yet, and old rows must carry every column
/// (`REPLICA IDENTITY FULL`, which Citus passes to the shards; set by the
/// owner beforehand, since changing it here would lock the shards that
/// capture is being set up on).
pub fn problem(source: u32) -> Option<String> {
    let name = crate::spi::relation_name(source).unwrap_or_default();
    let kind = kind_label(
        value(
            "SELECT partmethod::text FROM pg_catalog.pg_dist_partition WHERE logicalrelid OPERATOR(pg_catalog.=) $1::text::pg_catalog.oid",
            &[Some(source.to_string())],
        )
        .as_deref(),
    );
    // Fail closed on metadata that is not all there (a Citus that is
    // being installed or removed): never half-captured.
    for needed in [
        "pg_catalog.pg_dist_shard",
        "pg_catalog.pg_dist_placement",
        "pg_catalog.pg_dist_node",
    ] {
        let present = value(
            "SELECT (pg_catalog.to_regclass($1) IS NOT NULL)::text",
            &[Some(needed.to_string())],
        );
        if present.as_deref() != Some("true") {
            return Some(format!(
                "{name} is {kind}, but Citus's metadata here has no {needed}: capture on its nodes cannot be set up"
            ));
        }
    }
    let runner = value(
        "SELECT (pg_catalog.to_regprocedure('pg_catalog.master_run_on_worker(text[],integer[],text[],boolean)') IS NOT NULL)::text",
        &[],
    );
    if runner.as_deref() != Some("true") {
        return Some(format!(
            "{name} is {kind}, but Citus's master_run_on_worker() is missing here: capture on its nodes cannot be set up"
        ));
    }
    if !crate::sources::members(source).is_empty() {
        return Some(format!(
            "{name} is a partitioned Citus table: capture on its nodes follows unpartitioned Citus tables only"
        ));
    }
    let full = value(
        "SELECT (relreplident OPERATOR(pg_catalog.=) 'f')::text FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1::text::pg_catalog.oid",
        &[Some(source.to_string())],
    );
    let longest = value(
        "SELECT pg_catalog.max(shardid)::text FROM pg_catalog.pg_dist_shard WHERE logicalrelid OPERATOR(pg_catalog.=) $1::text::pg_catalog.oid",
        &[Some(source.to_string())],
    )
    .and_then(|s| s.parse::<i64>().ok())
    .unwrap_or(0);
    let relname = value(
        "SELECT relname::text FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1::text::pg_catalog.oid",
        &[Some(source.to_string())],
    )
    .unwrap_or_default();
    if citus_shard_relation(&relname, longest).is_none() {
        return Some(format!(
            "the shards of the Citus table {name} have names longer than {NAME_LIMIT} bytes, which Citus shortens and capture on its nodes does not follow"
        ));
    }
    if full.as_deref() != Some("true") {
        return Some(format!(
            "the Citus table {name} does not have REPLICA IDENTITY FULL, which capture on its nodes needs (ALTER TABLE {name} REPLICA IDENTITY FULL)"
        ));
    }
    None
}

/// Every active primary Citus node, for finding orphaned slots.
pub fn nodes() -> Vec<Link> {
    if !installed() {
        return Vec::new();
    }
    first_column(
        "SELECT nodename::text || ':' || nodeport::text FROM pg_catalog.pg_dist_node \
         WHERE isactive AND noderole OPERATOR(pg_catalog.=) 'primary' ORDER BY groupid",
        &[],
    )
    .into_iter()
    .filter_map(|hp: String| {
        let (host, port) = hp.rsplit_once(':')?;
        Some(Link::Citus {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    })
    .collect()
}
