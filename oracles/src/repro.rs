//! Replay files: a failing workload as one `.sql` script for `psql`.
//!
//! The script creates the extension, runs the schema, seed rows, stream
//! tables and steps exactly as the oracle did (refreshes included), then
//! prints the rows on which the failing stream table and its recomputed
//! query disagree, and the mode its last refresh ran. A maintainer needs
//! only an empty database and this file.
//!
//! One `psql` session cannot replay statements of several connections
//! whose order depends on lock waits, nor a live scheduler: for such a
//! workload the script shows the interleaving as comments and names the
//! `harness replay` command that re-runs the workload's JSON file.

use crate::diff_vs_full::WorkloadRun;
use crate::workload::Workload;

fn push_block(out: &mut String, title: &str, stmts: &[String]) {
    if stmts.is_empty() {
        return;
    }
    out.push_str(&format!("\n-- {title}\n"));
    for s in stmts {
        out.push_str(s);
        out.push_str(";\n");
    }
}

fn comment(text: &str) -> String {
    text.lines()
        .map(|l| format!("--   {l}\n"))
        .collect::<String>()
}

/// The check queries for stream table `st` with visible `columns` and
/// defining `query`: rows on one side only (as multisets), then the last
/// refresh's mode.
pub fn check_sql(st: &str, columns: &[String], query: &str) -> String {
    let list = columns
        .iter()
        .map(|c| format!("s.\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT 'only in stream table' AS side, r AS row FROM (\n  SELECT ROW({list})::text AS r FROM {st} s\n  EXCEPT ALL\n  SELECT ROW(q.*)::text FROM ({query}) q) d\n\
         UNION ALL\n\
         SELECT 'only in query', r FROM (\n  SELECT ROW(q.*)::text AS r FROM ({query}) q\n  EXCEPT ALL\n  SELECT ROW({list})::text FROM {st} s) d\n\
         ORDER BY 1, 2;\n\
         SELECT mode, initiated_by, reason FROM pgtrickle.refresh_history('{st}') ORDER BY refresh_id DESC LIMIT 1;\n"
    )
}

/// What a replay file runs to switch a WAL-capture workload's sources:
/// each switch in a transaction of its own (a slot is created only in a
/// transaction that has written nothing), kinds the engine refuses stay
/// on triggers.
const WAL_SWITCH_SQL: &str = "DO $$ DECLARE s text; BEGIN \
FOR s IN SELECT source_relid::regclass::text FROM pgtrickle.pgt_change_buffers ORDER BY 1 LOOP \
BEGIN PERFORM pgtrickle.set_capture_mode(s, 'wal'); \
EXCEPTION WHEN feature_not_supported THEN NULL; END; COMMIT; END LOOP; END $$;";

/// Render the replay script for `w`, whose run `r` failed. `columns` are
/// the failing stream table's visible columns (empty when it was never
/// created); `command` is the runner command that reproduces the run.
pub fn render(w: &Workload, r: &WorkloadRun, columns: &[String], command: &str) -> String {
    let failure = r.failure();
    let mut out = String::new();
    out.push_str(&format!(
        "-- pg_trickle DIFF-vs-FULL replay: workload {}, seed {}\n",
        w.name, w.seed
    ));
    if w.concurrent() {
        out.push_str(&format!(
            "-- This workload interleaves {} connections{}: psql cannot replay it.\n\
             -- Its interleaving is shown below as comments (cN: connection N, in the\n\
             -- order the statements were started); replay it with the command below.\n",
            w.connections.len() + 1,
            if w.scheduler {
                " and waits for the live scheduler"
            } else {
                ""
            }
        ));
    } else {
        out.push_str("-- Replay in an empty database of a server with pg_trickle installed:\n");
        out.push_str("--   createdb pgt_replay && psql -X -d pgt_replay -f THIS_FILE\n");
    }
    out.push_str(&format!(
        "-- Runner command that reproduces it:\n--   {command}\n"
    ));
    if let Some(c) = failure {
        out.push_str(&format!(
            "-- Failure ({}) on {} at step {}:\n",
            c.outcome.name(),
            c.stream_table,
            c.step
        ));
        out.push_str(&comment(c.detail.as_deref().unwrap_or("")));
    }
    out.push_str("\\set ON_ERROR_STOP on\nCREATE EXTENSION IF NOT EXISTS pg_trickle;\n");
    push_block(&mut out, "schema", &w.setup);
    push_block(&mut out, "seed rows", &w.seed_rows);
    let creates: Vec<String> = w.stream_tables.iter().map(|s| s.create_sql()).collect();
    push_block(&mut out, "stream tables", &creates);
    if w.capture == crate::workload::Capture::Wal {
        // As the runner does it (needs wal_level = logical); the kinds the
        // engine does not capture from the WAL stay on triggers.
        push_block(
            &mut out,
            "capture from the WAL (every source that can be; the runner drains before every other step's refreshes)",
            &[WAL_SWITCH_SQL.to_string()],
        );
    }
    for (i, step) in w.steps.iter().enumerate() {
        let mut stmts = step.dml.clone();
        if !step.actions.is_empty() {
            let lines: String = step
                .actions
                .iter()
                .map(|a| format!("--   c{}: {}\n", a.conn, a.sql.replace('\n', " ")))
                .collect();
            out.push_str(&format!(
                "\n-- step {} interleaves (not run by psql):\n{lines}",
                i + 1
            ));
        }
        if !step.skip_refresh && !w.scheduler {
            stmts.extend(
                w.stream_tables
                    .iter()
                    .filter(|s| !step.not_refreshed.contains(&s.name))
                    .map(|s| s.refresh_sql()),
            );
        }
        stmts.extend(step.after_refresh.iter().cloned());
        push_block(&mut out, &format!("step {}", i + 1), &stmts);
    }
    let failing = failure.and_then(|c| w.stream_tables.iter().find(|s| s.name == c.stream_table));
    match failing {
        Some(st) if !columns.is_empty() => {
            out.push_str(&format!(
                "\n-- check: {} against its query recomputed (a correct engine returns no rows here)\n",
                st.name
            ));
            out.push_str(&check_sql(&st.name, columns, &st.query));
        }
        _ => out.push_str("\n-- the failure is the error raised by the last statement above\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{ColSpec, TableSpec};
    use crate::outcome::{Check, Outcome};
    use crate::workload::Builder;

    #[test]
    fn replay_has_every_statement_in_order_and_the_check() {
        let w = Builder::new("w", 5)
            .table(TableSpec::new("a", vec![ColSpec::int("k", 3, 0)]), 2)
            .diff("x", "SELECT k FROM a")
            .step(&["INSERT INTO a VALUES (1)"])
            .build();
        let r = WorkloadRun {
            checks: vec![Check {
                stream_table: "x".into(),
                step: 1,
                outcome: Outcome::Mismatch,
                detail: Some("rows differ\n-(1)".into()),
                sqlstate: None,
            }],
            ..WorkloadRun::new("w", 5, 2)
        };
        let sql = render(
            &w,
            &r,
            &["k".into()],
            "harness oracle --workload w --seed 5",
        );
        let order = [
            "CREATE EXTENSION",
            "CREATE TABLE a",
            "create_stream_table('x'",
            "INSERT INTO a VALUES (1);",
            "refresh_stream_table('x')",
            "EXCEPT ALL",
        ];
        let mut at = 0;
        for needle in order {
            let pos = sql[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing or out of order:\n{sql}"));
            at += pos;
        }
        assert!(sql.contains("--   -(1)"));
        assert!(sql.contains("harness oracle --workload w --seed 5"));
        assert!(sql.contains("psql -X"), "{sql}");
    }

    #[test]
    fn an_interleaving_is_shown_and_sent_to_harness_replay() {
        let w = Builder::new("w", 5)
            .table(TableSpec::new("a", vec![ColSpec::int("k", 3, 0)]), 0)
            .diff("x", "SELECT k FROM a")
            .diff("y", "SELECT count(*) AS n FROM a")
            .connections(&[crate::workload::Isolation::RepeatableRead])
            .interleaved_partial(
                &[
                    (1, "BEGIN"),
                    (1, "INSERT INTO a VALUES (1)"),
                    (0, "SELECT 1"),
                ],
                &["y"],
            )
            .build();
        let r = WorkloadRun::new("w", 5, 2);
        let sql = render(&w, &r, &[], "harness replay w.workload.json");
        assert!(sql.contains("psql cannot replay it"), "{sql}");
        assert!(sql.contains("--   c1: INSERT INTO a VALUES (1)"), "{sql}");
        assert!(sql.contains("refresh_stream_table('x')"), "{sql}");
        assert!(
            !sql.contains("refresh_stream_table('y')"),
            "not refreshed: {sql}"
        );
        assert!(sql.contains("harness replay w.workload.json"));
    }
}
