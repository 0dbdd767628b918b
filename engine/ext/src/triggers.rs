//! The triggers capture installs on a source and on its members
//! (partitions and inheritance children, every level), and keeping them in
//! step when a source's structure changes.
//!
//! On the source itself: `pgt_capture` (rows into its change buffer; on a
//! partitioned table named `pgt_capture_<oid>`, and PostgreSQL clones it
//! onto every partition, present and future), `pgt_truncate`, `pgt_guard`
//! (backpressure) and `pgt_wake`. On each member, named after the source so
//! that a member may be a source of its own too: `pgt_truncate_<oid>` and
//! `pgt_wake_<oid>` (statement triggers are not cloned, and a TRUNCATE or a
//! write of a partition does not fire its parent's), and, on inheritance
//! children (which, unlike partitions, get no clones), `pgt_capture_<oid>`.
//! Capture, TRUNCATE and wake triggers fire in every
//! `session_replication_role` (`ENABLE ALWAYS`), so that rows written by a
//! logical replication apply worker are captured like any other.
//! The members a source had when its triggers were last set are recorded in
//! `pgt_change_buffers.members`, so that a member that left (DETACH, NO
//! INHERIT, DROP) is noticed even after it is gone from `pg_inherits`.

use std::cell::Cell;

use pg_trickle_core::catalog::SourceKind;

use crate::catalog::change_buffers;
use crate::spi::{first_column, run, value};

thread_local! {
    /// How many of pg_trickle's own trigger changes are running here.
    static OWN_DDL: Cell<u32> = const { Cell::new(0) };
}

/// Marks pg_trickle's own `CREATE TRIGGER` / `ALTER TABLE ... TRIGGER`
/// statements, whose `ddl_command_end` events are not structure changes.
pub struct OwnDdl;

impl OwnDdl {
    /// Mark the statements run until the value is dropped.
    pub fn begin() -> OwnDdl {
        OWN_DDL.with(|c| c.set(c.get() + 1));
        OwnDdl
    }

    /// Whether one of pg_trickle's own trigger changes is running.
    pub fn running() -> bool {
        OWN_DDL.with(Cell::get) > 0
    }
}

impl Drop for OwnDdl {
    fn drop(&mut self) {
        OWN_DDL.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// The TriggerData of a C trigger function's call, or 39P01 naming
/// `function` when it was not called as a trigger.
///
/// # Safety
/// `fcinfo` is the valid call info PostgreSQL's function manager passed.
pub unsafe fn trigger_data<'a>(
    fcinfo: pgrx::pg_sys::FunctionCallInfo,
    function: &str,
) -> &'a pgrx::pg_sys::TriggerData {
    // SAFETY: caller; the context is checked to be TriggerData before it
    // is read as one.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pgrx::pg_sys::NodeTag::T_TriggerData {
            crate::spi::raise(
                "39P01",
                format!("{function} may only run as a trigger"),
                None,
            );
        }
        &*(context as *const pgrx::pg_sys::TriggerData)
    }
}

/// The name of a source's own row capture trigger.
pub fn capture_trigger(relid: u32) -> String {
    if is_partitioned(relid) {
        format!("pgt_capture_{relid}")
    } else {
        "pgt_capture".into()
    }
}

fn is_partitioned(relid: u32) -> bool {
    value(
        "SELECT (relkind = 'p')::text FROM pg_class WHERE oid = $1::text::oid",
        &[Some(relid.to_string())],
    )
    .as_deref()
        == Some("true")
}

/// `relid` as SQL text, if the relation still exists.
fn relation_sql(relid: u32) -> Option<String> {
    value(
        "SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = $1::text::oid",
        &[Some(relid.to_string())],
    )
}

/// Install the source's own triggers (its buffer exists).
pub fn install_on_source(relid: u32, kind: SourceKind) {
    // A Citus table's changes are captured on its nodes only: Citus runs
    // no trigger of the coordinator's for writes to its shards.
    if crate::remote_capture::citus::is_citus_table(relid) {
        return;
    }
    let _own = OwnDdl::begin();
    let Some(table) = relation_sql(relid) else {
        return;
    };
    let capture = if kind == SourceKind::PartitionedTable {
        format!("pgt_capture_{relid}")
    } else {
        "pgt_capture".into()
    };
    for sql in [
        format!(
            "CREATE TRIGGER {capture} AFTER INSERT OR UPDATE OR DELETE ON {table} \
             FOR EACH ROW EXECUTE FUNCTION pgtrickle._capture_row('{relid}')"
        ),
        format!(
            "CREATE TRIGGER pgt_truncate AFTER TRUNCATE ON {table} \
             FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.on_source_truncate()"
        ),
        format!(
            "CREATE TRIGGER pgt_guard BEFORE INSERT OR UPDATE OR DELETE ON {table} \
             FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.guard_writes()"
        ),
        format!(
            "CREATE TRIGGER pgt_wake AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} \
             FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.wake_on_commit()"
        ),
    ] {
        run(&sql, &[]);
    }
    for name in [capture.as_str(), "pgt_truncate", "pgt_wake"] {
        always(&table, name);
    }
}

/// Fire trigger `name` whatever `session_replication_role` is: writes by a
/// logical replication apply worker (which runs as `replica`) must be
/// captured too. A partitioned table passes this to its partitions.
fn always(table: &str, name: &str) {
    run(
        &format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}"),
        &[],
    );
}

/// Drop those of `names` that `relid` has as triggers of its own (not
/// clones from a parent), quietly.
fn drop_named(relid: u32, names: &[String]) {
    let _own = OwnDdl::begin();
    let Some(table) = relation_sql(relid) else {
        return;
    };
    let present: Vec<String> = first_column(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::text::oid AND tgparentid = 0 \
         AND tgname = ANY ($2::text[]) ORDER BY 1",
        &[
            Some(relid.to_string()),
            Some(format!("{{{}}}", names.join(","))),
        ],
    );
    for name in present {
        run(&format!("DROP TRIGGER {name} ON {table}"), &[]);
    }
}

/// Drop the source's own triggers (if it still exists).
pub fn drop_on_source(relid: u32) {
    drop_named(
        relid,
        &[
            "pgt_capture".to_string(),
            format!("pgt_capture_{relid}"),
            "pgt_truncate".into(),
            "pgt_guard".into(),
            "pgt_wake".into(),
        ],
    );
}

/// Install source `source`'s triggers on its member `member`.
fn install_on_member(source: u32, member: u32) {
    let _own = OwnDdl::begin();
    let Some(table) = relation_sql(member) else {
        return;
    };
    // A partition gets its row trigger by cloning from its parent; an
    // inheritance child (not a partition) needs one of its own.
    let needs_capture = value(
        "SELECT (NOT relispartition AND relkind IN ('r', 'p'))::text FROM pg_class WHERE oid = $1::text::oid",
        &[Some(member.to_string())],
    )
    .as_deref()
        == Some("true");
    if needs_capture {
        run(
            &format!(
                "CREATE TRIGGER pgt_capture_{source} AFTER INSERT OR UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION pgtrickle._capture_row('{source}')"
            ),
            &[],
        );
        always(&table, &format!("pgt_capture_{source}"));
    }
    // A foreign table takes no TRUNCATE trigger; a TRUNCATE of a shard
    // reaches its node's slot, whose drain marks the readers for reinit.
    let foreign = value(
        "SELECT (relkind = 'f')::text FROM pg_class WHERE oid = $1::text::oid",
        &[Some(member.to_string())],
    )
    .as_deref()
        == Some("true");
    if !foreign {
        run(
            &format!(
                "CREATE TRIGGER pgt_truncate_{source} AFTER TRUNCATE ON {table} \
                 FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.on_source_truncate()"
            ),
            &[],
        );
        always(&table, &format!("pgt_truncate_{source}"));
    }
    let events = if foreign {
        "INSERT OR UPDATE OR DELETE"
    } else {
        "INSERT OR UPDATE OR DELETE OR TRUNCATE"
    };
    run(
        &format!(
            "CREATE TRIGGER pgt_wake_{source} AFTER {events} ON {table} \
             FOR EACH STATEMENT EXECUTE FUNCTION pgtrickle.wake_on_commit()"
        ),
        &[],
    );
    always(&table, &format!("pgt_wake_{source}"));
}

/// Drop source `source`'s triggers from `member` (if it still exists; a
/// detached partition loses its cloned row trigger by itself).
fn drop_on_member(source: u32, member: u32) {
    drop_named(
        member,
        &["capture", "truncate", "wake"].map(|kind| format!("pgt_{kind}_{source}")),
    );
}

/// How a source's members changed since they were recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MembersChange {
    /// Members that joined (created, attached, inheriting).
    pub added: Vec<u32>,
    /// Members that left (detached, no longer inheriting, dropped).
    pub removed: Vec<u32>,
}

impl MembersChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Bring `source`'s member triggers and recorded members up to date.
pub fn sync_members(source: u32) -> MembersChange {
    let now = crate::sources::members(source);
    let before = change_buffers::members(source);
    let change = MembersChange {
        added: now
            .iter()
            .copied()
            .filter(|m| !before.contains(m))
            .collect(),
        removed: before
            .iter()
            .copied()
            .filter(|m| !now.contains(m))
            .collect(),
    };
    for m in &change.removed {
        drop_on_member(source, *m);
    }
    for m in &change.added {
        install_on_member(source, *m);
    }
    if !change.is_empty() {
        change_buffers::record_members(source, &now);
    }
    change
}

/// Drop every member trigger of `source` and forget its members.
pub fn drop_members(source: u32) {
    for m in change_buffers::members(source) {
        drop_on_member(source, m);
    }
}

/// Enable or disable the row capture of `source` on itself and its
/// inheritance children (a partitioned table's clones follow it).
pub fn set_capture_enabled(source: u32, enabled: bool) {
    let _own = OwnDdl::begin();
    let action = if enabled { "ENABLE ALWAYS" } else { "DISABLE" };
    if let Some(table) = relation_sql(source) {
        run(
            &format!(
                "ALTER TABLE {table} {action} TRIGGER {}",
                capture_trigger(source)
            ),
            &[],
        );
    }
    for m in change_buffers::members(source) {
        let Some(table) = relation_sql(m) else {
            continue;
        };
        let has = value(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::text::oid AND tgname = $2 \
             AND tgparentid = 0)::text",
            &[Some(m.to_string()), Some(format!("pgt_capture_{source}"))],
        )
        .as_deref()
            == Some("true");
        if has {
            run(
                &format!("ALTER TABLE {table} {action} TRIGGER pgt_capture_{source}"),
                &[],
            );
        }
    }
}
