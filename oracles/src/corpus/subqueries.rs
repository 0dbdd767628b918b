//! Subqueries in expressions under a grouped or DISTINCT query: EXISTS,
//! NOT EXISTS, IN, NOT IN and scalar subqueries, correlated and not,
//! nested, and over the same table. Scripted steps aim at what the links
//! between a subquery and its enclosing rows get wrong: NULLs entering and
//! leaving a NOT IN list, a subquery becoming empty, matches coming and
//! going for one correlation value, and rows changing on both sides at
//! once; random steps follow.

use super::algebraic::table_d;
use super::{table_a, table_b, table_c, Entry};
use crate::workload::Builder;

fn tail(steps: usize) -> usize {
    steps.div_ceil(2)
}

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "exists_and_not_exists",
            "groups of rows with and without a correlated match; matches come and go, keys are NULL, \
             both sides change in one step",
            501,
            |s, n| {
                Builder::new("exists_and_not_exists", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .diff(
                        "ex",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w > 3) GROUP BY k",
                    )
                    .diff(
                        "nex",
                        "SELECT s, count(*) AS n FROM a \
                         WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k) GROUP BY s",
                    )
                    .diff(
                        "dex",
                        "SELECT DISTINCT v FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.w = a.v)",
                    )
                    .step(&["INSERT INTO b VALUES (1, 10), (1, 11)"])
                    .step(&["DELETE FROM b WHERE k = 1 AND w = 10"])
                    .step(&["DELETE FROM b WHERE k = 1"])
                    .step(&["INSERT INTO a VALUES (NULL, 4, 'n')", "INSERT INTO b VALUES (NULL, 4)"])
                    .step(&["UPDATE b SET k = 2 WHERE k IS NULL", "UPDATE a SET k = 2 WHERE k IS NULL"])
                    .step(&["UPDATE b SET w = 1 WHERE k = 2"])
                    .step(&["DELETE FROM b"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "in_and_not_in_with_nulls",
            "IN and NOT IN lists, uncorrelated and correlated: a NULL enters and leaves the list \
             (NOT IN turns NULL for every row), the list empties, tested values are NULL",
            502,
            |s, n| {
                Builder::new("in_and_not_in_with_nulls", s)
                    .table(table_a(), 10)
                    .table(table_b(), 6)
                    .diff(
                        "nin",
                        "SELECT k, count(*) AS n FROM a WHERE v NOT IN (SELECT w FROM b) GROUP BY k",
                    )
                    .diff(
                        "inl",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE v IN (SELECT w FROM b WHERE w IS NOT NULL) GROUP BY k",
                    )
                    .diff(
                        "ninc",
                        "SELECT k, count(*) AS n FROM a \
                         WHERE v NOT IN (SELECT w FROM b WHERE b.k = a.k) GROUP BY k",
                    )
                    .diff(
                        "inflag",
                        "SELECT s, count(*) AS n, bool_or(v IN (SELECT w FROM b)) AS any_in FROM a GROUP BY s",
                    )
                    .step(&["INSERT INTO b VALUES (1, NULL)"])
                    .step(&["INSERT INTO a VALUES (1, NULL, 'null v')"])
                    .step(&["DELETE FROM b WHERE w IS NULL"])
                    .step(&["DELETE FROM b"])
                    .step(&["INSERT INTO b VALUES (2, 5), (2, 5), (3, NULL)"])
                    .step(&["UPDATE b SET w = 6 WHERE w IS NULL", "UPDATE a SET v = 6 WHERE v IS NULL"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "scalar_subqueries",
            "scalar subqueries in WHERE, HAVING and the select list, correlated and not: \
             the compared value moves, its group empties (NULL), rows on both sides change",
            503,
            |s, n| {
                Builder::new("scalar_subqueries", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .diff(
                        "above",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE v > (SELECT avg(w) FROM b WHERE b.k = a.k) GROUP BY k",
                    )
                    .diff(
                        "below_max",
                        "SELECT k, count(*) AS n FROM a WHERE v < (SELECT max(w) FROM b) GROUP BY k",
                    )
                    .diff(
                        "above_share",
                        "SELECT k, sum(v) AS total FROM a GROUP BY k \
                         HAVING sum(v) > (SELECT sum(w) / 4 FROM b)",
                    )
                    .diff(
                        "listed",
                        "SELECT k, count(*) AS n, (SELECT count(*) FROM b WHERE b.k = a.k) AS matches \
                         FROM a GROUP BY k",
                    )
                    .step(&["INSERT INTO b VALUES (1, 100)"])
                    .step(&["UPDATE b SET w = 0 WHERE k = 1"])
                    // Step 3 leaves a matched pair (k = 2): the negative
                    // control doubles b there and must see `listed` change.
                    .step(&["DELETE FROM b WHERE k = 1", "INSERT INTO a VALUES (2, 2, 'two')", "INSERT INTO b VALUES (2, 2)"])
                    .step(&["INSERT INTO b VALUES (2, 1)", "UPDATE a SET v = v + 5 WHERE k = 2"])
                    .step(&["DELETE FROM b"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "nested_and_self_subqueries",
            "a subquery inside a subquery (correlated to its parent, and not), an IN over a grouped \
             subquery, and a subquery over the same table (the top row per group)",
            504,
            |s, n| {
                Builder::new("nested_and_self_subqueries", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff(
                        "nested",
                        "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k \
                         AND EXISTS (SELECT 1 FROM c WHERE c.x = b.w)) GROUP BY k",
                    )
                    .diff(
                        "nested_in",
                        "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k \
                         AND b.w IN (SELECT x FROM c WHERE amount > 10)) GROUP BY k",
                    )
                    .diff(
                        "in_grouped",
                        "SELECT k, count(*) AS n FROM a WHERE k IN \
                         (SELECT k FROM b GROUP BY k HAVING sum(w) > 20) GROUP BY k",
                    )
                    .diff(
                        "in_grouped_qualified",
                        "SELECT a.k, count(*) AS n, sum(a.v) AS total FROM a WHERE a.v > 0 AND a.k IN \
                         (SELECT b.k FROM b GROUP BY b.k HAVING sum(b.w) > 20) GROUP BY a.k",
                    )
                    .diff(
                        "top_per_group",
                        "SELECT k, count(*) AS n, min(s) AS first_s FROM a \
                         WHERE v >= (SELECT max(v) FROM a a2 WHERE a2.k = a.k) GROUP BY k",
                    )
                    .step(&["INSERT INTO c VALUES (1, 50)", "INSERT INTO b VALUES (3, 1)"])
                    .step(&["UPDATE c SET amount = 5 WHERE x = 1"])
                    .step(&["UPDATE b SET w = 2 WHERE k = 3", "INSERT INTO c VALUES (2, 20)"])
                    .step(&["INSERT INTO a VALUES (3, 99, 'top')"])
                    .step(&["DELETE FROM a WHERE s = 'top'"])
                    .step(&["INSERT INTO b VALUES (4, 30)", "DELETE FROM c"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "subquery_in_from_with_subqueries",
            "a subquery in FROM (and a UNION ALL inside one) whose rows subqueries filter, under GROUP BY \
             (TPC-H Q22's shape): rows leave and enter it through the subqueries alone",
            505,
            |s, n| {
                Builder::new("subquery_in_from_with_subqueries", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff(
                        "filtered",
                        "SELECT s.k, count(*) AS n, sum(s.v) AS total FROM (SELECT k, v FROM a \
                         WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k) AND v > (SELECT avg(w) FROM b)) s \
                         GROUP BY s.k",
                    )
                    .diff(
                        "branches",
                        "SELECT g, count(*) AS n FROM (SELECT a.k % 3 AS g FROM a JOIN c ON c.x = a.v \
                         WHERE a.k IN (SELECT k FROM b) UNION ALL SELECT k FROM b WHERE w IN (SELECT x FROM c)) s \
                         GROUP BY g",
                    )
                    .step(&["INSERT INTO b VALUES (1, 1)"])
                    .step(&["INSERT INTO b VALUES (9, 1000)"])
                    .step(&["DELETE FROM b WHERE w = 1000", "INSERT INTO c VALUES (1, 1)"])
                    .step(&["UPDATE a SET v = 1 WHERE k = 2", "DELETE FROM b WHERE k = 1"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "rows_filtered_by_subqueries",
            "queries without grouping whose rows subqueries filter (TPC-H Q20's shape), kept as a bag: \
             equal rows come and go one copy at a time, NULL outputs, joins and nesting",
            506,
            |s, n| {
                Builder::new("rows_filtered_by_subqueries", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff("ins", "SELECT k, v FROM a WHERE k IN (SELECT k FROM b)")
                    .diff(
                        "joined",
                        "SELECT a.k, b.w FROM a JOIN b ON a.k = b.k \
                         WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.x = a.v)",
                    )
                    .diff("above_avg", "SELECT s, v FROM a WHERE v > (SELECT avg(w) FROM b)")
                    .diff(
                        "nested",
                        "SELECT s FROM a WHERE k IN (SELECT k FROM b WHERE w IN (SELECT x FROM c) \
                         AND w > (SELECT count(*) FROM a a2 WHERE a2.k = b.k))",
                    )
                    .step(&["INSERT INTO a VALUES (1, 1, 'dup'), (1, 1, 'dup'), (1, 1, 'dup')", "INSERT INTO b VALUES (1, 5)"])
                    .step(&["DELETE FROM a WHERE ctid IN (SELECT ctid FROM a WHERE s = 'dup' LIMIT 1)"])
                    .step(&["INSERT INTO b VALUES (1, 6)", "INSERT INTO c VALUES (1, 1.00)"])
                    .step(&["DELETE FROM b WHERE k = 1 AND w = 5"])
                    .step(&["INSERT INTO a VALUES (NULL, NULL, NULL)", "INSERT INTO b VALUES (NULL, NULL)"])
                    .step(&["DELETE FROM b WHERE k = 1", "UPDATE a SET s = NULL WHERE s = 'dup'"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "bags_by_plain_outputs",
            "rows a select-list subquery changes without their FROM row changing, kept as a bag by              their other outputs: without grouping, under DISTINCT (only subquery outputs too),              DISTINCT over groups, and a UNION ALL with a filtered branch",
            507,
            |s, n| {
                Builder::new("bags_by_plain_outputs", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .diff(
                        "listed",
                        "SELECT k, v, (SELECT max(w) FROM b WHERE b.k = a.k) AS top FROM a",
                    )
                    .diff(
                        "dlisted",
                        "SELECT DISTINCT s, (SELECT count(*) FROM b WHERE b.k = a.k) AS n FROM a",
                    )
                    .diff(
                        "only_sub",
                        "SELECT DISTINCT (SELECT count(*) FROM b WHERE b.k = a.k) AS n FROM a",
                    )
                    .diff(
                        "dgroups",
                        "SELECT DISTINCT k, count(*) AS n FROM a GROUP BY k, s",
                    )
                    .diff(
                        "unioned",
                        "SELECT k, v FROM a WHERE k IN (SELECT k FROM b) UNION ALL SELECT k, w FROM b",
                    )
                    .step(&["INSERT INTO a VALUES (70, 1, 'x'), (70, 1, 'x')", "INSERT INTO b VALUES (70, 3)"])
                    .step(&["INSERT INTO b VALUES (70, 9)"])
                    .step(&["UPDATE b SET w = NULL WHERE k = 70 AND w = 9", "INSERT INTO a VALUES (70, 2, 'y')"])
                    .step(&["DELETE FROM b WHERE k = 70"])
                    .step(&["UPDATE a SET s = 'x' WHERE k = 70", "INSERT INTO a VALUES (NULL, NULL, NULL)"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "filters_kept_algebraically",
            "count, sum, min and max over rows EXISTS, NOT EXISTS and IN filter, kept by adding what \
             changed (TPC-H Q4's shape): a match's truth flips for rows that did not change, the \
             subquery reads the filtered table itself, joins or compares with another correlation, \
             and both sides change in one step",
            508,
            |s, n| {
                Builder::new("filters_kept_algebraically", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff(
                        "late",
                        "SELECT s, count(*) AS n FROM a WHERE v > 0 \
                         AND EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.w < a.v) GROUP BY s",
                    )
                    .diff(
                        "not_top",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE EXISTS (SELECT 1 FROM a a2 WHERE a2.k = a.k AND a2.v > a.v) GROUP BY k",
                    )
                    .diff(
                        "two_filters",
                        "SELECT k, count(*) AS n, min(v) AS lo, max(v) AS hi FROM a \
                         WHERE EXISTS (SELECT 1 FROM b JOIN c ON c.x = b.w WHERE b.k = a.k) \
                         AND NOT EXISTS (SELECT 1 FROM c WHERE c.x = a.v) GROUP BY k",
                    )
                    .diff(
                        "listed_total",
                        "SELECT count(*) AS n, sum(v) AS total FROM a WHERE k IN (SELECT k FROM b WHERE w > 2)",
                    )
                    .diff(
                        "joined",
                        "SELECT a.k, count(*) AS n, sum(c.amount) AS total FROM a JOIN c ON c.x = a.v \
                         WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) GROUP BY a.k",
                    )
                    .diff(
                        "listed_by_key",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE v IN (SELECT w FROM b WHERE b.k = a.k) GROUP BY k",
                    )
                    .diff(
                        "from_subquery",
                        "SELECT x.k, count(*) AS n FROM (SELECT k, v FROM a WHERE v > 0) x \
                         WHERE EXISTS (SELECT 1 FROM (SELECT k FROM b WHERE w > 2) bb WHERE bb.k = x.k) GROUP BY x.k",
                    )
                    .diff(
                        "unmatched_pair",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND a.v = b.w AND b.w > 0) GROUP BY k",
                    )
                    .step(&["INSERT INTO b VALUES (1, 0), (1, 0)"])
                    .step(&["DELETE FROM b WHERE k = 1 AND w = 0"])
                    .step(&["INSERT INTO a VALUES (2, 50, 'hi'), (2, 1, 'lo')", "INSERT INTO b VALUES (2, 3)"])
                    .step(&["UPDATE a SET v = 0 WHERE v = 50", "UPDATE b SET w = 4 WHERE k = 2"])
                    .step(&["INSERT INTO c VALUES (1, 7)", "UPDATE b SET w = 1 WHERE k = 2", "DELETE FROM a WHERE s = 'lo'"])
                    .step(&["UPDATE a SET k = NULL WHERE k = 2", "UPDATE b SET k = NULL WHERE k = 2"])
                    .step(&["DELETE FROM b", "UPDATE a SET v = v + 1"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "aggregate_filters_kept_algebraically",
            "count, sum and max over rows a comparison with a correlated aggregate filters (TPC-H \
             Q17's shape), kept by adding what changed: the aggregate's value crosses a row's for \
             rows that did not change, its rows all leave (NULL), a numeric avg over values of \
             mixed scales, the subquery reads the filtered table itself or a join, NULL keys, and \
             both sides change in one step",
            509,
            |s, n| {
                Builder::new("aggregate_filters_kept_algebraically", s)
                    .table(table_a(), 10)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .table(table_d(), 8)
                    .diff(
                        "below_avg",
                        "SELECT sum(v) AS total, count(*) AS n FROM a \
                         WHERE v < (SELECT 0.5 * avg(w) FROM b WHERE b.k = a.k)",
                    )
                    .diff(
                        "counted",
                        "SELECT k, count(*) AS n FROM a WHERE (SELECT count(*) FROM b WHERE b.k = a.k) >= 2 GROUP BY k",
                    )
                    .diff(
                        "over_decimal",
                        "SELECT k, count(*) AS n, sum(v) AS total FROM a \
                         WHERE v >= (SELECT avg(x) * 2 FROM d WHERE d.k = a.k) GROUP BY k",
                    )
                    .diff(
                        "top_of_key",
                        "SELECT k, count(*) AS n, max(s) AS hi FROM a \
                         WHERE v = (SELECT max(a2.v) FROM a a2 WHERE a2.k = a.k) GROUP BY k",
                    )
                    .diff(
                        "joined_min",
                        "SELECT s, count(*) AS n FROM a \
                         WHERE v > (SELECT min(c.amount) FROM b JOIN c ON c.x = b.w WHERE b.k = a.k) \
                         AND EXISTS (SELECT 1 FROM c WHERE c.x = a.v) GROUP BY s",
                    )
                    .diff(
                        "per_row_total",
                        "SELECT k, count(*) AS n FROM a \
                         WHERE v >= (SELECT sum(w) / count(*) FROM b WHERE b.k = a.k) GROUP BY k",
                    )
                    .step(&["INSERT INTO b VALUES (1, 100)"])
                    .step(&[
                        "INSERT INTO a VALUES (5, 2, 'n')",
                        "INSERT INTO b VALUES (5, 4), (5, NULL), (5, NULL)",
                    ])
                    .step(&["INSERT INTO b VALUES (5, 0)"])
                    .step(&["DELETE FROM b WHERE k = 1"])
                    .step(&["INSERT INTO a VALUES (3, 5, 'q')", "INSERT INTO b VALUES (3, 20), (3, 0)"])
                    .step(&["INSERT INTO d VALUES (4, 1, 1.50), (4, 1, 1.5000)", "INSERT INTO a VALUES (4, 3, 'r')"])
                    .step(&["UPDATE d SET x = 1.5 WHERE k = 4 AND x = 1.5000", "DELETE FROM d WHERE k = 4 AND x = 1.50"])
                    .step(&["UPDATE a SET k = NULL WHERE k = 3", "UPDATE b SET k = NULL WHERE k = 1"])
                    .step(&["UPDATE a SET v = v + 3 WHERE k = 2", "DELETE FROM a WHERE v = (SELECT max(v) FROM a)"])
                    .step(&["DELETE FROM b WHERE w > 10", "UPDATE a SET v = v * 2"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "filters_in_from_and_uncorrelated",
            "count and sum over a subquery in FROM whose rows subqueries filter (TPC-H Q22's \
             shape), and filters that are uncorrelated, kept by adding what changed: the \
             uncorrelated average moves past rows that did not change, its table emptied (NULL) \
             and filled again, an uncorrelated EXISTS turning true and false, NULL keys, the \
             filtered subquery joined to a table and kept as a bag, both sides in one step",
            510,
            |s, n| {
                Builder::new("filters_in_from_and_uncorrelated", s)
                    .table(table_a(), 12)
                    .table(table_b(), 8)
                    .table(table_c(), 6)
                    .diff(
                        "q22_shape",
                        "SELECT c, count(*) AS n, sum(v) AS total FROM (SELECT k % 3 AS c, v FROM a \
                         WHERE v > (SELECT avg(w) FROM b WHERE w > 0) \
                         AND NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)) s GROUP BY c",
                    )
                    .diff(
                        "any_big",
                        "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.w > 15) GROUP BY k",
                    )
                    .diff(
                        "near_the_top",
                        "SELECT k, count(*) AS n, sum(v) AS t FROM a WHERE v >= (SELECT max(w) - 10 FROM b) GROUP BY k",
                    )
                    .diff(
                        "listed_in_from",
                        "SELECT x.k, count(*) AS n FROM (SELECT k, v FROM a \
                         WHERE v IN (SELECT w FROM b WHERE b.k = a.k)) x GROUP BY x.k",
                    )
                    .diff(
                        "joined_after",
                        "SELECT c.x, count(*) AS n, sum(c.amount) AS total FROM (SELECT k, v FROM a \
                         WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k)) s JOIN c ON c.x = s.v GROUP BY c.x",
                    )
                    .diff(
                        "as_a_bag",
                        "SELECT s.k, s.v FROM (SELECT k, v FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k) \
                         AND v < (SELECT avg(w) FROM b)) s",
                    )
                    .step(&["INSERT INTO b VALUES (1, 100)"])
                    .step(&["UPDATE b SET w = 1 WHERE w = 100"])
                    .step(&["DELETE FROM b"])
                    .step(&["INSERT INTO b VALUES (2, 16), (NULL, 3)", "INSERT INTO a VALUES (2, 40, 'q'), (NULL, 40, 'r')"])
                    .step(&["UPDATE a SET v = v + 5", "UPDATE b SET w = w - 2"])
                    .step(&["UPDATE a SET k = NULL WHERE k = 1", "DELETE FROM b WHERE k IS NULL"])
                    .step(&["INSERT INTO c VALUES (40, 1.5), (45, 2.25)", "UPDATE b SET k = 3 WHERE k = 2"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
    ]
}
