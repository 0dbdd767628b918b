//! The linear rule (projection, filter, inner joins, UNION ALL): the delta
//! is the sum of its terms, netted per exact row before it deletes and
//! inserts rows of the stream table.

use sqlparser::ast::{Ident, SelectItem};

use super::{parse_expr, row_hash, Gen, ROW_ID};
use crate::catalog::OutputColumn;
use crate::model::Rel;
use crate::sql::quote_ident;

impl Gen<'_> {
    /// The delta of a linear relation: a SELECT of its columns plus `__pgt_m`.
    pub(super) fn delta(&mut self, rel: &Rel) -> String {
        match rel {
            Rel::Block(block) => self
                .exact_terms(block, &|select, mult| {
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
            // Its reached rows, signed: exact when its rows are
            // deterministic (see `keyed.rs`).
            Rel::Keyed(_) => self.reached_rows(rel),
        }
    }

    pub(super) fn linear(&mut self, rel: &Rel, storage: &str, columns: &[OutputColumn]) -> String {
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
}
