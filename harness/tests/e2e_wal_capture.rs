//! Capture from the WAL against real clusters: switching a source between
//! trigger and WAL capture under concurrent writers loses and duplicates
//! nothing; a refresh in a transaction that wrote a WAL-captured source
//! recomputes and keeps the changes after it; while a source switches
//! back to triggers, a transaction's own writes around a refresh are
//! applied once; every refusal is clear and
//! leaves no slot behind; dropping removes slots and publication
//! membership, and a slot left behind is reported and can be dropped; an
//! ordinary role uses what it owns and cannot read changes through the
//! refresh's read function; slot lag shows in status and feeds
//! backpressure. (The whole oracle corpus also runs with WAL capture: the
//! `wal::` tests of `e2e_corpus`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::cluster::Cluster;
use harness::testkit::{code, database, dedicated_cluster, first_column, seed_or, shared_cluster};
use oracles::compare::differences;
use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn slots(db: &mut Client) -> Vec<String> {
    first_column(db, "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database() ORDER BY 1",
        &[])
}

fn set_mode(db: &mut Client, source: &str, mode: &str) -> Result<String, postgres::Error> {
    db.query_one(
        "SELECT pgtrickle.set_capture_mode($1, $2)",
        &[&source, &mode],
    )
    .map(|r| r.get(0))
}

/// The stream table equals its query, as a bag (`what` says where).
fn assert_exact(db: &mut Client, st: &str, query: &str, what: &str) {
    if let Some(d) = differences(db, st, query).unwrap() {
        panic!("{st} differs from its query {what}:\n{d}");
    }
}

fn last_refresh(db: &mut Client, st: &str) -> (String, Option<String>) {
    let r = db
        .query_one(
            "SELECT mode, reason FROM pgtrickle.refresh_history($1) ORDER BY refresh_id DESC LIMIT 1",
            &[&st],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// Refresh `bag` and `groups`; each must run DIFFERENTIAL and equal its
/// query (`what` says where).
fn refresh_both_differentially(db: &mut Client, what: &str) {
    for (st, q) in [("bag", BAG), ("groups", GROUPS)] {
        db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
            .unwrap();
        assert_exact(db, st, q, what);
        let (mode, reason) = last_refresh(db, st);
        assert_eq!(mode, "DIFFERENTIAL", "{st} {what}: {reason:?}");
    }
}

/// Refresh `bag` and `groups` in whatever mode they choose; each must
/// equal its query (`what` says where).
fn refresh_both_and_compare(db: &mut Client, what: &str) {
    for (st, q) in [("bag", BAG), ("groups", GROUPS)] {
        db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
            .unwrap();
        assert_exact(db, st, q, what);
    }
}

const BAG: &str = "SELECT id, g, v FROM src";
const GROUPS: &str = "SELECT g, count(*) AS n, sum(v) AS total, max(v) AS hi FROM src GROUP BY g";

fn two_stream_tables(db: &mut Client) {
    db.batch_execute(
        "CREATE TABLE src (id int, g int, v int); \
         INSERT INTO src SELECT i, i % 7, i FROM generate_series(1, 200) i;",
    )
    .unwrap();
    for (name, q) in [("bag", BAG), ("groups", GROUPS)] {
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, 'DIFFERENTIAL')",
            &[&name, &q],
        )
        .unwrap();
    }
}

/// One writer: random single-row and multi-row inserts, updates and
/// deletes, in autocommit and in small transactions (some rolled back),
/// until told to stop.
fn writer(cluster: &Cluster, db: &str, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut c = cluster.connect(db).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = 0;
    while !stop.load(Ordering::SeqCst) {
        let id: i32 = rng.gen_range(1..400);
        let sql = match rng.gen_range(0..6) {
            0 | 1 => format!("INSERT INTO src VALUES ({id}, {}, {})", id % 7, rng.gen_range(0..100)),
            2 => format!("UPDATE src SET v = v + 1 WHERE id = {id}"),
            3 => format!("UPDATE src SET g = (g + 1) % 7 WHERE id % 50 = {}", id % 50),
            4 => format!("DELETE FROM src WHERE id = {id}"),
            _ => format!(
                "BEGIN; INSERT INTO src VALUES ({id}, 3, 3); UPDATE src SET v = v * 2 WHERE id = {id}; {}",
                if rng.gen_bool(0.3) { "ROLLBACK" } else { "COMMIT" }
            ),
        };
        // A switch takes a short lock; a statement waiting for it is fine.
        if c.batch_execute(&sql).is_err() {
            let _ = c.batch_execute("ROLLBACK");
        }
        done += 1;
    }
    done
}

/// Switching between trigger and WAL capture while four writers write
/// loses and duplicates nothing: after the writers stop, both stream
/// tables (a bag, where a duplicated change would show as an extra row,
/// and groups) equal their queries.
#[test]
fn switching_capture_under_concurrent_writes_loses_and_duplicates_nothing() {
    let seed = seed_or(18);
    let reproduce = format!(
        "PGT_SEED={seed} cargo test -p harness --test e2e_wal_capture -- --exact switching_capture_under_concurrent_writes_loses_and_duplicates_nothing"
    );
    let name = "t_wal_switch";
    let mut db = database("wal_switch");
    two_stream_tables(&mut db);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || writer(shared_cluster(), name, seed * 10 + k, stop))
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mode = "trigger";
    for round in 0..8 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..250)));
        mode = if mode == "trigger" { "wal" } else { "trigger" };
        // A switch back to triggers waits for the slot to be drained
        // before the next switch to WAL may start.
        loop {
            match set_mode(&mut db, "src", mode) {
                Ok(_) => break,
                Err(e) if e.code().map(|c| c.code()) == Some("55006") => {
                    db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
                        .unwrap();
                }
                Err(e) => {
                    panic!("round {round}: switching to {mode} failed: {e}\nreproduce: {reproduce}")
                }
            }
        }
        if rng.gen_bool(0.5) {
            db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
                .unwrap();
        }
        for st in ["bag", "groups"] {
            db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
                .unwrap_or_else(|e| {
                    panic!("round {round}: refreshing {st}: {e}\nreproduce: {reproduce}")
                });
        }
    }
    stop.store(true, Ordering::SeqCst);
    let writes: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(writes > 100, "the writers wrote only {writes} statements");
    // Drain what the slot still holds (and finish a switch back), then catch up.
    db.batch_execute("SELECT pgtrickle.drain_wal_capture(); SELECT pgtrickle.drain_wal_capture();")
        .unwrap();
    refresh_both_differentially(
        &mut db,
        &format!("after {writes} concurrent writes and 8 switches (reproduce: {reproduce})"),
    );
    // No refresh in the run fell back to FULL for lack of changes.
    let fulls: i64 = db
        .query_one(
            "SELECT count(*) FROM pgtrickle.refresh_history('bag') WHERE mode = 'FULL' AND initiated_by <> 'create'",
            &[],
        )
        .unwrap()
        .get(0);
    let planning_races: i64 = db
        .query_one(
            "SELECT count(*) FROM pgtrickle.refresh_history('bag') WHERE mode = 'FULL' AND reason LIKE 'changes arrived%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        fulls, planning_races,
        "a refresh of bag ran FULL for another reason"
    );
}

/// A refresh in a transaction that wrote a WAL-captured source recomputes
/// (its own changes are not decodable yet), says why, and the changes the
/// transaction made after it are consumed by the next refresh.
#[test]
fn a_refresh_in_a_writing_transaction_recomputes_and_keeps_later_writes() {
    let mut db = database("wal_own_writes");
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    db.batch_execute(
        "BEGIN; INSERT INTO src VALUES (1000, 1, 5); SELECT pgtrickle.refresh_stream_table('groups');",
    )
    .unwrap();
    let (mode, reason) = last_refresh(&mut db, "groups");
    assert_eq!(mode, "FULL");
    let reason = reason.unwrap_or_default();
    assert!(
        reason.starts_with(
            "this transaction wrote source public.src, which is captured from the WAL"
        ),
        "{reason}"
    );
    db.batch_execute(
        "UPDATE src SET v = v + 10 WHERE id = 1000; DELETE FROM src WHERE id = 3; COMMIT;",
    )
    .unwrap();
    for drained in [false, true] {
        if drained {
            db.batch_execute("UPDATE src SET v = 0 WHERE id = 1000")
                .unwrap();
            db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
                .unwrap();
        }
        db.batch_execute("SELECT pgtrickle.refresh_stream_table('groups')")
            .unwrap();
        assert_eq!(last_refresh(&mut db, "groups").0, "DIFFERENTIAL");
        assert_exact(
            &mut db,
            "groups",
            GROUPS,
            &format!("(drained first: {drained})"),
        );
    }
}

/// While a source switches back from WAL to trigger capture (its slot not
/// yet drained to the cut, held here by an open snapshot), its new rows
/// come from the trigger and are numbered by the buffer's sequence. A
/// refresh in a transaction records its own position among those ids,
/// not as a WAL position, which they do not compare with: a row written
/// after the refresh is applied by the next one (its id was below the WAL
/// position), and a row written before it is not applied twice (its id
/// was above it, as on a buffer that has numbered many transactions).
#[test]
fn own_writes_around_a_refresh_while_switching_back_to_triggers_are_applied_once() {
    let mut db = database("wal_switch_back_own");
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    db.batch_execute("INSERT INTO src VALUES (500, 1, 1)")
        .unwrap();
    refresh_both_differentially(&mut db, "captured from the WAL");
    let mut holder = shared_cluster().connect("t_wal_switch_back_own").unwrap();
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pg_class;")
        .unwrap();
    set_mode(&mut db, "src", "trigger").unwrap();
    let switching: i64 = db
        .query_one(
            "SELECT count(*) FROM pgtrickle.pgt_wal_capture WHERE source_relid = 'src'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(switching, 1, "the switch back is still draining");

    // A row after a refresh, in its transaction: its id is below the WAL
    // position the refresh stood at.
    db.batch_execute(
        "BEGIN; SELECT pgtrickle.refresh_stream_table('bag'); SELECT pgtrickle.refresh_stream_table('groups');
         INSERT INTO src VALUES (700, 3, 3); COMMIT;",
    )
    .unwrap();
    refresh_both_and_compare(&mut db, "after a row written after a refresh");

    // A row before a refresh, in its transaction, with ids far past any
    // WAL position.
    db.batch_execute(
        "SELECT setval(pg_get_serial_sequence('pgtrickle_changes.changes_' || 'src'::regclass::oid, 'change_id'), 1000000000000000)",
    )
    .unwrap();
    db.batch_execute(
        "BEGIN; INSERT INTO src VALUES (600, 2, 7);
         SELECT pgtrickle.refresh_stream_table('bag'); SELECT pgtrickle.refresh_stream_table('groups'); COMMIT;",
    )
    .unwrap();
    refresh_both_and_compare(&mut db, "after a row written before a refresh");

    holder.batch_execute("COMMIT").unwrap();
    db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
        .unwrap();
    refresh_both_differentially(&mut db, "after the switch back finished");
}

/// A transaction that refreshed while its source was captured from the
/// WAL recorded its own position as a WAL position. Another session then
/// switches the source back to triggers, and the transaction writes it:
/// those rows come from the trigger, numbered past the switch's cut, so
/// the next refresh applies them instead of taking them as consumed.
#[test]
fn writes_after_a_refresh_that_preceded_a_switch_back_are_applied() {
    let mut db = database("wal_switch_after_refresh");
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    db.batch_execute("INSERT INTO src VALUES (500, 1, 1)")
        .unwrap();
    refresh_both_differentially(&mut db, "captured from the WAL");
    let mut t = shared_cluster()
        .connect("t_wal_switch_after_refresh")
        .unwrap();
    t.batch_execute(
        "BEGIN; SELECT pgtrickle.refresh_stream_table('bag'); SELECT pgtrickle.refresh_stream_table('groups');",
    )
    .unwrap();
    db.batch_execute("SET lock_timeout = '10s'").unwrap();
    set_mode(&mut db, "src", "trigger")
        .expect("the switch does not wait for the refreshing transaction");
    t.batch_execute(
        "INSERT INTO src VALUES (800, 4, 8); UPDATE src SET v = v + 1 WHERE id = 500; COMMIT;",
    )
    .unwrap();
    refresh_both_and_compare(&mut db, "after writes that followed the switch");
    db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
        .unwrap();
    refresh_both_and_compare(&mut db, "after the slot was drained");
}

/// Switching back to triggers after writing the source in the same
/// transaction is refused: those writes went to no trigger and commit
/// after the cut, past what the slot supplies.
#[test]
fn switching_back_after_writing_in_the_transaction_is_refused() {
    let mut db = database("wal_switch_back_after_write");
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    db.batch_execute("BEGIN; INSERT INTO src VALUES (900, 2, 9)")
        .unwrap();
    let (sqlstate, message) = code(set_mode(&mut db, "src", "trigger"));
    assert_eq!(sqlstate, "25000", "{message}");
    assert!(
        message.contains("src") && message.contains("first write of its transaction"),
        "the refusal names the table and the reason: {message}"
    );
    db.batch_execute("ROLLBACK").unwrap();
    set_mode(&mut db, "src", "trigger").expect("in a transaction of its own");
    db.batch_execute("INSERT INTO src VALUES (901, 3, 9)")
        .unwrap();
    db.batch_execute("SELECT pgtrickle.drain_wal_capture()")
        .unwrap();
    refresh_both_and_compare(&mut db, "after switching back in a transaction of its own");
}

/// Every refusal names the table and the reason, with its SQLSTATE, and
/// leaves no slot behind.
#[test]
fn refusals_are_clear_and_leave_no_slot() {
    let mut db = database("wal_refusals");
    db.batch_execute(
        "CREATE TABLE plain (k int, v int); \
         CREATE TABLE parted (k int, v int) PARTITION BY RANGE (k); \
         CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100); \
         CREATE TABLE gen (k int, v int, w int GENERATED ALWAYS AS (v * 2) STORED); \
         CREATE TABLE unused (k int); \
         SELECT pgtrickle.create_stream_table('s1', 'SELECT k, sum(v) AS t FROM plain GROUP BY k', NULL, 'DIFFERENTIAL'); \
         SELECT pgtrickle.create_stream_table('s2', 'SELECT k, sum(v) AS t FROM parted GROUP BY k', NULL, 'DIFFERENTIAL'); \
         SELECT pgtrickle.create_stream_table('s3', 'SELECT k, sum(w) AS t FROM gen GROUP BY k', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("parted", "wal", "0A000", "public.parted cannot be captured from the WAL: it is a partitioned table; capture from the WAL supports ordinary tables"),
        ("gen", "wal", "0A000", "public.gen cannot be captured from the WAL: it has generated columns (w), which logical decoding does not send"),
        ("unused", "wal", "55000", "public.unused is not captured: no DIFFERENTIAL stream table reads it"),
        ("plain", "sometimes", "22023", "unknown capture mode \"sometimes\""),
        ("missing", "wal", "42P01", "relation \"missing\" does not exist"),
    ];
    for (table, mode, want_code, want_message) in cases {
        let (c, m) = code(set_mode(&mut db, table, mode));
        assert_eq!(
            (c.as_str(), m.as_str()),
            (want_code, want_message),
            "{table} {mode}"
        );
        assert!(
            slots(&mut db).is_empty(),
            "a slot was left after refusing {table}"
        );
    }
    // Creating a slot needs a transaction that has written nothing.
    db.batch_execute("BEGIN; INSERT INTO plain VALUES (1, 1);")
        .unwrap();
    let (c, m) = code(set_mode(&mut db, "plain", "wal"));
    db.batch_execute("ROLLBACK").unwrap();
    assert_eq!(c, "25000", "{m}");
    assert!(
        m.contains("must be the first write of its transaction"),
        "{m}"
    );
    assert!(slots(&mut db).is_empty());
    // An ordinary role may not switch a table it does not own.
    db.batch_execute(
        "DROP ROLE IF EXISTS wal_mallory; CREATE ROLE wal_mallory LOGIN; GRANT SELECT ON plain TO wal_mallory;",
    )
    .unwrap();
    db.batch_execute("SET ROLE wal_mallory").unwrap();
    let (c, m) = code(set_mode(&mut db, "plain", "wal"));
    db.batch_execute("RESET ROLE").unwrap();
    assert_eq!(c, "42501", "{m}");
    assert!(m.contains("must be owner of table public.plain"), "{m}");
    assert!(slots(&mut db).is_empty());
    db.batch_execute("REVOKE ALL ON plain FROM wal_mallory; DROP ROLE wal_mallory")
        .unwrap();
}

/// Without `wal_level = logical`, choosing `wal` is an error that says so.
#[test]
fn wal_capture_needs_wal_level_logical() {
    let cluster = dedicated_cluster("wal_replica", &["wal_level = replica"]);
    let mut db = cluster.fresh_database("w").unwrap();
    db.batch_execute(
        "CREATE TABLE t (k int); SELECT pgtrickle.create_stream_table('s', 'SELECT k FROM t', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    let (c, m) = code(set_mode(&mut db, "t", "wal"));
    assert_eq!(
        (c.as_str(), m.as_str()),
        (
            "55000",
            "capture mode wal needs wal_level = logical; this server runs with wal_level = replica"
        )
    );
}

/// Dropping the stream table removes the slot, the publication
/// membership and the replica identity capture set; a slot named like a
/// capture slot that no source uses is reported and can be dropped; and
/// DROP EXTENSION takes the remaining slots and the publication with it.
#[test]
fn drops_clean_up_and_orphaned_slots_are_reported() {
    let mut db = database("wal_drops");
    db.batch_execute(
        "CREATE TABLE t1 (k int, v int); CREATE TABLE t2 (k int, v int); \
         SELECT pgtrickle.create_stream_table('s1', 'SELECT k, sum(v) AS t FROM t1 GROUP BY k', NULL, 'DIFFERENTIAL'); \
         SELECT pgtrickle.create_stream_table('s2', 'SELECT k, v FROM t2', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    set_mode(&mut db, "t1", "wal").unwrap();
    set_mode(&mut db, "t2", "wal").unwrap();
    assert_eq!(slots(&mut db).len(), 2);
    let identity = |db: &mut Client, t: &str| -> String {
        db.query_one(
            "SELECT relreplident::text FROM pg_class WHERE oid = $1::text::regclass",
            &[&t],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(identity(&mut db, "t1"), "f");
    db.batch_execute("SELECT pgtrickle.drop_stream_table('s1')")
        .unwrap();
    assert_eq!(
        slots(&mut db).len(),
        1,
        "the slot of t1 is gone with its last reader"
    );
    assert_eq!(
        identity(&mut db, "t1"),
        "d",
        "t1's replica identity is back to what it was"
    );
    let published: Vec<String> = first_column(
        &mut db,
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'pgtrickle_capture'",
        &[],
    );
    assert_eq!(published, vec!["t2".to_string()]);
    // A slot left behind (as a crash between creating a slot and
    // recording it would leave it).
    let prefix: String = db
        .query_one(
            "SELECT 'pgtrickle_' || oid || '_' FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    let orphan = format!("{prefix}999999");
    db.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&orphan],
    )
    .unwrap();
    let states: Vec<(Option<String>, String, String)> = db
        .query(
            "SELECT source, slot_name, state FROM pgtrickle.wal_capture_status()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        states.contains(&(None, orphan.clone(), "orphaned".into())),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|s| s.0.as_deref() == Some("public.t2") && s.2 == "wal"),
        "{states:?}"
    );
    let dropped: Vec<String> = db
        .query_one("SELECT pgtrickle.drop_orphaned_capture_slots()", &[])
        .unwrap()
        .get(0);
    assert_eq!(dropped, vec![orphan]);
    assert_eq!(slots(&mut db).len(), 1);
    db.batch_execute("DROP EXTENSION pg_trickle CASCADE")
        .unwrap();
    assert!(
        slots(&mut db).is_empty(),
        "DROP EXTENSION leaves no capture slot"
    );
    let publications: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'pgtrickle_capture'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(publications, 0);
}

/// An ordinary role switches and refreshes what it owns; it cannot read a
/// source's changes through the refresh's read function, nor drain.
#[test]
fn an_ordinary_role_uses_what_it_owns_and_reads_no_changes() {
    let mut db = database("wal_roles");
    db.batch_execute(
        "DROP ROLE IF EXISTS wal_alice; CREATE ROLE wal_alice LOGIN; \
         GRANT CREATE ON SCHEMA public TO wal_alice; SET ROLE wal_alice; \
         CREATE TABLE mine (k int, v int); INSERT INTO mine SELECT i % 3, i FROM generate_series(1, 30) i; \
         SELECT pgtrickle.create_stream_table('mine_st', 'SELECT k, sum(v) AS t FROM mine GROUP BY k', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    set_mode(&mut db, "mine", "wal").unwrap();
    // Each its own transaction: a refresh in a transaction that wrote the
    // source would recompute.
    db.batch_execute("INSERT INTO mine VALUES (1, 100)")
        .unwrap();
    db.batch_execute("DELETE FROM mine WHERE v = 5").unwrap();
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('mine_st')")
        .unwrap();
    assert_eq!(last_refresh(&mut db, "mine_st").0, "DIFFERENTIAL");
    assert_exact(
        &mut db,
        "mine_st",
        "SELECT k, sum(v) AS t FROM mine GROUP BY k",
        "as its owner",
    );
    let oid: String = db
        .query_one("SELECT 'mine'::regclass::oid::text", &[])
        .unwrap()
        .get(0);
    let (c, m) = code(db.query(
        &format!(
            "SELECT * FROM pgtrickle_changes.wal_changes_{oid}('guess', pg_current_snapshot())"
        ),
        &[],
    ));
    assert_eq!(c, "42501", "{m}");
    let (c, _) = code(db.query("SELECT pgtrickle.drain_wal_capture()", &[]));
    assert_eq!(c, "42501");
    let (c, _) = code(db.query(
        &format!("SELECT * FROM pgtrickle_changes.changes_{oid}"),
        &[],
    ));
    assert_eq!(c, "42501");
    db.batch_execute(
        "SELECT pgtrickle.drop_stream_table('mine_st'); DROP TABLE mine; RESET ROLE; \
         REVOKE CREATE ON SCHEMA public FROM wal_alice; DROP ROLE wal_alice;",
    )
    .unwrap();
}

/// Slot lag (WAL not yet decoded into the buffer) shows in
/// `wal_capture_status()` and engages backpressure; draining and
/// refreshing release it.
#[test]
fn slot_lag_shows_in_status_and_feeds_backpressure() {
    let cluster = dedicated_cluster(
        "wal_lag",
        &[
            "wal_level = logical",
            "pg_trickle.enforce_backpressure = on",
            "pg_trickle.backpressure_high_kb = 256",
            "pg_trickle.backpressure_low_kb = 128",
        ],
    );
    let mut db = cluster.fresh_database("w").unwrap();
    db.batch_execute(
        "CREATE TABLE t (k int, v text); \
         SELECT pgtrickle.create_stream_table('s', 'SELECT k, count(*) AS n FROM t GROUP BY k', NULL, 'DIFFERENTIAL');",
    )
    .unwrap();
    set_mode(&mut db, "t", "wal").unwrap();
    db.batch_execute(
        "INSERT INTO t SELECT i % 10, repeat('x', 100) FROM generate_series(1, 5000) i",
    )
    .unwrap();
    let lag: i64 = db
        .query_one(
            "SELECT lag_bytes FROM pgtrickle.wal_capture_status() WHERE source = 'public.t'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(lag > 256 * 1024, "slot lag {lag} bytes");
    let engaged: Vec<String> = first_column(
        &mut db,
        "SELECT backpressure FROM pgtrickle.evaluate_backpressure()",
        &[],
    );
    assert_eq!(engaged, vec!["engaged".to_string()]);
    // As the scheduler does: drain, refresh, drain again (slot lag counts
    // the WAL written since the last drain, the refresh's own included),
    // then judge backpressure.
    for sql in [
        "SELECT pgtrickle.drain_wal_capture()",
        "SELECT pgtrickle.refresh_stream_table('s')",
        "SELECT pgtrickle.drain_wal_capture()",
        "SELECT * FROM pgtrickle.evaluate_backpressure()",
    ] {
        db.batch_execute(sql).unwrap();
    }
    let state: String = db
        .query_one("SELECT row_to_json(s)::text FROM pgtrickle.change_buffer_status() s WHERE source = 'public.t'", &[])
        .unwrap()
        .get(0);
    let lag: String = db
        .query_one(
            "SELECT row_to_json(s)::text FROM pgtrickle.wal_capture_status() s",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        state.contains("\"backpressure\":\"released\""),
        "{state}\n{lag}"
    );
    assert_exact(
        &mut db,
        "s",
        "SELECT k, count(*) AS n FROM t GROUP BY k",
        "after draining",
    );
}

/// A transaction whose commit is in the WAL but not yet visible (here held
/// there by a synchronous standby that never answers, as a committing
/// backend is for a moment between writing its commit record and leaving
/// the process array) is decoded into the buffer by a drain; a refresh
/// whose snapshot does not see it yet must leave its changes for later,
/// not apply them now and again once it is visible.
#[test]
fn a_decoded_commit_not_yet_visible_is_left_for_a_later_refresh() {
    let cluster = dedicated_cluster(
        "wal_invisible_commit",
        &[
            "wal_level = logical",
            "synchronous_standby_names = 'pgt_absent_standby'",
            "synchronous_commit = local",
        ],
    );
    let mut db = cluster.fresh_database("w").unwrap();
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    let mut writer = cluster.connect("w").unwrap();
    let writer_pid: i32 = writer
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let committing = std::thread::spawn(move || {
        // Waits for the absent standby after writing its commit record.
        writer.batch_execute(
            "SET synchronous_commit = on; BEGIN; INSERT INTO src VALUES (1000, 1, 5), (1001, 2, 6); \
             DELETE FROM src WHERE id = 7; UPDATE src SET v = v + 100 WHERE id = 8; COMMIT",
        )
    });
    let mut waited = 0;
    loop {
        let state: Option<String> = db
            .query_one(
                "SELECT wait_event::text FROM pg_stat_activity WHERE pid = $1",
                &[&writer_pid],
            )
            .unwrap()
            .get(0);
        if state.as_deref() == Some("SyncRep") {
            break;
        }
        waited += 1;
        assert!(
            waited < 600,
            "the writer never waited for the standby: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained: i64 = db
        .query_one("SELECT pgtrickle.drain_wal_capture()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        drained, 4,
        "the drain decodes the commit the snapshot does not see yet"
    );
    refresh_both_differentially(&mut db, "while the decoded commit is not visible");
    db.execute("SELECT pg_cancel_backend($1)", &[&writer_pid])
        .unwrap();
    committing
        .join()
        .unwrap()
        .expect("the commit completes locally when its wait is cancelled");
    refresh_both_differentially(&mut db, "once the commit is visible");
}

/// PREPARE TRANSACTION ends the session's transaction: a later refresh in
/// that session is not taken for one in a transaction that wrote the
/// WAL-captured source (it stays DIFFERENTIAL), and the prepared changes
/// are applied once committed.
#[test]
fn a_prepared_write_does_not_mark_the_sessions_next_transaction() {
    let mut db = database("wal_prepared");
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    db.batch_execute(
        "BEGIN; INSERT INTO src VALUES (500, 1, 1); DELETE FROM src WHERE id = 3; \
         PREPARE TRANSACTION 'wal_prepared_write'",
    )
    .unwrap();
    // The session's very next transaction (a prepared statement would
    // first parse in a transaction of its own).
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('bag')")
        .unwrap();
    assert_eq!(
        last_refresh(&mut db, "bag"),
        ("DIFFERENTIAL".to_string(), None),
        "a refresh after PREPARE TRANSACTION"
    );
    assert_exact(&mut db, "bag", BAG, "while the write is prepared");
    db.batch_execute("COMMIT PREPARED 'wal_prepared_write'")
        .unwrap();
    refresh_both_differentially(&mut db, "after COMMIT PREPARED");
}

/// A transaction that refreshed a reader of a WAL-captured source and
/// stays open holds up neither the drain nor another reader's refresh
/// (the slot is locked only while it is read).
#[test]
fn an_open_transaction_that_refreshed_holds_up_no_other_reader() {
    let mut db = database("wal_open_refresh");
    two_stream_tables(&mut db);
    set_mode(&mut db, "src", "wal").unwrap();
    let mut open = shared_cluster().connect("t_wal_open_refresh").unwrap();
    open.batch_execute(
        "BEGIN; INSERT INTO src VALUES (900, 2, 9); SELECT pgtrickle.refresh_stream_table('bag')",
    )
    .unwrap();
    db.batch_execute(
        "SET lock_timeout = '10s'; INSERT INTO src VALUES (901, 3, 9); DELETE FROM src WHERE id = 5",
    )
    .unwrap();
    for sql in [
        "SELECT pgtrickle.drain_wal_capture()",
        "SELECT pgtrickle.refresh_stream_table('groups')",
        "SELECT pgtrickle.refresh_stream_table('groups')",
    ] {
        db.batch_execute(sql).unwrap_or_else(|e| {
            panic!("{sql} while another transaction that refreshed is open: {e}")
        });
    }
    assert_exact(&mut db, "groups", GROUPS, "with the other transaction open");
    open.batch_execute("COMMIT").unwrap();
    refresh_both_differentially(&mut db, "after it committed");
}
