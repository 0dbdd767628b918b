//! `ORDER BY ... LIMIT [OFFSET]`: rows and groups entering and leaving
//! the first `n` as their values change, the last kept row deleted (a row
//! from beyond the limit must take its place), ties at the boundary (the
//! oracle accepts any tied row, see `ties`), NULLs sorting first and last,
//! an OFFSET, and top-k over a union and over rows filtered by a subquery.

use super::{table_a, table_b, Entry};
use crate::workload::Builder;

fn tail(steps: usize) -> usize {
    steps.div_ceil(2)
}

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "top_k_rows",
            "the first rows of a table and of a join: rows enter and leave as values change, \
             the last kept row goes, ties at the boundary, NULLs first and last, an OFFSET",
            701,
            |s, n| {
                Builder::new("top_k_rows", s)
                    .table(table_a(), 12)
                    .table(table_b(), 8)
                    .diff("top3", "SELECT k, v, s FROM a ORDER BY v DESC, k LIMIT 3")
                    .diff("low_nulls", "SELECT k, v FROM a ORDER BY v NULLS FIRST LIMIT 4")
                    .diff("paged", "SELECT k, v FROM a ORDER BY v, k LIMIT 3 OFFSET 2")
                    .diff(
                        "joined",
                        "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k ORDER BY b.w DESC LIMIT 2",
                    )
                    .step(&["INSERT INTO a VALUES (1, 1000, 'top')"])
                    .step(&["UPDATE a SET v = -5 WHERE s = 'top'"])
                    .step(&["DELETE FROM a WHERE v = (SELECT max(v) FROM a)"])
                    .step(&["INSERT INTO a VALUES (2, 999, 't1'), (3, 999, 't2'), (4, 999, 't3'), (5, 999, 't4')"])
                    .step(&["DELETE FROM a WHERE s = 't2'", "INSERT INTO a VALUES (NULL, NULL, 'null')"])
                    .step(&["UPDATE a SET v = v - 1000 WHERE v >= 999"])
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (1, 1, 'x'), (1, 1, 'x'), (2, 2, 'y')", "INSERT INTO b VALUES (1, 5), (2, 5)"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "top_k_groups",
            "the first groups by an aggregate (TPC-H Q3 and Q10's shape): groups overtake each \
             other, a group empties, ties in the aggregate, a union and a filtered query ranked",
            702,
            |s, n| {
                Builder::new("top_k_groups", s)
                    .table(table_a(), 14)
                    .table(table_b(), 8)
                    .diff(
                        "biggest",
                        "SELECT k, sum(v) AS total, count(*) AS n FROM a GROUP BY k \
                         ORDER BY total DESC NULLS LAST, k LIMIT 2",
                    )
                    .diff(
                        "busiest",
                        "SELECT k, count(*) AS n FROM a GROUP BY k ORDER BY 2 DESC LIMIT 1",
                    )
                    .diff(
                        "ranked_union",
                        "SELECT k, v FROM a UNION ALL SELECT k, w FROM b ORDER BY v DESC LIMIT 3",
                    )
                    .diff(
                        "ranked_filtered",
                        "SELECT k, v FROM a WHERE k IN (SELECT k FROM b WHERE w > 2) \
                         ORDER BY v, k LIMIT 3",
                    )
                    .step(&["INSERT INTO a VALUES (90, 500, 'g')"])
                    .step(&["INSERT INTO a VALUES (91, 300, 'h'), (91, 300, 'h')"])
                    .step(&["DELETE FROM a WHERE k = 90"])
                    .step(&[
                        "UPDATE a SET v = 0 WHERE k = 91",
                        "INSERT INTO b VALUES (91, 3)",
                    ])
                    .step(&["INSERT INTO a VALUES (92, 600, 'i'), (93, 600, 'j')"])
                    .step(&[
                        "DELETE FROM a WHERE k IN (92, 93)",
                        "DELETE FROM b WHERE k = 91",
                    ])
                    .random_steps(tail(n))
                    .build()
            },
        ),
    ]
}
