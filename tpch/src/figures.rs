//! What one TPC-H run measured, per query: the mode, the generated phases
//! and their EXPLAIN facts per cycle, the interleaved FULL/DIFF timings
//! and their ratio. The runner fills these in; the gate
//! ([`crate::baseline`]) judges them. Pure data, no I/O.

use serde::Serialize;

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
    pub facts: crate::plans::PlanFacts,
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
    /// Interleaved FULL/DIFF measurements, four per cycle
    /// (none for FULL stream tables).
    pub pairs: Vec<TimedPair>,
    /// Median DIFF/FULL ratio over `pairs` (what the gate judges); None
    /// for FULL stream tables.
    pub ratio_p50: Option<f64>,
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

impl QueryFigures {
    /// A DIFFERENTIAL query measured once (one cycle, one interleaved pair)
    /// with these times and DIFF plan shape: for tests of the gate.
    pub fn synthetic(query: &str, diff: f64, full: f64, shape: &str) -> QueryFigures {
        let e = |phase: &str, ms: f64, fp: &str| PhaseExplain {
            cycle: 1,
            phase: phase.into(),
            facts: crate::plans::PlanFacts {
                execution_ms: ms,
                temp_read_blocks: 0,
                temp_written_blocks: 0,
                fingerprint: fp.into(),
            },
        };
        QueryFigures {
            query: query.into(),
            mode: pg_trickle_core::ir::Mode::Differential.name().into(),
            fallback_reason: None,
            refresh_ms: vec![diff],
            p50_ms: diff,
            p99_ms: diff,
            phases: Vec::new(),
            explains: vec![
                e("differential", diff, shape),
                e("full_recompute", full, "Seq Scan"),
            ],
            pairs: vec![TimedPair {
                cycle: 1,
                full_ms: full,
                diff_ms: diff,
                full_elapsed_ms: full,
                diff_elapsed_ms: diff,
            }],
            ratio_p50: Some(diff / full),
            full_p50_ms: full,
            diff_p50_ms: diff,
            temp_blocks: 0,
            last_plans: Vec::new(),
        }
    }

    /// A query that was not measured (its stream table could not be made,
    /// or the run stopped before it).
    pub fn unmeasured(query: &str) -> QueryFigures {
        QueryFigures {
            query: query.into(),
            mode: "not measured".into(),
            fallback_reason: None,
            refresh_ms: Vec::new(),
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            phases: Vec::new(),
            explains: Vec::new(),
            pairs: Vec::new(),
            ratio_p50: None,
            full_p50_ms: f64::NAN,
            diff_p50_ms: f64::NAN,
            temp_blocks: 0,
            last_plans: Vec::new(),
        }
    }
}

/// A phase and its EXPLAIN document.
pub type PhasePlan = (String, serde_json::Value);

/// One round's FULL and DIFF executor times, ms: CPU time (what the
/// statement cost) and elapsed time (which includes waiting for a CPU).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimedPair {
    /// Cycle number.
    pub cycle: u64,
    /// FULL recompute, CPU ms.
    pub full_ms: f64,
    /// DIFFERENTIAL statement, CPU ms.
    pub diff_ms: f64,
    /// FULL recompute, elapsed ms.
    pub full_elapsed_ms: f64,
    /// DIFFERENTIAL statement, elapsed ms.
    pub diff_elapsed_ms: f64,
}

impl TimedPair {
    /// DIFF CPU time over FULL CPU time: the figure the gate judges. CPU
    /// time, not elapsed time, because on a busy machine a statement of a
    /// few milliseconds waits for a CPU in whole scheduler slices, which
    /// swamps the difference between two statements.
    pub fn ratio(&self) -> f64 {
        self.diff_ms / self.full_ms
    }
}
