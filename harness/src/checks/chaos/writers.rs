//! The background load of a chaos run: writers committing seeded
//! transactions to the chaos sources, and a refresher refreshing the one
//! stream table the scheduler leaves alone, both going on through every
//! fault.
//!
//! A fault breaks their connections (a crash ends every session, and the
//! server refuses connections while it recovers); each thread then
//! reconnects and goes on, so changes keep flowing after the fault too.
//! Everything they see is counted: rows written by committed transactions,
//! transactions whose COMMIT got no answer (in doubt: the oracle's
//! comparison with the sources decides, not this count), failures the
//! scenario expects (by SQLSTATE) and, to fail the run, anything else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Rows of `chaos_orders` the setup writes; writer `w` of `n` owns the
/// ones with `id % n = w`, and inserts ids above `(w + 1) * 10^9`.
pub const SEED_ORDERS: i64 = 20_000;

/// SQLSTATEs every scenario tolerates from the load: lock conflicts the
/// writers make among themselves.
pub const ALWAYS_TOLERATED: &[&str] = &["40001", "40P01"];

/// What the load saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadTally {
    /// Transactions committed.
    pub committed: u64,
    /// Rows inserted, updated or deleted by committed transactions.
    pub rows: u64,
    /// Transactions rolled back on purpose.
    pub rolled_back: u64,
    /// COMMITs whose answer was lost to a fault.
    pub in_doubt: u64,
    /// Refreshes the refresher completed.
    pub refreshes: u64,
    /// Failures the scenario expects, by SQLSTATE (`connection` for a
    /// session a fault ended or a server that was not accepting).
    pub tolerated: BTreeMap<String, u64>,
    /// Any other failure (the first few), which fails the run.
    pub unexpected: Vec<String>,
}

impl LoadTally {
    pub(super) fn add(&mut self, other: LoadTally) {
        self.committed += other.committed;
        self.rows += other.rows;
        self.rolled_back += other.rolled_back;
        self.in_doubt += other.in_doubt;
        self.refreshes += other.refreshes;
        for (k, v) in other.tolerated {
            *self.tolerated.entry(k).or_default() += v;
        }
        for u in other.unexpected {
            if self.unexpected.len() < 5 {
                self.unexpected.push(u);
            }
        }
    }

    fn tolerate(&mut self, what: &str) {
        *self.tolerated.entry(what.to_string()).or_default() += 1;
    }
}

/// How a failed statement is taken.
enum Failed {
    /// The session is gone (a fault): reconnect.
    Connection,
    /// Expected here: counted under its SQLSTATE.
    Tolerated(String),
    /// Anything else.
    Unexpected(String),
}

/// How Citus words the loss of a connection to another node (SQLSTATE
/// XX000): the write's outcome on that node is in doubt, as with 08xxx.
const CITUS_CONNECTION_FAILURES: &[&str] = &[
    "failure on connection marked as essential",
    "connection to the remote node",
    "connection not open",
];

fn citus_connection_failure(e: &postgres::Error) -> bool {
    e.as_db_error()
        .map(|d| {
            CITUS_CONNECTION_FAILURES
                .iter()
                .any(|m| d.message().starts_with(m))
        })
        .unwrap_or(false)
}

fn classify(e: &postgres::Error, tolerated: &[String]) -> Failed {
    if e.is_closed() {
        return Failed::Connection;
    }
    match e.code() {
        // Admin or crash shutdown, cannot connect now, connection failures.
        Some(c) if c.code().starts_with("57P") || c.code().starts_with("08") => Failed::Connection,
        // Citus reports a lost node connection as an internal error.
        Some(c) if c.code() == "XX000" && citus_connection_failure(e) => Failed::Connection,
        Some(c)
            if ALWAYS_TOLERATED.contains(&c.code()) || tolerated.iter().any(|t| t == c.code()) =>
        {
            Failed::Tolerated(c.code().to_string())
        }
        // 25P02: a statement after the failure that ended the transaction.
        Some(c) if c.code() == "25P02" => Failed::Tolerated(c.code().to_string()),
        Some(_) => Failed::Unexpected(crate::cluster::describe(e)),
        // Not a server error and not closed: the socket broke.
        None => Failed::Connection,
    }
}

/// The running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<LoadTally>>,
    /// Backend pid of the refresher's current session (0 while it has none).
    pub refresher_pid: Arc<AtomicI32>,
}

/// What the load does.
#[derive(Clone)]
pub struct LoadOptions {
    /// Connection string of the database.
    pub conninfo: String,
    /// Concurrent writers.
    pub writers: usize,
    /// Seed: writer `w` draws from `case_seed(seed, w)`.
    pub seed: u64,
    /// SQLSTATEs this scenario expects from the load besides lock conflicts.
    pub tolerated: Vec<String>,
    /// The stream table the refresher refreshes (None: no refresher).
    pub refresh: Option<String>,
}

impl Load {
    /// Start the writers and the refresher.
    pub fn start(opts: &LoadOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let refresher_pid = Arc::new(AtomicI32::new(0));
        let mut threads = Vec::new();
        for w in 0..opts.writers {
            let (stop, opts) = (stop.clone(), opts.clone());
            threads.push(std::thread::spawn(move || writer(w, &opts, &stop)));
        }
        if let Some(st) = opts.refresh.clone() {
            let (stop, opts, pid) = (stop.clone(), opts.clone(), refresher_pid.clone());
            threads.push(std::thread::spawn(move || {
                refresher(&st, &opts, &stop, &pid)
            }));
        }
        Load {
            stop,
            threads,
            refresher_pid,
        }
    }

    /// Stop every thread and add up what they saw.
    pub fn stop(self) -> LoadTally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadTally::default();
        for t in self.threads {
            match t.join() {
                Ok(tally) => total.add(tally),
                Err(_) => total.unexpected.push("a load thread panicked".into()),
            }
        }
        total
    }
}

/// Connect, or count the refusal and pause (the server is down or recovering).
pub(super) fn session(conninfo: &str, tally: &mut LoadTally) -> Option<Client> {
    match Client::connect(conninfo, postgres::NoTls) {
        Ok(c) => Some(c),
        Err(_) => {
            tally.tolerate("connection");
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    }
}

/// One transaction of writer `w` of `n`: statements and whether it commits.
fn transaction(rng: &mut ChaCha8Rng, w: i64, n: i64, next_id: &mut i64) -> (Vec<String>, bool) {
    let own_range = |rng: &mut ChaCha8Rng, next_id: i64, width: i64| {
        let lo = if rng.gen_bool(0.7) || next_id == (w + 1) * 1_000_000_000 {
            rng.gen_range(1..=SEED_ORDERS)
        } else {
            rng.gen_range((w + 1) * 1_000_000_000..next_id)
        };
        (lo, lo + rng.gen_range(0..width))
    };
    let mut stmts = Vec::new();
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..100) {
            0..=39 => {
                let k = rng.gen_range(1..=20);
                let salt = rng.gen_range(0..1000);
                stmts.push(format!(
                    "INSERT INTO chaos_orders (id, cust, amount) SELECT g, (g * 31 + {salt}) % 100, \
                     ((g * 17 + {salt}) % 10000) / 100.0 FROM generate_series({}::bigint, {}::bigint) g",
                    *next_id,
                    *next_id + k - 1
                ));
                *next_id += k;
            }
            40..=69 => {
                let (lo, hi) = own_range(rng, *next_id, 60);
                let shift = rng.gen_range(1..100);
                stmts.push(format!(
                    "UPDATE chaos_orders SET amount = amount + 1.25, cust = (cust + {shift}) % 100 \
                     WHERE id BETWEEN {lo} AND {hi} AND id % {n} = {w}"
                ));
            }
            70..=84 => {
                let (lo, hi) = own_range(rng, *next_id, 20);
                stmts.push(format!(
                    "DELETE FROM chaos_orders WHERE id BETWEEN {lo} AND {hi} AND id % {n} = {w}"
                ));
            }
            85..=92 => {
                let c = rng.gen_range(0..100);
                let r = rng.gen_range(0..9);
                stmts.push(format!(
                    "UPDATE chaos_customers SET region = 'r{r}' WHERE id = {c}"
                ));
            }
            _ => {
                let k = rng.gen_range(1..=10);
                let kind = rng.gen_range(0..20);
                stmts.push(format!(
                    "INSERT INTO chaos_events (kind, qty) SELECT {kind}, g FROM generate_series(1, {k}) g"
                ));
            }
        }
    }
    (stmts, rng.gen_range(0..100) >= 5)
}

fn writer(w: usize, opts: &LoadOptions, stop: &AtomicBool) -> LoadTally {
    let mut rng = ChaCha8Rng::seed_from_u64(sqlancer::case::case_seed(opts.seed, w as u64));
    let (wi, n) = (w as i64, opts.writers as i64);
    let mut next_id = (wi + 1) * 1_000_000_000;
    let mut tally = LoadTally::default();
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            client = session(&opts.conninfo, &mut tally);
            continue;
        };
        let (stmts, commit) = transaction(&mut rng, wi, n, &mut next_id);
        let mut rows = 0u64;
        let mut failed = None;
        if let Err(e) = c.batch_execute("BEGIN") {
            failed = Some(e);
        }
        for s in &stmts {
            if failed.is_some() {
                break;
            }
            match c.execute(s.as_str(), &[]) {
                Ok(k) => rows += k,
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            None if !commit => match c.batch_execute("ROLLBACK") {
                Ok(()) => tally.rolled_back += 1,
                Err(e) => note(&e, &opts.tolerated, &mut tally, &mut client, false),
            },
            None => match c.batch_execute("COMMIT") {
                Ok(()) => {
                    tally.committed += 1;
                    tally.rows += rows;
                }
                Err(e) => note(&e, &opts.tolerated, &mut tally, &mut client, true),
            },
            Some(e) => {
                note(&e, &opts.tolerated, &mut tally, &mut client, false);
                if let Some(c) = client.as_mut() {
                    let _ = c.batch_execute("ROLLBACK");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(2..15)));
    }
    tally
}

/// Count a failure; a lost session is dropped so the loop reconnects.
pub(super) fn note(
    e: &postgres::Error,
    tolerated: &[String],
    tally: &mut LoadTally,
    client: &mut Option<Client>,
    at_commit: bool,
) {
    match classify(e, tolerated) {
        Failed::Connection => {
            if at_commit {
                tally.in_doubt += 1;
            }
            tally.tolerate("connection");
            *client = None;
        }
        Failed::Tolerated(code) => tally.tolerate(&code),
        Failed::Unexpected(text) => {
            if tally.unexpected.len() < 5 {
                tally.unexpected.push(text);
            }
        }
    }
}

fn refresher(st: &str, opts: &LoadOptions, stop: &AtomicBool, pid: &AtomicI32) -> LoadTally {
    let mut rng = ChaCha8Rng::seed_from_u64(sqlancer::case::case_seed(opts.seed, 1_000));
    let mut tally = LoadTally::default();
    let mut client: Option<Client> = None;
    let sql = format!("SELECT pgtrickle.refresh_stream_table('{st}')");
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            pid.store(0, Ordering::SeqCst);
            client = session(&opts.conninfo, &mut tally);
            if let Some(c) = client.as_mut() {
                match c.query_one("SELECT pg_backend_pid()", &[]) {
                    Ok(r) => pid.store(r.get(0), Ordering::SeqCst),
                    Err(_) => client = None,
                }
            }
            continue;
        };
        match c.batch_execute(&sql) {
            Ok(()) => tally.refreshes += 1,
            Err(e) => note(&e, &opts.tolerated, &mut tally, &mut client, false),
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..250)));
    }
    pid.store(0, Ordering::SeqCst);
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writers_transactions_touch_only_its_own_orders() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut next = 3_000_000_000;
        for _ in 0..200 {
            let (stmts, _) = transaction(&mut rng, 2, 4, &mut next);
            for s in stmts {
                if s.starts_with("UPDATE chaos_orders") || s.starts_with("DELETE") {
                    assert!(s.ends_with("AND id % 4 = 2"), "{s}");
                }
                if s.starts_with("INSERT INTO chaos_orders") {
                    assert!(s.contains("generate_series(3"), "{s}");
                }
            }
        }
        assert!(next > 3_000_000_000);
    }

    #[test]
    fn the_same_seed_makes_the_same_transactions() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut next = 1_000_000_000;
            (0..20)
                .map(|_| transaction(&mut rng, 0, 3, &mut next))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
