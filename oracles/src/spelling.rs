//! Which output columns of a grouped query SQL leaves the spelling of to
//! the plan, and how to compare them.
//!
//! In GROUP BY and DISTINCT, values that are equal but print differently
//! (`0` and `0.00` numeric, `0` and `-0` float) form one group, and which
//! spelling the group shows is whichever row the plan met first; `min` and
//! `max` likewise return one of several equal values. A stream table
//! recomputes a group with a different plan than a full recomputation, so
//! for these columns, and only these, the oracle compares a canonical
//! spelling (`trim_scale` for numeric, `+ 0` for floats, which turns -0
//! into 0). Everything else, including the scale of a sum or an average,
//! is compared exactly as PostgreSQL prints it (docs/DIFFERENTIAL.md,
//! "Guarantees and limits").

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, SelectItem, SetExpr, SetOperator, SetQuantifier, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Output column names (lower-cased) of `query` whose spelling is the
/// plan's choice: the keys of a top-level GROUP BY or DISTINCT, and
/// `min`/`max` results. Empty when the query is not grouped or does not parse.
pub fn plan_spelled_columns(query: &str) -> Vec<String> {
    let Ok(stmts) = Parser::parse_sql(&PostgreSqlDialect {}, query) else {
        return Vec::new();
    };
    let Some(Statement::Query(q)) = stmts.first() else {
        return Vec::new();
    };
    // UNION, INTERSECT and EXCEPT without ALL keep one row of equal ones,
    // whichever the plan met, and INTERSECT ALL and EXCEPT ALL keep some
    // of the copies of equal values from either side: every column is
    // plan-spelled.
    let (select, set_distinct) = match q.body.as_ref() {
        SetExpr::Select(select) => (select.as_ref(), false),
        SetExpr::SetOperation {
            left,
            op,
            set_quantifier,
            ..
        } if !matches!(set_quantifier, SetQuantifier::All)
            || matches!(op, SetOperator::Intersect | SetOperator::Except) =>
        {
            match leftmost(left) {
                Some(select) => (select, true),
                None => return Vec::new(),
            }
        }
        _ => return Vec::new(),
    };
    // DISTINCT ON keeps the first of rows its ORDER BY ties, and values
    // equal but spelled differently tie.
    let distinct = set_distinct
        || matches!(
            select.distinct,
            Some(Distinct::Distinct) | Some(Distinct::On(_))
        );
    // The keys of grouping sets, ROLLUP and CUBE are group keys too.
    let group_exprs: Vec<&Expr> = match &select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs
            .iter()
            .flat_map(|e| match e {
                Expr::GroupingSets(sets) | Expr::Rollup(sets) | Expr::Cube(sets) => {
                    sets.iter().flatten().collect::<Vec<_>>()
                }
                e => vec![e],
            })
            .collect(),
        GroupByExpr::All(_) => Vec::new(),
    };
    let names: Vec<(String, Option<&Expr>)> = select
        .projection
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            SelectItem::ExprWithAlias { expr, alias } => (alias.value.to_lowercase(), Some(expr)),
            SelectItem::UnnamedExpr(expr) => (unnamed(expr, i), Some(expr)),
            _ => (String::new(), None),
        })
        .collect();
    let mut out = Vec::new();
    for (i, (name, expr)) in names.iter().enumerate() {
        let Some(expr) = expr else { continue };
        let is_key = distinct
            || group_exprs.iter().any(|g| {
                g.to_string() == expr.to_string()
                    || matches!(g, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.parse::<usize>().ok() == Some(i + 1)))
                    || matches!(g, Expr::Identifier(id) if id.value.to_lowercase() == *name)
            });
        if is_key || is_min_or_max(expr) {
            out.push(name.clone());
        }
    }
    out
}

/// The first SELECT of a set operation's operands, which names its columns.
fn leftmost(body: &SetExpr) -> Option<&sqlparser::ast::Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::SetOperation { left, .. } => leftmost(left),
        SetExpr::Query(q) => leftmost(&q.body),
        _ => None,
    }
}

fn unnamed(expr: &Expr, i: usize) -> String {
    match expr {
        Expr::Identifier(id) => id.value.to_lowercase(),
        Expr::CompoundIdentifier(ids) => ids
            .last()
            .map(|id| id.value.to_lowercase())
            .unwrap_or_default(),
        Expr::Function(f) => f.name.to_string().to_lowercase(),
        _ => format!("?column?{i}"),
    }
}

fn is_min_or_max(expr: &Expr) -> bool {
    match expr {
        Expr::Function(f) => matches!(f.name.to_string().to_lowercase().as_str(), "min" | "max"),
        Expr::Nested(e) => is_min_or_max(e),
        _ => false,
    }
}

/// The SQL for column `col` (quoted, of type `typname`) of row alias
/// `alias` in its canonical spelling, when it is plan-spelled.
pub fn canonical(alias: &str, col: &str, typname: &str, plan_spelled: bool) -> String {
    let quoted = format!("{alias}.\"{}\"", col.replace('"', "\"\""));
    if !plan_spelled {
        return quoted;
    }
    match typname {
        "numeric" => format!("trim_scale({quoted})"),
        "float4" | "float8" => format!("({quoted} + 0)"),
        _ => quoted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_of_a_distinct_set_operation_is_plan_spelled() {
        assert_eq!(
            plan_spelled_columns("SELECT k, v AS x FROM a UNION SELECT k, w FROM b"),
            ["k", "x"]
        );
        assert!(plan_spelled_columns("SELECT k FROM a UNION ALL SELECT k FROM b").is_empty());
    }

    #[test]
    fn keys_and_min_max_are_plan_spelled_sums_are_not() {
        assert_eq!(
            plan_spelled_columns(
                "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo FROM a GROUP BY k"
            ),
            ["k", "lo"]
        );
        assert_eq!(
            plan_spelled_columns("SELECT DISTINCT coalesce(c, 0) AS o1, d FROM t"),
            ["o1", "d"]
        );
        assert_eq!(
            plan_spelled_columns("SELECT x + 1 AS k2, max(y) FROM t GROUP BY 1"),
            ["k2", "max"]
        );
        assert!(plan_spelled_columns("SELECT k, v FROM a").is_empty());
        assert!(plan_spelled_columns("SELECT k FROM a UNION ALL SELECT k FROM b").is_empty());
    }

    #[test]
    fn canonical_spelling_only_where_the_plan_chooses() {
        assert_eq!(canonical("s", "k", "numeric", true), "trim_scale(s.\"k\")");
        assert_eq!(canonical("s", "k", "numeric", false), "s.\"k\"");
        assert_eq!(canonical("q", "f", "float8", true), "(q.\"f\" + 0)");
        assert_eq!(canonical("q", "t", "text", true), "q.\"t\"");
    }
}
