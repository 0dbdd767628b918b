//! The write guard: before each statement that writes a captured source,
//! refuse it (or warn) while backpressure is engaged on the source, and
//! refuse it while a held reader's backlog is at the cap.
//!
//! `pgtrickle.guard_writes()` is the BEFORE statement trigger every
//! captured source carries. When neither `pg_trickle.enforce_backpressure`
//! nor `pg_trickle.max_held_backlog_rows` is on, nothing can refuse a
//! write, so it returns at once, with no catalog lookup (both settings are
//! reload-only: a writer cannot switch them off for itself). Otherwise it
//! calls `pgtrickle._guard_writes_check(oid)`, the PL/pgSQL function that
//! reads the source's state, as a SECURITY DEFINER function with a pinned
//! search_path; it is called through the function manager, which checks
//! no EXECUTE right, so PUBLIC needs none.

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::gucs;
use crate::spi::raise;

thread_local! {
    /// The oid of `pgtrickle._guard_writes_check(oid)`, once looked up.
    static CHECK: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// The version-1 calling convention record of [`pgtrickle_guard_writes`].
#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_pgtrickle_guard_writes() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// `pgtrickle.guard_writes()` (see the module comment).
///
/// # Safety
/// Called by PostgreSQL's function manager as a trigger.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgtrickle_guard_writes(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the function manager passes a valid fcinfo; the firing
    // relation is open while its trigger runs.
    let relid = unsafe {
        (*crate::triggers::trigger_data(fcinfo, "pgtrickle.guard_writes()").tg_relation).rd_id
    };
    if !enforcing() {
        return pg_sys::Datum::from(0);
    }
    // SAFETY: the check function takes one oid and returns a boolean.
    unsafe {
        pg_sys::OidFunctionCall1Coll(check_function(), pg_sys::InvalidOid, relid.into());
    }
    pg_sys::Datum::from(0)
}

/// Whether backpressure or the held-backlog cap is switched on.
pub fn enforcing() -> bool {
    gucs::ENFORCE_BACKPRESSURE.get() || gucs::MAX_HELD_BACKLOG_ROWS.get() > 0
}

/// The oid of `pgtrickle._guard_writes_check(oid)`, looked up once per
/// backend and again when that function is gone (a re-created extension).
fn check_function() -> pg_sys::Oid {
    let known = CHECK.with(Cell::get);
    // SAFETY: a syscache existence probe by oid.
    let exists = known != pg_sys::InvalidOid
        && unsafe {
            pg_sys::SearchSysCacheExists(
                pg_sys::SysCacheIdentifier::PROCOID as i32,
                known.into(),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
    if exists {
        return known;
    }
    let found = crate::security::with_search_path(crate::security::PINNED_SEARCH_PATH, || {
        crate::spi::value(
            "SELECT pg_catalog.to_regprocedure('pgtrickle._guard_writes_check(pg_catalog.oid)')::pg_catalog.oid::pg_catalog.text",
            &[],
        )
    })
    .and_then(|v| v.parse::<u32>().ok())
    .map(pg_sys::Oid::from)
    .unwrap_or_else(|| {
        raise(
            "55000",
            "pgtrickle._guard_writes_check(oid) is missing; pg_trickle is not installed correctly",
            Some("ALTER EXTENSION pg_trickle UPDATE, or re-create the extension.".into()),
        )
    });
    CHECK.with(|c| c.set(found));
    found
}
