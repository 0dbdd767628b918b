//! LEFT, RIGHT and FULL joins, without grouping (kept by their rows'
//! values) and under GROUP BY, DISTINCT, a subquery in FROM and an EXISTS.
//! Scripted steps aim at what padding gets wrong: a kept row's first match
//! arriving (its NULL-padded row must go) and its last match leaving (it
//! must come back), duplicate matches, NULL join keys on either side, a
//! row and its match changing in one step, and keys moving between
//! matches; random steps follow.

use super::{table_a, table_b, table_c, Entry};
use crate::workload::Builder;

fn tail(steps: usize) -> usize {
    steps.div_ceil(2)
}

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "left_join_rows",
            "LEFT JOIN rows without grouping: the padded row goes when a first match arrives and \
             comes back when the last leaves, duplicate matches, NULL keys, an anti-join and a chain",
            601,
            |s, n| {
                Builder::new("left_join_rows", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff(
                        "lj",
                        "SELECT a.k, a.v, b.w FROM a LEFT JOIN b ON a.k = b.k",
                    )
                    .diff(
                        "anti",
                        "SELECT a.k, a.s FROM a LEFT JOIN b ON a.k = b.k AND b.w > 3 WHERE b.k IS NULL",
                    )
                    .diff(
                        "chain",
                        "SELECT a.k, b.w, c.amount FROM a LEFT JOIN b ON a.k = b.k \
                         LEFT JOIN c ON b.w = c.x",
                    )
                    .diff(
                        // Four occurrences: more changed ones than a
                        // specialised plan combines by inclusion-exclusion
                        // unless it has outer joins.
                        "chain4",
                        "SELECT a.k, b.w, c.amount, b2.w AS w2 FROM a LEFT JOIN b ON a.k = b.k \
                         LEFT JOIN c ON b.w = c.x LEFT JOIN b b2 ON b2.k = a.v",
                    )
                    .diff(
                        // `v` in the condition is a's alone there, not
                        // once another a joins the FROM.
                        "unqualified",
                        "SELECT a.k, b.w, a2.s FROM a LEFT JOIN b ON b.k = a.k AND v > 3 \
                         JOIN a a2 ON a2.k = a.k",
                    )
                    .step(&["INSERT INTO a VALUES (40, 1, 'lonely')"])
                    .step(&["INSERT INTO b VALUES (40, 7)"])
                    .step(&["INSERT INTO b VALUES (40, 7), (40, 2)"])
                    .step(&["DELETE FROM b WHERE k = 40"])
                    .step(&["INSERT INTO a VALUES (NULL, 2, 'null k')", "INSERT INTO b VALUES (NULL, 9)"])
                    .step(&["UPDATE b SET k = 41 WHERE k IS NULL", "UPDATE a SET k = 41 WHERE k IS NULL"])
                    .step(&["INSERT INTO c VALUES (7, 1.5)", "INSERT INTO b VALUES (41, 7)"])
                    .step(&["UPDATE b SET k = 40 WHERE k = 41", "DELETE FROM a WHERE k = 41"])
                    // A kept row leaves as its first match arrives, on
                    // every source at once.
                    .step(&["INSERT INTO a VALUES (42, 42, 'gone'), (43, 1, 'stays')"])
                    .step(&[
                        "DELETE FROM a WHERE k = 42",
                        "INSERT INTO b VALUES (42, 8), (43, 8)",
                        "INSERT INTO c VALUES (8, 0.5)",
                    ])
                    .step(&["DELETE FROM b"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "right_and_full_joins",
            "RIGHT and FULL joins: each side's rows padded by the other's changes, a non-equi \
             condition, both sides changing in one step, and a FULL join under GROUP BY",
            602,
            |s, n| {
                Builder::new("right_and_full_joins", s)
                    .table(table_a(), 8)
                    .table(table_b(), 8)
                    .diff(
                        "rj",
                        "SELECT a.k AS ak, a.v, b.k AS bk, b.w FROM a RIGHT JOIN b ON a.k = b.k",
                    )
                    .diff(
                        "fj",
                        "SELECT a.k AS ak, a.v, b.k AS bk, b.w FROM a FULL JOIN b \
                         ON a.k = b.k AND a.v < b.w",
                    )
                    .diff(
                        "fjg",
                        "SELECT coalesce(a.k, b.k) AS k, count(a.v) AS na, count(b.w) AS nb, \
                         count(*) AS n FROM a FULL JOIN b ON a.k = b.k GROUP BY coalesce(a.k, b.k)",
                    )
                    .step(&["INSERT INTO b VALUES (50, 30)"])
                    .step(&["INSERT INTO a VALUES (50, 1, 'x'), (50, 40, 'y')"])
                    .step(&["UPDATE a SET v = 0 WHERE k = 50", "UPDATE b SET w = 35 WHERE k = 50"])
                    .step(&["DELETE FROM a WHERE k = 50", "INSERT INTO a VALUES (NULL, 1, 'n')"])
                    .step(&["INSERT INTO b VALUES (NULL, 3)", "UPDATE a SET k = 51 WHERE k IS NULL"])
                    .step(&["DELETE FROM b WHERE k = 50 OR k IS NULL"])
                    .step(&["DELETE FROM a"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "grouped_outer_joins",
            "outer joins under GROUP BY (counts of the padded side, TPC-H Q13's inner block), \
             DISTINCT, a subquery in FROM and an EXISTS body",
            603,
            |s, n| {
                Builder::new("grouped_outer_joins", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff(
                        "per_a",
                        "SELECT a.k, count(b.w) AS n, sum(b.w) AS total FROM a \
                         LEFT JOIN b ON a.k = b.k AND b.w <> 5 GROUP BY a.k",
                    )
                    .diff(
                        "dist",
                        "SELECT DISTINCT b.w FROM a LEFT JOIN b ON a.k = b.k",
                    )
                    .diff(
                        "over_sub",
                        "SELECT s.w, count(*) AS n FROM (SELECT a.k, b.w FROM a LEFT JOIN b \
                         ON a.k = b.k) s GROUP BY s.w",
                    )
                    .diff(
                        "unioned",
                        "SELECT a.k, b.w FROM a LEFT JOIN b ON a.k = b.k UNION ALL \
                         SELECT b.k, c.x FROM b FULL JOIN c ON b.w = c.x",
                    )
                    .diff(
                        "in_exists",
                        "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b \
                         LEFT JOIN c ON b.w = c.x WHERE b.k = a.k AND c.x IS NULL) GROUP BY k",
                    )
                    .step(&["INSERT INTO a VALUES (60, 1, 'p')"])
                    .step(&["INSERT INTO b VALUES (60, 5)"])
                    .step(&["UPDATE b SET w = 6 WHERE k = 60"])
                    .step(&["INSERT INTO c VALUES (6, 2.5)"])
                    .step(&["DELETE FROM c WHERE x = 6", "INSERT INTO b VALUES (60, 6)"])
                    .step(&["UPDATE b SET k = NULL WHERE k = 60"])
                    .step(&["DELETE FROM b"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
    ]
}
