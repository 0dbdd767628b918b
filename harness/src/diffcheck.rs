//! Run one DIFFERENTIAL case: seeded tables and DML, a refresh after every
//! batch, and after each refresh a multiset comparison with the query
//! recomputed plus a check that the refresh really ran DIFFERENTIAL.

use postgres::Client;

use crate::cases::Case;
use crate::check::{compare, last_refresh_mode};
use crate::cluster::describe;
use crate::workload::DmlGen;

/// Batches per case unless told otherwise.
pub const DEFAULT_STEPS: usize = 25;

/// What a passing case did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseStats {
    /// Stream-table comparisons made.
    pub comparisons: usize,
    /// Statements executed.
    pub statements: usize,
}

/// Run `case` with `seed` for `steps` batches in the database `db` is
/// connected to (which must have pg_trickle installed and be empty).
/// The error is a readable report: seed, query, row diff and DML trace.
pub fn run_case(
    db: &mut Client,
    case: &Case,
    seed: u64,
    steps: usize,
) -> Result<CaseStats, String> {
    let mut gen = DmlGen::new(seed);
    let mut trace: Vec<String> = Vec::new();
    let mut stats = CaseStats {
        comparisons: 0,
        statements: 0,
    };
    let report = |trace: &[String], why: String| {
        format!(
            "case {} (seed {seed}): {why}\nDML trace:\n  {};",
            case.name,
            trace.join(";\n  ")
        )
    };
    let exec = |db: &mut Client, sql: String, trace: &mut Vec<String>| -> Result<(), String> {
        trace.push(sql.clone());
        db.batch_execute(&sql)
            .map_err(|e| report(trace, format!("statement failed: {}", describe(&e))))
    };
    for t in &case.tables {
        exec(db, t.create_sql(), &mut trace)?;
        let n = 10 + gen.below(10);
        exec(db, gen.insert(t, n), &mut trace)?;
    }
    for (name, query) in case.queries {
        exec(
            db,
            format!("SELECT pgtrickle.create_stream_table('{name}', $q${query}$q$, NULL, 'DIFFERENTIAL')"),
            &mut trace,
        )?;
    }
    for step in 0..steps {
        for stmt in gen.batch(&case.tables) {
            exec(db, stmt, &mut trace)?;
        }
        for (name, query) in case.queries {
            exec(
                db,
                format!("SELECT pgtrickle.refresh_stream_table('{name}')"),
                &mut trace,
            )?;
            let mismatch = compare(db, name, query).map_err(|e| report(&trace, describe(&e)))?;
            let mode = last_refresh_mode(db, name).map_err(|e| report(&trace, describe(&e)))?;
            stats.comparisons += 1;
            let why = match (mismatch, mode.as_deref()) {
                (Some(m), _) => Some(m.to_string()),
                (None, Some("DIFFERENTIAL")) => None,
                (None, other) => Some(format!("refresh ran {other:?}, not DIFFERENTIAL")),
            };
            if let Some(why) = why {
                return Err(report(
                    &trace,
                    format!("stream table {name} wrong after step {step}\nquery: {query}\n{why}"),
                ));
            }
        }
    }
    stats.statements = trace.len();
    Ok(stats)
}
