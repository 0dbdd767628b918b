//! Benchmarks for the engine's headline figures, measured on a real cluster:
//!
//! * refresh time for a single-row change to a GROUP BY aggregate over
//!   1,000,000 rows, DIFFERENTIAL vs FULL (with and without an index on the
//!   group key);
//! * the server time of a single-row INSERT and UPDATE (a server-side
//!   loop, so no round trip or commit blurs a few microseconds), whose
//!   difference between a captured and a plain table is capture's cost;
//! * single-row INSERT and UPDATE latency on that source with no stream
//!   table over it, with one captured by triggers, and with one captured
//!   from the WAL (three copies of the table, measured in interleaved
//!   rounds so that background load hits each alike);
//! * throughput of 4 concurrent writers, the same three ways;
//! * DIFFERENTIAL refresh from a new connection (cold start);
//! * one `INSERT ... SELECT` of a million rows with and without capture.
//!
//! Figures are medians over repeated runs, printed and returned as JSON.
//! They are measurements, not gates. The cluster runs with
//! `wal_level = logical` for all three, and its scheduler decodes the
//! WAL-captured table's slot while the writers write, as in production.

pub mod change_rate;
pub mod command;
pub mod outbox;
pub mod telemetry;

use std::time::{Duration, Instant};

use postgres::Client;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::{describe, Cluster};

/// Benchmark parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// Which benchmark: `engine` (refresh, write latency and throughput),
    /// `change-rate` (AUTO against DIFFERENTIAL and FULL from 0.01% to 20%
    /// of the rows changed), `outbox` (an outbox's refresh cost and polling
    /// throughput) or `telemetry` (refresh latency with span export off,
    /// live and dead).
    #[arg(value_enum, default_value = "engine")]
    pub suite: Suite,
    /// Rows in the source table.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: i64,
    /// Distinct groups.
    #[arg(long, default_value_t = 1000)]
    pub groups: i64,
    /// Refresh repetitions per figure.
    #[arg(long, default_value_t = 15)]
    pub refresh_reps: usize,
    /// Single-row statements per latency figure.
    #[arg(long, default_value_t = 2000)]
    pub latency_ops: usize,
    /// Seconds per throughput figure.
    #[arg(long, default_value_t = 10)]
    pub throughput_secs: u64,
    /// Rows one `INSERT ... SELECT` writes for the bulk-insert figure.
    #[arg(long, default_value_t = 1_000_000)]
    pub bulk_rows: i64,
    /// Messages the outbox benchmark's consumers drain.
    #[arg(long, default_value_t = 2000)]
    pub outbox_messages: i64,
    /// Seed for the random row choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The benchmarks `harness bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Refresh time, write latency and write throughput.
    Engine,
    /// AUTO's refresh time against the cheaper of DIFFERENTIAL and FULL,
    /// at five change rates.
    ChangeRate,
    /// An outbox's refresh cost and four consumers' polling throughput.
    Outbox,
    /// Refresh latency with span export off, to a live receiver and to a
    /// dead endpoint; what keeping the trace context costs a write.
    Telemetry,
}

/// Summary statistics of a list of durations, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Minimum.
    pub min_ms: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        n: samples.len(),
        p50_ms: pick(0.5),
        p90_ms: pick(0.9),
        p99_ms: pick(0.99),
        min_ms: ms(samples[0]),
    }
}

/// All figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Source rows.
    pub rows: i64,
    /// Groups.
    pub groups: i64,
    /// DIFFERENTIAL refresh after one updated row, no index on the group key.
    pub diff_refresh_noindex: Stats,
    /// FULL refresh, no index on the group key.
    pub full_refresh_noindex: Stats,
    /// DIFFERENTIAL refresh after one updated row, with an index on the group key.
    pub diff_refresh_indexed: Stats,
    /// The same, each refresh from a new connection (no statement kept).
    pub diff_refresh_new_connection: Stats,
    /// FULL refresh, with an index on the group key.
    pub full_refresh_indexed: Stats,
    /// Single-row INSERT latency without a stream table.
    pub insert_plain: Stats,
    /// Single-row INSERT latency with a stream table (capture).
    pub insert_captured: Stats,
    /// Single-row UPDATE latency without a stream table.
    pub update_plain: Stats,
    /// Single-row UPDATE latency with a stream table (capture).
    pub update_captured: Stats,
    /// Server time of single-row statements, no stream table.
    pub server_plain: ServerTimes,
    /// The same with a stream table (trigger capture).
    pub server_captured: ServerTimes,
    /// The same with a stream table captured from the WAL.
    pub server_wal: ServerTimes,
    /// What trigger capture adds per changed row (UPDATE), microseconds.
    pub capture_cost_update_us: f64,
    /// What trigger capture adds per changed row (INSERT), microseconds.
    pub capture_cost_insert_us: f64,
    /// Statements per second, 4 writers, no stream table.
    pub throughput_plain: f64,
    /// Statements per second, 4 writers, with a stream table.
    pub throughput_captured: f64,
    /// Single-row INSERT latency with a stream table captured from the WAL.
    pub insert_wal: Stats,
    /// Single-row UPDATE latency with a stream table captured from the WAL.
    pub update_wal: Stats,
    /// Statements per second, 4 writers, with a stream table captured from the WAL.
    pub throughput_wal: f64,
    /// One `INSERT ... SELECT` of `bulk_rows` rows into an empty table.
    pub bulk_insert_plain: Stats,
    /// The same with a stream table over the table (trigger capture).
    pub bulk_insert_captured: Stats,
}

/// Rounds the latency and throughput figures are interleaved over.
const ROUNDS: usize = 3;
/// Rounds the server-time figures are interleaved over.
const SERVER_ROUNDS: usize = 7;

/// Server time of single-row statements, median over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ServerTimes {
    /// One single-row UPDATE, microseconds.
    pub update_us: f64,
    /// One single-row INSERT, microseconds.
    pub insert_us: f64,
}

/// Create the extension and `table` (`id`, group `g`, value `v`) with
/// `cfg.rows` rows in `cfg.groups` groups, run `extra` (an index, say),
/// then vacuum and analyse it.
fn load_grouped_source(
    db: &mut Client,
    table: &str,
    cfg: &BenchConfig,
    extra: &str,
) -> Result<(), String> {
    let e = |err: postgres::Error| describe(&err);
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS pg_trickle;
         DROP TABLE IF EXISTS {table} CASCADE;
         CREATE TABLE {table} (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         INSERT INTO {table} (g, v) SELECT i % {groups}, i % 1000 FROM generate_series(1, {rows}) i;
         {extra}",
        groups = cfg.groups,
        rows = cfg.rows
    ))
    .map_err(e)?;
    db.batch_execute(&format!("VACUUM ANALYZE {table}"))
        .map_err(e)
}

fn timed(db: &mut Client, sql: &str) -> Result<Duration, String> {
    let start = Instant::now();
    db.batch_execute(sql)
        .map_err(|e| format!("{sql}: {}", describe(&e)))?;
    Ok(start.elapsed())
}

fn refresh_times(
    db: &mut Client,
    st: &str,
    rng: &mut ChaCha8Rng,
    cfg: &BenchConfig,
) -> Result<Stats, String> {
    sampled(cfg.refresh_reps, || change_and_refresh(db, st, rng, cfg))
}

/// `reps` timings of `one`, summarised.
fn sampled(
    reps: usize,
    mut one: impl FnMut() -> Result<Duration, String>,
) -> Result<Stats, String> {
    let samples = (0..reps).map(|_| one()).collect::<Result<Vec<_>, _>>()?;
    Ok(stats(samples))
}

/// Update one random row of `bench_src`, then time a refresh of `st`.
fn change_and_refresh(
    db: &mut Client,
    st: &str,
    rng: &mut ChaCha8Rng,
    cfg: &BenchConfig,
) -> Result<Duration, String> {
    let id = rng.gen_range(1..=cfg.rows);
    db.batch_execute(&format!("UPDATE bench_src SET v = v + 1 WHERE id = {id}"))
        .map_err(|e| describe(&e))?;
    timed(
        db,
        &format!("SELECT pgtrickle.refresh_stream_table('{st}')"),
    )
}

/// DIFFERENTIAL refreshes of `st` after one updated row, each from a new
/// connection: what a backend pays before it has kept anything.
fn new_connection_refresh_times(
    cluster: &Cluster,
    st: &str,
    rng: &mut ChaCha8Rng,
    cfg: &BenchConfig,
) -> Result<Stats, String> {
    sampled(cfg.refresh_reps, || {
        let mut db = cluster.connect("postgres").map_err(|e| e.to_string())?;
        change_and_refresh(&mut db, st, rng, cfg)
    })
}

/// One `INSERT ... SELECT` of `cfg.bulk_rows` rows into an empty table
/// without and then with a stream table over it (trigger capture), in
/// interleaved rounds, each round on fresh tables. Returns (plain, captured).
fn bulk_insert_times(db: &mut Client, cfg: &BenchConfig) -> Result<(Stats, Stats), String> {
    let e = |err: postgres::Error| describe(&err);
    let (mut plain, mut captured) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        db.batch_execute(
            "CREATE TABLE bulk_plain (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
             CREATE TABLE bulk_src (LIKE bulk_plain INCLUDING ALL);",
        )
        .map_err(e)?;
        db.execute(
            "SELECT pgtrickle.create_stream_table('bulk_st', $1, NULL, 'DIFFERENTIAL')",
            &[&"SELECT g, count(*) AS n, sum(v) AS total FROM bulk_src GROUP BY g"],
        )
        .map_err(e)?;
        let insert = |t: &str| {
            format!(
                "INSERT INTO {t} (g, v) SELECT i % {groups}, i % 1000 FROM generate_series(1, {n}) i",
                groups = cfg.groups,
                n = cfg.bulk_rows
            )
        };
        plain.push(timed(db, &insert("bulk_plain"))?);
        captured.push(timed(db, &insert("bulk_src"))?);
        db.batch_execute(
            "SELECT pgtrickle.drop_stream_table('bulk_st'); DROP TABLE bulk_plain, bulk_src;",
        )
        .map_err(e)?;
    }
    Ok((stats(plain), stats(captured)))
}

/// Server time of one single-row UPDATE and one single-row INSERT on
/// `table`, in microseconds: `ops` statements of each run in a PL/pgSQL
/// loop (one plan, no client round trip, no commit), timed by the server.
/// The capture cost of a changed row is the difference between a captured
/// table's figure and the plain table's, measured in the same round.
fn server_time_round(
    db: &mut Client,
    table: &str,
    ops: usize,
    round: usize,
    cfg: &BenchConfig,
) -> Result<(f64, f64), String> {
    let row = db
        .query_one(
            &format!("SELECT bench_loop_{table}($1, $2, $3)::text"),
            &[&(ops as i32), &cfg.rows, &((round as i64) * 104_729)],
        )
        .map_err(|e| describe(&e))?;
    let text: String = row.get(0);
    let parse = |v: &str| v.trim().parse::<f64>().map_err(|e| format!("{text}: {e}"));
    let (u, i) = text
        .trim_matches(|c| c == '(' || c == ')')
        .split_once(',')
        .ok_or_else(|| format!("bench_loop_{table} returned {text}"))?;
    Ok((parse(u)?, parse(i)?))
}

/// The per-table PL/pgSQL loops [`server_time_round`] calls: static
/// statements, so each keeps one cached plan as an application's would.
fn create_server_time_loops(db: &mut Client, tables: &[&str]) -> Result<(), String> {
    for t in tables {
        db.batch_execute(&format!(
            "CREATE OR REPLACE FUNCTION bench_loop_{t}(n int, nrows bigint, salt bigint, \
               OUT update_us float8, OUT insert_us float8) LANGUAGE plpgsql AS $b$ \
             DECLARE s timestamptz; BEGIN \
               s := clock_timestamp(); \
               FOR i IN 1..n LOOP UPDATE {t} SET v = v + 1 WHERE id = 1 + (i * 7919 + salt) % nrows; END LOOP; \
               update_us := extract(epoch FROM clock_timestamp() - s) * 1e6 / n; \
               s := clock_timestamp(); \
               FOR i IN 1..n LOOP INSERT INTO {t} (g, v) VALUES (i % 1000, 1); END LOOP; \
               insert_us := extract(epoch FROM clock_timestamp() - s) * 1e6 / n; \
             END $b$"
        ))
        .map_err(|e| describe(&e))?;
    }
    Ok(())
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One round of single-row INSERT and UPDATE timings on `table`,
/// appended to `inserts` and `updates`.
fn latency_round(
    db: &mut Client,
    table: &str,
    rng: &mut ChaCha8Rng,
    cfg: &BenchConfig,
    (inserts, updates): &mut (Vec<Duration>, Vec<Duration>),
) -> Result<(), String> {
    for _ in 0..cfg.latency_ops.div_ceil(ROUNDS) {
        let g = rng.gen_range(0..cfg.groups);
        inserts.push(timed(
            db,
            &format!("INSERT INTO {table} (g, v) VALUES ({g}, 1)"),
        )?);
        let id = rng.gen_range(1..=cfg.rows);
        updates.push(timed(
            db,
            &format!("UPDATE {table} SET v = v + 1 WHERE id = {id}"),
        )?);
    }
    Ok(())
}

/// Statements 4 writers complete on `table` in `secs` seconds.
fn throughput(cluster: &Cluster, table: &str, cfg: &BenchConfig, secs: f64) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..4u64)
        .map(|w| {
            let conninfo = cluster.conninfo("postgres");
            let table = table.to_string();
            let rows = cfg.rows;
            let seed = cfg.seed + w;
            std::thread::spawn(move || -> Result<u64, String> {
                let mut db = postgres::Client::connect(&conninfo, postgres::NoTls)
                    .map_err(|e| describe(&e))?;
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut ops = 0;
                while Instant::now() < deadline {
                    let id = rng.gen_range(1..=rows);
                    db.batch_execute(&format!("UPDATE {table} SET v = v + 1 WHERE id = {id}"))
                        .map_err(|e| describe(&e))?;
                    ops += 1;
                }
                Ok(ops)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| "writer thread panicked".to_string())??;
    }
    Ok(total)
}

/// Run every benchmark on `cluster` (database `postgres`), printing progress.
pub fn run(cluster: &Cluster, cfg: &BenchConfig) -> Result<BenchReport, String> {
    let mut db = cluster.connect("postgres").map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let e = |err: postgres::Error| describe(&err);
    println!(
        "bench: loading {} rows in {} groups (twice: captured and plain)",
        cfg.rows, cfg.groups
    );
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS pg_trickle;
         DROP TABLE IF EXISTS bench_src, bench_plain CASCADE;
         CREATE TABLE bench_src (id bigserial PRIMARY KEY, g int NOT NULL, v int NOT NULL);
         INSERT INTO bench_src (g, v) SELECT i % {groups}, i % 1000 FROM generate_series(1, {rows}) i;
         CREATE TABLE bench_plain (LIKE bench_src INCLUDING ALL);
         INSERT INTO bench_plain SELECT * FROM bench_src;
         SELECT setval(pg_get_serial_sequence('bench_plain', 'id'), {rows});
         DROP TABLE IF EXISTS bench_wal CASCADE;
         CREATE TABLE bench_wal (LIKE bench_src INCLUDING ALL);
         INSERT INTO bench_wal SELECT * FROM bench_src;
         SELECT setval(pg_get_serial_sequence('bench_wal', 'id'), {rows});",
        groups = cfg.groups,
        rows = cfg.rows
    ))
    .map_err(e)?;
    for t in ["bench_src", "bench_plain", "bench_wal"] {
        db.batch_execute(&format!("VACUUM ANALYZE {t}"))
            .map_err(e)?;
    }
    let q = "SELECT g, count(*) AS n, sum(v) AS total, avg(v) AS mean FROM bench_src GROUP BY g";
    db.execute(
        "SELECT pgtrickle.create_stream_table('bench_diff', $1, NULL, 'DIFFERENTIAL')",
        &[&q],
    )
    .map_err(e)?;
    db.execute(
        "SELECT pgtrickle.create_stream_table('bench_full', $1, NULL, 'FULL')",
        &[&q],
    )
    .map_err(e)?;

    println!("bench: refresh after a single-row change, no index on the group key");
    let diff_refresh_noindex = refresh_times(&mut db, "bench_diff", &mut rng, cfg)?;
    let full_refresh_noindex = refresh_times(&mut db, "bench_full", &mut rng, cfg)?;
    db.batch_execute("CREATE INDEX bench_src_g ON bench_src (g); ANALYZE bench_src")
        .map_err(e)?;
    println!("bench: refresh after a single-row change, index on the group key");
    let diff_refresh_indexed = refresh_times(&mut db, "bench_diff", &mut rng, cfg)?;
    let full_refresh_indexed = refresh_times(&mut db, "bench_full", &mut rng, cfg)?;
    db.batch_execute("DROP INDEX bench_src_g").map_err(e)?;
    println!("bench: refresh after a single-row change, each from a new connection");
    let diff_refresh_new_connection =
        new_connection_refresh_times(cluster, "bench_diff", &mut rng, cfg)?;

    let q_wal = q.replace("bench_src", "bench_wal");
    db.execute(
        "SELECT pgtrickle.create_stream_table('bench_wal_diff', $1, NULL, 'DIFFERENTIAL')",
        &[&q_wal],
    )
    .map_err(e)?;
    db.batch_execute("SELECT pgtrickle.set_capture_mode('bench_wal', 'wal')")
        .map_err(e)?;

    // Plain, trigger capture and WAL capture, interleaved round by round.
    let tables = ["bench_plain", "bench_src", "bench_wal"];
    println!(
        "bench: single-row write latency ({} of each, in {ROUNDS} interleaved rounds: no capture, trigger, WAL)",
        cfg.latency_ops
    );
    let mut timings: Vec<(Vec<Duration>, Vec<Duration>)> = vec![Default::default(); 3];
    for _ in 0..ROUNDS {
        for (t, times) in tables.iter().zip(timings.iter_mut()) {
            latency_round(&mut db, t, &mut rng, cfg, times)?;
        }
    }
    println!(
        "bench: server time of single-row UPDATE and INSERT ({SERVER_ROUNDS} interleaved rounds of {} each)",
        cfg.latency_ops
    );
    create_server_time_loops(&mut db, &tables)?;
    let mut server: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); 3];
    for round in 0..SERVER_ROUNDS {
        for (t, (u, i)) in tables.iter().zip(server.iter_mut()) {
            let (update_us, insert_us) =
                server_time_round(&mut db, t, cfg.latency_ops, round, cfg)?;
            u.push(update_us);
            i.push(insert_us);
        }
    }
    let mut server = server.into_iter().map(|(u, i)| ServerTimes {
        update_us: median(u),
        insert_us: median(i),
    });
    let mut next_server = || server.next().ok_or("no server time figure");
    let (server_plain, server_captured, server_wal) =
        (next_server()?, next_server()?, next_server()?);
    let mut latencies = timings.into_iter().map(|(i, u)| (stats(i), stats(u)));
    let mut next = || latencies.next().ok_or("no latency figure");
    let (insert_plain, update_plain) = next()?;
    let (insert_captured, update_captured) = next()?;
    let (insert_wal, update_wal) = next()?;

    println!(
        "bench: 4 concurrent writers, {} s each way (in {ROUNDS} interleaved rounds)",
        cfg.throughput_secs
    );
    let mut ops = [0u64; 3];
    let slice = cfg.throughput_secs as f64 / ROUNDS as f64;
    for _ in 0..ROUNDS {
        for (t, n) in tables.iter().zip(ops.iter_mut()) {
            *n += throughput(cluster, t, cfg, slice)?;
        }
    }
    let per_second = |n: u64| n as f64 / cfg.throughput_secs as f64;
    let (throughput_plain, throughput_captured, throughput_wal) =
        (per_second(ops[0]), per_second(ops[1]), per_second(ops[2]));
    println!(
        "bench: INSERT ... SELECT of {} rows into an empty table, without and with capture ({ROUNDS} rounds)",
        cfg.bulk_rows
    );
    let (bulk_insert_plain, bulk_insert_captured) = bulk_insert_times(&mut db, cfg)?;
    db.batch_execute(
        "SELECT pgtrickle.drain_wal_capture();          SELECT pgtrickle.refresh_stream_table('bench_diff');          SELECT pgtrickle.refresh_stream_table('bench_wal_diff');",
    )
    .map_err(e)?;
    for (st, query) in [("bench_diff", q.to_string()), ("bench_wal_diff", q_wal)] {
        if let Some(m) = oracles::compare::differences(&mut db, st, &query).map_err(e)? {
            return Err(format!("{st} is wrong after the benchmark: {m}"));
        }
    }
    Ok(BenchReport {
        rows: cfg.rows,
        groups: cfg.groups,
        diff_refresh_noindex,
        full_refresh_noindex,
        diff_refresh_indexed,
        full_refresh_indexed,
        diff_refresh_new_connection,
        insert_plain,
        insert_captured,
        update_plain,
        update_captured,
        capture_cost_update_us: server_captured.update_us - server_plain.update_us,
        capture_cost_insert_us: server_captured.insert_us - server_plain.insert_us,
        server_plain,
        server_captured,
        server_wal,
        throughput_plain,
        throughput_captured,
        insert_wal,
        update_wal,
        throughput_wal,
        bulk_insert_plain,
        bulk_insert_captured,
    })
}
