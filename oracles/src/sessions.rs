//! The connections of a concurrent workload, each driven by its own thread.
//!
//! A statement that waits for a lock must not stop the workload: the
//! transaction holding the lock is usually released by a later statement of
//! another connection. So every connection runs in a thread of its own and
//! the runner only submits statements and collects results. After every
//! submission it lets the connections *settle*: it waits until each one is
//! either idle or waiting for a lock held by another of the workload's
//! connections (or by a prepared transaction, which only a later statement
//! finishes). Which statements wait is decided by the lock state alone, so
//! an interleaving runs the same way every time.
//!
//! A connection that waits keeps the statements submitted to it after that
//! in a queue, in order. When the runner itself must go on (its refresh on
//! connection 0, or the end of the workload) and every connection is
//! settled with statements still queued, the wait can only end by a
//! statement that is queued behind it: the runner then cancels the waiting
//! statement of the lowest such connection, as a `lock_timeout` would, and
//! says so in the trace.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::workload::Isolation;

/// The most time one statement may run without waiting on a lock.
const BUSY_LIMIT: Duration = Duration::from_secs(120);
/// Consecutive polls that must agree before the connections count as settled.
const SETTLED_POLLS: u32 = 3;

/// A finished statement.
#[derive(Debug)]
pub struct Done {
    /// The submission number [`Sessions::submit`] returned.
    pub id: u64,
    /// The connection that ran it.
    pub conn: usize,
    /// The statement.
    pub sql: String,
    /// Its result.
    pub result: Result<(), postgres::Error>,
    /// Whether the runner cancelled it to break a stall.
    pub cancelled_by_runner: bool,
}

struct Worker {
    pid: i32,
    jobs: Option<Sender<String>>,
    thread: Option<JoinHandle<()>>,
    running: Option<(u64, String)>,
    queue: VecDeque<(u64, String)>,
    cancelled: bool,
}

/// Why the connections could not settle.
#[derive(Debug, Clone)]
pub struct Stuck {
    /// What was seen.
    pub detail: String,
}

/// The connections 0..=N of one concurrent workload.
pub struct Sessions {
    workers: Vec<Worker>,
    next_id: u64,
    results: Receiver<(usize, Result<(), postgres::Error>)>,
}

/// The libpq connection string of the database `db` is connected to, as
/// the same user over the same TCP address.
fn conninfo_of(db: &mut Client) -> Result<String, String> {
    let row = db
        .query_one(
            "SELECT host(inet_server_addr()), inet_server_port(), current_user::text, current_database()::text",
            &[],
        )
        .map_err(|e| crate::diff_vs_full::describe(&e))?;
    let host: Option<String> = row.get(0);
    let port: Option<i32> = row.get(1);
    let (Some(host), Some(port)) = (host, port) else {
        return Err(
            "a concurrent workload opens more connections like the runner's, which needs a TCP connection (this one is a Unix socket)".into(),
        );
    };
    let user: String = row.get(2);
    let dbname: String = row.get(3);
    Ok(format!(
        "host={host} port={port} user={user} dbname={dbname} connect_timeout=10 application_name=pgt_oracle"
    ))
}

impl Sessions {
    /// Open connection 0 (READ COMMITTED) and one connection per entry of
    /// `levels`, to the database `db` is connected to.
    pub fn open(db: &mut Client, levels: &[Isolation]) -> Result<Sessions, String> {
        let conninfo = conninfo_of(db)?;
        let (done_tx, results) = channel();
        let mut workers = Vec::new();
        let all: Vec<Isolation> = std::iter::once(Isolation::ReadCommitted)
            .chain(levels.iter().copied())
            .collect();
        for (conn, level) in all.into_iter().enumerate() {
            let mut client = Client::connect(&conninfo, postgres::NoTls)
                .map_err(|e| format!("connection {conn}: {}", crate::diff_vs_full::describe(&e)))?;
            client
                .batch_execute(&format!(
                    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {}; \
                     SET deadlock_timeout = '50ms'; SET application_name = 'pgt_oracle_c{conn}'",
                    level.sql_name()
                ))
                .map_err(|e| format!("connection {conn}: {}", crate::diff_vs_full::describe(&e)))?;
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .map_err(|e| crate::diff_vs_full::describe(&e))?
                .get(0);
            let (jobs, inbox) = channel::<String>();
            let done = done_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("oracle-conn-{conn}"))
                .spawn(move || {
                    for sql in inbox {
                        let result = client.batch_execute(&sql);
                        if done.send((conn, result)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            workers.push(Worker {
                pid,
                jobs: Some(jobs),
                thread: Some(thread),
                running: None,
                queue: VecDeque::new(),
                cancelled: false,
            });
        }
        Ok(Sessions {
            workers,
            next_id: 0,
            results,
        })
    }

    /// Backend process ids, by connection.
    pub fn pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// Start `sql` on `conn` now, or after the statements it is still
    /// running or has queued. Returns its submission number.
    pub fn submit(&mut self, conn: usize, sql: &str) -> u64 {
        self.next_id += 1;
        let job = (self.next_id, sql.to_string());
        let w = &mut self.workers[conn];
        if w.running.is_none() && w.queue.is_empty() {
            Self::start(w, job);
        } else {
            w.queue.push_back(job);
        }
        self.next_id
    }

    fn start(w: &mut Worker, job: (u64, String)) {
        if let Some(jobs) = &w.jobs {
            // A send fails only when the thread is gone; its result then never comes.
            let _ = jobs.send(job.1.clone());
        }
        w.running = Some(job);
        w.cancelled = false;
    }

    /// Whether `conn` runs or has queued a statement.
    pub fn busy(&self, conn: usize) -> bool {
        let w = &self.workers[conn];
        w.running.is_some() || !w.queue.is_empty()
    }

    /// Connections running a statement now, with its submission number.
    pub fn running_ids(&self) -> Vec<(usize, u64)> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(c, w)| w.running.as_ref().map(|(id, _)| (c, *id)))
            .collect()
    }

    /// The statement `conn` runs now, if any.
    pub fn running(&self, conn: usize) -> Option<&str> {
        self.workers[conn].running.as_ref().map(|(_, s)| s.as_str())
    }

    fn finish(&mut self, conn: usize, result: Result<(), postgres::Error>, out: &mut Vec<Done>) {
        let w = &mut self.workers[conn];
        let (id, sql) = w.running.take().unwrap_or_default();
        out.push(Done {
            id,
            conn,
            sql,
            result,
            cancelled_by_runner: w.cancelled,
        });
        if let Some(next) = w.queue.pop_front() {
            Self::start(w, next);
        }
    }

    /// Lock waits of the running connections: connection -> blocking pids.
    fn waits(&self, monitor: &mut Client) -> Result<BTreeMap<usize, Vec<i32>>, String> {
        let pids: Vec<i32> = self
            .workers
            .iter()
            .filter(|w| w.running.is_some())
            .map(|w| w.pid)
            .collect();
        let rows = monitor
            .query(
                "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity \
                 WHERE pid = ANY($1) AND wait_event_type = 'Lock'",
                &[&pids],
            )
            .map_err(|e| crate::diff_vs_full::describe(&e))?;
        let mut out = BTreeMap::new();
        for r in rows {
            let pid: i32 = r.get(0);
            let blockers: Vec<i32> = r.get(1);
            if let Some(conn) = self.workers.iter().position(|w| w.pid == pid) {
                out.insert(conn, blockers);
            }
        }
        Ok(out)
    }

    /// Wait until every connection is idle or waits for a lock that only
    /// the workload's own connections (or prepared transactions) hold.
    /// Returns the statements that finished, in the order they finished.
    pub fn settle(&mut self, monitor: &mut Client) -> Result<Vec<Done>, Stuck> {
        let mut done = Vec::new();
        let mut agreeing = 0;
        let mut last_progress = Instant::now();
        let ours: Vec<i32> = self.pids();
        loop {
            match self.results.recv_timeout(Duration::from_millis(5)) {
                Ok((conn, result)) => {
                    self.finish(conn, result, &mut done);
                    agreeing = 0;
                    last_progress = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Stuck {
                        detail: "every connection thread has ended".into(),
                    })
                }
            }
            let running: Vec<usize> = (0..self.workers.len())
                .filter(|c| self.workers[*c].running.is_some())
                .collect();
            if running.is_empty() {
                return Ok(done);
            }
            let waits = self.waits(monitor).map_err(|detail| Stuck { detail })?;
            let all_wait_on_us = running.iter().all(|c| {
                waits.get(c).is_some_and(|blockers| {
                    !blockers.is_empty() && blockers.iter().all(|b| *b == 0 || ours.contains(b))
                })
            });
            if all_wait_on_us {
                agreeing += 1;
                if agreeing >= SETTLED_POLLS {
                    return Ok(done);
                }
            } else {
                agreeing = 0;
            }
            if last_progress.elapsed() > BUSY_LIMIT {
                let busy: Vec<String> = running
                    .iter()
                    .map(|c| {
                        format!(
                            "connection {c} runs `{}` (waits on pids {:?})",
                            self.running(*c).unwrap_or(""),
                            waits.get(c)
                        )
                    })
                    .collect();
                return Err(Stuck {
                    detail: format!(
                        "no statement finished for {} s: {}",
                        BUSY_LIMIT.as_secs(),
                        busy.join("; ")
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Cancel the waiting statement of the lowest connection that has
    /// statements queued behind it (its wait can only end by something
    /// queued). Returns false when no connection is stalled that way.
    fn break_stall(&mut self, monitor: &mut Client) -> Result<bool, Stuck> {
        let Some(conn) = (0..self.workers.len()).find(|c| {
            let w = &self.workers[*c];
            w.running.is_some() && !w.queue.is_empty()
        }) else {
            return Ok(false);
        };
        let pid = self.workers[conn].pid;
        self.workers[conn].cancelled = true;
        monitor
            .execute("SELECT pg_cancel_backend($1)", &[&pid])
            .map_err(|e| Stuck {
                detail: crate::diff_vs_full::describe(&e),
            })?;
        Ok(true)
    }

    /// Settle, breaking stalls until no connection waits with statements
    /// queued behind it (the end of a workload).
    pub fn settle_breaking_stalls(&mut self, monitor: &mut Client) -> Result<Vec<Done>, Stuck> {
        let mut done = self.settle(monitor)?;
        while self.break_stall(monitor)? {
            done.extend(self.settle(monitor)?);
        }
        Ok(done)
    }

    /// Submit `sql` on `conn` and wait for it to finish (returns its
    /// submission number and everything that finished); while it waits,
    /// stalls are broken. Err when it waits on a lock that no statement of
    /// the workload can release (an open transaction of another connection
    /// with nothing queued).
    pub fn run_to_end(
        &mut self,
        monitor: &mut Client,
        conn: usize,
        sql: &str,
    ) -> Result<(u64, Vec<Done>), Stuck> {
        let id = self.submit(conn, sql);
        let mut done = Vec::new();
        loop {
            done.extend(self.settle(monitor)?);
            if done.iter().any(|d| d.id == id) {
                return Ok((id, done));
            }
            if self.break_stall(monitor)? {
                continue;
            }
            let waits = self.waits(monitor).map_err(|detail| Stuck { detail })?;
            let blockers = waits.get(&conn).cloned().unwrap_or_default();
            let holders: Vec<String> = blockers
                .iter()
                .map(|b| match self.workers.iter().position(|w| w.pid == *b) {
                    Some(c) => format!("connection {c} (pid {b})"),
                    None if *b == 0 => "a prepared transaction".to_string(),
                    None => format!("pid {b}"),
                })
                .collect();
            return Err(Stuck {
                detail: format!(
                    "`{sql}` on connection {conn} waits for a lock held by {} with its transaction open, and no statement of the workload is left to end it",
                    holders.join(", ")
                ),
            });
        }
    }

    /// End every connection: cancel what still runs, close the connections
    /// and join their threads.
    pub fn close(&mut self, monitor: &mut Client) {
        for w in &mut self.workers {
            w.queue.clear();
            if w.running.is_some() {
                let _ = monitor.execute("SELECT pg_terminate_backend($1)", &[&w.pid]);
            }
            w.jobs = None;
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
