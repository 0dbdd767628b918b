//! Outcomes: every check ends in exactly one of four classes, and a run is
//! judged by counting them. Nothing a check does can end as "skipped": a
//! check that could not run is a harness error, which fails the run.

use serde::Serialize;

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The stream table equals its query recomputed, with the expected columns and mode.
    Pass,
    /// Rows, columns or the refresh mode differ from what they must be.
    Mismatch,
    /// pg_trickle raised an error (creating, capturing or refreshing).
    EngineError,
    /// The harness could not do its part (a workload statement or a connection failed).
    HarnessError,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Pass,
        Outcome::Mismatch,
        Outcome::EngineError,
        Outcome::HarnessError,
    ];

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Mismatch => "mismatch",
            Outcome::EngineError => "engine_error",
            Outcome::HarnessError => "harness_error",
        }
    }
}

/// Whose failure a failed workload statement is, judged by SQLSTATE first.
///
/// - A statement that calls the engine's API failed in the engine.
/// - Class `XX` (internal error) and `58` (system error) are never a
///   workload's doing (a failing COMMIT may carry no context at all).
/// - Otherwise the SQLSTATE is PostgreSQL's own and says nothing about who
///   raised it (a capture trigger that names a missing change buffer gets
///   42P01 like a workload that names a missing table), so the error's
///   context decides: `in_engine_code` when it names a function or
///   statement of the engine's schemas. Those are identifiers, which
///   PostgreSQL never translates, so this holds under any `lc_messages`.
/// - Anything else is the workload's own statement failing: the runner's.
pub fn blame(sqlstate: Option<&str>, in_engine_code: bool, engine_call: bool) -> Outcome {
    let class = sqlstate.and_then(|c| c.get(0..2));
    if engine_call || matches!(class, Some("XX" | "58")) || in_engine_code {
        Outcome::EngineError
    } else {
        Outcome::HarnessError
    }
}

/// One check: a stream table compared after a step (step 0 is creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stream table checked (or the object whose statement failed).
    pub stream_table: String,
    /// Step number; 0 is the state right after creation.
    pub step: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, for anything but a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The SQLSTATE of the error, for errors raised by PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
}

/// Counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Passing checks.
    pub pass: usize,
    /// Mismatches.
    pub mismatch: usize,
    /// Engine errors.
    pub engine_error: usize,
    /// Harness errors.
    pub harness_error: usize,
}

impl Tally {
    /// Count one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        *self.slot(outcome) += 1;
    }

    /// Add another tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        for o in Outcome::ALL {
            *self.slot(o) += other.get(o);
        }
    }

    /// The count for one outcome.
    pub fn get(&self, outcome: Outcome) -> usize {
        match outcome {
            Outcome::Pass => self.pass,
            Outcome::Mismatch => self.mismatch,
            Outcome::EngineError => self.engine_error,
            Outcome::HarnessError => self.harness_error,
        }
    }

    fn slot(&mut self, outcome: Outcome) -> &mut usize {
        match outcome {
            Outcome::Pass => &mut self.pass,
            Outcome::Mismatch => &mut self.mismatch,
            Outcome::EngineError => &mut self.engine_error,
            Outcome::HarnessError => &mut self.harness_error,
        }
    }

    /// All checks counted.
    pub fn total(&self) -> usize {
        Outcome::ALL.iter().map(|o| self.get(*o)).sum()
    }

    /// Checks that did not pass.
    pub fn failed(&self) -> usize {
        self.total() - self.pass
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pass, {} mismatch, {} engine error, {} harness error",
            self.pass, self.mismatch, self.engine_error, self.harness_error
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_goes_to_the_engine_for_its_calls_internal_errors_and_its_code() {
        assert_eq!(blame(Some("23505"), false, true), Outcome::EngineError);
        assert_eq!(blame(Some("XX000"), false, false), Outcome::EngineError);
        assert_eq!(blame(Some("58P01"), false, false), Outcome::EngineError);
        assert_eq!(blame(Some("42P01"), true, false), Outcome::EngineError);
        assert_eq!(blame(None, true, false), Outcome::EngineError);
    }

    #[test]
    fn blame_goes_to_the_runner_for_the_workloads_own_errors() {
        assert_eq!(blame(Some("42601"), false, false), Outcome::HarnessError);
        assert_eq!(blame(Some("23505"), false, false), Outcome::HarnessError);
        assert_eq!(blame(None, false, false), Outcome::HarnessError);
    }

    #[test]
    fn tally_counts_every_outcome() {
        let mut t = Tally::default();
        for o in Outcome::ALL {
            t.add(o);
        }
        t.add(Outcome::Pass);
        assert_eq!((t.total(), t.failed(), t.pass), (5, 3, 2));
        let mut u = Tally::default();
        u.merge(&t);
        u.merge(&t);
        assert_eq!(u.get(Outcome::HarnessError), 2);
        assert_eq!(
            u.to_string(),
            "4 pass, 2 mismatch, 2 engine error, 2 harness error"
        );
    }
}
