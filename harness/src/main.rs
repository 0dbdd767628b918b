//! `harness`: pg_trickle's one runner binary.
//!
//! Subcommands start their own PostgreSQL clusters (as the unprivileged
//! `postgres` account when run as root) and drive them as a user would.
//! Each check's subcommand lives in its folder under `checks/` (the PR and
//! nightly jobs under `plans/`, the rest under `tools/`), with its own clap
//! struct; this file only parses and dispatches.
//! Exit codes: 0 all checks passed, 1 a check failed, 2 the runner could not run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use harness::checks::{chaos, fuzz, oracle, sqlancer, tpch, upgrade, versions};
use harness::cli::{Common, Failure};
use harness::plans::{nightly, pr};
use harness::tools::{bench, demo, docs};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "pg_trickle's runner: real clusters, oracles, reports, benchmarks"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The PR gate: scheduler demo, the oracle corpus, the negative control.
    Pr(pr::PrArgs),
    /// The DIFF-vs-FULL oracle over the workload corpus (or the negative control).
    Oracle(oracle::command::OracleArgs),
    /// Run a saved workload (a failure's .workload.json, e.g. a shrunk interleaving) through the oracle again.
    Replay(oracle::replay::ReplayArgs),
    /// The long job: the corpus under several seeds, then SQLancer sessions with fresh seeds.
    Nightly(nightly::NightlyArgs),
    /// SQLancer light: seeded random schemas, queries and DML through the oracle.
    Sqlancer(sqlancer::command::SqlancerArgs),
    /// Write docs/CONFIGURATION.md from the settings table (or --check it).
    Docs(docs::command::DocsArgs),
    /// Baselines for the TPC-H gate, measured on this machine.
    #[command(subcommand)]
    Baseline(tpch::baseline::BaselineCommand),
    /// TPC-H through the DIFF-vs-FULL oracle, with per-query modes and refresh times (at SF 1 also against the published answers).
    Tpch(tpch::command::TpchArgs),
    /// The upgrade matrix: old versions built from source, upgraded, checked.
    Upgrade(upgrade::command::UpgradeArgs),
    /// The fuzz targets of fuzz/, each for a bounded time (needs cargo-fuzz and nightly).
    Fuzz(fuzz::command::FuzzArgs),
    /// Check that every place naming the extension version agrees.
    Versions(versions::command::VersionsArgs),
    /// Show a stream table being kept fresh by the scheduler.
    Demo(demo::command::DemoArgs),
    /// Measure refresh time, write latency and write throughput.
    Bench(bench::BenchConfig),
    /// Faults under concurrent writers and the scheduler (kill -9, immediate shutdown, crashes during DDL, cancels, lock timeouts, a full disk), each run checked by the oracle.
    Chaos(chaos::command::ChaosArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    harness::cluster::install_interrupt_handler();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Pr(args) => pr::run(&cli.common, args),
        Command::Oracle(args) => oracle::command::run(&cli.common, args),
        Command::Nightly(args) => nightly::run(&cli.common, args),
        Command::Replay(args) => oracle::replay::run(&cli.common, args),
        Command::Sqlancer(args) => sqlancer::command::run(&cli.common, args),
        Command::Demo(args) => demo::command::run(&cli.common, args),
        Command::Docs(args) => docs::command::run(args),
        Command::Versions(args) => versions::command::run(args),
        Command::Fuzz(args) => fuzz::command::run(&cli.common, args),
        Command::Upgrade(args) => upgrade::command::run(&cli.common, args),
        Command::Tpch(args) => tpch::command::run(&cli.common, args),
        Command::Baseline(c) => tpch::baseline::run(&cli.common, c),
        Command::Bench(cfg) => bench::command::run(&cli.common, cfg),
        Command::Chaos(args) => chaos::command::run(&cli.common, args),
    };
    match result {
        Ok(()) => ExitCode::from(0),
        Err(Failure::Check(msg)) => {
            eprintln!("harness: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::CouldNotRun(msg)) => {
            eprintln!("harness: could not run: {msg}");
            ExitCode::from(2)
        }
    }
}
