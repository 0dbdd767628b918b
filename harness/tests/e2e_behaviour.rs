//! End-to-end behaviour against a real cluster: transaction edge cases,
//! TRUNCATE, fallbacks, bad input (clear SQLSTATE, nothing half-created),
//! dependencies, the scheduler and refresh exclusion.

use std::time::{Duration, Instant};

use harness::testkit::{database, first_column, shared_cluster};
use oracles::compare::differences as compare;
use oracles::engine_api::last_refresh_mode;
use postgres::Client;

fn sqlstate(result: Result<impl Sized, postgres::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| e.to_string()),
    }
}

fn error_message(result: Result<impl Sized, postgres::Error>) -> String {
    match result {
        Ok(_) => String::new(),
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default(),
    }
}

fn count(db: &mut Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).expect(sql).get(0)
}

/// Refresh `st`, which must succeed without failing over to FULL (a
/// differential statement that raises a data exception is recomputed
/// FULL), and compare it with `query`; `context` names the case.
fn refresh_stays_differential_and_fresh(db: &mut Client, st: &str, query: &str, context: &str) {
    let outcome =
        sqlstate(db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')")));
    assert_eq!(
        outcome, "ok",
        "{context}: FULL would succeed on these sources"
    );
    assert_eq!(
        last_refresh_mode(db, st).unwrap().as_deref(),
        Some("DIFFERENTIAL"),
        "{context}: the differential statement must not fail over to FULL"
    );
    assert_fresh(db, st, query);
}

fn assert_fresh(db: &mut Client, st: &str, query: &str) {
    if let Some(m) = compare(db, st, query).unwrap() {
        panic!("{st} stale: {m}");
    }
}

/// Everything pg_trickle could have left behind.
fn footprint(db: &mut Client) -> (i64, i64, i64, i64) {
    (
        count(db, "SELECT count(*) FROM pgtrickle.pgt_stream_tables"),
        count(db, "SELECT count(*) FROM pgtrickle.pgt_change_buffers"),
        count(db, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pgtrickle_changes'"),
        count(db, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgt\\_%'"),
    )
}

#[test]
fn late_committing_transaction_is_not_skipped() {
    let mut db = database("late_commit");
    db.batch_execute(
        "CREATE TABLE src (k int, v int); INSERT INTO src VALUES (1, 1);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k, sum(v) AS s FROM src GROUP BY k', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let mut writer = shared_cluster().connect("t_late_commit").unwrap();
    let mut tx = writer.transaction().unwrap();
    tx.batch_execute("INSERT INTO src VALUES (1, 100), (2, 5)")
        .unwrap();
    // The refresh runs while the writer is still open, and commits first.
    db.batch_execute("INSERT INTO src VALUES (3, 7); SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    tx.commit().unwrap();
    assert!(
        compare(&mut db, "st", "SELECT k, sum(v) AS s FROM src GROUP BY k")
            .unwrap()
            .is_some(),
        "the late transaction cannot be in the stream table yet"
    );
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_fresh(&mut db, "st", "SELECT k, sum(v) AS s FROM src GROUP BY k");
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
}

#[test]
fn rolled_back_changes_never_appear() {
    let mut db = database("rollback");
    // Separate round trips: a BEGIN inside one multi-statement message would
    // pull the earlier statements into the rolled-back transaction.
    for sql in [
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1)",
        "SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL')",
        "BEGIN; INSERT INTO src VALUES (2); DELETE FROM src WHERE k = 1; ROLLBACK",
        "BEGIN; INSERT INTO src VALUES (3); SAVEPOINT s; INSERT INTO src VALUES (4); ROLLBACK TO s; COMMIT",
        "SELECT pgtrickle.refresh_stream_table('st')",
    ] {
        db.batch_execute(sql).unwrap();
    }
    assert_fresh(&mut db, "st", "SELECT k FROM src");
    assert_eq!(count(&mut db, "SELECT count(*) FROM st"), 2);
}

/// A refresh whose transaction rolls back consumed nothing: the next
/// refresh in the same session applies the changes it would have.
#[test]
fn a_rolled_back_refresh_leaves_its_changes_for_the_next_one() {
    let q = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k";
    let mut db = database("rolled_back_refresh");
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int); INSERT INTO src SELECT i % 4, i FROM generate_series(1, 20) i;
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    // Separate statements: one multi-statement string is one transaction.
    for sql in [
        "INSERT INTO src VALUES (7, 7)",
        "BEGIN",
        "SELECT pgtrickle.refresh_stream_table('st')",
        "ROLLBACK",
        "BEGIN",
        "SELECT pgtrickle.refresh_stream_table('st')",
        "COMMIT",
    ] {
        db.batch_execute(sql).unwrap();
    }
    assert_fresh(&mut db, "st", q);
}

#[test]
fn refreshing_twice_in_one_transaction_keeps_later_writes() {
    let mut db = database("own_xact");
    db.batch_execute(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k, count(*) AS n FROM src GROUP BY k', NULL, 'DIFFERENTIAL');
         BEGIN;
         INSERT INTO src VALUES (1), (2);
         SELECT pgtrickle.refresh_stream_table('st');
         INSERT INTO src VALUES (2), (3);
         SELECT pgtrickle.refresh_stream_table('st');
         COMMIT;",
    )
    .unwrap();
    assert_fresh(&mut db, "st", "SELECT k, count(*) AS n FROM src GROUP BY k");
    db.batch_execute("INSERT INTO src VALUES (3); SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_fresh(&mut db, "st", "SELECT k, count(*) AS n FROM src GROUP BY k");
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_fresh(&mut db, "st", "SELECT k, count(*) AS n FROM src GROUP BY k");
}

/// A refresh that opens its transaction records no own change (it reads
/// no buffer for that): what the transaction writes after it, in
/// DIFFERENTIAL and in FULL, and after an own position was stored by an
/// earlier transaction, is applied by the next refresh.
#[test]
fn writes_after_a_refresh_that_opened_its_transaction_are_applied_next() {
    let mut db = database("own_xact_first");
    let q = "SELECT k, count(*) AS n FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1);
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('st_full', '{q}', NULL, 'FULL');
         BEGIN;
         INSERT INTO src VALUES (1), (2);
         SELECT pgtrickle.refresh_stream_table('st');
         SELECT pgtrickle.refresh_stream_table('st_full');
         COMMIT;"
    ))
    .unwrap();
    let own = |db: &mut Client| -> i64 {
        db.query_one(
            "SELECT min(s.own_change_id) FROM pgtrickle.pgt_sources s \
             JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id WHERE st.name = 'public.st'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert!(own(&mut db) > 0, "the first refresh consumed its own rows");
    for st in ["st", "st_full"] {
        db.batch_execute(&format!(
            "BEGIN;
             SELECT pgtrickle.refresh_stream_table('{st}');
             INSERT INTO src VALUES (3), (1);
             DELETE FROM src WHERE k = 2;
             COMMIT;"
        ))
        .unwrap();
        db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
            .unwrap();
        assert_fresh(&mut db, st, q);
    }
    assert_eq!(
        own(&mut db),
        0,
        "the refresh that opened its transaction stored no own change"
    );
}

#[test]
fn truncate_of_a_source_forces_one_full_refresh() {
    let mut db = database("truncate");
    db.batch_execute(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1), (2);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL');
         TRUNCATE src; INSERT INTO src VALUES (5);",
    )
    .unwrap();
    let row = db
        .query_one(
            "SELECT needs_reinit FROM pgtrickle.stream_table_status() WHERE name = 'public.st'",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("FULL")
    );
    assert_fresh(&mut db, "st", "SELECT k FROM src");
    db.batch_execute("INSERT INTO src VALUES (6); SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
    assert_fresh(&mut db, "st", "SELECT k FROM src");
}

#[test]
fn auto_falls_back_to_full_with_the_reason() {
    let mut db = database("fallback");
    db.batch_execute(
        "CREATE TABLE a (k int, v int); CREATE TABLE b (k int, w int);
         INSERT INTO a VALUES (1, 1), (2, 2); INSERT INTO b VALUES (1, 10);
         CREATE VIEW va AS SELECT * FROM a;
         CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE c (k int, s text COLLATE ci); INSERT INTO c VALUES (1, 'a');",
    )
    .unwrap();
    let cases = [
        (
            // 'a' and 'A' tie: their order in the array is the plan's.
            "ci",
            "SELECT k, jsonb_agg(s ORDER BY s) AS j FROM c GROUP BY k",
            "ORDER BY key s of an ordered aggregate uses the nondeterministic collation",
        ),
        (
            "cic",
            "SELECT string_agg(s, ',' ORDER BY s) COLLATE \"C\" AS l FROM c",
            "ORDER BY key s of an ordered aggregate uses the nondeterministic collation",
        ),
        (
            "tie",
            "SELECT k, array_agg(v ORDER BY k) AS vs FROM a GROUP BY k",
            "leaves the order of rows with equal keys and different v open",
        ),
        (
            "lj",
            "SELECT a.k, b.w FROM a LEFT JOIN b USING (k)",
            "LEFT JOIN with USING",
        ),
        ("rnd", "SELECT k, random() AS r FROM a", "random"),
        ("lim", "SELECT k FROM a LIMIT 1", "LIMIT without ORDER BY"),
        ("vw", "SELECT k FROM va", "view"),
        (
            "flt",
            "SELECT s.t FROM (SELECT k, sum(v::float8) AS t FROM a GROUP BY k) s",
            "floating-point value",
        ),
        (
            "smp",
            // Every row sampled: refused as a sampled relation, yet its
            // result is determined, as the freshness check below needs.
            "SELECT k FROM a TABLESAMPLE BERNOULLI (100)",
            "sampled relation",
        ),
        (
            "ex",
            "SELECT s.m FROM (SELECT k, (SELECT max(b.k) FROM b WHERE b.k = a.k) AS m FROM a) s",
            "subquery in the select list of a subquery in FROM",
        ),
    ];
    for (name, query, reason) in cases {
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2)",
            &[&name, &query],
        )
        .unwrap();
        let row = db
            .query_one(
                "SELECT effective_mode, fallback_reason FROM pgtrickle.stream_table_status() WHERE name = $1",
                &[&format!("public.{name}")],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "FULL", "{query}");
        let why: String = row.get(1);
        assert!(
            why.contains(reason),
            "{query}: reason {why:?} should mention {reason}"
        );
        let explain_text: String = db
            .query_one("SELECT pgtrickle.explain_stream_table($1)::text", &[&name])
            .unwrap()
            .get(0);
        let explain: serde_json::Value = serde_json::from_str(&explain_text).unwrap();
        assert_eq!(explain["effective_mode"], "FULL");
        assert!(explain["fallback_reason"]
            .as_str()
            .unwrap()
            .contains(reason));
        // FULL still keeps it correct.
        db.batch_execute("INSERT INTO a VALUES (3, 3)").unwrap();
        db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&name])
            .unwrap();
        if name != "rnd" {
            assert_fresh(&mut db, name, query);
        }
        assert_eq!(
            last_refresh_mode(&mut db, name).unwrap().as_deref(),
            Some("FULL")
        );
    }
    // DIFFERENTIAL on an unsupported query is an error naming the construct.
    let before = footprint(&mut db);
    let r = db.execute(
        "SELECT pgtrickle.create_stream_table('bad', 'SELECT a.k FROM a LEFT JOIN b USING (k)', NULL, 'DIFFERENTIAL')",
        &[],
    );
    let msg = error_message(db.execute(
        "SELECT pgtrickle.create_stream_table('bad', 'SELECT a.k FROM a LEFT JOIN b USING (k)', NULL, 'DIFFERENTIAL')",
        &[],
    ));
    assert_eq!(sqlstate(r), "0A000");
    assert!(msg.contains("LEFT JOIN with USING"), "{msg}");
    assert_eq!(footprint(&mut db), before);
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_class WHERE relname = 'bad'"
        ),
        0
    );
    // A view cannot be captured: DIFFERENTIAL over it is refused the same way.
    let msg = error_message(db.execute(
        "SELECT pgtrickle.create_stream_table('bad', 'SELECT k FROM va', NULL, 'DIFFERENTIAL')",
        &[],
    ));
    assert!(msg.contains("view"), "{msg}");
    assert_eq!(footprint(&mut db), before);
}

#[test]
fn bad_input_has_a_sqlstate_and_leaves_nothing_behind() {
    let mut db = database("bad_input");
    db.batch_execute(
        "CREATE TABLE src (k int, v int); INSERT INTO src VALUES (1, 1);
                      SELECT pgtrickle.create_stream_table('taken', 'SELECT k FROM src');",
    )
    .unwrap();
    let before = footprint(&mut db);
    let cases: [(&str, &str, &str, &str); 10] = [
        ("s1", "SELEC k FROM src", "AUTO", "42601"),
        ("s2", "SELECT k FROM missing_table", "AUTO", "42P01"),
        ("taken", "SELECT k FROM src", "AUTO", "42P07"),
        ("s3", "SELECT k FROM src; DROP TABLE src", "AUTO", "42601"),
        ("s4", "INSERT INTO src VALUES (1, 1)", "AUTO", "42601"),
        ("s5", "SELECT k FROM src", "SOMETIMES", "22023"),
        ("s6", "SELECT k AS __pgt_x FROM src", "AUTO", "42939"),
        ("s7", "SELECT nope FROM src", "DIFFERENTIAL", "42703"),
        ("nosuchschema.s8", "SELECT k FROM src", "AUTO", "3F000"),
        ("s9", "SELECT k, k FROM src", "AUTO", "42701"),
    ];
    for (name, query, mode, expected) in cases {
        let got = sqlstate(db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, $3)",
            &[&name, &query, &mode],
        ));
        assert_eq!(
            got, expected,
            "create_stream_table({name}, {query}, {mode})"
        );
        assert_eq!(footprint(&mut db), before, "{name} left something behind");
    }
    let bad_schedule = sqlstate(db.execute(
        "SELECT pgtrickle.create_stream_table('s10', 'SELECT k FROM src', 'every tuesday')",
        &[],
    ));
    assert_eq!(bad_schedule, "22023");
    assert_eq!(footprint(&mut db), before);
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 's_' OR relname = 's10'"
        ),
        0
    );
    assert_eq!(
        sqlstate(db.execute("SELECT pgtrickle.refresh_stream_table('nope')", &[])),
        "42P01"
    );
    assert_eq!(
        sqlstate(db.execute("SELECT pgtrickle.refresh_stream_table('src')", &[])),
        "42809"
    );
    assert_eq!(
        sqlstate(db.execute("SELECT pgtrickle.drop_stream_table('src')", &[])),
        "42809"
    );
}

#[test]
fn sources_cannot_be_dropped_from_under_a_stream_table() {
    let mut db = database("drop_source");
    db.batch_execute(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('st2', 'SELECT k FROM st', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let r = db.batch_execute("DROP TABLE src");
    assert_eq!(sqlstate(r), "2BP01");
    // PostgreSQL itself refuses, naming the stream table, as for a view.
    let err = db.batch_execute("DROP TABLE src").unwrap_err();
    let db_err = err.as_db_error().expect("db error");
    let text = format!("{} {}", db_err.message(), db_err.detail().unwrap_or(""));
    assert!(
        text.contains("src") && text.contains("table st depends on table src"),
        "{text}"
    );
    assert_eq!(
        sqlstate(db.execute("SELECT pgtrickle.drop_stream_table('st')", &[])),
        "2BP01"
    );
    db.batch_execute("SELECT pgtrickle.drop_stream_table('st2'); SELECT pgtrickle.drop_stream_table('st'); DROP TABLE src")
        .unwrap();
    assert_eq!(footprint(&mut db), (0, 0, 0, 0));
}

#[test]
fn drop_cascade_of_a_source_drops_its_stream_tables_and_their_capture() {
    let mut db = database("drop_cascade");
    db.batch_execute(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1);
         CREATE TABLE other (k int);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('st2', 'SELECT k FROM st', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('keep', 'SELECT k FROM other', NULL, 'DIFFERENTIAL');
         DROP TABLE src CASCADE;",
    )
    .unwrap();
    let left: Vec<String> = first_column(
        &mut db,
        "SELECT name FROM pgtrickle.pgt_stream_tables ORDER BY 1",
        &[],
    );
    assert_eq!(left, ["public.keep"]);
    let buffers: Vec<String> = first_column(
        &mut db,
        "SELECT source_relid::regclass::text FROM pgtrickle.pgt_change_buffers ORDER BY 1",
        &[],
    );
    assert_eq!(
        buffers,
        ["other"],
        "capture of the dropped source and stream tables is gone"
    );
    let gone: bool = db
        .query_one(
            "SELECT to_regclass('st') IS NULL AND to_regclass('st2') IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(gone, "the dependent stream tables were not dropped");
}

#[test]
fn dropping_the_storage_directly_forgets_the_stream_table() {
    let mut db = database("direct_drop");
    db.batch_execute(
        "CREATE TABLE src (k int);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL');
         DROP TABLE st;",
    )
    .unwrap();
    assert_eq!(footprint(&mut db), (0, 0, 0, 0));
}

#[test]
fn mode_changes_stay_correct() {
    let mut db = database("alter_mode");
    let q = "SELECT k, count(*) AS n FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1), (1), (2);
         SELECT pgtrickle.create_stream_table('st', '{q}', '5m', 'DIFFERENTIAL');
         SELECT pgtrickle.alter_stream_table('st', refresh_mode => 'FULL');
         INSERT INTO src VALUES (3);
         SELECT pgtrickle.refresh_stream_table('st');"
    ))
    .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("FULL")
    );
    assert_fresh(&mut db, "st", q);
    assert_eq!(footprint(&mut db).1, 0, "FULL needs no change buffer");
    db.batch_execute(
        "SELECT pgtrickle.alter_stream_table('st', schedule => 'manual', refresh_mode => 'DIFFERENTIAL');
         INSERT INTO src VALUES (3);
         SELECT pgtrickle.refresh_stream_table('st');
         DELETE FROM src WHERE k = 1;
         SELECT pgtrickle.refresh_stream_table('st');",
    )
    .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
    assert_fresh(&mut db, "st", q);
    let schedule: Option<String> = db
        .query_one("SELECT schedule FROM pgtrickle.stream_table_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(schedule, None);
}

#[test]
fn a_refresh_in_progress_excludes_another() {
    let mut db = database("exclusion");
    db.batch_execute(
        "CREATE TABLE src (k int);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let mut other = shared_cluster().connect("t_exclusion").unwrap();
    let mut tx = db.transaction().unwrap();
    tx.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    other.batch_execute("SET lock_timeout = '300ms'").unwrap();
    let r = other.batch_execute("SELECT pgtrickle.refresh_stream_table('st')");
    assert_eq!(sqlstate(r), "55P03");
    tx.commit().unwrap();
    other
        .batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
}

#[test]
fn the_scheduler_refreshes_due_stream_tables_in_dependency_order() {
    // The scheduler works in the database named by pg_trickle.database ("postgres").
    let cluster = shared_cluster();
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute(
        "DROP EXTENSION IF EXISTS pg_trickle CASCADE; DROP TABLE IF EXISTS sched_src, sched_a, sched_b;
         CREATE EXTENSION pg_trickle;
         CREATE TABLE sched_src (k int, v int); INSERT INTO sched_src VALUES (1, 1);
         SELECT pgtrickle.create_stream_table('sched_a', 'SELECT k, v FROM sched_src', '1s', 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('sched_b', 'SELECT k, sum(v) AS s FROM sched_a GROUP BY k', '1s', 'DIFFERENTIAL');
         INSERT INTO sched_src VALUES (1, 41), (2, 2);",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let fresh_a = compare(&mut db, "sched_a", "SELECT k, v FROM sched_src")
            .unwrap()
            .is_none();
        let fresh_b = compare(
            &mut db,
            "sched_b",
            "SELECT k, sum(v) AS s FROM sched_src GROUP BY k",
        )
        .unwrap()
        .is_none();
        if fresh_a && fresh_b {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler did not refresh within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let by_scheduler = count(
        &mut db,
        "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE initiated_by = 'scheduler' AND mode = 'DIFFERENTIAL'",
    );
    assert!(
        by_scheduler >= 2,
        "refreshes by the scheduler: {by_scheduler}"
    );
    db.batch_execute("DROP EXTENSION pg_trickle CASCADE; DROP TABLE sched_src, sched_a, sched_b")
        .unwrap();
}

#[test]
fn source_column_changes_reinitialise_and_breaking_ones_are_refused() {
    let mut db = database("source_ddl");
    let q = "SELECT k, sum(v) AS s FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int, extra text); INSERT INTO src VALUES (1, 1, 'x'), (2, 2, 'y');
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    // Dropping an unused column keeps writes working and forces one FULL refresh.
    db.batch_execute("ALTER TABLE src DROP COLUMN extra; INSERT INTO src VALUES (1, 10)")
        .unwrap();
    let reinit: bool = db
        .query_one(
            "SELECT needs_reinit FROM pgtrickle.stream_table_status()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reinit);
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("FULL")
    );
    assert_fresh(&mut db, "st", q);
    db.batch_execute("ALTER TABLE src ADD COLUMN z int; INSERT INTO src VALUES (3, 3, 3)")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st'); UPDATE src SET v = v + 1; SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(
        last_refresh_mode(&mut db, "st").unwrap().as_deref(),
        Some("DIFFERENTIAL")
    );
    assert_fresh(&mut db, "st", q);
    // Changes that break the defining query are refused, and so are renames.
    let r = db.batch_execute("ALTER TABLE src DROP COLUMN v");
    let msg = error_message(db.batch_execute("ALTER TABLE src RENAME COLUMN v TO vv"));
    assert_eq!(sqlstate(r), "42703");
    assert!(msg.contains("public.st"), "{msg}");
    assert_eq!(
        sqlstate(db.batch_execute("ALTER TABLE src RENAME TO src2")),
        "0A000"
    );
    db.batch_execute(
        "INSERT INTO src VALUES (4, 4, 4); SELECT pgtrickle.refresh_stream_table('st')",
    )
    .unwrap();
    assert_fresh(&mut db, "st", q);
}

#[test]
fn refresh_history_keeps_the_newest_thousand_rows() {
    use pg_trickle_core::history::{prunes, KEPT};
    let mut db = database("history");
    db.batch_execute(
        "CREATE TABLE src (k int); INSERT INTO src VALUES (1);
         SELECT pgtrickle.create_stream_table('st', 'SELECT k FROM src', NULL, 'DIFFERENTIAL');
         DO $$ BEGIN FOR i IN 1..1005 LOOP PERFORM pgtrickle.refresh_stream_table('st'); END LOOP; END $$;",
    )
    .unwrap();
    // One session wrote the 1,006 rows (the creation's and 1,005
    // refreshes'), so their ids are consecutive: replay which refreshes
    // pruned to the newest rows, and expect exactly the rows kept.
    let stored: Vec<i64> = db
        .query(
            "SELECT id FROM pgtrickle.pgt_refresh_history ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let newest = *stored.last().expect("history rows");
    let mut kept: Vec<i64> = Vec::new();
    for id in newest - 1005..=newest {
        kept.push(id);
        if prunes(id) && kept.len() > KEPT {
            kept.drain(..kept.len() - KEPT);
        }
    }
    assert_eq!(
        stored, kept,
        "the rows kept after the refreshes that pruned"
    );
    let shown: Vec<i64> = db
        .query(
            "SELECT refresh_id FROM pgtrickle.refresh_history('st')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = (newest - KEPT as i64 + 1..=newest).rev().collect();
    assert_eq!(
        shown, expected,
        "refresh_history() shows the newest 1,000, newest first"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pgtrickle.refresh_history('st') WHERE initiated_by = 'create'"
        ),
        0,
        "the oldest rows go first"
    );
}

#[test]
fn a_query_without_columns_is_refused_and_for_update_is_named() {
    let mut db = database("no_columns");
    db.batch_execute("CREATE TABLE src (k int); INSERT INTO src VALUES (1)")
        .unwrap();
    let err = db
        .batch_execute("SELECT pgtrickle.create_stream_table('nocols', 'SELECT FROM src')")
        .unwrap_err();
    let d = err.as_db_error().expect("db error");
    assert_eq!(d.code().code(), "0A000");
    assert!(d.message().contains("no columns"), "{}", d.message());
    assert_eq!(footprint(&mut db), (0, 0, 0, 0));
    db.batch_execute(
        "SELECT pgtrickle.create_stream_table('locked', 'SELECT k FROM src FOR UPDATE')",
    )
    .unwrap();
    let reason: String = db
        .query_one(
            "SELECT fallback_reason FROM pgtrickle.stream_table_status() WHERE name = 'public.locked'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        reason.contains("FOR UPDATE") && !reason.contains("LIMIT"),
        "{reason}"
    );
}

/// A change committed between a refresh's check of which sources changed
/// and its statement: the specialised statement assumed that source
/// unchanged, so its work is undone and the general statement runs. The
/// refresh stays DIFFERENTIAL (it used to recompute FULL) and exact.
#[test]
fn a_change_arriving_while_the_refresh_is_planned_stays_differential() {
    let mut db = database("planning_race");
    db.batch_execute(
        "CREATE TABLE a (k int, v int); CREATE TABLE b (k int, w int);
         INSERT INTO a SELECT g, g FROM generate_series(1, 50) g;
         INSERT INTO b SELECT g, g * 10 FROM generate_series(1, 50) g;
         SELECT pgtrickle.create_stream_table('st', 'SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k', NULL, 'DIFFERENTIAL');
         INSERT INTO a VALUES (51, 51);",
    )
    .unwrap();
    // The writer changes b and holds a lock on a that the refresh needs
    // only after it checked which buffers hold changes (when it checks the
    // owner may still read the sources).
    let mut writer = shared_cluster().connect("t_planning_race").unwrap();
    writer
        .batch_execute("BEGIN; INSERT INTO b VALUES (51, 510); UPDATE b SET w = w + 1 WHERE k = 3; LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let refresher = std::thread::spawn(|| {
        let mut r = shared_cluster().connect("t_planning_race").unwrap();
        r.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
    });
    let started = Instant::now();
    loop {
        let waiting = count(
            &mut db,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE '%refresh_stream_table%'",
        );
        if waiting == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the refresh never waited for the writer's lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.batch_execute("COMMIT").unwrap();
    refresher.join().unwrap().unwrap();
    let last = oracles::engine_api::last_refresh(&mut db, "st")
        .unwrap()
        .unwrap();
    assert_eq!(last.describe(), "DIFFERENTIAL", "{last:?}");
    assert_fresh(
        &mut db,
        "st",
        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k",
    );
}

/// A row inserted with a value the defining query cannot compute (here a
/// division by zero) and updated to a good value before any refresh: FULL
/// never sees the intermediate image and succeeds; DIFFERENTIAL must too,
/// and end exact: the captured images are netted before the query's
/// expressions see them.
#[test]
fn an_intermediate_row_image_that_fails_to_compute_is_never_evaluated() {
    let mut db = database("intermediate_image");
    db.batch_execute(
        "CREATE TABLE ratios_src (id int PRIMARY KEY, amount int NOT NULL);
         INSERT INTO ratios_src VALUES (1, 10);
         SELECT pgtrickle.create_stream_table('ratios_st',
             'SELECT id, 100 / amount AS r FROM ratios_src', NULL, 'DIFFERENTIAL');
         INSERT INTO ratios_src VALUES (2, 0);
         UPDATE ratios_src SET amount = 5 WHERE id = 2;",
    )
    .unwrap();
    let outcome = sqlstate(db.batch_execute("SELECT pgtrickle.refresh_stream_table('ratios_st')"));
    assert_eq!(outcome, "ok", "FULL would succeed on these sources");
    assert_eq!(
        last_refresh_mode(&mut db, "ratios_st").unwrap().as_deref(),
        Some("DIFFERENTIAL"),
        "the differential statement must not fail over to FULL"
    );
    assert_fresh(
        &mut db,
        "ratios_st",
        "SELECT id, 100 / amount AS r FROM ratios_src",
    );
}

/// Intermediate images that only other change buffer rows share: a key
/// changed between two updates, a row deleted and inserted again with the
/// same key, and a table without a key whose rows have NULLs. When no
/// change shares its cheap prefix (the key, or a few columns) with another,
/// the images skip the netting window; these share one and must not, or
/// the query would divide by zero where FULL does not.
#[test]
fn intermediate_images_shared_across_changes_are_never_evaluated() {
    let mut db = database("intermediate_shared");
    db.batch_execute(
        "CREATE TABLE keyed_src (id int PRIMARY KEY, amount int NOT NULL);
         CREATE TABLE loose_src (a int, b int);
         INSERT INTO keyed_src VALUES (1, 10), (5, 20);
         INSERT INTO loose_src VALUES (1, 4), (NULL, 2);
         SELECT pgtrickle.create_stream_table('keyed_st',
             'SELECT id, 100 / amount AS r FROM keyed_src', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('loose_st',
             'SELECT a, 100 / b AS r FROM loose_src', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('loose_sum',
             'SELECT a, sum(100 / b) AS r, count(*) AS n FROM loose_src GROUP BY a', NULL, 'DIFFERENTIAL');
         INSERT INTO keyed_src VALUES (2, 0);
         UPDATE keyed_src SET id = 3 WHERE id = 2;
         UPDATE keyed_src SET amount = 4 WHERE id = 3;
         DELETE FROM keyed_src WHERE id = 5;
         INSERT INTO keyed_src VALUES (5, 0);
         UPDATE keyed_src SET amount = 25 WHERE id = 5;
         UPDATE keyed_src SET amount = amount WHERE id = 1;
         INSERT INTO loose_src VALUES (NULL, 0);
         UPDATE loose_src SET b = 5 WHERE a IS NULL AND b = 0;
         INSERT INTO loose_src VALUES (7, 0);
         UPDATE loose_src SET a = NULL WHERE a = 7;
         UPDATE loose_src SET b = 10 WHERE a IS NULL AND b = 0;
         UPDATE loose_src SET a = a WHERE a = 1;",
    )
    .unwrap();
    for (st, query) in [
        ("keyed_st", "SELECT id, 100 / amount AS r FROM keyed_src"),
        ("loose_st", "SELECT a, 100 / b AS r FROM loose_src"),
        (
            "loose_sum",
            "SELECT a, sum(100 / b) AS r, count(*) AS n FROM loose_src GROUP BY a",
        ),
    ] {
        refresh_stays_differential_and_fresh(&mut db, st, query, st);
    }
}

/// Images that pass as they are and images that must be netted: a round
/// with shared prefixes (a numeric key rescaled, 1.0 to 1.00, which is a
/// change and not a no-op; a value changed to one the query cannot compute
/// and back; two equal rows of a table without a key read through a
/// grouped subquery, netted to one image counted twice), a round where
/// no prefix is shared (NULL prefixes, UPDATEs that change nothing, a
/// changed key), a round sharing more keys than are looked up one by one,
/// and one sharing a few among many changed rows that share none.
#[test]
fn images_with_a_prefix_of_their_own_pass_as_they_are() {
    let mut db = database("images_own_prefix");
    db.batch_execute(
        "CREATE TABLE num_src (id numeric PRIMARY KEY, amount int NOT NULL);
         CREATE TABLE dup_src (a int, b int);
         INSERT INTO num_src VALUES (1.0, 10), (2, 20), (3, 30);
         INSERT INTO dup_src VALUES (1, 1), (NULL, 2), (3, 3);
         SELECT pgtrickle.create_stream_table('num_st',
             'SELECT id, 100 / amount AS r FROM num_src', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('dup_st',
             'SELECT n, count(*) AS c FROM (SELECT a, count(*) AS n FROM dup_src GROUP BY a) s GROUP BY n',
             NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let checks = [
        ("num_st", "SELECT id, 100 / amount AS r FROM num_src"),
        (
            "dup_st",
            "SELECT n, count(*) AS c FROM (SELECT a, count(*) AS n FROM dup_src GROUP BY a) s GROUP BY n",
        ),
    ];
    let rounds = [
        "UPDATE num_src SET id = 1.00 WHERE id = 1;
         UPDATE num_src SET amount = 0 WHERE id = 2;
         UPDATE num_src SET amount = 20 WHERE id = 2;
         INSERT INTO dup_src VALUES (1, 1), (1, 1);",
        "UPDATE num_src SET amount = amount;
         UPDATE num_src SET amount = 15 WHERE id = 3;
         UPDATE dup_src SET b = b;
         UPDATE dup_src SET a = 4 WHERE a = 3;
         INSERT INTO dup_src VALUES (NULL, 7);",
        // More shared keys than are looked up one by one: every image
        // through the window, where the zero amounts cancel.
        "INSERT INTO num_src SELECT g, g FROM generate_series(100, 1199) g;
         UPDATE num_src SET amount = 0 WHERE id >= 100;
         UPDATE num_src SET amount = 5 WHERE id >= 100;
         UPDATE num_src SET amount = 0 WHERE id = 3;
         UPDATE num_src SET amount = 16 WHERE id = 3;",
        // A few shared among many that are not.
        "UPDATE num_src SET amount = 0 WHERE id BETWEEN 100 AND 104;
         UPDATE num_src SET amount = 7 WHERE id BETWEEN 100 AND 104;
         UPDATE num_src SET amount = amount + 1 WHERE id >= 105;",
    ];
    for (round, sql) in rounds.iter().enumerate() {
        db.batch_execute(sql).unwrap();
        for (st, query) in checks {
            let context = format!("round {round}, {st}");
            refresh_stays_differential_and_fresh(&mut db, st, query, &context);
        }
    }
    let ids: Vec<String> = db
        .query("SELECT id::text FROM num_st WHERE id < 100 ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["1.00", "2", "3"], "the rescaled key is a change");
}

/// A keyed subquery's old rows are found by the source's primary key; rows
/// with a NULL in it are searched apart, and only while a key column may
/// hold NULL. An inheritance child added after planning may drop its
/// NOT NULL while the parent keeps it: its NULL-keyed rows are still part
/// of the old state.
#[test]
fn null_keyed_rows_of_a_child_added_after_planning_stay_in_the_old_state() {
    let mut db = database("null_keyed_child");
    let query =
        "SELECT n, count(*) AS c FROM (SELECT g, sum(v) AS n FROM inh_p GROUP BY g) s GROUP BY n";
    db.batch_execute(&format!(
        "CREATE TABLE inh_p (k int PRIMARY KEY, g int, v int);
         INSERT INTO inh_p VALUES (1, 1, 1), (2, 2, 2);
         SELECT pgtrickle.create_stream_table('inh_st', '{query}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    let rounds = [
        "CREATE TABLE inh_c () INHERITS (inh_p);
         ALTER TABLE inh_c ALTER COLUMN k DROP NOT NULL;
         INSERT INTO inh_c VALUES (NULL, 1, 5);",
        // Reaches group 1, whose NULL-keyed row is unchanged.
        "INSERT INTO inh_p VALUES (3, 1, 7);",
        "UPDATE inh_p SET v = v + 1 WHERE k = 3;
         INSERT INTO inh_c VALUES (NULL, 1, 5);",
    ];
    for (round, sql) in rounds.iter().enumerate() {
        db.batch_execute(sql).unwrap();
        refresh_stays_differential_and_fresh(&mut db, "inh_st", query, &format!("round {round}"));
    }
}

/// Captured images are netted by their text. A session that prints floats
/// inexactly (extra_float_digits = 0 prints 0.1 + 0.2 as 0.3) and runs the
/// refresh must not make an update from 0.30000000000000004 to 0.3 cancel
/// out: refreshes pin the setting.
#[test]
fn a_refresh_from_a_session_printing_floats_inexactly_stays_exact() {
    let mut db = database("float_text");
    db.batch_execute(
        "CREATE TABLE floats_src (id int PRIMARY KEY, x float8 NOT NULL);
         INSERT INTO floats_src VALUES (1, 0.1::float8 + 0.2::float8);
         SELECT pgtrickle.create_stream_table('floats_st',
             'SELECT id, x FROM floats_src', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    db.batch_execute("UPDATE floats_src SET x = 0.3 WHERE id = 1")
        .unwrap();
    db.batch_execute("SET extra_float_digits = 0").unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('floats_st')")
        .unwrap();
    db.batch_execute("RESET extra_float_digits").unwrap();
    assert_fresh(&mut db, "floats_st", "SELECT id, x FROM floats_src");
}

/// A scalar subquery in a grouped query that comes to return two rows:
/// the DIFFERENTIAL refresh raises 21000 as FULL does, and keeps the
/// stream table as it was; once the data is mended it catches up exactly.
#[test]
fn a_scalar_subquery_returning_two_rows_fails_the_refresh_as_full_does() {
    let mut db = database("scalar_two_rows");
    db.batch_execute(
        "CREATE TABLE sq_a (k int, v int);
         CREATE TABLE sq_b (k int, w int);
         INSERT INTO sq_a VALUES (1, 5), (2, 7);
         INSERT INTO sq_b VALUES (1, 3), (2, 9);",
    )
    .unwrap();
    let query = "SELECT k, sum(v) AS total FROM sq_a WHERE v > (SELECT w FROM sq_b WHERE sq_b.k = sq_a.k) GROUP BY k";
    db.execute(
        "SELECT pgtrickle.create_stream_table('sq_st', $1, NULL, 'DIFFERENTIAL')",
        &[&query],
    )
    .unwrap();
    db.batch_execute("INSERT INTO sq_b VALUES (2, 1)").unwrap();
    let full = sqlstate(db.batch_execute(query));
    assert_eq!(full, "21000", "the query itself fails now");
    let before = rows_text(&mut db, "SELECT k, total FROM sq_st ORDER BY k");
    let outcome = sqlstate(db.batch_execute("SELECT pgtrickle.refresh_stream_table('sq_st')"));
    assert_eq!(outcome, "21000", "the refresh fails as the query does");
    assert_eq!(
        rows_text(&mut db, "SELECT k, total FROM sq_st ORDER BY k"),
        before,
        "the stream table is kept as it was"
    );
    db.batch_execute("DELETE FROM sq_b WHERE k = 2 AND w = 9")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('sq_st')")
        .unwrap();
    let last = oracles::engine_api::last_refresh(&mut db, "sq_st")
        .unwrap()
        .unwrap();
    assert_eq!(last.describe(), "DIFFERENTIAL", "{last:?}");
    assert_fresh(&mut db, "sq_st", query);
}

/// A delta evaluates the query's expressions on rows the query itself
/// filters out (here a row a NOT EXISTS keeps out, reached by a change to
/// what the subquery reads, whose divisor is zero): the DIFFERENTIAL
/// statement's data error makes the refresh recompute FULL, which
/// succeeds, and the history says why.
#[test]
fn a_data_error_of_the_delta_alone_recomputes_full() {
    let mut db = database("delta_data_error");
    db.batch_execute(
        "CREATE TABLE de_a (k int, v int);
         CREATE TABLE de_b (k int);
         INSERT INTO de_a VALUES (1, 5), (9, 0);
         INSERT INTO de_b VALUES (9);",
    )
    .unwrap();
    let query = "SELECT 100 / v AS r, count(*) AS n FROM de_a WHERE NOT EXISTS (SELECT 1 FROM de_b WHERE de_b.k = de_a.k) GROUP BY 1";
    db.execute(
        "SELECT pgtrickle.create_stream_table('de_st', $1, NULL, 'DIFFERENTIAL')",
        &[&query],
    )
    .unwrap();
    // A second match for k = 9: the row stays out, but the change reaches it.
    db.batch_execute("INSERT INTO de_b VALUES (9)").unwrap();
    let outcome = sqlstate(db.batch_execute("SELECT pgtrickle.refresh_stream_table('de_st')"));
    assert_eq!(outcome, "ok", "FULL succeeds on these sources");
    let last = oracles::engine_api::last_refresh(&mut db, "de_st")
        .unwrap()
        .unwrap();
    assert_eq!(last.ran.to_string(), "FULL", "{last:?}");
    let reason = last.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("differential statement raised 22012"),
        "{last:?}"
    );
    assert_fresh(&mut db, "de_st", query);
    // While such a row is there, a refresh may recompute FULL again; it
    // stays exact. Once it is gone, changes flow DIFFERENTIALLY again.
    db.batch_execute("INSERT INTO de_a VALUES (1, 20)").unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('de_st')")
        .unwrap();
    assert_fresh(&mut db, "de_st", query);
    db.batch_execute("DELETE FROM de_a WHERE v = 0").unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('de_st')")
        .unwrap();
    assert_fresh(&mut db, "de_st", query);
    db.batch_execute("INSERT INTO de_a VALUES (1, 10)").unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('de_st')")
        .unwrap();
    let last = oracles::engine_api::last_refresh(&mut db, "de_st")
        .unwrap()
        .unwrap();
    assert_eq!(last.describe(), "DIFFERENTIAL", "{last:?}");
    assert_fresh(&mut db, "de_st", query);
}

/// A new row an EXISTS keeps out is filtered before the select list is
/// evaluated on it, as in FULL: its zero divisor raises nothing and the
/// refresh stays DIFFERENTIAL (a filter kept algebraically; the recompute
/// form evaluated it and fell back to FULL).
#[test]
fn a_new_row_an_exists_keeps_out_is_not_evaluated() {
    let mut db = database("delta_filtered_row");
    db.batch_execute(
        "CREATE TABLE df_a (k int, v int);
         CREATE TABLE df_b (k int);
         INSERT INTO df_a VALUES (1, 5);
         INSERT INTO df_b VALUES (1);",
    )
    .unwrap();
    let query = "SELECT 100 / v AS r, count(*) AS n FROM df_a WHERE EXISTS (SELECT 1 FROM df_b WHERE df_b.k = df_a.k) GROUP BY 1";
    db.execute(
        "SELECT pgtrickle.create_stream_table('df_st', $1, NULL, 'DIFFERENTIAL')",
        &[&query],
    )
    .unwrap();
    db.batch_execute(
        "INSERT INTO df_a VALUES (9, 0);
         SELECT pgtrickle.refresh_stream_table('df_st');",
    )
    .unwrap();
    let last = oracles::engine_api::last_refresh(&mut db, "df_st")
        .unwrap()
        .unwrap();
    assert_eq!(last.describe(), "DIFFERENTIAL", "{last:?}");
    assert_fresh(&mut db, "df_st", query);
}

fn rows_text(db: &mut Client, sql: &str) -> Vec<String> {
    db.query(&format!("SELECT t::text FROM ({sql}) t"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A re-plan that cannot take a lock in time (a source held by another
/// session, `lock_timeout` set) fails with the lock's own error, not as a
/// verdict that the defining query no longer works.
#[test]
fn a_lock_timeout_while_re_planning_is_not_called_a_broken_query() {
    let name = "replan_lock_timeout";
    let mut db = database(name);
    db.batch_execute(
        "CREATE TABLE a (k int PRIMARY KEY, v int);
         CREATE TABLE b (k int PRIMARY KEY, w int);
         INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 2);
         SELECT pgtrickle.create_stream_table('ab', 'SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let mut holder = shared_cluster().connect(&format!("t_{name}")).unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE b IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let altered = db.batch_execute("SET lock_timeout = '200ms'; ALTER TABLE a ADD COLUMN z int");
    holder.batch_execute("ROLLBACK").unwrap();
    let err = altered.expect_err("the ALTER went through a held lock");
    let db_err = err.as_db_error().expect("a server error");
    assert!(
        db_err.code().code() == "55P03" && !db_err.message().contains("no longer works"),
        "expected the lock timeout itself, got: {} ({})",
        db_err.message(),
        db_err.code().code()
    );
}

/// A refresh runs its statement with JIT off (compiling a generated
/// statement costs more than running it) and leaves the session's setting
/// as it was, in and outside a transaction block (the API's own setting
/// scope would restore it too; the refresh restores it itself for the
/// scheduler, which has none).
#[test]
fn a_refresh_runs_without_jit_and_restores_the_setting() {
    let mut db = database("refresh_jit");
    db.batch_execute(
        "CREATE TABLE jit_src (k int PRIMARY KEY);
         INSERT INTO jit_src VALUES (1);
         SELECT pgtrickle.create_stream_table('jit_seen', 'SELECT k, current_setting(''jit'') AS jit FROM jit_src', NULL, 'FULL');
         SET jit = on;
         SELECT pgtrickle.refresh_stream_table('jit_seen');",
    )
    .unwrap();
    let seen: Vec<String> = first_column(&mut db, "SELECT jit FROM jit_seen", &[]);
    assert_eq!(seen, ["off"], "the refresh statement ran with JIT on");
    let after: Vec<String> = first_column(&mut db, "SHOW jit", &[]);
    assert_eq!(after, ["on"], "the session's setting was not restored");
    db.batch_execute(
        "BEGIN; SET LOCAL jit = on; SELECT pgtrickle.refresh_stream_table('jit_seen');",
    )
    .unwrap();
    let inside: Vec<String> = first_column(&mut db, "SHOW jit", &[]);
    assert_eq!(inside, ["on"], "the transaction's setting was not restored");
    db.batch_execute("COMMIT").unwrap();
}

/// A backend keeps the plans of the catalog statements it runs: dropping
/// the extension and creating it again in the same session (every catalog
/// table replaced) must leave them working, refresh after refresh.
#[test]
fn a_session_keeps_working_after_the_extension_is_created_again() {
    let mut db = database("kept_plans_recreated");
    let query = "SELECT g, count(*) AS n, sum(v) AS s FROM kp_src GROUP BY g";
    let setup = format!(
        "CREATE TABLE kp_src (id int PRIMARY KEY, g int, v int);
         INSERT INTO kp_src SELECT i, i % 3, i FROM generate_series(1, 30) i;
         SELECT pgtrickle.create_stream_table('kp', '{query}', NULL, 'DIFFERENTIAL');"
    );
    db.batch_execute(&setup).unwrap();
    for round in 0..2 {
        for i in 1..=7 {
            db.batch_execute(&format!(
                "UPDATE kp_src SET v = v + 1 WHERE id = {i}; INSERT INTO kp_src VALUES ({}, {i}, 1);
                 SELECT pgtrickle.refresh_stream_table('kp');",
                100 * (round + 1) + i
            ))
            .unwrap();
            assert_eq!(
                last_refresh_mode(&mut db, "kp").unwrap().as_deref(),
                Some("DIFFERENTIAL"),
                "round {round}, refresh {i}"
            );
            assert_fresh(&mut db, "kp", query);
        }
        if round == 0 {
            db.batch_execute(
                "DROP EXTENSION pg_trickle CASCADE; DROP TABLE kp_src CASCADE; CREATE EXTENSION pg_trickle;",
            )
            .unwrap();
            db.batch_execute(&setup).unwrap();
        }
    }
}
