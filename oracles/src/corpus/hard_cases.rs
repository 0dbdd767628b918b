//! The hard cases: scripted steps aimed at the places where delta rules
//! go wrong (NULL keys, duplicates, groups that empty and refill, rows that
//! move, extremes with ties, changes that net to nothing, rollbacks,
//! TRUNCATE), each followed by random steps over the same tables.

use super::{table_a, table_b, table_c, Entry};
use crate::workload::Builder;

/// Random steps after the scripted ones: half the usual number.
fn tail(steps: usize) -> usize {
    steps.div_ceil(2)
}

const GROUPED: &str = "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS total, avg(v) AS mean, \
                       min(v) AS lo, max(v) AS hi FROM a GROUP BY k";
const JOINED: &str = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "null_join_keys",
            "NULL join keys never match; keys move to and from NULL",
            201,
            |s, n| {
                Builder::new("null_join_keys", s)
                    .table(table_a(), 8)
                    .table(table_b(), 8)
                    .diff("j", JOINED)
                    .diff(
                        "jn",
                        "SELECT a.v, b.w FROM a JOIN b ON a.k = b.k OR (a.k IS NULL AND b.k IS NULL)",
                    )
                    .step(&["INSERT INTO a VALUES (NULL, 1, 'n'), (NULL, 2, 'n')", "INSERT INTO b VALUES (NULL, 7)"])
                    .step(&["UPDATE a SET k = 3 WHERE s = 'n' AND v = 1"])
                    .step(&["UPDATE b SET k = 3 WHERE k IS NULL AND w = 7"])
                    .step(&["UPDATE a SET k = NULL WHERE k = 3", "UPDATE b SET k = NULL WHERE w = 7"])
                    .step(&["DELETE FROM a WHERE k IS NULL"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "null_group_keys",
            "a NULL group key is one group; it empties and refills",
            202,
            |s, n| {
                Builder::new("null_group_keys", s)
                    .table(table_a(), 10)
                    .diff("g", GROUPED)
                    .diff("gs", "SELECT s, k, count(*) AS n FROM a GROUP BY s, k")
                    .step(&["INSERT INTO a VALUES (NULL, 5, NULL), (NULL, 6, NULL), (NULL, NULL, NULL)"])
                    .step(&["DELETE FROM a WHERE k IS NULL"])
                    .step(&["INSERT INTO a VALUES (NULL, 9, 'x')"])
                    .step(&["UPDATE a SET k = 1 WHERE k IS NULL", "UPDATE a SET s = NULL WHERE k = 1"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "duplicates_delete_one_of_many",
            "equal rows in a keyless table: delete one copy, then all",
            203,
            |s, n| {
                Builder::new("duplicates_delete_one_of_many", s)
                    .table(table_a(), 6)
                    .table(table_b(), 6)
                    .diff("st", "SELECT k, v, s FROM a")
                    .diff("d", "SELECT DISTINCT k, v FROM a")
                    .diff("j", JOINED)
                    .step(&["INSERT INTO a VALUES (4, 4, 'dup'), (4, 4, 'dup'), (4, 4, 'dup')", "INSERT INTO b VALUES (4, 1), (4, 1)"])
                    .step(&["DELETE FROM a WHERE ctid IN (SELECT ctid FROM a WHERE s = 'dup' LIMIT 1)"])
                    .step(&["DELETE FROM b WHERE ctid IN (SELECT ctid FROM b WHERE k = 4 AND w = 1 LIMIT 1)"])
                    .step(&["UPDATE a SET v = 5 WHERE ctid IN (SELECT ctid FROM a WHERE s = 'dup' LIMIT 1)"])
                    .step(&["DELETE FROM a WHERE s = 'dup'"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "groups_empty_and_refill",
            "every row of a group deleted, then the group refilled with new values",
            204,
            |s, n| {
                Builder::new("groups_empty_and_refill", s)
                    .table(table_a(), 10)
                    .diff("g", GROUPED)
                    .diff("h", "SELECT k, sum(v) AS total FROM a GROUP BY k HAVING count(*) >= 2")
                    .step(&["DELETE FROM a WHERE k = 2"])
                    .step(&["INSERT INTO a VALUES (2, 100, 'new')"])
                    .step(&["INSERT INTO a VALUES (2, 101, 'new')", "DELETE FROM a WHERE k = 2 AND v = 100"])
                    .step(&["DELETE FROM a WHERE k = 2", "INSERT INTO a VALUES (2, NULL, 'null v')"])
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (1, 1, 'x'), (2, 2, 'y')"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "update_moves_rows_between_groups",
            "updates of the grouping key move rows from group to group",
            205,
            |s, n| {
                Builder::new("update_moves_rows_between_groups", s)
                    .table(table_a(), 12)
                    .diff("g", GROUPED)
                    .step(&["UPDATE a SET k = 0 WHERE k = 1"])
                    .step(&["UPDATE a SET k = (k + 1) % 5 WHERE k IS NOT NULL"])
                    .step(&["UPDATE a SET k = NULL WHERE k = 2", "UPDATE a SET k = 2 WHERE k IS NULL"])
                    .step(&["UPDATE a SET k = 4, v = v + 50 WHERE v < 5"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "update_changes_join_key",
            "updates of join keys on either side, and on both in one step",
            206,
            |s, n| {
                Builder::new("update_changes_join_key", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("j", JOINED)
                    .diff(
                        "ja",
                        "SELECT a.k, count(*) AS n, sum(b.w) AS total FROM a JOIN b ON a.k = b.k GROUP BY a.k",
                    )
                    .step(&["UPDATE a SET k = 1 WHERE k = 0"])
                    .step(&["UPDATE b SET k = 2 WHERE k = 1"])
                    .step(&["UPDATE a SET k = 3 WHERE k = 2", "UPDATE b SET k = 3 WHERE k = 2"])
                    .step(&["UPDATE a SET k = k + 1 WHERE k IS NOT NULL", "UPDATE b SET k = k - 1 WHERE k IS NOT NULL"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "delete_min_max_with_ties",
            "deleting the current min or max when other rows tie with it",
            207,
            |s, n| {
                Builder::new("delete_min_max_with_ties", s)
                    .table(table_a(), 6)
                    .diff("mm", "SELECT k, min(v) AS lo, max(v) AS hi, count(*) AS n FROM a GROUP BY k")
                    .diff("smm", "SELECT min(v) AS lo, max(v) AS hi FROM a")
                    .step(&["INSERT INTO a VALUES (9, 5, 't'), (9, 5, 't'), (9, 90, 't'), (9, 90, 't'), (9, 40, 't')"])
                    .step(&["DELETE FROM a WHERE ctid IN (SELECT ctid FROM a WHERE k = 9 AND v = 90 LIMIT 1)"])
                    .step(&["DELETE FROM a WHERE k = 9 AND v = 90"])
                    .step(&["DELETE FROM a WHERE ctid IN (SELECT ctid FROM a WHERE k = 9 AND v = 5 LIMIT 1)"])
                    .step(&["UPDATE a SET v = 41 WHERE k = 9 AND v = 5"])
                    .step(&["UPDATE a SET v = NULL WHERE k = 9"])
                    .step(&["DELETE FROM a WHERE v = (SELECT max(v) FROM a)"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "several_changes_to_one_row",
            "one row inserted, updated several times and deleted between refreshes",
            208,
            |s, n| {
                Builder::new("several_changes_to_one_row", s)
                    .table(table_a(), 8)
                    .table(table_b(), 8)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .step(&["INSERT INTO a VALUES (3, 30, 'm')", "UPDATE a SET v = 31 WHERE s = 'm'", "UPDATE a SET k = 4 WHERE s = 'm'", "UPDATE a SET v = 32 WHERE s = 'm'"])
                    .step(&["UPDATE a SET k = 1 WHERE s = 'm'", "UPDATE a SET k = 3 WHERE s = 'm'"])
                    .step(&["UPDATE a SET v = v + 1 WHERE s = 'm'", "UPDATE a SET v = v - 1 WHERE s = 'm'"])
                    .step(&["UPDATE b SET w = w + 1 WHERE k = 3", "UPDATE b SET w = w + 1 WHERE k = 3", "DELETE FROM a WHERE s = 'm'"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "insert_then_delete_nets_to_nothing",
            "changes inside one refresh interval that cancel out",
            209,
            |s, n| {
                Builder::new("insert_then_delete_nets_to_nothing", s)
                    .table(table_a(), 8)
                    .table(table_b(), 8)
                    .diff("st", "SELECT k, v, s FROM a")
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .step(&["INSERT INTO a VALUES (1, 77, 'gone')", "DELETE FROM a WHERE s = 'gone'"])
                    .step(&["INSERT INTO b VALUES (1, 77)", "INSERT INTO a VALUES (1, 78, 'gone')", "DELETE FROM b WHERE w = 77", "DELETE FROM a WHERE s = 'gone'"])
                    .step(&["DELETE FROM a WHERE k = 1", "INSERT INTO a SELECT k, v, s FROM a WHERE false"])
                    .step(&["UPDATE a SET v = v + 1", "UPDATE a SET v = v - 1"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "multi_row_statements",
            "statements that change many rows at once",
            210,
            |s, n| {
                Builder::new("multi_row_statements", s)
                    .table(table_a(), 6)
                    .table(table_b(), 6)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .step(&["INSERT INTO a SELECT i % 5, i, 'gen' FROM generate_series(1, 60) i"])
                    .step(&["UPDATE a SET v = v * 2 WHERE s = 'gen'"])
                    .step(&["INSERT INTO b SELECT k, v FROM a WHERE s = 'gen' AND v % 4 = 0"])
                    .step(&["DELETE FROM a WHERE s = 'gen' AND v % 3 = 0", "UPDATE b SET k = NULL WHERE w % 8 = 0"])
                    .step(&["DELETE FROM b WHERE k IS NULL OR w > 40"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "rolled_back_transactions",
            "rolled-back transactions and savepoints leave no trace",
            211,
            |s, n| {
                Builder::new("rolled_back_transactions", s)
                    .table(table_a(), 8)
                    .table(table_b(), 8)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .step(&["BEGIN", "INSERT INTO a VALUES (1, 500, 'rb')", "DELETE FROM b", "ROLLBACK"])
                    .step(&["BEGIN", "INSERT INTO a VALUES (2, 600, 'kept')", "SAVEPOINT sp", "UPDATE a SET k = 4 WHERE s = 'kept'", "DELETE FROM b WHERE k = 2", "ROLLBACK TO SAVEPOINT sp", "UPDATE b SET w = 1 WHERE k = 2", "COMMIT"])
                    .step(&["BEGIN", "UPDATE a SET v = 0", "ROLLBACK", "INSERT INTO b VALUES (2, 2)"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "truncate_source",
            "TRUNCATE of a source: the next refresh reinitialises, later ones are DIFFERENTIAL again",
            212,
            |s, n| {
                Builder::new("truncate_source", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .diff("bj", "SELECT k, count(*) AS n FROM b GROUP BY k")
                    .reinit_step(&["TRUNCATE a"], &["g", "j"])
                    .step(&["INSERT INTO a VALUES (1, 1, 'after'), (2, 2, 'after'), (NULL, 3, 'after')"])
                    .reinit_step(&["INSERT INTO b VALUES (1, 9)", "TRUNCATE b", "INSERT INTO b VALUES (2, 8)"], &["j", "bj"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "truncate_under_stream_table_chain",
            "TRUNCATE of the base source of a chain: the lower stream table reinitialises, the upper stays DIFFERENTIAL",
            213,
            |s, n| {
                Builder::new("truncate_under_stream_table_chain", s)
                    .table(table_a(), 10)
                    .diff("lower", "SELECT k, v FROM a WHERE v IS NOT NULL")
                    .diff("upper", "SELECT k, count(*) AS n, sum(v) AS total FROM lower GROUP BY k")
                    .step(&["INSERT INTO a VALUES (1, 5, 'x')"])
                    .reinit_step(&["TRUNCATE a", "INSERT INTO a VALUES (3, 3, 'y'), (3, 4, 'y')"], &["lower"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "sum_over_only_nulls_is_null",
            "sum and avg of a group whose values are all NULL are NULL; count(v) is 0",
            214,
            |s, n| {
                Builder::new("sum_over_only_nulls_is_null", s)
                    .table(table_a(), 8)
                    .diff("g", GROUPED)
                    .step(&["INSERT INTO a VALUES (7, NULL, 'z'), (7, NULL, 'z')"])
                    .step(&["INSERT INTO a VALUES (7, 3, 'z')"])
                    .step(&["UPDATE a SET v = NULL WHERE k = 7"])
                    .step(&["UPDATE a SET v = NULL WHERE k = 1"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "scalar_aggregate_over_empty_table",
            "a scalar aggregate stays one row (count 0, sum NULL) when the table empties",
            215,
            |s, n| {
                Builder::new("scalar_aggregate_over_empty_table", s)
                    .table(table_a(), 6)
                    .diff("sc", "SELECT count(*) AS n, count(v) AS nv, sum(v) AS total, min(v) AS lo, avg(v) AS mean FROM a")
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (1, NULL, 'x')"])
                    .step(&["DELETE FROM a"])
                    .step(&["INSERT INTO a VALUES (1, 4, 'x'), (1, 4, 'x')"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "join_both_sides_change_in_one_step",
            "matching rows inserted into and deleted from both sides in one step (dR join dS counted once)",
            216,
            |s, n| {
                Builder::new("join_both_sides_change_in_one_step", s)
                    .table(table_a(), 6)
                    .table(table_b(), 6)
                    .diff("j", JOINED)
                    .diff("ja", "SELECT a.k, count(*) AS n FROM a JOIN b ON a.k = b.k GROUP BY a.k")
                    .step(&["INSERT INTO a VALUES (8, 1, 'both'), (8, 2, 'both')", "INSERT INTO b VALUES (8, 10), (8, 11)"])
                    .step(&["DELETE FROM a WHERE k = 8 AND v = 1", "DELETE FROM b WHERE k = 8 AND w = 10"])
                    .step(&["UPDATE a SET k = 9 WHERE k = 8", "UPDATE b SET k = 9 WHERE k = 8"])
                    .step(&["DELETE FROM a WHERE k = 9", "DELETE FROM b WHERE k = 9"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "self_join_row_changes",
            "a row that joins with itself is updated and deleted",
            217,
            |s, n| {
                Builder::new("self_join_row_changes", s)
                    .table(table_a(), 8)
                    .diff("sj", "SELECT x.k, x.v, y.v AS v2 FROM a x JOIN a y ON x.k = y.k")
                    .step(&["INSERT INTO a VALUES (6, 1, 'self')"])
                    .step(&["INSERT INTO a VALUES (6, 2, 'self')"])
                    .step(&["UPDATE a SET v = 3 WHERE k = 6 AND v = 1"])
                    .step(&["UPDATE a SET k = 7 WHERE k = 6"])
                    .step(&["DELETE FROM a WHERE k = 7"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "distinct_copies_appear_and_disappear",
            "a DISTINCT row survives until its last copy goes",
            218,
            |s, n| {
                Builder::new("distinct_copies_appear_and_disappear", s)
                    .table(table_a(), 8)
                    .diff("d", "SELECT DISTINCT k, s FROM a")
                    .step(&["INSERT INTO a VALUES (3, 1, 'q'), (3, 2, 'q')"])
                    .step(&["DELETE FROM a WHERE k = 3 AND s = 'q' AND v = 1"])
                    .step(&["UPDATE a SET s = 'r' WHERE k = 3 AND s = 'q'"])
                    .step(&["INSERT INTO a VALUES (3, 5, 'r')", "DELETE FROM a WHERE k = 3 AND s = 'r'"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "numeric_avg_scale",
            "numeric avg keeps PostgreSQL's own division scale as values come and go",
            219,
            |s, n| {
                Builder::new("numeric_avg_scale", s)
                    .table(table_c(), 6)
                    .diff("av", "SELECT x % 2 AS half, avg(amount) AS mean, sum(amount) AS total FROM c GROUP BY 1")
                    .step(&["INSERT INTO c VALUES (1, 1.00), (1, 0.00), (1, 0.00)"])
                    .step(&["INSERT INTO c VALUES (3, 0.01)"])
                    .step(&["DELETE FROM c WHERE x = 3"])
                    .step(&["UPDATE c SET amount = 1000000.25 WHERE x = 1 AND amount = 1.00"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "union_all_branches_change_together",
            "one statement's change reaches two UNION ALL branches",
            220,
            |s, n| {
                Builder::new("union_all_branches_change_together", s)
                    .table(table_a(), 6)
                    .table(table_b(), 6)
                    .diff("u", "SELECT k, v FROM a WHERE v > 5 UNION ALL SELECT a.k, b.w FROM a JOIN b ON a.k = b.k")
                    .step(&["INSERT INTO a VALUES (2, 9, 'u')", "INSERT INTO b VALUES (2, 4)"])
                    .step(&["UPDATE a SET v = 1 WHERE s = 'u'"])
                    .step(&["DELETE FROM a WHERE s = 'u'", "DELETE FROM b WHERE k = 2 AND w = 4"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "stream_table_chain_with_netting",
            "changes that cancel out upstream produce nothing downstream",
            221,
            |s, n| {
                Builder::new("stream_table_chain_with_netting", s)
                    .table(table_a(), 10)
                    .table(table_b(), 10)
                    .diff("base", JOINED)
                    .diff("top", "SELECT k, count(*) AS n, sum(w) AS total, min(v) AS lo FROM base GROUP BY k")
                    .step(&["INSERT INTO a VALUES (1, 1, 'x')", "DELETE FROM a WHERE s = 'x'"])
                    .step(&["UPDATE b SET w = w + 1", "UPDATE b SET w = w - 1"])
                    .step(&["DELETE FROM a WHERE k = 1", "DELETE FROM b WHERE k = 2"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
        Entry::new(
            "union_all_equal_values_with_different_scale",
            "rows equal as numbers but not in text (1 and 1.00) from two UNION ALL branches; \
             found by SQLancer light (seed 4242, case 729)",
            222,
            |s, n| {
                Builder::new("union_all_equal_values_with_different_scale", s)
                    .table(table_a(), 4)
                    .table(table_c(), 4)
                    .diff("u", "SELECT k, v FROM a UNION ALL SELECT x, amount FROM c")
                    .step(&["INSERT INTO a VALUES (1, 1, 'int')", "INSERT INTO c VALUES (1, 1.00)"])
                    .step(&["DELETE FROM c WHERE x = 1 AND amount = 1.00"])
                    .step(&["INSERT INTO c VALUES (1, 1.00)"])
                    .step(&["DELETE FROM a WHERE s = 'int'"])
                    .step(&["INSERT INTO a VALUES (1, 1, 'int')", "UPDATE c SET amount = 1.00 WHERE x = 1"])
                    .step(&["DELETE FROM a WHERE s = 'int'", "DELETE FROM c WHERE x = 1"])
                    .random_steps(tail(n))
                    .build()
            },
        ),
    ]
}
