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

use sqlparser::ast::FunctionArguments;
use sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause};

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
        if matches!(expr, Expr::Value(_)) {
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
