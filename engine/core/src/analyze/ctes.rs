//! WITH clauses: non-recursive CTEs are inlined where they are referenced,
//! so the rest of analysis sees subqueries in FROM.

use super::*;

/// Replace references to CTEs by the CTE bodies as subqueries in FROM.
pub(super) fn inline_ctes(
    query: &mut Query,
    outer: &[(String, TableAlias, Query)],
) -> Result<(), String> {
    let mut scope: Vec<(String, TableAlias, Query)> = outer.to_vec();
    if let Some(with) = query.with.take() {
        if with.recursive {
            return Err("WITH RECURSIVE".into());
        }
        for cte in with.cte_tables {
            let mut body = *cte.query;
            inline_ctes(&mut body, &scope)?;
            scope.push((fold(&cte.alias.name), cte.alias.clone(), body));
        }
    }
    inline_set_expr(&mut query.body, &scope)
}

pub(super) fn inline_set_expr(
    body: &mut SetExpr,
    scope: &[(String, TableAlias, Query)],
) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            let mut result = Ok(());
            for_each_factor_mut(&mut select.from, &mut |factor| {
                if result.is_err() {
                    return;
                }
                match factor {
                    TableFactor::Table {
                        name,
                        alias,
                        args: None,
                        ..
                    } if name.0.len() == 1 => {
                        let written = last_ident(name).map(|i| fold(&i)).unwrap_or_default();
                        if let Some((_, cte_alias, body)) =
                            scope.iter().rev().find(|(n, _, _)| *n == written)
                        {
                            let mut new_alias = alias.clone().unwrap_or_else(|| cte_alias.clone());
                            if new_alias.columns.is_empty() {
                                new_alias.columns = cte_alias.columns.clone();
                            }
                            *factor = TableFactor::Derived {
                                lateral: false,
                                subquery: Box::new(body.clone()),
                                alias: Some(new_alias),
                                sample: None,
                            };
                        }
                    }
                    TableFactor::Derived { subquery, .. } => {
                        result = inline_ctes(subquery, scope);
                    }
                    _ => {}
                }
            });
            result?;
            inline_in_expressions(select, scope)
        }
        SetExpr::Query(q) => inline_ctes(q, scope),
        SetExpr::SetOperation { left, right, .. } => {
            inline_set_expr(left, scope)?;
            inline_set_expr(right, scope)
        }
        _ => Ok(()),
    }
}

/// Inline CTE references inside the subqueries of a block's expressions
/// (WHERE, HAVING, the select list, JOIN conditions): a CTE's name
/// shadows a table's there too.
fn inline_in_expressions(
    select: &mut Select,
    scope: &[(String, TableAlias, Query)],
) -> Result<(), String> {
    use sqlparser::ast::{VisitMut, VisitorMut};
    struct Inliner<'s> {
        depth: usize,
        scope: &'s [(String, TableAlias, Query)],
        result: Result<(), String>,
    }
    impl VisitorMut for Inliner<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if self.depth == 0 && self.result.is_ok() {
                self.result = inline_ctes(q, self.scope);
            }
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    if scope.is_empty() {
        return Ok(());
    }
    let mut inliner = Inliner {
        depth: 0,
        scope,
        result: Ok(()),
    };
    for item in &mut select.projection {
        let _ = item.visit(&mut inliner);
    }
    let _ = select.selection.visit(&mut inliner);
    let _ = select.having.visit(&mut inliner);
    for twj in &mut select.from {
        for join in &mut twj.joins {
            let _ = join.join_operator.visit(&mut inliner);
        }
    }
    inliner.result
}
