//! The transactional outbox of a stream table: every refresh that changes
//! it writes one message in the same transaction ([`publish`]); consumer
//! groups read the messages with leases, commit offsets and replay
//! ([`delivery`]). The rules (message format, leases, a group's delivery
//! state) are `pg_trickle_core::outbox`; this module keeps their state in
//! the catalog.
//!
//! Who may do what: the stream table's owner enables and disables its
//! outbox and creates and drops consumer groups (a group holds messages
//! back from retention); any role that may SELECT the stream table may
//! consume it, since a message carries its rows.

pub mod delivery;
pub mod publish;

use pgrx::prelude::*;

use crate::catalog::{controlled, resolve, StreamTableRef};
use crate::security::{self, as_extension};
use crate::spi::{raise, rows, run, value};

/// JSON text returned as `jsonb` without passing through a parsed value,
/// so numerics keep the scale PostgreSQL printed (`1.50` stays `1.50`;
/// pgrx's `JsonB` would make it `1.5`).
pub struct JsonbText(pub String);

impl pgrx::IntoDatum for JsonbText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = std::ffi::CString::new(self.0).ok()?;
        // SAFETY: jsonb_in reads the NUL-terminated string and copies it
        // into a new datum in the current memory context.
        unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())])
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

impl_sql_translatable!(JsonbText, "jsonb");

// SAFETY: returns the datum made by `into_datum` (or NULL), as pgrx does
// for its own datum types.
unsafe impl pgrx::callconv::BoxRet for JsonbText {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match pgrx::IntoDatum::into_datum(self) {
            // SAFETY: a jsonb datum in the current memory context.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

/// The default inline limit of a message's rows, in bytes of JSON.
pub const DEFAULT_INLINE_LIMIT: i32 = 65_536;

/// Whether stream table `id` has an outbox.
pub fn enabled(id: i64) -> bool {
    value(
        "SELECT 'x' FROM pgtrickle.pgt_outboxes WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
        &[Some(id.to_string())],
    )
    .is_some()
}

/// The hidden (`__pgt_*`) columns of storage `relid`, left out of messages.
pub fn hidden_columns(relid: u32) -> Vec<String> {
    rows(
        "SELECT attname::pg_catalog.text FROM pg_catalog.pg_attribute \
          WHERE attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid AND attnum OPERATOR(pg_catalog.>) 0 \
            AND NOT attisdropped AND attname::pg_catalog.text LIKE '\\_\\_pgt\\_%' ORDER BY attnum",
        &[Some(relid.to_string())],
    )
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect()
}

/// Give stream table `name` an outbox: from now on every refresh that
/// changes it writes one message. Rows travel inline up to
/// `inline_limit_bytes` of JSON, as a claim-check beyond; messages every
/// group has committed are kept for `retention` and then dropped.
#[pg_extern]
fn enable_outbox(
    name: &str,
    inline_limit_bytes: default!(i32, 65536),
    retention: default!(&str, "'1 day'"),
) {
    if inline_limit_bytes < 0 {
        raise(
            "22023",
            format!("inline_limit_bytes must be 0 or more, not {inline_limit_bytes}"),
            None,
        );
    }
    controlled(name, |st| {
        let retention = value(
            "SELECT $1::pg_catalog.interval::pg_catalog.text",
            &[Some(retention.to_string())],
        )
        .unwrap_or_default();
        if value(
            "SELECT 'x' WHERE $1::pg_catalog.interval OPERATOR(pg_catalog.<) '0'::pg_catalog.interval",
            &[Some(retention.clone())],
        )
        .is_some()
        {
            raise("22023", format!("retention must not be negative, not {retention}"), None);
        }
        if enabled(st.id) {
            raise(
                "42710",
                format!("stream table {} already has an outbox", st.name),
                Some("Change its settings with disable_outbox and enable_outbox (which drops its messages), or leave it.".into()),
            );
        }
        run(
            "INSERT INTO pgtrickle.pgt_outboxes (st_id, inline_limit_bytes, retention) \
             VALUES ($1::pg_catalog.int8, $2::pg_catalog.int4, $3::pg_catalog.interval)",
            &[
                Some(st.id.to_string()),
                Some(inline_limit_bytes.to_string()),
                Some(retention),
            ],
        );
        publish::install_triggers(&st.name_sql(), &hidden_columns(st.relid));
    });
}

/// Remove stream table `name`'s outbox, its messages and its consumer groups.
#[pg_extern]
fn disable_outbox(name: &str) {
    controlled(name, |st| {
        if !enabled(st.id) {
            raise(
                "42704",
                format!("stream table {} has no outbox", st.name),
                None,
            );
        }
        forget(st);
    });
}

/// Drop a stream table's outbox state and triggers (when the stream table
/// goes, its catalog rows cascade and the triggers go with the storage).
pub fn forget(st: &StreamTableRef) {
    publish::drop_triggers(&st.name_sql());
    run(
        "DELETE FROM pgtrickle.pgt_outbox_staging WHERE st_relid OPERATOR(pg_catalog.=) $1::pg_catalog.oid",
        &[Some(st.relid.to_string())],
    );
    run(
        "DELETE FROM pgtrickle.pgt_outboxes WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
        &[Some(st.id.to_string())],
    );
}

/// The first message still kept, or `head + 1` when none is.
fn first_retained(id: i64) -> i64 {
    value(
        "SELECT COALESCE((SELECT pg_catalog.min(message) FROM pgtrickle.pgt_outbox_messages \
                          WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8), \
                         (SELECT head OPERATOR(pg_catalog.+) 1 FROM pgtrickle.pgt_outboxes \
                          WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8))::pg_catalog.text",
        &[Some(id.to_string())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(1)
}

/// Create consumer group `group_name` on stream table `name`'s outbox. It
/// starts at `from_message` (the first message it will get), by default
/// the oldest message still kept. With `consumer_role`, only members of
/// that role (and the owner) may poll, commit, extend or replay as this
/// group; without, any role that may read the stream table may.
#[pg_extern]
fn create_consumer_group(
    name: &str,
    group_name: &str,
    from_message: default!(Option<i64>, "NULL"),
    consumer_role: default!(Option<&str>, "NULL"),
) {
    if group_name.trim().is_empty() {
        raise("22023", "a consumer group needs a name", None);
    }
    // Resolved before switching to the extension.
    let role: Option<u32> = consumer_role.map(|r| {
        value(
            "SELECT oid::pg_catalog.text FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1",
            &[Some(r.to_string())],
        )
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| raise("42704", format!("role \"{r}\" does not exist"), None))
    });
    controlled(name, |st| {
        require_outbox(st);
        // Retention waits for this transaction: the group's start stays kept.
        lock_against_retention(st.id);
        let first = first_retained(st.id);
        let start = from_message.unwrap_or(first);
        if start < first {
            raise(
                "22023",
                format!(
                    "outbox of stream table {} keeps messages from {first} on, not {start}",
                    st.name
                ),
                None,
            );
        }
        let inserted = value(
            "INSERT INTO pgtrickle.pgt_consumer_groups (st_id, group_name, committed, consumer_role) \
             VALUES ($1::pg_catalog.int8, $2, $3::pg_catalog.int8 OPERATOR(pg_catalog.-) 1, $4::pg_catalog.oid) \
             ON CONFLICT DO NOTHING RETURNING 'x'",
            &[
                Some(st.id.to_string()),
                Some(group_name.to_string()),
                Some(start.to_string()),
                role.map(|r| r.to_string()),
            ],
        );
        if inserted.is_none() {
            raise(
                "42710",
                format!(
                    "consumer group \"{group_name}\" of stream table {} already exists",
                    st.name
                ),
                None,
            );
        }
    });
}

/// Drop consumer group `group_name`: its uncommitted messages no longer
/// hold retention back.
#[pg_extern]
fn drop_consumer_group(name: &str, group_name: &str) {
    controlled(name, |st| {
        require_outbox(st);
        let gone = value(
            "DELETE FROM pgtrickle.pgt_consumer_groups WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 \
               AND group_name OPERATOR(pg_catalog.=) $2 RETURNING 'x'",
            &[Some(st.id.to_string()), Some(group_name.to_string())],
        );
        if gone.is_none() {
            no_group(st, group_name);
        }
    });
}

/// Raise 42704 unless stream table `st` has an outbox.
pub fn require_outbox(st: &StreamTableRef) {
    if !enabled(st.id) {
        raise(
            "42704",
            format!("stream table {} has no outbox", st.name),
            Some(format!(
                "Enable it with SELECT pgtrickle.enable_outbox('{}').",
                st.name.replace('\'', "''")
            )),
        );
    }
}

/// Raise 42704 naming a consumer group that does not exist.
pub fn no_group(st: &StreamTableRef, group_name: &str) -> ! {
    raise(
        "42704",
        format!(
            "consumer group \"{group_name}\" of stream table {} does not exist",
            st.name
        ),
        None,
    )
}

/// Resolve `name` as the caller and check that the caller may consume its
/// outbox: SELECT on the stream table, and no row-level security that
/// applies to the caller (a message would bypass it).
pub fn consumer(name: &str) -> StreamTableRef {
    let me = security::caller();
    let st = resolve(name);
    let may_read = value(
        "SELECT pg_catalog.has_table_privilege($1::pg_catalog.oid, $2::pg_catalog.oid, 'SELECT')::pg_catalog.text",
        &[Some(me.to_u32().to_string()), Some(st.relid.to_string())],
    )
    .as_deref()
        == Some("true");
    if !may_read {
        raise(
            "42501",
            format!(
                "permission denied for the outbox of stream table {}",
                st.name
            ),
            Some("Consuming an outbox needs SELECT on its stream table.".into()),
        );
    }
    if security::row_security_applies(st.relid, me) {
        raise(
            "42501",
            format!(
                "row-level security applies to {} on stream table {}: its outbox would bypass it",
                security::role_name(me),
                st.name
            ),
            None,
        );
    }
    as_extension(|| {
        crate::compat::require_current_sql();
        require_outbox(&st);
    });
    st
}

/// Hold retention back until this transaction ends (it prunes under the
/// outbox row's lock): for a check of the first message kept that must
/// stay true until a new offset is committed.
pub fn lock_against_retention(id: i64) {
    run(
        "SELECT 1 FROM pgtrickle.pgt_outboxes WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 FOR SHARE",
        &[Some(id.to_string())],
    );
}

/// [`prune`], unless a refresh, a replay or a new group holds the outbox
/// row right now (the next commit or publish prunes instead).
pub fn prune_if_free(id: i64) {
    // Cheap first: is the oldest message kept droppable at all?
    let due = value(
        "SELECT 'x' FROM (SELECT m.message, m.created_at FROM pgtrickle.pgt_outbox_messages m \
                           WHERE m.st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 \
                           ORDER BY m.message LIMIT 1) f, pgtrickle.pgt_outboxes o \
          WHERE o.st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 \
            AND f.created_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) o.retention) \
            AND f.message OPERATOR(pg_catalog.<=) COALESCE( \
                (SELECT pg_catalog.min(g.committed) FROM pgtrickle.pgt_consumer_groups g \
                  WHERE g.st_id OPERATOR(pg_catalog.=) o.st_id), o.head)",
        &[Some(id.to_string())],
    );
    if due.is_none() {
        return;
    }
    let free = value(
        "SELECT 'x' FROM pgtrickle.pgt_outboxes WHERE st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 \
         FOR NO KEY UPDATE SKIP LOCKED",
        &[Some(id.to_string())],
    );
    if free.is_some() {
        prune(id);
    }
}

/// Drop messages of stream table `id` that every group has committed and
/// that are older than the outbox's retention (with no group, every
/// message older than the retention). Runs with the outbox row locked:
/// after each publish (which holds it) and each commit
/// ([`prune_if_free`]), so that a group being created or replayed is
/// never pruned ahead of.
pub fn prune(id: i64) {
    run(
        "DELETE FROM pgtrickle.pgt_outbox_messages m USING pgtrickle.pgt_outboxes o \
          WHERE o.st_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8 AND m.st_id OPERATOR(pg_catalog.=) o.st_id \
            AND m.created_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) o.retention) \
            AND m.message OPERATOR(pg_catalog.<=) COALESCE( \
                (SELECT pg_catalog.min(g.committed) FROM pgtrickle.pgt_consumer_groups g \
                  WHERE g.st_id OPERATOR(pg_catalog.=) o.st_id), o.head)",
        &[Some(id.to_string())],
    );
}

/// Every outbox and consumer group the caller owns (every one, for a
/// monitor): how far each group has committed, what is leased, and what is
/// kept.
#[pg_extern]
#[allow(clippy::type_complexity)] // pgrx needs the column list spelled out here
fn outbox_status() -> TableIterator<
    'static,
    (
        name!(stream_table, String),
        name!(group_name, Option<String>),
        name!(head, i64),
        name!(committed, Option<i64>),
        name!(pending, Option<i64>),
        name!(leased_deliveries, i64),
        name!(first_retained, i64),
        name!(retained_messages, i64),
        name!(claim_checked_messages, i64),
    ),
> {
    let me = security::caller();
    let rows = as_extension(|| {
        rows(
            "SELECT st.name, g.group_name, o.head::pg_catalog.text, g.committed::pg_catalog.text, \
                    (o.head OPERATOR(pg_catalog.-) g.committed)::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pgtrickle.pgt_outbox_leases l \
                      WHERE l.st_id OPERATOR(pg_catalog.=) o.st_id AND l.group_name OPERATOR(pg_catalog.=) g.group_name \
                        AND l.expires_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp())::pg_catalog.text, \
                    COALESCE((SELECT pg_catalog.min(m.message) FROM pgtrickle.pgt_outbox_messages m \
                               WHERE m.st_id OPERATOR(pg_catalog.=) o.st_id), o.head OPERATOR(pg_catalog.+) 1)::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pgtrickle.pgt_outbox_messages m \
                      WHERE m.st_id OPERATOR(pg_catalog.=) o.st_id)::pg_catalog.text, \
                    (SELECT pg_catalog.count(*) FROM pgtrickle.pgt_outbox_messages m \
                      WHERE m.st_id OPERATOR(pg_catalog.=) o.st_id AND m.envelope OPERATOR(pg_catalog.?) 'claim_check')::pg_catalog.text, \
                    pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text, c.relowner::pg_catalog.text \
               FROM pgtrickle.pgt_outboxes o \
               JOIN pgtrickle.pgt_stream_tables st ON st.id OPERATOR(pg_catalog.=) o.st_id \
               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) st.relid \
               LEFT JOIN pgtrickle.pgt_consumer_groups g ON g.st_id OPERATOR(pg_catalog.=) o.st_id \
              ORDER BY st.name, g.group_name",
            &[],
        )
    });
    let monitor = security::is_monitor(me);
    let n = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
    let out: Vec<_> = rows
        .into_iter()
        .filter(|r| {
            monitor
                || r[10]
                    .as_deref()
                    .and_then(|o| o.parse::<u32>().ok())
                    .is_some_and(|o| security::has_privs_of(me, pg_sys::Oid::from(o)))
        })
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone(),
                n(&r[2]).unwrap_or(0),
                n(&r[3]),
                n(&r[4]),
                n(&r[5]).unwrap_or(0),
                n(&r[6]).unwrap_or(0),
                n(&r[7]).unwrap_or(0),
                n(&r[8]).unwrap_or(0),
            )
        })
        .collect();
    TableIterator::new(out)
}
