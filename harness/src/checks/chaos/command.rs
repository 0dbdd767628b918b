//! `harness chaos`: the single-node fault scenarios, each run on a
//! cluster of its own, with a table of what was injected and what was
//! lost (nothing, or the run fails).

use clap::Args;

use super::{chaos_suite, table, ChaosOptions, Scenario};
use crate::cli::{Common, Failure, Run};

/// Options of `harness chaos`.
#[derive(Args, Clone)]
pub struct ChaosArgs {
    /// Run only this scenario (repeatable; see --list).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// Runs per scenario; run k uses seed + k.
    #[arg(long, default_value_t = 2)]
    pub runs: u64,
    /// Base seed (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 3)]
    pub writers: usize,
    /// Seconds of load before the faults and after them.
    #[arg(long, default_value_t = 2.0)]
    pub load_seconds: f64,
    /// How the sources chaos_orders and chaos_customers are captured:
    /// `trigger`, or `wal` (switched after creation; chaos_events keeps
    /// its trigger).
    #[arg(long, value_parser = crate::checks::oracle::command::parse_capture, default_value = "trigger")]
    pub capture: oracles::workload::Capture,
    /// Where the faults land: `single` (one node), `sharding` (a
    /// coordinator and two workers, postgres_fdw partitions), or `citus`
    /// (a Citus distributed table on a coordinator and two workers;
    /// reported as skipped when Citus is not installed).
    #[arg(long, default_value = "single", value_parser = ["single", "sharding", "citus"])]
    pub topology: String,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

/// Parse scenario names; an unknown one is an error naming the known ones.
pub fn scenarios(names: &[String]) -> Result<Vec<Scenario>, String> {
    names
        .iter()
        .map(|n| {
            Scenario::ALL
                .iter()
                .copied()
                .find(|s| s.name() == n)
                .ok_or_else(|| {
                    format!(
                        "unknown chaos scenario {n:?} (known: {})",
                        Scenario::ALL.map(|s| s.name()).join(", ")
                    )
                })
        })
        .collect()
}

/// The options these arguments select.
pub fn options(common: &Common, args: &ChaosArgs, seed: u64) -> Result<ChaosOptions, Failure> {
    Ok(ChaosOptions {
        seed,
        runs: args.runs.max(1),
        only: scenarios(&args.scenarios).map_err(Failure::CouldNotRun)?,
        writers: args.writers.max(1),
        load_seconds: args.load_seconds.max(0.2),
        pg_config: common.pg_config.clone(),
        runner: common.runner(),
        capture: args.capture,
    })
}

/// Run `harness chaos`.
pub fn run(common: &Common, args: &ChaosArgs) -> Result<(), Failure> {
    if args.list {
        for s in Scenario::ALL {
            println!("{} (single)", s.name());
        }
        for s in super::topology::TopoScenario::ALL {
            println!("{} (sharding, citus)", s.name());
        }
        return Ok(());
    }
    let run = Run::begin(common, "chaos")?;
    let seed = args.seed.unwrap_or_else(crate::cli::clock_seed);
    println!(
        "chaos: seed {seed} (reproduce the whole run: {} chaos --topology {} --seed {seed} --runs {})",
        common.runner(),
        args.topology,
        args.runs
    );
    if args.topology != "single" {
        let known: Vec<&str> = super::topology::TopoScenario::ALL
            .iter()
            .map(|s| s.name())
            .collect();
        if let Some(bad) = args.scenarios.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(Failure::CouldNotRun(format!(
                "unknown {} scenario {bad:?} (known: {})",
                args.topology,
                known.join(", ")
            )));
        }
        let opts = options(
            common,
            &ChaosArgs {
                scenarios: Vec::new(),
                ..args.clone()
            },
            seed,
        )?;
        let (suite, figures) = super::topology_suite(
            &opts,
            &args.topology,
            &args.scenarios,
            &run.dir,
            common.keep,
        );
        println!("\n{}", table(&figures));
        return run.finish(common, vec![suite], None);
    }
    let opts = options(common, args, seed)?;
    let (suite, figures) = chaos_suite(&opts, &run.dir, common.keep);
    println!("\n{}", table(&figures));
    run.finish(common, vec![suite], None)
}
