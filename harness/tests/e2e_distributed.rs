//! End-to-end: sources sharded across nodes with PostgreSQL's own
//! sharding (a partitioned table whose partitions are postgres_fdw foreign
//! tables on worker clusters). Until capture on the nodes exists, such a
//! source is exact or refused: DIFFERENTIAL is refused naming the foreign
//! partition and its server, AUTO maintains it FULL, and FULL sees every
//! write, made through the coordinator or directly on a worker.

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
fn a_source_sharded_with_postgres_fdw_is_refused_for_differential_and_exact_in_full() {
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
        dbe.message().contains("public.orders_w1") && dbe.message().contains("server w1"),
        "the refusal names the foreign partition and its server: {}",
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
