//! Workloads whose transactions interleave with refreshes: the cases a
//! differential engine gets wrong when it takes its frontier as a
//! high-water mark, ignores transactions still in progress, reads its
//! delta under a different snapshot than the frontier it records, or lets
//! an aborted subtransaction's changes through.
//!
//! Each opens with scripted interleavings of its hard case and continues
//! with seeded random interleavings over several connections (see
//! [`crate::interleave`]). Connection 0 refreshes; connections 1..=N write.

use super::{table_a, table_b, Entry};
use crate::workload::{Builder, Isolation};

const GROUPED: &str = "SELECT k, count(*) AS n, sum(v) AS total, max(v) AS hi FROM a GROUP BY k";
const JOINED: &str = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";
const REFRESH_G: &str = "SELECT pgtrickle.refresh_stream_table('g')";
const REFRESH_J: &str = "SELECT pgtrickle.refresh_stream_table('j')";

use Isolation::{ReadCommitted as Rc, RepeatableRead as Rr, Serializable as Sr};

/// Two tables, a grouped and a joined DIFFERENTIAL stream table, and
/// connections at `levels`.
fn base(name: &str, seed: u64, levels: &[Isolation]) -> Builder {
    Builder::new(name, seed)
        .table(table_a(), 12)
        .table(table_b(), 8)
        .diff("g", GROUPED)
        .diff("j", JOINED)
        .connections(levels)
}

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "late_commit",
            "changes taken before a refresh and committed after it are applied by a later refresh",
            401,
            |s, n| {
                base("late_commit", s, &[Rc, Rc])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (1, 10, 'late')"),
                        (2, "INSERT INTO a VALUES (1, 11, 'early')"),
                        (0, REFRESH_G),
                        (1, "UPDATE a SET v = v + 100 WHERE k = 2"),
                    ])
                    .interleaved(&[
                        (1, "COMMIT"),
                        (2, "BEGIN"),
                        (2, "INSERT INTO b VALUES (1, 7)"),
                        (0, REFRESH_J),
                    ])
                    .interleaved(&[(2, "COMMIT")])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "long_transaction",
            "a transaction open across several refreshes, writing between them, committed at the end",
            402,
            |s, n| {
                base("long_transaction", s, &[Rr, Rc])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (3, 1, 'long')"),
                        (2, "DELETE FROM a WHERE k = 3 AND s <> 'long'"),
                    ])
                    .interleaved(&[
                        (1, "UPDATE a SET v = v + 1 WHERE k = 4"),
                        (2, "INSERT INTO a VALUES (3, 2, 'short')"),
                    ])
                    .interleaved(&[(1, "DELETE FROM b WHERE k = 3"), (0, REFRESH_J)])
                    .interleaved(&[(1, "COMMIT")])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "refresh_inside_transaction",
            "write, refresh and write again inside one transaction while another connection refreshes (and waits)",
            403,
            |s, n| {
                base("refresh_inside_transaction", s, &[Rc, Rc])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (2, 5, 'in txn')"),
                        (1, REFRESH_G),
                        (1, "INSERT INTO a VALUES (2, 6, 'after own refresh')"),
                        (2, "INSERT INTO a VALUES (2, 7, 'other')"),
                        (0, REFRESH_G),
                        (1, "UPDATE a SET v = v * 2 WHERE s = 'in txn'"),
                        (1, "COMMIT"),
                    ])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "DELETE FROM a WHERE k = 2"),
                        (1, REFRESH_G),
                        (1, REFRESH_J),
                        (0, REFRESH_G),
                        (1, "INSERT INTO a VALUES (2, 8, 'rolled back')"),
                        (1, "ROLLBACK"),
                    ])
                    .interleaved(&[
                        (2, "BEGIN"),
                        (2, "INSERT INTO b VALUES (2, 9)"),
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (2, 9, 'two refreshers')"),
                        (1, REFRESH_J),
                        (2, REFRESH_J),
                        (1, "COMMIT"),
                        (2, "COMMIT"),
                    ])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "writers_during_refresh",
            "writers commit while a refresh waits on a row lock of the stream table, between its delta and its end",
            404,
            |s, n| {
                base("writers_during_refresh", s, &[Rc, Rc, Rc])
                    .interleaved(&[
                        (1, "INSERT INTO a VALUES (1, 1, 'x'), (2, 2, 'x'), (3, 3, 'x')"),
                        (0, REFRESH_G),
                        (2, "BEGIN"),
                        (2, "SELECT * FROM g FOR UPDATE"),
                        (1, "INSERT INTO a VALUES (1, 4, 'y')"),
                        (0, REFRESH_G),
                        (3, "INSERT INTO a VALUES (2, 5, 'committed while the refresh waits')"),
                        (3, "UPDATE a SET v = v + 1 WHERE k = 3"),
                        (2, "COMMIT"),
                    ])
                    .interleaved(&[
                        (2, "BEGIN"),
                        (2, "SELECT * FROM j FOR UPDATE"),
                        (1, "BEGIN"),
                        (1, "DELETE FROM a WHERE s = 'x'"),
                        (0, REFRESH_J),
                        (3, "INSERT INTO b VALUES (1, 1), (2, 2)"),
                        (1, "COMMIT"),
                        (2, "COMMIT"),
                    ])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "rollback_after_refresh_looked",
            "transactions whose changes were in the buffer when a refresh looked, then rolled back (directly or prepared)",
            405,
            |s, n| {
                base("rollback_after_refresh_looked", s, &[Rc, Rc])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (4, 40, 'doomed')"),
                        (1, "DELETE FROM b WHERE k = 4"),
                        (0, REFRESH_G),
                        (0, REFRESH_J),
                        (1, "ROLLBACK"),
                    ])
                    .interleaved(&[
                        (2, "BEGIN"),
                        (2, "UPDATE a SET v = -1 WHERE k = 1"),
                        (2, "PREPARE TRANSACTION 'pgt_oracle_doomed'"),
                        (0, REFRESH_G),
                    ])
                    .interleaved(&[(0, "ROLLBACK PREPARED 'pgt_oracle_doomed'"), (0, REFRESH_G)])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "aborted_subtransactions",
            "subtransactions that abort while their parent commits, including one that refreshed",
            406,
            |s, n| {
                base("aborted_subtransactions", s, &[Rc, Rr])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (0, 1, 'parent')"),
                        (1, "SAVEPOINT s1"),
                        (1, "INSERT INTO a VALUES (0, 2, 'aborted child')"),
                        (1, "UPDATE a SET v = v + 50 WHERE k = 1"),
                        (1, "SAVEPOINT s2"),
                        (1, "DELETE FROM b"),
                        (1, "ROLLBACK TO SAVEPOINT s1"),
                        (1, "SAVEPOINT s3"),
                        (1, "INSERT INTO a VALUES (0, 3, 'kept child')"),
                        (1, "RELEASE SAVEPOINT s3"),
                        (0, REFRESH_G),
                        (1, "COMMIT"),
                    ])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (0, 4, 'before savepoint')"),
                        (1, "SAVEPOINT s"),
                        (1, "INSERT INTO a VALUES (0, 5, 'seen by an aborted refresh')"),
                        (1, REFRESH_G),
                        (1, "ROLLBACK TO SAVEPOINT s"),
                        (1, "INSERT INTO a VALUES (0, 6, 'after rollback to savepoint')"),
                        (1, REFRESH_G),
                        (1, "COMMIT"),
                    ])
                    .interleaved(&[
                        (2, "BEGIN"),
                        (2, "SAVEPOINT s"),
                        (2, "INSERT INTO a VALUES (1, 7, 'repeatable read child')"),
                        (2, "ROLLBACK TO SAVEPOINT s"),
                        (2, "INSERT INTO b VALUES (0, 1)"),
                        (0, REFRESH_J),
                        (2, "COMMIT"),
                    ])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "two_phase_commit",
            "PREPARE TRANSACTION, a refresh, then COMMIT PREPARED or ROLLBACK PREPARED; a prepared refresh",
            407,
            |s, n| {
                base("two_phase_commit", s, &[Rc, Rc])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (2, 20, 'prepared')"),
                        (1, "INSERT INTO b VALUES (2, 21)"),
                        (1, "PREPARE TRANSACTION 'pgt_oracle_p1'"),
                        (0, REFRESH_G),
                        (2, "INSERT INTO a VALUES (2, 22, 'after prepare')"),
                    ])
                    .interleaved(&[(0, REFRESH_J), (0, "COMMIT PREPARED 'pgt_oracle_p1'")])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "DELETE FROM a WHERE s = 'prepared'"),
                        (1, "PREPARE TRANSACTION 'pgt_oracle_p2'"),
                        (0, REFRESH_G),
                        (0, "ROLLBACK PREPARED 'pgt_oracle_p2'"),
                    ])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (3, 23, 'prepared with a refresh')"),
                        (1, REFRESH_G),
                        (1, "PREPARE TRANSACTION 'pgt_oracle_p3'"),
                        (0, REFRESH_G),
                        (2, "COMMIT PREPARED 'pgt_oracle_p3'"),
                    ])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "isolation_levels",
            "writers and refreshes at REPEATABLE READ and SERIALIZABLE, including a refresh whose snapshot predates the last one",
            408,
            |s, n| {
                base("isolation_levels", s, &[Rr, Sr, Rc])
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "SELECT count(*) FROM a"),
                        (3, "INSERT INTO a VALUES (1, 30, 'after the snapshot')"),
                        (0, REFRESH_G),
                        (1, "INSERT INTO a VALUES (1, 31, 'old snapshot')"),
                        (1, REFRESH_G),
                        (1, "COMMIT"),
                    ])
                    .interleaved(&[
                        (2, "BEGIN"),
                        (2, "SELECT sum(v) FROM a WHERE k = 2"),
                        (3, "UPDATE a SET v = v + 1 WHERE k = 2"),
                        (2, "INSERT INTO a VALUES (2, 32, 'serializable')"),
                        (0, REFRESH_G),
                        (2, "COMMIT"),
                    ])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "readers_at_different_frontiers",
            "stream tables over one change buffer refreshed at different moments while transactions stay open",
            409,
            |s, n| {
                base("readers_at_different_frontiers", s, &[Rc, Rc])
                    .diff("g2", "SELECT k, count(*) AS n FROM a GROUP BY k")
                    .interleaved_partial(
                        &[(1, "BEGIN"), (1, "INSERT INTO a VALUES (1, 1, 'pending')"), (2, "INSERT INTO a VALUES (2, 2, 'now')")],
                        &["g2"],
                    )
                    .interleaved_partial(&[(1, "COMMIT"), (2, "DELETE FROM a WHERE k = 3")], &["g", "j"])
                    .interleaved(&[(2, "UPDATE a SET v = v + 1")])
                    .random_interleaved_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "scheduler_racing_manual_refresh",
            "the live scheduler refreshes on its schedule and on wake while manual refreshes and writers race it",
            410,
            |s, n| {
                base("scheduler_racing_manual_refresh", s, &[Rc, Rc])
                    .scheduled("1s")
                    .interleaved(&[
                        (1, "INSERT INTO a VALUES (1, 1, 'woken')"),
                        (0, REFRESH_G),
                        (2, "BEGIN"),
                        (2, "INSERT INTO a VALUES (1, 2, 'manual in txn')"),
                        (2, REFRESH_G),
                        (1, "UPDATE a SET v = v + 1 WHERE k = 1"),
                        (2, "COMMIT"),
                    ])
                    .random_interleaved_steps(n.div_ceil(3).max(3))
                    .build()
            },
        ),
        Entry::new(
            "scheduler_with_writers",
            "the live scheduler alone keeps stream tables fresh while transactions interleave",
            411,
            |s, n| {
                base("scheduler_with_writers", s, &[Rc, Rr, Rc])
                    .diff("top", "SELECT k, count(*) AS n, sum(w) AS total FROM j GROUP BY k")
                    .scheduled("1s")
                    .interleaved(&[
                        (1, "BEGIN"),
                        (1, "INSERT INTO a VALUES (2, 1, 'slow')"),
                        (3, "INSERT INTO b VALUES (2, 3)"),
                    ])
                    .interleaved(&[(1, "COMMIT")])
                    .random_interleaved_steps(n.div_ceil(3).max(3))
                    .build()
            },
        ),
    ]
}
