//! The per-operator DIFFERENTIAL cases: each a schema, stream table
//! queries and a default seed. The end-to-end tests and `harness pr` run the
//! same list.

use crate::workload::{ColSpec, TableSpec};

/// One case.
pub struct Case {
    /// Unique name (also the test name).
    pub name: &'static str,
    /// Tables the DML touches.
    pub tables: Vec<TableSpec>,
    /// `(stream table name, defining query)` pairs, upstream first.
    pub queries: &'static [(&'static str, &'static str)],
    /// Default seed.
    pub seed: u64,
}

fn a() -> TableSpec {
    TableSpec::new(
        "a",
        vec![
            ColSpec::int("k", 5, 15),
            ColSpec::int("v", 20, 10),
            ColSpec::text("s", 10),
        ],
    )
}

fn b() -> TableSpec {
    TableSpec::new(
        "b",
        vec![ColSpec::int("k", 5, 15), ColSpec::int("w", 20, 10)],
    )
}

fn c() -> TableSpec {
    TableSpec::new(
        "c",
        vec![
            ColSpec::int("x", 20, 10),
            ColSpec::numeric("amount", 50, 10),
        ],
    )
}

/// Every case, in a stable order.
pub fn all() -> Vec<Case> {
    vec![
        Case {
            name: "filter_project_expressions",
            tables: vec![a()],
            queries: &[(
            "fp",
            "SELECT k, v * 2 AS v2, CASE WHEN v > 10 THEN 'big' ELSE 'small' END AS size, \
             upper(s) AS s_up, abs(v - 7)::text AS d, coalesce(k, -1) AS k0 \
             FROM a WHERE v IS NOT NULL AND v % 3 <> 1",
        )],
            seed: 101,
        },
        Case {
            name: "select_star",
            tables: vec![a()],
            queries: &[("st", "SELECT * FROM a")],
            seed: 102,
        },
        Case {
            name: "inner_equi_join",
            tables: vec![a(), b()],
            queries: &[("j", "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k")],
            seed: 103,
        },
        Case {
            name: "inner_non_equi_join",
            tables: vec![a(), b()],
            queries: &[(
            "nj",
            "SELECT a.v, b.w FROM a JOIN b ON a.v < b.w AND b.w < a.v + 6",
        )],
            seed: 104,
        },
        Case {
            name: "three_way_comma_join",
            tables: vec![a(), b(), c()],
            queries: &[(
            "j3",
            "SELECT a.k, b.w, c.amount FROM a, b, c WHERE a.k = b.k AND b.w = c.x",
        )],
            seed: 105,
        },
        Case {
            name: "self_join",
            tables: vec![a()],
            queries: &[(
            "sj",
            "SELECT x.k, x.v, y.v AS v2 FROM a x JOIN a y ON x.k = y.k AND x.v <= y.v",
        )],
            seed: 106,
        },
        Case {
            name: "group_by_aggregates",
            tables: vec![a()],
            queries: &[(
            "g",
            "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS total, avg(v) AS mean, \
             min(v) AS lo, max(v) AS hi FROM a GROUP BY k",
        )],
            seed: 107,
        },
        Case {
            name: "group_by_having_and_expressions",
            tables: vec![a()],
            queries: &[(
            "gh",
            "SELECT k % 2 AS parity, s, sum(v) * 2 AS dbl, max(v) - min(v) AS spread \
             FROM a GROUP BY k % 2, s HAVING count(*) > 1",
        )],
            seed: 108,
        },
        Case {
            name: "numeric_sum_and_avg",
            tables: vec![c()],
            queries: &[(
            "ns",
            "SELECT x % 3 AS bucket, sum(amount) AS total, avg(amount) AS mean, count(amount) AS n FROM c GROUP BY 1",
        )],
            seed: 109,
        },
        Case {
            name: "scalar_aggregate",
            tables: vec![a()],
            queries: &[(
            "sc",
            "SELECT count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi, avg(v) AS mean FROM a",
        )],
            seed: 110,
        },
        Case {
            name: "distinct",
            tables: vec![a()],
            queries: &[("d", "SELECT DISTINCT k, s FROM a")],
            seed: 111,
        },
        Case {
            name: "union_all",
            tables: vec![a(), b()],
            queries: &[(
            "u",
            "SELECT k, v FROM a WHERE v > 5 UNION ALL SELECT k, w FROM b UNION ALL SELECT a.k, b.w FROM a JOIN b ON a.k = b.k",
        )],
            seed: 112,
        },
        Case {
            name: "subquery_in_from_and_cte",
            tables: vec![a(), b()],
            queries: &[(
                "sq",
                "SELECT sub.k, sub.w FROM (SELECT a.k, b.w FROM a JOIN b ON a.k = b.k WHERE b.w > 3) sub WHERE sub.k < 4",
            ),
            (
                "sqa",
                "WITH x AS (SELECT k, v FROM a WHERE v IS NOT NULL) SELECT x.k, count(*) AS n, sum(x.v) AS total FROM x GROUP BY x.k",
            ),],
            seed: 113,
        },
        Case {
            name: "aggregate_over_join",
            tables: vec![a(), b()],
            queries: &[(
            "aj",
            "SELECT a.k, count(*) AS n, sum(b.w) AS total, min(b.w) AS lo, max(a.v) AS hi \
             FROM a JOIN b ON a.k = b.k GROUP BY a.k HAVING count(*) > 1",
        )],
            seed: 114,
        },
        Case {
            name: "stream_table_over_stream_table",
            tables: vec![a(), b()],
            queries: &[("base", "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k"),
            (
                "top",
                "SELECT k, count(*) AS n, sum(w) AS total FROM base GROUP BY k",
            ),],
            seed: 115,
        },
    ]
}

/// The case called `name`.
pub fn named(name: &str) -> Case {
    all()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case named {name}"))
}
