//! The pg_trickle runner as a library. The `harness` binary and the
//! end-to-end tests both use it.
//!
//! Layout, one home per thing:
//! - [`checks`]: one folder per check, each holding the check and its
//!   subcommand: the DIFF-vs-FULL [`checks::oracle`] (with replay),
//!   [`checks::sqlancer`] light, [`checks::tpch`] (the suite, the gate
//!   that judges it and baseline refresh), the [`checks::upgrade`] matrix,
//!   the [`checks::exactness`] matrix, the [`checks::versions`] check and
//!   the bounded [`checks::fuzz`] runs of the fuzz targets.
//! - [`plans`]: the jobs that combine checks: the PR gate and nightly.
//! - [`report`]: the run report as JSON, JUnit and HTML.
//! - [`tools`]: what is not a check: the scheduler demo, the generated
//!   settings docs and the benchmarks.
//! - Shared parts: [`cli`] (options, the run directory, exit status),
//!   [`cluster`] (real PostgreSQL clusters), [`load`] (the CPU hog),
//!   [`progress`], [`sharding`] (PostgreSQL's own sharding over a
//!   topology), [`citus`] (Citus over a topology), [`link`] (links
//!   between nodes that chaos cuts and slows), [`otel`] (OTLP
//!   collectors, real and misbehaving) and [`testkit`] (fixtures for the
//!   end-to-end tests).

pub mod checks;
pub mod citus;
pub mod cli;
pub mod cluster;
pub mod link;
pub mod load;
pub mod otel;
pub mod plans;
pub mod progress;
pub mod report;
pub mod sharding;
pub mod testkit;
pub mod tools;
