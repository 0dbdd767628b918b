//! pg_trickle's TPC-H workload for the per-query EXPLAIN artifacts and the
//! baseline-driven regression gate (issue in progress): the schema with
//! its keys and indexes ([`schema`]), the 22 queries as stream table
//! definitions ([`queries`]), and the gate's statistics ([`gate`]). Data
//! loading, change sets, artifact capture and the runner subcommands build
//! on these.

pub mod data;
pub mod gate;
pub mod plans;
pub mod queries;
pub mod schema;
