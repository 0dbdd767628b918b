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

/// The seed for a test: `$PGT_SEED` when set, else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("PGT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Run the named case from [`crate::cases`] in a fresh database; panic with
/// its failure report.
pub fn check_case(name: &str) {
    let case = crate::cases::named(name);
    let seed = seed_or(case.seed);
    let mut db = database(name);
    if let Err(report) =
        crate::diffcheck::run_case(&mut db, &case, seed, crate::diffcheck::DEFAULT_STEPS)
    {
        panic!(
            "{report}\nreproduce: PGT_SEED={seed} cargo test -p harness --test e2e_operators -- --exact {name}"
        );
    }
}
