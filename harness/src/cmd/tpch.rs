//! `harness tpch`: TPC-H at a scale factor through the DIFF-vs-FULL oracle,
//! with per-query EXPLAIN artifacts; at SF 1 each stream table is first
//! checked against the answer `tpchgen` publishes for its query; with
//! `--gate`, judged against a baseline measured on the same hardware
//! (`harness baseline refresh`).

use std::path::PathBuf;

use clap::Args;
use harness::tpch_gate;
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
    let run = Run::begin(common, "tpch")?;
    let mut cluster = run.cluster(
        common,
        vec!["pg_trickle.scheduler_interval_ms = 600000".into()],
    )?;
    let base = if args.gate {
        Some(tpch_gate::read(&baseline_path(&args.profile)).map_err(|e| {
            Failure::CouldNotRun(format!(
                "{e} (measure one with `harness baseline refresh --profile {}`)",
                args.profile
            ))
        })?)
    } else {
        None
    };
    let opts = match &base {
        Some(b) => b.run_options(injection(args.inject.as_deref())?),
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
    let (mut suite, figures) = tpch_suite(&cluster, &opts);
    write_artifacts(&run.dir, &figures).map_err(Failure::CouldNotRun)?;
    println!("\n{}", table(&figures));
    suite.plot = figures
        .iter()
        .map(|f| {
            (
                f.query.clone(),
                vec![
                    ("DIFF statement p50".to_string(), f.diff_p50_ms),
                    ("FULL recompute p50".to_string(), f.full_p50_ms),
                    ("refresh wall p50".to_string(), f.p50_ms),
                ],
            )
        })
        .collect();
    suite.plot_unit = "ms".into();
    let mut suites = vec![suite];
    if let Some(b) = &base {
        suites.extend(tpch_gate::gate_suites(b, &figures, &mut |only| {
            tpch_suite(
                &cluster,
                &TpchOptions {
                    only: only.to_vec(),
                    ..opts.clone()
                },
            )
        }));
    }
    run.finish(common, suites, Some(&mut cluster))
}

/// The per-query table: mode, FULL ms and DIFF ms (server execution,
/// EXPLAIN ANALYZE), their ratio, the refresh wall time, temp blocks.
pub fn table(figures: &[harness::tpch_suite::QueryFigures]) -> String {
    let mut out = format!(
        "{:<5} {:<13} {:>9} {:>9} {:>7} {:>11} {:>7}  fallback reason\n",
        "query", "mode", "FULL ms", "DIFF ms", "ratio", "refresh ms", "temp"
    );
    for f in figures {
        let (diff, ratio) = if f.diff_p50_ms > 0.0 {
            (
                format!("{:.1}", f.diff_p50_ms),
                format!("{:.1}x", f.full_p50_ms / f.diff_p50_ms),
            )
        } else {
            ("-".to_string(), "-".to_string())
        };
        let ms = |v: f64| {
            if v.is_finite() {
                format!("{v:.1}")
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "{:<5} {:<13} {:>9} {:>9} {:>7} {:>11} {:>7}  {}\n",
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

/// `tpch/<query>.json` per query (figures and the last EXPLAIN of every
/// phase) and `tpch/summary.json` in the run directory.
fn write_artifacts(
    dir: &std::path::Path,
    figures: &[harness::tpch_suite::QueryFigures],
) -> Result<(), String> {
    let out = dir.join("tpch");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
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
                "diff_p50_ms": f.diff_p50_ms,
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
