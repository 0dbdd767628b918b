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

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments,
    Select, SelectItem,
};

use super::{fold, last_ident, subqueries::walk_outside_subqueries};

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
    if let Some(other) = list
        .clauses
        .iter()
        .find(|c| !matches!(c, FunctionArgumentClause::OrderBy(_)))
    {
        return Some(Err(format!(
            "ordered aggregate {name} with a clause outside the supported grammar ({other})"
        )));
    }
    let keys: Vec<String> = call_order_keys(f).map(Expr::to_string).collect();
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

/// Whether `f` is written with an order of its own: an `ORDER BY` (or
/// another clause) in its argument list, or `WITHIN GROUP`.
pub(super) fn has_own_order(f: &Function) -> bool {
    !f.within_group.is_empty()
        || matches!(&f.args, FunctionArguments::List(l) if !l.clauses.is_empty())
}

/// The keys of the `ORDER BY` in `f`'s argument list.
fn call_order_keys(f: &Function) -> impl Iterator<Item = &Expr> {
    let clauses = match &f.args {
        FunctionArguments::List(list) => list.clauses.as_slice(),
        _ => &[],
    };
    clauses.iter().flat_map(|c| match c {
        FunctionArgumentClause::OrderBy(order) => order.iter().map(|o| &o.expr).collect(),
        _ => Vec::new(),
    })
}

/// The `ORDER BY` keys of the ordered aggregates (see [`ORDERED_AGGREGATES`])
/// that `select`'s list and `HAVING` compute, outside subqueries. Rows these
/// keys tie hold equal arguments only under deterministic collations, so
/// the extension asks PostgreSQL for their collations (`probes`).
pub(crate) fn order_keys(select: &Select) -> Vec<Expr> {
    let mut keys = Vec::new();
    let mut collect = |e: &Expr| {
        if let Expr::Function(f) = e {
            if last_ident(&f.name).is_some_and(|i| ORDERED_AGGREGATES.contains(&fold(&i).as_str()))
            {
                keys.extend(call_order_keys(f).cloned());
            }
        }
    };
    let items = select.projection.iter().filter_map(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    });
    for e in items.chain(select.having.as_ref()) {
        walk_outside_subqueries(e, &mut collect);
    }
    keys
}
