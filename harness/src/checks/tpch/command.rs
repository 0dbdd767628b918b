//! `harness tpch`: TPC-H at a scale factor through the DIFF-vs-FULL oracle,
//! with per-query EXPLAIN artifacts; at SF 1 each stream table is first
//! checked against the answer `tpchgen` publishes for its query; with
//! `--gate`, judged against a baseline measured on the same hardware
//! (`harness baseline refresh`).

use std::path::PathBuf;

use crate::checks::tpch::gate;
use crate::checks::tpch::{tpch_suite, TpchOptions};
use clap::Args;

use crate::cli::{Common, Failure, Run};

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
    /// Judge the run against `baselines/<profile>.json` (scale factor,
    /// cycles, seed and queries come from the baseline).
    #[arg(long)]
    pub gate: bool,
    /// Baseline profile for `--gate`.
    #[arg(long, default_value = "pr-2core")]
    pub profile: String,
    /// Inject a regression to prove the gate: `nested-loops` (no hash or
    /// merge joins) or `no-index-scans`.
    #[arg(long)]
    pub inject: Option<String>,
    /// Keep every core busy with a CPU hog the runner starts and stops
    /// around each measured run: `on`, `off`, or `alternate` (quiet runs
    /// and runs under the hog, one after the other, quiet first).
    #[arg(long, value_enum, default_value_t = Hog::Off)]
    pub hog: Hog,
    /// Measure (and with `--gate`, judge) this many runs in a row: the
    /// gate's load test (`--gate --repeat 20 --hog alternate`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeat: u64,
}

/// When runs are measured under a CPU hog.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hog {
    /// Never.
    Off,
    /// Always.
    On,
    /// Every second run (the first runs quiet).
    Alternate,
}

impl Hog {
    /// Whether run `i` (from 1) is measured under the hog.
    pub fn applies_to(self, i: u64) -> bool {
        match self {
            Hog::Off => false,
            Hog::On => true,
            Hog::Alternate => i.is_multiple_of(2),
        }
    }
}

/// Session settings for an injected regression.
pub fn injection(name: Option<&str>) -> Result<Vec<String>, Failure> {
    Ok(match name {
        None => Vec::new(),
        Some("nested-loops") => vec![
            "enable_hashjoin = off".into(),
            "enable_mergejoin = off".into(),
        ],
        Some("no-index-scans") => vec![
            "enable_indexscan = off".into(),
            "enable_bitmapscan = off".into(),
            "enable_indexonlyscan = off".into(),
        ],
        Some(other) => {
            return Err(Failure::CouldNotRun(format!(
                "unknown injection {other}: use nested-loops or no-index-scans"
            )))
        }
    })
}

/// Where a profile's baseline lives.
pub fn baseline_path(profile: &str) -> PathBuf {
    PathBuf::from("baselines").join(format!("{profile}.json"))
}

/// Run `harness tpch`.
pub fn run(common: &Common, args: &TpchArgs) -> Result<(), Failure> {
    // A name that is no query would narrow the run to nothing, and an
    // empty run proves nothing.
    let known: Vec<String> = tpch::queries::queries(args.sf)
        .into_iter()
        .map(|q| q.name.to_string())
        .collect();
    if let Some(unknown) = args.queries.iter().find(|q| !known.contains(q)) {
        return Err(Failure::CouldNotRun(format!(
            "--query {unknown} names no TPC-H query (they are q01 ... q22)"
        )));
    }
    let run = Run::begin(common, "tpch")?;
    let mut cluster = run.cluster(
        common,
        vec!["pg_trickle.scheduler_interval_ms = 600000".into()],
    )?;
    let base = if args.gate {
        let mut b = gate::read(&baseline_path(&args.profile)).map_err(|e| {
            Failure::CouldNotRun(format!(
                "{e} (measure one with `harness baseline refresh --profile {}`)",
                args.profile
            ))
        })?;
        // `--query` narrows the gate to those of the baseline's queries.
        if !args.queries.is_empty() {
            b.queries.retain(|q, _| args.queries.contains(q));
        }
        Some(b)
    } else {
        None
    };
    let opts = match &base {
        Some(b) => {
            let o = gate::run_options(b, injection(args.inject.as_deref())?);
            if o.only.is_empty() {
                return Err(Failure::CouldNotRun(format!(
                    "none of {:?} is in the baseline {}",
                    args.queries, b.profile
                )));
            }
            o
        }
        None => TpchOptions {
            sf: args.sf,
            cycles: args.cycles,
            fraction: args.fraction,
            seed: args.seed,
            only: args.queries.clone(),
            settings: injection(args.inject.as_deref())?,
            database: "tpch".into(),
        },
    };
    let mut suites = Vec::new();
    let mut outcomes: Vec<(u64, bool, Vec<String>)> = Vec::new();
    for i in 1..=args.repeat {
        let loaded = args.hog.applies_to(i);
        let label = match (args.repeat, loaded) {
            (1, false) => String::new(),
            (1, true) => " (under a CPU hog)".to_string(),
            (_, false) => format!(" (run {i}, quiet)"),
            (_, true) => format!(" (run {i}, under a CPU hog)"),
        };
        if args.repeat > 1 {
            println!("tpch: run {i} of {}{label}", args.repeat);
        }
        let hog = loaded.then(|| crate::load::CpuHog::start(0));
        if let Some(h) = &hog {
            println!("tpch: CPU hog of {} busy threads started", h.threads());
        }
        let (mut suite, figures) = tpch_suite(&cluster, &opts);
        let dir = if args.repeat == 1 {
            run.dir.join("tpch")
        } else {
            run.dir.join("tpch").join(format!("run-{i}"))
        };
        write_artifacts(&dir, &figures).map_err(Failure::CouldNotRun)?;
        println!("\n{}", table(&figures));
        suite.plot = plot(&figures);
        suite.plot_unit = "ms".into();
        suite.name.push_str(&label);
        let mut run_suites = vec![suite];
        if let Some(b) = &base {
            run_suites.extend(gate::gate_suites(b, &figures, &mut |only| {
                tpch_suite(
                    &cluster,
                    &TpchOptions {
                        only: only.to_vec(),
                        ..opts.clone()
                    },
                )
            }));
        }
        if let Some(h) = hog {
            let rounds = h.stop();
            if rounds.contains(&0) {
                return Err(Failure::CouldNotRun(
                    "the CPU hog did not run: the load test measured nothing under load".into(),
                ));
            }
        }
        let failed: Vec<String> = run_suites
            .iter()
            .flat_map(|s| &s.cases)
            .filter(|c| c.outcome != oracles::outcome::Outcome::Pass)
            .map(|c| c.name.clone())
            .collect();
        outcomes.push((i, loaded, failed));
        for s in &mut run_suites[1..] {
            s.name.push_str(&label);
        }
        suites.extend(run_suites);
    }
    if args.repeat > 1 {
        println!("\n{}", load_test_summary(&outcomes));
    }
    run.finish(common, suites, Some(&mut cluster))
}

/// Bars per query: the DIFF statement (DIFFERENTIAL stream tables only),
/// the FULL recompute and the refresh wall time, ms.
fn plot(figures: &[crate::checks::tpch::QueryFigures]) -> Vec<(String, Vec<(String, f64)>)> {
    figures
        .iter()
        .map(|f| {
            let mut bars = Vec::new();
            if f.ratio_p50.is_some() {
                bars.push(("DIFF statement p50".to_string(), f.diff_p50_ms));
            }
            bars.push(("FULL recompute p50".to_string(), f.full_p50_ms));
            bars.push(("refresh wall p50".to_string(), f.p50_ms));
            (format!("{} ({})", f.query, f.mode), bars)
        })
        .collect()
}

/// What a repeated run (the load test) found: runs, how many under load,
/// and each run that failed with the cases it failed.
pub fn load_test_summary(outcomes: &[(u64, bool, Vec<String>)]) -> String {
    let loaded = outcomes.iter().filter(|o| o.1).count();
    let failed: Vec<&(u64, bool, Vec<String>)> =
        outcomes.iter().filter(|o| !o.2.is_empty()).collect();
    let mut out = format!(
        "load test: {} runs ({} under a CPU hog, {} quiet): {} failed (under the hog: {}, quiet: {})\n",
        outcomes.len(),
        loaded,
        outcomes.len() - loaded,
        failed.len(),
        failed.iter().filter(|o| o.1).count(),
        failed.iter().filter(|o| !o.1).count(),
    );
    for (i, loaded, cases) in failed {
        out.push_str(&format!(
            "  run {i} ({}): {}\n",
            if *loaded { "under the hog" } else { "quiet" },
            cases.join(", ")
        ));
    }
    out
}

/// The per-query table: mode, FULL ms and DIFF ms (server execution,
/// EXPLAIN ANALYZE, medians of the interleaved pairs), the median DIFF/FULL
/// ratio of those pairs, the refresh wall time, temp blocks.
pub fn table(figures: &[crate::checks::tpch::QueryFigures]) -> String {
    let mut out = format!(
        "{:<5} {:<13} {:>9} {:>9} {:>9} {:>11} {:>7}  fallback reason\n",
        "query", "mode", "FULL ms", "DIFF ms", "DIFF/FULL", "refresh ms", "temp"
    );
    for f in figures {
        let (diff, ratio) = match f.ratio_p50 {
            Some(r) => (format!("{:.1}", f.diff_p50_ms), format!("{r:.3}")),
            None => ("-".to_string(), "-".to_string()),
        };
        let ms = |v: f64| {
            if v.is_finite() {
                format!("{v:.1}")
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "{:<5} {:<13} {:>9} {:>9} {:>9} {:>11} {:>7}  {}\n",
            f.query,
            f.mode,
            ms(f.full_p50_ms),
            diff,
            ratio,
            ms(f.p50_ms),
            f.temp_blocks,
            f.fallback_reason.as_deref().unwrap_or("")
        ));
    }
    out
}

/// `<query>.json` per query (figures and the last EXPLAIN of every phase)
/// and `summary.json` in `out` (`tpch/` of the run directory, or
/// `tpch/run-<i>/` for repeated runs).
fn write_artifacts(
    out: &std::path::Path,
    figures: &[crate::checks::tpch::QueryFigures],
) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    for f in figures {
        let mut v = serde_json::to_value(f).unwrap_or_default();
        v["last_plans"] = serde_json::Value::Object(
            f.last_plans
                .iter()
                .map(|(phase, plan)| (phase.clone(), plan.clone()))
                .collect(),
        );
        std::fs::write(
            out.join(format!("{}.json", f.query)),
            serde_json::to_string_pretty(&v).unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
    }
    let summary: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            serde_json::json!({
                "query": f.query, "mode": f.mode, "fallback_reason": f.fallback_reason,
                "refresh_p50_ms": f.p50_ms, "refresh_p99_ms": f.p99_ms, "full_p50_ms": f.full_p50_ms,
                "diff_p50_ms": f.diff_p50_ms, "ratio_p50": f.ratio_p50,
                "temp_blocks": f.temp_blocks,
                "phases": f.phases,
            })
        })
        .collect();
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("tpch: artifacts in {}", out.display());
    Ok(())
}
