//! `harness sqlancer`: SQLancer light (seeded random schemas, queries and
//! DML through the DIFF-vs-FULL oracle), or with `--external JAR`, the real
//! SQLancer's logged statements through the same oracle.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::checks::sqlancer::{sqlancer_suite, workloads_suite, SqlancerOptions};
use clap::Args;

use crate::cli::{Common, Failure, Run};

/// Options of `harness sqlancer`.
#[derive(Args, Clone)]
pub struct SqlancerArgs {
    /// Session seed (default: chosen from the clock and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Time budget in seconds.
    #[arg(long, default_value_t = 120)]
    pub time: u64,
    /// Most queries (cases) to run.
    #[arg(long, default_value_t = u64::MAX)]
    pub queries: u64,
    /// Number of the first case (with --queries 1, replays one case).
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    /// Fail when fewer (query, step) pairs were checked.
    #[arg(long, default_value_t = 0)]
    pub min_checks: usize,
    /// Fail when more than this percentage of generated queries is rejected by PostgreSQL.
    #[arg(long, default_value_t = 10.0)]
    pub max_rejected_pct: f64,
    /// Percentage of cases whose DML is split over 2 to 4 connections, in
    /// seeded interleavings of their transactions.
    #[arg(long = "concurrent", default_value_t = crate::checks::sqlancer::DEFAULT_CONCURRENT_PCT, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub concurrent_pct: u32,
    /// Run the real SQLancer (a jar; needs `java`) and check the SELECTs it logged.
    #[arg(long)]
    pub external: Option<PathBuf>,
    /// Do not shrink failures.
    #[arg(long)]
    pub no_shrink: bool,
    /// How each case's sources are captured: `trigger` or `wal`.
    #[arg(long, value_parser = crate::checks::oracle::command::parse_capture, default_value = "trigger")]
    pub capture: oracles::workload::Capture,
}

impl SqlancerArgs {
    /// The session options these arguments select.
    pub fn options(&self, common: &Common) -> SqlancerOptions {
        let seed = self.seed.unwrap_or_else(crate::cli::clock_seed);
        SqlancerOptions {
            seed,
            first: self.first,
            time: Duration::from_secs(self.time),
            queries: self.queries,
            min_checks: self.min_checks,
            max_rejected_pct: self.max_rejected_pct,
            concurrent_pct: self.concurrent_pct,
            oracle: crate::checks::oracle::OracleOptions {
                shrink: !self.no_shrink,
                runner: common.runner(),
                capture: self.capture,
                ..Default::default()
            },
        }
    }
}

/// Run `harness sqlancer`.
pub fn run(common: &Common, args: &SqlancerArgs) -> Result<(), Failure> {
    let opts = args.options(common);
    if let Some(jar) = args.external.as_ref().filter(|j| !j.is_file()) {
        return Err(Failure::CouldNotRun(format!(
            "no SQLancer jar at {} (build SQLancer yourself; it is not available from the package registries)",
            jar.display()
        )));
    }
    let run = Run::begin(common, "sqlancer")?;
    let mut cluster = run.cluster(common, crate::checks::oracle::oracle_cluster_settings())?;
    let (suite, counts) = match &args.external {
        None => sqlancer_suite(&cluster, &run.dir, &opts),
        Some(jar) => {
            let workloads = external(&run.dir, jar, &cluster, &opts)?;
            workloads_suite(&cluster, &run.dir, &opts, &workloads)
        }
    };
    let _ = std::fs::write(
        run.dir.join("sqlancer-counts.json"),
        serde_json::to_string_pretty(&counts).unwrap_or_default(),
    );
    run.finish(common, vec![suite], Some(&mut cluster))
}

/// Run the real SQLancer against `cluster` and turn its logs into workloads.
fn external(
    dir: &std::path::Path,
    jar: &std::path::Path,
    cluster: &crate::cluster::Cluster,
    opts: &SqlancerOptions,
) -> Result<Vec<oracles::workload::Workload>, Failure> {
    let work = dir.join("sqlancer");
    std::fs::create_dir_all(&work).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    let args = sqlancer::external::java_args(&sqlancer::external::ExternalRun {
        jar,
        seed: opts.seed,
        seconds: opts.time.as_secs(),
        port: cluster.port,
        user: &cluster.user,
    });
    println!("sqlancer: java {}", args.join(" "));
    let status = Command::new("java")
        .args(&args)
        .current_dir(&work)
        .status()
        .map_err(|e| Failure::CouldNotRun(format!("running java (is a JRE installed?): {e}")))?;
    println!("sqlancer: SQLancer exited with {status}");
    let mut workloads = Vec::new();
    let logs = work.join("logs").join("postgres");
    let entries = std::fs::read_dir(&logs).map_err(|e| {
        Failure::CouldNotRun(format!("SQLancer wrote no logs in {}: {e}", logs.display()))
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with("-cur.log") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
            let log = sqlancer::external::parse_log(&text);
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('-', "_"))
                .unwrap_or_default();
            workloads.extend(sqlancer::external::workloads(
                &log,
                &format!("external_{stem}"),
                200,
            ));
        }
    }
    println!("sqlancer: {} logged queries to check", workloads.len());
    Ok(workloads)
}
