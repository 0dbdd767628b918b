//! Shared fixtures for end-to-end tests: one real cluster per test binary,
//! stopped and removed when the process exits, and a fresh database per test.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::cluster::{Cluster, ClusterOptions};

static SHARED: OnceLock<Cluster> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(c) = SHARED.get() {
        let _ = c.stop();
        // The server log outlives the cluster, for a failure to be read
        // after the run (the next run of this binary replaces it).
        let _ = std::fs::copy(
            c.dir.join("server.log"),
            test_root().join("shared-server.log"),
        );
        let _ = std::fs::remove_dir_all(&c.dir);
    }
}

/// Where test clusters live.
pub fn test_root() -> PathBuf {
    let dir = std::env::temp_dir().join("pg_trickle-tests");
    std::fs::create_dir_all(&dir).expect("create test cluster root");
    dir
}

/// The `pg_config` to test against: `$PG_CONFIG`, else the one on `PATH`.
pub fn pg_config() -> PathBuf {
    std::env::var_os("PG_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("pg_config"))
}

/// The cluster shared by every test in this binary (scheduler polling fast).
pub fn shared_cluster() -> &'static Cluster {
    SHARED.get_or_init(|| {
        let opts = ClusterOptions {
            pg_config: pg_config(),
            // As the oracle's clusters: capture from the WAL works here too.
            settings: crate::checks::oracle::oracle_cluster_settings(),
            name: "test".into(),
            ..ClusterOptions::default()
        };
        let c = Cluster::start(&test_root(), &opts).unwrap_or_else(|e| {
            panic!("could not start a test cluster (is pg_trickle installed? run ci/setup.sh): {e}")
        });
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(stop_shared) };
        c
    })
}

/// A fresh database named after the test, with pg_trickle installed.
pub fn database(name: &str) -> postgres::Client {
    shared_cluster()
        .fresh_database(&format!("t_{name}"))
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"))
}

/// The seed for a test: `$PGT_SEED` when set, else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("PGT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Run the named corpus workload through the DIFF-vs-FULL oracle in a
/// fresh database; on failure, shrink it and panic with the report, the
/// replay file and the commands that reproduce it.
pub fn check_workload(name: &str) {
    check_workload_captured(name, oracles::workload::Capture::Trigger);
}

/// [`check_workload`] with the workload's sources captured `capture`.
pub fn check_workload_captured(name: &str, capture: oracles::workload::Capture) {
    let entry = oracles::corpus::entry(name).unwrap_or_else(|| panic!("no corpus workload {name}"));
    let seed = seed_or(entry.seed);
    let opts = crate::checks::oracle::OracleOptions {
        capture,
        ..Default::default()
    };
    let w = (entry.build)(seed, opts.steps).with_capture(capture);
    let (test, flag) = match capture {
        oracles::workload::Capture::Trigger => (name.to_string(), ""),
        oracles::workload::Capture::Wal => (format!("wal::{name}"), " --capture wal"),
    };
    let reproduce = format!(
        "PGT_SEED={seed} cargo test -p harness --test e2e_corpus -- --exact {test}  (or: harness oracle --workload {name} --seed {seed}{flag})"
    );
    let c = crate::checks::oracle::run_one(shared_cluster(), &test_root(), &opts, &w, reproduce);
    if c.outcome != oracles::outcome::Outcome::Pass {
        panic!(
            "{}\n{}\nreplay files: {:?}\nreproduce: {}",
            c.message.unwrap_or_default(),
            c.details.unwrap_or_default(),
            c.replay_files,
            c.reproduce.unwrap_or_default()
        );
    }
}

/// A cluster of its own for a test that needs server-wide settings
/// (removed when dropped).
pub fn dedicated_cluster(name: &str, settings: &[&str]) -> Cluster {
    let opts = ClusterOptions {
        pg_config: pg_config(),
        settings: settings.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        ..ClusterOptions::default()
    };
    Cluster::start(&test_root(), &opts)
        .unwrap_or_else(|e| panic!("could not start cluster {name}: {e}"))
}

/// A statement's outcome as (SQLSTATE, message): `("ok", "")` when it
/// succeeded, `("client", text)` for an error that did not come from the
/// server.
pub fn code(r: Result<impl Sized, postgres::Error>) -> (String, String) {
    match r {
        Ok(_) => ("ok".into(), String::new()),
        Err(e) => e
            .as_db_error()
            .map(|d| (d.code().code().to_string(), d.message().to_string()))
            .unwrap_or_else(|| ("client".into(), e.to_string())),
    }
}

/// The first column of every row `sql` returns; panics naming the
/// statement when it fails.
pub fn first_column<T: postgres::types::FromSqlOwned>(
    db: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Vec<T> {
    db.query(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Run the worked example of a document (the first `sql` block after its
/// `## A worked example` heading) in `db` as one simple-protocol batch,
/// and panic unless the rows of its last statement, tab-separated, equal
/// the `text` block that follows it. Keeps the docs' examples true.
pub fn check_doc_example(db: &mut postgres::Client, doc: &std::path::Path) {
    let text = std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    let after = text
        .split_once("## A worked example")
        .unwrap_or_else(|| panic!("{} has no worked example", doc.display()))
        .1;
    let block = |s: &str, fence: &str| -> (String, usize) {
        let start = s
            .find(fence)
            .unwrap_or_else(|| panic!("{}: no {fence} block in the worked example", doc.display()))
            + fence.len();
        let len = s[start..].find("\n```").expect("a closed block");
        (s[start..start + len].trim().to_string(), start + len + 4)
    };
    let (sql, end) = block(after, "```sql\n");
    let (expected, _) = block(&after[end..], "```text\n");
    let messages = db
        .simple_query(&sql)
        .unwrap_or_else(|e| panic!("the worked example of {} fails: {e}", doc.display()));
    // The rows of each statement, closed by its CommandComplete.
    let (mut current, mut last) = (Vec::new(), Vec::new());
    for m in messages {
        match m {
            postgres::SimpleQueryMessage::Row(r) => {
                let cols: Vec<&str> = (0..r.len()).map(|i| r.get(i).unwrap_or("")).collect();
                current.push(cols.join("\t"));
            }
            postgres::SimpleQueryMessage::CommandComplete(_) => {
                last = std::mem::take(&mut current);
            }
            _ => {}
        }
    }
    let got = last.join("\n");
    assert_eq!(
        got,
        expected,
        "the worked example of {} prints something else than the document says",
        doc.display()
    );
}

/// A fresh database `t_<name>` (see [`database`]) with login roles
/// `owner` (which may create in schema public) and `others`: returns the
/// superuser's client and one connected as `owner`.
pub fn database_with_owner(
    name: &str,
    owner: &str,
    others: &[&str],
) -> (postgres::Client, postgres::Client) {
    let mut su = database(name);
    let mut sql = format!("CREATE ROLE {owner} LOGIN; GRANT CREATE ON SCHEMA public TO {owner};");
    for r in others {
        sql.push_str(&format!(" CREATE ROLE {r} LOGIN;"));
    }
    su.batch_execute(&sql)
        .unwrap_or_else(|e| panic!("creating roles for {name}: {e}"));
    let as_owner = shared_cluster()
        .connect_as(&format!("t_{name}"), owner)
        .unwrap_or_else(|e| panic!("connecting as {owner}: {e}"));
    (su, as_owner)
}
