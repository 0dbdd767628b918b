//! Aggregates the generated refresh statements call.
//!
//! `pgtrickle.numeric_scale_top(integer)` keeps, over a group's numeric values
//! (their display scales), the largest scale and how many values have it,
//! packed into one `bigint` (see `pg_trickle_core::delta::algebraic`).
//! Populate and FULL compute it for every group, so a refresh knows when
//! the last value of that scale leaves.
//!
//! Its transition function runs once per source row of a FULL refresh, so
//! it is a plain version-1 C function: two by-value integers in, one out,
//! no allocation and nothing that can raise an error, hence none of the
//! argument conversion and error trapping a `#[pg_extern]` wrapper adds
//! (which made FULL refreshes of Q01 twice as slow).

use pgrx::pg_sys;

/// The version-1 calling convention record of [`pgtrickle_scale_top_step`].
#[unsafe(no_mangle)]
#[doc(hidden)]
pub extern "C" fn pg_finfo_pgtrickle_scale_top_step() -> &'static pg_sys::Pg_finfo_record {
    const V1_API: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1_API
}

/// Transition function of `pgtrickle.numeric_scale_top`: `(state bigint, scale
/// integer) -> bigint`, declared STRICT, so neither argument is NULL.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo` holding
/// two arguments, as the SQL declaration says.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgtrickle_scale_top_step(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the function manager passes two non-NULL arguments (STRICT).
    let args = unsafe { (*fcinfo).args.as_slice(2) };
    let state = args[0].value.value() as i64;
    let scale = args[1].value.value() as i32;
    pg_sys::Datum::from(pg_trickle_core::delta::algebraic::scale_top_step(
        state, scale,
    ))
}

pgrx::extension_sql!(
    r#"
-- The largest scale among a group's numeric values and how many have it
-- (algebraic maintenance of numeric sums; see engine/ext/src/aggregates.rs).
CREATE FUNCTION pgtrickle._scale_top_step(bigint, integer) RETURNS bigint
    IMMUTABLE STRICT PARALLEL SAFE
    LANGUAGE c AS 'MODULE_PATHNAME', 'pgtrickle_scale_top_step';
CREATE AGGREGATE pgtrickle.numeric_scale_top(integer) (
    SFUNC = pgtrickle._scale_top_step,
    STYPE = bigint,
    INITCOND = '-1',
    PARALLEL = SAFE
);
"#,
    name = "scale_top",
    requires = ["catalog"]
);
