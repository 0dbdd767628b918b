//! `harness chaos`: faults injected into a live node under concurrent
//! writers and the running scheduler, each run judged afterwards by the
//! DIFF-vs-FULL oracle's comparison.
//!
//! A run starts its own cluster, creates the chaos schema and its stream
//! tables (DIFFERENTIAL), starts the load ([`writers`]), injects its
//! scenario's faults ([`scenarios`]), lets the load go on, stops it, and
//! then requires ([`verdict`]): the scheduler catches up by itself,
//! every stream table equals its query recomputed (no change lost, none
//! applied twice), no refresh ran FULL unasked, and pg_trickle's objects
//! match the stream tables that exist. Every run has a seed and prints
//! the command that runs it again; the moments faults land at depend on
//! timing as well, so a reproduction repeats the choices, not the clock.

pub mod command;
mod faults;
mod run;
mod scenarios;
mod topology;
mod verdict;
mod writers;

use std::path::Path;
use std::time::Instant;

use oracles::outcome::{Outcome, Tally};
use serde::Serialize;

use crate::report::{CaseReport, Suite};
use run::run_once;
use scenarios::Injected;
use writers::LoadTally;

/// A single-node fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// kill -9 of a backend running refresh_stream_table.
    KillBackendMidRefresh,
    /// kill -9 of the scheduler mid-refresh.
    KillSchedulerMidRefresh,
    /// pg_ctl stop -m immediate mid-refresh.
    ImmediateShutdownMidRefresh,
    /// pg_ctl stop -m immediate mid-capture.
    ImmediateShutdownMidCapture,
    /// A crash during create_stream_table.
    CrashDuringCreate,
    /// A crash during alter_stream_table.
    CrashDuringAlter,
    /// A crash during drop_stream_table.
    CrashDuringDrop,
    /// Statement cancels during refresh.
    CancelDuringRefresh,
    /// Lock timeouts during refresh.
    LockTimeoutDuringRefresh,
    /// The change buffers' filesystem fills up.
    DiskFullChangeBuffers,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 10] = [
        Scenario::KillBackendMidRefresh,
        Scenario::KillSchedulerMidRefresh,
        Scenario::ImmediateShutdownMidRefresh,
        Scenario::ImmediateShutdownMidCapture,
        Scenario::CrashDuringCreate,
        Scenario::CrashDuringAlter,
        Scenario::CrashDuringDrop,
        Scenario::CancelDuringRefresh,
        Scenario::LockTimeoutDuringRefresh,
        Scenario::DiskFullChangeBuffers,
    ];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillBackendMidRefresh => "kill_backend_mid_refresh",
            Scenario::KillSchedulerMidRefresh => "kill_scheduler_mid_refresh",
            Scenario::ImmediateShutdownMidRefresh => "immediate_shutdown_mid_refresh",
            Scenario::ImmediateShutdownMidCapture => "immediate_shutdown_mid_capture",
            Scenario::CrashDuringCreate => "crash_during_create",
            Scenario::CrashDuringAlter => "crash_during_alter",
            Scenario::CrashDuringDrop => "crash_during_drop",
            Scenario::CancelDuringRefresh => "cancel_during_refresh",
            Scenario::LockTimeoutDuringRefresh => "lock_timeout_during_refresh",
            Scenario::DiskFullChangeBuffers => "disk_full_change_buffers",
        }
    }

    /// Failures the load may meet in this scenario besides lock conflicts.
    fn tolerated(self) -> Vec<String> {
        let codes: &[&str] = match self {
            Scenario::CancelDuringRefresh => &["57014"],
            Scenario::LockTimeoutDuringRefresh => &["55P03"],
            Scenario::DiskFullChangeBuffers => &["53100"],
            _ => &[],
        };
        codes.iter().map(|c| c.to_string()).collect()
    }

    /// Stream tables that may run FULL because the scenario asks them to.
    fn full_asked_for(self) -> &'static [&'static str] {
        match self {
            Scenario::CrashDuringAlter => &[scenarios::ALTERED],
            _ => &[],
        }
    }

    /// Whether the scenario's stream table over `chaos_events` exists from the start.
    fn starts_with_kinds(self) -> bool {
        self != Scenario::CrashDuringCreate
    }
}

/// Options of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Base seed; run `k` of a scenario uses `seed + k`.
    pub seed: u64,
    /// Runs per scenario.
    pub runs: u64,
    /// Scenarios to run (all when empty).
    pub only: Vec<Scenario>,
    /// Concurrent writers.
    pub writers: usize,
    /// Seconds of load before the first fault and after the last.
    pub load_seconds: f64,
    /// pg_config of the installation.
    pub pg_config: std::path::PathBuf,
    /// The runner as invoked, for reproduction commands.
    pub runner: String,
    /// How `chaos_orders` and `chaos_customers` are captured (`chaos_events`
    /// keeps its trigger: its stream table comes and goes).
    pub capture: oracles::workload::Capture,
}

impl ChaosOptions {
    fn capture_name(&self) -> &'static str {
        match self.capture {
            oracles::workload::Capture::Trigger => "trigger",
            oracles::workload::Capture::Wal => "wal",
        }
    }
}

/// What one run saw, for the report and the closing table.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunFacts {
    /// The run's seed.
    pub seed: u64,
    /// The faults injected.
    pub injected: Injected,
    /// What the load did.
    pub load: LoadTally,
    /// Rows the recomputed queries had and the stream tables lacked.
    pub lost: usize,
    /// Rows the stream tables had and the recomputed queries lacked.
    pub duplicated: usize,
    /// Rows compared over all stream tables.
    pub rows_compared: usize,
    /// DIFFERENTIAL refreshes after setup.
    pub differential_refreshes: usize,
    /// FULL refreshes after setup (allowed only where asked for).
    pub full_refreshes: Vec<String>,
    /// Failed refreshes after setup (the faults' own).
    pub failed_refreshes: Vec<String>,
}

/// Per scenario, summed over its runs: the closing table's row.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ScenarioFigures {
    /// Scenario name.
    pub scenario: String,
    /// Runs made.
    pub runs: usize,
    /// Runs that passed.
    pub passed: usize,
    /// Runs skipped (and why).
    pub skipped: Option<String>,
    /// Faults injected.
    pub faults: usize,
    /// Of those, landed mid-operation.
    pub mid_operation: usize,
    /// Rows written by committed transactions.
    pub changes_written: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// COMMITs in doubt.
    pub in_doubt: u64,
    /// Lost rows.
    pub lost: usize,
    /// Duplicated rows.
    pub duplicated: usize,
    /// Failed refreshes (from the faults).
    pub failed_refreshes: usize,
    /// Writes the faults refused (by SQLSTATE, `connection` for ended sessions).
    pub refused_writes: u64,
}

/// Where a run's clusters live: under the temporary directory (the
/// server account reaches it from any checkout), named after the run.
fn clusters_dir(run_dir: &Path) -> std::path::PathBuf {
    let parent = std::env::temp_dir().join("pg_trickle-runs").join(
        run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "chaos".into()),
    );
    let _ = std::fs::create_dir_all(&parent);
    parent
}

/// Run the chosen scenarios, `runs` times each; the suite and the table.
pub fn chaos_suite(
    opts: &ChaosOptions,
    run_dir: &Path,
    keep: bool,
) -> (Suite, Vec<ScenarioFigures>) {
    let t = Instant::now();
    let parent = clusters_dir(run_dir);
    let log_dir = run_dir.join("logs");
    let scenarios: Vec<Scenario> = if opts.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        opts.only.clone()
    };
    let mut cases = Vec::new();
    let mut table = Vec::new();
    let suffix = match opts.capture {
        oracles::workload::Capture::Trigger => "",
        oracles::workload::Capture::Wal => "_wal",
    };
    for sc in scenarios {
        let mut fig = ScenarioFigures {
            scenario: format!("{}{suffix}", sc.name()),
            ..ScenarioFigures::default()
        };
        // SAFETY: geteuid has no preconditions.
        if sc == Scenario::DiskFullChangeBuffers && unsafe { libc::geteuid() } != 0 {
            let why = "needs root to mount the small filesystem the change buffers fill (run the runner as root)";
            println!("chaos: {}: SKIPPED: {why}", sc.name());
            cases.push(CaseReport::skip(sc.name(), why));
            fig.skipped = Some(why.into());
            table.push(fig);
            continue;
        }
        for k in 0..opts.runs {
            let seed = opts.seed.wrapping_add(k);
            let started = Instant::now();
            println!(
                "chaos: {} run {} of {} (seed {seed}) ...",
                sc.name(),
                k + 1,
                opts.runs
            );
            let (facts, result, cluster) = run_once(sc, seed, opts, &parent, &log_dir);
            let reproduce = format!(
                "{} chaos --scenario {} --seed {seed} --runs 1 --writers {} --capture {}",
                opts.runner,
                sc.name(),
                opts.writers,
                opts.capture_name()
            );
            let name = format!("{}{suffix}_seed_{seed}", sc.name());
            let (case, passed) = record_run(
                sc.name(),
                &name,
                seed,
                &facts,
                result,
                started,
                reproduce,
                &mut fig,
            );
            if let Some(mut c) = cluster {
                if keep || !passed {
                    c.keep();
                }
            }
            cases.push(case);
        }
        table.push(fig);
    }
    (
        Suite::new(
            &format!("chaos{suffix}"),
            cases,
            t.elapsed().as_secs_f64(),
            None,
        ),
        table,
    )
}

/// Turn one run's facts and verdict into its report case, add it to the
/// scenario's figures and print its line; returns the case and whether
/// it passed.
#[allow(clippy::too_many_arguments)]
fn record_run(
    scenario: &str,
    name: &str,
    seed: u64,
    facts: &RunFacts,
    result: Result<(), String>,
    started: Instant,
    reproduce: String,
    fig: &mut ScenarioFigures,
) -> (CaseReport, bool) {
    let outcome = match &result {
        Ok(()) => Outcome::Pass,
        Err(e)
            if e.contains("differs from its query")
                || e.contains("FULL that nobody")
                || e.contains("FULL unasked") =>
        {
            Outcome::Mismatch
        }
        Err(e) if e.starts_with("could not start") => Outcome::HarnessError,
        Err(_) => Outcome::EngineError,
    };
    let mut tally = Tally::default();
    tally.add(outcome);
    let mut case = CaseReport::new(name, outcome, tally, started.elapsed().as_millis());
    case.facts = serde_json::to_value(facts).unwrap_or_default();
    fig.runs += 1;
    fig.faults += facts.injected.faults.len();
    fig.mid_operation += facts.injected.mid_operation;
    fig.changes_written += facts.load.rows;
    fig.transactions += facts.load.committed;
    fig.in_doubt += facts.load.in_doubt;
    fig.lost += facts.lost;
    fig.duplicated += facts.duplicated;
    fig.failed_refreshes += facts.failed_refreshes.len();
    fig.refused_writes += facts.load.tolerated.values().sum::<u64>();
    match result {
        Ok(()) => {
            fig.passed += 1;
            println!(
                "chaos: {scenario} seed {seed}: passed: {} faults ({} mid-operation), {} rows written in {} transactions, {} rows compared, 0 lost, 0 duplicated",
                facts.injected.faults.len(),
                facts.injected.mid_operation,
                facts.load.rows,
                facts.load.committed,
                facts.rows_compared
            );
            (case, true)
        }
        Err(e) => {
            println!(
                "chaos: {scenario} seed {seed}: FAILED: {}",
                e.lines().next().unwrap_or("")
            );
            println!("chaos:   reproduce: {reproduce}");
            case.message = Some(e.lines().next().unwrap_or("").to_string());
            case.details = Some(format!(
                "{e}\n\nfaults: {:#?}\nload: {:#?}",
                facts.injected, facts.load
            ));
            case.reproduce = Some(reproduce);
            (case, false)
        }
    }
}

/// Run the topology scenarios `only` names (all when empty) on
/// `topology` (`sharding`, or `citus`, skipped when it cannot run).
pub fn topology_suite(
    opts: &ChaosOptions,
    topology: &str,
    only: &[String],
    run_dir: &Path,
    keep: bool,
) -> (Suite, Vec<ScenarioFigures>) {
    let t = Instant::now();
    let suite_name = format!("chaos_{topology}");
    let kind = if topology == "citus" {
        if let Some(why) = crate::citus::unavailable(&opts.pg_config) {
            println!("chaos: the Citus topology is SKIPPED: {why}");
            let fig = ScenarioFigures {
                scenario: "citus topology".into(),
                skipped: Some(why.clone()),
                ..ScenarioFigures::default()
            };
            return (Suite::skip(&suite_name, &why), vec![fig]);
        }
        topology::Kind::Citus
    } else {
        topology::Kind::Sharding
    };
    let parent = clusters_dir(run_dir);
    let log_dir = run_dir.join("logs");
    let mut cases = Vec::new();
    let mut table = Vec::new();
    for sc in topology::TopoScenario::ALL
        .into_iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name()))
    {
        let mut fig = ScenarioFigures {
            scenario: format!("{}_{topology}", sc.name()),
            ..ScenarioFigures::default()
        };
        for k in 0..opts.runs {
            let seed = opts.seed.wrapping_add(k);
            let started = Instant::now();
            println!(
                "chaos: {} ({topology}) run {} of {} (seed {seed}) ...",
                sc.name(),
                k + 1,
                opts.runs
            );
            let (facts, result, topo) = topology::run_once(
                kind,
                sc,
                seed,
                opts.load_seconds,
                &parent,
                &log_dir,
                &opts.pg_config,
            );
            let reproduce = format!(
                "{} chaos --topology {topology} --scenario {} --seed {seed} --runs 1",
                opts.runner,
                sc.name()
            );
            let name = format!("{}_{topology}_seed_{seed}", sc.name());
            let (case, passed) = record_run(
                sc.name(),
                &name,
                seed,
                &facts,
                result,
                started,
                reproduce,
                &mut fig,
            );
            if let Some(mut topo) = topo {
                if keep || !passed {
                    topo.keep();
                }
            }
            cases.push(case);
        }
        table.push(fig);
    }
    (
        Suite::new(&suite_name, cases, t.elapsed().as_secs_f64(), None),
        table,
    )
}

/// The closing table: one row per scenario.
pub fn table(figures: &[ScenarioFigures]) -> String {
    let mut out = String::from(
        "| scenario | runs | passed | faults (mid-operation) | rows written | transactions | commits in doubt | refused writes | failed refreshes | lost | duplicated |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for f in figures {
        if let Some(why) = &f.skipped {
            out.push_str(&format!(
                "| {} | skipped: {why} | | | | | | | | | |\n",
                f.scenario
            ));
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} |\n",
            f.scenario,
            f.runs,
            f.passed,
            f.faults,
            f.mid_operation,
            f.changes_written,
            f.transactions,
            f.in_doubt,
            f.refused_writes,
            f.failed_refreshes,
            f.lost,
            f.duplicated
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_distinct_name() {
        let mut names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Scenario::ALL.len());
    }

    #[test]
    fn the_table_shows_a_skip_and_a_run() {
        let figs = vec![
            ScenarioFigures {
                scenario: "a".into(),
                runs: 2,
                passed: 2,
                faults: 4,
                mid_operation: 3,
                ..ScenarioFigures::default()
            },
            ScenarioFigures {
                scenario: "b".into(),
                skipped: Some("needs root".into()),
                ..ScenarioFigures::default()
            },
        ];
        let t = table(&figs);
        assert!(t.contains("| a | 2 | 2 | 4 (3) |"), "{t}");
        assert!(t.contains("| b | skipped: needs root |"), "{t}");
    }
}
