//! Outer joins in delta terms. A LEFT, RIGHT or FULL join keeps the
//! unmatched rows of a side, NULL-padded, and whether a row is padded
//! depends on the *absence* of a match. A block with outer joins is kept by
//! the rows its changes reach (its groups, or its rows' values), so a term
//! only has to name a superset of the rows that may differ between the old
//! and the new result. Each term is split into variants, one per choice at
//! each outer join whose padded side reads its delta in the term:
//!
//! - **matched**: the delta rows as matches (that side's padding dropped);
//! - **padded**: the kept side's rows that match a delta row of the padded
//!   side (their padding may have come or gone), padded as the query pads
//!   them: the join's condition becomes `false` and an `EXISTS` over the
//!   delta selects them.
//!
//! Padding is only right against an exact version of the padded side, so
//! such a block's terms read new states and deltas only
//! (inclusion-exclusion), never an old state (a signed bag, as a set a
//! superset of the old rows).

use sqlparser::ast::{Expr, Join, JoinConstraint, JoinOperator, Select, TableFactor};

use super::join_terms::Version;
use super::parse_expr;
use crate::analyze::{for_each_factor_mut, for_each_join_mut};
use crate::model::Block;

/// How one outer join reads in a variant of a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JoinForm {
    /// Index into [`Block::outer`].
    pub outer: usize,
    /// Unmatched left rows are kept.
    pub keeps_left: bool,
    /// Unmatched right rows are kept.
    pub keeps_right: bool,
    /// The padded occurrence whose delta selects the kept rows: the
    /// condition becomes `false` and an `EXISTS` over the delta filters.
    pub padded_by: Option<usize>,
}

/// The variants of a term (`versions[k]`: what occurrence `k` reads): for
/// each, the form of every outer join of the block. One variant, every
/// join as written, when no padded side reads its delta.
pub(super) fn variants(block: &Block, versions: &[Version]) -> Vec<Vec<JoinForm>> {
    let mut all: Vec<Vec<JoinForm>> = vec![Vec::new()];
    for (i, join) in block.outer.iter().enumerate() {
        let delta =
            |occs: &std::ops::Range<usize>| occs.clone().any(|k| versions[k] == Version::Delta);
        // Left rows' padding changes with the right side's delta, and
        // the other way round.
        let left_by_right = join.keeps_left && delta(&join.right);
        let right_by_left = join.keeps_right && delta(&join.left);
        let mut forms = vec![JoinForm {
            outer: i,
            keeps_left: join.keeps_left && !left_by_right,
            keeps_right: join.keeps_right && !right_by_left,
            padded_by: None,
        }];
        if left_by_right {
            forms.push(JoinForm {
                outer: i,
                keeps_left: true,
                keeps_right: false,
                padded_by: Some(join.right.start),
            });
        }
        if right_by_left {
            forms.push(JoinForm {
                outer: i,
                keeps_left: false,
                keeps_right: true,
                padded_by: Some(join.left.start),
            });
        }
        all = all
            .into_iter()
            .flat_map(|prefix| {
                forms.iter().map(move |f| {
                    let mut v = prefix.clone();
                    v.push(f.clone());
                    v
                })
            })
            .collect();
    }
    all
}

/// Rewrite a substituted term (`select`, whose FROM reads the term's
/// versions) to the variant `forms`: each outer join takes its form, and
/// a padded form's rows are those matching a row of the padded
/// occurrence's delta.
pub(super) fn apply(block: &Block, select: &mut Select, forms: &[JoinForm]) {
    if forms.is_empty() {
        return;
    }
    // The padded occurrences as the term reads them (their deltas).
    let mut factors: Vec<TableFactor> = Vec::new();
    for_each_factor_mut(&mut select.from, &mut |f| factors.push(f.clone()));
    let mut filters = Vec::new();
    let mut operators: Vec<Option<JoinOperator>> = Vec::new();
    for form in forms {
        let join = &block.outer[form.outer];
        if operators.len() <= join.join {
            operators.resize(join.join + 1, None);
        }
        let on = match form.padded_by {
            None => join.on.clone(),
            Some(occ) => {
                filters.push(format!(
                    "EXISTS (SELECT 1 FROM {} WHERE {})",
                    factors[occ], join.on
                ));
                parse_expr("false")
            }
        };
        operators[join.join] = Some(operator(form.keeps_left, form.keeps_right, on));
    }
    let mut j = 0usize;
    for_each_join_mut(&mut select.from, &mut |join: &mut Join| {
        if let Some(Some(op)) = operators.get(j) {
            join.join_operator = op.clone();
        }
        j += 1;
    });
    if !filters.is_empty() {
        let mut all: Vec<String> = filters;
        if let Some(w) = &select.selection {
            all.insert(0, format!("({w})"));
        }
        select.selection = Some(parse_expr(&all.join(" AND ")));
    }
}

/// The join operator keeping the given sides' unmatched rows.
fn operator(keeps_left: bool, keeps_right: bool, on: Expr) -> JoinOperator {
    let c = JoinConstraint::On(on);
    match (keeps_left, keeps_right) {
        (false, false) => JoinOperator::Inner(c),
        (true, false) => JoinOperator::LeftOuter(c),
        (false, true) => JoinOperator::RightOuter(c),
        (true, true) => JoinOperator::FullOuter(c),
    }
}

#[cfg(test)]
mod tests {
    use super::Version::{Delta as D, New as N};
    use super::*;
    use crate::model::OuterJoin;

    fn block_with(outer: Vec<OuterJoin>) -> Block {
        let select = match crate::analyze::parse_query("SELECT 1")
            .unwrap()
            .body
            .as_ref()
        {
            sqlparser::ast::SetExpr::Select(s) => s.as_ref().clone(),
            _ => unreachable!(),
        };
        Block {
            select,
            occs: vec![],
            outputs: vec![],
            scope: vec![],
            subs: vec![],
            outer,
            order: None,
        }
    }

    fn join(
        j: usize,
        left: std::ops::Range<usize>,
        right: std::ops::Range<usize>,
        l: bool,
        r: bool,
    ) -> OuterJoin {
        OuterJoin {
            join: j,
            left,
            right,
            keeps_left: l,
            keeps_right: r,
            on: parse_expr("true"),
        }
    }

    fn shape(v: &[JoinForm]) -> Vec<(bool, bool, Option<usize>)> {
        v.iter()
            .map(|f| (f.keeps_left, f.keeps_right, f.padded_by))
            .collect()
    }

    #[test]
    fn a_left_join_whose_kept_side_changed_reads_as_written() {
        let b = block_with(vec![join(0, 0..1, 1..2, true, false)]);
        let v = variants(&b, &[D, N]);
        assert_eq!(v.len(), 1);
        assert_eq!(shape(&v[0]), vec![(true, false, None)]);
    }

    #[test]
    fn a_left_join_whose_padded_side_changed_is_matched_or_padded() {
        let b = block_with(vec![join(0, 0..1, 1..2, true, false)]);
        let v = variants(&b, &[N, D]);
        assert_eq!(shape(&v[0]), vec![(false, false, None)]);
        assert_eq!(shape(&v[1]), vec![(true, false, Some(1))]);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn a_full_join_pads_each_side_by_the_other_sides_delta() {
        let b = block_with(vec![join(0, 0..1, 1..2, true, true)]);
        // Left changed: its own rows keep their padding, right rows
        // matching the left delta are padded.
        let v = variants(&b, &[D, N]);
        assert_eq!(
            v.iter().map(|f| shape(f)[0]).collect::<Vec<_>>(),
            vec![(true, false, None), (false, true, Some(0))]
        );
        let both = variants(&b, &[D, D]);
        assert_eq!(
            both.iter().map(|f| shape(f)[0]).collect::<Vec<_>>(),
            vec![
                (false, false, None),
                (true, false, Some(1)),
                (false, true, Some(0))
            ]
        );
    }

    #[test]
    fn variants_of_several_joins_multiply() {
        let b = block_with(vec![
            join(0, 0..1, 1..2, true, false),
            join(1, 0..2, 2..3, true, false),
        ]);
        assert_eq!(variants(&b, &[N, D, D]).len(), 4);
        assert_eq!(variants(&b, &[D, N, N]).len(), 1);
    }
}
