//! Throughput of the pgoutput decoder: a stream of transactions over a
//! three-column table (inserts, updates with the full old row, deletes),
//! encoded once and then decoded and assembled into row changes. Criterion
//! reports bytes per second; changes per second follow from the number of
//! changes per iteration, printed at the start.
//!
//!   cargo bench -p pg_trickle_core --bench wal_decode

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use pg_trickle_core::wal::{
    assemble, decode, encode, Datum, Message, OldTuple, Relation, RelationColumn, Tuple,
};

fn row(k: u32, text: &str) -> Tuple {
    Tuple(vec![
        Datum::Text(k.to_string().into_bytes()),
        Datum::Text(text.as_bytes().to_vec()),
        if k.is_multiple_of(5) {
            Datum::Null
        } else {
            Datum::Text(format!("{}.{:02}", k % 1000, k % 100).into_bytes())
        },
    ])
}

/// 1,000 transactions of 10 changes each, encoded as a slot returns them.
fn stream() -> (Vec<Vec<u8>>, usize) {
    let column = |name: &str, type_oid| RelationColumn {
        key: false,
        name: name.into(),
        type_oid,
        type_modifier: -1,
    };
    let mut messages = vec![Message::Relation(Relation {
        oid: 16384,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: b'f',
        columns: vec![column("k", 23), column("note", 25), column("amount", 1700)],
    })];
    let mut changes = 0;
    for xid in 0..1000u32 {
        messages.push(Message::Begin {
            final_lsn: u64::from(xid) * 100,
            commit_time: 0,
            xid,
        });
        for i in 0..10u32 {
            let k = xid * 10 + i;
            messages.push(match i % 3 {
                0 => Message::Insert {
                    relation: 16384,
                    new: row(k, "a new order with a short note"),
                },
                1 => Message::Update {
                    relation: 16384,
                    old: Some(OldTuple::Full(row(k, "before"))),
                    new: row(k, "after the update"),
                },
                _ => Message::Delete {
                    relation: 16384,
                    old: OldTuple::Full(row(k, "gone")),
                },
            });
            changes += 1;
        }
        messages.push(Message::Commit {
            flags: 0,
            commit_lsn: u64::from(xid) * 100,
            end_lsn: u64::from(xid) * 100 + 50,
            commit_time: 0,
        });
    }
    (messages.iter().map(encode).collect(), changes)
}

fn decoder(c: &mut Criterion) {
    let (encoded, changes) = stream();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    println!(
        "wal_decode: {} messages, {bytes} bytes, {changes} changes per iteration",
        encoded.len()
    );
    let mut group = c.benchmark_group("pgoutput");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            for m in &encoded {
                black_box(decode(m).expect("valid"));
            }
        })
    });
    group.bench_function("decode_and_assemble", |b| {
        b.iter(|| {
            let messages: Vec<Message> =
                encoded.iter().map(|m| decode(m).expect("valid")).collect();
            assemble(&messages).expect("assembles").len()
        })
    });
    group.finish();
    let mut per_change = c.benchmark_group("pgoutput_changes");
    per_change.throughput(Throughput::Elements(changes as u64));
    per_change.bench_function("decode_and_assemble", |b| {
        b.iter(|| {
            let messages: Vec<Message> =
                encoded.iter().map(|m| decode(m).expect("valid")).collect();
            assemble(&messages).expect("assembles").len()
        })
    });
    per_change.finish();
}

criterion_group!(benches, decoder);
criterion_main!(benches);
