//! The SQLancer-light suite: generated cases (schema, data, one query as an
//! AUTO stream table, sometimes a second one over the same sources, DML,
//! for a share of the cases interleaved over several connections) run
//! through the DIFF-vs-FULL oracle until a time or query budget runs out,
//! with every query's fate counted by class:
//! checked DIFFERENTIAL, fell back to FULL (and checked), mismatch, engine
//! error, rejected by PostgreSQL (discarded), harness error. The same code
//! ingests the real SQLancer's logs.

pub mod command;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use oracles::diff_vs_full::{describe, run, WorkloadRun};
use oracles::outcome::{Outcome, Tally};
use oracles::workload::Workload;
use pg_trickle_core::ir::Mode;
use serde::Serialize;
use sqlancer::grammar::{Query, Simplifier};

use crate::checks::oracle::{report_failure, Failed, OracleOptions};
use crate::cluster::Cluster;
use crate::report::{CaseReport, Suite};

/// Percentage of cases whose DML interleaves over several connections,
/// unless told otherwise.
pub const DEFAULT_CONCURRENT_PCT: u32 = 30;

/// What to run.
#[derive(Debug, Clone)]
pub struct SqlancerOptions {
    /// Session seed; case `i` derives its own seed from it.
    pub seed: u64,
    /// Number of the first case.
    pub first: u64,
    /// Stop starting cases after this long.
    pub time: Duration,
    /// Stop after this many cases.
    pub queries: u64,
    /// Fail when fewer (query, step) pairs were checked.
    pub min_checks: usize,
    /// Fail when more than this percentage of queries were rejected by PostgreSQL.
    pub max_rejected_pct: f64,
    /// Percentage of cases whose DML is split over 2 to 4 connections.
    pub concurrent_pct: u32,
    /// Shrinking and reproduce-command options.
    pub oracle: OracleOptions,
}

/// How generated queries fared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Queries run.
    pub queries: usize,
    /// Maintained DIFFERENTIALLY and checked at every step.
    pub checked_differential: usize,
    /// The engine chose FULL (still checked at every step).
    pub fell_back_to_full: usize,
    /// Wrong results, columns or refresh mode.
    pub mismatch: usize,
    /// pg_trickle raised an error.
    pub engine_error: usize,
    /// PostgreSQL rejected the generated query (discarded).
    pub rejected: usize,
    /// The harness failed.
    pub harness_error: usize,
    /// (query, step) pairs that passed.
    pub checks: usize,
    /// Cases whose DML was interleaved over several connections.
    pub concurrent_cases: usize,
    /// (query, step) pairs of those cases that passed.
    pub concurrent_checks: usize,
    /// Statements of concurrent cases that failed with a tolerated
    /// conflict (serialization failure, deadlock, aborted transaction).
    pub conflicts: usize,
    /// Fallback reasons and how often.
    pub fallback_reasons: BTreeMap<String, usize>,
    /// Rejections by SQLSTATE.
    pub rejected_sqlstates: BTreeMap<String, usize>,
    /// Per construct: (queries containing it, of them maintained DIFFERENTIALLY).
    pub constructs: BTreeMap<String, (usize, usize)>,
}

impl Counts {
    /// One line for progress output.
    pub fn line(&self) -> String {
        format!(
            "{} queries ({} concurrent): {} DIFF, {} FULL fallback, {} rejected, {} mismatch, {} engine error, {} harness error; {} checks",
            self.queries,
            self.concurrent_cases,
            self.checked_differential,
            self.fell_back_to_full,
            self.rejected,
            self.mismatch,
            self.engine_error,
            self.harness_error,
            self.checks
        )
    }
}

/// One query's fate.
pub enum Fate {
    /// PostgreSQL rejected the query; SQLSTATE and message.
    Rejected(String, String),
    /// The oracle ran it.
    Ran(Box<WorkloadRun>),
}

/// Run `w` in a fresh database named `db`: first check that PostgreSQL
/// accepts the query over the schema (a second generated query it
/// rejects is dropped from the case), then run the oracle. Returns the
/// workload as run.
pub fn run_case(cluster: &Cluster, db: &str, w: &Workload) -> Result<(Workload, Fate), String> {
    let mut client = cluster.fresh_database(db).map_err(|e| e.to_string())?;
    for s in w.setup.iter().chain(&w.seed_rows) {
        client
            .batch_execute(s)
            .map_err(|e| format!("generated statement failed: {s}: {}", describe(&e)))?;
    }
    if let Err(e) = client.prepare(&w.stream_tables[0].query) {
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        return Ok((w.clone(), Fate::Rejected(code, describe(&e))));
    }
    let mut w = w.clone();
    let second_rejected = w
        .stream_tables
        .iter()
        .find(|st| st.name == sqlancer::case::SECOND)
        .is_some_and(|st| client.prepare(&st.query).is_err());
    if second_rejected {
        drop_stream_table(&mut w, sqlancer::case::SECOND);
    }
    client
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .map_err(|e| describe(&e))?;
    let r = run(&mut client, &w);
    Ok((w, Fate::Ran(Box::new(r))))
}

/// Remove stream table `name` and every statement naming it from `w`.
fn drop_stream_table(w: &mut Workload, name: &str) {
    w.stream_tables.retain(|st| st.name != name);
    let refresh = format!("refresh_stream_table('{name}')");
    let locks = format!("FROM {name} FOR ");
    for s in &mut w.steps {
        s.not_refreshed.retain(|n| n != name);
        s.reinit.retain(|n| n != name);
        s.actions
            .retain(|a| !a.sql.contains(&refresh) && !a.sql.contains(&locks));
    }
}

struct Session<'a> {
    cluster: &'a Cluster,
    run_dir: &'a Path,
    opts: &'a SqlancerOptions,
    counts: Counts,
    failures: Vec<CaseReport>,
    shrinking: Duration,
}

impl<'a> Session<'a> {
    fn new(cluster: &'a Cluster, run_dir: &'a Path, opts: &'a SqlancerOptions) -> Self {
        Session {
            cluster,
            run_dir,
            opts,
            counts: Counts::default(),
            failures: Vec::new(),
            shrinking: Duration::ZERO,
        }
    }

    fn record(
        &mut self,
        w: &Workload,
        queries: &[&Query],
        fate: Result<(Workload, Fate), String>,
        reproduce: String,
    ) {
        self.counts.queries += 1;
        let query = queries.first().copied();
        let (ran, fate) = match fate {
            Ok((ran, f)) => (ran, Ok(f)),
            Err(e) => (w.clone(), Err(e)),
        };
        let w = &ran;
        let run = match fate {
            Err(e) => {
                self.counts.harness_error += 1;
                let mut t = Tally::default();
                t.add(Outcome::HarnessError);
                let mut c = CaseReport::new(&w.name, Outcome::HarnessError, t, 0);
                c.message = Some(e);
                c.reproduce = Some(reproduce);
                self.failures.push(c);
                return;
            }
            Ok(Fate::Rejected(code, _)) => {
                self.counts.rejected += 1;
                *self.counts.rejected_sqlstates.entry(code).or_default() += 1;
                return;
            }
            Ok(Fate::Ran(r)) => r,
        };
        self.counts.checks += run.tally.pass;
        if w.concurrent() {
            self.counts.concurrent_cases += 1;
            self.counts.concurrent_checks += run.tally.pass;
            self.counts.conflicts += run.conflicts;
        }
        let mode = run.effective_mode(0);
        if let Some(q) = query {
            for c in &q.constructs {
                let e = self.counts.constructs.entry(format!("{c:?}")).or_default();
                e.0 += 1;
                if mode == Some(Mode::Differential) {
                    e.1 += 1;
                }
            }
        }
        match run.outcome() {
            Outcome::Pass if mode != Some(Mode::Differential) => {
                self.counts.fell_back_to_full += 1;
                let reason = run.modes[0].2.clone().unwrap_or_default();
                *self.counts.fallback_reasons.entry(reason).or_default() += 1;
                return;
            }
            Outcome::Pass => {
                self.counts.checked_differential += 1;
                return;
            }
            Outcome::Mismatch => self.counts.mismatch += 1,
            Outcome::EngineError => self.counts.engine_error += 1,
            Outcome::HarnessError => self.counts.harness_error += 1,
        }
        let mut c = CaseReport::new(&w.name, run.outcome(), run.tally, run.millis);
        let f = run.failure();
        c.message = Some(match f {
            Some(f) => format!(
                "{} on {} at step {}",
                f.outcome.name(),
                f.stream_table,
                f.step
            ),
            None => "stopped short of its checks".into(),
        });
        c.reproduce = Some(reproduce);
        c.facts = serde_json::json!({ "query": w.stream_tables[0].query, "modes": run.modes });
        let simplifier = query.map(|q| {
            queries[1..]
                .iter()
                .fold(Simplifier::new(q), |s, other| s.with(other))
        });
        let variants = |sql: &str| -> Vec<String> {
            simplifier
                .as_ref()
                .map(|s| s.variants(sql))
                .unwrap_or_default()
        };
        let mut oracle = self.opts.oracle.clone();
        let left = oracle.shrink_total.saturating_sub(self.shrinking);
        oracle.shrink_limits.max_time = oracle.shrink_limits.max_time.min(left);
        oracle.shrink = oracle.shrink && !left.is_zero();
        let t = Instant::now();
        let failed = Failed {
            workload: w,
            run: &run,
            database: "s_case",
        };
        report_failure(
            self.cluster,
            self.run_dir,
            &oracle,
            failed,
            &mut c,
            &variants,
        );
        self.shrinking += t.elapsed();
        if let Some(d) = &c.details {
            eprintln!("\nsqlancer: FAILED {}\n{d}", w.name);
        }
        self.failures.push(c);
    }
}

fn summary_cases(counts: &Counts, opts_min: usize, max_rejected_pct: f64) -> Vec<CaseReport> {
    let mut out = Vec::new();
    let checks_ok = counts.checks >= opts_min;
    let t = Tally {
        pass: counts.checks,
        ..Tally::default()
    };
    let mut c = CaseReport::new(
        "minimum_checks",
        if checks_ok {
            Outcome::Pass
        } else {
            Outcome::HarnessError
        },
        t,
        0,
    );
    if !checks_ok {
        c.message = Some(format!(
            "only {} (query, step) pairs checked; the minimum is {opts_min}",
            counts.checks
        ));
    }
    if opts_min == 0 && counts.checks == 0 {
        // Nothing checked and nothing required: skipped, not a pass.
        c = CaseReport::skip(
            "minimum_checks",
            "no (query, step) pair was checked and no minimum was set",
        );
    }
    c.facts = serde_json::to_value(counts).unwrap_or_default();
    out.push(c);
    if counts.queries == 0 {
        // No query, no rate: skipped, not a pass.
        out.push(CaseReport::skip(
            "rejection_rate",
            "no query was generated or logged",
        ));
        return out;
    }
    let pct = 100.0 * counts.rejected as f64 / counts.queries as f64;
    let ok = pct <= max_rejected_pct;
    let mut t = Tally::default();
    t.add(if ok {
        Outcome::Pass
    } else {
        Outcome::HarnessError
    });
    let mut c = CaseReport::new(
        "rejection_rate",
        if ok {
            Outcome::Pass
        } else {
            Outcome::HarnessError
        },
        t,
        0,
    );
    if !ok {
        c.message = Some(format!(
            "PostgreSQL rejected {pct:.1}% of the generated queries (at most {max_rejected_pct}% allowed): the generator is producing invalid SQL; by SQLSTATE: {:?}",
            counts.rejected_sqlstates
        ));
    }
    out.push(c);
    out
}

/// Run a SQLancer-light session on `cluster`.
pub fn sqlancer_suite(
    cluster: &Cluster,
    run_dir: &Path,
    opts: &SqlancerOptions,
) -> (Suite, Counts) {
    let started = Instant::now();
    println!(
        "sqlancer: seed {} (reproduce this session: {} sqlancer --seed {} --queries N)",
        opts.seed, opts.oracle.runner, opts.seed
    );
    let mut s = Session::new(cluster, run_dir, opts);
    let mut last_print = Instant::now();
    let mut i = opts.first;
    let mut extended = false;
    while i < opts.first.saturating_add(opts.queries) {
        let elapsed = started.elapsed();
        if elapsed >= opts.time {
            // The minimum is what the session must check; the budget only
            // says when to stop once it has. A busy machine checks fewer
            // pairs per second, so the session goes on, up to a hard stop,
            // instead of failing for being slow.
            if !keep_going(&s.counts, opts, elapsed) {
                break;
            }
            if !extended {
                extended = true;
                println!(
                    "sqlancer: time budget of {} s spent with {} of the {} (query, step) pairs required; \
                     going on until they are checked (at most {} s)",
                    opts.time.as_secs(),
                    s.counts.checks,
                    opts.min_checks,
                    hard_stop(opts).as_secs()
                );
            }
        }
        let mut case = sqlancer::case::case(opts.seed, i, opts.concurrent_pct);
        case.workload = case.workload.with_capture(opts.oracle.capture);
        let capture = match opts.oracle.capture {
            oracles::workload::Capture::Trigger => "",
            oracles::workload::Capture::Wal => " --capture wal",
        };
        let reproduce = format!(
            "{} sqlancer --seed {} --first {i} --queries 1 --concurrent {}{capture}",
            opts.oracle.runner, opts.seed, opts.concurrent_pct
        );
        let fate = run_case(cluster, "s_case", &case.workload);
        let mut queries = vec![&case.query];
        queries.extend(case.second.as_ref());
        s.record(&case.workload, &queries, fate, reproduce);
        i += 1;
        if last_print.elapsed() >= Duration::from_secs(15) {
            println!(
                "sqlancer [{:.0} s] {}",
                started.elapsed().as_secs_f64(),
                s.counts.line()
            );
            last_print = Instant::now();
        }
    }
    finish(s, started, opts)
}

/// How long a session may run past its budget to reach its minimum of
/// checks: three budgets in all.
fn hard_stop(opts: &SqlancerOptions) -> Duration {
    opts.time.saturating_mul(3)
}

/// Whether a session whose budget is spent (after `elapsed`) starts
/// another case: only while it has checked fewer pairs than its minimum
/// and is short of its hard stop.
fn keep_going(counts: &Counts, opts: &SqlancerOptions, elapsed: Duration) -> bool {
    counts.checks < opts.min_checks && elapsed < hard_stop(opts)
}

/// Run given workloads (e.g. from a SQLancer log) as one session.
pub fn workloads_suite(
    cluster: &Cluster,
    run_dir: &Path,
    opts: &SqlancerOptions,
    workloads: &[Workload],
) -> (Suite, Counts) {
    let started = Instant::now();
    let mut s = Session::new(cluster, run_dir, opts);
    for w in workloads {
        let fate = run_case(cluster, "s_case", w);
        let reproduce = format!(
            "{} sqlancer --external ... (workload {})",
            opts.oracle.runner, w.name
        );
        s.record(w, &[], fate, reproduce);
    }
    finish(s, started, opts)
}

fn finish(s: Session<'_>, started: Instant, opts: &SqlancerOptions) -> (Suite, Counts) {
    println!(
        "sqlancer [{:.0} s] {}",
        started.elapsed().as_secs_f64(),
        s.counts.line()
    );
    let mut cases = s.failures;
    cases.extend(summary_cases(
        &s.counts,
        opts.min_checks,
        opts.max_rejected_pct,
    ));
    (
        Suite::new(
            match opts.oracle.capture {
                oracles::workload::Capture::Trigger => "sqlancer",
                oracles::workload::Capture::Wal => "sqlancer_wal",
            },
            cases,
            started.elapsed().as_secs_f64(),
            Some(opts.time.as_secs_f64()),
        ),
        s.counts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(secs: u64, min_checks: usize) -> SqlancerOptions {
        SqlancerOptions {
            seed: 1,
            first: 0,
            time: Duration::from_secs(secs),
            queries: u64::MAX,
            min_checks,
            max_rejected_pct: 10.0,
            concurrent_pct: 0,
            oracle: OracleOptions::default(),
        }
    }

    fn checked(checks: usize) -> Counts {
        Counts {
            checks,
            ..Counts::default()
        }
    }

    #[test]
    fn a_spent_budget_goes_on_only_to_reach_the_minimum_and_never_past_three_budgets() {
        let opts = options(45, 225);
        let at = Duration::from_secs;
        // Short of the minimum: goes on past the budget, up to three.
        assert!(keep_going(&checked(207), &opts, at(46)));
        assert!(keep_going(&checked(224), &opts, at(134)));
        assert!(!keep_going(&checked(207), &opts, at(135)));
        // The minimum reached: stops at the budget.
        assert!(!keep_going(&checked(225), &opts, at(46)));
        // No minimum: the budget alone.
        assert!(!keep_going(&checked(0), &options(45, 0), at(46)));
    }
}
