//! pg_trickle: stream tables kept fresh by DIFFERENTIAL or FULL refresh.
//!
//! This crate is the thin layer inside PostgreSQL: the SQL API
//! ([`api`]), trigger change capture ([`capture`], [`triggers`], members
//! of partitioned and inheritance sources in [`sources`]), the refresh
//! executor ([`refresh`]) with its analysis of the query against the
//! catalog ([`planning`]) and the statement specialised to the changed
//! sources ([`specialise`]), the scheduler background worker
//! ([`scheduler`]) and the commit-time wake that spares it its poll
//! ([`wake`]), hold, discard and backpressure ([`operations`]), status and
//! explain ([`status`]), refresh spans exported over OTLP
//! ([`telemetry`]), read-only stream tables ([`readonly`]),
//! dependencies on sources ([`depend`]), settings ([`gucs`]) and retired
//! symbols ([`compat`]). Every statement on the catalog tables lives in
//! [`catalog`], which returns typed rows; every module finds a stream
//! table there and re-plans one through [`replan`], so none depends on the
//! SQL API module; [`spi`] is the layer every statement goes through.
//! Who runs what (caller, extension owner, stream table owner) is decided
//! in [`security`] and [`buffer_access`]; docs/SECURITY.md has the model.
//! Query analysis and SQL generation live in `pg_trickle_core`, which
//! needs no server.

use pgrx::prelude::*;

pub mod aggregates;
pub mod api;
pub mod auto_choice;
pub mod buffer_access;
pub mod capture;
pub mod capture_row;
pub mod catalog;
pub mod column_types;
pub mod compat;
pub mod depend;
pub mod extension_drop;
pub mod gucs;
pub mod inbox;
pub mod operations;
pub mod outbox;
pub mod planning;
pub mod readonly;
pub mod refresh;
pub mod refresh_locks;
pub mod regenerate;
pub mod remote_capture;
pub mod replan;
pub mod scheduler;
pub mod security;
pub mod snapshot;
pub mod sources;
pub mod specialise;
pub mod spi;
pub mod status;
pub mod telemetry;
pub mod triggers;
pub mod wake;
pub mod wal_capture;
pub mod write_guard;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("catalog.sql", name = "catalog", bootstrap);
extension_sql_file!("privileges.sql", name = "privileges", finalize);

/// Library load: register settings and, when preloaded, the scheduler.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::register();
    buffer_access::install();
    extension_drop::install();
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        wake::init_shmem();
        telemetry::queue::init_shmem();
        scheduler::register_worker();
        telemetry::worker::register_worker();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    // pgrx needs the test module inline; its body lives in its own file.
    include!("pg_tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    /// One-off set-up before the test server starts.
    pub fn setup(_options: Vec<&str>) {}

    /// postgresql.conf settings for the test server.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_trickle'"]
    }
}
