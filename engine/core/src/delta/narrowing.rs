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
//! narrowed to them (`col = ANY (ARRAY(SELECT ...))`), a condition on the
//! union's own columns that PostgreSQL pushes into each branch and answers
//! from an index.
//!
//! Which conjuncts qualify: a conjunct of WHERE; one of the ON of an inner
//! join whose rows no later join of its chain NULL-extends; and one of the
//! ON of a LEFT join when the key's table is on its left and the narrowed
//! table is its right side. In each case a row of the narrowed table
//! whose column is not a reached key either meets no row of a reached
//! group or only NULL-extends rows that the conjunct, or the key, keeps
//! out of the reached groups. The key's own table is never narrowed: a
//! row of it outside the reached keys may still decide whether another
//! table's row is NULL-extended into a reached NULL key.

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, Select, SetExpr, Statement, TableFactor,
    TableWithJoins,
};

use crate::analyze::{conjuncts, fold};
use crate::model::Keyed;

/// A column of one FROM occurrence: its alias and the column's name.
type Column = (String, String);

/// Narrow, in `select` (the keyed block with its tables renamed to their
/// old states), every table equated to a key column by a qualifying
/// conjunct to the reached keys in CTE `keys` (columns `__pgt_k1…`).
pub(super) fn narrow_old_tables(select: &mut Select, keyed: &Keyed, keys: &str) {
    let scope = &keyed.block.scope;
    let key_columns: Vec<Option<Column>> = keyed.keys.iter().map(|k| column_of(k, scope)).collect();
    if key_columns.iter().all(Option::is_none) {
        return;
    }
    // (narrowed alias, its column, the key index)
    let mut narrowings: Vec<(String, String, usize)> = Vec::new();
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
                narrowings.push((other.0.clone(), other.1.clone(), i));
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
    if narrowings.is_empty() {
        return;
    }
    for chain in &mut select.from {
        narrow_chain(chain, &narrowings, keys);
    }
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

/// The alias of a table read as its old state (`__pgt_u<s> AS alias`).
fn table_alias(factor: &TableFactor) -> Option<String> {
    match factor {
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: None,
            ..
        } if name.to_string().starts_with("__pgt_u") => Some(fold(&alias.name)),
        _ => None,
    }
}

fn narrow_chain(chain: &mut TableWithJoins, narrowings: &[(String, String, usize)], keys: &str) {
    narrow_factor(&mut chain.relation, narrowings, keys);
    for join in &mut chain.joins {
        narrow_factor(&mut join.relation, narrowings, keys);
    }
}

fn narrow_factor(factor: &mut TableFactor, narrowings: &[(String, String, usize)], keys: &str) {
    if let TableFactor::NestedJoin {
        table_with_joins, ..
    } = factor
    {
        narrow_chain(table_with_joins, narrowings, keys);
        return;
    }
    let Some(alias) = table_alias(factor) else {
        return;
    };
    let conditions: Vec<String> = narrowings
        .iter()
        .filter(|(a, _, _)| *a == alias)
        .map(|(_, column, i)| {
            let k = format!("__pgt_k{}", i + 1);
            format!(
                "__pgt_n.{} = ANY (ARRAY(SELECT __pgt_r.{k} FROM {keys} __pgt_r WHERE __pgt_r.{k} IS NOT NULL))",
                crate::sql::quote_ident(column)
            )
        })
        .collect();
    if conditions.is_empty() {
        return;
    }
    let TableFactor::Table {
        name,
        alias: Some(table_alias),
        ..
    } = factor
    else {
        return;
    };
    let sql = format!(
        "SELECT * FROM (SELECT * FROM {name} AS __pgt_n WHERE {}) AS __pgt_narrowed",
        conditions.join(" AND ")
    );
    let kept = table_alias.clone();
    let parsed =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &sql)
            .expect("a generated narrowing parses");
    let Some(Statement::Query(query)) = parsed.into_iter().next() else {
        unreachable!("a SELECT parses as a query");
    };
    let SetExpr::Select(select) = *query.body else {
        unreachable!("a plain SELECT");
    };
    let mut narrowed = select
        .from
        .into_iter()
        .next()
        .expect("one FROM item")
        .relation;
    if let TableFactor::Derived { alias, .. } = &mut narrowed {
        *alias = Some(kept);
    }
    *factor = narrowed;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, FunctionFacts, SourceKind, SourceTable};
    use crate::model::{Model, Occ, Rel};
    use sqlparser::ast::VisitMut;

    /// The keyed subquery of `SELECT n, count(*) FROM (<inner>) s GROUP
    /// BY n` over its old states, narrowed; tables `a(k, v)` (source 0),
    /// `b(k, x)` (1) and `c(k, y)` (2).
    fn narrowed(inner: &str) -> String {
        let mut catalog = Catalog::new();
        for (oid, name, cols) in [
            (1, "a", ["k", "v"]),
            (2, "b", ["k", "x"]),
            (3, "c", ["k", "y"]),
        ] {
            let table = SourceTable {
                oid,
                schema: "public".into(),
                name: name.into(),
                kind: SourceKind::Table,
                columns: cols.iter().map(|c| c.to_string()).collect(),
                capture_problem: None,
                capture: Default::default(),
                key: Vec::new(),
                image_equality: Vec::new(),
            };
            catalog.insert(name, table);
        }
        let aggregate = FunctionFacts {
            immutable: true,
            aggregate: true,
            ..Default::default()
        };
        catalog.insert_function("count", aggregate);
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
        let mut select = keyed.block.select.clone();
        let _ = select.visit(&mut super::super::keyed::OldTables(&keyed.tables));
        narrow_old_tables(&mut select, keyed, "__pgt_g0");
        select.to_string()
    }

    /// Which sources' old states `narrowed` reads narrowed.
    fn narrowed_sources(inner: &str) -> Vec<usize> {
        let sql = narrowed(inner);
        (0..3)
            .filter(|s| sql.contains(&format!("FROM __pgt_u{s} AS __pgt_n WHERE")))
            .collect()
    }

    #[test]
    fn a_table_equated_to_a_key_column_is_read_only_where_the_reached_keys_are() {
        // TPC-H Q13's shape: the LEFT join's right side, not the key's table.
        let q13 = "SELECT a.k, count(b.x) AS n FROM a LEFT JOIN b ON b.k = a.k GROUP BY a.k";
        assert_eq!(narrowed_sources(q13), [1]);
        assert!(
            narrowed(q13).contains(
                "__pgt_n.k = ANY(ARRAY(SELECT __pgt_r.__pgt_k1 FROM __pgt_g0 __pgt_r WHERE __pgt_r.__pgt_k1 IS NOT NULL))"
            ),
            "{}",
            narrowed(q13)
        );
        // Equated in WHERE, or by an inner join, through either key.
        assert_eq!(
            narrowed_sources("SELECT a.k, count(*) AS n FROM a, b WHERE b.k = a.k GROUP BY a.k"),
            [1]
        );
        assert_eq!(
            narrowed_sources(
                "SELECT a.k, c.y, count(*) AS n FROM a JOIN b ON a.k = b.k JOIN c ON c.k = b.x GROUP BY a.k, c.y"
            ),
            [1]
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
            // Not an equality.
            "SELECT a.k, count(*) AS n FROM a LEFT JOIN b ON b.k > a.k GROUP BY a.k",
        ] {
            assert_eq!(narrowed_sources(inner), Vec::<usize>::new(), "{inner}");
        }
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
