//! Workloads for the operator's controls: a hold must catch up
//! DIFFERENTIALLY with nothing lost, and a discard must never be followed
//! by a DIFFERENTIAL refresh over the gap it leaves.

use super::{table_a, table_b, Entry};
use crate::workload::Builder;

const GROUPED: &str = "SELECT k, count(*) AS n, sum(v) AS total, max(v) AS hi FROM a GROUP BY k";
const JOINED: &str = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "hold_then_catch_up",
            "stream tables held while their sources change; after resume one DIFFERENTIAL refresh catches up",
            301,
            |s, n| {
                Builder::new("hold_then_catch_up", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .diff("top", "SELECT k, count(*) AS n, sum(w) AS total FROM j GROUP BY k")
                    .dml_only_step(&["SELECT pgtrickle.hold_all_stream_tables('oracle: hold everything')", "INSERT INTO a VALUES (1, 100, 'held')"])
                    .random_dml_only_steps(4)
                    .step(&["SELECT pgtrickle.resume_all_stream_tables()"])
                    .dml_only_step(&["SELECT pgtrickle.hold_stream_table('g', 'oracle: hold one')", "UPDATE a SET v = v + 1 WHERE k = 1"])
                    .random_dml_only_steps(2)
                    .step(&["SELECT pgtrickle.resume_stream_table('g')", "DELETE FROM a WHERE s = 'held'"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "discard_then_reinitialise",
            "discarded capture: every refresh is FULL until capture resumes, then one FULL, then DIFFERENTIAL",
            302,
            |s, n| {
                Builder::new("discard_then_reinitialise", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .diff("bj", "SELECT k, count(*) AS n FROM b GROUP BY k")
                    .step(&["INSERT INTO a VALUES (2, 5, 'before')"])
                    .reinit_step(&["SELECT pgtrickle.discard_changes('g', 'oracle: emergency')", "INSERT INTO a VALUES (2, 6, 'lost from capture')"], &["g", "j"])
                    .reinit_step(&["UPDATE a SET v = v + 10 WHERE k = 2", "INSERT INTO b VALUES (2, 3)"], &["g", "j"])
                    .reinit_step(&["SELECT pgtrickle.resume_capture('g')", "DELETE FROM a WHERE s = 'before'"], &["g", "j"])
                    .step(&["INSERT INTO a VALUES (2, 7, 'after')"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "snapshot_then_restore",
            "snapshots (one named with quotes, a space and a reserved word) restored after the stream tables moved on; the next refresh is DIFFERENTIAL over only later changes",
            303,
            |s, n| {
                // `lag` reads a and b but falls behind while the others
                // move on, so every change since a snapshot stays buffered.
                Builder::new("snapshot_then_restore", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .diff("lag", "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k WHERE a.v > b.w")
                    .random_steps(2)
                    .step(&[
                        "CREATE SCHEMA \"J snap\"",
                        "SELECT pgtrickle.snapshot_stream_table('g', 'g_snap')",
                        "SELECT pgtrickle.snapshot_stream_table('j', '\"J snap\".\"select\"')",
                    ])
                    .random_partial_steps(3, &["lag"])
                    .step(&[
                        "SELECT pgtrickle.restore_from_snapshot('g', 'g_snap')",
                        "SELECT pgtrickle.restore_from_snapshot('j', '\"J snap\".\"select\"')",
                        "INSERT INTO a VALUES (1, 50, 'after restore')",
                    ])
                    .random_steps(n.div_ceil(3))
                    .build()
            },
        ),
    ]
}
