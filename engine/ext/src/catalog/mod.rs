//! Looking stream tables up in the catalog: by name as the caller wrote it
//! ([`resolve`]), with the ownership check every control function makes
//! ([`controlled`]), and the owner a stream table's statements run as
//! ([`owner_of`]), and a stream table's row as a refresh reads it, typed
//! ([`StreamTableRow`]). Every module that needs a stream table's identity
//! comes here, so none of them needs the SQL API module.
//!
//! [`stream_tables`] reads and writes a stream table's own row: what a
//! refresh reads, and what creation, a re-plan and regeneration store.

pub mod stream_tables;

pub use stream_tables::{lock_for_refresh, StreamTableRow};

use pgrx::prelude::*;

use crate::security::{self, as_extension, Owner};
use crate::spi::{raise, row, value};

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
    let Some(relid) = value(
        "SELECT pg_catalog.to_regclass($1::pg_catalog.text)::pg_catalog.oid::pg_catalog.text",
        &[Some(name.to_string())],
    ) else {
        raise(
            "42P01",
            format!("stream table \"{name}\" does not exist"),
            None,
        )
    };
    let r = as_extension(|| {
        row(
            "SELECT st.id::text, st.name, c.relowner::text FROM pgtrickle.pgt_stream_tables st \
             JOIN pg_class c ON c.oid = st.relid WHERE st.relid = $1::text::oid",
            &[Some(relid.clone())],
        )
    });
    let Some(r) = r else {
        raise("42809", format!("\"{name}\" is not a stream table"), None)
    };
    StreamTableRef {
        id: r[0].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0),
        relid: relid.parse().unwrap_or(0),
        name: r[1].clone().unwrap_or_default(),
        owner: pg_sys::Oid::from(
            r[2].as_deref()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        ),
    }
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

/// The owner and recorded search_path of stream table `id`.
pub fn owner_of(id: i64) -> Owner {
    let r = row(
        "SELECT c.relowner::text, st.search_path FROM pgtrickle.pgt_stream_tables st \
         JOIN pg_class c ON c.oid = st.relid WHERE st.id = $1::text::bigint",
        &[Some(id.to_string())],
    )
    .unwrap_or_else(|| raise("42P01", format!("stream table {id} does not exist"), None));
    Owner {
        role: pg_sys::Oid::from(
            r[0].as_deref()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0),
        ),
        search_path: r[1].clone().unwrap_or_default(),
    }
}

impl StreamTableRef {
    /// The storage relation as SQL text (`regclass` output, quoted as
    /// needed, qualified unless visible on the current search_path; the
    /// statement is fully qualified, so any path may be current).
    pub fn name_sql(&self) -> String {
        value(
            "SELECT $1::pg_catalog.text::pg_catalog.oid::pg_catalog.regclass::pg_catalog.text",
            &[Some(self.relid.to_string())],
        )
        .unwrap_or_else(|| self.name.clone())
    }
}
