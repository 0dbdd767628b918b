//! Exact delta rows of a block whose subqueries only filter its rows, so
//! that an algebraic aggregate over it is maintained from them instead of
//! recomputing every group a subquery's change reaches (TPC-H Q4: five
//! groups, each a hash join of every order with every line item).
//!
//! A filter is an `EXISTS`, `NOT EXISTS` or `x IN (SELECT ...)` standing as
//! a whole conjunct of the WHERE, over base tables, with no grouping,
//! limit or subquery of its own. With `S` the conjunction of the filters
//! and `F` the rest of the block,
//!
//! ```text
//! σ[S_new](F_new) − σ[S_old](F_old)
//!   = σ[S_new](F_new − F_old)                  (the block's delta terms, S as written)
//!   + Σ over F_old rows r: r × ([S_new(r)] − [S_old(r)])
//! ```
//!
//! The second sum only has rows a filter's change reaches (its correlation
//! values, as for the recompute form), read from the old state of the
//! block's changed sources with the old and new truth of `S`. `S_old`
//! counts the matching rows of the filter's old state, a signed bag, so an
//! `EXISTS` holds when the count is above zero.

use sqlparser::ast::{Expr, InTarget, SetExpr, TableWithJoins};

use super::join_terms::{substituted, Version};
use super::subqueries::tuple;
use super::{parse_expr, Gen};
use crate::analyze::{select_item_expr, subquery_conjuncts, without_subquery_conjuncts};
use crate::model::{Block, Occ, SubLink};

/// How a filter tests its subquery's rows.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// `EXISTS`: some row.
    Exists,
    /// `NOT EXISTS`: no row.
    NotExists,
    /// `tested IN (SELECT item ...)`: some row whose item equals it.
    In { tested: Box<Expr>, item: Box<Expr> },
}

/// A filter: its conjunct as written, the index of its subquery in
/// [`Block::subs`] and its test.
#[derive(Debug, Clone)]
struct Filter {
    conjunct: Expr,
    sub: usize,
    test: Test,
}

/// The block's filters, one per subquery, when every subquery of the block
/// is one (see the module comment); `None` otherwise.
fn filters(block: &Block) -> Option<Vec<Filter>> {
    if block.subs.is_empty() || !block.outer.is_empty() {
        return None;
    }
    let in_from = block.occs.iter().any(|o| match o {
        Occ::Sub { rel, .. } => rel.reached_only(),
        Occ::Source { .. } | Occ::Invariant => false,
    });
    if in_from {
        return None;
    }
    let conjuncts = subquery_conjuncts(&block.select.selection);
    // Subqueries are listed in the order they are written, the select
    // list first: all in the WHERE, one per conjunct, or not filters.
    if conjuncts.len() != block.subs.len() {
        return None;
    }
    conjuncts
        .into_iter()
        .enumerate()
        .map(|(i, conjunct)| {
            let sub = &block.subs[i];
            if sub.grouped_or_limited
                || sub.body.reached_only()
                || matches!(sub.link, SubLink::Every)
            {
                return None;
            }
            let (query, test) = match &conjunct {
                Expr::Exists { subquery, negated } => (
                    subquery,
                    if *negated {
                        Test::NotExists
                    } else {
                        Test::Exists
                    },
                ),
                Expr::In {
                    expr,
                    target: InTarget::Subquery(subquery),
                    negated: false,
                    ..
                } => {
                    let SetExpr::Select(select) = subquery.body.as_ref() else {
                        return None;
                    };
                    let [item] = select.projection.as_slice() else {
                        return None;
                    };
                    let item = select_item_expr(item)?.clone();
                    if names_a_collation(expr) || names_a_collation(&item) {
                        return None;
                    }
                    (
                        subquery,
                        Test::In {
                            tested: expr.clone(),
                            item: Box::new(item),
                        },
                    )
                }
                _ => return None,
            };
            // The subquery as written is its body's FROM with the WHERE
            // holding its correlation too; a CTE would have been inlined.
            let SetExpr::Select(select) = query.body.as_ref() else {
                return None;
            };
            let same_from = query.with.is_none() && same_from(&select.from, &sub.body.select.from);
            same_from.then_some(Filter {
                conjunct,
                sub: i,
                test,
            })
        })
        .collect()
}

/// Whether two FROM lists read the same (a subquery as written and the
/// body its analysis kept, which differ only in their WHERE).
pub(super) fn same_from(a: &[TableWithJoins], b: &[TableWithJoins]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_string() == y.to_string())
}

/// Whether an expression holds a `COLLATE` clause: an `IN` comparing
/// under a collation its items' own equality does not use is no filter.
pub(super) fn names_a_collation(expr: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(expr, |e| {
        found |= matches!(e, Expr::Collate { .. });
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

/// Whether every subquery of the block only filters its rows (see the
/// module comment): an algebraic aggregate over it then keeps its form.
pub(crate) fn only_filters(block: &Block) -> bool {
    filters(block).is_some()
}

/// A filter's truth now, row by row: an `EXISTS` as a scalar subquery
/// stopping at the first match, which PostgreSQL cannot turn into a hash
/// of every row of its tables (TPC-H Q4: a hash of 380k line items to test
/// 18 orders); an `IN` as written.
fn new_truth(filter: &Filter) -> String {
    let Expr::Exists { subquery, .. } = &filter.conjunct else {
        return format!("({})", filter.conjunct);
    };
    let SetExpr::Select(written) = subquery.body.as_ref() else {
        unreachable!("a filter's subquery is a SELECT");
    };
    let from: Vec<String> = written.from.iter().map(|t| t.to_string()).collect();
    let condition = written
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let first = format!("(SELECT 1 FROM {}{condition} LIMIT 1)", from.join(", "));
    match filter.test {
        Test::NotExists => format!("({first} IS NULL)"),
        _ => format!("({first} IS NOT NULL)"),
    }
}

impl Gen<'_> {
    /// The block's delta rows as SELECTs (each with `extra` applied, as
    /// for [`Gen::term_selects`]), exact when its subqueries only filter
    /// (see [`only_filters`]); the block's terms alone when it has none.
    pub(super) fn exact_terms(
        &mut self,
        block: &Block,
        extra: &dyn Fn(&mut sqlparser::ast::Select, String),
    ) -> Vec<String> {
        let mut terms = self.term_selects(block, extra);
        if block.subs.is_empty() {
            return terms;
        }
        let filters = filters(block).expect("an algebraic block's subqueries are filters");
        let reached: Vec<&Filter> = filters
            .iter()
            .filter(|f| self.sub_may_have_changed(&block.subs[f.sub]))
            .collect();
        if reached.is_empty() {
            return terms;
        }
        // The rows whose filters may have changed truth, from the old
        // state of the block's changed occurrences.
        let versions = self.old_states(block);
        let reach: Vec<String> = reached
            .iter()
            .map(|f| {
                let sub = &block.subs[f.sub];
                match &sub.link {
                    SubLink::Equal { inner, outer } => {
                        let values = self.affected_values(sub, inner);
                        format!("({}) IN (SELECT * FROM {values})", tuple(outer))
                    }
                    SubLink::In { inner, outer } => {
                        let values = self.affected_values(sub, std::slice::from_ref(inner));
                        format!("({outer}) IN (SELECT * FROM {values} __pgt_v WHERE __pgt_v.__pgt_v1 IS NOT NULL)")
                    }
                    SubLink::Every => unreachable!("not a filter"),
                }
            })
            .collect();
        let now: Vec<String> = filters.iter().map(new_truth).collect();
        let before: Vec<String> = filters
            .iter()
            .map(|f| {
                if reached.iter().any(|r| r.sub == f.sub) {
                    self.old_truth(block, f)
                } else {
                    format!("({})", f.conjunct)
                }
            })
            .collect();
        let (mut select, mult) = substituted(block, &versions);
        let mut condition = vec![format!("({})", reach.join(" OR "))];
        if let Some(w) = without_subquery_conjuncts(&block.select.selection) {
            condition.insert(0, format!("({w})"));
        }
        select.selection = Some(parse_expr(&condition.join(" AND ")));
        let flip = format!(
            "({mult}) * ((CASE WHEN {} THEN 1 ELSE 0 END) - (CASE WHEN {} THEN 1 ELSE 0 END))::pg_catalog.int8",
            now.join(" AND "),
            before.join(" AND ")
        );
        extra(&mut select, flip);
        // OFFSET 0 keeps the planner from evaluating the subqueries again
        // in the outer filter; rows whose truth did not change are dropped.
        terms.push(format!(
            "(SELECT * FROM ({select} OFFSET 0) __pgt_f WHERE __pgt_f.__pgt_m <> 0)"
        ));
        terms
    }

    /// The versions of a block's occurrences that read its state before
    /// the changes (old where it may have changed, else as it is), with
    /// the CTEs they read defined.
    fn old_states(&mut self, block: &Block) -> Vec<Version> {
        let versions: Vec<Version> = block
            .occs
            .iter()
            .map(|o| {
                if self.occ_changed(o) {
                    Version::Old
                } else {
                    Version::New
                }
            })
            .collect();
        self.prepare_block(block, &[(versions.clone(), false)]);
        versions
    }

    /// A filter's truth before the changes: the rows of its subquery over
    /// the old state of its changed sources, counted with their signs.
    fn old_truth(&mut self, block: &Block, filter: &Filter) -> String {
        let sub = &block.subs[filter.sub];
        let query = match &filter.conjunct {
            Expr::Exists { subquery, .. }
            | Expr::In {
                target: InTarget::Subquery(subquery),
                ..
            } => subquery,
            _ => unreachable!("a filter is EXISTS or IN"),
        };
        let SetExpr::Select(written) = query.body.as_ref() else {
            unreachable!("a filter's subquery is a SELECT");
        };
        let versions = self.old_states(&sub.body);
        let mut as_written = sub.body.as_ref().clone();
        as_written.select = written.as_ref().clone();
        let (select, mult) = substituted(&as_written, &versions);
        let from: Vec<String> = select.from.iter().map(|t| t.to_string()).collect();
        let condition: Vec<String> = select.selection.iter().map(|w| format!("({w})")).collect();
        let condition = if condition.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", condition.join(" AND "))
        };
        let from = from.join(", ");
        let count = format!("(SELECT coalesce(pg_catalog.sum({mult}), 0) FROM {from}{condition})");
        match &filter.test {
            Test::NotExists => format!("({count} = 0)"),
            Test::Exists => format!("({count} > 0)"),
            // The tested value stays outside the subquery, where it was
            // written: inside, an unqualified name could mean its column.
            // Correlated, the subquery runs per row anyway: its rows are
            // counted. Uncorrelated, the items present before are found
            // once, by grouping (under the items' own equality, which is
            // the IN's since neither side names a collation).
            Test::In { tested, item } => match sub.link {
                SubLink::In { .. } => format!(
                    "(({tested}) IN (SELECT {item} FROM {from}{condition} GROUP BY 1 HAVING pg_catalog.sum({mult}) > 0))"
                ),
                _ => format!(
                    "((SELECT coalesce(pg_catalog.sum(__pgt_s.__pgt_m), 0) FROM (SELECT {item}, {mult} FROM {from}{condition}) \
                     __pgt_s(__pgt_i, __pgt_m) WHERE ({tested}) = __pgt_s.__pgt_i) > 0)"
                ),
            },
        }
    }
}
