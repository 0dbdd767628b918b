//! `harness nightly`: the long job. The oracle corpus under several seeds,
//! the negative control, SQLancer-light sessions with fresh seeds (each
//! printed) until the time budget is spent, all 22 TPC-H queries at SF 0.1
//! and at SF 1 (where the results are also checked against the answers
//! `tpchgen` publishes), the whole upgrade matrix, the chaos scenarios,
//! then every fuzz target for a bounded time.

use std::time::{Duration, Instant};

use crate::checks::oracle::{corpus_suite, negative_control_suite, OracleOptions};
use crate::checks::sqlancer::{sqlancer_suite, SqlancerOptions};
use clap::Args;

use crate::cli::{Common, Failure, Run};

/// Options of `harness nightly`.
#[derive(Args, Clone)]
pub struct NightlyArgs {
    /// Total time budget in minutes.
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
    /// Extra corpus seeds besides each workload's own.
    #[arg(long, default_value_t = 3)]
    pub corpus_seeds: u64,
    /// Length of one SQLancer session in minutes (each gets a fresh seed).
    #[arg(long, default_value_t = 10)]
    pub session_minutes: u64,
    /// Base seed (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// TPC-H scale factors for the all-22-queries runs (repeatable); at
    /// SF 1 the results are also checked against the published answers.
    #[arg(long = "tpch-sf", default_values_t = [0.1, 1.0])]
    pub tpch_sf: Vec<f64>,
    /// Seconds per fuzz target (0: no fuzzing).
    #[arg(long, default_value_t = 300)]
    pub fuzz_seconds: u64,
    /// Runs of each chaos scenario (0: no chaos).
    #[arg(long, default_value_t = 3)]
    pub chaos_runs: u64,
}

/// Run `harness nightly`.
pub fn run(common: &Common, args: &NightlyArgs) -> Result<(), Failure> {
    let run = Run::begin(common, "nightly")?;
    let mut cluster = run.cluster(common, crate::checks::oracle::oracle_cluster_settings())?;
    let budget = Duration::from_secs(args.minutes * 60);
    let started = Instant::now();
    let base = args.seed.unwrap_or_else(crate::cli::clock_seed);
    println!(
        "nightly: base seed {base} (reproduce: {} nightly --seed {base})",
        common.runner()
    );
    let oracle = OracleOptions {
        steps: 60,
        runner: common.runner(),
        ..OracleOptions::default()
    };
    let mut suites = vec![corpus_suite(&cluster, &run.dir, &oracle)];
    for k in 0..args.corpus_seeds {
        let opts = OracleOptions {
            seed: Some(sqlancer::case::case_seed(base, k)),
            ..oracle.clone()
        };
        let mut s = corpus_suite(&cluster, &run.dir, &opts);
        s.name = format!("oracle_seed_{}", opts.seed.unwrap_or_default());
        suites.push(s);
    }
    // The whole corpus again with every source captured from the WAL.
    suites.push(corpus_suite(
        &cluster,
        &run.dir,
        &OracleOptions {
            capture: oracles::workload::Capture::Wal,
            ..oracle.clone()
        },
    ));
    suites.push(negative_control_suite(
        &cluster,
        &run.dir,
        Some(base),
        &common.runner(),
    ));
    let mut session = 0u64;
    while started.elapsed() < budget {
        let left = budget.saturating_sub(started.elapsed());
        let opts = SqlancerOptions {
            seed: sqlancer::case::case_seed(base, 1000 + session),
            first: 0,
            time: left.min(Duration::from_secs(args.session_minutes * 60)),
            queries: u64::MAX,
            min_checks: 0,
            max_rejected_pct: 10.0,
            concurrent_pct: crate::checks::sqlancer::DEFAULT_CONCURRENT_PCT,
            // Every other session captures from the WAL.
            oracle: OracleOptions {
                capture: if session % 2 == 1 {
                    oracles::workload::Capture::Wal
                } else {
                    oracles::workload::Capture::Trigger
                },
                ..oracle.clone()
            },
        };
        let (mut s, _) = sqlancer_suite(&cluster, &run.dir, &opts);
        s.name = format!("{}_seed_{}", s.name, opts.seed);
        suites.push(s);
        session += 1;
    }
    // TPC-H: all 22 queries at larger scales, through the oracle, with artifacts.
    for sf in &args.tpch_sf {
        let tpch = crate::checks::tpch::TpchOptions {
            sf: *sf,
            cycles: 3,
            fraction: 0.001,
            seed: base,
            only: Vec::new(),
            settings: Vec::new(),
            database: "tpch".into(),
        };
        let (mut t, figures) = crate::checks::tpch::tpch_suite(&cluster, &tpch);
        println!("\n{}", crate::checks::tpch::command::table(&figures));
        t.name = format!("tpch_sf_{sf}");
        suites.push(t);
    }
    // The whole upgrade matrix, on clusters of its own (from a private copy
    // of the installation); this one's work is done, so free the machine.
    let _ = cluster.stop();
    let up = crate::checks::upgrade::command::UpgradeArgs {
        from: Vec::new(),
        slice: false,
        base: String::new(),
        root: ".".into(),
    };
    suites.push(crate::checks::upgrade::command::suite(common, &run, &up)?);
    if args.chaos_runs > 0 {
        let chaos = crate::checks::chaos::ChaosOptions {
            seed: base,
            runs: args.chaos_runs,
            only: Vec::new(),
            writers: 3,
            load_seconds: 2.0,
            pg_config: common.pg_config.clone(),
            runner: common.runner(),
            capture: oracles::workload::Capture::Trigger,
        };
        for capture in [
            oracles::workload::Capture::Trigger,
            oracles::workload::Capture::Wal,
        ] {
            let opts = crate::checks::chaos::ChaosOptions {
                capture,
                ..chaos.clone()
            };
            let (s, figures) = crate::checks::chaos::chaos_suite(&opts, &run.dir, common.keep);
            println!("\n{}", crate::checks::chaos::table(&figures));
            suites.push(s);
        }
        // The topologies: sharding runs everywhere; Citus is skipped,
        // loudly, where it cannot run.
        for topology in ["sharding", "citus"] {
            let (s, figures) =
                crate::checks::chaos::topology_suite(&chaos, topology, &[], &run.dir, common.keep);
            println!("\n{}", crate::checks::chaos::table(&figures));
            suites.push(s);
        }
    }
    if args.fuzz_seconds > 0 {
        suites.push(crate::checks::fuzz::fuzz_suite(
            &crate::checks::fuzz::FuzzOptions {
                dir: "fuzz".into(),
                per_target: Duration::from_secs(args.fuzz_seconds),
                seed: base % 1_000_000,
                only: Vec::new(),
            },
        ));
    }
    run.finish(common, suites, Some(&mut cluster))
}
