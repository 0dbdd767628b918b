//! The single-node fault scenarios: what each injects, and when.
//!
//! Every scenario runs with the load of [`super::writers`] going on and
//! the scheduler refreshing; each run injects its faults in order (the
//! first at a moment made certain by a held lock where the operation has
//! one, the next at a seeded moment) and leaves the schema in a state the
//! verdict can judge. Whatever a fault interrupts must end either done or
//! not done: a stream table half created, half dropped or half altered is
//! a failure named here, not later.

use std::time::Duration;

use postgres::Client;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::faults::{self, Activity, SmallFilesystem};
use super::verdict::{self, StreamTable};
use super::writers::Load;
use crate::cluster::{describe, Cluster};

/// The chaos sources and their seed rows.
pub const SCHEMA: &str = "
CREATE TABLE chaos_customers (id int PRIMARY KEY, region text NOT NULL);
INSERT INTO chaos_customers SELECT g, 'r' || (g % 7) FROM generate_series(0, 99) g;
CREATE TABLE chaos_orders (id bigint PRIMARY KEY, cust int NOT NULL, amount numeric(12,2) NOT NULL);
INSERT INTO chaos_orders SELECT g, g % 100, (g % 997) / 10.0 FROM generate_series(1, 20000) g;
CREATE TABLE chaos_events (id bigserial PRIMARY KEY, kind int NOT NULL, qty int NOT NULL);
INSERT INTO chaos_events (kind, qty) SELECT g % 20, g % 13 FROM generate_series(1, 60000) g;
";

/// Every stream table a chaos run may have.
pub const STREAM_TABLES: &[StreamTable] = &[
    StreamTable {
        name: "chaos_copy",
        query: "SELECT id, cust, amount FROM chaos_orders",
        schedule: Some("1s"),
        source: "chaos_orders",
    },
    StreamTable {
        name: "chaos_totals",
        query: "SELECT cust, count(*) AS n, sum(amount) AS total FROM chaos_orders GROUP BY cust",
        schedule: Some("1s"),
        source: "chaos_orders",
    },
    StreamTable {
        name: "chaos_regions",
        query: "SELECT c.region, count(*) AS n, sum(o.amount) AS total \
                FROM chaos_orders o JOIN chaos_customers c ON c.id = o.cust GROUP BY c.region",
        schedule: Some("1s"),
        source: "chaos_orders",
    },
    StreamTable {
        name: "chaos_extremes",
        query:
            "SELECT cust, max(amount) AS top, min(amount) AS bottom FROM chaos_orders GROUP BY cust",
        schedule: None,
        source: "chaos_orders",
    },
    StreamTable {
        name: "chaos_kinds",
        query: "SELECT kind, count(*) AS n, sum(qty) AS total FROM chaos_events GROUP BY kind",
        schedule: Some("1s"),
        source: "chaos_events",
    },
];

/// The stream table the load's refresher refreshes (it has no schedule).
pub const REFRESHED_BY_HAND: &str = "chaos_extremes";

/// The stream table the DDL scenarios create and drop: the only reader of
/// `chaos_events`, so its capture comes and goes with it.
pub const COMING_AND_GOING: &str = "chaos_kinds";

/// The stream table the alter scenario switches between modes.
pub const ALTERED: &str = "chaos_totals";

/// A stream table of [`STREAM_TABLES`] by name.
pub fn stream_table(name: &str) -> &'static StreamTable {
    STREAM_TABLES
        .iter()
        .find(|s| s.name == name)
        .expect("a chaos stream table")
}

/// `create_stream_table` of `st`, DIFFERENTIAL.
pub fn create_sql(st: &StreamTable) -> String {
    format!(
        "SELECT pgtrickle.create_stream_table('{}', $q${}$q$, {}, 'DIFFERENTIAL')",
        st.name,
        st.query,
        st.schedule
            .map(|s| format!("'{s}'"))
            .unwrap_or_else(|| "NULL".into())
    )
}

/// What a run's faults did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Injected {
    /// One line per fault: what, where, and whether it landed mid-operation.
    pub faults: Vec<String>,
    /// Faults that landed while the operation they aimed at was running.
    pub mid_operation: usize,
}

impl Injected {
    fn note(&mut self, what: String, mid: bool) {
        if mid {
            self.mid_operation += 1;
        }
        self.faults.push(if mid {
            what
        } else {
            format!("{what} (after the statement had finished)")
        });
    }
}

/// What a scenario works with.
pub struct Ctx<'a> {
    /// The cluster under test.
    pub cluster: &'a Cluster,
    /// The runner's monitor connection (replaced after a crash).
    pub db: Client,
    /// The run's random choices.
    pub rng: ChaCha8Rng,
    /// The background load.
    pub load: &'a Load,
    /// What was injected.
    pub injected: Injected,
}

/// How a crash is made.
#[derive(Debug, Clone, Copy)]
pub enum Crash {
    /// SIGKILL of one process; the postmaster ends every session and recovers.
    Kill,
    /// `pg_ctl stop -m immediate`, then start.
    ImmediateShutdown,
}

impl Crash {
    fn name(self) -> &'static str {
        match self {
            Crash::Kill => "kill -9",
            Crash::ImmediateShutdown => "immediate shutdown",
        }
    }
}

impl Ctx<'_> {
    /// A connection holding `lock_sql` in an open transaction.
    fn locker(&self, lock_sql: &str) -> Result<Client, String> {
        let mut c = self
            .cluster
            .connect("postgres")
            .map_err(|e| e.to_string())?;
        c.batch_execute(&format!("BEGIN; {lock_sql}"))
            .map_err(|e| format!("taking the lock ({lock_sql}): {}", describe(&e)))?;
        Ok(c)
    }

    /// Crash the server at process `pid`, then wait for it to recover.
    fn crash(&mut self, how: Crash, pid: i32) -> Result<(), String> {
        match how {
            Crash::Kill => {
                faults::signal(pid, libc::SIGKILL)?;
                self.db = faults::crash_recovered(&mut self.db, self.cluster)?;
            }
            Crash::ImmediateShutdown => self.db = faults::immediate_restart(self.cluster)?,
        }
        Ok(())
    }

    fn seeded_crash(&mut self) -> Crash {
        if self.rng.gen_bool(0.5) {
            Crash::Kill
        } else {
            Crash::ImmediateShutdown
        }
    }

    fn wait_scheduler(
        &mut self,
        what: &str,
        st: Option<&str>,
        ready: impl Fn(&Activity) -> bool,
    ) -> Result<Activity, String> {
        // Status names a stream table schema-qualified when it is not on
        // the search path; either spelling matches.
        let filter = format!(
            "backend_type = 'pg_trickle scheduler' AND query ~ '^pg_trickle scheduler: refreshing stream table {}$'",
            st.map(|s| format!("([a-z_]+\\.)?{s}")).unwrap_or_else(|| ".*".into())
        );
        faults::wait_for(&mut self.db, what, &filter, ready)
    }

    /// The scheduler caught waiting to apply `st`'s delta (another session
    /// holds the stream table), then crashed.
    fn crash_scheduler_at_apply(&mut self, how: Crash) -> Result<(), String> {
        let st = ["chaos_copy", "chaos_totals", "chaos_regions"][self.rng.gen_range(0..3)];
        let locker = self.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
        let a = self.wait_scheduler(
            &format!("the scheduler waiting to apply {st}"),
            Some(st),
            faults::waits_for_lock,
        )?;
        self.crash(how, a.pid)?;
        drop(locker);
        self.injected.note(
            format!(
                "{} of the scheduler (pid {}) waiting to apply {st}'s delta",
                how.name(),
                a.pid
            ),
            true,
        );
        Ok(())
    }

    /// The scheduler crashed a seeded moment into one of its refreshes.
    fn crash_scheduler_anytime(&mut self, how: Crash) -> Result<(), String> {
        let a = self.wait_scheduler("the scheduler refreshing", None, |a| a.state == "active")?;
        let delay = Duration::from_micros(self.rng.gen_range(0..3_000));
        std::thread::sleep(delay);
        let still = faults::activities(
            &mut self.db,
            &format!(
                "pid = {} AND state = 'active' AND query = $${}$$",
                a.pid, a.query
            ),
        )?
        .len()
            == 1;
        self.crash(how, a.pid)?;
        self.injected.note(
            format!(
                "{} of the scheduler (pid {}) {} µs into \"{}\"",
                how.name(),
                a.pid,
                delay.as_micros(),
                a.query
            ),
            still,
        );
        Ok(())
    }

    /// The refresher's backend, once it has one.
    fn refresher_pid(&mut self) -> Result<i32, String> {
        let started = std::time::Instant::now();
        loop {
            let pid = self
                .load
                .refresher_pid
                .load(std::sync::atomic::Ordering::SeqCst);
            if pid > 0 {
                return Ok(pid);
            }
            if started.elapsed() > faults::REACH_LIMIT {
                return Err("the refresher has no session".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Kill -9 of a backend running `refresh_stream_table`: once waiting to
/// apply, once at a seeded moment.
pub fn kill_backend_mid_refresh(ctx: &mut Ctx) -> Result<(), String> {
    let st = REFRESHED_BY_HAND;
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let pid = ctx.refresher_pid()?;
    faults::wait_for(
        &mut ctx.db,
        "the refresher waiting to apply",
        &format!("pid = {pid}"),
        faults::waits_for_lock,
    )?;
    ctx.crash(Crash::Kill, pid)?;
    drop(locker);
    ctx.injected.note(
        format!("kill -9 of a backend (pid {pid}) waiting to apply {st}'s delta"),
        true,
    );
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    let pid = ctx.refresher_pid()?;
    faults::wait_for(
        &mut ctx.db,
        "the refresher refreshing",
        &format!("pid = {pid}"),
        |a| a.state == "active",
    )?;
    let delay = Duration::from_micros(ctx.rng.gen_range(0..20_000));
    let mid = faults::kill_after(&mut ctx.db, pid, delay)?;
    ctx.db = faults::crash_recovered(&mut ctx.db, ctx.cluster)?;
    ctx.injected.note(
        format!(
            "kill -9 of a backend (pid {pid}) {} µs into refresh_stream_table('{st}')",
            delay.as_micros()
        ),
        mid,
    );
    Ok(())
}

/// Kill -9 of the scheduler mid-refresh: waiting to apply, then at a seeded moment.
pub fn kill_scheduler_mid_refresh(ctx: &mut Ctx) -> Result<(), String> {
    ctx.crash_scheduler_at_apply(Crash::Kill)?;
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    ctx.crash_scheduler_anytime(Crash::Kill)
}

/// Immediate shutdown while the scheduler refreshes: waiting to apply,
/// then at a seeded moment.
pub fn immediate_shutdown_mid_refresh(ctx: &mut Ctx) -> Result<(), String> {
    ctx.crash_scheduler_at_apply(Crash::ImmediateShutdown)?;
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    ctx.crash_scheduler_anytime(Crash::ImmediateShutdown)
}

/// Immediate shutdown while a large insert is being captured row by row
/// (and the writers' transactions are in flight).
pub fn immediate_shutdown_mid_capture(ctx: &mut Ctx) -> Result<(), String> {
    let mut bulk = ctx.cluster.connect("postgres").map_err(|e| e.to_string())?;
    let pid: i32 = bulk
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(|e| describe(&e))?
        .get(0);
    let insert = std::thread::spawn(move || {
        bulk.batch_execute(
            "INSERT INTO chaos_orders (id, cust, amount) \
             SELECT g, g % 100, 1 FROM generate_series(900000000, 900400000) g",
        )
    });
    faults::wait_for(
        &mut ctx.db,
        "the large insert running",
        &format!("pid = {pid}"),
        |a| a.state == "active",
    )?;
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(50..400)));
    let mid =
        faults::activities(&mut ctx.db, &format!("pid = {pid} AND state = 'active'"))?.len() == 1;
    ctx.db = faults::immediate_restart(ctx.cluster)?;
    let finished = insert.join().map_err(|_| "the insert thread panicked")?;
    if finished.is_ok() {
        return Err("the 400,001-row insert committed before the immediate shutdown: the fault did not land mid-capture".into());
    }
    ctx.injected.note(
        format!("immediate shutdown while a 400,001-row insert (pid {pid}) was being captured"),
        mid,
    );
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(300..1500)));
    ctx.db = faults::immediate_restart(ctx.cluster)?;
    ctx.injected.note(
        "immediate shutdown at a seeded moment of the writers' transactions".into(),
        true,
    );
    Ok(())
}

/// Run `sql` on a connection of its own and crash the server while it
/// runs: once it waits for `lock_sql` held by another session (None: at
/// a seeded moment). Returns whether it was still running when the
/// crash landed.
fn crash_during(
    ctx: &mut Ctx,
    what: &str,
    sql: &str,
    lock_sql: Option<&str>,
) -> Result<bool, String> {
    let how = ctx.seeded_crash();
    let locker = match lock_sql {
        Some(l) => Some(ctx.locker(l)?),
        None => None,
    };
    let mut conn = ctx.cluster.connect("postgres").map_err(|e| e.to_string())?;
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(|e| describe(&e))?
        .get(0);
    let statement = sql.to_string();
    // The thread hands the connection back, so the backend outlives the
    // statement and a late crash still finds its process.
    let running = std::thread::spawn(move || {
        let r = conn.batch_execute(&statement);
        (r, conn)
    });
    let mid = if lock_sql.is_some() {
        faults::wait_for(
            &mut ctx.db,
            &format!("{what} waiting for a lock"),
            &format!("pid = {pid}"),
            faults::waits_for_lock,
        )?;
        true
    } else {
        std::thread::sleep(Duration::from_micros(ctx.rng.gen_range(0..60_000)));
        faults::activities(&mut ctx.db, &format!("pid = {pid} AND state = 'active'"))?.len() == 1
    };
    ctx.crash(how, pid)?;
    drop(locker);
    let (result, _conn) = running
        .join()
        .map_err(|_| "the statement thread panicked")?;
    if let Err(e) = &result {
        if !e.is_closed() && e.code().is_some_and(|c| !c.code().starts_with("57P")) {
            return Err(format!("{what} failed before the crash: {}", describe(e)));
        }
    }
    ctx.injected.note(
        format!(
            "{} of the server at {what} ({})",
            how.name(),
            if lock_sql.is_some() {
                "waiting for a lock another session held"
            } else {
                "a seeded moment"
            }
        ),
        mid,
    );
    Ok(mid)
}

/// After a crash during create or drop: the stream table exists with its
/// capture, or neither exists. Returns whether it exists.
fn whole_or_absent(ctx: &mut Ctx) -> Result<bool, String> {
    let st = stream_table(COMING_AND_GOING);
    let exists = verdict::exists_consistently(&mut ctx.db, st.name)?;
    let (triggers, buffer) = verdict::capture_objects(&mut ctx.db, st.source)?;
    if exists && (triggers.is_empty() || !buffer) {
        return Err(format!(
            "{} exists but its source {} lost its capture (triggers {triggers:?}, change buffer {})",
            st.name,
            st.source,
            if buffer { "present" } else { "missing" }
        ));
    }
    if !exists && (!triggers.is_empty() || buffer) {
        return Err(format!(
            "{} does not exist but its source {} keeps pg_trickle's objects (triggers {triggers:?}, change buffer {})",
            st.name,
            st.source,
            if buffer { "present" } else { "absent" }
        ));
    }
    Ok(exists)
}

fn create_kinds(ctx: &mut Ctx) -> Result<(), String> {
    let sql = create_sql(stream_table(COMING_AND_GOING));
    ctx.db.batch_execute(&sql).map_err(|e| {
        format!(
            "creating {COMING_AND_GOING} again after the crash: {}",
            describe(&e)
        )
    })
}

/// A crash during `create_stream_table`: while it waits to install capture
/// on a source another transaction is writing, then at a seeded moment.
pub fn crash_during_create(ctx: &mut Ctx) -> Result<(), String> {
    let sql = create_sql(stream_table(COMING_AND_GOING));
    let lock = "INSERT INTO chaos_events (kind, qty) VALUES (0, 0)";
    for lock_sql in [Some(lock), None] {
        if whole_or_absent(ctx)? {
            ctx.db
                .batch_execute(&format!(
                    "SELECT pgtrickle.drop_stream_table('{COMING_AND_GOING}')"
                ))
                .map_err(|e| describe(&e))?;
        }
        crash_during(ctx, "create_stream_table", &sql, lock_sql)?;
        whole_or_absent(ctx)?;
        std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(200..800)));
    }
    if !whole_or_absent(ctx)? {
        create_kinds(ctx)?;
    }
    Ok(())
}

/// A crash during `drop_stream_table`: while it waits for a lock (a writer
/// of its source, or a reader of the stream table), then at a seeded moment.
pub fn crash_during_drop(ctx: &mut Ctx) -> Result<(), String> {
    let sql = format!("SELECT pgtrickle.drop_stream_table('{COMING_AND_GOING}')");
    let lock = if ctx.rng.gen_bool(0.5) {
        "INSERT INTO chaos_events (kind, qty) VALUES (0, 0)".to_string()
    } else {
        format!("SELECT count(*) FROM {COMING_AND_GOING}")
    };
    for lock_sql in [Some(lock.as_str()), None] {
        if !whole_or_absent(ctx)? {
            create_kinds(ctx)?;
        }
        crash_during(ctx, "drop_stream_table", &sql, lock_sql)?;
        whole_or_absent(ctx)?;
        std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(200..800)));
    }
    if !whole_or_absent(ctx)? {
        create_kinds(ctx)?;
    }
    Ok(())
}

fn requested_mode(ctx: &mut Ctx, st: &str) -> Result<String, String> {
    ctx.db
        .query_one(
            "SELECT requested_mode FROM pgtrickle.stream_table_status() WHERE to_regclass(name) = to_regclass($1)",
            &[&st],
        )
        .map(|r| r.get(0))
        .map_err(|e| format!("{st} after the crash: {}", describe(&e)))
}

/// Crashes during `alter_stream_table` switching a stream table between
/// DIFFERENTIAL and FULL: first while it waits for its source (another
/// session holds it exclusively), then twice at seeded moments; it ends
/// DIFFERENTIAL.
pub fn crash_during_alter(ctx: &mut Ctx) -> Result<(), String> {
    let lock = format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        stream_table(ALTERED).source
    );
    for lock_sql in [Some(lock.as_str()), None, None] {
        let now = requested_mode(ctx, ALTERED)?;
        let to = if now == "FULL" {
            "DIFFERENTIAL"
        } else {
            "FULL"
        };
        let sql =
            format!("SELECT pgtrickle.alter_stream_table('{ALTERED}', refresh_mode => '{to}')");
        crash_during(
            ctx,
            &format!("alter_stream_table(refresh_mode => '{to}')"),
            &sql,
            lock_sql,
        )?;
        let after = requested_mode(ctx, ALTERED)?;
        if after != now && after != to {
            return Err(format!(
                "{ALTERED} was {now}, a crash interrupted its change to {to}, and it is now {after}"
            ));
        }
        std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(200..800)));
    }
    ctx.db
        .batch_execute(&format!(
            "SELECT pgtrickle.alter_stream_table('{ALTERED}', refresh_mode => 'DIFFERENTIAL')"
        ))
        .map_err(|e| format!("switching {ALTERED} back to DIFFERENTIAL: {}", describe(&e)))
}

/// Run `sql` on a fresh session with `setting`, expecting it to fail with
/// `sqlstate` while another session holds `st`.
fn refresh_refused(ctx: &mut Ctx, st: &str, setting: &str, sqlstate: &str) -> Result<(), String> {
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let mut s = ctx.cluster.connect("postgres").map_err(|e| e.to_string())?;
    s.batch_execute(setting).map_err(|e| describe(&e))?;
    let r = s.batch_execute(&format!("SELECT pgtrickle.refresh_stream_table('{st}')"));
    drop(locker);
    match r {
        Err(e) if e.code().map(|c| c.code()) == Some(sqlstate) => {
            ctx.injected.note(
                format!("{setting} on a refresh of {st} waiting to apply: {sqlstate}"),
                true,
            );
            Ok(())
        }
        Err(e) => Err(format!(
            "a refresh of {st} with {setting} failed with {} instead of {sqlstate}",
            describe(&e)
        )),
        Ok(()) => Err(format!(
            "a refresh of {st} with {setting} succeeded while another session held the stream table"
        )),
    }
}

/// The scheduler's refresh of `st`, waiting to apply, is ended by
/// `action` (run on the monitor with the scheduler's pid); it must be
/// recorded as failed with `sqlstate`, and the scheduler must live on.
fn scheduler_refresh_fails(
    ctx: &mut Ctx,
    st: &str,
    action: Option<&str>,
    sqlstate: &str,
) -> Result<(), String> {
    let mark = oracles::engine_api::last_refresh_id(&mut ctx.db, st).map_err(|e| describe(&e))?;
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let a = ctx.wait_scheduler(
        &format!("the scheduler waiting to apply {st}"),
        Some(st),
        faults::waits_for_lock,
    )?;
    if let Some(action) = action {
        ctx.db
            .batch_execute(&action.replace("$pid", &a.pid.to_string()))
            .map_err(|e| describe(&e))?;
    }
    let started = std::time::Instant::now();
    let recorded = loop {
        let after = verdict::refreshes_since(&mut ctx.db, st, mark)?;
        if let Some(e) = after.errors.iter().find(|e| e.starts_with(sqlstate)) {
            break e.clone();
        }
        if started.elapsed() > faults::REACH_LIMIT {
            return Err(format!(
                "the scheduler's refresh of {st} was not recorded as failing with {sqlstate} \
                 (history since: {after:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(locker);
    let now = faults::scheduler(&mut ctx.db)?;
    if now.as_ref().map(|n| n.pid) != Some(a.pid) {
        return Err(format!(
            "the scheduler (pid {}) did not survive its failed refresh of {st} (now: {now:?})",
            a.pid
        ));
    }
    ctx.injected.note(
        format!(
            "{} on the scheduler's refresh of {st} waiting to apply: recorded \"{recorded}\"",
            action
                .map(|_| "pg_cancel_backend")
                .unwrap_or("lock_timeout")
        ),
        true,
    );
    Ok(())
}

/// Statement cancels: of the scheduler mid-refresh, of a backend
/// mid-refresh, and a statement_timeout on a refresh.
pub fn cancel_during_refresh(ctx: &mut Ctx) -> Result<(), String> {
    scheduler_refresh_fails(
        ctx,
        "chaos_totals",
        Some("SELECT pg_cancel_backend($pid)"),
        "57014",
    )?;
    let st = REFRESHED_BY_HAND;
    let locker = ctx.locker(&format!("LOCK TABLE {st} IN EXCLUSIVE MODE"))?;
    let pid = ctx.refresher_pid()?;
    faults::wait_for(
        &mut ctx.db,
        "the refresher waiting to apply",
        &format!("pid = {pid}"),
        faults::waits_for_lock,
    )?;
    ctx.db
        .batch_execute(&format!("SELECT pg_cancel_backend({pid})"))
        .map_err(|e| describe(&e))?;
    drop(locker);
    ctx.injected.note(
        format!("pg_cancel_backend of a backend (pid {pid}) waiting to apply {st}'s delta"),
        true,
    );
    refresh_refused(ctx, st, "SET statement_timeout = '300ms'", "57014")
}

/// Lock timeouts: on a manual refresh, and on the scheduler's (set for
/// the whole server and reloaded, then reset).
pub fn lock_timeout_during_refresh(ctx: &mut Ctx) -> Result<(), String> {
    refresh_refused(
        ctx,
        REFRESHED_BY_HAND,
        "SET lock_timeout = '200ms'",
        "55P03",
    )?;
    for set in [
        "ALTER SYSTEM SET lock_timeout = '300ms'",
        "SELECT pg_reload_conf()",
    ] {
        ctx.db.batch_execute(set).map_err(|e| describe(&e))?;
    }
    // The scheduler reads the reloaded file at its next tick.
    std::thread::sleep(Duration::from_millis(1500));
    let r = scheduler_refresh_fails(ctx, "chaos_regions", None, "55P03");
    for reset in ["ALTER SYSTEM RESET lock_timeout", "SELECT pg_reload_conf()"] {
        ctx.db.batch_execute(reset).map_err(|e| describe(&e))?;
    }
    r
}

/// The size of the small filesystem the change buffers are moved to.
pub const SMALL_KIB: u64 = 384;

/// Move the change buffers (still nearly empty) to a tablespace on the
/// small filesystem, before the load starts.
pub fn buffers_to_small_filesystem(db: &mut Client, fs: &SmallFilesystem) -> Result<(), String> {
    db.batch_execute(&format!(
        "CREATE TABLESPACE chaos_small LOCATION '{}'",
        fs.mount.display()
    ))
    .map_err(|e| format!("creating the tablespace: {}", describe(&e)))?;
    let moves: Vec<String> = db
        .query(
            "SELECT format('ALTER %s %s SET TABLESPACE chaos_small', \
                           CASE WHEN c.relkind = 'i' THEN 'INDEX' ELSE 'TABLE' END, c.oid::regclass) \
             FROM pg_class c WHERE c.relnamespace = 'pgtrickle_changes'::regnamespace AND c.relkind IN ('r', 'i') \
             ORDER BY c.relkind DESC",
            &[],
        )
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if moves.is_empty() {
        return Err("no change buffer to move: pgtrickle_changes is empty".into());
    }
    for m in &moves {
        db.batch_execute(m)
            .map_err(|e| format!("{m}: {}", describe(&e)))?;
    }
    Ok(())
}

/// The change buffers fill the small filesystem: writes that need buffer
/// space fail (and roll back with their source rows), the scheduler goes
/// on, and once the filesystem grows everything flows again.
pub fn disk_full_change_buffers(ctx: &mut Ctx, fs: &SmallFilesystem) -> Result<(), String> {
    // A capture far larger than the filesystem must fail with disk full,
    // and take its source rows with it.
    let bulk = ctx.db.batch_execute(
        "INSERT INTO chaos_orders (id, cust, amount) \
         SELECT g, g % 100, 2 FROM generate_series(800000000, 800050000) g",
    );
    match bulk {
        Err(e) if e.code().map(|c| c.code()) == Some("53100") => {}
        Err(e) => return Err(format!("the 50,001-row insert failed with {} instead of 53100 (disk full)", describe(&e))),
        Ok(()) => {
            return Err(format!(
                "a 50,001-row insert was captured on a {SMALL_KIB} KiB filesystem: the change buffers did not fill it"
            ))
        }
    }
    ctx.injected.note(
        format!("change buffers on a {SMALL_KIB} KiB filesystem: a 50,001-row insert refused with 53100"),
        true,
    );
    // The writers meet the full disk for a while, then it grows.
    std::thread::sleep(Duration::from_millis(ctx.rng.gen_range(1000..2500)));
    fs.resize(256 * 1024)?;
    ctx.injected.note(
        "the filesystem grown to 256 MiB while the writers went on".into(),
        true,
    );
    Ok(())
}

/// Move the change buffers back and drop the tablespace, so the small
/// filesystem can go.
pub fn leave_small_filesystem(db: &mut Client) -> Result<(), String> {
    db.batch_execute(
        "DO $$DECLARE r record; BEGIN \
           FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c \
                    JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE t.spcname = 'chaos_small' \
                    AND c.relkind IN ('r', 'i') AND c.relnamespace <> 'pg_toast'::regnamespace LOOP \
             EXECUTE format('ALTER %s %s SET TABLESPACE pg_default', \
                            CASE WHEN r.relkind = 'i' THEN 'INDEX' ELSE 'TABLE' END, r.rel); \
           END LOOP; END$$",
    )
    .and_then(|()| db.batch_execute("DROP TABLESPACE IF EXISTS chaos_small"))
    .map_err(|e| format!("leaving the small filesystem: {}", describe(&e)))
}
