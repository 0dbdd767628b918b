//! The recomputation of reached groups with each uncorrelated `x IN
//! (SELECT y ... GROUP BY y ...)` filter correlated: `y = x` added to the
//! subquery's WHERE, so that it reads the rows of one `y` per enclosing
//! row (an index probe) instead of grouping all of its tables to test a
//! few rows (TPC-H Q18: every line item summed per order to recompute a
//! handful of orders). FULL and populate keep the query as written.
//!
//! Only a whole, non-negated conjunct of the WHERE is rewritten: there a
//! NULL and a false result both reject the row, and `x IN (S)` is true
//! exactly when `x IN (SELECT y ... WHERE y = x)` is. The subquery's link
//! says its item is a group key (a group is kept or dropped whole by a
//! filter on it) and that it has no LIMIT.

use std::borrow::Cow;

use sqlparser::ast::{Expr, InTarget, SetExpr};

use super::filters::same_from;
use super::parse_expr;
use crate::analyze::names_a_collation;
use crate::analyze::{and_all, conjuncts, resolves_outside};
use crate::model::{Block, SubLink};

/// `block` with its uncorrelated grouped `IN` filters correlated (see the
/// module comment); itself when it has none.
pub(super) fn with_correlated_ins(block: &Block) -> Cow<'_, Block> {
    let Some(selection) = &block.select.selection else {
        return Cow::Borrowed(block);
    };
    let mut changed = false;
    let conjuncts: Vec<Expr> = conjuncts(selection)
        .into_iter()
        .map(|c| match correlated(block, &c) {
            Some(rewritten) => {
                changed = true;
                rewritten
            }
            None => c,
        })
        .collect();
    if !changed {
        return Cow::Borrowed(block);
    }
    let mut out = block.clone();
    out.select.selection = and_all(conjuncts);
    Cow::Owned(out)
}

/// The conjunct with `item = tested` in its subquery's WHERE, when it is a
/// grouped uncorrelated `IN` filter whose tested value no name of the
/// subquery captures.
fn correlated(block: &Block, conjunct: &Expr) -> Option<Expr> {
    let Expr::In {
        expr: tested,
        target: InTarget::Subquery(query),
        negated: false,
        ..
    } = conjunct
    else {
        return None;
    };
    if query.limit_clause.is_some() || query.fetch.is_some() || query.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    // Plainly grouped, by its item among other keys.
    let sqlparser::ast::GroupByExpr::Expressions(group_keys, modifiers) = &select.group_by else {
        return None;
    };
    let item = crate::analyze::select_item_expr(select.projection.first()?)?;
    let grouped = modifiers.is_empty()
        && select.projection.len() == 1
        && group_keys.iter().any(|k| k.to_string() == item.to_string());
    // Its link: the analysis checked the item is inner, a group key, and
    // that nothing limits the subquery.
    let sub = block.subs.iter().find(|s| match &s.link {
        SubLink::In { inner, outer } => {
            outer.to_string() == tested.to_string()
                && same_from(&s.body.select.from, &select.from)
                && select.projection.len() == 1
                && crate::analyze::select_item_expr(&select.projection[0])
                    .is_some_and(|item| item.to_string() == inner.to_string())
        }
        _ => false,
    })?;
    let SubLink::In { inner, .. } = &sub.link else {
        return None;
    };
    if !grouped
        || !resolves_outside(tested, &sub.body.scope, &block.scope)
        || names_a_collation(tested)
        || names_a_collation(inner)
    {
        return None;
    }
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    // As the IN compares: the tested value on the left.
    let equal = format!("({tested}) = ({inner})");
    select.selection = Some(parse_expr(&match &select.selection {
        Some(w) => format!("({w}) AND {equal}"),
        None => equal,
    }));
    let mut rewritten = conjunct.clone();
    if let Expr::In { target, .. } = &mut rewritten {
        *target = InTarget::Subquery(query);
    }
    Some(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::model::Model;

    fn grouped_block(query: &str) -> Block {
        let c = Catalog::for_tests(&[("a", &["k", "v"]), ("b", &["k", "w"])], &["count", "sum"]);
        match crate::analyze::analyze(query, &c).expect("analysis").model {
            Ok(Model::Grouped { block, .. }) => *block,
            other => panic!("not grouped: {other:?}"),
        }
    }

    fn rewritten(query: &str) -> Option<String> {
        let block = grouped_block(query);
        match with_correlated_ins(&block) {
            Cow::Owned(b) => Some(b.select.selection.expect("where").to_string()),
            Cow::Borrowed(_) => None,
        }
    }

    #[test]
    fn a_grouped_in_filter_reads_the_group_of_the_tested_value() {
        let w = rewritten(
            "SELECT a.k, count(*) AS n FROM a WHERE a.v > 0 AND a.k IN \
             (SELECT b.k FROM b WHERE b.w > 1 GROUP BY b.k HAVING sum(b.w) > 2) GROUP BY a.k",
        )
        .expect("rewritten");
        assert!(
            w.contains("WHERE (b.w > 1) AND (a.k) = (b.k) GROUP BY b.k"),
            "{w}"
        );
        assert!(w.starts_with("(a.v > 0) AND "), "{w}");
    }

    #[test]
    fn other_in_filters_are_left_as_written() {
        for q in [
            // `k` inside the subquery would be b's own column.
            "SELECT k, count(*) AS n FROM a WHERE k IN (SELECT k FROM b GROUP BY k HAVING sum(w) > 2) GROUP BY k",
            // NOT IN turns NULL where a correlated one would not.
            "SELECT a.k, count(*) AS n FROM a WHERE a.k NOT IN (SELECT b.k FROM b GROUP BY b.k) GROUP BY a.k",
            // Not a whole conjunct.
            "SELECT a.k, count(*) AS n FROM a WHERE a.v > 0 OR a.k IN (SELECT b.k FROM b GROUP BY b.k) GROUP BY a.k",
            // A limited subquery whose text matches another's link.
            "SELECT a.k, count(*) AS n FROM a WHERE a.k IN (SELECT b.k FROM b WHERE b.w > 0) \
             AND a.k IN (SELECT b.k FROM b GROUP BY b.k ORDER BY b.k LIMIT 1) GROUP BY a.k",
            // Not grouped: the planner hashes or joins it already.
            "SELECT a.k, count(*) AS n FROM a WHERE a.k IN (SELECT b.k FROM b WHERE b.w > 2) GROUP BY a.k",
        ] {
            assert_eq!(rewritten(q), None, "{q}");
        }
    }
}
