//! The pg_trickle runner as a library: clusters it owns, the oracle suites
//! it runs, reports, progress output, the scheduler demo and benchmarks.
//! The `harness` binary and the end-to-end tests both use it.

pub mod bench;
pub mod catalog_diff;
pub mod cluster;
pub mod demo;
pub mod docs;
pub mod exactness;
pub mod installation;
pub mod load;
pub mod oracle_suite;
pub mod progress;
pub mod report;
pub mod sqlancer_suite;
pub mod testkit;
pub mod tpch_gate;
pub mod tpch_suite;
pub mod upgrade;
pub mod versions;
