//! `ORDER BY ... LIMIT`: the stored rows are the query's first `n`. A
//! refresh recomputes the rows of the keys its changes reach (as for any
//! query kept by keys) and merges them with the stored rows of the other
//! keys, which did not change. The first `n` of that merge are the new
//! first `n` when at least `n` of them sort no later than the last row
//! stored before: every row of the result that was not stored sorts no
//! earlier than that row, so none can displace them (at most a row tied
//! with the last one, which SQL lets either be). Otherwise, and under an
//! OFFSET (whose skipped rows are not stored), the query is recomputed
//! with its LIMIT. Either way only the rows that differ are written.

use sqlparser::ast::Expr;

use super::grouped::grouped_select;
use super::{Gen, ROW_ID};
use crate::catalog::OutputColumn;
use crate::model::{Block, KeyType, TopK};
use crate::sql::quote_ident;

impl Gen<'_> {
    pub(super) fn top_k(
        &mut self,
        block: &Block,
        keys: &[Expr],
        top: &TopK,
        storage: &str,
        columns: &[OutputColumn],
    ) -> String {
        let fresh = self.affected_recomputed(block, keys);
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let col_list = cols.join(", ");
        let over =
            |alias: &str| -> Vec<String> { cols.iter().map(|c| format!("{alias}.{c}")).collect() };
        let order = |alias: &str| top.order_by(&over(alias));
        let limit = top.limit;
        self.ctes.push(format!(
            "__pgt_fresh({col_list}, {ROW_ID}) AS MATERIALIZED ({fresh})"
        ));
        // The stored rows of keys no change reached, and the recomputed ones.
        self.ctes.push(format!(
            "__pgt_cand({col_list}, {ROW_ID}) AS MATERIALIZED (SELECT {}, s.{ROW_ID} FROM {storage} s \
             WHERE NOT (s.{ROW_ID} = ANY (ARRAY(SELECT __pgt_rid FROM __pgt_kh))) \
             UNION ALL SELECT * FROM __pgt_fresh)",
            over("s").join(", ")
        ));
        // The last stored row, when the stored rows filled the LIMIT.
        self.ctes.push(format!(
            "__pgt_bound({col_list}) AS MATERIALIZED (SELECT {} FROM (SELECT s.*, \
             pg_catalog.row_number() OVER (ORDER BY {}) AS __pgt_r, pg_catalog.count(*) OVER () AS __pgt_n \
             FROM {storage} s) b WHERE b.__pgt_r = b.__pgt_n AND b.__pgt_n >= {limit})",
            over("b").join(", "),
            order("s")
        ));
        // Whether the merge decides the first rows: nothing was reached,
        // or (without OFFSET) at least LIMIT merged rows sort no later than
        // the bound (which sorts after the rows tied with it).
        let merge_decides = if top.offset == 0 {
            format!(
                "NOT EXISTS (SELECT 1 FROM __pgt_bound) OR (SELECT x.__pgt_r FROM (SELECT u.__pgt_b, \
                 pg_catalog.row_number() OVER (ORDER BY {}, u.__pgt_b) AS __pgt_r FROM (\
                 SELECT {}, false AS __pgt_b FROM __pgt_cand c UNION ALL SELECT {}, true FROM __pgt_bound b\
                 ) u({col_list}, __pgt_b)) x WHERE x.__pgt_b) > {limit}",
                order("u"),
                over("c").join(", "),
                over("b").join(", ")
            )
        } else {
            "false".to_string()
        };
        self.ctes.push(format!(
            "__pgt_exact(ok) AS MATERIALIZED (SELECT NOT EXISTS (SELECT 1 FROM __pgt_keys) OR {merge_decides})"
        ));
        let full = top_select(&block.select, keys, self.key_types, top);
        self.ctes.push(format!(
            "__pgt_new({col_list}, {ROW_ID}) AS MATERIALIZED (\
             SELECT {}, t.{ROW_ID} FROM (SELECT c.*, pg_catalog.row_number() OVER (ORDER BY {}) AS __pgt_r \
             FROM __pgt_cand c) t WHERE t.__pgt_r <= {limit} AND (SELECT ok FROM __pgt_exact) \
             UNION ALL SELECT * FROM ({full}) f WHERE NOT (SELECT ok FROM __pgt_exact))",
            over("t").join(", "),
            order("c")
        ));
        self.read_only_phase("group_recompute", "__pgt_new");
        self.replace_bag(storage, &cols, false);
        self.counts_statement()
    }
}

/// The query kept by keys, with its row identity, ranked and limited as
/// written (ORDER BY by output position).
pub(super) fn top_select(
    select: &sqlparser::ast::Select,
    keys: &[Expr],
    types: &[KeyType],
    top: &TopK,
) -> String {
    let width = select.projection.len();
    let positions: Vec<String> = (1..=width).map(|i| i.to_string()).collect();
    let mut sql = format!(
        "{} ORDER BY {} LIMIT {}",
        grouped_select(select, keys, types, None),
        top.order_by(&positions),
        top.limit
    );
    if top.offset > 0 {
        sql.push_str(&format!(" OFFSET {}", top.offset));
    }
    sql
}
