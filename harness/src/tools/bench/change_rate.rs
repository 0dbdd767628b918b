//! `harness bench change-rate`: what AUTO's adaptive choice costs against
//! the cheaper of DIFFERENTIAL and FULL, across change rates.
//!
//! Three stream tables with the same `GROUP BY` query over one source, one
//! DIFFERENTIAL, one FULL and one AUTO, consume the same changes: each
//! round updates a seeded random share of the source's rows (0.01%, 0.1%,
//! 1%, 5% and 20%, in that order, so that AUTO learns as it would in
//! production), then refreshes the three in an order that rotates from
//! round to round, timing each. The figure per rate is each one's median
//! and AUTO's median over the cheaper of the other two; AUTO's choices
//! and its last recorded reason are reported with it.
//!
//! A fourth stream table, refreshed last in every round and not timed,
//! consumes the changes too: the buffer rows are pruned by its refresh, so
//! none of the three timed ones pays for pruning (which costs the same
//! whichever mode runs) depending on where it falls in the order. Between
//! rounds the source and its change buffer are vacuumed, outside the
//! timings.

use postgres::Client;
use serde::Serialize;

use super::{load_grouped_source, stats, timed, BenchConfig, Stats};
use crate::cluster::{describe, Cluster};

/// The change rates measured, as fractions of the source's rows.
pub const RATES: [f64; 5] = [0.0001, 0.001, 0.01, 0.05, 0.2];
/// Rounds per rate: a multiple of three, so that each stream table is
/// refreshed first, second and third equally often; more where a refresh
/// takes a few milliseconds and a median of six would be noise.
fn rounds(rate: f64) -> usize {
    if rate <= 0.001 {
        30
    } else {
        6
    }
}

/// The figures for one change rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateFigures {
    /// Fraction of the source's rows updated before each refresh.
    pub rate: f64,
    /// Rows updated per round (mean).
    pub changes: f64,
    /// The DIFFERENTIAL stream table's refresh.
    pub diff: Stats,
    /// The FULL stream table's refresh.
    pub full: Stats,
    /// The AUTO stream table's refresh.
    pub auto: Stats,
    /// What AUTO ran, round by round.
    pub auto_modes: Vec<String>,
    /// The reason AUTO recorded in the last round, if any.
    pub auto_last_reason: Option<String>,
    /// AUTO's median over the smaller of the DIFFERENTIAL and FULL medians.
    pub auto_over_cheaper: f64,
}

/// The change-rate sweep.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRateReport {
    /// Source rows.
    pub rows: i64,
    /// Groups.
    pub groups: i64,
    /// One entry per rate, in [`RATES`] order.
    pub rates: Vec<RateFigures>,
    /// The largest `auto_over_cheaper` of the sweep (the goal is 1.1).
    pub worst_auto_over_cheaper: f64,
}

const TABLES: [&str; 3] = ["rate_diff", "rate_full", "rate_auto"];
/// The untimed stream table whose refresh prunes each round's changes.
const PRUNER: &str = "rate_pruner";

/// Run the sweep on `cluster` (database `postgres`).
pub fn run(cluster: &Cluster, cfg: &BenchConfig) -> Result<ChangeRateReport, String> {
    let mut db: Client = cluster.connect("postgres").map_err(|e| e.to_string())?;
    let e = |err: postgres::Error| describe(&err);
    println!(
        "bench change-rate: loading {} rows in {} groups",
        cfg.rows, cfg.groups
    );
    load_grouped_source(&mut db, "bench_src", cfg, "")?;
    let q = "SELECT g, count(*) AS n, sum(v) AS total, avg(v) AS mean FROM bench_src GROUP BY g";
    let modes = ["DIFFERENTIAL", "FULL", "AUTO", "DIFFERENTIAL"];
    for (st, mode) in TABLES.iter().chain([&PRUNER]).zip(modes) {
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, $3)",
            &[st, &q, &mode],
        )
        .map_err(e)?;
    }
    let buffer: String = db
        .query_one(
            "SELECT buffer_name FROM pgtrickle.pgt_change_buffers \
             WHERE source_relid = 'bench_src'::regclass",
            &[],
        )
        .map_err(e)?
        .get(0);
    let mut rates = Vec::new();
    for (i, rate) in RATES.iter().enumerate() {
        let mut times: [Vec<std::time::Duration>; 3] = Default::default();
        let (mut modes, mut last_reason, mut changed) = (Vec::new(), None, 0u64);
        let rounds = rounds(*rate);
        for round in 0..rounds {
            // setseed takes a value in [-1, 1]; one per (seed, rate, round).
            let seed = ((cfg.seed as f64 * 7919.0 + (i * 100 + round) as f64) % 1000.0) / 1000.0;
            db.batch_execute(&format!("SELECT setseed({seed})"))
                .map_err(e)?;
            changed += db
                .execute(
                    "UPDATE bench_src SET v = v + 1 WHERE random() < $1",
                    &[rate],
                )
                .map_err(e)?;
            for k in 0..TABLES.len() {
                let t = (round + k) % TABLES.len();
                let sql = format!("SELECT pgtrickle.refresh_stream_table('{}')", TABLES[t]);
                times[t].push(timed(&mut db, &sql)?);
            }
            let last = oracles::engine_api::last_refresh(&mut db, "rate_auto")
                .map_err(e)?
                .ok_or("rate_auto has no refresh recorded")?;
            modes.push(last.ran.to_string());
            last_reason = last.reason;
            db.batch_execute(&format!(
                "SELECT pgtrickle.refresh_stream_table('{PRUNER}')"
            ))
            .map_err(e)?;
            for t in ["bench_src", buffer.as_str()] {
                db.batch_execute(&format!("VACUUM {t}")).map_err(e)?;
            }
        }
        let [diff, full, auto] = times.map(stats);
        let auto_over_cheaper = auto.p50_ms / diff.p50_ms.min(full.p50_ms);
        println!(
            "bench change-rate: {:>6.2}% of the rows: DIFFERENTIAL {:.1} ms, FULL {:.1} ms, AUTO {:.1} ms ({:.2}x the cheaper; ran {})",
            rate * 100.0,
            diff.p50_ms,
            full.p50_ms,
            auto.p50_ms,
            auto_over_cheaper,
            modes.join(", ")
        );
        rates.push(RateFigures {
            rate: *rate,
            changes: changed as f64 / rounds as f64,
            diff,
            full,
            auto,
            auto_modes: modes,
            auto_last_reason: last_reason,
            auto_over_cheaper,
        });
    }
    for st in TABLES.into_iter().chain([PRUNER]) {
        if let Some(m) = oracles::compare::differences(&mut db, st, q).map_err(e)? {
            return Err(format!("{st} is wrong after the sweep: {m}"));
        }
    }
    let worst_auto_over_cheaper = rates
        .iter()
        .map(|r| r.auto_over_cheaper)
        .fold(0.0, f64::max);
    Ok(ChangeRateReport {
        rows: cfg.rows,
        groups: cfg.groups,
        rates,
        worst_auto_over_cheaper,
    })
}
