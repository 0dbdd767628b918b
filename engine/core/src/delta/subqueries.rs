//! The rows of a block a refresh must revisit: those its delta terms
//! touch, and those a subquery in its expressions reaches when what the
//! subquery reads changed. A grouped block recomputes their groups with
//! every subquery evaluated as written, so these rows only need to be a
//! superset: a predicate with a subquery is left out of the terms (it
//! would be evaluated against the wrong version of what it reads), and a
//! subquery's changes reach the rows its correlation names.

use sqlparser::ast::{Expr, GroupByExpr, Select, SelectItem};

use super::{parse_expr, Gen};
use crate::analyze::without_subquery_conjuncts;
use crate::model::{Block, ExprSub, Rel, SubLink};

impl Gen<'_> {
    /// SELECTs (to be combined with UNION ALL) of `exprs`, evaluated over
    /// the block's FROM, for every row of the block that a consumed
    /// change may have added, removed or altered; `1` per row when
    /// `exprs` is empty. Rows may repeat and extra rows are harmless.
    pub(super) fn affected_rows(&mut self, block: &Block, exprs: &[Expr]) -> Vec<String> {
        let mut plain = block.clone();
        plain.select.selection = without_subquery_conjuncts(&block.select.selection);
        let mut selects = self.term_selects(&plain, &|select, _| project(select, exprs));
        for sub in &block.subs {
            if !self.sub_may_have_changed(sub) {
                continue;
            }
            let reach = match &sub.link {
                SubLink::Every => vec![self.any_change(sub)],
                SubLink::Equal { inner, outer } => {
                    let values = self.affected_values(sub, inner);
                    vec![format!("({}) IN (SELECT * FROM {values})", tuple(outer))]
                }
                SubLink::In { inner, outer } => {
                    let values = self.affected_values(sub, std::slice::from_ref(inner));
                    vec![
                        format!("({outer}) IN (SELECT * FROM {values} __pgt_v WHERE __pgt_v.__pgt_v1 IS NOT NULL)"),
                        // The subquery became empty or non-empty: `NULL IN (...)` changes.
                        format!("({outer}) IS NULL AND EXISTS (SELECT 1 FROM {values})"),
                        // A NULL entered or left it: `x NOT IN (...)` changes for every x.
                        format!("EXISTS (SELECT 1 FROM {values} __pgt_v WHERE __pgt_v.__pgt_v1 IS NULL)"),
                    ]
                }
            };
            for condition in reach {
                let mut select = plain.select.clone();
                project(&mut select, exprs);
                let combined = match &select.selection {
                    Some(w) => format!("({w}) AND ({condition})"),
                    None => condition,
                };
                select.selection = Some(parse_expr(&combined));
                selects.push(format!("({select})"));
            }
        }
        selects
    }

    /// Every row of a relation a change may have added, removed or
    /// altered, as a SELECT of its columns plus `__pgt_m` (always 1).
    pub(super) fn reached_rows(&mut self, rel: &Rel) -> String {
        match rel {
            Rel::Block(block) => {
                let selects = self.affected_rows(block, &block.output_exprs());
                format!(
                    "SELECT __pgt_r.*, 1::bigint FROM ({}) __pgt_r",
                    selects.join(" UNION ALL ")
                )
            }
            Rel::UnionAll(branches) => branches
                .iter()
                .map(|b| format!("({})", self.reached_rows(b)))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
            Rel::Keyed(keyed) => self.keyed_reached_rows(keyed),
        }
    }

    /// Whether a source the subquery reads may have changes to consume.
    pub(super) fn sub_may_have_changed(&self, sub: &ExprSub) -> bool {
        match &self.changed {
            None => true,
            Some(changed) => sub.sources.iter().any(|s| changed.contains(s)),
        }
    }

    /// A condition true when the subquery's sources have net changes.
    pub(super) fn any_change(&mut self, sub: &ExprSub) -> String {
        let mut sources: Vec<usize> = sub
            .sources
            .iter()
            .copied()
            .filter(|s| self.changed.as_ref().is_none_or(|c| c.contains(s)))
            .collect();
        sources.sort_unstable();
        sources.dedup();
        let checks: Vec<String> = sources
            .into_iter()
            .map(|s| {
                self.source_delta_cte(s);
                format!("EXISTS (SELECT 1 FROM __pgt_d{s})")
            })
            .collect();
        if checks.is_empty() {
            // It reads no table (a VALUES list): nothing changes it.
            return "false".into();
        }
        checks.join(" OR ")
    }

    /// Define a CTE of the distinct values of `inner` (over the
    /// subquery's FROM) of every subquery row a change may have affected,
    /// as columns `__pgt_v1…`; returns its name.
    pub(super) fn affected_values(&mut self, sub: &ExprSub, inner: &[Expr]) -> String {
        let selects = self.affected_rows(&sub.body, inner);
        let name = format!("__pgt_y{}", self.next_values);
        self.next_values += 1;
        let cols: Vec<String> = (1..=inner.len()).map(|k| format!("__pgt_v{k}")).collect();
        self.ctes.push(format!(
            "{name}({}) AS MATERIALIZED (SELECT DISTINCT * FROM ({}) y)",
            cols.join(", "),
            selects.join(" UNION ALL ")
        ));
        name
    }
}

/// Make a block's SELECT list `exprs` (or `1`), without grouping.
pub(super) fn project(select: &mut Select, exprs: &[Expr]) {
    select.projection = if exprs.is_empty() {
        vec![SelectItem::UnnamedExpr(parse_expr("1"))]
    } else {
        exprs
            .iter()
            .map(|k| SelectItem::UnnamedExpr(k.clone()))
            .collect()
    };
    select.distinct = None;
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    select.having = None;
}

/// A tuple of expressions, each parenthesised.
pub(super) fn tuple(exprs: &[Expr]) -> String {
    exprs
        .iter()
        .map(|e| format!("({e})"))
        .collect::<Vec<_>>()
        .join(", ")
}
