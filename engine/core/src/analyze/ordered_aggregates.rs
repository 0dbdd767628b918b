//! Ordered aggregates: `string_agg(s, ',' ORDER BY s)` and its kin.
//!
//! `string_agg`, `array_agg`, `json_agg` and `jsonb_agg` print their
//! inputs in the order they arrive, so without an `ORDER BY` inside the
//! call their value is the plan's choice and a recomputed group need not
//! match a full run. With an `ORDER BY` that sorts by every argument the
//! value is fixed by the group's rows (rows the keys tie hold equal
//! arguments), and recomputing the groups a change reaches, as grouped
//! queries are maintained, gives what a full run prints. An `ORDER BY`
//! that leaves two different arguments tied leaves their order open, and
//! is refused with the argument it leaves open.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments, Query,
    Select, SelectItem, Visit, Visitor,
};

use super::{fold, last_ident};

/// Aggregates whose value follows the order of their input rows, which the
/// engine maintains when an `ORDER BY` in the call fixes that order.
pub(super) const ORDERED_AGGREGATES: &[&str] =
    &["string_agg", "array_agg", "json_agg", "jsonb_agg"];

/// For an ordered aggregate `f` (named `name`, folded) written with an
/// `ORDER BY` in its argument list: `Ok` when that `ORDER BY` fixes its
/// value, or the reason it does not. `None` when `f` is not such a call
/// (another aggregate, no `ORDER BY`, or `WITHIN GROUP`): the caller
/// judges it as any aggregate.
pub(super) fn order_fixed(name: &str, f: &Function) -> Option<Result<(), String>> {
    if !ORDERED_AGGREGATES.contains(&name) || !f.within_group.is_empty() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let mut keys: Vec<String> = Vec::new();
    for clause in &list.clauses {
        match clause {
            FunctionArgumentClause::OrderBy(order) => {
                keys.extend(order.iter().map(|o| o.expr.to_string()));
            }
            other => {
                return Some(Err(format!(
                    "ordered aggregate {name} with a clause outside the supported grammar ({other})"
                )))
            }
        }
    }
    if keys.is_empty() {
        return None;
    }
    for arg in &list.args {
        let expr = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => e,
            other => {
                return Some(Err(format!(
                    "ordered aggregate {name} with the argument {other}, which its ORDER BY cannot order"
                )))
            }
        };
        // A constant (string_agg's delimiter) is the same in every row.
        if constant(expr) {
            continue;
        }
        let text = expr.to_string();
        if !keys.contains(&text) {
            return Some(Err(format!(
                "ordered aggregate {name} whose ORDER BY leaves the order of rows with equal keys \
                 and different {text} open (order by every argument, for example ORDER BY ..., {text})"
            )));
        }
    }
    Some(Ok(()))
}

/// A literal, possibly cast or parenthesised (`','`, `','::text`).
fn constant(expr: &Expr) -> bool {
    match expr {
        Expr::Value(_) => true,
        Expr::Cast { expr, .. } | Expr::Nested(expr) => constant(expr),
        _ => false,
    }
}

/// The `ORDER BY` keys of the ordered aggregates (see [`ORDERED_AGGREGATES`])
/// that `select`'s list and `HAVING` compute, outside subqueries. Rows these
/// keys tie hold equal arguments only under deterministic collations, so
/// the extension asks PostgreSQL for their collations (`probes`).
pub(crate) fn order_keys(select: &Select) -> Vec<Expr> {
    struct Keys {
        depth: usize,
        keys: Vec<Expr>,
    }
    impl Visitor for Keys {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let Expr::Function(f) = e else {
                return ControlFlow::Continue(());
            };
            let ordered = last_ident(&f.name)
                .is_some_and(|i| ORDERED_AGGREGATES.contains(&fold(&i).as_str()));
            if self.depth == 0 && ordered {
                if let FunctionArguments::List(list) = &f.args {
                    for clause in &list.clauses {
                        if let FunctionArgumentClause::OrderBy(order) = clause {
                            self.keys.extend(order.iter().map(|o| o.expr.clone()));
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut keys = Keys {
        depth: 0,
        keys: Vec::new(),
    };
    for item in &select.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = e.visit(&mut keys);
        }
    }
    if let Some(h) = &select.having {
        let _ = h.visit(&mut keys);
    }
    keys.keys
}
