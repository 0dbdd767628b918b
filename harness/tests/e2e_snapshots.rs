//! Stream table snapshots against a real cluster: a snapshot keeps every
//! row and column (in order) under names of any shape; a restore puts the
//! rows back and the next refresh is DIFFERENTIAL over only later changes
//! and exact; every restore that could not be exact is refused, naming the
//! reason, and changes nothing. (The oracle corpus's `snapshot_then_restore`
//! checks refresh after restore under random changes, in both capture
//! modes.)

use harness::testkit::{code, database, first_column};
use oracles::compare::differences;
use postgres::Client;

const Q: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k";

fn exact(db: &mut Client, st: &str, q: &str, what: &str) {
    if let Some(d) = differences(db, st, q).unwrap() {
        panic!("{st} differs from its query {what}:\n{d}");
    }
}

fn last_mode(db: &mut Client, st: &str) -> String {
    db.query_one(
        "SELECT mode FROM pgtrickle.refresh_history($1) ORDER BY refresh_id DESC LIMIT 1",
        &[&st],
    )
    .unwrap()
    .get(0)
}

fn rows_of(db: &mut Client, table: &str) -> Vec<String> {
    first_column(
        db,
        &format!("SELECT t::text FROM {table} t ORDER BY 1"),
        &[],
    )
}

/// Names of every shape: a quoted schema with a space, a stream table
/// with quotes and Unicode, a reserved word, a name cut at 63 bytes, the
/// default name. Each snapshot holds exactly the stream table's rows
/// (hidden row identity included); each restore brings them back, and the
/// next refresh is DIFFERENTIAL and exact. (`keeper`, never refreshed,
/// keeps the changes since the snapshots buffered.)
#[test]
fn snapshots_keep_every_column_under_names_of_any_shape() {
    let mut db = database("snapshot_names");
    db.batch_execute(
        "CREATE SCHEMA \"Sales Data\"; CREATE SCHEMA archive; \
         CREATE TABLE src (k int, v int); INSERT INTO src SELECT i % 4, i FROM generate_series(1, 40) i; \
         SELECT pgtrickle.create_stream_table('\"Sales Data\".\"Q\"\"4\"\" Größe\"', \
           'SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k', NULL, 'DIFFERENTIAL'); \
         SELECT pgtrickle.create_stream_table('keeper', 'SELECT k, v FROM src', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let st = "\"Sales Data\".\"Q\"\"4\"\" Größe\"";
    let long = format!("archive.\"{}\"", "ü".repeat(40));
    let targets: Vec<Option<String>> = vec![
        Some("archive.\"select\"".into()),
        Some("\"Sales Data\".\"snap ä\"".into()),
        Some(long),
        None,
    ];
    let mut taken = Vec::new();
    for target in &targets {
        let name: String = db
            .query_one(
                "SELECT pgtrickle.snapshot_stream_table($1, $2)",
                &[&st, target],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            rows_of(&mut db, &name),
            rows_of(&mut db, st),
            "snapshot {name}"
        );
        let cols = |db: &mut Client, t: &str| -> Vec<String> {
            first_column(db, "SELECT attname::text || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&t])
        };
        assert_eq!(cols(&mut db, &name), cols(&mut db, st), "columns of {name}");
        taken.push(name);
    }
    assert!(taken[2].len() <= 63 + "archive.\"\"".len(), "{}", taken[2]);
    assert_eq!(taken[3], "\"Sales Data\".\"Q\"\"4\"\" Größe_snapshot_1\"");
    db.batch_execute("UPDATE src SET v = v + 1 WHERE k = 1; INSERT INTO src VALUES (9, 9);")
        .unwrap();
    for name in &taken {
        let restored: i64 = db
            .query_one(
                "SELECT pgtrickle.restore_from_snapshot($1, $2)",
                &[&st, name],
            )
            .unwrap()
            .get(0);
        assert_eq!(restored, 4);
        db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
            .unwrap();
        assert_eq!(
            last_mode(&mut db, st),
            "DIFFERENTIAL",
            "after restoring {name}"
        );
        exact(
            &mut db,
            st,
            Q,
            &format!("after restoring {name} and refreshing"),
        );
    }
}

/// A restore that could not be exact is refused with the reason, and the
/// stream table is left as it was.
#[test]
fn restores_that_could_not_be_exact_are_refused() {
    let mut db = database("snapshot_refusals");
    db.batch_execute(
        "CREATE TABLE src (k int, v int); INSERT INTO src SELECT i % 4, i FROM generate_series(1, 40) i; \
         CREATE TABLE other (k int); \
         SELECT pgtrickle.create_stream_table('g', 'SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k', NULL, 'DIFFERENTIAL'); \
         SELECT pgtrickle.create_stream_table('h', 'SELECT k FROM other', NULL, 'DIFFERENTIAL'); \
         SELECT pgtrickle.snapshot_stream_table('g', 'g_snap'); \
         SELECT pgtrickle.snapshot_stream_table('h', 'h_snap');",
    )
    .unwrap();
    let restore = |db: &mut Client, source: &str| {
        code(db.query_one(
            "SELECT pgtrickle.restore_from_snapshot('g', $1)",
            &[&source],
        ))
    };
    // Not a snapshot, another stream table's, missing.
    assert_eq!(
        restore(&mut db, "other"),
        (
            "22023".into(),
            "public.other is not a snapshot of a stream table".into()
        )
    );
    assert_eq!(
        restore(&mut db, "h_snap"),
        (
            "22023".into(),
            "public.h_snap is a snapshot of stream table public.h, not of public.g".into()
        )
    );
    assert_eq!(restore(&mut db, "nope").0, "42P01");
    // Changes after the snapshot were consumed and pruned.
    db.batch_execute(
        "INSERT INTO src VALUES (1, 1000); SELECT pgtrickle.refresh_stream_table('g');",
    )
    .unwrap();
    let before = rows_of(&mut db, "g");
    let (c, m) = restore(&mut db, "g_snap");
    assert_eq!(c, "55000", "{m}");
    assert!(
        m.starts_with("cannot restore stream table public.g from snapshot public.g_snap: changes of source public.src made after the snapshot were pruned"),
        "{m}"
    );
    assert_eq!(
        rows_of(&mut db, "g"),
        before,
        "a refused restore changed the stream table"
    );
    // A snapshot whose changes are all still buffered restores; then a
    // TRUNCATE and the reinitialising refresh break continuity.
    db.batch_execute("SELECT pgtrickle.snapshot_stream_table('g', 'g_snap2')")
        .unwrap();
    db.batch_execute("TRUNCATE src; INSERT INTO src VALUES (2, 2);")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('g')")
        .unwrap();
    assert_eq!(last_mode(&mut db, "g"), "FULL");
    let (c, m) = restore(&mut db, "g_snap2");
    assert_eq!(c, "55000", "{m}");
    assert!(m.contains("was reinitialised since"), "{m}");
    // Columns that are not the stream table's.
    db.batch_execute(
        "SELECT pgtrickle.snapshot_stream_table('g', 'g_snap3'); ALTER TABLE g_snap3 ADD COLUMN extra int;",
    )
    .unwrap();
    let (c, m) = restore(&mut db, "g_snap3");
    assert_eq!(c, "55000", "{m}");
    assert!(m.contains("its columns ("), "{m}");
    exact(&mut db, "g", Q, "after the refusals");
    // Another role may neither snapshot nor restore it.
    db.batch_execute(
        "DROP ROLE IF EXISTS snap_mallory; CREATE ROLE snap_mallory; SET ROLE snap_mallory;",
    )
    .unwrap();
    let (c1, _) = code(db.query_one("SELECT pgtrickle.snapshot_stream_table('g', 'x')", &[]));
    let (c2, _) = restore(&mut db, "g_snap3");
    db.batch_execute("RESET ROLE; DROP ROLE snap_mallory;")
        .unwrap();
    assert_eq!((c1.as_str(), c2.as_str()), ("42501", "42501"));
    // A dropped snapshot table is forgotten.
    db.batch_execute("DROP TABLE g_snap3").unwrap();
    let left: i64 = db
        .query_one("SELECT count(*) FROM pgtrickle.pgt_snapshots", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        left, 3,
        "g_snap, h_snap, g_snap2 stay; g_snap3 went with its table"
    );
}
