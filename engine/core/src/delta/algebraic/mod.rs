//! Algebraic maintenance of grouped aggregates: `new = old + delta`.
//!
//! Recomputing the groups a change touches costs about a full scan when a
//! query has few groups (TPC-H Q01 has four). `count`, `sum` and `avg` need
//! no scan: each stored group keeps support values, and a refresh adds the
//! delta's per-group sums to them and derives the visible values from them,
//! exactly as PostgreSQL's own aggregates print them.
//!
//! Support values ([`support`]), each a hidden column added to the storage
//! at creation or at reinitialisation, or a visible output that already
//! holds the same value (`count(*)`, `count(x)`, `sum(x)` written as an
//! output):
//! - `count`: the group's row count. A group whose count reaches zero is
//!   deleted (a scalar aggregate keeps its one row).
//! - `nn<j>`: the non-NULL count of aggregate argument `j`.
//! - `sum<j>`: its sum, exact for integer and numeric arguments (floating
//!   point arguments are not maintained this way: their sums depend on the
//!   order rows are added).
//! - `sctop<j>` (numeric arguments): the largest display scale among the
//!   values and how many have it, packed as `scale << 48 | count` (`-1`:
//!   no value), computed by the extension's aggregate
//!   `pgtrickle.numeric_scale_top`. A numeric sum prints with the largest scale
//!   of its inputs; when the last value of that scale leaves, or the
//!   largest scale cannot be told from the delta (a value of a larger one
//!   came and went), the group is recomputed from the sources (`redo`).
//!
//! Populate, FULL and a redone group compute the support values beside the
//! visible ones in one pass ([`support_select`]): the keys and aggregate
//! arguments are evaluated once per row in a subquery, and every aggregate,
//! visible or not, reads them from there.
//!
//! A refresh reads only the delta, the stored rows of the groups it
//! touches and, for redone groups, those groups' rows in the sources.

mod statement;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    SelectItem, VisitMut, VisitorMut,
};
use std::ops::ControlFlow;

use super::grouped::{key_hash, with_where};
use super::subqueries::project;
use super::{parse_expr, ROW_ID};
use crate::model::{Analysis, Block, KeyType, Model};

/// The type class of an aggregate argument, as the extension probed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    /// `smallint` or `integer`: `sum` is `bigint`.
    Int,
    /// `bigint`: `sum` is `numeric` with scale 0.
    BigInt,
    /// `numeric`: `sum` keeps the largest scale of its inputs.
    Numeric,
    /// Not summed exactly, but totally ordered without a collation
    /// (`real`, `double precision`, `date`, `time`, `timestamp`,
    /// `timestamptz`): `min` and `max` are kept.
    Ordered,
    /// Anything else: counted, never summed.
    Other,
}

impl ArgType {
    /// Whether `sum` of it is exact in `numeric`.
    pub fn summable(self) -> bool {
        matches!(self, ArgType::Int | ArgType::BigInt | ArgType::Numeric)
    }

    /// Whether `<` on it is a total order without a collation.
    fn ordered(self) -> bool {
        self != ArgType::Other
    }
}

/// The mask of the count in a packed scale state (`scale << 48 | count`).
pub const SCALE_COUNT_MASK: i64 = (1 << 48) - 1;

/// One step of `pgtrickle.numeric_scale_top`: the packed largest scale and its
/// count (`-1`: no value yet) after one more value of display scale
/// `scale`.
pub fn scale_top_step(state: i64, scale: i32) -> i64 {
    let scale = i64::from(scale.max(0));
    let (top, count) = (state >> 48, state & SCALE_COUNT_MASK);
    if state < 0 || scale > top {
        (scale << 48) | 1
    } else if scale == top {
        (top << 48) | (count + 1)
    } else {
        state
    }
}

/// An aggregate kept algebraically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Agg {
    /// `count(*)`.
    CountStar,
    /// `count(arg)`.
    Count(usize),
    /// `sum(arg)`.
    Sum(usize),
    /// `avg(arg)`.
    Avg(usize),
    /// `variance`, `var_samp`, `var_pop`, `stddev`, `stddev_samp` or
    /// `stddev_pop` of `arg`.
    Var(usize, Spread),
    /// `min(arg)`.
    Min(usize),
    /// `max(arg)`.
    Max(usize),
}

/// Which of PostgreSQL's variance aggregates: sample or population, and
/// whether the square root (standard deviation) is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spread {
    /// Divides by `n (n - 1)` (sample) rather than `n * n` (population).
    pub sample: bool,
    /// The standard deviation rather than the variance.
    pub root: bool,
}

impl Spread {
    /// The aggregate of that name, if it is one of the six.
    fn named(name: &str) -> Option<Spread> {
        let (sample, root) = match name {
            "variance" | "var_samp" => (true, false),
            "var_pop" => (false, false),
            "stddev" | "stddev_samp" => (true, true),
            "stddev_pop" => (false, true),
            _ => return None,
        };
        Some(Spread { sample, root })
    }

    /// The canonical name of the aggregate.
    fn name(self) -> &'static str {
        match (self.sample, self.root) {
            (true, false) => "var_samp",
            (false, false) => "var_pop",
            (true, true) => "stddev_samp",
            (false, true) => "stddev_pop",
        }
    }
}

/// How one visible output is derived.
#[derive(Debug, Clone)]
pub(super) enum Output {
    /// Group key `i`.
    Key(usize),
    /// An expression over aggregates, each replaced by `__pgt_agg<n>`
    /// (`n` indexes [`Shape::aggs`]).
    Computed(Box<Expr>),
}

/// The algebraic form of a grouped query, before argument types are known.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Distinct aggregate arguments, in order of first use.
    pub args: Vec<Expr>,
    /// The aggregates, each replaced by `__pgt_agg<n>` in the outputs.
    aggs: Vec<Agg>,
    /// How each visible output is derived.
    outputs: Vec<Output>,
}

/// The algebraic shape of a grouped analysis, when it has one: a plain
/// `GROUP BY` (or scalar aggregate) over an exact delta, every output a
/// group key or an expression of `count`, `sum` and `avg` calls, every
/// key an output. `None` keeps the recompute form.
pub fn shape(analysis: &Analysis) -> Option<Shape> {
    let Ok(Model::Grouped {
        block,
        keys,
        bag: false,
        top: None,
    }) = &analysis.model
    else {
        return None;
    };
    block_shape(block, keys)
}

fn block_shape(block: &Block, keys: &[Expr]) -> Option<Shape> {
    let s = &block.select;
    let plain_grouping = match &s.group_by {
        GroupByExpr::Expressions(_, modifiers) => modifiers.is_empty(),
        GroupByExpr::All(_) => false,
    };
    if !plain_grouping
        || s.having.is_some()
        || s.distinct.is_some()
        || block.order.is_some()
        || (!block.delta_is_exact() && !crate::delta::filters::only_filters(block))
    {
        return None;
    }
    let key_texts: Vec<String> = keys.iter().map(Expr::to_string).collect();
    let mut shape = Shape {
        args: Vec::new(),
        aggs: Vec::new(),
        outputs: Vec::new(),
    };
    for expr in block.output_exprs() {
        if let Some(k) = key_texts.iter().position(|t| *t == expr.to_string()) {
            shape.outputs.push(Output::Key(k));
            continue;
        }
        let mut replaced = expr.clone();
        let mut swap = Swap {
            shape: &mut shape,
            failed: false,
        };
        let _ = replaced.visit(&mut swap);
        if swap.failed || !only_aggregates(&replaced) {
            return None;
        }
        shape.outputs.push(Output::Computed(Box::new(replaced)));
    }
    // Stored rows are matched by their keys, so each must be an output.
    let all_keys_stored = (0..keys.len()).all(|k| {
        shape
            .outputs
            .iter()
            .any(|o| matches!(o, Output::Key(i) if *i == k))
    });
    all_keys_stored.then_some(shape)
}

/// Replaces algebraic aggregate calls by placeholders; fails on any other
/// aggregate form it recognises (DISTINCT, FILTER, ORDER BY, windows).
struct Swap<'a> {
    shape: &'a mut Shape,
    failed: bool,
}

impl VisitorMut for Swap<'_> {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            if let Some(agg) = self.aggregate(f) {
                let n = self.shape.aggs.len();
                self.shape.aggs.push(agg);
                *expr = Expr::Identifier(Ident::new(format!("__pgt_agg{n}")));
            }
        }
        ControlFlow::Continue(())
    }
}

impl Swap<'_> {
    fn aggregate(&mut self, f: &Function) -> Option<Agg> {
        let name = f.name.to_string().to_ascii_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        let spread = Spread::named(name);
        if !matches!(name, "count" | "sum" | "avg" | "min" | "max") && spread.is_none() {
            return None;
        }
        let FunctionArguments::List(list) = &f.args else {
            return None;
        };
        if f.over.is_some()
            || f.filter.is_some()
            || !f.within_group.is_empty()
            || list.duplicate_treatment.is_some()
            || !list.clauses.is_empty()
            || list.args.len() != 1
        {
            self.failed = true;
            return None;
        }
        match (&list.args[0], name) {
            (FunctionArg::Unnamed(FunctionArgExpr::Wildcard), "count") => Some(Agg::CountStar),
            (FunctionArg::Unnamed(FunctionArgExpr::Expr(arg)), _) => {
                if !only_columns_and_constants(arg) {
                    self.failed = true;
                    return None;
                }
                let j = self.arg_index(arg);
                Some(match (name, spread) {
                    (_, Some(spread)) => Agg::Var(j, spread),
                    ("count", _) => Agg::Count(j),
                    ("sum", _) => Agg::Sum(j),
                    ("min", _) => Agg::Min(j),
                    ("max", _) => Agg::Max(j),
                    _ => Agg::Avg(j),
                })
            }
            _ => {
                self.failed = true;
                None
            }
        }
    }

    fn arg_index(&mut self, arg: &Expr) -> usize {
        let text = arg.to_string();
        match self.shape.args.iter().position(|a| a.to_string() == text) {
            Some(j) => j,
            None => {
                self.shape.args.push(arg.clone());
                self.shape.args.len() - 1
            }
        }
    }
}

/// An aggregate argument without calls that might be aggregates or
/// windows of their own and without subqueries (analysis refused
/// volatile functions already).
fn only_columns_and_constants(arg: &Expr) -> bool {
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(arg, |e| {
        if let Expr::Function(f) = e {
            if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
                ok = false;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    ok && !crate::analyze::has_subquery(arg)
}

/// An output with its aggregates replaced reads no column, and every call
/// left in it takes a replaced aggregate (so it cannot itself be one: an
/// aggregate of an aggregate is not SQL).
fn only_aggregates(expr: &Expr) -> bool {
    let mut ok = true;
    let _ = sqlparser::ast::visit_expressions(expr, |e| {
        match e {
            Expr::Identifier(id) if !id.value.starts_with("__pgt_agg") => ok = false,
            Expr::CompoundIdentifier(_) => ok = false,
            Expr::Function(f) => {
                let text = f.to_string();
                if f.over.is_some() || !text.contains("__pgt_agg") {
                    ok = false;
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    ok && !crate::analyze::has_subquery(expr)
}

/// The algebraic form of an analysis whose argument types are known and
/// all maintainable: integer or numeric where summed; for `min` and `max`,
/// ordered without a collation, and each call a plain output (the output
/// column holds the extreme; in an expression the recompute form keeps it).
pub(super) fn typed(analysis: &Analysis) -> Option<(Shape, Vec<ArgType>)> {
    let shape = shape(analysis)?;
    let types = analysis.aggregate_arg_types.clone();
    if types.len() != shape.args.len() {
        return None;
    }
    let maintainable = shape.aggs.iter().enumerate().all(|(n, a)| match a {
        Agg::Sum(j) | Agg::Avg(j) | Agg::Var(j, _) => types[*j].summable(),
        Agg::Min(j) | Agg::Max(j) => types[*j].ordered() && plain_output(&shape, n),
        Agg::CountStar | Agg::Count(_) => true,
    });
    maintainable.then_some((shape, types))
}

/// Whether aggregate `n` of the shape is an output on its own.
fn plain_output(shape: &Shape, n: usize) -> bool {
    shape.outputs.iter().any(|o| plain_aggregate(o) == Some(n))
}

/// The aggregate (its index in [`Shape::aggs`]) an output is on its own,
/// if it is one.
fn plain_aggregate(output: &Output) -> Option<usize> {
    match output {
        Output::Computed(e) => match e.as_ref() {
            Expr::Identifier(id) => id.value.strip_prefix("__pgt_agg")?.parse().ok(),
            _ => None,
        },
        Output::Key(_) => None,
    }
}

/// The extremes kept of argument `j`: `(tag, is max)` for its `min` and
/// `max` outputs.
pub(super) fn extremes(shape: &Shape, j: usize) -> Vec<(String, bool)> {
    let n = j + 1;
    let mut out = Vec::new();
    if shape.aggs.contains(&Agg::Min(j)) {
        out.push((format!("lo{n}"), false));
    }
    if shape.aggs.contains(&Agg::Max(j)) {
        out.push((format!("hi{n}"), true));
    }
    out
}

/// Where a support value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Home {
    /// A hidden column `__pgt_<tag>` of this type.
    Hidden(&'static str),
    /// Visible output `i`, which holds the same value.
    Visible(usize),
}

/// One support value of the algebraic form.
#[derive(Debug, Clone)]
pub(super) struct Item {
    /// `count`, `nn<j>`, `sum<j>` or `sctop<j>` (`j` from 1).
    pub tag: String,
    /// Where it is stored.
    pub home: Home,
    /// How populate and FULL compute it over the argument values
    /// (`__pgt_r.__pgt_x<j>`, see [`support_select`]).
    pub aggregate: String,
}

/// The support values of an algebraic shape, in storage order.
pub(super) fn support(shape: &Shape, types: &[ArgType]) -> Vec<Item> {
    let visible = |agg: Agg| {
        shape
            .outputs
            .iter()
            .position(|o| plain_aggregate(o).is_some_and(|n| shape.aggs[n] == agg))
    };
    let item = |tag: String, ty: &'static str, agg: Option<Agg>, aggregate: String| Item {
        home: agg
            .and_then(visible)
            .map_or(Home::Hidden(ty), Home::Visible),
        tag,
        aggregate,
    };
    let mut out = vec![item(
        "count".into(),
        "bigint",
        Some(Agg::CountStar),
        "pg_catalog.count(*)".into(),
    )];
    for (j, ty) in types.iter().enumerate().take(shape.args.len()) {
        let n = j + 1;
        let arg = format!("__pgt_r.__pgt_x{n}");
        out.push(item(
            format!("nn{n}"),
            "bigint",
            Some(Agg::Count(j)),
            format!("pg_catalog.count({arg})"),
        ));
        // An extreme is always an output of its own (`typed`): the output
        // column holds it.
        for (tag, max) in extremes(shape, j) {
            let (agg, name) = if max {
                (Agg::Max(j), "max")
            } else {
                (Agg::Min(j), "min")
            };
            out.push(item(
                tag,
                "",
                Some(agg),
                format!("pg_catalog.{name}({arg})"),
            ));
        }
        if !summed(shape, j) {
            continue;
        }
        // A visible integer sum is a bigint, and a visible numeric sum is
        // exact: either holds the sum.
        out.push(item(
            format!("sum{n}"),
            "numeric",
            Some(Agg::Sum(j)),
            format!("pg_catalog.sum(({arg})::pg_catalog.numeric)"),
        ));
        if squared(shape, j) {
            out.push(item(
                format!("sq{n}"),
                "numeric",
                None,
                format!(
                    "pg_catalog.sum(({arg})::pg_catalog.numeric * ({arg})::pg_catalog.numeric)"
                ),
            ));
        }
        if *ty == ArgType::Numeric {
            out.push(item(
                format!("sctop{n}"),
                "bigint",
                None,
                format!("pgtrickle.numeric_scale_top(pg_catalog.scale({arg}))"),
            ));
        }
    }
    out
}

/// Whether argument `j` is summed (by `sum`, `avg` or a variance).
pub(super) fn summed(shape: &Shape, j: usize) -> bool {
    shape
        .aggs
        .iter()
        .any(|a| matches!(a, Agg::Sum(i) | Agg::Avg(i) | Agg::Var(i, _) if *i == j))
}

/// Whether the squares of argument `j` are summed (by a variance).
pub(super) fn squared(shape: &Shape, j: usize) -> bool {
    shape
        .aggs
        .iter()
        .any(|a| matches!(a, Agg::Var(i, _) if *i == j))
}

/// One hidden column of the algebraic form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportColumn {
    /// Its name (`__pgt_...`).
    pub name: String,
    /// Its SQL type.
    pub type_sql: &'static str,
}

/// The hidden columns a grouped stream table's storage needs to be kept
/// algebraically (possibly none: `SELECT k, count(*) ... GROUP BY k`
/// keeps its one support value in its output); `None` when it is not
/// kept so (or its argument types are not known).
pub fn support_columns(analysis: &Analysis) -> Option<Vec<SupportColumn>> {
    let (shape, types) = typed(analysis)?;
    Some(
        support(&shape, &types)
            .into_iter()
            .filter_map(|i| match i.home {
                Home::Hidden(type_sql) => Some(SupportColumn {
                    name: format!("__pgt_{}", i.tag),
                    type_sql,
                }),
                Home::Visible(_) => None,
            })
            .collect(),
    )
}

/// The block's visible outputs, its row identity and its hidden support
/// values: what populate, FULL and a redone group insert. The keys and
/// aggregate arguments are evaluated once per row over the block's FROM
/// and WHERE (`extra_where` added) in a subquery `__pgt_r` (columns
/// `__pgt_g<i>`, `__pgt_x<j>`; fenced by `OFFSET 0` so that it is not
/// flattened back); the outer query groups by the keys and computes every
/// aggregate from those columns, each the aggregate the query wrote.
pub(super) fn support_select(
    block: &Block,
    keys: &[Expr],
    key_types: &[KeyType],
    (shape, types): (&Shape, &[ArgType]),
    extra_where: Option<&str>,
) -> String {
    let mut inner = block.select.clone();
    if let Some(extra) = extra_where {
        with_where(&mut inner, extra);
    }
    let mut columns: Vec<Expr> = keys.to_vec();
    columns.extend(shape.args.iter().cloned());
    project(&mut inner, &columns);
    let names: Vec<String> = (1..=keys.len())
        .map(|i| format!("__pgt_g{i}"))
        .chain((1..=shape.args.len()).map(|j| format!("__pgt_x{j}")))
        .collect();
    inner.projection = columns
        .into_iter()
        .zip(&names)
        .map(|(expr, alias)| SelectItem::ExprWithAlias {
            expr,
            alias: Ident::new(alias),
        })
        .collect();
    if inner.projection.is_empty() {
        inner
            .projection
            .push(SelectItem::UnnamedExpr(parse_expr("1")));
    }
    let group: Vec<String> = (1..=keys.len())
        .map(|i| format!("__pgt_r.__pgt_g{i}"))
        .collect();
    let mut items: Vec<String> = shape
        .outputs
        .iter()
        .zip(&block.outputs)
        .map(|(o, name)| {
            let value = match o {
                Output::Key(i) => group[*i].clone(),
                Output::Computed(e) => with_aggregates(e, shape, &|agg| match agg {
                    Agg::CountStar => "pg_catalog.count(*)".into(),
                    Agg::Count(j) => format!("pg_catalog.count(__pgt_r.__pgt_x{})", j + 1),
                    Agg::Sum(j) => format!("pg_catalog.sum(__pgt_r.__pgt_x{})", j + 1),
                    Agg::Avg(j) => format!("pg_catalog.avg(__pgt_r.__pgt_x{})", j + 1),
                    Agg::Var(j, spread) => {
                        format!("pg_catalog.{}(__pgt_r.__pgt_x{})", spread.name(), j + 1)
                    }
                    Agg::Min(j) => format!("pg_catalog.min(__pgt_r.__pgt_x{})", j + 1),
                    Agg::Max(j) => format!("pg_catalog.max(__pgt_r.__pgt_x{})", j + 1),
                }),
            };
            format!("{value} AS {}", crate::sql::quote_ident(name))
        })
        .collect();
    items.push(format!("{} AS {ROW_ID}", key_hash(&group, key_types)));
    for item in support(shape, types) {
        if let Home::Hidden(_) = item.home {
            items.push(format!("{} AS __pgt_{}", item.aggregate, item.tag));
        }
    }
    let group_by = if group.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", group.join(", "))
    };
    format!(
        "SELECT {} FROM ({inner} OFFSET 0) AS __pgt_r{group_by}",
        items.join(", ")
    )
}

/// The insert column list of populate and FULL: visible columns, the row
/// identity, then the hidden support columns.
pub(super) fn insert_columns(visible: &str, (shape, types): (&Shape, &[ArgType])) -> String {
    let mut cols = format!("{visible}, {ROW_ID}");
    for item in support(shape, types) {
        if let Home::Hidden(_) = item.home {
            cols.push_str(&format!(", __pgt_{}", item.tag));
        }
    }
    cols
}

/// The output column holding group key `i` (every key is one: [`shape`]).
pub(super) fn key_output(shape: &Shape, i: usize) -> usize {
    shape
        .outputs
        .iter()
        .position(|o| matches!(o, Output::Key(k) if *k == i))
        .expect("every key is an output")
}

/// An output expression with each placeholder replaced by the aggregate's
/// value derived from the new support values (alias `m`), exactly as
/// PostgreSQL's own aggregate prints it.
pub(super) fn derived(expr: &Expr, shape: &Shape, types: &[ArgType]) -> String {
    with_aggregates(expr, shape, &|agg| aggregate_value(agg, types))
}

/// `expr` with each placeholder `__pgt_agg<n>` replaced by `value` of
/// aggregate `n`, parenthesised.
fn with_aggregates(expr: &Expr, shape: &Shape, value: &dyn Fn(Agg) -> String) -> String {
    let mut e = expr.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
        if let Expr::Identifier(id) = x {
            if let Some(n) = id.value.strip_prefix("__pgt_agg") {
                let n: usize = n.parse().unwrap_or(0);
                *x = parse_expr(&format!("({})", value(shape.aggs[n])));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}

/// The value of one aggregate from the new support values: `sum` of
/// integers is a `bigint`, of `bigint` a `numeric` of scale 0, of numeric
/// the exact sum at the largest scale; `avg` is that sum divided by the
/// count as `numeric`, as PostgreSQL's `avg` divides.
fn aggregate_value(agg: Agg, types: &[ArgType]) -> String {
    let sum = |j: usize| {
        let n = j + 1;
        match types[j] {
            ArgType::Int => format!("m.__pgt_nsum{n}::pg_catalog.int8"),
            ArgType::BigInt | ArgType::Ordered | ArgType::Other => format!("m.__pgt_nsum{n}"),
            // Stored at the largest scale of the group's values.
            ArgType::Numeric => format!("m.__pgt_nsum{n}"),
        }
    };
    match agg {
        Agg::CountStar => "m.__pgt_ncount".into(),
        Agg::Count(j) => format!("m.__pgt_nnn{}", j + 1),
        Agg::Sum(j) => sum(j),
        Agg::Avg(j) => format!(
            "CASE WHEN m.__pgt_nnn{n} = 0 THEN NULL ELSE ({})::pg_catalog.numeric / m.__pgt_nnn{n}::pg_catalog.numeric END",
            sum(j),
            n = j + 1
        ),
        Agg::Var(j, spread) => spread_value(j + 1, spread),
        Agg::Min(j) => format!("m.__pgt_nlo{}", j + 1),
        Agg::Max(j) => format!("m.__pgt_nhi{}", j + 1),
    }
}

/// A variance or standard deviation from the new non-NULL count `N`, sum
/// `S` (at the largest scale of the values) and sum of squares `Q` (at
/// twice that scale), computed as PostgreSQL's numeric variance computes
/// it, digit for digit: `(N Q - S S) / (N (N - 1))` (population: `N N`)
/// at the scale numeric division chooses, 0 when the numerator is not
/// positive, NULL for fewer than two values (population: none).
fn spread_value(n: usize, spread: Spread) -> String {
    let count = format!("m.__pgt_nnn{n}");
    let (sum, squares) = (format!("m.__pgt_nsum{n}"), format!("m.__pgt_nsq{n}"));
    let numerator = format!(
        "({count})::pg_catalog.numeric * {squares} - ({sum})::pg_catalog.numeric * ({sum})::pg_catalog.numeric"
    );
    let (fewest, denominator) = if spread.sample {
        (
            1,
            format!("({count})::pg_catalog.numeric * ({count} - 1)::pg_catalog.numeric"),
        )
    } else {
        (
            0,
            format!("({count})::pg_catalog.numeric * ({count})::pg_catalog.numeric"),
        )
    };
    let variance = format!(
        "CASE WHEN {count} <= {fewest} THEN NULL WHEN {numerator} <= 0 THEN 0::pg_catalog.numeric \
         ELSE ({numerator}) / ({denominator}) END"
    );
    if spread.root {
        rounded_root(&variance)
    } else {
        variance
    }
}

/// The square root of a non-negative numeric `v` rounded half up to `v`'s
/// own scale, as PostgreSQL's standard deviation rounds it (`sqrt(v)`
/// chooses a scale of its own, and rounding its result again can land one
/// unit off): the root rounded to that scale, then moved by one unit `u`
/// when it is not within half a unit `h` of the exact root, which the
/// exact squares of numeric tell. 0 stays 0, as PostgreSQL prints it.
fn rounded_root(v: &str) -> String {
    format!(
        "(SELECT CASE WHEN z.v IS NULL OR z.v = 0 THEN z.v \
       WHEN (z.c + z.h) * (z.c + z.h) <= z.v THEN z.c + z.u \
       WHEN (z.c - z.h) * (z.c - z.h) > z.v THEN z.c - z.u ELSE z.c END \
     FROM (SELECT y.v, pg_catalog.round(pg_catalog.sqrt(y.v), pg_catalog.scale(y.v)) AS c, \
       ('1e-' || pg_catalog.scale(y.v)::pg_catalog.text)::pg_catalog.numeric AS u, \
       ('5e-' || (pg_catalog.scale(y.v) + 1)::pg_catalog.text)::pg_catalog.numeric AS h \
     FROM (SELECT {v} AS v) y) z)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, FunctionFacts, SourceKind, SourceTable};

    fn analysis(query: &str) -> Analysis {
        let mut c = Catalog::new();
        let a = SourceTable {
            oid: 1,
            schema: "public".into(),
            name: "a".into(),
            kind: SourceKind::Table,
            columns: vec!["k".into(), "v".into(), "w".into()],
            capture_problem: None,
            capture: Default::default(),
            key: Vec::new(),
            image_equality: Vec::new(),
        };
        let b = SourceTable {
            oid: 2,
            name: "b".into(),
            columns: vec!["k".into(), "x".into()],
            ..a.clone()
        };
        c.insert("a", a);
        c.insert("b", b);
        c.insert_function(
            "rank",
            FunctionFacts {
                immutable: true,
                aggregate: true,
                window: true,
                ..Default::default()
            },
        );
        for f in ["count", "sum", "avg", "max", "string_agg"] {
            c.insert_function(
                f,
                FunctionFacts {
                    immutable: true,
                    aggregate: true,
                    ..Default::default()
                },
            );
        }
        c.insert_function(
            "round",
            FunctionFacts {
                immutable: true,
                ..Default::default()
            },
        );
        crate::analyze::analyze(query, &c).expect("analysis")
    }

    /// The hidden support columns' names of an algebraic analysis.
    fn support_names(a: &Analysis) -> Vec<String> {
        support_columns(a)
            .expect("algebraic")
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn count_sum_and_avg_of_keyed_groups_have_an_algebraic_shape() {
        let s = shape(&analysis(
            "SELECT k, count(*) AS n, sum(v) AS t, avg(v) AS m, round(sum(v) / count(w), 2) AS r FROM a GROUP BY k",
        ))
        .expect("algebraic");
        assert_eq!(
            s.args.iter().map(Expr::to_string).collect::<Vec<_>>(),
            ["v", "w"]
        );
        assert!(shape(&analysis("SELECT sum(v) AS t FROM a")).is_some());
    }

    #[test]
    fn plain_min_and_max_outputs_of_ordered_types_are_kept_in_their_columns() {
        let mut a =
            analysis("SELECT k, min(v) AS lo, max(v) AS hi, max(w) AS top FROM a GROUP BY k");
        a.aggregate_arg_types = vec![ArgType::Numeric, ArgType::Ordered];
        let names = support_names(&a);
        // The extremes live in their outputs; only the counts are hidden.
        assert_eq!(names, ["__pgt_count", "__pgt_nn1", "__pgt_nn2"]);
        let (shape, types) = typed(&a).expect("algebraic");
        let tags: Vec<String> = support(&shape, &types).into_iter().map(|i| i.tag).collect();
        assert_eq!(tags, ["count", "nn1", "lo1", "hi1", "nn2", "hi2"]);
        a.aggregate_arg_types = vec![ArgType::Numeric, ArgType::Other];
        assert!(
            support_columns(&a).is_none(),
            "an extreme under a collation (text) keeps the recompute form"
        );
        // An extreme inside an expression has no column of its own.
        let mut b = analysis("SELECT k, max(v) - min(v) AS range FROM a GROUP BY k");
        b.aggregate_arg_types = vec![ArgType::Int];
        assert!(support_columns(&b).is_none());
    }

    #[test]
    fn variances_keep_sums_of_squares_beside_the_sum() {
        let mut a = analysis(
            "SELECT k, variance(v) AS a, var_pop(v) AS b, stddev(w) AS c, stddev_pop(v) AS d FROM a GROUP BY k",
        );
        let s = shape(&a).expect("algebraic");
        assert_eq!(
            s.aggs,
            [
                Agg::Var(
                    0,
                    Spread {
                        sample: true,
                        root: false
                    }
                ),
                Agg::Var(
                    0,
                    Spread {
                        sample: false,
                        root: false
                    }
                ),
                Agg::Var(
                    1,
                    Spread {
                        sample: true,
                        root: true
                    }
                ),
                Agg::Var(
                    0,
                    Spread {
                        sample: false,
                        root: true
                    }
                ),
            ]
        );
        a.aggregate_arg_types = vec![ArgType::Numeric, ArgType::Int];
        let names = support_names(&a);
        assert_eq!(
            names,
            [
                "__pgt_count",
                "__pgt_nn1",
                "__pgt_sum1",
                "__pgt_sq1",
                "__pgt_sctop1",
                "__pgt_nn2",
                "__pgt_sum2",
                "__pgt_sq2"
            ]
        );
        a.aggregate_arg_types = vec![ArgType::Other, ArgType::Int];
        assert!(
            support_columns(&a).is_none(),
            "a float variance depends on the order rows are added"
        );
        // The square root is rounded to the variance's own scale.
        let sql = derived(
            &parse_expr("__pgt_agg2"),
            &s,
            &[ArgType::Numeric, ArgType::Int],
        );
        assert!(sql.contains("pg_catalog.scale(y.v)"), "{sql}");
        assert!(sql.contains("m.__pgt_nsq2"), "{sql}");
    }

    #[test]
    fn other_aggregates_and_forms_keep_the_recompute_form() {
        for q in [
            "SELECT k, string_agg(v, ',') AS m FROM a GROUP BY k",
            "SELECT k, count(DISTINCT v) AS n FROM a GROUP BY k",
            "SELECT k, count(*) FILTER (WHERE v > 0) AS n FROM a GROUP BY k",
            "SELECT k, sum(v) AS t FROM a GROUP BY k HAVING sum(v) > 0",
            "SELECT sum(v) AS t FROM a GROUP BY k",
            "SELECT k, sum(v) + k AS t FROM a GROUP BY k",
            "SELECT DISTINCT k, sum(v) AS t FROM a GROUP BY k",
            "SELECT k, v FROM a",
            "SELECT k, count(*) AS n FROM a GROUP BY k ORDER BY n DESC LIMIT 3",
        ] {
            assert!(shape(&analysis(q)).is_none(), "{q}");
        }
    }

    #[test]
    fn subqueries_that_only_filter_keep_the_algebraic_shape() {
        for q in [
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, sum(v) AS t FROM a WHERE v > 1 AND NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.x <> a.w) GROUP BY k",
            "SELECT count(*) AS n FROM a WHERE (v IN (SELECT x FROM b WHERE b.x > 0))",
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b, a AS a2 WHERE b.k = a.k AND a2.k = b.x) \
             AND v IN (SELECT x FROM b WHERE b.k = a.k) GROUP BY k",
            // Comparisons with a correlated aggregate of one argument.
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT max(x) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT sum(v) AS t FROM a WHERE v < (SELECT 0.2 * avg(x) FROM b WHERE b.k = a.k)",
            "SELECT k, count(*) AS n FROM a WHERE (SELECT count(*) FROM b WHERE b.k = a.k) > 1 GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v >= (SELECT sum(b.x) - count(b.x) FROM b, a AS a2 WHERE b.k = a.k AND a2.k = b.x) GROUP BY k",
            // Uncorrelated: every row is reached when what it reads changed.
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT avg(x) FROM b) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.x > 3) GROUP BY k",
            // Filters of a subquery in FROM (TPC-H Q22's shape).
            "SELECT c, count(*) AS n, sum(v) AS t FROM (SELECT k + 1 AS c, v FROM a WHERE v > (SELECT avg(x) FROM b) \
             AND NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)) s GROUP BY c",
        ] {
            assert!(shape(&summed_exactly(analysis(q), Some(true))).is_some(), "{q}");
        }
        for q in [
            // NOT IN turns NULL; an OR, a scalar subquery or one in the
            // select list is more than a filter.
            "SELECT k, count(*) AS n FROM a WHERE v NOT IN (SELECT x FROM b) GROUP BY k",
            // An IN under a named collation may compare otherwise than
            // its items group.
            "SELECT k, count(*) AS n FROM a WHERE w COLLATE \"C\" IN (SELECT x FROM b) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k) OR v > 1 GROUP BY k",
            // A scalar subquery that is not one row of plain aggregates
            // of one argument, or is uncorrelated.
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT x FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT count(DISTINCT x) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT count(*) FILTER (WHERE x > 1) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT sum(x) + max(b.k) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT round(avg(x)) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT max(x) FROM b WHERE b.k = a.k GROUP BY b.x) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT max(x) FROM b WHERE b.k = a.k) + (SELECT 1) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v + (SELECT max(x) FROM b WHERE b.k = a.k) > 1 GROUP BY k",
            // Aggregated, limited or nested subqueries.
            "SELECT k, count(*) AS n FROM a WHERE v IN (SELECT max(x) FROM b GROUP BY k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k LIMIT 1) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k \
             AND EXISTS (SELECT 1 FROM a AS a3 WHERE a3.v = b.x)) GROUP BY k",
            // Correlated otherwise than by an equality: every row would
            // evaluate it against the old state, one by one.
            "SELECT k, count(*) AS n FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.x > a.v) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT max(x) FROM b WHERE b.x < a.w) GROUP BY k",
            // A whole row as the argument, however written.
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT count(b) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT count((b.*)) FROM b WHERE b.k = a.k) GROUP BY k",
            "SELECT k, count(*) AS n FROM a WHERE v > (SELECT count(bb) FROM (b AS bb JOIN a AS a2 ON a2.k = bb.x) WHERE bb.k = a.k) GROUP BY k",
            // A subquery in FROM whose subquery is no filter.
            "SELECT c, count(*) AS n FROM (SELECT k AS c FROM a WHERE v NOT IN (SELECT x FROM b)) s GROUP BY c",
        ] {
            assert!(shape(&summed_exactly(analysis(q), Some(true))).is_none(), "{q}");
        }
    }

    #[test]
    fn aggregates_over_subqueries_kept_by_keys_have_an_algebraic_shape() {
        for q in [
            // TPC-H Q13's shape: a group key that is the subquery's count.
            "SELECT n, count(*) AS c FROM (SELECT a.k, count(b.x) AS n FROM a LEFT JOIN b ON b.k = a.k \
             GROUP BY a.k) s GROUP BY n",
            "SELECT count(*) AS c, sum(n) AS t FROM (SELECT k, count(*) AS n FROM a GROUP BY k) s",
            "SELECT k, count(*) AS c FROM (SELECT DISTINCT k, v FROM a) s GROUP BY k",
            "SELECT t, count(*) AS c FROM (SELECT k, sum(v) AS t FROM a GROUP BY k HAVING count(*) > 1) s GROUP BY t",
            // Twice nested, and joined to a table.
            "SELECT m, count(*) AS c FROM (SELECT n AS m FROM (SELECT k, count(*) AS n FROM a GROUP BY k) x \
             WHERE n > 1) y GROUP BY m",
            "SELECT b.x, count(*) AS c, sum(s.n) AS t FROM b JOIN (SELECT k, count(*) AS n FROM a GROUP BY k) s \
             ON s.k = b.k GROUP BY b.x",
        ] {
            assert!(shape(&analysis(q)).is_some(), "{q}");
        }
        for q in [
            // Rows that depend on the order they are read in: window
            // functions and DISTINCT ON.
            "SELECT r, count(*) AS c FROM (SELECT k, rank() OVER (PARTITION BY k ORDER BY v) AS r FROM a) s GROUP BY r",
            "SELECT v, count(*) AS c FROM (SELECT DISTINCT ON (k) k, v FROM a ORDER BY k, v) s GROUP BY v",
            // A sum that is no output of its own: its type is not checked,
            // and a floating-point one depends on the order rows are added.
            "SELECT n, count(*) AS c FROM (SELECT k, count(*) AS n FROM a GROUP BY k HAVING sum(v) > 2) s GROUP BY n",
            "SELECT r, count(*) AS c FROM (SELECT k, round(sum(v)) AS r FROM a GROUP BY k) s GROUP BY r",
        ] {
            assert!(shape(&analysis(q)).is_none(), "{q}");
        }
    }

    /// `analysis` with every subquery of its grouped block marked as the
    /// extension marks a sum's argument (see `ExprSub::exact_sums`).
    fn summed_exactly(mut analysis: Analysis, exact: Option<bool>) -> Analysis {
        crate::probes::for_each_filter_block_mut(&mut analysis, &mut |block| {
            for sub in &mut block.subs {
                sub.exact_sums = exact;
            }
        });
        analysis
    }

    #[test]
    fn a_sum_or_avg_filter_is_kept_only_when_its_argument_sums_exactly() {
        let summed =
            "SELECT sum(v) AS t FROM a WHERE v < (SELECT 0.2 * avg(x) FROM b WHERE b.k = a.k)";
        assert!(shape(&summed_exactly(analysis(summed), Some(true))).is_some());
        // Floating point, or not asked: recomputed.
        assert!(shape(&summed_exactly(analysis(summed), Some(false))).is_none());
        assert!(shape(&analysis(summed)).is_none());
        // min, max and count do not depend on the order rows are added.
        let extreme =
            "SELECT sum(v) AS t FROM a WHERE v < (SELECT max(x) - count(x) FROM b WHERE b.k = a.k)";
        assert!(shape(&summed_exactly(analysis(extreme), Some(false))).is_some());
        let Ok(Model::Grouped { block, .. }) = &analysis(summed).model else {
            panic!("grouped");
        };
        let (subs, args) = crate::delta::filters::sum_arguments(block);
        assert_eq!(subs, [0]);
        assert_eq!(args[0].to_string(), "(SELECT x FROM b WHERE b.k = a.k)");
    }

    #[test]
    fn scale_top_keeps_the_largest_scale_and_its_count() {
        let mut state = -1;
        for scale in [2, 1, 2, 0] {
            state = scale_top_step(state, scale);
        }
        assert_eq!((state >> 48, state & SCALE_COUNT_MASK), (2, 2));
        state = scale_top_step(state, 3);
        assert_eq!((state >> 48, state & SCALE_COUNT_MASK), (3, 1));
    }

    #[test]
    fn support_columns_follow_the_argument_types() {
        let mut a = analysis("SELECT k, sum(v) AS t, count(w) AS c, avg(w) AS m FROM a GROUP BY k");
        assert!(support_columns(&a).is_none(), "types unknown");
        a.aggregate_arg_types = vec![ArgType::Numeric, ArgType::Int];
        let names = support_names(&a);
        // sum(v) and count(w) are outputs: they hold those support values.
        assert_eq!(
            names,
            ["__pgt_count", "__pgt_nn1", "__pgt_sctop1", "__pgt_sum2"]
        );
        a.aggregate_arg_types = vec![ArgType::Other, ArgType::Int];
        assert!(support_columns(&a).is_none(), "a float sum is not exact");
        let mut counted = analysis("SELECT k, count(*) AS n FROM a GROUP BY k");
        counted.aggregate_arg_types = Vec::new();
        assert_eq!(
            support_columns(&counted),
            Some(Vec::new()),
            "the count is an output"
        );
    }
}
