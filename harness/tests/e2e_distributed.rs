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

const QUERY: &str =
    "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region";

#[test]
fn without_dblink_a_sharded_source_is_refused_for_differential_and_exact_in_full() {
    let opts = ClusterOptions {
        pg_config: pg_config(),
        ..ClusterOptions::default()
    };
    let topo = sharding::start(&test_root(), &opts, 2).expect("start the topology");
    let mut db = sharding::create(&topo, "postgres", &orders()).expect("shard orders");
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
    let opts = ClusterOptions {
        pg_config: pg_config(),
        ..ClusterOptions::default()
    };
    let topo = sharding::start(&test_root(), &opts, 2).expect("start the topology");
    let mut db = sharding::create(&topo, "postgres", &orders()).expect("shard orders");
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
        "SELECT server || ':' || slot_name FROM pgtrickle.remote_capture_status() \
         WHERE to_regclass(stream_table) = 'st'::regclass ORDER BY 1",
        &[],
    );
    let all: Vec<String> = first_column(
        &mut db,
        "SELECT source_relid::regclass::text || '@' || server_oid FROM pgtrickle.pgt_remote_capture",
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
