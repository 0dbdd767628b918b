//! Upgrades regenerate what an older version generated for existing
//! stream tables: capture functions and the stored refresh statements.
//!
//! Generated objects are not part of the extension's install script, so
//! `ALTER EXTENSION pg_trickle UPDATE` cannot replace them by itself; an
//! upgrade script calls `pgtrickle._regenerate()` instead, which rebuilds
//! them with this library's generator. 0.39.1 needs it because 0.39.0's
//! capture functions and statements resolved names through search_paths
//! (see docs/SECURITY.md). A stream table whose statements cannot be made
//! again the same way (its mode or captured sources would change) is
//! re-planned and marked for reinitialisation instead, with a WARNING;
//! nothing is silently kept.

use pg_trickle_core::ir::RequestedMode;
use pgrx::prelude::*;

use crate::api::{owner_of, replan};
use crate::security::as_extension;
use crate::util::{first_column, in_subtransaction, row, rows, run};

/// Regenerate every capture function and every stored refresh statement
/// in this database with this version's generator. Run by upgrade scripts
/// (as the extension owner); not executable by PUBLIC.
#[pg_extern]
fn _regenerate() {
    as_extension(|| {
        let sources = crate::capture::regenerate_all();
        let (kept, replanned) = regenerate_statements();
        pgrx::notice!(
            "pg_trickle: regenerated the capture of {sources} source(s) and the refresh statements of {kept} stream table(s); {replanned} re-planned for reinitialisation"
        );
    });
}

/// Regenerate the stored statements of every stream table; returns how
/// many were regenerated in place and how many were re-planned.
fn regenerate_statements() -> (usize, usize) {
    let ids: Vec<i64> = first_column(
        "SELECT id::text FROM pgtrickle.pgt_stream_tables ORDER BY id",
        &[],
    );
    let (mut kept, mut replanned) = (0, 0);
    for id in ids {
        match in_subtransaction(move || regenerate_one(id)) {
            Ok(true) => kept += 1,
            Ok(false) => replanned += 1,
            Err(f) => {
                f.reraise_if_transient();
                let name = row(
                    "SELECT name FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
                    &[Some(id.to_string())],
                )
                .and_then(|r| r[0].clone())
                .unwrap_or_default();
                pgrx::warning!(
                    "pg_trickle: could not regenerate the statements of stream table {name} ({}: {}); it is marked for reinitialisation",
                    f.sqlstate,
                    f.message
                );
                run(
                    "UPDATE pgtrickle.pgt_stream_tables SET needs_reinit = true, \
                     reinit_reason = 'the upgrade could not regenerate its statements: ' || $2 \
                     WHERE id = $1::text::bigint",
                    &[Some(id.to_string()), Some(f.message)],
                );
                replanned += 1;
            }
        }
    }
    (kept, replanned)
}

/// Regenerate one stream table's statements in place when its plan is
/// otherwise unchanged (true), else re-plan it for reinitialisation (false).
fn regenerate_one(id: i64) -> bool {
    let Some(r) = row(
        "SELECT name, query, requested_mode, effective_mode, relid::text \
         FROM pgtrickle.pgt_stream_tables WHERE id = $1::text::bigint",
        &[Some(id.to_string())],
    ) else {
        return true;
    };
    let name = r[0].clone().unwrap_or_default();
    let query = r[1].clone().unwrap_or_default();
    let requested =
        RequestedMode::parse(r[2].as_deref().unwrap_or("AUTO")).unwrap_or(RequestedMode::Auto);
    let effective = r[3].clone().unwrap_or_default();
    let relid: u32 = r[4].as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let owner = owner_of(id);
    let planned = crate::planning::plan(&name, &query, requested, relid, &name, &owner);
    let mut params_now: Vec<(String, Option<String>)> = rows(
        "SELECT source_relid::text, param_position::text FROM pgtrickle.pgt_sources \
         WHERE st_id = $1::text::bigint AND captured",
        &[Some(id.to_string())],
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap_or_default(), r[1].clone()))
    .collect();
    let mut params_planned: Vec<(String, Option<String>)> =
        if planned.effective_mode == "DIFFERENTIAL" {
            planned
                .plan
                .diff_sources
                .iter()
                .enumerate()
                .map(|(p, i)| {
                    (
                        planned.analysis.sources[*i].oid.to_string(),
                        Some((p + 3).to_string()),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
    params_planned.sort();
    params_now.sort();
    if planned.effective_mode != effective || params_planned != params_now {
        replan(id, None, "the upgrade to this version");
        return false;
    }
    run(
        "UPDATE pgtrickle.pgt_stream_tables SET populate_sql = $2, full_sql = $3, diff_sql = $4 \
         WHERE id = $1::text::bigint",
        &[
            Some(id.to_string()),
            Some(planned.plan.populate_sql.clone()),
            Some(planned.plan.full_sql.clone()),
            if planned.effective_mode == "DIFFERENTIAL" {
                planned.plan.diff_sql.clone()
            } else {
                None
            },
        ],
    );
    // The sources' rows stay as they are (same oids and parameters);
    // capture was brought up to date by `capture::regenerate_all`.
    true
}
