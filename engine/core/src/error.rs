//! The core's one error type. Each variant maps to a SQLSTATE so the
//! extension can raise it unchanged.

use thiserror::Error;

/// Errors raised by query analysis and SQL generation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The defining query could not be parsed.
    #[error("syntax error in defining query: {0}")]
    Syntax(String),
    /// The query uses a construct that DIFFERENTIAL refresh cannot maintain.
    #[error("DIFFERENTIAL refresh does not support {0}")]
    Unsupported(String),
    /// A table the query names was not found in the catalog facts given to the core.
    #[error("relation \"{0}\" does not exist")]
    UnknownRelation(String),
    /// A schedule string could not be understood.
    #[error("invalid schedule \"{0}\": {1}")]
    InvalidSchedule(String, String),
    /// A refresh mode string is not one of DIFFERENTIAL, FULL, AUTO.
    #[error("invalid refresh mode \"{0}\": expected DIFFERENTIAL, FULL or AUTO")]
    InvalidMode(String),
    /// The stream-table dependency graph would contain a cycle.
    #[error("stream table dependency cycle: {0}")]
    Cycle(String),
    /// The query is not a single SELECT statement.
    #[error("defining query must be a single SELECT statement: {0}")]
    NotASelect(String),
}

impl CoreError {
    /// The SQLSTATE the extension raises for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            CoreError::Syntax(_) => "42601",
            CoreError::Unsupported(_) => "0A000",
            CoreError::UnknownRelation(_) => "42P01",
            CoreError::InvalidSchedule(..) | CoreError::InvalidMode(_) => "22023",
            CoreError::Cycle(_) => "42P17",
            CoreError::NotASelect(_) => "42601",
        }
    }
}
