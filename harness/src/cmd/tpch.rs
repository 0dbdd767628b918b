//! `harness tpch`: TPC-H at a scale factor through the DIFF-vs-FULL oracle,
//! with per-query modes and refresh times (written to `tpch.json`).

use clap::Args;
use harness::tpch_suite::{tpch_suite, TpchOptions};

use super::{Common, Failure, Run};

/// Options of `harness tpch`.
#[derive(Args, Clone)]
pub struct TpchArgs {
    /// Scale factor.
    #[arg(long, default_value_t = 0.01)]
    pub sf: f64,
    /// Refresh cycles (each applies one change set).
    #[arg(long, default_value_t = 3)]
    pub cycles: u64,
    /// Fraction of the orders each change set inserts and deletes.
    #[arg(long, default_value_t = 0.001)]
    pub fraction: f64,
    /// Seed of the change sets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run only these queries (repeatable), e.g. `q04`.
    #[arg(long = "query")]
    pub queries: Vec<String>,
}

/// Run `harness tpch`.
pub fn run(common: &Common, args: &TpchArgs) -> Result<(), Failure> {
    let run = Run::begin(common, "tpch")?;
    let mut cluster = run.cluster(
        common,
        vec!["pg_trickle.scheduler_interval_ms = 600000".into()],
    )?;
    let opts = TpchOptions {
        sf: args.sf,
        cycles: args.cycles,
        fraction: args.fraction,
        seed: args.seed,
        only: args.queries.clone(),
    };
    let (suite, figures) = tpch_suite(&cluster, &opts);
    println!(
        "\n{:<5} {:<13} {:>10} {:>10}  fallback reason",
        "query", "mode", "p50 ms", "p99 ms"
    );
    for f in &figures {
        println!(
            "{:<5} {:<13} {:>10.1} {:>10.1}  {}",
            f.query,
            f.mode,
            f.p50_ms,
            f.p99_ms,
            f.fallback_reason.as_deref().unwrap_or("")
        );
    }
    let _ = std::fs::write(
        run.dir.join("tpch.json"),
        serde_json::to_string_pretty(&figures).unwrap_or_default(),
    );
    run.finish(common, vec![suite], Some(&mut cluster))
}
