//! pg_trickle's TPC-H workload for the per-query EXPLAIN artifacts and the
//! baseline-driven regression gate: the schema with its keys and indexes
//! ([`schema`]), the 22 queries as stream table definitions ([`queries`]),
//! data loading and change sets ([`data`]), plan facts and shape
//! fingerprints ([`plans`]), what a run measured per query ([`figures`]),
//! baselines and the gate's judging rule ([`baseline`], with its
//! statistics and verdicts in [`gate`]), and the published SF 1 answers
//! the results are cross-checked with ([`answers`]). The runner's `tpch`
//! subcommand drives them and turns verdicts into report cases.

pub mod answers;
pub mod baseline;
pub mod data;
pub mod figures;
pub mod gate;
pub mod plans;
pub mod queries;
pub mod schema;
