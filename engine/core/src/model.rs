//! The model delta-SQL generation works on: what analysis makes of a
//! defining query (linear relations of blocks and FROM occurrences, or a
//! grouped block on a linear input), with its sources and operator tree.

use sqlparser::ast::{Expr, Select};

use crate::catalog::SourceTable;
use crate::ir::OpNode;

/// Names the defining query refers to, for the extension to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRefs {
    /// Relation names exactly as written (CTE names included; they simply do not resolve).
    pub tables: Vec<String>,
    /// Called function names, lower-cased and unqualified.
    pub functions: Vec<String>,
}

/// A linear (select / project / join / UNION ALL) relational expression.
#[derive(Debug, Clone)]
pub enum Rel {
    /// One SELECT block without aggregation.
    Block(Box<Block>),
    /// UNION ALL of branches with positionally matching columns.
    UnionAll(Vec<Rel>),
}

impl Rel {
    /// Output column names (the first branch's, for UNION ALL).
    pub fn outputs(&self) -> &[String] {
        match self {
            Rel::Block(b) => &b.outputs,
            Rel::UnionAll(branches) => branches[0].outputs(),
        }
    }
}

/// One SELECT block after CTE inlining and wildcard expansion.
#[derive(Debug, Clone)]
pub struct Block {
    /// The block, rewritten: wildcards expanded, CTE references inlined.
    pub select: Select,
    /// FROM occurrences in canonical (left-to-right leaf) order.
    pub occs: Vec<Occ>,
    /// Output column names.
    pub outputs: Vec<String>,
}

/// One relation occurrence in a FROM clause.
#[derive(Debug, Clone)]
pub enum Occ {
    /// A base table (index into [`Analysis::sources`]).
    Source {
        /// Index into the analysis' sources.
        source: usize,
    },
    /// A subquery in FROM whose own delta is linear.
    Sub {
        /// Unique id used to name its generated CTEs.
        id: usize,
        /// The subquery.
        rel: Box<Rel>,
        /// Column names the occurrence exposes (alias column list, else the subquery's outputs).
        columns: Vec<String>,
    },
}

/// What DIFFERENTIAL refresh maintains.
#[derive(Debug, Clone)]
pub enum Model {
    /// A bag of rows: deltas are netted per row and applied as deletes and inserts.
    Linear(Rel),
    /// GROUP BY / DISTINCT / scalar aggregate on top of a linear input: the
    /// groups a delta touches are recomputed and replaced.
    Grouped {
        /// The top block (its FROM/WHERE is linear).
        block: Box<Block>,
        /// Group key expressions (empty for a scalar aggregate).
        keys: Vec<Expr>,
    },
}

/// The result of analysing a defining query.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Distinct relations the query reads, in first-use order.
    pub sources: Vec<SourceTable>,
    /// The operator tree for explain.
    pub tree: OpNode,
    /// The differential model, or the reason DIFFERENTIAL is impossible.
    pub model: Result<Model, String>,
    /// For a grouped model, what the extension learned of each group key's
    /// type (see `probes`); empty means every key is a hashable scalar.
    pub key_types: Vec<KeyType>,
}

/// What the SQL generator needs to know about a group key's type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyType {
    /// How the key enters a group's identity hash.
    pub identity: crate::catalog::ColumnIdentity,
    /// The key is an array (or a domain over one): `= ANY (ARRAY(...))`
    /// would compare it with its elements.
    pub array: bool,
}
