//! The seeded query generator: shapes inside the engine's DIFFERENTIAL
//! grammar (joins of every kind, NULL logic, aggregates over expressions,
//! GROUP BY and HAVING, DISTINCT, UNION ALL, subqueries in FROM) and, about
//! a quarter of the time, at its edges (LEFT JOIN, EXISTS, NOT EXISTS, IN,
//! scalar subqueries, DISTINCT with GROUP BY). Expressions are typed by
//! family so PostgreSQL accepts nearly everything generated, and they avoid
//! division and casts so no query can fail at run time.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::grammar::{Construct, FromItem, JoinKind, Query, Select, Source};
use crate::schema::{literal, Family, Schema, Table, Ty};

/// A column visible in a scope: `alias.name` with its type.
#[derive(Debug, Clone)]
struct Col {
    expr: String,
    ty: Ty,
}

struct Gen<'a> {
    rng: &'a mut ChaCha8Rng,
    schema: &'a Schema,
    used: BTreeSet<Construct>,
    aliases: usize,
}

impl Gen<'_> {
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("r{}", self.aliases)
    }

    fn table(&mut self) -> Table {
        self.schema.tables.choose(self.rng).expect("tables").clone()
    }

    fn cols_of(alias: &str, t: &Table) -> Vec<Col> {
        t.columns
            .iter()
            .map(|c| Col {
                expr: format!("{alias}.{}", c.name),
                ty: c.ty,
            })
            .collect()
    }

    fn of_family(scope: &[Col], f: Family) -> Vec<Col> {
        scope
            .iter()
            .filter(|c| c.ty.family() == f)
            .cloned()
            .collect()
    }

    /// An expression of family `f` over `scope` (a literal when none fits).
    fn expr(&mut self, scope: &[Col], f: Family) -> String {
        let cols = Self::of_family(scope, f);
        let Some(c) = cols.choose(self.rng).cloned() else {
            return match f {
                Family::Num => "1".into(),
                Family::Text => "'k'".into(),
                Family::Bool => "true".into(),
                Family::Date => "DATE '2024-01-01'".into(),
                Family::Json => "'null'::json".into(),
            };
        };
        match (f, self.rng.gen_range(0..6)) {
            (Family::Num, 0) => format!("({} + {})", c.expr, self.rng.gen_range(1..4)),
            (Family::Num, 1) => format!("({} * 2)", c.expr),
            (Family::Num, 2) => format!("abs({} - 3)", c.expr),
            (Family::Num, 3) => format!("coalesce({}, 0)", c.expr),
            (Family::Text, 0) => format!("upper({})", c.expr),
            (Family::Text, 1) => format!("({} || 'z')", c.expr),
            (Family::Text, 2) => format!("coalesce({}, 'none')", c.expr),
            (Family::Bool, 0) => format!("(NOT {})", c.expr),
            (Family::Date, 0) => format!("({} + 1)", c.expr),
            _ => c.expr,
        }
    }

    fn literal_for(&mut self, c: &Col) -> String {
        literal(self.rng, c.ty, false)
    }

    /// A predicate over `scope`.
    fn predicate(&mut self, scope: &[Col], depth: usize) -> String {
        let c = scope.choose(self.rng).expect("scope").clone();
        let roll = self.rng.gen_range(0..10);
        if !c.ty.comparable() {
            // json has no equality: it can only be tested for NULL.
            self.used.insert(Construct::NullLogic);
            let not = if roll % 2 == 0 { " NOT" } else { "" };
            return format!("{} IS{not} NULL", c.expr);
        }
        if depth < 2 && roll < 2 {
            self.used.insert(Construct::NullLogic);
            let a = self.predicate(scope, depth + 1);
            let b = self.predicate(scope, depth + 1);
            return if roll == 0 {
                format!("({a} OR {b})")
            } else {
                format!("(NOT ({a}) OR {b})")
            };
        }
        match roll {
            2 => {
                self.used.insert(Construct::NullLogic);
                format!("{} IS NULL", c.expr)
            }
            3 => {
                self.used.insert(Construct::NullLogic);
                format!("{} IS NOT NULL", c.expr)
            }
            4 => {
                self.used.insert(Construct::NullLogic);
                let l = self.literal_for(&c);
                format!("{} IS DISTINCT FROM {l}", c.expr)
            }
            5 if c.ty.family() != Family::Bool => {
                let a = self.literal_for(&c);
                let b = self.literal_for(&c);
                format!("{} IN ({a}, {b})", c.expr)
            }
            6 if c.ty.family() == Family::Num => {
                let a = self.literal_for(&c);
                format!("{} >= {a}", c.expr)
            }
            7 => {
                // Compare two columns of one family.
                let same = Self::of_family(scope, c.ty.family());
                let d = same.choose(self.rng).expect("itself at least").clone();
                let op = if c.ty.family() == Family::Bool {
                    "="
                } else {
                    "<="
                };
                format!("{} {op} {}", c.expr, d.expr)
            }
            _ => {
                let l = self.literal_for(&c);
                let op = if c.ty.family() == Family::Bool {
                    "="
                } else {
                    "<>"
                };
                format!("{} {op} {l}", c.expr)
            }
        }
    }

    /// FROM items for `n` tables joined in random ways; returns the scope.
    fn from(&mut self, n: usize, filters: &mut Vec<String>) -> (Vec<FromItem>, Vec<Col>) {
        let mut items = Vec::new();
        let mut scope = Vec::new();
        let mut tables = Vec::new();
        // After a comma, later items are commas too: `a, b JOIN c ON a.x = c.x`
        // is invalid because JOIN binds tighter than the comma.
        let mut comma = false;
        for i in 0..n {
            let t = self.table();
            if tables.contains(&t.name) {
                self.used.insert(Construct::SelfJoin);
            }
            tables.push(t.name.clone());
            let alias = self.alias();
            let cols = Self::cols_of(&alias, &t);
            let join = if i == 0 {
                JoinKind::First
            } else {
                // RIGHT and FULL only join the first item: the side they
                // pad is then one relation, as the engine maintains.
                let kind = match if comma { 0 } else { self.rng.gen_range(0..12) } {
                    10..=11 if i > 1 => 3,
                    k => k,
                };
                // FULL JOIN needs a merge- or hash-joinable condition.
                let cond = self.join_condition(&scope, &cols, kind == 11);
                match kind {
                    0..=1 => {
                        comma = true;
                        self.used.insert(Construct::CommaJoin);
                        filters.push(cond);
                        JoinKind::Comma
                    }
                    2 => {
                        self.used.insert(Construct::LeftJoin);
                        JoinKind::Left(cond)
                    }
                    10 => {
                        self.used.insert(Construct::RightJoin);
                        JoinKind::Right(cond)
                    }
                    11 => {
                        self.used.insert(Construct::FullJoin);
                        JoinKind::Full(cond)
                    }
                    _ => {
                        self.used.insert(Construct::InnerJoin);
                        JoinKind::Inner(cond)
                    }
                }
            };
            if i >= 2 {
                self.used.insert(Construct::MultiWayJoin);
            }
            items.push(FromItem {
                join,
                source: Source::Table(t.name.clone()),
                alias,
            });
            scope.extend(cols);
        }
        (items, scope)
    }

    fn join_condition(&mut self, left: &[Col], right: &[Col], equi: bool) -> String {
        // Every table has an int c0, so an equi-join on c0 always type-checks.
        let l = left
            .iter()
            .filter(|c| c.ty.family() == Family::Num)
            .collect::<Vec<_>>()
            .choose(self.rng)
            .map(|c| c.expr.clone())
            .unwrap_or_else(|| left[0].expr.clone());
        let r = right
            .iter()
            .find(|c| c.expr.ends_with(".c0"))
            .map(|c| c.expr.clone())
            .unwrap_or_else(|| right[0].expr.clone());
        match self.rng.gen_range(if equi { 2 } else { 0 }..8) {
            0 => {
                self.used.insert(Construct::NonEquiJoin);
                format!("{l} < {r}")
            }
            1 => {
                self.used.insert(Construct::NonEquiJoin);
                format!("{l} <> {r} AND {r} < 3")
            }
            2 => format!("{l} = {r} AND {}", self.predicate(right, 1)),
            _ => format!("{l} = {r}"),
        }
    }

    /// `n` output expressions; with `keys`, only of comparable types (they
    /// are grouped on or made DISTINCT).
    fn items(&mut self, scope: &[Col], n: usize, keys: bool) -> Vec<(String, String, Family)> {
        let comparable: Vec<Col> = scope
            .iter()
            .filter(|c| c.ty.comparable())
            .cloned()
            .collect();
        let pool = if keys && !comparable.is_empty() {
            comparable
        } else {
            scope.to_vec()
        };
        (0..n)
            .map(|i| {
                let c = pool.choose(self.rng).expect("scope").clone();
                let f = c.ty.family();
                let e = self.expr(scope, f);
                (e, format!("o{i}"), f)
            })
            .collect()
    }

    fn aggregate(&mut self, scope: &[Col], i: usize) -> (String, String, Family) {
        let c = scope.choose(self.rng).expect("scope").clone();
        let f = c.ty.family();
        let arg = if self.rng.gen_bool(0.4) {
            self.used.insert(Construct::AggregateOverExpression);
            self.expr(scope, f)
        } else {
            c.expr.clone()
        };
        let (e, fam) = match (f, self.rng.gen_range(0..7)) {
            (_, 0) => ("count(*)".to_string(), Family::Num),
            (Family::Json, _) | (_, 1) => (format!("count({arg})"), Family::Num),
            (Family::Num, 2) => (format!("sum({arg})"), Family::Num),
            (Family::Num, 3) => (format!("avg({arg})"), Family::Num),
            (Family::Bool, 2) => (format!("bool_and({arg})"), Family::Bool),
            (Family::Bool, _) => (format!("bool_or({arg})"), Family::Bool),
            (Family::Num, 5) => {
                let spread =
                    ["variance", "var_pop", "stddev", "stddev_pop"][self.rng.gen_range(0..4)];
                (format!("{spread}({arg})"), Family::Num)
            }
            (_, 4) => (format!("min({arg})"), f),
            _ => (format!("max({arg})"), f),
        };
        (e, format!("a{i}"), fam)
    }

    /// `string_agg` or `array_agg` of a column's text, ordered by that text
    /// so that the order of tied rows cannot show (text equal under the
    /// collation is equal byte for byte).
    fn ordered_aggregate(&mut self, scope: &[Col], i: usize) -> (String, String, Family) {
        self.used.insert(Construct::OrderedAggregate);
        let c = scope.choose(self.rng).expect("scope").clone();
        let arg = format!("({})::text", c.expr);
        let direction = ["", " DESC", " NULLS FIRST", " DESC NULLS LAST"][self.rng.gen_range(0..4)];
        let e = if self.rng.gen_bool(0.5) {
            format!("string_agg({arg}, ',' ORDER BY {arg}{direction})")
        } else {
            format!("array_agg({arg} ORDER BY {arg}{direction})")
        };
        (e, format!("a{i}"), Family::Text)
    }

    /// A plain or grouped block over 1 to 3 tables, with its output families.
    /// `top`: the block is the query itself, whose groups are recomputed as
    /// written, so that it may hold an ordered aggregate (refused in a
    /// subquery or a set-operation branch).
    fn block(&mut self, grouped: bool, top: bool) -> (Select, Vec<Family>) {
        let n = *[1, 1, 2, 2, 2, 3].choose(self.rng).expect("sizes");
        let mut filters = Vec::new();
        let (from, scope) = self.from(n, &mut filters);
        for _ in 0..self.rng.gen_range(0..3) {
            filters.push(self.predicate(&scope, 0));
        }
        let mut s = Select {
            from,
            filters,
            ..Select::default()
        };
        let mut families = Vec::new();
        if grouped {
            let keys = self.rng.gen_range(0..3);
            if keys == 0 {
                self.used.insert(Construct::ScalarAggregate);
            } else {
                self.used.insert(Construct::GroupBy);
            }
            for (e, a, f) in self.items(&scope, keys, true) {
                s.group_by.push(e.clone());
                s.items.push((e, a));
                families.push(f);
            }
            for i in 0..self.rng.gen_range(1..=3) {
                let (e, a, f) = self.aggregate(&scope, i);
                s.items.push((e, a));
                families.push(f);
            }
            if top && self.rng.gen_ratio(1, 4) {
                let (e, a, f) = self.ordered_aggregate(&scope, s.items.len());
                s.items.push((e, a));
                families.push(f);
            }
            if keys > 0 && self.rng.gen_bool(0.3) {
                self.used.insert(Construct::Having);
                let (agg, _, _) = self.aggregate(&scope, 9);
                let cond = if agg.starts_with("bool_") {
                    agg
                } else if agg.starts_with("count") {
                    format!("{agg} > 1")
                } else {
                    format!("{agg} IS NOT NULL")
                };
                s.having.push(cond);
            }
            if keys > 0 && self.rng.gen_ratio(1, 10) {
                self.used.insert(Construct::DistinctWithGroupBy);
                s.distinct = true;
            }
        } else {
            let k = self.rng.gen_range(1..=4);
            let distinct = self.rng.gen_ratio(1, 5);
            for (e, a, f) in self.items(&scope, k, distinct) {
                s.items.push((e, a));
                families.push(f);
            }
            if distinct && families.iter().all(|f| *f != Family::Json) {
                self.used.insert(Construct::Distinct);
                s.distinct = true;
            }
        }
        (s, families)
    }

    /// An edge construct added to `s`: EXISTS, NOT EXISTS, [NOT] IN, a
    /// scalar subquery (in the select list, WHERE or HAVING), correlated or
    /// not, sometimes with a subquery of its own.
    fn edge(&mut self, s: &mut Select, grouped: bool) {
        let outer = s.from[0].alias.clone();
        let t = self.table();
        let a = self.alias();
        let corr = format!("{a}.c0 = {outer}.c0");
        if grouped && self.rng.gen_bool(0.5) {
            self.grouped_edge(s, &outer, &t.name, &a, &corr);
            return;
        }
        match self.rng.gen_range(0..4) {
            0 => {
                self.used.insert(Construct::Exists);
                s.filters.push(format!(
                    "EXISTS (SELECT 1 FROM {} {a} WHERE {corr})",
                    t.name
                ));
            }
            1 => {
                self.used.insert(Construct::NotExists);
                s.filters.push(format!(
                    "NOT EXISTS (SELECT 1 FROM {} {a} WHERE {corr})",
                    t.name
                ));
            }
            2 => {
                self.used.insert(Construct::InSubquery);
                s.filters
                    .push(format!("{outer}.c0 IN (SELECT {a}.c0 FROM {} {a})", t.name));
            }
            _ if !grouped => {
                self.used.insert(Construct::ScalarSubquery);
                s.items.push((
                    format!("(SELECT count(*) FROM {} {a} WHERE {corr})", t.name),
                    "sq".into(),
                ));
            }
            _ => {
                self.used.insert(Construct::Exists);
                s.filters.push(format!(
                    "EXISTS (SELECT 1 FROM {} {a} WHERE {corr})",
                    t.name
                ));
            }
        }
    }
}

impl Gen<'_> {
    /// The subquery edges a grouped query maintains differentially.
    fn grouped_edge(&mut self, s: &mut Select, outer: &str, t: &str, a: &str, corr: &str) {
        // Now and then the subquery filters its rows with one of its own.
        let nested = if self.rng.gen_bool(0.3) {
            self.used.insert(Construct::NestedSubquery);
            let u = self.table();
            let b = self.alias();
            if self.rng.gen_bool(0.5) {
                format!(
                    " AND EXISTS (SELECT 1 FROM {} {b} WHERE {b}.c0 = {a}.c0)",
                    u.name
                )
            } else {
                format!(" AND {a}.c0 NOT IN (SELECT {b}.c0 FROM {} {b})", u.name)
            }
        } else {
            String::new()
        };
        match self.rng.gen_range(0..5) {
            0 => {
                self.used.insert(Construct::NotInSubquery);
                s.filters.push(format!(
                    "{outer}.c0 NOT IN (SELECT {a}.c0 FROM {t} {a} WHERE true{nested})"
                ));
            }
            1 => {
                self.used.insert(Construct::ScalarSubqueryInPredicate);
                s.filters.push(format!(
                    "{outer}.c0 >= (SELECT min({a}.c0) FROM {t} {a} WHERE {corr}{nested})"
                ));
            }
            2 => {
                self.used.insert(Construct::ScalarSubqueryInPredicate);
                s.filters.push(format!(
                    "{outer}.c0 < (SELECT max({a}.c0) + 1 FROM {t} {a} WHERE true{nested})"
                ));
            }
            3 if !s.group_by.is_empty() => {
                self.used.insert(Construct::ScalarSubqueryInPredicate);
                s.having.push(format!(
                    "count(*) >= (SELECT count(*) FROM {t} {a} WHERE {a}.c0 IS NULL{nested})"
                ));
            }
            _ => {
                self.used.insert(Construct::InSubquery);
                s.filters.push(format!(
                    "{outer}.c0 IN (SELECT {a}.c0 FROM {t} {a} WHERE {a}.c0 IS NOT NULL{nested})"
                ));
            }
        }
    }
}

/// Generate one query over `schema`.
pub fn query(rng: &mut ChaCha8Rng, schema: &Schema) -> Query {
    let mut g = Gen {
        rng,
        schema,
        used: BTreeSet::new(),
        aliases: 0,
    };
    let shape = g.rng.gen_range(0..10);
    let first_family;
    let mut all_comparable = false;
    let mut set_op = "UNION ALL";
    let mut branches = match shape {
        0..=6 => {
            let (b, families) = g.block(shape >= 4, true);
            first_family = families.first().copied().unwrap_or(Family::Num);
            all_comparable = families.iter().all(|f| *f != Family::Json);
            vec![b]
        }
        7 => {
            // UNION ALL of two plain blocks with matching column families.
            g.used.insert(Construct::UnionAll);
            let (mut first, families) = g.block(false, false);
            first_family = families.first().copied().unwrap_or(Family::Num);
            first.distinct = false;
            let mut filters = Vec::new();
            let n = g.rng.gen_range(1..=2);
            let (from, scope) = g.from(n, &mut filters);
            let items = first
                .items
                .iter()
                .zip(&families)
                .map(|((_, a), f)| (g.expr(&scope, *f), a.clone()))
                .collect();
            let second = Select {
                items,
                from,
                filters,
                ..Select::default()
            };
            // Sometimes another set operation: its rows compare by
            // equality, which json has not.
            if families.iter().all(|f| *f != Family::Json) && g.rng.gen_ratio(1, 3) {
                g.used.insert(Construct::SetOperation);
                set_op = *[
                    "UNION",
                    "INTERSECT",
                    "EXCEPT",
                    "INTERSECT ALL",
                    "EXCEPT ALL",
                ]
                .choose(g.rng)
                .expect("operators");
            }
            vec![first, second]
        }
        _ => {
            // A subquery in FROM, filtered or aggregated outside; half of
            // them group themselves (the outer query may then group by
            // one of their aggregates, as TPC-H Q13 does).
            g.used.insert(Construct::SubqueryInFrom);
            let grouped = g.rng.gen_bool(0.5);
            let (inner, families) = g.block(grouped, false);
            first_family = families.first().copied().unwrap_or(Family::Num);
            if grouped || inner.distinct {
                g.used.insert(Construct::AggregateInSubquery);
            }
            let alias = g.alias();
            let scope: Vec<Col> = inner
                .items
                .iter()
                .zip(&families)
                .map(|((_, a), f)| Col {
                    expr: format!("{alias}.{a}"),
                    ty: ty_of_family(*f),
                })
                .collect();
            let mut outer = Select {
                from: vec![FromItem {
                    join: JoinKind::First,
                    source: Source::Sub(Box::new(inner)),
                    alias,
                }],
                ..Select::default()
            };
            if g.rng.gen_bool(0.5) && scope[0].ty.comparable() {
                g.used.insert(Construct::GroupBy);
                let key = scope[0].expr.clone();
                outer.group_by.push(key.clone());
                outer.items.push((key, "k".into()));
                let (e, a, _) = g.aggregate(&scope, 0);
                outer.items.push((e, a));
            } else {
                outer.items = scope
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.expr.clone(), format!("o{i}")))
                    .collect();
                outer.filters.push(g.predicate(&scope, 0));
            }
            vec![outer]
        }
    };
    if branches.len() == 1 && g.rng.gen_ratio(1, 5) {
        let b = &mut branches[0];
        if !matches!(b.from[0].source, Source::Sub(_)) {
            g.edge(b, (4..=6).contains(&shape));
        }
    }
    let first_comparable = first_family != Family::Json;
    // Window functions over a block without grouping, by its first output.
    if branches.len() == 1
        && first_comparable
        && !g.used.contains(&Construct::ScalarAggregate)
        && g.rng.gen_ratio(1, 6)
    {
        let b = &mut branches[0];
        if !b.distinct && b.group_by.is_empty() && b.having.is_empty() {
            g.used.insert(Construct::WindowFunction);
            let key = b.items[0].0.clone();
            let n = b.items.len();
            b.items.push((
                format!("count(*) OVER (PARTITION BY {key})"),
                format!("w{n}"),
            ));
            if g.rng.gen_bool(0.5) {
                b.items.push((
                    format!("rank() OVER (ORDER BY {key} DESC)"),
                    format!("w{}", n + 1),
                ));
            }
        }
    }
    // Its first rows: ties are common (small domains), which the oracle
    // accepts only as SQL allows.
    let top = (first_comparable && g.rng.gen_ratio(1, 6)).then(|| {
        g.used.insert(Construct::TopK);
        let direction = ["", " DESC", " NULLS FIRST", " DESC NULLS LAST"][g.rng.gen_range(0..4)];
        let offset = if g.rng.gen_ratio(1, 4) {
            " OFFSET 1"
        } else {
            ""
        };
        format!(
            " ORDER BY 1{direction} LIMIT {}{offset}",
            g.rng.gen_range(1..=5)
        )
    });
    // The first row per first output, every output ordered so that the
    // row kept is decided (json cannot be ordered).
    let distinct_on = top.is_none()
        && all_comparable
        && branches.len() == 1
        && !branches[0].distinct
        && branches[0].group_by.is_empty()
        && !branches[0].items[0].0.contains("SELECT")
        && !g.used.contains(&Construct::ScalarAggregate)
        && !g.used.contains(&Construct::WindowFunction)
        && g.rng.gen_ratio(1, 8);
    if distinct_on {
        g.used.insert(Construct::DistinctOn);
    }
    Query {
        branches,
        set_op,
        distinct_on,
        constructs: g.used,
        first_comparable,
        top,
    }
}

fn ty_of_family(f: Family) -> Ty {
    match f {
        Family::Num => Ty::Numeric,
        Family::Text => Ty::Text,
        Family::Bool => Ty::Bool,
        Family::Date => Ty::Date,
        Family::Json => Ty::Json,
    }
}
