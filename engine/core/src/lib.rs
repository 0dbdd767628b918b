//! The pure-Rust brain of pg_trickle.
//!
//! Everything here runs without a PostgreSQL server: query analysis
//! ([`analyze`]), the operator tree shown by `explain_stream_table` ([`ir`]),
//! generation of the SQL that refreshes a stream table ([`refresh_sql`]),
//! schedules, the dependency graph, SQLSTATE classification and settings
//! metadata. The extension crate (`engine/ext`) feeds it catalog facts and
//! runs the SQL text it returns; unit, property and fuzz tests reach it
//! directly.

pub mod analyze;
pub mod backpressure;
pub mod catalog;
pub mod dag;
pub mod error;
pub mod explain;
pub mod ir;
pub mod probes;
pub mod refresh_sql;
pub mod schedule;
pub mod settings;
pub mod sql;
pub mod sqlstate;

pub use analyze::{analyze, referenced_tables, Analysis};
pub use catalog::{Catalog, OutputColumn, SourceKind, SourceTable};
pub use error::CoreError;
pub use ir::{Mode, OpNode};
pub use refresh_sql::{plan_refresh, RefreshPlan};
