//! SQLancer light: seeded random schemas, queries and DML, each query a
//! stream table checked by the DIFF-vs-FULL oracle; and ingestion of the
//! real SQLancer's statement logs into the same oracle.
//!
//! - [`grammar`]: the constructs, the query AST, rendering and simplification;
//! - [`schema`]: schemas, data and constraint-safe DML;
//! - [`query`]: the query generator;
//! - [`case`]: one seeded case as an oracle workload;
//! - [`external`]: the real SQLancer's command line and log format.
//!
//! Like every library the runner calls, it starts no processes except the
//! external SQLancer, and only when asked to.

pub mod case;
pub mod external;
pub mod grammar;
pub mod query;
pub mod schema;
