//! What every subcommand shares: global options, the run directory, the
//! cluster it starts, and how a finished report becomes an exit status.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cluster::{Cluster, ClusterOptions};
use crate::report::{self, Report, Suite};
use clap::Args;

/// Options every subcommand takes.
#[derive(Args, Clone)]
pub struct Common {
    /// pg_config of the PostgreSQL installation to run against (default: the one on PATH).
    #[arg(long, global = true, default_value = "pg_config")]
    pub pg_config: PathBuf,
    /// Directory for this run's reports, logs and replay files (default: runs/<unix time>).
    #[arg(long, global = true)]
    pub run_dir: Option<PathBuf>,
    /// Keep clusters after the run even when everything passed.
    #[arg(long, global = true)]
    pub keep: bool,
}

impl Common {
    /// The runner as invoked, with the global options that change what
    /// runs, for reproduce commands.
    pub fn runner(&self) -> String {
        let program = std::env::args().next().unwrap_or_else(|| "harness".into());
        if self.pg_config == Path::new("pg_config") {
            program
        } else {
            format!("{program} --pg-config {}", self.pg_config.display())
        }
    }
}

/// A seed from the clock (seconds since the epoch), for runs not given one.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

/// Why the runner stops.
pub enum Failure {
    /// A check failed (exit 1).
    Check(String),
    /// The runner could not run (exit 2).
    CouldNotRun(String),
}

/// A run in progress: its directory, start time and the cluster it owns.
pub struct Run {
    /// Subcommand name.
    pub command: String,
    /// Where reports go.
    pub dir: PathBuf,
    /// When it started.
    pub started: Instant,
    started_unix: u64,
}

impl Run {
    /// Create the run directory and say where it is.
    pub fn begin(common: &Common, command: &str) -> Result<Run, Failure> {
        let dir = report::run_dir(common.run_dir.as_deref())
            .map_err(|e| Failure::CouldNotRun(format!("creating the run directory: {e}")))?;
        println!("{command}: run directory {}", dir.display());
        Ok(Run {
            command: command.into(),
            dir,
            started: Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }

    /// Start a single-node cluster for this run; its log is copied into
    /// `<run dir>/logs/` when it stops.
    pub fn cluster(&self, common: &Common, settings: Vec<String>) -> Result<Cluster, Failure> {
        // Clusters live under the temporary directory so the server account
        // can reach them from any checkout; logs come back to the run directory.
        let run_name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let parent = std::env::temp_dir().join("pg_trickle-runs").join(run_name);
        std::fs::create_dir_all(&parent).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
        let opts = ClusterOptions {
            pg_config: common.pg_config.clone(),
            settings,
            name: "node".into(),
            log_dir: Some(self.dir.join("logs")),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start(&parent, &opts).map_err(|e| {
            Failure::CouldNotRun(format!(
                "could not start PostgreSQL (is pg_trickle installed? run ci/setup.sh): {e}"
            ))
        })?;
        println!(
            "{}: cluster on port {} in {} (server log copied to {} at the end)",
            self.command,
            cluster.port,
            cluster.dir.display(),
            self.dir.join("logs").display()
        );
        Ok(cluster)
    }

    /// Write the reports, print the summary and failure details, keep the
    /// cluster when something failed, and turn the verdict into an exit status.
    pub fn finish(
        self,
        common: &Common,
        suites: Vec<Suite>,
        cluster: Option<&mut Cluster>,
    ) -> Result<(), Failure> {
        let report = Report {
            command: self.command.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_unix: self.started_unix,
            seconds: self.started.elapsed().as_secs_f64(),
            run_dir: self.dir.clone(),
            suites,
        };
        for case in report
            .suites
            .iter()
            .flat_map(|s| &s.cases)
            .filter(|c| c.failed())
        {
            eprintln!(
                "\n=== FAILED {} ({}): {}",
                case.name,
                case.outcome.name(),
                case.message.as_deref().unwrap_or("")
            );
            if let Some(d) = &case.details {
                eprintln!("{}", d.trim_end());
            }
            for f in &case.replay_files {
                eprintln!("replay file: {}", f.display());
            }
            if let Some(cmd) = &case.reproduce {
                eprintln!("reproduce: {cmd}");
            }
        }
        let written = report.write();
        print!("{}", report.summary());
        if let Err(e) = written {
            return Err(Failure::CouldNotRun(format!(
                "writing reports into {}: {e}",
                self.dir.display()
            )));
        }
        if let Some(c) = cluster {
            if common.keep || !report.passed() {
                c.keep();
            }
        }
        if report.passed() {
            Ok(())
        } else {
            let cases = report.cases();
            Err(Failure::Check(format!(
                "{} of {} cases failed",
                cases.failed(),
                cases.total()
            )))
        }
    }
}
