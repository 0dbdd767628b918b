//! Running a concurrent workload: statements of several connections, lock
//! waits, tolerated conflicts, and a live scheduler.
//!
//! Setup, seed rows, creation and every check run on the runner's own
//! connection (the monitor), which only ever reads committed state. Step
//! DML, the interleaved actions and the step's refreshes run on the
//! workload's connections (see [`crate::sessions`]): connection 0 runs DML
//! and refreshes, connections 1..=N the actions' transactions.
//!
//! A statement of a workload transaction may fail because of the
//! interleaving itself; those failures are part of the workload, counted
//! in [`super::WorkloadRun::conflicts`] and noted in the trace:
//! serialization failures and deadlocks (40001, 40P01), waits the runner
//! cancelled (57014); after one of those, and only then, the statements of
//! the transaction it aborted (25P02, and 3B001 for a savepoint that was
//! never set); and `COMMIT PREPARED` of a transaction that never got
//! prepared because it had aborted (42704). Any other failure ends the
//! run as today; the step's own refreshes must always succeed.
//!
//! A refresh of connection 0 in the middle of a step is checked at once
//! when it ran alone (it did not wait, and nothing else finished while it
//! ran): nothing has committed since its snapshot. Every other refresh is
//! checked at the end of its step, after the runner's own.
//!
//! With a live scheduler the runner never refreshes: after each step it
//! waits until no stream table has a change left to consume (and a FULL
//! one has been refreshed since the step), then checks, and judges every
//! refresh the scheduler made during the step.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{blame_error, create_all, describe, Maintained, Runner};
use crate::engine_api::{self, Ran};
use crate::outcome::Outcome;
use crate::sessions::{Done, Sessions, Stuck};
use crate::workload::Capture;
use crate::workload::Workload;

/// SQLSTATEs a workload statement may fail with because of the interleaving.
const CONFLICTS: &[&str] = &["40001", "40P01", "55P03"];

/// SQLSTATEs of statements in a transaction a conflict aborted.
const AFTER_CONFLICT: &[&str] = &["25P02", "3B001"];

/// How long the scheduler may take to consume a step's changes.
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);

/// The reason a refresh records when it ran FULL because its own
/// transaction wrote a source captured from the WAL (correct, documented).
pub(super) const OWN_WAL_WRITES: &str = "this transaction wrote source";

/// How the reason of a FULL refresh that AUTO's adaptive choice made
/// begins. The scheduler refreshes with the server's settings, where the
/// choice may be on (the runner turns it off in its own session only).
pub(super) const AUTO_CHOSE_FULL: &str = "AUTO chose FULL:";

/// The stream table a `refresh_stream_table('name')` call names.
/// How `sql` changes its connection's transaction state: Some(true) opens
/// a transaction block, Some(false) ends one, None leaves it as it was.
fn transaction_effect(sql: &str) -> Option<bool> {
    let s = sql.trim_start().to_ascii_uppercase();
    let words: Vec<&str> = s.split_whitespace().take(2).collect();
    match words.as_slice() {
        ["BEGIN", ..] | ["START", "TRANSACTION"] => Some(true),
        ["COMMIT" | "ROLLBACK" | "ABORT" | "END", second]
            if !second.starts_with("PREPARED") && !second.starts_with("TO") =>
        {
            Some(false)
        }
        ["COMMIT" | "ROLLBACK" | "ABORT" | "END"] | ["PREPARE", "TRANSACTION"] => Some(false),
        _ => None,
    }
}

fn refreshed_name(sql: &str) -> Option<&str> {
    let rest = sql.split("refresh_stream_table('").nth(1)?;
    rest.split('\'').next()
}

impl Runner<'_> {
    /// Record the results of finished statements; false once one failed in
    /// a way the workload does not tolerate.
    fn absorb(&mut self, done: Vec<Done>, step: usize) -> bool {
        for d in done {
            if self.aborted.len() <= d.conn {
                self.aborted.resize(d.conn + 1, false);
            }
            let Err(e) = d.result else {
                self.aborted[d.conn] = false;
                continue;
            };
            let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
            let conflict =
                CONFLICTS.contains(&code.as_str()) || (code == "57014" && d.cancelled_by_runner);
            let tolerated = conflict
                || (AFTER_CONFLICT.contains(&code.as_str()) && self.aborted[d.conn])
                || (code == "42704" && d.sql.contains(" PREPARED '"));
            if conflict {
                self.aborted[d.conn] = true;
            }
            if tolerated {
                self.run.conflicts += 1;
                let first = describe(&e).lines().next().unwrap_or_default().to_string();
                let why = if d.cancelled_by_runner {
                    " (cancelled by the runner: it waited for a lock only a statement queued behind it could release)"
                } else {
                    ""
                };
                self.run
                    .trace
                    .push(format!("-- c{}: failed as tolerated: {first}{why}", d.conn));
                continue;
            }
            let engine_call = d.sql.contains("pgtrickle.");
            let outcome = blame_error(&e, engine_call);
            let object = refreshed_name(&d.sql).unwrap_or("workload").to_string();
            let detail = format!(
                "statement failed on connection {}: {}\n{}",
                d.conn,
                d.sql,
                describe(&e)
            );
            self.record_error(&object, step, outcome, detail, &e);
            return false;
        }
        true
    }

    /// Record that the connections could not settle.
    fn stuck(&mut self, object: &str, step: usize, outcome: Outcome, s: Stuck) -> bool {
        self.record(object, step, outcome, Some(s.detail));
        false
    }

    /// Note newly waiting statements in the trace.
    fn note_waits(&mut self, noted: &mut BTreeSet<u64>) {
        let Some(sessions) = &self.sessions else {
            return;
        };
        for (conn, id) in sessions.running_ids() {
            if noted.insert(id) {
                self.run
                    .trace
                    .push(format!("-- c{conn}: waits for a lock; the others go on"));
            }
        }
    }

    /// Submit `sql` on `conn` and let the connections settle. Some(alone)
    /// when nothing failed; `alone` says the statement ran to its end
    /// without waiting and nothing else finished meanwhile (so nothing
    /// committed since it started).
    fn act(
        &mut self,
        conn: usize,
        sql: &str,
        step: usize,
        noted: &mut BTreeSet<u64>,
    ) -> Option<bool> {
        self.run.trace.push(format!("/* c{conn} */ {sql}"));
        let sessions = self.sessions.as_mut()?;
        let id = sessions.submit(conn, sql);
        match sessions.settle(self.db) {
            Ok(done) => {
                let alone = done.len() == 1 && done[0].id == id && done[0].result.is_ok();
                let ok = self.absorb(done, step);
                self.note_waits(noted);
                ok.then_some(alone)
            }
            Err(s) => {
                self.stuck("workload", step, Outcome::HarnessError, s);
                None
            }
        }
    }

    /// Run `sql` on connection 0 to its end (breaking stalls); a step's own
    /// DML and refreshes.
    fn on_zero(&mut self, sql: &str, object: &str, step: usize, engine_call: bool) -> bool {
        self.run.trace.push(format!("/* c0 */ {sql}"));
        let Some(sessions) = self.sessions.as_mut() else {
            return false;
        };
        match sessions.run_to_end(self.db, 0, sql) {
            Ok((id, done)) => {
                // The statement itself must succeed; others may conflict.
                let (mine, others): (Vec<Done>, Vec<Done>) =
                    done.into_iter().partition(|d| d.id == id);
                self.others_finished |= !others.is_empty();
                if !self.absorb(others, step) {
                    return false;
                }
                for d in mine {
                    if let Err(e) = d.result {
                        let outcome = blame_error(&e, engine_call);
                        let detail = format!("statement failed: {sql}\n{}", describe(&e));
                        self.record_error(object, step, outcome, detail, &e);
                        return false;
                    }
                }
                true
            }
            Err(s) => {
                // A refresh that waits for a writer's open transaction is an
                // engine defect; anything else the workload's.
                let outcome = if engine_call {
                    Outcome::EngineError
                } else {
                    Outcome::HarnessError
                };
                self.stuck(object, step, outcome, s)
            }
        }
    }

    /// Whether the live scheduler watches this database; waits for it to
    /// connect (it may be restarting after the database was recreated).
    fn scheduler_ready(&mut self) -> Result<(), String> {
        let row = self
            .db
            .query_one(
                "SELECT coalesce(current_setting('pg_trickle.database', true), 'postgres'), current_database()::text",
                &[],
            )
            .map_err(|e| describe(&e))?;
        let (watched, here): (String, String) = (row.get(0), row.get(1));
        if watched != here {
            return Err(format!(
                "a scheduler workload must run in the database the scheduler watches (pg_trickle.database = {watched}), not in {here}"
            ));
        }
        let started = Instant::now();
        loop {
            let n: i64 = self
                .db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_trickle scheduler' \
                     AND datname = current_database()",
                    &[],
                )
                .map_err(|e| describe(&e))?
                .get(0);
            if n > 0 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "no pg_trickle scheduler runs in database {here} (is pg_trickle in shared_preload_libraries?)"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The connections whose statement still waits for a lock, as `c1, c2`
    /// (None when none waits).
    fn waiting_connections(&self) -> Option<String> {
        let running = self.sessions.as_ref()?.running_ids();
        (!running.is_empty()).then(|| {
            running
                .iter()
                .map(|(c, _)| format!("c{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Wait until the scheduler has consumed every committed change (and
    /// refreshed every stream table not maintained from changes since
    /// `mark`). Not within the limit: [`Converged::Blocked`] while a
    /// workload connection waits for a lock (its open transaction may hold
    /// a stream table the scheduler needs, and what would release it is
    /// queued behind the wait), else a recorded mismatch.
    fn converge(&mut self, w: &Workload, step: usize, mark: &str) -> Converged {
        let started = Instant::now();
        // Changes captured from the WAL are pending only once decoded: wait
        // for every slot to be drained past the WAL written by the step.
        let wal_end: Option<String> = match w.capture {
            Capture::Trigger => None,
            Capture::Wal => match self.db.query_one("SELECT pg_current_wal_lsn()::text", &[]) {
                Ok(r) => Some(r.get(0)),
                Err(e) => {
                    self.record_error("scheduler", step, Outcome::HarnessError, describe(&e), &e);
                    return Converged::Failed;
                }
            },
        };
        let not_diff: Vec<String> = w
            .stream_tables
            .iter()
            .enumerate()
            .filter(|(i, _)| self.mode_of(*i) != Some(Maintained::Differential))
            .map(|(_, st)| st.name.clone())
            .collect();
        loop {
            // Slots first, then buffers, in two statements: the status
            // functions read with a snapshot per source, so one statement
            // could count a buffer before a drain commits and the drain's
            // position after it, and call a change neither drained nor
            // pending.
            let state = self
                .db
                .query_one(
                    "SELECT count(*) FROM pgtrickle.wal_capture_status() c \
                     WHERE c.source IS NOT NULL AND $1::text IS NOT NULL \
                     AND coalesce(c.drained_lsn::pg_lsn < $1::text::pg_lsn, true)",
                    &[&wal_end],
                )
                .and_then(|undrained| {
                    let r = self.db.query_one(
                        "SELECT coalesce(sum(s.pending_changes), 0)::bigint, \
                         coalesce(bool_or(s.needs_reinit), false) \
                         FROM pgtrickle.stream_table_status() s",
                        &[],
                    )?;
                    let unrefreshed = engine_api::unrefreshed_since(self.db, &not_diff, mark)?;
                    Ok((
                        undrained.get::<_, i64>(0) + r.get::<_, i64>(0),
                        r.get(1),
                        unrefreshed,
                    ))
                });
            let (pending, reinit, unrefreshed): (i64, bool, i64) = match state {
                Ok(r) => r,
                Err(e) => {
                    self.record_error("scheduler", step, Outcome::HarnessError, describe(&e), &e);
                    return Converged::Failed;
                }
            };
            if pending == 0 && !reinit && unrefreshed == 0 {
                return Converged::Yes;
            }
            if started.elapsed() > CONVERGE_LIMIT {
                if let Some(waiting) = self.waiting_connections() {
                    return Converged::Blocked(waiting);
                }
                let detail = format!(
                    "the scheduler did not catch up within {} s after step {step}: {pending} changes left to consume, \
                     reinitialisation pending: {reinit}, {unrefreshed} FULL stream tables not refreshed since the step",
                    CONVERGE_LIMIT.as_secs()
                );
                let object = w
                    .stream_tables
                    .first()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                self.record(&object, step, Outcome::Mismatch, Some(detail));
                return Converged::Failed;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Judge every refresh of `st` after refresh id `after_id` when the
    /// scheduler refreshes: each must have run `want` (a FULL caused by a
    /// change arriving during planning is correct too); a reinitialising
    /// step needs at least one FULL. Some(why) when one did not.
    pub(super) fn scheduled_modes(
        &mut self,
        st: &str,
        want: Maintained,
        after_id: i64,
    ) -> Result<Option<String>, postgres::Error> {
        let rows = engine_api::refreshes_after(self.db, st, after_id)?;
        let mut saw_full = false;
        for r in &rows {
            let by = &r.initiated_by;
            let mode = match &r.ran {
                Ran::Mode(m) => *m,
                Ran::Error => {
                    return Ok(Some(format!(
                        "a {by} refresh failed with {}: {}",
                        r.sqlstate.as_deref().unwrap_or(""),
                        r.message.as_deref().unwrap_or("")
                    )))
                }
                Ran::Unknown(_) => {
                    return Ok(Some(format!(
                        "a {by} refresh ran {}, which is no mode this runner knows",
                        r.describe()
                    )))
                }
            };
            saw_full |= mode == Maintained::Full;
            let own_wal_writes = r
                .reason
                .as_deref()
                .is_some_and(|x| x.starts_with(OWN_WAL_WRITES));
            let chosen = r
                .reason
                .as_deref()
                .is_some_and(|x| x.starts_with(AUTO_CHOSE_FULL));
            let fine = mode == want
                || (want == Maintained::Full && mode == Maintained::Differential)
                || (mode == Maintained::Full && (own_wal_writes || chosen));
            if !fine {
                return Ok(Some(format!(
                    "a {by} refresh ran {}, but this stream table must refresh {want} here",
                    r.describe()
                )));
            }
        }
        if want == Maintained::Full && !rows.is_empty() && !saw_full {
            return Ok(Some("no refresh reinitialised the stream table".into()));
        }
        Ok(None)
    }
}

/// Run a concurrent workload.
pub(super) fn run_steps(r: &mut Runner<'_>, w: &Workload) {
    if w.scheduler {
        if let Err(e) = r.scheduler_ready() {
            r.record("scheduler", 0, Outcome::HarnessError, Some(e));
            return;
        }
    }
    if !create_all(r, w) {
        return;
    }
    match Sessions::open(r.db, &w.connections) {
        Ok(s) => r.sessions = Some(s),
        Err(e) => {
            r.record("workload", 0, Outcome::HarnessError, Some(e));
            return;
        }
    }
    let mut noted = BTreeSet::new();
    // Whether connection 0 is inside a transaction block: a refresh there
    // is not committed when it returns, so it is checked with its step.
    let mut zero_in_transaction = false;
    // History marks of the first scheduler step whose check waits for a
    // blocked connection: the next check judges every refresh since.
    let mut deferred: Option<Vec<i64>> = None;
    for (i, step) in w.steps.iter().enumerate() {
        let n = i + 1;
        let Some(history) = r.history_marks(w, n) else {
            return;
        };
        for sql in &step.dml {
            if !r.on_zero(sql, "workload", n, false) {
                return;
            }
        }
        for a in &step.actions {
            if a.conn > w.connections.len() {
                let why = format!(
                    "action on connection {} but the workload declares {} extra connections",
                    a.conn,
                    w.connections.len()
                );
                r.record("workload", n, Outcome::HarnessError, Some(why));
                return;
            }
            // A refresh of connection 0 that runs alone is checked at once:
            // nothing committed since its snapshot. (With a live scheduler
            // any moment may see another refresh; it waits for the step.)
            let checked = (a.conn == 0 && !w.scheduler && !zero_in_transaction)
                .then(|| refreshed_name(&a.sql))
                .flatten()
                .and_then(|name| w.stream_tables.iter().position(|s| s.name == name));
            let mark = match checked {
                Some(i) => match engine_api::last_refresh_id(r.db, &w.stream_tables[i].name) {
                    Ok(id) => Some((i, id)),
                    Err(e) => {
                        r.record_error("workload", n, Outcome::HarnessError, describe(&e), &e);
                        return;
                    }
                },
                None => None,
            };
            let Some(alone) = r.act(a.conn, &a.sql, n, &mut noted) else {
                return;
            };
            if a.conn == 0 {
                zero_in_transaction = transaction_effect(&a.sql).unwrap_or(zero_in_transaction);
            }
            if let (Some((i, id)), true) = (mark, alone) {
                if !r.check_one(w, n, i, id) {
                    return;
                }
            }
        }
        if step.skip_refresh {
            continue;
        }
        if w.scheduler {
            let mark: String = match r.db.query_one("SELECT clock_timestamp()::text", &[]) {
                Ok(row) => row.get(0),
                Err(e) => {
                    r.record_error("scheduler", n, Outcome::HarnessError, describe(&e), &e);
                    return;
                }
            };
            // While a connection known to block the scheduler still waits,
            // the check stays deferred without waiting again.
            let still_blocked = deferred
                .is_some()
                .then(|| r.waiting_connections())
                .flatten();
            let converged = match still_blocked {
                Some(waiting) => Converged::Blocked(waiting),
                None => r.converge(w, n, &mark),
            };
            match converged {
                Converged::Yes => {}
                Converged::Blocked(waiting) => {
                    r.run.trace.push(format!(
                        "-- the scheduler cannot catch up while {waiting} waits for a lock; step {n} is checked once that is released"
                    ));
                    // This step's comparisons are made by the later check.
                    let merged = w
                        .stream_tables
                        .iter()
                        .filter(|st| !step.not_refreshed.contains(&st.name))
                        .count();
                    r.run.expected_comparisons = r.run.expected_comparisons.saturating_sub(merged);
                    deferred.get_or_insert(history);
                    continue;
                }
                Converged::Failed => return,
            }
        } else {
            // Statements that were queued behind a broken stall may commit
            // during the step's refreshes, after an earlier stream table
            // was refreshed: the refreshes run again until a round sees
            // nothing else finish (a change lost by the engine stays lost).
            for round in 0.. {
                r.others_finished = false;
                if !r.refresh_step(w, step, |r, sql, name| r.on_zero(sql, name, n, true)) {
                    return;
                }
                if !r.others_finished {
                    break;
                }
                if round == 3 {
                    let why = "other connections kept finishing statements during four rounds of the step's refreshes".to_string();
                    r.record("workload", n, Outcome::HarnessError, Some(why));
                    return;
                }
                r.run
                    .trace
                    .push("-- another connection finished a statement during the refreshes: they run again".into());
            }
        }
        let history = deferred.take().unwrap_or(history);
        if !r.close_step(w, step, n, &history) {
            return;
        }
    }
    // Whatever still waits can only be released by what is queued.
    let last = w.steps.len();
    if let Some(sessions) = r.sessions.as_mut() {
        match sessions.settle_breaking_stalls(r.db) {
            Ok(done) => {
                r.absorb(done, last);
            }
            Err(s) => {
                r.stuck("workload", last, Outcome::HarnessError, s);
                return;
            }
        }
    }
    // A deferred scheduler check runs now that nothing waits.
    if let Some(history) = deferred {
        let mark: String = match r.db.query_one("SELECT clock_timestamp()::text", &[]) {
            Ok(row) => row.get(0),
            Err(e) => {
                r.record_error("scheduler", last, Outcome::HarnessError, describe(&e), &e);
                return;
            }
        };
        if matches!(r.converge(w, last, &mark), Converged::Yes) {
            r.check_all(w, last, &history);
        } else if let Some(waiting) = r.waiting_connections() {
            let why = format!("{waiting} still waits for a lock after the workload ended");
            r.record("workload", last, Outcome::HarnessError, Some(why));
        }
    }
}

/// How waiting for the scheduler to catch up ended.
enum Converged {
    /// Every committed change is consumed.
    Yes,
    /// Not within the limit while these connections wait for a lock.
    Blocked(String),
    /// Not within the limit (recorded).
    Failed,
}

/// Close the connections and roll back prepared transactions left in the
/// database, so that it can be dropped and inspected.
pub(super) fn clean_up(r: &mut Runner<'_>) {
    if let Some(mut s) = r.sessions.take() {
        s.close(r.db);
    }
    roll_back_prepared(r.db);
}

/// Roll back the prepared transactions left in `db`'s database (a run
/// that stopped between PREPARE and COMMIT PREPARED, in any workload): a
/// prepared transaction holds its locks and its xmin cluster-wide, so the
/// next run's replication slot creation, which waits for every running
/// transaction, would wait for it forever.
pub(super) fn roll_back_prepared(db: &mut postgres::Client) {
    if let Ok(rows) = db.query(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
        &[],
    ) {
        for row in rows {
            let gid: String = row.get(0);
            let _ = db.batch_execute(&format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_calls_name_their_stream_table() {
        assert_eq!(
            refreshed_name("SELECT pgtrickle.refresh_stream_table('agg')"),
            Some("agg")
        );
        assert_eq!(refreshed_name("INSERT INTO a VALUES (1)"), None);
    }

    #[test]
    fn transaction_blocks_open_and_end() {
        for (sql, effect) in [
            ("BEGIN", Some(true)),
            ("begin isolation level serializable", Some(true)),
            ("START TRANSACTION", Some(true)),
            ("COMMIT", Some(false)),
            ("rollback", Some(false)),
            ("END", Some(false)),
            ("PREPARE TRANSACTION 'x_1'", Some(false)),
            ("COMMIT PREPARED 'x_1'", None),
            ("ROLLBACK PREPARED 'x_1'", None),
            ("ROLLBACK TO SAVEPOINT s", None),
            ("SAVEPOINT s", None),
            ("SELECT pgtrickle.refresh_stream_table('g')", None),
        ] {
            assert_eq!(transaction_effect(sql), effect, "{sql}");
        }
    }
}
