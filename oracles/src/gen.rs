//! Seeded random data and DML over small, collision-heavy domains.
//!
//! Small value domains make duplicates, NULL keys, groups that empty and
//! refill, and join-key moves common. Every choice comes from a ChaCha RNG
//! seeded by the caller, so a seed replays the same statements.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kind of values a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColKind {
    /// Integers in `0..domain`.
    Int {
        /// Exclusive upper bound.
        domain: i64,
    },
    /// Numerics with two decimals in `0..domain`.
    Numeric {
        /// Exclusive upper bound of the integer part.
        domain: i64,
    },
    /// Unconstrained `numeric` in `-domain..domain` with 0 to 3 decimals,
    /// trailing zeros included (`2`, `1.5`, `-0.125`, `3.10`): a sum prints
    /// with the largest scale among its values.
    Decimal {
        /// Exclusive bound of the integer part's magnitude.
        domain: i64,
    },
    /// Short text from a fixed vocabulary (with quotes and spaces).
    Text,
    /// Booleans.
    Bool,
    /// A generated identity primary key: never written by DML.
    Identity,
    /// `json` objects and arrays, spelled with varying spaces: no hash
    /// function and no equality.
    Json,
    /// `point`: no hash function and no equality; coordinates include -0.
    Point,
}

/// How a generated table stores its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One ordinary table.
    Plain,
    /// Range-partitioned on an integer column: `<name>_p<i>` per range of
    /// three values below `parts * 3`, and a DEFAULT partition (NULLs, the
    /// rest).
    Partitioned {
        /// The partition key column.
        column: String,
        /// Ranges besides the DEFAULT partition.
        parts: usize,
    },
    /// A parent with `<name>_c<i>` inheritance children; inserts go to any
    /// of them.
    Inherited {
        /// How many children.
        children: usize,
    },
}

/// One column of a generated table.
#[derive(Debug, Clone)]
pub struct ColSpec {
    /// Column name.
    pub name: String,
    /// Value kind.
    pub kind: ColKind,
    /// Percentage of NULLs.
    pub null_pct: u32,
}

impl ColSpec {
    fn new(name: &str, kind: ColKind, null_pct: u32) -> Self {
        ColSpec {
            name: name.into(),
            kind,
            null_pct,
        }
    }
    /// An integer column with values in `0..domain`.
    pub fn int(name: &str, domain: i64, null_pct: u32) -> Self {
        Self::new(name, ColKind::Int { domain }, null_pct)
    }
    /// A numeric(12,2) column.
    pub fn numeric(name: &str, domain: i64, null_pct: u32) -> Self {
        Self::new(name, ColKind::Numeric { domain }, null_pct)
    }
    /// An unconstrained numeric column of mixed scales.
    pub fn decimal(name: &str, domain: i64, null_pct: u32) -> Self {
        Self::new(name, ColKind::Decimal { domain }, null_pct)
    }
    /// A text column.
    pub fn text(name: &str, null_pct: u32) -> Self {
        Self::new(name, ColKind::Text, null_pct)
    }
    /// A boolean column.
    pub fn bool(name: &str, null_pct: u32) -> Self {
        Self::new(name, ColKind::Bool, null_pct)
    }
    /// A generated identity primary key.
    pub fn identity(name: &str) -> Self {
        Self::new(name, ColKind::Identity, 0)
    }
    /// A json column.
    pub fn json(name: &str, null_pct: u32) -> Self {
        Self::new(name, ColKind::Json, null_pct)
    }
    /// A point column.
    pub fn point(name: &str, null_pct: u32) -> Self {
        Self::new(name, ColKind::Point, null_pct)
    }
    /// Whether `=` compares its values (json and point have no equality).
    fn comparable(&self) -> bool {
        !matches!(self.kind, ColKind::Json | ColKind::Point)
    }
    fn writable(&self) -> bool {
        self.kind != ColKind::Identity
    }
    fn sql_type(&self) -> &'static str {
        match self.kind {
            ColKind::Int { .. } => "int",
            ColKind::Numeric { .. } => "numeric(12,2)",
            ColKind::Decimal { .. } => "numeric",
            ColKind::Text => "text",
            ColKind::Bool => "boolean",
            ColKind::Identity => "int GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            ColKind::Json => "json",
            ColKind::Point => "point",
        }
    }
}

/// A generated table. Without an identity column it has no key, so
/// duplicate rows are allowed.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Columns.
    pub columns: Vec<ColSpec>,
    /// How its rows are stored.
    pub layout: Layout,
}

impl TableSpec {
    /// A table with the given columns.
    pub fn new(name: &str, columns: Vec<ColSpec>) -> Self {
        TableSpec {
            name: name.into(),
            columns,
            layout: Layout::Plain,
        }
    }

    /// The same table, range-partitioned on integer column `column`.
    pub fn partitioned(mut self, column: &str, parts: usize) -> Self {
        self.layout = Layout::Partitioned {
            column: column.into(),
            parts,
        };
        self
    }

    /// The same table, as an inheritance parent with `children` children.
    pub fn inherited(mut self, children: usize) -> Self {
        self.layout = Layout::Inherited { children };
        self
    }

    /// `CREATE TABLE` (and its partitions or children) for this spec.
    pub fn create_sql(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.sql_type()))
            .collect();
        let t = &self.name;
        match &self.layout {
            Layout::Plain => format!("CREATE TABLE {t} ({})", cols.join(", ")),
            Layout::Partitioned { column, parts } => {
                let mut out = vec![format!(
                    "CREATE TABLE {t} ({}) PARTITION BY RANGE ({column})",
                    cols.join(", ")
                )];
                for i in 0..*parts {
                    out.push(format!(
                        "CREATE TABLE {t}_p{i} PARTITION OF {t} FOR VALUES FROM ({}) TO ({})",
                        i * 3,
                        i * 3 + 3
                    ));
                }
                out.push(format!("CREATE TABLE {t}_default PARTITION OF {t} DEFAULT"));
                out.join("; ")
            }
            Layout::Inherited { children } => {
                let mut out = vec![format!("CREATE TABLE {t} ({})", cols.join(", "))];
                for i in 0..*children {
                    out.push(format!("CREATE TABLE {t}_c{i} () INHERITS ({t})"));
                }
                out.join("; ")
            }
        }
    }

    /// The tables an INSERT may go to: the table, and its children.
    fn insert_targets(&self) -> Vec<String> {
        let mut out = vec![self.name.clone()];
        if let Layout::Inherited { children } = self.layout {
            out.extend((0..children).map(|i| format!("{}_c{i}", self.name)));
        }
        out
    }

    fn writable(&self) -> Vec<&ColSpec> {
        self.columns.iter().filter(|c| c.writable()).collect()
    }
}

const WORDS: &[&str] = &["a", "b", "c", "dd", "e e", "O'Neil"];

/// A seeded generator of values and DML statements.
pub struct DmlGen {
    rng: ChaCha8Rng,
}

impl DmlGen {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        DmlGen {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A random SQL literal for a column.
    pub fn value(&mut self, col: &ColSpec) -> String {
        if self.rng.gen_range(0..100) < col.null_pct {
            return "NULL".into();
        }
        match col.kind {
            ColKind::Int { domain } => self.rng.gen_range(0..domain).to_string(),
            ColKind::Numeric { domain } => {
                format!(
                    "{}.{:02}",
                    self.rng.gen_range(0..domain),
                    self.rng.gen_range(0..4) * 25
                )
            }
            ColKind::Decimal { domain } => {
                let whole = self.rng.gen_range(-domain + 1..domain);
                let decimals = ["", ".5", ".25", ".125", ".10", ".0", ".75"]
                    .choose(&mut self.rng)
                    .expect("non-empty");
                format!("{whole}{decimals}")
            }
            ColKind::Text => {
                let w = WORDS.choose(&mut self.rng).expect("non-empty");
                format!("'{}'", w.replace('\'', "''"))
            }
            ColKind::Bool => if self.rng.gen_bool(0.5) {
                "true"
            } else {
                "false"
            }
            .into(),
            ColKind::Identity => "DEFAULT".into(),
            ColKind::Json => {
                let n = self.rng.gen_range(0..4);
                [
                    format!("'{{\"n\": {n}}}'"),
                    format!("'{{\"n\":{n}}}'"),
                    format!("'[{n}, \"x\"]'"),
                    "'null'".into(),
                ]
                .choose(&mut self.rng)
                .expect("non-empty")
                .clone()
            }
            ColKind::Point => {
                let x = ["0", "-0", "1.5", "2"].choose(&mut self.rng).expect("xs");
                let y = self.rng.gen_range(0..3);
                format!("'({x},{y})'")
            }
        }
    }

    fn row(&mut self, t: &TableSpec) -> String {
        let vals: Vec<String> = t.writable().into_iter().map(|c| self.value(c)).collect();
        format!("({})", vals.join(", "))
    }

    /// An INSERT of `n` random rows (into the table or one of its children).
    pub fn insert(&mut self, t: &TableSpec, n: usize) -> String {
        let rows: Vec<String> = (0..n).map(|_| self.row(t)).collect();
        let cols: Vec<&str> = t.writable().iter().map(|c| c.name.as_str()).collect();
        let targets = t.insert_targets();
        let target = if targets.len() > 1 {
            targets.choose(&mut self.rng).expect("targets").clone()
        } else {
            t.name.clone()
        };
        format!(
            "INSERT INTO {target} ({}) VALUES {}",
            cols.join(", "),
            rows.join(", ")
        )
    }

    fn writable_column(&mut self, t: &TableSpec) -> ColSpec {
        t.writable()
            .choose(&mut self.rng)
            .map(|c| (*c).clone())
            .expect("a writable column")
    }

    fn predicate(&mut self, t: &TableSpec) -> String {
        let col = self.writable_column(t);
        let v = self.value(&col);
        if !col.comparable() {
            let not = if self.rng.gen_bool(0.5) { " NOT" } else { "" };
            return format!("{} IS{not} NULL", col.name);
        }
        if v == "NULL" {
            format!("{} IS NULL", col.name)
        } else {
            format!("{} = {v}", col.name)
        }
    }

    /// One random DML statement against `t`.
    pub fn statement(&mut self, t: &TableSpec) -> String {
        match self.rng.gen_range(0..10) {
            0..=3 => {
                let n = self.rng.gen_range(1..=4);
                self.insert(t, n)
            }
            4..=5 => {
                let col = self.writable_column(t);
                let v = self.value(&col);
                let p = self.predicate(t);
                format!("UPDATE {} SET {} = {v} WHERE {p}", t.name, col.name)
            }
            6 => {
                let p = self.predicate(t);
                format!("DELETE FROM {} WHERE {p}", t.name)
            }
            _ => {
                // Delete exactly one of possibly several equal rows (a ctid
                // is unique only within one table of a partition or
                // inheritance tree).
                let p = self.predicate(t);
                if t.layout == Layout::Plain {
                    format!(
                        "DELETE FROM {0} WHERE ctid IN (SELECT ctid FROM {0} WHERE {p} LIMIT 1)",
                        t.name
                    )
                } else {
                    format!(
                        "DELETE FROM {0} WHERE (tableoid, ctid) IN (SELECT tableoid, ctid FROM {0} WHERE {p} LIMIT 1)",
                        t.name
                    )
                }
            }
        }
    }

    /// A batch of statements over `tables`, sometimes wrapped in a rolled-back transaction.
    pub fn batch(&mut self, tables: &[TableSpec]) -> Vec<String> {
        let n = self.rng.gen_range(1..=4);
        let mut stmts: Vec<String> = (0..n)
            .map(|_| {
                let t = tables.choose(&mut self.rng).expect("tables").clone();
                self.statement(&t)
            })
            .collect();
        if self.rng.gen_range(0..8) == 0 {
            stmts.insert(0, "BEGIN".into());
            stmts.push("ROLLBACK".into());
        }
        stmts
    }

    /// A number in `0..n` from the same stream.
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(seed: u64, t: &TableSpec) -> Vec<Vec<String>> {
        let mut g = DmlGen::new(seed);
        (0..20).map(|_| g.batch(std::slice::from_ref(t))).collect()
    }

    #[test]
    fn same_seed_same_statements() {
        let t = TableSpec::new("t", vec![ColSpec::int("k", 4, 20), ColSpec::text("s", 10)]);
        assert_eq!(batches(7, &t), batches(7, &t));
        assert_ne!(batches(7, &t), batches(8, &t));
    }

    #[test]
    fn trees_are_created_with_their_members_and_written_through_them() {
        let t = TableSpec::new("t", vec![ColSpec::int("k", 9, 10), ColSpec::json("j", 10)])
            .partitioned("k", 2);
        let ddl = t.create_sql();
        assert!(
            ddl.contains("PARTITION BY RANGE (k)")
                && ddl.contains("t_p1 PARTITION OF t FOR VALUES FROM (3) TO (6)")
                && ddl.contains("DEFAULT"),
            "{ddl}"
        );
        let all = batches(5, &t).concat().join("\n");
        assert!(
            !all.contains("WHERE j ="),
            "json is never compared with =: {all}"
        );
        assert!(all.contains("(tableoid, ctid)"), "{all}");
        let i = TableSpec::new("p", vec![ColSpec::int("k", 4, 0)]).inherited(2);
        assert!(i.create_sql().contains("CREATE TABLE p_c1 () INHERITS (p)"));
        let inserts = batches(9, &i).concat().join("\n");
        assert!(inserts.contains("INSERT INTO p_c"), "{inserts}");
    }

    #[test]
    fn identity_columns_are_never_written() {
        let t = TableSpec::new("t", vec![ColSpec::identity("id"), ColSpec::int("k", 4, 0)]);
        for stmt in batches(3, &t).concat() {
            assert!(!stmt.contains("id ="), "{stmt}");
            assert!(!stmt.contains("(id"), "{stmt}");
        }
        assert!(t.create_sql().contains("PRIMARY KEY"));
    }
}
