//! Query analysis: from a defining query's text to the model that delta-SQL
//! generation works on, plus the operator tree and the DIFFERENTIAL verdict.
//!
//! PostgreSQL has already validated the query before the core sees it (the
//! extension prepares it first), so analysis never guesses types or checks
//! names against the server; it decides *shape*: which operators the query
//! uses and whether each has a delta rule. Anything outside the supported
//! grammar yields a reason string, never a wrong plan.
//!
//! By clause: `ctes.rs` inlines WITH, `from.rs` turns FROM occurrences into
//! sources and nested relations, `select.rs` judges one SELECT block
//! (projection, WHERE, GROUP BY, HAVING, DISTINCT); this module walks the
//! query and its set operations. What analysis produces lives in
//! [`crate::model`].

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, FunctionArguments, GroupByExpr, Ident, InTarget, Join, JoinConstraint,
    JoinOperator, ObjectName, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    SetOperator, SetQuantifier, TableAlias, TableAliasColumnDef, TableFactor, TableInheritance,
    TableWithJoins, Value, WindowType,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

mod ctes;
mod from;
mod grouping_sets;
pub(crate) mod ordered_aggregates;
mod select;
mod subqueries;
mod top_k;

pub use crate::model::{
    Analysis, Block, ExprSub, KeyType, Keyed, Model, Occ, OrderItem, OuterJoin, QueryRefs, Rel,
    SubLink, TopK,
};
pub use from::{alias_of, for_each_factor_mut, for_each_join_mut};
pub use select::output_name;
pub(crate) use select::select_item_expr;
pub(crate) use subqueries::has_subquery;
pub(crate) use subqueries::names_a_collation;
pub use subqueries::{and_all, without_subquery_conjuncts};
pub(crate) use subqueries::{conjuncts, resolves_outside, subquery_conjuncts};

use ctes::inline_ctes;
use from::{expand_into, has_aliased_join, join_operators, join_sides, qualified};

use crate::catalog::{Catalog, SourceTable};
use crate::error::CoreError;
use crate::ir::OpNode;

/// Aggregates whose affected groups DIFFERENTIAL refresh can recompute.
pub const SUPPORTED_AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "variance",
    "var_samp",
    "var_pop",
    "stddev",
    "stddev_samp",
    "stddev_pop",
];

/// Aggregates PostgreSQL ships that the engine does not maintain (order- or
/// float-accumulation-sensitive); recognised so the reason names them.
const OTHER_AGGREGATES: &[&str] = &[
    "string_agg",
    "array_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "xmlagg",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "bit_and",
    "bit_or",
    "bit_xor",
    "range_agg",
    "range_intersect_agg",
];

/// SQL value functions that read the clock or the session: never maintained.
const SESSION_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_catalog",
    "current_schema",
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "random",
    "gen_random_uuid",
    "nextval",
    "currval",
];

/// Parse a defining query into one `Query`.
pub fn parse_query(sql: &str) -> Result<Query, CoreError> {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| CoreError::Syntax(e.to_string()))?;
    if stmts.len() != 1 {
        return Err(CoreError::NotASelect(format!(
            "found {} statements",
            stmts.len()
        )));
    }
    match stmts.pop() {
        Some(sqlparser::ast::Statement::Query(q)) => Ok(*q),
        Some(other) => Err(CoreError::NotASelect(
            other.to_string().chars().take(60).collect(),
        )),
        None => Err(CoreError::NotASelect("empty".into())),
    }
}

/// Fold an identifier the way PostgreSQL does: unquoted names are lower-cased.
pub fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn last_ident(name: &ObjectName) -> Option<Ident> {
    name.0.last().and_then(|p| p.as_ident()).cloned()
}

/// The relations and functions a query names, for the extension to resolve.
pub fn referenced_tables(sql: &str) -> Result<QueryRefs, CoreError> {
    let query = parse_query(sql)?;
    let mut tables = BTreeSet::new();
    let _ = sqlparser::ast::visit_relations(&query, |name| {
        tables.insert(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    let mut functions = BTreeSet::new();
    // Set-returning functions in FROM (`generate_series(...) g`); their
    // names also stand among the relations, where nothing resolves them.
    functions.extend(from_names(&query).functions);
    // INTERSECT ALL and EXCEPT ALL are maintained through row_number()
    // (see `numbered_set_operation`), whose facts analysis then asks for.
    let text = query.to_string();
    if text.contains("INTERSECT ALL") || text.contains("EXCEPT ALL") {
        functions.insert("row_number".to_string());
    }
    let _ = sqlparser::ast::visit_expressions(&query, |expr| {
        if let Expr::Function(f) = expr {
            if let Some(id) = last_ident(&f.name) {
                functions.insert(fold(&id));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(QueryRefs {
        tables: tables.into_iter().collect(),
        functions: functions.into_iter().collect(),
    })
}

/// How many arguments a function call passes (its overloads' volatility
/// may differ by arity: see [`crate::catalog::FunctionFacts`]).
pub(crate) fn arg_count(f: &sqlparser::ast::Function) -> usize {
    match &f.args {
        FunctionArguments::List(l) => l.args.len(),
        FunctionArguments::Subquery(_) => 1,
        FunctionArguments::None => 0,
    }
}

/// What the FROM clauses of a query (or block) name, at any depth: its
/// tables as written, and the set-returning functions it calls there,
/// lower-cased (`unnest` for `UNNEST(...)`).
#[derive(Default)]
struct FromNames {
    tables: Vec<String>,
    functions: BTreeSet<String>,
}

impl sqlparser::ast::Visitor for FromNames {
    type Break = ();
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name, args: None, ..
            } => self.tables.push(name.to_string()),
            TableFactor::Table { name, .. } | TableFactor::Function { name, .. } => {
                if let Some(id) = last_ident(name) {
                    self.functions.insert(fold(&id));
                }
            }
            TableFactor::UNNEST { .. } => {
                self.functions.insert("unnest".into());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn from_names(node: &impl sqlparser::ast::Visit) -> FromNames {
    let mut found = FromNames::default();
    let _ = node.visit(&mut found);
    found
}

/// Analyse a defining query against resolved catalog facts.
pub fn analyze(sql: &str, catalog: &Catalog) -> Result<Analysis, CoreError> {
    let mut query = parse_query(sql)?;
    let mut an = Analyzer {
        catalog,
        sources: Vec::new(),
        next_sub: 0,
        top: None,
        order: None,
    };
    let inline = inline_ctes(&mut query, &[]);
    let (tree, shape) = an.query(&mut query, true);
    let top = an.top.take();
    let model = match (inline, shape) {
        (Err(reason), _) => Err(reason),
        (Ok(()), Err(reason)) => Err(reason),
        // A UNION ALL whose branches are not all exact (a subquery in an
        // expression, an outer join), or that keeps its first rows only:
        // kept by its rows' values, as a bag over the union as one
        // subquery in FROM.
        (Ok(()), Ok(Shape::Rel(rel @ Rel::UnionAll(_)))) if rel.reached_only() || top.is_some() => {
            let id = an.next_sub;
            an.next_sub += 1;
            bag_over_union(rel, id, top)
        }
        // A block that keeps its first rows only: kept by its rows' values.
        (Ok(()), Ok(Shape::Rel(Rel::Block(block)))) if top.is_some() => {
            let keys = block.output_exprs();
            Ok(Model::Grouped {
                block,
                keys,
                bag: true,
                top,
            })
        }
        (Ok(()), Ok(Shape::Rel(rel))) => Ok(Model::Linear(rel)),
        (Ok(()), Ok(Shape::Grouped(block, keys, bag))) => Ok(Model::Grouped {
            block,
            keys,
            bag,
            top,
        }),
    };
    // The tree's first reason wins so explain and the verdict agree.
    let model = match (model, tree.first_reason()) {
        (Ok(_), Some(reason)) => Err(reason.to_string()),
        (m, _) => m,
    };
    let tree = match (&model, tree.first_reason()) {
        (Err(reason), None) => tree.unsupported(reason.clone()),
        _ => tree,
    };
    Ok(Analysis {
        sources: an.sources,
        tree,
        model,
        key_types: Vec::new(),
        aggregate_arg_types: Vec::new(),
        support_stored: false,
    })
}

/// The model of a union kept by its rows' values: a block reading the
/// union as one subquery in FROM (`__pgt_u`, columns named by position so
/// that repeated output names stay apart), keyed by every output. What
/// its changes may reach ([`Rel::reached_only`]) stands in for its delta.
fn bag_over_union(rel: Rel, id: usize, top: Option<TopK>) -> Result<Model, String> {
    let outputs = rel.outputs().to_vec();
    let columns: Vec<String> = (1..=outputs.len()).map(|i| format!("__pgt_c{i}")).collect();
    let items: Vec<String> = columns
        .iter()
        .zip(&outputs)
        .map(|(c, o)| format!("__pgt_u.{c} AS {}", crate::sql::quote_ident(o)))
        .collect();
    let sql = format!(
        "SELECT {} FROM ({}) AS __pgt_u({})",
        items.join(", "),
        rel.sql(),
        columns.join(", ")
    );
    let block = block_over(&sql, rel, id, columns, outputs, "a UNION ALL")?;
    let keys = block.output_exprs();
    Ok(Model::Grouped {
        block: Box::new(block),
        keys,
        bag: true,
        top,
    })
}

/// A top-level UNION, INTERSECT or EXCEPT (without ALL): one group per
/// distinct row of the branches, read as one UNION ALL subquery in FROM
/// whose rows carry the side they came from (`__pgt_side`: 1 left, 2
/// right); INTERSECT keeps the groups both sides reach, EXCEPT those only
/// the left one does. Equality is GROUP BY's, which is the set operation's.
fn set_operation(op: SetOperator, left: Rel, right: Rel, id: usize) -> Result<Shape, String> {
    // Each side keeps its own nesting: PostgreSQL resolves the column
    // types of set operations pair by pair, as written.
    fn with_side(rel: Rel, side: u8) -> Rel {
        match rel {
            Rel::Block(mut b) => {
                b.select.projection.push(SelectItem::ExprWithAlias {
                    expr: Expr::value(Value::Number(side.to_string(), false)),
                    alias: Ident::new("__pgt_side"),
                });
                b.outputs.push("__pgt_side".into());
                Rel::Block(b)
            }
            Rel::UnionAll(branches) => {
                Rel::UnionAll(branches.into_iter().map(|b| with_side(b, side)).collect())
            }
            Rel::Keyed(mut k) => {
                // A constant output: it changes neither the groups nor
                // which rows are distinct.
                k.block.select.projection.push(SelectItem::ExprWithAlias {
                    expr: Expr::value(Value::Number(side.to_string(), false)),
                    alias: Ident::new("__pgt_side"),
                });
                k.block.outputs.push("__pgt_side".into());
                Rel::Keyed(k)
            }
        }
    }
    let outputs = left.outputs().to_vec();
    let rel = Rel::UnionAll(vec![with_side(left, 1), with_side(right, 2)]);
    let columns: Vec<String> = (1..=outputs.len()).map(|i| format!("__pgt_c{i}")).collect();
    let keys: Vec<String> = columns.iter().map(|c| format!("__pgt_u.{c}")).collect();
    let items: Vec<String> = keys
        .iter()
        .zip(&outputs)
        .map(|(k, o)| format!("{k} AS {}", crate::sql::quote_ident(o)))
        .collect();
    let having = match op {
        SetOperator::Intersect => {
            " HAVING pg_catalog.min(__pgt_u.__pgt_side) = 1 AND pg_catalog.max(__pgt_u.__pgt_side) = 2"
        }
        SetOperator::Except => " HAVING pg_catalog.max(__pgt_u.__pgt_side) = 1",
        _ => "",
    };
    let mut all_columns = columns.clone();
    all_columns.push("__pgt_side".into());
    let sql = format!(
        "SELECT {} FROM ({}) AS __pgt_u({}) GROUP BY {}{having}",
        items.join(", "),
        rel.sql(),
        all_columns.join(", "),
        keys.join(", ")
    );
    let block = block_over(&sql, rel, id, all_columns, outputs, &op.to_string())?;
    let keys = block.output_exprs();
    Ok(Shape::Grouped(Box::new(block), keys, false))
}

/// `left INTERSECT ALL right` (or `EXCEPT ALL`) as a grouped query: the
/// rows of both sides, tagged with their side and combined by `UNION ALL`
/// (so that PostgreSQL resolves the column types as it does for the set
/// operation), are numbered among their equals on each side; a value with
/// `l` copies on the left and `r` on the right then has numbers `1..l` and
/// `1..r`, and grouping by value and number keeps `min(l, r)` of them
/// (`INTERSECT`: both sides) or `l - r` (`EXCEPT`: the left side only).
/// `names` are the outputs the result exposes (the left side's). `None`
/// when a side has a leaf the tag cannot be added to.
fn numbered_set_operation(
    op: SetOperator,
    left: &SetExpr,
    right: &SetExpr,
    names: &[String],
) -> Option<String> {
    fn tagged(side: &SetExpr, tag: u8) -> Option<SetExpr> {
        let mut side = side.clone();
        tag_leaves(&mut side, tag).then_some(side)
    }
    fn tag_leaves(e: &mut SetExpr, tag: u8) -> bool {
        let value = || Expr::value(Value::Number(tag.to_string(), false));
        match e {
            SetExpr::Select(s) => {
                s.projection.push(SelectItem::ExprWithAlias {
                    expr: value(),
                    alias: Ident::new("__pgt_side"),
                });
                true
            }
            SetExpr::Query(q) => tag_leaves(&mut q.body, tag),
            SetExpr::SetOperation { left, right, .. } => {
                tag_leaves(left, tag) && tag_leaves(right, tag)
            }
            SetExpr::Values(v) => {
                for row in &mut v.rows {
                    row.content.push(value());
                }
                true
            }
            _ => false,
        }
    }
    let (l, r) = (tagged(left, 1)?, tagged(right, 2)?);
    let columns: Vec<String> = (1..=names.len()).map(|i| format!("__pgt_c{i}")).collect();
    let of =
        |alias: &str| -> Vec<String> { columns.iter().map(|c| format!("{alias}.{c}")).collect() };
    let items: Vec<String> = of("__pgt_x")
        .iter()
        .zip(names)
        .map(|(c, n)| format!("{c} AS {}", crate::sql::quote_ident(n)))
        .collect();
    let having = match op {
        SetOperator::Intersect => {
            "pg_catalog.min(__pgt_x.__pgt_side) = 1 AND pg_catalog.max(__pgt_x.__pgt_side) = 2"
        }
        _ => "pg_catalog.max(__pgt_x.__pgt_side) = 1",
    };
    Some(format!(
        "SELECT {} FROM (SELECT {}, __pgt_t.__pgt_side, pg_catalog.row_number() OVER \
         (PARTITION BY {}, __pgt_t.__pgt_side) AS __pgt_n FROM (({l}) UNION ALL ({r})) \
         AS __pgt_t({}, __pgt_side)) AS __pgt_x GROUP BY {}, __pgt_x.__pgt_n HAVING {having}",
        items.join(", "),
        of("__pgt_t").join(", "),
        of("__pgt_t").join(", "),
        columns.join(", "),
        of("__pgt_x").join(", "),
    ))
}

/// The most INTERSECT ALL / EXCEPT ALL one query may chain or nest (each
/// level analyses the one below it again).
const MAX_CHAINED_ALL: usize = 4;

/// The block `sql` (printed by analysis) reading `rel` as its one
/// subquery in FROM, `__pgt_u` with `columns`; `what` names `rel` in the
/// reason when the text does not parse back.
fn block_over(
    sql: &str,
    rel: Rel,
    id: usize,
    columns: Vec<String>,
    outputs: Vec<String>,
    what: &str,
) -> Result<Block, String> {
    let unparsed = || format!("{what} whose text does not parse back");
    let query = parse_query(sql).map_err(|_| unparsed())?;
    let SetExpr::Select(select) = *query.body else {
        return Err(unparsed());
    };
    Ok(Block {
        select: *select,
        occs: vec![Occ::Sub {
            id,
            rel: Box::new(rel),
            columns: columns.clone(),
        }],
        outputs,
        scope: vec![("__pgt_u".to_string(), columns)],
        subs: Vec::new(),
        outer: Vec::new(),
        order: None,
    })
}

/// Where a SELECT block sits, which decides what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// The defining query itself (or its top set operation's operand).
    Top,
    /// A subquery in FROM or a UNION ALL branch: linear only.
    Nested,
    /// A subquery in an expression: recomputed as written wherever its
    /// links reach, so it may group, aggregate and nest subqueries.
    Body,
}

enum Shape {
    Rel(Rel),
    /// A block recomputed by keys; `true` when it is not grouped (its
    /// outputs are the keys and it keeps duplicates).
    Grouped(Box<Block>, Vec<Expr>, bool),
}

struct Analyzer<'a> {
    catalog: &'a Catalog,
    sources: Vec<SourceTable>,
    next_sub: usize,
    /// The defining query's `ORDER BY ... LIMIT`, once found.
    top: Option<TopK>,
    /// The defining query's ORDER BY, for its block when that is
    /// `SELECT DISTINCT ON`.
    order: Option<String>,
}

/// How many output columns a shape has.
fn shape_width(shape: &Shape) -> usize {
    match shape {
        Shape::Rel(rel) => rel.outputs().len(),
        Shape::Grouped(b, ..) => b.outputs.len(),
    }
}

/// Facts about one FROM occurrence gathered while walking it.
struct OccFacts {
    alias: String,
    columns: Vec<String>,
    occ: Occ,
    node: OpNode,
}

impl<'a> Analyzer<'a> {
    fn query(&mut self, query: &mut Query, top: bool) -> (OpNode, Result<Shape, String>) {
        let mut problems = Vec::new();
        // Only the defining query itself may keep its first rows.
        let written = match top_k::Written::of(query) {
            Ok(Some(_)) if !top => {
                problems.push(
                    "LIMIT / OFFSET / FETCH inside a subquery in FROM or a UNION ALL branch"
                        .to_string(),
                );
                None
            }
            Ok(w) => w,
            Err(p) => {
                problems.push(p);
                None
            }
        };
        if !query.locks.is_empty() {
            problems.push("FOR UPDATE / FOR SHARE".to_string());
        }
        // Without LIMIT, ORDER BY has no meaning for a stored table and is
        // ignored, but for DISTINCT ON it picks the row each key keeps.
        let distinct_on = matches!(query.body.as_ref(), SetExpr::Select(s) if matches!(s.distinct, Some(Distinct::On(_))));
        if distinct_on && top && written.is_none() {
            // The ORDER BY is evaluated with the query when it recomputes
            // a key: what it may hold is what an output may.
            problems.extend(self.unrecomputable(
                &query.order_by,
                "in the ORDER BY of DISTINCT ON",
                false,
            ));
            self.order = query.order_by.as_ref().and_then(|o| match &o.kind {
                sqlparser::ast::OrderByKind::Expressions(items) if !items.is_empty() => Some(
                    items
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                _ => None,
            });
        }
        let (mut node, shape) = self.set_expr(&mut query.body, top);
        if let (Some(written), Ok(shape)) = (written, &shape) {
            match written.resolve(shape) {
                Err(p) => problems.push(p),
                Ok(_) if self.top.is_some() => {
                    problems.push("LIMIT on a query that is limited already".to_string())
                }
                Ok(t) => {
                    let names: Vec<String> =
                        (1..=shape_width(shape)).map(|i| i.to_string()).collect();
                    let detail = format!(
                        "ORDER BY {} LIMIT {} OFFSET {}: the first rows, ties at the last one in any order",
                        t.order_by(&names),
                        t.limit,
                        t.offset
                    );
                    node = OpNode::new("TopK", detail, vec![node]);
                    self.top = Some(t);
                }
            }
        }
        match problems.into_iter().next() {
            Some(p) => {
                let op = if p.starts_with("FOR ") {
                    "LockRows"
                } else {
                    "Limit"
                };
                (
                    OpNode::new(op, p.clone(), vec![node]).unsupported(p.clone()),
                    Err(p),
                )
            }
            None => (node, shape),
        }
    }

    fn set_expr(&mut self, body: &mut SetExpr, top: bool) -> (OpNode, Result<Shape, String>) {
        match body {
            SetExpr::Select(select) if grouping_sets::has_grouping_sets(select) => {
                // One grouped query per set, as a UNION ALL.
                let label = "GROUPING SETS / ROLLUP / CUBE";
                let rewritten = grouping_sets::as_union(select)
                    .and_then(|text| parse_query(&text).map_err(|e| format!("{label}: {e}")));
                match rewritten {
                    Ok(mut q) => {
                        let (child, shape) = self.set_expr(&mut q.body, top);
                        (
                            OpNode::new(
                                "GroupingSets",
                                "one grouped query per set, as a UNION ALL",
                                vec![child],
                            ),
                            shape,
                        )
                    }
                    Err(reason) => (
                        OpNode::new("GroupingSets", label, vec![]).unsupported(reason.clone()),
                        Err(reason),
                    ),
                }
            }
            SetExpr::Select(select) => self.block(select, if top { Ctx::Top } else { Ctx::Nested }),
            SetExpr::Query(q) => self.query(q, top),
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                // INTERSECT ALL / EXCEPT ALL analyse their sides again
                // inside their rewrite: bounded before anything is analysed.
                let text = format!("{left} {right}");
                let chained =
                    text.matches("INTERSECT ALL").count() + text.matches("EXCEPT ALL").count();
                if chained >= MAX_CHAINED_ALL {
                    let reason = format!(
                        "more than {MAX_CHAINED_ALL} INTERSECT ALL / EXCEPT ALL in one query"
                    );
                    return (
                        OpNode::new("SetOp", format!("{op} {set_quantifier}"), vec![])
                            .unsupported(reason.clone()),
                        Err(reason),
                    );
                }
                let (ln, ls) = self.set_expr(left, false);
                let (rn, rs) = self.set_expr(right, false);
                let is_union_all =
                    *op == SetOperator::Union && *set_quantifier == SetQuantifier::All;
                let label = format!("{op} {set_quantifier}").trim().to_string();
                let distinct = matches!(
                    set_quantifier,
                    SetQuantifier::None | SetQuantifier::Distinct
                );
                let kind = match op {
                    SetOperator::Union | SetOperator::Intersect | SetOperator::Except => Some(*op),
                    _ => None,
                };
                let all_of = matches!(op, SetOperator::Intersect | SetOperator::Except)
                    && *set_quantifier == SetQuantifier::All;
                if all_of {
                    let (node, shape) = match (&ls, &rs) {
                        (Ok(l), Ok(_)) => {
                            let names = match l {
                                Shape::Rel(rel) => rel.outputs().to_vec(),
                                Shape::Grouped(b, ..) => b.outputs.clone(),
                            };
                            let rewritten = numbered_set_operation(*op, left, right, &names);
                            match rewritten.as_deref().map(parse_query) {
                                Some(Ok(mut q)) => self.set_expr(&mut q.body, top),
                                _ => {
                                    let reason = format!(
                                        "{label} whose sides cannot be tagged (a side other than SELECT or VALUES)"
                                    );
                                    (OpNode::new("SetOp", label.clone(), vec![]), Err(reason))
                                }
                            }
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            (OpNode::new("SetOp", label.clone(), vec![]), Err(e.clone()))
                        }
                    };
                    let node = OpNode::new(
                        "SetOp",
                        format!("{label}: each side's equal rows numbered, kept as {op} of those"),
                        vec![ln, rn, node],
                    );
                    return (node, shape);
                }
                if let (true, Some(kind)) = (distinct, kind.filter(|_| !is_union_all)) {
                    let node = OpNode::new(
                        "SetOp",
                        format!("{label}: kept by its rows' values, as groups"),
                        vec![ln, rn],
                    );
                    let sides = ls
                        .and_then(|l| self.nested_rel(l))
                        .and_then(|l| Ok((l, rs.and_then(|r| self.nested_rel(r))?)));
                    let shape = sides.and_then(|(l, r)| {
                        let id = self.next_sub;
                        self.next_sub += 1;
                        set_operation(kind, l, r, id)
                    });
                    return (node, shape);
                }
                if !is_union_all {
                    let reason = format!(
                        "{label} (UNION, INTERSECT and EXCEPT are maintained, with and without ALL)"
                    );
                    return (
                        OpNode::new("SetOp", label, vec![ln, rn]).unsupported(reason.clone()),
                        Err(reason),
                    );
                }
                let node = OpNode::new("UnionAll", "", vec![ln, rn]);
                let sides = ls
                    .and_then(|l| self.nested_rel(l))
                    .and_then(|l| Ok((l, rs.and_then(|r| self.nested_rel(r))?)));
                let shape = sides.map(|(l, r)| {
                    let mut branches = Vec::new();
                    for rel in [l, r] {
                        match rel {
                            Rel::UnionAll(inner) => branches.extend(inner),
                            other => branches.push(other),
                        }
                    }
                    Shape::Rel(Rel::UnionAll(branches))
                });
                (node, shape)
            }
            SetExpr::Values(values) => {
                // Constant rows: the same as reading them in FROM.
                let width = values.rows.first().map_or(0, |r| r.content.len());
                let columns: Vec<String> = (1..=width).map(|i| format!("column{i}")).collect();
                let text = format!("SELECT * FROM ({body}) AS __pgt_v({})", columns.join(", "));
                match parse_query(&text) {
                    Ok(mut q) => self.set_expr(&mut q.body, top),
                    Err(_) => {
                        let reason = "VALUES whose text does not parse back".to_string();
                        (
                            OpNode::new("Values", "", vec![]).unsupported(reason.clone()),
                            Err(reason),
                        )
                    }
                }
            }
            other => {
                let reason = format!(
                    "{} as a query body",
                    other.to_string().chars().take(30).collect::<String>()
                );
                (
                    OpNode::new("Values", "", vec![]).unsupported(reason.clone()),
                    Err(reason),
                )
            }
        }
    }
}
