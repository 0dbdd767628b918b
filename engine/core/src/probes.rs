//! Queries the extension runs to learn what the core cannot know from SQL
//! text alone: the types and collations of a grouped stream table's keys.
//!
//! Groups are matched by key, so a key type without a hash function or a
//! key under a nondeterministic collation cannot be maintained exactly (see
//! the extension's `column_types`). Key expressions need not be output
//! columns, so their types are asked of PostgreSQL: the probe evaluates
//! `pg_typeof` (then, for collatable types, `pg_collation_for`) of each
//! key over the query's own FROM and WHERE behind `LIMIT 0`, outer-joined
//! to one row, so that it returns exactly one row of declared types and
//! reads nothing.

use sqlparser::ast::{Expr, GroupByExpr, Ident, SelectItem};

use crate::model::{Analysis, Model};

/// What to ask PostgreSQL about a grouped stream table's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProbe {
    /// The key expressions as written in the query (for messages).
    pub keys: Vec<String>,
    /// `SELECT ... FROM (<keys over the query's FROM and WHERE> LIMIT 0)`,
    /// the inner query aliased `q` with columns `__pgt_k1...`.
    inner: String,
}

impl KeyProbe {
    /// One row: the type oid of each key, as text.
    pub fn types_sql(&self) -> String {
        let facts: Vec<String> = (1..=self.keys.len())
            .map(|i| format!("pg_catalog.pg_typeof(q.__pgt_k{i})::pg_catalog.oid::pg_catalog.text"))
            .collect();
        self.wrap(&facts)
    }

    /// One row: the collation oid (or NULL) of each key in `keys` (indexes
    /// into [`KeyProbe::keys`]; only collatable types may be asked).
    pub fn collations_sql(&self, keys: &[usize]) -> String {
        let facts: Vec<String> = keys
            .iter()
            .map(|i| {
                format!(
                    "pg_catalog.pg_collation_for(q.__pgt_k{})::pg_catalog.regcollation::pg_catalog.oid::pg_catalog.text",
                    i + 1
                )
            })
            .collect();
        self.wrap(&facts)
    }

    fn wrap(&self, facts: &[String]) -> String {
        format!(
            "SELECT {} FROM (VALUES (1)) AS __pgt_one(x) LEFT JOIN ({} LIMIT 0) AS q ON true",
            facts.join(", "),
            self.inner
        )
    }
}

/// The key probe of a grouped analysis; `None` for a linear model or a
/// scalar aggregate.
pub fn key_probe(analysis: &Analysis) -> Option<KeyProbe> {
    let Ok(Model::Grouped { block, keys, .. }) = &analysis.model else {
        return None;
    };
    if keys.is_empty() {
        return None;
    }
    let mut select = block.select.clone();
    select.projection = keys
        .iter()
        .enumerate()
        .map(|(i, k)| SelectItem::ExprWithAlias {
            expr: k.clone(),
            alias: Ident::new(format!("__pgt_k{}", i + 1)),
        })
        .collect();
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    select.having = None;
    select.distinct = None;
    Some(KeyProbe {
        keys: keys.iter().map(Expr::to_string).collect(),
        inner: select.to_string(),
    })
}
