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

use std::time::Instant;

use oracles::compare::{differences, last_refresh_mode};
use oracles::outcome::{Outcome, Tally};
use serde::Serialize;
use tpch::gate::percentile;

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

/// A generated SQL phase of a stream table, as `stream_table_sql` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseInfo {
    /// Phase name.
    pub phase: String,
    /// Stable hash of its SQL.
    pub hash: String,
    /// Whether it writes.
    pub writes: bool,
}

/// EXPLAIN facts of one phase in one cycle.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseExplain {
    /// Cycle number.
    pub cycle: u64,
    /// Phase name.
    pub phase: String,
    /// Time, temp blocks and plan shape.
    pub facts: tpch::plans::PlanFacts,
}

/// One query's figures.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    /// `q01` ...
    pub query: String,
    /// The mode the engine chose.
    pub mode: String,
    /// Why FULL, when FULL.
    pub fallback_reason: Option<String>,
    /// Refresh wall times, ms, one per cycle.
    pub refresh_ms: Vec<f64>,
    /// Median refresh time.
    pub p50_ms: f64,
    /// 99th-percentile refresh time.
    pub p99_ms: f64,
    /// The generated SQL, by phase.
    pub phases: Vec<PhaseInfo>,
    /// EXPLAIN (ANALYZE, BUFFERS) of each phase, every cycle, before the refresh.
    pub explains: Vec<PhaseExplain>,
    /// Median execution time of the FULL recompute (EXPLAIN ANALYZE), ms.
    pub full_p50_ms: f64,
    /// Median execution time of the differential statement (EXPLAIN
    /// ANALYZE, rolled back), ms; 0 for FULL stream tables.
    pub diff_p50_ms: f64,
    /// Most temp blocks (read + written) any phase used.
    pub temp_blocks: u64,
    /// The last EXPLAIN document per phase.
    #[serde(skip)]
    pub last_plans: Vec<PhasePlan>,
}

/// A phase and its EXPLAIN document.
pub type PhasePlan = (String, serde_json::Value);

/// EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) every phase of stream table `st`
/// (except `populate`) bound to the parameters the next refresh will use.
/// Writing phases run in a transaction that is rolled back.
fn explain_phases(
    db: &mut postgres::Client,
    st: &str,
) -> Result<(Vec<PhaseInfo>, Vec<PhasePlan>), postgres::Error> {
    let rows = db.query(
        "SELECT phase, sql, hash, writes, parameters FROM pgtrickle.stream_table_sql($1)",
        &[&st],
    )?;
    let mut infos = Vec::new();
    let mut plans = Vec::new();
    for r in rows {
        let (phase, sql, hash, writes): (String, String, String, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let params: Option<Vec<Option<String>>> = r.get(4);
        infos.push(PhaseInfo {
            phase: phase.clone(),
            hash,
            writes,
        });
        if phase == "populate" {
            continue;
        }
        let params = params.unwrap_or_default();
        let (decl, args) = if params.is_empty() {
            (String::new(), String::new())
        } else {
            let types = vec!["text"; params.len()].join(", ");
            let args = params
                .iter()
                .map(|p| match p {
                    Some(v) => format!("'{}'", v.replace('\'', "''")),
                    None => "NULL".into(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            (format!("({types})"), format!("({args})"))
        };
        db.batch_execute(&format!("PREPARE pgt_phase{decl} AS {sql}"))?;
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE pgt_phase{args}");
        let result = if writes {
            // A writing phase run by hand is a direct write, which the
            // stream table's read-only trigger refuses: switch it off for
            // the measurement, in the transaction that is rolled back.
            // (Builds before 0.39.2 have no such trigger: the harness
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
        db.batch_execute("DEALLOCATE pgt_phase")?;
        plans.push((phase, result?.get::<_, serde_json::Value>(0)));
    }
    Ok((infos, plans))
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
    let _ = db.batch_execute("ANALYZE");
    // Refreshes run their statements with JIT off; EXPLAIN them the same way.
    let _ = db.batch_execute("SET jit = off");
    for setting in &opts.settings {
        if let Err(e) = db.batch_execute(&format!("SET {setting}")) {
            return (suite(vec![fail("settings", describe(&e))]), Vec::new());
        }
    }
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
        let r = db
            .query_one(
                "SELECT effective_mode, fallback_reason FROM pgtrickle.pgt_stream_tables WHERE relid = to_regclass($1)",
                &[&q.name],
            )
            .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)));
        let (mode, reason) = r.unwrap_or_else(|_| ("?".into(), None));
        figures.push(QueryFigures {
            query: q.name.into(),
            mode,
            fallback_reason: reason,
            refresh_ms: Vec::new(),
            p50_ms: 0.0,
            p99_ms: 0.0,
            phases: Vec::new(),
            explains: Vec::new(),
            full_p50_ms: 0.0,
            diff_p50_ms: 0.0,
            temp_blocks: 0,
            last_plans: Vec::new(),
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
            match explain_phases(&mut db, &f.query) {
                Ok((infos, plans)) => {
                    f.phases = infos;
                    for (phase, plan) in &plans {
                        f.explains.push(PhaseExplain {
                            cycle,
                            phase: phase.clone(),
                            facts: tpch::plans::facts(plan),
                        });
                    }
                    f.last_plans = plans;
                }
                Err(e) => {
                    let _ = db.batch_execute("ROLLBACK; DEALLOCATE ALL");
                    tallies[i].add(Outcome::HarnessError);
                    problems[i] = Some(format!(
                        "cycle {cycle}: EXPLAIN of a phase failed: {}",
                        describe(&e)
                    ));
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
        f.full_p50_ms = phase_p50("full_recompute");
        f.diff_p50_ms = phase_p50("differential");
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
