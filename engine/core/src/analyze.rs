//! Query analysis: from a defining query's text to the model that delta-SQL
//! generation works on, plus the operator tree and the DIFFERENTIAL verdict.
//!
//! PostgreSQL has already validated the query before the core sees it (the
//! extension prepares it first), so analysis never guesses types or checks
//! names against the server; it decides *shape*: which operators the query
//! uses and whether each has a delta rule. Anything outside the supported
//! grammar yields a reason string, never a wrong plan.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, FunctionArguments, GroupByExpr, Ident, InTarget, JoinConstraint, JoinOperator,
    ObjectName, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, SetOperator,
    SetQuantifier, TableAlias, TableAliasColumnDef, TableFactor, TableInheritance, TableWithJoins,
    Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

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

/// Names the defining query refers to, for the extension to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRefs {
    /// Relation names exactly as written (CTE names included; they simply do not resolve).
    pub tables: Vec<String>,
    /// Called function names, lower-cased and unqualified.
    pub functions: Vec<String>,
}

/// A linear (select / project / join / UNION ALL) relational expression.
#[derive(Debug, Clone)]
pub enum Rel {
    /// One SELECT block without aggregation.
    Block(Box<Block>),
    /// UNION ALL of branches with positionally matching columns.
    UnionAll(Vec<Rel>),
}

impl Rel {
    /// Output column names (the first branch's, for UNION ALL).
    pub fn outputs(&self) -> &[String] {
        match self {
            Rel::Block(b) => &b.outputs,
            Rel::UnionAll(branches) => branches[0].outputs(),
        }
    }
}

/// One SELECT block after CTE inlining and wildcard expansion.
#[derive(Debug, Clone)]
pub struct Block {
    /// The block, rewritten: wildcards expanded, CTE references inlined.
    pub select: Select,
    /// FROM occurrences in canonical (left-to-right leaf) order.
    pub occs: Vec<Occ>,
    /// Output column names.
    pub outputs: Vec<String>,
}

/// One relation occurrence in a FROM clause.
#[derive(Debug, Clone)]
pub enum Occ {
    /// A base table (index into [`Analysis::sources`]).
    Source {
        /// Index into the analysis' sources.
        source: usize,
    },
    /// A subquery in FROM whose own delta is linear.
    Sub {
        /// Unique id used to name its generated CTEs.
        id: usize,
        /// The subquery.
        rel: Box<Rel>,
        /// Column names the occurrence exposes (alias column list, else the subquery's outputs).
        columns: Vec<String>,
    },
}

/// What DIFFERENTIAL refresh maintains.
#[derive(Debug, Clone)]
pub enum Model {
    /// A bag of rows: deltas are netted per row and applied as deletes and inserts.
    Linear(Rel),
    /// GROUP BY / DISTINCT / scalar aggregate on top of a linear input: the
    /// groups a delta touches are recomputed and replaced.
    Grouped {
        /// The top block (its FROM/WHERE is linear).
        block: Box<Block>,
        /// Group key expressions (empty for a scalar aggregate).
        keys: Vec<Expr>,
    },
}

/// The result of analysing a defining query.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Distinct relations the query reads, in first-use order.
    pub sources: Vec<SourceTable>,
    /// The operator tree for explain.
    pub tree: OpNode,
    /// The differential model, or the reason DIFFERENTIAL is impossible.
    pub model: Result<Model, String>,
    /// For a grouped model, what the extension learned of each group key's
    /// type (see `probes`); empty means every key is a hashable scalar.
    pub key_types: Vec<KeyType>,
}

/// What the SQL generator needs to know about a group key's type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyType {
    /// How the key enters a group's identity hash.
    pub identity: crate::catalog::ColumnIdentity,
    /// The key is an array (or a domain over one): `= ANY (ARRAY(...))`
    /// would compare it with its elements.
    pub array: bool,
}

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
    };
    let inline = inline_ctes(&mut query, &[]);
    let (tree, shape) = an.query(&mut query, true);
    let model = match (inline, shape) {
        (Err(reason), _) => Err(reason),
        (Ok(()), Err(reason)) => Err(reason),
        (Ok(()), Ok(Shape::Rel(rel))) => Ok(Model::Linear(rel)),
        (Ok(()), Ok(Shape::Grouped(block, keys))) => Ok(Model::Grouped { block, keys }),
    };
    // The tree's first reason wins so explain and the verdict agree.
    let model = match (model, tree.first_reason()) {
        (Ok(_), Some(reason)) => Err(reason.to_string()),
        (m, _) => m,
    };
    Ok(Analysis {
        sources: an.sources,
        tree,
        model,
        key_types: Vec::new(),
    })
}

enum Shape {
    Rel(Rel),
    Grouped(Box<Block>, Vec<Expr>),
}

struct Analyzer<'a> {
    catalog: &'a Catalog,
    sources: Vec<SourceTable>,
    next_sub: usize,
}

/// Visit every leaf table factor of a FROM clause in canonical order.
pub fn for_each_factor_mut(from: &mut [TableWithJoins], f: &mut dyn FnMut(&mut TableFactor)) {
    fn visit(factor: &mut TableFactor, f: &mut dyn FnMut(&mut TableFactor)) {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = factor
        {
            for_each_factor_mut(std::slice::from_mut(table_with_joins.as_mut()), f);
        } else {
            f(factor);
        }
    }
    for twj in from {
        visit(&mut twj.relation, f);
        for join in &mut twj.joins {
            visit(&mut join.relation, f);
        }
    }
}

fn join_operators(from: &[TableWithJoins], out: &mut Vec<JoinOperator>) {
    for twj in from {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = &twj.relation
        {
            join_operators(std::slice::from_ref(table_with_joins.as_ref()), out);
        }
        for join in &twj.joins {
            if let TableFactor::NestedJoin {
                table_with_joins, ..
            } = &join.relation
            {
                join_operators(std::slice::from_ref(table_with_joins.as_ref()), out);
            }
            out.push(join.join_operator.clone());
        }
    }
}

/// Replace references to CTEs by the CTE bodies as subqueries in FROM.
fn inline_ctes(query: &mut Query, outer: &[(String, TableAlias, Query)]) -> Result<(), String> {
    let mut scope: Vec<(String, TableAlias, Query)> = outer.to_vec();
    if let Some(with) = query.with.take() {
        if with.recursive {
            return Err("WITH RECURSIVE".into());
        }
        for cte in with.cte_tables {
            let mut body = *cte.query;
            inline_ctes(&mut body, &scope)?;
            scope.push((fold(&cte.alias.name), cte.alias.clone(), body));
        }
    }
    inline_set_expr(&mut query.body, &scope)
}

fn inline_set_expr(
    body: &mut SetExpr,
    scope: &[(String, TableAlias, Query)],
) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            let mut result = Ok(());
            for_each_factor_mut(&mut select.from, &mut |factor| {
                if result.is_err() {
                    return;
                }
                match factor {
                    TableFactor::Table {
                        name,
                        alias,
                        args: None,
                        ..
                    } if name.0.len() == 1 => {
                        let written = last_ident(name).map(|i| fold(&i)).unwrap_or_default();
                        if let Some((_, cte_alias, body)) =
                            scope.iter().rev().find(|(n, _, _)| *n == written)
                        {
                            let mut new_alias = alias.clone().unwrap_or_else(|| cte_alias.clone());
                            if new_alias.columns.is_empty() {
                                new_alias.columns = cte_alias.columns.clone();
                            }
                            *factor = TableFactor::Derived {
                                lateral: false,
                                subquery: Box::new(body.clone()),
                                alias: Some(new_alias),
                                sample: None,
                            };
                        }
                    }
                    TableFactor::Derived { subquery, .. } => {
                        result = inline_ctes(subquery, scope);
                    }
                    _ => {}
                }
            });
            result
        }
        SetExpr::Query(q) => inline_ctes(q, scope),
        SetExpr::SetOperation { left, right, .. } => {
            inline_set_expr(left, scope)?;
            inline_set_expr(right, scope)
        }
        _ => Ok(()),
    }
}

/// The output column name PostgreSQL gives a select item.
pub fn output_name(item: &SelectItem) -> String {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => fold(alias),
        SelectItem::UnnamedExpr(expr) => expr_name(expr),
        _ => "?column?".into(),
    }
}

fn expr_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(i) => fold(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(fold).unwrap_or_default(),
        Expr::Function(f) => last_ident(&f.name).map(|i| fold(&i)).unwrap_or_default(),
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Function(_) => {
                expr_name(expr)
            }
            _ => "?column?".into(),
        },
        Expr::Nested(inner) => expr_name(inner),
        Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

fn select_item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
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
        if query.limit_clause.is_some() || query.fetch.is_some() {
            problems.push("LIMIT / OFFSET / FETCH".to_string());
        }
        if !query.locks.is_empty() {
            problems.push("FOR UPDATE / FOR SHARE".to_string());
        }
        // ORDER BY has no meaning for a stored table and is ignored.
        let (node, shape) = self.set_expr(&mut query.body, top);
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
            SetExpr::Select(select) => self.block(select, top),
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
                if !is_union_all {
                    let reason = format!("{label} (only UNION ALL is maintained)");
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

    fn occurrence(&mut self, factor: &TableFactor) -> Result<OccFacts, Box<(OpNode, String)>> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                sample: None,
                inheritance,
                ..
            } => {
                let written = name.to_string();
                if matches!(inheritance, Some(TableInheritance::Only { .. })) {
                    let reason = format!(
                        "FROM ONLY {written} (the rows of one table of an inheritance tree)"
                    );
                    return Err(Box::new((
                        OpNode::new("Scan", format!("ONLY {written}"), vec![]),
                        reason,
                    )));
                }
                let alias_name = alias
                    .as_ref()
                    .map(|a| fold(&a.name))
                    .or_else(|| last_ident(name).map(|i| fold(&i)))
                    .unwrap_or_default();
                let Some(table) = self.catalog.get(&written).cloned() else {
                    let reason = format!("relation {written} could not be resolved");
                    return Err(Box::new((OpNode::new("Scan", written, vec![]), reason)));
                };
                let detail = if alias_name == table.name {
                    table.qualified()
                } else {
                    format!("{} AS {}", table.qualified(), alias_name)
                };
                let node = OpNode::new("Scan", detail, vec![]);
                if !table.kind.capturable() {
                    let reason = format!(
                        "source {} is {}, whose changes cannot be captured",
                        table.qualified(),
                        table.kind.described()
                    );
                    self.source_index(&table);
                    return Err(Box::new((node, reason)));
                }
                if let Some(problem) = &table.capture_problem {
                    let reason = format!(
                        "source {} cannot be captured exactly: {problem}",
                        table.qualified()
                    );
                    self.source_index(&table);
                    return Err(Box::new((node, reason)));
                }
                let source = self.source_index(&table);
                Ok(OccFacts {
                    alias: alias_name,
                    columns: table.columns.clone(),
                    occ: Occ::Source { source },
                    node,
                })
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                ..
            } => {
                let mut subquery = subquery.as_ref().clone();
                let (child, shape) = self.query(&mut subquery, false);
                let alias_name = alias.as_ref().map(|a| fold(&a.name));
                let node = OpNode::new(
                    "Subquery",
                    alias_name.clone().unwrap_or_default(),
                    vec![child],
                );
                if *lateral {
                    return Err(Box::new((node, "LATERAL subquery".into())));
                }
                let rel = match shape {
                    Ok(Shape::Rel(rel)) => rel,
                    Ok(Shape::Grouped(..)) => {
                        return Err(Box::new((
                            node,
                            "aggregate or DISTINCT inside a subquery in FROM".into(),
                        )))
                    }
                    Err(e) => return Err(Box::new((node, e))),
                };
                let id = self.next_sub;
                self.next_sub += 1;
                let columns = match alias.as_ref() {
                    Some(a) if !a.columns.is_empty() => {
                        a.columns.iter().map(|c| fold(&c.name)).collect()
                    }
                    _ => rel.outputs().to_vec(),
                };
                Ok(OccFacts {
                    alias: alias_name.unwrap_or_else(|| format!("__pgt_sub{id}")),
                    columns: columns.clone(),
                    occ: Occ::Sub {
                        id,
                        rel: Box::new(rel),
                        columns,
                    },
                    node,
                })
            }
            TableFactor::Table { name, .. } => {
                let reason = format!("table function or sampled relation {name} in FROM");
                Err(Box::new((
                    OpNode::new("FunctionScan", name.to_string(), vec![]),
                    reason,
                )))
            }
            other => {
                let text: String = other.to_string().chars().take(40).collect();
                Err(Box::new((
                    OpNode::new("Other", text.clone(), vec![]),
                    format!("FROM item {text}"),
                )))
            }
        }
    }

    fn source_index(&mut self, table: &SourceTable) -> usize {
        if let Some(i) = self.sources.iter().position(|s| s.oid == table.oid) {
            return i;
        }
        self.sources.push(table.clone());
        self.sources.len() - 1
    }

    fn block(&mut self, select: &mut Select, top: bool) -> (OpNode, Result<Shape, String>) {
        let mut reasons: Vec<String> = Vec::new();

        // FROM: occurrences and join operators.
        let mut facts = Vec::new();
        let mut children = Vec::new();
        let mut factors = Vec::new();
        for_each_factor_mut(&mut select.from, &mut |f| factors.push(f.clone()));
        for factor in &factors {
            match self.occurrence(factor) {
                Ok(f) => {
                    children.push(f.node.clone());
                    facts.push(f);
                }
                Err(failed) => {
                    let (node, reason) = *failed;
                    children.push(node.unsupported(reason.clone()));
                    reasons.push(reason);
                }
            }
        }
        let mut ops = Vec::new();
        join_operators(&select.from, &mut ops);
        let mut has_using = false;
        let mut join_conditions = Vec::new();
        for op in &ops {
            let constraint = match op {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => c,
                JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => {
                    reasons.push("LEFT JOIN".into());
                    continue;
                }
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => {
                    reasons.push("RIGHT JOIN".into());
                    continue;
                }
                JoinOperator::FullOuter(_) => {
                    reasons.push("FULL JOIN".into());
                    continue;
                }
                other => {
                    reasons.push(format!("join operator {other:?}"));
                    continue;
                }
            };
            match constraint {
                JoinConstraint::On(e) => join_conditions.push(e.to_string()),
                JoinConstraint::Using(cols) => {
                    has_using = true;
                    join_conditions.push(format!(
                        "USING ({})",
                        cols.iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                JoinConstraint::Natural => {
                    has_using = true;
                    join_conditions.push("NATURAL".into());
                }
                _ => {}
            }
        }

        // Projection: expand wildcards so every branch and delta term lists its columns.
        let mut projection = Vec::new();
        for item in select.projection.drain(..) {
            match &item {
                SelectItem::Wildcard(_) => {
                    if has_using {
                        reasons.push("SELECT * with JOIN USING / NATURAL".into());
                    }
                    for f in &facts {
                        expand_into(&mut projection, &f.alias, &f.columns);
                    }
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => {
                    let wanted = last_ident(name).map(|i| fold(&i)).unwrap_or_default();
                    match facts.iter().find(|f| f.alias == wanted) {
                        Some(f) => expand_into(&mut projection, &f.alias, &f.columns),
                        None => reasons.push(format!("{name}.* could not be expanded")),
                    }
                }
                SelectItem::QualifiedWildcard(..) => reasons.push("expression.* in SELECT".into()),
                _ => projection.push(item),
            }
        }
        select.projection = projection;
        let outputs: Vec<String> = select.projection.iter().map(output_name).collect();

        // Clauses outside the grammar.
        if select.top.is_some()
            || select.into.is_some()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
            || !select.named_window.is_empty()
            || select.qualify.is_some()
        {
            reasons.push("a SELECT clause outside the supported grammar".into());
        }

        // Expressions: functions, subqueries, aggregates.
        let mut has_agg = false;
        let mut aggs = Vec::new();
        {
            let mut check = |expr: &Expr, in_where: bool| {
                let _ = sqlparser::ast::visit_expressions(expr, |e| {
                    match e {
                        Expr::Subquery(_)
                        | Expr::Exists { .. }
                        | Expr::In {
                            target: InTarget::Subquery(_) | InTarget::Table { .. },
                            ..
                        } => {
                            reasons.push(
                                "subquery in an expression (EXISTS / IN / scalar subquery)".into(),
                            );
                        }
                        Expr::Function(f) => {
                            let name = last_ident(&f.name).map(|i| fold(&i)).unwrap_or_default();
                            let facts = self.catalog.function(&name);
                            let is_agg = facts.aggregate
                                || SUPPORTED_AGGREGATES.contains(&name.as_str())
                                || OTHER_AGGREGATES.contains(&name.as_str());
                            if f.over.is_some() || facts.window && !is_agg {
                                reasons.push(format!("window function {name}"));
                            } else if is_agg && f.over.is_none() {
                                has_agg = true;
                                aggs.push(e.to_string());
                                if in_where {
                                    reasons.push(format!("aggregate {name} in WHERE"));
                                }
                                if !SUPPORTED_AGGREGATES.contains(&name.as_str()) {
                                    reasons.push(format!("aggregate {name}"));
                                }
                                let ordered = !f.within_group.is_empty()
                                    || matches!(&f.args, FunctionArguments::List(l) if !l.clauses.is_empty());
                                if ordered {
                                    reasons.push(format!("ordered aggregate {name}"));
                                }
                            } else if SESSION_FUNCTIONS.contains(&name.as_str()) || !facts.immutable
                            {
                                reasons.push(format!(
                                    "function {name}, which is not IMMUTABLE (its result can change without a change to the data)"
                                ));
                            }
                        }
                        _ => {}
                    }
                    ControlFlow::<()>::Continue(())
                });
            };
            for item in &select.projection {
                if let Some(e) = select_item_expr(item) {
                    check(e, false);
                }
            }
            if let Some(w) = &select.selection {
                check(w, true);
            }
            for twj in &select.from {
                for join in &twj.joins {
                    if let JoinOperator::Join(JoinConstraint::On(e))
                    | JoinOperator::Inner(JoinConstraint::On(e)) = &join.join_operator
                    {
                        check(e, true);
                    }
                }
            }
            if let Some(h) = &select.having {
                check(h, false);
            }
        }

        // Grouping.
        let group_exprs: Vec<Expr> = match &select.group_by {
            GroupByExpr::All(_) => {
                reasons.push("GROUP BY ALL".into());
                vec![]
            }
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    reasons.push("GROUP BY modifiers (ROLLUP / CUBE)".into());
                }
                for e in exprs {
                    if matches!(e, Expr::GroupingSets(_) | Expr::Rollup(_) | Expr::Cube(_)) {
                        reasons.push("GROUPING SETS / ROLLUP / CUBE".into());
                    }
                }
                exprs.clone()
            }
        };
        let distinct = match &select.distinct {
            None | Some(Distinct::All) => false,
            Some(Distinct::Distinct) => true,
            Some(Distinct::On(_)) => {
                reasons.push("DISTINCT ON".into());
                true
            }
        };
        let grouped = has_agg || !group_exprs.is_empty() || select.having.is_some();
        if (grouped || distinct) && !top {
            reasons.push("aggregate or DISTINCT inside a subquery or UNION ALL branch".into());
        }
        if grouped && distinct {
            reasons.push("DISTINCT combined with GROUP BY or aggregates".into());
        }

        // The operator tree, bottom-up.
        let mut node = if children.len() == 1 {
            children.pop().expect("one child")
        } else if children.is_empty() {
            OpNode::new("Result", "no FROM", vec![])
        } else {
            OpNode::new("InnerJoin", join_conditions.join(" AND "), children)
        };
        if facts.is_empty() && reasons.is_empty() {
            reasons.push("a query without a FROM relation".into());
        }
        if let Some(w) = &select.selection {
            node = OpNode::new("Filter", w.to_string(), vec![node]);
        }
        let keys = resolve_group_keys(&group_exprs, &select.projection, &facts);
        if grouped {
            let detail = format!(
                "keys: [{}] aggregates: [{}]",
                keys.iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                aggs.join(", ")
            );
            node = OpNode::new("Aggregate", detail, vec![node]);
            if let Some(h) = &select.having {
                node = OpNode::new("Filter", format!("HAVING {h}"), vec![node]);
            }
        }
        let proj_detail = outputs.join(", ");
        node = OpNode::new("Project", proj_detail, vec![node]);
        if distinct {
            node = OpNode::new("Distinct", "", vec![node]);
        }
        if let Some(reason) = reasons.first() {
            node = node.unsupported(reason.clone());
        }
        if !reasons.is_empty() {
            return (node, Err(reasons.remove(0)));
        }

        let block = Block {
            select: select.clone(),
            occs: facts.into_iter().map(|f| f.occ).collect(),
            outputs,
        };
        let shape = if grouped {
            Shape::Grouped(Box::new(block), keys)
        } else if distinct {
            let keys = block
                .select
                .projection
                .iter()
                .filter_map(select_item_expr)
                .cloned()
                .collect();
            Shape::Grouped(Box::new(block), keys)
        } else {
            Shape::Rel(Rel::Block(Box::new(block)))
        };
        (node, Ok(shape))
    }
}

fn expand_into(projection: &mut Vec<SelectItem>, alias: &str, columns: &[String]) {
    for col in columns {
        projection.push(SelectItem::UnnamedExpr(Expr::CompoundIdentifier(vec![
            Ident::with_quote('"', alias),
            Ident::with_quote('"', col),
        ])));
    }
}

/// Resolve `GROUP BY 1` and `GROUP BY output_alias` to the expressions they name.
fn resolve_group_keys(exprs: &[Expr], projection: &[SelectItem], facts: &[OccFacts]) -> Vec<Expr> {
    exprs
        .iter()
        .map(|e| match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| projection.get(i.wrapping_sub(1)))
                    .and_then(select_item_expr)
                    .cloned()
                    .unwrap_or_else(|| e.clone()),
                _ => e.clone(),
            },
            Expr::Identifier(id) => {
                let name = fold(id);
                let is_input = facts.iter().any(|f| f.columns.contains(&name));
                if is_input {
                    return e.clone();
                }
                projection
                    .iter()
                    .find_map(|item| match item {
                        SelectItem::ExprWithAlias { expr, alias } if fold(alias) == name => {
                            Some(expr.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| e.clone())
            }
            _ => e.clone(),
        })
        .collect()
}

/// Build a table alias with explicit `AS`.
pub fn alias_of(name: Ident, columns: &[String]) -> TableAlias {
    TableAlias {
        explicit: true,
        name,
        columns: columns
            .iter()
            .map(|c| TableAliasColumnDef {
                name: Ident::with_quote('"', c.as_str()),
                data_type: None,
            })
            .collect(),
        at: None,
    }
}
