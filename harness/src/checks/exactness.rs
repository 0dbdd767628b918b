//! The exactness matrix: every source kind, column type and write path,
//! with what pg_trickle does for it, declared once.
//!
//! Each row says how a stream table over that construct is created (kept
//! DIFFERENTIAL, FULL with a reason, or refused with a SQLSTATE) and, for
//! each operation, how the refresh after it runs: DIFFERENTIAL, or FULL
//! because the operation broke the change stream (reinitialisation). After
//! every operation the stream table must equal its query. The end-to-end
//! test `e2e_exactness` runs every cell against a real cluster and
//! `harness docs` renders the same declarations into docs/DIFFERENTIAL.md,
//! so the documentation and the test cannot drift apart.

use std::fmt::Write as _;

/// What happens to a stream table: at creation, or at the refresh after an
/// operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Maintained DIFFERENTIALLY, exactly.
    Diff,
    /// The operation broke the change stream: the next refresh recomputes
    /// FULL (reinitialisation), exactly; DIFFERENTIAL resumes after it.
    Reinit,
    /// FULL by definition, with a reason containing this text.
    Full(&'static str),
    /// Refused with this SQLSTATE and a message containing this text.
    Refused(&'static str, &'static str),
}

impl Outcome {
    /// The cell text in the documentation.
    pub fn cell(self) -> String {
        match self {
            Outcome::Diff => "exact, DIFFERENTIAL".into(),
            Outcome::Reinit => "exact, one FULL refresh (reinit)".into(),
            Outcome::Full(_) => "exact, FULL".into(),
            Outcome::Refused(state, _) => format!("refused ({state})"),
        }
    }
}

/// One operation on a row's sources, then a refresh.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The matrix column it belongs to.
    pub column: &'static str,
    /// The SQL (may be several statements).
    pub sql: &'static str,
    /// How the refresh after it runs.
    pub then: Outcome,
}

/// One row of a matrix.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// What the row is about.
    pub name: &'static str,
    /// Set-up SQL; `%PORT%` is the cluster's port (for a loopback server).
    pub setup: &'static str,
    /// The defining query of stream table `st`.
    pub query: &'static str,
    /// What `create_stream_table(..., 'AUTO')` gives.
    pub created: Outcome,
    /// Operations, in order, each followed by a refresh and a comparison.
    pub ops: &'static [Op],
}

const fn op(column: &'static str, sql: &'static str, then: Outcome) -> Op {
    Op { column, sql, then }
}

use Outcome::{Diff, Full, Refused, Reinit};

/// The columns of the source-kind matrix.
pub const SOURCE_COLUMNS: &[&str] = &[
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "TRUNCATE of a member",
    "new empty member",
    "member added with rows",
    "member removed",
    "member dropped",
    "write as replica",
];

const PLAIN_OPS: &[Op] = &[
    op("INSERT", "INSERT INTO src VALUES (4, 'd'), (4, 'd')", Diff),
    op("UPDATE", "UPDATE src SET v = v || '!' WHERE k <= 2", Diff),
    op("DELETE", "DELETE FROM src WHERE k = 1", Diff),
    op(
        "TRUNCATE",
        "TRUNCATE src; INSERT INTO src VALUES (7, 'g')",
        Reinit,
    ),
    op("INSERT", "INSERT INTO src VALUES (8, 'h')", Diff),
    op(
        "write as replica",
        "SET session_replication_role = replica; INSERT INTO src VALUES (9, 'r'); \
         UPDATE src SET v = 'rr' WHERE k = 7; RESET session_replication_role",
        Diff,
    ),
];

const FULL_OPS: &[Op] = &[
    op("INSERT", "INSERT INTO src VALUES (4, 'd')", Full("")),
    op("UPDATE", "UPDATE src SET v = v || '!'", Full("")),
    op("DELETE", "DELETE FROM src WHERE k = 1", Full("")),
    op(
        "TRUNCATE",
        "TRUNCATE src; INSERT INTO src VALUES (7, 'g')",
        Full(""),
    ),
];

/// Set-up of a postgres_fdw server `loop` back into the test database
/// (`%PORT%`, `%DB%`), for the rows about foreign tables.
macro_rules! loopback_server {
    () => {
        "CREATE EXTENSION postgres_fdw;
         CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '%PORT%', dbname '%DB%');
         CREATE USER MAPPING FOR CURRENT_USER SERVER loop;\n"
    };
}

/// Every source kind.
pub const SOURCES: &[Row] = &[
    Row {
        name: "table",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a'), (2, 'b'), (2, 'b')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: PLAIN_OPS,
    },
    Row {
        name: "unlogged table",
        setup: "CREATE UNLOGGED TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a'), (2, 'b')",
        query: "SELECT k, v FROM src",
        created: Full("unlogged"),
        ops: FULL_OPS,
    },
    Row {
        name: "partitioned table (two levels)",
        setup: "CREATE TABLE src (k int, v text) PARTITION BY RANGE (k);
                CREATE TABLE src_a PARTITION OF src FOR VALUES FROM (0) TO (10);
                CREATE TABLE src_b PARTITION OF src FOR VALUES FROM (10) TO (30) PARTITION BY RANGE (k);
                CREATE TABLE src_b1 PARTITION OF src_b FOR VALUES FROM (10) TO (20);
                CREATE TABLE src_b2 PARTITION OF src_b FOR VALUES FROM (20) TO (30);
                INSERT INTO src VALUES (1, 'a'), (11, 'b'), (21, 'c'), (21, 'c')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[
            op("INSERT", "INSERT INTO src VALUES (2, 'x'); INSERT INTO src_b2 VALUES (22, 'y')", Diff),
            op("UPDATE", "UPDATE src SET k = k + 10, v = v || '+' WHERE k IN (1, 11)", Diff),
            op("DELETE", "DELETE FROM src_b1 WHERE k = 21", Diff),
            op("TRUNCATE of a member", "TRUNCATE src_b2", Reinit),
            op(
                "new empty member",
                "CREATE TABLE src_c PARTITION OF src FOR VALUES FROM (30) TO (40); INSERT INTO src VALUES (31, 'new')",
                Diff,
            ),
            op(
                "member added with rows",
                "CREATE TABLE src_d (k int, v text); INSERT INTO src_d VALUES (41, 'attached');
                 ALTER TABLE src ATTACH PARTITION src_d FOR VALUES FROM (40) TO (50)",
                Reinit,
            ),
            op("member removed", "ALTER TABLE src DETACH PARTITION src_a", Reinit),
            op("member dropped", "DROP TABLE src_c", Reinit),
            op("TRUNCATE", "TRUNCATE src; INSERT INTO src VALUES (12, 'z')", Reinit),
            op(
                "write as replica",
                "SET session_replication_role = replica; INSERT INTO src VALUES (13, 'r'); RESET session_replication_role",
                Diff,
            ),
        ],
    },
    Row {
        name: "inheritance parent (two levels)",
        setup: "CREATE TABLE src (k int, v text); CREATE TABLE src_c (extra int) INHERITS (src);
                CREATE TABLE src_g () INHERITS (src_c);
                INSERT INTO src VALUES (1, 'p'); INSERT INTO src_c VALUES (2, 'c', 0); INSERT INTO src_g VALUES (3, 'g', 0)",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[
            op("INSERT", "INSERT INTO src_g VALUES (4, 'g2', 1); INSERT INTO src VALUES (5, 'p2')", Diff),
            op("UPDATE", "UPDATE src_c SET v = v || '!' WHERE k = 2; UPDATE src SET v = 'all'", Diff),
            op("DELETE", "DELETE FROM src_g WHERE k = 3", Diff),
            op("TRUNCATE of a member", "TRUNCATE src_g", Reinit),
            op(
                "new empty member",
                "CREATE TABLE src_n () INHERITS (src); INSERT INTO src_n VALUES (6, 'n')",
                Diff,
            ),
            op(
                "member added with rows",
                "CREATE TABLE src_x (k int, v text); INSERT INTO src_x VALUES (7, 'x'); ALTER TABLE src_x INHERIT src",
                Reinit,
            ),
            op("member removed", "ALTER TABLE src_n NO INHERIT src", Reinit),
            op("member dropped", "DROP TABLE src_x", Reinit),
            op("TRUNCATE", "TRUNCATE src; INSERT INTO src_c VALUES (8, 'c8', 2)", Reinit),
            op(
                "write as replica",
                "SET session_replication_role = replica; INSERT INTO src_c VALUES (9, 'r', 0); RESET session_replication_role",
                Diff,
            ),
        ],
    },
    Row {
        name: "`FROM ONLY` an inheritance parent",
        setup: "CREATE TABLE src (k int, v text); CREATE TABLE src_c () INHERITS (src);
                INSERT INTO src VALUES (1, 'p'); INSERT INTO src_c VALUES (2, 'c')",
        query: "SELECT k, v FROM ONLY src",
        created: Full("FROM ONLY"),
        ops: &[
            op("INSERT", "INSERT INTO src VALUES (3, 'p'); INSERT INTO src_c VALUES (4, 'c')", Full("")),
            op("TRUNCATE of a member", "TRUNCATE src_c", Full("")),
        ],
    },
    Row {
        name: "partitioned table with an unlogged partition",
        setup: "CREATE TABLE src (k int, v text) PARTITION BY RANGE (k);
                CREATE UNLOGGED TABLE src_u PARTITION OF src FOR VALUES FROM (0) TO (10);
                INSERT INTO src VALUES (1, 'a')",
        query: "SELECT k, v FROM src",
        created: Full("unlogged"),
        ops: &[op("INSERT", "INSERT INTO src VALUES (2, 'b')", Full(""))],
    },
    Row {
        name: "partitioned table with a foreign partition",
        setup: concat!(
            loopback_server!(),
            "CREATE TABLE remote_part (k int, v text); INSERT INTO remote_part VALUES (11, 'remote');
                CREATE TABLE src (k int, v text) PARTITION BY RANGE (k);
                CREATE TABLE src_l PARTITION OF src FOR VALUES FROM (0) TO (10);
                CREATE FOREIGN TABLE src_f PARTITION OF src FOR VALUES FROM (10) TO (20) SERVER loop OPTIONS (table_name 'remote_part');
                INSERT INTO src VALUES (1, 'a')"
        ),
        query: "SELECT k, v FROM src",
        created: Full("foreign table"),
        ops: &[op(
            "INSERT",
            "INSERT INTO src VALUES (2, 'b'); INSERT INTO remote_part VALUES (12, 'written remotely')",
            Full(""),
        )],
    },
    Row {
        name: "foreign table",
        setup: concat!(
            loopback_server!(),
            "CREATE TABLE remote (k int, v text); INSERT INTO remote VALUES (1, 'a');
                CREATE FOREIGN TABLE src (k int, v text) SERVER loop OPTIONS (table_name 'remote')"
        ),
        query: "SELECT k, v FROM src",
        created: Full("foreign table"),
        ops: &[op("INSERT", "INSERT INTO remote VALUES (2, 'b')", Full(""))],
    },
    Row {
        name: "view",
        setup: "CREATE TABLE base (k int, v text); INSERT INTO base VALUES (1, 'a');
                CREATE VIEW src AS SELECT k, v FROM base",
        query: "SELECT k, v FROM src",
        created: Full("is a view"),
        ops: &[op("INSERT", "INSERT INTO base VALUES (2, 'b')", Full(""))],
    },
    Row {
        name: "materialized view",
        setup: "CREATE TABLE base (k int, v text); INSERT INTO base VALUES (1, 'a');
                CREATE MATERIALIZED VIEW src AS SELECT k, v FROM base",
        query: "SELECT k, v FROM src",
        created: Full("materialized view"),
        ops: &[op(
            "INSERT",
            "INSERT INTO base VALUES (2, 'b'); REFRESH MATERIALIZED VIEW src",
            Full(""),
        )],
    },
    Row {
        name: "stream table",
        setup: "CREATE TABLE base (k int, v text); INSERT INTO base VALUES (1, 'a'), (2, 'b');
                SELECT pgtrickle.create_stream_table('src', 'SELECT k, v FROM base', NULL, 'DIFFERENTIAL')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[
            op(
                "INSERT",
                "INSERT INTO base VALUES (3, 'c'); SELECT pgtrickle.refresh_stream_table('src')",
                Diff,
            ),
            op(
                "DELETE",
                "DELETE FROM base WHERE k = 1; SELECT pgtrickle.refresh_stream_table('src')",
                Diff,
            ),
        ],
    },
    Row {
        name: "temporary table",
        setup: "CREATE TEMPORARY TABLE tmp (k int, v text)",
        query: "SELECT k, v FROM pg_temp.tmp",
        created: Refused("0A000", "temporary table"),
        ops: &[],
    },
];

/// The columns of the column-type matrix.
pub const TYPE_COLUMNS: &[&str] = &["INSERT", "UPDATE", "DELETE", "GROUP BY it"];

/// A column-type row: a table `src (id int, c <type>)` with three values,
/// a linear stream table over it, and (last op) a grouped one.
macro_rules! type_row {
    ($name:expr, $ty:expr, $a:expr, $b:expr, $c:expr, $grouped:expr) => {
        Row {
            name: $name,
            setup: concat!(
                "CREATE TABLE src (id int, c ",
                $ty,
                "); INSERT INTO src VALUES (1, ",
                $a,
                "), (2, ",
                $b,
                "), (2, ",
                $b,
                "), (3, NULL)"
            ),
            query: "SELECT id, c FROM src",
            created: Diff,
            ops: &[
                op(
                    "INSERT",
                    concat!("INSERT INTO src VALUES (4, ", $c, "), (5, ", $a, ")"),
                    Diff,
                ),
                op(
                    "UPDATE",
                    concat!("UPDATE src SET c = ", $c, " WHERE id = 1"),
                    Diff,
                ),
                op("DELETE", "DELETE FROM src WHERE id = 2", Diff),
                op(
                    "GROUP BY it",
                    "SELECT c, count(*) AS n FROM src GROUP BY c",
                    $grouped,
                ),
            ],
        }
    };
}

/// Every column type (and value class) that needs care.
pub const TYPES: &[Row] = &[
    type_row!(
        "json",
        "json",
        "'{\"a\": 1}'",
        "'[1, 2]'",
        "'{\"a\":  1}'",
        Refused("42883", "equality operator")
    ),
    type_row!(
        "jsonb",
        "jsonb",
        "'{\"a\": 1}'",
        "'[1, 2]'",
        "'{\"b\": null}'",
        Diff
    ),
    type_row!(
        "xml",
        "xml",
        "'<a/>'",
        "'<b>x</b>'",
        "'<c/>'",
        Refused("42883", "equality operator")
    ),
    type_row!(
        "point",
        "point",
        "'(1,2)'",
        "'(0.1,-0)'",
        "'(3,4)'",
        Refused("42883", "equality operator")
    ),
    type_row!(
        "box",
        "box",
        "'(1,1),(0,0)'",
        "'(2,2),(1,1)'",
        "'(3,3),(0,0)'",
        Refused("42883", "equality operator")
    ),
    type_row!(
        "money",
        "money",
        "1.5",
        "-2",
        "1e6",
        Full("no hash function")
    ),
    type_row!(
        "bit(3)",
        "bit(3)",
        "B'101'",
        "B'000'",
        "B'111'",
        Full("no hash function")
    ),
    type_row!(
        "tsvector",
        "tsvector",
        "'a b'",
        "'c:1'",
        "'d'",
        Full("no hash function")
    ),
    type_row!("int[]", "int[]", "'{1,2}'", "'{}'", "'{NULL,3}'", Diff),
    type_row!(
        "json[]",
        "json[]",
        "ARRAY['1'::json]",
        "ARRAY['{}'::json]",
        "ARRAY['[]'::json, NULL]",
        Refused("42883", "equality operator")
    ),
    type_row!(
        "domain over int[]",
        "int_list",
        "'{1,2}'",
        "'{3}'",
        "'{4,5}'",
        Diff
    ),
    type_row!("enum", "mood", "'sad'", "'ok'", "'happy'", Diff),
    type_row!(
        "composite",
        "pair",
        "ROW(1, 'x')",
        "ROW(NULL, 'y')",
        "ROW(2, NULL)",
        Diff
    ),
    type_row!(
        "composite with a json field",
        "jpair",
        "ROW(1, '{}')",
        "ROW(2, '[]')",
        "ROW(3, 'null')",
        Refused("42883", "equality operator")
    ),
    type_row!("range", "int4range", "'[1,5)'", "'empty'", "'(,3]'", Diff),
    type_row!("numeric NaN", "numeric", "'NaN'", "1.50", "'NaN'", Diff),
    type_row!("float NaN and -0", "float8", "'NaN'", "'-0'", "'0'", Diff),
    type_row!("bytea", "bytea", "'\\x00ff'", "''", "'\\xdeadbeef'", Diff),
    type_row!(
        "large TOASTed text",
        "text",
        "repeat('x', 200000)",
        "repeat('y', 100000) || 'z'",
        "repeat('x', 200000) || '!'",
        Diff
    ),
    type_row!(
        "text, nondeterministic collation",
        "text COLLATE ci",
        "'Abc'",
        "'abc'",
        "'ABC'",
        Full("nondeterministic collation")
    ),
];

/// Set-up every column-type row needs (user types, an ICU collation).
pub const TYPE_PRELUDE: &str = "CREATE DOMAIN int_list AS int[];
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TYPE pair AS (a int, b text);
    CREATE TYPE jpair AS (a int, j json);
    CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)";

/// The columns of the write-path matrix.
pub const WRITE_COLUMNS: &[&str] = &["refresh after it"];

/// Every way to write a source or a stream table.
pub const WRITES: &[Row] = &[
    Row {
        name: "COPY into a source",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[op(
            "refresh after it",
            "COPY src FROM PROGRAM 'printf \"2\\tb\\n3\\tc\\n\"'",
            Diff,
        )],
    },
    Row {
        name: "INSERT ... ON CONFLICT DO UPDATE",
        setup: "CREATE TABLE src (k int PRIMARY KEY, v text); INSERT INTO src VALUES (1, 'a')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[op(
            "refresh after it",
            "INSERT INTO src VALUES (1, 'A'), (2, 'b') ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            Diff,
        )],
    },
    Row {
        name: "MERGE",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a'), (2, 'b')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[op(
            "refresh after it",
            "MERGE INTO src s USING (VALUES (1, 'A'), (3, 'c')) n(k, v) ON s.k = n.k \
             WHEN MATCHED THEN UPDATE SET v = n.v WHEN NOT MATCHED THEN INSERT VALUES (n.k, n.v)",
            Diff,
        )],
    },
    Row {
        name: "writable CTE and a rolled-back savepoint",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a'), (2, 'b')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[op(
            "refresh after it",
            "BEGIN; WITH d AS (DELETE FROM src WHERE k = 1 RETURNING k) INSERT INTO src SELECT k + 10, 'moved' FROM d;
             SAVEPOINT s; INSERT INTO src VALUES (99, 'gone'); ROLLBACK TO s; COMMIT",
            Diff,
        )],
    },
    Row {
        name: "logical replication apply (session_replication_role = replica)",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[op(
            "refresh after it",
            "SET session_replication_role = replica; INSERT INTO src VALUES (2, 'b'); DELETE FROM src WHERE k = 1;
             RESET session_replication_role",
            Diff,
        )],
    },
    Row {
        name: "INSERT into a stream table",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[op(
            "refresh after it",
            "INSERT INTO st VALUES (5, 'forged')",
            Refused("42809", "only its refreshes change it"),
        )],
    },
    Row {
        name: "UPDATE, DELETE or TRUNCATE of a stream table, also as replica",
        setup: "CREATE TABLE src (k int, v text); INSERT INTO src VALUES (1, 'a')",
        query: "SELECT k, v FROM src",
        created: Diff,
        ops: &[
            op(
                "refresh after it",
                "UPDATE st SET v = 'x'",
                Refused("42809", "only its refreshes change it"),
            ),
            op(
                "refresh after it",
                "DELETE FROM st",
                Refused("42809", "only its refreshes change it"),
            ),
            op(
                "refresh after it",
                "TRUNCATE st",
                Refused("42809", "only its refreshes change it"),
            ),
            op(
                "refresh after it",
                "SET session_replication_role = replica; DELETE FROM st",
                Refused("42809", "only its refreshes change it"),
            ),
        ],
    },
];

/// The three matrices as Markdown tables, for docs/DIFFERENTIAL.md.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("### Source kinds\n\n");
    table(&mut out, "source", SOURCE_COLUMNS, SOURCES);
    out.push_str("\n### Column types\n\nA table `src (id int, c <type>)` with duplicate rows and NULLs, and `SELECT id, c FROM src`; the last column is `SELECT c, count(*) FROM src GROUP BY c`.\n\n");
    table(&mut out, "column type", TYPE_COLUMNS, TYPES);
    out.push_str("\n### Write paths\n\n");
    table(&mut out, "write", WRITE_COLUMNS, WRITES);
    out
}

fn table(out: &mut String, head: &str, columns: &[&str], rows: &[Row]) {
    let _ = write!(out, "| {head} | created |");
    for c in columns {
        let _ = write!(out, " {c} |");
    }
    out.push('\n');
    out.push_str(&"| --- ".repeat(columns.len() + 2));
    out.push_str("|\n");
    for r in rows {
        let created = match r.created {
            Outcome::Full(reason) => format!("FULL ({reason})"),
            other => other.cell(),
        };
        let _ = write!(out, "| {} | {created} |", r.name);
        for c in columns {
            let cells: Vec<String> = r
                .ops
                .iter()
                .filter(|o| o.column == *c)
                .map(|o| match o.then {
                    Outcome::Full(reason) if !reason.is_empty() => format!("FULL ({reason})"),
                    other => other.cell(),
                })
                .collect();
            let cell = if r.ops.is_empty() || cells.is_empty() {
                "—".to_string()
            } else {
                let mut uniq = cells.clone();
                uniq.dedup();
                uniq.join("; ")
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
}

/// Where the matrix goes in docs/DIFFERENTIAL.md.
pub const BEGIN_MARK: &str =
    "<!-- exactness matrix: generated by `harness docs` from harness/src/checks/exactness.rs -->";
/// End of the generated part.
pub const END_MARK: &str = "<!-- end of exactness matrix -->";

/// `doc` with the text between the marks replaced by [`markdown`], or
/// `None` when the marks are missing.
pub fn splice(doc: &str) -> Option<String> {
    let start = doc.find(BEGIN_MARK)? + BEGIN_MARK.len();
    let end = doc.find(END_MARK)?;
    Some(format!(
        "{}\n\n{}\n{}",
        &doc[..start],
        markdown(),
        &doc[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_names_a_declared_column() {
        for (rows, columns) in [
            (SOURCES, SOURCE_COLUMNS),
            (TYPES, TYPE_COLUMNS),
            (WRITES, WRITE_COLUMNS),
        ] {
            for r in rows {
                for o in r.ops {
                    assert!(columns.contains(&o.column), "{}: {}", r.name, o.column);
                }
            }
        }
    }

    #[test]
    fn the_documented_matrix_is_generated() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/DIFFERENTIAL.md")).unwrap();
        let spliced = splice(&doc).expect("docs/DIFFERENTIAL.md has the matrix marks");
        assert!(
            spliced == doc,
            "docs/DIFFERENTIAL.md's exactness matrix is stale: run `cargo run -p harness -- docs` and commit it"
        );
    }
}
