//! Consuming an outbox: `poll_outbox`, `commit_offset`, `extend_lease`,
//! `replay_outbox` and `outbox_rows`. Each call locks its consumer group's
//! catalog row, loads the group's state into `pg_trickle_core`'s [`Group`],
//! applies the one rule it asks for, and writes the state back in the
//! caller's transaction: two workers of one group are serialised on that
//! row and never hold the same message, and a call that fails changes
//! nothing. Times are the database's clock (`clock_timestamp()`).

use pg_trickle_core::outbox::group::{Batch, Group, GroupError};
use pg_trickle_core::outbox::lease::Lease;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{consumer, first_retained, no_group, JsonbText};
use crate::catalog::StreamTableRef;
use crate::security::{self, as_extension};
use crate::spi::{internal, raise, rows, run, value};

fn us(col: &str) -> String {
    format!("((EXTRACT(epoch FROM {col})) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8::pg_catalog.text")
}

/// Microseconds since the epoch (parameter `$X`) as a timestamptz, exactly.
const AT_US: &str = "('epoch'::pg_catalog.timestamptz OPERATOR(pg_catalog.+) \
     ($X::pg_catalog.int8 OPERATOR(pg_catalog.*) '1 microsecond'::pg_catalog.interval))";

fn at(param: &str) -> String {
    AT_US.replace("$X", param)
}

fn parse<T: std::str::FromStr>(v: &Option<String>) -> T {
    v.as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| internal(format!("outbox catalog value {v:?} does not parse")))
}

/// Raise 42501 unless `me` is the stream table's owner or the group has
/// no consumer role, or `me` has the privileges of that role.
fn require_member(st: &StreamTableRef, group_name: &str, me: pg_sys::Oid, role: Option<u32>) {
    let Some(role) = role.map(pg_sys::Oid::from) else {
        return;
    };
    if !security::has_privs_of(me, role) && !security::has_privs_of(me, st.owner) {
        raise(
            "42501",
            format!(
                "consumer group \"{group_name}\" of stream table {} is for role {}",
                st.name,
                security::role_name(role)
            ),
            Some(format!(
                "{} is not a member of {}; its owner can grant that role.",
                security::role_name(me),
                security::role_name(role)
            )),
        );
    }
}

/// A group's state as loaded, with the outbox's head and the time.
struct Loaded {
    group: Group,
    /// The last message of the outbox (every message up to it committed).
    head: u64,
    /// The database's clock now, in microseconds.
    now: i64,
}

/// The group's state, its row locked to the end of the transaction, after
/// checking that `me` may consume as this group.
fn load(st: &StreamTableRef, group_name: &str, me: pg_sys::Oid) -> Loaded {
    let args = [Some(st.id.to_string()), Some(group_name.to_string())];
    let Some(g) = rows(
        &format!(
            "SELECT g.committed::pg_catalog.text, pg_catalog.array_to_string(g.done, ','), \
                    g.last_delivery::pg_catalog.text, g.consumer_role::pg_catalog.text, \
                    o.head::pg_catalog.text, {} \
               FROM pgtrickle.pgt_consumer_groups g \
               JOIN pgtrickle.pgt_outboxes o ON o.st_id OPERATOR(pg_catalog.=) g.st_id \
              WHERE g.st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 AND g.group_name OPERATOR(pg_catalog.=) $2 \
                FOR UPDATE OF g",
            us("pg_catalog.clock_timestamp()")
        ),
        &args,
    )
    .into_iter()
    .next() else {
        no_group(st, group_name)
    };
    require_member(
        st,
        group_name,
        me,
        g[3].as_deref().and_then(|r| r.parse().ok()),
    );
    let mut group = Group {
        offset: parse(&g[0]),
        done: g[1]
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or_else(|_| internal(format!("done {s}"))))
            .collect(),
        last_id: parse(&g[2]),
        ..Group::default()
    };
    for l in rows(
        &format!(
            "SELECT delivery::pg_catalog.text, first_message::pg_catalog.text, last_message::pg_catalog.text, holder, {}, {} \
               FROM pgtrickle.pgt_outbox_leases \
              WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 AND group_name OPERATOR(pg_catalog.=) $2",
            us("acquired_at"),
            us("expires_at")
        ),
        &args,
    ) {
        let first = parse(&l[1]);
        group.batches.insert(
            first,
            Batch {
                id: parse(&l[0]),
                first,
                last: parse(&l[2]),
                lease: Lease {
                    holder: l[3].clone().unwrap_or_default(),
                    acquired_at: parse(&l[4]),
                    expires_at: parse(&l[5]),
                },
            },
        );
    }
    Loaded {
        group,
        head: parse(&g[4]),
        now: parse(&g[5]),
    }
}

/// Write the group's state back (its row is locked by [`load`]).
fn store(st: &StreamTableRef, group_name: &str, g: &Group) {
    let done: Vec<String> = g.done.iter().map(u64::to_string).collect();
    let args = |extra: Vec<Option<String>>| {
        let mut a = vec![Some(st.id.to_string()), Some(group_name.to_string())];
        a.extend(extra);
        a
    };
    run(
        "UPDATE pgtrickle.pgt_consumer_groups SET committed = $3::pg_catalog.int8, \
                done = $4::pg_catalog.int8[], last_delivery = $5::pg_catalog.int8 \
          WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 AND group_name OPERATOR(pg_catalog.=) $2",
        &args(vec![
            Some(g.offset.to_string()),
            Some(format!("{{{}}}", done.join(","))),
            Some(g.last_id.to_string()),
        ]),
    );
    // The leases: those no longer held go, new ones come, extended ones
    // take their new expiry.
    let batches: Vec<&pg_trickle_core::outbox::group::Batch> = g.batches.values().collect();
    let list = |f: &dyn Fn(&pg_trickle_core::outbox::group::Batch) -> String| {
        Some(format!(
            "{{{}}}",
            batches.iter().map(|b| f(b)).collect::<Vec<_>>().join(",")
        ))
    };
    let ids = list(&|b| b.id.to_string());
    run(
        "DELETE FROM pgtrickle.pgt_outbox_leases \
          WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 AND group_name OPERATOR(pg_catalog.=) $2 \
            AND delivery OPERATOR(pg_catalog.<>) ALL ($3::pg_catalog.int8[])",
        &args(vec![ids.clone()]),
    );
    if batches.is_empty() {
        return;
    }
    let holders: Vec<String> = batches.iter().map(|b| b.lease.holder.clone()).collect();
    run(
        &format!(
            "INSERT INTO pgtrickle.pgt_outbox_leases \
             (st_id, group_name, delivery, first_message, last_message, holder, acquired_at, expires_at) \
             SELECT $1::pg_catalog.int8, $2, u.d, u.f, u.l, u.h, {}, {} \
               FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.int8[]), \
                              pg_catalog.unnest($5::pg_catalog.int8[]), pg_catalog.unnest($6::pg_catalog.text[]), \
                              pg_catalog.unnest($7::pg_catalog.int8[]), pg_catalog.unnest($8::pg_catalog.int8[])) \
                    AS u(d, f, l, h, a, e) \
             ON CONFLICT (st_id, group_name, delivery) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            at("u.a"),
            at("u.e")
        ),
        &args(vec![
            ids,
            list(&|b| b.first.to_string()),
            list(&|b| b.last.to_string()),
            Some(crate::wal_capture::text_array(&holders)),
            list(&|b| b.lease.acquired_at.to_string()),
            list(&|b| b.lease.expires_at.to_string()),
        ]),
    );
}

/// The shape of every group operation: resolve the outbox as the caller,
/// then, as the extension, load the group (locked), apply `op` to it and
/// store it back.
fn on_group<R>(
    name: &str,
    group_name: &str,
    op: impl FnOnce(&StreamTableRef, &mut Loaded) -> R,
) -> (StreamTableRef, R) {
    let me = security::caller();
    let st = consumer(name);
    let r = as_extension(|| {
        let mut loaded = load(&st, group_name, me);
        let r = op(&st, &mut loaded);
        store(&st, group_name, &loaded.group);
        r
    });
    (st, r)
}

fn missing<T>() -> T {
    internal("an outbox message row has a NULL column".into())
}

fn fail(st: &StreamTableRef, group_name: &str, e: GroupError) -> ! {
    raise(
        e.sqlstate(),
        format!(
            "outbox of stream table {}, consumer group \"{group_name}\": {e}",
            st.name
        ),
        matches!(e.sqlstate(), "55000").then(|| {
            "A lease that lapsed is delivered again to the next poll; poll again and process what it returns.".to_string()
        }),
    )
}

/// The holder a worker is known by: its name, or one shared name when the
/// worker gives none (the delivery id alone then names the batch).
fn holder(worker: Option<&str>) -> String {
    worker.unwrap_or("anonymous").to_string()
}

/// Lease the next batch of at most `batch_size` messages of `name`'s
/// outbox that group `group_name` has neither committed nor handed to a
/// live lease, for `lease_seconds`. Returns its messages in order, each
/// with the batch's delivery id (commit or extend it by that id); no rows
/// when there is nothing to deliver.
#[pg_extern]
fn poll_outbox(
    name: &str,
    group_name: &str,
    batch_size: default!(i32, 100),
    lease_seconds: default!(i32, 30),
    worker: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(delivery, i64),
        name!(message, i64),
        name!(created_at, TimestampWithTimeZone),
        name!(envelope, JsonbText),
    ),
> {
    let size = u64::try_from(batch_size).unwrap_or(0);
    let (st, d) = on_group(name, group_name, |st, l| {
        l.group
            .poll(
                l.head,
                &holder(worker),
                size,
                l.now,
                i64::from(lease_seconds),
            )
            .unwrap_or_else(|e| fail(st, group_name, e))
    });
    let out = as_extension(|| {
        let Some(d) = d else {
            return Vec::new();
        };
        let got: Vec<_> = Spi::connect(|client| {
            let t = client
                .select(
                    "SELECT message, created_at, envelope::pg_catalog.text FROM pgtrickle.pgt_outbox_messages \
                      WHERE st_id OPERATOR(pg_catalog.=) $1 AND message OPERATOR(pg_catalog.>=) $2 \
                        AND message OPERATOR(pg_catalog.<=) $3 ORDER BY message",
                    None,
                    &[
                        st.id.into(),
                        (d.first as i64).into(),
                        (d.last as i64).into(),
                    ],
                )
                .unwrap_or_else(|e| internal(format!("reading outbox messages: {e}")));
            t.map(|r| {
                (
                    d.id as i64,
                    r.get::<i64>(1).ok().flatten().unwrap_or_else(missing),
                    r.get::<TimestampWithTimeZone>(2)
                        .ok()
                        .flatten()
                        .unwrap_or_else(missing),
                    JsonbText(r.get::<String>(3).ok().flatten().unwrap_or_else(missing)),
                )
            })
            .collect::<Vec<_>>()
        });
        // Every message of the leased range must be there: a gap would be
        // a message skipped for good once the delivery is committed.
        // Raising undoes the lease with the rest of the transaction.
        let numbers: Vec<i64> = got.iter().map(|m| m.1).collect();
        let wanted: Vec<i64> = (d.first as i64..=d.last as i64).collect();
        if numbers != wanted {
            internal(format!(
                "outbox of stream table {}: messages {}..={} leased to group \"{group_name}\" are not all kept (found {numbers:?})",
                st.name, d.first, d.last
            ));
        }
        got
    });
    TableIterator::new(out)
}

/// Commit delivery `delivery` of group `group_name`: its messages are done
/// for the group. Refused (55000) when the lease lapsed (its messages are
/// delivered again) or is another worker's. Returns the group's offset:
/// every message up to it is committed.
#[pg_extern]
fn commit_offset(
    name: &str,
    group_name: &str,
    delivery: i64,
    worker: default!(Option<&str>, "NULL"),
) -> i64 {
    let (st, offset) = on_group(name, group_name, |st, l| {
        l.group
            .commit(&holder(worker), delivery.max(0) as u64, l.now)
            .unwrap_or_else(|e| fail(st, group_name, e))
    });
    as_extension(|| super::prune_if_free(st.id));
    offset as i64
}

/// Extend the lease on delivery `delivery` to `lease_seconds` from now
/// (never shortening it). Returns when it lapses now.
#[pg_extern]
fn extend_lease(
    name: &str,
    group_name: &str,
    delivery: i64,
    lease_seconds: default!(i32, 30),
    worker: default!(Option<&str>, "NULL"),
) -> TimestampWithTimeZone {
    let (st, ()) = on_group(name, group_name, |st, l| {
        l.group
            .extend(
                &holder(worker),
                delivery.max(0) as u64,
                l.now,
                i64::from(lease_seconds),
            )
            .unwrap_or_else(|e| fail(st, group_name, e))
    });
    as_extension(|| {
        Spi::get_one_with_args::<TimestampWithTimeZone>(
            "SELECT expires_at FROM pgtrickle.pgt_outbox_leases WHERE st_id OPERATOR(pg_catalog.=) $1 \
               AND group_name OPERATOR(pg_catalog.=) $2 AND delivery OPERATOR(pg_catalog.=) $3",
            &[st.id.into(), group_name.into(), delivery.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| internal("extended lease vanished".into()))
    })
}

/// Deliver group `group_name` every message from `from_message` on again:
/// its offset goes back (never forward) and its leases are cancelled.
/// Refused (22023) when retention already dropped `from_message`.
/// Returns the group's offset after it.
#[pg_extern]
fn replay_outbox(name: &str, group_name: &str, from_message: i64) -> i64 {
    let (_, offset) = on_group(name, group_name, |st, l| {
        // Retention waits for this transaction: the check below stays true.
        super::lock_against_retention(st.id);
        let first = first_retained(st.id);
        if from_message < first {
            raise(
                "22023",
                format!(
                    "outbox of stream table {} keeps messages from {first} on: cannot replay from {from_message}",
                    st.name
                ),
                None,
            );
        }
        l.group.replay(from_message as u64);
        l.group.offset
    });
    offset as i64
}

/// The rows of message `message`, inline or claim-checked alike: `op` is
/// `insert` or `delete`, `row_data` one row as a JSON object.
#[pg_extern]
fn outbox_rows(
    name: &str,
    message: i64,
) -> TableIterator<'static, (name!(op, String), name!(row_data, JsonbText))> {
    let st = consumer(name);
    let out = as_extension(|| {
        Spi::connect(|client| {
            let t = client
                .select(
                    "SELECT 'insert', r::pg_catalog.text FROM pgtrickle.pgt_outbox_messages m, \
                            pg_catalog.jsonb_array_elements(m.envelope OPERATOR(pg_catalog.->) 'inserted') r \
                      WHERE m.st_id OPERATOR(pg_catalog.=) $1 AND m.message OPERATOR(pg_catalog.=) $2 \
                     UNION ALL \
                     SELECT 'delete', r::pg_catalog.text FROM pgtrickle.pgt_outbox_messages m, \
                            pg_catalog.jsonb_array_elements(m.envelope OPERATOR(pg_catalog.->) 'deleted') r \
                      WHERE m.st_id OPERATOR(pg_catalog.=) $1 AND m.message OPERATOR(pg_catalog.=) $2 \
                     UNION ALL \
                     SELECT CASE WHEN op OPERATOR(pg_catalog.=) 'I' THEN 'insert' ELSE 'delete' END, row_data::pg_catalog.text \
                       FROM (SELECT op, row_data FROM pgtrickle.pgt_outbox_rows \
                              WHERE st_id OPERATOR(pg_catalog.=) $1 AND message OPERATOR(pg_catalog.=) $2 \
                              ORDER BY op DESC, ordinal) c",
                    None,
                    &[st.id.into(), message.into()],
                )
                .unwrap_or_else(|e| internal(format!("reading outbox rows: {e}")));
            t.filter_map(|r| {
                Some((
                    r.get::<String>(1).ok().flatten()?,
                    JsonbText(r.get::<String>(2).ok().flatten()?),
                ))
            })
            .collect::<Vec<_>>()
        })
    });
    if out.is_empty()
        && as_extension(|| {
            value(
                "SELECT 'x' FROM pgtrickle.pgt_outbox_messages WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 \
                   AND message OPERATOR(pg_catalog.=) $2::pg_catalog.int8",
                &[Some(st.id.to_string()), Some(message.to_string())],
            )
        })
        .is_none()
    {
        raise(
            "42704",
            format!(
                "outbox of stream table {} has no message {message} (never written, or dropped by retention)",
                st.name
            ),
            None,
        );
    }
    TableIterator::new(out)
}
