//! The pure-Rust brain of pg_trickle.
//!
//! Everything here runs without a PostgreSQL server: query analysis
//! ([`analyze`](mod@analyze), one file per clause) into the model the delta rules work
//! on ([`model`]); the modes and the operator tree `explain_stream_table`
//! shows ([`ir`]) and its renderings ([`explain`]); generation of the SQL
//! that populates and refreshes a stream table, one module per delta rule
//! family ([`delta`]: the join rule in `join_terms.rs`); schedules, the
//! dependency graph, SQLSTATE classification, backpressure and settings
//! metadata. The extension crate (`engine/ext`) feeds it catalog facts and
//! runs the SQL text it returns; unit, golden and property tests reach it
//! directly.

pub mod adaptive;
pub mod analyze;
pub mod backpressure;
pub mod catalog;
pub mod change_ids;
pub mod dag;
pub mod delta;
pub mod error;
pub mod explain;
pub mod fuzzing;
pub mod history;
pub mod ir;
pub mod model;
pub mod outbox;
pub mod plan_reuse;
pub mod probes;
pub mod schedule;
pub mod settings;
pub mod snapshot;
pub mod sql;
pub mod sqlstate;
pub mod telemetry;
pub mod wal;

pub use analyze::{analyze, referenced_tables, Analysis};
pub use catalog::{Catalog, OutputColumn, SourceKind, SourceTable};
pub use delta::{plan_refresh, RefreshPlan};
pub use error::CoreError;
pub use ir::{Mode, OpNode};
