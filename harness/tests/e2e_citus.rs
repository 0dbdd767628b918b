//! End-to-end: a Citus distributed table as a source, on a coordinator and
//! two worker clusters. Its changes are captured from the workers' WAL
//! (writes through the coordinator and through a worker alike), refreshes
//! stay DIFFERENTIAL and exact, and what could not be exact is refused.
//!
//! Citus is not packaged for Debian: where it is not installed for the
//! PostgreSQL under test, each test prints why it did not run and returns
//! (the Citus chaos topology reports the same skip in `ci/test.sh`).

use harness::cluster::{describe, ClusterOptions, Topology};
use harness::testkit::{first_column, pg_config, test_root};
use oracles::compare::differences;

const ORDERS: &str = "region int NOT NULL, id bigint NOT NULL, amount numeric(10,2) NOT NULL";

const QUERY: &str =
    "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region";

/// A Citus topology with `orders` distributed (without REPLICA IDENTITY
/// FULL when `full` is false) and rows in it; None (with the reason
/// printed) where Citus is not installed.
fn citus_orders(full: bool) -> Option<(Topology, postgres::Client)> {
    if let Some(why) = harness::citus::unavailable(&pg_config()) {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let opts = ClusterOptions {
        pg_config: pg_config(),
        ..ClusterOptions::default()
    };
    let topo = harness::citus::start(&test_root(), &opts, 2).expect("start the topology");
    let mut db =
        harness::citus::create(&topo, "postgres", "orders", ORDERS, "region").expect("distribute");
    if !full {
        db.batch_execute("ALTER TABLE orders REPLICA IDENTITY DEFAULT")
            .unwrap();
    }
    db.batch_execute(
        "CREATE EXTENSION pg_trickle; \
         INSERT INTO orders SELECT 1 + g % 6, g, g / 10.0 FROM generate_series(1, 600) g",
    )
    .unwrap();
    Some((topo, db))
}

fn create(db: &mut postgres::Client, mode: &str) -> Result<(), postgres::Error> {
    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st', $q${QUERY}$q$, NULL, '{mode}')"
    ))
}

fn refresh_and_compare(db: &mut postgres::Client, when: &str) {
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap_or_else(|e| panic!("{when}: {}", describe(&e)));
    let mode: String = db
        .query_one(
            "SELECT mode FROM pgtrickle.refresh_history('st') ORDER BY refresh_id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(mode, "DIFFERENTIAL", "{when}");
    let diff = differences(db, "st", QUERY).unwrap();
    assert!(diff.is_none(), "{when}: stream table differs: {diff:?}");
}

#[test]
fn a_citus_table_is_maintained_differentially_from_its_workers_wal() {
    let Some((topo, mut db)) = citus_orders(true) else {
        return;
    };
    create(&mut db, "DIFFERENTIAL").unwrap_or_else(|e| panic!("{}", describe(&e)));
    let nodes: Vec<String> = first_column(
        &mut db,
        "SELECT node FROM pgtrickle.remote_capture_status() ORDER BY 1",
        &[],
    );
    let want: Vec<String> = {
        let mut w: Vec<String> = topo
            .workers
            .iter()
            .map(harness::citus::node_label)
            .collect();
        w.sort();
        w
    };
    assert_eq!(nodes, want, "one capture per worker holding shards");
    let triggers: Vec<String> = first_column(
        &mut db,
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND tgname LIKE 'pgt%'",
        &[],
    );
    assert!(
        triggers.is_empty(),
        "no trigger of pg_trickle on a Citus table: {triggers:?}"
    );
    let mut worker = topo.workers[0].connect("postgres").unwrap();
    for round in 0..3 {
        db.batch_execute(&format!(
            "INSERT INTO orders SELECT 1 + g % 6, g, 1.5 FROM generate_series({a}, {b}) g; \
             UPDATE orders SET amount = amount + 1 WHERE id % 7 = {round}; \
             BEGIN; DELETE FROM orders WHERE id % 13 = {round}; ROLLBACK; \
             DELETE FROM orders WHERE id % 11 = {round}",
            a = 10_000 + round * 100,
            b = 10_050 + round * 100
        ))
        .unwrap();
        // Through a worker (Citus synced its metadata there): a row
        // updated twice in one transaction.
        worker
            .batch_execute(&format!(
                "BEGIN; INSERT INTO orders VALUES (3, {id}, 2); \
                 UPDATE orders SET amount = 5 WHERE id = {id}; \
                 UPDATE orders SET amount = 6 WHERE id = {id}; COMMIT",
                id = 20_000 + round
            ))
            .unwrap();
        refresh_and_compare(&mut db, &format!("round {round}"));
    }
}

#[test]
fn a_citus_table_without_full_replica_identity_is_refused_naming_the_fix() {
    let Some((_topo, mut db)) = citus_orders(false) else {
        return;
    };
    let e = create(&mut db, "DIFFERENTIAL").expect_err("refused");
    let dbe = e.as_db_error().expect("a server error");
    assert_eq!(dbe.code().code(), "0A000", "{}", dbe.message());
    assert!(
        dbe.message().contains("REPLICA IDENTITY FULL") && dbe.message().contains("orders"),
        "{}",
        dbe.message()
    );
    create(&mut db, "AUTO").unwrap_or_else(|e| panic!("AUTO runs FULL: {}", describe(&e)));
    let diff = differences(&mut db, "st", QUERY).unwrap();
    assert!(diff.is_none(), "{diff:?}");
}

#[test]
fn refreshes_over_a_citus_table_that_could_not_be_exact_are_refused() {
    let Some((_topo, mut db)) = citus_orders(true) else {
        return;
    };
    create(&mut db, "DIFFERENTIAL").unwrap_or_else(|e| panic!("{}", describe(&e)));
    let e = db
        .batch_execute(
            "BEGIN; INSERT INTO orders VALUES (1, 99999, 1); \
             SELECT pgtrickle.refresh_stream_table('st')",
        )
        .expect_err("a refresh after writing the table in the same transaction");
    assert_eq!(
        e.code().map(|c| c.code()),
        Some("0A000"),
        "{}",
        describe(&e)
    );
    db.batch_execute("ROLLBACK").unwrap();
    let e = db
        .batch_execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pgtrickle.refresh_stream_table('st')",
        )
        .expect_err("a refresh at REPEATABLE READ");
    assert_eq!(
        e.code().map(|c| c.code()),
        Some("0A000"),
        "{}",
        describe(&e)
    );
    assert!(describe(&e).contains("READ COMMITTED"), "{}", describe(&e));
    db.batch_execute("ROLLBACK").unwrap();
    db.batch_execute("INSERT INTO orders VALUES (1, 99999, 1)")
        .unwrap();
    refresh_and_compare(&mut db, "after the refusals");
}

#[test]
fn a_moved_shard_reinitialises_the_readers_once_and_keeps_flowing() {
    let Some((topo, mut db)) = citus_orders(true) else {
        return;
    };
    create(&mut db, "DIFFERENTIAL").unwrap_or_else(|e| panic!("{}", describe(&e)));
    let (from, to) = (
        i32::from(topo.workers[1].port),
        i32::from(topo.workers[0].port),
    );
    let shard: i64 = db
        .query_one(
            "SELECT min(p.shardid) FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) \
             JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = 'orders'::regclass AND n.nodeport = $1",
            &[&from],
        )
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "SELECT citus_move_shard_placement({shard}, '127.0.0.1', {from}, '127.0.0.1', {to}, shard_transfer_mode => 'block_writes'); \
         INSERT INTO orders SELECT 1 + g % 6, g, 3 FROM generate_series(30000, 30100) g"
    ))
    .unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    let (mode, reason): (String, Option<String>) = {
        let r = db
            .query_one(
                "SELECT mode, reason FROM pgtrickle.refresh_history('st') ORDER BY refresh_id DESC LIMIT 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(mode, "FULL");
    assert!(
        reason.as_deref().unwrap_or("").contains("reinitialisation"),
        "{reason:?}"
    );
    db.batch_execute("UPDATE orders SET amount = amount + 2 WHERE id % 5 = 0")
        .unwrap();
    refresh_and_compare(&mut db, "after the move");
    let tables: Vec<String> = first_column(
        &mut db,
        "SELECT shard_tables FROM pgtrickle.pgt_remote_capture ORDER BY node",
        &[],
    );
    assert!(
        tables
            .iter()
            .any(|t| t.contains(&format!("orders_{shard}"))),
        "the moved shard is published on its new node: {tables:?}"
    );
    // There and back again between two refreshes: the same shard name on
    // worker 2, but a new relation its publication does not hold.
    let mv = |a: i32, b: i32| {
        format!("SELECT citus_move_shard_placement({shard}, '127.0.0.1', {a}, '127.0.0.1', {b}, shard_transfer_mode => 'block_writes')")
    };
    for sql in [
        mv(to, from),
        "SELECT pgtrickle.refresh_stream_table('st')".to_string(),
        mv(from, to),
        mv(to, from),
        "SELECT pgtrickle.refresh_stream_table('st')".to_string(),
    ] {
        db.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    }
    db.batch_execute("UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0")
        .unwrap();
    refresh_and_compare(&mut db, "after the shard came back to worker 2");
}

#[test]
fn an_owner_who_may_only_read_a_citus_table_cannot_hold_its_writers_out() {
    let Some((_topo, mut db)) = citus_orders(true) else {
        return;
    };
    db.batch_execute(
        "CREATE ROLE reader LOGIN; GRANT SELECT ON orders TO reader; GRANT CREATE ON SCHEMA public TO reader",
    )
    .unwrap();
    db.batch_execute("SET ROLE reader").unwrap();
    let e = create(&mut db, "DIFFERENTIAL").expect_err("refused");
    let dbe = e.as_db_error().expect("a server error");
    assert_eq!(dbe.code().code(), "42501", "{}", dbe.message());
    assert!(
        dbe.message().contains("UPDATE, DELETE or TRUNCATE") && dbe.message().contains("orders"),
        "{}",
        dbe.message()
    );
    db.batch_execute("RESET ROLE").unwrap();
    let left: Vec<String> = first_column(
        &mut db,
        "SELECT relname::text FROM pg_class WHERE relname = 'st'",
        &[],
    );
    assert!(left.is_empty(), "a refused create leaves nothing: {left:?}");
}
