//! The old rows of a keyed subquery (see `keyed.rs`) are its block
//! recomputed over the old state of every table it reads. A changed
//! table's old state is a union (`__pgt_u<s>`, see `sources.rs`), and
//! PostgreSQL pushes no join condition into a union: restricted to the
//! reached keys only at the top, the block reads every old row of the
//! table. TPC-H Q13 read all of `orders` to recount a few hundred
//! customers.
//!
//! A table whose column equals a key column by a conjunct every row of a
//! reached group satisfies can only reach those groups through its rows
//! whose column is one of the reached keys. Its old state is then read
//! narrowed to them: a CTE of its own (see
//! [`Gen::source_narrowed_old_cte`](super::Gen)) with the restriction
//! ([`Restriction`]) inside each branch of the union.
//! - **The table itself** is read by a semi-join, `col IN (SELECT <key>
//!   FROM <reached keys>)`: PostgreSQL chooses an index per key for few
//!   keys and a hash of the keys for many. (`col = ANY (ARRAY(...))` was
//!   estimated as ten keys whatever their number and compared element by
//!   element: where the bitmap of its rows outgrew `work_mem`, every row
//!   of a lossy page was rechecked against every key. TPC-H Q15 at SF 1
//!   took 7 s to recheck 2 million `lineitem` rows against 596
//!   suppliers, where the semi-join takes under one.)
//! - **The consumed changes**, which are few, are restricted by
//!   `col = ANY (ARRAY(...))`.
//!
//! Only keys the extension found not to be arrays ([`Keyed::key_arrays`])
//! narrow: `ARRAY(...)` would nest an array key's values.
//!
//! Which conjuncts qualify: a conjunct of WHERE; one of the ON of an inner
//! join whose rows no later join of its chain NULL-extends; and one of the
//! ON of a LEFT join when the key's table is on its left and the narrowed
//! table is its right side. In each case a row of the narrowed table
//! whose column is not a reached key either meets no row of a reached
//! group or only NULL-extends rows that the conjunct, or the key, keeps
//! out of the reached groups.
//!
//! The key's own table is narrowed too (keeping its NULL keys) where no
//! outer join NULL-extends it: first in its chain or inner-joined, and
//! followed by no RIGHT or FULL join. On a NULL-extended side, a row of it
//! outside the reached keys may still decide whether another table's row
//! is NULL-extended into a reached NULL key.

use sqlparser::ast::{
    BinaryOperator, Expr, Ident, JoinConstraint, JoinOperator, ObjectName, Select, TableFactor,
    TableWithJoins,
};

use super::Gen;
use crate::analyze::{conjuncts, fold};
use crate::model::Keyed;

/// A column of one FROM occurrence: its alias and the column's name.
type Column = (String, String);

impl Gen<'_> {
    /// Read, in `select` (the keyed block with its tables renamed to their
    /// old states), every table equated to a key column by a qualifying
    /// conjunct narrowed to the reached keys in CTE `keys` (columns
    /// `__pgt_k1…`).
    pub(super) fn narrow_old_tables(&mut self, select: &mut Select, keyed: &Keyed, keys: &str) {
        let narrowings = narrowings(select, keyed);
        let mut renamed: Vec<(String, String)> = Vec::new();
        for n in &narrowings {
            if renamed.iter().any(|(a, _)| *a == n.alias) {
                continue;
            }
            let Some(s) = source_of(select, &n.alias) else {
                continue;
            };
            let restriction = Restriction {
                keys: keys.to_string(),
                by: narrowings
                    .iter()
                    .filter(|m| m.alias == n.alias)
                    .map(|m| (m.column.clone(), m.key, m.keep_nulls))
                    .collect(),
            };
            let name = self.source_narrowed_old_cte(s, &restriction);
            renamed.push((n.alias.clone(), name));
        }
        for chain in &mut select.from {
            rename_chain(chain, &renamed);
        }
    }
}

/// The tables of `select` (its tables renamed to their old states) to
/// read narrowed to the reached keys of `keyed`.
fn narrowings(select: &Select, keyed: &Keyed) -> Vec<Narrowing> {
    let scope = &keyed.block.scope;
    // Only keys known not to be arrays (see the module comment).
    let key_columns: Vec<Option<Column>> = keyed
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if keyed.key_arrays.get(i) == Some(&false) {
                column_of(k, scope)
            } else {
                None
            }
        })
        .collect();
    if key_columns.iter().all(Option::is_none) {
        return Vec::new();
    }
    // The key's own table, where no outer join NULL-extends it: its rows
    // outside the reached keys are in other groups, and nothing else
    // depends on them. Its rows with a NULL key are kept for the NULL key.
    let mut narrowings: Vec<Narrowing> = Vec::new();
    let never_null_extended = never_null_extended(&select.from);
    for (i, key) in key_columns.iter().enumerate() {
        if let Some((alias, column)) = key {
            if never_null_extended.contains(alias) {
                narrowings.push(Narrowing {
                    alias: alias.clone(),
                    column: column.clone(),
                    key: i,
                    keep_nulls: true,
                });
            }
        }
    }
    let mut consider = |eq: &Expr, only: Option<&[String]>| {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = eq
        else {
            return;
        };
        let (Some(l), Some(r)) = (column_of(left, scope), column_of(right, scope)) else {
            return;
        };
        for (key, other) in [(&l, &r), (&r, &l)] {
            let Some(i) = key_columns.iter().position(|k| k.as_ref() == Some(key)) else {
                continue;
            };
            let key_table_is_narrowed = key.0 == other.0;
            let allowed = only.is_none_or(|aliases| aliases.contains(&other.0));
            let key_inside = only.is_some_and(|aliases| aliases.contains(&key.0));
            if !key_table_is_narrowed && allowed && !key_inside {
                narrowings.push(Narrowing {
                    alias: other.0.clone(),
                    column: other.1.clone(),
                    key: i,
                    keep_nulls: false,
                });
            }
        }
    };
    if let Some(w) = &select.selection {
        for c in conjuncts(w) {
            consider(&c, None);
        }
    }
    for chain in &select.from {
        for (i, join) in chain.joins.iter().enumerate() {
            let later_null_extends = chain.joins[i + 1..].iter().any(|j| {
                matches!(
                    j.join_operator,
                    JoinOperator::Right(_)
                        | JoinOperator::RightOuter(_)
                        | JoinOperator::FullOuter(_)
                )
            });
            if later_null_extends {
                continue;
            }
            match &join.join_operator {
                JoinOperator::Join(JoinConstraint::On(on))
                | JoinOperator::Inner(JoinConstraint::On(on)) => {
                    for c in conjuncts(on) {
                        consider(&c, None);
                    }
                }
                JoinOperator::Left(JoinConstraint::On(on))
                | JoinOperator::LeftOuter(JoinConstraint::On(on)) => {
                    if let Some(right) = table_alias(&join.relation) {
                        for c in conjuncts(on) {
                            consider(&c, Some(std::slice::from_ref(&right)));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    narrowings
}

/// Where a narrowed read of a table's old state keeps rows: each column
/// of `by` one of the reached values of its key (0-based, column
/// `__pgt_k<key + 1>` of CTE `keys`), or NULL where it keeps NULLs.
pub(super) struct Restriction {
    keys: String,
    by: Vec<(String, usize, bool)>,
}

impl Restriction {
    /// Whether `column` of relation `p` is one of the reached values of
    /// key `key`: `= ANY` over an array, for the consumed changes, which
    /// are few.
    fn reached(&self, p: &str, column: &str, key: usize) -> String {
        let (column, k) = (qualified(p, column), key_column(key));
        format!(
            "{column} = ANY (ARRAY(SELECT __pgt_r.{k} FROM {} __pgt_r WHERE __pgt_r.{k} IS NOT NULL))",
            self.keys
        )
    }

    /// The restriction as one condition on the columns of relation `p`:
    /// for the consumed changes, which are few.
    pub(super) fn condition(&self, p: &str) -> String {
        self.conditions(p, &self.by)
    }

    fn conditions(&self, p: &str, by: &[(String, usize, bool)]) -> String {
        by.iter()
            .map(|(column, key, keep_nulls)| {
                let reached = self.reached(p, column, *key);
                if *keep_nulls {
                    format!("({reached} OR {} IS NULL)", qualified(p, column))
                } else {
                    reached
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The restriction as alternative conditions on the table itself
    /// (relation `p`), each for a branch of its own: its first column a
    /// reached key by a semi-join, and, where it keeps NULLs, NULL when a
    /// NULL key was reached. The rest of the restriction filters both.
    pub(super) fn table_branches(&self, p: &str) -> Vec<String> {
        let Some(((column, key, keep_nulls), rest)) = self.by.split_first() else {
            return vec!["true".into()];
        };
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(" AND {}", self.conditions(p, rest))
        };
        let (quoted, k) = (qualified(p, column), key_column(*key));
        let mut out = vec![format!(
            "{quoted} IN (SELECT __pgt_r.{k} FROM {} __pgt_r){rest}",
            self.keys
        )];
        if *keep_nulls {
            out.push(format!(
                "{quoted} IS NULL AND EXISTS (SELECT FROM {} __pgt_r WHERE __pgt_r.{k} IS NULL){rest}",
                self.keys
            ));
        }
        out
    }
}

/// Column `column` of relation `p`, quoted.
fn qualified(p: &str, column: &str) -> String {
    format!("{p}.{}", crate::sql::quote_ident(column))
}

/// The column of the reached keys holding key `key` (0-based).
fn key_column(key: usize) -> String {
    format!("__pgt_k{}", key + 1)
}

/// One table read narrowed: where its `column` is one of the reached
/// values of key `key` (0-based), or NULL when `keep_nulls`.
struct Narrowing {
    alias: String,
    column: String,
    key: usize,
    keep_nulls: bool,
}

/// The aliases of the tables of the top-level FROM that no outer join
/// NULL-extends: each first in its chain or inner-joined, and followed by
/// no RIGHT or FULL join.
fn never_null_extended(from: &[TableWithJoins]) -> Vec<String> {
    let mut out = Vec::new();
    for chain in from {
        let nullable_after = |p: usize| {
            chain.joins[p..].iter().any(|j| {
                matches!(
                    j.join_operator,
                    JoinOperator::Right(_)
                        | JoinOperator::RightOuter(_)
                        | JoinOperator::FullOuter(_)
                )
            })
        };
        if let Some(alias) = table_alias(&chain.relation) {
            if !nullable_after(0) {
                out.push(alias);
            }
        }
        for (i, join) in chain.joins.iter().enumerate() {
            let inner = matches!(
                join.join_operator,
                JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
            );
            if let Some(alias) = table_alias(&join.relation) {
                if inner && !nullable_after(i + 1) {
                    out.push(alias);
                }
            }
        }
    }
    out
}

/// The occurrence a plain expression is a column of, by the block's scope
/// (each occurrence's alias and columns); `None` for anything else or a
/// bare name more than one occurrence has.
fn column_of(e: &Expr, scope: &[(String, Vec<String>)]) -> Option<Column> {
    match e {
        Expr::Nested(inner) => column_of(inner, scope),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            let (q, c) = (fold(&parts[0]), fold(&parts[1]));
            scope
                .iter()
                .any(|(a, cols)| *a == q && cols.contains(&c))
                .then_some((q, c))
        }
        Expr::Identifier(i) => {
            let c = fold(i);
            let mut owners = scope.iter().filter(|(_, cols)| cols.contains(&c));
            let (alias, _) = owners.next()?;
            owners.next().is_none().then(|| (alias.clone(), c))
        }
        _ => None,
    }
}

/// The alias of a table read as its old state (`__pgt_u<s> AS alias`),
/// when the alias renames none of its columns (the block's names are then
/// the table's own, which the narrowed CTE's condition uses).
fn table_alias(factor: &TableFactor) -> Option<String> {
    match factor {
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: None,
            ..
        } if alias.columns.is_empty() && name.to_string().starts_with("__pgt_u") => {
            Some(fold(&alias.name))
        }
        _ => None,
    }
}

/// The source of the table `alias` names in the top-level FROM
/// (`__pgt_u<s> AS alias`).
fn source_of(select: &Select, alias: &str) -> Option<usize> {
    fn in_factor(f: &TableFactor, alias: &str) -> Option<usize> {
        match f {
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => in_chain(table_with_joins, alias),
            TableFactor::Table { name, .. } if table_alias(f).as_deref() == Some(alias) => {
                name.to_string().strip_prefix("__pgt_u")?.parse().ok()
            }
            _ => None,
        }
    }
    fn in_chain(chain: &TableWithJoins, alias: &str) -> Option<usize> {
        in_factor(&chain.relation, alias).or_else(|| {
            chain
                .joins
                .iter()
                .find_map(|j| in_factor(&j.relation, alias))
        })
    }
    select.from.iter().find_map(|c| in_chain(c, alias))
}

/// Read each table of `renamed` (alias, narrowed CTE) from its CTE.
fn rename_chain(chain: &mut TableWithJoins, renamed: &[(String, String)]) {
    rename_factor(&mut chain.relation, renamed);
    for join in &mut chain.joins {
        rename_factor(&mut join.relation, renamed);
    }
}

fn rename_factor(factor: &mut TableFactor, renamed: &[(String, String)]) {
    if let TableFactor::NestedJoin {
        table_with_joins, ..
    } = factor
    {
        rename_chain(table_with_joins, renamed);
        return;
    }
    let Some(alias) = table_alias(factor) else {
        return;
    };
    if let (Some((_, cte)), TableFactor::Table { name, .. }) =
        (renamed.iter().find(|(a, _)| *a == alias), factor)
    {
        *name = ObjectName::from(vec![Ident::new(cte.clone())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::model::{Model, Occ, Rel};
    use sqlparser::ast::VisitMut;

    /// The narrowings of the keyed subquery of `SELECT n, count(*) FROM
    /// (<inner>) s GROUP BY n` over its old states, as (source, column,
    /// NULLs kept); tables `a(k, v)` (source 0), `b(k, x)` (1) and `c(k,
    /// y)` (2).
    fn narrowed(inner: &str) -> Vec<(usize, String, bool)> {
        narrowed_with(inner, false)
    }

    /// As `narrowed`, with every key an array or not.
    fn narrowed_with(inner: &str, array_keys: bool) -> Vec<(usize, String, bool)> {
        let catalog = Catalog::for_tests(
            &[("a", &["k", "v"]), ("b", &["k", "x"]), ("c", &["k", "y"])],
            &["count"],
        );
        let query = format!("SELECT n, count(*) AS c FROM ({inner}) s GROUP BY n");
        let analysis = crate::analyze::analyze(&query, &catalog).expect("analysis");
        let Ok(Model::Grouped { block, .. }) = &analysis.model else {
            panic!("grouped: {query}: {:?}", analysis.model.err());
        };
        let Occ::Sub { rel, .. } = &block.occs[0] else {
            panic!("a subquery in FROM");
        };
        let Rel::Keyed(keyed) = rel.as_ref() else {
            panic!("kept by keys");
        };
        let mut keyed = keyed.as_ref().clone();
        keyed.key_arrays = vec![array_keys; keyed.keys.len()];
        let mut select = keyed.block.select.clone();
        let _ = select.visit(&mut super::super::keyed::OldTables(&keyed.tables));
        let mut out: Vec<(usize, String, bool)> = narrowings(&select, &keyed)
            .into_iter()
            .map(|n| {
                (
                    source_of(&select, &n.alias).expect("a table"),
                    n.column,
                    n.keep_nulls,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Which sources `narrowed` reads narrowed.
    fn narrowed_sources(inner: &str) -> Vec<usize> {
        let mut sources: Vec<usize> = narrowed(inner).into_iter().map(|(s, _, _)| s).collect();
        sources.dedup();
        sources
    }

    #[test]
    fn a_table_equated_to_a_key_column_is_read_only_where_the_reached_keys_are() {
        // TPC-H Q13's shape: the LEFT join's right side, and the key's
        // own table (with its NULL keys).
        let q13 = "SELECT a.k, count(b.x) AS n FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k";
        assert_eq!(
            narrowed(q13),
            [(0, "k".to_string(), true), (1, "k".to_string(), false)]
        );
        // Equated in WHERE, or by an inner join, through either key.
        assert_eq!(
            narrowed_sources("SELECT a.k, count(*) AS n FROM a, b WHERE b.k = a.k GROUP BY a.k"),
            [0, 1]
        );
        assert_eq!(
            narrowed_sources(
                "SELECT a.k, c.y, count(*) AS n FROM a JOIN b ON a.k = b.k JOIN c ON c.k = b.x GROUP BY a.k, c.y"
            ),
            [0, 1, 2]
        );
        // One table (TPC-H Q15's revenue): narrowed by its own key.
        assert_eq!(
            narrowed_sources("SELECT k, count(*) AS n FROM a GROUP BY k"),
            [0]
        );
        // Array keys (or keys of unknown type): nothing.
        let q13 = "SELECT a.k, count(b.x) AS n FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k";
        assert_eq!(narrowed_with(q13, true), []);
        // A table whose alias renames its columns: only the key's own.
        assert_eq!(
            narrowed_sources(
                "SELECT a.k, count(bb.y) AS n FROM a LEFT JOIN b AS bb(j, y) ON bb.j = a.k GROUP BY a.k"
            ),
            [0]
        );
        // Not equated: only the key's own table.
        assert_eq!(
            narrowed_sources(
                "SELECT a.k, count(*) AS n FROM a LEFT JOIN b ON b.k > a.k GROUP BY a.k"
            ),
            [0]
        );
    }

    #[test]
    fn no_table_is_narrowed_where_its_missing_rows_could_reach_a_key() {
        for inner in [
            // The key is on the NULL-extended side: a customer without
            // orders is in the NULL group whatever its id.
            "SELECT b.k, count(*) AS n FROM a LEFT JOIN b ON b.k = a.k GROUP BY b.k",
            // A FULL join NULL-extends either side.
            "SELECT a.k, count(*) AS n FROM a FULL JOIN b ON b.k = a.k GROUP BY a.k",
            // A key that is not a column.
            "SELECT a.k + 1 AS g, count(*) AS n FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k + 1",
            // The key's table NULL-extended by a RIGHT join.
            "SELECT b.k, count(*) AS n FROM a RIGHT JOIN b ON b.k > a.k GROUP BY b.k",
        ] {
            assert_eq!(narrowed_sources(inner), Vec::<usize>::new(), "{inner}");
        }
    }

    #[test]
    fn the_table_is_read_by_a_semi_join_and_the_changes_by_an_array() {
        let r = Restriction {
            keys: "__pgt_g1".into(),
            by: vec![("k".into(), 0, true), ("x".into(), 1, false)],
        };
        let any_k = "t.k = ANY (ARRAY(SELECT __pgt_r.__pgt_k1 FROM __pgt_g1 __pgt_r WHERE __pgt_r.__pgt_k1 IS NOT NULL))";
        let any_x = "t.x = ANY (ARRAY(SELECT __pgt_r.__pgt_k2 FROM __pgt_g1 __pgt_r WHERE __pgt_r.__pgt_k2 IS NOT NULL))";
        assert_eq!(
            r.condition("t"),
            format!("({any_k} OR t.k IS NULL) AND {any_x}")
        );
        // The first column drives the read: by a semi-join, and its NULLs
        // in a branch of their own, run only when a NULL key was reached.
        assert_eq!(
            r.table_branches("t"),
            [
                format!("t.k IN (SELECT __pgt_r.__pgt_k1 FROM __pgt_g1 __pgt_r) AND {any_x}"),
                format!(
                    "t.k IS NULL AND EXISTS (SELECT FROM __pgt_g1 __pgt_r WHERE __pgt_r.__pgt_k1 IS NULL) AND {any_x}"
                ),
            ]
        );
        let without_nulls = Restriction {
            keys: "g".into(),
            by: vec![("k".into(), 0, false)],
        };
        assert_eq!(
            without_nulls.table_branches("t"),
            ["t.k IN (SELECT __pgt_r.__pgt_k1 FROM g __pgt_r)"]
        );
    }

    fn scope() -> Vec<(String, Vec<String>)> {
        vec![
            ("c".into(), vec!["id".into(), "name".into()]),
            ("o".into(), vec!["id".into(), "cust".into()]),
            ("x".into(), vec!["cust".into(), "z".into()]),
        ]
    }

    #[test]
    fn columns_resolve_by_alias_or_by_a_unique_name() {
        let s = scope();
        let col = |t: &str| column_of(&crate::sql::parse_expr(t), &s);
        assert_eq!(col("o.cust"), Some(("o".into(), "cust".into())));
        assert_eq!(col("(name)"), Some(("c".into(), "name".into())));
        assert_eq!(col("z"), Some(("x".into(), "z".into())));
        // Two occurrences have it, or none does, or it is no column.
        assert_eq!(col("cust"), None);
        assert_eq!(col("o.name"), None);
        assert_eq!(col("o.cust + 1"), None);
    }
}
