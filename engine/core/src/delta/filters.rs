//! Exact delta rows of a block whose subqueries only filter its rows, so
//! that an algebraic aggregate over it is maintained from them instead of
//! recomputing every group a subquery's change reaches (TPC-H Q4: five
//! groups, each a hash join of every order with every line item).
//!
//! A filter is an `EXISTS`, `NOT EXISTS` or `x IN (SELECT ...)` standing as
//! a whole conjunct of the WHERE, correlated by equalities or not at all,
//! over relations with an exact delta, with no grouping,
//! limit or subquery of its own; or a comparison with a scalar aggregate,
//! `x < (SELECT 0.2 * avg(y) FROM ... WHERE ...)` (TPC-H Q17, Q22),
//! whose aggregates are `count`, `sum`, `avg`, `min` or `max` of one
//! argument (a `sum` or `avg` only of an argument PostgreSQL sums exactly,
//! not floating point: see [`crate::model::ExprSub::exact_sums`]). With
//! `S` the conjunction of the filters and `F` the rest of the block,
//!
//! ```text
//! σ[S_new](F_new) − σ[S_old](F_old)
//!   = σ[S_new](F_new − F_old)                  (the block's delta terms, S as written)
//!   + Σ over F_old rows r: r × ([S_new(r)] − [S_old(r)])
//! ```
//!
//! The second sum only has rows a filter's change reaches (its correlation
//! values, as for the recompute form; every row when it is uncorrelated
//! and what it reads has changes), read from the old state of the
//! block's changed sources with the old and new truth of `S`. `S_old`
//! counts the matching rows of the filter's old state, a signed bag, so an
//! `EXISTS` holds when the count is above zero. An aggregate's old value
//! is the aggregate itself over the old rows, rebuilt from the signed bag:
//! its argument's values grouped by their text, each repeated as often as
//! its signs add up to. Summing signed values instead would give a numeric
//! `avg` the scale of rows that are gone.

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, InTarget, Query,
    SetExpr, TableWithJoins,
};

use super::join_terms::{substituted, Version};
use super::subqueries::tuple;
use super::{parse_expr, Gen};
use crate::analyze::{
    fold, has_subquery, names_a_collation, select_item_expr, subquery_conjuncts,
    without_subquery_conjuncts,
};
use crate::model::{Block, Occ, SubLink};
use crate::sql::parse_from;

mod lookups;

/// How a filter tests its subquery's rows.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// `EXISTS`: some row.
    Exists,
    /// `NOT EXISTS`: no row.
    NotExists,
    /// `tested IN (SELECT item ...)`: some row whose item equals it.
    In { tested: Box<Expr>, item: Box<Expr> },
    /// A comparison with the subquery's one row of aggregates, whose calls
    /// all take `arg` (None: only `count(*)`).
    Aggregate { arg: Option<Box<Expr>> },
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
    conjuncts_of_subs(block)?
        .into_iter()
        .enumerate()
        .map(|(i, conjunct)| {
            let sub = &block.subs[i];
            let aggregate = aggregate_comparison(&conjunct);
            let inexact = aggregate
                .as_ref()
                .is_some_and(|a| a.sums && sub.exact_sums != Some(true));
            // Not correlated by an equality: a filter only when not
            // correlated at all (otherwise every row would evaluate it
            // against the old state, row by row).
            let loosely_correlated = matches!(sub.link, SubLink::Every) && sub.correlated;
            if (sub.grouped_or_limited && aggregate.is_none())
                || inexact
                || sub.body.reached_only()
                || loosely_correlated
            {
                return None;
            }
            let (query, test) = match &conjunct {
                Expr::Exists { subquery, negated } => (
                    subquery.as_ref(),
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
                        subquery.as_ref(),
                        Test::In {
                            tested: expr.clone(),
                            item: Box::new(item),
                        },
                    )
                }
                _ => {
                    let a = aggregate?;
                    (
                        a.query,
                        Test::Aggregate {
                            arg: a.arg.map(Box::new),
                        },
                    )
                }
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

/// The WHERE conjunct holding each of the block's subqueries, in
/// [`Block::subs`] order, when each conjunct holds one. Subqueries are
/// listed in the order they are written, the select list first: all in the
/// WHERE, one per conjunct, or `None`.
fn conjuncts_of_subs(block: &Block) -> Option<Vec<Expr>> {
    let conjuncts = subquery_conjuncts(&block.select.selection);
    (conjuncts.len() == block.subs.len()).then_some(conjuncts)
}

/// The aggregates a scalar subquery may compute for a filter: their
/// results depend only on the multiset of their argument's values.
const FILTER_AGGREGATES: &[&str] = &["count", "sum", "avg", "min", "max"];

/// A comparison with a scalar subquery of aggregates (see
/// [`aggregate_comparison`]).
pub(crate) struct AggregateComparison<'a> {
    /// The subquery as written.
    pub query: &'a Query,
    /// The argument every aggregate call takes (None: only `count(*)`).
    pub arg: Option<Expr>,
    /// Whether it calls `sum` or `avg`, whose result depends on the order
    /// rows are added when the argument is floating point.
    pub sums: bool,
}

/// `a op (SELECT agg ...)` or `(SELECT agg ...) op a`, a comparison with a
/// scalar subquery whose one item computes aggregates (see
/// [`FILTER_AGGREGATES`]) of one argument over its rows, with no grouping,
/// order, limit or subquery.
pub(crate) fn aggregate_comparison(conjunct: &Expr) -> Option<AggregateComparison<'_>> {
    let Expr::BinaryOp { left, op, right } = conjunct else {
        return None;
    };
    use BinaryOperator::*;
    if !matches!(op, Lt | LtEq | Gt | GtEq | Eq | NotEq) {
        return None;
    }
    let (query, other) = match (left.as_ref(), right.as_ref()) {
        (Expr::Subquery(q), o) | (o, Expr::Subquery(q)) => (q.as_ref(), o),
        _ => return None,
    };
    if has_subquery(other)
        || query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || !query.locks.is_empty()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain = select.distinct.is_none()
        && select.having.is_none()
        && select.named_window.is_empty()
        && select.qualify.is_none()
        && matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(k, m) if k.is_empty() && m.is_empty());
    let [item] = select.projection.as_slice() else {
        return None;
    };
    let item = select_item_expr(item)?;
    if !plain || has_subquery(item) {
        return None;
    }
    let calls = aggregate_calls(item)?;
    // A whole row as the argument (`count(b)`, `count((b.*))`) would carry
    // the old state's multiplicity column.
    let mut aliases = Vec::new();
    let mut whole_row = false;
    for t in &select.from {
        whole_row |= !factor_aliases(&t.relation, &mut aliases);
        for j in &t.joins {
            whole_row |= !factor_aliases(&j.relation, &mut aliases);
        }
    }
    if let Some(arg) = &calls.arg {
        let _ = sqlparser::ast::visit_expressions(arg, |e| {
            whole_row |= match e {
                Expr::Identifier(i) => aliases.contains(&fold(i)),
                Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => true,
                _ => false,
            };
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    (calls.count > 0 && !whole_row).then_some(AggregateComparison {
        query,
        arg: calls.arg,
        sums: calls.sums,
    })
}

/// The names a FROM item and the items nested in it are referenced by;
/// false for a kind of item whose name is not read here (a function, ...).
fn factor_aliases(factor: &sqlparser::ast::TableFactor, out: &mut Vec<String>) -> bool {
    use sqlparser::ast::TableFactor;
    match factor {
        TableFactor::Table { name, alias, .. } => {
            out.extend(
                alias
                    .as_ref()
                    .map(|a| fold(&a.name))
                    .or_else(|| name.0.last().and_then(|p| p.as_ident()).map(fold)),
            );
            true
        }
        TableFactor::Derived { alias, .. } => {
            out.extend(alias.as_ref().map(|a| fold(&a.name)));
            true
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias,
        } => {
            out.extend(alias.as_ref().map(|a| fold(&a.name)));
            factor_aliases(&table_with_joins.relation, out)
                && table_with_joins
                    .joins
                    .iter()
                    .all(|j| factor_aliases(&j.relation, out))
        }
        _ => false,
    }
}

/// The aggregate calls of a filter's item (see [`aggregate_calls`]).
struct Calls {
    count: usize,
    arg: Option<Expr>,
    sums: bool,
}

/// How many aggregate calls `item` makes, the argument they share and
/// whether one is `sum` or `avg`, when every function it calls is a plain
/// aggregate of [`FILTER_AGGREGATES`] (`count(*)` or one argument, no
/// `DISTINCT`, `FILTER`, order or window) and every argument is the same.
fn aggregate_calls(item: &Expr) -> Option<Calls> {
    let mut calls = 0;
    let mut sums = false;
    let mut args: Vec<Expr> = Vec::new();
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(item, |e| {
        let Expr::Function(f) = e else {
            return std::ops::ControlFlow::<()>::Continue(());
        };
        let name = f
            .name
            .0
            .iter()
            .map(|p| p.as_ident().map(fold))
            .collect::<Option<Vec<_>>>();
        let named = match name.as_deref() {
            Some([n]) => Some(n.as_str()),
            Some([schema, n]) if schema == "pg_catalog" => Some(n.as_str()),
            _ => None,
        };
        let FunctionArguments::List(list) = &f.args else {
            ok = false;
            return std::ops::ControlFlow::Continue(());
        };
        let plain = f.over.is_none()
            && f.filter.is_none()
            && f.within_group.is_empty()
            && f.null_treatment.is_none()
            && matches!(f.parameters, FunctionArguments::None)
            && list.duplicate_treatment.is_none()
            && list.clauses.is_empty();
        match (named, list.args.as_slice()) {
            (Some(n), [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))])
                if plain && FILTER_AGGREGATES.contains(&n) =>
            {
                calls += 1;
                sums |= matches!(n, "sum" | "avg");
                args.push(a.clone());
            }
            (Some("count"), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) if plain => {
                calls += 1;
            }
            _ => ok = false,
        }
        std::ops::ControlFlow::Continue(())
    });
    let arg = args.first().cloned();
    let one_arg = args
        .iter()
        .all(|a| Some(a.to_string()) == arg.as_ref().map(Expr::to_string));
    // An aggregate inside another's argument is an error PostgreSQL
    // reports; a function in the argument is refused above.
    (ok && one_arg).then_some(Calls {
        count: calls,
        arg,
        sums,
    })
}

/// The comparisons with a subquery's `sum` or `avg` in `block`'s WHERE
/// that could be kept as filters: the index of each in [`Block::subs`]
/// and its subquery with the aggregates' argument as its item, whose type
/// the extension asks PostgreSQL (see [`crate::model::ExprSub::exact_sums`]).
pub(crate) fn sum_arguments(block: &Block) -> (Vec<usize>, Vec<Expr>) {
    conjuncts_of_subs(block)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, conjunct)| {
            let a = aggregate_comparison(conjunct)?;
            let arg = a.arg.filter(|_| a.sums)?;
            let mut query = a.query.clone();
            let SetExpr::Select(select) = query.body.as_mut() else {
                return None;
            };
            select.projection = vec![sqlparser::ast::SelectItem::UnnamedExpr(arg)];
            Some((i, Expr::Subquery(Box::new(query))))
        })
        .unzip()
}

/// Whether two FROM lists read the same (a subquery as written and the
/// body its analysis kept, which differ only in their WHERE).
pub(super) fn same_from(a: &[TableWithJoins], b: &[TableWithJoins]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_string() == y.to_string())
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
    let (from, condition) = from_and_condition(written);
    let first = format!("(SELECT 1 FROM {from}{condition} LIMIT 1)");
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
        // Which rows each reached filter may flip, and the affected values
        // of one correlated by equalities.
        let mut values: Vec<Option<String>> = Vec::new();
        let mut reach: Vec<String> = Vec::new();
        for f in &reached {
            let sub = &block.subs[f.sub];
            let (rows, equal_values) = match &sub.link {
                SubLink::Equal { inner, outer } => {
                    let name = self.affected_values(sub, inner);
                    (
                        format!("({}) IN (SELECT * FROM {name})", tuple(outer)),
                        Some(name),
                    )
                }
                SubLink::In { inner, outer } => {
                    let values = self.affected_values(sub, std::slice::from_ref(inner));
                    (format!("({outer}) IN (SELECT * FROM {values} __pgt_v WHERE __pgt_v.__pgt_v1 IS NOT NULL)"), None)
                }
                // Uncorrelated: a change may flip it for every row.
                SubLink::Every => (self.any_change(sub), None),
            };
            reach.push(rows);
            values.push(equal_values);
        }
        // A filter no change reaches holds before as now: a row it turns
        // away changes no truth, so it filters the rows read, evaluated
        // once (an uncorrelated one is one scan of its tables).
        let now: Vec<String> = reached.iter().map(|f| new_truth(f)).collect();
        // The old truth of a filter correlated only by equalities over one
        // table reads the table as it is and its changes grouped by value
        // (see `lookups`); an aggregate's joins them to the rows.
        let mut joins = Vec::new();
        let before: Vec<String> = reached
            .iter()
            .zip(&values)
            .map(|(f, values)| match values {
                Some(values) if lookups::looked_up(block, f) => {
                    let lookup = self.lookup(block, f, values);
                    joins.extend(lookup.join);
                    lookup.truth
                }
                _ => self.old_truth(block, f),
            })
            .collect();
        let mut condition = vec![format!("({})", reach.join(" OR "))];
        if let Some(w) = without_subquery_conjuncts(&block.select.selection) {
            condition.insert(0, format!("({w})"));
        }
        condition.extend(
            filters
                .iter()
                .filter(|f| !reached.iter().any(|r| r.sub == f.sub))
                .map(|f| format!("({})", f.conjunct)),
        );
        let truth_change = format!(
            "((CASE WHEN {} THEN 1 ELSE 0 END) - (CASE WHEN {} THEN 1 ELSE 0 END))::pg_catalog.int8",
            now.join(" AND "),
            before.join(" AND ")
        );
        // The rows whose filters may have changed truth, from the old
        // state of the block's changed occurrences.
        for (versions, negated) in self.old_state_terms(block) {
            let (mut select, mult) = substituted(block, &versions);
            if !joins.is_empty() {
                // The FROM items as one join (a filtered block has no
                // outer join), so that each lookup's ON sees them all;
                // an item with joins of its own is parenthesised, so that
                // its ON and USING still see only its own tables.
                let from: Vec<String> = select
                    .from
                    .iter()
                    .map(|t| {
                        if t.joins.is_empty() {
                            t.to_string()
                        } else {
                            format!("({t})")
                        }
                    })
                    .collect();
                select.from = parse_from(&format!(
                    "{} {}",
                    from.join(" CROSS JOIN "),
                    joins.join(" ")
                ));
            }
            select.selection = Some(parse_expr(&condition.join(" AND ")));
            let sign = if negated { "-" } else { "" };
            extra(&mut select, format!("{sign}({mult}) * {truth_change}"));
            // OFFSET 0 keeps the planner from evaluating the subqueries
            // again in the outer filter; rows whose truth did not change
            // are dropped.
            terms.push(format!(
                "(SELECT * FROM ({select} OFFSET 0) __pgt_f WHERE __pgt_f.__pgt_m <> 0)"
            ));
        }
        terms
    }

    /// The old state of a block, as terms to add (or, when negated,
    /// subtract): with its changed occurrences `old = now - delta`
    /// multiplied out, so that each term reads tables as they are, where
    /// a join can probe their indexes (PostgreSQL cannot push a join
    /// condition into a union of a table and a CTE, so reading the old
    /// state itself scans the table whole: TPC-H Q17's line items). With
    /// more than two changed occurrences, the old state itself.
    fn old_state_terms(&mut self, block: &Block) -> Vec<(Vec<Version>, bool)> {
        let changed: Vec<usize> = (0..block.occs.len())
            .filter(|&i| self.occ_changed(&block.occs[i]))
            .collect();
        if changed.len() > 2 {
            return vec![(self.old_states(block), false)];
        }
        let terms: Vec<(Vec<Version>, bool)> = (0..1usize << changed.len())
            .map(|subset| {
                let mut versions = vec![Version::New; block.occs.len()];
                for (bit, &i) in changed.iter().enumerate() {
                    if subset & (1 << bit) != 0 {
                        versions[i] = Version::Delta;
                    }
                }
                (versions, subset.count_ones() % 2 == 1)
            })
            .collect();
        self.prepare_block(block, &terms);
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
        let written = written(filter);
        let versions = self.old_states(&sub.body);
        let mut as_written = sub.body.as_ref().clone();
        as_written.select = written.clone();
        let (select, mult) = substituted(&as_written, &versions);
        let (from, condition) = from_and_condition(&select);
        if let Test::Aggregate { arg } = &filter.test {
            return format!(
                "({})",
                old_comparison(filter, arg.as_deref(), &mult, &from, &condition)
            );
        }
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
            Test::Aggregate { .. } => unreachable!("answered above"),
        }
    }
}

/// A SELECT's FROM list (`, `-joined) and its ` WHERE <condition>` (empty
/// without one), to be read again in a subquery of the same rows.
fn from_and_condition(select: &sqlparser::ast::Select) -> (String, String) {
    let from: Vec<String> = select.from.iter().map(|t| t.to_string()).collect();
    let condition = select
        .selection
        .as_ref()
        .map(|w| format!(" WHERE ({w})"))
        .unwrap_or_default();
    (from.join(", "), condition)
}

/// A filter's subquery as written.
fn written(filter: &Filter) -> &sqlparser::ast::Select {
    let query = match &filter.conjunct {
        Expr::Exists { subquery, .. }
        | Expr::In {
            target: InTarget::Subquery(subquery),
            ..
        } => subquery.as_ref(),
        other => aggregate_comparison(other).expect("a filter").query,
    };
    let SetExpr::Select(written) = query.body.as_ref() else {
        unreachable!("a filter's subquery is a SELECT");
    };
    written
}

/// A filter comparing with an aggregate, its subquery replaced by the
/// aggregates over the old rows: `arg`'s values over the signed old state
/// (`mult`, `from`, `condition`) are grouped by their text, so that values
/// equal but told apart (`1.0` and `1.00`) stay apart, and each is
/// repeated as many times as its signs add up to.
fn old_comparison(
    filter: &Filter,
    arg: Option<&Expr>,
    mult: &str,
    from: &str,
    condition: &str,
) -> Expr {
    let value = arg.map_or("0".to_string(), |a| format!("({a})"));
    // One row per text (a window, not `array_agg`, which nests an array
    // argument's values into a two-dimensional array).
    let rows = format!(
        "(SELECT __pgt_w.__pgt_x, __pgt_w.__pgt_n FROM (SELECT __pgt_b.__pgt_x, \
         pg_catalog.sum(__pgt_b.__pgt_m) OVER __pgt_t AS __pgt_n, pg_catalog.row_number() OVER __pgt_t AS __pgt_r \
         FROM (SELECT {value}, {mult} FROM {from}{condition}) __pgt_b(__pgt_x, __pgt_m) \
         WINDOW __pgt_t AS (PARTITION BY __pgt_b.__pgt_x::pg_catalog.text)) __pgt_w \
         WHERE __pgt_w.__pgt_r = 1 AND __pgt_w.__pgt_n > 0) __pgt_g(__pgt_x, __pgt_n) \
         CROSS JOIN LATERAL pg_catalog.generate_series(1, __pgt_g.__pgt_n::pg_catalog.int8) __pgt_a"
    );
    let item = aggregates_of_rows(filter);
    with_subquery(
        &filter.conjunct,
        &parse_expr(&format!("(SELECT {item} FROM {rows})")),
    )
}

/// An aggregate filter's subquery item with its aggregates' argument
/// replaced by the values `__pgt_g.__pgt_x` of the rebuilt rows; `count(*)`
/// counts those rows as it is.
fn aggregates_of_rows(filter: &Filter) -> Expr {
    let query = aggregate_comparison(&filter.conjunct)
        .expect("a filter")
        .query;
    let SetExpr::Select(select) = query.body.as_ref() else {
        unreachable!("an aggregate filter's subquery is a SELECT");
    };
    let mut item = select_item_expr(&select.projection[0])
        .expect("an aggregate filter's item")
        .clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut item, |e| {
        if let Expr::Function(f) = e {
            if let FunctionArguments::List(list) = &mut f.args {
                for a in &mut list.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = a {
                        *x = parse_expr("__pgt_g.__pgt_x");
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    item
}

/// An aggregate filter's comparison with its subquery replaced by `value`.
fn with_subquery(conjunct: &Expr, value: &Expr) -> Expr {
    let mut conjunct = conjunct.clone();
    if let Expr::BinaryOp { left, right, .. } = &mut conjunct {
        for side in [left, right] {
            if matches!(side.as_ref(), Expr::Subquery(_)) {
                **side = value.clone();
            }
        }
    }
    conjunct
}
