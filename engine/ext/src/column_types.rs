//! How column types and collations bear on exactness.
//!
//! A row's identity is `hash_record_extended` of its values, which needs an
//! extended hash function for every type (arrays, ranges and composites:
//! for their elements and fields). `json`, `xml`, geometric types, `money`
//! and others have none: such a column enters the identity by its binary
//! send form when that form is independent of settings (geometric types,
//! `money`), else by its text (`json`, `xml`, ...). A group key has no such
//! way out (groups are matched by key), so a grouped stream table whose key
//! has no hash function, or whose keys or values compare under a
//! nondeterministic collation (equal values spelled differently), is not
//! maintained DIFFERENTIALLY: which spelling a group shows is up to the
//! plan that computed it.

use pg_trickle_core::catalog::ColumnIdentity;
use pgrx::pg_sys;

use crate::spi::{row, rows};

/// Send functions whose bytes depend on nothing but the value.
const BINARY_SENDS: &[&str] = &[
    "point_send",
    "lseg_send",
    "box_send",
    "line_send",
    "path_send",
    "poly_send",
    "circle_send",
    "cash_send",
];

/// Whether values of `typid` (a domain: its base type) have an extended
/// hash function, as `hash_record_extended` needs.
pub fn hashable(typid: u32) -> bool {
    // SAFETY: type cache lookups only read the catalog.
    unsafe {
        let base = pg_sys::getBaseType(pg_sys::Oid::from(typid));
        let entry = pg_sys::lookup_type_cache(base, pg_sys::TYPECACHE_HASH_EXTENDED_PROC as i32);
        !entry.is_null() && (*entry).hash_extended_proc != pg_sys::InvalidOid
    }
}

/// How a column of type `typid` takes part in a row's identity.
pub fn identity(typid: u32) -> ColumnIdentity {
    if hashable(typid) {
        return ColumnIdentity::Hash;
    }
    // SAFETY: as above.
    let base = unsafe { pg_sys::getBaseType(pg_sys::Oid::from(typid)) }.to_u32();
    let send = row(
        "SELECT p.proname::text FROM pg_type t JOIN pg_proc p ON p.oid = t.typsend \
         JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE t.oid = $1::text::oid AND n.nspname = 'pg_catalog'",
        &[Some(base.to_string())],
    )
    .and_then(|r| r[0].clone());
    match send {
        Some(f) if BINARY_SENDS.contains(&f.as_str()) => {
            ColumnIdentity::Send(format!("pg_catalog.{f}"))
        }
        _ => ColumnIdentity::Text,
    }
}

/// A type's name for messages.
pub fn type_name(typid: u32) -> String {
    row(
        "SELECT format_type($1::text::oid, NULL)",
        &[Some(typid.to_string())],
    )
    .and_then(|r| r[0].clone())
    .unwrap_or_else(|| typid.to_string())
}

/// The nondeterministic collation of a column of `relid`, if any, as
/// `(column, collation)`.
pub fn nondeterministic_column(relid: u32) -> Option<(String, String)> {
    rows(
        "SELECT a.attname::text, c.collname::text FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = $1::text::oid AND a.attnum > 0 AND NOT a.attisdropped AND NOT c.collisdeterministic \
         ORDER BY a.attnum LIMIT 1",
        &[Some(relid.to_string())],
    )
    .into_iter()
    .next()
    .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone().unwrap_or_default()))
}

/// Whether collation `collid` is nondeterministic, with its name.
pub fn nondeterministic_collation(collid: u32) -> Option<String> {
    row(
        "SELECT collname::text FROM pg_collation WHERE oid = $1::text::oid AND NOT collisdeterministic",
        &[Some(collid.to_string())],
    )
    .and_then(|r| r[0].clone())
}

/// Whether values of `typid` carry a collation.
pub fn collatable(typid: u32) -> bool {
    // SAFETY: a syscache lookup.
    unsafe { pg_sys::type_is_collatable(pg_sys::Oid::from(typid)) }
}

/// Whether `typid` (a domain: its base type) is an array type.
pub fn is_array(typid: u32) -> bool {
    // SAFETY: syscache lookups.
    unsafe {
        let base = pg_sys::getBaseType(pg_sys::Oid::from(typid));
        pg_sys::get_element_type(base) != pg_sys::InvalidOid
    }
}

/// What the SQL generator needs to know about a group key of type `typid`.
pub fn key_type(typid: u32) -> pg_trickle_core::analyze::KeyType {
    pg_trickle_core::analyze::KeyType {
        identity: identity(typid),
        array: is_array(typid),
    }
}

/// The type class of an aggregate argument of type `typid`, for algebraic
/// maintenance (`pg_trickle_core::delta::algebraic`): a domain is not
/// looked through, so it is only counted, never summed or kept as an
/// extreme that way.
pub fn aggregate_arg_type(typid: u32) -> pg_trickle_core::delta::algebraic::ArgType {
    use pg_trickle_core::delta::algebraic::ArgType;
    match typid {
        21 | 23 => ArgType::Int,
        20 => ArgType::BigInt,
        1700 => ArgType::Numeric,
        // float4, float8, date, time, timestamp, timestamptz
        700 | 701 | 1082 | 1083 | 1114 | 1184 => ArgType::Ordered,
        _ => ArgType::Other,
    }
}
