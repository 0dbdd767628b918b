//! The faults a chaos run injects, and how it finds the moment to inject
//! them: a process found in `pg_stat_activity` is killed with SIGKILL or
//! cancelled; the server is stopped in immediate mode; a tablespace on a
//! small filesystem the runner mounts fills up.
//!
//! "Mid-refresh" is made certain where it can be: another session holds a
//! lock the refresh needs only to apply its delta, so the refresh is
//! caught after it computed the delta and before it wrote anything, and
//! the fault lands while it waits (`wait_event_type = 'Lock'`). Faults at
//! other moments wait a seeded delay after the statement became active and
//! report whether it was still running when they landed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use postgres::Client;

use crate::cluster::{describe, Cluster};

/// How long a check waits for a process to reach the state a fault needs.
pub const REACH_LIMIT: Duration = Duration::from_secs(30);

/// How long the server may take to accept connections after a fault.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// Send `signal` to process `pid` (the runner owns the server's processes
/// or is root).
pub fn signal(pid: i32, signal: i32) -> Result<(), String> {
    if pid <= 0 {
        return Err(format!("no process to signal (pid {pid})"));
    }
    // SAFETY: kill(2) has no memory preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// A backend as `pg_stat_activity` shows it.
#[derive(Debug, Clone)]
pub struct Activity {
    /// Process id.
    pub pid: i32,
    /// `state` (`active`, `idle`, ...).
    pub state: String,
    /// `wait_event_type`, when it waits.
    pub wait: Option<String>,
    /// `query`.
    pub query: String,
}

/// Backends matching `filter` (a condition on `pg_stat_activity`).
pub fn activities(db: &mut Client, filter: &str) -> Result<Vec<Activity>, String> {
    let sql = format!(
        "SELECT pid, coalesce(state, ''), wait_event_type, coalesce(query, '') \
         FROM pg_stat_activity WHERE {filter}"
    );
    Ok(db
        .query(&sql, &[])
        .map_err(|e| describe(&e))?
        .iter()
        .map(|r| Activity {
            pid: r.get(0),
            state: r.get(1),
            wait: r.get(2),
            query: r.get(3),
        })
        .collect())
}

/// The scheduler's backend, if it runs.
pub fn scheduler(db: &mut Client) -> Result<Option<Activity>, String> {
    Ok(activities(db, "backend_type = 'pg_trickle scheduler'")?
        .into_iter()
        .next())
}

/// Wait until `filter` matches a backend whose state satisfies `ready`;
/// an error names what it last saw.
pub fn wait_for(
    db: &mut Client,
    what: &str,
    filter: &str,
    ready: impl Fn(&Activity) -> bool,
) -> Result<Activity, String> {
    let started = Instant::now();
    let mut last = Vec::new();
    while started.elapsed() < REACH_LIMIT {
        last = activities(db, filter)?;
        if let Some(a) = last.iter().find(|a| ready(a)) {
            return Ok(a.clone());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(format!(
        "{what}: not reached within {} s (last seen: {last:?})",
        REACH_LIMIT.as_secs()
    ))
}

/// Whether `a` waits for a heavyweight lock.
pub fn waits_for_lock(a: &Activity) -> bool {
    a.state == "active" && a.wait.as_deref() == Some("Lock")
}

/// Kill backend `pid` with SIGKILL after `delay`, first noting whether it
/// was still active (so a fault that landed after the statement finished
/// says so). The postmaster then ends every session and recovers.
pub fn kill_after(db: &mut Client, pid: i32, delay: Duration) -> Result<bool, String> {
    std::thread::sleep(delay);
    let active = activities(db, &format!("pid = {pid} AND state = 'active'"))?.len() == 1;
    signal(pid, libc::SIGKILL)?;
    Ok(active)
}

/// After SIGKILL of a server process: wait until the postmaster has
/// noticed (it ends every session, `monitor`'s too), then for it to
/// accept connections again; returns a fresh monitor connection.
pub fn crash_recovered(monitor: &mut Client, cluster: &Cluster) -> Result<Client, String> {
    let started = Instant::now();
    while monitor.simple_query("SELECT 1").is_ok() {
        if started.elapsed() > REACH_LIMIT {
            return Err(format!(
                "the server did not restart within {} s of a process being killed",
                REACH_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    recovered(cluster)
}

/// Wait for the server to accept connections after a crash, and return a
/// fresh monitor connection.
pub fn recovered(cluster: &Cluster) -> Result<Client, String> {
    cluster
        .connect_when_ready("postgres", RECOVERY_LIMIT)
        .map_err(|e| {
            format!(
                "the server did not accept connections within {} s of the fault: {e}",
                RECOVERY_LIMIT.as_secs()
            )
        })
}

/// Stop the server in immediate mode and start it again; returns a fresh
/// monitor connection.
pub fn immediate_restart(cluster: &Cluster) -> Result<Client, String> {
    cluster
        .stop_immediate()
        .map_err(|e| format!("pg_ctl stop -m immediate: {e}"))?;
    cluster
        .start_again()
        .map_err(|e| format!("starting again after the immediate shutdown: {e}"))?;
    recovered(cluster)
}

/// A tmpfs the runner mounts for a tablespace, unmounted on drop.
pub struct SmallFilesystem {
    /// Where it is mounted (the tablespace directory is inside).
    pub mount: PathBuf,
}

impl SmallFilesystem {
    /// Mount a tmpfs of `kib` KiB at `mount`, owned by `owner` (the
    /// server account). Needs root: None with the reason otherwise.
    pub fn mount(mount: &Path, kib: u64, owner: Option<&str>) -> Result<SmallFilesystem, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a small filesystem needs root".into());
        }
        std::fs::create_dir_all(mount).map_err(|e| e.to_string())?;
        let mut opts = format!("size={kib}k,mode=0700");
        if let Some(owner) = owner {
            let uid = Command::new("id")
                .args(["-u", owner])
                .output()
                .map_err(|e| e.to_string())?;
            opts.push_str(&format!(
                ",uid={}",
                String::from_utf8_lossy(&uid.stdout).trim()
            ));
        }
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "tmpfs",
                &mount.display().to_string(),
            ],
        )?;
        Ok(SmallFilesystem {
            mount: mount.to_path_buf(),
        })
    }

    /// Resize it (tmpfs grows and shrinks in place).
    pub fn resize(&self, kib: u64) -> Result<(), String> {
        run(
            "mount",
            &[
                "-o",
                &format!("remount,size={kib}k"),
                &self.mount.display().to_string(),
            ],
        )
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &["-l", &self.mount.display().to_string()]) {
            eprintln!("chaos: could not unmount {}: {e}", self.mount.display());
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
