//! A workload: everything an oracle run executes, as plain SQL.
//!
//! A workload is data, not code: schema statements, seed rows, stream table
//! definitions and DML steps. Corpus entries build one from a seed with
//! [`Builder`]; the shrinker removes parts of one; the replay file prints
//! one. Keeping it plain SQL is what makes every failure replayable in `psql`.

use serde::{Deserialize, Serialize};

use crate::gen::{DmlGen, TableSpec};

/// The refresh mode a stream table is created with: the engine's own
/// requested mode. DIFFERENTIAL: every refresh must run DIFFERENTIAL;
/// FULL: every refresh must run FULL; AUTO: every refresh must run the mode
/// the engine chose at creation, and a FULL choice is recorded with its
/// reason.
pub use pg_trickle_core::ir::RequestedMode as Mode;

/// A stream table the workload creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTableDef {
    /// Name (unqualified, in the database's default schema).
    pub name: String,
    /// Defining query.
    pub query: String,
    /// Refresh mode it is created with.
    pub mode: Mode,
    /// Schedule (`'1s'`...) for the live scheduler; None refreshes only
    /// when asked.
    #[serde(default)]
    pub schedule: Option<String>,
}

impl StreamTableDef {
    /// The `create_stream_table` call for this definition.
    pub fn create_sql(&self) -> String {
        format!(
            "SELECT pgtrickle.create_stream_table('{}', $q${}$q$, {}, '{}')",
            self.name,
            self.query,
            self.schedule
                .as_ref()
                .map(|s| format!("'{s}'"))
                .unwrap_or_else(|| "NULL".into()),
            self.mode.name()
        )
    }

    /// The `refresh_stream_table` call for this definition.
    pub fn refresh_sql(&self) -> String {
        format!("SELECT pgtrickle.refresh_stream_table('{}')", self.name)
    }
}

/// The isolation level of one of a workload's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// READ COMMITTED (PostgreSQL's default).
    #[default]
    ReadCommitted,
    /// REPEATABLE READ.
    RepeatableRead,
    /// SERIALIZABLE.
    Serializable,
}

impl Isolation {
    /// The SQL name.
    pub fn sql_name(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

/// One statement of an interleaving, on one connection. Connection 0 is
/// the one that runs `dml` and the refreshes; connections 1..=N are the
/// workload's [`Workload::connections`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Which connection runs it.
    pub conn: usize,
    /// The statement.
    pub sql: String,
}

impl Action {
    /// `sql` on connection `conn`.
    pub fn on(conn: usize, sql: &str) -> Action {
        Action {
            conn,
            sql: sql.into(),
        }
    }
}

/// One step: DML, the interleaved actions of several connections, then a
/// refresh of every stream table (in creation order; with a live
/// scheduler, waiting for it instead), then statements run after the
/// refresh and before the check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Statements run before the refresh (DML, transactions, TRUNCATE).
    pub dml: Vec<String>,
    /// Statements of several connections, in the order they are started
    /// (after `dml`). One that waits for a lock stays waiting while the
    /// others go on; it completes once the lock is released.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Stream tables this step neither refreshes nor compares: they stay
    /// at an older frontier of the same change buffers.
    #[serde(default)]
    pub not_refreshed: Vec<String>,
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

/// `sql` with the name of the prepared transaction it prepares, commits
/// or rolls back prefixed by `wal_` (other statements unchanged).
fn rename_prepared(sql: &str) -> String {
    let prepared = [
        "PREPARE TRANSACTION '",
        "COMMIT PREPARED '",
        "ROLLBACK PREPARED '",
    ];
    prepared
        .iter()
        .find(|p| sql.contains(*p))
        .map(|p| sql.replacen(p, &format!("{p}wal_"), 1))
        .unwrap_or_else(|| sql.to_string())
}

/// How the sources of a workload's stream tables are captured: by
/// triggers (the default), or from the WAL, where after creation every
/// source that can be is switched with `pgtrickle.set_capture_mode(source,
/// 'wal')` and every other refreshing step first drains the slots, so
/// refreshes read changes both from the buffers and straight from the
/// slots.
pub use pg_trickle_core::catalog::Capture;

/// Everything one oracle run executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Extra connections for [`Step::actions`], with their isolation
    /// levels (connection `i + 1` is `connections[i]`).
    #[serde(default)]
    pub connections: Vec<Isolation>,
    /// Refreshed by the live scheduler, not by the runner: the workload
    /// runs in the database the scheduler watches, and each step waits for
    /// the stream tables to catch up.
    #[serde(default)]
    pub scheduler: bool,
    /// How its sources are captured.
    #[serde(default)]
    pub capture: Capture,
}

impl Workload {
    /// Comparisons a complete run makes: one per stream table after
    /// creation and after every step.
    pub fn expected_comparisons(&self) -> usize {
        let per_step: usize = self
            .steps
            .iter()
            .filter(|s| !s.skip_refresh)
            .map(|s| {
                self.stream_tables
                    .iter()
                    .filter(|st| !s.not_refreshed.contains(&st.name))
                    .count()
            })
            .sum();
        self.stream_tables.len() + per_step
    }

    /// Whether the workload needs connections of its own (several
    /// connections, or a live scheduler): the runner then drives every
    /// workload statement through them.
    pub fn concurrent(&self) -> bool {
        !self.connections.is_empty()
            || self.scheduler
            || self.steps.iter().any(|s| !s.actions.is_empty())
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
                    s.dml.len() + s.actions.len() + s.after_refresh.len() + refreshes
                })
                .sum::<usize>()
    }

    /// The same workload with its sources captured `capture`. Its
    /// prepared transactions are renamed (`wal_` before each name): their
    /// names are unique in a cluster, where both runs of a workload may
    /// run at once.
    pub fn with_capture(&self, capture: Capture) -> Workload {
        let mut w = Workload {
            capture,
            ..self.clone()
        };
        if capture == Capture::Wal {
            for step in &mut w.steps {
                for sql in step.dml.iter_mut().chain(step.after_refresh.iter_mut()) {
                    *sql = rename_prepared(sql);
                }
                for a in &mut step.actions {
                    a.sql = rename_prepared(&a.sql);
                }
            }
        }
        w
    }

    /// The same workload with no DML steps (used to inspect the stream
    /// tables' operator trees cheaply). With no steps the live scheduler has
    /// nothing to race, so the copy runs without it and in any database.
    pub fn without_steps(&self) -> Workload {
        Workload {
            steps: Vec::new(),
            scheduler: false,
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
                connections: Vec::new(),
                scheduler: false,
                capture: Capture::Trigger,
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

    /// A stream table in any mode. Its name must read as a table name
    /// unquoted (not a reserved word such as `having`): the oracle's
    /// statements write it as it is.
    pub fn stream_table(mut self, name: &str, query: &str, mode: Mode) -> Self {
        assert!(
            plain_identifier(name),
            "stream table name {name:?} is not a plain SQL identifier (the oracle writes it unquoted)"
        );
        self.workload.stream_tables.push(StreamTableDef {
            name: name.into(),
            query: query.into(),
            mode,
            schedule: None,
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

    /// `n` random steps that leave the named stream tables unrefreshed
    /// (they fall behind on the same change buffers).
    pub fn random_partial_steps(mut self, n: usize, not_refreshed: &[&str]) -> Self {
        for _ in 0..n {
            let dml = self.gen.batch(&self.tables);
            self.workload.steps.push(Step {
                dml,
                not_refreshed: not_refreshed.iter().map(|s| s.to_string()).collect(),
                ..Step::default()
            });
        }
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

    /// Extra connections with these isolation levels (1..=N in actions).
    pub fn connections(mut self, levels: &[Isolation]) -> Self {
        self.workload.connections = levels.to_vec();
        self
    }

    /// Refreshes by the live scheduler instead of the runner: every stream
    /// table added so far gets `schedule`.
    pub fn scheduled(mut self, schedule: &str) -> Self {
        self.workload.scheduler = true;
        for st in &mut self.workload.stream_tables {
            st.schedule = Some(schedule.into());
        }
        self
    }

    /// A scripted step of interleaved actions `(connection, statement)`.
    pub fn interleaved(mut self, actions: &[(usize, &str)]) -> Self {
        self.workload.steps.push(Step {
            actions: actions.iter().map(|(c, s)| Action::on(*c, s)).collect(),
            ..Step::default()
        });
        self
    }

    /// Like [`Builder::interleaved`], with the named stream tables
    /// reinitialised (FULL) by its refresh.
    pub fn interleaved_reinit(mut self, actions: &[(usize, &str)], reinit: &[&str]) -> Self {
        self.workload.steps.push(Step {
            actions: actions.iter().map(|(c, s)| Action::on(*c, s)).collect(),
            reinit: reinit.iter().map(|s| s.to_string()).collect(),
            ..Step::default()
        });
        self
    }

    /// A scripted step of interleaved actions that leaves the named stream
    /// tables unrefreshed (they fall behind on the same change buffers).
    pub fn interleaved_partial(
        mut self,
        actions: &[(usize, &str)],
        not_refreshed: &[&str],
    ) -> Self {
        self.workload.steps.push(Step {
            actions: actions.iter().map(|(c, s)| Action::on(*c, s)).collect(),
            not_refreshed: not_refreshed.iter().map(|s| s.to_string()).collect(),
            ..Step::default()
        });
        self
    }

    /// `n` random steps whose DML is spread over the extra connections in
    /// transactions (some rolled back, some with an aborted savepoint, some
    /// prepared for two-phase commit, some left open across the step's
    /// refresh), seeded interleavings of them, and refreshes from
    /// connection 0 while they are open; then a step that commits whatever
    /// is still open.
    pub fn random_interleaved_steps(mut self, n: usize) -> Self {
        let mut model = crate::interleave::Interleaver::new(
            self.workload.connections.len(),
            &self.workload.name,
        );
        let names: Vec<String> = self
            .workload
            .stream_tables
            .iter()
            .map(|st| st.name.clone())
            .collect();
        for _ in 0..n {
            let mut source = crate::interleave::TableDml {
                gen: &mut self.gen,
                tables: &self.tables,
            };
            let actions = model.step(&mut source, &names);
            self.workload.steps.push(Step {
                actions,
                ..Step::default()
            });
        }
        let closing = model.closing();
        if !closing.is_empty() {
            self.workload.steps.push(Step {
                actions: closing,
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

/// Whether `name` is one lower-case identifier PostgreSQL reads unquoted as
/// a table name (not a reserved word, which `SELECT 1 FROM having` would
/// stumble on).
fn plain_identifier(name: &str) -> bool {
    pg_trickle_core::sql::quote_ident(name) == name
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_table_names_are_plain_identifiers() {
        assert!(super::plain_identifier("by_having"));
        assert!(super::plain_identifier("q13"));
        for bad in ["having", "select", "Upper", "a b", "x;y", ""] {
            assert!(!super::plain_identifier(bad), "{bad}");
        }
    }

    use super::*;
    use crate::gen::ColSpec;

    #[test]
    fn wal_runs_rename_their_prepared_transactions() {
        assert_eq!(
            rename_prepared("PREPARE TRANSACTION 'w_1'"),
            "PREPARE TRANSACTION 'wal_w_1'"
        );
        assert_eq!(
            rename_prepared("COMMIT PREPARED 'w_1'"),
            "COMMIT PREPARED 'wal_w_1'"
        );
        assert_eq!(rename_prepared("COMMIT"), "COMMIT");
    }

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
