//! Queries the extension runs to learn what the core cannot know from SQL
//! text alone: the types and collations of a grouped stream table's keys
//! (and of its ordered aggregates' `ORDER BY` keys), and the types of what
//! a subquery kept by keys computes.
//!
//! Groups are matched by key, so a key type without a hash function or a
//! key under a nondeterministic collation cannot be maintained exactly (see
//! the extension's `column_types`). Key expressions need not be output
//! columns, so their types are asked of PostgreSQL: the probe evaluates
//! `pg_typeof` (then, for collatable types, `pg_collation_for`) of each
//! key over the query's own FROM and WHERE behind `LIMIT 0`, outer-joined
//! to one row, so that it returns exactly one row of declared types and
//! reads nothing.

use sqlparser::ast::{Expr, GroupByExpr, Ident, SelectItem};

use crate::model::{Analysis, Block, Keyed, Model, Occ, Rel};

/// What to ask PostgreSQL about a grouped stream table's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProbe {
    /// The key expressions as written in the query (for messages).
    pub keys: Vec<String>,
    /// `SELECT ... FROM (<keys over the query's FROM and WHERE> LIMIT 0)`,
    /// the inner query aliased `q` with columns `__pgt_k1...`.
    inner: String,
}

impl KeyProbe {
    /// One row: the type oid of each key, as text.
    pub fn types_sql(&self) -> String {
        let facts: Vec<String> = (1..=self.keys.len())
            .map(|i| format!("pg_catalog.pg_typeof(q.__pgt_k{i})::pg_catalog.oid::pg_catalog.text"))
            .collect();
        self.wrap(&facts)
    }

    /// One row: the collation oid (or NULL) of each key in `keys` (indexes
    /// into [`KeyProbe::keys`]; only collatable types may be asked).
    pub fn collations_sql(&self, keys: &[usize]) -> String {
        let facts: Vec<String> = keys
            .iter()
            .map(|i| {
                format!(
                    "pg_catalog.pg_collation_for(q.__pgt_k{})::pg_catalog.regcollation::pg_catalog.oid::pg_catalog.text",
                    i + 1
                )
            })
            .collect();
        self.wrap(&facts)
    }

    fn wrap(&self, facts: &[String]) -> String {
        format!(
            "SELECT {} FROM (VALUES (1)) AS __pgt_one(x) LEFT JOIN ({} LIMIT 0) AS q ON true",
            facts.join(", "),
            self.inner
        )
    }
}

/// The key probe of a grouped analysis; `None` for a linear model or a
/// scalar aggregate.
pub fn key_probe(analysis: &Analysis) -> Option<KeyProbe> {
    let Ok(Model::Grouped { block, keys, .. }) = &analysis.model else {
        return None;
    };
    probe_over(block, keys)
}

/// The probe of the `ORDER BY` keys of a grouped query's ordered aggregates
/// (`string_agg(s, ',' ORDER BY s)`): rows they tie hold equal arguments
/// only under a deterministic collation. `None` when it has none.
pub fn order_key_probe(analysis: &Analysis) -> Option<KeyProbe> {
    let Ok(Model::Grouped { block, .. }) = &analysis.model else {
        return None;
    };
    probe_over(
        block,
        &crate::analyze::ordered_aggregates::order_keys(&block.select),
    )
}

/// The probe of the arguments of a grouped query's algebraic aggregates
/// (see [`crate::delta::algebraic`]): only integer and numeric arguments
/// are summed exactly. `None` when the query has no algebraic shape.
pub fn aggregate_arg_probe(analysis: &Analysis) -> Option<KeyProbe> {
    let shape = crate::delta::algebraic::shape(analysis)?;
    let Ok(Model::Grouped { block, .. }) = &analysis.model else {
        return None;
    };
    probe_over(block, &shape.args)
}

/// The probes of the arguments of the comparisons with a subquery's `sum`
/// or `avg` that a block could keep as filters (see
/// [`crate::delta::filters`]): a floating-point argument sums in the order
/// rows are added, so only an exact one is kept so. One entry per block
/// of [`for_each_filter_block_mut`]'s order (the grouped block, then the
/// blocks of subqueries in FROM, depth first), with the index in
/// [`Block::subs`] of each argument; `None` for a block without one.
pub fn filter_sum_probes(analysis: &Analysis) -> Vec<Option<(Vec<usize>, KeyProbe)>> {
    let mut out = Vec::new();
    let mut analysis = analysis.clone();
    for_each_filter_block_mut(&mut analysis, &mut |block| {
        let (subs, args) = crate::delta::filters::sum_arguments(block);
        out.push(probe_over(block, &args).map(|probe| (subs, probe)));
    });
    out
}

/// Mark each probed comparison's subquery with whether its argument sums
/// exactly ([`crate::model::ExprSub::exact_sums`]): `answers` holds, per
/// block of [`filter_sum_probes`], the subquery indexes and answers.
pub fn mark_exact_sums(analysis: &mut Analysis, answers: &[Vec<(usize, bool)>]) {
    mark_subs(analysis, answers, &mut |sub, exact| {
        sub.exact_sums = Some(exact)
    });
}

/// The probes of the types of both sides of the equalities correlating
/// each subquery of a block that could keep it as a filter, per block of
/// [`for_each_filter_block_mut`]'s order: the index in [`Block::subs`] of
/// each subquery correlated by equalities, its `inner` values over its own
/// FROM and WHERE, and its `outer` values over the block's. Its changes are
/// grouped by their `inner` values and found again by `outer = inner`,
/// which with two types can match two groups (a `float8` against
/// `numeric` values that round to it); see
/// [`crate::model::ExprSub::same_link_types`].
pub fn filter_link_probes(analysis: &Analysis) -> Vec<Vec<(usize, KeyProbe, KeyProbe)>> {
    let mut out = Vec::new();
    let mut analysis = analysis.clone();
    for_each_filter_block_mut(&mut analysis, &mut |block| {
        let probes = block
            .subs
            .iter()
            .enumerate()
            .filter_map(|(i, sub)| {
                // Only a lookup reads the answer, and only where nothing
                // but the equalities correlates (see `filters::lookups`).
                let crate::model::SubLink::Equal { inner, outer } = &sub.link else {
                    return None;
                };
                if !sub.only_equalities {
                    return None;
                }
                Some((i, probe_over(&sub.body, inner)?, probe_over(block, outer)?))
            })
            .collect();
        out.push(probes);
    });
    out
}

/// Mark each probed subquery of [`filter_link_probes`] with whether the
/// two sides of each of its equalities have one type.
pub fn mark_link_types(analysis: &mut Analysis, answers: &[Vec<(usize, bool)>]) {
    mark_subs(analysis, answers, &mut |sub, same| {
        sub.same_link_types = Some(same)
    });
}

/// Apply `set` to the subqueries `answers` names, per block of
/// [`for_each_filter_block_mut`] (index in [`Block::subs`], answer).
fn mark_subs(
    analysis: &mut Analysis,
    answers: &[Vec<(usize, bool)>],
    set: &mut dyn FnMut(&mut crate::model::ExprSub, bool),
) {
    let mut n = 0;
    for_each_filter_block_mut(analysis, &mut |block| {
        for &(i, answer) in answers.get(n).map(Vec::as_slice).unwrap_or_default() {
            if let Some(sub) = block.subs.get_mut(i) {
                set(sub, answer);
            }
        }
        n += 1;
    });
}

/// The probes of the key types of every keyed subquery ([`Keyed`]), in
/// [`for_each_keyed_mut`]'s order: their keys over their own FROM and
/// WHERE. `None` for one without keys.
pub fn keyed_key_probes(analysis: &Analysis) -> Vec<Option<KeyProbe>> {
    let mut out = Vec::new();
    let mut analysis = analysis.clone();
    for_each_keyed_mut(&mut analysis, &mut |keyed| {
        out.push(probe_over(&keyed.block, &keyed.keys));
    });
    out
}

/// Record, per keyed subquery of [`keyed_key_probes`], whether each key
/// is an array ([`Keyed::key_arrays`]); an answer of the wrong length
/// (a failed probe) records nothing.
pub fn mark_keyed_key_arrays(analysis: &mut Analysis, answers: &[Vec<bool>]) {
    let mut n = 0;
    for_each_keyed_mut(analysis, &mut |keyed| {
        if let Some(arrays) = answers.get(n).filter(|a| a.len() == keyed.keys.len()) {
            keyed.key_arrays = arrays.clone();
        }
        n += 1;
    });
}

/// Visit every keyed subquery of the analysis, at any depth (in FROM, in
/// `UNION ALL` branches, in subqueries in expressions and inside other
/// keyed subqueries), outer ones first.
pub fn for_each_keyed_mut(analysis: &mut Analysis, f: &mut dyn FnMut(&mut Keyed)) {
    fn in_block(block: &mut Block, f: &mut dyn FnMut(&mut Keyed)) {
        for occ in &mut block.occs {
            if let Occ::Sub { rel, .. } = occ {
                in_rel(rel, f);
            }
        }
        for sub in &mut block.subs {
            in_block(&mut sub.body, f);
        }
    }
    fn in_rel(rel: &mut Rel, f: &mut dyn FnMut(&mut Keyed)) {
        match rel {
            Rel::Block(b) => in_block(b, f),
            Rel::UnionAll(branches) => branches.iter_mut().for_each(|b| in_rel(b, f)),
            Rel::Keyed(k) => {
                f(k);
                in_block(&mut k.block, f);
            }
        }
    }
    match &mut analysis.model {
        Ok(Model::Grouped { block, .. }) => in_block(block, f),
        Ok(Model::Linear(rel)) => in_rel(rel, f),
        Err(_) => {}
    }
}

/// Visit every block whose subqueries may be kept as filters: a grouped
/// query's block, then, depth first, the blocks of subqueries in FROM
/// (and their `UNION ALL` branches). A linear query has none: a block
/// with a subquery in an expression, or holding one in FROM, is kept by
/// its rows' values (a grouped model over a bag).
pub fn for_each_filter_block_mut(analysis: &mut Analysis, f: &mut dyn FnMut(&mut Block)) {
    fn in_block(block: &mut Block, f: &mut dyn FnMut(&mut Block)) {
        f(block);
        for occ in &mut block.occs {
            if let Occ::Sub { rel, .. } = occ {
                in_rel(rel, f);
            }
        }
    }
    fn in_rel(rel: &mut Rel, f: &mut dyn FnMut(&mut Block)) {
        match rel {
            Rel::Block(b) => in_block(b, f),
            Rel::UnionAll(branches) => branches.iter_mut().for_each(|b| in_rel(b, f)),
            Rel::Keyed(_) => {}
        }
    }
    if let Ok(Model::Grouped { block, .. }) = &mut analysis.model {
        in_block(block, f);
    }
}

/// `exprs` evaluated over `block`'s FROM and WHERE, reading no row.
fn probe_over(block: &Block, exprs: &[Expr]) -> Option<KeyProbe> {
    if exprs.is_empty() {
        return None;
    }
    let mut select = block.select.clone();
    select.projection = exprs
        .iter()
        .enumerate()
        .map(|(i, k)| SelectItem::ExprWithAlias {
            expr: k.clone(),
            alias: Ident::new(format!("__pgt_k{}", i + 1)),
        })
        .collect();
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    select.having = None;
    select.distinct = None;
    Some(KeyProbe {
        keys: exprs.iter().map(Expr::to_string).collect(),
        inner: select.to_string(),
    })
}

/// What to ask PostgreSQL about a subquery kept by keys ([`Keyed`]): the
/// types of its outputs that aggregates or window functions compute. A
/// refresh recomputes such a subquery's old rows and finds the enclosing
/// rows by their values, so these must come out bit for bit as they did;
/// a floating-point sum or average depends on the order rows are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedProbe {
    /// The computed outputs, as written (for messages), in `types_sql` order.
    pub outputs: Vec<String>,
    /// One row: the type oid of each of `outputs`, as text.
    pub types_sql: String,
}

/// The probes of every keyed subquery of an analysis, at any depth.
pub fn nested_probes(analysis: &Analysis) -> Vec<NestedProbe> {
    let mut out = Vec::new();
    let mut analysis = analysis.clone();
    for_each_keyed_mut(&mut analysis, &mut |keyed| keyed_probe(keyed, &mut out));
    out
}

fn keyed_probe(k: &Keyed, out: &mut Vec<NestedProbe>) {
    let computed: Vec<(usize, Expr)> = k
        .block
        .output_exprs()
        .into_iter()
        .enumerate()
        .filter(|(_, e)| computes(e))
        .collect();
    if computed.is_empty() {
        return;
    }
    let n = k.block.outputs.len();
    let columns: Vec<String> = (1..=n).map(|i| format!("__pgt_o{i}")).collect();
    let facts: Vec<String> = computed
        .iter()
        .map(|(i, _)| {
            format!(
                "pg_catalog.pg_typeof(q.__pgt_o{})::pg_catalog.oid::pg_catalog.text",
                i + 1
            )
        })
        .collect();
    out.push(NestedProbe {
        outputs: computed.iter().map(|(_, e)| e.to_string()).collect(),
        types_sql: format!(
            "SELECT {} FROM (VALUES (1)) AS __pgt_one(x) LEFT JOIN \
             (SELECT * FROM ({}) AS s({}) LIMIT 0) AS q ON true",
            facts.join(", "),
            k.block.select,
            columns.join(", ")
        ),
    });
}

/// Whether `e` calls a function (an aggregate or window function among
/// them) outside subqueries: its value is computed, not read.
fn computes(e: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        if matches!(x, Expr::Function(_)) {
            found = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}
