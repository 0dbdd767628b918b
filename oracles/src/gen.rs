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
    /// Short text from a fixed vocabulary (with quotes and spaces).
    Text,
    /// Booleans.
    Bool,
    /// A generated identity primary key: never written by DML.
    Identity,
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
    fn writable(&self) -> bool {
        self.kind != ColKind::Identity
    }
    fn sql_type(&self) -> &'static str {
        match self.kind {
            ColKind::Int { .. } => "int",
            ColKind::Numeric { .. } => "numeric(12,2)",
            ColKind::Text => "text",
            ColKind::Bool => "boolean",
            ColKind::Identity => "int GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
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
}

impl TableSpec {
    /// A table with the given columns.
    pub fn new(name: &str, columns: Vec<ColSpec>) -> Self {
        TableSpec {
            name: name.into(),
            columns,
        }
    }

    /// `CREATE TABLE` for this spec.
    pub fn create_sql(&self) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.sql_type()))
            .collect();
        format!("CREATE TABLE {} ({})", self.name, cols.join(", "))
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
        }
    }

    fn row(&mut self, t: &TableSpec) -> String {
        let vals: Vec<String> = t.writable().into_iter().map(|c| self.value(c)).collect();
        format!("({})", vals.join(", "))
    }

    /// An INSERT of `n` random rows.
    pub fn insert(&mut self, t: &TableSpec, n: usize) -> String {
        let rows: Vec<String> = (0..n).map(|_| self.row(t)).collect();
        let cols: Vec<&str> = t.writable().iter().map(|c| c.name.as_str()).collect();
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            t.name,
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
                // Delete exactly one of possibly several equal rows.
                let p = self.predicate(t);
                format!(
                    "DELETE FROM {0} WHERE ctid IN (SELECT ctid FROM {0} WHERE {p} LIMIT 1)",
                    t.name
                )
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
    fn identity_columns_are_never_written() {
        let t = TableSpec::new("t", vec![ColSpec::identity("id"), ColSpec::int("k", 4, 0)]);
        for stmt in batches(3, &t).concat() {
            assert!(!stmt.contains("id ="), "{stmt}");
            assert!(!stmt.contains("(id"), "{stmt}");
        }
        assert!(t.create_sql().contains("PRIMARY KEY"));
    }
}
