//! `harness bench outbox`: what an outbox costs a refresh, and how fast
//! four consumers drain one, measured on a real cluster.
//!
//! * **Refresh cost.** Two stream tables over one source, one with an
//!   outbox: each round changes one random row (one group of each stream
//!   table changes) and refreshes both, in alternating order, so that
//!   background load hits both alike. The figure is the ratio of the
//!   medians, with both distributions.
//! * **Polling throughput.** One message per refresh is published, then
//!   four consumer threads of one group poll, commit and poll again until
//!   the outbox is drained, for batch sizes 1 and 10 (a group each, over
//!   the same messages). Every message must be delivered exactly once, or
//!   the run fails.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use postgres::Client;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{load_grouped_source, stats, timed, BenchConfig, Stats};
use crate::cluster::{describe, Cluster};

/// Consumers draining the outbox at once.
pub const CONSUMERS: usize = 4;

/// The outbox figures.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxReport {
    /// Source rows.
    pub rows: i64,
    /// Groups.
    pub groups: i64,
    /// Refresh of the stream table without an outbox, one changed row.
    pub refresh_plain: Stats,
    /// Refresh of the same stream table with an outbox.
    pub refresh_outbox: Stats,
    /// Median with outbox over median without.
    pub refresh_ratio: f64,
    /// Median extra time an outbox adds to a refresh, in milliseconds.
    pub refresh_extra_ms: f64,
    /// Messages drained.
    pub messages: i64,
    /// Messages per second, four consumers, one message per poll.
    pub poll_batch1_msgs_per_s: f64,
    /// Messages per second, four consumers, ten messages per poll.
    pub poll_batch10_msgs_per_s: f64,
}

fn drain(cluster: &Cluster, group: &str, batch: i32, expected: i64) -> Result<f64, String> {
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let start = Instant::now();
    let workers: Vec<_> = (0..CONSUMERS)
        .map(|w| {
            let seen = seen.clone();
            let mut c = cluster.connect("postgres").map_err(|e| e.to_string());
            let group = group.to_string();
            std::thread::spawn(move || -> Result<(), String> {
                let c = c.as_mut().map_err(|e| e.clone())?;
                let worker = format!("w{w}");
                loop {
                    let rows = c
                        .query(
                            "SELECT delivery, message FROM pgtrickle.poll_outbox('bench_outbox', $1, $2, 60, $3)",
                            &[&group, &batch, &worker],
                        )
                        .map_err(|e| describe(&e))?;
                    let Some(first) = rows.first() else {
                        return Ok(());
                    };
                    let delivery: i64 = first.get(0);
                    seen.lock()
                        .expect("no worker panicked")
                        .extend(rows.iter().map(|r| r.get::<_, i64>(1)));
                    c.execute(
                        "SELECT pgtrickle.commit_offset('bench_outbox', $1, $2, $3)",
                        &[&group, &delivery, &worker],
                    )
                    .map_err(|e| describe(&e))?;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a consumer panicked".to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    let seen = seen.lock().expect("workers are done").clone();
    let distinct: BTreeSet<i64> = seen.iter().copied().collect();
    if seen.len() as i64 != expected || distinct.len() as i64 != expected {
        return Err(format!(
            "group {group}: {} deliveries of {} distinct messages, expected each of {expected} once",
            seen.len(),
            distinct.len()
        ));
    }
    Ok(expected as f64 / secs)
}

/// Run the outbox benchmark on `cluster` (database `postgres`).
pub fn run(cluster: &Cluster, cfg: &BenchConfig) -> Result<OutboxReport, String> {
    let mut db: Client = cluster.connect("postgres").map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let e = |err: postgres::Error| describe(&err);
    println!(
        "bench outbox: loading {} rows in {} groups",
        cfg.rows, cfg.groups
    );
    load_grouped_source(
        &mut db,
        "ob_src",
        cfg,
        "CREATE INDEX ob_src_g ON ob_src (g);",
    )?;
    let q = "SELECT g, count(*) AS n, sum(v) AS total FROM ob_src GROUP BY g";
    for st in ["bench_plain_st", "bench_outbox"] {
        db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, 'DIFFERENTIAL')",
            &[&st, &q],
        )
        .map_err(e)?;
    }
    db.batch_execute("SELECT pgtrickle.enable_outbox('bench_outbox')")
        .map_err(e)?;
    // Warm both backends' statement caches.
    for st in ["bench_plain_st", "bench_outbox"] {
        db.execute("SELECT pgtrickle.refresh_stream_table($1)", &[&st])
            .map_err(e)?;
    }

    let reps = cfg.refresh_reps.max(5) * 4;
    println!("bench outbox: {reps} single-row changes, each refreshed with and without an outbox (alternating order)");
    let (mut plain, mut outbox) = (Vec::new(), Vec::new());
    for i in 0..reps {
        let id = rng.gen_range(1..=cfg.rows);
        db.batch_execute(&format!("UPDATE ob_src SET v = v + 1 WHERE id = {id}"))
            .map_err(e)?;
        let order: [&str; 2] = if i % 2 == 0 {
            ["bench_plain_st", "bench_outbox"]
        } else {
            ["bench_outbox", "bench_plain_st"]
        };
        for st in order {
            let t = timed(
                &mut db,
                &format!("SELECT pgtrickle.refresh_stream_table('{st}')"),
            )?;
            if st == "bench_outbox" {
                outbox.push(t);
            } else {
                plain.push(t);
            }
        }
    }
    let refresh_plain = stats(plain);
    let refresh_outbox = stats(outbox);

    let messages: i64 = db
        .query_one(
            "SELECT head FROM pgtrickle.outbox_status() WHERE stream_table = 'public.bench_outbox' LIMIT 1",
            &[],
        )
        .map_err(e)?
        .get(0);
    if messages != reps as i64 {
        return Err(format!(
            "the outbox holds {messages} messages after {reps} refreshes that each changed the stream table"
        ));
    }
    let target = cfg.outbox_messages.max(messages);
    println!("bench outbox: publishing up to {target} messages (one refresh each)");
    for _ in messages..target {
        let id = rng.gen_range(1..=cfg.rows);
        db.batch_execute(&format!(
            "UPDATE ob_src SET v = v + 1 WHERE id = {id}; SELECT pgtrickle.refresh_stream_table('bench_outbox')"
        ))
        .map_err(e)?;
    }
    let messages = target;
    db.batch_execute(
        "SELECT pgtrickle.create_consumer_group('bench_outbox', 'batch1', 1);
         SELECT pgtrickle.create_consumer_group('bench_outbox', 'batch10', 1);",
    )
    .map_err(e)?;
    println!("bench outbox: {CONSUMERS} consumers drain {messages} messages, one per poll");
    let poll_batch1_msgs_per_s = drain(cluster, "batch1", 1, messages)?;
    println!("bench outbox: {CONSUMERS} consumers drain {messages} messages, ten per poll");
    let poll_batch10_msgs_per_s = drain(cluster, "batch10", 10, messages)?;
    Ok(OutboxReport {
        rows: cfg.rows,
        groups: cfg.groups,
        refresh_ratio: refresh_outbox.p50_ms / refresh_plain.p50_ms,
        refresh_extra_ms: refresh_outbox.p50_ms - refresh_plain.p50_ms,
        refresh_plain,
        refresh_outbox,
        messages,
        poll_batch1_msgs_per_s,
        poll_batch10_msgs_per_s,
    })
}
