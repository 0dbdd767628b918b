//! SQLancer light against a real cluster: a seed replays the same
//! statements with the same outcome; failures shrink by query clauses; the
//! real SQLancer runs only when a jar is given.

use std::time::Duration;

use harness::checks::oracle::OracleOptions;
use harness::checks::sqlancer::{run_case, sqlancer_suite, Fate, SqlancerOptions};
use harness::testkit::{shared_cluster, test_root};
use oracles::outcome::Outcome;
use oracles::shrink::{self, Limits, Sandbox};
use oracles::tamper::{self, Tamper, Target};
use sqlancer::grammar::Simplifier;

fn options(seed: u64, queries: u64) -> SqlancerOptions {
    SqlancerOptions {
        seed,
        first: 0,
        time: Duration::from_secs(600),
        queries,
        min_checks: 1,
        max_rejected_pct: 50.0,
        concurrent_pct: 30,
        oracle: OracleOptions::default(),
    }
}

#[test]
fn same_seed_same_statements_and_same_outcome() {
    let dir = test_root().join(format!("sqlancer-same-{}", std::process::id()));
    let (a_suite, a) = sqlancer_suite(shared_cluster(), &dir, &options(77, 15));
    let (b_suite, b) = sqlancer_suite(shared_cluster(), &dir, &options(77, 15));
    assert_eq!(a.queries, 15);
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(&b).unwrap(),
        "two sessions with seed 77 differ"
    );
    let outcomes = |s: &harness::report::Suite| -> Vec<(String, Outcome)> {
        s.cases
            .iter()
            .map(|c| (c.name.clone(), c.outcome))
            .collect()
    };
    assert_eq!(outcomes(&a_suite), outcomes(&b_suite));
    assert!(a.checks > 0);
    assert!(
        a.concurrent_cases > 0 && a.concurrent_checks > 0,
        "no concurrent case among 15 at 30%: {a:?}"
    );
    for i in 0..15 {
        assert_eq!(
            sqlancer::case::case(77, i, 30).workload,
            sqlancer::case::case(77, i, 30).workload
        );
    }
}

struct Db;
impl Sandbox for Db {
    fn fresh_database(&mut self, name: &str) -> Result<postgres::Client, String> {
        shared_cluster()
            .fresh_database(&format!("t_{name}"))
            .map_err(|e| e.to_string())
    }
}

#[test]
fn a_failing_generated_query_shrinks_by_clauses() {
    // A generated DIFFERENTIAL query with several clauses, damaged behind the
    // engine's back: the damage does not depend on the clauses, so the
    // shrinker must remove them.
    // The first such case whose damage the oracle reports as a mismatch
    // (a case whose stream table is empty at step 2 has nothing to damage).
    let target = Target {
        workload: "generated",
        stream_table: "q",
        source: "t0",
    };
    let (case, w, failed) = (0..400)
        .find_map(|i| {
            let c = sqlancer::case::case(5, i, 0);
            let b = &c.query.branches;
            if b.len() != 1 || b[0].filters.len() < 2 || !b[0].group_by.is_empty() {
                return None;
            }
            match run_case(shared_cluster(), "t_sq_probe", &c.workload) {
                Ok((_, Fate::Ran(r)))
                    if r.passed() && r.modes[0].1 == "DIFFERENTIAL" && r.tally.pass > 0 => {}
                _ => return None,
            }
            let w = tamper::apply(&c.workload, Tamper::DuplicateRow, &target, 2);
            let mut db = Db.fresh_database("sq_tampered").unwrap();
            let failed = oracles::diff_vs_full::run(&mut db, &w);
            let caught = failed
                .failure()
                .is_some_and(|f| f.outcome == Outcome::Mismatch);
            caught.then_some((c, w, failed))
        })
        .expect("a multi-clause DIFFERENTIAL case among the first 400 whose damage is a mismatch");
    let simplifier = Simplifier::new(&case.query);
    let variants = |sql: &str| simplifier.variants(sql);
    let shrunk =
        shrink::shrink(&mut Db, &w, &failed, Limits::default(), &variants).expect("shrinks");
    let before = &w.stream_tables[0].query;
    let after = &shrunk.workload.stream_tables[0].query;
    assert!(
        after.len() < before.len(),
        "query not simplified:\n{before}\n{after}"
    );
    assert!(
        !after.contains(" WHERE "),
        "filters should be gone: {after}"
    );
}

/// Reported as ignored, not passed, when not asked for: run it with
/// `PGT_SQLANCER_JAR=/path/to/sqlancer.jar cargo test -p harness --test
/// e2e_sqlancer -- --ignored`.
#[test]
#[ignore = "issue 16: needs PGT_SQLANCER_JAR naming a SQLancer jar, and java (not on CI machines); run with --ignored"]
fn the_real_sqlancer_runs_only_when_a_jar_is_given() {
    let jar = std::env::var_os("PGT_SQLANCER_JAR").expect(
        "set PGT_SQLANCER_JAR to a SQLancer jar (and install java) to run the real SQLancer",
    );
    let dir = test_root().join(format!("sqlancer-external-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .arg("--pg-config")
        .arg(harness::testkit::pg_config())
        .arg("--run-dir")
        .arg(&dir)
        .args(["sqlancer", "--time", "30", "--seed", "1", "--external"])
        .arg(jar)
        .output()
        .expect("run harness");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
