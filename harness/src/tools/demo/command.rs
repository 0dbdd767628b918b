//! `harness demo`: a stream table kept fresh by the scheduler, shown step by step.

use clap::Args;

use crate::cli::{Common, Failure, Run};

/// Options of `harness demo`.
#[derive(Args, Clone)]
pub struct DemoArgs {
    /// Seed for the changes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rounds of changes.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
}

/// Run `harness demo`.
pub fn run(common: &Common, args: &DemoArgs) -> Result<(), Failure> {
    let run = Run::begin(common, "demo")?;
    let mut cluster = run.cluster(common, vec![])?;
    let mut db = cluster
        .connect("postgres")
        .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let r = crate::tools::demo::run(&mut db, args.seed, args.rounds).map_err(Failure::Check);
    if common.keep || r.is_err() {
        cluster.keep();
    }
    r
}
