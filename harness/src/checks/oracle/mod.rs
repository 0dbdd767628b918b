//! The oracle suites the runner reports: the corpus under the DIFF-vs-FULL
//! oracle (with shrinking and replay files for failures, and the corpus's
//! operator coverage), and the negative control.
//!
//! The `oracle` and `pr` subcommands and the end-to-end tests all run
//! these, so what CI tests is what a maintainer runs.

pub mod command;
pub mod replay;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use oracles::corpus::{self, Entry, REQUIRED_COVERAGE};
use oracles::diff_vs_full::WorkloadRun;
use oracles::outcome::{Outcome, Tally};
use oracles::shrink::{self, Limits, Sandbox};
use oracles::tamper;
use oracles::workload::{Capture, Workload};
use oracles::{compare, repro};

use crate::cluster::Cluster;
use crate::progress::Progress;
use crate::report::{CaseReport, Suite};

/// Server settings of clusters that run the oracle corpus: its scheduler
/// workloads wait for the live scheduler, which polls this often.
/// Capture from the WAL needs logical decoding, one slot per source.
pub const ORACLE_CLUSTER_SETTINGS: &[&str] = &[
    "pg_trickle.scheduler_interval_ms = 100",
    "wal_level = logical",
    "max_replication_slots = 64",
];

/// [`ORACLE_CLUSTER_SETTINGS`] as the cluster options take them.
pub fn oracle_cluster_settings() -> Vec<String> {
    ORACLE_CLUSTER_SETTINGS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Held while a workload runs in the scheduler's database (there is one
/// per cluster; tests run in parallel threads).
static SCHEDULER_DATABASE: Mutex<()> = Mutex::new(());

/// Empty pg_trickle databases on a cluster, for the oracles. Once it has
/// handed out the scheduler's database it holds that database until dropped.
pub struct Databases<'a> {
    cluster: &'a Cluster,
    scheduler: Option<MutexGuard<'static, ()>>,
}

impl<'a> Databases<'a> {
    /// Databases on `cluster`.
    pub fn new(cluster: &'a Cluster) -> Self {
        Databases {
            cluster,
            scheduler: None,
        }
    }
}

impl Databases<'_> {
    /// Wait for the scheduler's database and keep it until dropped,
    /// without emptying it ([`Sandbox::scheduler_database`] empties it).
    pub fn take_scheduler_turn(&mut self) {
        if self.scheduler.is_none() {
            // A panicking holder leaves nothing behind that a reset does not clear.
            self.scheduler = Some(
                SCHEDULER_DATABASE
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
        }
    }
}

impl Sandbox for Databases<'_> {
    fn fresh_database(&mut self, name: &str) -> Result<postgres::Client, String> {
        self.cluster
            .fresh_database(name)
            .map_err(|e| format!("creating database {name}: {e}"))
    }

    fn scheduler_database(&mut self) -> Result<postgres::Client, String> {
        self.take_scheduler_turn();
        self.cluster
            .scheduler_database()
            .map_err(|e| format!("emptying the scheduler's database: {e}"))
    }
}

/// What to run and how.
#[derive(Debug, Clone)]
pub struct OracleOptions {
    /// Seed for every workload (default: each workload's own).
    pub seed: Option<u64>,
    /// Random steps per workload.
    pub steps: usize,
    /// Run only workloads whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// Shrink failures (off: replay files of the whole failing run only).
    pub shrink: bool,
    /// Shrinking limits per failure.
    pub shrink_limits: Limits,
    /// Most wall time spent shrinking across the whole suite; later
    /// failures keep their whole-run replay file and say so.
    pub shrink_total: Duration,
    /// Stop starting workloads after this long; the rest fail as not run.
    pub budget: Option<Duration>,
    /// The runner as a user invokes it, with its global options, for
    /// reproduce commands (e.g. `target/debug/harness --pg-config X`).
    pub runner: String,
    /// How the workloads' sources are captured.
    pub capture: Capture,
}

impl Default for OracleOptions {
    fn default() -> Self {
        OracleOptions {
            seed: None,
            steps: corpus::DEFAULT_STEPS,
            only: Vec::new(),
            shrink: true,
            shrink_limits: Limits::default(),
            shrink_total: Duration::from_secs(240),
            budget: None,
            runner: "harness".into(),
            capture: Capture::Trigger,
        }
    }
}

impl OracleOptions {
    fn selected(&self) -> Vec<Entry> {
        corpus::entries()
            .into_iter()
            .filter(|e| {
                self.only.is_empty() || self.only.iter().any(|o| e.name.contains(o.as_str()))
            })
            .collect()
    }

    fn command(&self, workload: &str, seed: u64) -> String {
        let capture = match self.capture {
            Capture::Trigger => String::new(),
            Capture::Wal => " --capture wal".into(),
        };
        format!(
            "{} oracle --workload {workload} --seed {seed} --steps {}{capture}",
            self.runner, self.steps
        )
    }

    /// The suite's name: `oracle`, or `oracle_wal` with capture from the WAL.
    pub fn suite_name(&self) -> &'static str {
        match self.capture {
            Capture::Trigger => "oracle",
            Capture::Wal => "oracle_wal",
        }
    }
}

/// Database name for a workload.
fn db_name(prefix: &str, workload: &str) -> String {
    format!("{prefix}_{workload}")
}

fn verdict(r: &WorkloadRun) -> String {
    match r.failure() {
        None if r.passed() => format!("ok, {} checks", r.tally.pass),
        None => format!(
            "STOPPED SHORT: {} of {} checks",
            r.tally.pass, r.expected_comparisons
        ),
        Some(c) => format!(
            "{} on {} at step {}",
            c.outcome.name().to_uppercase(),
            c.stream_table,
            c.step
        ),
    }
}

/// Run the selected corpus workloads on `cluster`, writing replay files
/// for failures under `run_dir/replay/`.
pub fn corpus_suite(cluster: &Cluster, run_dir: &Path, opts: &OracleOptions) -> Suite {
    let started = Instant::now();
    let selected = opts.selected();
    let mut progress = Progress::new(opts.suite_name(), selected.len());
    let mut cases = Vec::new();
    let mut operators = BTreeSet::new();
    let mut shrinking = Duration::ZERO;
    for entry in &selected {
        let seed = opts.seed.unwrap_or(entry.seed);
        let reproduce = opts.command(entry.name, seed);
        if opts.budget.is_some_and(|b| started.elapsed() >= b) {
            let mut c = CaseReport::new(entry.name, Outcome::HarnessError, Tally::default(), 0);
            c.message = Some(format!(
                "not run: the suite's budget of {} s was used up",
                opts.budget.unwrap_or_default().as_secs()
            ));
            c.reproduce = Some(reproduce);
            progress.finish(entry.name, "NOT RUN (budget)", 0);
            cases.push(c);
            continue;
        }
        progress.start(entry.name);
        let w = (entry.build)(seed, opts.steps).with_capture(opts.capture);
        let mut this = opts.clone();
        let left = opts.shrink_total.saturating_sub(shrinking);
        this.shrink_limits.max_time = this.shrink_limits.max_time.min(left);
        this.shrink = opts.shrink && !left.is_zero();
        let case = run_one(cluster, run_dir, &this, &w, reproduce);
        if let Some(s) = case.facts.get("shrink").and_then(|s| s["seconds"].as_f64()) {
            shrinking += Duration::from_secs_f64(s);
        }
        if let Some(ops) = case.facts.get("operators").and_then(|o| o.as_array()) {
            operators.extend(ops.iter().filter_map(|o| o.as_str().map(str::to_string)));
        }
        let v = case
            .message
            .clone()
            .unwrap_or_else(|| format!("ok, {} checks", case.checks.pass));
        progress.finish(entry.name, &v, case.millis);
        cases.push(case);
    }
    if opts.only.is_empty() {
        cases.push(coverage_case(&operators));
    } else {
        cases.push(CaseReport::skip(
            "operator_coverage",
            "a subset of the corpus ran: coverage is judged over the whole corpus",
        ));
    }
    Suite::new(
        opts.suite_name(),
        cases,
        started.elapsed().as_secs_f64(),
        opts.budget.map(|b| b.as_secs_f64()),
    )
}

fn coverage_case(seen: &BTreeSet<String>) -> CaseReport {
    let missing: Vec<&str> = REQUIRED_COVERAGE
        .iter()
        .copied()
        .filter(|op| !seen.contains(*op))
        .collect();
    let mut tally = Tally::default();
    let outcome = if missing.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Mismatch
    };
    tally.add(outcome);
    let mut c = CaseReport::new("operator_coverage", outcome, tally, 0);
    if !missing.is_empty() {
        c.message = Some(format!(
            "no corpus workload exercises: {}",
            missing.join(", ")
        ));
    }
    c.facts = serde_json::json!({ "required": REQUIRED_COVERAGE, "seen": seen });
    c
}

/// Run one workload in a fresh database and report it, shrinking and
/// writing replay files when it fails.
pub fn run_one(
    cluster: &Cluster,
    run_dir: &Path,
    opts: &OracleOptions,
    w: &Workload,
    reproduce: String,
) -> CaseReport {
    let prefix = match w.capture {
        Capture::Trigger => "o",
        Capture::Wal => "ow",
    };
    let mut name = db_name(prefix, &w.name);
    let mut sandbox = Databases::new(cluster);
    let r = match shrink::run_in(&mut sandbox, &name, w) {
        Ok((r, mut db)) => {
            if w.scheduler {
                if let Ok(row) = db.query_one("SELECT current_database()::text", &[]) {
                    name = row.get(0);
                }
            }
            r
        }
        Err(e) => {
            let mut t = Tally::default();
            t.add(Outcome::HarnessError);
            let mut c = CaseReport::new(&w.name, Outcome::HarnessError, t, 0);
            c.message = Some(format!("could not prepare database {name}: {e}"));
            c.reproduce = Some(reproduce);
            return c;
        }
    };
    let mut c = CaseReport::new(&w.name, r.outcome(), r.tally, r.millis);
    c.facts = serde_json::json!({
        "seed": w.seed,
        "steps": w.steps.len(),
        "expected_comparisons": r.expected_comparisons,
        "operators": r.operators,
    });
    if r.conflicts > 0 {
        c.facts["conflicts"] = serde_json::json!(r.conflicts);
    }
    if w.scheduler {
        // Scheduled stream tables would go on refreshing every second
        // during later suites: drop them, or hold them when kept for
        // inspection.
        if let Ok(mut db) = cluster.connect(&name) {
            let quiet = if r.passed() {
                "DROP EXTENSION IF EXISTS pg_trickle CASCADE"
            } else {
                "SELECT pgtrickle.hold_all_stream_tables('kept for inspection after an oracle failure')"
            };
            let _ = db.batch_execute(quiet);
        }
    }
    // The scheduler's turn ends only now, its stream tables stopped (the
    // next workload's reset would otherwise race that DROP EXTENSION);
    // shrinking takes it again, probe by probe.
    drop(sandbox);
    if r.passed() {
        if !w.scheduler {
            if let Err(e) = cluster.drop_database(&name) {
                // A database left behind costs disk only; the next run
                // of the same workload drops it first.
                eprintln!("oracle: could not drop database {name} after it passed: {e}");
            }
        }
        return c;
    }
    c.message = Some(verdict(&r));
    c.reproduce = Some(reproduce.clone());
    let failed = Failed {
        workload: w,
        run: &r,
        database: &name,
    };
    report_failure(cluster, run_dir, opts, failed, &mut c, &shrink::no_variants);
    c
}

/// A failed oracle run and where it ran.
pub struct Failed<'a> {
    /// The workload.
    pub workload: &'a Workload,
    /// Its run.
    pub run: &'a WorkloadRun,
    /// The database it ran in (kept for inspection).
    pub database: &'a str,
}

/// Fill `c` with the failure report and write replay files; `variants`
/// simplifies queries while shrinking.
pub fn report_failure(
    cluster: &Cluster,
    run_dir: &Path,
    opts: &OracleOptions,
    failed: Failed<'_>,
    c: &mut CaseReport,
    variants: shrink::QueryVariants<'_>,
) {
    let (w, r, db) = (failed.workload, failed.run, failed.database);
    let dir = run_dir.join("replay");
    let _ = std::fs::create_dir_all(&dir);
    let failing = r
        .failure()
        .map(|f| f.stream_table.clone())
        .unwrap_or_default();
    let full_columns = cluster
        .connect(db)
        .ok()
        .and_then(|mut client| compare::stream_table_columns(&mut client, &failing).ok())
        .map(|cols| cols.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
        .unwrap_or_default();
    let full_json = dir.join(format!("{}.seed{}.full.workload.json", w.name, w.seed));
    write_workload(&full_json, w, c);
    let full_path = dir.join(format!("{}.seed{}.full.sql", w.name, w.seed));
    let whole = if w.concurrent() {
        format!("{} replay {}", opts.runner, full_json.display())
    } else {
        c.reproduce.clone().unwrap_or_default()
    };
    write_file(&full_path, &repro::render(w, r, &full_columns, &whole), c);

    let mut text = String::new();
    let _ = writeln!(
        text,
        "workload {} (seed {}, {} steps): {}",
        w.name,
        w.seed,
        w.steps.len(),
        verdict(r)
    );
    for st in &w.stream_tables {
        let _ = writeln!(
            text,
            "query of {} ({}): {}",
            st.name,
            st.mode.name(),
            st.query
        );
    }
    if let Some(f) = r.failure() {
        let _ = writeln!(text, "{}", f.detail.as_deref().unwrap_or(""));
    }
    let mut trace = r.trace.clone();
    if opts.shrink && r.failure().is_some() {
        let mut sandbox = Databases::new(cluster);
        let t = Instant::now();
        match shrink::shrink(&mut sandbox, w, r, opts.shrink_limits, variants) {
            Ok(s) => {
                let _ = writeln!(
                    text,
                    "shrunk from {} to {} statements in {} probes ({:.1} s){}",
                    w.statement_count(),
                    s.workload.statement_count(),
                    s.probes,
                    t.elapsed().as_secs_f64(),
                    if s.limited {
                        ", stopped by its limits"
                    } else {
                        ""
                    }
                );
                if let Some(f) = s.run.failure() {
                    let _ = writeln!(
                        text,
                        "shrunk failure: {}",
                        f.detail.as_deref().unwrap_or("")
                    );
                }
                let json = dir.join(format!("{}.seed{}.workload.json", w.name, w.seed));
                write_workload(&json, &s.workload, c);
                let replay = format!("{} replay {}", opts.runner, json.display());
                let _ = writeln!(text, "replay the shrunk workload: {replay}");
                if s.workload.concurrent() {
                    // psql cannot replay an interleaving: the JSON file is the reproducer.
                    c.reproduce = Some(format!(
                        "{replay}   (whole run: {})",
                        c.reproduce.clone().unwrap_or_default()
                    ));
                }
                let path = dir.join(format!("{}.seed{}.sql", w.name, w.seed));
                let command = if s.workload.concurrent() {
                    replay.clone()
                } else {
                    c.reproduce.clone().unwrap_or_default()
                };
                write_file(
                    &path,
                    &repro::render(&s.workload, &s.run, &s.columns, &command),
                    c,
                );
                trace = s.run.trace.clone();
                c.facts["shrink"] = serde_json::json!({
                    "seconds": t.elapsed().as_secs_f64(),
                    "from_statements": w.statement_count(),
                    "to_statements": s.workload.statement_count(),
                    "probes": s.probes,
                    "limited": s.limited,
                });
            }
            Err(e) => {
                let _ = writeln!(text, "shrinking failed: {e}");
            }
        }
    } else if r.failure().is_some() {
        let _ = writeln!(
            text,
            "not shrunk (shrinking is off or its time budget is used up); the reproduce command shrinks it"
        );
    }
    let _ = writeln!(text, "statement trace ({} statements):", trace.len());
    for s in &trace {
        let _ = writeln!(text, "  {s};");
    }
    let _ = writeln!(text, "database kept for inspection: {db}");
    c.details = Some(text);
}

/// Write `w` as JSON for `harness replay`.
fn write_workload(path: &PathBuf, w: &Workload, c: &mut CaseReport) {
    match serde_json::to_string_pretty(w) {
        Ok(text) => write_file(path, &text, c),
        Err(e) => {
            let msg = format!("could not encode workload {}: {e}", w.name);
            c.details = Some(format!("{}\n{msg}", c.details.clone().unwrap_or_default()));
        }
    }
}

fn write_file(path: &PathBuf, text: &str, c: &mut CaseReport) {
    match std::fs::write(path, text) {
        Ok(()) => c.replay_files.push(path.clone()),
        Err(e) => {
            let msg = format!("could not write {}: {e}", path.display());
            c.details = Some(format!("{}\n{msg}", c.details.clone().unwrap_or_default()));
        }
    }
}

/// The negative control: every tampering must be reported as a mismatch.
/// A tampering that is not caught fails its case.
pub fn negative_control_suite(
    cluster: &Cluster,
    run_dir: &Path,
    seed: Option<u64>,
    runner: &str,
) -> Suite {
    let started = Instant::now();
    let total = tamper::cases();
    let mut progress = Progress::new("negative control", total);
    let mut sandbox = Databases::new(cluster);
    let dir = run_dir.join("replay");
    let results = tamper::negative_control(&mut sandbox, seed, |r| {
        let name = format!("{}/{}", r.target.workload, r.tamper.name());
        let v = if r.detected { "caught" } else { "MISSED" };
        progress.finish(&name, v, r.run.millis);
    });
    let mut cases = Vec::new();
    match results {
        Ok(results) => {
            for r in results {
                let name = format!("{}/{}", r.target.workload, r.tamper.name());
                // The case's one check is "was the tampering caught".
                let outcome = if r.detected {
                    Outcome::Pass
                } else {
                    Outcome::Mismatch
                };
                let mut tally = Tally::default();
                tally.add(outcome);
                let mut c = CaseReport::new(&name, outcome, tally, r.run.millis);
                let reproduce = format!(
                    "{runner} oracle --negative-control{}",
                    seed.map(|s| format!(" --seed {s}")).unwrap_or_default()
                );
                c.facts = serde_json::json!({
                    "tamper": r.tamper, "target": r.target,
                    "oracle_outcome": r.run.outcome(), "oracle_checks": r.run.tally,
                    "caught_by": r.run.failure(),
                });
                if !r.detected {
                    c.message = Some(format!(
                        "tampering {} of {} was not reported as a mismatch {} step {} (oracle said: {})",
                        r.tamper.name(),
                        r.target.stream_table,
                        if tamper::Tamper::CONCURRENT.contains(&r.tamper) {
                            "after"
                        } else {
                            "in"
                        },
                        r.step,
                        verdict(&r.run)
                    ));
                    let _ = std::fs::create_dir_all(&dir);
                    let path = dir.join(format!(
                        "negative_{}_{}.sql",
                        r.target.workload,
                        r.tamper.name()
                    ));
                    let text = repro::render(&r.workload, &r.run, &[], &reproduce);
                    write_file(&path, &text, &mut c);
                    c.details = Some(format!(
                        "{}\nstatement trace:\n  {}",
                        c.message.clone().unwrap_or_default(),
                        r.run.trace.join(";\n  ")
                    ));
                    c.reproduce = Some(reproduce);
                }
                cases.push(c);
            }
        }
        Err(e) => {
            let mut tally = Tally::default();
            tally.add(Outcome::HarnessError);
            let mut c = CaseReport::new("negative_control", Outcome::HarnessError, tally, 0);
            c.message = Some(e);
            cases.push(c);
        }
    }
    Suite::new(
        "negative_control",
        cases,
        started.elapsed().as_secs_f64(),
        None,
    )
}
