//! `ORDER BY ... LIMIT [OFFSET]` on the defining query: which output
//! columns the rows are ranked by, and how many are kept. Only the top
//! level may have one; a query kept by its first rows is maintained as a
//! bag of them (see `delta/top_k.rs`).

use sqlparser::ast::{Expr, LimitClause, OrderByKind, OrderBySort, Query, SelectItem, Value};

use super::{fold, Shape};
use crate::model::{OrderItem, Rel, TopK};

/// The ORDER BY and LIMIT of a query as written, before its outputs are known.
pub(super) struct Written {
    items: Vec<(Expr, bool, Option<bool>)>,
    limit: u64,
    offset: u64,
}

impl Written {
    /// The query's ranking, or why it cannot be maintained; `Ok(None)`
    /// when it has no LIMIT, OFFSET or FETCH.
    pub(super) fn of(query: &Query) -> Result<Option<Written>, String> {
        let (limit, offset) = match (&query.limit_clause, &query.fetch) {
            (None, None) => return Ok(None),
            (
                Some(LimitClause::LimitOffset {
                    limit,
                    offset,
                    limit_by,
                }),
                None,
            ) if limit_by.is_empty() => {
                let offset = match offset {
                    Some(o) => count(&o.value)?,
                    None => 0,
                };
                match limit {
                    Some(l) => (count(l)?, offset),
                    None => return Err("OFFSET without LIMIT".into()),
                }
            }
            (None, Some(fetch)) if !fetch.with_ties && !fetch.percent => match &fetch.quantity {
                Some(q) => (count(q)?, 0),
                None => (1, 0),
            },
            (_, Some(fetch)) if fetch.with_ties => {
                return Err("FETCH ... WITH TIES".into());
            }
            _ => return Err("this form of LIMIT / OFFSET / FETCH".into()),
        };
        let Some(order_by) = &query.order_by else {
            return Err("LIMIT without ORDER BY (which rows it keeps is unspecified)".into());
        };
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err("ORDER BY ALL".into());
        };
        let mut items = Vec::new();
        for e in exprs {
            let desc = match &e.options.sort {
                None | Some(OrderBySort::Asc) => false,
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => return Err("ORDER BY ... USING".into()),
            };
            if e.with_fill.is_some() {
                return Err("ORDER BY ... WITH FILL".into());
            }
            items.push((e.expr.clone(), desc, e.options.nulls_first));
        }
        Ok(Some(Written {
            items,
            limit,
            offset,
        }))
    }

    /// Resolve each ORDER BY item to an output of `shape`, as PostgreSQL
    /// does: a position, an output name, or an expression of the select
    /// list. One that is none of these (a column not selected) cannot be
    /// ranked by from the stored rows.
    pub(super) fn resolve(self, shape: &Shape) -> Result<TopK, String> {
        let (names, exprs): (Vec<String>, Vec<String>) = match shape {
            Shape::Rel(Rel::Block(b)) | Shape::Grouped(b, ..) => (
                b.outputs.clone(),
                b.select.projection.iter().map(item_text).collect(),
            ),
            Shape::Rel(rel @ (Rel::UnionAll(_) | Rel::Keyed(_))) => {
                (rel.outputs().to_vec(), Vec::new())
            }
        };
        let mut order = Vec::new();
        for (expr, desc, nulls_first) in self.items {
            let by_position = match &expr {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n.parse::<usize>().ok().and_then(|i| i.checked_sub(1)),
                    _ => None,
                },
                _ => None,
            };
            let by_name = match &expr {
                Expr::Identifier(id) => names.iter().position(|n| *n == fold(id)),
                _ => None,
            };
            let by_expr = exprs.iter().position(|t| *t == expr.to_string());
            let Some(output) = by_position
                .filter(|i| *i < names.len())
                .or(by_name)
                .or(by_expr)
            else {
                return Err(format!(
                    "ORDER BY {expr} with LIMIT, which is not a column of the select list"
                ));
            };
            order.push(OrderItem {
                output,
                desc,
                nulls_first,
            });
        }
        Ok(TopK {
            order,
            limit: self.limit,
            offset: self.offset,
        })
    }
}

fn item_text(item: &SelectItem) -> String {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.to_string(),
        _ => String::new(),
    }
}

/// A LIMIT or OFFSET count: a non-negative integer constant.
fn count(e: &Expr) -> Result<u64, String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n
                .parse::<u64>()
                .map_err(|_| format!("LIMIT / OFFSET {n}, which is not a non-negative integer")),
            _ => Err(format!(
                "LIMIT / OFFSET {e}, which is not an integer constant"
            )),
        },
        _ => Err(format!(
            "LIMIT / OFFSET {e}, which is not an integer constant"
        )),
    }
}
