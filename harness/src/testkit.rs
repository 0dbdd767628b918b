//! Shared fixtures for end-to-end tests: one real cluster per test binary,
//! stopped and removed when the process exits, and a fresh database per test.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::cluster::{Cluster, ClusterOptions};

static SHARED: OnceLock<Cluster> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(c) = SHARED.get() {
        let _ = c.stop();
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
            settings: vec!["pg_trickle.scheduler_interval_ms = 100".into()],
            preload: true,
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

use crate::check::{compare, last_refresh_mode};
use crate::cluster::describe as harness_describe;
use crate::workload::{DmlGen, TableSpec};

/// The seed for a test: `$PGT_SEED` when set, else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("PGT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A DIFFERENTIAL maintenance check: create `tables` with seeded rows, create
/// each `(name, query)` as a DIFFERENTIAL stream table, then `steps` times
/// apply a random DML batch, refresh, and require the stream table to equal
/// its query recomputed (as a multiset) and the refresh to have run
/// DIFFERENTIAL. Panics with the seed, the DML trace and a row diff.
pub fn check_differential(
    test: &str,
    tables: &[TableSpec],
    queries: &[(&str, &str)],
    steps: usize,
    default_seed: u64,
) {
    let seed = seed_or(default_seed);
    let mut db = database(test);
    let mut gen = DmlGen::new(seed);
    let mut trace: Vec<String> = Vec::new();
    let exec = |db: &mut postgres::Client, sql: &str, trace: &mut Vec<String>| {
        trace.push(sql.to_string());
        db.batch_execute(sql).unwrap_or_else(|e| {
            panic!(
                "seed {seed}: statement failed: {sql}: {}",
                harness_describe(&e)
            )
        });
    };
    for t in tables {
        exec(&mut db, &t.create_sql(), &mut trace);
        let n = 10 + gen.below(10);
        let sql = gen.insert(t, n);
        exec(&mut db, &sql, &mut trace);
    }
    for (name, query) in queries {
        let sql = format!(
            "SELECT pgtrickle.create_stream_table('{name}', $q${query}$q$, NULL, 'DIFFERENTIAL')"
        );
        exec(&mut db, &sql, &mut trace);
    }
    for step in 0..steps {
        for stmt in gen.batch(tables) {
            exec(&mut db, &stmt, &mut trace);
        }
        for (name, query) in queries {
            exec(
                &mut db,
                &format!("SELECT pgtrickle.refresh_stream_table('{name}')"),
                &mut trace,
            );
            let mismatch = compare(&mut db, name, query).expect("compare");
            let mode = last_refresh_mode(&mut db, name).expect("history");
            let failure = match (mismatch, mode.as_deref()) {
                (Some(m), _) => Some(m.to_string()),
                (None, Some("DIFFERENTIAL")) => None,
                (None, other) => Some(format!("refresh ran {other:?}, not DIFFERENTIAL")),
            };
            if let Some(why) = failure {
                panic!(
                    "{test}: stream table {name} wrong after step {step} (seed {seed})\nquery: {query}\n{why}\n\
                     DML trace:\n  {}\nreproduce: PGT_SEED={seed} cargo test -p harness --test e2e_operators -- --exact {test}",
                    trace.join(";\n  ")
                );
            }
        }
    }
}
