//! `harness bench [engine|change-rate|outbox|telemetry]`: refresh time,
//! write latency and write throughput, AUTO against DIFFERENTIAL and FULL
//! across change rates, an outbox's refresh cost and polling throughput,
//! or what exporting refresh spans costs, written to `bench.json` in the
//! run directory.

use crate::tools::bench::{self, BenchConfig, Suite};

use crate::cli::{Common, Failure, Run};

/// Run `harness bench`.
pub fn run(common: &Common, cfg: &BenchConfig) -> Result<(), Failure> {
    let run = Run::begin(common, "bench")?;
    let cluster = run.cluster(
        common,
        vec![
            "shared_buffers = '1GB'".into(),
            "max_wal_size = '4GB'".into(),
            "wal_level = logical".into(),
        ],
    )?;
    let json = match cfg.suite {
        Suite::Engine => {
            let report = bench::run(&cluster, cfg).map_err(Failure::CouldNotRun)?;
            serde_json::to_string_pretty(&report).unwrap_or_default()
        }
        Suite::ChangeRate => {
            let report = bench::change_rate::run(&cluster, cfg).map_err(Failure::CouldNotRun)?;
            serde_json::to_string_pretty(&report).unwrap_or_default()
        }
        Suite::Outbox => {
            let report = bench::outbox::run(&cluster, cfg).map_err(Failure::CouldNotRun)?;
            serde_json::to_string_pretty(&report).unwrap_or_default()
        }
        Suite::Telemetry => {
            let report = bench::telemetry::run(&cluster, cfg).map_err(Failure::CouldNotRun)?;
            serde_json::to_string_pretty(&report).unwrap_or_default()
        }
    };
    println!("{json}");
    let path = run.dir.join("bench.json");
    std::fs::write(&path, json).map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    println!("bench: written to {}", path.display());
    Ok(())
}
