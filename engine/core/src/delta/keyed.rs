//! Subqueries in FROM (and UNION ALL branches) kept by keys: GROUP BY,
//! aggregates, DISTINCT and window functions ([`Keyed`]). They have no
//! row delta; what an enclosing block needs of them is every row a change
//! may have added, removed or altered, in its old and its new value (an
//! enclosing group key may be an aggregate of theirs, as in TPC-H Q13).
//!
//! The affected keys come from the block's own delta terms, as for a
//! grouped stream table. Their new rows are the block as written,
//! restricted to those keys; their old rows are the same over the old
//! state of every table the block names (`__pgt_u<s>`, see `sources.rs`),
//! so nested subqueries, outer joins and any aggregate see exactly the
//! rows they saw before.

use std::ops::ControlFlow;

use sqlparser::ast::{Ident, ObjectName, Select, TableFactor, VisitMut, VisitorMut};

use super::grouped::{with_where, KeyMatch};
use super::Gen;
use crate::analyze::{alias_of, fold};
use crate::model::Keyed;

impl Gen<'_> {
    /// The rows of a keyed subquery a change may reach, old and new, as a
    /// SELECT of its columns plus `__pgt_m`: 1 for a new row, -1 for an
    /// old one. Rows outside the reached keys are the same before and
    /// after, so when the subquery's rows are deterministic
    /// ([`Keyed::deterministic`]) this is its exact delta; otherwise an
    /// enclosing block reads only which rows it holds.
    pub(super) fn keyed_reached_rows(&mut self, keyed: &Keyed) -> String {
        let terms = self.affected_rows(&keyed.block, &keyed.keys);
        let name = format!("__pgt_g{}", self.next_values);
        self.next_values += 1;
        let cols: Vec<String> = if keyed.keys.is_empty() {
            vec!["__pgt_one".into()]
        } else {
            (1..=keyed.keys.len())
                .map(|k| format!("__pgt_k{k}"))
                .collect()
        };
        self.ctes.push(format!(
            "{name}({}) AS MATERIALIZED (SELECT DISTINCT * FROM ({}) k)",
            cols.join(", "),
            terms.join(" UNION ALL ")
        ));
        let new = restricted(&keyed.block.select, keyed, &name);
        let mut old_select = self.in_old_state(keyed);
        self.narrow_old_tables(&mut old_select, keyed, &name);
        let old = restricted(&old_select, keyed, &name);
        format!(
            "SELECT __pgt_r.*, 1::bigint FROM ({new}) __pgt_r \
             UNION ALL SELECT __pgt_r.*, -1::bigint FROM ({old}) __pgt_r"
        )
    }

    /// The keyed block with every table it names, at any depth, read as
    /// it was before the consumed changes.
    fn in_old_state(&mut self, keyed: &Keyed) -> Select {
        for (_, s) in &keyed.tables {
            self.source_unsigned_old_cte(*s);
        }
        let mut select = keyed.block.select.clone();
        let _ = select.visit(&mut OldTables(&keyed.tables));
        select
    }
}

/// Renames each table a keyed block names to its old state, keeping the
/// name it is referenced by as its alias.
pub(super) struct OldTables<'a>(pub(super) &'a [(String, usize)]);

impl VisitorMut for OldTables<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        {
            let written = name.to_string();
            if let Some((_, s)) = self.0.iter().find(|(n, _)| *n == written) {
                let referenced = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(fold)
                    .unwrap_or_default();
                let kept = alias
                    .take()
                    .unwrap_or_else(|| alias_of(Ident::with_quote('"', referenced), &[]));
                *alias = Some(kept);
                *name = ObjectName::from(vec![Ident::new(format!("__pgt_u{s}"))]);
            }
        }
        ControlFlow::Continue(())
    }
}

/// The block as written, restricted to the keys in CTE `keys` (columns
/// `__pgt_k1…`, or one row of `__pgt_one` for a block without keys).
/// Keys are matched with the type's equality, as grouping matches them;
/// a key with a NULL is matched by `IS NOT DISTINCT FROM` in its own
/// branch.
fn restricted(select: &Select, keyed: &Keyed, keys: &str) -> String {
    if keyed.keys.is_empty() {
        return format!("SELECT * FROM ({select}) r WHERE EXISTS (SELECT 1 FROM {keys})");
    }
    let refs: Vec<String> = (1..=keyed.keys.len())
        .map(|k| format!("k.__pgt_k{k}"))
        .collect();
    let exprs: Vec<String> = keyed.keys.iter().map(|e| format!("({e})")).collect();
    let matching = KeyMatch::new(keys, &refs, &exprs);
    let mut non_null = select.clone();
    with_where(
        &mut non_null,
        &format!(
            "({}) IN (SELECT {} FROM {keys} k WHERE {})",
            exprs.join(", "),
            refs.join(", "),
            matching.all_not_null
        ),
    );
    let mut nullable = select.clone();
    with_where(&mut nullable, &matching.nullable);
    format!("({non_null}) UNION ALL ({nullable})")
}
