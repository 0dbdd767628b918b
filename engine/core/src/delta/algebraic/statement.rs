//! The differential statement of an algebraic grouped stream table: the
//! delta summed per group (`__pgt_dg`), joined to the stored groups
//! (`__pgt_go`), merged into new support values (`__pgt_mg`), then
//! applied: groups updated in place, inserted, deleted at count zero, and
//! redone from the sources when a numeric scale cannot be followed.

use sqlparser::ast::{Expr, Ident, SelectItem};

use super::{
    derived, extremes, key_output, squared, summed, support, support_select, ArgType, Home, Item,
    Output, Shape, SCALE_COUNT_MASK,
};
use crate::catalog::OutputColumn;
use crate::delta::grouped::key_hash;
use crate::delta::subqueries::project;
use crate::delta::{parse_expr, Gen, ROW_ID};
use crate::model::Block;
use crate::sql::quote_ident;

/// What both halves of the statement read: the grouped block, its
/// algebraic shape, the storage, and its support values with the storage
/// column holding each.
struct Form<'a> {
    block: &'a Block,
    keys: &'a [Expr],
    shape: &'a Shape,
    types: &'a [ArgType],
    storage: &'a str,
    columns: &'a [OutputColumn],
    items: Vec<Item>,
    /// The column holding each of `items`: `__pgt_<tag>`, or the visible
    /// output that holds the same value.
    stored: Vec<String>,
}

impl Gen<'_> {
    /// The differential statement of an algebraic grouped stream table.
    pub(in crate::delta) fn algebraic(
        &mut self,
        block: &Block,
        keys: &[Expr],
        (shape, types): (&Shape, &[ArgType]),
        storage: &str,
        columns: &[OutputColumn],
    ) -> String {
        let items = support(shape, types);
        let stored = items
            .iter()
            .map(|i| match i.home {
                Home::Hidden(_) => format!("__pgt_{}", i.tag),
                Home::Visible(o) => quote_ident(&columns[o].name),
            })
            .collect();
        let form = Form {
            block,
            keys,
            shape,
            types,
            storage,
            columns,
            items,
            stored,
        };
        self.merge_algebraic(&form);
        self.apply_algebraic(&form)
    }

    /// The CTEs up to `__pgt_mg`: the delta summed per group, the stored
    /// groups it touches, and their new support values.
    fn merge_algebraic(&mut self, form: &Form) {
        let Form {
            block,
            keys,
            shape,
            types,
            storage,
            columns,
            ..
        } = *form;
        let nk = keys.len();
        let na = shape.args.len();
        let k = |i: usize| format!("__pgt_k{}", i + 1);
        let a = |j: usize| format!("__pgt_a{}", j + 1);
        let numeric: Vec<usize> = (0..na)
            .filter(|j| summed(shape, *j) && types[*j] == ArgType::Numeric)
            .collect();

        // The delta: key values, argument values and multiplicity per term row.
        let mut exprs: Vec<Expr> = keys.to_vec();
        exprs.extend(shape.args.iter().cloned());
        let terms = self.exact_terms(block, &|select, mult| {
            project(select, &exprs);
            if exprs.is_empty() {
                select.projection.clear();
            }
            select.projection.push(SelectItem::ExprWithAlias {
                expr: parse_expr(&mult),
                alias: Ident::new("__pgt_m"),
            });
        });
        let mut delta_cols: Vec<String> = (0..nk).map(k).collect();
        delta_cols.extend((0..na).map(a));
        delta_cols.push("__pgt_m".into());
        self.ctes.push(format!(
            "__pgt_delta({}) AS ({})",
            delta_cols.join(", "),
            terms.join(" UNION ALL ")
        ));

        // Summed per group. For a numeric argument also the largest scale in
        // the delta (`dhi`) and the net count of values at it (`dhn`).
        let key_list: Vec<String> = (0..nk).map(|i| format!("d.{}", k(i))).collect();
        let partition = if nk == 0 {
            String::new()
        } else {
            format!("PARTITION BY {}", key_list.join(", "))
        };
        let highs: String = numeric
            .iter()
            .map(|j| {
                format!(
                    ", pg_catalog.max(pg_catalog.scale(d.{})) OVER ({partition}) AS __pgt_hi{}",
                    a(*j),
                    j + 1
                )
            })
            .collect();
        let mut per_group = key_list.clone();
        per_group.push(format!(
            "{} AS __pgt_rid",
            key_hash(&key_list, self.key_types)
        ));
        per_group
            .push("coalesce(pg_catalog.sum(d.__pgt_m), 0)::pg_catalog.int8 AS __pgt_dc".into());
        for j in 0..na {
            let (n, arg) = (j + 1, format!("d.{}", a(j)));
            per_group.push(format!(
                "coalesce(pg_catalog.sum(CASE WHEN pg_catalog.num_nonnulls({arg}) = 1 THEN d.__pgt_m ELSE 0 END), 0)::pg_catalog.int8 AS __pgt_dnn{n}"
            ));
            if summed(shape, j) {
                per_group.push(format!(
                    "pg_catalog.sum(({arg})::pg_catalog.numeric * (d.__pgt_m)::pg_catalog.numeric) AS __pgt_ds{n}"
                ));
            }
            // The extreme among the rows coming and among the rows going.
            for (tag, max) in extremes(shape, j) {
                let f = if max { "max" } else { "min" };
                per_group.push(format!(
                    "pg_catalog.{f}({arg}) FILTER (WHERE d.__pgt_m > 0) AS __pgt_d{tag}in"
                ));
                per_group.push(format!(
                    "pg_catalog.{f}({arg}) FILTER (WHERE d.__pgt_m < 0) AS __pgt_d{tag}out"
                ));
            }
            if squared(shape, j) {
                per_group.push(format!(
                    "pg_catalog.sum(({arg})::pg_catalog.numeric * ({arg})::pg_catalog.numeric * (d.__pgt_m)::pg_catalog.numeric) AS __pgt_dq{n}"
                ));
            }
            if numeric.contains(&j) {
                per_group.push(format!("pg_catalog.max(d.__pgt_hi{n}) AS __pgt_dhi{n}"));
                per_group.push(format!(
                    "coalesce(pg_catalog.sum(CASE WHEN pg_catalog.scale({arg}) = d.__pgt_hi{n} THEN d.__pgt_m ELSE 0 END), 0)::pg_catalog.int8 AS __pgt_dhn{n}"
                ));
            }
        }
        let group_by = if nk == 0 {
            String::new()
        } else {
            format!(" GROUP BY {}", key_list.join(", "))
        };
        self.ctes.push(format!(
            "__pgt_dg AS MATERIALIZED (SELECT {} FROM (SELECT d.*{highs} FROM __pgt_delta d) d{group_by})",
            per_group.join(", ")
        ));

        // The stored rows of those groups, matched by identity and key, with
        // their support values as `__pgt_o<tag>`.
        let matched: Vec<String> = std::iter::once(format!("o.{ROW_ID} = g.__pgt_rid"))
            .chain((0..nk).map(|i| {
                format!(
                    "o.{} IS NOT DISTINCT FROM g.{}",
                    quote_ident(&columns[key_output(shape, i)].name),
                    k(i)
                )
            }))
            .collect();
        let olds: Vec<String> = form
            .items
            .iter()
            .zip(&form.stored)
            .map(|(i, c)| format!("o.{c} AS __pgt_o{}", i.tag))
            .collect();
        self.ctes.push(format!(
            "__pgt_go AS MATERIALIZED (SELECT g.*, o.__pgt_ctid, {} FROM __pgt_dg g LEFT JOIN \
             (SELECT s.ctid AS __pgt_ctid, s.* FROM {storage} s WHERE s.{ROW_ID} = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_dg))) o ON {})",
            olds.join(", "),
            matched.join(" AND ")
        ));
        self.read_only_phase("delta", "__pgt_go");

        // New support values `__pgt_n<tag>`; `redo`: recompute the group from
        // the sources; `bad`: its state does not add up (the stream table
        // drifted), which the counts report so that the refresh goes FULL.
        let mut news = vec!["coalesce(x.__pgt_ocount, 0) + x.__pgt_dc AS __pgt_ncount".to_string()];
        let mut sums = Vec::new();
        let mut bad = vec!["x.__pgt_ncount < 0".to_string()];
        if nk == 0 {
            bad.push("x.__pgt_ctid IS NULL".into());
        }
        let mut redo = vec!["false".to_string()];
        for j in 0..na {
            let n = j + 1;
            let nnn = format!("(coalesce(x.__pgt_onn{n}, 0) + x.__pgt_dnn{n})");
            news.push(format!("{nnn} AS __pgt_nnn{n}"));
            bad.push(format!(
                "x.__pgt_nnn{n} < 0 OR x.__pgt_nnn{n} > x.__pgt_ncount"
            ));
            // An extreme: the more extreme of the stored one and the rows
            // coming (on a tie the one coming, as PostgreSQL's `min` and
            // `max` keep the later of equal values), unless a row going held
            // a value at least as extreme as the stored one (it may have
            // been the extreme): then the group is recomputed from the
            // sources. With no stored extreme (a new group, or one of NULLs
            // only) any row going does: a join's delta holds pairs of rows
            // that cancel, whose value is in neither state.
            for (tag, max) in extremes(shape, j) {
                let beyond = if max { ">=" } else { "<=" };
                let (din, dout, old) = (
                    format!("x.__pgt_d{tag}in"),
                    format!("x.__pgt_d{tag}out"),
                    format!("x.__pgt_o{tag}"),
                );
                news.push(format!(
                    "CASE WHEN {nnn} = 0 THEN NULL \
                     WHEN {din} IS NOT NULL AND ({old} IS NULL OR {din} {beyond} {old}) THEN {din} \
                     ELSE {old} END AS __pgt_n{tag}"
                ));
                redo.push(format!(
                    "(x.__pgt_nnn{n} > 0 AND coalesce({dout} {beyond} {old}, {dout} IS NOT NULL))"
                ));
            }
            if !summed(shape, j) {
                continue;
            }
            let total = format!(
                "coalesce((x.__pgt_osum{n})::pg_catalog.numeric, 0) + coalesce(x.__pgt_ds{n}, 0)"
            );
            // The sum of squares (variances only), at twice the sum's scale
            // as PostgreSQL keeps it.
            let squares = squared(shape, j)
                .then(|| format!("coalesce(x.__pgt_osq{n}, 0) + coalesce(x.__pgt_dq{n}, 0)"));
            if !numeric.contains(&j) {
                sums.push(format!(
                    "CASE WHEN x.__pgt_nnn{n} = 0 THEN NULL ELSE {total} END AS __pgt_nsum{n}"
                ));
                if let Some(squares) = squares {
                    sums.push(format!(
                        "CASE WHEN x.__pgt_nnn{n} = 0 THEN NULL ELSE {squares} END AS __pgt_nsq{n}"
                    ));
                }
                continue;
            }
            sums.push(format!(
                "CASE WHEN x.__pgt_nnn{n} = 0 THEN NULL \
                 ELSE pg_catalog.round({total}, (x.__pgt_nsctop{n} >> 48)::pg_catalog.int4) END AS __pgt_nsum{n}"
            ));
            if let Some(squares) = squares {
                sums.push(format!(
                    "CASE WHEN x.__pgt_nnn{n} = 0 THEN NULL \
                     ELSE pg_catalog.round({squares}, 2 * (x.__pgt_nsctop{n} >> 48)::pg_catalog.int4) END AS __pgt_nsq{n}"
                ));
            }
            // S, C: the stored largest scale and its count. The new state is
            // unknown (NULL: redo) when a larger scale's values all went
            // again, or when the last value of the largest scale left.
            let state = format!("coalesce(x.__pgt_osctop{n}, -1)");
            let s = format!("(CASE WHEN {state} < 0 THEN -1 ELSE {state} >> 48 END)");
            let c = format!("({state} & {SCALE_COUNT_MASK}::pg_catalog.int8)");
            news.push(format!(
                "CASE WHEN {nnn} = 0 THEN -1::pg_catalog.int8 \
                 WHEN x.__pgt_dhi{n} IS NULL OR x.__pgt_dhi{n} < {s} THEN {state} \
                 WHEN x.__pgt_dhi{n} > {s} THEN CASE WHEN x.__pgt_dhn{n} > 0 \
                   THEN (x.__pgt_dhi{n}::pg_catalog.int8 << 48) | x.__pgt_dhn{n} END \
                 WHEN {c} + x.__pgt_dhn{n} > 0 THEN ({s}::pg_catalog.int8 << 48) | ({c} + x.__pgt_dhn{n}) \
                 END AS __pgt_nsctop{n}"
            ));
            redo.push(format!("x.__pgt_nsctop{n} IS NULL"));
            // NaN and the infinities have no scale, and a sum holding one
            // cannot take it away again (NaN - NaN is NaN): PostgreSQL
            // counts them apart, so such a group is recomputed.
            redo.push(format!(
                "(x.__pgt_osum{n} IS NOT NULL AND pg_catalog.scale(x.__pgt_osum{n}) IS NULL)"
            ));
            redo.push(format!(
                "(x.__pgt_ds{n} IS NOT NULL AND pg_catalog.scale(x.__pgt_ds{n}) IS NULL)"
            ));
        }
        let sums: String = sums.iter().map(|s| format!(", {s}")).collect();
        self.ctes.push(format!(
            "__pgt_mg AS MATERIALIZED (SELECT x.*{sums}, ({}) AS __pgt_bad, ({}) AS __pgt_redo FROM \
             (SELECT x.*, {} FROM __pgt_go x) x)",
            bad.join(" OR "),
            redo.join(" OR "),
            news.join(", ")
        ));
    }

    /// The data-modifying CTEs and the final counts of the algebraic form.
    fn apply_algebraic(&mut self, form: &Form) -> String {
        let Form {
            block,
            keys,
            shape,
            types,
            storage,
            columns,
            ref items,
            ref stored,
        } = *form;
        let nk = keys.len();
        let visible: Vec<String> = shape
            .outputs
            .iter()
            .map(|o| match o {
                Output::Key(i) => format!("m.__pgt_k{}", i + 1),
                Output::Computed(e) => derived(e, shape, types),
            })
            .collect();
        let new_of = |tag: &str| format!("m.__pgt_n{tag}");
        let hidden: Vec<(String, String)> = items
            .iter()
            .zip(stored)
            .filter(|(i, _)| matches!(i.home, Home::Hidden(_)))
            .map(|(i, c)| (c.clone(), new_of(&i.tag)))
            .collect();
        // Compared as text: a numeric sum may change its printed scale only.
        let news: Vec<String> = items.iter().map(|i| new_of(&i.tag)).collect();
        let olds: Vec<String> = items
            .iter()
            .map(|i| format!("m.__pgt_o{}", i.tag))
            .collect();
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        // A scalar aggregate keeps its one row at count zero.
        let kept = if nk == 0 {
            "true"
        } else {
            "m.__pgt_ncount > 0"
        };
        self.ctes.push(format!(
            "__pgt_del AS (DELETE FROM {storage} s USING __pgt_mg m WHERE s.ctid = m.__pgt_ctid \
             AND NOT m.__pgt_bad AND (m.__pgt_redo OR NOT ({kept})) RETURNING 1)"
        ));
        let sets: Vec<String> = cols
            .iter()
            .zip(&visible)
            .map(|(c, v)| format!("{c} = {v}"))
            .chain(hidden.iter().map(|(c, v)| format!("{c} = {v}")))
            .collect();
        self.ctes.push(format!(
            "__pgt_upd AS (UPDATE {storage} s SET {} FROM __pgt_mg m WHERE s.ctid = m.__pgt_ctid \
             AND NOT m.__pgt_bad AND NOT m.__pgt_redo AND {kept} \
             AND ROW({})::pg_catalog.text IS DISTINCT FROM ROW({})::pg_catalog.text RETURNING 1)",
            sets.join(", "),
            news.join(", "),
            olds.join(", ")
        ));
        // Redone groups are recomputed from the sources (the EXISTS in
        // front keeps that from running when none is).
        let redo_where = (nk > 0).then(|| {
            let matches: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, e)| format!("__pgt_rr.__pgt_k{} IS NOT DISTINCT FROM ({e})", i + 1))
                .collect();
            // The keys are spliced in as written: the alias is one no query
            // can use.
            format!(
                "EXISTS (SELECT 1 FROM __pgt_mg __pgt_rr WHERE __pgt_rr.__pgt_redo AND NOT __pgt_rr.__pgt_bad AND {})",
                matches.join(" AND ")
            )
        });
        let recompute = support_select(
            block,
            keys,
            self.key_types,
            (shape, types),
            redo_where.as_deref(),
        );
        let hidden_cols: String = hidden.iter().map(|(c, _)| format!(", {c}")).collect();
        let hidden_news: String = hidden.iter().map(|(_, v)| format!(", {v}")).collect();
        self.ctes.push(format!(
            "__pgt_ins AS (INSERT INTO {storage} ({}, {ROW_ID}{hidden_cols}) \
             SELECT {}, m.__pgt_rid{hidden_news} FROM __pgt_mg m WHERE m.__pgt_ctid IS NULL AND NOT m.__pgt_bad \
             AND NOT m.__pgt_redo AND {kept} \
             UNION ALL SELECT * FROM ({recompute}) __pgt_rc WHERE EXISTS (SELECT 1 FROM __pgt_mg WHERE __pgt_redo AND NOT __pgt_bad) \
             RETURNING 1)",
            cols.join(", "),
            visible.join(", "),
        ));
        // Updated rows count as deleted and inserted. A group whose state
        // does not add up is expected to delete a row it cannot, so the
        // refresh sees the drift and recomputes FULL. Each count is taken
        // once (`OFFSET 0` keeps the subquery from being pulled up and its
        // counts repeated): every subplan is started at every run.
        let guard = self.guard_column();
        format!(
            "{}\nSELECT (c.d + c.u)::text, (c.i + c.u)::text, (c.d + c.u + c.b)::text, \
             pg_catalog.pg_current_snapshot()::text{guard} FROM (SELECT \
             (SELECT pg_catalog.count(*) FROM __pgt_del) AS d, \
             (SELECT pg_catalog.count(*) FROM __pgt_upd) AS u, \
             (SELECT pg_catalog.count(*) FROM __pgt_ins) AS i, \
             (SELECT pg_catalog.count(*) FROM __pgt_mg WHERE __pgt_bad) AS b OFFSET 0) c",
            self.with_clause(),
        )
    }
}
