//! `harness`: pg_trickle's one runner binary.
//!
//! Subcommands start their own PostgreSQL clusters (as the unprivileged
//! `postgres` account when run as root) and drive them as a user would.
//! Each lives in its own file under `cmd/` with its own clap struct.
//! Exit codes: 0 all checks passed, 1 a check failed, 2 the runner could not run.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cmd::{Common, Failure};

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
    Pr(cmd::pr::PrArgs),
    /// The DIFF-vs-FULL oracle over the workload corpus (or the negative control).
    Oracle(cmd::oracle::OracleArgs),
    /// Run a saved workload (a failure's .workload.json, e.g. a shrunk interleaving) through the oracle again.
    Replay(cmd::replay::ReplayArgs),
    /// The long job: the corpus under several seeds, then SQLancer sessions with fresh seeds.
    Nightly(cmd::nightly::NightlyArgs),
    /// SQLancer light: seeded random schemas, queries and DML through the oracle.
    Sqlancer(cmd::sqlancer::SqlancerArgs),
    /// Write docs/CONFIGURATION.md from the settings table (or --check it).
    Docs(cmd::docs::DocsArgs),
    /// Baselines for the TPC-H gate, measured on this machine.
    #[command(subcommand)]
    Baseline(cmd::baseline::BaselineCommand),
    /// TPC-H through the DIFF-vs-FULL oracle, with per-query modes and refresh times (at SF 1 also against the published answers).
    Tpch(cmd::tpch::TpchArgs),
    /// The upgrade matrix: old versions built from source, upgraded, checked.
    Upgrade(cmd::upgrade::UpgradeArgs),
    /// Check that every place naming the extension version agrees.
    Versions(cmd::versions::VersionsArgs),
    /// Show a stream table being kept fresh by the scheduler.
    Demo(cmd::demo::DemoArgs),
    /// Measure refresh time, write latency and write throughput.
    Bench(harness::bench::BenchConfig),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    harness::cluster::install_interrupt_handler();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Pr(args) => cmd::pr::run(&cli.common, args),
        Command::Oracle(args) => cmd::oracle::run(&cli.common, args),
        Command::Nightly(args) => cmd::nightly::run(&cli.common, args),
        Command::Replay(args) => cmd::replay::run(&cli.common, args),
        Command::Sqlancer(args) => cmd::sqlancer::run(&cli.common, args),
        Command::Demo(args) => cmd::demo::run(&cli.common, args),
        Command::Docs(args) => cmd::docs::run(args),
        Command::Versions(args) => cmd::versions::run(args),
        Command::Upgrade(args) => cmd::upgrade::run(&cli.common, args),
        Command::Tpch(args) => cmd::tpch::run(&cli.common, args),
        Command::Baseline(c) => cmd::baseline::run(&cli.common, c),
        Command::Bench(cfg) => cmd::bench::run(&cli.common, cfg),
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
