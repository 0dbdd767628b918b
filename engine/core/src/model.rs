//! The model delta-SQL generation works on: what analysis makes of a
//! defining query (linear relations of blocks and FROM occurrences, or a
//! grouped block on a linear input), with its sources and operator tree.

use sqlparser::ast::{Expr, Select, SelectItem};

use crate::catalog::SourceTable;
use crate::ir::OpNode;

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
    /// A subquery in FROM (or a UNION ALL branch) that groups, aggregates
    /// or is DISTINCT: it has no row delta, only the rows of the keys a
    /// change reaches, in their old and new values (see [`Keyed`]).
    Keyed(Box<Keyed>),
}

/// A nested block recomputed by keys: its rows a change may reach are
/// those of the affected keys, recomputed as written over the new state
/// of what it reads and over the old state (every table it names read as
/// it was before the consumed changes).
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The block (grouped, DISTINCT or with window functions).
    pub block: Block,
    /// Its keys: group keys, DISTINCT outputs or shared window partition
    /// keys; empty for a scalar aggregate (one row, reached by any change).
    pub keys: Vec<Expr>,
    /// Every relation its text names (as written, at any depth) with its
    /// source (index into [`Analysis::sources`]): what the old state
    /// replaces.
    pub tables: Vec<(String, usize)>,
    /// Whether each key is an array (or a domain over one), as the
    /// extension asked PostgreSQL; empty until asked. Only a key known not
    /// to be one narrows its tables' old states by `= ANY (ARRAY(...))`
    /// (see `delta/narrowing.rs`), which would nest an array's values.
    pub key_arrays: Vec<bool>,
}

impl Keyed {
    /// Whether the subquery's rows are a function of the rows it reads
    /// alone, so that recomputing them over the old state gives back the
    /// rows an earlier refresh saw: grouped or DISTINCT, without window
    /// functions, `DISTINCT ON` or a `LIMIT` at any depth, and every
    /// aggregate other than `count`, `bool_and`, `bool_or` and `every` a
    /// whole output of its own. (A subquery's aggregates are
    /// order-insensitive ones, but a floating-point sum is not: the
    /// extension refuses one as an output, and one used otherwise, as in
    /// `HAVING sum(f) > 0.6` or `round(sum(f))`, has no type it checks.)
    /// Its delta is then exact: its rows of the keys a change reaches,
    /// new ones minus old ones.
    pub fn deterministic(&self) -> bool {
        struct OrderDependent {
            outputs: Vec<String>,
            found: bool,
        }
        impl sqlparser::ast::Visitor for OrderDependent {
            type Break = ();
            fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
                if q.limit_clause.is_some() || q.fetch.is_some() {
                    self.found = true;
                }
                std::ops::ControlFlow::Continue(())
            }
            fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
                if let Expr::Function(f) = e {
                    let name = f.name.to_string().to_ascii_lowercase();
                    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
                    let aggregate = crate::analyze::SUPPORTED_AGGREGATES.contains(&name);
                    let any_order = matches!(name, "count" | "bool_and" | "bool_or" | "every");
                    if f.over.is_some()
                        || (aggregate && !any_order && !self.outputs.contains(&e.to_string()))
                    {
                        self.found = true;
                    }
                }
                std::ops::ControlFlow::Continue(())
            }
        }
        let mut found = OrderDependent {
            outputs: self
                .block
                .output_exprs()
                .iter()
                .map(Expr::to_string)
                .collect(),
            found: false,
        };
        let _ = sqlparser::ast::Visit::visit(&self.block.select, &mut found);
        self.block.order.is_none() && !found.found
    }
}

impl Rel {
    /// Output column names (the first branch's, for UNION ALL).
    pub fn outputs(&self) -> &[String] {
        match self {
            Rel::Block(b) => &b.outputs,
            Rel::UnionAll(branches) => branches[0].outputs(),
            Rel::Keyed(k) => &k.block.outputs,
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
    /// Each FROM occurrence's alias and columns, in `occs` order: the names
    /// the block's expressions resolve against.
    pub scope: Vec<(String, Vec<String>)>,
    /// The outermost subqueries in the block's expressions (WHERE, HAVING,
    /// the select list), with how a change to what they read reaches the
    /// block's rows. Only a grouped (or DISTINCT) block, or a subquery's
    /// own block, has any.
    pub subs: Vec<ExprSub>,
    /// The block's outer joins, in the canonical order of its joins. A
    /// block with any is kept by the rows its changes reach, like one
    /// with subqueries in its expressions.
    pub outer: Vec<OuterJoin>,
    /// The ORDER BY the block is evaluated with (its items as written):
    /// `SELECT DISTINCT ON (...)` keeps each key's first row by it.
    pub order: Option<String>,
}

/// The most FROM occurrences a block with an outer join may have: its
/// delta terms combine every changed occurrence by inclusion-exclusion
/// (2^n - 1 terms), since padding is only right against exact states.
pub const MAX_OUTER_JOIN_OCCURRENCES: usize = 6;

/// A LEFT, RIGHT or FULL join of a block: which occurrences its sides
/// hold and which side's unmatched rows it keeps, NULL-padded.
#[derive(Debug, Clone)]
pub struct OuterJoin {
    /// Position among the block's joins (the canonical order of
    /// `analyze::for_each_join_mut`).
    pub join: usize,
    /// The occurrences (indexes into [`Block::occs`]) left of the join.
    pub left: std::ops::Range<usize>,
    /// The occurrences right of the join.
    pub right: std::ops::Range<usize>,
    /// The left side's unmatched rows are kept (LEFT and FULL).
    pub keeps_left: bool,
    /// The right side's unmatched rows are kept (RIGHT and FULL).
    pub keeps_right: bool,
    /// The ON condition.
    pub on: Expr,
}

impl Rel {
    /// Every source the relation reads (indexes into [`Analysis::sources`]),
    /// subqueries included, possibly repeated.
    pub fn sources(&self) -> Vec<usize> {
        match self {
            Rel::Block(b) => b.sources(),
            Rel::UnionAll(branches) => branches.iter().flat_map(Rel::sources).collect(),
            Rel::Keyed(k) => k.block.sources(),
        }
    }

    /// The relation's SQL as written (its blocks after analysis' rewrites).
    pub fn sql(&self) -> String {
        match self {
            Rel::Block(b) => b.select.to_string(),
            Rel::UnionAll(branches) => branches
                .iter()
                .map(|b| format!("({})", b.sql()))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
            Rel::Keyed(k) => k.block.select.to_string(),
        }
    }

    /// Whether a block of the relation, or of a subquery in its FROM,
    /// holds a subquery in an expression or an outer join, or the
    /// relation is (or holds) a [`Keyed`] one: its changes are then known
    /// only as the rows they may reach (see [`ExprSub`], [`OuterJoin`]
    /// and [`Keyed`]), not exactly.
    pub fn reached_only(&self) -> bool {
        match self {
            Rel::Block(b) => b.reached_only(),
            Rel::UnionAll(branches) => branches.iter().any(Rel::reached_only),
            Rel::Keyed(_) => true,
        }
    }

    /// Whether the relation's delta is exact: as `!reached_only()`, except
    /// that a [`Keyed`] subquery whose rows are deterministic (see
    /// [`Keyed::deterministic`]) is exact too, its delta being its new rows
    /// minus its old ones for the keys a change reaches.
    pub fn delta_is_exact(&self) -> bool {
        match self {
            Rel::Block(b) => b.delta_is_exact(),
            Rel::UnionAll(branches) => branches.iter().all(Rel::delta_is_exact),
            Rel::Keyed(k) => k.deterministic(),
        }
    }
}

impl Block {
    /// Whether the block, or a subquery in its FROM, holds a subquery in
    /// an expression or an outer join (see [`Rel::reached_only`]).
    pub fn reached_only(&self) -> bool {
        !self.subs.is_empty()
            || !self.outer.is_empty()
            || self.occs.iter().any(|o| match o {
                Occ::Sub { rel, .. } => rel.reached_only(),
                Occ::Source { .. } | Occ::Invariant => false,
            })
    }

    /// Whether the block's delta is exact (see [`Rel::delta_is_exact`]):
    /// also when its subqueries in expressions only filter its rows (see
    /// `delta::filters`).
    pub fn delta_is_exact(&self) -> bool {
        (self.subs.is_empty() || crate::delta::filters::only_filters(self))
            && self.outer.is_empty()
            && self.occs.iter().all(|o| match o {
                Occ::Sub { rel, .. } => rel.delta_is_exact(),
                Occ::Source { .. } | Occ::Invariant => true,
            })
    }

    /// The expressions of the select list, in order (wildcards are
    /// expanded by analysis, so there is one per output).
    pub fn output_exprs(&self) -> Vec<Expr> {
        self.select
            .projection
            .iter()
            .filter_map(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    Some(e.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Every source the block reads (indexes into [`Analysis::sources`]):
    /// its FROM occurrences and its subqueries, possibly repeated.
    pub fn sources(&self) -> Vec<usize> {
        let from = self.occs.iter().flat_map(|o| match o {
            Occ::Source { source } => vec![*source],
            Occ::Sub { rel, .. } => rel.sources(),
            Occ::Invariant => Vec::new(),
        });
        from.chain(self.subs.iter().flat_map(|s| s.sources.iter().copied()))
            .collect()
    }
}

/// A subquery inside an expression (EXISTS, IN, a scalar subquery, ANY):
/// what it reads and which rows of the enclosing block a change to that
/// can affect. A grouped block recomputes the groups of those rows, with
/// the subquery evaluated as written.
#[derive(Debug, Clone)]
pub struct ExprSub {
    /// How it was written (`EXISTS`, `NOT IN`, `scalar`, ...), for explain.
    pub kind: String,
    /// The subquery's own block. Its WHERE keeps only the conjuncts over
    /// its own FROM, so that its delta terms run without the enclosing
    /// query.
    pub body: Box<Block>,
    /// How its rows reach the enclosing block's rows.
    pub link: SubLink,
    /// Every source it reads, nested subqueries included.
    pub sources: Vec<usize>,
    /// Whether its rows are aggregated (`GROUP BY`, an aggregate call) or
    /// limited (`LIMIT`, `OFFSET`, `FETCH`): then it is more than a test
    /// of which rows exist.
    pub grouped_or_limited: bool,
    /// For a comparison with a subquery's `sum` or `avg` (see
    /// `delta::filters`): whether their argument sums exactly, which the
    /// extension asks PostgreSQL (not `real` or `double precision`, whose
    /// sums depend on the order rows are added). None until asked.
    pub exact_sums: Option<bool>,
    /// Whether a column it names (in its select list, WHERE or HAVING)
    /// resolves outside its own FROM, or cannot be placed: it is
    /// correlated with the enclosing query, by an equality or otherwise.
    pub correlated: bool,
    /// Whether nothing but its link's equalities correlate it: every
    /// other conjunct of its WHERE, its select list and its HAVING name
    /// only its own FROM. Its result for an enclosing row then depends on
    /// that row's `outer` values alone, and the changes that reach the row
    /// are those of its values (see `delta::filters::lookups`).
    pub only_equalities: bool,
    /// For a link by equalities: whether the two sides of each have one
    /// type, which the extension asks PostgreSQL (`outer = inner` across
    /// two types may match values its inner type tells apart). None until
    /// asked.
    pub same_link_types: Option<bool>,
}

/// How the rows of a subquery reach the rows of the enclosing block.
#[derive(Debug, Clone)]
pub enum SubLink {
    /// Correlated by equalities `inner = outer` in its WHERE: a changed
    /// subquery row can only affect the enclosing rows whose `outer`
    /// values equal its `inner` values (a NULL matches nothing).
    Equal {
        /// Expressions over the subquery's FROM.
        inner: Vec<Expr>,
        /// The matching expressions over the enclosing block's FROM.
        outer: Vec<Expr>,
    },
    /// `outer [NOT] IN (SELECT inner ...)` with no correlating equality:
    /// as [`SubLink::Equal`], except that a changed row whose `inner` is
    /// NULL may change every enclosing row (`NOT IN` turns NULL), and any
    /// change may change those whose `outer` is NULL (the subquery may have
    /// become empty or non-empty).
    In {
        /// The subquery's output expression.
        inner: Box<Expr>,
        /// The tested expression of the enclosing block.
        outer: Box<Expr>,
    },
    /// Not correlated by an equality: any change may affect every row.
    Every,
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
    /// A FROM item without changes of its own: a `VALUES` list, or an
    /// IMMUTABLE set-returning function over constants and the columns of
    /// earlier FROM items (`generate_series(1, t.n)`, `unnest(t.tags)`).
    /// A delta term reads it as written, so it is evaluated over whichever
    /// version of those items the term reads.
    Invariant,
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
        /// The block is not grouped: a query without grouping whose rows
        /// subqueries filter, kept by its rows' values. `keys` are its
        /// outputs, a key may hold several equal rows, and recomputed
        /// keys replace their rows as a bag.
        bag: bool,
        /// `ORDER BY ... LIMIT`: only the first rows are stored (see [`TopK`]).
        top: Option<TopK>,
    },
}

/// A query's `ORDER BY ... LIMIT n [OFFSET m]`: the stored rows are the
/// first `n` after `m` of its result. Rows that sort before the last
/// stored one are exact; of the rows tied with it, as many as fit are
/// stored, whichever they are (SQL leaves their order unspecified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopK {
    /// The ORDER BY items, each an output column.
    pub order: Vec<OrderItem>,
    /// LIMIT.
    pub limit: u64,
    /// OFFSET (0 without one).
    pub offset: u64,
}

/// One ORDER BY item of a [`TopK`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    /// The output column it sorts by (0-based).
    pub output: usize,
    /// `DESC`.
    pub desc: bool,
    /// `NULLS FIRST` (`Some(true)`) or `NULLS LAST`; `None`: the default
    /// for the direction.
    pub nulls_first: Option<bool>,
}

impl TopK {
    /// The ORDER BY list over `names` (SQL column references, one per
    /// output).
    pub fn order_by(&self, names: &[String]) -> String {
        self.order
            .iter()
            .map(|o| {
                let mut item = names[o.output].clone();
                if o.desc {
                    item.push_str(" DESC");
                }
                match o.nulls_first {
                    Some(true) => item.push_str(" NULLS FIRST"),
                    Some(false) => item.push_str(" NULLS LAST"),
                    None => {}
                }
                item
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
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
    /// For a grouped model with an algebraic shape
    /// ([`crate::delta::algebraic::shape`]), the type class of each
    /// aggregate argument, as the extension probed it; empty: not known.
    pub aggregate_arg_types: Vec<crate::delta::algebraic::ArgType>,
    /// Whether the storage holds the support columns
    /// ([`crate::delta::algebraic::support_columns`]): only then is the
    /// stream table kept algebraically (stream tables created before
    /// 0.40.0 gain them when reinitialised).
    pub support_stored: bool,
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
