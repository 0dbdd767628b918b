//! TPC-H through the DIFF-vs-FULL oracle: load a scale factor with
//! `tpchgen`, make each of the 22 queries an AUTO stream table, then for
//! every cycle apply a seeded change set (RF1 new orders, RF2 deletions,
//! line-item updates), refresh, and check each stream table against its
//! query and against the mode the engine chose. Per query it records the
//! mode, the fallback reason and the refresh times (p50, p99). At scale
//! factor 1, each stream table as first populated is also checked against
//! the answer `tpchgen` publishes for its query (the outside cross-check).
//!
//! This is the correctness half of the TPC-H work; the per-phase EXPLAIN
//! artifacts, baselines and the regression gate build on it.

pub mod baseline;
pub mod command;
pub mod gate;

use std::time::Instant;

use oracles::compare::differences;
use oracles::engine_api::{effective_mode, last_refresh_mode};
use oracles::outcome::{Outcome, Tally};
use tpch::gate::percentile;

pub use tpch::figures::{PhaseExplain, PhaseInfo, PhasePlan, QueryFigures, TimedPair};

use crate::cluster::{describe, Cluster};
use crate::report::{CaseReport, Suite};

/// What to run.
#[derive(Debug, Clone)]
pub struct TpchOptions {
    /// Scale factor.
    pub sf: f64,
    /// Refresh cycles.
    pub cycles: u64,
    /// Fraction of the orders each change set inserts and deletes.
    pub fraction: f64,
    /// Seed of the change sets.
    pub seed: u64,
    /// Queries to run (all when empty), e.g. `q04`.
    pub only: Vec<String>,
    /// Session settings applied after loading (to inject a regression,
    /// e.g. `enable_hashjoin = off`).
    pub settings: Vec<String>,
    /// Database to (re)create for the run.
    pub database: String,
}

/// A generated phase of a stream table, ready to prepare.
struct Phase {
    info: PhaseInfo,
    sql: String,
    /// Parameters the next refresh will bind, as text.
    params: Vec<Option<String>>,
}

/// The phases of stream table `st` as `stream_table_sql` lists them.
fn phases(db: &mut postgres::Client, st: &str) -> Result<Vec<Phase>, postgres::Error> {
    Ok(db
        .query(
            "SELECT phase, sql, hash, writes, parameters FROM pgtrickle.stream_table_sql($1)",
            &[&st],
        )?
        .into_iter()
        .map(|r| Phase {
            info: PhaseInfo {
                phase: r.get(0),
                hash: r.get(2),
                writes: r.get(3),
            },
            sql: r.get(1),
            params: r
                .get::<_, Option<Vec<Option<String>>>>(4)
                .unwrap_or_default(),
        })
        .collect())
}

/// `PREPARE name AS <phase>` and the argument list its EXECUTE needs.
fn prepare(db: &mut postgres::Client, name: &str, p: &Phase) -> Result<String, postgres::Error> {
    let (decl, args) = if p.params.is_empty() {
        (String::new(), String::new())
    } else {
        let types = vec!["text"; p.params.len()].join(", ");
        let args = p
            .params
            .iter()
            .map(|v| match v {
                Some(v) => format!("'{}'", v.replace('\'', "''")),
                None => "NULL".into(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        (format!("({types})"), format!("({args})"))
    };
    db.batch_execute(&format!("PREPARE {name}{decl} AS {}", p.sql))?;
    Ok(args)
}

/// EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) prepared statement `name` of
/// stream table `st`. A writing phase runs in a transaction that is rolled
/// back.
fn explain_prepared(
    db: &mut postgres::Client,
    st: &str,
    name: &str,
    args: &str,
    writes: bool,
) -> Result<serde_json::Value, postgres::Error> {
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}{args}");
    let result = if writes {
        // A writing phase run by hand is a direct write, which the
        // stream table's read-only trigger refuses: switch it off for
        // the measurement, in the transaction that is rolled back.
        // (Builds before 0.40.0 have no such trigger: the harness
        // measures them too, for side-by-side comparisons.)
        db.batch_execute(&format!(
            "BEGIN; DO $pgt$ BEGIN IF EXISTS (SELECT 1 FROM pg_trigger \
             WHERE tgrelid = '{st}'::regclass AND tgname = 'pgt_readonly') THEN \
             ALTER TABLE {st} DISABLE TRIGGER pgt_readonly; END IF; END $pgt$"
        ))?;
        let r = db.query_one(&explain, &[]);
        db.batch_execute("ROLLBACK")?;
        r
    } else {
        db.query_one(&explain, &[])
    };
    Ok(result?.get::<_, serde_json::Value>(0))
}

/// EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) every phase of stream table `st`
/// (except `populate`) bound to the parameters the next refresh will use.
/// Writing phases run in a transaction that is rolled back.
fn explain_phases(
    db: &mut postgres::Client,
    st: &str,
    all: &[Phase],
) -> Result<Vec<PhasePlan>, postgres::Error> {
    let mut plans = Vec::new();
    for p in all.iter().filter(|p| p.info.phase != "populate") {
        let args = prepare(db, "pgt_phase", p)?;
        let plan = explain_prepared(db, st, "pgt_phase", &args, p.info.writes);
        db.batch_execute("DEALLOCATE pgt_phase")?;
        plans.push((p.info.phase.clone(), plan?));
    }
    Ok(plans)
}

/// Interleaved rounds of the FULL recompute and the DIFFERENTIAL
/// statement per cycle: their times, side by side, make the ratio the
/// gate judges (the order alternates, so neither always runs on a warmer
/// cache; a change in load hits both).
pub const TIMED_ROUNDS: u64 = 4;

/// A connection whose executor reports its CPU and elapsed time per
/// statement (`log_executor_stats`, sent back to the client), with the
/// session settings of the run (an injected regression applies here too).
pub struct TimingConnection {
    db: postgres::Client,
    usage: std::sync::Arc<std::sync::Mutex<Vec<tpch::plans::ExecutorUsage>>>,
}

impl TimingConnection {
    /// Connect to `database` of `cluster` with `settings` applied.
    pub fn open(
        cluster: &Cluster,
        database: &str,
        settings: &[String],
    ) -> Result<TimingConnection, String> {
        let usage = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = usage.clone();
        let mut config: postgres::Config = cluster
            .conninfo(database)
            .parse()
            .map_err(|e: postgres::Error| e.to_string())?;
        config.notice_callback(move |n| {
            if n.message() == "EXECUTOR STATISTICS" {
                if let Some(u) = n.detail().and_then(tpch::plans::executor_usage) {
                    if let Ok(mut v) = sink.lock() {
                        v.push(u);
                    }
                }
            }
        });
        let mut db = config.connect(postgres::NoTls).map_err(|e| describe(&e))?;
        let mut setup = vec![
            "SET jit = off".to_string(),
            "SET client_min_messages = log".to_string(),
        ];
        setup.extend(settings.iter().map(|s| format!("SET {s}")));
        for sql in setup {
            db.batch_execute(&sql).map_err(|e| describe(&e))?;
        }
        Ok(TimingConnection { db, usage })
    }

    /// Run prepared statement `name` of stream table `st` once (a writing
    /// one in a transaction that is rolled back) and return its executor
    /// usage.
    fn time(
        &mut self,
        st: &str,
        name: &str,
        args: &str,
        writes: bool,
    ) -> Result<tpch::plans::ExecutorUsage, String> {
        let db = &mut self.db;
        let err = |e: postgres::Error| describe(&e);
        if writes {
            db.batch_execute(&format!(
                "BEGIN; DO $pgt$ BEGIN IF EXISTS (SELECT 1 FROM pg_trigger \
                 WHERE tgrelid = '{st}'::regclass AND tgname = 'pgt_readonly') THEN \
                 ALTER TABLE {st} DISABLE TRIGGER pgt_readonly; END IF; END $pgt$"
            ))
            .map_err(err)?;
        }
        if let Ok(mut v) = self.usage.lock() {
            v.clear();
        }
        let ran = db
            .batch_execute("SET log_executor_stats = on")
            .and_then(|()| db.batch_execute(&format!("EXECUTE {name}{args}")))
            .and_then(|()| db.batch_execute("SET log_executor_stats = off"));
        let taken: Vec<tpch::plans::ExecutorUsage> = self
            .usage
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        if writes {
            db.batch_execute("ROLLBACK").map_err(err)?;
        }
        ran.map_err(err)?;
        // EXECUTE runs the prepared statement in a portal of its own inside
        // the EXECUTE's portal: each reports, and the outermost, which spans
        // the others, took longest.
        taken
            .into_iter()
            .max_by(|a, b| a.elapsed_ms.total_cmp(&b.elapsed_ms))
            .ok_or_else(|| {
                format!(
                    "EXECUTE {name} of {st} reported no executor statistics (log_executor_stats)"
                )
            })
    }
}

/// [`TIMED_ROUNDS`] interleaved FULL/DIFF measurements of stream table
/// `st` in `cycle` on the timing connection; none when it has no
/// differential statement.
fn timed_pairs(
    timing: &mut TimingConnection,
    st: &str,
    all: &[Phase],
    cycle: u64,
) -> Result<Vec<TimedPair>, String> {
    let find = |name: &str| all.iter().find(|p| p.info.phase == name);
    let (Some(full), Some(diff)) = (find("full_recompute"), find("differential")) else {
        return Ok(Vec::new());
    };
    let full_args = prepare(&mut timing.db, "pgt_full", full).map_err(|e| describe(&e))?;
    let diff_args = prepare(&mut timing.db, "pgt_diff", diff).map_err(|e| describe(&e))?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for round in 0..TIMED_ROUNDS {
        let mut one = |name: &str, args: &str, writes: bool| timing.time(st, name, args, writes);
        let pair = if round % 2 == 0 {
            one("pgt_full", &full_args, full.info.writes)
                .and_then(|f| Ok((f, one("pgt_diff", &diff_args, diff.info.writes)?)))
        } else {
            one("pgt_diff", &diff_args, diff.info.writes)
                .and_then(|d| Ok((one("pgt_full", &full_args, full.info.writes)?, d)))
        };
        match pair {
            Ok((f, d)) => out.push(TimedPair {
                cycle,
                full_ms: f.cpu_ms,
                diff_ms: d.cpu_ms,
                full_elapsed_ms: f.elapsed_ms,
                diff_elapsed_ms: d.elapsed_ms,
            }),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    timing
        .db
        .batch_execute("DEALLOCATE pgt_full; DEALLOCATE pgt_diff")
        .map_err(|e| describe(&e))?;
    result.map(|()| out)
}

/// Compare stream table `st`, as just populated, with `tpchgen`'s
/// published answer for its query.
pub fn published_answer_check(
    db: &mut postgres::Client,
    st: &str,
    answer: &tpch::answers::Published,
) -> Result<tpch::answers::AnswerCheck, postgres::Error> {
    let columns = oracles::compare::stream_table_columns(db, st)?;
    let list = columns
        .iter()
        .map(|(c, _)| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<Vec<Option<String>>> = db
        .simple_query(&format!("SELECT {list} FROM {st}"))?
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|k| r.get(k).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect();
    Ok(tpch::answers::check(answer, &rows))
}

/// Turns autovacuum back on (as the cluster's configuration has it) when
/// the TPC-H run ends, however it ends.
struct RestoreAutovacuum<'a>(&'a Cluster);

impl Drop for RestoreAutovacuum<'_> {
    fn drop(&mut self) {
        if let Ok(mut db) = self.0.connect("postgres") {
            let _ = db.batch_execute("ALTER SYSTEM RESET autovacuum; SELECT pg_reload_conf()");
        }
    }
}

fn fail(name: &str, why: String) -> CaseReport {
    let mut t = Tally::default();
    t.add(Outcome::HarnessError);
    let mut c = CaseReport::new(name, Outcome::HarnessError, t, 0);
    c.message = Some(why);
    c
}

/// Run TPC-H in a fresh database of `cluster`.
pub fn tpch_suite(cluster: &Cluster, opts: &TpchOptions) -> (Suite, Vec<QueryFigures>) {
    let started = Instant::now();
    let suite =
        |cases: Vec<CaseReport>| Suite::new("tpch", cases, started.elapsed().as_secs_f64(), None);
    let mut db = match cluster.fresh_database(&opts.database) {
        Ok(db) => db,
        Err(e) => return (suite(vec![fail("setup", e.to_string())]), Vec::new()),
    };
    for ddl in tpch::schema::ddl() {
        if let Err(e) = db.batch_execute(ddl) {
            return (suite(vec![fail("schema", describe(&e))]), Vec::new());
        }
    }
    let t = Instant::now();
    match tpch::data::load(&mut db, opts.sf) {
        Ok(counts) => println!(
            "tpch: loaded SF {} in {:.1} s ({} lineitem rows)",
            opts.sf,
            t.elapsed().as_secs_f64(),
            counts.last().map(|c| c.1).unwrap_or(0)
        ),
        Err(e) => return (suite(vec![fail("load", e)]), Vec::new()),
    }
    // Plans must not depend on when autovacuum happens to analyze a table
    // (under load it runs at other moments): it is off while TPC-H runs on
    // this cluster, and statistics are complete rather than sampled.
    for sql in [
        "ALTER SYSTEM SET autovacuum = off",
        "SELECT pg_reload_conf()",
        "SET default_statistics_target = 1000",
        "ANALYZE",
        "RESET default_statistics_target",
    ] {
        if let Err(e) = db.batch_execute(sql) {
            return (suite(vec![fail("analyze", describe(&e))]), Vec::new());
        }
    }
    let _autovacuum = RestoreAutovacuum(cluster);
    // Refreshes run their statements with JIT off; EXPLAIN them the same way.
    let _ = db.batch_execute("SET jit = off");
    // Every cycle checks the differential statement: AUTO must not recompute
    // a change set its estimates call cheaper to recompute (at SF 1 a change
    // set is past pg_trickle.adaptive_min_changes).
    if let Err(e) = db.batch_execute("SET pg_trickle.adaptive_auto = off") {
        return (suite(vec![fail("settings", describe(&e))]), Vec::new());
    }
    for setting in &opts.settings {
        if let Err(e) = db.batch_execute(&format!("SET {setting}")) {
            return (suite(vec![fail("settings", describe(&e))]), Vec::new());
        }
    }
    let mut timing = match TimingConnection::open(cluster, &opts.database, &opts.settings) {
        Ok(t) => t,
        Err(e) => return (suite(vec![fail("timing connection", e)]), Vec::new()),
    };
    let queries: Vec<tpch::queries::Query> = tpch::queries::queries(opts.sf)
        .into_iter()
        .filter(|q| opts.only.is_empty() || opts.only.iter().any(|o| o == q.name))
        .collect();
    let mut figures = Vec::new();
    let mut cases: Vec<CaseReport> = Vec::new();
    for q in &queries {
        let created = db.execute(
            "SELECT pgtrickle.create_stream_table($1, $2, NULL, 'AUTO')",
            &[&q.name, &q.sql],
        );
        if let Err(e) = created {
            let mut t = Tally::default();
            t.add(Outcome::EngineError);
            let mut c = CaseReport::new(q.name, Outcome::EngineError, t, 0);
            c.message = Some(describe(&e));
            cases.push(c);
            continue;
        }
        let (mode, reason) = effective_mode(&mut db, q.name).unwrap_or_else(|_| ("?".into(), None));
        figures.push(QueryFigures {
            mode,
            fallback_reason: reason,
            ..QueryFigures::unmeasured(q.name)
        });
    }
    let mut tallies: Vec<Tally> = vec![Tally::default(); figures.len()];
    let mut problems: Vec<Option<String>> = vec![None; figures.len()];
    // Checks each query must pass: one per cycle, plus the published answer.
    let mut required: Vec<u64> = vec![opts.cycles; figures.len()];
    for (i, f) in figures.iter().enumerate() {
        let Some(answer) = tpch::answers::published(&f.query, opts.sf) else {
            continue;
        };
        required[i] += 1;
        match published_answer_check(&mut db, &f.query, &answer) {
            Ok(c) if c.passed() => {
                println!("tpch: {c}");
                tallies[i].add(Outcome::Pass);
            }
            Ok(c) => {
                tallies[i].add(Outcome::Mismatch);
                problems[i] = Some(c.to_string());
            }
            Err(e) => {
                tallies[i].add(Outcome::HarnessError);
                problems[i] = Some(format!(
                    "reading the stream table for the published answer: {}",
                    describe(&e)
                ));
            }
        }
    }
    for cycle in 1..=opts.cycles {
        let max_key: i64 = db
            .query_one("SELECT coalesce(max(o_orderkey), 0) FROM orders", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        for stmt in tpch::data::change_set(opts.seed, cycle, opts.sf, opts.fraction, max_key) {
            if let Err(e) = db.batch_execute(&stmt) {
                cases.push(fail(&format!("change set {cycle}"), describe(&e)));
                return (suite(cases), figures);
            }
        }
        for (i, f) in figures.iter_mut().enumerate() {
            if problems[i].is_some() {
                continue;
            }
            let query = &queries
                .iter()
                .find(|q| q.name == f.query)
                .expect("query")
                .sql;
            let measured = phases(&mut db, &f.query)
                .and_then(|all| {
                    let plans = explain_phases(&mut db, &f.query, &all)?;
                    Ok((all, plans))
                })
                .map_err(|e| describe(&e))
                .and_then(|(all, plans)| {
                    let pairs = timed_pairs(&mut timing, &f.query, &all, cycle)?;
                    Ok((all, plans, pairs))
                });
            match measured {
                Ok((all, plans, pairs)) => {
                    f.phases = all.into_iter().map(|p| p.info).collect();
                    for (phase, plan) in &plans {
                        f.explains.push(PhaseExplain {
                            cycle,
                            phase: phase.clone(),
                            facts: tpch::plans::facts(plan),
                        });
                    }
                    f.last_plans = plans;
                    f.pairs.extend(pairs);
                }
                Err(e) => {
                    let _ = db.batch_execute("ROLLBACK; DEALLOCATE ALL");
                    tallies[i].add(Outcome::HarnessError);
                    let _ = timing.db.batch_execute("ROLLBACK; DEALLOCATE ALL");
                    problems[i] = Some(format!("cycle {cycle}: measuring a phase failed: {e}"));
                    continue;
                }
            }
            let t = Instant::now();
            let refreshed = db.batch_execute(&format!(
                "SELECT pgtrickle.refresh_stream_table('{}')",
                f.query
            ));
            f.refresh_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let verdict = match refreshed {
                Err(e) => Some((Outcome::EngineError, describe(&e))),
                Ok(()) => match (
                    last_refresh_mode(&mut db, &f.query),
                    differences(&mut db, &f.query, query),
                ) {
                    (Ok(m), Ok(None)) if m.as_deref() == Some(f.mode.as_str()) => None,
                    (Ok(m), Ok(None)) => Some((
                        Outcome::Mismatch,
                        format!(
                            "cycle {cycle}: the refresh ran {m:?}, but the stream table is {}",
                            f.mode
                        ),
                    )),
                    (_, Ok(Some(d))) => Some((
                        Outcome::Mismatch,
                        format!("cycle {cycle}: rows differ\n{d}"),
                    )),
                    (Err(e), _) | (_, Err(e)) => Some((Outcome::HarnessError, describe(&e))),
                },
            };
            match verdict {
                None => tallies[i].add(Outcome::Pass),
                Some((o, why)) => {
                    tallies[i].add(o);
                    problems[i] = Some(why);
                }
            }
        }
        println!(
            "tpch: cycle {cycle} of {} done ({:.1} s)",
            opts.cycles,
            started.elapsed().as_secs_f64()
        );
    }
    for (i, f) in figures.iter_mut().enumerate() {
        f.p50_ms = percentile(&f.refresh_ms, 50.0);
        f.p99_ms = percentile(&f.refresh_ms, 99.0);
        let phase_p50 = |phase: &str| {
            let v: Vec<f64> = f
                .explains
                .iter()
                .filter(|e| e.phase == phase)
                .map(|e| e.facts.execution_ms)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                percentile(&v, 50.0)
            }
        };
        // Side-by-side measurements where there are some; the single
        // EXPLAIN of every phase otherwise (FULL stream tables).
        if f.pairs.is_empty() {
            f.full_p50_ms = phase_p50("full_recompute");
            f.diff_p50_ms = phase_p50("differential");
        } else {
            let of = |pick: fn(&TimedPair) -> f64| {
                percentile(&f.pairs.iter().map(pick).collect::<Vec<_>>(), 50.0)
            };
            f.full_p50_ms = of(|p| p.full_ms);
            f.diff_p50_ms = of(|p| p.diff_ms);
            f.ratio_p50 = Some(of(TimedPair::ratio));
        }
        f.temp_blocks = f
            .explains
            .iter()
            .map(|e| e.facts.temp_read_blocks + e.facts.temp_written_blocks)
            .max()
            .unwrap_or(0);
        let outcome = match (&problems[i], tallies[i].pass as u64 == required[i]) {
            (None, true) => Outcome::Pass,
            (None, false) => Outcome::HarnessError,
            (Some(_), _) => {
                if tallies[i].mismatch > 0 {
                    Outcome::Mismatch
                } else if tallies[i].engine_error > 0 {
                    Outcome::EngineError
                } else {
                    Outcome::HarnessError
                }
            }
        };
        let mut c = CaseReport::new(
            &f.query,
            outcome,
            tallies[i],
            f.refresh_ms.iter().sum::<f64>() as u128,
        );
        c.message = problems[i]
            .as_ref()
            .map(|p| p.lines().next().unwrap_or("").to_string());
        c.details = problems[i].clone();
        c.reproduce = Some(format!(
            "harness tpch --sf {} --cycles {} --seed {} --query {}",
            opts.sf, opts.cycles, opts.seed, f.query
        ));
        c.facts = serde_json::to_value(&*f).unwrap_or_default();
        cases.push(c);
    }
    (suite(cases), figures)
}
