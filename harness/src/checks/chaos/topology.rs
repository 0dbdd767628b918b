//! `harness chaos --topology sharding`: faults on a coordinator and two
//! worker clusters (PostgreSQL's own sharding: `orders` partitioned by
//! region, each region a postgres_fdw foreign table on one worker),
//! under writers that write through the coordinator and directly on each
//! worker, with the scheduler draining the workers' slots and refreshing.
//!
//! After the faults the load stops and the run requires: every slot
//! drained past the WAL each worker had written, the scheduler caught up,
//! every stream table equal to its query recomputed, no FULL refresh but
//! the reinitialisation a topology change asks for, no lease taken over
//! before it lapsed (from the lease history), and catalog rows only for
//! the nodes that still hold rows. `--topology citus` needs Citus
//! installed and is otherwise reported as skipped.

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
use crate::sharding::{self, ShardedTable};

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
}

impl TopoScenario {
    /// Every scenario, in run order.
    pub const ALL: [TopoScenario; 5] = [
        TopoScenario::KillWorkerMidRefresh,
        TopoScenario::RestartCoordinatorHoldingLease,
        TopoScenario::LeaseLapsesUnderSecondDrainer,
        TopoScenario::DropNode,
        TopoScenario::MovePartition,
    ];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TopoScenario::KillWorkerMidRefresh => "kill_worker_mid_refresh",
            TopoScenario::RestartCoordinatorHoldingLease => "restart_coordinator_holding_lease",
            TopoScenario::LeaseLapsesUnderSecondDrainer => "lease_lapses_under_second_drainer",
            TopoScenario::DropNode => "drop_node",
            TopoScenario::MovePartition => "move_partition",
        }
    }

    /// Whether worker 2 stops holding rows of the source.
    fn leaves_worker_2(self) -> bool {
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
    ]
}

/// The writers: thread 0 through the coordinator, thread `i` directly on
/// worker `i`; each owns its id range.
struct TopoLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadTally>>,
}

/// SQLSTATEs a writer through the coordinator meets while a worker is
/// down or gone (postgres_fdw's connection failures, a row for a region
/// with no partition left).
const COORDINATOR_TOLERATED: &[&str] = &["08001", "08006", "HV00N", "23514", "42P01"];

impl TopoLoad {
    fn start(topo: &Topology, seed: u64) -> TopoLoad {
        let stop = Arc::new(AtomicBool::new(false));
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
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                write_loop(t, &conninfo, worker, seed, &stop)
            }));
        }
        TopoLoad { stop, threads }
    }

    fn stop(self) -> LoadTally {
        self.stop.store(true, Ordering::SeqCst);
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
    t: usize,
    conninfo: &str,
    worker: Option<usize>,
    seed: u64,
    stop: &AtomicBool,
) -> LoadTally {
    let mut rng = ChaCha8Rng::seed_from_u64(sqlancer::case::case_seed(seed, t as u64));
    let mut tally = LoadTally::default();
    let tolerated: Vec<String> = COORDINATOR_TOLERATED
        .iter()
        .map(|s| s.to_string())
        .collect();
    let base = (t as i64 + 1) * 1_000_000;
    let mut next = base;
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            client = session(conninfo, &mut tally);
            continue;
        };
        let (table, region) = match worker {
            Some(i) => (format!("orders_w{i}"), i as i64),
            None => ("orders".to_string(), rng.gen_range(1..=2)),
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

/// Start the topology, shard `orders` and create the stream tables.
fn set_up(
    parent: &std::path::Path,
    log_dir: &std::path::Path,
    pg_config: &std::path::Path,
) -> Result<(Topology, Client), String> {
    let opts = ClusterOptions {
        pg_config: pg_config.to_path_buf(),
        settings: settings(),
        log_dir: Some(log_dir.to_path_buf()),
        ..ClusterOptions::default()
    };
    let topo = sharding::start(parent, &opts, 2)
        .map_err(|e| format!("could not start the topology: {e}"))?;
    let table = ShardedTable {
        name: "orders".into(),
        columns: ORDERS.into(),
    };
    let mut db = sharding::create(&topo, "postgres", &table)?;
    db.batch_execute(
        "CREATE EXTENSION dblink; CREATE EXTENSION pg_trickle; \
         INSERT INTO orders SELECT 1 + g % 2, g, (g % 89) + 0.25 FROM generate_series(1, 4000) g",
    )
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
    Ok((topo, db))
}

/// One run of `scenario`; the topology comes back for keeping on failure.
pub fn run_once(
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
    let (topo, mut db) = match set_up(parent, log_dir, pg_config) {
        Ok(x) => x,
        Err(e) => return (facts, Err(e), None),
    };
    let marks: Vec<i64> = [&COPY, &TOTALS]
        .iter()
        .map(|st| oracles::engine_api::last_refresh_id(&mut db, st.name).unwrap_or(0))
        .collect();
    let load = TopoLoad::start(&topo, seed);
    let pause = Duration::from_secs_f64(load_seconds);
    std::thread::sleep(pause);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let injected = inject(scenario, &topo, &mut db, &mut rng, &mut facts);
    if injected.is_ok() {
        std::thread::sleep(pause);
    }
    facts.load = load.stop();
    let result = injected
        .map_err(|e| format!("injecting the fault: {e}"))
        .and_then(|()| judge(scenario, &topo, &marks, &mut facts));
    (facts, result, Some(topo))
}

fn inject(
    scenario: TopoScenario,
    topo: &Topology,
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
            faults::wait_for(
                db,
                "the scheduler refreshing",
                "backend_type = 'pg_trickle scheduler' AND query LIKE 'pg_trickle scheduler: refreshing%'",
                |a| a.state == "active",
            )?;
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
            let mut attempt = 0;
            loop {
                match db.batch_execute(&mv) {
                    Ok(()) => break,
                    Err(e) if attempt < 5 && e.code().map(|c| c.code()) == Some("40P01") => {
                        let _ = db.batch_execute("ROLLBACK");
                        attempt += 1;
                    }
                    Err(e) => return Err(describe(&e)),
                }
            }
            note(
                "region 2 moved from worker 2 to a new shard on worker 1 while the writers went on"
                    .into(),
            );
        }
    }
    Ok(())
}

fn judge(
    scenario: TopoScenario,
    topo: &Topology,
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
    let live: Vec<usize> = if scenario.leaves_worker_2() {
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
        let server = format!("w{}", k + 1);
        let started = Instant::now();
        loop {
            let behind: i64 = db
                .query_one(
                    "SELECT count(*) FROM pgtrickle.pgt_remote_capture r JOIN pg_foreign_server s ON s.oid = r.server_oid \
                     WHERE s.srvname = $1 AND r.settled_lsn < $2::text::pg_lsn",
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
            let asked = scenario.leaves_worker_2() && f.starts_with("FULL (reinitialisation");
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
            "SELECT coalesce(s.srvname::text, r.server_oid::text) FROM pgtrickle.pgt_remote_capture r \
             LEFT JOIN pg_foreign_server s ON s.oid = r.server_oid ORDER BY 1",
            &[],
        )
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<String> = live.iter().map(|k| format!("w{}", k + 1)).collect();
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

/// Why the Citus topology cannot run here, if it cannot.
pub fn citus_unavailable(pg_config: &std::path::Path) -> Option<String> {
    let libdir = std::process::Command::new(pg_config)
        .arg("--pkglibdir")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !std::path::Path::new(&libdir).join("citus.so").exists() {
        return Some(format!(
            "Citus is not installed in {libdir} (install Citus 13 for this PostgreSQL and pass its --pg-config)"
        ));
    }
    Some(
        "Citus is installed, but capture on Citus workers is not built yet: distributed tables are refused for DIFFERENTIAL (see docs/DISTRIBUTED.md)"
            .into(),
    )
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
    fn without_citus_the_reason_names_where_it_looked() {
        let why = citus_unavailable(std::path::Path::new("pg_config")).unwrap();
        assert!(why.contains("Citus"), "{why}");
    }
}
