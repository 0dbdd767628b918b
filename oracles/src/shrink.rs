//! Shrinking a failing workload to a small one that fails the same way.
//!
//! Delta debugging (ddmin) over, in turn: the stream tables, the steps, the
//! statements inside each step (its DML and its interleaved actions), the
//! seed rows and the schema statements.
//! A candidate is kept when a fresh run of it fails with the same
//! signature: the same outcome class on the same stream table, and for
//! errors the same SQLSTATE. Every probe runs in a fresh database from the
//! [`Sandbox`], so shrinking needs no knowledge of the engine.

use std::time::{Duration, Instant};

use postgres::Client;

use crate::compare::stream_table_columns;
use crate::diff_vs_full::{run, WorkloadRun};
use crate::outcome::Outcome;
use crate::workload::Workload;

/// Where probes run: hands out empty databases with pg_trickle installed.
/// The runner implements it over a cluster it owns.
pub trait Sandbox {
    /// A connection to a new, empty database called `name` with pg_trickle
    /// installed, replacing any earlier database of that name.
    fn fresh_database(&mut self, name: &str) -> Result<Client, String>;

    /// A connection to the database the live scheduler watches, emptied
    /// and with pg_trickle installed (for workloads refreshed by the
    /// scheduler). Only one such workload runs at a time.
    fn scheduler_database(&mut self) -> Result<Client, String> {
        Err("this sandbox has no live scheduler".into())
    }
}

/// Run `w` in a database of `sandbox` (the scheduler's, when `w` needs
/// it, else a fresh one called `name`); returns the connection too, for
/// inspecting what the run left.
pub fn run_in(
    sandbox: &mut dyn Sandbox,
    name: &str,
    w: &Workload,
) -> Result<(WorkloadRun, Client), String> {
    let mut db = if w.scheduler {
        sandbox.scheduler_database()?
    } else {
        sandbox.fresh_database(name)?
    };
    let r = run(&mut db, w);
    Ok((r, db))
}

/// How a run failed, for deciding whether a smaller run fails the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Outcome class of the first failing check.
    pub outcome: Outcome,
    /// Stream table (or object) of that check.
    pub object: String,
    /// SQLSTATE when the failure was an error.
    pub sqlstate: Option<String>,
}

/// The signature of a failed run; None when it passed.
pub fn signature(run: &WorkloadRun) -> Option<Signature> {
    let c = run.failure()?;
    Some(Signature {
        outcome: c.outcome,
        object: c.stream_table.clone(),
        sqlstate: c.sqlstate.clone(),
    })
}

/// Limits on shrinking effort.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most probe runs.
    pub max_probes: usize,
    /// Most wall time.
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_probes: 400,
            max_time: Duration::from_secs(120),
        }
    }
}

/// A shrunk failing workload.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest workload found that fails the same way.
    pub workload: Workload,
    /// Its confirming run.
    pub run: WorkloadRun,
    /// Visible columns of the failing stream table (empty if it was never created).
    pub columns: Vec<String>,
    /// Probe runs made.
    pub probes: usize,
    /// Whether a limit stopped shrinking before it was done.
    pub limited: bool,
}

struct Shrinker<'a> {
    sandbox: &'a mut dyn Sandbox,
    probe_db: String,
    want: Signature,
    limits: Limits,
    started: Instant,
    probes: usize,
    limited: bool,
}

/// Shrinks started by this process (each probes in a database of its own,
/// so that shrinks running in parallel threads never share one).
static SHRINKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Shrinker<'_> {
    fn out_of_budget(&mut self) -> bool {
        if self.probes >= self.limits.max_probes || self.started.elapsed() >= self.limits.max_time {
            self.limited = true;
        }
        self.limited
    }

    /// Run `w`; Some(run) when it fails with the wanted signature.
    fn fails_same(&mut self, w: &Workload) -> Option<WorkloadRun> {
        if self.out_of_budget() {
            return None;
        }
        self.probes += 1;
        let (r, _) = run_in(self.sandbox, &self.probe_db, w).ok()?;
        (signature(&r).as_ref() == Some(&self.want)).then_some(r)
    }

    /// Keep `cand` if it still fails; cut it to its failing step.
    fn try_keep(&mut self, best: &mut Workload, cand: Workload) -> bool {
        match self.fails_same(&cand) {
            Some(r) => {
                *best = cut_to_failure(cand, &r);
                true
            }
            None => false,
        }
    }

    /// ddmin over a list inside the workload, addressed by `get`/`set`.
    fn ddmin<T: Clone>(
        &mut self,
        best: &mut Workload,
        get: impl Fn(&Workload) -> Vec<T>,
        set: impl Fn(&mut Workload, Vec<T>),
    ) {
        let mut n = 2usize;
        loop {
            let items = get(best);
            if items.is_empty() || self.limited {
                return;
            }
            let chunk = items.len().div_ceil(n.min(items.len()));
            let mut reduced = false;
            for start in (0..items.len()).step_by(chunk) {
                let mut rest = items.clone();
                rest.drain(start..(start + chunk).min(items.len()));
                let mut cand = best.clone();
                set(&mut cand, rest);
                if self.try_keep(best, cand) {
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
            if !reduced {
                if n >= items.len() {
                    return;
                }
                n = (2 * n).min(items.len());
            }
        }
    }
}

/// `w` without the steps after the one where `r` failed.
fn cut_to_failure(mut w: Workload, r: &WorkloadRun) -> Workload {
    if let Some(c) = r.failure() {
        w.steps.truncate(c.step);
    }
    w
}

/// Simpler versions of a defining query, for shrinking by clauses; the
/// corpus has none, generated queries know their own AST.
pub type QueryVariants<'a> = &'a dyn Fn(&str) -> Vec<String>;

/// No query simplification.
pub fn no_variants(_: &str) -> Vec<String> {
    Vec::new()
}

impl Shrinker<'_> {
    /// Replace the failing stream table's query by simpler variants while
    /// the failure persists.
    fn simplify_query(&mut self, best: &mut Workload, variants: QueryVariants<'_>) {
        let failing = self.want.object.clone();
        'outer: loop {
            let Some(i) = best.stream_tables.iter().position(|s| s.name == failing) else {
                return;
            };
            for v in variants(&best.stream_tables[i].query) {
                let mut cand = best.clone();
                cand.stream_tables[i].query = v;
                if self.try_keep(best, cand) {
                    continue 'outer;
                }
                if self.limited {
                    return;
                }
            }
            return;
        }
    }
}

/// Shrink `w`, whose run `failed` did not pass, to a smaller workload that
/// fails the same way, then confirm it with one more run. `variants` gives
/// simpler versions of a query (use [`no_variants`] for none).
pub fn shrink(
    sandbox: &mut dyn Sandbox,
    w: &Workload,
    failed: &WorkloadRun,
    limits: Limits,
    variants: QueryVariants<'_>,
) -> Result<Shrunk, String> {
    let want = signature(failed).ok_or("the run did not fail; nothing to shrink")?;
    let n = SHRINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = Shrinker {
        sandbox,
        probe_db: if n == 0 {
            "pgt_shrink".into()
        } else {
            format!("pgt_shrink_{n}")
        },
        want,
        limits,
        started: Instant::now(),
        probes: 0,
        limited: false,
    };
    let mut best = cut_to_failure(w.clone(), failed);
    let failing = s.want.object.clone();
    // Stream tables other than the failing one, last first (readers before what they read).
    for i in (0..best.stream_tables.len()).rev() {
        if best
            .stream_tables
            .get(i)
            .is_some_and(|st| st.name != failing)
        {
            let mut cand = best.clone();
            cand.stream_tables.remove(i);
            s.try_keep(&mut best, cand);
        }
    }
    s.simplify_query(&mut best, variants);
    for _round in 0..2 {
        s.ddmin(&mut best, |w| w.steps.clone(), |w, v| w.steps = v);
        for i in 0..best.steps.len() {
            s.ddmin(
                &mut best,
                |w| w.steps.get(i).map(|st| st.dml.clone()).unwrap_or_default(),
                |w, v| {
                    if let Some(st) = w.steps.get_mut(i) {
                        st.dml = v;
                    }
                },
            );
            s.ddmin(
                &mut best,
                |w| {
                    w.steps
                        .get(i)
                        .map(|st| st.actions.clone())
                        .unwrap_or_default()
                },
                |w, v| {
                    if let Some(st) = w.steps.get_mut(i) {
                        st.actions = v;
                    }
                },
            );
        }
        s.ddmin(&mut best, |w| w.seed_rows.clone(), |w, v| w.seed_rows = v);
    }
    s.ddmin(&mut best, |w| w.setup.clone(), |w, v| w.setup = v);
    s.simplify_query(&mut best, variants);

    // Confirm: the shrunk workload must fail the same way on a fresh run.
    let limited = s.limited;
    s.limited = false;
    s.limits.max_probes = usize::MAX;
    s.limits.max_time = Duration::MAX;
    s.probes += 1;
    let (confirm, mut db) = run_in(s.sandbox, &s.probe_db, &best)?;
    if signature(&confirm).as_ref() != Some(&s.want) {
        return Err(format!(
            "the shrunk workload did not fail the same way on a confirming run (flaky failure?): {:?}",
            confirm.failure()
        ));
    }
    let columns = stream_table_columns(&mut db, &failing)
        .map(|cols| cols.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    Ok(Shrunk {
        workload: best,
        run: confirm,
        columns,
        probes: s.probes,
        limited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Check;

    fn run_with(check: Check) -> WorkloadRun {
        WorkloadRun {
            checks: vec![check],
            ..WorkloadRun::new("w", 1, 1)
        }
    }

    #[test]
    fn signature_keeps_the_sqlstate_of_errors_and_ignores_mismatch_details() {
        let err = run_with(Check {
            stream_table: "g".into(),
            step: 2,
            outcome: Outcome::EngineError,
            detail: Some("statement failed: SELECT 1\nXX000 ERROR: boom".into()),
            sqlstate: Some("XX000".into()),
        });
        assert_eq!(signature(&err).unwrap().sqlstate.as_deref(), Some("XX000"));
        let m = run_with(Check {
            stream_table: "g".into(),
            step: 2,
            outcome: Outcome::Mismatch,
            detail: Some("rows differ".into()),
            sqlstate: None,
        });
        let sig = signature(&m).unwrap();
        assert_eq!(
            (sig.outcome, sig.object.as_str(), sig.sqlstate),
            (Outcome::Mismatch, "g", None)
        );
    }
}
