//! The core's pgoutput decoder against the bytes a real PostgreSQL writes:
//! a logical slot with the built-in `pgoutput` plugin over a source with
//! `REPLICA IDENTITY FULL`, inserts, an update that leaves a TOASTed value
//! unchanged, a key update, a delete, a TRUNCATE, a rolled-back
//! transaction and a rolled-back savepoint. Every message decodes, encodes
//! back to the same bytes, and assembles into exactly the row changes made.

use harness::testkit::dedicated_cluster;
use pg_trickle_core::wal::{assemble, decode, encode, ChangeKind, Message, Row};

#[test]
fn real_pgoutput_messages_decode_and_assemble_into_the_changes_made() {
    let cluster = dedicated_cluster(
        "wal_decode",
        &[
            "wal_level = logical",
            "max_replication_slots = 4",
            "max_wal_senders = 4",
        ],
    );
    let mut db = cluster.connect("postgres").expect("connect");
    db.batch_execute(
        "CREATE TABLE src (k int PRIMARY KEY, big text, n numeric);
         ALTER TABLE src REPLICA IDENTITY FULL;
         CREATE PUBLICATION p FOR TABLE src;",
    )
    .expect("set up");
    db.batch_execute("SELECT pg_create_logical_replication_slot('s', 'pgoutput')")
        .expect("create the slot");
    // 128 kB of hex digits: compressed it is still far above the TOAST
    // threshold, so it is stored out of line and an update of another
    // column sends it as unchanged.
    let big = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)";
    // One transaction per statement (a multi-statement string would be one).
    for sql in [
        format!("INSERT INTO src VALUES (1, {big}, 1.5), (2, 'b', NULL)"),
        "UPDATE src SET n = 2 WHERE k = 1".into(),
        "UPDATE src SET k = 3 WHERE k = 2".into(),
        "BEGIN; INSERT INTO src VALUES (9, 'rolled back', 0); ROLLBACK".into(),
        "BEGIN; INSERT INTO src VALUES (4, 'kept', 4); SAVEPOINT s; \
         INSERT INTO src VALUES (5, 'undone', 5); ROLLBACK TO SAVEPOINT s; COMMIT"
            .into(),
        "DELETE FROM src WHERE k = 3".into(),
        "TRUNCATE src".into(),
    ] {
        db.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let big_value: String = db
        .query_one(&format!("SELECT {big}"), &[])
        .expect("big value")
        .get(0);
    let rows = db
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes('s', NULL, NULL, \
             'proto_version', '1', 'publication_names', 'p')",
            &[],
        )
        .expect("read the slot");
    let mut messages = Vec::new();
    for r in &rows {
        let bytes: Vec<u8> = r.get(0);
        let m = decode(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"));
        assert_eq!(
            encode(&m),
            bytes,
            "encode does not give back the server's bytes for {m:?}"
        );
        messages.push(m);
    }
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, Message::Update { new, .. } if new.0.contains(&pg_trickle_core::wal::Datum::UnchangedToast))),
        "no update sent an unchanged TOASTed value: the test lost its point"
    );
    let changes = assemble(&messages).expect("assembles");
    let s = |v: &str| Some(v.to_string());
    let seen: Vec<(ChangeKind, Option<Row>, Option<Row>)> = changes
        .into_iter()
        .map(|c| (c.kind, c.old, c.new))
        .collect();
    let expected = vec![
        (
            ChangeKind::Insert,
            None,
            Some(vec![s("1"), Some(big_value.clone()), s("1.5")]),
        ),
        (ChangeKind::Insert, None, Some(vec![s("2"), s("b"), None])),
        (
            ChangeKind::Update,
            Some(vec![s("1"), Some(big_value.clone()), s("1.5")]),
            Some(vec![s("1"), Some(big_value), s("2")]),
        ),
        (
            ChangeKind::Update,
            Some(vec![s("2"), s("b"), None]),
            Some(vec![s("3"), s("b"), None]),
        ),
        (
            ChangeKind::Insert,
            None,
            Some(vec![s("4"), s("kept"), s("4")]),
        ),
        (ChangeKind::Delete, Some(vec![s("3"), s("b"), None]), None),
        (ChangeKind::Truncate, None, None),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:#?}");
    for (i, (got, want)) in seen.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "change {i}");
    }
}
