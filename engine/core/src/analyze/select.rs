//! One SELECT block: its projection, WHERE, GROUP BY, HAVING and DISTINCT,
//! the operator node it shows and whether a delta rule maintains it.

use super::*;

impl Analyzer<'_> {
    pub(super) fn block(
        &mut self,
        select: &mut Select,
        ctx: Ctx,
    ) -> (OpNode, Result<Shape, String>) {
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
        let sides = join_sides(&select.from);
        let mut has_using = false;
        let mut join_conditions = Vec::new();
        let mut on_exprs = Vec::new();
        let mut outer = Vec::new();
        for (j, op) in ops.iter().enumerate() {
            let (constraint, kind) = match op {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::CrossJoin(c) => {
                    (c, None)
                }
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => {
                    (c, Some(("LEFT JOIN", true, false)))
                }
                JoinOperator::Right(c) | JoinOperator::RightOuter(c) => {
                    (c, Some(("RIGHT JOIN", false, true)))
                }
                JoinOperator::FullOuter(c) => (c, Some(("FULL JOIN", true, true))),
                other => {
                    reasons.push(format!("join operator {other:?}"));
                    continue;
                }
            };
            if let Some((name, keeps_left, keeps_right)) = kind {
                let (left, right) = sides[j].clone();
                // The padded side is read by one occurrence, whose
                // changes decide which kept rows gain or lose a match.
                if keeps_left && right.len() != 1 || keeps_right && left.len() != 1 {
                    reasons.push(format!(
                        "{name} whose padded side joins several relations (write that side as a subquery in FROM)"
                    ));
                    continue;
                }
                let JoinConstraint::On(on) = constraint else {
                    reasons.push(format!("{name} with USING or NATURAL (write it with ON)"));
                    continue;
                };
                join_conditions.push(format!("{name} ON {on}"));
                on_exprs.push(on.clone());
                // Names the condition sees: the two sides' occurrences.
                let sides_scope: Vec<(String, Vec<String>)> = facts
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| left.contains(k) || right.contains(k))
                    .map(|(_, f)| (f.alias.clone(), f.columns.clone()))
                    .collect();
                outer.push(OuterJoin {
                    join: j,
                    on: qualified(on, &sides_scope),
                    left,
                    right,
                    keeps_left,
                    keeps_right,
                });
                continue;
            }
            match constraint {
                JoinConstraint::On(e) => {
                    join_conditions.push(e.to_string());
                    on_exprs.push(e.clone());
                }
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
                    // A delta term's changed relations each carry a
                    // multiplicity column of one name, which NATURAL would
                    // join on too.
                    has_using = true;
                    join_conditions.push("NATURAL".into());
                    reasons.push("NATURAL JOIN (write it with USING or ON)".into());
                }
                _ => {}
            }
        }

        if !outer.is_empty() && has_aliased_join(&select.from) {
            // Its alias hides the names inside, which a condition moved
            // out of the join (`delta/outer_joins.rs`) would then miss.
            reasons.push("a parenthesised join with an alias in a FROM with outer joins".into());
        }
        if !outer.is_empty() && factors.len() > crate::model::MAX_OUTER_JOIN_OCCURRENCES {
            reasons.push(format!(
                "an outer join in a FROM clause of more than {} relations",
                crate::model::MAX_OUTER_JOIN_OCCURRENCES
            ));
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

        // Expressions: functions, aggregates, and subqueries (each
        // analysed as a block of its own below; nothing inside one counts
        // as this block's).
        let mut has_agg = false;
        let mut aggs = Vec::new();
        // The PARTITION BY list of each window function.
        let mut windows: Vec<Vec<Expr>> = Vec::new();
        // Each window function whose value for rows tied in its ORDER BY
        // depends on the order they are read, with its PARTITION BY list.
        let mut tie_sensitive: Vec<(String, Vec<Expr>)> = Vec::new();
        let mut sub_exprs: Vec<Expr> = Vec::new();
        {
            let mut check = |expr: &Expr, in_where: bool, in_join: bool| {
                let complete = subqueries::walk_outside_subqueries(expr, &mut |e| match e {
                    e if subqueries::subquery_of(e).is_some() => {
                        if in_join {
                            reasons.push("subquery in a JOIN condition".into());
                        } else {
                            sub_exprs.push(e.clone());
                        }
                    }
                    Expr::In {
                        target: InTarget::Table { .. },
                        ..
                    } => {
                        reasons.push("IN with a table name".into());
                    }
                    Expr::Function(f) if matches!(f.args, FunctionArguments::Subquery(_)) => {
                        reasons.push(format!(
                            "a subquery as the argument of {} (such as ARRAY(SELECT ...))",
                            f.name
                        ));
                    }
                    Expr::Function(f) => {
                        let name = last_ident(&f.name).map(|i| fold(&i)).unwrap_or_default();
                        let facts = self.catalog.function(&name);
                        let is_agg = facts.aggregate
                            || SUPPORTED_AGGREGATES.contains(&name.as_str())
                            || OTHER_AGGREGATES.contains(&name.as_str());
                        if let Some(over) = &f.over {
                            // Recomputed by partition (see below).
                            match over {
                                WindowType::WindowSpec(spec) if spec.window_name.is_none() => {
                                    windows.push(spec.partition_by.clone());
                                    // Peers share rank and default (RANGE) frame.
                                    let tie_safe = matches!(
                                        name.as_str(),
                                        "rank" | "dense_rank" | "percent_rank" | "cume_dist"
                                    ) || (is_agg && spec.window_frame.is_none());
                                    if !tie_safe {
                                        tie_sensitive
                                            .push((name.clone(), spec.partition_by.clone()));
                                    }
                                }
                                _ => reasons
                                    .push(format!("window function {name} over a named window")),
                            }
                            if in_where || in_join {
                                reasons.push(format!(
                                    "window function {name} in WHERE or a JOIN condition"
                                ));
                            }
                            // An order-sensitive aggregate (string_agg, ...)
                            // over a window depends on the scan order.
                            // (`rank` is also a hypothetical-set aggregate:
                            // a name with a window overload is a window
                            // function here.)
                            if is_agg
                                && !facts.window
                                && !SUPPORTED_AGGREGATES.contains(&name.as_str())
                            {
                                reasons.push(format!("aggregate {name} over a window"));
                            } else if let Some(reason) = self.not_immutable(&name, arg_count(f)) {
                                reasons.push(reason);
                            }
                        } else if facts.window && !is_agg {
                            reasons.push(format!("window function {name}"));
                        } else if is_agg && f.over.is_none() {
                            has_agg = true;
                            aggs.push(e.to_string());
                            if in_where {
                                reasons.push(format!("aggregate {name} in WHERE"));
                            }
                            // `FILTER (WHERE false)` aggregates no row: a
                            // typed NULL (see `grouping_sets.rs`).
                            let no_row = matches!(f.filter.as_deref(),
                                Some(Expr::Value(v)) if v.value == Value::Boolean(false));
                            match ordered_aggregates::order_fixed(&name, f) {
                                // The query's own groups are recomputed as
                                // written; a subquery may be recomputed
                                // over old states too, whose rows must
                                // match bit for bit, and its collations are
                                // not probed.
                                Some(Ok(())) if ctx != Ctx::Top => reasons.push(format!(
                                    "ordered aggregate {name} inside a subquery, a CTE or a set-operation branch \
                                     (only the query's own groups are recomputed as written)"
                                )),
                                Some(Ok(())) => {}
                                Some(Err(reason)) => reasons.push(reason),
                                None => {
                                    if !SUPPORTED_AGGREGATES.contains(&name.as_str()) && !no_row {
                                        reasons.push(format!("aggregate {name}"));
                                    }
                                    if ordered_aggregates::has_own_order(f) {
                                        reasons.push(format!("ordered aggregate {name}"));
                                    }
                                }
                            }
                        } else if let Some(reason) = self.not_immutable(&name, arg_count(f)) {
                            reasons.push(reason);
                        }
                    }
                    _ => {}
                });
                if !complete {
                    reasons.push(
                        "a subquery in a position other than EXISTS, IN or a scalar subquery"
                            .into(),
                    );
                }
            };
            for item in &select.projection {
                if let Some(e) = select_item_expr(item) {
                    check(e, false, false);
                }
            }
            if let Some(w) = &select.selection {
                check(w, true, false);
            }
            for e in &on_exprs {
                check(e, true, true);
            }
            if let Some(h) = &select.having {
                check(h, false, false);
            }
        }
        let scope: Vec<(String, Vec<String>)> = facts
            .iter()
            .map(|f| (f.alias.clone(), f.columns.clone()))
            .collect();
        let mut subs = Vec::new();
        let mut sub_nodes = Vec::new();
        for e in &sub_exprs {
            match self.expr_sub(e, &scope) {
                Ok((sub, node)) => {
                    subs.push(sub);
                    sub_nodes.push(node);
                }
                Err(failed) => {
                    let (node, reason) = *failed;
                    sub_nodes.push(node);
                    reasons.push(reason);
                }
            }
        }

        // An invariant item (VALUES, a set-returning function) is read as
        // written by every delta term: under an outer join's padding, or
        // beside subqueries whose correlation is judged by the names a
        // FROM exposes (a function's may not be known), that is not known
        // to be exact.
        if facts.iter().any(|f| matches!(f.occ, Occ::Invariant)) {
            if !outer.is_empty() {
                reasons.push("VALUES or a table function in a FROM with an outer join".into());
            }
            if ctx == Ctx::Body {
                reasons.push(
                    "VALUES or a table function in the FROM of a subquery in an expression".into(),
                );
            }
            if !sub_exprs.is_empty() {
                reasons.push(
                    "VALUES or a table function in a FROM whose query holds subqueries in expressions"
                        .into(),
                );
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
            Some(Distinct::On(_)) if ctx != Ctx::Top => {
                reasons.push("DISTINCT ON inside a subquery or a set operation".into());
                true
            }
            Some(Distinct::On(_)) if self.order.is_none() => {
                reasons.push(
                    "DISTINCT ON without ORDER BY, or with LIMIT (which row of each key it keeps is not determined)"
                        .into(),
                );
                true
            }
            Some(Distinct::On(_)) => true,
        };
        let grouped = has_agg || !group_exprs.is_empty() || select.having.is_some();
        let in_select_list = select
            .projection
            .iter()
            .filter_map(select_item_expr)
            .any(subqueries::has_subquery);
        if in_select_list && ctx == Ctx::Nested && !grouped && !distinct {
            // Kept by keys, its rows would be a bag keyed by outputs whose
            // types may have no equality to recompute them by.
            reasons.push(
                "a subquery in the select list of a subquery in FROM or a UNION ALL branch".into(),
            );
        }

        // The operator tree, bottom-up.
        let mut node = if children.len() == 1 {
            children.pop().expect("one child")
        } else if children.is_empty() {
            OpNode::new("Result", "no FROM", vec![])
        } else {
            let kind = if outer.is_empty() {
                "InnerJoin"
            } else {
                "OuterJoin"
            };
            OpNode::new(kind, join_conditions.join(" AND "), children)
        };
        if facts.is_empty() && reasons.is_empty() {
            reasons.push("a query without a FROM relation".into());
        }
        if let Some(w) = &select.selection {
            node = OpNode::new("Filter", w.to_string(), vec![node]);
        }
        let keys = resolve_group_keys(&group_exprs, &select.projection, &facts);
        // DISTINCT ON keeps one row per key: kept by those keys, each
        // key's row recomputed with the query's ORDER BY.
        let distinct_on = match &select.distinct {
            Some(Distinct::On(on)) => {
                let on = resolve_distinct_on(on, &select.projection);
                if grouped {
                    reasons.push("DISTINCT ON over GROUP BY or aggregates".into());
                }
                if on.iter().any(subqueries::has_subquery) {
                    reasons.push("a subquery in a DISTINCT ON key".into());
                }
                Some(on)
            }
            _ => None,
        };
        if grouped && keys.iter().any(subqueries::has_subquery) {
            reasons.push("a subquery in a GROUP BY key".into());
        }
        if !windows.is_empty() {
            if grouped || distinct {
                reasons.push("a window function over GROUP BY, aggregates or DISTINCT".into());
            }
            if ctx == Ctx::Body {
                reasons.push("a window function inside a subquery in an expression".into());
            }
            if ctx == Ctx::Nested {
                // A refresh recomputes the old rows of a subquery kept by
                // keys and finds the enclosing rows by their values, so
                // these must come out as they did. `row_number()` does
                // when every other output is a key of its partition (the
                // rows numbered are then alike).
                let plain: Vec<String> = select
                    .projection
                    .iter()
                    .filter_map(select_item_expr)
                    .filter(|e| !has_window_function(e))
                    .map(|e| e.to_string())
                    .collect();
                for (name, by) in &tie_sensitive {
                    let by: Vec<String> = by.iter().map(|e| e.to_string()).collect();
                    let numbers_alike =
                        name == "row_number" && plain.iter().all(|o| by.contains(o));
                    if !numbers_alike {
                        reasons.push(format!(
                            "window function {name} in a subquery (its value for rows tied in its ORDER BY depends on the order they are read; rank, dense_rank and aggregates without a frame clause do not)"
                        ));
                    }
                }
            }
            node = OpNode::new(
                "Window",
                format!(
                    "recomputed by partition: [{}]",
                    window_keys(&windows)
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                vec![node],
            );
        }
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
        let mut children = vec![node];
        children.extend(sub_nodes);
        node = OpNode::new("Project", proj_detail, children);
        if distinct {
            node = OpNode::new("Distinct", "", vec![node]);
        }
        if let Some(reason) = reasons.first() {
            node = node.unsupported(reason.clone());
        }
        if !reasons.is_empty() {
            return (node, Err(reasons.remove(0)));
        }

        let mut block = Block {
            select: select.clone(),
            occs: facts.into_iter().map(|f| f.occ).collect(),
            outputs,
            scope,
            subs,
            outer,
            order: None,
        };
        if distinct_on.is_some() {
            block.order = self.order.take();
        }
        // A top block whose rows subqueries filter, or that outer joins,
        // has no exact delta: it is kept by its rows' values, the keys its
        // changes reach being recomputed (see `delta/subqueries.rs` and
        // `delta/outer_joins.rs`).
        let reached_only = ctx == Ctx::Top && block.reached_only();
        // Outputs holding no subquery: the values a bag is kept by when a
        // subquery in the select list may change a row without its FROM
        // row changing (the row's old value is then not known, its other
        // outputs are).
        let plain_outputs = || -> Vec<Expr> {
            block
                .output_exprs()
                .into_iter()
                .filter(|e| !subqueries::has_subquery(e))
                .collect()
        };
        let shape = if let Some(on) = distinct_on {
            Shape::Grouped(Box::new(block), on, false)
        } else if !windows.is_empty() {
            // Kept by partition: the partitions a change reaches are
            // recomputed whole (a window sees its partition only).
            Shape::Grouped(Box::new(block), window_keys(&windows), true)
        } else if grouped && distinct {
            // Several groups may give one row: kept as a bag by the
            // outputs that are group keys (any subset of them would do).
            let written: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let by: Vec<Expr> = block
                .output_exprs()
                .into_iter()
                .filter(|e| written.contains(&e.to_string()))
                .collect();
            Shape::Grouped(Box::new(block), by, true)
        } else if grouped {
            Shape::Grouped(Box::new(block), keys, false)
        } else if distinct && in_select_list {
            let by = plain_outputs();
            Shape::Grouped(Box::new(block), by, true)
        } else if distinct {
            let keys = block.output_exprs();
            Shape::Grouped(Box::new(block), keys, false)
        } else if reached_only {
            let by = plain_outputs();
            Shape::Grouped(Box::new(block), by, true)
        } else {
            Shape::Rel(Rel::Block(Box::new(block)))
        };
        (node, Ok(shape))
    }
}

/// The partition keys every window shares (by their text): a partition
/// of each window is a union of groups of these. None shared (or a window
/// without PARTITION BY): the whole query is one partition. A key holding
/// a subquery is left out: its old value is not known to a refresh.
fn window_keys(windows: &[Vec<Expr>]) -> Vec<Expr> {
    let Some((first, rest)) = windows.split_first() else {
        return Vec::new();
    };
    let mut keys: Vec<Expr> = Vec::new();
    for k in first {
        let text = k.to_string();
        let shared = rest.iter().all(|w| w.iter().any(|e| e.to_string() == text));
        if shared && !subqueries::has_subquery(k) && !keys.iter().any(|e| e.to_string() == text) {
            keys.push(k.clone());
        }
    }
    keys
}

/// The output column name PostgreSQL gives a select item.
pub fn output_name(item: &SelectItem) -> String {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => fold(alias),
        SelectItem::UnnamedExpr(expr) => expr_name(expr),
        _ => "?column?".into(),
    }
}

pub(super) fn expr_name(expr: &Expr) -> String {
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

/// DISTINCT ON expressions resolved as ORDER BY items are: a position or
/// a bare name of an output stands for that output's expression (an
/// output name wins over an input column of the same name).
fn resolve_distinct_on(on: &[Expr], projection: &[SelectItem]) -> Vec<Expr> {
    on.iter()
        .map(|e| {
            let output = match e {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| i.checked_sub(1))
                        .and_then(|i| projection.get(i)),
                    _ => None,
                },
                Expr::Identifier(id) => {
                    projection.iter().find(|item| output_name(item) == fold(id))
                }
                _ => None,
            };
            output
                .and_then(select_item_expr)
                .cloned()
                .unwrap_or_else(|| e.clone())
        })
        .collect()
}

/// Whether `e` calls a window function (outside subqueries).
fn has_window_function(e: &Expr) -> bool {
    let mut found = false;
    let _ = subqueries::walk_outside_subqueries(e, &mut |x| {
        if matches!(x, Expr::Function(f) if f.over.is_some()) {
            found = true;
        }
    });
    found
}

pub(crate) fn select_item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// Resolve `GROUP BY 1` and `GROUP BY output_alias` to the expressions they name.
pub(super) fn resolve_group_keys(
    exprs: &[Expr],
    projection: &[SelectItem],
    facts: &[OccFacts],
) -> Vec<Expr> {
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
