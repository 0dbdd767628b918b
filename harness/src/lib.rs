//! The pg_trickle runner as a library: clusters, comparisons, seeded
//! workloads and benchmarks. The `harness` binary and the end-to-end tests
//! both use it.

pub mod check;
pub mod cluster;
pub mod testkit;
pub mod workload;
