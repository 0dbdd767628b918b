//! Real PostgreSQL clusters owned by the runner.
//!
//! A cluster is `initdb` into a run-scoped directory, a free loopback port,
//! `shared_preload_libraries = 'pg_trickle'`, started with `pg_ctl`. When
//! the runner is root the server runs as the unprivileged `postgres` account
//! (PostgreSQL refuses root); otherwise as the caller. Dropping a cluster
//! stops it, copies its server log into the run directory when one was
//! given, and removes its files unless [`Cluster::keep`] was called, in
//! which case their path is printed for inspection. Every live cluster is
//! registered so that Ctrl-C stops it too (see [`install_interrupt_handler`]).
//! A [`Topology`] is one coordinator and N workers, for distributed and
//! chaos work; a single node is the default everywhere else.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use thiserror::Error;

/// Failures starting or talking to a cluster.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// A PostgreSQL program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Tool {
        /// The program.
        program: String,
        /// Exit status text.
        status: String,
        /// What it printed on stderr (and stdout).
        stderr: String,
    },
    /// An I/O error around the cluster directory.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A client connection or statement failed.
    #[error("{}", describe(.0))]
    Connect(#[from] postgres::Error),
}

/// Options for a new cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `pg_config` of the PostgreSQL installation to use.
    pub pg_config: PathBuf,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
    /// Preload pg_trickle (starts the scheduler).
    pub preload: bool,
    /// Node name, used for its directory and log file (`node` if empty).
    pub name: String,
    /// Copy the server log here as `<name>.log` when the cluster stops.
    pub log_dir: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            pg_config: PathBuf::from("pg_config"),
            settings: Vec::new(),
            preload: true,
            name: "node".into(),
            log_dir: None,
        }
    }
}

/// A running cluster.
pub struct Cluster {
    /// Directory holding `data/` and `server.log`.
    pub dir: PathBuf,
    /// Loopback port.
    pub port: u16,
    /// Superuser name.
    pub user: String,
    bindir: PathBuf,
    run_as: Option<String>,
    keep: bool,
    name: String,
    log_dir: Option<PathBuf>,
}

/// A database error's SQLSTATE and message (postgres::Error's Display says only "db error").
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {}){}",
            db.severity(),
            db.message(),
            db.code().code(),
            db.hint().map(|h| format!(" HINT: {h}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The notices a connection received, as `SEVERITY: message` lines.
pub type Notices = std::sync::Arc<Mutex<Vec<String>>>;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "postgres".into())
}

fn check(program: &str, out: Output) -> Result<Output, ClusterError> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::Tool {
            program: program.to_string(),
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        })
    }
}

/// The bin directory of a PostgreSQL installation.
pub fn bindir(pg_config: &Path) -> Result<PathBuf, ClusterError> {
    let out = Command::new(pg_config).arg("--bindir").output()?;
    let out = check(&pg_config.display().to_string(), out)?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Cluster {
    /// `initdb` and start a new cluster under `parent` (a fresh directory is made inside it).
    pub fn start(parent: &Path, opts: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let bindir = bindir(&opts.pg_config)?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = if opts.name.is_empty() {
            "node".to_string()
        } else {
            opts.name.clone()
        };
        let dir = parent.join(format!("{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (run_as, user) = if is_root() {
            (Some("postgres".to_string()), "postgres".to_string())
        } else {
            (None, current_user())
        };
        let mut cluster = Cluster {
            dir,
            port: 0,
            user,
            bindir,
            run_as,
            keep: false,
            name,
            log_dir: opts.log_dir.clone(),
        };
        if let Some(owner) = &cluster.run_as {
            // The server account must own its directory and reach it.
            check(
                "chown",
                Command::new("chown")
                    .args(["-R", owner])
                    .arg(&cluster.dir)
                    .output()?,
            )?;
        }
        let data = cluster.data_dir();
        let initdb = cluster.bindir.join("initdb");
        cluster.run_tool(
            &initdb,
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                &cluster.user.clone(),
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", cluster.dir.display()),
            "fsync = off".into(),
            "max_connections = 50".into(),
            // Concurrent oracle workloads prepare transactions (two-phase commit).
            "max_prepared_transactions = 10".into(),
            "log_min_messages = warning".into(),
        ];
        if opts.preload {
            conf.push("shared_preload_libraries = 'pg_trickle'".into());
        }
        conf.extend(opts.settings.iter().cloned());
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str("\n# pg_trickle harness\n");
        text.push_str(&conf.join("\n"));
        text.push('\n');
        std::fs::write(&conf_path, text)?;

        // A port can be taken between choosing and binding it: retry a few times.
        let mut last_err = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            let pg_ctl = cluster.bindir.join("pg_ctl");
            let result = cluster.run_tool(
                &pg_ctl,
                &[
                    "-D",
                    &data.display().to_string(),
                    "-l",
                    &cluster.log_path().display().to_string(),
                    "-o",
                    &format!("-p {}", cluster.port),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            match result {
                Ok(_) => {
                    register(&cluster);
                    return Ok(cluster);
                }
                Err(e) => last_err = Some(e),
            }
        }
        cluster.keep = true;
        Err(last_err.expect("at least one attempt"))
    }

    fn run_tool(&self, program: &Path, args: &[&str]) -> Result<Output, ClusterError> {
        let out = tool_command(program, self.run_as.as_deref())
            .args(args)
            .output()?;
        check(&program.display().to_string(), out)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A libpq-style connection string for `dbname`.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname={dbname} connect_timeout=10",
            self.port, self.user
        )
    }

    /// Connect to `dbname`.
    pub fn connect(&self, dbname: &str) -> Result<postgres::Client, ClusterError> {
        Ok(postgres::Client::connect(
            &self.conninfo(dbname),
            postgres::NoTls,
        )?)
    }

    /// Connect to `dbname`, collecting every NOTICE and WARNING the server
    /// sends into the returned list.
    pub fn connect_collecting_notices(
        &self,
        dbname: &str,
    ) -> Result<(postgres::Client, Notices), ClusterError> {
        let notices = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = notices.clone();
        let mut config: postgres::Config = self
            .conninfo(dbname)
            .parse()
            .map_err(ClusterError::Connect)?;
        config.notice_callback(move |n| {
            if let Ok(mut v) = sink.lock() {
                v.push(format!("{}: {}", n.severity(), n.message()));
            }
        });
        Ok((config.connect(postgres::NoTls)?, notices))
    }

    /// Connect to `dbname` as `role` (clusters trust loopback logins, so
    /// any role with LOGIN can connect: tests use it to act as ordinary roles).
    pub fn connect_as(&self, dbname: &str, role: &str) -> Result<postgres::Client, ClusterError> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={role} dbname={dbname} connect_timeout=10",
            self.port
        );
        Ok(postgres::Client::connect(&conninfo, postgres::NoTls)?)
    }

    /// Create a database with pg_trickle installed and return a connection to it.
    pub fn fresh_database(&self, name: &str) -> Result<postgres::Client, ClusterError> {
        self.drop_database(name)?;
        let mut admin = self.connect("postgres")?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let mut client = self.connect(name)?;
        client.batch_execute("CREATE EXTENSION pg_trickle")?;
        Ok(client)
    }

    /// Drop database `name` if it exists, with the logical replication
    /// slots in it (capture from the WAL), which would keep it from going:
    /// its sessions are ended first so that no slot is in use.
    pub fn drop_database(&self, name: &str) -> Result<(), ClusterError> {
        let mut admin = self.connect("postgres")?;
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )?;
        for _ in 0..50 {
            let busy: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_replication_slots WHERE database = $1 AND active",
                    &[&name],
                )?
                .get(0);
            if busy == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active",
            &[&name],
        )?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        Ok(())
    }

    /// The database the scheduler watches (`pg_trickle.database`), created
    /// if missing and emptied in place (a database the scheduler is
    /// connected to cannot be dropped): the oracle's connections left in
    /// it are ended, its prepared transactions rolled back, pg_trickle and
    /// the public schema dropped and created again.
    pub fn scheduler_database(&self) -> Result<postgres::Client, ClusterError> {
        let mut admin = self.connect("postgres")?;
        let name: String = admin
            .query_one(
                "SELECT coalesce(current_setting('pg_trickle.database', true), 'postgres')",
                &[],
            )?
            .get(0);
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
            .is_some();
        if !exists {
            admin.batch_execute(&format!(
                "CREATE DATABASE \"{}\"",
                name.replace('"', "\"\"")
            ))?;
        }
        let mut db = self.connect(&name)?;
        db.batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'pgt_oracle%' AND pid <> pg_backend_pid()",
        )?;
        for row in db.query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
            &[],
        )? {
            let gid: String = row.get(0);
            db.batch_execute(&format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''")))?;
        }
        db.batch_execute(
            "DROP EXTENSION IF EXISTS pg_trickle CASCADE; DROP SCHEMA IF EXISTS public CASCADE; \
             CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC; \
             CREATE EXTENSION pg_trickle",
        )?;
        Ok(db)
    }

    /// Keep the cluster (stopped) and its files after drop, printing where they are.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Start the server again on the same data directory and port (after
    /// [`Cluster::stop`], for example to load a new library build).
    pub fn start_again(&self) -> Result<(), ClusterError> {
        let pg_ctl = self.bindir.join("pg_ctl");
        self.run_tool(
            &pg_ctl,
            &[
                "-D",
                &self.data_dir().display().to_string(),
                "-l",
                &self.log_path().display().to_string(),
                "-o",
                &format!("-p {}", self.port),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        register(self);
        Ok(())
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stop the server.
    pub fn stop(&self) -> Result<(), ClusterError> {
        unregister(&self.data_dir());
        stop_data_dir(
            &self.bindir,
            &self.data_dir(),
            self.run_as.as_deref(),
            "fast",
        )
    }

    /// Stop the server with `pg_ctl stop -m immediate`: every process
    /// exits at once without a checkpoint, as in a power cut; the next
    /// start runs crash recovery.
    pub fn stop_immediate(&self) -> Result<(), ClusterError> {
        unregister(&self.data_dir());
        stop_data_dir(
            &self.bindir,
            &self.data_dir(),
            self.run_as.as_deref(),
            "immediate",
        )
    }

    /// Connect to `dbname`, retrying until the server accepts connections
    /// again (after a crash restart or a start) or `limit` has passed.
    pub fn connect_when_ready(
        &self,
        dbname: &str,
        limit: Duration,
    ) -> Result<postgres::Client, ClusterError> {
        let started = std::time::Instant::now();
        loop {
            match self.connect(dbname) {
                Ok(c) => return Ok(c),
                Err(e) if started.elapsed() < limit => {
                    tracing::debug!("{}: not ready yet: {e}", self.name);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The account the server runs as (`postgres` when the runner is root).
    pub fn server_account(&self) -> Option<&str> {
        self.run_as.as_deref()
    }

    /// Copy the server log into the log directory, if one was given.
    fn save_log(&self) {
        if let Some(dir) = &self.log_dir {
            if std::fs::create_dir_all(dir).is_ok() {
                let _ = std::fs::copy(self.log_path(), dir.join(format!("{}.log", self.name)));
            }
        }
    }
}

fn tool_command(program: &Path, run_as: Option<&str>) -> Command {
    match run_as {
        Some(user) => {
            let mut cmd = if which("runuser") {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]);
                c
            } else {
                let mut c = Command::new("sudo");
                c.args(["-n", "-u", user, "--"]);
                c
            };
            cmd.arg(program).current_dir("/");
            cmd
        }
        None => Command::new(program),
    }
}

fn stop_data_dir(
    bindir: &Path,
    data: &Path,
    run_as: Option<&str>,
    mode: &str,
) -> Result<(), ClusterError> {
    let pg_ctl = bindir.join("pg_ctl");
    let out = tool_command(&pg_ctl, run_as)
        .args(["-D", &data.display().to_string(), "-m", mode, "-w", "stop"])
        .output()?;
    check(&pg_ctl.display().to_string(), out).map(|_| ())
}

/// A live cluster as the interrupt handler needs it.
struct Live {
    bindir: PathBuf,
    data: PathBuf,
    run_as: Option<String>,
    dir: PathBuf,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn register(c: &Cluster) {
    if let Ok(mut live) = LIVE.lock() {
        live.push(Live {
            bindir: c.bindir.clone(),
            data: c.data_dir(),
            run_as: c.run_as.clone(),
            dir: c.dir.clone(),
        });
    }
}

fn unregister(data: &Path) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|l| l.data != data);
    }
}

extern "C" fn on_interrupt(_sig: libc::c_int) {
    // Only an atomic store: the watcher thread does the work.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Stop every live cluster on Ctrl-C (SIGINT) or SIGTERM, print where
/// their files are, and exit with status 130. Call once, from the binary.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
    std::thread::spawn(|| loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            let live = LIVE
                .lock()
                .map(|mut l| std::mem::take(&mut *l))
                .unwrap_or_default();
            eprintln!("\nharness: interrupted; stopping {} cluster(s)", live.len());
            for l in live {
                let _ = stop_data_dir(&l.bindir, &l.data, l.run_as.as_deref(), "immediate");
                eprintln!("kept cluster files: {}", l.dir.display());
            }
            std::process::exit(130);
        }
        std::thread::sleep(Duration::from_millis(100));
    });
}

/// How many nodes a topology has besides its coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologySpec {
    /// Worker nodes (0: a single node).
    pub workers: usize,
}

/// One coordinator and N workers, each its own cluster.
pub struct Topology {
    /// The node clients talk to.
    pub coordinator: Cluster,
    /// Further nodes.
    pub workers: Vec<Cluster>,
}

impl Topology {
    /// Start every node of `spec` under `parent` with `opts` (names are
    /// `coordinator`, `worker1`, ...).
    pub fn start(
        parent: &Path,
        opts: &ClusterOptions,
        spec: TopologySpec,
    ) -> Result<Topology, ClusterError> {
        let node = |name: String| ClusterOptions {
            name,
            ..opts.clone()
        };
        let coordinator = Cluster::start(parent, &node("coordinator".into()))?;
        let mut workers = Vec::with_capacity(spec.workers);
        for i in 1..=spec.workers {
            workers.push(Cluster::start(parent, &node(format!("worker{i}")))?);
        }
        Ok(Topology {
            coordinator,
            workers,
        })
    }

    /// Every node, coordinator first.
    pub fn nodes(&self) -> impl Iterator<Item = &Cluster> {
        std::iter::once(&self.coordinator).chain(self.workers.iter())
    }

    /// Keep every node's files after drop.
    pub fn keep(&mut self) {
        self.coordinator.keep();
        for w in &mut self.workers {
            w.keep();
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
        self.save_log();
        if self.keep {
            eprintln!(
                "kept cluster files: {} (server log: {})",
                self.dir.display(),
                self.log_path().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
