//! What a query with `ORDER BY ... LIMIT` guarantees, and nothing more.
//!
//! SQL leaves the order of rows with equal sort keys unspecified, so when
//! rows tie at the last kept position (or at the first, under OFFSET) a
//! stream table and a fresh run of the query may keep different ones, and
//! both are right. The oracle then accepts the stream table when, ranking
//! every row by the query's ORDER BY: the rows ranked strictly between the
//! first and the last kept rank are the same as the query's (as a bag);
//! at those two ranks it keeps as many rows as the query does, each one a
//! row the query without its LIMIT returns at that rank; and it keeps no
//! row ranked outside them. (docs/DIFFERENTIAL.md, "Top-k".)

use postgres::Client;
use sqlparser::ast::{
    Expr, LimitClause, OrderByKind, OrderBySort, Query, SelectItem, SetExpr, Statement, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::compare::Column;

/// A query ranked and limited at its top level: the query without its
/// ORDER BY and LIMIT, and the ORDER BY over output positions (0-based,
/// with the item's options as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    /// The query without ORDER BY, LIMIT, OFFSET and FETCH.
    pub unlimited: String,
    /// `(output, options)` per ORDER BY item, e.g. `(1, " DESC NULLS LAST")`.
    pub order: Vec<(usize, String)>,
}

/// The ranking of `query` when it has ORDER BY with LIMIT / OFFSET /
/// FETCH and every item names an output (by position, name or
/// expression); `names` are its output names.
pub fn ranked(query: &str, names: &[String]) -> Option<Ranked> {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let Some(Statement::Query(mut q)) = stmts.into_iter().next() else {
        return None;
    };
    // `(SELECT ... ORDER BY ... LIMIT n)`: the parenthesised query is the
    // one limited.
    while q.limit_clause.is_none() && q.fetch.is_none() {
        let with = q.with.take();
        let SetExpr::Query(mut inner) = *q.body else {
            return None;
        };
        // `WITH x AS (...) (SELECT ... FROM x ... LIMIT n)`: x stays defined.
        if inner.with.is_none() {
            inner.with = with;
        }
        q = inner;
    }
    if let Some(LimitClause::OffsetCommaLimit { .. }) = &q.limit_clause {
        return None;
    }
    let OrderByKind::Expressions(items) = &q.order_by.as_ref()?.kind else {
        return None;
    };
    let exprs = projection_texts(&q);
    let mut order = Vec::new();
    for item in items {
        let e = &item.expr;
        let by_position = match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<usize>().ok().and_then(|i| i.checked_sub(1)),
                _ => None,
            },
            _ => None,
        };
        let by_name = match e {
            Expr::Identifier(id) => {
                let name = if id.quote_style.is_some() {
                    id.value.clone()
                } else {
                    id.value.to_lowercase()
                };
                names.iter().position(|n| *n == name)
            }
            _ => None,
        };
        let by_expr = exprs.iter().position(|t| *t == e.to_string());
        let output = by_position
            .filter(|i| *i < names.len())
            .or(by_name)
            .or(by_expr)?;
        let mut options = String::new();
        match &item.options.sort {
            Some(OrderBySort::Desc) => options.push_str(" DESC"),
            Some(OrderBySort::Using(_)) => return None,
            _ => {}
        }
        match item.options.nulls_first {
            Some(true) => options.push_str(" NULLS FIRST"),
            Some(false) => options.push_str(" NULLS LAST"),
            None => {}
        }
        order.push((output, options));
    }
    let mut unlimited: Query = q.as_ref().clone();
    unlimited.order_by = None;
    unlimited.limit_clause = None;
    unlimited.fetch = None;
    Some(Ranked {
        unlimited: unlimited.to_string(),
        order,
    })
}

/// The select list's expressions by output position; none when a `*`
/// stands in it (its columns would shift every later position).
fn projection_texts(q: &Query) -> Vec<String> {
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Vec::new();
    };
    let mut texts = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                texts.push(e.to_string())
            }
            _ => return Vec::new(),
        }
    }
    texts
}

/// Whether stream table `st` keeps rows `query` may keep: the same rows
/// but for which of the rows tied at its first and last rank it holds.
/// `row` renders the columns of alias `x` as the comparison spells them.
pub fn tie_equivalent(
    client: &mut Client,
    st: &str,
    columns: &[Column],
    query: &str,
    ranked: &Ranked,
    row: &dyn Fn(&str) -> String,
) -> Result<bool, postgres::Error> {
    let names: Vec<String> = columns
        .iter()
        .map(|(c, _)| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let order = ranked
        .order
        .iter()
        .map(|(i, opts)| format!("x.{}{opts}", names[*i]))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT x.__tag, ROW({})::text, dense_rank() OVER (ORDER BY {order})::bigint FROM (\
         SELECT 's', {} FROM {st} s UNION ALL SELECT 'f', q.* FROM ({query}) q \
         UNION ALL SELECT 'u', q.* FROM ({}) q) x(__tag, {})",
        row("x"),
        names
            .iter()
            .map(|n| format!("s.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        ranked.unlimited,
        names.join(", ")
    );
    let rows = client.query(&sql, &[])?;
    let tagged: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(judge(&tagged))
}

/// The rule of [`tie_equivalent`] over rows tagged `s` (stored), `f` (the
/// query as written) and `u` (without its LIMIT), with their rank.
pub fn judge(rows: &[(String, String, i64)]) -> bool {
    let of = |tag: &str, keep: &dyn Fn(i64) -> bool| {
        let mut v: Vec<&str> = rows
            .iter()
            .filter(|(t, _, r)| t == tag && keep(*r))
            .map(|(_, text, _)| text.as_str())
            .collect();
        v.sort_unstable();
        v
    };
    let f_ranks: Vec<i64> = rows
        .iter()
        .filter(|(t, ..)| t == "f")
        .map(|r| r.2)
        .collect();
    let (Some(&lo), Some(&hi)) = (f_ranks.iter().min(), f_ranks.iter().max()) else {
        return of("s", &|_| true).is_empty();
    };
    if !of("s", &|r| r < lo || r > hi).is_empty() {
        return false;
    }
    if of("s", &|r| r > lo && r < hi) != of("f", &|r| r > lo && r < hi) {
        return false;
    }
    [lo, hi].iter().all(|&b| {
        let stored = of("s", &|r| r == b);
        if stored.len() != of("f", &|r| r == b).len() {
            return false;
        }
        // Each stored row at the boundary is one of the query's there.
        let mut pool = of("u", &|r| r == b);
        stored
            .iter()
            .all(|row| match pool.iter().position(|p| p == row) {
                Some(i) => {
                    pool.swap_remove(i);
                    true
                }
                None => false,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tag: &str, text: &str, r: i64) -> (String, String, i64) {
        (tag.into(), text.into(), r)
    }

    #[test]
    fn a_ranked_query_names_its_order_by_outputs() {
        let r = ranked(
            "SELECT k, sum(v) AS total FROM a GROUP BY k ORDER BY total DESC, 1 NULLS FIRST LIMIT 3",
            &["k".into(), "total".into()],
        )
        .unwrap();
        assert_eq!(
            r.order,
            vec![(1, " DESC".into()), (0, " NULLS FIRST".into())]
        );
        assert_eq!(r.unlimited, "SELECT k, sum(v) AS total FROM a GROUP BY k");
        assert!(ranked("SELECT k FROM a ORDER BY k", &["k".into()]).is_none());
        assert!(ranked("SELECT k FROM a ORDER BY v LIMIT 1", &["k".into()]).is_none());
        // Parenthesised, the inner query is the limited one.
        let r = ranked(
            "(SELECT k, v FROM a ORDER BY v LIMIT 3)",
            &["k".into(), "v".into()],
        )
        .unwrap();
        assert_eq!(r.order, vec![(1, String::new())]);
        let r = ranked(
            "WITH x AS (SELECT k, v FROM a) (SELECT k, v FROM x ORDER BY v LIMIT 3)",
            &["k".into(), "v".into()],
        )
        .unwrap();
        assert!(r.unlimited.starts_with("WITH x AS"), "{}", r.unlimited);
        // After a `*`, positions of expressions are unknown: no ranking
        // (a strict comparison) rather than ranking by the wrong column.
        let names: Vec<String> = ["k", "v", "s", "k1"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(ranked(
            "SELECT *, k + 1 AS k1 FROM a ORDER BY k + 1 LIMIT 2",
            &names
        )
        .is_none());
        assert!(ranked("SELECT *, k + 1 AS k1 FROM a ORDER BY k1 LIMIT 2", &names).is_some());
    }

    #[test]
    fn ties_at_the_first_kept_rank_under_offset_and_short_results() {
        // OFFSET 1 LIMIT 2 over ranks 1, 2, 2, 3: the query keeps one row
        // ranked 2 and the one ranked 3, or both rows ranked 2.
        let u = [
            t("u", "(1)", 1),
            t("u", "(2,a)", 2),
            t("u", "(2,b)", 2),
            t("u", "(3)", 3),
        ];
        let with = |rows: &[(String, String, i64)]| {
            let mut v = u.to_vec();
            v.extend_from_slice(rows);
            judge(&v)
        };
        let f23 = [t("f", "(2,a)", 2), t("f", "(3)", 3)];
        assert!(with(
            &[f23.clone(), [t("s", "(2,b)", 2), t("s", "(3)", 3)]].concat()
        ));
        assert!(!with(
            &[f23.clone(), [t("s", "(1)", 1), t("s", "(3)", 3)]].concat()
        ));
        let f22 = [t("f", "(2,a)", 2), t("f", "(2,b)", 2)];
        assert!(with(
            &[f22.clone(), [t("s", "(2,b)", 2), t("s", "(2,a)", 2)]].concat()
        ));
        // An empty result keeps nothing; a short one keeps all of it.
        assert!(judge(&[]));
        assert!(!judge(&[t("s", "(1)", 1)]));
        let all: Vec<_> = u.iter().map(|(_, x, r)| t("f", x, *r)).collect();
        assert!(!with(&[all, vec![t("s", "(1)", 1)]].concat()));
    }

    #[test]
    fn another_row_tied_at_the_last_rank_is_accepted() {
        // Query keeps (1) and one of the two rows ranked 2.
        let rows = [
            t("f", "(1)", 1),
            t("f", "(2,a)", 2),
            t("u", "(1)", 1),
            t("u", "(2,a)", 2),
            t("u", "(2,b)", 2),
            t("u", "(3)", 3),
            t("s", "(1)", 1),
            t("s", "(2,b)", 2),
        ];
        assert!(judge(&rows));
    }

    #[test]
    fn a_wrong_row_before_the_last_rank_or_a_row_not_in_the_query_is_refused() {
        let base = [
            t("f", "(1)", 1),
            t("f", "(2,a)", 2),
            t("u", "(1)", 1),
            t("u", "(2,a)", 2),
            t("u", "(2,b)", 2),
        ];
        let with = |extra: &[(String, String, i64)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            judge(&v)
        };
        // A stored row ranked 2 that the query does not return.
        assert!(!with(&[t("s", "(1)", 1), t("s", "(2,z)", 2)]));
        // Two rows at the boundary where the query keeps one.
        assert!(!with(&[
            t("s", "(1)", 1),
            t("s", "(2,a)", 2),
            t("s", "(2,b)", 2)
        ]));
        // The first row missing, a later one kept instead.
        assert!(!with(&[t("s", "(2,a)", 2), t("s", "(2,b)", 2)]));
        // A row ranked after the last kept rank.
        assert!(!with(&[t("s", "(1)", 1), t("s", "(3)", 3)]));
        assert!(with(&[t("s", "(1)", 1), t("s", "(2,a)", 2)]));
    }
}
