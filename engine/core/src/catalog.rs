//! Catalog facts the extension looks up and hands to the core.
//!
//! The core never talks to PostgreSQL; whatever it needs to know about the
//! relations a query reads (their identity, kind and columns) arrives here.

use std::collections::BTreeMap;

/// What kind of relation a source is, from `pg_class.relkind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An ordinary or partitioned table: change capture is possible.
    Table,
    /// A stream table (itself an ordinary table, with capture like any table).
    StreamTable,
    /// A view or materialized view: no change capture.
    View,
    /// A foreign table: no change capture.
    Foreign,
    /// Anything else (sequences, composite types, ...).
    Other,
}

impl SourceKind {
    /// Classify from `pg_class.relkind` and whether the relation is a stream table.
    pub fn from_relkind(relkind: char, is_stream_table: bool) -> Self {
        match relkind {
            'r' | 'p' if is_stream_table => SourceKind::StreamTable,
            'r' | 'p' => SourceKind::Table,
            'v' | 'm' => SourceKind::View,
            'f' => SourceKind::Foreign,
            _ => SourceKind::Other,
        }
    }

    /// True when triggers can capture this relation's changes.
    pub fn capturable(self) -> bool {
        matches!(self, SourceKind::Table | SourceKind::StreamTable)
    }
}

/// One relation a defining query reads, resolved by the extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// `pg_class.oid`.
    pub oid: u32,
    /// Schema name (unquoted).
    pub schema: String,
    /// Relation name (unquoted).
    pub name: String,
    /// Relation kind.
    pub kind: SourceKind,
    /// User column names in attribute order (dropped columns excluded).
    pub columns: Vec<String>,
}

impl SourceTable {
    /// The schema-qualified, quoted name.
    pub fn qualified(&self) -> String {
        format!(
            "{}.{}",
            crate::sql::quote_ident(&self.schema),
            crate::sql::quote_ident(&self.name)
        )
    }

    /// The change buffer table that holds this source's captured changes.
    pub fn buffer_table(&self) -> String {
        format!("pgtrickle_changes.changes_{}", self.oid)
    }
}

/// What the extension knows about a function the query calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FunctionFacts {
    /// Every overload with this name is IMMUTABLE.
    pub immutable: bool,
    /// Some overload with this name is an aggregate.
    pub aggregate: bool,
    /// Some overload with this name is a window function.
    pub window: bool,
}

/// Resolved relations keyed by the name exactly as the query wrote it, and
/// facts about the functions it calls.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_written_name: BTreeMap<String, SourceTable>,
    functions: BTreeMap<String, FunctionFacts>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `written` (as returned by [`crate::referenced_tables`]) resolves to `table`.
    pub fn insert(&mut self, written: impl Into<String>, table: SourceTable) {
        self.by_written_name.insert(written.into(), table);
    }

    /// Look a written name up.
    pub fn get(&self, written: &str) -> Option<&SourceTable> {
        self.by_written_name.get(written)
    }

    /// Record facts about a function name (lower-case, unqualified).
    pub fn insert_function(&mut self, name: impl Into<String>, facts: FunctionFacts) {
        self.functions.insert(name.into(), facts);
    }

    /// Facts about a function name; unknown names are treated as volatile.
    pub fn function(&self, name: &str) -> FunctionFacts {
        self.functions.get(name).copied().unwrap_or_default()
    }
}

/// One output column of the stream table, as PostgreSQL describes the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    /// Column name (unquoted).
    pub name: String,
    /// `format_type()` of the column's type, used for casts.
    pub type_sql: String,
}
