//! Source kinds and column types outside plain tables of plain types:
//! partitioned and inheritance trees (writes through any member, rows that
//! move between partitions, TRUNCATE, ATTACH, DETACH, INHERIT, NO INHERIT,
//! DROP of a member), columns without a hash function or equality, and
//! writes by a logical replication apply worker (replica role).

use super::{table_b, Entry};
use crate::gen::{ColSpec, TableSpec};
use crate::workload::Builder;

/// `a(k int, v int, s text)` as a range-partitioned table on `k`.
fn partitioned_a() -> TableSpec {
    TableSpec::new(
        "a",
        vec![
            ColSpec::int("k", 9, 15),
            ColSpec::int("v", 20, 10),
            ColSpec::text("s", 10),
        ],
    )
    .partitioned("k", 2)
}

/// `a(k int, v int, s text)` as an inheritance parent with two children.
fn inherited_a() -> TableSpec {
    TableSpec::new(
        "a",
        vec![
            ColSpec::int("k", 6, 15),
            ColSpec::int("v", 20, 10),
            ColSpec::text("s", 10),
        ],
    )
    .inherited(2)
}

const LINEAR: &str = "SELECT k, v, s FROM a WHERE v IS DISTINCT FROM 3";
const GROUPED: &str = "SELECT k, count(*) AS n, sum(v) AS total, min(s) AS lo FROM a GROUP BY k";
const JOINED: &str = "SELECT a.k, a.v, b.w FROM a JOIN b ON a.k = b.k";

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry::new(
            "partitioned_source",
            "a partitioned source: writes into partitions, rows moving between them, TRUNCATE/ATTACH/DETACH/DROP of partitions",
            401,
            |s, n| {
                Builder::new("partitioned_source", s)
                    .table(partitioned_a(), 12)
                    .table(table_b(), 8)
                    .diff("st", LINEAR)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .step(&["INSERT INTO a_p0 VALUES (1, 1, 'p0')", "INSERT INTO a_default VALUES (NULL, 2, 'dflt'), (40, 3, 'dflt')"])
                    .step(&["UPDATE a SET k = 4 WHERE k = 1", "UPDATE a SET k = NULL WHERE k = 40"])
                    .reinit_step(&["TRUNCATE a_p1"], &["st", "g", "j"])
                    .step(&["CREATE TABLE a_p2 PARTITION OF a FOR VALUES FROM (100) TO (110)", "INSERT INTO a VALUES (105, 7, 'new partition')"])
                    .reinit_step(
                        &[
                            // Another physical layout: the columns in another
                            // order, behind a dropped one.
                            "CREATE TABLE a_extra (gone int, s text, v int, k int)",
                            "ALTER TABLE a_extra DROP COLUMN gone",
                            "INSERT INTO a_extra VALUES ('attached', 5, 20), ('attached', NULL, 21)",
                            "ALTER TABLE a DETACH PARTITION a_default",
                            "ALTER TABLE a ATTACH PARTITION a_extra FOR VALUES FROM (20) TO (30)",
                        ],
                        &["st", "g", "j"],
                    )
                    .step(&[
                        "INSERT INTO a_extra VALUES ('direct', 6, 22)",
                        "INSERT INTO a VALUES (23, 7, 'routed')",
                        "UPDATE a SET v = v + 1, s = s || '+' WHERE k BETWEEN 20 AND 29",
                        "UPDATE a SET k = 3 WHERE k = 21",
                        "DELETE FROM a_extra WHERE k = 20",
                    ])
                    .reinit_step(&["ALTER TABLE a ATTACH PARTITION a_default DEFAULT"], &["st", "g", "j"])
                    .reinit_step(&["DROP TABLE a_p2"], &["st", "g", "j"])
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "inheritance_source",
            "an inheritance parent: writes to children, TRUNCATE of a child, INHERIT and NO INHERIT",
            402,
            |s, n| {
                Builder::new("inheritance_source", s)
                    .table(inherited_a(), 10)
                    .table(table_b(), 8)
                    .diff("st", LINEAR)
                    .diff("g", GROUPED)
                    .diff("j", JOINED)
                    .step(&["INSERT INTO a_c0 VALUES (1, 1, 'child'), (1, 1, 'child')", "UPDATE a SET v = v + 1 WHERE s = 'child'"])
                    .step(&["DELETE FROM a_c1 WHERE k = 2", "UPDATE a_c0 SET k = 5 WHERE v = 2"])
                    .reinit_step(&["TRUNCATE a_c1"], &["st", "g", "j"])
                    .reinit_step(
                        // A child with a column of its own first and the
                        // parent's in another order.
                        &[
                            "CREATE TABLE a_x (own int, s text, v int, k int)",
                            "INSERT INTO a_x VALUES (0, 'adopted', 3, 3)",
                            "ALTER TABLE a_x INHERIT a",
                        ],
                        &["st", "g", "j"],
                    )
                    .step(&[
                        "INSERT INTO a_x VALUES (1, 'adopted later', 4, 4)",
                        "UPDATE a SET v = v + 10 WHERE s LIKE 'adopted%'",
                        "UPDATE a_x SET own = 2, k = 5 WHERE v = 14",
                        "DELETE FROM a WHERE s = 'adopted'",
                    ])
                    .reinit_step(&["ALTER TABLE a_x NO INHERIT a"], &["st", "g", "j"])
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "columns_without_hash",
            "json and point columns (no hash function, no equality; json spelled with different spaces, -0 coordinates)",
            403,
            |s, n| {
                Builder::new("columns_without_hash", s)
                    .table(
                        TableSpec::new(
                            "u",
                            vec![
                                ColSpec::int("k", 4, 10),
                                ColSpec::json("j", 15),
                                ColSpec::point("p", 15),
                            ],
                        ),
                        10,
                    )
                    .diff("st", "SELECT k, j, p FROM u")
                    .diff("f", "SELECT j, p FROM u WHERE k IS NOT NULL")
                    .diff("g", "SELECT k, count(j) AS nj, count(*) AS n FROM u GROUP BY k")
                    .step(&["INSERT INTO u VALUES (1, '{\"n\": 1}', '(0,0)'), (1, '{\"n\":1}', '(-0,0)'), (1, '{\"n\": 1}', '(0,0)')"])
                    .step(&["DELETE FROM u WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM u WHERE k = 1 LIMIT 1)"])
                    .step(&["UPDATE u SET j = '[]' WHERE k = 1"])
                    .random_steps(n)
                    .build()
            },
        ),
        Entry::new(
            "replica_role_writes",
            "writes in session_replication_role = replica (a logical replication apply worker) are captured",
            404,
            |s, n| {
                Builder::new("replica_role_writes", s)
                    .table(partitioned_a(), 8)
                    .diff("st", LINEAR)
                    .diff("g", GROUPED)
                    .step(&[
                        "SET session_replication_role = replica",
                        "INSERT INTO a VALUES (2, 2, 'replicated'), (NULL, 1, 'replicated')",
                        "UPDATE a SET v = 9 WHERE s = 'replicated'",
                        "RESET session_replication_role",
                    ])
                    .step(&[
                        "SET session_replication_role = replica",
                        "DELETE FROM a WHERE s = 'replicated' AND k IS NULL",
                        "RESET session_replication_role",
                    ])
                    .random_steps(n.div_ceil(2))
                    .build()
            },
        ),
    ]
}
