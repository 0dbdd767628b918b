//! `GROUP BY GROUPING SETS / ROLLUP / CUBE`: a query with grouping sets
//! returns the rows of one grouped query per set, so it is rewritten as
//! the `UNION ALL` of those queries and maintained as such (each branch a
//! grouped subquery kept by its keys, the union kept by its rows' values).
//!
//! In the branch of a set, a grouping expression outside the set is NULL
//! where the query shows it outside an aggregate, typed as the expression
//! is (`(array_agg(e) FILTER (WHERE false))[1]`, which reads no row), and
//! `GROUPING(...)` is the constant bit mask of the expressions outside it.
//! Every output is named as the query names it, so the union's columns
//! keep their names.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, GroupByExpr, Select, SelectItem, VisitMut, VisitorMut};

use super::{
    fold, last_ident,
    ordered_aggregates::{has_own_order, ORDERED_AGGREGATES},
    select::output_name,
    Ident, SUPPORTED_AGGREGATES,
};
use crate::sql::parse_expr;

/// Whether a block groups by grouping sets, ROLLUP or CUBE.
pub(super) fn has_grouping_sets(select: &Select) -> bool {
    matches!(&select.group_by, GroupByExpr::Expressions(exprs, _)
        if exprs.iter().any(|e| matches!(e, Expr::GroupingSets(_) | Expr::Rollup(_) | Expr::Cube(_))))
}

/// The block as the `UNION ALL` of one grouped block per grouping set, or
/// why it cannot be.
pub(super) fn as_union(select: &Select) -> Result<String, String> {
    let GroupByExpr::Expressions(elements, modifiers) = &select.group_by else {
        return Err("GROUP BY ALL".into());
    };
    if !modifiers.is_empty() {
        return Err("GROUP BY modifiers (WITH ROLLUP / WITH CUBE)".into());
    }
    if select.distinct.is_some() {
        return Err("DISTINCT over GROUPING SETS / ROLLUP / CUBE".into());
    }
    // Each element's alternatives; the sets are their cross product.
    let mut sets: Vec<Vec<Expr>> = vec![Vec::new()];
    for element in elements {
        let alternatives = alternatives(element)?;
        sets = sets
            .iter()
            .flat_map(|set| {
                alternatives.iter().map(move |alt| {
                    let mut s = set.clone();
                    s.extend(alt.iter().cloned());
                    s
                })
            })
            .collect();
    }
    if sets.len() > 64 {
        return Err(format!(
            "{} grouping sets (at most 64 are maintained)",
            sets.len()
        ));
    }
    // Every grouping expression, by its text.
    let mut all: Vec<String> = Vec::new();
    for e in sets.iter().flatten().map(Expr::to_string) {
        if !all.contains(&e) {
            all.push(e);
        }
    }
    let branches: Vec<String> = sets
        .iter()
        .map(|set| branch(select, set, &all))
        .collect::<Result<_, _>>()?;
    Ok(branches
        .iter()
        .map(|b| format!("({b})"))
        .collect::<Vec<_>>()
        .join(" UNION ALL "))
}

/// The grouping sets one GROUP BY element stands for.
fn alternatives(element: &Expr) -> Result<Vec<Vec<Expr>>, String> {
    let plain = |items: &[Expr]| -> Result<Vec<Expr>, String> {
        if items
            .iter()
            .any(|e| matches!(e, Expr::GroupingSets(_) | Expr::Rollup(_) | Expr::Cube(_)))
        {
            Err("nested GROUPING SETS / ROLLUP / CUBE".into())
        } else {
            Ok(items.to_vec())
        }
    };
    match element {
        Expr::GroupingSets(sets) => sets.iter().map(|s| plain(s)).collect(),
        Expr::Rollup(items) => {
            // (a, b, c), (a, b), (a), ()
            (0..=items.len())
                .rev()
                .map(|n| plain(&items[..n].concat()))
                .collect()
        }
        Expr::Cube(items) => {
            if items.len() > 6 {
                return Err("CUBE of more than 6 elements".into());
            }
            (0u32..(1 << items.len()))
                .rev()
                .map(|mask| {
                    let chosen: Vec<Expr> = items
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| mask & (1 << (items.len() - 1 - i)) != 0)
                        .flat_map(|(_, e)| e.iter().cloned())
                        .collect();
                    plain(&chosen)
                })
                .collect()
        }
        e => Ok(vec![vec![e.clone()]]),
    }
}

/// The grouped block of one set: grouping expressions outside it NULL,
/// `GROUPING(...)` constant.
fn branch(select: &Select, set: &[Expr], all: &[String]) -> Result<String, String> {
    let inside: Vec<String> = set.iter().map(|e| e.to_string()).collect();
    let outside: Vec<String> = all
        .iter()
        .filter(|e| !inside.contains(e))
        .cloned()
        .collect();
    let mut s = select.clone();
    s.group_by = GroupByExpr::Expressions(set.to_vec(), vec![]);
    let mut fix = Branch {
        outside: &outside,
        inside: &inside,
        aggregate_depth: 0,
        problem: None,
    };
    for item in &mut s.projection {
        let name = output_name(item);
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return Err("a wildcard in a query with GROUPING SETS".into()),
        };
        let _ = expr.visit(&mut fix);
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', name),
        };
    }
    if let Some(h) = &mut s.having {
        let _ = h.visit(&mut fix);
    }
    match fix.problem {
        Some(p) => Err(p),
        None => Ok(s.to_string()),
    }
}

struct Branch<'a> {
    outside: &'a [String],
    inside: &'a [String],
    aggregate_depth: usize,
    problem: Option<String>,
}

fn is_aggregate(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.over.is_none()
        && last_ident(&f.name).is_some_and(|i| SUPPORTED_AGGREGATES.contains(&fold(&i).as_str())
            || ORDERED_AGGREGATES.contains(&fold(&i).as_str())))
}

impl VisitorMut for Branch<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        // Each set becomes a grouped subquery, where an ordered aggregate
        // is not maintained: name the construct the user wrote.
        if let Expr::Function(f) = e {
            if f.over.is_none() && has_own_order(f) {
                self.problem = Some(format!(
                    "ordered aggregate {} with GROUPING SETS / ROLLUP / CUBE",
                    f.name
                ));
            }
        }
        if is_aggregate(e) {
            self.aggregate_depth += 1;
            return ControlFlow::Continue(());
        }
        if self.aggregate_depth > 0 {
            return ControlFlow::Continue(());
        }
        if let Expr::Function(f) = e {
            if last_ident(&f.name).is_some_and(|i| fold(&i) == "grouping") {
                // Bit i (from the left) set: argument i is outside the set.
                let args: Vec<String> = match &f.args {
                    sqlparser::ast::FunctionArguments::List(l) => {
                        l.args.iter().map(|a| a.to_string()).collect()
                    }
                    _ => Vec::new(),
                };
                let mut mask: u64 = 0;
                for a in &args {
                    mask <<= 1;
                    if !self.inside.contains(a) {
                        mask |= 1;
                    }
                }
                *e = parse_expr(&mask.to_string());
                return ControlFlow::Continue(());
            }
        }
        let text = e.to_string();
        if self.outside.contains(&text) {
            // Typed NULL: the expression's type, without reading a row.
            *e = parse_expr(&format!(
                "(pg_catalog.array_agg({text}) FILTER (WHERE false))[1]"
            ));
            // The visitor goes on into the aggregate just made.
        } else if matches!(e, Expr::Function(f) if f.over.is_some()) {
            self.problem = Some("a window function with GROUPING SETS / ROLLUP / CUBE".into());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if is_aggregate(e) {
            self.aggregate_depth -= 1;
        }
        ControlFlow::Continue(())
    }
}
