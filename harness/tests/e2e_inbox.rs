//! The inbox against real clusters: each event id is ingested once and
//! duplicates are counted; bad ids are refused and leave nothing; failed
//! attempts lead to the dead-letter state and back; an ordered inbox hands
//! out one event per aggregate key at a time, across concurrent workers;
//! existing tables are adopted or refused by name; the inbox's stream
//! tables are DIFFERENTIAL and equal their queries; ordinary roles do only
//! what the table's privileges allow.

use harness::testkit::{
    check_doc_example, code, database, database_with_owner, first_column, shared_cluster,
};
use oracles::compare::differences;
use oracles::engine_api::last_refresh_mode;
use postgres::Client;

fn ingest(db: &mut Client, id: &str, key: Option<&str>) -> bool {
    db.query_one(
        "SELECT pgtrickle.inbox_ingest('ib', $1, '{\"n\": 1.50}', 'order', $2)",
        &[&id, &key],
    )
    .unwrap()
    .get(0)
}

fn claim(db: &mut Client, n: i32) -> Vec<String> {
    first_column(
        db,
        "SELECT event_id FROM pgtrickle.inbox_claim('ib', $1)",
        &[&n],
    )
}

/// Refresh the inbox's stream tables and check each against its query
/// and that it ran DIFFERENTIALLY.
fn stream_tables_exact(db: &mut Client) {
    for st in ["ib_pending", "ib_dead_letters", "ib_stats"] {
        db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
            .unwrap();
        let query: String = db
            .query_one(
                "SELECT query FROM pgtrickle.pgt_stream_tables WHERE name = $1",
                &[&format!("public.{st}")],
            )
            .unwrap()
            .get(0);
        if let Some(d) = differences(db, st, &query).unwrap() {
            panic!("{st} differs from its query:\n{d}");
        }
        assert_eq!(
            last_refresh_mode(db, st).unwrap().as_deref(),
            Some("DIFFERENTIAL"),
            "{st}"
        );
    }
}

#[test]
fn each_event_id_is_ingested_once_and_duplicates_are_counted() {
    let mut db = database("inbox_dedup");
    db.batch_execute("SELECT pgtrickle.create_inbox('ib', schedule => NULL)")
        .unwrap();
    assert!(ingest(&mut db, "e1", None));
    assert!(!ingest(&mut db, "e1", None), "a duplicate is ignored");
    assert!(!ingest(&mut db, "e1", Some("other")), "by id alone");
    assert!(ingest(&mut db, "E1", None), "ids compare byte for byte");
    assert!(ingest(&mut db, " e1 ", None), "ids are kept exactly");
    let (rows, dups): (i64, i64) = {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM ib), duplicates FROM pgtrickle.inbox_status() WHERE inbox = 'ib'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((rows, dups), (3, 2));
    let payload: String = db
        .query_one("SELECT payload::text FROM ib WHERE event_id = 'e1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(payload, r#"{"n": 1.50}"#, "the payload is kept exactly");
    // Bad ids are refused by what is wrong and leave nothing behind.
    for (sql, state, text) in [
        (
            "SELECT pgtrickle.inbox_ingest('ib', NULL)",
            "22004",
            "not NULL",
        ),
        ("SELECT pgtrickle.inbox_ingest('ib', '')", "22023", "empty"),
        (
            "SELECT pgtrickle.inbox_ingest('ib', '   ')",
            "22023",
            "empty",
        ),
        (
            "SELECT pgtrickle.inbox_ingest('ib', repeat('x', 513))",
            "22023",
            "at most 512 bytes",
        ),
        (
            "SELECT pgtrickle.inbox_ingest('nope', 'x')",
            "42P01",
            "inbox \"nope\" does not exist",
        ),
        (
            "SELECT pgtrickle.inbox_ingest('pg_class', 'x')",
            "42704",
            "is not an inbox",
        ),
    ] {
        let (got, msg) = code(db.execute(sql, &[]));
        assert_eq!(got, state, "{sql}: {msg}");
        assert!(msg.contains(text), "{sql}: {msg}");
    }
    let rows: i64 = db.query_one("SELECT count(*) FROM ib", &[]).unwrap().get(0);
    assert_eq!(rows, 3);
    stream_tables_exact(&mut db);
}

#[test]
fn failures_lead_to_dead_letters_and_retry_brings_them_back() {
    let mut db = database("inbox_dead");
    db.batch_execute("SELECT pgtrickle.create_inbox('ib', max_attempts => 3, schedule => NULL)")
        .unwrap();
    ingest(&mut db, "e1", None);
    ingest(&mut db, "e2", None);
    let mut states = Vec::new();
    for _ in 0..3 {
        let s: String = db
            .query_one("SELECT pgtrickle.inbox_fail('ib', 'e1', 'boom')", &[])
            .unwrap()
            .get(0);
        states.push(s);
    }
    assert_eq!(states, ["pending", "pending", "dead"]);
    let (state, msg) = code(db.execute("SELECT pgtrickle.inbox_fail('ib', 'e1')", &[]));
    assert_eq!(state, "55000", "{msg}");
    assert_eq!(claim(&mut db, 10), ["e2"], "a dead event is not handed out");
    stream_tables_exact(&mut db);
    let dead: Vec<String> = first_column(
        &mut db,
        "SELECT event_id || ':' || attempts || ':' || last_error FROM ib_dead_letters",
        &[],
    );
    assert_eq!(dead, ["e1:3:boom"]);
    db.batch_execute(
        "SELECT pgtrickle.inbox_retry('ib', 'e1'); SELECT pgtrickle.inbox_done('ib', 'e2');",
    )
    .unwrap();
    assert_eq!(claim(&mut db, 10), ["e1"]);
    let (state, _) = code(db.execute("SELECT pgtrickle.inbox_retry('ib', 'e2')", &[]));
    assert_eq!(state, "55000");
    let (state, msg) = code(db.execute("SELECT pgtrickle.inbox_done('ib', 'nope')", &[]));
    assert_eq!(
        (state.as_str(), msg.contains("no event \"nope\"")),
        ("42704", true),
        "{msg}"
    );
    stream_tables_exact(&mut db);
}

#[test]
fn an_ordered_inbox_hands_out_one_event_per_key_across_workers() {
    let mut db = database("inbox_ordered");
    db.batch_execute("SELECT pgtrickle.create_inbox('ib', ordered => true, schedule => NULL)")
        .unwrap();
    for (id, key) in [
        ("a1", Some("A")),
        ("b1", Some("B")),
        ("a2", Some("A")),
        ("n1", None),
        ("a3", Some("A")),
        ("n2", None),
    ] {
        ingest(&mut db, id, key);
    }
    let mut w1 = shared_cluster().connect("t_inbox_ordered").unwrap();
    let mut w2 = shared_cluster().connect("t_inbox_ordered").unwrap();
    w1.batch_execute("BEGIN").unwrap();
    assert_eq!(claim(&mut w1, 2), ["a1", "b1"]);
    w2.batch_execute("BEGIN").unwrap();
    assert_eq!(
        claim(&mut w2, 10),
        ["n1", "n2"],
        "a2 waits for a1, which w1 holds; keyless events never wait"
    );
    w2.batch_execute("ROLLBACK").unwrap();
    // w1 finishes a1; b1's work fails and rolls back with it, so b1 is
    // pending again; a2 becomes claimable.
    w1.batch_execute("SELECT pgtrickle.inbox_done('ib', 'a1'); COMMIT;")
        .unwrap();
    assert_eq!(claim(&mut w2, 10), ["b1", "a2", "n1", "n2"]);
    // A dead event does not hold its key back.
    db.batch_execute(
        "SELECT pgtrickle.inbox_fail('ib', 'a2'); SELECT pgtrickle.inbox_fail('ib', 'a2');
         SELECT pgtrickle.inbox_fail('ib', 'a2'); SELECT pgtrickle.inbox_fail('ib', 'a2');
         SELECT pgtrickle.inbox_fail('ib', 'a2');",
    )
    .unwrap();
    assert_eq!(claim(&mut db, 10), ["b1", "n1", "a3", "n2"]);
    stream_tables_exact(&mut db);
}

#[test]
fn existing_tables_are_adopted_or_refused_by_name() {
    let mut db = database("inbox_adopt");
    db.batch_execute(
        "CREATE TABLE mine (event_id text PRIMARY KEY, source text);
         INSERT INTO mine VALUES ('old-1', 'crm');
         CREATE TABLE no_key (event_id text);
         CREATE TABLE wrong (event_id text PRIMARY KEY, attempts text);",
    )
    .unwrap();
    for (sql, state, text) in [
        ("SELECT pgtrickle.create_inbox('mine')", "42P07", "public.mine already exists"),
        ("SELECT pgtrickle.create_inbox('absent', adopt => true)", "42P01", "nothing to adopt"),
        ("SELECT pgtrickle.create_inbox('no_key', adopt => true)", "42P10", "no unique index"),
        ("SELECT pgtrickle.create_inbox('wrong', adopt => true)", "42804", "column attempts"),
        ("SELECT pgtrickle.create_inbox('x', max_attempts => 0)", "22023", "max_attempts"),
        (
            "SELECT pgtrickle.create_inbox('a_name_long_enough_that_its_dead_letters_table_is_too_long')",
            "42622",
            "too long",
        ),
    ] {
        let (got, msg) = code(db.execute(sql, &[]));
        assert_eq!(got, state, "{sql}: {msg}");
        assert!(msg.contains(text), "{sql}: {msg}");
    }
    // Nothing was half-made by the refusals.
    let leftovers: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM pgtrickle.pgt_inboxes) + (SELECT count(*) FROM pgtrickle.pgt_stream_tables)
                  + (SELECT count(*) FROM pg_attribute WHERE attrelid = 'no_key'::regclass AND attnum > 0)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 1, "only no_key's own column");
    db.batch_execute("SELECT pgtrickle.create_inbox('mine', adopt => true, schedule => NULL)")
        .unwrap();
    let (state, _) = code(db.execute("SELECT pgtrickle.create_inbox('mine', adopt => true)", &[]));
    assert_eq!(state, "42710");
    db.batch_execute("SELECT pgtrickle.inbox_ingest('mine', 'new-1')")
        .unwrap();
    let pending: Vec<String> = first_column(
        &mut db,
        "SELECT event_id FROM pgtrickle.inbox_claim('mine')",
        &[],
    );
    assert_eq!(
        pending,
        ["old-1", "new-1"],
        "adopted rows are pending, in arrival order"
    );
    db.batch_execute("SELECT pgtrickle.drop_inbox('mine', keep_table => true)")
        .unwrap();
    let kept: i64 = db
        .query_one("SELECT count(*) FROM mine", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 2);
    let (state, _) = code(db.execute("SELECT pgtrickle.inbox_ingest('mine', 'x')", &[]));
    assert_eq!(state, "42704", "no longer an inbox");
}

#[test]
fn an_ordinary_role_does_what_the_tables_privileges_allow() {
    let (mut su, mut owner) =
        database_with_owner("inbox_roles", "ib_owner", &["ib_producer", "ib_stranger"]);
    owner
        .batch_execute(
            "SELECT pgtrickle.create_inbox('ib', schedule => NULL);
             GRANT INSERT, SELECT (event_id) ON ib TO ib_producer;",
        )
        .unwrap();
    let mut producer = shared_cluster()
        .connect_as("t_inbox_roles", "ib_producer")
        .unwrap();
    assert!(ingest(&mut producer, "p1", None));
    assert!(!ingest(&mut producer, "p1", None));
    let (state, msg) = code(producer.execute("SELECT * FROM pgtrickle.inbox_claim('ib')", &[]));
    assert_eq!(state, "42501", "a producer cannot process: {msg}");
    let mut stranger = shared_cluster()
        .connect_as("t_inbox_roles", "ib_stranger")
        .unwrap();
    let (state, msg) = code(stranger.execute("SELECT pgtrickle.inbox_ingest('ib', 's1')", &[]));
    assert_eq!(state, "42501", "{msg}");
    let (state, msg) = code(stranger.execute("SELECT pgtrickle.drop_inbox('ib')", &[]));
    assert_eq!(state, "42501", "{msg}");
    let seen: i64 = stranger
        .query_one("SELECT count(*) FROM pgtrickle.inbox_status()", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "inbox_status shows only the caller's inboxes");
    let (state, _) = code(stranger.execute("SELECT * FROM pgtrickle.pgt_inboxes", &[]));
    assert_eq!(state, "42501");
    assert_eq!(claim(&mut owner, 10), ["p1"]);
    stream_tables_exact(&mut su);
    owner
        .batch_execute("SELECT pgtrickle.drop_inbox('ib')")
        .unwrap();
}

#[test]
fn the_worked_example_in_the_docs_runs() {
    let mut db = database("inbox_docs");
    check_doc_example(
        &mut db,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/INBOX.md"),
    );
}

#[test]
fn adopting_refuses_rows_and_columns_an_inbox_would_lose() {
    let mut db = database("inbox_adopt_bad");
    db.batch_execute(
        "CREATE TABLE seqless (event_id text PRIMARY KEY, received_seq bigint);
         CREATE TABLE blank_id (event_id text UNIQUE); INSERT INTO blank_id VALUES (NULL);
         CREATE TABLE odd_status (event_id text PRIMARY KEY, status text); INSERT INTO odd_status VALUES ('e', 'maybe');",
    )
    .unwrap();
    for (sql, state, text) in [
        (
            "SELECT pgtrickle.create_inbox('seqless', adopt => true)",
            "42804",
            "received_seq",
        ),
        (
            "SELECT pgtrickle.create_inbox('blank_id', adopt => true)",
            "23514",
            "event_id NULL",
        ),
        (
            "SELECT pgtrickle.create_inbox('odd_status', adopt => true)",
            "23514",
            "status 'maybe'",
        ),
    ] {
        let (got, msg) = code(db.execute(sql, &[]));
        assert_eq!(got, state, "{sql}: {msg}");
        assert!(msg.contains(text), "{sql}: {msg}");
    }
    let inboxes: i64 = db
        .query_one("SELECT count(*) FROM pgtrickle.pgt_inboxes", &[])
        .unwrap()
        .get(0);
    assert_eq!(inboxes, 0);
}

/// Producers of one aggregate key are serialised, so a later event of a
/// key never becomes claimable before an earlier one commits.
#[test]
fn producers_of_one_key_wait_for_each_other_in_an_ordered_inbox() {
    let mut db = database("inbox_producers");
    db.batch_execute("SELECT pgtrickle.create_inbox('ib', ordered => true, schedule => NULL)")
        .unwrap();
    let mut p1 = shared_cluster().connect("t_inbox_producers").unwrap();
    p1.batch_execute("BEGIN").unwrap();
    assert!(ingest(&mut p1, "first", Some("K")));
    let second = std::thread::spawn(|| {
        let mut p2 = shared_cluster().connect("t_inbox_producers").unwrap();
        ingest(&mut p2, "second", Some("K"))
    });
    // p2 waits on p1's key lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let waiting: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second producer never waited"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(claim(&mut db, 10).is_empty(), "nothing of K is visible yet");
    p1.batch_execute("COMMIT").unwrap();
    assert!(second.join().unwrap());
    assert_eq!(claim(&mut db, 10), ["first"], "second waits for first");
    // A keyless or other-key producer never waits.
    let mut p3 = shared_cluster().connect("t_inbox_producers").unwrap();
    p3.batch_execute("BEGIN").unwrap();
    assert!(ingest(&mut p3, "third", Some("K")));
    assert!(ingest(&mut db, "other", Some("L")));
    assert!(ingest(&mut db, "keyless", None));
    p3.batch_execute("COMMIT").unwrap();
}
