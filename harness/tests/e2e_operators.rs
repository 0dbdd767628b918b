//! End-to-end, per supported operator: seeded random inserts, updates and
//! deletes (duplicates and NULLs included) against a real cluster, a
//! DIFFERENTIAL refresh after every batch, the result compared with the query
//! recomputed as a multiset, and the refresh history checked to show that
//! the refresh really ran DIFFERENTIAL.

use harness::testkit::check_differential;
use harness::workload::{ColSpec, TableSpec};

const STEPS: usize = 25;

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

#[test]
fn filter_project_expressions() {
    check_differential(
        "filter_project_expressions",
        &[a()],
        &[(
            "fp",
            "SELECT k, v * 2 AS v2, CASE WHEN v > 10 THEN 'big' ELSE 'small' END AS size, \
             upper(s) AS s_up, abs(v - 7)::text AS d, coalesce(k, -1) AS k0 \
             FROM a WHERE v IS NOT NULL AND v % 3 <> 1",
        )],
        STEPS,
        101,
    );
}

#[test]
fn select_star() {
    check_differential(
        "select_star",
        &[a()],
        &[("st", "SELECT * FROM a")],
        STEPS,
        102,
    );
}

#[test]
fn inner_equi_join() {
    check_differential(
        "inner_equi_join",
        &[a(), b()],
        &[("j", "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k")],
        STEPS,
        103,
    );
}

#[test]
fn inner_non_equi_join() {
    check_differential(
        "inner_non_equi_join",
        &[a(), b()],
        &[(
            "nj",
            "SELECT a.v, b.w FROM a JOIN b ON a.v < b.w AND b.w < a.v + 6",
        )],
        STEPS,
        104,
    );
}

#[test]
fn three_way_comma_join() {
    check_differential(
        "three_way_comma_join",
        &[a(), b(), c()],
        &[(
            "j3",
            "SELECT a.k, b.w, c.amount FROM a, b, c WHERE a.k = b.k AND b.w = c.x",
        )],
        STEPS,
        105,
    );
}

#[test]
fn self_join() {
    check_differential(
        "self_join",
        &[a()],
        &[(
            "sj",
            "SELECT x.k, x.v, y.v AS v2 FROM a x JOIN a y ON x.k = y.k AND x.v <= y.v",
        )],
        STEPS,
        106,
    );
}

#[test]
fn group_by_aggregates() {
    check_differential(
        "group_by_aggregates",
        &[a()],
        &[(
            "g",
            "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS total, avg(v) AS mean, \
             min(v) AS lo, max(v) AS hi FROM a GROUP BY k",
        )],
        STEPS,
        107,
    );
}

#[test]
fn group_by_having_and_expressions() {
    check_differential(
        "group_by_having_and_expressions",
        &[a()],
        &[(
            "gh",
            "SELECT k % 2 AS parity, s, sum(v) * 2 AS dbl, max(v) - min(v) AS spread \
             FROM a GROUP BY k % 2, s HAVING count(*) > 1",
        )],
        STEPS,
        108,
    );
}

#[test]
fn numeric_sum_and_avg() {
    check_differential(
        "numeric_sum_and_avg",
        &[c()],
        &[(
            "ns",
            "SELECT x % 3 AS bucket, sum(amount) AS total, avg(amount) AS mean, count(amount) AS n FROM c GROUP BY 1",
        )],
        STEPS,
        109,
    );
}

#[test]
fn scalar_aggregate() {
    check_differential(
        "scalar_aggregate",
        &[a()],
        &[(
            "sc",
            "SELECT count(*) AS n, sum(v) AS total, min(v) AS lo, max(v) AS hi, avg(v) AS mean FROM a",
        )],
        STEPS,
        110,
    );
}

#[test]
fn distinct() {
    check_differential(
        "distinct",
        &[a()],
        &[("d", "SELECT DISTINCT k, s FROM a")],
        STEPS,
        111,
    );
}

#[test]
fn union_all() {
    check_differential(
        "union_all",
        &[a(), b()],
        &[(
            "u",
            "SELECT k, v FROM a WHERE v > 5 UNION ALL SELECT k, w FROM b UNION ALL SELECT a.k, b.w FROM a JOIN b ON a.k = b.k",
        )],
        STEPS,
        112,
    );
}

#[test]
fn subquery_in_from_and_cte() {
    check_differential(
        "subquery_in_from_and_cte",
        &[a(), b()],
        &[
            (
                "sq",
                "SELECT sub.k, sub.w FROM (SELECT a.k, b.w FROM a JOIN b ON a.k = b.k WHERE b.w > 3) sub WHERE sub.k < 4",
            ),
            (
                "sqa",
                "WITH x AS (SELECT k, v FROM a WHERE v IS NOT NULL) SELECT x.k, count(*) AS n, sum(x.v) AS total FROM x GROUP BY x.k",
            ),
        ],
        STEPS,
        113,
    );
}

#[test]
fn aggregate_over_join() {
    check_differential(
        "aggregate_over_join",
        &[a(), b()],
        &[(
            "aj",
            "SELECT a.k, count(*) AS n, sum(b.w) AS total, min(b.w) AS lo, max(a.v) AS hi \
             FROM a JOIN b ON a.k = b.k GROUP BY a.k HAVING count(*) > 1",
        )],
        STEPS,
        114,
    );
}

#[test]
fn stream_table_over_stream_table() {
    check_differential(
        "stream_table_over_stream_table",
        &[a(), b()],
        &[
            ("base", "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k"),
            (
                "top",
                "SELECT k, count(*) AS n, sum(w) AS total FROM base GROUP BY k",
            ),
        ],
        STEPS,
        115,
    );
}
