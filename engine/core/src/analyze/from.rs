//! FROM clauses: each occurrence (a table, a CTE reference, a subquery)
//! becomes a source or a nested relation, in canonical leaf order.

use std::ops::Range;

use super::*;

impl Analyzer<'_> {
    pub(super) fn occurrence(
        &mut self,
        factor: &TableFactor,
    ) -> Result<OccFacts, Box<(OpNode, String)>> {
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
                        "source {}, which cannot be captured exactly: {problem}",
                        table.qualified()
                    );
                    self.source_index(&table);
                    return Err(Box::new((node, reason)));
                }
                let source = self.source_index(&table);
                // `t AS x(a, b)` renames the first columns.
                let mut columns = table.columns.clone();
                renamed(&mut columns, alias_columns(alias));
                Ok(OccFacts {
                    alias: alias_name,
                    columns,
                    occ: Occ::Source { source },
                    node,
                })
            }
            TableFactor::Derived {
                lateral: false,
                subquery,
                alias,
                ..
            } if matches!(*subquery.body, SetExpr::Values(_)) => {
                self.values_occurrence(subquery, alias)
            }
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                with_ordinality,
                sample: None,
                ..
            } => {
                let exprs = positional_args(name, &args.args)?;
                self.function_occurrence(name, &exprs, alias.as_ref(), *with_ordinality)
            }
            TableFactor::Function {
                name,
                args,
                alias,
                with_ordinality,
                ..
            } => {
                let exprs = positional_args(name, args)?;
                self.function_occurrence(name, &exprs, alias.as_ref(), *with_ordinality)
            }
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_ordinality,
                ..
            } => {
                let name = ObjectName::from(vec![Ident::new("unnest")]);
                let exprs: Vec<&Expr> = array_exprs.iter().collect();
                self.function_occurrence(&name, &exprs, alias.as_ref(), *with_ordinality)
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
                let rel = match shape.and_then(|shape| self.nested_rel(shape)) {
                    Ok(rel) => rel,
                    Err(e) => return Err(Box::new((node, e))),
                };
                let id = self.next_sub;
                self.next_sub += 1;
                // `(...) AS s(a, b)` renames the first outputs.
                let mut columns = rel.outputs().to_vec();
                renamed(&mut columns, alias_columns(alias));
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

    /// A nested query's shape as a relation of its enclosing one: a block
    /// kept by keys (grouped, DISTINCT, windows) becomes [`Rel::Keyed`],
    /// with every relation its text names resolved to its source.
    pub(super) fn nested_rel(&mut self, shape: Shape) -> Result<Rel, String> {
        let (block, keys) = match shape {
            Shape::Rel(rel) => return Ok(rel),
            Shape::Grouped(block, keys, _) => (block, keys),
        };
        // Every table at any depth; set-returning functions are no tables.
        let names = super::from_names(&block.select).tables;
        let mut tables: Vec<(String, usize)> = Vec::new();
        for name in names {
            let Some(table) = self.catalog.get(&name).cloned() else {
                return Err(format!("relation {name} could not be resolved"));
            };
            let source = self.source_index(&table);
            if !tables.iter().any(|(n, _)| *n == name) {
                tables.push((name, source));
            }
        }
        Ok(Rel::Keyed(Box::new(Keyed {
            block: *block,
            keys,
            tables,
            key_arrays: Vec::new(),
        })))
    }

    /// A `VALUES` list in FROM: constant rows, an [`Occ::Invariant`].
    fn values_occurrence(
        &mut self,
        subquery: &Query,
        alias: &Option<TableAlias>,
    ) -> Result<OccFacts, Box<(OpNode, String)>> {
        let SetExpr::Values(values) = subquery.body.as_ref() else {
            unreachable!("matched as VALUES");
        };
        let alias_name = alias.as_ref().map(|a| fold(&a.name));
        let node = OpNode::new("Values", alias_name.clone().unwrap_or_default(), vec![]);
        let width = values.rows.first().map_or(0, |r| r.content.len());
        if subquery.order_by.is_some() || subquery.limit_clause.is_some() || subquery.with.is_some()
        {
            return Err(Box::new((
                node,
                "VALUES with ORDER BY or LIMIT in FROM".into(),
            )));
        }
        for row in &values.rows {
            for e in &row.content {
                if let Err(reason) = self.invariant_expr(e) {
                    return Err(Box::new((node, reason)));
                }
            }
        }
        // `AS v(a, b)` names the first columns; PostgreSQL names the
        // rest `column<n>`.
        let mut columns: Vec<String> = (1..=width).map(|i| format!("column{i}")).collect();
        renamed(&mut columns, alias_columns(alias));
        let id = self.next_sub;
        self.next_sub += 1;
        Ok(OccFacts {
            alias: alias_name.unwrap_or_else(|| format!("__pgt_sub{id}")),
            columns,
            occ: Occ::Invariant,
            node,
        })
    }

    /// A set-returning function in FROM: an [`Occ::Invariant`] when it is
    /// IMMUTABLE, returns one column (plus `ordinality`) and its
    /// arguments are constants, columns of earlier FROM items and
    /// IMMUTABLE functions of those.
    fn function_occurrence(
        &mut self,
        name: &ObjectName,
        args: &[&Expr],
        alias: Option<&TableAlias>,
        with_ordinality: bool,
    ) -> Result<OccFacts, Box<(OpNode, String)>> {
        let node = OpNode::new("FunctionScan", name.to_string(), vec![]);
        let fail = |reason: String| Err(Box::new((node.clone(), reason)));
        let fname = last_ident(name).map(|i| fold(&i)).unwrap_or_default();
        if let Some(reason) = self.not_immutable(&fname, args.len()) {
            return fail(reason);
        }
        let facts = self.catalog.function(&fname);
        // `unnest` of one array gives one column (of a tsvector, three:
        // the names a query uses are then checked when its delta
        // statement is prepared at creation, and fail there).
        let one_column = if fname == "unnest" {
            args.len() == 1
        } else {
            facts.single_column
        };
        if !one_column {
            return fail(format!(
                "table function {name}, which returns several columns (give it a column list only if it returns one)"
            ));
        }
        for e in args {
            if let Err(reason) = self.invariant_expr(e) {
                return fail(reason);
            }
        }
        let alias_name = alias
            .map(|a| fold(&a.name))
            .unwrap_or_else(|| fname.clone());
        // A scalar function's column is named by its alias, else by the
        // function; `AS f(a, b)` names it and the ordinality.
        let mut columns = vec![alias_name.clone()];
        if with_ordinality {
            columns.push("ordinality".into());
        }
        renamed(&mut columns, alias_columns(alias));
        Ok(OccFacts {
            alias: alias_name,
            columns,
            occ: Occ::Invariant,
            node,
        })
    }

    /// An expression an invariant FROM item may compute: no subquery, and
    /// only IMMUTABLE functions.
    fn invariant_expr(&self, e: &Expr) -> Result<(), String> {
        self.unrecomputable(
            e,
            "inside VALUES or a table function's arguments in FROM",
            true,
        )
        .map_or(Ok(()), Err)
    }

    pub(super) fn source_index(&mut self, table: &SourceTable) -> usize {
        if let Some(i) = self.sources.iter().position(|s| s.oid == table.oid) {
            return i;
        }
        self.sources.push(table.clone());
        self.sources.len() - 1
    }
}

/// The column list of a FROM item's alias (`AS x(a, b)`), if any.
fn alias_columns<'a>(alias: impl IntoIterator<Item = &'a TableAlias>) -> Vec<&'a Ident> {
    alias
        .into_iter()
        .flat_map(|a| a.columns.iter().map(|c| &c.name))
        .collect()
}

/// Rename the first `columns` as an alias' column list does.
fn renamed(columns: &mut [String], names: Vec<&Ident>) {
    for (slot, name) in columns.iter_mut().zip(names) {
        *slot = fold(name);
    }
}

/// The arguments of a table function in FROM, when all are positional.
fn positional_args<'q>(
    name: &ObjectName,
    args: &'q [sqlparser::ast::FunctionArg],
) -> Result<Vec<&'q Expr>, Box<(OpNode, String)>> {
    args.iter()
        .map(|arg| match arg {
            sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(Box::new((
                OpNode::new("FunctionScan", name.to_string(), vec![]),
                format!("table function {name} with named arguments"),
            ))),
        })
        .collect()
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

/// Each join of a FROM clause, in the canonical order of
/// [`join_operators`] (a parenthesised join before the join holding it):
/// the occurrences (in canonical leaf order) left and right of it.
pub(super) fn join_sides(from: &[TableWithJoins]) -> Vec<(Range<usize>, Range<usize>)> {
    fn twj(t: &TableWithJoins, next: &mut usize, out: &mut Vec<(Range<usize>, Range<usize>)>) {
        let start = *next;
        factor(&t.relation, next, out);
        for join in &t.joins {
            let mid = *next;
            factor(&join.relation, next, out);
            out.push((start..mid, mid..*next));
        }
    }
    fn factor(f: &TableFactor, next: &mut usize, out: &mut Vec<(Range<usize>, Range<usize>)>) {
        match f {
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => twj(table_with_joins, next, out),
            _ => *next += 1,
        }
    }
    let mut out = Vec::new();
    let mut next = 0;
    for t in from {
        twj(t, &mut next, &mut out);
    }
    out
}

/// Whether a FROM clause holds a parenthesised join with an alias (`(a
/// JOIN b ON ...) AS j`), whose alias hides the names inside it.
pub(super) fn has_aliased_join(from: &[TableWithJoins]) -> bool {
    fn factor(f: &TableFactor) -> bool {
        match f {
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                alias.is_some() || has_aliased_join(std::slice::from_ref(table_with_joins.as_ref()))
            }
            _ => false,
        }
    }
    from.iter()
        .any(|t| factor(&t.relation) || t.joins.iter().any(|j| factor(&j.relation)))
}

/// `on` with every unqualified column that names a column of exactly one
/// of `scope`'s occurrences qualified by that occurrence's alias: moved
/// out of its join (see `delta/outer_joins.rs`), it still means what it
/// meant there. Other names (of an enclosing query) are left as written.
pub(super) fn qualified(on: &Expr, scope: &[(String, Vec<String>)]) -> Expr {
    let mut e = on.clone();
    let _ = sqlparser::ast::visit_expressions_mut(&mut e, |x| {
        if let Expr::Identifier(id) = x {
            let name = fold(id);
            let owners: Vec<&String> = scope
                .iter()
                .filter(|(_, cols)| cols.contains(&name))
                .map(|(alias, _)| alias)
                .collect();
            if let [alias] = owners.as_slice() {
                *x = Expr::CompoundIdentifier(vec![
                    Ident::with_quote('"', alias.as_str()),
                    Ident::with_quote('"', name),
                ]);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    e
}

/// Visit every join of a FROM clause in the canonical order of [`join_operators`].
pub fn for_each_join_mut(from: &mut [TableWithJoins], f: &mut dyn FnMut(&mut Join)) {
    fn visit(factor: &mut TableFactor, f: &mut dyn FnMut(&mut Join)) {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = factor
        {
            for_each_join_mut(std::slice::from_mut(table_with_joins.as_mut()), f);
        }
    }
    for twj in from {
        visit(&mut twj.relation, f);
        for join in &mut twj.joins {
            visit(&mut join.relation, f);
            f(join);
        }
    }
}

pub(super) fn join_operators(from: &[TableWithJoins], out: &mut Vec<JoinOperator>) {
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

pub(super) fn expand_into(projection: &mut Vec<SelectItem>, alias: &str, columns: &[String]) {
    for col in columns {
        projection.push(SelectItem::UnnamedExpr(Expr::CompoundIdentifier(vec![
            Ident::with_quote('"', alias),
            Ident::with_quote('"', col),
        ])));
    }
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
