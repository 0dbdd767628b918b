//! `harness chaos --topology sharding|citus`: faults on a coordinator and
//! two worker clusters, under writers on every node, with the scheduler
//! draining the workers' slots and refreshing. Two kinds of sharding:
//!
//! - `sharding`, PostgreSQL's own: `orders` partitioned by region, each
//!   region a postgres_fdw foreign table on one worker; the workers'
//!   writers write their shard directly.
//! - `citus`: `orders` a Citus distributed table (four shards over the
//!   two workers); every writer writes `orders` through its node. A
//!   partition move is a shard move there, and dropping a node drains its
//!   shards to the other worker and removes it.
//!
//! After the faults the load stops and the run requires: every slot
//! drained past the WAL each worker had written, the scheduler caught up,
//! every stream table equal to its query recomputed, no FULL refresh but
//! the reinitialisation a topology change asks for, no lease taken over
//! before it lapsed (from the lease history), and catalog rows only for
//! the nodes that still hold rows. `--topology citus` needs Citus
//! installed (see `crate::citus`) and is otherwise reported as skipped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::Client;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::verdict::{self, StreamTable};
use super::writers::{note, session, LoadTally};
use super::{faults, RunFacts};
use crate::cluster::{describe, ClusterOptions, Topology};
use crate::link::Link;
use crate::sharding::{self, ShardedTable};

/// Which sharding a topology run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PostgreSQL's own: postgres_fdw partitions.
    Sharding,
    /// A Citus distributed table.
    Citus,
}

impl Kind {
    /// How pg_trickle names worker `k` (0-based) in its capture status.
    fn label(self, links: &[Link], k: usize) -> String {
        match self {
            Kind::Sharding => format!("server w{}", k + 1),
            Kind::Citus => crate::citus::port_label(links[k].port()),
        }
    }
}

/// A topology scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopoScenario {
    /// A worker stopped in immediate mode while the scheduler refreshes, then started.
    KillWorkerMidRefresh,
    /// The coordinator stopped in immediate mode while its scheduler holds the leases.
    RestartCoordinatorHoldingLease,
    /// The scheduler pauses; its leases lapse and a second drainer takes them over.
    LeaseLapsesUnderSecondDrainer,
    /// A node's partition is detached and its server dropped while writes go on.
    DropNode,
    /// A partition moves to another node (copied, detached, attached) while writes go on.
    MovePartition,
    /// The link from the coordinator to a worker is cut while the scheduler refreshes, then restored.
    CutLinkMidRefresh,
    /// The link from the coordinator to a worker is slowed while writes and refreshes go on.
    SlowLink,
}

impl TopoScenario {
    /// Every scenario, in run order.
    pub const ALL: [TopoScenario; 7] = [
        TopoScenario::KillWorkerMidRefresh,
        TopoScenario::RestartCoordinatorHoldingLease,
        TopoScenario::LeaseLapsesUnderSecondDrainer,
        TopoScenario::DropNode,
        TopoScenario::MovePartition,
        TopoScenario::CutLinkMidRefresh,
        TopoScenario::SlowLink,
    ];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TopoScenario::KillWorkerMidRefresh => "kill_worker_mid_refresh",
            TopoScenario::RestartCoordinatorHoldingLease => "restart_coordinator_holding_lease",
            TopoScenario::LeaseLapsesUnderSecondDrainer => "lease_lapses_under_second_drainer",
            TopoScenario::DropNode => "drop_node",
            TopoScenario::MovePartition => "move_partition",
            TopoScenario::CutLinkMidRefresh => "cut_link_mid_refresh",
            TopoScenario::SlowLink => "slow_link",
        }
    }

    /// Whether worker 2 stops holding rows of the source (a Citus shard
    /// move moves one of its two shards).
    fn leaves_worker_2(self, kind: Kind) -> bool {
        match self {
            TopoScenario::DropNode => true,
            TopoScenario::MovePartition => kind == Kind::Sharding,
            _ => false,
        }
    }

    /// Whether the scenario changes where rows live, so that the readers
    /// are reinitialised (one FULL refresh each, asked for).
    fn moves_rows(self) -> bool {
        matches!(self, TopoScenario::DropNode | TopoScenario::MovePartition)
    }
}

const ORDERS: &str = "region int NOT NULL, id bigint NOT NULL, amount numeric(10,2) NOT NULL";

const COPY: StreamTable = StreamTable {
    name: "topo_copy",
    query: "SELECT region, id, amount FROM orders",
    schedule: Some("1s"),
    source: "orders",
};

const TOTALS: StreamTable = StreamTable {
    name: "topo_totals",
    query: "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region",
    schedule: Some("1s"),
    source: "orders",
};

/// Settings of every node: a quick scheduler, short leases.
fn settings() -> Vec<String> {
    vec![
        "pg_trickle.scheduler_interval_ms = 200".into(),
        "pg_trickle.remote_lease_seconds = 2".into(),
        "log_min_messages = warning".into(),
        // A lock wait past deadlock_timeout is logged with who holds the
        // lock: the evidence when a fault's DDL meets a deadlock.
        "log_lock_waits = on".into(),
    ]
}

/// The writers: thread 0 through the coordinator, thread `i` directly on
/// worker `i`; each owns its id range.
struct TopoLoad {
    /// One stop flag per thread.
    stops: Vec<Arc<AtomicBool>>,
    threads: Vec<std::thread::JoinHandle<LoadTally>>,
}

/// SQLSTATEs a writer meets while a worker is down or gone
/// (postgres_fdw's and Citus's connection failures, a row for a region
/// with no partition left, a node whose Citus metadata went with it).
const TOLERATED: &[&str] = &["08001", "08006", "HV00N", "23514", "42P01"];

impl TopoLoad {
    fn start(kind: Kind, topo: &Topology, seed: u64) -> TopoLoad {
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        let targets: Vec<(String, Option<usize>)> =
            std::iter::once((topo.coordinator.conninfo("postgres"), None))
                .chain(
                    topo.workers
                        .iter()
                        .enumerate()
                        .map(|(k, w)| (w.conninfo("postgres"), Some(k + 1))),
                )
                .collect();
        for (t, (conninfo, worker)) in targets.into_iter().enumerate() {
            let stop = Arc::new(AtomicBool::new(false));
            stops.push(stop.clone());
            threads.push(std::thread::spawn(move || {
                write_loop(kind, t, &conninfo, worker, seed, &stop)
            }));
        }
        TopoLoad { stops, threads }
    }

    /// Stop the writer on worker `i` (1-based), before its node leaves:
    /// clients stop using a node that is taken out of the cluster.
    fn retire_worker(&self, i: usize) {
        self.stops[i].store(true, Ordering::SeqCst);
    }

    fn stop(self) -> LoadTally {
        for s in &self.stops {
            s.store(true, Ordering::SeqCst);
        }
        let mut total = LoadTally::default();
        for t in self.threads {
            match t.join() {
                Ok(tally) => total.add(tally),
                Err(_) => total.unexpected.push("a writer panicked".into()),
            }
        }
        total
    }
}

fn write_loop(
    kind: Kind,
    t: usize,
    conninfo: &str,
    worker: Option<usize>,
    seed: u64,
    stop: &AtomicBool,
) -> LoadTally {
    let mut rng = ChaCha8Rng::seed_from_u64(sqlancer::case::case_seed(seed, t as u64));
    let mut tally = LoadTally::default();
    let tolerated: Vec<String> = TOLERATED.iter().map(|s| s.to_string()).collect();
    let base = (t as i64 + 1) * 1_000_000;
    let mut next = base;
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            client = session(conninfo, &mut tally);
            continue;
        };
        let (table, region) = match (kind, worker) {
            (Kind::Sharding, Some(i)) => (format!("orders_w{i}"), i as i64),
            (Kind::Sharding, None) => ("orders".to_string(), rng.gen_range(1..=2)),
            (Kind::Citus, _) => ("orders".to_string(), rng.gen_range(1..=8)),
        };
        let sql = match rng.gen_range(0..10) {
            0..=4 => {
                let k = rng.gen_range(1..=5);
                let s = format!(
                    "INSERT INTO {table} SELECT {region}, g, (g % 97) + 0.5 FROM generate_series({next}::bigint, {}::bigint) g",
                    next + k - 1
                );
                next += k;
                s
            }
            5..=7 => {
                let lo = rng.gen_range(base..=next.max(base + 1));
                format!(
                    "UPDATE {table} SET amount = amount + 1 WHERE id BETWEEN {lo} AND {} ",
                    lo + 5
                )
            }
            _ => {
                let lo = rng.gen_range(base..=next.max(base + 1));
                format!("DELETE FROM {table} WHERE id BETWEEN {lo} AND {}", lo + 2)
            }
        };
        match c.execute(sql.as_str(), &[]) {
            Ok(n) => {
                tally.committed += 1;
                tally.rows += n;
            }
            Err(e) => note(&e, &tolerated, &mut tally, &mut client, true),
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(3..20)));
    }
    tally
}

/// Start the topology with a [`Link`] in front of each worker (the
/// coordinator, and with Citus every node, reach the workers through
/// them), shard `orders` and create the stream tables.
fn set_up(
    kind: Kind,
    parent: &std::path::Path,
    log_dir: &std::path::Path,
    pg_config: &std::path::Path,
) -> Result<(Topology, Client, Vec<Link>), String> {
    let opts = ClusterOptions {
        pg_config: pg_config.to_path_buf(),
        settings: settings(),
        log_dir: Some(log_dir.to_path_buf()),
        ..ClusterOptions::default()
    };
    let topo = match kind {
        Kind::Sharding => sharding::start(parent, &opts, 2),
        Kind::Citus => crate::citus::start(parent, &opts, 2),
    }
    .map_err(|e| format!("could not start the topology: {e}"))?;
    let links = topo
        .workers
        .iter()
        .map(|w| Link::start(w.port))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("could not start the links to the workers: {e}"))?;
    let ports: Vec<u16> = links.iter().map(Link::port).collect();
    let mut db = match kind {
        Kind::Sharding => {
            let table = ShardedTable {
                name: "orders".into(),
                columns: ORDERS.into(),
            };
            sharding::create_through(&topo, "postgres", &table, &ports)?
        }
        Kind::Citus => {
            crate::citus::create_through(&topo, "postgres", "orders", ORDERS, "region", &ports)?
        }
    };
    let regions = if kind == Kind::Citus { 8 } else { 2 };
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS dblink; CREATE EXTENSION pg_trickle; \
         INSERT INTO orders SELECT 1 + g % {regions}, g, (g % 89) + 0.25 FROM generate_series(1, 4000) g"
    ))
    .map_err(|e| describe(&e))?;
    for st in [&COPY, &TOTALS] {
        db.batch_execute(&format!(
            "SELECT pgtrickle.create_stream_table('{}', $q${}$q$, '{}', 'DIFFERENTIAL')",
            st.name,
            st.query,
            st.schedule.unwrap_or("1s")
        ))
        .map_err(|e| format!("creating {}: {}", st.name, describe(&e)))?;
    }
    Ok((topo, db, links))
}

/// One run of `scenario`; the topology comes back for keeping on failure.
pub fn run_once(
    kind: Kind,
    scenario: TopoScenario,
    seed: u64,
    load_seconds: f64,
    parent: &std::path::Path,
    log_dir: &std::path::Path,
    pg_config: &std::path::Path,
) -> (RunFacts, Result<(), String>, Option<Topology>) {
    let mut facts = RunFacts {
        seed,
        ..RunFacts::default()
    };
    let (topo, mut db, links) = match set_up(kind, parent, log_dir, pg_config) {
        Ok(x) => x,
        Err(e) => return (facts, Err(e), None),
    };
    let marks: Vec<i64> = [&COPY, &TOTALS]
        .iter()
        .map(|st| oracles::engine_api::last_refresh_id(&mut db, st.name).unwrap_or(0))
        .collect();
    let load = TopoLoad::start(kind, &topo, seed);
    let pause = Duration::from_secs_f64(load_seconds);
    std::thread::sleep(pause);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if kind == Kind::Citus && scenario == TopoScenario::DropNode {
        // A removed Citus node keeps its copy of the metadata and would
        // route writes past the lock a refresh takes (see DISTRIBUTED.md).
        load.retire_worker(2);
    }
    let injected = inject(kind, scenario, &topo, &links, &mut db, &mut rng, &mut facts);
    if injected.is_ok() {
        std::thread::sleep(pause);
    }
    facts.load = load.stop();
    let result = injected
        .map_err(|e| format!("injecting the fault: {e}"))
        .and_then(|()| judge(kind, scenario, &topo, &links, &marks, &mut facts));
    (facts, result, Some(topo))
}

fn inject(
    kind: Kind,
    scenario: TopoScenario,
    topo: &Topology,
    links: &[Link],
    db: &mut Client,
    rng: &mut ChaCha8Rng,
    facts: &mut RunFacts,
) -> Result<(), String> {
    let mut note = |what: String| {
        facts.injected.faults.push(what);
        facts.injected.mid_operation += 1;
    };
    match scenario {
        TopoScenario::KillWorkerMidRefresh => {
            let w = rng.gen_range(0..topo.workers.len());
            scheduler_refreshing(db)?;
            topo.workers[w]
                .stop_immediate()
                .map_err(|e| e.to_string())?;
            note(format!(
                "immediate shutdown of worker {} while the scheduler refreshed",
                w + 1
            ));
            std::thread::sleep(Duration::from_millis(rng.gen_range(500..2500)));
            topo.workers[w].start_again().map_err(|e| e.to_string())?;
        }
        TopoScenario::RestartCoordinatorHoldingLease => {
            let started = Instant::now();
            loop {
                let held: i64 = db
                    .query_one(
                        "SELECT count(*) FROM pgtrickle.pgt_remote_capture WHERE lease_holder = 'scheduler' AND lease_expires_at > now()",
                        &[],
                    )
                    .map_err(|e| describe(&e))?
                    .get(0);
                if held > 0 {
                    break;
                }
                if started.elapsed() > faults::REACH_LIMIT {
                    return Err("the scheduler never held a lease".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            *db = faults::immediate_restart(&topo.coordinator)?;
            note(
                "immediate shutdown of the coordinator while its scheduler held the node leases"
                    .into(),
            );
        }
        TopoScenario::LeaseLapsesUnderSecondDrainer => {
            for sql in [
                "ALTER SYSTEM SET pg_trickle.enabled = off",
                "SELECT pg_reload_conf()",
            ] {
                db.batch_execute(sql).map_err(|e| describe(&e))?;
            }
            // Past the 2 s lease, a session drains: it must take over.
            std::thread::sleep(Duration::from_millis(3000));
            let mut taken = 0;
            for _ in 0..5 {
                db.batch_execute("SELECT pgtrickle.drain_remote_capture()")
                    .map_err(|e| describe(&e))?;
                taken = db
                    .query_one(
                        "SELECT count(*) FROM pgtrickle.pgt_remote_lease_history WHERE holder LIKE 'session %' AND taken_from = 'scheduler'",
                        &[],
                    )
                    .map_err(|e| describe(&e))?
                    .get::<_, i64>(0);
                std::thread::sleep(Duration::from_millis(200));
            }
            for sql in [
                "ALTER SYSTEM RESET pg_trickle.enabled",
                "SELECT pg_reload_conf()",
            ] {
                db.batch_execute(sql).map_err(|e| describe(&e))?;
            }
            if taken == 0 {
                return Err("no session took over a lapsed scheduler lease".into());
            }
            note(format!("the scheduler paused past its lease; a session took over {taken} node leases, then the scheduler took them back"));
        }
        TopoScenario::CutLinkMidRefresh => {
            let w = rng.gen_range(0..links.len());
            scheduler_refreshing(db)?;
            links[w].cut();
            let held = rng.gen_range(1000..3000);
            std::thread::sleep(Duration::from_millis(held));
            links[w].restore();
            note(format!(
                "the link from the coordinator to worker {} cut for {held} ms while the scheduler refreshed",
                w + 1
            ));
        }
        TopoScenario::SlowLink => {
            let w = rng.gen_range(0..links.len());
            let delay = rng.gen_range(50..200);
            links[w].set_delay(Duration::from_millis(delay));
            std::thread::sleep(Duration::from_millis(4000));
            links[w].set_delay(Duration::ZERO);
            note(format!(
                "the link from the coordinator to worker {} held every chunk {delay} ms for 4 s",
                w + 1
            ));
        }
        TopoScenario::DropNode if kind == Kind::Citus => {
            let port = links[1].port();
            retry_deadlocks(
                db,
                &format!(
                    "SELECT citus_drain_node('127.0.0.1', {port}, shard_transfer_mode => 'block_writes'); \
                     SELECT citus_remove_node('127.0.0.1', {port})"
                ),
            )?;
            note("worker 2's shards drained to worker 1 and the node removed while the writers went on".into());
        }
        TopoScenario::MovePartition if kind == Kind::Citus => {
            let (from, to) = (links[1].port(), links[0].port());
            let shard: i64 = db
                .query_one(
                    "SELECT min(p.shardid) FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) \
                     JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = 'orders'::regclass AND n.nodeport = $1",
                    &[&i32::from(from)],
                )
                .map_err(|e| describe(&e))?
                .get(0);
            retry_deadlocks(
                db,
                &format!(
                    "SELECT citus_move_shard_placement({shard}, '127.0.0.1', {from}, '127.0.0.1', {to})"
                ),
            )?;
            note(format!(
                "shard {shard} moved from worker 2 to worker 1 (logical replication) while the writers went on"
            ));
        }
        TopoScenario::DropNode => {
            db.batch_execute(
                "ALTER TABLE orders DETACH PARTITION orders_w2; DROP FOREIGN TABLE orders_w2; DROP SERVER w2 CASCADE",
            )
            .map_err(|e| describe(&e))?;
            note(
                "worker 2's partition detached and its server dropped while the writers went on"
                    .into(),
            );
        }
        TopoScenario::MovePartition => {
            topo.workers[0]
                .connect("postgres")
                .map_err(|e| e.to_string())?
                .batch_execute(&format!("CREATE TABLE public.orders_r2 ({ORDERS})"))
                .map_err(|e| describe(&e))?;
            // The whole table first, so no lock is upgraded midway; a
            // deadlock with the writers is retried, as an operator would.
            let mv = format!(
                "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; \
                 CREATE FOREIGN TABLE orders_r2 ({ORDERS}) SERVER w1 OPTIONS (schema_name 'public', table_name 'orders_r2'); \
                 INSERT INTO orders_r2 SELECT * FROM orders_w2; \
                 ALTER TABLE orders DETACH PARTITION orders_w2; \
                 ALTER TABLE orders ATTACH PARTITION orders_r2 FOR VALUES IN (2); \
                 DROP FOREIGN TABLE orders_w2; COMMIT"
            );
            retry_deadlocks(db, &mv)?;
            note(
                "region 2 moved from worker 2 to a new shard on worker 1 while the writers went on"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Wait until the scheduler is in a refresh (as `pg_stat_activity` shows).
fn scheduler_refreshing(db: &mut Client) -> Result<(), String> {
    faults::wait_for(
        db,
        "the scheduler refreshing",
        "backend_type = 'pg_trickle scheduler' AND query LIKE 'pg_trickle scheduler: refreshing%'",
        |a| a.state == "active",
    )
    .map(|_| ())
}

/// Run `sql`, again after a deadlock with the writers (five times at
/// most, waiting a little longer each time), as an operator would. When
/// it gives up, the error names every deadlock's cycle (the server's
/// DETAIL), so a failure says which processes and locks met.
fn retry_deadlocks(db: &mut Client, sql: &str) -> Result<(), String> {
    let mut cycles = Vec::new();
    loop {
        match db.batch_execute(sql) {
            Ok(()) => return Ok(()),
            Err(e) if e.code().map(|c| c.code()) == Some("40P01") => {
                let _ = db.batch_execute("ROLLBACK");
                cycles.push(
                    e.as_db_error()
                        .and_then(|d| d.detail())
                        .unwrap_or("no detail")
                        .replace('\n', " "),
                );
                if cycles.len() > 5 {
                    return Err(format!(
                        "{} (deadlocked {} times in a row: {})",
                        describe(&e),
                        cycles.len(),
                        cycles.join(" | ")
                    ));
                }
                std::thread::sleep(Duration::from_millis(200 << cycles.len()));
            }
            Err(e) => return Err(describe(&e)),
        }
    }
}

fn judge(
    kind: Kind,
    scenario: TopoScenario,
    topo: &Topology,
    links: &[Link],
    marks: &[i64],
    facts: &mut RunFacts,
) -> Result<(), String> {
    if !facts.load.unexpected.is_empty() {
        return Err(format!(
            "the writers met failures no fault explains: {}",
            facts.load.unexpected.join("; ")
        ));
    }
    let mut db = faults::recovered(&topo.coordinator)?;
    // Every node slot drained past the WAL its worker has written.
    let live: Vec<usize> = if scenario.leaves_worker_2(kind) {
        vec![0]
    } else {
        (0..topo.workers.len()).collect()
    };
    for k in &live {
        let mut w = topo.workers[*k]
            .connect("postgres")
            .map_err(|e| e.to_string())?;
        let end: String = w
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .map_err(|e| describe(&e))?
            .get(0);
        let server = kind.label(links, *k);
        let started = Instant::now();
        loop {
            let behind: i64 = db
                .query_one(
                    "SELECT count(*) FROM pgtrickle.pgt_remote_capture \
                     WHERE node_label = $1 AND settled_lsn < $2::text::pg_lsn",
                    &[&server, &end],
                )
                .map_err(|e| describe(&e))?
                .get(0);
            if behind == 0 {
                break;
            }
            if started.elapsed() > verdict::CATCH_UP_LIMIT {
                return Err(format!(
                    "the slot on {server} was not drained to {end} within {} s",
                    verdict::CATCH_UP_LIMIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    verdict::catch_up(&mut db, &[&COPY, &TOTALS])?;
    let mut problems = Vec::new();
    for (st, mark) in [&COPY, &TOTALS].iter().zip(marks) {
        match verdict::compare_with_query(&mut db, st) {
            Ok(c) => facts.rows_compared += c.rows,
            Err((c, diff)) => {
                facts.lost += c.lost;
                facts.duplicated += c.extra;
                problems.push(diff);
            }
        }
        let h = verdict::refreshes_since(&mut db, st.name, *mark)?;
        facts.differential_refreshes += h.differential;
        facts
            .failed_refreshes
            .extend(h.errors.iter().map(|e| format!("{}: {e}", st.name)));
        for f in h.full {
            let asked = scenario.moves_rows() && f.starts_with("FULL (reinitialisation");
            if !asked {
                problems.push(format!("{} ran FULL unasked: {f}", st.name));
            }
            facts.full_refreshes.push(format!("{}: {f}", st.name));
        }
    }
    let overlapping: i64 = db
        .query_one(
            "SELECT count(*) FROM pgtrickle.pgt_remote_lease_history WHERE taken_from IS NOT NULL AND acquired_at < taken_from_expired_at",
            &[],
        )
        .map_err(|e| describe(&e))?
        .get(0);
    if overlapping > 0 {
        problems.push(format!(
            "{overlapping} leases were taken over before they lapsed"
        ));
    }
    let servers: Vec<String> = db
        .query(
            "SELECT node_label FROM pgtrickle.pgt_remote_capture ORDER BY 1",
            &[],
        )
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want: Vec<String> = live.iter().map(|k| kind.label(links, *k)).collect();
    want.sort();
    if servers != want {
        problems.push(format!(
            "capture rows for nodes {servers:?}, expected {want:?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_scenarios_have_distinct_names() {
        let mut n: Vec<&str> = TopoScenario::ALL.iter().map(|s| s.name()).collect();
        n.sort();
        n.dedup();
        assert_eq!(n.len(), TopoScenario::ALL.len());
    }

    #[test]
    fn a_citus_shard_move_keeps_worker_2_but_moves_rows() {
        assert!(!TopoScenario::MovePartition.leaves_worker_2(Kind::Citus));
        assert!(TopoScenario::MovePartition.leaves_worker_2(Kind::Sharding));
        assert!(TopoScenario::MovePartition.moves_rows());
        assert!(!TopoScenario::KillWorkerMidRefresh.moves_rows());
    }
}
