//! Catalog facts the extension looks up and hands to the core.
//!
//! The core never talks to PostgreSQL; whatever it needs to know about the
//! relations a query reads (their identity, kind and columns) arrives here.

use std::collections::BTreeMap;

/// What kind of relation a source is, from `pg_class` (kind, persistence)
/// and `pg_inherits` (whether it has partitions or children).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An ordinary table without inheritance children.
    Table,
    /// A partitioned table: its rows live in its partitions.
    PartitionedTable,
    /// An ordinary table with inheritance children, whose rows it includes.
    InheritanceParent,
    /// A stream table (itself an ordinary table, with capture like any table).
    StreamTable,
    /// A view: no change capture.
    View,
    /// A materialized view: it changes only by `REFRESH MATERIALIZED VIEW`.
    MaterializedView,
    /// A foreign table: no change capture.
    Foreign,
    /// Anything else (sequences, composite types, ...).
    Other,
}

impl SourceKind {
    /// Classify from `pg_class.relkind`, whether the relation is a stream
    /// table and whether it has inheritance children.
    pub fn from_relkind(relkind: char, is_stream_table: bool, has_children: bool) -> Self {
        match relkind {
            'r' | 'p' if is_stream_table => SourceKind::StreamTable,
            'p' => SourceKind::PartitionedTable,
            'r' if has_children => SourceKind::InheritanceParent,
            'r' => SourceKind::Table,
            'v' => SourceKind::View,
            'm' => SourceKind::MaterializedView,
            'f' => SourceKind::Foreign,
            _ => SourceKind::Other,
        }
    }

    /// True when triggers can capture this relation's changes.
    pub fn capturable(self) -> bool {
        matches!(
            self,
            SourceKind::Table
                | SourceKind::PartitionedTable
                | SourceKind::InheritanceParent
                | SourceKind::StreamTable
        )
    }

    /// What the kind is called in reasons and errors (`a view`, ...).
    pub fn described(self) -> &'static str {
        match self {
            SourceKind::Table => "a table",
            SourceKind::PartitionedTable => "a partitioned table",
            SourceKind::InheritanceParent => "an inheritance parent",
            SourceKind::StreamTable => "a stream table",
            SourceKind::View => "a view",
            SourceKind::MaterializedView => "a materialized view",
            SourceKind::Foreign => "a foreign table",
            SourceKind::Other => "not a table",
        }
    }
}

/// How a source's changes reach its change buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    /// Row triggers write each change in the writing transaction.
    #[default]
    Trigger,
    /// The scheduler decodes them from a logical replication slot; a
    /// refresh also reads, through `pgtrickle_changes.wal_changes_<oid>`,
    /// the committed changes it sees that were not decoded yet.
    Wal,
}

impl Capture {
    /// The mode's name (`trigger`, `wal`).
    pub fn name(self) -> &'static str {
        match self {
            Capture::Trigger => "trigger",
            Capture::Wal => "wal",
        }
    }

    /// Parse a mode name (case-insensitive).
    pub fn parse(text: &str) -> Option<Capture> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trigger" => Some(Capture::Trigger),
            "wal" => Some(Capture::Wal),
            _ => None,
        }
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
    /// Why triggers cannot capture this relation's changes exactly even
    /// though its kind is capturable (an unlogged table, or a partition or
    /// child that is foreign or unlogged), as the extension found it.
    pub capture_problem: Option<String>,
    /// How its changes are captured.
    pub capture: Capture,
    /// The columns of a primary key that holds over every row the
    /// relation shows (no inheritance children), each of a built-in type:
    /// a row's key then names it. Empty when there is none.
    pub key: Vec<String>,
    /// How each column's values can be told apart exactly, in the order
    /// of `columns` (empty when the extension did not say: every column
    /// is then compared by its text).
    pub image_equality: Vec<ImageEquality>,
}

/// How two values of a column are known to be the same value, printed
/// alike (a row image of the change buffer is compared with another to
/// net them). SQL equality is not enough in general: numeric `1.0 = 1.00`,
/// float `-0 = 0`, interval `'1 day' = '24 hours'` and text under a
/// nondeterministic collation are equal yet different values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageEquality {
    /// Compare by the printed text (any type; the default).
    #[default]
    Text,
    /// Equal values are the same value: the type's own equality will do.
    Exact,
    /// `text`, `varchar`, `name`: equal under collation "C" (whatever the
    /// column's or its change buffer's collation) means the same bytes.
    Bytes,
    /// `char(n)` and `bpchar`: equal under collation "C" ignores trailing
    /// spaces, so the length in bytes is compared too.
    Padded,
    /// `numeric`: equal values of equal scale are the same value.
    NumericScale,
}

impl ImageEquality {
    /// The kind of a column of type `type_oid`.
    pub fn of(type_oid: u32) -> ImageEquality {
        match type_oid {
            // bool, bytea, "char", int8, int2, int4, oid, date, time,
            // timestamp, timestamptz, uuid.
            16 | 17 | 18 | 20 | 21 | 23 | 26 | 1082 | 1083 | 1114 | 1184 | 2950 => {
                ImageEquality::Exact
            }
            // name, text, varchar.
            19 | 25 | 1043 => ImageEquality::Bytes,
            1042 => ImageEquality::Padded,
            1700 => ImageEquality::NumericScale,
            _ => ImageEquality::Text,
        }
    }
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

    /// What a statement reads this source's changes from: the buffer
    /// table, and for a source captured from the WAL the changes the
    /// statement's snapshot sees (see [`wal_changes_relation`]; `$token`
    /// is the parameter holding the refresh's read token).
    pub fn changes_relation(&self, token: usize) -> String {
        match self.capture {
            Capture::Trigger => self.buffer_table(),
            Capture::Wal => wal_changes_relation(self.oid, token),
        }
    }
}

/// The changes of source `oid`, captured from the WAL, that a statement's
/// snapshot sees: the buffered ones of transactions it sees as committed,
/// and those it sees that the scheduler has not decoded into the buffer
/// yet, read through `pgtrickle_changes.wal_changes_<oid>` with the read
/// token in parameter `$token`.
///
/// A drain writes a transaction's changes once its commit record is in
/// the WAL, which is a moment before the transaction is visible (or, with
/// a synchronous standby, until the standby answers); a snapshot taken in
/// between sees the buffer rows but not the transaction, and must leave
/// them for a later refresh. (A trigger-captured buffer needs no such
/// filter: its rows are written by the transaction itself.)
pub fn wal_changes_relation(oid: u32, token: usize) -> String {
    format!(
        "(SELECT * FROM pgtrickle_changes.changes_{oid} __pgt_w \
         WHERE pg_catalog.pg_visible_in_snapshot(__pgt_w.xid, pg_catalog.pg_current_snapshot()) \
         UNION ALL SELECT * FROM pgtrickle_changes.wal_changes_{oid}(${token}::text, pg_catalog.pg_current_snapshot()))"
    )
}

/// What the extension knows about a function the query calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionFacts {
    /// Every overload with this name is IMMUTABLE.
    pub immutable: bool,
    /// Some overload with this name is an aggregate.
    pub aggregate: bool,
    /// Some overload with this name is a window function.
    pub window: bool,
    /// The numbers of arguments for which every overload that accepts
    /// them is IMMUTABLE (`generate_series` with 2 arguments is; with 3,
    /// the `timestamptz` one is not).
    pub immutable_arities: Vec<usize>,
    /// Every overload with this name returns a set of one column (not a
    /// composite row, no OUT parameters): in FROM it gives one column.
    pub single_column: bool,
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

    /// For unit tests: plain tables in schema `public` (oids from 1, in
    /// order) and IMMUTABLE aggregates, by name.
    #[cfg(test)]
    pub(crate) fn for_tests(tables: &[(&str, &[&str])], aggregates: &[&str]) -> Self {
        let mut c = Self::new();
        for (i, (name, columns)) in tables.iter().enumerate() {
            c.insert(
                *name,
                SourceTable {
                    oid: i as u32 + 1,
                    schema: "public".into(),
                    name: name.to_string(),
                    kind: SourceKind::Table,
                    columns: columns.iter().map(|c| c.to_string()).collect(),
                    capture_problem: None,
                    capture: Default::default(),
                    key: Vec::new(),
                    image_equality: Vec::new(),
                },
            );
        }
        for f in aggregates {
            c.insert_function(
                *f,
                FunctionFacts {
                    immutable: true,
                    aggregate: true,
                    ..Default::default()
                },
            );
        }
        c
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
        self.functions.get(name).cloned().unwrap_or_default()
    }
}

/// One output column of the stream table, as PostgreSQL describes the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    /// Column name (unquoted).
    pub name: String,
    /// `format_type()` of the column's type, used for casts.
    pub type_sql: String,
    /// How the column takes part in a row's identity hash.
    pub identity: ColumnIdentity,
    /// The column's collation is nondeterministic: its identity hash uses
    /// the `C` collation, so that it does not depend on which expression
    /// (the query's column or a change buffer's) carries the value.
    pub nondeterministic: bool,
}

/// How a column's value enters the identity hash of a row
/// (`hash_record_extended`), which needs an extended hash function for
/// every field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ColumnIdentity {
    /// The type (with its elements or fields) has an extended hash function.
    #[default]
    Hash,
    /// No hash function; the value's binary form from its send function
    /// (schema-qualified name), which does not depend on any setting.
    Send(String),
    /// No hash function and no binary send: the value's text, for types
    /// whose text does not depend on settings (`json`, `xml`, ...).
    Text,
}
