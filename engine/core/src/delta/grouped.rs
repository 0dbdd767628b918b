//! The grouped rule (GROUP BY, aggregates, DISTINCT): the delta terms name
//! the affected group keys; those groups are recomputed from the sources
//! and replace the stored ones that differ.

use sqlparser::ast::{Expr, Ident, Select, SelectItem};

use super::{parse_expr, Gen, ROW_ID};
use crate::catalog::{ColumnIdentity, OutputColumn};
use crate::model::{Block, KeyType, Occ};
use crate::sql::quote_ident;

impl Gen<'_> {
    pub(super) fn grouped(
        &mut self,
        block: &Block,
        keys: &[Expr],
        bag: bool,
        storage: &str,
        columns: &[OutputColumn],
    ) -> String {
        let recompute = self.affected_recomputed(block, keys);
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let col_list = cols.join(", ");
        self.ctes.push(format!(
            "__pgt_new({col_list}, {ROW_ID}) AS MATERIALIZED ({recompute})"
        ));
        self.read_only_phase("group_recompute", "__pgt_new");
        if bag {
            self.replace_bag(storage, &cols, true);
        } else {
            self.replace_groups(storage, &cols);
        }
        self.counts_statement()
    }

    /// The statement's final SELECT: rows deleted, inserted, deleted as
    /// expected, and the new frontier.
    pub(super) fn counts_statement(&mut self) -> String {
        let guard = self.guard_column();
        format!(
            "{}\nSELECT (SELECT pg_catalog.count(*) FROM __pgt_del)::text, (SELECT pg_catalog.count(*) FROM __pgt_ins)::text, \
             (SELECT pg_catalog.count(*) FROM __pgt_del)::text, pg_catalog.pg_current_snapshot()::text{guard}",
            self.with_clause()
        )
    }

    /// Define the affected keys (`__pgt_keys`, their identities in
    /// `__pgt_kh`) and return the recomputation of their rows: the
    /// block's columns plus the row identity.
    pub(super) fn affected_recomputed(&mut self, block: &Block, keys: &[Expr]) -> String {
        let key_names: Vec<String> = (1..=keys.len()).map(|k| format!("__pgt_k{k}")).collect();
        // Affected group keys: the keys of every row a change may have
        // touched (see `subqueries.rs`).
        let terms = self.affected_rows(block, keys);
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
        if keys.is_empty() {
            format!(
                "SELECT * FROM ({}) r WHERE EXISTS (SELECT 1 FROM __pgt_keys)",
                evaluated(block, keys, self.key_types, None)
            )
        } else {
            let key_exprs: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
            let matching = KeyMatch::new("__pgt_keys", &k_refs, &key_exprs);
            // `= ANY(ARRAY(...))` is evaluated once and lets the planner use an
            // index on the probed keys: each key that leads a source's
            // primary key, else the first. (Without an index, every row is
            // compared with every element: TPC-H Q18's first key is a
            // customer's name; probing its orders by key reads one order
            // per group, its customers fifteen.) An array key would be
            // compared with the elements of that array, so it is matched
            // with IN.
            let probes: Vec<String> = self
                .probe_keys(block, keys)
                .into_iter()
                .map(|p| {
                    if self.key_types.get(p).is_some_and(|t| t.array) {
                        format!(
                            "{} IN (SELECT DISTINCT {} FROM __pgt_keys k WHERE {})",
                            key_exprs[p], k_refs[p], matching.all_not_null
                        )
                    } else {
                        format!(
                            "{} = ANY (ARRAY(SELECT DISTINCT {} FROM __pgt_keys k WHERE {}))",
                            key_exprs[p], k_refs[p], matching.all_not_null
                        )
                    }
                })
                .collect();
            let non_null = probes.join(" AND ");
            // Only the probed rows read grouped IN filters one group at a
            // time; a query read whole (the NULL keys below) keeps the
            // one hashed evaluation.
            let correlated = super::correlate::with_correlated_ins(block);
            let mut keyed = evaluated(&correlated, keys, self.key_types, Some(&non_null));
            if keys.len() > 1 {
                // The rest of a multi-column key is matched on the computed
                // groups by their identity hash, behind a fence (OFFSET 0):
                // neither a semi-join with the (often underestimated) key
                // set nor a filter PostgreSQL cannot estimate may change
                // how the query itself is joined.
                keyed = format!(
                    "SELECT * FROM ({keyed} OFFSET 0) r WHERE r.{ROW_ID} = ANY (ARRAY(SELECT {} FROM __pgt_keys k WHERE {}))",
                    key_hash(&k_refs, self.key_types),
                    matching.all_not_null
                );
            }
            format!(
                "{keyed} UNION ALL {}",
                evaluated(block, keys, self.key_types, Some(&matching.nullable))
            )
        }
    }

    /// The keys whose values the recomputation probes: those that are a
    /// column leading the primary key of the source they belong to, else
    /// the first.
    fn probe_keys(&self, block: &Block, keys: &[Expr]) -> Vec<usize> {
        let leads_a_key = |key: &Expr| {
            let (qualifier, column) = match key {
                Expr::Identifier(c) => (None, crate::analyze::fold(c)),
                Expr::CompoundIdentifier(parts) if parts.len() == 2 => (
                    Some(crate::analyze::fold(&parts[0])),
                    crate::analyze::fold(&parts[1]),
                ),
                _ => return false,
            };
            let mut owners = block
                .scope
                .iter()
                .zip(&block.occs)
                .filter(|((alias, cols), _)| {
                    qualifier.as_ref().is_none_or(|q| q == alias) && cols.contains(&column)
                });
            match (owners.next(), owners.next()) {
                (Some((_, Occ::Source { source })), None) => {
                    self.sources[*source].key.first() == Some(&column)
                }
                _ => false,
            }
        };
        let keyed: Vec<usize> = (0..keys.len()).filter(|&i| leads_a_key(&keys[i])).collect();
        if keyed.is_empty() {
            vec![0]
        } else {
            keyed
        }
    }

    /// Replace the stored groups of the affected keys that differ from
    /// their recomputation (one row per key).
    fn replace_groups(&mut self, storage: &str, cols: &[String]) {
        let col_list = cols.join(", ");
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
    }

    /// Replace the stored rows of the affected keys by their
    /// recomputation as a bag: equal rows are numbered on both sides, so
    /// that the n-th copy of a row stays when the n-th copy is recomputed,
    /// and only the copies that differ are deleted or inserted.
    ///
    /// `affected_only`: only the stored rows of the affected keys are
    /// compared; otherwise every stored row (a top-k's few rows).
    pub(super) fn replace_bag(&mut self, storage: &str, cols: &[String], affected_only: bool) {
        let scope = if affected_only {
            format!(" WHERE s.{ROW_ID} = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh))")
        } else {
            String::new()
        };
        let col_list = cols.join(", ");
        let s_row: Vec<String> = cols.iter().map(|c| format!("s.{c}")).collect();
        let n_row: Vec<String> = cols.iter().map(|c| format!("n.{c}")).collect();
        self.ctes.push(format!(
            "__pgt_newc AS MATERIALIZED (SELECT n.*, ROW({})::text AS __pgt_txt, \
             pg_catalog.row_number() OVER (PARTITION BY n.{ROW_ID}, ROW({})::text) AS __pgt_c FROM __pgt_new n)",
            n_row.join(", "),
            n_row.join(", ")
        ));
        self.ctes.push(format!(
            "__pgt_oldc AS MATERIALIZED (SELECT s.ctid AS __pgt_ctid, s.{ROW_ID}, ROW({})::text AS __pgt_txt, \
             pg_catalog.row_number() OVER (PARTITION BY s.{ROW_ID}, ROW({})::text) AS __pgt_c FROM {storage} s{scope})",
            s_row.join(", "),
            s_row.join(", ")
        ));
        let same = |a: &str, b: &str| {
            format!(
                "{a}.{ROW_ID} = {b}.{ROW_ID} AND {a}.__pgt_txt = {b}.__pgt_txt AND {a}.__pgt_c = {b}.__pgt_c"
            )
        };
        self.ctes.push(format!(
            "__pgt_del AS (DELETE FROM {storage} s USING __pgt_oldc o WHERE s.ctid = o.__pgt_ctid \
             AND NOT EXISTS (SELECT 1 FROM __pgt_newc n WHERE {}) RETURNING 1)",
            same("n", "o")
        ));
        self.ctes.push(format!(
            "__pgt_ins AS (INSERT INTO {storage} ({col_list}, {ROW_ID}) SELECT {}, n.{ROW_ID} FROM __pgt_newc n \
             WHERE NOT EXISTS (SELECT 1 FROM __pgt_oldc o WHERE {}) RETURNING 1)",
            n_row.join(", "),
            same("o", "n")
        ));
    }
}

/// How rows are matched with the keys of a key CTE (aliased `k`, its
/// columns `refs`; `exprs` the rows' key expressions): keys without a
/// NULL by the types' equality, as grouping matches them; a key with a
/// NULL, in a branch of its own, by `IS NOT DISTINCT FROM`.
pub(super) struct KeyMatch {
    /// Every key column is not NULL.
    pub all_not_null: String,
    /// The condition of the branch of keys with a NULL: some key has one,
    /// and one such key is the row's.
    pub nullable: String,
}

impl KeyMatch {
    pub(super) fn new(keys_cte: &str, refs: &[String], exprs: &[String]) -> Self {
        let all_not_null: Vec<String> = refs.iter().map(|k| format!("{k} IS NOT NULL")).collect();
        // `NOT (k IS NOT NULL)`, not `k IS NULL`: a composite key with
        // some NULL fields is neither, and `=` cannot match it.
        let some_null: Vec<String> = refs
            .iter()
            .map(|k| format!("NOT ({k} IS NOT NULL)"))
            .collect();
        let matches: Vec<String> = refs
            .iter()
            .zip(exprs)
            .map(|(k, e)| format!("{k} IS NOT DISTINCT FROM {e}"))
            .collect();
        let some_null = some_null.join(" OR ");
        KeyMatch {
            all_not_null: all_not_null.join(" AND "),
            nullable: format!(
                "EXISTS (SELECT 1 FROM {keys_cte} k WHERE ({some_null})) AND \
                 EXISTS (SELECT 1 FROM {keys_cte} k WHERE ({some_null}) AND {})",
                matches.join(" AND ")
            ),
        }
    }
}

/// The group identity of a grouped stream table row: the keys' hash, each
/// key entering as its type allows (see [`KeyType`]; none known: hashable).
pub(super) fn key_hash(keys: &[String], types: &[KeyType]) -> String {
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

/// The block as [`grouped_select`] gives it, evaluated with its ORDER BY
/// when it has one (`DISTINCT ON`), parenthesised so that it composes.
pub(super) fn evaluated(
    block: &Block,
    keys: &[Expr],
    types: &[KeyType],
    extra_where: Option<&str>,
) -> String {
    let sql = grouped_select(&block.select, keys, types, extra_where);
    match &block.order {
        Some(order) => format!("({sql} ORDER BY {order})"),
        None => sql,
    }
}

/// The grouped block with the row identity added, optionally restricted by `extra_where`.
pub(super) fn grouped_select(
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
        with_where(&mut s, extra);
    }
    s.to_string()
}

/// Add `extra` to a block's WHERE (applied before any grouping).
pub(super) fn with_where(select: &mut Select, extra: &str) {
    let combined = match &select.selection {
        Some(w) => format!("({w}) AND ({extra})"),
        None => extra.to_string(),
    };
    select.selection = Some(parse_expr(&combined));
}
