//! `harness fuzz`: every fuzz target for a bounded time (see the module
//! above); also a step of `harness nightly`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{fuzz_suite, FuzzOptions};
use crate::cli::{Common, Failure, Run};

/// Options of `harness fuzz`.
#[derive(Args, Clone)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// libFuzzer's seed (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Only this target (repeatable).
    #[arg(long = "target")]
    pub only: Vec<String>,
    /// The `fuzz/` folder of the checkout.
    #[arg(long, default_value = "fuzz")]
    pub dir: PathBuf,
}

/// Run `harness fuzz`.
pub fn run(common: &Common, args: &FuzzArgs) -> Result<(), Failure> {
    let run = Run::begin(common, "fuzz")?;
    let seed = args
        .seed
        .unwrap_or_else(|| crate::cli::clock_seed() % 1_000_000);
    let opts = FuzzOptions {
        dir: args.dir.clone(),
        per_target: Duration::from_secs(args.seconds),
        seed,
        only: args.only.clone(),
    };
    let suite = fuzz_suite(&opts);
    run.finish(common, vec![suite], None)
}
