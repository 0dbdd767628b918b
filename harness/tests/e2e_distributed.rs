//! End-to-end: sources sharded across nodes with PostgreSQL's own
//! sharding (a partitioned table whose partitions are postgres_fdw foreign
//! tables on worker clusters). With dblink in the coordinator's database,
//! their changes are captured on the nodes and DIFFERENTIAL refresh is
//! exact for writes made through the coordinator and directly on the
//! workers; without it, DIFFERENTIAL is refused naming what is missing and
//! AUTO's FULL refresh is exact.

use harness::cluster::ClusterOptions;
use harness::sharding::{self, ShardedTable};
use harness::testkit::{first_column, pg_config, test_root};
use oracles::compare::differences;

fn orders() -> ShardedTable {
    ShardedTable {
        name: "orders".into(),
        columns: "region int NOT NULL, id bigint NOT NULL, amount numeric(10,2) NOT NULL".into(),
    }
}

/// A coordinator and two workers with `orders` sharded over them, and a
/// connection to the coordinator's `postgres` database.
fn sharded_orders() -> (harness::cluster::Topology, postgres::Client) {
    let opts = ClusterOptions {
        pg_config: pg_config(),
        ..ClusterOptions::default()
    };
    let topo = sharding::start(&test_root(), &opts, 2).expect("start the topology");
    let db = sharding::create(&topo, "postgres", &orders()).expect("shard orders");
    (topo, db)
}

const QUERY: &str =
    "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region";

#[test]
fn without_dblink_a_sharded_source_is_refused_for_differential_and_exact_in_full() {
    let (topo, mut db) = sharded_orders();
    db.batch_execute(
        "CREATE EXTENSION pg_trickle; \
         INSERT INTO orders SELECT 1 + g % 2, g, g / 10.0 FROM generate_series(1, 200) g",
    )
    .unwrap();

    let refused = db
        .batch_execute(&format!(
            "SELECT pgtrickle.create_stream_table('st_diff', $q${QUERY}$q$, NULL, 'DIFFERENTIAL')"
        ))
        .expect_err("DIFFERENTIAL over foreign partitions must be refused");
    let dbe = refused.as_db_error().expect("a server error");
    assert_eq!(dbe.code().code(), "0A000", "{}", dbe.message());
    assert!(
        dbe.message().contains("public.orders_w1")
            && dbe.message().contains("server w1")
            && dbe.message().contains("CREATE EXTENSION dblink"),
        "the refusal names the foreign partition, its server and what is missing: {}",
        dbe.message()
    );
    let leftover: Vec<String> = first_column(
        &mut db,
        "SELECT relname::text FROM pg_class WHERE relname = 'st_diff'",
        &[],
    );
    assert!(
        leftover.is_empty(),
        "a refused create leaves nothing: {leftover:?}"
    );

    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st', $q${QUERY}$q$)"
    ))
    .unwrap();
    let (mode, reason): (String, Option<String>) = {
        let r = db
            .query_one(
                "SELECT effective_mode, fallback_reason FROM pgtrickle.stream_table_status() WHERE to_regclass(name) = 'st'::regclass",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(mode, "FULL");
    assert!(
        reason.as_deref().unwrap_or("").contains("server w1"),
        "AUTO says why it runs FULL: {reason:?}"
    );

    // Writes through the coordinator and directly on each worker.
    db.batch_execute(
        "INSERT INTO orders VALUES (1, 1001, 5), (2, 1002, 7); DELETE FROM orders WHERE id = 3",
    )
    .unwrap();
    for (k, w) in topo.workers.iter().enumerate() {
        let mut c = w.connect("postgres").unwrap();
        c.batch_execute(&format!(
            "INSERT INTO orders_w{i} VALUES ({i}, 5000 + {i}, 100); UPDATE orders_w{i} SET amount = amount + 1 WHERE id < 50",
            i = k + 1
        ))
        .unwrap();
    }
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    if let Some(diff) = differences(&mut db, "st", QUERY).unwrap() {
        panic!("st differs from its query after writes on every node:\n{diff}");
    }
}

/// Run `sql` on every worker.
fn on_workers(topo: &harness::cluster::Topology, sql: impl Fn(usize) -> String) {
    for (k, w) in topo.workers.iter().enumerate() {
        let mut c = w.connect("postgres").unwrap();
        c.batch_execute(&sql(k + 1)).unwrap();
    }
}

#[test]
fn with_dblink_a_sharded_source_is_maintained_differentially_from_the_nodes_wal() {
    let (topo, mut db) = sharded_orders();
    db.batch_execute(
        "CREATE EXTENSION dblink; CREATE EXTENSION pg_trickle; \
         INSERT INTO orders SELECT 1 + g % 2, g, g / 10.0 FROM generate_series(1, 200) g",
    )
    .unwrap();
    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st', $q${QUERY}$q$, NULL, 'DIFFERENTIAL')"
    ))
    .unwrap();
    let copy = "SELECT region, id, amount FROM orders";
    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st_copy', $q${copy}$q$, NULL, 'DIFFERENTIAL')"
    ))
    .unwrap();
    let slots: Vec<String> = first_column(
        &mut db,
        "SELECT node || ':' || slot_name FROM pgtrickle.remote_capture_status() \
         WHERE to_regclass(stream_table) = 'st'::regclass ORDER BY 1",
        &[],
    );
    let all: Vec<String> = first_column(
        &mut db,
        "SELECT source_relid::regclass::text || '@' || node FROM pgtrickle.pgt_remote_capture",
        &[],
    );
    assert_eq!(
        slots.len(),
        2,
        "one slot per node: {slots:?} (capture rows: {all:?})"
    );
    for round in 0..3 {
        // Through the coordinator, and directly on each worker (including
        // a transaction that rolls back, and one that updates a row twice).
        db.batch_execute(&format!(
            "INSERT INTO orders VALUES (1, {a}, 5), (2, {b}, 7); DELETE FROM orders WHERE id = {d}; \
             UPDATE orders SET amount = amount + 1 WHERE id % 17 = {round}",
            a = 1000 + round * 10,
            b = 1001 + round * 10,
            d = 3 + round
        ))
        .unwrap();
        on_workers(&topo, |i| {
            format!(
                "INSERT INTO orders_w{i} VALUES ({i}, {id}, 100); \
                 BEGIN; UPDATE orders_w{i} SET amount = amount * 2 WHERE id < 20; UPDATE orders_w{i} SET amount = amount + 1 WHERE id < 10; COMMIT; \
                 BEGIN; DELETE FROM orders_w{i}; ROLLBACK; \
                 DELETE FROM orders_w{i} WHERE id = 40 + {round}",
                id = 5000 + round * 10 + i
            )
        });
        for st in ["st", "st_copy"] {
            db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
                .unwrap();
            let mode: Option<String> = oracles::engine_api::last_refresh_mode(&mut db, st).unwrap();
            assert_eq!(mode.as_deref(), Some("DIFFERENTIAL"), "round {round}, {st}");
        }
        if let Some(diff) = differences(&mut db, "st", QUERY).unwrap() {
            panic!("round {round}: st differs from its query:\n{diff}");
        }
        if let Some(diff) = differences(&mut db, "st_copy", copy).unwrap() {
            panic!("round {round}: st_copy differs from its query:\n{diff}");
        }
    }
    // A drain on demand advances the slots; dropping the last reader
    // removes them from the nodes.
    db.batch_execute("SELECT pgtrickle.drain_remote_capture()")
        .unwrap();
    db.batch_execute(
        "SELECT pgtrickle.drop_stream_table('st'); SELECT pgtrickle.drop_stream_table('st_copy')",
    )
    .unwrap();
    for w in &topo.workers {
        let mut c = w.connect("postgres").unwrap();
        let left: Vec<String> = first_column(
            &mut c,
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'pgtrickle%'",
            &[],
        );
        assert!(left.is_empty(), "slots left on {}: {left:?}", w.name());
    }
}

/// A coordinator with dblink and pg_trickle and `orders` sharded over two
/// workers with 200 rows, and `st` maintained DIFFERENTIALLY over it.
fn sharded_with_stream_table() -> (harness::cluster::Topology, postgres::Client) {
    let (topo, mut db) = sharded_orders();
    db.batch_execute(
        "CREATE EXTENSION dblink; CREATE EXTENSION pg_trickle; \
         INSERT INTO orders SELECT 1 + g % 2, g, g / 10.0 FROM generate_series(1, 200) g",
    )
    .unwrap();
    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st', $q${QUERY}$q$, NULL, 'DIFFERENTIAL')"
    ))
    .unwrap();
    (topo, db)
}

fn refresh_differentially_and_compare(db: &mut postgres::Client, when: &str) {
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap_or_else(|e| panic!("{when}: refresh failed: {}", harness::cluster::describe(&e)));
    let mode = oracles::engine_api::last_refresh_mode(db, "st").unwrap();
    assert_eq!(mode.as_deref(), Some("DIFFERENTIAL"), "{when}");
    if let Some(diff) = differences(db, "st", QUERY).unwrap() {
        panic!("{when}: st differs from its query:\n{diff}");
    }
}

/// A worker transaction open across a refresh is consumed by the refresh
/// whose snapshot of the node sees it, not before and not twice.
#[test]
fn a_worker_transaction_committing_after_a_refresh_is_consumed_by_the_next() {
    let (topo, mut db) = sharded_with_stream_table();
    let mut late = topo.workers[0].connect("postgres").unwrap();
    late.batch_execute("BEGIN; INSERT INTO orders_w1 VALUES (1, 9001, 50); UPDATE orders_w1 SET amount = 0 WHERE id = 2")
        .unwrap();
    on_workers(&topo, |i| {
        format!("INSERT INTO orders_w{i} VALUES ({i}, 9100 + {i}, 1)")
    });
    refresh_differentially_and_compare(&mut db, "with a worker transaction still open");
    late.batch_execute("COMMIT").unwrap();
    refresh_differentially_and_compare(&mut db, "after it committed");
    db.batch_execute("SELECT pgtrickle.drain_remote_capture()")
        .unwrap();
    refresh_differentially_and_compare(&mut db, "after a drain on demand");
}

/// A node that is down: its drains fail and are retried with backoff
/// while the other node's changes flow; a refresh fails naming it (the
/// stream table keeps its last exact state); once it is back, the next
/// refresh catches up exactly.
#[test]
fn a_dead_worker_is_retried_while_the_others_flow() {
    let (topo, mut db) = sharded_with_stream_table();
    topo.workers[1].stop().unwrap();
    topo.workers[0]
        .connect("postgres")
        .unwrap()
        .batch_execute("INSERT INTO orders_w1 VALUES (1, 7001, 3)")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.drain_remote_capture()")
        .unwrap();
    let rows = db
        .query(
            "SELECT node, failed_ticks, last_error FROM pgtrickle.remote_capture_status() ORDER BY node",
            &[],
        )
        .unwrap();
    let w1: (String, i32) = (rows[0].get(0), rows[0].get(1));
    let w2: (String, i32, Option<String>) = (rows[1].get(0), rows[1].get(1), rows[1].get(2));
    assert_eq!(w1, ("server w1".into(), 0));
    assert_eq!((w2.0.as_str(), w2.1), ("server w2", 1), "{w2:?}");
    assert!(w2.2.is_some(), "the failure is shown");
    let pending: i64 = db
        .query_one(
            "SELECT pending_changes FROM pgtrickle.stream_table_status()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pending, 1, "the live node's change reached the buffer");
    let e = db
        .batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .expect_err("a refresh cannot read a node that is down");
    assert!(
        harness::cluster::describe(&e).contains("w2"),
        "the error names the node: {}",
        harness::cluster::describe(&e)
    );
    topo.workers[1].start_again().unwrap();
    refresh_differentially_and_compare(&mut db, "after the node came back");
}

/// A lease that lapsed is taken over, recorded with whom it was taken
/// from; an unexpired lease of another holder is left alone.
#[test]
fn a_lapsed_lease_is_taken_over_and_recorded() {
    let (_topo, mut db) = sharded_with_stream_table();
    db.batch_execute(
        "UPDATE pgtrickle.pgt_remote_capture SET lease_holder = 'another scheduler', \
         lease_acquired_at = now(), lease_expires_at = now() + interval '1 hour'",
    )
    .unwrap();
    db.batch_execute("SELECT pgtrickle.drain_remote_capture()")
        .unwrap();
    let holders: Vec<String> = first_column(
        &mut db,
        "SELECT DISTINCT lease_holder FROM pgtrickle.pgt_remote_capture",
        &[],
    );
    assert_eq!(
        holders,
        ["another scheduler"],
        "an unexpired lease is left alone"
    );
    db.batch_execute(
        "UPDATE pgtrickle.pgt_remote_capture SET lease_expires_at = now() - interval '1 second'",
    )
    .unwrap();
    db.batch_execute("SELECT pgtrickle.drain_remote_capture()")
        .unwrap();
    let taken: Vec<String> = first_column(
        &mut db,
        "SELECT holder || ' from ' || taken_from FROM pgtrickle.pgt_remote_lease_history \
         WHERE taken_from IS NOT NULL ORDER BY id",
        &[],
    );
    assert_eq!(taken.len(), 2, "both node slots were taken over: {taken:?}");
    assert!(
        taken
            .iter()
            .all(|t| t.starts_with("session ") && t.ends_with(" from another scheduler")),
        "{taken:?}"
    );
    refresh_differentially_and_compare(&mut db, "after the takeover");
}

/// Creating a stream table in a transaction that already wrote a shard
/// through postgres_fdw: setting up capture on the node needs the shard
/// that transaction holds there. It fails with a lock timeout naming the
/// node instead of waiting forever, and leaves nothing behind.
#[test]
fn creating_in_a_transaction_that_holds_a_shard_fails_instead_of_hanging() {
    let (_topo, mut db) = sharded_orders();
    db.batch_execute("CREATE EXTENSION dblink; CREATE EXTENSION pg_trickle")
        .unwrap();
    let e = db
        .batch_execute(&format!(
            "INSERT INTO orders VALUES (1, 1, 1); \
             SELECT pgtrickle.create_stream_table('st', $q${QUERY}$q$, NULL, 'DIFFERENTIAL')"
        ))
        .expect_err("the node's shard is held by this very transaction");
    let text = harness::cluster::describe(&e);
    assert!(text.contains("55P03") && text.contains("w1"), "{text}");
    let left: Vec<String> = first_column(
        &mut db,
        "SELECT relname::text FROM pg_class WHERE relname = 'st'",
        &[],
    );
    assert!(left.is_empty(), "{left:?}");
}

/// A node leaves the topology (its partition detached and dropped, its
/// server dropped): its slot row goes at the next drain, its slot on the
/// node too, the readers are recomputed once (continuity cannot be
/// proven) and then go on DIFFERENTIALLY.
#[test]
fn a_node_that_leaves_is_forgotten_and_its_readers_reinitialised() {
    let (topo, mut db) = sharded_with_stream_table();
    db.batch_execute(
        "ALTER TABLE orders DETACH PARTITION orders_w2; DROP FOREIGN TABLE orders_w2; \
         DROP SERVER w2 CASCADE; SELECT pgtrickle.drain_remote_capture()",
    )
    .unwrap();
    let servers: Vec<String> = first_column(
        &mut db,
        "SELECT s.srvname::text FROM pgtrickle.pgt_remote_capture r LEFT JOIN pg_foreign_server s ON s.oid = r.server_oid",
        &[],
    );
    assert_eq!(servers, ["w1"]);
    let mut w2 = topo.workers[1].connect("postgres").unwrap();
    let left: Vec<String> = first_column(
        &mut w2,
        "SELECT slot_name::text FROM pg_replication_slots",
        &[],
    );
    // The server is gone, so the coordinator cannot reach the node any
    // more: its slot stays for the operator (named in the docs).
    assert_eq!(left.len(), 1, "{left:?}");
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    let first = oracles::engine_api::last_refresh(&mut db, "st")
        .unwrap()
        .unwrap();
    assert!(
        first.describe().starts_with("FULL (reinitialisation"),
        "{first:?}"
    );
    topo.workers[0]
        .connect("postgres")
        .unwrap()
        .batch_execute("INSERT INTO orders_w1 VALUES (1, 8001, 9)")
        .unwrap();
    refresh_differentially_and_compare(&mut db, "after the node left");
}

/// A partition moves to another node (region 2 from worker 2 to a new
/// shard on worker 1): the readers are recomputed once, the publication
/// on worker 1 takes the new shard, and writes to it directly on worker
/// 1 flow DIFFERENTIALLY from then on.
#[test]
fn a_partition_moved_to_another_node_keeps_flowing() {
    let (topo, mut db) = sharded_with_stream_table();
    topo.workers[0]
        .connect("postgres")
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE public.orders_r2 ({})",
            orders().columns
        ))
        .unwrap();
    db.batch_execute(
        "BEGIN; \
         CREATE FOREIGN TABLE orders_r2 (region int NOT NULL, id bigint NOT NULL, amount numeric(10,2) NOT NULL) \
           SERVER w1 OPTIONS (schema_name 'public', table_name 'orders_r2'); \
         INSERT INTO orders_r2 SELECT * FROM orders_w2; \
         ALTER TABLE orders DETACH PARTITION orders_w2; \
         ALTER TABLE orders ATTACH PARTITION orders_r2 FOR VALUES IN (2); \
         DROP FOREIGN TABLE orders_w2; \
         COMMIT",
    )
    .unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    let first = oracles::engine_api::last_refresh(&mut db, "st")
        .unwrap()
        .unwrap();
    assert!(
        first.describe().starts_with("FULL (reinitialisation"),
        "{first:?}"
    );
    let mut w1 = topo.workers[0].connect("postgres").unwrap();
    w1.batch_execute(
        "INSERT INTO orders_r2 VALUES (2, 6001, 11); UPDATE orders_r2 SET amount = amount + 1 WHERE id < 30; \
         INSERT INTO orders_w1 VALUES (1, 6002, 12)",
    )
    .unwrap();
    refresh_differentially_and_compare(&mut db, "after the move");
    let servers: Vec<String> = first_column(
        &mut db,
        "SELECT s.srvname::text FROM pgtrickle.pgt_remote_capture r JOIN pg_foreign_server s ON s.oid = r.server_oid",
        &[],
    );
    assert_eq!(servers, ["w1"], "worker 2 holds no rows of orders any more");
}

/// A refresh in a transaction that wrote a shard through postgres_fdw
/// would read its own writes there and consume them again once they are
/// drained after commit: refused naming the node. A refresh in a
/// transaction that read a node before a drain committed newer changes
/// of it would consume changes it does not see: a serialization failure.
/// A TRUNCATE of a shard on its node reinitialises the readers.
#[test]
fn refreshes_that_could_not_be_exact_across_nodes_are_refused() {
    let (topo, mut db) = sharded_with_stream_table();
    let e = db
        .batch_execute(
            "BEGIN; INSERT INTO orders VALUES (1, 77001, 1); SELECT pgtrickle.refresh_stream_table('st')",
        )
        .expect_err("its own remote writes would be counted twice");
    let text = harness::cluster::describe(&e);
    assert!(
        text.contains("0A000") && text.contains("server w1"),
        "{text}"
    );
    db.batch_execute("ROLLBACK").unwrap();

    db.batch_execute("BEGIN; SELECT count(*) FROM orders")
        .unwrap();
    topo.workers[0]
        .connect("postgres")
        .unwrap()
        .batch_execute("INSERT INTO orders_w1 VALUES (1, 77002, 2)")
        .unwrap();
    let mut other = topo.coordinator.connect("postgres").unwrap();
    other
        .batch_execute("SELECT pgtrickle.drain_remote_capture()")
        .unwrap();
    let e = db
        .batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .expect_err("the transaction reads the node in a snapshot older than what was drained");
    let text = harness::cluster::describe(&e);
    assert!(text.contains("40001") && text.contains("w1"), "{text}");
    db.batch_execute("ROLLBACK").unwrap();
    refresh_differentially_and_compare(&mut db, "in a transaction of its own");

    topo.workers[1]
        .connect("postgres")
        .unwrap()
        .batch_execute("TRUNCATE orders_w2")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    let r = oracles::engine_api::last_refresh(&mut db, "st")
        .unwrap()
        .unwrap();
    assert!(r.describe().starts_with("FULL (reinitialisation"), "{r:?}");
    if let Some(diff) = differences(&mut db, "st", QUERY).unwrap() {
        panic!("after a shard's TRUNCATE:\n{diff}");
    }
    refresh_differentially_and_compare(&mut db, "after the reinitialisation");
}

/// A sharded source with a local partition too. In one transaction: a
/// local write, a refresh that drains the nodes' committed changes into
/// the same buffer, and more local writes. The drained rows draw their
/// ids from the buffer's sequence; the later local rows must be numbered
/// after them, or the position the refresh recorded for its own
/// transaction would count them as consumed and they would never be
/// applied.
#[test]
fn local_writes_after_a_refresh_that_drained_the_nodes_in_their_transaction_are_applied() {
    let (topo, mut db) = sharded_orders();
    db.batch_execute(
        "CREATE EXTENSION dblink; CREATE EXTENSION pg_trickle;
         CREATE TABLE orders_local PARTITION OF orders FOR VALUES IN (3);
         INSERT INTO orders SELECT 1 + g % 3, g, g / 10.0 FROM generate_series(1, 300) g;",
    )
    .unwrap();
    // Not in the transaction that wrote the shards (see
    // `creating_in_a_transaction_that_holds_a_shard_fails_instead_of_hanging`).
    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st', $q${QUERY}$q$, NULL, 'DIFFERENTIAL')"
    ))
    .unwrap();
    refresh_differentially_and_compare(&mut db, "before the writes");
    // The scheduler must not drain the nodes first: the refresh below
    // does, in the writing transaction (checked there).
    db.batch_execute("ALTER SYSTEM SET pg_trickle.enabled = off")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    on_workers(&topo, |i| {
        format!("INSERT INTO orders_w{i} VALUES ({i}, 9100 + {i}, 1); UPDATE orders_w{i} SET amount = amount + 1 WHERE id < 30")
    });
    let last_drawn = "SELECT last_value FROM pg_sequences WHERE schemaname || '.' || sequencename = \
         pg_get_serial_sequence('pgtrickle_changes.changes_' || 'orders'::regclass::oid, 'change_id')";
    db.batch_execute("BEGIN; INSERT INTO orders VALUES (3, 9001, 1);")
        .unwrap();
    let before: i64 = db.query_one(last_drawn, &[]).unwrap().get(0);
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    let after: i64 = db.query_one(last_drawn, &[]).unwrap().get(0);
    assert!(
        after > before,
        "the refresh drained the nodes' changes into the buffer in this transaction, drawing ids \
         ({before} before it, {after} after)"
    );
    db.batch_execute(
        "INSERT INTO orders VALUES (3, 9002, 2);
         UPDATE orders SET amount = amount + 10 WHERE region = 3 AND id < 60;
         COMMIT;",
    )
    .unwrap();
    refresh_differentially_and_compare(
        &mut db,
        "after local writes on both sides of a draining refresh",
    );
}
