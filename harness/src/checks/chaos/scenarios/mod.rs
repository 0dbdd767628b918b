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

mod crashes;
mod ddl;
mod disk;
mod refusals;

pub use crashes::{
    immediate_shutdown_mid_capture, immediate_shutdown_mid_refresh, kill_backend_mid_refresh,
    kill_scheduler_mid_refresh,
};
pub use ddl::{crash_during_alter, crash_during_create, crash_during_drop};
pub use disk::{
    buffers_to_small_filesystem, disk_full_change_buffers, leave_small_filesystem, SMALL_KIB,
};
pub use refusals::{cancel_during_refresh, lock_timeout_during_refresh};

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

/// The sources `--capture wal` captures from the WAL.
pub const WAL_CAPTURED: &[&str] = &["chaos_orders", "chaos_customers"];

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
    /// How the sources of [`WAL_CAPTURED`] are captured.
    pub capture: oracles::workload::Capture,
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
