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
mod scenarios;
mod verdict;
mod writers;

use std::path::Path;
use std::time::{Duration, Instant};

use oracles::outcome::{Outcome, Tally};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::{describe, Cluster, ClusterOptions};
use crate::report::{CaseReport, Suite};
use scenarios::{Ctx, Injected, STREAM_TABLES};
use writers::{Load, LoadOptions, LoadTally};

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

/// Settings of a chaos cluster: a quick scheduler, autovacuum on.
fn cluster_settings() -> Vec<String> {
    vec![
        "pg_trickle.scheduler_interval_ms = 200".into(),
        "restart_after_crash = on".into(),
        "max_connections = 40".into(),
        "log_min_messages = warning".into(),
    ]
}

/// Create the chaos sources and stream tables; returns the history mark
/// of each stream table (refreshes after it are judged).
fn setup(db: &mut postgres::Client, scenario: Scenario) -> Result<(), String> {
    db.batch_execute(scenarios::SCHEMA)
        .map_err(|e| format!("creating the chaos schema: {}", describe(&e)))?;
    for st in STREAM_TABLES {
        if st.name == scenarios::COMING_AND_GOING && !scenario.starts_with_kinds() {
            continue;
        }
        db.batch_execute(&scenarios::create_sql(st))
            .map_err(|e| format!("creating {}: {}", st.name, describe(&e)))?;
    }
    Ok(())
}

/// One run of `scenario` on its own cluster.
fn run_once(
    scenario: Scenario,
    seed: u64,
    opts: &ChaosOptions,
    parent: &Path,
    log_dir: &Path,
) -> (RunFacts, Result<(), String>, Option<Cluster>) {
    let mut facts = RunFacts {
        seed,
        ..RunFacts::default()
    };
    let copts = ClusterOptions {
        pg_config: opts.pg_config.clone(),
        settings: cluster_settings(),
        name: format!("chaos-{}-{seed}", scenario.name()),
        log_dir: Some(log_dir.to_path_buf()),
        ..ClusterOptions::default()
    };
    let cluster = match Cluster::start(parent, &copts) {
        Ok(c) => c,
        Err(e) => return (facts, Err(format!("could not start a cluster: {e}")), None),
    };
    let small = if scenario == Scenario::DiskFullChangeBuffers {
        match faults::SmallFilesystem::mount(
            &cluster.dir.join("small"),
            scenarios::SMALL_KIB,
            cluster.server_account(),
        ) {
            Ok(fs) => Some(fs),
            Err(e) => {
                return (
                    facts,
                    Err(format!("mounting the small filesystem: {e}")),
                    Some(cluster),
                )
            }
        }
    } else {
        None
    };
    let result = judge_run(scenario, seed, opts, &cluster, small.as_ref(), &mut facts);
    if small.is_some() {
        if let Ok(mut db) = cluster.connect("postgres") {
            if let Err(e) = scenarios::leave_small_filesystem(&mut db) {
                eprintln!("chaos: {e}");
            }
        }
    }
    drop(small);
    (facts, result, Some(cluster))
}

fn judge_run(
    scenario: Scenario,
    seed: u64,
    opts: &ChaosOptions,
    cluster: &Cluster,
    small: Option<&faults::SmallFilesystem>,
    facts: &mut RunFacts,
) -> Result<(), String> {
    let mut db = cluster
        .connect("postgres")
        .map_err(|e| format!("connecting: {e}"))?;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_trickle")
        .map_err(|e| describe(&e))?;
    setup(&mut db, scenario)?;
    if let Some(fs) = small {
        scenarios::buffers_to_small_filesystem(&mut db, fs)?;
    }
    let mut marks = Vec::new();
    for st in STREAM_TABLES {
        marks.push(oracles::engine_api::last_refresh_id(&mut db, st.name).unwrap_or(0));
    }
    let load = Load::start(&LoadOptions {
        conninfo: cluster.conninfo("postgres"),
        writers: opts.writers,
        seed,
        tolerated: scenario.tolerated(),
        refresh: Some(scenarios::REFRESHED_BY_HAND.into()),
    });
    let pause = Duration::from_secs_f64(opts.load_seconds);
    std::thread::sleep(pause);
    let mut ctx = Ctx {
        cluster,
        db,
        rng: ChaCha8Rng::seed_from_u64(seed),
        load: &load,
        injected: Injected::default(),
    };
    let injected = match scenario {
        Scenario::KillBackendMidRefresh => scenarios::kill_backend_mid_refresh(&mut ctx),
        Scenario::KillSchedulerMidRefresh => scenarios::kill_scheduler_mid_refresh(&mut ctx),
        Scenario::ImmediateShutdownMidRefresh => {
            scenarios::immediate_shutdown_mid_refresh(&mut ctx)
        }
        Scenario::ImmediateShutdownMidCapture => {
            scenarios::immediate_shutdown_mid_capture(&mut ctx)
        }
        Scenario::CrashDuringCreate => scenarios::crash_during_create(&mut ctx),
        Scenario::CrashDuringAlter => scenarios::crash_during_alter(&mut ctx),
        Scenario::CrashDuringDrop => scenarios::crash_during_drop(&mut ctx),
        Scenario::CancelDuringRefresh => scenarios::cancel_during_refresh(&mut ctx),
        Scenario::LockTimeoutDuringRefresh => scenarios::lock_timeout_during_refresh(&mut ctx),
        Scenario::DiskFullChangeBuffers => match small {
            Some(fs) => scenarios::disk_full_change_buffers(&mut ctx, fs),
            None => Err("no small filesystem".into()),
        },
    };
    facts.injected = ctx.injected;
    if injected.is_ok() {
        std::thread::sleep(pause);
    }
    facts.load = load.stop();
    injected.map_err(|e| format!("injecting the fault: {e}"))?;
    if !facts.load.unexpected.is_empty() {
        return Err(format!(
            "the load met failures no fault explains: {}",
            facts.load.unexpected.join("; ")
        ));
    }
    if facts.injected.mid_operation == 0 {
        return Err("no fault landed while the operation it aimed at was running".into());
    }
    // A fresh monitor session: the last one may predate a crash.
    let mut db = faults::recovered(cluster)?;
    if faults::scheduler(&mut db)?.is_none() {
        std::thread::sleep(Duration::from_secs(6));
        if faults::scheduler(&mut db)?.is_none() {
            return Err("the scheduler is not running after the faults".into());
        }
    }
    let mut present = Vec::new();
    for st in STREAM_TABLES {
        if verdict::exists_consistently(&mut db, st.name)? {
            present.push(st);
        }
    }
    verdict::catch_up(&mut db, &present)?;
    let mut mismatches = Vec::new();
    let mut unasked = Vec::new();
    for (st, mark) in STREAM_TABLES.iter().zip(&marks) {
        if !present.contains(&st) {
            continue;
        }
        match verdict::compare_with_query(&mut db, st) {
            Ok(c) => facts.rows_compared += c.rows,
            Err((c, diff)) => {
                facts.lost += c.lost;
                facts.duplicated += c.extra;
                facts.rows_compared += c.rows;
                mismatches.push(diff);
            }
        }
        let h = verdict::refreshes_since(&mut db, st.name, *mark)?;
        facts.differential_refreshes += h.differential;
        facts
            .failed_refreshes
            .extend(h.errors.iter().map(|e| format!("{}: {e}", st.name)));
        for f in &h.full {
            facts.full_refreshes.push(format!("{}: {f}", st.name));
            if !scenario.full_asked_for().contains(&st.name) {
                unasked.push(format!("{}: {f}", st.name));
            }
        }
        let (triggers, buffer) = verdict::capture_objects(&mut db, st.source)?;
        if triggers.is_empty() || !buffer {
            mismatches.push(format!(
                "{} exists but its source {} has triggers {triggers:?} and change buffer {}",
                st.name,
                st.source,
                if buffer { "present" } else { "missing" }
            ));
        }
    }
    if !mismatches.is_empty() {
        return Err(mismatches.join("\n"));
    }
    if !unasked.is_empty() {
        return Err(format!(
            "refreshes ran FULL that nobody asked for: {}",
            unasked.join("; ")
        ));
    }
    Ok(())
}

/// Run the chosen scenarios, `runs` times each; the suite and the table.
pub fn chaos_suite(
    opts: &ChaosOptions,
    run_dir: &Path,
    keep: bool,
) -> (Suite, Vec<ScenarioFigures>) {
    let t = Instant::now();
    let parent = std::env::temp_dir().join("pg_trickle-runs").join(
        run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "chaos".into()),
    );
    let _ = std::fs::create_dir_all(&parent);
    let log_dir = run_dir.join("logs");
    let scenarios: Vec<Scenario> = if opts.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        opts.only.clone()
    };
    let mut cases = Vec::new();
    let mut table = Vec::new();
    for sc in scenarios {
        let mut fig = ScenarioFigures {
            scenario: sc.name().into(),
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
            let outcome = match &result {
                Ok(()) => Outcome::Pass,
                Err(e)
                    if e.contains("differs from its query") || e.contains("FULL that nobody") =>
                {
                    Outcome::Mismatch
                }
                Err(e) if e.starts_with("could not start") => Outcome::HarnessError,
                Err(_) => Outcome::EngineError,
            };
            let mut tally = Tally::default();
            tally.add(outcome);
            let name = format!("{}_seed_{seed}", sc.name());
            let mut case = CaseReport::new(&name, outcome, tally, started.elapsed().as_millis());
            case.facts = serde_json::to_value(&facts).unwrap_or_default();
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
            let reproduce = format!(
                "{} chaos --scenario {} --seed {seed} --runs 1 --writers {}",
                opts.runner,
                sc.name(),
                opts.writers
            );
            match result {
                Ok(()) => {
                    fig.passed += 1;
                    println!(
                        "chaos: {} seed {seed}: passed: {} faults ({} mid-operation), {} rows written in {} transactions, {} rows compared, 0 lost, 0 duplicated",
                        sc.name(),
                        facts.injected.faults.len(),
                        facts.injected.mid_operation,
                        facts.load.rows,
                        facts.load.committed,
                        facts.rows_compared
                    );
                    if let Some(c) = cluster {
                        drop_or_keep(c, keep);
                    }
                }
                Err(e) => {
                    println!(
                        "chaos: {} seed {seed}: FAILED: {}",
                        sc.name(),
                        e.lines().next().unwrap_or("")
                    );
                    println!("chaos:   reproduce: {reproduce}");
                    case.message = Some(e.lines().next().unwrap_or("").to_string());
                    case.details = Some(format!(
                        "{e}\n\nfaults: {:#?}\nload: {:#?}",
                        facts.injected, facts.load
                    ));
                    case.reproduce = Some(reproduce);
                    if let Some(c) = cluster {
                        drop_or_keep(c, true);
                    }
                }
            }
            cases.push(case);
        }
        table.push(fig);
    }
    (
        Suite::new("chaos", cases, t.elapsed().as_secs_f64(), None),
        table,
    )
}

fn drop_or_keep(mut cluster: Cluster, keep: bool) {
    if keep {
        cluster.keep();
    }
    drop(cluster);
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
