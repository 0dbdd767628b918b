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
mod select;
mod subqueries;
mod top_k;

pub use crate::model::{
    Analysis, Block, ExprSub, KeyType, Model, Occ, OrderItem, OuterJoin, QueryRefs, Rel, SubLink,
    TopK,
};
pub use from::{alias_of, for_each_factor_mut, for_each_join_mut};
pub use select::output_name;
pub use subqueries::{and_all, without_subquery_conjuncts};

use ctes::inline_ctes;
use from::{expand_into, has_aliased_join, join_operators, join_sides, qualified};

use crate::catalog::{Catalog, SourceTable};
use crate::error::CoreError;
use crate::ir::OpNode;

/// Aggregates whose affected groups DIFFERENTIAL refresh can recompute.
pub const SUPPORTED_AGGREGATES: &[&str] = &[
    "count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every",
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
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
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

/// Analyse a defining query against resolved catalog facts.
pub fn analyze(sql: &str, catalog: &Catalog) -> Result<Analysis, CoreError> {
    let mut query = parse_query(sql)?;
    let mut an = Analyzer {
        catalog,
        sources: Vec::new(),
        next_sub: 0,
        top: None,
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
        // ignored.
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
            SetExpr::Select(select) => self.block(select, if top { Ctx::Top } else { Ctx::Nested }),
            SetExpr::Query(q) => self.query(q, top),
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
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
                if let (true, true, Some(kind)) = (top, distinct, kind.filter(|_| !is_union_all)) {
                    let node = OpNode::new(
                        "SetOp",
                        format!("{label}: kept by its rows' values, as groups"),
                        vec![ln, rn],
                    );
                    let shape = match (ls, rs) {
                        (Ok(Shape::Rel(l)), Ok(Shape::Rel(r))) => {
                            let id = self.next_sub;
                            self.next_sub += 1;
                            set_operation(kind, l, r, id)
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                        _ => Err(format!("aggregate inside {label}")),
                    };
                    return (node, shape);
                }
                if !is_union_all {
                    let reason = if kind.is_some() && distinct {
                        format!("{label} inside a subquery or another set operation")
                    } else {
                        format!(
                            "{label} (UNION, INTERSECT and EXCEPT are maintained, and UNION ALL)"
                        )
                    };
                    return (
                        OpNode::new("SetOp", label, vec![ln, rn]).unsupported(reason.clone()),
                        Err(reason),
                    );
                }
                let node = OpNode::new("UnionAll", "", vec![ln, rn]);
                let shape = match (ls, rs) {
                    (Ok(Shape::Rel(l)), Ok(Shape::Rel(r))) => {
                        let mut branches = Vec::new();
                        for rel in [l, r] {
                            match rel {
                                Rel::UnionAll(inner) => branches.extend(inner),
                                other => branches.push(other),
                            }
                        }
                        Ok(Shape::Rel(Rel::UnionAll(branches)))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    _ => Err("aggregate inside UNION ALL".into()),
                };
                (node, shape)
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
