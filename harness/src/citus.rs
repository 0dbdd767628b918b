//! Citus, set up on a [`Topology`]: every node preloads Citus (before
//! pg_trickle) with `wal_level = logical`, the coordinator registers
//! itself and the workers, and a table is distributed over the workers'
//! shards. Citus syncs its metadata to the workers, so clients may write
//! the distributed table through any node.
//!
//! Citus is not packaged for Debian: the topology runs only against a
//! PostgreSQL whose `pg_config --pkglibdir` holds `citus.so`.

use crate::cluster::{describe, Cluster, ClusterError, ClusterOptions, Topology};

/// Why Citus cannot run with the PostgreSQL of `pg_config`, if it cannot.
pub fn unavailable(pg_config: &std::path::Path) -> Option<String> {
    let libdir = std::process::Command::new(pg_config)
        .arg("--pkglibdir")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if std::path::Path::new(&libdir).join("citus.so").exists() {
        None
    } else {
        Some(format!(
            "Citus is not installed in {libdir:?} (install Citus 13 for this PostgreSQL and pass its --pg-config)"
        ))
    }
}

/// Settings every node of a Citus topology runs with.
pub fn node_settings() -> Vec<String> {
    let mut s = crate::sharding::node_settings();
    s.extend([
        "shared_preload_libraries = 'citus,pg_trickle'".to_string(),
        "citus.shard_count = 4".to_string(),
    ]);
    s
}

/// Start a coordinator and `workers` workers with [`node_settings`] (on
/// top of `opts.settings`).
pub fn start(
    parent: &std::path::Path,
    opts: &ClusterOptions,
    workers: usize,
) -> Result<Topology, ClusterError> {
    crate::sharding::start_with(parent, opts, workers, node_settings())
}

/// How pg_trickle names `node` in its capture status.
pub fn node_label(node: &Cluster) -> String {
    port_label(node.port)
}

/// How pg_trickle names the Citus node registered on `port`.
pub fn port_label(port: u16) -> String {
    format!("Citus node 127.0.0.1:{port}")
}

/// Create Citus in `database` on every node, register the nodes, and
/// distribute `table` (`columns`, distributed by `column`, with
/// `REPLICA IDENTITY FULL`, which capture on the nodes needs). Returns a
/// connection to the coordinator.
pub fn create(
    topo: &Topology,
    database: &str,
    table: &str,
    columns: &str,
    column: &str,
) -> Result<postgres::Client, String> {
    let ports: Vec<u16> = topo.workers.iter().map(|w| w.port).collect();
    create_through(topo, database, table, columns, column, &ports)
}

/// [`create`], with worker `k` registered (so reached by every node) on
/// `ports[k]` (a [`crate::link::Link`] in front of it, say).
pub fn create_through(
    topo: &Topology,
    database: &str,
    table: &str,
    columns: &str,
    column: &str,
    ports: &[u16],
) -> Result<postgres::Client, String> {
    for (k, w) in topo.workers.iter().enumerate() {
        let mut c = w.connect(database).map_err(|e| e.to_string())?;
        c.batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
            .map_err(|e| format!("worker {}: {}", k + 1, describe(&e)))?;
    }
    let mut db = topo
        .coordinator
        .connect(database)
        .map_err(|e| e.to_string())?;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
        .map_err(|e| format!("coordinator: {}", describe(&e)))?;
    db.batch_execute(&format!(
        "SELECT citus_set_coordinator_host('127.0.0.1', {})",
        topo.coordinator.port
    ))
    .map_err(|e| format!("coordinator: {}", describe(&e)))?;
    for port in ports {
        db.batch_execute(&format!("SELECT citus_add_node('127.0.0.1', {port})"))
            .map_err(|e| format!("adding the worker on port {port}: {}", describe(&e)))?;
    }
    db.batch_execute(&format!(
        "CREATE TABLE public.{table} ({columns}); \
         ALTER TABLE public.{table} REPLICA IDENTITY FULL; \
         SELECT create_distributed_table('public.{table}', '{column}')"
    ))
    .map_err(|e| format!("distributing {table}: {}", describe(&e)))?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_citus_so_the_topology_is_unavailable_naming_where_it_looked() {
        let dir = std::env::temp_dir().join(format!("pgt-no-citus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("pg_config");
        std::fs::write(&script, format!("#!/bin/sh\necho {}\n", dir.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let why = unavailable(&script).expect("no citus.so there");
        assert!(
            why.contains("Citus") && why.contains(&dir.display().to_string()),
            "{why}"
        );
        std::fs::write(dir.join("citus.so"), b"").unwrap();
        assert_eq!(unavailable(&script), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
