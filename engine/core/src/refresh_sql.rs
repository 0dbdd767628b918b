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

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, Ident, ObjectName, Select, SelectItem, TableFactor,
};

use crate::analyze::{alias_of, for_each_factor_mut, Analysis, Block, KeyType, Model, Occ, Rel};
use crate::catalog::{ColumnIdentity, OutputColumn, SourceTable};
use crate::sql::quote_ident;

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
    let insert_cols = format!("{col_list}, {ROW_ID}");
    let grouped = matches!(analysis.model, Ok(Model::Grouped { .. }));

    let full_select = match &analysis.model {
        Ok(Model::Grouped { block, keys }) => {
            grouped_select(&block.select, keys, &analysis.key_types, None)
        }
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
        Ok(Model::Grouped { block, keys }) => Some(gen.grouped(block, keys, storage, columns)),
        Err(_) => None,
    };
    let mut gen = Gen::new(&analysis.sources, &analysis.key_types);
    let mut diff_sql = generate(&mut gen);
    let diff_sources = gen.used_sources.clone();
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

/// The group identity of a grouped stream table row: the keys' hash, each
/// key entering as its type allows (see [`KeyType`]; none known: hashable).
fn key_hash(keys: &[String], types: &[KeyType]) -> String {
    if keys.is_empty() {
        "0::bigint".into()
    } else {
        let parts: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| match types.get(i).map(|t| &t.identity) {
                Some(ColumnIdentity::Send(send)) => format!("{send}({k})"),
                Some(ColumnIdentity::Text) => format!("({k})::pg_catalog.text"),
                _ => k.clone(),
            })
            .collect();
        format!(
            "pg_catalog.hash_record_extended(ROW({}), 0)",
            parts.join(", ")
        )
    }
}

fn parse_expr(text: &str) -> Expr {
    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .expect("generated expression parses")
}

/// The grouped block with the row identity added, optionally restricted by `extra_where`.
fn grouped_select(
    select: &Select,
    keys: &[Expr],
    types: &[KeyType],
    extra_where: Option<&str>,
) -> String {
    let mut s = select.clone();
    let key_texts: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
    s.projection.push(SelectItem::ExprWithAlias {
        expr: parse_expr(&key_hash(&key_texts, types)),
        alias: Ident::new(ROW_ID),
    });
    if let Some(extra) = extra_where {
        let combined = match &s.selection {
            Some(w) => format!("({w}) AND ({extra})"),
            None => extra.to_string(),
        };
        s.selection = Some(parse_expr(&combined));
    }
    s.to_string()
}

/// Which version of an occurrence a delta term reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    New,
    Delta,
    Old,
}

struct Gen<'a> {
    sources: &'a [SourceTable],
    key_types: &'a [KeyType],
    ctes: Vec<String>,
    defined_sources: Vec<usize>,
    defined_old: Vec<usize>,
    used_sources: Vec<usize>,
    phases: Vec<SqlPhase>,
    /// Parameter order fixed by the general plan (specialised plans only).
    param_order: Option<Vec<usize>>,
    /// Sources with changes (specialised plans only; `None`: all may change).
    changed: Option<Vec<usize>>,
    /// Sources assumed unchanged, checked by the final SELECT.
    guarded: Vec<usize>,
}

impl<'a> Gen<'a> {
    fn new(sources: &'a [SourceTable], key_types: &'a [KeyType]) -> Self {
        Gen {
            sources,
            key_types,
            ctes: Vec::new(),
            defined_sources: Vec::new(),
            defined_old: Vec::new(),
            used_sources: Vec::new(),
            phases: Vec::new(),
            param_order: None,
            changed: None,
            guarded: Vec::new(),
        }
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

    /// Whether occurrence `occ` may have changed.
    fn occ_changed(&self, occ: &Occ) -> bool {
        let Some(changed) = &self.changed else {
            return true;
        };
        match occ {
            Occ::Source { source } => changed.contains(source),
            Occ::Sub { rel, .. } => rel_sources(rel).iter().any(|s| changed.contains(s)),
        }
    }

    /// The delta terms of a block: which version each occurrence reads,
    /// and whether the term is subtracted.
    fn term_versions(&self, block: &Block) -> Vec<(Vec<Version>, bool)> {
        let n = block.occs.len();
        let changed: Vec<usize> = (0..n)
            .filter(|i| self.occ_changed(&block.occs[*i]))
            .collect();
        if self.changed.is_some() && changed.len() <= MAX_INCLUSION_EXCLUSION {
            // Inclusion-exclusion: every non-empty subset of the changed
            // occurrences reads its deltas, the rest their new state; a
            // subset of even size is subtracted.
            return (1u32..(1 << changed.len()))
                .map(|mask| {
                    let mut v = vec![Version::New; n];
                    for (j, &occ) in changed.iter().enumerate() {
                        if mask & (1 << j) != 0 {
                            v[occ] = Version::Delta;
                        }
                    }
                    (v, mask.count_ones() % 2 == 0)
                })
                .collect();
        }
        // Telescoping over the changed occurrences: earlier ones new, this
        // one its delta, later ones their old state; unchanged ones new.
        changed
            .iter()
            .enumerate()
            .map(|(j, &occ)| {
                let mut v = vec![Version::New; n];
                v[occ] = Version::Delta;
                for &later in &changed[j + 1..] {
                    v[later] = Version::Old;
                }
                (v, false)
            })
            .collect()
    }

    /// The block's terms as SELECTs (with `extra` applied to each), or one
    /// empty SELECT when nothing it reads changed.
    fn term_selects(&mut self, block: &Block, extra: &dyn Fn(&mut Select, String)) -> Vec<String> {
        let versions = self.term_versions(block);
        self.prepare_block(block, &versions);
        let mut terms: Vec<String> = versions
            .iter()
            .map(|(versions, negate)| {
                let (mut select, mut mult) = substituted(block, versions);
                if *negate {
                    mult = format!("-({mult})");
                }
                extra(&mut select, mult);
                format!("({select})")
            })
            .collect();
        if terms.is_empty() {
            let (mut select, _) = substituted(block, &vec![Version::New; block.occs.len()]);
            extra(&mut select, "0::bigint".into());
            select.selection = Some(parse_expr("false"));
            terms.push(format!("({select})"));
        }
        terms
    }

    /// `, (EXISTS (...) OR ...)::text`: whether a source assumed unchanged
    /// had changes to consume after all, or nothing for a general plan.
    fn guard_column(&mut self) -> String {
        if self.changed.is_none() {
            return String::new();
        }
        let checks: Vec<String> = self
            .guarded
            .clone()
            .into_iter()
            .map(|s| {
                let consumed = self.consumed(s);
                format!(
                    "EXISTS (SELECT 1 FROM {} b WHERE {consumed})",
                    self.sources[s].buffer_table()
                )
            })
            .collect();
        if checks.is_empty() {
            ", 'false'".into()
        } else {
            format!(", ({})::text", checks.join(" OR "))
        }
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

    /// Define `__pgt_d<s>`, the consumed changes of a source, once.
    fn source_delta_cte(&mut self, s: usize) {
        if self.defined_sources.contains(&s) {
            return;
        }
        self.defined_sources.push(s);
        let consumed = self.consumed(s);
        let src = &self.sources[s];
        let cols = quoted_list(src.columns.iter().map(|c| c.as_str()));
        let new_img: Vec<String> = (1..=src.columns.len())
            .map(|k| format!("b.__n{k}"))
            .collect();
        let old_img: Vec<String> = (1..=src.columns.len())
            .map(|k| format!("b.__o{k}"))
            .collect();
        let buffer = src.buffer_table();
        self.ctes.push(format!(
            "__pgt_d{s}({cols}, __pgt_m) AS MATERIALIZED (\
             SELECT {}, 1::bigint FROM {buffer} b WHERE b.op <> 'D' AND {consumed} \
             UNION ALL SELECT {}, -1::bigint FROM {buffer} b WHERE b.op <> 'I' AND {consumed})",
            new_img.join(", "),
            old_img.join(", ")
        ));
    }

    /// Define `__pgt_o<s>`, a source's old state, once (after its delta).
    fn source_old_cte(&mut self, s: usize) {
        if self.defined_old.contains(&s) {
            return;
        }
        self.defined_old.push(s);
        let src = &self.sources[s];
        let cols = quoted_list(src.columns.iter().map(|c| c.as_str()));
        let t_cols: Vec<String> = src
            .columns
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .collect();
        self.ctes.push(format!(
            "__pgt_o{s}({cols}, __pgt_m) AS NOT MATERIALIZED (\
             SELECT {}, 1::bigint FROM {} t UNION ALL SELECT {cols}, -__pgt_m FROM __pgt_d{s})",
            t_cols.join(", "),
            src.qualified()
        ));
    }

    /// Define `__pgt_sd<id>` for a subquery occurrence, and `__pgt_so<id>`
    /// (its old state) when `with_old`.
    fn sub_ctes(&mut self, id: usize, rel: &Rel, columns: &[String], with_old: bool) {
        let delta = self.delta(rel);
        let cols = quoted_list(columns.iter().map(|c| c.as_str()));
        self.ctes.push(format!(
            "__pgt_sd{id}({cols}, __pgt_m) AS MATERIALIZED ({delta})"
        ));
        if with_old {
            self.ctes.push(format!(
                "__pgt_so{id}({cols}, __pgt_m) AS NOT MATERIALIZED (\
                 SELECT __pgt_s.*, 1::bigint FROM ({}) __pgt_s UNION ALL SELECT {cols}, -__pgt_m FROM __pgt_sd{id})",
                rel_sql(rel)
            ));
        }
    }

    /// Make sure the CTEs the block's `versions` read exist: the delta of
    /// every changed occurrence and, where a term reads it, its old state
    /// (a general plan defines every old state, as it always has).
    fn prepare_block(&mut self, block: &Block, versions: &[(Vec<Version>, bool)]) {
        for (i, occ) in block.occs.iter().enumerate() {
            if !self.occ_changed(occ) {
                continue;
            }
            let with_old =
                self.changed.is_none() || versions.iter().any(|(v, _)| v[i] == Version::Old);
            match occ {
                Occ::Source { source } => {
                    self.source_delta_cte(*source);
                    if with_old {
                        self.source_old_cte(*source);
                    }
                }
                Occ::Sub { id, rel, columns } => self.sub_ctes(*id, rel, columns, with_old),
            }
        }
    }

    /// The delta of a linear relation: a SELECT of its columns plus `__pgt_m`.
    fn delta(&mut self, rel: &Rel) -> String {
        match rel {
            Rel::Block(block) => self
                .term_selects(block, &|select, mult| {
                    select.projection.push(SelectItem::ExprWithAlias {
                        expr: parse_expr(&mult),
                        alias: Ident::new("__pgt_m"),
                    });
                })
                .join(" UNION ALL "),
            Rel::UnionAll(branches) => branches
                .iter()
                .map(|b| format!("({})", self.delta(b)))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
        }
    }

    fn with_clause(&self) -> String {
        format!("WITH {}", self.ctes.join(",\n "))
    }

    fn linear(&mut self, rel: &Rel, storage: &str, columns: &[OutputColumn]) -> String {
        let delta = self.delta(rel);
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let col_list = cols.join(", ");
        let h_cols: Vec<String> = cols.iter().map(|c| format!("h.{c}")).collect();
        let n_cols: Vec<String> = cols.iter().map(|c| format!("n.{c}")).collect();
        self.ctes
            .push(format!("__pgt_delta({col_list}, __pgt_m) AS ({delta})"));
        // Rows are netted per exact value: the row id (a hash that agrees
        // with SQL equality) plus the row's text, because values SQL calls
        // equal can still differ (numeric 1 and 1.00) and must stay distinct.
        let d_cols: Vec<String> = cols.iter().map(|c| format!("d.{c}")).collect();
        let t_row = cols
            .iter()
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.ctes.push(format!(
            "__pgt_net AS MATERIALIZED (SELECT * FROM (\
             SELECT DISTINCT ON (h.__pgt_rid, h.__pgt_txt) {}, h.__pgt_rid, h.__pgt_txt, \
             (pg_catalog.sum(h.__pgt_m) OVER (PARTITION BY h.__pgt_rid, h.__pgt_txt))::bigint AS __pgt_n \
             FROM (SELECT d.*, {} AS __pgt_rid, ROW({})::text AS __pgt_txt FROM __pgt_delta d) h) x \
             WHERE x.__pgt_n <> 0)",
            h_cols.join(", "),
            row_hash("d", columns),
            d_cols.join(", ")
        ));
        self.read_only_phase("delta", "__pgt_net");
        self.ctes.push(format!(
            "__pgt_del AS (DELETE FROM {storage} s USING (\
             SELECT x.__pgt_ctid FROM (SELECT t.ctid AS __pgt_ctid, \
             pg_catalog.row_number() OVER (PARTITION BY t.{ROW_ID}, n.__pgt_txt) AS __pgt_rn, n.__pgt_n \
             FROM {storage} t JOIN __pgt_net n ON t.{ROW_ID} = n.__pgt_rid \
             AND ROW({t_row})::text = n.__pgt_txt WHERE n.__pgt_n < 0 \
             AND t.{ROW_ID} = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_net WHERE __pgt_n < 0))) x \
             WHERE x.__pgt_rn <= -x.__pgt_n) v WHERE s.ctid = v.__pgt_ctid RETURNING 1)"
        ));
        self.ctes.push(format!(
            "__pgt_ins AS (INSERT INTO {storage} ({col_list}, {ROW_ID}) \
             SELECT {}, n.__pgt_rid FROM __pgt_net n CROSS JOIN LATERAL pg_catalog.generate_series(1, n.__pgt_n) \
             WHERE n.__pgt_n > 0 RETURNING 1)",
            n_cols.join(", ")
        ));
        let guard = self.guard_column();
        format!(
            "{}\nSELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, \
             (SELECT coalesce(pg_catalog.sum(-__pgt_n), 0) FROM __pgt_net WHERE __pgt_n < 0)::text, \
             pg_catalog.pg_current_snapshot()::text{guard}",
            self.with_clause()
        )
    }

    fn grouped(
        &mut self,
        block: &Block,
        keys: &[Expr],
        storage: &str,
        columns: &[OutputColumn],
    ) -> String {
        let key_names: Vec<String> = (1..=keys.len()).map(|k| format!("__pgt_k{k}")).collect();
        // Affected group keys: the keys of every row any delta term touches.
        let terms = self.term_selects(block, &|select, _| {
            select.projection = if keys.is_empty() {
                vec![SelectItem::UnnamedExpr(parse_expr("1"))]
            } else {
                keys.iter()
                    .map(|k| SelectItem::UnnamedExpr(k.clone()))
                    .collect()
            };
            select.distinct = None;
            select.group_by = GroupByExpr::Expressions(vec![], vec![]);
            select.having = None;
        });
        let key_cols = if keys.is_empty() {
            "__pgt_one".to_string()
        } else {
            key_names.join(", ")
        };
        self.ctes.push(format!(
            "__pgt_keys({key_cols}) AS MATERIALIZED (SELECT DISTINCT * FROM ({}) k)",
            terms.join(" UNION ALL ")
        ));
        let k_refs: Vec<String> = key_names.iter().map(|k| format!("k.{k}")).collect();
        self.ctes.push(format!(
            "__pgt_kh(__pgt_rid) AS MATERIALIZED (SELECT {} FROM __pgt_keys k)",
            key_hash(&k_refs, self.key_types)
        ));
        self.read_only_phase("affected_groups", "__pgt_keys");

        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let col_list = cols.join(", ");
        let recompute = if keys.is_empty() {
            format!(
                "SELECT * FROM ({}) r WHERE EXISTS (SELECT 1 FROM __pgt_keys)",
                grouped_select(&block.select, keys, self.key_types, None)
            )
        } else {
            let key_exprs: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
            let all_not_null: Vec<String> =
                k_refs.iter().map(|k| format!("{k} IS NOT NULL")).collect();
            // `NOT (k IS NOT NULL)`, not `k IS NULL`: a composite key with
            // some NULL fields is neither, and `=` cannot match it.
            let some_null: Vec<String> = k_refs
                .iter()
                .map(|k| format!("NOT ({k} IS NOT NULL)"))
                .collect();
            // `= ANY(ARRAY(...))` is evaluated once and lets the planner use an
            // index on the first key; an array key would be compared with
            // the elements of that array, so it is matched with IN.
            let first_is_array = self.key_types.first().is_some_and(|t| t.array);
            let non_null = if first_is_array {
                format!(
                    "{} IN (SELECT DISTINCT {} FROM __pgt_keys k WHERE {})",
                    key_exprs[0],
                    k_refs[0],
                    all_not_null.join(" AND ")
                )
            } else {
                format!(
                    "{} = ANY (ARRAY(SELECT DISTINCT {} FROM __pgt_keys k WHERE {}))",
                    key_exprs[0],
                    k_refs[0],
                    all_not_null.join(" AND ")
                )
            };
            let mut keyed = grouped_select(&block.select, keys, self.key_types, Some(&non_null));
            if keys.len() > 1 {
                // The rest of a multi-column key is matched on the computed
                // groups by their identity hash, behind a fence (OFFSET 0):
                // neither a semi-join with the (often underestimated) key
                // set nor a filter PostgreSQL cannot estimate may change
                // how the query itself is joined.
                keyed = format!(
                    "SELECT * FROM ({keyed} OFFSET 0) r WHERE r.{ROW_ID} = ANY (ARRAY(SELECT {} FROM __pgt_keys k WHERE {}))",
                    key_hash(&k_refs, self.key_types),
                    all_not_null.join(" AND ")
                );
            }
            let matches: Vec<String> = k_refs
                .iter()
                .zip(&key_exprs)
                .map(|(k, e)| format!("{k} IS NOT DISTINCT FROM {e}"))
                .collect();
            let nullable = format!(
                "EXISTS (SELECT 1 FROM __pgt_keys k WHERE ({})) AND \
                 EXISTS (SELECT 1 FROM __pgt_keys k WHERE ({}) AND {})",
                some_null.join(" OR "),
                some_null.join(" OR "),
                matches.join(" AND ")
            );
            format!(
                "{keyed} UNION ALL {}",
                grouped_select(&block.select, keys, self.key_types, Some(&nullable))
            )
        };
        self.ctes.push(format!(
            "__pgt_new({col_list}, {ROW_ID}) AS MATERIALIZED ({recompute})"
        ));
        self.read_only_phase("group_recompute", "__pgt_new");
        let s_row: Vec<String> = cols.iter().map(|c| format!("s.{c}")).collect();
        let n_row: Vec<String> = cols.iter().map(|c| format!("n.{c}")).collect();
        let same_row = format!(
            "n.{ROW_ID} = s.{ROW_ID} AND ROW({})::text IS NOT DISTINCT FROM ROW({})::text",
            n_row.join(", "),
            s_row.join(", ")
        );
        self.ctes.push(format!(
            "__pgt_del AS (DELETE FROM {storage} s WHERE s.{ROW_ID} = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) \
             AND NOT EXISTS (SELECT 1 FROM __pgt_new n WHERE {same_row}) RETURNING 1)"
        ));
        self.ctes.push(format!(
            "__pgt_ins AS (INSERT INTO {storage} ({col_list}, {ROW_ID}) SELECT {}, n.{ROW_ID} FROM __pgt_new n \
             WHERE NOT EXISTS (SELECT 1 FROM {storage} s WHERE s.{ROW_ID} = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh)) \
             AND {same_row}) RETURNING 1)",
            n_row.join(", ")
        ));
        let guard = self.guard_column();
        format!(
            "{}\nSELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, \
             (SELECT pg_catalog.count(*) FROM __pgt_del)::text, pg_catalog.pg_current_snapshot()::text{guard}",
            self.with_clause()
        )
    }
}

/// The SQL text of a linear relation as written (its "new" state).
fn rel_sql(rel: &Rel) -> String {
    match rel {
        Rel::Block(b) => b.select.to_string(),
        Rel::UnionAll(branches) => branches
            .iter()
            .map(|b| format!("({})", rel_sql(b)))
            .collect::<Vec<_>>()
            .join(" UNION ALL "),
    }
}

/// A delta term of a block: occurrence `k` reads `versions[k]` (the plain
/// relation, its delta or its old state). Returns the rewritten block and
/// the term's multiplicity expression.
fn substituted(block: &Block, versions: &[Version]) -> (Select, String) {
    let mut select = block.select.clone();
    let mut k = 0usize;
    let mut mult = Vec::new();
    for_each_factor_mut(&mut select.from, &mut |factor| {
        let version = versions[k];
        let occ = &block.occs[k];
        k += 1;
        if version == Version::New {
            return;
        }
        let alias = factor_alias(factor, occ);
        let cte = match (occ, version) {
            (Occ::Source { source }, Version::Delta) => format!("__pgt_d{source}"),
            (Occ::Source { source }, _) => format!("__pgt_o{source}"),
            (Occ::Sub { id, .. }, Version::Delta) => format!("__pgt_sd{id}"),
            (Occ::Sub { id, .. }, _) => format!("__pgt_so{id}"),
        };
        mult.push(format!("{}.__pgt_m", quote_ident(&alias)));
        *factor = TableFactor::Table {
            name: ObjectName::from(vec![Ident::new(cte)]),
            alias: Some(alias_of(Ident::with_quote('"', alias), &[])),
            args: None,
            with_hints: vec![],
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: None,
            index_directives: vec![],
            inheritance: None,
        };
    });
    select.distinct = match select.distinct {
        Some(Distinct::All) => None,
        d => d,
    };
    let mult = if mult.is_empty() {
        "1::bigint".to_string()
    } else {
        mult.join(" * ")
    };
    (select, mult)
}

/// Every source a linear relation reads, subqueries included.
fn rel_sources(rel: &Rel) -> Vec<usize> {
    match rel {
        Rel::Block(b) => b
            .occs
            .iter()
            .flat_map(|o| match o {
                Occ::Source { source } => vec![*source],
                Occ::Sub { rel, .. } => rel_sources(rel),
            })
            .collect(),
        Rel::UnionAll(branches) => branches.iter().flat_map(rel_sources).collect(),
    }
}

/// The name a FROM occurrence is referenced by.
fn factor_alias(factor: &TableFactor, occ: &Occ) -> String {
    match factor {
        TableFactor::Table { name, alias, .. } => alias
            .as_ref()
            .map(|a| crate::analyze::fold(&a.name))
            .or_else(|| {
                name.0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(crate::analyze::fold)
            })
            .unwrap_or_default(),
        TableFactor::Derived { alias: Some(a), .. } => crate::analyze::fold(&a.name),
        _ => match occ {
            Occ::Sub { id, .. } => format!("__pgt_sub{id}"),
            Occ::Source { source } => format!("__pgt_src{source}"),
        },
    }
}
