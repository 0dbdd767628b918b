//! `harness baseline refresh`: measure the TPC-H figures several times on
//! this machine, half of the runs under a CPU hog by default, and write
//! `baselines/<profile>.json` (DIFF/FULL ratios and absolute times with
//! their spreads, modes, temp blocks, plan shapes, the machine and the
//! commit).

use crate::checks::tpch::gate::{self, Baseline};
use crate::checks::tpch::{tpch_suite, TpchOptions};
use clap::{Args, Subcommand};

use crate::checks::tpch::command::{baseline_path, Hog};
use crate::cli::{Common, Failure, Run};

/// `harness baseline ...`.
#[derive(Subcommand, Clone)]
pub enum BaselineCommand {
    /// Measure and write `baselines/<profile>.json`.
    Refresh(RefreshArgs),
}

/// Options of `harness baseline refresh`.
#[derive(Args, Clone)]
pub struct RefreshArgs {
    /// Profile name (the file is baselines/<profile>.json).
    #[arg(long)]
    pub profile: String,
    /// Measured runs (each loads fresh data and runs every cycle).
    #[arg(long, default_value_t = 6)]
    pub runs: usize,
    /// Scale factor.
    #[arg(long, default_value_t = 0.01)]
    pub sf: f64,
    /// Refresh cycles per run.
    #[arg(long, default_value_t = 3)]
    pub cycles: u64,
    /// Change-set seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Queries (repeatable); default: the collapse-prone ones plus q01, q03, q06.
    #[arg(long = "query")]
    pub queries: Vec<String>,
    /// Measure runs under a CPU hog the runner starts and stops: `off`,
    /// `on`, or `alternate` (the default: half the runs under load, so the
    /// recorded spread includes what load does).
    #[arg(long, value_enum, default_value_t = Hog::Alternate)]
    pub hog: Hog,
}

/// The PR gate's queries: the collapse-prone ones and a few simple ones.
pub fn pr_queries() -> Vec<String> {
    let mut q: Vec<String> = tpch::queries::COLLAPSE_PRONE
        .iter()
        .map(|s| s.to_string())
        .collect();
    q.extend(["q01", "q03", "q06"].iter().map(|s| s.to_string()));
    q.sort();
    q
}

/// Run `harness baseline`.
pub fn run(common: &Common, cmd: &BaselineCommand) -> Result<(), Failure> {
    let BaselineCommand::Refresh(args) = cmd;
    let run = Run::begin(common, "baseline")?;
    let cluster = run.cluster(
        common,
        vec!["pg_trickle.scheduler_interval_ms = 600000".into()],
    )?;
    let queries = if args.queries.is_empty() {
        pr_queries()
    } else {
        args.queries.clone()
    };
    let opts = TpchOptions {
        sf: args.sf,
        cycles: args.cycles,
        fraction: 0.001,
        seed: args.seed,
        only: queries,
        settings: Vec::new(),
        database: "tpch".into(),
    };
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let loaded = args.hog.applies_to(i as u64);
        println!(
            "baseline: run {i} of {}{}",
            args.runs,
            if loaded { " (under a CPU hog)" } else { "" }
        );
        let hog = loaded.then(|| crate::load::CpuHog::start(0));
        let (suite, figures) = tpch_suite(&cluster, &opts);
        drop(hog);
        if suite.failed() > 0 {
            return Err(Failure::Check(format!(
                "run {i} failed its checks; a baseline is only measured on a passing run"
            )));
        }
        runs.push(figures);
    }
    let postgres: String = cluster
        .connect("postgres")
        .and_then(|mut c| Ok(c.query_one("SELECT version()", &[])?.get(0)))
        .unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let b = Baseline {
        profile: args.profile.clone(),
        machine: gate::machine(postgres),
        commit,
        sf: args.sf,
        cycles: args.cycles,
        runs: args.runs,
        runs_under_load: (1..=args.runs as u64)
            .filter(|i| args.hog.applies_to(*i))
            .count(),
        seed: args.seed,
        queries: gate::measure(&runs),
    };
    let path = baseline_path(&args.profile);
    gate::write(&path, &b).map_err(Failure::CouldNotRun)?;
    println!(
        "baseline: wrote {} ({} queries, {} runs)",
        path.display(),
        b.queries.len(),
        b.runs
    );
    Ok(())
}
