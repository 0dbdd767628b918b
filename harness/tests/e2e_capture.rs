//! Row capture (`pgtrickle._capture_row`) against a real cluster, where it
//! keeps per-backend knowledge of each source: a REPEATABLE READ writer
//! routed into a partition created after its snapshot, a source column
//! whose type changes under a session that already captured rows, TOASTed
//! values, rows of rolled-back savepoints, and change ids drawn in blocks.

use harness::testkit::{database, shared_cluster};
use oracles::compare::differences;
use postgres::Client;

fn assert_fresh(db: &mut Client, st: &str, query: &str) {
    db.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"))
        .unwrap();
    if let Some(m) = differences(db, st, query).unwrap() {
        panic!("{st} differs from its query: {m}");
    }
}

fn connect(db: &str) -> Client {
    shared_cluster().connect(db).unwrap()
}

/// The partition a row goes to was created (and given its clone of the
/// capture trigger) after the writer's snapshot was taken.
#[test]
fn a_repeatable_read_writer_is_captured_in_a_partition_newer_than_its_snapshot() {
    let mut db = database("capture_rr_partition");
    let q = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int) PARTITION BY RANGE (k);
         CREATE TABLE src_0 PARTITION OF src FOR VALUES FROM (0) TO (10);
         INSERT INTO src VALUES (1, 1), (2, 2);
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    let mut writer = connect("t_capture_rr_partition");
    writer
        .batch_execute(
            // The snapshot is taken by a read of something else: a lock
            // on src would hold the partition's creation back.
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class;",
        )
        .unwrap();
    db.batch_execute("CREATE TABLE src_1 PARTITION OF src FOR VALUES FROM (10) TO (20)")
        .unwrap();
    writer
        .batch_execute(
            "INSERT INTO src VALUES (3, 3), (11, 11), (12, 12); UPDATE src SET v = v + 100 WHERE k = 11; COMMIT",
        )
        .unwrap();
    assert_fresh(&mut db, "st", q);
}

/// A session captures rows (and keeps what it learnt about the source),
/// then another changes a column's type: the next rows are captured with
/// the new type, or refused, never stored as the old one.
#[test]
fn a_column_type_change_under_a_capturing_session_is_followed() {
    let mut db = database("capture_type_change");
    let q = "SELECT k, v::text AS v, s FROM src";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int, s text);
         INSERT INTO src VALUES (1, 1, 'a');
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    let mut writer = connect("t_capture_type_change");
    writer
        .batch_execute("INSERT INTO src VALUES (2, 2, 'b'); UPDATE src SET s = 'c' WHERE k = 1")
        .unwrap();
    db.batch_execute("ALTER TABLE src ALTER COLUMN v TYPE bigint")
        .unwrap();
    writer
        .batch_execute(
            "INSERT INTO src VALUES (3, 5000000000, 'd'); UPDATE src SET v = v * 3000000000 WHERE k = 2; DELETE FROM src WHERE k = 1",
        )
        .unwrap();
    assert_fresh(&mut db, "st", q);
    writer
        .batch_execute("UPDATE src SET v = -v WHERE k = 3")
        .unwrap();
    assert_fresh(&mut db, "st", q);
}

/// Values stored out of line (TOAST) are copied into the buffer, not
/// referenced: they survive the source row's update and deletion.
#[test]
fn toasted_values_are_captured_by_value() {
    let mut db = database("capture_toast");
    let q = "SELECT k, md5(big) AS h, length(big) AS len FROM src";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, big text);
         ALTER TABLE src ALTER COLUMN big SET STORAGE EXTERNAL;
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');
         INSERT INTO src SELECT i, repeat(md5(i::text), 2000) FROM generate_series(1, 5) i;
         UPDATE src SET k = k + 10 WHERE k <= 2;
         DELETE FROM src WHERE k = 3;"
    ))
    .unwrap();
    db.batch_execute("VACUUM src").unwrap();
    assert_fresh(&mut db, "st", q);
    db.batch_execute("UPDATE src SET big = big || 'x' WHERE k = 4; DELETE FROM src WHERE k = 11;")
        .unwrap();
    assert_fresh(&mut db, "st", q);
}

/// Rows captured inside a rolled-back savepoint are rolled back with it.
#[test]
fn rows_of_a_rolled_back_savepoint_are_not_applied() {
    let mut db = database("capture_savepoint");
    let q = "SELECT k, sum(v) AS total FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int);
         INSERT INTO src VALUES (1, 1);
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');
         BEGIN;
         INSERT INTO src VALUES (1, 10);
         SAVEPOINT a;
         INSERT INTO src VALUES (2, 20);
         UPDATE src SET v = 1000;
         ROLLBACK TO SAVEPOINT a;
         INSERT INTO src VALUES (3, 30);
         COMMIT;"
    ))
    .unwrap();
    assert_fresh(&mut db, "st", q);
}

/// Changes are netted by value before a refresh applies them: an update
/// that changes only the case of a text value must survive it, even when
/// the change buffer's column kept a case-insensitive collation that the
/// source column has since dropped (a collation change alone does not
/// rebuild the buffer).
#[test]
fn an_update_that_only_changes_case_is_kept_whatever_the_buffers_collation() {
    let mut db = database("capture_case_only");
    let q = "SELECT id, c FROM src";
    db.batch_execute(&format!(
        "CREATE COLLATION case_blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE src (id int PRIMARY KEY, c text COLLATE case_blind);
         INSERT INTO src VALUES (1, 'A'), (2, 'b');
         SELECT pgtrickle.create_stream_table('before_alter', '{q}', NULL, 'DIFFERENTIAL');
         ALTER TABLE src ALTER COLUMN c TYPE text COLLATE \"C\";
         SELECT pgtrickle.create_stream_table('after_alter', '{q}', NULL, 'DIFFERENTIAL');
         UPDATE src SET c = 'a' WHERE id = 1;
         UPDATE src SET c = 'B' WHERE id = 2;"
    ))
    .unwrap();
    for st in ["before_alter", "after_alter"] {
        assert_fresh(&mut db, st, q);
    }
}

/// One draw of a buffer's change-id sequence numbers a block of rows of
/// the transaction that drew it. A refresh inside the transaction records
/// the last id its transaction wrote; the row captured after it takes its
/// id from a new draw (past every id handed out, a drain's included).
/// This checks the mechanism; what it prevents (rows after the refresh
/// taken as consumed, where a drain drew ids in between) is
/// `e2e_distributed::local_writes_after_a_refresh_that_drained_the_nodes_in_their_transaction_are_applied`.
#[test]
fn change_ids_come_in_blocks_and_a_refresh_starts_a_new_one() {
    let mut db = database("capture_id_blocks");
    let q = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k";
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v int);
         SELECT pgtrickle.create_stream_table('st', '{q}', NULL, 'DIFFERENTIAL');"
    ))
    .unwrap();
    let buffer: String = db
        .query_one(
            "SELECT 'pgtrickle_changes.changes_' || 'src'::regclass::oid::text",
            &[],
        )
        .unwrap()
        .get(0);
    let increment: i64 = db
        .query_one(
            "SELECT seqincrement FROM pg_sequence \
             WHERE seqrelid = pg_get_serial_sequence($1, 'change_id')::regclass",
            &[&buffer],
        )
        .unwrap()
        .get(0);
    assert_eq!(increment, 1024, "a new buffer's sequence counts in blocks");

    // 3,000 rows in one statement: three draws, consecutive ids.
    db.batch_execute("INSERT INTO src SELECT i % 7, i FROM generate_series(1, 3000) i")
        .unwrap();
    let (n, span): (i64, i64) = {
        let r = db
            .query_one(
                &format!("SELECT count(*), max(change_id) - min(change_id) + 1 FROM {buffer}"),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((n, span), (3000, 3000), "one block numbers 1,024 rows");

    // Inside one transaction: rows, a refresh, more rows.
    let last_drawn = format!(
        "SELECT last_value FROM pg_sequences \
         WHERE schemaname || '.' || sequencename = pg_get_serial_sequence('{buffer}', 'change_id')"
    );
    db.batch_execute(
        "BEGIN;
         UPDATE src SET v = v + 1 WHERE v <= 5;
         SELECT pgtrickle.refresh_stream_table('st');
         INSERT INTO src VALUES (100, 1);",
    )
    .unwrap();
    let after: i64 = db
        .query_one(
            &format!("SELECT max(change_id) FROM {buffer} WHERE xid = pg_current_xact_id()"),
            &[],
        )
        .unwrap()
        .get(0);
    let drawn: i64 = db.query_one(&last_drawn, &[]).unwrap().get(0);
    let own: i64 = db
        .query_one(
            "SELECT s.own_change_id FROM pgtrickle.pgt_sources s \
             JOIN pgtrickle.pgt_stream_tables st ON st.id = s.st_id WHERE st.name = 'public.st'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(own > 0, "the refresh recorded its own rows");
    assert_eq!(
        after, drawn,
        "the row after the refresh starts a new block (own position {own})"
    );
    db.batch_execute("UPDATE src SET v = v + 1 WHERE k = 100; COMMIT;")
        .unwrap();
    assert_fresh(&mut db, "st", q);
}
