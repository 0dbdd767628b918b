//! The transactional outbox against real clusters: a message exists
//! exactly when a refresh changed the stream table and committed; replaying
//! every message rebuilds the stream table; consumers of one group never
//! hold the same message, get a crashed worker's batch again after its
//! lease, and commit in any order; retention never drops what a group has
//! not committed; ordinary roles consume only what they may read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::testkit::{
    check_doc_example, code, database, database_with_owner, dedicated_cluster, first_column,
    shared_cluster,
};
use pg_trickle_core::outbox::envelope::{Envelope, Payload};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

const Q: &str = "SELECT k, count(*) AS n, sum(v) AS total FROM src GROUP BY k";

fn setup(db: &mut Client, inline_limit: i32) {
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v numeric);
         INSERT INTO src SELECT i % 4, i FROM generate_series(1, 20) i;
         SELECT pgtrickle.create_stream_table('st', '{Q}', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.enable_outbox('st', inline_limit_bytes => {inline_limit});
         SELECT pgtrickle.create_consumer_group('st', 'g');"
    ))
    .expect("setup");
}

fn head(db: &mut Client) -> i64 {
    db.query_one(
        "SELECT head FROM pgtrickle.outbox_status() WHERE stream_table = 'public.st' LIMIT 1",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Every message of the outbox as decoded envelopes, oldest first (read
/// through a group of its own, starting at message 1).
fn all_messages(db: &mut Client) -> Vec<Envelope> {
    let _ = db.execute(
        "SELECT pgtrickle.create_consumer_group('st', 'reader', 1)",
        &[],
    );
    let mut out = Vec::new();
    loop {
        let rows = db
            .query(
                "SELECT delivery, envelope::text FROM pgtrickle.poll_outbox('st', 'reader', 1000, 60)",
                &[],
            )
            .unwrap();
        if rows.is_empty() {
            break;
        }
        let delivery: i64 = rows[0].get(0);
        for r in &rows {
            out.push(Envelope::decode(&r.get::<_, String>(1)).expect("envelope decodes"));
        }
        db.execute(
            "SELECT pgtrickle.commit_offset('st', 'reader', $1)",
            &[&delivery],
        )
        .unwrap();
    }
    db.execute("SELECT pgtrickle.drop_consumer_group('st', 'reader')", &[])
        .unwrap();
    out
}

/// A message's rows as (op, row text), inline or claim-checked.
fn message_rows(db: &mut Client, e: &Envelope) -> Vec<(String, String)> {
    let rows = db
        .query(
            "SELECT op, row_data::text FROM pgtrickle.outbox_rows('st', $1)",
            &[&(e.message as i64)],
        )
        .unwrap();
    let via_sql: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if let Payload::Inline { inserted, deleted } = &e.payload {
        assert_eq!(
            via_sql.len(),
            inserted.len() + deleted.len(),
            "outbox_rows agrees with the inline rows of message {}",
            e.message
        );
    }
    via_sql
}

/// The stream table's rows now, as normalised JSON text, sorted.
fn rows_now(db: &mut Client) -> Vec<String> {
    // Without every hidden column: the row id and the support columns of
    // algebraic maintenance.
    let mut rows: Vec<String> = first_column::<String>(
        db,
        "SELECT (to_jsonb(s) - ARRAY(SELECT attname::text FROM pg_attribute \
           WHERE attrelid = 'st'::regclass AND attname LIKE '\\_\\_pgt\\_%'))::text FROM st s",
        &[],
    )
    .into_iter()
    .map(|t| {
        serde_json::from_str::<serde_json::Value>(&t)
            .unwrap()
            .to_string()
    })
    .collect();
    rows.sort();
    rows
}

/// The stream table rebuilt by applying every message to its rows when
/// the outbox was enabled (`baseline`), compared with the stream table.
fn replay_equals_stream_table(db: &mut Client, baseline: &[String]) {
    let mut bag: BTreeMap<String, i64> = BTreeMap::new();
    for r in baseline {
        *bag.entry(r.clone()).or_default() += 1;
    }
    let messages = all_messages(db);
    for (i, e) in messages.iter().enumerate() {
        assert_eq!(
            e.message,
            i as u64 + 1,
            "messages are numbered without gaps"
        );
        assert_eq!(e.stream_table, "public.st");
        for (op, row) in message_rows(db, e) {
            let v: serde_json::Value = serde_json::from_str(&row).unwrap();
            assert!(
                v.as_object()
                    .unwrap()
                    .keys()
                    .all(|k| !k.starts_with("__pgt_")),
                "hidden columns are left out: {row}"
            );
            *bag.entry(v.to_string()).or_default() += if op == "insert" { 1 } else { -1 };
        }
    }
    bag.retain(|_, n| *n != 0);
    assert!(
        bag.values().all(|n| *n > 0),
        "a message deleted a row that was not there: {bag:?}"
    );
    let mut rebuilt: Vec<String> = bag
        .into_iter()
        .flat_map(|(r, n)| std::iter::repeat_n(r, n as usize))
        .collect();
    rebuilt.sort();
    let actual = rows_now(db);
    assert_eq!(
        rebuilt, actual,
        "replaying every message rebuilds the stream table"
    );
}

#[test]
fn each_refresh_that_changes_the_stream_table_writes_one_message_and_they_replay_to_it() {
    let mut db = database("outbox_replay");
    setup(&mut db, 65536);
    let baseline = rows_now(&mut db);
    assert_eq!(head(&mut db), 0, "enabling writes no message");
    db.batch_execute(
        "INSERT INTO src VALUES (9, 1.50); SELECT pgtrickle.refresh_stream_table('st');",
    )
    .unwrap();
    assert_eq!(head(&mut db), 1);
    // A refresh with nothing to do, and a FULL one that changes nothing,
    // write nothing.
    db.batch_execute(
        "SELECT pgtrickle.refresh_stream_table('st');
         SELECT pgtrickle.reinitialize_stream_table('st');",
    )
    .unwrap();
    assert_eq!(head(&mut db), 1, "no change, no message");
    // Updates, deletes, a group that goes away, a numeric whose scale changes.
    db.batch_execute(
        "UPDATE src SET v = v + 1 WHERE k = 1;
         DELETE FROM src WHERE k = 2;
         UPDATE src SET v = 1.500 WHERE k = 9;
         SELECT pgtrickle.refresh_stream_table('st');
         INSERT INTO src SELECT 5, i FROM generate_series(1, 3) i;
         SELECT pgtrickle.reinitialize_stream_table('st');",
    )
    .unwrap();
    assert_eq!(head(&mut db), 3);
    let messages = all_messages(&mut db);
    assert_eq!(messages[2].mode, "FULL");
    match &messages[2].payload {
        Payload::Inline { inserted, deleted } => {
            assert_eq!(
                (inserted.len(), deleted.len()),
                (1, 0),
                "a FULL refresh publishes only the net change"
            )
        }
        p => panic!("expected inline rows, got {p:?}"),
    }
    match &messages[1].payload {
        Payload::Inline { inserted, deleted } => {
            assert!(
                deleted.iter().any(|r| r.contains(r#""k": 9,"#) && r.contains(r#""total": 1.50}"#))
                    && inserted.iter().any(|r| r.contains(r#""k": 9,"#) && r.contains(r#""total": 1.500}"#)),
                "a change of scale alone is a change, printed as PostgreSQL prints it: {inserted:?} {deleted:?}"
            );
        }
        p => panic!("expected inline rows, got {p:?}"),
    }
    replay_equals_stream_table(&mut db, &baseline);
}

#[test]
fn a_refresh_that_rolls_back_leaves_no_message_and_commit_notifies() {
    let mut db = database("outbox_rollback");
    setup(&mut db, 65536);
    let baseline = rows_now(&mut db);
    // Separate statements: one multi-statement string is one transaction.
    for sql in [
        "INSERT INTO src VALUES (7, 7)",
        "BEGIN",
        "SELECT pgtrickle.refresh_stream_table('st')",
        "ROLLBACK",
    ] {
        db.batch_execute(sql).unwrap();
    }
    assert_eq!(head(&mut db), 0, "the rolled-back refresh left no message");
    let staged: i64 = db
        .query_one("SELECT count(*) FROM pgtrickle.pgt_outbox_staging", &[])
        .unwrap()
        .get(0);
    assert_eq!(staged, 0);
    // Consumers listening hear of a message only once it committed.
    let mut listener = shared_cluster().connect("t_outbox_rollback").unwrap();
    listener.batch_execute("LISTEN pgtrickle_outbox").unwrap();
    db.batch_execute("BEGIN; SELECT pgtrickle.refresh_stream_table('st');")
        .unwrap();
    let early = listener
        .notifications()
        .timeout_iter(Duration::from_millis(300))
        .next()
        .unwrap();
    assert!(
        early.is_none(),
        "nothing is announced before commit: {early:?}"
    );
    db.batch_execute("COMMIT").unwrap();
    assert_eq!(head(&mut db), 1, "the committed refresh wrote message 1");
    let note = listener
        .notifications()
        .timeout_iter(Duration::from_secs(10))
        .next()
        .expect("listening")
        .expect("a notification after commit");
    let v: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(v["message"], 1);
    assert_eq!(v["stream_table"], "public.st");
    replay_equals_stream_table(&mut db, &baseline);
}

#[test]
fn large_changes_travel_as_a_claim_check() {
    let mut db = database("outbox_claim_check");
    setup(&mut db, 0);
    let baseline = rows_now(&mut db);
    db.batch_execute(
        "INSERT INTO src SELECT 100 + i, i FROM generate_series(1, 50) i;
         SELECT pgtrickle.refresh_stream_table('st');",
    )
    .unwrap();
    let messages = all_messages(&mut db);
    assert_eq!(
        messages[0].payload,
        Payload::ClaimCheck {
            inserted: 50,
            deleted: 0
        }
    );
    assert_eq!(message_rows(&mut db, &messages[0]).len(), 50);
    let claim_checked: i64 = db
        .query_one(
            "SELECT claim_checked_messages FROM pgtrickle.outbox_status() WHERE group_name = 'g'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(claim_checked, 1);
    replay_equals_stream_table(&mut db, &baseline);
}

fn poll(db: &mut Client, worker: &str, size: i32, lease: i32) -> Option<(i64, Vec<i64>)> {
    let rows = db
        .query(
            "SELECT delivery, message FROM pgtrickle.poll_outbox('st', 'g', $1, $2, $3)",
            &[&size, &lease, &worker],
        )
        .unwrap();
    (!rows.is_empty()).then(|| (rows[0].get(0), rows.iter().map(|r| r.get(1)).collect()))
}

fn publish(db: &mut Client, n: usize) {
    for i in 0..n {
        db.batch_execute(&format!(
            "INSERT INTO src VALUES ({}, 1); SELECT pgtrickle.refresh_stream_table('st');",
            1000 + i
        ))
        .unwrap();
    }
}

#[test]
fn a_crashed_workers_batch_is_delivered_again_after_its_lease() {
    let mut db = database("outbox_crash");
    setup(&mut db, 65536);
    publish(&mut db, 5);
    let (d1, m1) = poll(&mut db, "w1", 3, 1).unwrap();
    assert_eq!(m1, vec![1, 2, 3]);
    let (_, m2) = poll(&mut db, "w2", 10, 30).unwrap();
    assert_eq!(m2, vec![4, 5], "a live lease is never handed out twice");
    assert!(poll(&mut db, "w2", 10, 30).is_none());
    // w1 "crashes": it never commits. After its lease, w3 gets its batch.
    std::thread::sleep(Duration::from_millis(1200));
    let (d3, m3) = poll(&mut db, "w3", 10, 30).unwrap();
    assert_eq!(m3, vec![1, 2, 3]);
    let late = code(db.execute(
        "SELECT pgtrickle.commit_offset('st', 'g', $1, 'w1')",
        &[&d1],
    ));
    assert_eq!(late.0, "55000", "a late commit is refused: {late:?}");
    assert!(late.1.contains("consumer group \"g\""), "{late:?}");
    let offset: i64 = db
        .query_one(
            "SELECT pgtrickle.commit_offset('st', 'g', $1, 'w3')",
            &[&d3],
        )
        .unwrap()
        .get(0);
    assert_eq!(offset, 3, "message 4..5 is still leased to w2");
    // Replay goes back, never forward, and cancels leases.
    let back: i64 = db
        .query_one("SELECT pgtrickle.replay_outbox('st', 'g', 2)", &[])
        .unwrap()
        .get(0);
    assert_eq!(back, 1);
    assert_eq!(poll(&mut db, "w1", 10, 30).unwrap().1, vec![2, 3, 4, 5]);
}

#[test]
fn four_concurrent_consumers_never_share_a_message_and_together_get_all() {
    let mut db = database("outbox_concurrent");
    setup(&mut db, 65536);
    publish(&mut db, 60);
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut c = shared_cluster().connect("t_outbox_concurrent").unwrap();
                let name = format!("w{w}");
                while let Some((d, ms)) = poll(&mut c, &name, 3, 60) {
                    seen.lock().unwrap().extend(ms);
                    c.execute(
                        "SELECT pgtrickle.commit_offset('st', 'g', $1, $2)",
                        &[&d, &name],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        (1..=60).collect::<Vec<i64>>(),
        "each message exactly once"
    );
    let committed: i64 = db
        .query_one(
            "SELECT committed FROM pgtrickle.outbox_status() WHERE group_name = 'g'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(committed, 60);
}

fn first_retained(db: &mut Client) -> i64 {
    db.query_one(
        "SELECT min(first_retained) FROM pgtrickle.outbox_status()",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn retention_drops_only_what_every_group_committed() {
    let mut db = database("outbox_retention");
    db.batch_execute(&format!(
        "CREATE TABLE src (k int, v numeric);
         SELECT pgtrickle.create_stream_table('st', '{Q}', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.enable_outbox('st', retention => '0');
         SELECT pgtrickle.create_consumer_group('st', 'g');
         SELECT pgtrickle.create_consumer_group('st', 'slow');"
    ))
    .unwrap();
    publish(&mut db, 4);
    let (d, _) = poll(&mut db, "w", 10, 30).unwrap();
    db.execute("SELECT pgtrickle.commit_offset('st', 'g', $1, 'w')", &[&d])
        .unwrap();
    publish(&mut db, 1);
    let first = first_retained(&mut db);
    assert_eq!(first, 1, "group slow committed nothing: everything is kept");
    db.execute("SELECT pgtrickle.drop_consumer_group('st', 'slow')", &[])
        .unwrap();
    publish(&mut db, 1);
    let first = first_retained(&mut db);
    assert_eq!(
        first, 5,
        "what g committed is dropped, message 5 on is kept"
    );
    let replay = code(db.execute("SELECT pgtrickle.replay_outbox('st', 'g', 2)", &[]));
    assert_eq!(replay.0, "22023", "{replay:?}");
    assert!(replay.1.contains("keeps messages from 5 on"), "{replay:?}");
    let late = code(db.execute(
        "SELECT pgtrickle.create_consumer_group('st', 'late', 1)",
        &[],
    ));
    assert_eq!(late.0, "22023", "{late:?}");
}

#[test]
fn bad_calls_are_refused_by_name_and_change_nothing() {
    let mut db = database("outbox_errors");
    setup(&mut db, 65536);
    publish(&mut db, 2);
    let cases = [
        (
            "SELECT pgtrickle.enable_outbox('st')",
            "42710",
            "already has an outbox",
        ),
        (
            "SELECT pgtrickle.enable_outbox('src')",
            "42809",
            "\"src\" is not a stream table",
        ),
        (
            "SELECT * FROM pgtrickle.poll_outbox('st', 'nope')",
            "42704",
            "consumer group \"nope\"",
        ),
        (
            "SELECT * FROM pgtrickle.poll_outbox('st', 'g', 0)",
            "22023",
            "1 to 10000",
        ),
        (
            "SELECT * FROM pgtrickle.poll_outbox('st', 'g', 10, 0)",
            "22023",
            "1 to 86400 seconds",
        ),
        (
            "SELECT pgtrickle.commit_offset('st', 'g', 99)",
            "55000",
            "delivery 99 is not leased",
        ),
        (
            "SELECT pgtrickle.extend_lease('st', 'g', 99)",
            "55000",
            "delivery 99 is not leased",
        ),
        (
            "SELECT pgtrickle.create_consumer_group('st', 'g')",
            "42710",
            "already exists",
        ),
        (
            "SELECT pgtrickle.create_consumer_group('st', ' ')",
            "22023",
            "needs a name",
        ),
        (
            "SELECT pgtrickle.enable_outbox('st', -1)",
            "22023",
            "inline_limit_bytes",
        ),
        (
            "SELECT * FROM pgtrickle.outbox_rows('st', 42)",
            "42704",
            "no message 42",
        ),
    ];
    for (sql, state, text) in cases {
        let (got, msg) = code(db.execute(sql, &[]));
        assert_eq!(got, state, "{sql}: {msg}");
        assert!(msg.contains(text), "{sql}: {msg}");
    }
    // Nothing above leased anything: the whole outbox is still there to poll.
    assert_eq!(poll(&mut db, "w", 10, 30).unwrap().1, vec![1, 2]);
    db.batch_execute("SELECT pgtrickle.disable_outbox('st')")
        .unwrap();
    let (got, msg) = code(db.execute("SELECT * FROM pgtrickle.poll_outbox('st', 'g')", &[]));
    assert_eq!(
        (got.as_str(), msg.contains("has no outbox")),
        ("42704", true),
        "{msg}"
    );
    let triggers: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'st'::regclass AND tgname LIKE 'pgt_outbox%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0, "disabling removes the staging triggers");
    db.batch_execute("INSERT INTO src VALUES (1, 1); SELECT pgtrickle.refresh_stream_table('st');")
        .unwrap();
}

#[test]
fn an_ordinary_role_consumes_what_it_may_read_and_nothing_else() {
    let (_su, mut owner) =
        database_with_owner("outbox_roles", "ob_owner", &["ob_reader", "ob_stranger"]);
    setup(&mut owner, 65536);
    publish(&mut owner, 2);
    owner
        .batch_execute("GRANT SELECT ON st TO ob_reader")
        .unwrap();
    let mut reader = shared_cluster()
        .connect_as("t_outbox_roles", "ob_reader")
        .unwrap();
    let (d, ms) = poll(&mut reader, "r", 10, 30).unwrap();
    assert_eq!(ms, vec![1, 2]);
    reader
        .execute("SELECT pgtrickle.commit_offset('st', 'g', $1, 'r')", &[&d])
        .unwrap();
    // A reader may consume but not manage the outbox.
    let (state, msg) =
        code(reader.execute("SELECT pgtrickle.create_consumer_group('st', 'mine')", &[]));
    assert_eq!(state, "42501", "{msg}");
    let (state, msg) = code(reader.execute("SELECT pgtrickle.disable_outbox('st')", &[]));
    assert_eq!(state, "42501", "{msg}");
    let mut stranger = shared_cluster()
        .connect_as("t_outbox_roles", "ob_stranger")
        .unwrap();
    let (state, msg) =
        code(stranger.execute("SELECT * FROM pgtrickle.poll_outbox('st', 'g')", &[]));
    assert_eq!(state, "42501", "{msg}");
    assert!(msg.contains("outbox of stream table public.st"), "{msg}");
    // The catalog stays closed to both.
    for c in [&mut reader, &mut stranger] {
        let (state, _) = code(c.execute("SELECT * FROM pgtrickle.pgt_outbox_messages", &[]));
        assert_eq!(state, "42501");
    }
    // Row-level security on the stream table that applies to the reader:
    // its outbox would bypass the policy.
    owner
        .batch_execute("ALTER TABLE st ENABLE ROW LEVEL SECURITY")
        .unwrap();
    let (state, msg) = code(reader.execute("SELECT * FROM pgtrickle.poll_outbox('st', 'g')", &[]));
    assert_eq!(state, "42501", "{msg}");
    assert!(msg.contains("row-level security"), "{msg}");
}

#[test]
fn the_worked_example_in_the_docs_runs() {
    let mut db = database("outbox_docs");
    check_doc_example(
        &mut db,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OUTBOX.md"),
    );
}

#[test]
fn the_schedulers_refreshes_publish_and_notify_too() {
    let cluster = dedicated_cluster("outbox_scheduler", &[]);
    let mut db = cluster.connect("postgres").unwrap();
    db.batch_execute(&format!(
        "CREATE EXTENSION pg_trickle;
         CREATE TABLE src (k int, v numeric);
         SELECT pgtrickle.create_stream_table('st', '{Q}', '1s', 'DIFFERENTIAL');
         SELECT pgtrickle.enable_outbox('st');
         SELECT pgtrickle.create_consumer_group('st', 'g');"
    ))
    .unwrap();
    let baseline = rows_now(&mut db);
    let mut listener = cluster.connect("postgres").unwrap();
    listener.batch_execute("LISTEN pgtrickle_outbox").unwrap();
    db.batch_execute("INSERT INTO src VALUES (1, 1), (2, 2)")
        .unwrap();
    let note = listener
        .notifications()
        .timeout_iter(Duration::from_secs(30))
        .next()
        .expect("listening")
        .expect("the scheduler's refresh announced its message within 30 s");
    let v: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
    assert_eq!(v["message"], 1);
    // Hold the scheduler back so the stream table stays as the message left it.
    db.batch_execute("SELECT pgtrickle.hold_stream_table('st')")
        .unwrap();
    let by_scheduler: i64 = db
        .query_one(
            "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE initiated_by = 'scheduler'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(by_scheduler >= 1);
    replay_equals_stream_table(&mut db, &baseline);
}

#[test]
fn a_restore_from_a_snapshot_publishes_its_change() {
    let mut db = database("outbox_restore");
    setup(&mut db, 65536);
    let baseline = rows_now(&mut db);
    // A second reader that is not refreshed keeps the changes buffered,
    // which a restore needs.
    db.batch_execute(&format!(
        "SELECT pgtrickle.create_stream_table('st_other', '{Q}', NULL, 'DIFFERENTIAL')"
    ))
    .unwrap();
    db.batch_execute(
        "SELECT pgtrickle.snapshot_stream_table('st', 'st_snap');
         INSERT INTO src VALUES (50, 5);
         SELECT pgtrickle.refresh_stream_table('st');
         SELECT pgtrickle.restore_from_snapshot('st', 'st_snap');",
    )
    .unwrap();
    assert_eq!(
        head(&mut db),
        2,
        "the refresh and the restore each wrote one"
    );
    let messages = all_messages(&mut db);
    assert_eq!(messages[1].mode, "RESTORE");
    replay_equals_stream_table(&mut db, &baseline);
    // The next refresh brings the row back, and says so.
    db.batch_execute("SELECT pgtrickle.refresh_stream_table('st')")
        .unwrap();
    assert_eq!(head(&mut db), 3);
    replay_equals_stream_table(&mut db, &baseline);
}

#[test]
fn a_group_with_a_consumer_role_is_that_roles_alone() {
    let (_su, mut owner) =
        database_with_owner("outbox_group_roles", "og_owner", &["og_team", "og_other"]);
    setup(&mut owner, 65536);
    owner
        .batch_execute(
            "SELECT pgtrickle.create_consumer_group('st', 'billing', consumer_role => 'og_team');
             GRANT SELECT ON st TO og_team, og_other;",
        )
        .unwrap();
    let (state, msg) = code(owner.execute(
        "SELECT pgtrickle.create_consumer_group('st', 'x', consumer_role => 'no_such_role')",
        &[],
    ));
    assert_eq!(
        (state.as_str(), msg.contains("no_such_role")),
        ("42704", true),
        "{msg}"
    );
    publish(&mut owner, 2);
    let mut other = shared_cluster()
        .connect_as("t_outbox_group_roles", "og_other")
        .unwrap();
    for sql in [
        "SELECT * FROM pgtrickle.poll_outbox('st', 'billing')",
        "SELECT pgtrickle.commit_offset('st', 'billing', 1)",
        "SELECT pgtrickle.replay_outbox('st', 'billing', 1)",
    ] {
        let (state, msg) = code(other.execute(sql, &[]));
        assert_eq!(state, "42501", "{sql}: {msg}");
        assert!(msg.contains("is for role og_team"), "{sql}: {msg}");
    }
    // The group without a role stays open to every reader.
    assert!(poll(&mut other, "o", 10, 30).is_some());
    let mut team = shared_cluster()
        .connect_as("t_outbox_group_roles", "og_team")
        .unwrap();
    let rows = team
        .query(
            "SELECT delivery FROM pgtrickle.poll_outbox('st', 'billing', 10, 30)",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 2);
    let d: i64 = rows[0].get(0);
    team.execute("SELECT pgtrickle.commit_offset('st', 'billing', $1)", &[&d])
        .unwrap();
}

/// An owner's own cast to json, used when its rows are published, runs
/// with the owner's rights, never with the extension's.
#[test]
fn an_owners_cast_to_json_runs_as_the_owner() {
    let (mut su, mut owner) = database_with_owner("outbox_cast", "oc_owner", &[]);
    owner
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'happy');
             CREATE TABLE seen (who text, superuser bool);
             CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.seen SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
                 RETURN to_json(m::text || '!');
             END $$;
             CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
             CREATE TABLE msrc (k int, m mood);
             SELECT pgtrickle.create_stream_table('mst', 'SELECT k, m FROM msrc', NULL, 'DIFFERENTIAL');
             SELECT pgtrickle.enable_outbox('mst');
             INSERT INTO msrc VALUES (1, 'happy');
             SELECT pgtrickle.refresh_stream_table('mst');",
        )
        .unwrap();
    let seen: Vec<String> = first_column(
        &mut su,
        "SELECT DISTINCT who || ':' || superuser FROM seen",
        &[],
    );
    assert_eq!(seen, ["oc_owner:false"], "the cast ran only as the owner");
    let rows: Vec<String> = first_column(
        &mut owner,
        "SELECT row_data::text FROM pgtrickle.outbox_rows('mst', 1)",
        &[],
    );
    assert_eq!(rows, [r#"{"k": 1, "m": "happy!"}"#]);
}

#[test]
fn a_refresh_in_replica_mode_publishes_too() {
    let mut db = database("outbox_replica");
    setup(&mut db, 65536);
    db.batch_execute(
        "SET session_replication_role = replica;
         INSERT INTO src VALUES (42, 1);
         SELECT pgtrickle.refresh_stream_table('st');
         RESET session_replication_role;",
    )
    .unwrap();
    assert_eq!(head(&mut db), 1);
}

/// Random changes (NULLs, duplicate rows, keys that change, several
/// changes to one row between refreshes) and refreshes, DIFFERENTIAL and
/// FULL, to a grouped and a duplicate-keeping stream table with outboxes:
/// after every step, each stream table's rows at enable time plus every
/// message equal the stream table.
#[test]
fn random_changes_replay_exactly_from_the_messages() {
    use rand::{Rng, SeedableRng};
    let seed = harness::testkit::seed_or(20261129);
    let reproduce = format!(
        "PGT_SEED={seed} cargo test -p harness --test e2e_outbox -- --exact random_changes_replay_exactly_from_the_messages"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut db = database("outbox_random");
    let queries = [
        (
            "grouped",
            "SELECT k, count(*) AS n, sum(v) AS total, max(t) AS top FROM src GROUP BY k",
        ),
        ("plain", "SELECT k, t FROM src WHERE v IS NULL OR v > 2"),
    ];
    db.batch_execute(
        "CREATE TABLE src (id serial PRIMARY KEY, k int, v numeric, t text);
         INSERT INTO src (k, v, t) SELECT i % 3, i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'x' || (i % 2) END
           FROM generate_series(1, 12) i;",
    )
    .unwrap();
    let mut baselines = Vec::new();
    for (st, q) in queries {
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, 'DIFFERENTIAL')",
            &[&st, &q],
        )
        .unwrap();
        db.execute(
            "SELECT pgtrickle.enable_outbox($1, inline_limit_bytes => $2)",
            &[&st, &(if st == "plain" { 200 } else { 65536 })],
        )
        .unwrap();
        baselines.push(rows_of(&mut db, st));
    }
    for step in 0..30 {
        let mut sql = String::new();
        for _ in 0..rng.gen_range(1..5) {
            let k = rng.gen_range(0..4);
            let v = match rng.gen_range(0..5) {
                0 => "NULL".to_string(),
                n => format!("{n}.{}0", rng.gen_range(0..10)),
            };
            let t = ["NULL", "'x0'", "'x1'", "'y'"][rng.gen_range(0..4)];
            sql.push_str(&match rng.gen_range(0..4) {
                0 | 1 => format!("INSERT INTO src (k, v, t) VALUES ({k}, {v}, {t});"),
                2 => format!("UPDATE src SET k = {k}, v = {v} WHERE id IN (SELECT id FROM src ORDER BY id LIMIT 1 OFFSET {});", rng.gen_range(0..10)),
                _ => format!("DELETE FROM src WHERE id IN (SELECT id FROM src ORDER BY id LIMIT 1 OFFSET {});", rng.gen_range(0..10)),
            });
        }
        db.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("step {step}: {sql}: {e}\nreproduce: {reproduce}"));
        for (i, (st, _)) in queries.iter().enumerate() {
            let f = if rng.gen_bool(0.2) {
                "reinitialize_stream_table"
            } else {
                "refresh_stream_table"
            };
            db.execute(&format!("SELECT pgtrickle.{f}($1)"), &[st])
                .unwrap();
            let rebuilt = replayed(&mut db, st, &baselines[i]);
            let actual = rows_of(&mut db, st);
            assert_eq!(
                rebuilt, actual,
                "step {step}, stream table {st}: its messages do not replay to it\nreproduce: {reproduce}"
            );
        }
    }
}

/// A stream table's rows as exact JSON text (numerics keep their scale), sorted.
fn rows_of(db: &mut Client, st: &str) -> Vec<String> {
    let mut rows: Vec<String> = first_column(
        db,
        &format!("SELECT (to_jsonb(s) - '__pgt_row_id')::text FROM {st} s"),
        &[],
    );
    rows.sort();
    rows
}

/// `baseline` with every message of `st`'s outbox applied, as exact JSON
/// text, sorted.
fn replayed(db: &mut Client, st: &str, baseline: &[String]) -> Vec<String> {
    let mut bag: BTreeMap<String, i64> = BTreeMap::new();
    for r in baseline {
        *bag.entry(r.clone()).or_default() += 1;
    }
    let rows = db
        .query(
            "SELECT r.op, r.row_data::text FROM pgtrickle.pgt_outbox_messages m
               JOIN pgtrickle.pgt_stream_tables s ON s.id = m.st_id,
                    pgtrickle.outbox_rows($1, m.message) r
              WHERE s.name = 'public.' || $1 ORDER BY m.message",
            &[&st],
        )
        .unwrap();
    for r in rows {
        let (op, row): (String, String) = (r.get(0), r.get(1));
        *bag.entry(row).or_default() += if op == "insert" { 1 } else { -1 };
    }
    assert!(
        bag.values().all(|n| *n >= 0),
        "{st}: a message deleted a row that was not there"
    );
    let mut out: Vec<String> = bag
        .into_iter()
        .flat_map(|(r, n)| std::iter::repeat_n(r, n as usize))
        .collect();
    out.sort();
    out
}

#[test]
fn dropping_the_stream_table_takes_its_outbox_with_it() {
    let mut db = database("outbox_drop");
    setup(&mut db, 0);
    publish(&mut db, 3);
    poll(&mut db, "w", 2, 30).unwrap();
    db.batch_execute("SELECT pgtrickle.drop_stream_table('st')")
        .unwrap();
    let left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM pgtrickle.pgt_outboxes) + (SELECT count(*) FROM pgtrickle.pgt_outbox_messages)
                  + (SELECT count(*) FROM pgtrickle.pgt_outbox_rows) + (SELECT count(*) FROM pgtrickle.pgt_outbox_staging)
                  + (SELECT count(*) FROM pgtrickle.pgt_consumer_groups) + (SELECT count(*) FROM pgtrickle.pgt_outbox_leases)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "nothing of the outbox is left behind");
}

/// An upgrade's regeneration puts the staging triggers on again (with the
/// hidden columns of the version upgraded to) and publishing goes on.
#[test]
fn regeneration_keeps_the_outbox_publishing() {
    let mut db = database("outbox_regenerate");
    setup(&mut db, 65536);
    let baseline = rows_now(&mut db);
    publish(&mut db, 1);
    db.batch_execute("SELECT pgtrickle._regenerate()").unwrap();
    let triggers: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'st'::regclass AND tgname LIKE 'pgt_outbox%' AND tgenabled = 'A'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(triggers, 3, "three staging triggers, firing always");
    publish(&mut db, 1);
    assert_eq!(head(&mut db), 2);
    replay_equals_stream_table(&mut db, &baseline);
}
