//! The DIFF-vs-FULL oracle: run a workload in an empty database and, after
//! creation and after every step's refresh, compare each stream table with
//! its defining query recomputed from scratch.
//!
//! A check passes only when all of these hold: the rows are equal as
//! multisets; the column names and types equal the query's own; the
//! refresh wrote a new history row whose mode is the one the stream table
//! must use (DIFFERENTIAL, or FULL where the step breaks continuity). The
//! first check that does not pass ends the run, because everything after
//! it would compare against a state already known to be wrong.
//!
//! A concurrent workload (several connections, or the live scheduler) runs
//! its statements through [`crate::sessions`]; see [`concurrent`].

mod concurrent;

use std::collections::BTreeSet;
use std::time::Instant;

use postgres::Client;
use serde::Serialize;

use pg_trickle_core::ir::Mode as Maintained;

use crate::compare::{
    both_sides, multiset_difference, query_columns, render_columns, row_diff, stream_table_columns,
};
use crate::engine_api::{self, Ran};
use crate::outcome::{Check, Outcome, Tally};
use crate::sessions::Sessions;
use crate::workload::{Capture, Mode, Step, Workload};

/// The result of running one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRun {
    /// Workload name.
    pub workload: String,
    /// Its seed.
    pub seed: u64,
    /// Every check made, in order.
    pub checks: Vec<Check>,
    /// Checks by outcome.
    pub tally: Tally,
    /// Comparisons a complete run makes; fewer fails the run.
    pub expected_comparisons: usize,
    /// Operators and aggregates the engine reported for the stream tables.
    pub operators: BTreeSet<String>,
    /// The mode each stream table got at creation, and the engine's reason
    /// when it is FULL: `(name, mode, reason)`.
    pub modes: Vec<(String, String, Option<String>)>,
    /// Statements executed, in order, up to the end or the failure. In a
    /// concurrent workload each is prefixed with its connection, and lock
    /// waits and tolerated errors are noted as comments.
    pub trace: Vec<String>,
    /// Statements of a concurrent workload that failed with a tolerated
    /// conflict (serialization failure, deadlock, a statement in an aborted
    /// transaction, a wait the runner cancelled).
    pub conflicts: usize,
    /// Wall time.
    pub millis: u128,
}

impl WorkloadRun {
    /// A run of workload `workload` (seed `seed`) before anything ran.
    pub fn new(workload: &str, seed: u64, expected_comparisons: usize) -> Self {
        WorkloadRun {
            workload: workload.to_string(),
            seed,
            checks: Vec::new(),
            tally: Tally::default(),
            expected_comparisons,
            operators: BTreeSet::new(),
            modes: Vec::new(),
            trace: Vec::new(),
            conflicts: 0,
            millis: 0,
        }
    }

    /// The mode stream table `i` got at creation; None when it was not
    /// created or status named a mode this runner does not know.
    pub fn effective_mode(&self, i: usize) -> Option<Maintained> {
        self.modes.get(i).and_then(|m| Maintained::parse(&m.1))
    }

    /// The first check that did not pass.
    pub fn failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.outcome != Outcome::Pass)
    }

    /// Passed: every check passed and the run made every comparison it declared.
    pub fn passed(&self) -> bool {
        self.failure().is_none() && self.tally.pass >= self.expected_comparisons
    }

    /// The outcome that judges this run: the failing check's, a harness
    /// error for a run that stopped short without a failing check, else pass.
    pub fn outcome(&self) -> Outcome {
        match self.failure() {
            Some(c) => c.outcome,
            None if self.tally.pass < self.expected_comparisons => Outcome::HarnessError,
            None => Outcome::Pass,
        }
    }
}

/// SQLSTATE, message and context of a database error.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.code().code(),
            db.severity(),
            db.message(),
            db.where_()
                .map(|w| format!(" (context: {})", w.replace('\n', "; ")))
                .unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// Whose failure a failed workload statement is ([`crate::outcome::blame`]):
/// `engine_call` when the statement calls the engine's API.
fn blame_error(e: &postgres::Error, engine_call: bool) -> Outcome {
    let in_engine_code = e.as_db_error().is_some_and(|db| {
        let names_engine = |t: &str| t.contains("pgtrickle");
        db.where_().is_some_and(names_engine) || db.routine().is_some_and(names_engine)
    });
    crate::outcome::blame(e.code().map(|c| c.code()), in_engine_code, engine_call)
}

struct Runner<'a> {
    db: &'a mut Client,
    run: WorkloadRun,
    sessions: Option<Sessions>,
    /// Per connection: its transaction was aborted by a tolerated failure.
    aborted: Vec<bool>,
    /// A statement of another connection finished while connection 0 ran
    /// one of the step's refreshes (a stall was broken and what was queued
    /// behind it ran): a refresh before it may have missed its changes.
    others_finished: bool,
}

impl Runner<'_> {
    fn record(
        &mut self,
        stream_table: &str,
        step: usize,
        outcome: Outcome,
        detail: Option<String>,
    ) {
        self.run.tally.add(outcome);
        self.run.checks.push(Check {
            stream_table: stream_table.into(),
            step,
            outcome,
            detail,
            sqlstate: None,
        });
    }

    fn record_error(
        &mut self,
        object: &str,
        step: usize,
        outcome: Outcome,
        detail: String,
        e: &postgres::Error,
    ) {
        self.record(object, step, outcome, Some(detail));
        if let Some(last) = self.run.checks.last_mut() {
            last.sqlstate = e.code().map(|c| c.code().to_string());
        }
    }

    /// Execute one workload statement; on failure record it and return false.
    fn exec(&mut self, sql: &str, object: &str, step: usize, engine_call: bool) -> bool {
        self.run.trace.push(sql.to_string());
        match self.db.batch_execute(sql) {
            Ok(()) => true,
            Err(e) => {
                let outcome = blame_error(&e, engine_call);
                let detail = format!("statement failed: {sql}\n{}", describe(&e));
                // Leave any open transaction so later inspection works.
                let _ = self.db.batch_execute("ROLLBACK");
                self.record_error(object, step, outcome, detail, &e);
                false
            }
        }
    }

    /// The last history id of every stream table (None after recording a failure).
    fn history_marks(&mut self, w: &Workload, step: usize) -> Option<Vec<i64>> {
        let mut history = Vec::with_capacity(w.stream_tables.len());
        for st in &w.stream_tables {
            match engine_api::last_refresh_id(self.db, &st.name) {
                Ok(id) => history.push(id),
                Err(e) => {
                    self.record_error(&st.name, step, Outcome::HarnessError, describe(&e), &e);
                    return None;
                }
            }
        }
        Some(history)
    }

    fn record_mode(&mut self, st: &str) -> Result<(), postgres::Error> {
        let (mode, reason) = engine_api::effective_mode(self.db, st)?;
        self.run.modes.push((st.to_string(), mode, reason));
        Ok(())
    }

    /// The mode stream table `i` must refresh in (after creation); None
    /// when status named a mode this runner does not know (so no refresh
    /// can pass as the one wanted).
    fn mode_of(&self, i: usize) -> Option<Maintained> {
        match self.run.modes.get(i) {
            Some(_) => self.run.effective_mode(i),
            None => Some(Maintained::Differential),
        }
    }

    fn collect_operators(&mut self, st: &str, names: &[String]) -> Result<(), postgres::Error> {
        let row = self
            .db
            .query_one("SELECT pgtrickle.explain_stream_table($1)::text", &[&st])?;
        let text: String = row.get(0);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        collect_tree(&json["operator_tree"], names, &mut self.run.operators);
        Ok(())
    }

    /// Compare one stream table; `mode` is the mode its refresh must have run
    /// (None right after creation).
    fn compare(
        &mut self,
        st: &str,
        query: &str,
        step: usize,
        mode: ModeCheck,
    ) -> Result<Option<String>, postgres::Error> {
        let st_cols = stream_table_columns(self.db, st)?;
        let q_cols = query_columns(self.db, query)?;
        if st_cols != q_cols {
            return Ok(Some(format!(
                "columns differ\n  stream table: {}\n  query:        {}",
                render_columns(&st_cols),
                render_columns(&q_cols)
            )));
        }
        let (stored, fresh) = both_sides(self.db, st, &st_cols, query)?;
        let (only_st, only_q) = multiset_difference(&stored, &fresh);
        if !only_st.is_empty() || !only_q.is_empty() {
            return Ok(Some(format!(
                "rows differ after step {step}: {} only in the stream table, {} only in the query\n{}",
                only_st.len(),
                only_q.len(),
                row_diff(&stored, &fresh)
            )));
        }
        match mode {
            ModeCheck::None => {}
            ModeCheck::Latest(want, after_id) => {
                let last = engine_api::refreshes_after(self.db, st, after_id)?.pop();
                match last {
                    None => return Ok(Some("the refresh wrote no history row".into())),
                    Some(r) if r.ran == Ran::Mode(want) => {}
                    // A refresh in a transaction that wrote a source captured
                    // from the WAL recomputes, and says so.
                    Some(r)
                        if r.ran == Ran::Mode(Maintained::Full)
                            && r.reason
                                .as_deref()
                                .is_some_and(|x| x.starts_with(concurrent::OWN_WAL_WRITES)) => {}
                    Some(r) => {
                        return Ok(Some(format!(
                            "the refresh ran {}, but this stream table must refresh {want} here",
                            r.describe()
                        )))
                    }
                }
            }
            ModeCheck::Every(want, after_id) => {
                if let Some(why) = self.scheduled_modes(st, want, after_id)? {
                    return Ok(Some(why));
                }
            }
        }
        Ok(None)
    }

    /// Refresh every stream table `step` refreshes, each through
    /// `refresh(runner, sql, stream table)`: the one connection, or
    /// connection 0 of a concurrent workload. False once one failed (and
    /// was recorded).
    fn refresh_step(
        &mut self,
        w: &Workload,
        step: &Step,
        refresh: impl Fn(&mut Self, &str, &str) -> bool,
    ) -> bool {
        // Capture from the WAL: every other step's refreshes find the
        // changes decoded into the buffers, the others read them from the
        // slots.
        let index = w.steps.iter().position(|s| std::ptr::eq(s, step));
        if w.capture == Capture::Wal
            && index.is_some_and(|i| i % 2 == 1)
            && !refresh(self, DRAIN_SQL, "drain")
        {
            return false;
        }
        w.stream_tables
            .iter()
            .filter(|st| !step.not_refreshed.contains(&st.name))
            .all(|st| refresh(self, &st.refresh_sql(), &st.name))
    }

    /// Switch every captured source that can be to capture from the WAL
    /// (partitioned tables, inheritance parents and stream tables stay on
    /// triggers: the engine refuses them with 0A000). False once a switch
    /// failed otherwise (and was recorded).
    fn switch_to_wal(&mut self) -> bool {
        let sources = match self.db.query(
            "SELECT source FROM pgtrickle.change_buffer_status() ORDER BY source",
            &[],
        ) {
            Ok(rows) => rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>(),
            Err(e) => {
                self.record_error("setup", 0, Outcome::EngineError, describe(&e), &e);
                return false;
            }
        };
        for source in sources {
            let sql = format!(
                "SELECT pgtrickle.set_capture_mode('{}', 'wal')",
                source.replace('\'', "''")
            );
            self.run.trace.push(sql.clone());
            if let Err(e) = self.db.batch_execute(&sql) {
                if e.code().map(|c| c.code()) == Some("0A000") {
                    continue;
                }
                let detail = format!("statement failed: {sql}\n{}", describe(&e));
                self.record_error("setup", 0, blame_error(&e, true), detail, &e);
                return false;
            }
        }
        true
    }

    /// The end of step `n` once its refreshes ran: its after-refresh
    /// statements, then every stream table checked against the refresh
    /// marks taken before the step (`history`). False once something
    /// failed (and was recorded).
    fn close_step(&mut self, w: &Workload, step: &Step, n: usize, history: &[i64]) -> bool {
        for sql in &step.after_refresh {
            if !self.exec(sql, "after refresh", n, false) {
                return false;
            }
        }
        self.check_all(w, n, history)
    }

    /// Compare every stream table the step refreshed; false once one does
    /// not pass.
    fn check_all(&mut self, w: &Workload, step: usize, history: &[i64]) -> bool {
        for i in 0..w.stream_tables.len() {
            let this: Option<&Step> = step.checked_sub(1).map(|s| &w.steps[s]);
            if this.is_some_and(|s| s.not_refreshed.contains(&w.stream_tables[i].name)) {
                continue;
            }
            if !self.check_one(w, step, i, history.get(i).copied().unwrap_or(0)) {
                return false;
            }
        }
        true
    }

    /// Compare stream table `i` after a refresh of it in `step` (0:
    /// creation) whose history rows follow row `mark`; false when it does
    /// not pass.
    fn check_one(&mut self, w: &Workload, step: usize, i: usize, mark: i64) -> bool {
        let st = &w.stream_tables[i];
        let this: Option<&Step> = step.checked_sub(1).map(|s| &w.steps[s]);
        let effective = self.mode_of(i);
        let want = match this {
            None => None,
            Some(s)
                if effective == Some(Maintained::Differential)
                    && s.reinit.iter().all(|r| r != &st.name) =>
            {
                Some(Maintained::Differential)
            }
            Some(_) => Some(Maintained::Full),
        };
        let want = match want {
            None => ModeCheck::None,
            Some(m) if w.scheduler => ModeCheck::Every(m, mark),
            Some(m) => ModeCheck::Latest(m, mark),
        };
        match self.compare(&st.name, &st.query, step, want) {
            Ok(None) => {
                self.record(&st.name, step, Outcome::Pass, None);
                true
            }
            Ok(Some(why)) => {
                self.record(&st.name, step, Outcome::Mismatch, Some(why));
                false
            }
            Err(e) => {
                let outcome = if e.as_db_error().is_some() {
                    // The recomputed query or the catalog read failed: the
                    // stream table is unreadable or its query no longer runs.
                    Outcome::EngineError
                } else {
                    Outcome::HarnessError
                };
                self.record_error(&st.name, step, outcome, describe(&e), &e);
                false
            }
        }
    }
}

/// How a check judges the mode of the refreshes a step made.
#[derive(Debug, Clone, Copy)]
enum ModeCheck {
    /// Right after creation: no refresh to judge.
    None,
    /// The last refresh after refresh id `.1` ran mode `.0`.
    Latest(Maintained, i64),
    /// Every refresh after refresh id `.1` ran mode `.0` (the scheduler
    /// may have refreshed any number of times, or not at all).
    Every(Maintained, i64),
}

fn collect_tree(node: &serde_json::Value, st_names: &[String], out: &mut BTreeSet<String>) {
    let Some(op) = node["op"].as_str() else {
        return;
    };
    out.insert(op.to_string());
    let detail = node["detail"].as_str().unwrap_or_default();
    if op == "Scan" {
        // "schema.table" or "schema.table AS alias"
        let qualified = detail.split_whitespace().next().unwrap_or_default();
        let table = qualified.rsplit('.').next().unwrap_or_default();
        if st_names.iter().any(|n| n == table) {
            out.insert("Scan of a stream table".into());
        }
    }
    if op == "Aggregate" {
        if let Some(aggs) = detail.split("aggregates: [").nth(1) {
            for piece in aggs.split(", ") {
                if let Some((name, _)) = piece.split_once('(') {
                    out.insert(format!("Aggregate {}", name.trim().to_lowercase()));
                }
            }
        }
    }
    if let Some(children) = node["children"].as_array() {
        for c in children {
            collect_tree(c, st_names, out);
        }
    }
}

/// Run `w` in the (empty, pg_trickle-installed) database `db` is connected to.
pub fn run(db: &mut Client, w: &Workload) -> WorkloadRun {
    let started = Instant::now();
    let mut r = Runner {
        db,
        run: WorkloadRun::new(&w.name, w.seed, w.expected_comparisons()),
        sessions: None,
        aborted: Vec::new(),
        others_finished: false,
    };
    // The oracle checks the differential statement at every step: AUTO's
    // adaptive choice must not recompute a large step instead. Versions
    // without the setting have no such choice (the statement sets nothing
    // there, and fails nothing).
    if let Err(e) = r.db.batch_execute(
        "SELECT set_config(name, 'off', false) FROM pg_settings WHERE name = 'pg_trickle.adaptive_auto'",
    ) {
        r.record_error("setup", 0, Outcome::HarnessError, describe(&e), &e);
        r.run.millis = started.elapsed().as_millis();
        return r.run;
    }
    if w.concurrent() {
        concurrent::run_steps(&mut r, w);
        concurrent::clean_up(&mut r);
    } else {
        run_steps(&mut r, w);
        // A step list cut by the shrinker can stop between PREPARE and
        // COMMIT PREPARED without being concurrent any more.
        concurrent::roll_back_prepared(r.db);
    }
    r.run.millis = started.elapsed().as_millis();
    r.run
}

/// Setup, seed rows and the stream tables, then the check after creation;
/// false when something failed (and was recorded).
fn create_all(r: &mut Runner<'_>, w: &Workload) -> bool {
    for sql in w.setup.iter().chain(&w.seed_rows) {
        if !r.exec(sql, "setup", 0, false) {
            return false;
        }
    }
    let names: Vec<String> = w.stream_tables.iter().map(|s| s.name.clone()).collect();
    for st in &w.stream_tables {
        if !r.exec(&st.create_sql(), &st.name, 0, true) {
            return false;
        }
        if let Err(e) = r.collect_operators(&st.name, &names) {
            r.record_error(&st.name, 0, Outcome::EngineError, describe(&e), &e);
            return false;
        }
        if let Err(e) = r.record_mode(&st.name) {
            r.record_error(&st.name, 0, Outcome::EngineError, describe(&e), &e);
            return false;
        }
        let got = r.run.modes.last().map(|m| m.1.clone()).unwrap_or_default();
        if st.mode != Mode::Auto && got != st.mode.name() {
            let detail = format!("created {} but the engine chose {got}", st.mode.name());
            r.record(&st.name, 0, Outcome::Mismatch, Some(detail));
            return false;
        }
    }
    if w.capture == Capture::Wal && !r.switch_to_wal() {
        return false;
    }
    r.check_all(w, 0, &[])
}

/// What a WAL-capture workload runs to drain the slots.
const DRAIN_SQL: &str = "SELECT pgtrickle.drain_wal_capture()";

fn run_steps(r: &mut Runner<'_>, w: &Workload) {
    if !create_all(r, w) {
        return;
    }
    for (i, step) in w.steps.iter().enumerate() {
        let n = i + 1;
        for sql in &step.dml {
            if !r.exec(sql, "workload", n, false) {
                return;
            }
        }
        if step.skip_refresh {
            continue;
        }
        let Some(history) = r.history_marks(w, n) else {
            return;
        };
        let refreshed = r.refresh_step(w, step, |r, sql, name| r.exec(sql, name, n, true));
        if !refreshed || !r.close_step(w, step, n, &history) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_tree_coverage_names_ops_aggregates_and_stream_table_scans() {
        let tree = serde_json::json!({
            "op": "Project", "detail": "k, n",
            "children": [{"op": "Aggregate", "detail": "keys: [k] aggregates: [count(*), SUM(v)]",
                "children": [{"op": "Scan", "detail": "public.base AS b"}]}]
        });
        let mut out = BTreeSet::new();
        collect_tree(&tree, &["base".to_string()], &mut out);
        let got: Vec<&str> = out.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "Aggregate",
                "Aggregate count",
                "Aggregate sum",
                "Project",
                "Scan",
                "Scan of a stream table"
            ]
        );
    }
}
