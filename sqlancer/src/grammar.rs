//! The query grammar in one place: the constructs the generator can emit,
//! the query AST, its SQL rendering, and its one-step simplifications for
//! the shrinker. Which mode a query gets is the engine's decision, read from
//! it for every case (SQLancer keeps no list of its own).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// A construct a generated query can contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Construct {
    /// `a JOIN b ON ...`
    InnerJoin,
    /// Two or more joins in one FROM.
    MultiWayJoin,
    /// The same table twice in one FROM.
    SelfJoin,
    /// `FROM a, b WHERE ...`
    CommaJoin,
    /// A join condition without equality.
    NonEquiJoin,
    /// IS NULL, IS DISTINCT FROM, OR / NOT over nullable operands.
    NullLogic,
    /// GROUP BY.
    GroupBy,
    /// Aggregates without GROUP BY.
    ScalarAggregate,
    /// An aggregate over an expression, not a bare column.
    AggregateOverExpression,
    /// HAVING.
    Having,
    /// SELECT DISTINCT.
    Distinct,
    /// UNION ALL.
    UnionAll,
    /// A subquery in FROM.
    SubqueryInFrom,
    /// A subquery in FROM that groups, aggregates or is DISTINCT, read
    /// (and sometimes grouped again by its aggregate) outside (edge).
    AggregateInSubquery,
    /// UNION, INTERSECT or EXCEPT, with or without ALL, instead of UNION
    /// ALL (edge).
    SetOperation,
    /// `SELECT DISTINCT ON (...) ... ORDER BY ...` (edge).
    DistinctOn,
    /// `string_agg` / `array_agg` with an ORDER BY over its argument, in
    /// the query's own groups (edge).
    OrderedAggregate,
    /// DISTINCT together with GROUP BY (edge).
    DistinctWithGroupBy,
    /// LEFT JOIN (edge).
    LeftJoin,
    /// RIGHT JOIN (edge).
    RightJoin,
    /// FULL JOIN (edge).
    FullJoin,
    /// EXISTS (edge).
    Exists,
    /// NOT EXISTS (edge).
    NotExists,
    /// `x IN (SELECT ...)` (edge).
    InSubquery,
    /// A scalar subquery in the SELECT list (edge).
    ScalarSubquery,
    /// `x NOT IN (SELECT ...)`, whose NULLs turn every row NULL (edge).
    NotInSubquery,
    /// A scalar subquery compared in WHERE or HAVING, correlated or not (edge).
    ScalarSubqueryInPredicate,
    /// A subquery inside a subquery (edge).
    NestedSubquery,
    /// `ORDER BY ... LIMIT [OFFSET]` on the query: its first rows (edge).
    TopK,
    /// Window functions (`count(*) OVER (PARTITION BY ...)`, `rank() OVER
    /// (ORDER BY ...)`), whose results are determined even with ties (edge).
    WindowFunction,
    /// A second stream table reading the generated one.
    StreamTableOverStreamTable,
    /// A TRUNCATE of a source in the DML stream.
    TruncateSource,
    /// A partitioned source (writes routed to partitions, a DEFAULT one).
    PartitionedSource,
    /// An inheritance parent whose child is written to.
    InheritanceSource,
    /// A source with a json column (no hash function, no equality).
    ColumnWithoutHash,
    /// A second generated query over the same sources, as another stream
    /// table refreshed at different moments: readers of one change buffer
    /// sit at different frontiers.
    SharedChangeBuffer,
    /// The DML stream split over 2 to 4 connections, in seeded
    /// interleavings of their transactions.
    ConcurrentWriters,
}

impl Construct {
    /// Every construct the generator can emit.
    pub const EMITTED: [Construct; 37] = [
        Construct::InnerJoin,
        Construct::MultiWayJoin,
        Construct::SelfJoin,
        Construct::CommaJoin,
        Construct::NonEquiJoin,
        Construct::NullLogic,
        Construct::GroupBy,
        Construct::ScalarAggregate,
        Construct::AggregateOverExpression,
        Construct::Having,
        Construct::Distinct,
        Construct::UnionAll,
        Construct::SubqueryInFrom,
        Construct::AggregateInSubquery,
        Construct::SetOperation,
        Construct::DistinctOn,
        Construct::OrderedAggregate,
        Construct::DistinctWithGroupBy,
        Construct::LeftJoin,
        Construct::RightJoin,
        Construct::FullJoin,
        Construct::Exists,
        Construct::NotExists,
        Construct::InSubquery,
        Construct::ScalarSubquery,
        Construct::NotInSubquery,
        Construct::ScalarSubqueryInPredicate,
        Construct::NestedSubquery,
        Construct::TopK,
        Construct::WindowFunction,
        Construct::StreamTableOverStreamTable,
        Construct::TruncateSource,
        Construct::PartitionedSource,
        Construct::InheritanceSource,
        Construct::ColumnWithoutHash,
        Construct::SharedChangeBuffer,
        Construct::ConcurrentWriters,
    ];
}

/// How a FROM item joins the ones before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinKind {
    /// The first item.
    First,
    /// `, item` (condition in WHERE).
    Comma,
    /// `JOIN item ON cond`.
    Inner(String),
    /// `LEFT JOIN item ON cond`.
    Left(String),
    /// `RIGHT JOIN item ON cond`.
    Right(String),
    /// `FULL JOIN item ON cond`.
    Full(String),
}

/// What a FROM item reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A table.
    Table(String),
    /// A subquery.
    Sub(Box<Select>),
}

/// One FROM item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromItem {
    /// How it joins.
    pub join: JoinKind,
    /// What it reads.
    pub source: Source,
    /// Its alias.
    pub alias: String,
}

/// One SELECT block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Select {
    /// SELECT DISTINCT.
    pub distinct: bool,
    /// `(expression, alias)` pairs.
    pub items: Vec<(String, String)>,
    /// FROM items in order.
    pub from: Vec<FromItem>,
    /// WHERE conjuncts.
    pub filters: Vec<String>,
    /// GROUP BY expressions.
    pub group_by: Vec<String>,
    /// HAVING conjuncts.
    pub having: Vec<String>,
}

impl Select {
    /// The block as SQL.
    pub fn sql(&self) -> String {
        let mut out = String::from("SELECT ");
        if self.distinct {
            out.push_str("DISTINCT ");
        }
        let items: Vec<String> = self
            .items
            .iter()
            .map(|(e, a)| format!("{e} AS {a}"))
            .collect();
        out.push_str(&items.join(", "));
        out.push_str(" FROM ");
        for f in &self.from {
            let src = match &f.source {
                Source::Table(t) => t.clone(),
                Source::Sub(s) => format!("({})", s.sql()),
            };
            match &f.join {
                JoinKind::First => out.push_str(&format!("{src} {}", f.alias)),
                JoinKind::Comma => out.push_str(&format!(", {src} {}", f.alias)),
                JoinKind::Inner(on) => out.push_str(&format!(" JOIN {src} {} ON {on}", f.alias)),
                JoinKind::Left(on) => {
                    out.push_str(&format!(" LEFT JOIN {src} {} ON {on}", f.alias))
                }
                JoinKind::Right(on) => {
                    out.push_str(&format!(" RIGHT JOIN {src} {} ON {on}", f.alias))
                }
                JoinKind::Full(on) => {
                    out.push_str(&format!(" FULL JOIN {src} {} ON {on}", f.alias))
                }
            }
        }
        if !self.filters.is_empty() {
            out.push_str(&format!(" WHERE {}", self.filters.join(" AND ")));
        }
        if !self.group_by.is_empty() {
            out.push_str(&format!(" GROUP BY {}", self.group_by.join(", ")));
        }
        if !self.having.is_empty() {
            out.push_str(&format!(" HAVING {}", self.having.join(" AND ")));
        }
        out
    }

    /// One-step simplifications of this block.
    fn simpler(&self, allow_item_drop: bool) -> Vec<Select> {
        let mut out = Vec::new();
        for i in 0..self.filters.len() {
            let mut s = self.clone();
            s.filters.remove(i);
            out.push(s);
        }
        for i in 0..self.having.len() {
            let mut s = self.clone();
            s.having.remove(i);
            out.push(s);
        }
        if self.distinct {
            let mut s = self.clone();
            s.distinct = false;
            out.push(s);
        }
        if allow_item_drop && self.items.len() > 1 {
            for i in 0..self.items.len() {
                let mut s = self.clone();
                s.items.remove(i);
                out.push(s);
            }
        }
        // Drop a joined item (the database rejects the result if it was referenced).
        for i in 1..self.from.len() {
            let mut s = self.clone();
            s.from.remove(i);
            out.push(s);
        }
        for (i, f) in self.from.iter().enumerate() {
            if let Source::Sub(inner) = &f.source {
                for simpler in inner.simpler(false) {
                    let mut s = self.clone();
                    s.from[i].source = Source::Sub(Box::new(simpler));
                    out.push(s);
                }
            }
        }
        out
    }
}

/// A generated query: SELECT blocks combined with UNION ALL, and the
/// constructs it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Branches (usually one), combined by `set_op`.
    pub branches: Vec<Select>,
    /// What combines the branches: `UNION ALL`, or `UNION`, `INTERSECT`
    /// or `EXCEPT` with or without `ALL`.
    pub set_op: &'static str,
    /// Constructs used.
    pub constructs: BTreeSet<Construct>,
    /// Whether the first output column compares with `=` (may be grouped on).
    pub first_comparable: bool,
    /// ` ORDER BY ... LIMIT n`, ranking the whole query by its outputs.
    pub top: Option<String>,
    /// `SELECT DISTINCT ON (1) ... ORDER BY 1, 2, ...` (one branch, no
    /// `top`): the first row per first output, every output ordered.
    pub distinct_on: bool,
}

impl Query {
    /// The query as SQL.
    pub fn sql(&self) -> String {
        let body = self
            .branches
            .iter()
            .map(|b| b.sql())
            .collect::<Vec<_>>()
            .join(&format!(" {} ", self.set_op));
        if self.distinct_on && self.branches.len() == 1 {
            let order: Vec<String> = (1..=self.branches[0].items.len())
                .map(|i| i.to_string())
                .collect();
            let rest = body.strip_prefix("SELECT ").unwrap_or(&body);
            return format!(
                "SELECT DISTINCT ON (1) {rest} ORDER BY {}",
                order.join(", ")
            );
        }
        match &self.top {
            Some(top) => format!("{body}{top}"),
            None => body,
        }
    }

    /// One-step simplifications, for shrinking: a branch dropped, a filter,
    /// HAVING conjunct, DISTINCT, output column or joined item removed.
    pub fn simpler(&self) -> Vec<Query> {
        let mut out = Vec::new();
        if self.top.is_some() {
            let mut q = self.clone();
            q.top = None;
            out.push(q);
        }
        if self.distinct_on {
            let mut q = self.clone();
            q.distinct_on = false;
            out.push(q);
        }
        if self.branches.len() > 1 {
            for i in 0..self.branches.len() {
                let mut q = self.clone();
                q.branches.remove(i);
                out.push(q);
            }
        }
        let single = self.branches.len() == 1;
        for (i, b) in self.branches.iter().enumerate() {
            for s in b.simpler(single) {
                let mut q = self.clone();
                q.branches[i] = s;
                out.push(q);
            }
        }
        out
    }
}

/// Simplifications of a query as SQL text, for a shrinker that only sees
/// SQL: remembers the AST of every variant it has handed out.
pub struct Simplifier {
    known: RefCell<HashMap<String, Query>>,
}

impl Simplifier {
    /// A simplifier starting from `q`.
    pub fn new(q: &Query) -> Self {
        Simplifier {
            known: RefCell::new(HashMap::from([(q.sql(), q.clone())])),
        }
    }

    /// Also simplify `q` (another query of the same case).
    pub fn with(self, q: &Query) -> Self {
        self.known.borrow_mut().insert(q.sql(), q.clone());
        self
    }

    /// One-step simplifications of the query whose SQL is `sql` (none for
    /// SQL this simplifier did not produce).
    pub fn variants(&self, sql: &str) -> Vec<String> {
        let Some(q) = self.known.borrow().get(sql).cloned() else {
            return Vec::new();
        };
        q.simpler()
            .into_iter()
            .map(|s| {
                let text = s.sql();
                self.known.borrow_mut().insert(text.clone(), s);
                text
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Query {
        Query {
            branches: vec![Select {
                distinct: true,
                items: vec![("a.c0".into(), "o0".into()), ("b.c1".into(), "o1".into())],
                from: vec![
                    FromItem {
                        join: JoinKind::First,
                        source: Source::Table("t0".into()),
                        alias: "a".into(),
                    },
                    FromItem {
                        join: JoinKind::Inner("a.c0 = b.c0".into()),
                        source: Source::Table("t1".into()),
                        alias: "b".into(),
                    },
                ],
                filters: vec!["a.c0 > 1".into(), "b.c1 IS NULL".into()],
                group_by: vec![],
                having: vec![],
            }],
            set_op: "UNION ALL",
            constructs: BTreeSet::new(),
            first_comparable: true,
            top: Some(" ORDER BY 1 DESC LIMIT 3".into()),
            distinct_on: false,
        }
    }

    #[test]
    fn renders_sql() {
        assert_eq!(
            sample().sql(),
            "SELECT DISTINCT a.c0 AS o0, b.c1 AS o1 FROM t0 a JOIN t1 b ON a.c0 = b.c0 \
             WHERE a.c0 > 1 AND b.c1 IS NULL ORDER BY 1 DESC LIMIT 3"
        );
    }

    #[test]
    fn every_simplification_is_shorter() {
        let q = sample();
        let simpler = q.simpler();
        assert!(simpler.len() >= 5);
        for s in simpler {
            assert!(s.sql().len() < q.sql().len(), "{}", s.sql());
        }
    }

    #[test]
    fn the_simplifier_follows_its_own_variants() {
        let q = sample();
        let s = Simplifier::new(&q);
        let first = s.variants(&q.sql());
        assert!(!first.is_empty());
        assert!(!s.variants(&first[0]).is_empty());
        assert!(s.variants("SELECT 1").is_empty());
    }

    #[test]
    fn every_construct_is_emitted() {
        assert_eq!(Construct::EMITTED.len(), 37);
    }
}
