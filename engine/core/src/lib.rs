//! The pure-Rust brain of pg_trickle.
//!
//! Everything here runs without a PostgreSQL server: query analysis
//! ([`analyze`]) into the model delta rules work on ([`model`]), the operator tree shown by `explain_stream_table` ([`ir`]),
//! generation of the SQL that refreshes a stream table, one module per
//! delta rule family ([`delta`]),
//! schedules, the dependency graph, SQLSTATE classification and settings
//! metadata. The extension crate (`engine/ext`) feeds it catalog facts and
//! runs the SQL text it returns; unit and property tests reach it
//! directly.

pub mod analyze;
pub mod backpressure;
pub mod catalog;
pub mod dag;
pub mod delta;
pub mod error;
pub mod explain;
pub mod ir;
pub mod model;
pub mod probes;
pub mod schedule;
pub mod settings;
pub mod sql;
pub mod sqlstate;

pub use analyze::{analyze, referenced_tables, Analysis};
pub use catalog::{Catalog, OutputColumn, SourceKind, SourceTable};
pub use delta::{plan_refresh, RefreshPlan};
pub use error::CoreError;
pub use ir::{Mode, OpNode};
