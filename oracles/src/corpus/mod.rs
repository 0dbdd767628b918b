//! The fixed workload corpus: every operator the engine maintains
//! DIFFERENTIALLY, and the hard cases that break naive delta rules.
//!
//! Each entry builds its workload from a seed, so `harness oracle
//! --workload NAME --seed N` replays exactly what a failing run did.
//! [`operators`] holds one or more workloads per operator with random DML;
//! [`hard_cases`] holds scripted edge cases followed by random DML;
//! [`algebraic`] holds count, sum and avg kept as old plus delta;
//! [`subqueries`] holds EXISTS, IN, NOT IN and scalar subqueries under
//! grouped queries; [`outer_joins`] holds LEFT, RIGHT and FULL joins with and
//! without grouping; [`top_k`] holds ORDER BY ... LIMIT; [`controls`] holds the hold and discard catch-up paths; [`sources`]
//! holds partitioned and inheritance sources, columns without a hash
//! function, and writes in the replica role; [`concurrency`] holds
//! transactions of several connections interleaved with refreshes and the
//! live scheduler.

mod algebraic;
mod concurrency;
mod controls;
mod hard_cases;
mod nested_aggregates;
mod operators;
mod outer_joins;
mod sources;
mod subqueries;
mod top_k;

use crate::gen::{ColSpec, TableSpec};
use crate::workload::Workload;

/// Random steps per workload unless told otherwise.
pub const DEFAULT_STEPS: usize = 30;

/// One corpus workload.
#[derive(Clone, Copy)]
pub struct Entry {
    /// Unique name, also the test and report name.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Default seed.
    pub seed: u64,
    /// Build the workload from a seed and a number of random steps.
    pub build: fn(seed: u64, steps: usize) -> Workload,
}

impl Entry {
    /// An entry.
    pub fn new(
        name: &'static str,
        about: &'static str,
        seed: u64,
        build: fn(u64, usize) -> Workload,
    ) -> Entry {
        Entry {
            name,
            about,
            seed,
            build,
        }
    }
}

/// Every entry, in a stable order.
pub fn entries() -> Vec<Entry> {
    let mut all = operators::entries();
    all.extend(hard_cases::entries());
    all.extend(subqueries::entries());
    all.extend(outer_joins::entries());
    all.extend(top_k::entries());
    all.extend(nested_aggregates::entries());
    all.extend(algebraic::entries());
    all.extend(controls::entries());
    all.extend(sources::entries());
    all.extend(concurrency::entries());
    all
}

/// The entry called `name`.
pub fn entry(name: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.name == name)
}

/// Operators and aggregates (as reported by `explain_stream_table`) that
/// the corpus must cover between its workloads.
pub const REQUIRED_COVERAGE: &[&str] = &[
    "Scan",
    "Filter",
    "Project",
    "InnerJoin",
    "OuterJoin",
    "TopK",
    "Aggregate",
    "Distinct",
    "UnionAll",
    "Subquery",
    "SubPlan",
    "Window",
    "SetOp",
    "Values",
    "FunctionScan",
    "Scan of a stream table",
    "Aggregate count",
    "Aggregate sum",
    "Aggregate avg",
    "Aggregate min",
    "Aggregate max",
    "Aggregate bool_and",
    "Aggregate bool_or",
    "Aggregate every",
    "Aggregate variance",
    "Aggregate var_samp",
    "Aggregate var_pop",
    "Aggregate stddev",
    "Aggregate stddev_samp",
    "Aggregate stddev_pop",
];

/// `a(k int, v int, s text)`: no key, small domains, NULLs.
pub(crate) fn table_a() -> TableSpec {
    TableSpec::new(
        "a",
        vec![
            ColSpec::int("k", 5, 15),
            ColSpec::int("v", 20, 10),
            ColSpec::text("s", 10),
        ],
    )
}

/// `b(k int, w int)`: joins to `a` on `k`.
pub(crate) fn table_b() -> TableSpec {
    TableSpec::new(
        "b",
        vec![ColSpec::int("k", 5, 15), ColSpec::int("w", 20, 10)],
    )
}

/// `c(x int, amount numeric(12,2))`: joins to `b` on `w = x`.
pub(crate) fn table_c() -> TableSpec {
    TableSpec::new(
        "c",
        vec![
            ColSpec::int("x", 20, 10),
            ColSpec::numeric("amount", 50, 10),
        ],
    )
}

/// `f(g int, ok boolean, n int)`: for the boolean aggregates.
pub(crate) fn table_f() -> TableSpec {
    TableSpec::new(
        "f",
        vec![
            ColSpec::int("g", 4, 10),
            ColSpec::bool("ok", 15),
            ColSpec::int("n", 10, 10),
        ],
    )
}

/// `p(id identity primary key, k int, v int)`: a keyed source.
pub(crate) fn table_p() -> TableSpec {
    TableSpec::new(
        "p",
        vec![
            ColSpec::identity("id"),
            ColSpec::int("k", 5, 10),
            ColSpec::int("v", 20, 10),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn at_least_forty_uniquely_named_workloads() {
        let names: BTreeSet<&str> = entries().iter().map(|e| e.name).collect();
        assert!(names.len() >= 40, "only {} workloads", names.len());
        assert_eq!(names.len(), entries().len(), "duplicate names");
    }

    #[test]
    fn every_workload_is_deterministic_in_its_seed_and_makes_comparisons() {
        for e in entries() {
            let a = (e.build)(e.seed, 4);
            assert_eq!(a, (e.build)(e.seed, 4), "{}", e.name);
            assert_eq!(a.name, e.name);
            assert!(!a.stream_tables.is_empty(), "{}", e.name);
            assert!(a.steps.len() >= 4, "{}: {} steps", e.name, a.steps.len());
            for s in &a.steps {
                for r in &s.reinit {
                    assert!(
                        a.stream_tables.iter().any(|st| &st.name == r),
                        "{}: reinit names unknown stream table {r}",
                        e.name
                    );
                }
            }
        }
    }
}
