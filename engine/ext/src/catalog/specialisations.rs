//! `pgt_specialised_statements`: differential statements specialised to a
//! set of changed sources, kept so that a new backend neither analyses the
//! defining query again nor validates the statement again (see
//! `specialise`).
//!
//! A row belongs to one plan: its key holds the fingerprint of the plan
//! the stored differential statement came from, so a re-plan leaves the
//! rows of the old plan unused; storing a new plan deletes them. A row
//! with no statement records that the specialisation did not validate and
//! the general statement runs.

use super::{arg, oid_array};
use crate::spi::{rows, run};

/// What is stored for one (plan, set of changed sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The validated specialised statement.
    Statement(String),
    /// The specialisation did not validate: run the general statement.
    General,
}

/// The stored specialisation of stream table `st_id`'s plan `fingerprint`
/// to the sources `changed` (sorted relation oids), if one is stored.
pub fn find(st_id: i64, fingerprint: &str, changed: &[u32]) -> Option<Stored> {
    rows(
        "SELECT sql FROM pgtrickle.pgt_specialised_statements \
         WHERE st_id = $1::text::bigint AND fingerprint = $2 AND changed = $3::text::oid[]",
        &[arg(st_id), arg(fingerprint), oid_array(changed)],
    )
    .into_iter()
    .next()
    .map(|r| match r.into_iter().next().flatten() {
        Some(sql) => Stored::Statement(sql),
        None => Stored::General,
    })
}

/// Store the specialisation of `st_id`'s plan `fingerprint` to `changed`
/// (a concurrent store of the same key wins; both are the same statement).
pub fn store(st_id: i64, fingerprint: &str, changed: &[u32], stored: &Stored) {
    let sql = match stored {
        Stored::Statement(sql) => Some(sql.clone()),
        Stored::General => None,
    };
    run(
        "INSERT INTO pgtrickle.pgt_specialised_statements (st_id, fingerprint, changed, sql) \
         VALUES ($1::text::bigint, $2, $3::text::oid[], $4) ON CONFLICT DO NOTHING",
        &[arg(st_id), arg(fingerprint), oid_array(changed), sql],
    );
}

/// Forget every specialisation of stream table `st_id` (its plan changed).
pub fn forget(st_id: i64) {
    run(
        "DELETE FROM pgtrickle.pgt_specialised_statements WHERE st_id = $1::text::bigint",
        &[arg(st_id)],
    );
}
