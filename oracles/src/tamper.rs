//! The negative control: damage a stream table, or its captured changes,
//! behind the engine's back and require the oracle to call it a mismatch.
//!
//! An oracle that never fails proves nothing. Each tampering is a plain SQL
//! statement added to a workload step, so a tampered run replays and shrinks
//! like any other. Every tampering statement raises an error when it found
//! nothing to damage, which turns a vacuous tampering into a harness error
//! instead of a silent pass.
//!
//! Some damage only shows when transactions interleave: a frontier that
//! forgets a transaction still in progress (or prepared) when a refresh
//! recorded it loses that transaction's changes once it commits, several
//! steps later. Those tamperings run on the concurrent corpus workloads and
//! must be caught at or after the commit.

use serde::Serialize;

use crate::corpus;
use crate::diff_vs_full::WorkloadRun;
use crate::outcome::Outcome;
use crate::shrink::Sandbox;
use crate::workload::Workload;

/// The step in which the negative control tampers.
pub const TAMPER_STEP: usize = 3;

/// One way to damage a stream table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    /// Delete one stored row after the refresh.
    DropRow,
    /// Insert a copy of one stored row after the refresh.
    DuplicateRow,
    /// Set one stored value to NULL after the refresh.
    ChangeValue,
    /// Copy every row of a source, then delete the captured changes before the refresh.
    SkipChange,
    /// After the refresh, record the frontier as a high-water mark, as an
    /// engine that ignored in-progress transactions would: the changes of a
    /// transaction still open count as consumed before they are committed.
    ForgetInProgress,
}

impl Tamper {
    /// Every tampering of a stream table or of its captured changes.
    pub const ALL: [Tamper; 4] = [
        Tamper::DropRow,
        Tamper::DuplicateRow,
        Tamper::ChangeValue,
        Tamper::SkipChange,
    ];

    /// Every tampering that only interleaved transactions can reveal.
    pub const CONCURRENT: [Tamper; 1] = [Tamper::ForgetInProgress];

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Tamper::DropRow => "drop_row",
            Tamper::DuplicateRow => "duplicate_row",
            Tamper::ChangeValue => "change_value",
            Tamper::SkipChange => "skip_change",
            Tamper::ForgetInProgress => "forget_in_progress",
        }
    }
}

/// Where to tamper: a corpus workload, the stream table to damage and the
/// source whose changes are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Corpus workload name.
    pub workload: &'static str,
    /// Stream table damaged by the row tamperings.
    pub stream_table: &'static str,
    /// Keyless source table whose captured changes are skipped.
    pub source: &'static str,
}

/// The workloads the negative control damages: linear, join, grouped, a
/// stream table over a stream table, a correlated scalar subquery
/// (whose skipped changes are the subquery's source's), a LEFT JOIN
/// (whose skipped changes are the padded side's) and a top-k of groups.
pub const TARGETS: &[Target] = &[
    Target {
        workload: "select_star",
        stream_table: "st",
        source: "a",
    },
    Target {
        workload: "inner_equi_join",
        stream_table: "j",
        source: "a",
    },
    Target {
        workload: "group_by_aggregates",
        stream_table: "g",
        source: "a",
    },
    Target {
        workload: "stream_table_over_stream_table",
        stream_table: "top",
        source: "b",
    },
    Target {
        workload: "scalar_subqueries",
        stream_table: "listed",
        source: "b",
    },
    Target {
        workload: "left_join_rows",
        stream_table: "lj",
        source: "b",
    },
    Target {
        workload: "top_k_groups",
        stream_table: "biggest",
        source: "a",
    },
    Target {
        workload: "grouped_subqueries",
        stream_table: "per_count",
        source: "b",
    },
];

/// A concurrent workload whose transaction is open (or prepared) at the
/// end of one step and commits in the next: the step tampered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConcurrentTarget {
    /// The workload, the stream table whose frontier forgets, its source.
    pub target: Target,
    /// The step after whose refresh the frontier forgets.
    pub step: usize,
}

/// The concurrent workloads the negative control damages. The run keeps
/// one step more than the tampered one: the transaction commits there,
/// and the tampering must be caught there (a later refresh would record a
/// frontier that lists it again).
pub const CONCURRENT_TARGETS: &[ConcurrentTarget] = &[
    ConcurrentTarget {
        target: Target {
            workload: "late_commit",
            stream_table: "g",
            source: "a",
        },
        step: 1,
    },
    ConcurrentTarget {
        target: Target {
            workload: "two_phase_commit",
            stream_table: "g",
            source: "a",
        },
        step: 1,
    },
    ConcurrentTarget {
        target: Target {
            workload: "long_transaction",
            stream_table: "g",
            source: "a",
        },
        step: 3,
    },
];

/// Tampered runs the negative control makes.
pub fn cases() -> usize {
    TARGETS.len() * Tamper::ALL.len() + CONCURRENT_TARGETS.len() * Tamper::CONCURRENT.len()
}

/// A DO block that runs `body` (which must set `n` via GET DIAGNOSTICS)
/// and fails when it changed nothing.
fn must_change(what: &str, body: &str) -> String {
    format!(
        "DO $pgt$ DECLARE n bigint; c text; BEGIN {body} \
         IF n = 0 THEN RAISE EXCEPTION 'negative control: nothing to {what}'; END IF; END $pgt$"
    )
}

/// `body` with stream table `st`'s read-only trigger switched off around
/// it: a superuser damaging the stream table behind the engine's back.
fn behind_the_engine(st: &str, body: &str) -> String {
    format!(
        "ALTER TABLE {st} DISABLE TRIGGER pgt_readonly; {body} ALTER TABLE {st} ENABLE TRIGGER pgt_readonly;"
    )
}

/// The statements for one tampering; `(before refresh, after refresh)`.
pub fn statements(kind: Tamper, st: &str, source: &str) -> (Vec<String>, Vec<String>) {
    match kind {
        Tamper::DropRow => (
            vec![],
            vec![must_change(
                "drop",
                &behind_the_engine(
                    st,
                    &format!(
                    "DELETE FROM {st} WHERE ctid = (SELECT ctid FROM {st} LIMIT 1); \
                     GET DIAGNOSTICS n = ROW_COUNT;"
                )
                ),
            )],
        ),
        Tamper::DuplicateRow => (
            vec![],
            vec![must_change(
                "duplicate",
                &behind_the_engine(
                    st,
                    &format!(
                    "INSERT INTO {st} SELECT * FROM {st} LIMIT 1; GET DIAGNOSTICS n = ROW_COUNT;"
                )
                ),
            )],
        ),
        Tamper::ChangeValue => (
            vec![],
            vec![must_change(
                "change",
                &behind_the_engine(
                    st,
                    &format!(
                    "SELECT quote_ident(attname) INTO c FROM pg_attribute \
                     WHERE attrelid = '{st}'::regclass AND attnum > 0 AND NOT attisdropped \
                     AND attname NOT LIKE '\\_\\_pgt\\_%' ORDER BY attnum LIMIT 1; \
                     EXECUTE format('UPDATE {st} SET %s = NULL WHERE ctid = \
                     (SELECT ctid FROM {st} WHERE %s IS NOT NULL LIMIT 1)', c, c); \
                     GET DIAGNOSTICS n = ROW_COUNT;"
                )
                ),
            )],
        ),
        Tamper::SkipChange => (
            vec![
                must_change(
                    "copy",
                    &format!(
                        "INSERT INTO {source} SELECT * FROM {source}; GET DIAGNOSTICS n = ROW_COUNT;"
                    ),
                ),
                must_change(
                    "skip",
                    &format!(
                        "EXECUTE format('DELETE FROM pgtrickle_changes.%I', \
                         'changes_' || '{source}'::regclass::oid); GET DIAGNOSTICS n = ROW_COUNT;"
                    ),
                ),
            ],
            vec![],
        ),
        Tamper::ForgetInProgress => (
            vec![],
            vec![must_change(
                "forget",
                &format!(
                    // Every transaction assigned before this statement counts
                    // as seen, the high-water mark an engine that ignored
                    // in-progress transactions would record. It must forget
                    // one still open in this database that the frontier kept
                    // out: one in its in-progress list, or one assigned after
                    // the last transaction that had completed (at or past its
                    // xmax), which a snapshot lists in neither.
                    "UPDATE pgtrickle.pgt_stream_tables \
                     SET frontier = (pg_current_xact_id()::text || ':' || pg_current_xact_id()::text || ':')::pg_snapshot \
                     WHERE relid = '{st}'::regclass AND EXISTS ( \
                       SELECT 1 FROM ( \
                         SELECT backend_xid AS x FROM pg_catalog.pg_stat_activity \
                          WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL \
                         UNION ALL SELECT transaction FROM pg_catalog.pg_prepared_xacts WHERE database = current_database() \
                       ) open_xacts \
                       WHERE x = ANY (SELECT pg_snapshot_xip(frontier)::xid) \
                          OR age(x) <= age(pg_snapshot_xmax(frontier)::xid)); \
                     GET DIAGNOSTICS n = ROW_COUNT;"
                ),
            )],
        ),
    }
}

/// `w` cut to `step` steps with `kind` applied in the last one.
pub fn apply(w: &Workload, kind: Tamper, target: &Target, step: usize) -> Workload {
    let mut out = w.clone();
    out.steps.truncate(step);
    let last = out
        .steps
        .last_mut()
        .expect("tampering needs at least one step");
    let (before, after) = statements(kind, target.stream_table, target.source);
    last.dml.extend(before);
    last.after_refresh.extend(after);
    out
}

/// One tampering and whether the oracle caught it.
#[derive(Debug, Clone, Serialize)]
pub struct TamperResult {
    /// Where.
    pub target: Target,
    /// How.
    pub tamper: Tamper,
    /// The step tampered with.
    pub step: usize,
    /// Caught: the run failed with a mismatch in the tampered step (for
    /// a concurrent tampering, in a later one, when the forgotten
    /// transaction has committed).
    pub detected: bool,
    /// The tampered workload (for replay files).
    #[serde(skip)]
    pub workload: Workload,
    /// The oracle's run of the tampered workload.
    pub run: WorkloadRun,
}

/// Run every tampering on every target; `seed` overrides the workloads'
/// own seeds. `on_result` sees each result as it completes (for progress).
pub fn negative_control(
    sandbox: &mut dyn Sandbox,
    seed: Option<u64>,
    mut on_result: impl FnMut(&TamperResult),
) -> Result<Vec<TamperResult>, String> {
    let mut out = Vec::new();
    for target in TARGETS {
        let entry = corpus::entry(target.workload)
            .ok_or_else(|| format!("negative control: no corpus workload {}", target.workload))?;
        let base = (entry.build)(seed.unwrap_or(entry.seed), TAMPER_STEP);
        for tamper in Tamper::ALL {
            let w = apply(&base, tamper, target, TAMPER_STEP);
            let name = format!("neg_{}_{}", target.workload, tamper.name());
            let (r, _) = crate::shrink::run_in(sandbox, &name, &w)?;
            let detected = r
                .failure()
                .is_some_and(|c| c.outcome == Outcome::Mismatch && c.step == TAMPER_STEP);
            let result = TamperResult {
                target: *target,
                tamper,
                step: TAMPER_STEP,
                detected,
                workload: w,
                run: r,
            };
            on_result(&result);
            out.push(result);
        }
    }
    for ct in CONCURRENT_TARGETS {
        let target = &ct.target;
        let entry = corpus::entry(target.workload)
            .ok_or_else(|| format!("negative control: no corpus workload {}", target.workload))?;
        let mut base = (entry.build)(seed.unwrap_or(entry.seed), ct.step + 1);
        base.steps.truncate(ct.step + 1);
        for tamper in Tamper::CONCURRENT {
            let mut w = base.clone();
            let (before, after) = statements(tamper, target.stream_table, target.source);
            let at = &mut w.steps[ct.step - 1];
            at.dml.extend(before);
            at.after_refresh.extend(after);
            let name = format!("neg_{}_{}", target.workload, tamper.name());
            let (r, _) = crate::shrink::run_in(sandbox, &name, &w)?;
            let detected = r
                .failure()
                .is_some_and(|c| c.outcome == Outcome::Mismatch && c.step == ct.step + 1);
            let result = TamperResult {
                target: *target,
                tamper,
                step: ct.step,
                detected,
                workload: w,
                run: r,
            };
            on_result(&result);
            out.push(result);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus;

    #[test]
    fn every_target_names_a_corpus_workload_with_that_stream_table() {
        for t in TARGETS {
            let e = corpus::entry(t.workload).expect(t.workload);
            let w = (e.build)(e.seed, 4);
            assert!(
                w.stream_tables.iter().any(|s| s.name == t.stream_table),
                "{}",
                t.workload
            );
            assert!(
                w.setup
                    .iter()
                    .any(|s| s.starts_with(&format!("CREATE TABLE {} (", t.source))),
                "{}",
                t.workload
            );
        }
    }

    #[test]
    fn concurrent_targets_commit_in_the_step_after_the_tampered_one() {
        for ct in CONCURRENT_TARGETS {
            let t = &ct.target;
            let e = corpus::entry(t.workload).expect(t.workload);
            let w = (e.build)(e.seed, ct.step + 1);
            assert!(w.concurrent(), "{}", t.workload);
            assert!(w.stream_tables.iter().any(|s| s.name == t.stream_table));
            let next = &w.steps[ct.step].actions;
            assert!(
                next.iter()
                    .any(|a| a.sql == "COMMIT" || a.sql.starts_with("COMMIT PREPARED")),
                "{}: nothing commits in step {}",
                t.workload,
                ct.step + 1
            );
        }
    }

    #[test]
    fn tampering_lands_in_the_last_kept_step() {
        let e = corpus::entry("select_star").unwrap();
        let w = (e.build)(e.seed, 6);
        let t = apply(&w, Tamper::SkipChange, &TARGETS[0], 3);
        assert_eq!(t.steps.len(), 3);
        assert!(t.steps[2]
            .dml
            .iter()
            .any(|s| s.contains("pgtrickle_changes")));
        let t = apply(&w, Tamper::DropRow, &TARGETS[0], 2);
        assert_eq!(t.steps[1].after_refresh.len(), 1);
    }
}
