//! The extension's catalog tables, and the only place that runs SQL on
//! them. One file per table, each with small typed functions named for
//! what they do, so no other module writes a statement on a catalog table
//! or reads a catalog row by position:
//!
//! - [`stream_tables`]: `pgt_stream_tables`, a stream table's own row
//!   (what a refresh reads, what creation, a re-plan and regeneration
//!   store, holds, schedules, errors, status);
//! - [`sources`]: `pgt_sources`, which relations each stream table reads,
//!   which of them it captures, and how far it consumed their changes;
//! - [`change_buffers`]: `pgt_change_buffers`, one row per captured
//!   source (its buffer, capture state, backpressure, members);
//! - [`history`]: `pgt_refresh_history`, what every refresh did.
//!
//! A statement joining several tables lives with the table it is mainly
//! about. Rows are decoded once, here, into structs with typed fields.
//! The catalog sits below every other module: it uses only the SPI layer,
//! `security` and `compat`, and takes what it stores as plain values
//! (`stream_tables::StoredPlan`), so no module it serves is imported here.
//!
//! This module itself finds stream tables: by name as the caller wrote it
//! ([`resolve`]), with the ownership check every control function makes
//! ([`controlled`]), and the owner a stream table's statements run as
//! ([`owner_of`]). Every module that needs a stream table's identity comes
//! here, so none of them needs the SQL API module.

pub mod change_buffers;
pub mod direct;
pub mod history;
pub mod snapshots;
pub mod sources;
pub mod stream_tables;
pub mod wal_capture;

pub use stream_tables::{lock_for_refresh, StreamTableRow};

use pgrx::prelude::*;

use crate::security::{self, as_extension, Owner};
use crate::spi::{raise, Row};

/// `WHERE` clause term: the stream table `st` is owned by role `$1` (or a
/// role `$1` is a member of).
const OWNED_BY_CALLER: &str =
    "pg_has_role($1::text::oid, (SELECT c.relowner FROM pg_class c WHERE c.oid = st.relid), 'USAGE')";

/// A catalog row as the SPI layer returns it (every column text, NULL as
/// `None`), decoded by position here and nowhere else.
struct Fields(Row);

impl Fields {
    /// Column `i` as text, if not NULL.
    fn opt(&self, i: usize) -> Option<String> {
        self.0.get(i).cloned().flatten()
    }

    /// Column `i` as text, NULL as empty.
    fn text(&self, i: usize) -> String {
        self.opt(i).unwrap_or_default()
    }

    /// Column `i` as a boolean (`true` only for SQL true).
    fn flag(&self, i: usize) -> bool {
        self.0.get(i).and_then(Option::as_deref) == Some("true")
    }

    /// Column `i` parsed, if not NULL and parsable.
    fn parsed<T: std::str::FromStr>(&self, i: usize) -> Option<T> {
        self.0.get(i).and_then(Option::as_deref)?.parse().ok()
    }

    /// Column `i` parsed, NULL or unparsable as the type's default (0).
    fn num<T: std::str::FromStr + Default>(&self, i: usize) -> T {
        self.parsed(i).unwrap_or_default()
    }

    /// Column `i` as a role oid (0 when NULL).
    fn oid(&self, i: usize) -> pg_sys::Oid {
        pg_sys::Oid::from(self.num::<u32>(i))
    }
}

/// The rows of pg_trickle's catalog table `table` whose key columns equal
/// `keys`, read by index without SQL (see [`direct`]), each with
/// `columns` as text.
fn by_key(
    table: &std::ffi::CStr,
    keys: &[(&std::ffi::CStr, direct::Key)],
    columns: &[&std::ffi::CStr],
) -> Vec<Fields> {
    direct::lookup(c"pgtrickle", table, keys, columns)
        .into_iter()
        .map(Fields)
        .collect()
}

/// Run a statement and decode every row.
fn decoded(sql: &str, args: &[Option<String>]) -> Vec<Fields> {
    crate::spi::rows(sql, args)
        .into_iter()
        .map(Fields)
        .collect()
}

/// Run a statement and decode its first row, if any.
fn decoded_row(sql: &str, args: &[Option<String>]) -> Option<Fields> {
    crate::spi::row(sql, args).map(Fields)
}

/// `v` as a statement argument.
fn arg(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Oids as an `oid[]` literal argument (`{1,2,3}`).
fn oid_array(oids: &[u32]) -> Option<String> {
    let list: Vec<String> = oids.iter().map(u32::to_string).collect();
    Some(format!("{{{}}}", list.join(",")))
}

/// A stream table's catalog identity.
pub struct StreamTableRef {
    /// `pgt_stream_tables.id`.
    pub id: i64,
    /// Storage relation oid.
    pub relid: u32,
    /// Name as recorded.
    pub name: String,
    /// The owner of its storage table, who owns the stream table.
    pub owner: pg_sys::Oid,
}

/// Find a stream table by (possibly qualified) name, resolved under the
/// caller's search_path as the caller wrote it, or raise. Call it before
/// switching to the extension (see `security`).
pub fn resolve(name: &str) -> StreamTableRef {
    let Some(relid) = direct::to_regclass(name) else {
        raise(
            "42P01",
            format!("stream table \"{name}\" does not exist"),
            None,
        )
    };
    as_extension(|| stream_tables::by_relid(relid))
        .unwrap_or_else(|| raise("42809", format!("\"{name}\" is not a stream table"), None))
}

impl StreamTableRef {
    /// Raise 42501 unless `me` owns it (or is a member of its owner).
    pub fn require_owner(&self, me: pg_sys::Oid) {
        security::require_owner(me, self.owner, &format!("stream table {}", self.name));
    }

    /// Raise 42501 unless `me` owns it or may monitor every stream table
    /// (`pg_read_all_stats`): for reading its definition and history.
    pub fn require_reader(&self, me: pg_sys::Oid) {
        if !security::is_monitor(me) {
            self.require_owner(me);
        }
    }
}

/// Look a stream table up as the caller, then run `f` as the extension
/// once the caller is known to own it: the shape of every control function.
pub fn controlled<R>(name: &str, f: impl FnOnce(&StreamTableRef) -> R) -> R {
    let me = security::caller();
    let st = resolve(name);
    as_extension(|| {
        crate::compat::require_current_sql();
        st.require_owner(me);
        f(&st)
    })
}

/// The owner and recorded search_path of stream table `id`, or raise.
pub fn owner_of(id: i64) -> Owner {
    stream_tables::owner(id)
        .unwrap_or_else(|| raise("42P01", format!("stream table {id} does not exist"), None))
}

impl StreamTableRef {
    /// The storage relation as SQL text (`regclass` output, quoted as
    /// needed, qualified unless visible on the current search_path; the
    /// statement is fully qualified, so any path may be current).
    pub fn name_sql(&self) -> String {
        crate::spi::relation_name(self.relid).unwrap_or_else(|| self.name.clone())
    }
}
