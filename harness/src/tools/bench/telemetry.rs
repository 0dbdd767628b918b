//! `harness bench telemetry`: what exporting refresh spans costs a
//! refresh, and what storing the writer's trace context costs a write,
//! measured on a real cluster in one run.
//!
//! * **Refresh latency** with exporting off, on to a live receiver
//!   (`oteltap`), and on to a dead endpoint (a port nothing listens on):
//!   each round switches the setting (reload), then times single-row
//!   changes and refreshes of one DIFFERENTIAL aggregate; the rounds
//!   cycle through the three so that background load hits each alike.
//!   Figures are p50 and p99 per configuration.
//! * **Write latency** of a single-row INSERT into two identical captured
//!   tables, one whose change buffer keeps the trace context (as every
//!   buffer does) and one whose buffer's default was dropped, interleaved.
//!   The difference is what capturing the trace context costs a write
//!   when no session sets one.

use postgres::Client;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{stats, timed, BenchConfig, Stats};
use crate::cluster::{describe, Cluster};
use crate::otel::{endpoint, free_port, reload_settings, Receiver};

/// Rounds per configuration.
const ROUNDS: usize = 5;

/// The telemetry figures.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryReport {
    /// Source rows.
    pub rows: i64,
    /// Refresh latency, exporting off.
    pub refresh_disabled: Stats,
    /// Refresh latency, exporting to a live receiver.
    pub refresh_live: Stats,
    /// Refresh latency, exporting to a port nothing listens on.
    pub refresh_dead: Stats,
    /// Spans the live receiver got.
    pub spans_received: usize,
    /// Failed export requests to the dead endpoint.
    pub dead_failed_requests: i64,
    /// INSERT latency, buffer keeps the trace context.
    pub insert_with_trace_column: Stats,
    /// INSERT latency, buffer's trace context default dropped.
    pub insert_without_trace_column: Stats,
}

#[derive(Clone, Copy)]
enum Export {
    Off,
    Live,
    Dead,
}

fn configure(db: &mut Client, how: Export, live: &str, dead: &str) -> Result<(), String> {
    let (enabled, url) = match how {
        Export::Off => ("off", live),
        Export::Live => ("on", live),
        Export::Dead => ("on", dead),
    };
    reload_settings(
        db,
        &[
            ("pg_trickle.otel_enabled", enabled.to_string()),
            ("pg_trickle.otel_endpoint", url.to_string()),
        ],
    )
}

/// Run the telemetry benchmark on `cluster` (database `postgres`).
pub fn run(cluster: &Cluster, cfg: &BenchConfig) -> Result<TelemetryReport, String> {
    let mut db: Client = cluster.connect("postgres").map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let e = |err: postgres::Error| describe(&err);
    let rows = cfg.rows.min(100_000);
    println!(
        "bench telemetry: loading {rows} rows in {} groups",
        cfg.groups
    );
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS pg_trickle;
         DROP TABLE IF EXISTS tel_src, tel_a, tel_b CASCADE;
         CREATE TABLE tel_src (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         INSERT INTO tel_src (g, v) SELECT i % {groups}, i % 1000 FROM generate_series(1, {rows}) i;
         CREATE INDEX tel_src_g ON tel_src (g);
         CREATE TABLE tel_a (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         CREATE TABLE tel_b (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         SELECT pgtrickle.create_stream_table('tel_st',
             'SELECT g, count(*) AS n, sum(v) AS total FROM tel_src GROUP BY g', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('tel_a_st', 'SELECT g, count(*) AS n FROM tel_a GROUP BY g', NULL, 'DIFFERENTIAL');
         SELECT pgtrickle.create_stream_table('tel_b_st', 'SELECT g, count(*) AS n FROM tel_b GROUP BY g', NULL, 'DIFFERENTIAL');",
        groups = cfg.groups,
    ))
    .map_err(e)?;
    db.batch_execute("VACUUM ANALYZE tel_src").map_err(e)?;
    let b: i64 = db
        .query_one("SELECT 'tel_b'::regclass::oid::bigint", &[])
        .map_err(e)?
        .get(0);
    db.batch_execute(&format!(
        "ALTER TABLE pgtrickle_changes.changes_{b} ALTER COLUMN traceparent DROP DEFAULT"
    ))
    .map_err(e)?;

    let rx = Receiver::start(0)?;
    let dead = endpoint(free_port());
    let reps = cfg.refresh_reps.max(20);
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for i in 0..3 {
            // Rotate the order each round.
            let how = [Export::Off, Export::Live, Export::Dead][(i + round) % 3];
            let slot = how as usize;
            configure(&mut db, how, &rx.endpoint(), &dead)?;
            for _ in 0..reps {
                let id = rng.gen_range(1..=rows);
                db.batch_execute(&format!("UPDATE tel_src SET v = v + 1 WHERE id = {id}"))
                    .map_err(e)?;
                samples[slot].push(timed(
                    &mut db,
                    "SELECT pgtrickle.refresh_stream_table('tel_st')",
                )?);
            }
        }
        println!("bench telemetry: round {} of {ROUNDS} done", round + 1);
    }
    configure(&mut db, Export::Off, &rx.endpoint(), &dead)?;
    let dead_failed_requests: i64 = db
        .query_one(
            "SELECT failed_requests FROM pgtrickle.telemetry_status()",
            &[],
        )
        .map_err(e)?
        .get(0);
    let spans_received = rx
        .spans()
        .iter()
        .filter(|s| s["name"] == "pg_trickle.refresh")
        .count();

    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..cfg.latency_ops {
        let g = rng.gen_range(0..cfg.groups);
        with.push(timed(
            &mut db,
            &format!("INSERT INTO tel_a (g, v) VALUES ({g}, 1)"),
        )?);
        without.push(timed(
            &mut db,
            &format!("INSERT INTO tel_b (g, v) VALUES ({g}, 1)"),
        )?);
    }
    let [off, live, dead_s] = samples;
    Ok(TelemetryReport {
        rows,
        refresh_disabled: stats(off),
        refresh_live: stats(live),
        refresh_dead: stats(dead_s),
        spans_received,
        dead_failed_requests,
        insert_with_trace_column: stats(with),
        insert_without_trace_column: stats(without),
    })
}
