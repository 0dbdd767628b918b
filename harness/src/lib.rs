//! The pg_trickle runner as a library: clusters, comparisons, seeded
//! workloads, the operator cases and benchmarks. The `harness` binary and
//! the end-to-end tests both use it.

pub mod bench;
pub mod cases;
pub mod check;
pub mod cluster;
pub mod demo;
pub mod diffcheck;
pub mod testkit;
pub mod workload;
