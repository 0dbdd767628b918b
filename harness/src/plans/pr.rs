//! `harness pr`: the PR gate. Runs, each inside its budget: the scheduler
//! demo, the oracle corpus, the negative control, SQLancer light with a
//! published seed, the TPC-H gate against the hardware profile's baseline,
//! and the upgrade slice the change needs.

use std::time::{Duration, Instant};

use crate::checks::oracle::{corpus_suite, negative_control_suite, OracleOptions};
use crate::checks::sqlancer::{sqlancer_suite, SqlancerOptions};
use crate::report::{CaseReport, Suite};
use clap::Args;
use oracles::outcome::{Outcome, Tally};
use oracles::workload::Capture;

use crate::checks::oracle::command::OracleArgs;
use crate::cli::{Common, Failure, Run};

/// Options of `harness pr`.
#[derive(Args, Clone)]
pub struct PrArgs {
    #[command(flatten)]
    pub oracle: OracleArgs,
    /// Time budget of the oracle corpus, in seconds.
    #[arg(long, default_value_t = 420)]
    pub oracle_budget: u64,
    /// SQLancer-light session seed.
    #[arg(long, default_value_t = PR_SQLANCER_SEED)]
    pub sqlancer_seed: u64,
    /// SQLancer-light time budget, in seconds.
    #[arg(long, default_value_t = 150)]
    pub sqlancer_time: u64,
    /// Percentage of SQLancer-light cases whose DML is split over 2 to 4 connections.
    #[arg(long, default_value_t = crate::checks::sqlancer::DEFAULT_CONCURRENT_PCT, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub sqlancer_concurrent: u32,
    /// SQLancer light must check at least this many (query, step) pairs.
    #[arg(long, default_value_t = 1500)]
    pub sqlancer_min_checks: usize,
    /// Time budget, in seconds, of the second SQLancer-light session, whose
    /// sources are captured from the WAL (0: skip it).
    #[arg(long, default_value_t = 45)]
    pub sqlancer_wal_time: u64,
    /// Base of the change for the upgrade slice (files changed since its merge base).
    #[arg(long, default_value = "origin/main")]
    pub upgrade_base: String,
    /// Skip the upgrade slice.
    #[arg(long)]
    pub no_upgrade: bool,
    /// Baseline profile of the TPC-H gate (baselines/<profile>.json).
    #[arg(long, default_value = "pr-2core")]
    pub tpch_profile: String,
    /// Skip the TPC-H gate.
    #[arg(long)]
    pub no_tpch: bool,
}

/// The PR gate's SQLancer seed: fixed, so the gate is deterministic; the
/// nightly job explores fresh seeds.
pub const PR_SQLANCER_SEED: u64 = 20261125;

/// The corpus workloads the PR gate runs again with their sources captured
/// from the WAL (the nightly job runs the whole corpus both ways): every
/// interleaving and scheduler workload, and the single-connection shapes
/// where the frontier matters most.
pub const PR_WAL_WORKLOADS: &[&str] = &[
    "several_changes_to_one_row",
    "rolled_back_transactions",
    "join_both_sides_change_in_one_step",
    "update_changes_join_key",
    "delete_min_max_with_ties",
    "numeric_avg_scale",
    "truncate_source",
    "discard_then_reinitialise",
    "columns_without_hash",
    "replica_role_writes",
    "late_commit",
    "long_transaction",
    "refresh_inside_transaction",
    "writers_during_refresh",
    "rollback_after_refresh_looked",
    "aborted_subtransactions",
    "two_phase_commit",
    "isolation_levels",
    "readers_at_different_frontiers",
    "scheduler_racing_manual_refresh",
    "scheduler_with_writers",
];

fn demo_suite(cluster: &crate::cluster::Cluster, seed: u64, runner: &str) -> Suite {
    let t = Instant::now();
    let result = cluster
        .connect("postgres")
        .map_err(|e| e.to_string())
        .and_then(|mut db| crate::tools::demo::run(&mut db, seed, 3));
    let outcome = if result.is_ok() {
        Outcome::Pass
    } else {
        Outcome::Mismatch
    };
    let mut tally = Tally::default();
    tally.add(outcome);
    let mut case = CaseReport::new("scheduler_demo", outcome, tally, t.elapsed().as_millis());
    if let Err(e) = result {
        case.message = Some(e.lines().next().unwrap_or("").to_string());
        case.details = Some(e);
        case.reproduce = Some(format!("{runner} demo --seed {seed}"));
    }
    Suite::new("scheduler", vec![case], t.elapsed().as_secs_f64(), None)
}

/// Run `harness pr`.
pub fn run(common: &Common, args: &PrArgs) -> Result<(), Failure> {
    let run = Run::begin(common, "pr")?;
    let mut cluster = run.cluster(common, crate::checks::oracle::oracle_cluster_settings())?;
    let runner = common.runner();
    let mut suites = vec![demo_suite(&cluster, args.oracle.seed.unwrap_or(1), &runner)];
    let opts = args
        .oracle
        .options(common, Some(Duration::from_secs(args.oracle_budget)));
    suites.push(corpus_suite(&cluster, &run.dir, &opts));
    if opts.capture == Capture::Trigger {
        let wal = OracleOptions {
            capture: Capture::Wal,
            only: if opts.only.is_empty() {
                PR_WAL_WORKLOADS.iter().map(|w| w.to_string()).collect()
            } else {
                opts.only.clone()
            },
            ..opts.clone()
        };
        suites.push(corpus_suite(&cluster, &run.dir, &wal));
    }
    suites.push(negative_control_suite(
        &cluster,
        &run.dir,
        args.oracle.seed,
        &runner,
    ));
    let sq = SqlancerOptions {
        seed: args.sqlancer_seed,
        first: 0,
        time: Duration::from_secs(args.sqlancer_time),
        queries: u64::MAX,
        min_checks: args.sqlancer_min_checks,
        max_rejected_pct: 10.0,
        concurrent_pct: args.sqlancer_concurrent,
        oracle: opts.clone(),
    };
    suites.push(sqlancer_suite(&cluster, &run.dir, &sq).0);
    if args.sqlancer_wal_time > 0 && opts.capture == Capture::Trigger {
        let wal = SqlancerOptions {
            seed: PR_SQLANCER_SEED + 1,
            time: Duration::from_secs(args.sqlancer_wal_time),
            min_checks: args.sqlancer_min_checks * args.sqlancer_wal_time as usize
                / args.sqlancer_time.max(1) as usize
                / 2,
            oracle: OracleOptions {
                capture: Capture::Wal,
                ..opts.clone()
            },
            ..sq.clone()
        };
        suites.push(sqlancer_suite(&cluster, &run.dir, &wal).0);
    }
    if !args.no_tpch {
        let path = crate::checks::tpch::command::baseline_path(&args.tpch_profile);
        let base = crate::checks::tpch::gate::read(&path).map_err(|e| {
            Failure::CouldNotRun(format!(
                "the TPC-H gate needs a baseline: {e} (measure one on this hardware with \
                 `harness baseline refresh --profile {}`, or pass --no-tpch)",
                args.tpch_profile
            ))
        })?;
        let opts = crate::checks::tpch::gate::run_options(&base, Vec::new());
        let (t, figures) = crate::checks::tpch::tpch_suite(&cluster, &opts);
        suites.push(t);
        suites.extend(crate::checks::tpch::gate::gate_suites(
            &base,
            &figures,
            &mut |only| {
                crate::checks::tpch::tpch_suite(
                    &cluster,
                    &crate::checks::tpch::TpchOptions {
                        only: only.to_vec(),
                        ..opts.clone()
                    },
                )
            },
        ));
    } else {
        suites.push(Suite::skip("tpch", "--no-tpch given"));
    }
    if !args.no_upgrade {
        // The slice runs its own clusters from a private copy of the
        // installation; this one's work is done, so free the machine.
        let _ = cluster.stop();
        let up = crate::checks::upgrade::command::UpgradeArgs {
            from: Vec::new(),
            slice: true,
            base: args.upgrade_base.clone(),
            root: ".".into(),
        };
        suites.push(crate::checks::upgrade::command::suite(common, &run, &up)?);
    } else {
        suites.push(Suite::skip("upgrade", "--no-upgrade given"));
    }
    run.finish(common, suites, Some(&mut cluster))
}
