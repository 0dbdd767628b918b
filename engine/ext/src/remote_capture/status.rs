//! `remote_capture_status()`: per (stream table, node) of every sharded
//! source a stream table reads, its slot, how far it is written, the
//! lease, and the last error.

use pgrx::prelude::*;

use crate::security::as_extension;
use crate::spi::rows;

/// One row per (stream table, sharded source, node) the caller may see
/// (its own stream tables; a superuser sees all).
#[pg_extern]
#[allow(clippy::type_complexity)]
fn remote_capture_status() -> TableIterator<
    'static,
    (
        name!(stream_table, String),
        name!(source, String),
        name!(node, String),
        name!(slot_name, String),
        name!(settled_lsn, String),
        name!(confirmed_lsn, Option<String>),
        name!(lease_holder, Option<String>),
        name!(lease_expires_at, Option<String>),
        name!(last_drain_at, Option<String>),
        name!(failed_ticks, i32),
        name!(last_error, Option<String>),
    ),
> {
    let me = crate::security::caller();
    let all = crate::security::is_superuser(me);
    let list = as_extension(|| {
        rows(
            "SELECT st.name, r.source_relid::regclass::text, r.node_label, r.slot_name::text, r.settled_lsn::text, \
                    r.confirmed_lsn::text, r.lease_holder, r.lease_expires_at::text, r.last_drain_at::text, \
                    r.failed_ticks::text, r.last_error \
             FROM pgtrickle.pgt_remote_capture r \
             JOIN pgtrickle.pgt_sources src ON src.source_relid = r.source_relid \
             JOIN pgtrickle.pgt_stream_tables st ON st.id = src.st_id \
             JOIN pg_catalog.pg_class c ON c.oid = st.relid \
             WHERE $1::text::bool OR c.relowner = $2::text::oid \
             ORDER BY 1, 2, 3",
            &[Some(all.to_string()), Some(me.to_u32().to_string())],
        )
    });
    TableIterator::new(list.into_iter().map(|r| {
        let get = |i: usize| r[i].clone().unwrap_or_default();
        (
            get(0),
            get(1),
            get(2),
            get(3),
            get(4),
            r[5].clone(),
            r[6].clone(),
            r[7].clone(),
            r[8].clone(),
            get(9).parse().unwrap_or(0),
            r[10].clone(),
        )
    }))
}
