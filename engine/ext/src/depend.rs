//! Stream tables depend on the relations they read, as a materialized view
//! does: the dependency is recorded in `pg_depend`, so PostgreSQL itself
//! refuses `DROP TABLE` of a source while a stream table reads it (naming
//! the stream table, SQLSTATE 2BP01), and `DROP ... CASCADE` drops the
//! stream tables with it (the `sql_drop` event trigger then forgets them
//! and their capture).

use pgrx::pg_sys;

fn address(relid: u32) -> pg_sys::ObjectAddress {
    pg_sys::ObjectAddress {
        classId: pg_sys::RelationRelationId,
        objectId: pg_sys::Oid::from(relid),
        objectSubId: 0,
    }
}

/// Make `storage` depend on exactly `sources` among `candidates ∪
/// sources` (dependencies on `candidates` no longer read are removed).
pub fn set(storage: u32, sources: &[u32], candidates: &[u32]) {
    let depender = address(storage);
    let mut all: Vec<u32> = candidates.iter().chain(sources).copied().collect();
    all.sort_unstable();
    all.dedup();
    for relid in &all {
        // SAFETY: deletes pg_depend rows of one (depender, referenced) pair.
        unsafe {
            pg_sys::deleteDependencyRecordsForSpecific(
                pg_sys::RelationRelationId,
                pg_sys::Oid::from(storage),
                pg_sys::DependencyType::DEPENDENCY_NORMAL as std::ffi::c_char,
                pg_sys::RelationRelationId,
                pg_sys::Oid::from(*relid),
            );
        }
    }
    // SAFETY: makes the deletions visible before rows are recorded again.
    unsafe { pg_sys::CommandCounterIncrement() };
    let mut seen = Vec::new();
    for relid in sources {
        if *relid == storage || seen.contains(relid) {
            continue;
        }
        seen.push(*relid);
        let referenced = address(*relid);
        // SAFETY: both objects exist (the caller just read them).
        unsafe {
            pg_sys::recordDependencyOn(
                &depender,
                &referenced,
                pg_sys::DependencyType::DEPENDENCY_NORMAL,
            );
        }
    }
    // SAFETY: makes the new pg_depend rows visible to the rest of the statement.
    unsafe { pg_sys::CommandCounterIncrement() };
}
