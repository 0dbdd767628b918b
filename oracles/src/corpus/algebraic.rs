//! Aggregates kept algebraically (`new = old + delta` over support
//! values): count, sum, avg, the variances, min and max of integers of every width and of numerics,
//! expressions of them, scalar aggregates and aggregates over a join. The
//! hard cases are a numeric sum's printed scale (the largest among its
//! values) as values of that scale come and go, values that arrive and
//! leave within one refresh, NULL arguments, groups emptied and refilled
//! and rows moved between groups.

use super::{table_b, Entry};
use crate::gen::{ColSpec, TableSpec};
use crate::workload::Builder;

/// `d(k int, v int, x numeric)`: `x` unconstrained, of mixed scales.
pub(super) fn table_d() -> TableSpec {
    TableSpec::new(
        "d",
        vec![
            ColSpec::int("k", 5, 10),
            ColSpec::int("v", 20, 15),
            ColSpec::decimal("x", 30, 15),
        ],
    )
}

pub(super) fn entries() -> Vec<Entry> {
    vec![Entry::new(
        "algebraic_aggregates",
        "count, sum, avg, variances, standard deviations, min and max kept as old plus delta: \
         int2, int4, int8 and numeric arguments, the printed scale of a numeric sum as values of the largest scale \
         come and go, values in and out within one refresh, NULLs, scalar aggregates, \
         a join, groups emptied and refilled, rows moved between groups",
        901,
        |s, n| {
            Builder::new("algebraic_aggregates", s)
                .table(table_d(), 16)
                .table(table_b(), 8)
                .diff(
                    "sums",
                    "SELECT k, count(*) AS n, count(x) AS nx, sum(x) AS sx, avg(x) AS ax, \
                     sum(v) AS sv, avg(v) AS av FROM d GROUP BY k",
                )
                .diff(
                    "widths",
                    "SELECT k, sum(v::int8) AS s8, avg(v::int8) AS a8, sum(v::int2) AS s2, \
                     avg(v::int2) AS a2, 100.00 * sum(x) / NULLIF(sum(v), 0) AS ratio \
                     FROM d GROUP BY k",
                )
                .diff(
                    "total",
                    "SELECT count(*) AS n, sum(x) AS sx, avg(x) AS ax, count(v) AS nv FROM d",
                )
                .diff(
                    "joined",
                    "SELECT d.k, b.w, sum(d.x * b.w) AS sxw, count(*) AS n \
                     FROM d JOIN b ON b.k = d.k GROUP BY d.k, b.w",
                )
                .diff(
                    "only_avg",
                    "SELECT k % 2 AS parity, avg(x) AS ax, round(avg(x), 1) AS rx FROM d GROUP BY k % 2",
                )
                // Variances from sums of squares, printed at the scale
                // PostgreSQL's numeric division chooses; standard
                // deviations rounded as its square root rounds; groups of
                // one value (NULL sample variance) and of equal values (0).
                .diff(
                    "spreads",
                    "SELECT k, variance(x) AS vx, stddev_pop(x) AS sx, var_pop(v) AS vv, \
                     stddev(v::int8) AS sv, stddev_samp(x) + var_samp(v::int2) AS mixed FROM d GROUP BY k",
                )
                .diff(
                    "total_spread",
                    "SELECT stddev(x) AS sx, var_pop(x) AS vx, var_samp(v) AS vv, count(*) AS n FROM d",
                )
                // Extremes kept in their columns: a group is recomputed
                // only when a row going held its extreme (or one as
                // extreme); floating-point and NaN/Infinity extremes.
                .diff(
                    "extremes",
                    "SELECT k, min(x) AS lo, max(x) AS hi, min(v) AS vlo, max(v::float8 / 3) AS fhi, \
                     count(*) AS n FROM d GROUP BY k",
                )
                .diff("total_extremes", "SELECT min(x) AS lo, max(v) AS hi FROM d")
                .diff(
                    "joined_extremes",
                    "SELECT d.k, max(b.w) AS hi, min(b.w) AS lo, count(*) AS n \
                     FROM d JOIN b ON b.k = d.k GROUP BY d.k",
                )
                // The same aggregates where groups are recomputed (HAVING).
                .diff(
                    "spread_having",
                    "SELECT k, stddev_pop(x) AS sx, variance(v) AS vv FROM d GROUP BY k HAVING count(*) > 1",
                )
                // A FROM alias the statement's own aliases must not capture,
                // and a composite argument (counted when not NULL as a
                // whole, although `ROW(NULL, 1) IS NOT NULL` is false).
                .diff(
                    "aliased",
                    "SELECT r.k, count(*) AS n, sum(r.x) AS sx, count(ROW(r.v, r.x)) AS nr \
                     FROM d r GROUP BY r.k",
                )
                // A value of a larger scale arrives, then leaves.
                .step(&["INSERT INTO d VALUES (1, 1, 1.125)"])
                .step(&["DELETE FROM d WHERE x = 1.125"])
                // Every value of a group gains a scale, then loses it.
                .step(&["UPDATE d SET x = x * 1.0 WHERE k = 2"])
                .step(&["UPDATE d SET x = round(x) WHERE k = 2"])
                // In and out within one refresh, beside a lasting change.
                .step(&[
                    "INSERT INTO d VALUES (3, 1, 9.99999)",
                    "DELETE FROM d WHERE x = 9.99999",
                    "INSERT INTO d VALUES (3, 2, 0.50)",
                ])
                // A group emptied, then refilled with NULL arguments only.
                .step(&["DELETE FROM d WHERE k = 1"])
                .step(&["INSERT INTO d VALUES (1, NULL, NULL), (1, NULL, NULL)"])
                .step(&["UPDATE d SET k = 4 WHERE k = 3", "UPDATE b SET w = w + 1 WHERE k = 4"])
                // NaN and the infinities come and go (PostgreSQL counts them
                // apart: the sum is finite again once they left).
                .step(&["INSERT INTO d VALUES (2, 1, 'NaN'), (4, NULL, 'Infinity')"])
                .step(&["DELETE FROM d WHERE x = 'NaN'"])
                .step(&["INSERT INTO d VALUES (4, 2, '-Infinity')"])
                .step(&["DELETE FROM d WHERE x IN ('Infinity', '-Infinity')"])
                // A new group over a join whose other side is replaced in the
                // same refresh: its delta holds rows that cancel (40 here).
                .step(&["INSERT INTO b VALUES (6, 40)"])
                .step(&[
                    "INSERT INTO d VALUES (6, 1, 1.5)",
                    "DELETE FROM b WHERE k = 6",
                    "INSERT INTO b VALUES (6, 3)",
                ])
                .step(&["DELETE FROM d", "INSERT INTO d VALUES (0, 7, -0.001)"])
                .random_steps(n)
                .build()
        },
    )]
}
