//! The pgoutput decoder without a server: hand-made messages in the
//! server's byte format, encode/decode round trips for generated messages,
//! every truncation and corruption of a valid message ending in a typed
//! error, and the assembly of messages into row changes.

use pg_trickle_core::wal::{
    assemble, decode, encode, ChangeError, ChangeKind, Datum, DecodeError, Message, OldTuple,
    Relation, RelationColumn, Tuple,
};
use proptest::prelude::*;

fn text(s: &str) -> Datum {
    Datum::Text(s.as_bytes().to_vec())
}

fn relation() -> Relation {
    Relation {
        oid: 16384,
        namespace: "public".into(),
        name: "src".into(),
        replica_identity: b'f',
        columns: vec![
            RelationColumn {
                key: true,
                name: "k".into(),
                type_oid: 23,
                type_modifier: -1,
            },
            RelationColumn {
                key: false,
                name: "big".into(),
                type_oid: 25,
                type_modifier: -1,
            },
        ],
    }
}

#[test]
fn a_begin_message_reads_as_the_server_writes_it() {
    let mut bytes = vec![b'B'];
    bytes.extend(0x0000_0001_0000_0028u64.to_be_bytes());
    bytes.extend(786_000_000_000i64.to_be_bytes());
    bytes.extend(742u32.to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Ok(Message::Begin {
            final_lsn: 0x0000_0001_0000_0028,
            commit_time: 786_000_000_000,
            xid: 742
        })
    );
}

#[test]
fn an_insert_with_null_and_text_reads_as_the_server_writes_it() {
    let mut bytes = vec![b'I'];
    bytes.extend(16384u32.to_be_bytes());
    bytes.push(b'N');
    bytes.extend(2i16.to_be_bytes());
    bytes.push(b't');
    bytes.extend(2i32.to_be_bytes());
    bytes.extend(b"42");
    bytes.push(b'n');
    assert_eq!(
        decode(&bytes),
        Ok(Message::Insert {
            relation: 16384,
            new: Tuple(vec![text("42"), Datum::Null])
        })
    );
}

#[test]
fn malformed_messages_are_typed_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(decode(b"Z"), Err(DecodeError::UnknownMessage(b'Z')));
    // A relation name without its NUL.
    let mut r = vec![b'R'];
    r.extend(1u32.to_be_bytes());
    r.extend(b"public\0src");
    assert!(matches!(
        decode(&r),
        Err(DecodeError::UnterminatedString {
            field: "relation name",
            ..
        })
    ));
    // A text value claiming 2 GB.
    let mut i = vec![b'I'];
    i.extend(1u32.to_be_bytes());
    i.push(b'N');
    i.extend(1i16.to_be_bytes());
    i.push(b't');
    i.extend(i32::MAX.to_be_bytes());
    assert!(matches!(
        decode(&i),
        Err(DecodeError::Truncated {
            field: "text length",
            ..
        })
    ));
    // A negative column count.
    let mut n = vec![b'I'];
    n.extend(1u32.to_be_bytes());
    n.push(b'N');
    n.extend((-1i16).to_be_bytes());
    assert!(matches!(
        decode(&n),
        Err(DecodeError::Negative { value: -1, .. })
    ));
    // A complete message with bytes after it.
    let mut c = encode(&Message::Truncate {
        options: 1,
        relations: vec![7],
    });
    c.push(0);
    assert_eq!(
        decode(&c),
        Err(DecodeError::TrailingBytes {
            message: "Truncate",
            count: 1
        })
    );
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _\"'é€]{0,12}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..24)
}

fn datum() -> impl Strategy<Value = Datum> {
    prop_oneof![
        Just(Datum::Null),
        Just(Datum::UnchangedToast),
        bytes().prop_map(Datum::Text),
        bytes().prop_map(Datum::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    proptest::collection::vec(datum(), 0..6).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn column() -> impl Strategy<Value = RelationColumn> {
    (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(key, name, type_oid, type_modifier)| RelationColumn {
            key,
            name,
            type_oid,
            type_modifier,
        },
    )
}

/// Every message kind, with fields over their whole ranges.
pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            }
        }),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| {
                Message::Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                }
            }
        ),
        (any::<u64>(), name()).prop_map(|(lsn, name)| Message::Origin { lsn, name }),
        (
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec(column(), 0..5)
        )
            .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type {
            oid,
            namespace,
            name
        }),
        (any::<u32>(), tuple()).prop_map(|(relation, new)| Message::Insert { relation, new }),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple())
            .prop_map(|(relation, old, new)| Message::Update { relation, old, new }),
        (any::<u32>(), old_tuple()).prop_map(|(relation, old)| Message::Delete { relation, old }),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..5))
            .prop_map(|(options, relations)| Message::Truncate { options, relations }),
        (any::<u8>(), any::<u64>(), name(), bytes()).prop_map(|(flags, lsn, prefix, content)| {
            Message::LogicalMessage {
                flags,
                lsn,
                prefix,
                content,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn decode_inverts_encode(m in message()) {
        prop_assert_eq!(decode(&encode(&m)), Ok(m));
    }

    #[test]
    fn every_truncation_is_a_typed_error(m in message()) {
        let bytes = encode(&m);
        for len in 0..bytes.len() {
            prop_assert!(decode(&bytes[..len]).is_err(), "prefix of {} bytes decoded", len);
        }
    }

    #[test]
    fn corrupt_bytes_never_panic(m in message(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = encode(&m);
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        let _ = decode(&bytes);
    }
}

fn begin(xid: u32) -> Message {
    Message::Begin {
        final_lsn: 100 + u64::from(xid),
        commit_time: 0,
        xid,
    }
}

fn commit() -> Message {
    Message::Commit {
        flags: 0,
        commit_lsn: 0,
        end_lsn: 0,
        commit_time: 0,
    }
}

#[test]
fn messages_assemble_into_whole_rows() {
    let changes = assemble(&[
        Message::Relation(relation()),
        begin(7),
        Message::Insert {
            relation: 16384,
            new: Tuple(vec![text("1"), text("long")]),
        },
        Message::Update {
            relation: 16384,
            old: Some(OldTuple::Full(Tuple(vec![text("1"), text("long")]))),
            new: Tuple(vec![text("2"), Datum::UnchangedToast]),
        },
        Message::Delete {
            relation: 16384,
            old: OldTuple::Full(Tuple(vec![text("2"), Datum::Null])),
        },
        Message::Truncate {
            options: 0,
            relations: vec![16384],
        },
        commit(),
    ])
    .expect("assembles");
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Insert,
            ChangeKind::Update,
            ChangeKind::Delete,
            ChangeKind::Truncate
        ]
    );
    assert!(changes.iter().all(|c| c.xid == 7 && c.commit_lsn == 107));
    // The unchanged TOASTed value is taken from the old row.
    assert_eq!(
        changes[1].new,
        Some(vec![Some("2".into()), Some("long".into())])
    );
    assert_eq!(changes[2].old, Some(vec![Some("2".into()), None]));
}

#[test]
fn what_cannot_make_a_whole_row_is_an_error_naming_the_relation() {
    let key_only = assemble(&[
        Message::Relation(relation()),
        begin(1),
        Message::Delete {
            relation: 16384,
            old: OldTuple::Key(Tuple(vec![text("1"), Datum::Null])),
        },
    ]);
    assert_eq!(key_only, Err(ChangeError::OldKeyOnly("public.src".into())));
    let toast = assemble(&[
        Message::Relation(relation()),
        begin(1),
        Message::Insert {
            relation: 16384,
            new: Tuple(vec![text("1"), Datum::UnchangedToast]),
        },
    ]);
    assert_eq!(
        toast,
        Err(ChangeError::UnresolvedToast {
            relation: "public.src".into(),
            column: "big".into()
        })
    );
    let unknown = assemble(&[
        begin(1),
        Message::Insert {
            relation: 9,
            new: Tuple(vec![]),
        },
    ]);
    assert_eq!(unknown, Err(ChangeError::UnknownRelation(9)));
    let outside = assemble(&[
        Message::Relation(relation()),
        Message::Insert {
            relation: 16384,
            new: Tuple(vec![text("1"), Datum::Null]),
        },
    ]);
    assert_eq!(outside, Err(ChangeError::OutsideTransaction("an insert")));
    let short = assemble(&[
        Message::Relation(relation()),
        begin(1),
        Message::Insert {
            relation: 16384,
            new: Tuple(vec![text("1")]),
        },
    ]);
    assert!(matches!(
        short,
        Err(ChangeError::ColumnCount {
            expected: 2,
            got: 1,
            ..
        })
    ));
}
