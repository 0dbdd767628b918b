//! `harness oracle`: the DIFF-vs-FULL oracle over the workload corpus, or
//! with `--negative-control`, the tamperings it must catch.

use std::time::Duration;

use crate::checks::oracle::{corpus_suite, negative_control_suite, OracleOptions};
use clap::Args;
use oracles::corpus;
use oracles::shrink::Limits;
use oracles::workload::Capture;

use crate::cli::{Common, Failure, Run};

/// Options of `harness oracle`.
#[derive(Args, Clone)]
pub struct OracleArgs {
    /// Run only workloads whose name contains this text (repeatable).
    #[arg(long = "workload")]
    pub workloads: Vec<String>,
    /// Seed for every workload (default: each workload's own).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Random DML steps per workload.
    #[arg(long, default_value_t = corpus::DEFAULT_STEPS)]
    pub steps: usize,
    /// Do not shrink failures (replay files then hold the whole failing run).
    #[arg(long)]
    pub no_shrink: bool,
    /// Most seconds spent shrinking one failure.
    #[arg(long, default_value_t = 120)]
    pub shrink_seconds: u64,
    /// Most seconds spent shrinking across the run; later failures keep whole-run replay files.
    #[arg(long, default_value_t = 240)]
    pub shrink_total_seconds: u64,
    /// Tamper with stream tables behind the engine's back; every tampering must be reported.
    #[arg(long)]
    pub negative_control: bool,
    /// List the corpus and exit.
    #[arg(long)]
    pub list: bool,
    /// How the workloads' sources are captured: `trigger`, or `wal`
    /// (after creation every source that can be is switched to capture
    /// from the WAL).
    #[arg(long, value_parser = parse_capture, default_value = "trigger")]
    pub capture: Capture,
}

/// Parse a `--capture` value.
pub fn parse_capture(text: &str) -> Result<Capture, String> {
    match text {
        "trigger" => Ok(Capture::Trigger),
        "wal" => Ok(Capture::Wal),
        other => Err(format!("unknown capture mode {other:?} (trigger or wal)")),
    }
}

impl OracleArgs {
    /// The oracle options these arguments select.
    pub fn options(&self, common: &Common, budget: Option<Duration>) -> OracleOptions {
        OracleOptions {
            seed: self.seed,
            steps: self.steps,
            only: self.workloads.clone(),
            shrink: !self.no_shrink,
            shrink_limits: Limits {
                max_time: Duration::from_secs(self.shrink_seconds),
                ..Limits::default()
            },
            shrink_total: Duration::from_secs(self.shrink_total_seconds),
            budget,
            runner: common.runner(),
            capture: self.capture,
        }
    }
}

/// Run `harness oracle`.
pub fn run(common: &Common, args: &OracleArgs) -> Result<(), Failure> {
    if args.list {
        for e in corpus::entries() {
            println!("{:<44} seed {:>4}  {}", e.name, e.seed, e.about);
        }
        return Ok(());
    }
    let opts = args.options(common, None);
    let unknown: Vec<&String> = args
        .workloads
        .iter()
        .filter(|w| {
            !corpus::entries()
                .iter()
                .any(|e| e.name.contains(w.as_str()))
        })
        .collect();
    if !unknown.is_empty() {
        return Err(Failure::CouldNotRun(format!(
            "no corpus workload matches {unknown:?} (see harness oracle --list)"
        )));
    }
    let run = Run::begin(common, "oracle")?;
    let mut cluster = run.cluster(common, crate::checks::oracle::oracle_cluster_settings())?;
    let suite = if args.negative_control {
        negative_control_suite(&cluster, &run.dir, args.seed, &common.runner())
    } else {
        corpus_suite(&cluster, &run.dir, &opts)
    };
    run.finish(common, vec![suite], Some(&mut cluster))
}
