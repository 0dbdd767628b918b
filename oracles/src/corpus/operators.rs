//! Per-operator workloads: seeded tables and random DML (inserts, updates,
//! deletes of one of several equal rows, rolled-back batches) under stream
//! tables that exercise one operator, or one combination, each.

use super::{table_a, table_b, table_c, table_f, table_p, Entry};
use crate::workload::{Builder, Workload};

/// A workload over `a` with one DIFFERENTIAL stream table.
fn over_a(name: &str, seed: u64, steps: usize, st: &str, query: &str) -> Workload {
    Builder::new(name, seed)
        .table(table_a(), 14)
        .diff(st, query)
        .random_steps(steps)
        .build()
}

/// A workload over `a` and `b` with one DIFFERENTIAL stream table.
fn over_ab(name: &str, seed: u64, steps: usize, st: &str, query: &str) -> Workload {
    Builder::new(name, seed)
        .table(table_a(), 12)
        .table(table_b(), 12)
        .diff(st, query)
        .random_steps(steps)
        .build()
}

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new("select_star", "SELECT * of a keyless table", 102, |s, n| {
            over_a("select_star", s, n, "st", "SELECT * FROM a")
        }),
        Entry::new(
            "filter_project_expressions",
            "WHERE with arithmetic, CASE, functions and casts in the projection",
            101,
            |s, n| {
                over_a(
                    "filter_project_expressions",
                    s,
                    n,
                    "fp",
                    "SELECT k, v * 2 AS v2, CASE WHEN v > 10 THEN 'big' ELSE 'small' END AS size, \
                     upper(s) AS s_up, abs(v - 7)::text AS d, coalesce(k, -1) AS k0 \
                     FROM a WHERE v IS NOT NULL AND v % 3 <> 1",
                )
            },
        ),
        Entry::new(
            "filter_null_logic",
            "three-valued logic in WHERE: IS DISTINCT FROM, NOT, OR with NULLs",
            116,
            |s, n| {
                over_a(
                    "filter_null_logic",
                    s,
                    n,
                    "nl",
                    "SELECT k, v, s FROM a WHERE (v IS DISTINCT FROM k) AND (NOT (v > 12) OR s IS NULL) \
                     AND (k IN (1, 2, 3) OR k IS NULL)",
                )
            },
        ),
        Entry::new(
            "keyed_source",
            "a source with an identity primary key, filtered and projected",
            117,
            |s, n| {
                Builder::new("keyed_source", s)
                    .table(table_p(), 12)
                    .diff("kp", "SELECT id, k, v + 1 AS v1 FROM p WHERE k <> 2")
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new("inner_equi_join", "a JOIN b ON a.k = b.k", 103, |s, n| {
            over_ab(
                "inner_equi_join",
                s,
                n,
                "j",
                "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k",
            )
        }),
        Entry::new(
            "inner_non_equi_join",
            "a band join with inequalities only",
            104,
            |s, n| {
                over_ab(
                    "inner_non_equi_join",
                    s,
                    n,
                    "nj",
                    "SELECT a.v, b.w FROM a JOIN b ON a.v < b.w AND b.w < a.v + 6",
                )
            },
        ),
        Entry::new(
            "join_on_expression_and_filters",
            "a join on an expression with filters on both sides",
            118,
            |s, n| {
                over_ab(
                    "join_on_expression_and_filters",
                    s,
                    n,
                    "je",
                    "SELECT a.k, a.s, b.w FROM a JOIN b ON a.k + 1 = b.k \
                     WHERE a.v > 3 AND b.w IS NOT NULL AND a.s <> 'dd'",
                )
            },
        ),
        Entry::new(
            "three_way_comma_join",
            "three tables joined in a comma list",
            105,
            |s, n| {
                Builder::new("three_way_comma_join", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .table(table_c(), 10)
                    .diff(
                        "j3",
                        "SELECT a.k, b.w, c.amount FROM a, b, c WHERE a.k = b.k AND b.w = c.x",
                    )
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new("self_join", "a table joined with itself", 106, |s, n| {
            over_a(
                "self_join",
                s,
                n,
                "sj",
                "SELECT x.k, x.v, y.v AS v2 FROM a x JOIN a y ON x.k = y.k AND x.v <= y.v",
            )
        }),
        Entry::new(
            "group_by_aggregates",
            "count(*), count(v), sum, avg, min, max per group",
            107,
            |s, n| {
                over_a(
                    "group_by_aggregates",
                    s,
                    n,
                    "g",
                    "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS total, avg(v) AS mean, \
                     min(v) AS lo, max(v) AS hi FROM a GROUP BY k",
                )
            },
        ),
        Entry::new(
            "group_by_having_and_expressions",
            "GROUP BY expressions with HAVING and aggregates in expressions",
            108,
            |s, n| {
                over_a(
                    "group_by_having_and_expressions",
                    s,
                    n,
                    "gh",
                    "SELECT k % 2 AS parity, s, sum(v) * 2 AS dbl, max(v) - min(v) AS spread \
                     FROM a GROUP BY k % 2, s HAVING count(*) > 1",
                )
            },
        ),
        Entry::new(
            "having_on_min_max",
            "HAVING over min and max, so groups enter and leave the result",
            119,
            |s, n| {
                over_a(
                    "having_on_min_max",
                    s,
                    n,
                    "hm",
                    "SELECT k, min(v) AS lo, max(v) AS hi FROM a GROUP BY k HAVING max(v) - min(v) >= 5",
                )
            },
        ),
        Entry::new(
            "numeric_sum_and_avg",
            "numeric sum and avg keep numeric type and scale",
            109,
            |s, n| {
                Builder::new("numeric_sum_and_avg", s)
                    .table(table_c(), 14)
                    .diff(
                        "ns",
                        "SELECT x % 3 AS bucket, sum(amount) AS total, avg(amount) AS mean, \
                         count(amount) AS n FROM c GROUP BY 1",
                    )
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "scalar_aggregate",
            "aggregates without GROUP BY: always one row",
            110,
            |s, n| {
                over_a(
                    "scalar_aggregate",
                    s,
                    n,
                    "sc",
                    "SELECT count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi, avg(v) AS mean FROM a",
                )
            },
        ),
        Entry::new(
            "boolean_aggregates",
            "bool_and, bool_or and every per group, with NULL booleans",
            120,
            |s, n| {
                Builder::new("boolean_aggregates", s)
                    .table(table_f(), 14)
                    .diff(
                        "ba",
                        "SELECT g, bool_and(ok) AS all_ok, bool_or(ok) AS any_ok, every(n > 2) AS all_big, \
                         count(*) AS rows FROM f GROUP BY g",
                    )
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "group_by_text_and_int",
            "two grouping keys, one of them text with quotes and spaces",
            121,
            |s, n| {
                over_a(
                    "group_by_text_and_int",
                    s,
                    n,
                    "gt",
                    "SELECT s, k, count(*) AS n, sum(v) AS total FROM a GROUP BY s, k",
                )
            },
        ),
        Entry::new(
            "distinct",
            "SELECT DISTINCT over duplicates",
            111,
            |s, n| over_a("distinct", s, n, "d", "SELECT DISTINCT k, s FROM a"),
        ),
        Entry::new(
            "distinct_over_join",
            "SELECT DISTINCT of a join's output",
            122,
            |s, n| {
                over_ab(
                    "distinct_over_join",
                    s,
                    n,
                    "dj",
                    "SELECT DISTINCT a.k, b.w % 3 AS w3 FROM a JOIN b ON a.k = b.k",
                )
            },
        ),
        Entry::new(
            "union_all",
            "UNION ALL of a filter, a projection and a join",
            112,
            |s, n| {
                over_ab(
                    "union_all",
                    s,
                    n,
                    "u",
                    "SELECT k, v FROM a WHERE v > 5 UNION ALL SELECT k, w FROM b \
                     UNION ALL SELECT a.k, b.w FROM a JOIN b ON a.k = b.k",
                )
            },
        ),
        Entry::new(
            "union_all_same_source_twice",
            "UNION ALL reading the same table in both branches",
            123,
            |s, n| {
                over_a(
                    "union_all_same_source_twice",
                    s,
                    n,
                    "u2",
                    "SELECT k, v FROM a WHERE k < 3 UNION ALL SELECT k, v FROM a WHERE v < 10",
                )
            },
        ),
        Entry::new(
            "subquery_in_from",
            "a join inside a subquery in FROM, filtered outside",
            113,
            |s, n| {
                over_ab(
                    "subquery_in_from",
                    s,
                    n,
                    "sq",
                    "SELECT sub.k, sub.w FROM (SELECT a.k, b.w FROM a JOIN b ON a.k = b.k WHERE b.w > 3) sub \
                     WHERE sub.k < 4",
                )
            },
        ),
        Entry::new(
            "cte_then_aggregate",
            "a WITH query inlined and aggregated",
            124,
            |s, n| {
                over_a(
                    "cte_then_aggregate",
                    s,
                    n,
                    "cte",
                    "WITH x AS (SELECT k, v FROM a WHERE v IS NOT NULL) \
                     SELECT x.k, count(*) AS n, sum(x.v) AS total FROM x GROUP BY x.k",
                )
            },
        ),
        Entry::new(
            "subquery_joined_with_table",
            "a subquery in FROM joined with a base table",
            125,
            |s, n| {
                over_ab(
                    "subquery_joined_with_table",
                    s,
                    n,
                    "sj2",
                    "SELECT f.k, f.v, b.w FROM (SELECT k, v FROM a WHERE v % 2 = 0) f JOIN b ON b.k = f.k",
                )
            },
        ),
        Entry::new(
            "aggregate_over_join",
            "GROUP BY over a join with HAVING",
            114,
            |s, n| {
                over_ab(
                    "aggregate_over_join",
                    s,
                    n,
                    "aj",
                    "SELECT a.k, count(*) AS n, sum(b.w) AS total, min(b.w) AS lo, max(a.v) AS hi \
                     FROM a JOIN b ON a.k = b.k GROUP BY a.k HAVING count(*) > 1",
                )
            },
        ),
        Entry::new(
            "aggregate_over_three_way_join",
            "GROUP BY over a three-way join, numeric sums",
            126,
            |s, n| {
                Builder::new("aggregate_over_three_way_join", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .table(table_c(), 10)
                    .diff(
                        "a3",
                        "SELECT a.k, count(*) AS n, sum(c.amount) AS total, avg(c.amount) AS mean \
                         FROM a JOIN b ON a.k = b.k JOIN c ON c.x = b.w GROUP BY a.k",
                    )
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "stream_table_over_stream_table",
            "an aggregate stream table reading a join stream table",
            115,
            |s, n| {
                Builder::new("stream_table_over_stream_table", s)
                    .table(table_a(), 12)
                    .table(table_b(), 12)
                    .diff("base", "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k")
                    .diff(
                        "top",
                        "SELECT k, count(*) AS n, sum(w) AS total FROM base GROUP BY k",
                    )
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "three_level_stream_tables",
            "filter -> join with a table -> aggregate, each level a stream table",
            127,
            |s, n| {
                Builder::new("three_level_stream_tables", s)
                    .table(table_a(), 12)
                    .table(table_b(), 12)
                    .diff("l1", "SELECT k, v FROM a WHERE v > 2")
                    .diff("l2", "SELECT l1.k, l1.v, b.w FROM l1 JOIN b ON b.k = l1.k")
                    .diff(
                        "l3",
                        "SELECT k, count(*) AS n, max(w) AS hi, min(v) AS lo FROM l2 GROUP BY k",
                    )
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "window_functions",
            "window functions recomputed by partition: ranks, running sums and frames within a \
             partition, two windows sharing part of their keys, a window over the whole table \
             (ordered by unique keys: a tie would let row_number differ from any fresh run)",
            129,
            |s, n| {
                Builder::new("window_functions", s)
                    .table(table_p(), 12)
                    .table(table_b(), 6)
                    .diff(
                        "ranked",
                        "SELECT id, k, v, rank() OVER (PARTITION BY k ORDER BY v) AS r, \
                         dense_rank() OVER (PARTITION BY k ORDER BY v DESC) AS d FROM p",
                    )
                    .diff(
                        "running",
                        "SELECT id, k, sum(v) OVER (PARTITION BY k ORDER BY id) AS run, \
                         avg(v) OVER (PARTITION BY k ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS near, \
                         count(*) OVER (PARTITION BY k) AS n FROM p",
                    )
                    .diff(
                        "shared",
                        "SELECT id, row_number() OVER (PARTITION BY k, v ORDER BY id) AS a, \
                         lag(id) OVER (PARTITION BY k ORDER BY id) AS b FROM p WHERE v IS NOT NULL",
                    )
                    .diff(
                        "global",
                        "SELECT id, row_number() OVER (ORDER BY id) AS rn, \
                         max(v) OVER () AS top FROM p",
                    )
                    .diff(
                        // A partition key a subquery computes: its old
                        // value is unknown, so the query is recomputed.
                        "by_sub",
                        "SELECT id, k, count(*) OVER (PARTITION BY (SELECT max(w) FROM b WHERE b.k = p.k)) AS n FROM p",
                    )
                    .step(&["INSERT INTO p (k, v) VALUES (1, 100), (1, 100), (NULL, 3)"])
                    .step(&["INSERT INTO b VALUES (1, 50)"])
                    .step(&["UPDATE b SET w = w + 1 WHERE k = 1"])
                    .step(&["UPDATE p SET k = 2 WHERE v = 100"])
                    .step(&["DELETE FROM p WHERE id = (SELECT min(id) FROM p)"])
                    .step(&["UPDATE p SET v = NULL WHERE k = 2"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "set_operations",
            "UNION, INTERSECT and EXCEPT (without ALL): a row's last copy leaves one side, a row \
             enters the other side, NULLs compare equal, duplicates collapse, ranked with LIMIT",
            130,
            |s, n| {
                Builder::new("set_operations", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("uni", "SELECT k, v FROM a UNION SELECT k, w FROM b")
                    .diff(
                        // x's type comes from the right side's nested
                        // UNION ALL, resolved before the UNION.
                        "typed_by_right",
                        "SELECT k, NULL AS x FROM a UNION (SELECT k, NULL FROM b UNION ALL SELECT k, w FROM b)",
                    )
                    .diff("in_both", "SELECT k, v FROM a INTERSECT SELECT k, w FROM b")
                    .diff("only_a", "SELECT k, v FROM a EXCEPT SELECT k, w FROM b")
                    .diff(
                        "only_b_ranked",
                        "SELECT k FROM b EXCEPT SELECT k FROM a WHERE v > 5 ORDER BY k DESC LIMIT 2",
                    )
                    .step(&["INSERT INTO a VALUES (80, 1, 'x'), (80, 1, 'y')", "INSERT INTO b VALUES (81, 1)"])
                    .step(&["INSERT INTO b VALUES (80, 1)"])
                    .step(&["DELETE FROM a WHERE s = 'x'"])
                    .step(&["DELETE FROM a WHERE k = 80", "INSERT INTO a VALUES (NULL, NULL, 'n')", "INSERT INTO b VALUES (NULL, NULL)"])
                    .step(&["DELETE FROM b WHERE k IS NULL"])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
        Entry::new(
            "full_mode_window_function",
            "a FULL stream table (requested FULL) beside a DIFFERENTIAL one",
            128,
            |s, n| {
                Builder::new("full_mode_window_function", s)
                    .table(table_a(), 12)
                    .full(
                        "wf",
                        "SELECT k, v, rank() OVER (PARTITION BY k ORDER BY v) AS r FROM a",
                    )
                    .diff("wd", "SELECT k, count(*) AS n FROM a GROUP BY k")
                    .random_steps(n)
                    .build()
            },
        ),
    ]
}
