//! The SQL API in schema `pgtrickle`: create, alter, drop and refresh
//! stream tables. Each function validates its input, raises a clear error
//! with a SQLSTATE, and runs in the caller's transaction, so a failure leaves
//! nothing half-created.

use std::ffi::CString;

use pg_trickle_core::schedule::parse_schedule;
use pg_trickle_core::sql::split_qualified_name;
use pgrx::prelude::*;
use pgrx::PgList;

use crate::capture;
use crate::catalog::stream_tables::{self, NewStreamTable};
use crate::catalog::{controlled, owner_of, sources};
use crate::planning;
use crate::refresh::{self, Initiator};
use crate::replan::{parse_mode, record_sources, replan};
use crate::security::{self, as_extension, Owner};
use crate::spi::{qi, raise, run, value};

/// `None` for a manual-only schedule, else the schedule and its seconds.
fn parse_schedule_arg(schedule: Option<&str>) -> Option<(String, u64)> {
    let s = schedule?;
    if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("manual") {
        return None;
    }
    let secs = parse_schedule(s).unwrap_or_else(|e| raise(e.sqlstate(), e.to_string(), None));
    Some((s.trim().to_string(), secs))
}

/// Raise unless `query` is exactly one plain SELECT, using PostgreSQL's own parser.
fn check_single_select(query: &str) {
    let c = CString::new(query)
        .unwrap_or_else(|_| raise("22021", "defining query contains a NUL byte", None));
    unsafe {
        let list = pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let list = PgList::<pg_sys::RawStmt>::from_pg(list);
        let ok = list.len() == 1
            && list.get_ptr(0).is_some_and(|raw| {
                let node = (*raw).stmt;
                !node.is_null()
                    && (*node).type_ == pg_sys::NodeTag::T_SelectStmt
                    && (*(node as *mut pg_sys::SelectStmt)).intoClause.is_null()
            });
        if !ok {
            raise(
                "42601",
                "the defining query of a stream table must be exactly one SELECT statement",
                None,
            );
        }
    }
}

/// Create a stream table named `name` holding the result of `query`,
/// owned by the caller.
#[pg_extern]
fn create_stream_table(
    name: &str,
    query: &str,
    schedule: default!(Option<&str>, "NULL"),
    refresh_mode: default!(&str, "'AUTO'"),
) {
    // What the caller's session says, read before switching to the extension.
    let owner = Owner {
        role: security::caller(),
        search_path: value("SELECT pg_catalog.current_setting('search_path')", &[])
            .unwrap_or_default(),
    };
    let current_schema = value("SELECT pg_catalog.current_schema()::pg_catalog.text", &[]);
    as_extension(|| create(name, query, schedule, refresh_mode, &owner, current_schema));
}

fn create(
    name: &str,
    query: &str,
    schedule: Option<&str>,
    refresh_mode: &str,
    owner: &Owner,
    current_schema: Option<String>,
) {
    crate::compat::require_current_sql();
    let requested = parse_mode(refresh_mode);
    let schedule = parse_schedule_arg(schedule);
    let query = query.trim().trim_end_matches(';').trim_end();
    let Some((schema, rel)) = split_qualified_name(name) else {
        raise(
            "42602",
            format!("invalid stream table name \"{name}\""),
            None,
        )
    };
    let schema = match schema {
        Some(s) => s,
        None => current_schema
            .unwrap_or_else(|| raise("3F000", "no schema has been selected to create in", None)),
    };
    if value(
        "SELECT oid::text FROM pg_namespace WHERE nspname = $1",
        &[Some(schema.clone())],
    )
    .is_none()
    {
        raise("3F000", format!("schema \"{schema}\" does not exist"), None);
    }
    let storage = format!("{}.{}", qi(&schema), qi(&rel));
    if value("SELECT to_regclass($1)::text", &[Some(storage.clone())]).is_some() {
        raise(
            "42P07",
            format!("relation \"{storage}\" already exists"),
            None,
        );
    }
    check_single_select(query);

    // PostgreSQL validates the query and fixes the column types; the
    // storage is created by, and belongs to, the caller.
    owner.run(|| {
        run(
            &format!("CREATE TABLE {storage} AS {query} WITH NO DATA"),
            &[],
        )
    });
    let relid: u32 = value(
        "SELECT to_regclass($1)::oid::text",
        &[Some(storage.clone())],
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| raise("XX000", "storage table vanished", None));
    if value(
        "SELECT count(*)::text FROM pg_attribute WHERE attrelid = $1::text::oid AND attnum > 0 AND NOT attisdropped",
        &[Some(relid.to_string())],
    )
    .as_deref()
        == Some("0")
    {
        raise(
            "0A000",
            format!("stream table {storage} would have no columns: its defining query selects none"),
            Some("Select at least one column.".into()),
        );
    }
    refuse_temporary_sources(&storage, query, owner);
    if let Some(bad) = value(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::oid AND attnum > 0 \
         AND attname LIKE '\\_\\_pgt\\_%' LIMIT 1",
        &[Some(relid.to_string())],
    ) {
        raise(
            "42939",
            format!(
                "column name \"{bad}\" is reserved: names starting with __pgt_ are pg_trickle's"
            ),
            Some("Rename the column with an alias in the defining query.".into()),
        );
    }
    owner.run(|| {
        run(
            &format!("ALTER TABLE {storage} ADD COLUMN __pgt_row_id bigint"),
            &[],
        );
        run(&format!("CREATE INDEX ON {storage} (__pgt_row_id)"), &[]);
        // Nothing is captured before the owner is known to read everything
        // the query reads (CREATE TABLE AS ... WITH NO DATA checks nothing).
        crate::refresh::require_read_privileges(query);
    });

    let planned = planning::plan_adding_support(&storage, query, requested, relid, &storage, owner);
    let id = stream_tables::insert(
        &NewStreamTable {
            relid,
            name: &storage,
            query,
            requested,
            schedule: schedule.clone(),
            search_path: &owner.search_path,
        },
        &planned.stored(),
    );
    record_sources(id, &planned);
    crate::readonly::install(&storage);
    refresh::refresh_by_id(id, Initiator::Create, false);
}

/// Refuse (0A000) a defining query that names a temporary table: the
/// scheduler and every other session see a different one, or none.
fn refuse_temporary_sources(storage: &str, query: &str, owner: &Owner) {
    let Ok(refs) = pg_trickle_core::analyze::referenced_tables(query) else {
        return;
    };
    for written in &refs.tables {
        let Some(relid) = planning::resolve_relation(owner, written) else {
            continue;
        };
        if value(
            "SELECT relpersistence::text FROM pg_class WHERE oid = $1::text::oid",
            &[Some(relid.to_string())],
        )
        .as_deref()
            == Some("t")
        {
            raise(
                "0A000",
                format!(
                    "stream table {storage} cannot read temporary table {written}: other sessions and the scheduler cannot see it"
                ),
                Some("Read a permanent (or unlogged) table instead.".into()),
            );
        }
    }
}

/// Refresh a stream table now (DIFFERENTIAL when possible, else FULL).
#[pg_extern]
fn refresh_stream_table(name: &str) {
    controlled(name, |st| {
        refresh::refresh_by_id(st.id, Initiator::Manual, false);
    });
}

/// Drop a stream table, its storage and any capture no other stream table needs.
#[pg_extern]
fn drop_stream_table(name: &str) {
    controlled(name, |st| {
        let names = sources::reader_names(st.relid);
        if !names.is_empty() {
            raise(
                "2BP01",
                format!(
                    "cannot drop stream table {}: stream table {} reads it",
                    st.name,
                    names.join(", ")
                ),
                Some("Drop the dependent stream tables first.".into()),
            );
        }
        forget(st.id);
        run(&format!("DROP TABLE {}", st.name_sql()), &[]);
    });
}

/// Remove a stream table's catalog rows and unused capture (not its storage).
fn forget(id: i64) {
    let read = sources::delete_of(id);
    stream_tables::delete(id);
    for relid in read {
        capture::drop_capture_if_unused(relid);
    }
}

/// Recompute a stream table from scratch now (FULL), then go on
/// DIFFERENTIALLY: the repair for a stream table that drifted from its
/// query (for example after its read-only trigger was disabled), and the
/// way a stream table created before 0.40.0 gains the support columns of
/// algebraic maintenance. It is planned again first. Since 0.40.0.
#[pg_extern]
fn reinitialize_stream_table(name: &str) {
    controlled(name, |st| {
        // A stream table created before 0.40.0 gains the support columns
        // of algebraic maintenance here (see `planning::plan_adding_support`).
        replan(st.id, None, "reinitialize_stream_table()");
        refresh::refresh_by_id(st.id, Initiator::Manual, false);
    });
}

/// Called by the event triggers after DDL that may change the partitions or
/// inheritance children of captured sources (`objids` are the relations the
/// command touched or dropped, `tag` its command tag).
#[pg_extern]
fn _structure_changed(objids: Vec<pg_sys::Oid>, tag: &str) {
    if crate::triggers::OwnDdl::running() {
        return;
    }
    let objids: Vec<u32> = objids.iter().map(|o| o.to_u32()).collect();
    as_extension(|| structure_changed(&objids, tag));
}

/// See [`_structure_changed`]: bring member triggers up to date and, where
/// rows may have appeared or vanished without a captured change (ATTACH,
/// DETACH, INHERIT, NO INHERIT, DROP of a member), mark every reader for
/// reinitialisation; a member that cannot be captured exactly (foreign,
/// unlogged) re-plans the readers (AUTO falls back to FULL, DIFFERENTIAL
/// refuses the command).
fn structure_changed(objids: &[u32], tag: &str) {
    if objids.is_empty() {
        return;
    }
    for source in crate::catalog::change_buffers::sources_above(objids) {
        let change = crate::triggers::sync_members(source);
        if change.is_empty() {
            continue;
        }
        let Some(table) = planning::source_by_oid(source) else {
            continue;
        };
        let readers = sources::capturing_reader_ids(source);
        let what = format!(
            "{tag} changing the partitions or children of source {}",
            table.qualified()
        );
        if table.capture_problem.is_some() {
            for id in readers {
                replan(id, None, &what);
            }
        } else if tag != "CREATE TABLE" || !change.removed.is_empty() {
            for id in readers {
                stream_tables::mark_for_reinit(id, &what);
            }
        }
    }
}

/// Called by the `sql_drop` event trigger when a stream table's storage is dropped directly.
#[pg_extern]
fn _forget_stream_table(id: i64) {
    as_extension(|| forget(id));
}

/// Change a stream table's schedule (`'manual'` clears it) or refresh mode.
#[pg_extern]
fn alter_stream_table(
    name: &str,
    schedule: default!(Option<&str>, "NULL"),
    refresh_mode: default!(Option<&str>, "NULL"),
) {
    controlled(name, |st| {
        // The sources, then the row (see refresh_locks): a mode change may
        // drop a source's capture trigger, which needs the source alone.
        if crate::refresh_locks::lock_for_refresh_in_order(st.id, true).is_none() {
            raise(
                "42P01",
                format!("stream table \"{name}\" does not exist"),
                None,
            );
        }
        if let Some(s) = schedule {
            stream_tables::set_schedule(st.id, parse_schedule_arg(Some(s)).as_ref());
        }
        if let Some(mode) = refresh_mode {
            replan(st.id, Some(parse_mode(mode)), "a refresh mode change");
        }
    });
}

/// Called by the `ddl_command_end` event trigger after ALTER TABLE of a source.
/// Renames are refused (defining queries name the source). A column change
/// rebuilds the capture (dropping buffered changes) and re-plans every reader,
/// marking it for reinitialisation; a change that breaks a reader's query is
/// refused with the reason.
#[pg_extern]
fn _source_altered(relid: pg_sys::Oid) {
    if crate::triggers::OwnDdl::running() {
        return;
    }
    as_extension(|| source_altered(relid.to_u32()));
}

fn source_altered(relid: u32) {
    let Some(source) = planning::source_by_oid(relid) else {
        return;
    };
    let current = source.qualified();
    let renamed = sources::renamed(relid, &current);
    if let Some(first) = renamed.first() {
        let readers: Vec<&str> = renamed.iter().map(|r| r.reader.as_str()).collect();
        raise(
            "0A000",
            format!(
                "cannot rename or move {}: the defining query of stream table {} names it",
                first.recorded_name,
                readers.join(", ")
            ),
            Some("Drop the stream tables that read it first.".into()),
        );
    }
    if !capture::columns_changed(relid) {
        // Row-level security switched on (or forced) for a reader's owner,
        // or the table became unlogged: the change buffer would no longer
        // be exact, so re-plan (AUTO falls back to FULL; DIFFERENTIAL
        // refuses the ALTER).
        let problem = source.capture_problem.clone();
        for id in sources::capturing_reader_ids(relid) {
            if let Some(p) = &problem {
                replan(id, None, &format!("ALTER TABLE of source {current} ({p})"));
            } else if security::row_security_applies(relid, owner_of(id).role) {
                replan(id, None, &format!("row-level security on source {current}"));
            }
        }
        return;
    }
    capture::drop_capture(relid);
    capture::ensure_capture(&source);
    for id in sources::reader_ids(relid) {
        replan(id, None, &format!("ALTER TABLE of source {current}"));
    }
}
