//! A workload: everything an oracle run executes, as plain SQL.
//!
//! A workload is data, not code: schema statements, seed rows, stream table
//! definitions and DML steps. Corpus entries build one from a seed with
//! [`Builder`]; the shrinker removes parts of one; the replay file prints
//! one. Keeping it plain SQL is what makes every failure replayable in `psql`.

use serde::Serialize;

use crate::gen::{DmlGen, TableSpec};

/// The refresh mode a stream table is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Maintained from captured changes; every refresh must run DIFFERENTIAL.
    Differential,
    /// Recomputed; every refresh must run FULL.
    Full,
    /// The engine chooses; every refresh must run the mode it chose at
    /// creation, and a FULL choice is recorded with its reason.
    Auto,
}

impl Mode {
    /// The name used in the SQL API and the refresh history.
    pub fn sql_name(self) -> &'static str {
        match self {
            Mode::Differential => "DIFFERENTIAL",
            Mode::Full => "FULL",
            Mode::Auto => "AUTO",
        }
    }
}

/// A stream table the workload creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamTableDef {
    /// Name (unqualified, in the database's default schema).
    pub name: String,
    /// Defining query.
    pub query: String,
    /// Refresh mode it is created with.
    pub mode: Mode,
}

impl StreamTableDef {
    /// The `create_stream_table` call for this definition.
    pub fn create_sql(&self) -> String {
        format!(
            "SELECT pgtrickle.create_stream_table('{}', $q${}$q$, NULL, '{}')",
            self.name,
            self.query,
            self.mode.sql_name()
        )
    }

    /// The `refresh_stream_table` call for this definition.
    pub fn refresh_sql(&self) -> String {
        format!("SELECT pgtrickle.refresh_stream_table('{}')", self.name)
    }
}

/// One step: DML, then a refresh of every stream table (in creation
/// order), then statements run after the refresh and before the check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Statements run before the refresh (DML, transactions, TRUNCATE).
    pub dml: Vec<String>,
    /// Statements run after the refresh, before the comparison (the
    /// negative control tampers here).
    pub after_refresh: Vec<String>,
    /// DIFFERENTIAL stream tables whose refresh in this step must run FULL
    /// because the step breaks continuity (a TRUNCATE of a source).
    pub reinit: Vec<String>,
    /// Run the DML only: no refresh and no comparison (the stream tables
    /// are held, say). The next refreshing step must catch up.
    pub skip_refresh: bool,
}

/// Everything one oracle run executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Corpus name.
    pub name: String,
    /// The seed it was built from.
    pub seed: u64,
    /// Schema statements (tables, indexes).
    pub setup: Vec<String>,
    /// Seed data, one statement per row or small batch.
    pub seed_rows: Vec<String>,
    /// Stream tables, upstream first.
    pub stream_tables: Vec<StreamTableDef>,
    /// DML steps.
    pub steps: Vec<Step>,
}

impl Workload {
    /// Comparisons a complete run makes: one per stream table after
    /// creation and after every step.
    pub fn expected_comparisons(&self) -> usize {
        let refreshing = self.steps.iter().filter(|s| !s.skip_refresh).count();
        self.stream_tables.len() * (refreshing + 1)
    }

    /// Statements the workload executes (for shrink reports).
    pub fn statement_count(&self) -> usize {
        self.setup.len()
            + self.seed_rows.len()
            + self.stream_tables.len()
            + self
                .steps
                .iter()
                .map(|s| {
                    let refreshes = if s.skip_refresh {
                        0
                    } else {
                        self.stream_tables.len()
                    };
                    s.dml.len() + s.after_refresh.len() + refreshes
                })
                .sum::<usize>()
    }

    /// The same workload with no DML steps (used to inspect the stream
    /// tables' operator trees cheaply).
    pub fn without_steps(&self) -> Workload {
        Workload {
            steps: Vec::new(),
            ..self.clone()
        }
    }
}

/// Builds a workload from a seed: tables with random seed rows, stream
/// tables, scripted steps and random steps, in the order they are added.
pub struct Builder {
    workload: Workload,
    tables: Vec<TableSpec>,
    gen: DmlGen,
}

impl Builder {
    /// A builder for corpus entry `name` with `seed`.
    pub fn new(name: &str, seed: u64) -> Self {
        Builder {
            workload: Workload {
                name: name.into(),
                seed,
                setup: Vec::new(),
                seed_rows: Vec::new(),
                stream_tables: Vec::new(),
                steps: Vec::new(),
            },
            tables: Vec::new(),
            gen: DmlGen::new(seed),
        }
    }

    /// A table with `rows` random seed rows (one INSERT per row, so the
    /// shrinker can drop rows one by one).
    pub fn table(mut self, spec: TableSpec, rows: usize) -> Self {
        self.workload.setup.push(spec.create_sql());
        for _ in 0..rows {
            let stmt = self.gen.insert(&spec, 1);
            self.workload.seed_rows.push(stmt);
        }
        self.tables.push(spec);
        self
    }

    /// A schema statement (an index, a constraint, a fixed table).
    pub fn setup(mut self, sql: &str) -> Self {
        self.workload.setup.push(sql.into());
        self
    }

    /// A fixed seed-data statement.
    pub fn row(mut self, sql: &str) -> Self {
        self.workload.seed_rows.push(sql.into());
        self
    }

    /// A DIFFERENTIAL stream table.
    pub fn diff(self, name: &str, query: &str) -> Self {
        self.stream_table(name, query, Mode::Differential)
    }

    /// A FULL stream table.
    pub fn full(self, name: &str, query: &str) -> Self {
        self.stream_table(name, query, Mode::Full)
    }

    /// A stream table in any mode.
    pub fn stream_table(mut self, name: &str, query: &str, mode: Mode) -> Self {
        self.workload.stream_tables.push(StreamTableDef {
            name: name.into(),
            query: query.into(),
            mode,
        });
        self
    }

    /// A scripted step.
    pub fn step(mut self, dml: &[&str]) -> Self {
        self.workload.steps.push(Step {
            dml: dml.iter().map(|s| s.to_string()).collect(),
            ..Step::default()
        });
        self
    }

    /// A scripted step after which the named stream tables must be
    /// reinitialised with FULL (the step truncates one of their sources).
    pub fn reinit_step(mut self, dml: &[&str], reinit: &[&str]) -> Self {
        self.workload.steps.push(Step {
            dml: dml.iter().map(|s| s.to_string()).collect(),
            reinit: reinit.iter().map(|s| s.to_string()).collect(),
            ..Step::default()
        });
        self
    }

    /// A scripted step that runs DML without refreshing (held stream tables).
    pub fn dml_only_step(mut self, dml: &[&str]) -> Self {
        self.workload.steps.push(Step {
            dml: dml.iter().map(|s| s.to_string()).collect(),
            skip_refresh: true,
            ..Step::default()
        });
        self
    }

    /// `n` random steps without refreshes.
    pub fn random_dml_only_steps(mut self, n: usize) -> Self {
        for _ in 0..n {
            let dml = self.gen.batch(&self.tables);
            self.workload.steps.push(Step {
                dml,
                skip_refresh: true,
                ..Step::default()
            });
        }
        self
    }

    /// `n` random steps over every table added so far.
    pub fn random_steps(mut self, n: usize) -> Self {
        for _ in 0..n {
            let dml = self.gen.batch(&self.tables);
            self.workload.steps.push(Step {
                dml,
                ..Step::default()
            });
        }
        self
    }

    /// `n` random steps that only touch the named tables.
    pub fn random_steps_on(mut self, n: usize, tables: &[&str]) -> Self {
        let chosen: Vec<TableSpec> = self
            .tables
            .iter()
            .filter(|t| tables.contains(&t.name.as_str()))
            .cloned()
            .collect();
        assert!(
            !chosen.is_empty(),
            "random_steps_on: no table in {tables:?}"
        );
        for _ in 0..n {
            let dml = self.gen.batch(&chosen);
            self.workload.steps.push(Step {
                dml,
                ..Step::default()
            });
        }
        self
    }

    /// The workload.
    pub fn build(self) -> Workload {
        self.workload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::ColSpec;

    #[test]
    fn expected_comparisons_counts_creation_and_every_step() {
        let w = Builder::new("w", 1)
            .table(TableSpec::new("a", vec![ColSpec::int("k", 3, 0)]), 4)
            .diff("x", "SELECT k FROM a")
            .diff("y", "SELECT k FROM x")
            .random_steps(5)
            .build();
        assert_eq!(w.expected_comparisons(), 12);
        assert_eq!(w.seed_rows.len(), 4);
        assert_eq!(w.without_steps().expected_comparisons(), 2);
    }
}
