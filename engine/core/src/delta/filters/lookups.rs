//! A filter's old truth from its table as it is and its changes grouped
//! by correlation value, instead of a subquery per row over the old state.
//!
//! The old state of a changed table is the table and its changes. A
//! subquery per row over it probes the table by index, but scans every
//! change: TPC-H Q17 at SF 1 tests 462 line items against the average of
//! their part's old line items, and each test read all 15,171 changes
//! (0.7 of 1.1 s). When nothing but its link's equalities correlate a
//! filter over one table ([`crate::model::ExprSub::only_equalities`]),
//! the changes that reach a row are those whose `inner` values equal its
//! `outer` values. They are grouped by value once; each row reads the
//! table as written, by its correlation, and its own values' changes: an
//! `EXISTS` tests its values and count against the grouped counts (a
//! hashed subplan), an aggregate joins its values' changes.
//!
//! Computing the whole old result per affected value instead would read
//! the table for every value a change reached, most of which no tested
//! row has (Q22 at SF 0.1: 296 customers for 38 rows, a scan of every
//! order).

use sqlparser::ast::{Expr, SelectItem};

use super::{from_and_condition, new_truth, old_comparison, written, Filter, Test};
use crate::delta::join_terms::{substituted, Version};
use crate::delta::subqueries::{project, tuple};
use crate::delta::{parse_expr, Gen};
use crate::model::{Block, ExprSub, Occ, SubLink};

/// A filter's old truth read with its changes grouped by value: the LEFT
/// JOIN that brings a row its value's changes and the truth that reads
/// them.
pub(super) struct Lookup {
    /// `LEFT JOIN <cte> ON <outer values> = <cte values>`, for an
    /// aggregate, whose row reads its values' changes.
    pub join: Option<String>,
    /// The old truth.
    pub truth: String,
}

/// Whether a filter's old truth is read with its changes grouped by value
/// (see the module comment) for rows of `block`:
/// - an `EXISTS`, a `NOT EXISTS`, or a comparison with aggregates whose
///   `sum` or `avg` argument sums exactly (the values travel in an array,
///   which an array argument would not survive) or with `count(*)` alone;
/// - correlated only by equalities over one table, both sides of each of
///   one type (across two, a row's values could equal two groups; analysis
///   links no equality naming a `COLLATE`, under which one group could
///   hold values the row tells apart);
/// - in a block whose select list has no bare `*` (analysis expands it;
///   the joined columns would join it).
pub(super) fn looked_up(block: &Block, filter: &Filter) -> bool {
    let sub = &block.subs[filter.sub];
    let test = match &filter.test {
        Test::Exists | Test::NotExists => true,
        Test::Aggregate { arg } => arg.is_none() || sub.exact_sums == Some(true),
        Test::In { .. } => false,
    };
    test && matches!(sub.link, SubLink::Equal { .. })
        && sub.only_equalities
        && sub.same_link_types == Some(true)
        && sub.body.subs.is_empty()
        && matches!(sub.body.occs.as_slice(), [Occ::Source { .. }])
        && !block
            .select
            .projection
            .iter()
            .any(|p| matches!(p, SelectItem::Wildcard(_)))
}

impl Gen<'_> {
    /// The lookup of `filter`'s old truth (see [`looked_up`]); `values`
    /// names its affected values (`__pgt_y<n>`), after which the CTE of
    /// its grouped changes is named.
    pub(super) fn lookup(&mut self, block: &Block, filter: &Filter, values: &str) -> Lookup {
        let sub = &block.subs[filter.sub];
        let SubLink::Equal { inner, outer } = &sub.link else {
            unreachable!("a looked-up filter is correlated by equalities");
        };
        let name = values.replacen("__pgt_y", "__pgt_ot", 1);
        let v: Vec<String> = (1..=inner.len()).map(|k| format!("__pgt_v{k}")).collect();
        let arg = match &filter.test {
            Test::Aggregate { arg } => {
                Some(arg.as_deref().map_or("0".into(), |a| format!("({a})")))
            }
            _ => None,
        };
        self.grouped_changes(sub, &name, &v, arg.as_deref());
        // The subquery as written reads the table as it is.
        let (from, condition) = from_and_condition(written(filter));
        let v = v.join(", ");
        let Some(arg) = arg else {
            // A row whose values have changes had no matching row before
            // when its matching rows now are as many as its changes add:
            // its values and that count are a pair of the CTE. Both tests
            // are hashed subplans, not a join, which the planner makes a
            // nested loop over the CTE when it expects few rows (TPC-H Q22
            // at SF 1: 391 rows, each scanning 2,976 values). A row no
            // change reached kept its truth.
            let values = tuple(outer);
            let none_before = format!(
                "(({values}, (SELECT pg_catalog.count(*) FROM {from}{condition})) IN (SELECT {v}, __pgt_n FROM {name}))"
            );
            let negated = if filter.test == Test::Exists {
                "NOT "
            } else {
                ""
            };
            return Lookup {
                join: None,
                truth: format!(
                    "(CASE WHEN ({values}) IN (SELECT {v} FROM {name}) THEN {negated}{none_before} ELSE {} END)",
                    new_truth(filter)
                ),
            };
        };
        // The aggregate over the rows as they are and, negated, the
        // changes of the row's values (none when it has none).
        let rows = format!(
            "((SELECT {arg}, 1::pg_catalog.int8 FROM {from}{condition}) UNION ALL \
             (SELECT {name}.__pgt_xs[__pgt_i], -{name}.__pgt_ms[__pgt_i] \
             FROM pg_catalog.generate_subscripts({name}.__pgt_xs, 1) __pgt_i)) __pgt_o(__pgt_x, __pgt_m)"
        );
        let old = old_comparison(
            filter,
            Some(&parse_expr("__pgt_o.__pgt_x")),
            "__pgt_o.__pgt_m",
            &rows,
            "",
        );
        let on: Vec<String> = outer
            .iter()
            .enumerate()
            .map(|(k, o)| format!("({o}) = {name}.__pgt_v{}", k + 1))
            .collect();
        Lookup {
            join: Some(format!("LEFT JOIN {name} ON {}", on.join(" AND "))),
            truth: format!("({old})"),
        }
    }

    /// Define CTE `name`: the changes of a filter's one table grouped by
    /// their `inner` values (columns `v`), non-NULL ones only (a NULL
    /// matches no row, and would turn a `NOT IN` NULL). Per value: the sum
    /// of their signs (`__pgt_n`), or with an aggregate's argument `arg`
    /// their values and signs as two arrays (`__pgt_xs`, `__pgt_ms`).
    fn grouped_changes(&mut self, sub: &ExprSub, name: &str, v: &[String], arg: Option<&str>) {
        let SubLink::Equal { inner, .. } = &sub.link else {
            unreachable!("a looked-up filter is correlated by equalities");
        };
        let delta = vec![Version::Delta];
        self.prepare_block(&sub.body, &[(delta.clone(), false)]);
        let (mut select, mult) = substituted(&sub.body, &delta);
        let mut exprs: Vec<Expr> = inner.clone();
        exprs.extend(arg.map(parse_expr));
        project(&mut select, &exprs);
        select
            .projection
            .push(SelectItem::UnnamedExpr(parse_expr(&mult)));
        let of = |alias: &str| -> String {
            v.iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // `num_nonnulls`, not IS NOT NULL, which is false for a composite
        // value with a NULL field (which `=` compares as any other).
        let known: Vec<String> = v
            .iter()
            .map(|c| format!("pg_catalog.num_nonnulls(__pgt_r.{c}) = 1"))
            .collect();
        let (columns, x, grouped) = match arg {
            None => (
                "__pgt_n",
                "",
                "pg_catalog.sum(__pgt_r.__pgt_m)::pg_catalog.int8",
            ),
            Some(_) => (
                "__pgt_xs, __pgt_ms",
                ", __pgt_x",
                "pg_catalog.array_agg(__pgt_r.__pgt_x), pg_catalog.array_agg(__pgt_r.__pgt_m)",
            ),
        };
        self.ctes.push(format!(
            "{name}({}, {columns}) AS MATERIALIZED (SELECT {}, {grouped} FROM ({select}) \
             __pgt_r({}{x}, __pgt_m) WHERE {} GROUP BY {})",
            v.join(", "),
            of("__pgt_r"),
            v.join(", "),
            known.join(" AND "),
            of("__pgt_r"),
        ));
    }
}
