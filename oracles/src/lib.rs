//! pg_trickle's correctness oracles and their fixed workload corpus.
//!
//! The runner owns clusters; this crate only needs a connection to an empty
//! database with pg_trickle installed (and, for shrinking and the negative
//! control, a [`shrink::Sandbox`] that hands out such databases).
//!
//! - [`workload`]: a workload as plain SQL, and the seeded [`workload::Builder`];
//! - [`corpus`]: the fixed workloads;
//! - [`interleave`]: seeded interleavings of several connections' transactions;
//! - [`diff_vs_full`]: the DIFF-vs-FULL oracle;
//! - [`engine_api`]: what the checks read from the engine, through its public SQL API;
//! - [`outcome`]: the four outcome classes every check ends in;
//! - [`sessions`]: the connections of a concurrent workload, and lock waits;
//! - [`shrink`], [`repro`]: minimal failing workloads and their `psql` replay files;
//! - [`tamper`]: the negative control;
//! - [`spelling`]: which columns of a grouped query the plan spells.

pub mod compare;
pub mod corpus;
pub mod diff_vs_full;
pub mod engine_api;
pub mod gen;
pub mod interleave;
pub mod outcome;
pub mod repro;
pub mod sessions;
pub mod shrink;
pub mod spelling;
pub mod tamper;
pub mod ties;
pub mod workload;
