//! Subqueries in expressions (EXISTS, IN, scalar subqueries, ANY / ALL):
//! each is analysed as a block of its own, and its WHERE is split into
//! what its delta terms can evaluate alone (conjuncts over its own FROM)
//! and what links it to the enclosing block (equalities between its
//! columns and the enclosing block's). A grouped enclosing block
//! recomputes the groups of the rows those links reach.

use super::*;
use crate::model::{ExprSub, SubLink};
use sqlparser::ast::{BinaryOperator, Visit, Visitor};

/// Names in scope: each FROM occurrence's alias and columns.
pub(super) type Scope = [(String, Vec<String>)];

/// Visit every expression of `expr` outside subqueries, and say whether
/// every subquery it holds is one `f` can be told about (an `EXISTS`, an
/// `IN (SELECT ...)` or a parenthesised subquery, which `f` sees as an
/// expression; a subquery in any other position, such as a function
/// argument, makes it return false).
pub(super) fn walk_outside_subqueries(expr: &Expr, f: &mut dyn FnMut(&Expr)) -> bool {
    struct Walker<'f> {
        depth: usize,
        announced: usize,
        entered: usize,
        f: &'f mut dyn FnMut(&Expr),
    }
    impl Visitor for Walker<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            if self.depth == 0 {
                self.entered += 1;
            }
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                if subquery_of(e).is_some() {
                    self.announced += 1;
                }
                (self.f)(e);
            }
            ControlFlow::Continue(())
        }
    }
    let mut walker = Walker {
        depth: 0,
        announced: 0,
        entered: 0,
        f,
    };
    let _ = expr.visit(&mut walker);
    walker.announced == walker.entered
}

/// The subquery an expression is, when it is one: `EXISTS (...)`,
/// `x IN (SELECT ...)` or `(SELECT ...)`.
pub(super) fn subquery_of(e: &Expr) -> Option<&Query> {
    match e {
        Expr::Exists { subquery, .. }
        | Expr::Subquery(subquery)
        | Expr::In {
            target: InTarget::Subquery(subquery),
            ..
        } => Some(subquery),
        _ => None,
    }
}

/// Whether an expression holds a subquery anywhere.
pub(crate) fn has_subquery(expr: &Expr) -> bool {
    let mut found = false;
    let complete = walk_outside_subqueries(expr, &mut |e| found |= subquery_of(e).is_some());
    found || !complete
}

/// The top-level conjuncts of a predicate.
pub(crate) fn conjuncts(expr: &Expr) -> Vec<Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut out = conjuncts(left);
            out.extend(conjuncts(right));
            out
        }
        Expr::Nested(inner) => conjuncts(inner),
        other => vec![other.clone()],
    }
}

/// The conjunction of `parts` (None when there are none).
pub fn and_all(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(|l, r| Expr::BinaryOp {
        left: Box::new(nested(l)),
        op: BinaryOperator::And,
        right: Box::new(nested(r)),
    })
}

fn nested(e: Expr) -> Expr {
    match e {
        Expr::Nested(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_) => e,
        other => Expr::Nested(Box::new(other)),
    }
}

/// A predicate without its conjuncts that hold a subquery: a superset of
/// its rows, which delta terms can evaluate on any version of the FROM.
pub fn without_subquery_conjuncts(selection: &Option<Expr>) -> Option<Expr> {
    let kept = selection
        .as_ref()
        .map(|w| {
            conjuncts(w)
                .into_iter()
                .filter(|c| !has_subquery(c))
                .collect()
        })
        .unwrap_or_default();
    and_all(kept)
}

/// The top-level conjuncts of a predicate that hold a subquery, without
/// their parentheses, in the order they are written.
pub(crate) fn subquery_conjuncts(selection: &Option<Expr>) -> Vec<Expr> {
    selection
        .as_ref()
        .map(|w| {
            conjuncts(w)
                .into_iter()
                .filter(has_subquery)
                .map(|c| strip_nested(&c).clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every column `expr` references resolves in the enclosing
/// block's scope `outer` even when written inside a subquery whose FROM
/// names `inner` (no name of it is captured by the subquery's own).
pub(crate) fn resolves_outside(
    expr: &Expr,
    inner: &[(String, Vec<String>)],
    outer: &[(String, Vec<String>)],
) -> bool {
    let all = sides(expr, inner, outer);
    !all.is_empty() && only(&all, Side::Outer)
}

/// Where a column reference resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The subquery's own FROM.
    Inner,
    /// The enclosing block's FROM.
    Outer,
    /// Neither (a block further out, or a name analysis cannot place).
    Other,
}

fn side_of(e: &Expr, inner: &Scope, outer: &Scope) -> Option<Side> {
    let in_scope = |scope: &Scope, qualifier: Option<&str>, column: &str| {
        scope.iter().any(|(alias, cols)| {
            qualifier.is_none_or(|q| q == alias) && cols.iter().any(|c| c == column)
        })
    };
    let (qualifier, column) = match e {
        Expr::Identifier(id) => (None, fold(id)),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => (
            Some(fold(&parts[parts.len() - 2])),
            fold(&parts[parts.len() - 1]),
        ),
        _ => return None,
    };
    let q = qualifier.as_deref();
    // A qualified name resolves where its qualifier is an alias; an
    // unqualified one in the nearest scope that has the column.
    let has_alias = |scope: &Scope, q: &str| scope.iter().any(|(a, _)| a == q);
    Some(match q {
        Some(q) if has_alias(inner, q) => {
            if in_scope(inner, Some(q), &column) {
                Side::Inner
            } else {
                Side::Other
            }
        }
        Some(q) if has_alias(outer, q) => {
            if in_scope(outer, Some(q), &column) {
                Side::Outer
            } else {
                Side::Other
            }
        }
        Some(_) => Side::Other,
        None if in_scope(inner, None, &column) => Side::Inner,
        None if in_scope(outer, None, &column) => Side::Outer,
        None => Side::Other,
    })
}

/// The sides of every column an expression references (outside subqueries).
fn sides(e: &Expr, inner: &Scope, outer: &Scope) -> Vec<Side> {
    let mut out = Vec::new();
    let complete = walk_outside_subqueries(e, &mut |x| {
        if let Some(s) = side_of(x, inner, outer) {
            out.push(s);
        }
    });
    if !complete || has_subquery(e) {
        out.push(Side::Other);
    }
    out
}

fn only(sides: &[Side], side: Side) -> bool {
    sides.iter().all(|s| *s == side)
}

/// Whether an expression holds a `COLLATE` clause.
pub(crate) fn names_a_collation(expr: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(expr, |e| {
        found |= matches!(e, Expr::Collate { .. });
        ControlFlow::<()>::Continue(())
    });
    found
}

fn strip_nested(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip_nested(inner),
        other => other,
    }
}

/// A subquery's WHERE split by scope: the conjuncts over its own FROM
/// alone (kept for its delta terms) and the equalities `inner = outer`
/// that correlate it with the enclosing block. Every other conjunct is
/// dropped, which only lets more rows through.
fn split_where(
    where_: &Option<Expr>,
    inner: &Scope,
    outer: &Scope,
) -> (Vec<Expr>, Vec<(Expr, Expr)>) {
    let mut kept = Vec::new();
    let mut pairs = Vec::new();
    for c in where_.as_ref().map(conjuncts).unwrap_or_default() {
        let all = sides(&c, inner, outer);
        if only(&all, Side::Inner) {
            kept.push(c);
            continue;
        }
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = strip_nested(&c)
        {
            let (l, r) = (sides(left, inner, outer), sides(right, inner, outer));
            // Under a COLLATE of its own, the equality may tell apart
            // values the subquery's side finds equal (and so collapses
            // when it collects the values a change reached): no link.
            let nonempty = !l.is_empty() && !r.is_empty() && !names_a_collation(&c);
            if nonempty && only(&l, Side::Inner) && only(&r, Side::Outer) {
                pairs.push((left.as_ref().clone(), right.as_ref().clone()));
            } else if nonempty && only(&l, Side::Outer) && only(&r, Side::Inner) {
                pairs.push((right.as_ref().clone(), left.as_ref().clone()));
            }
        }
    }
    (kept, pairs)
}

impl Analyzer<'_> {
    /// Why a call of function `name` (folded, unqualified) cannot be
    /// maintained: it reads the clock or the session, or is not IMMUTABLE.
    pub(super) fn not_immutable(&self, name: &str, nargs: usize) -> Option<String> {
        let facts = self.catalog.function(name);
        let immutable = facts.immutable || facts.immutable_arities.contains(&nargs);
        (SESSION_FUNCTIONS.contains(&name) || !immutable).then(|| {
            format!(
                "function {name}, which is not IMMUTABLE (its result can change without a change to the data)"
            )
        })
    }

    /// The first thing in `node` a recomputation cannot evaluate as
    /// written: a subquery (its sources would go unwatched), a window
    /// function unless `windows` allows them, or a function that is not
    /// IMMUTABLE. `place` ends the message ("in the ORDER BY of ...").
    pub(super) fn unrecomputable(
        &self,
        node: &impl sqlparser::ast::Visit,
        place: &str,
        windows: bool,
    ) -> Option<String> {
        let mut problem = None;
        let _ = sqlparser::ast::visit_expressions(node, |e| {
            if problem.is_none() {
                problem = match e {
                    e if subquery_of(e).is_some() => Some(format!("a subquery {place}")),
                    Expr::Function(f) if f.over.is_some() && !windows => {
                        Some(format!("a window function {place}"))
                    }
                    Expr::Function(f) => {
                        let name = last_ident(&f.name).map(|i| fold(&i)).unwrap_or_default();
                        self.not_immutable(&name, arg_count(f))
                    }
                    _ => None,
                };
            }
            ControlFlow::<()>::Continue(())
        });
        problem
    }

    /// What keeps a subquery's ORDER BY, LIMIT, OFFSET or FETCH from being
    /// recomputed as written (see [`Self::unrecomputable`]).
    fn clause_problem(&self, query: &Query) -> Option<String> {
        let problem = self.unrecomputable(
            &query.order_by,
            "in the ORDER BY or LIMIT of a subquery in an expression",
            true,
        );
        let mut complete = true;
        for clause in [
            query.limit_clause.as_ref().map(|l| l.to_string()),
            query.fetch.as_ref().map(|f| f.to_string()),
        ]
        .into_iter()
        .flatten()
        {
            // LIMIT / OFFSET / FETCH hold plain expressions; a subquery or
            // function there is refused by its text.
            let upper = clause.to_uppercase();
            if upper.contains("SELECT") || upper.contains('(') {
                complete = false;
            }
        }
        problem.or_else(|| {
            (!complete).then(|| {
                "an expression other than a constant in the LIMIT, OFFSET or FETCH of a subquery in an expression".to_string()
            })
        })
    }

    /// Analyse a subquery found in an expression of a block whose FROM
    /// names `outer`. Its sources join the analysis' sources.
    pub(super) fn expr_sub(
        &mut self,
        expr: &Expr,
        outer: &Scope,
    ) -> Result<(ExprSub, OpNode), Box<(OpNode, String)>> {
        let (kind, query, tested) = match expr {
            Expr::Exists { subquery, negated } => (
                if *negated { "NOT EXISTS" } else { "EXISTS" },
                subquery,
                None,
            ),
            Expr::In {
                expr,
                target: InTarget::Subquery(subquery),
                negated,
                ..
            } => (
                if *negated { "NOT IN" } else { "IN" },
                subquery,
                Some(expr.as_ref()),
            ),
            Expr::Subquery(subquery) => ("scalar", subquery, None),
            other => {
                let text: String = other.to_string().chars().take(40).collect();
                return Err(Box::new((
                    OpNode::new("SubPlan", text.clone(), vec![]),
                    format!("subquery expression {text}"),
                )));
            }
        };
        let mut query = query.as_ref().clone();
        let fail = |node: OpNode, reason: String| {
            Err(Box::new((node.unsupported(reason.clone()), reason)))
        };
        if let Err(reason) = inline_ctes(&mut query, &[]) {
            return fail(OpNode::new("SubPlan", kind, vec![]), reason);
        }
        let limited = query.limit_clause.is_some() || query.fetch.is_some();
        if let Some(reason) = self.clause_problem(&query) {
            return fail(OpNode::new("SubPlan", kind, vec![]), reason);
        }
        let SetExpr::Select(select) = query.body.as_mut() else {
            return fail(
                OpNode::new("SubPlan", kind, vec![]),
                "a set operation or VALUES as a subquery in an expression".into(),
            );
        };
        let (child, shape) = self.block(select, Ctx::Body);
        let grouped = matches!(shape, Ok(Shape::Grouped(..)));
        let (mut block, keys) = match shape {
            Ok(Shape::Rel(Rel::Block(b))) => (*b, None),
            Ok(Shape::Grouped(b, keys, _)) => (*b, Some(keys)),
            Ok(Shape::Rel(Rel::UnionAll(_) | Rel::Keyed(_))) => {
                return fail(child, "UNION ALL as a subquery in an expression".into())
            }
            Err(reason) => {
                return Err(Box::new((
                    OpNode::new("SubPlan", kind, vec![child]),
                    reason,
                )))
            }
        };
        let own = |e: &Expr| only(&sides(e, &block.scope, outer), Side::Inner);
        let correlated = !(block.output_exprs().iter().all(own)
            && block.select.selection.as_ref().is_none_or(own)
            && block.select.having.as_ref().is_none_or(own));
        let written = block
            .select
            .selection
            .as_ref()
            .map_or(0, |w| conjuncts(w).len());
        let (kept, pairs) = split_where(&block.select.selection, &block.scope, outer);
        let only_equalities = !pairs.is_empty()
            && kept.len() + pairs.len() == written
            && block.output_exprs().iter().all(own)
            && block.select.having.as_ref().is_none_or(own);
        block.select.selection = and_all(kept);
        let in_pair = tested.and_then(|t| {
            let [item] = block.select.projection.as_slice() else {
                return None;
            };
            let inner = select::select_item_expr(item)?.clone();
            let inner_sides = sides(&inner, &block.scope, outer);
            let inner_ok = !inner_sides.is_empty() && only(&inner_sides, Side::Inner);
            // The tested expression belongs to the enclosing block, so it
            // resolves in that block's scope (the "inner" side there).
            let t_sides = sides(t, outer, &[]);
            let outer_ok = !t_sides.is_empty() && only(&t_sides, Side::Inner);
            let grouped_ok = keys
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k.to_string() == inner.to_string()));
            (inner_ok && outer_ok && grouped_ok && !limited).then(|| (inner, t.clone()))
        });
        let link = if !pairs.is_empty() {
            let (inner, outer) = pairs.into_iter().unzip();
            SubLink::Equal { inner, outer }
        } else if let Some((inner, outer)) = in_pair {
            SubLink::In {
                inner: Box::new(inner),
                outer: Box::new(outer),
            }
        } else {
            SubLink::Every
        };
        let detail = match &link {
            SubLink::Equal { inner, outer } => format!(
                "{kind}, correlated on {}",
                inner
                    .iter()
                    .zip(outer)
                    .map(|(i, o)| format!("{i} = {o}"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ),
            SubLink::In { inner, outer } => format!("{kind}, {outer} against {inner}"),
            SubLink::Every => format!("{kind}, uncorrelated: any change recomputes every group"),
        };
        let sources = block.sources();
        Ok((
            ExprSub {
                kind: kind.to_string(),
                body: Box::new(block),
                link,
                sources,
                grouped_or_limited: grouped || limited,
                exact_sums: None,
                correlated,
                only_equalities,
                same_link_types: None,
            },
            OpNode::new("SubPlan", detail, vec![child]),
        ))
    }
}
