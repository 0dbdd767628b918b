//! PostgreSQL's own sharding, set up on a [`Topology`]: a partitioned
//! table on the coordinator whose partitions are `postgres_fdw` foreign
//! tables, one per worker, each over a table of that worker. Workers run
//! with `wal_level = logical` (capture on the node reads its WAL).
//!
//! The coordinator names each worker's server `w<i>` (1-based) and maps
//! every local role to the worker's superuser (clusters trust loopback
//! logins, so no password is involved).

use crate::cluster::{describe, ClusterError, ClusterOptions, Topology, TopologySpec};

/// Settings every node of a sharding topology runs with.
pub fn node_settings() -> Vec<String> {
    vec![
        "wal_level = logical".into(),
        "max_replication_slots = 20".into(),
        "max_wal_senders = 20".into(),
        "max_prepared_transactions = 10".into(),
    ]
}

/// Start a coordinator and `workers` workers with [`node_settings`] (on
/// top of `opts.settings`).
pub fn start(
    parent: &std::path::Path,
    opts: &ClusterOptions,
    workers: usize,
) -> Result<Topology, ClusterError> {
    start_with(parent, opts, workers, node_settings())
}

/// Start a coordinator and `workers` workers with `settings` on top of
/// `opts.settings`.
pub fn start_with(
    parent: &std::path::Path,
    opts: &ClusterOptions,
    workers: usize,
    settings: Vec<String>,
) -> Result<Topology, ClusterError> {
    let mut opts = opts.clone();
    opts.settings.extend(settings);
    Topology::start(parent, &opts, TopologySpec { workers })
}

/// A sharded table: its name on the coordinator, its columns, and the
/// partition key's value that routes a row to each worker.
#[derive(Debug, Clone)]
pub struct ShardedTable {
    /// Name on the coordinator (`public`); worker `i` holds `<name>_w<i>`.
    pub name: String,
    /// Column definitions, the first being the list-partition key.
    pub columns: String,
}

impl ShardedTable {
    /// The partition key column (the first of `columns`).
    pub fn key(&self) -> &str {
        self.columns.split_whitespace().next().unwrap_or("")
    }

    /// The table worker `i` (1-based) holds.
    pub fn shard(&self, i: usize) -> String {
        format!("{}_w{i}", self.name)
    }
}

/// Create `table` across `topo`: the shard on each worker, then on the
/// coordinator postgres_fdw, one server and user mapping per worker and
/// the partitioned table with a foreign partition per worker (rows whose
/// key is `i` live on worker `i`).
pub fn create(
    topo: &Topology,
    database: &str,
    table: &ShardedTable,
) -> Result<postgres::Client, String> {
    let ports: Vec<u16> = topo.workers.iter().map(|w| w.port).collect();
    create_through(topo, database, table, &ports)
}

/// [`create`], with the coordinator reaching worker `k` on `ports[k]` (a
/// [`crate::link::Link`] in front of it, say).
pub fn create_through(
    topo: &Topology,
    database: &str,
    table: &ShardedTable,
    ports: &[u16],
) -> Result<postgres::Client, String> {
    for (k, w) in topo.workers.iter().enumerate() {
        let i = k + 1;
        let mut c = w.connect(database).map_err(|e| e.to_string())?;
        c.batch_execute(&format!(
            "CREATE TABLE public.{} ({})",
            table.shard(i),
            table.columns
        ))
        .map_err(|e| format!("worker {i}: {}", describe(&e)))?;
    }
    let mut db = topo
        .coordinator
        .connect(database)
        .map_err(|e| e.to_string())?;
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw; \
         CREATE TABLE public.{} ({}) PARTITION BY LIST ({})",
        table.name,
        table.columns,
        table.key()
    ))
    .map_err(|e| describe(&e))?;
    for (k, w) in topo.workers.iter().enumerate() {
        let i = k + 1;
        db.batch_execute(&format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_foreign_server WHERE srvname = 'w{i}') THEN \
               CREATE SERVER w{i} FOREIGN DATA WRAPPER postgres_fdw \
                 OPTIONS (host '127.0.0.1', port '{port}', dbname '{database}'); \
               CREATE USER MAPPING FOR PUBLIC SERVER w{i} OPTIONS (user '{user}'); \
             END IF; END$$; \
             CREATE FOREIGN TABLE public.{shard} PARTITION OF public.{name} FOR VALUES IN ({i}) \
               SERVER w{i} OPTIONS (schema_name 'public', table_name '{shard}')",
            port = ports[k],
            user = w.user,
            shard = table.shard(i),
            name = table.name,
        ))
        .map_err(|e| format!("coordinator, partition on worker {i}: {}", describe(&e)))?;
    }
    Ok(db)
}
