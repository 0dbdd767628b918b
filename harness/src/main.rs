//! `harness`: pg_trickle's one runner binary.
//!
//! Subcommands start their own PostgreSQL clusters (as the unprivileged
//! `postgres` account when run as root) and drive them as a user would.
//! Exit codes: 0 all checks passed, 1 a check failed, 2 the runner could not run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use harness::cluster::{Cluster, ClusterOptions};
use harness::{bench, cases, demo, diffcheck};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "pg_trickle's runner: real clusters, checks, benchmarks"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// pg_config of the PostgreSQL installation to run against.
    #[arg(long, global = true, default_value = "pg_config")]
    pg_config: PathBuf,
    /// Directory for this run's clusters and artifacts (default: runs/<unix time>).
    #[arg(long, global = true)]
    run_dir: Option<PathBuf>,
    /// Keep clusters after the run even when everything passed.
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Subcommand)]
enum Command {
    /// The PR gate: the scheduler demo and every DIFFERENTIAL operator case.
    Pr {
        /// Seed for every case (default: each case's own seed).
        #[arg(long)]
        seed: Option<u64>,
        /// DML batches per case.
        #[arg(long, default_value_t = diffcheck::DEFAULT_STEPS)]
        steps: usize,
        /// Run only cases whose name contains this text.
        #[arg(long)]
        only: Option<String>,
    },
    /// Show a stream table being kept fresh by the scheduler.
    Demo {
        /// Seed for the changes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rounds of changes.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Measure refresh time, write latency and write throughput.
    Bench(bench::BenchConfig),
}

/// Why the runner stops.
enum Failure {
    Check(String),
    CouldNotRun(String),
}

fn run_dir(common: &Common) -> Result<PathBuf, Failure> {
    let dir = common.run_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("runs").join(secs.to_string())
    });
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::CouldNotRun(format!("creating {}: {e}", dir.display())))?;
    // Clusters live under /tmp so the server account can reach them from any checkout.
    Ok(dir)
}

fn start_cluster(common: &Common, settings: Vec<String>) -> Result<Cluster, Failure> {
    let parent = std::env::temp_dir().join("pg_trickle-runs");
    std::fs::create_dir_all(&parent).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let opts = ClusterOptions {
        pg_config: common.pg_config.clone(),
        settings,
        preload: true,
    };
    let cluster = Cluster::start(&parent, &opts).map_err(|e| {
        Failure::CouldNotRun(format!(
            "could not start PostgreSQL (is pg_trickle installed? run ci/setup.sh): {e}"
        ))
    })?;
    println!(
        "cluster: port {} in {} (log {})",
        cluster.port,
        cluster.dir.display(),
        cluster.log_path().display()
    );
    Ok(cluster)
}

fn pr(
    common: &Common,
    seed: Option<u64>,
    steps: usize,
    only: Option<String>,
) -> Result<(), Failure> {
    let dir = run_dir(common)?;
    let mut cluster = start_cluster(
        common,
        vec!["pg_trickle.scheduler_interval_ms = 200".into()],
    )?;
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut passed = 0usize;
    let mut results = Vec::new();

    let mut db = cluster
        .connect("postgres")
        .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let demo_result = demo::run(&mut db, seed.unwrap_or(1), 3);
    match &demo_result {
        Ok(()) => passed += 1,
        Err(r) => failures.push(format!(
            "scheduler demo: {r}\nreproduce: harness demo --seed {}",
            seed.unwrap_or(1)
        )),
    }
    results.push(serde_json::json!({"check": "scheduler_demo", "passed": demo_result.is_ok()}));

    let selected: Vec<cases::Case> = cases::all()
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    let total = selected.len();
    for (i, case) in selected.iter().enumerate() {
        let case_seed = seed.unwrap_or(case.seed);
        let dbname = format!("pr_{}", case.name);
        let mut db = cluster
            .fresh_database(&dbname)
            .map_err(|e| Failure::CouldNotRun(format!("creating database {dbname}: {e}")))?;
        let t = Instant::now();
        let outcome = diffcheck::run_case(&mut db, case, case_seed, steps);
        let verdict = match &outcome {
            Ok(stats) => {
                passed += 1;
                format!("ok ({} comparisons)", stats.comparisons)
            }
            Err(report) => {
                failures.push(format!(
                    "{report}\nreproduce: harness pr --only {} --seed {case_seed} --steps {steps}",
                    case.name
                ));
                "FAILED".into()
            }
        };
        println!(
            "[{:>2}/{total}] {:<36} {verdict} in {} ms",
            i + 1,
            case.name,
            t.elapsed().as_millis()
        );
        results.push(serde_json::json!({
            "check": case.name, "seed": case_seed, "passed": outcome.is_ok(),
            "comparisons": outcome.as_ref().map(|s| s.comparisons).unwrap_or(0),
            "failure": outcome.err(),
        }));
    }
    let report = serde_json::json!({
        "passed": passed, "failed": failures.len(), "seconds": started.elapsed().as_secs_f64(), "checks": results,
    });
    let report_path = dir.join("report.json");
    std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| Failure::CouldNotRun(format!("writing {}: {e}", report_path.display())))?;
    for f in &failures {
        eprintln!("\n{f}");
    }
    println!(
        "\npr: {} passed, {} failed in {:.1} s; report: {}",
        passed,
        failures.len(),
        started.elapsed().as_secs_f64(),
        report_path.display()
    );
    if common.keep || !failures.is_empty() {
        cluster.keep();
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Check(format!(
            "{} check(s) failed",
            failures.len()
        )))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pr { seed, steps, only } => pr(&cli.common, seed, steps, only),
        Command::Demo { seed, rounds } => {
            start_cluster(&cli.common, vec![]).and_then(|mut cluster| {
                let mut db = cluster
                    .connect("postgres")
                    .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
                let r = demo::run(&mut db, seed, rounds).map_err(Failure::Check);
                if cli.common.keep || r.is_err() {
                    cluster.keep();
                }
                r
            })
        }
        Command::Bench(cfg) => run_dir(&cli.common).and_then(|dir| {
            let cluster = start_cluster(
                &cli.common,
                vec![
                    "shared_buffers = '1GB'".into(),
                    "max_wal_size = '4GB'".into(),
                ],
            )?;
            let report = bench::run(&cluster, &cfg).map_err(Failure::CouldNotRun)?;
            let json = serde_json::to_string_pretty(&report).unwrap_or_default();
            println!("{json}");
            std::fs::write(dir.join("bench.json"), json)
                .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
            println!("bench: written to {}", dir.join("bench.json").display());
            Ok(())
        }),
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
