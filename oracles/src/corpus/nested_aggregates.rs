//! Aggregates, DISTINCT and window functions inside subqueries in FROM,
//! CTEs and UNION ALL branches (TPC-H Q13 and Q15's shapes): the
//! enclosing query is kept by keys, and a subquery's rows reach it in
//! their old and new values. Hard cases: an enclosing group key that is
//! the subquery's aggregate (a change moves a row between groups), the
//! same CTE in FROM and in a scalar subquery, NULL keys, duplicate rows
//! in a table without a key (its old state is found by exact row text)
//! and a table with a primary key (found by the key), a group emptied
//! and a key moved, several changes to one row. Also VALUES lists and
//! set-returning functions in FROM, which have no changes of their own,
//! `SELECT DISTINCT ON`, kept by its keys, and grouping sets, as the
//! `UNION ALL` of one grouped query per set. And ordered aggregates
//! (`string_agg(s, ',' ORDER BY s)`), whose groups are recomputed.

use super::{table_a, table_b, Entry};
use crate::workload::Builder;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "grouped_subqueries",
            "aggregates and DISTINCT in subqueries in FROM, a CTE and UNION ALL branches: \
             a group key that is an aggregate of the subquery (TPC-H Q13), the top of an \
             aggregated CTE (Q15), NULL keys, duplicate rows, groups emptied and keys moved",
            801,
            |s, n| {
                Builder::new("grouped_subqueries", s)
                    .table(table_a(), 14)
                    .table(table_b(), 10)
                    .diff(
                        "per_count",
                        "SELECT n, count(*) AS groups FROM (SELECT a.k, count(b.w) AS n \
                         FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k) s GROUP BY n",
                    )
                    .diff(
                        "top_total",
                        "WITH t AS (SELECT k, sum(v) AS total FROM a GROUP BY k) \
                         SELECT b.k, b.w, t.total FROM b JOIN t ON t.k = b.k \
                         WHERE t.total = (SELECT max(total) FROM t)",
                    )
                    .diff(
                        "distinct_join",
                        "SELECT d.k, b.w FROM (SELECT DISTINCT k FROM a) d JOIN b ON b.k = d.k",
                    )
                    .diff(
                        "whole_table",
                        "SELECT s.c, s.t, b.w FROM (SELECT count(*) AS c, sum(v) AS t FROM a) s \
                         JOIN b ON b.w < s.c",
                    )
                    .diff(
                        "union_grouped",
                        "SELECT k, count(*) AS n FROM a GROUP BY k \
                         UNION ALL SELECT k, count(*) FROM b GROUP BY k",
                    )
                    .diff(
                        "twice_nested",
                        "SELECT m, count(*) AS c FROM (SELECT n AS m FROM \
                         (SELECT k, count(*) AS n FROM a GROUP BY k) x WHERE n > 1) y GROUP BY m",
                    )
                    .diff(
                        "having_sub",
                        "SELECT s.k, s.total FROM (SELECT k, sum(v) AS total FROM a GROUP BY k \
                         HAVING count(*) > 1) s",
                    )
                    .diff(
                        "avg_groups",
                        "SELECT avg_v, count(*) AS c FROM (SELECT k, avg(v) AS avg_v FROM a \
                         GROUP BY k) s GROUP BY avg_v",
                    )
                    .diff(
                        "ranked_sub",
                        "SELECT s.k, s.v, s.r FROM (SELECT k, v, rank() OVER \
                         (PARTITION BY k ORDER BY v) AS r FROM a) s WHERE s.r <= 2",
                    )
                    .diff(
                        "set_of_groups",
                        "SELECT k FROM (SELECT k, count(*) AS n FROM a GROUP BY k) g WHERE n > 1 \
                         EXCEPT SELECT k FROM b",
                    )
                    .step(&["INSERT INTO b VALUES (1, 7), (1, 8)"])
                    .step(&["INSERT INTO a VALUES (1, 5, 'dup'), (1, 5, 'dup'), (NULL, 3, 'n')"])
                    .step(&["DELETE FROM a WHERE s = 'dup' AND ctid = (SELECT min(ctid) FROM a WHERE s = 'dup')"])
                    .step(&["UPDATE a SET k = 2 WHERE s = 'dup'", "UPDATE a SET v = v + 1 WHERE s = 'dup'"])
                    .step(&["INSERT INTO a VALUES (70, 10000, 'big')"])
                    .step(&["UPDATE a SET v = 1 WHERE s = 'big'", "DELETE FROM b WHERE k IS NULL"])
                    .step(&["DELETE FROM a WHERE k = 1", "INSERT INTO b VALUES (NULL, 1)"])
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (3, 1, 'x'), (3, 1, 'x'), (4, NULL, 'y')"])
                    // One more copy of a duplicated row: its old state keeps
                    // the two copies there were.
                    .step(&["INSERT INTO a VALUES (3, 1, 'x')"])
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "set_operations_all_and_nested",
            "INTERSECT ALL and EXCEPT ALL (copies counted per value: one copy more or less on \
             either side), chained and nested set operations, a set operation in FROM joined \
             on, sides that group; duplicates, NULLs",
            803,
            |s, n| {
                Builder::new("set_operations_all_and_nested", s)
                    .table(table_a(), 12)
                    .table(table_b(), 12)
                    .diff("common_copies", "SELECT k FROM a INTERSECT ALL SELECT k FROM b")
                    .diff("surplus_copies", "SELECT k, v FROM a EXCEPT ALL SELECT k, w FROM b")
                    .diff(
                        "chained",
                        "SELECT k FROM a UNION SELECT w FROM b EXCEPT SELECT k FROM b WHERE w > 10",
                    )
                    .diff(
                        "nested_joined",
                        "SELECT s.k, b.w FROM (SELECT k FROM a INTERSECT SELECT k FROM b) s \
                         JOIN b ON b.k = s.k",
                    )
                    .diff(
                        "grouped_sides",
                        "SELECT k, count(*) FROM a GROUP BY k EXCEPT ALL SELECT k, count(*) FROM b GROUP BY k",
                    )
                    .diff(
                        // The NULL takes the other side's type, as the set
                        // operation resolves it.
                        "typed_by_other_side",
                        "SELECT k, NULL AS w FROM a INTERSECT ALL SELECT k, w FROM b",
                    )
                    .diff(
                        "union_all_of_set_ops",
                        "(SELECT k FROM a INTERSECT SELECT k FROM b) UNION ALL \
                         (SELECT k FROM a EXCEPT ALL SELECT k FROM b)",
                    )
                    .step(&["INSERT INTO a VALUES (5, 1, 'x'), (5, 1, 'x'), (5, 2, 'y')", "INSERT INTO b VALUES (5, 1)"])
                    .step(&["INSERT INTO b VALUES (5, 1), (5, 1)"])
                    .step(&["DELETE FROM b WHERE k = 5 AND ctid = (SELECT min(ctid) FROM b WHERE k = 5)"])
                    .step(&["INSERT INTO a VALUES (NULL, NULL, 'n'), (NULL, NULL, 'n')", "INSERT INTO b VALUES (NULL, NULL)"])
                    .step(&["UPDATE a SET k = 6 WHERE k = 5 AND v = 1"])
                    .step(&["DELETE FROM a WHERE k IS NULL", "UPDATE b SET w = 20 WHERE k = 5"])
                    .step(&["DELETE FROM b"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "values_and_table_functions",
            "VALUES lists and IMMUTABLE set-returning functions in FROM, read as written: \
             a lookup list joined, generate_series over a column (rows multiply and vanish \
             with its value, NULL and negative bounds), unnest WITH ORDINALITY, grouped, \
             a constant query",
            804,
            |s, n| {
                Builder::new("values_and_table_functions", s)
                    .table(table_a(), 12)
                    .diff(
                        "labelled",
                        "SELECT a.k, v.label FROM a JOIN (VALUES (1, 'one'), (2, 'two'), (NULL, 'none')) \
                         AS v(k, label) ON v.k = a.k",
                    )
                    .diff(
                        "expanded",
                        "SELECT a.k, g FROM a, generate_series(1, a.v % 4) g WHERE a.k IS NOT NULL",
                    )
                    .diff(
                        "numbered",
                        "SELECT a.s, u.x, u.n FROM a CROSS JOIN LATERAL unnest(ARRAY[a.k, a.v, a.k]) \
                         WITH ORDINALITY AS u(x, n)",
                    )
                    .diff(
                        "per_step",
                        "SELECT g, count(*) AS c, sum(a.v) AS total FROM a, generate_series(1, 3) g \
                         WHERE a.v > g GROUP BY g",
                    )
                    .diff("constant", "VALUES (1, 'x'), (2, 'y')")
                    .step(&["INSERT INTO a VALUES (1, 3, 'p'), (1, 3, 'p')"])
                    .step(&["UPDATE a SET v = 7 WHERE s = 'p'"])
                    .step(&["UPDATE a SET v = NULL WHERE s = 'p'", "INSERT INTO a VALUES (2, -5, 'q')"])
                    .step(&["UPDATE a SET k = 2 WHERE s = 'p'", "DELETE FROM a WHERE s = 'q'"])
                    .step(&["DELETE FROM a"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "distinct_on",
            "SELECT DISTINCT ON with an ORDER BY that decides every key's row (all outputs \
             ordered): a key's first row deleted (the next one takes its place), overtaken, \
             moved to another key, NULL keys and values, over a join",
            805,
            |s, n| {
                Builder::new("distinct_on", s)
                    .table(table_a(), 12)
                    .table(table_b(), 8)
                    .diff(
                        "latest",
                        "SELECT DISTINCT ON (k) k, v, s FROM a ORDER BY k, v DESC NULLS LAST, s",
                    )
                    .diff(
                        "cheapest_match",
                        "SELECT DISTINCT ON (a.k) a.k, b.w, a.s FROM a JOIN b ON b.k = a.k \
                         WHERE a.v IS NOT NULL ORDER BY a.k, b.w, a.s",
                    )
                    .diff(
                        "by_expression",
                        "SELECT DISTINCT ON (v % 3) v % 3 AS r, k, v FROM a ORDER BY v % 3, k NULLS FIRST, v",
                    )
                    .step(&["INSERT INTO a VALUES (1, 1000, 'top'), (1, 999, 'next')"])
                    .step(&["DELETE FROM a WHERE s = 'top'"])
                    .step(&["UPDATE a SET v = 2000 WHERE s = 'next'", "INSERT INTO b VALUES (1, -1)"])
                    .step(&["UPDATE a SET k = 2 WHERE s = 'next'", "DELETE FROM b WHERE w = -1"])
                    .step(&["INSERT INTO a VALUES (NULL, NULL, 'n1'), (NULL, 5, 'n2')"])
                    .step(&["DELETE FROM a WHERE k IS NULL AND v IS NOT NULL"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "grouping_sets",
            "GROUPING SETS, ROLLUP and CUBE (one grouped query per set): NULL keys beside \
             the NULLs of rolled-up keys (told apart by GROUPING()), the grand total over an \
             emptied table, HAVING, a boolean key",
            806,
            |s, n| {
                Builder::new("grouping_sets", s)
                    .table(table_a(), 12)
                    .diff(
                        "rolled_up",
                        "SELECT k, s, count(*) AS c, sum(v) AS total FROM a GROUP BY ROLLUP (k, s)",
                    )
                    .diff(
                        "cubed",
                        "SELECT k, v > 10 AS big, grouping(k, v > 10) AS g, count(*) AS c \
                         FROM a GROUP BY CUBE (k, v > 10)",
                    )
                    .diff(
                        "chosen_sets",
                        "SELECT k, s, max(v) AS hi FROM a GROUP BY GROUPING SETS ((k), (s), ()) \
                         HAVING count(*) > 1",
                    )
                    .step(&["INSERT INTO a VALUES (NULL, 1, NULL), (NULL, 2, 'x')"])
                    .step(&["UPDATE a SET k = 3 WHERE k IS NULL"])
                    .step(&["DELETE FROM a WHERE v > 10"])
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (1, 20, 'y')"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "grouped_subqueries_keyed",
            "an aggregated subquery over tables with primary keys (the old state found by \
             key): rows re-keyed, updated several times, deleted and inserted again",
            802,
            |s, _| {
                Builder::new("grouped_subqueries_keyed", s)
                    .setup("CREATE TABLE cust (id int PRIMARY KEY, region text)")
                    .setup(
                        "CREATE TABLE ord (id int PRIMARY KEY, cust int, amount numeric(10,2), \
                         note text)",
                    )
                    .row("INSERT INTO cust SELECT g, 'r' || (g % 3) FROM generate_series(1, 8) g")
                    .row(
                        "INSERT INTO ord SELECT g, g % 6, (g * 1.5)::numeric(10,2), \
                         CASE WHEN g % 4 = 0 THEN 'special' END FROM generate_series(1, 20) g",
                    )
                    .diff(
                        "orders_per_customer",
                        "SELECT n, count(*) AS customers FROM (SELECT c.id, count(o.id) AS n \
                         FROM cust c LEFT JOIN ord o ON o.cust = c.id AND o.note IS DISTINCT FROM 'special' \
                         GROUP BY c.id) s GROUP BY n",
                    )
                    .diff(
                        "best_region",
                        "WITH r AS (SELECT c.region, sum(o.amount) AS total FROM cust c \
                         JOIN ord o ON o.cust = c.id GROUP BY c.region) \
                         SELECT region, total FROM r WHERE total = (SELECT max(total) FROM r)",
                    )
                    .diff(
                        "big_customers",
                        "SELECT c.id, c.region, s.total FROM cust c JOIN (SELECT cust, sum(amount) \
                         AS total, max(amount) AS top FROM ord GROUP BY cust) s ON s.cust = c.id \
                         WHERE s.top > 10",
                    )
                    .step(&["INSERT INTO ord VALUES (100, 1, 99.99, NULL)"])
                    .step(&[
                        "UPDATE ord SET cust = 2 WHERE id = 100",
                        "UPDATE ord SET amount = amount + 1 WHERE id = 100",
                        "UPDATE ord SET note = 'special' WHERE id = 100",
                    ])
                    .step(&["DELETE FROM ord WHERE id = 100", "INSERT INTO ord VALUES (100, 3, 5.00, NULL)"])
                    .step(&["UPDATE cust SET region = 'r9' WHERE id = 1", "DELETE FROM cust WHERE id = 2"])
                    .step(&["UPDATE ord SET id = id + 1000 WHERE cust = 4"])
                    .step(&["DELETE FROM ord WHERE cust = 5", "INSERT INTO cust VALUES (9, NULL)"])
                    .step(&["UPDATE ord SET amount = 50 WHERE id % 2 = 0"])
                    // The key goes away after planning: the plan's search by
                    // key must still find duplicate and NULL-keyed rows.
                    .step(&[
                        "ALTER TABLE ord DROP CONSTRAINT ord_pkey",
                        "ALTER TABLE ord ALTER COLUMN id DROP NOT NULL",
                        "INSERT INTO ord VALUES (7, 1, 3.00, NULL), (7, 1, 3.00, NULL), (NULL, 2, 1.00, NULL)",
                    ])
                    .step(&["INSERT INTO ord VALUES (7, 1, 3.00, NULL)", "INSERT INTO ord VALUES (NULL, 2, 1.00, NULL)"])
                    .step(&["DELETE FROM ord WHERE ctid = (SELECT min(ctid) FROM ord WHERE id = 7)"])
                    .step(&["UPDATE ord SET amount = 2.00 WHERE id IS NULL"])
                    // NULL-keyed rows in a group that joins: one kept as it
                    // was while a change reaches its group, then an equal
                    // one added beside it.
                    .step(&["INSERT INTO ord VALUES (NULL, 1, 4.00, NULL)"])
                    .step(&["INSERT INTO ord VALUES (8, 1, 2.00, NULL)"])
                    .step(&[
                        "INSERT INTO ord VALUES (NULL, 1, 4.00, NULL)",
                        "UPDATE ord SET amount = amount + 1 WHERE id = 8",
                    ])
                    .build()
            },
        ),
        Entry::new(
            "ordered_aggregates",
            "string_agg, array_agg and jsonb_agg with an ORDER BY over every argument, \
             recomputed by group: equal values tied in the order, NULLs first and last, \
             DISTINCT and FILTER, over a join, in HAVING, a group emptied and a row \
             moved between groups",
            807,
            |s, n| {
                Builder::new("ordered_aggregates", s)
                    .table(table_a(), 12)
                    .table(table_b(), 8)
                    .diff(
                        "names",
                        "SELECT k, string_agg(s, ',' ORDER BY s) AS names, \
                         array_agg(v ORDER BY v NULLS FIRST) AS vs, count(*) AS c FROM a GROUP BY k",
                    )
                    .diff(
                        "distinct_filtered",
                        "SELECT k, string_agg(DISTINCT s, ';' ORDER BY s DESC) FILTER (WHERE v > 5) AS big \
                         FROM a GROUP BY k HAVING count(*) > 1",
                    )
                    .diff(
                        "joined",
                        "SELECT a.k, array_agg(b.w ORDER BY b.w DESC NULLS LAST, a.v) AS ws, \
                         jsonb_agg(a.v ORDER BY a.v) AS js FROM a JOIN b ON b.k = a.k GROUP BY a.k",
                    )
                    .diff(
                        "everything",
                        "SELECT string_agg(s || ':' || v, '|' ORDER BY v, s || ':' || v) AS all_rows FROM a",
                    )
                    .diff(
                        "by_having",
                        "SELECT k, count(*) AS c FROM a GROUP BY k \
                         HAVING string_agg(s, ',' ORDER BY s) LIKE '%dup%'",
                    )
                    .step(&["INSERT INTO a VALUES (1, 7, 'dup'), (1, 7, 'dup'), (1, NULL, NULL)"])
                    .step(&["UPDATE a SET s = 'aaa' WHERE s = 'dup' AND ctid = (SELECT min(ctid) FROM a WHERE s = 'dup')"])
                    .step(&["UPDATE a SET k = 2 WHERE s = 'aaa'", "INSERT INTO b VALUES (2, NULL)"])
                    .step(&["DELETE FROM a WHERE k = 1"])
                    .step(&["UPDATE a SET v = v + 1 WHERE k = 2", "UPDATE a SET v = v - 1 WHERE k = 2"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "aggregates_over_grouped_subqueries",
            "count, sum, avg, min and max over a grouped or DISTINCT subquery in FROM, kept by \
             adding what changed (TPC-H Q13's shape): the subquery's rows of the keys a change \
             reaches, new ones in and old ones out; a row moved between enclosing groups, a \
             subquery group emptied or filtered out by HAVING, NULL keys, nested numeric sums \
             whose largest scale comes and goes, a scalar subquery, UNION ALL of grouped \
             branches, twice nested and joined to a table; the old rows read narrowed to the \
             reached keys through a LEFT join and WHERE equalities, and not narrowed when the \
             key is on the NULL-extended side",
            808,
            |s, n| {
                Builder::new("aggregates_over_grouped_subqueries", s)
                    .table(table_a(), 12)
                    .table(table_b(), 8)
                    .table(super::algebraic::table_d(), 10)
                    .diff(
                        "per_count",
                        "SELECT n, count(*) AS groups, sum(t) AS total FROM (SELECT a.k, count(b.w) AS n, \
                         sum(a.v) AS t FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k) s GROUP BY n",
                    )
                    .diff(
                        "over_all_groups",
                        "SELECT count(*) AS groups, sum(n) AS rows, max(n) AS biggest, min(n) AS smallest, \
                         avg(n) AS mean FROM (SELECT k, count(*) AS n FROM a GROUP BY k) s",
                    )
                    .diff(
                        "distinct_pairs",
                        "SELECT k, count(*) AS pairs FROM (SELECT DISTINCT k, v FROM a) s GROUP BY k",
                    )
                    .diff(
                        "having_groups",
                        "SELECT n, count(*) AS c FROM (SELECT k, count(*) AS n FROM a GROUP BY k \
                         HAVING count(*) > 1) s GROUP BY n",
                    )
                    .diff(
                        "having_a_sum",
                        "SELECT n, count(*) AS c FROM (SELECT k, count(*) AS n FROM a GROUP BY k \
                         HAVING sum(v) > 5) s GROUP BY n",
                    )
                    .diff(
                        "decimal_sums",
                        "SELECT v, count(*) AS c, sum(t) AS total, avg(t) AS mean FROM \
                         (SELECT k, v, sum(x) AS t FROM d GROUP BY k, v) s GROUP BY v",
                    )
                    .diff(
                        "joined_to_table",
                        "SELECT b.w, count(*) AS c, sum(s.n) AS total FROM b JOIN \
                         (SELECT k, count(*) AS n FROM a GROUP BY k) s ON s.k = b.k GROUP BY b.w",
                    )
                    .diff(
                        "twice_nested",
                        "SELECT m, count(*) AS c FROM (SELECT n AS m FROM \
                         (SELECT k, count(*) AS n FROM a GROUP BY k) x WHERE n > 1) y GROUP BY m",
                    )
                    .diff(
                        "of_a_scalar",
                        "SELECT c, count(*) AS n, sum(t) AS total FROM (SELECT count(*) AS c, sum(v) AS t FROM a) s GROUP BY c",
                    )
                    .diff(
                        "by_the_padded_key",
                        "SELECT n, count(*) AS c FROM (SELECT b.k, count(*) AS n FROM a LEFT JOIN b \
                         ON b.k = a.k GROUP BY b.k) s GROUP BY n",
                    )
                    .diff(
                        "equated_in_where",
                        "SELECT n, count(*) AS c, sum(w) AS ws FROM (SELECT a.k, count(*) AS n, sum(b.w) AS w \
                         FROM a, b, d WHERE b.k = a.k AND d.k = b.k GROUP BY a.k) s GROUP BY n",
                    )
                    .diff(
                        "union_of_groups",
                        "SELECT n, count(*) AS c FROM (SELECT k, count(*) AS n FROM a GROUP BY k \
                         UNION ALL SELECT k, count(*) FROM b GROUP BY k) u GROUP BY n",
                    )
                    .step(&["INSERT INTO b VALUES (1, 7), (1, 8)"])
                    .step(&["INSERT INTO a VALUES (1, 5, 'dup'), (1, 5, 'dup'), (NULL, 3, 'n'), (NULL, 4, 'n')"])
                    .step(&["UPDATE a SET k = 2 WHERE s = 'dup'", "UPDATE a SET k = 1 WHERE k IS NULL"])
                    .step(&["DELETE FROM a WHERE k = 2", "DELETE FROM b WHERE k = 1"])
                    .step(&["INSERT INTO d VALUES (1, 1, 1.50), (1, 1, 1.5000), (2, 1, 2)"])
                    .step(&["DELETE FROM d WHERE x = 1.5000", "UPDATE d SET k = 2 WHERE x = 1.50"])
                    .step(&["UPDATE a SET v = v + 1", "INSERT INTO b VALUES (NULL, 1)"])
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (3, 1, 'x'), (3, 1, 'x'), (4, NULL, 'y')"])
                    .random_steps(n)
                    .build()
            },
        ),
    ]
}
