//! `harness replay FILE`: run a workload saved as JSON (the
//! `.workload.json` file every oracle failure writes) through the
//! DIFF-vs-FULL oracle again, on a cluster of its own.
//!
//! A workload whose statements interleave several connections, or wait for
//! the live scheduler, cannot be replayed by `psql`; this is its replay.
//! The interleaving runs exactly as saved: the same statements, on the
//! same connections, started in the same order.

use std::path::PathBuf;
use std::time::Duration;

use crate::checks::oracle::{run_one, OracleOptions};
use crate::report::Suite;
use clap::Args;
use oracles::shrink::Limits;
use oracles::workload::Workload;

use crate::cli::{Common, Failure, Run};

/// Options of `harness replay`.
#[derive(Args, Clone)]
pub struct ReplayArgs {
    /// The workload file (`replay/<name>.seed<N>.workload.json` of a failed run).
    pub file: PathBuf,
    /// Shrink the workload again if it fails (it usually is shrunk already).
    #[arg(long)]
    pub shrink: bool,
    /// Most seconds spent shrinking.
    #[arg(long, default_value_t = 120)]
    pub shrink_seconds: u64,
}

/// Read a saved workload.
pub fn read_workload(path: &PathBuf) -> Result<Workload, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::CouldNotRun(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure::CouldNotRun(format!(
            "{} is not a saved workload (the .workload.json file an oracle failure writes): {e}",
            path.display()
        ))
    })
}

/// Run `harness replay`.
pub fn run(common: &Common, args: &ReplayArgs) -> Result<(), Failure> {
    let w = read_workload(&args.file)?;
    let run = Run::begin(common, "replay")?;
    let mut cluster = run.cluster(common, crate::checks::oracle::oracle_cluster_settings())?;
    println!(
        "replay: workload {} (seed {}): {} stream tables, {} steps, {} connections{}",
        w.name,
        w.seed,
        w.stream_tables.len(),
        w.steps.len(),
        w.connections.len() + 1,
        if w.scheduler { ", live scheduler" } else { "" }
    );
    let opts = OracleOptions {
        shrink: args.shrink,
        shrink_limits: Limits {
            max_time: Duration::from_secs(args.shrink_seconds),
            ..Limits::default()
        },
        runner: common.runner(),
        ..OracleOptions::default()
    };
    let reproduce = format!("{} replay {}", common.runner(), args.file.display());
    let case = run_one(&cluster, &run.dir, &opts, &w, reproduce);
    let suite = Suite::new(
        "replay",
        vec![case],
        run.started.elapsed().as_secs_f64(),
        None,
    );
    run.finish(common, vec![suite], Some(&mut cluster))
}
