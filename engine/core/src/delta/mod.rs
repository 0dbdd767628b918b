//! Generation of the SQL that populates and refreshes a stream table.
//!
//! Every refresh is **one statement**, so the delta, the source rows it joins
//! against and the new frontier (`pg_current_snapshot()`) all come from one
//! snapshot. The differential statement has this shape:
//!
//! ```text
//! WITH __pgt_d<s>  -- consumed changes of source s as a signed bag (+1 new image, -1 old image)
//!      __pgt_o<s>  -- the source's old state: current rows (+1) and the negated delta
//!      ...         -- the same pair for every subquery in FROM
//!      <delta>     -- linear: telescoped join terms;  grouped: affected group keys
//!      <apply>     -- DELETE and INSERT data-modifying CTEs
//! SELECT deleted, inserted, expected_deleted, pg_current_snapshot()::text
//! ```
//!
//! The join delta is the telescoping sum
//! `d(T1 ⋈ … ⋈ Tn) = Σi T1_new ⋈ … ⋈ T(i-1)_new ⋈ dTi ⋈ T(i+1)_old ⋈ … ⋈ Tn_old`
//! where old states are signed bags, so the `dR ⋈ dS` term is counted once.
//! That general statement is stored at creation. A refresh runs it
//! specialised to the sources that changed ([`plan_refresh_for_changes`]):
//! unchanged occurrences are plain tables and up to
//! [`MAX_INCLUSION_EXCLUSION`] changed ones combine by inclusion-exclusion
//! over new states, with no old states, so PostgreSQL can drive index
//! lookups from the small deltas.
//! Multiplicities multiply across a term and are netted per row before they
//! touch the stream table.
//!
//! Every function the generated SQL adds around the defining query is
//! schema-qualified (`pg_catalog.hash_record_extended`, ...), and every
//! operator it adds compares built-in types for which `pg_catalog` has an
//! exact match: the statements run as the stream table's owner under the
//! search_path recorded at creation, and nothing a schema on that path
//! holds can take the place of what the engine itself calls.
//!
//! Parameters of the differential statement, all passed as text:
//! `$1` previous frontier (`pg_snapshot`), `$2` the xid of the transaction that
//! took that frontier (`xid8`), and `$3…` for each source in
//! [`RefreshPlan::diff_sources`] order the highest change id of that
//! transaction already consumed. A buffered change is consumed when it was
//! written by that transaction after its last refresh, or otherwise when its
//! transaction is not visible in the previous frontier (rows of rolled-back
//! transactions are invisible to the scan itself). A transaction's own xid may
//! or may not look visible in its own snapshot, which is why it is tracked by
//! change id instead.
//!
//! One module per rule family: `join_terms.rs` (the join rule: telescoping and
//! inclusion-exclusion: which version of each occurrence a term reads),
//! `sources.rs` (the delta and old-state CTEs terms read), `netting.rs`
//! (a source's change images netted per value), `linear.rs`
//! (projection, filter, inner joins, UNION ALL), `grouped.rs` (GROUP BY,
//! aggregates, DISTINCT: affected keys, recomputed groups), `subqueries.rs`
//! (the rows a subquery's changes reach), `keyed.rs` (those of a subquery
//! in FROM that groups, is DISTINCT or has windows), `outer_joins.rs` (LEFT, RIGHT
//! and FULL joins in terms), `narrowing.rs` (a keyed subquery's old
//! state read only where its reached keys can be), `top_k.rs` (ORDER BY ... LIMIT) and `guard.rs`
//! (a specialised plan's check that its assumption held). This module
//! holds the plans and what the rules share.

pub mod algebraic;
mod correlate;
pub(crate) mod filters;
mod grouped;
mod guard;
mod join_terms;
mod keyed;
mod linear;
mod narrowing;
mod netting;
mod outer_joins;
mod sources;
mod subqueries;
mod top_k;

use crate::catalog::{Capture, ColumnIdentity, OutputColumn, SourceTable};
use crate::model::{Analysis, KeyType, Model};
use crate::sql::{parse_expr, quote_ident};

/// Hidden column holding each row's identity hash.
pub const ROW_ID: &str = "__pgt_row_id";

/// The SQL a stream table needs: generated at creation (the general form)
/// or at refresh time (specialised to the changed sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshPlan {
    /// Populate at creation; no parameters. Returns text columns `(deleted, inserted, expected_deleted, frontier)`.
    pub populate_sql: String,
    /// FULL refresh (delete everything, insert the recomputed result); no parameters; same result shape.
    pub full_sql: String,
    /// DIFFERENTIAL refresh, when the query supports it; same result shape.
    pub diff_sql: Option<String>,
    /// Sources (indexes into [`Analysis::sources`]) whose change buffers the
    /// differential statement reads, in parameter order.
    pub diff_sources: Vec<usize>,
    /// Whether the stream table holds groups (one row per group) or a bag of rows.
    pub grouped: bool,
    /// Every generated fragment, one per phase, for inspection and EXPLAIN.
    pub phases: Vec<SqlPhase>,
    /// For a plan specialised to the sources that changed
    /// ([`plan_refresh_for_changes`]): the sources it assumes unchanged.
    /// Its differential statement then returns a fifth column, `true` when
    /// one of them had changes to consume after all (they arrived between
    /// the check and the statement); the refresh must then recompute FULL.
    pub guarded_sources: Vec<usize>,
    /// When a source the differential statement reads is captured from the
    /// WAL: the parameter (`$n`, after the change ids) that carries the
    /// refresh's read token, which `pgtrickle_changes.wal_changes_<oid>`
    /// checks before it decodes anything.
    pub token_param: Option<usize>,
}

impl RefreshPlan {
    /// How many parameters the differential statement takes.
    pub fn diff_nargs(&self) -> usize {
        2 + self.diff_sources.len() + usize::from(self.token_param.is_some())
    }
}

/// At most this many changed FROM occurrences are combined by
/// inclusion-exclusion over new states (2^n - 1 terms); beyond it the
/// telescoping sum over old states is used.
pub const MAX_INCLUSION_EXCLUSION: usize = 3;

/// One generated SQL fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlPhase {
    /// Phase name: `populate`, `full_recompute`, `delta` (read-only: the
    /// netted row changes), `affected_groups` and `group_recompute`
    /// (read-only, grouped stream tables), `differential` (delta and apply
    /// in one statement, what a refresh runs).
    pub name: &'static str,
    /// The SQL text.
    pub sql: String,
    /// Whether it takes the differential parameters (`$1` frontier,
    /// `$2` xid8, `$3…` change ids).
    pub parameterized: bool,
    /// Whether it writes (runs only inside a refresh).
    pub writes: bool,
}

impl SqlPhase {
    /// A stable hash of the SQL text (FNV-1a, 64 bits, hex).
    pub fn hash(&self) -> String {
        crate::sql::stable_hash(&self.sql)
    }
}

/// Generate the refresh SQL for a stream table.
///
/// `storage` is the quoted, qualified stream table name, `columns` its visible
/// columns as PostgreSQL described the query, and `query` the defining query text.
pub fn plan_refresh(
    analysis: &Analysis,
    query: &str,
    storage: &str,
    columns: &[OutputColumn],
) -> RefreshPlan {
    plan_with(analysis, query, storage, columns, None)
}

/// The identity of a plan: a stable hash of every input [`plan_refresh`]
/// and [`plan_refresh_for_changes`] read (the model, the sources, the
/// group keys' types, the query text, the storage name and columns) and of
/// this generator's version. Two analyses with equal fingerprints generate
/// the same statements, so a refresh may specialise a freshly analysed
/// query only when its fingerprint equals the one stored with the general
/// statement; otherwise the stored statement runs.
pub fn plan_fingerprint(
    analysis: &Analysis,
    query: &str,
    storage: &str,
    columns: &[OutputColumn],
) -> String {
    let inputs = format!(
        "{}\n{query}\n{storage}\n{columns:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{}",
        env!("CARGO_PKG_VERSION"),
        analysis.sources,
        analysis.key_types,
        analysis.model,
        analysis.aggregate_arg_types,
        analysis.support_stored,
    );
    crate::sql::stable_hash(&inputs)
}

/// The refresh SQL specialised to the sources (indexes into
/// [`Analysis::sources`]) that have changes to consume.
///
/// Only FROM occurrences of changed sources get delta terms; every other
/// occurrence is read as the plain table, so the planner can drive index
/// lookups into it. Up to [`MAX_INCLUSION_EXCLUSION`] changed occurrences
/// of a block are combined by inclusion-exclusion over new states,
/// `d(R ⋈ S) = dR ⋈ S + R ⋈ dS - dR ⋈ dS` (all plain tables, no old
/// states); more fall back to the telescoping sum over just the changed
/// ones. Parameters are numbered as in [`plan_refresh`], and the sources
/// assumed unchanged are checked inside the statement
/// ([`RefreshPlan::guarded_sources`]).
pub fn plan_refresh_for_changes(
    analysis: &Analysis,
    query: &str,
    storage: &str,
    columns: &[OutputColumn],
    changed: &[usize],
) -> RefreshPlan {
    plan_with(analysis, query, storage, columns, Some(changed))
}

fn plan_with(
    analysis: &Analysis,
    query: &str,
    storage: &str,
    columns: &[OutputColumn],
    changed: Option<&[usize]>,
) -> RefreshPlan {
    let col_list = quoted_list(columns.iter().map(|c| c.name.as_str()));
    let grouped = matches!(analysis.model, Ok(Model::Grouped { .. }));
    let algebraic = analysis
        .support_stored
        .then(|| algebraic::typed(analysis))
        .flatten();
    let insert_cols = match &algebraic {
        Some((shape, types)) => algebraic::insert_columns(&col_list, (shape, types)),
        None => format!("{col_list}, {ROW_ID}"),
    };

    let full_select = match &analysis.model {
        Ok(Model::Grouped {
            block,
            keys,
            top: Some(top),
            ..
        }) => top_k::top_select(&block.select, keys, &analysis.key_types, top),
        Ok(Model::Grouped { block, keys, .. }) => match &algebraic {
            Some((shape, types)) => {
                algebraic::support_select(block, keys, &analysis.key_types, (shape, types), None)
            }
            None => grouped::evaluated(block, keys, &analysis.key_types, None),
        },
        _ => {
            let q_cols = quoted_list(columns.iter().map(|c| c.name.as_str()));
            format!(
                "SELECT __pgt_q.*, {} AS {ROW_ID} FROM ({query}) AS __pgt_q({q_cols})",
                row_hash("__pgt_q", columns)
            )
        }
    };
    let populate_sql = format!(
        "WITH __pgt_ins AS (INSERT INTO {storage} ({insert_cols}) {full_select} RETURNING 1) \
         SELECT '0', (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, '0', pg_catalog.pg_current_snapshot()::text"
    );
    let full_sql = format!(
        "WITH __pgt_del AS (DELETE FROM {storage} RETURNING 1), \
         __pgt_ins AS (INSERT INTO {storage} ({insert_cols}) {full_select} RETURNING 1) \
         SELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, \
         '0', pg_catalog.pg_current_snapshot()::text"
    );

    let mut phases = vec![
        SqlPhase {
            name: "populate",
            sql: populate_sql.clone(),
            parameterized: false,
            writes: true,
        },
        SqlPhase {
            name: "full_recompute",
            sql: full_sql.clone(),
            parameterized: false,
            writes: true,
        },
    ];
    let generate = |gen: &mut Gen| match analysis.model.as_ref() {
        Ok(Model::Linear(rel)) => Some(gen.linear(rel, storage, columns)),
        Ok(Model::Grouped {
            block,
            keys,
            top: Some(top),
            ..
        }) => Some(gen.top_k(block, keys, top, storage, columns)),
        Ok(Model::Grouped {
            block,
            keys,
            top: None,
            ..
        }) if algebraic.is_some() => {
            let (shape, types) = algebraic.as_ref().expect("checked");
            Some(gen.algebraic(block, keys, (shape, types), storage, columns))
        }
        Ok(Model::Grouped {
            block,
            keys,
            bag,
            top: None,
        }) => Some(gen.grouped(block, keys, *bag, storage, columns)),
        Err(_) => None,
    };
    let mut gen = Gen::new(&analysis.sources, &analysis.key_types);
    let mut diff_sql = generate(&mut gen);
    let diff_sources = gen.used_sources.clone();
    let reads_wal = diff_sources
        .iter()
        .any(|s| analysis.sources[*s].capture == Capture::Wal);
    let token_param = reads_wal.then_some(3 + diff_sources.len());
    if reads_wal && changed.is_none() {
        // The token's number follows the change ids, known only now.
        gen = Gen::new(&analysis.sources, &analysis.key_types);
        gen.param_order = Some(diff_sources.clone());
        gen.token_param = token_param;
        diff_sql = generate(&mut gen);
    }
    let mut guarded_sources = Vec::new();
    if let (Some(changed), Some(_)) = (changed, &diff_sql) {
        // The same parameter numbering, specialised to the changed sources.
        gen = Gen::new(&analysis.sources, &analysis.key_types);
        gen.param_order = Some(diff_sources.clone());
        gen.changed = Some(changed.to_vec());
        guarded_sources = diff_sources
            .iter()
            .copied()
            .filter(|s| !changed.contains(s))
            .collect();
        gen.guarded = guarded_sources.clone();
        gen.token_param = token_param;
        diff_sql = generate(&mut gen);
    }
    if let Some(sql) = &diff_sql {
        phases.append(&mut gen.phases);
        phases.push(SqlPhase {
            name: "differential",
            sql: sql.clone(),
            parameterized: true,
            writes: true,
        });
    }
    RefreshPlan {
        populate_sql,
        full_sql,
        diff_sql,
        diff_sources,
        grouped,
        phases,
        guarded_sources,
        token_param,
    }
}

fn quoted_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(quote_ident).collect::<Vec<_>>().join(", ")
}

/// `hash_record_extended(ROW(alias.c1::t1, ...), 0)`: the row identity of a
/// bag row. It uses each type's own hash function, so it agrees with SQL
/// equality and does not depend on session settings. A type without one
/// enters by its binary send form or its text (see [`ColumnIdentity`]).
fn row_hash(alias: &str, columns: &[OutputColumn]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut value = format!("{alias}.{}::{}", quote_ident(&c.name), c.type_sql);
            if c.nondeterministic {
                value = format!("({value}) COLLATE pg_catalog.\"C\"");
            }
            match &c.identity {
                ColumnIdentity::Hash => value,
                ColumnIdentity::Send(send) => format!("{send}({value})"),
                ColumnIdentity::Text => format!("({value})::pg_catalog.text"),
            }
        })
        .collect();
    format!(
        "pg_catalog.hash_record_extended(ROW({}), 0)",
        parts.join(", ")
    )
}

struct Gen<'a> {
    sources: &'a [SourceTable],
    key_types: &'a [KeyType],
    ctes: Vec<String>,
    defined_sources: Vec<usize>,
    defined_old: Vec<usize>,
    defined_unsigned_old: Vec<usize>,
    /// Subquery occurrences whose `__pgt_sd<id>` is defined.
    defined_sub_delta: Vec<usize>,
    /// Subquery occurrences whose `__pgt_so<id>` is defined.
    defined_sub_old: Vec<usize>,
    used_sources: Vec<usize>,
    phases: Vec<SqlPhase>,
    /// Parameter order fixed by the general plan (specialised plans only).
    param_order: Option<Vec<usize>>,
    /// Sources with changes (specialised plans only; `None`: all may change).
    changed: Option<Vec<usize>>,
    /// Sources assumed unchanged, checked by the final SELECT.
    guarded: Vec<usize>,
    /// The read token's parameter, when a source is captured from the WAL.
    token_param: Option<usize>,
    /// The number of the next `__pgt_y<n>` CTE (a subquery's affected values).
    next_values: usize,
}

impl<'a> Gen<'a> {
    fn new(sources: &'a [SourceTable], key_types: &'a [KeyType]) -> Self {
        Gen {
            sources,
            key_types,
            ctes: Vec::new(),
            defined_sources: Vec::new(),
            defined_old: Vec::new(),
            defined_unsigned_old: Vec::new(),
            defined_sub_delta: Vec::new(),
            defined_sub_old: Vec::new(),
            used_sources: Vec::new(),
            phases: Vec::new(),
            param_order: None,
            changed: None,
            guarded: Vec::new(),
            token_param: None,
            next_values: 0,
        }
    }

    /// What source `s`'s changes are read from (see
    /// [`SourceTable::changes_relation`]).
    fn changes_of(&self, s: usize) -> String {
        // A first pass over a plan that reads the WAL has no token yet; its
        // text is thrown away.
        self.sources[s].changes_relation(self.token_param.unwrap_or(0))
    }

    /// The `$n` of source `s`'s consumed change id.
    fn param_of(&mut self, s: usize) -> usize {
        if let Some(order) = &self.param_order {
            if let Some(p) = order.iter().position(|x| *x == s) {
                return 3 + p;
            }
        }
        if !self.used_sources.contains(&s) {
            self.used_sources.push(s);
        }
        2 + self.used_sources.len()
    }

    /// The predicate selecting the buffered changes of source `s` (alias
    /// `b`) this refresh consumes.
    fn consumed(&mut self, s: usize) -> String {
        let param = self.param_of(s);
        format!(
            "(CASE WHEN b.xid = $2::xid8 THEN b.change_id > ${param}::bigint \
             ELSE NOT pg_catalog.pg_visible_in_snapshot(b.xid, $1::pg_snapshot) END)"
        )
    }

    /// Record a read-only phase: the CTEs so far, then `SELECT * FROM cte`.
    fn read_only_phase(&mut self, name: &'static str, cte: &str) {
        self.phases.push(SqlPhase {
            name,
            sql: format!("{}\nSELECT * FROM {cte}", self.with_clause()),
            parameterized: true,
            writes: false,
        });
    }

    fn with_clause(&self) -> String {
        format!("WITH {}", self.ctes.join(",\n "))
    }
}
